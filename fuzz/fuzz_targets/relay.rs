//! What a client's frame does in the pool: decode, stamp, relay, receipts,
//! through eight socketless clients. The first byte picks the sender and
//! the frame kind; the rest is the frame. The routing rules are asserted
//! inside `Relayer::relay_frame`.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use wspool::bench_support::Relayer;

thread_local! {
    static RELAYER: RefCell<Relayer> = RefCell::new(Relayer::new());
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, frame)) = data.split_first() else { return };
    RELAYER.with(|r| {
        r.borrow_mut()
            .relay_frame(usize::from(head & 0x7), frame, head & 0x80 != 0);
    });
});
