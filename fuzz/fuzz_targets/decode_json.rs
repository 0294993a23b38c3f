//! A text frame's payload: any bytes parse as proto3 JSON `SendMsg` or fail
//! cleanly; what parses re-serialises and parses to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wspool::SendMsg;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = serde_json::from_slice::<SendMsg>(data) else { return };
    let json = serde_json::to_string(&msg).expect("to JSON");
    let back: SendMsg = serde_json::from_str(&json).expect("from our own JSON");
    assert_eq!(msg, back, "{json}");
});
