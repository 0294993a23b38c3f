//! The read side's waker: the socket is polled for frames only when it
//! asked to be.

use std::{
    future::{poll_fn, Future},
    sync::{
        atomic::{
            AtomicBool,
            Ordering::{AcqRel, Release},
        },
        Arc,
    },
    task::{Context, Poll, Wake, Waker},
};

use axum::extract::ws::Message;
use futures_util::task::AtomicWaker;

use super::socket::Socket;
use crate::DisconnectReason;

/// Polls the socket's read side only when it asked to be polled.
///
/// The connection task is woken for outbound work far more often than for
/// inbound frames (a subscriber of a busy channel, every message). Polling
/// the read side on each of those wakes costs a failed read attempt, and
/// tungstenite zero-fills its read buffer before every attempt. So the read
/// side is polled with a waker of its own that records "readable" before
/// waking the task, and is polled again only once that was recorded (or
/// after it produced a frame, as more may be buffered).
pub(super) struct ReadSignal {
    flag: Arc<ReadFlag>,
    waker: Waker,
}

struct ReadFlag {
    /// The read side should be polled.
    ready: AtomicBool,
    /// The connection task, woken when `ready` is set.
    task: AtomicWaker,
}

impl Wake for ReadFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.store(true, Release);
        self.task.wake();
    }
}

impl ReadSignal {
    pub(super) fn new() -> Self {
        let flag = Arc::new(ReadFlag {
            ready: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(flag.clone());
        ReadSignal { flag, waker }
    }

    /// The next frame from the client ([`Socket::poll_next`]).
    pub(super) fn next_frame<'a>(
        &'a self,
        socket: &'a mut Socket,
    ) -> impl Future<Output = Option<Result<Message, DisconnectReason>>> + 'a {
        poll_fn(move |cx| {
            // Register before checking, so a wake in between is not lost.
            self.flag.task.register(cx.waker());
            if !self.flag.ready.swap(false, AcqRel) {
                return Poll::Pending;
            }
            let polled = socket.poll_next(&mut Context::from_waker(&self.waker));
            if polled.is_ready() {
                // More frames may already be buffered: look again next time.
                self.flag.ready.store(true, Release);
            }
            polled
        })
    }
}
