//! Writes that can be abandoned: a batch from the mailbox with one flush,
//! bounded by `write_timeout` and given up as soon as a close that does not
//! wait is requested.

use std::{
    future::{poll_fn, Future},
    pin::Pin,
    sync::{atomic::Ordering::Relaxed, Arc},
    task::{Context, Poll},
};

use tokio::time::{Instant, Sleep};

use super::{socket::Socket, Connection, Ended};
use crate::{
    event::UndeliveredReason,
    message::{now_ms, Encoded},
    node::{CloseRequest, BURST_ROOM},
    stats::bump,
    DisconnectReason, PoolError,
};

/// Most frames written before one flush. No more than what a burst may
/// keep ([`BURST_ROOM`]): the batch never grows past it, so it has no room
/// to give back after a burst (`burst_idle_15k`: 4.9 KiB per connection
/// after the burst at 64, 4.4 at 32, with fan-out unchanged; BENCHMARKS.md,
/// issue 20).
const BATCH_FRAMES: usize = 32;
const _: () = assert!(BATCH_FRAMES <= BURST_ROOM);
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
        mut write: impl FnMut(&mut Context<'_>) -> Poll<Result<(), PoolError>>,
    ) -> Result<(), WriteStop> {
        let timeout = self.hub().config().write_timeout();
        let state = self.state();
        let mut timer: Option<Pin<Box<Sleep>>> = None;
        poll_fn(|cx| {
            // The write first: when it completes at once, nothing else is
            // touched; only a pending write watches for a close request.
            if let Poll::Ready(written) = write(cx) {
                return Poll::Ready(written.map_err(WriteStop::Failed));
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
    ///
    /// The batch is first written without waiting ([`Self::write_ready`]):
    /// most writes complete at once, and those need no future of their
    /// own. Only a write that must wait goes on in a boxed future: the
    /// task keeps no room for it while idle, and allocates only when the
    /// socket pushes back (BENCHMARKS.md, issue 20).
    pub(super) async fn write_queued(
        &self,
        socket: &mut Socket,
        batch: &mut Vec<Arc<Encoded>>,
    ) -> Result<Option<CloseRequest>, WriteStop> {
        match poll_fn(|cx| Poll::Ready(self.write_ready(socket, batch, cx))).await {
            Written::Done(done) => done,
            Written::Waiting(rest) => Box::pin(self.write_rest(socket, batch, rest)).await,
        }
    }

    /// Drains a batch from the mailbox and writes as much of it as the
    /// socket takes now.
    fn write_ready(
        &self,
        socket: &mut Socket,
        batch: &mut Vec<Arc<Encoded>>,
        cx: &mut Context<'_>,
    ) -> Written {
        let state = self.state();
        let close = state.close_request();
        if close.as_ref().is_some_and(|c| !c.flush) {
            return Written::Done(Ok(close));
        }
        let hub = self.hub();
        let mut expired = Vec::new();
        // One clock read for the expiry check and the queue delay.
        let now = Instant::now();
        let bytes = (hub.node()).drain(state, batch, &mut expired, BATCH_FRAMES, BATCH_BYTES, now);
        #[cfg(feature = "metrics")]
        crate::metrics::queue_delays(hub.queue_delay(), batch, now);
        hub.report_undelivered(&state.id, expired, UndeliveredReason::Expired);
        let mut fed = 0;
        if !batch.is_empty() {
            match socket.poll_write_batch(cx, batch, state.format, &mut fed) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => {
                    return Written::Done(Err(self.write_failed(batch, WriteStop::Failed(e))))
                }
                Poll::Pending => return Written::Waiting(Rest { fed, bytes, close }),
            }
        }
        Written::Done(Ok(self.wrote(batch, bytes, close)))
    }

    /// The rest of a write that had to wait: bounded and abandonable, as
    /// every write ([`Self::write`]).
    async fn write_rest(
        &self,
        socket: &mut Socket,
        batch: &mut Vec<Arc<Encoded>>,
        rest: Rest,
    ) -> Result<Option<CloseRequest>, WriteStop> {
        let Rest {
            mut fed,
            bytes,
            close,
        } = rest;
        let format = self.state().format;
        let write = |cx: &mut Context<'_>| socket.poll_write_batch(cx, batch, format, &mut fed);
        if let Err(stop) = self.write(write).await {
            return Err(self.write_failed(batch, stop));
        }
        Ok(self.wrote(batch, bytes, close))
    }

    /// A batch that may have reached the client in part; none of it is
    /// known to have: it is reported, rather than lost silently.
    fn write_failed(&self, batch: &mut Vec<Arc<Encoded>>, stop: WriteStop) -> WriteStop {
        let batch = std::mem::take(batch);
        (self.hub()).report_undelivered(&self.state().id, batch, UndeliveredReason::WriteFailed);
        stop
    }

    /// Counts a batch written and empties it; the close request, if one is
    /// now due.
    fn wrote(
        &self,
        batch: &mut Vec<Arc<Encoded>>,
        bytes: usize,
        close: Option<CloseRequest>,
    ) -> Option<CloseRequest> {
        let state = self.state();
        if !batch.is_empty() {
            let frames = batch.len() as u64;
            batch.clear();
            let counters = self.hub().counters();
            bump(&counters.messages_out, frames);
            bump(&counters.bytes_out, bytes as u64);
            bump(&state.messages_out, frames);
            bump(&state.bytes_out, bytes as u64);
            state.last_sent_ms.store(now_ms() as u64, Relaxed);
            tracing::trace!(frames, bytes, "wrote batch");
        }
        close.filter(|_| state.mailbox.len().0 == 0)
    }
}

/// What a first attempt at a batch came to.
enum Written {
    Done(Result<Option<CloseRequest>, WriteStop>),
    /// The socket pushed back: the rest goes on in [`Connection::write_rest`].
    Waiting(Rest),
}

/// Where a write that had to wait stands.
struct Rest {
    /// Frames of the batch already fed to the socket.
    fed: usize,
    bytes: usize,
    close: Option<CloseRequest>,
}
