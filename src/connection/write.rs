//! Writes that can be abandoned: a batch from the mailbox with one flush,
//! bounded by `write_timeout` and given up as soon as a close that does not
//! wait is requested.

use std::{
    future::{poll_fn, Future},
    pin::Pin,
    sync::{atomic::Ordering::Relaxed, Arc},
    task::{ready, Context, Poll},
};

use axum::extract::ws::{Message, WebSocket};
use futures_util::SinkExt;
use tokio::time::{Instant, Sleep};

use super::{Connection, Ended};
use crate::{
    event::UndeliveredReason,
    message::{now_ms, Encoded},
    node::{CloseRequest, BURST_ROOM, IDLE_ROOM},
    stats::bump,
    DisconnectReason, PoolError,
};

/// Most frames written before one flush.
const BATCH_FRAMES: usize = 64;
/// Most payload bytes written before one flush.
const BATCH_BYTES: usize = 256 * 1024;

/// Why a write did not complete.
pub(super) enum WriteStop {
    /// It failed, or took longer than `write_timeout`.
    Failed(PoolError),
    /// A close that does not wait was requested meanwhile: the write was
    /// abandoned for it.
    Interrupted(CloseRequest),
}

impl Connection {
    /// Polls `write` until it completes, bounded by `write_timeout` and
    /// abandoned as soon as a close that does not wait is requested (a
    /// client that stopped reading must not delay its own 4008, a kick, or
    /// a replacement).
    ///
    /// `write` is a poll function, not a future: a batch is written by
    /// polling the socket's sink directly, with nothing allocated or
    /// started per write. The timer is made only when the write first
    /// waits (most complete at once: no clock read, no timer touched), and
    /// the timeout counts from that wait.
    pub(super) async fn write(
        &self,
        mut write: impl FnMut(&mut Context<'_>) -> Poll<Result<(), axum::Error>>,
    ) -> Result<(), WriteStop> {
        let timeout = self.hub().config().write_timeout();
        let state = self.state();
        let mut timer: Option<Pin<Box<Sleep>>> = None;
        poll_fn(|cx| {
            // The write first: when it completes at once, nothing else is
            // touched; only a pending write watches for a close request.
            if let Poll::Ready(written) = write(cx) {
                let failed = |e: axum::Error| WriteStop::Failed(PoolError::Socket(e.to_string()));
                return Poll::Ready(written.map_err(failed));
            }
            let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(WriteStop::Failed(PoolError::WriteTimeout(timeout))));
            }
            match state.poll_close_now(cx) {
                Some(close) => Poll::Ready(Err(WriteStop::Interrupted(close))),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// How the loop ends after a write did not complete.
    pub(super) fn stopped(&self, stop: WriteStop) -> Ended {
        let reason = match stop {
            WriteStop::Failed(e) => {
                self.report(e.clone());
                DisconnectReason::Error(e)
            }
            WriteStop::Interrupted(close) => close.reason,
        };
        Ended {
            reason,
            stalled: true,
        }
    }

    /// Writes one batch from the mailbox with a single flush; returns a
    /// close request when it is due (at once, or once the mailbox is empty
    /// for a flushing close).
    pub(super) async fn write_queued(
        &self,
        socket: &mut WebSocket,
        batch: &mut Vec<Arc<Encoded>>,
    ) -> Result<Option<CloseRequest>, WriteStop> {
        let state = self.state();
        let close = state.close_request();
        if close.as_ref().is_some_and(|c| !c.flush) {
            return Ok(close);
        }
        let hub = self.hub();
        let mut expired = Vec::new();
        // One clock read for the expiry check and the queue delay.
        let now = Instant::now();
        let bytes = (hub.node()).drain(state, batch, &mut expired, BATCH_FRAMES, BATCH_BYTES, now);
        #[cfg(feature = "metrics")]
        crate::metrics::queue_delays(hub.queue_delay(), batch, now);
        hub.report_undelivered(&state.id, expired, UndeliveredReason::Expired);
        if !batch.is_empty() {
            let frames = batch.len() as u64;
            let mut fed = 0;
            let frame = |i: usize| batch[i].frame(state.format);
            let write =
                |cx: &mut Context<'_>| poll_frames(socket, cx, &mut fed, batch.len(), frame);
            if let Err(stop) = self.write(write).await {
                // Some of the batch may have reached the client; none is
                // known to have: report it all rather than lose it silently.
                hub.report_undelivered(
                    &state.id,
                    std::mem::take(batch),
                    UndeliveredReason::WriteFailed,
                );
                return Err(stop);
            }
            batch.clear();
            if frames < BATCH_FRAMES as u64 && batch.capacity() > BURST_ROOM {
                // The queue is drained (or nearly): the burst is over, and
                // its room goes back as the mailbox's does.
                batch.shrink_to(IDLE_ROOM);
            }
            let counters = hub.counters();
            bump(&counters.messages_out, frames);
            bump(&counters.bytes_out, bytes as u64);
            bump(&state.messages_out, frames);
            bump(&state.bytes_out, bytes as u64);
            state.last_sent_ms.store(now_ms() as u64, Relaxed);
            tracing::trace!(frames, bytes, "wrote batch");
        }
        if close.is_some() && state.mailbox.len().0 == 0 {
            return Ok(close);
        }
        Ok(None)
    }
}

/// Feeds frames `*fed..n` (made by `frame`) into the socket's write buffer,
/// then flushes once: the poll function of a write ([`Connection::write`]).
/// `*fed` counts what was fed across polls.
pub(super) fn poll_frames(
    socket: &mut WebSocket,
    cx: &mut Context<'_>,
    fed: &mut usize,
    n: usize,
    frame: impl Fn(usize) -> Message,
) -> Poll<Result<(), axum::Error>> {
    while *fed < n {
        ready!(socket.poll_ready_unpin(cx))?;
        socket.start_send_unpin(frame(*fed))?;
        *fed += 1;
    }
    socket.poll_flush_unpin(cx)
}
