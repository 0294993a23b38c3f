//! A binary frame's payload: any bytes decode to a `SendMsg` or fail
//! cleanly; what decodes survives protobuf and proto3 JSON round trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use wspool::SendMsg;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = SendMsg::decode(data) else { return };
    let again = SendMsg::decode(msg.encode_to_vec().as_slice()).expect("re-decode");
    assert_eq!(msg, again);
    let json = serde_json::to_string(&msg).expect("to JSON");
    let back: SendMsg = serde_json::from_str(&json).expect("from our own JSON");
    assert_eq!(msg, back, "{json}");
});
