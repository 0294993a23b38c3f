//! The bounded outbound queue of one connection.
//!
//! Producers (`send`, broadcasts, relays from other connections) push
//! already-encoded frames without waiting; the connection's task drains them
//! in batches and writes each batch with one flush. The queue is bounded in
//! messages and in bytes: a push past either limit fails and the caller
//! decides what that means (an error for `send`, a skip for a broadcast).

use std::collections::VecDeque;

use axum::extract::ws::Message;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::DisconnectReason;

/// Why a push failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// At `queue_max_messages` or `queue_max_bytes`.
    Full,
    /// The connection is closing or closed.
    Closed,
}

/// A request to close the connection, carried to its task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CloseRequest {
    /// Why; gives the close code and text.
    pub(crate) reason: DisconnectReason,
    /// Write what is queued before closing (shutdown) or not (replace, kick).
    pub(crate) flush: bool,
}

pub(crate) struct Outbox {
    /// A parking_lot mutex: every critical section is a few pointer moves and
    /// nothing awaits while holding it.
    state: Mutex<State>,
    /// Wakes the connection's task when the queue becomes non-empty or a
    /// close is requested. `notify_one` keeps a permit if the task is busy,
    /// so no wake-up is lost.
    notify: Notify,
    max_messages: usize,
    max_bytes: usize,
}

#[derive(Default)]
struct State {
    frames: VecDeque<(Message, usize)>,
    bytes: usize,
    close: Option<CloseRequest>,
    closed: bool,
}

impl Outbox {
    pub(crate) fn new(max_messages: usize, max_bytes: usize) -> Self {
        Outbox {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            max_messages,
            max_bytes,
        }
    }

    /// Queues `frame` (`len` payload bytes) unless the queue is full or
    /// closing. Never waits.
    pub(crate) fn push(&self, frame: Message, len: usize) -> Result<(), PushError> {
        let was_empty = {
            let mut s = self.state.lock();
            if s.closed || s.close.is_some() {
                return Err(PushError::Closed);
            }
            // A single message bigger than the byte limit still fits into an
            // empty queue: the limit bounds the backlog, not the message.
            if s.frames.len() >= self.max_messages
                || (!s.frames.is_empty() && s.bytes + len > self.max_bytes)
            {
                return Err(PushError::Full);
            }
            s.frames.push_back((frame, len));
            s.bytes += len;
            s.frames.len() == 1
        };
        if was_empty {
            self.notify.notify_one();
        }
        Ok(())
    }

    /// Asks the connection's task to close. The first request wins.
    pub(crate) fn request_close(&self, request: CloseRequest) {
        {
            let mut s = self.state.lock();
            if s.closed || s.close.is_some() {
                return;
            }
            s.close = Some(request);
        }
        self.notify.notify_one();
    }

    /// Replaces any pending close request (shutdown giving up on a flush).
    pub(crate) fn force_close(&self, request: CloseRequest) {
        {
            let mut s = self.state.lock();
            if s.closed {
                return;
            }
            s.close = Some(request);
        }
        self.notify.notify_one();
    }

    /// Waits until there is something to do. Cancel safe.
    pub(crate) async fn ready(&self) {
        self.notify.notified().await;
    }

    /// Moves up to `max_frames` frames (and at most about `max_bytes`) into
    /// `batch`, returning their payload bytes and the pending close request
    /// (which is only returned once the queue is empty, if it asks for a
    /// flush). Wakes the task again if frames remain.
    pub(crate) fn drain(
        &self,
        batch: &mut Vec<Message>,
        max_frames: usize,
        max_bytes: usize,
    ) -> (usize, Option<CloseRequest>) {
        let mut s = self.state.lock();
        if let Some(close) = &s.close {
            if !close.flush {
                return (0, Some(close.clone()));
            }
        }
        let mut taken = 0;
        while batch.len() < max_frames && taken < max_bytes {
            let Some((frame, len)) = s.frames.pop_front() else {
                break;
            };
            taken += len;
            batch.push(frame);
        }
        s.bytes -= taken;
        if !s.frames.is_empty() {
            drop(s);
            self.notify.notify_one();
            return (taken, None);
        }
        (taken, s.close.clone())
    }

    /// Marks the queue closed for good and empties it; returns how many
    /// frames were still queued (they will not be sent).
    pub(crate) fn close(&self) -> usize {
        let mut s = self.state.lock();
        s.closed = true;
        s.bytes = 0;
        let n = s.frames.len();
        s.frames.clear();
        n
    }

    /// Messages and bytes queued now.
    pub(crate) fn len(&self) -> (usize, usize) {
        let s = self.state.lock();
        (s.frames.len(), s.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Message {
        Message::Binary(vec![0u8; n].into())
    }

    /// The queue refuses past its message limit and its byte limit.
    #[test]
    fn bounded_in_messages_and_bytes() {
        let q = Outbox::new(2, 100);
        assert_eq!(q.push(frame(10), 10), Ok(()));
        assert_eq!(q.push(frame(10), 10), Ok(()));
        assert_eq!(q.push(frame(10), 10), Err(PushError::Full));
        let q = Outbox::new(10, 100);
        assert_eq!(q.push(frame(60), 60), Ok(()));
        assert_eq!(q.push(frame(60), 60), Err(PushError::Full));
        assert_eq!(q.len(), (1, 60));
        // One oversized message still fits into an empty queue.
        let q = Outbox::new(10, 100);
        assert_eq!(q.push(frame(200), 200), Ok(()));
    }

    /// A drain respects the batch bound and hands back a flush-close only
    /// when everything before it is out.
    #[test]
    fn drain_batches_then_close() {
        let q = Outbox::new(10, 1000);
        for _ in 0..3 {
            q.push(frame(1), 1).unwrap();
        }
        q.request_close(CloseRequest {
            reason: DisconnectReason::Shutdown,
            flush: true,
        });
        assert_eq!(q.push(frame(1), 1), Err(PushError::Closed));
        let mut batch = Vec::new();
        assert_eq!(q.drain(&mut batch, 2, 1000), (2, None));
        batch.clear();
        let (n, close) = q.drain(&mut batch, 2, 1000);
        assert_eq!(n, 1);
        assert_eq!(close.map(|c| c.reason), Some(DisconnectReason::Shutdown));
    }

    /// A close without flush is returned at once.
    #[test]
    fn close_without_flush_skips_queue() {
        let q = Outbox::new(10, 1000);
        q.push(frame(1), 1).unwrap();
        q.request_close(CloseRequest {
            reason: DisconnectReason::Replaced,
            flush: false,
        });
        let mut batch = Vec::new();
        let (n, close) = q.drain(&mut batch, 8, 1000);
        assert_eq!((n, batch.len()), (0, 0));
        assert_eq!(close.map(|c| c.reason), Some(DisconnectReason::Replaced));
        assert_eq!(q.close(), 1);
    }
}
