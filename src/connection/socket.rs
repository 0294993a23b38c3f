//! The connection's socket: axum's `WebSocket`, one whose outbound
//! frames the pool writes itself, or the HTTP fallback's event stream
//! (`sse.rs`).
//!
//! A connection from [`WsPool::accept`](crate::WsPool::accept) (a handler
//! of the application's own, given axum's `WebSocketUpgrade`) has axum's
//! `WebSocket`: every frame goes through tungstenite, which copies it into
//! its write buffer (and keeps that buffer at its high-water mark for the
//! connection's life).
//!
//! A connection from the provided route is upgraded by the pool itself
//! ([`Direct`]): tungstenite still reads, answers pings and writes the
//! control frames, but the pool's messages are written by the pool, from
//! frames built once per message and shared by every recipient
//! (`Encoded::wire`), with one vectored write per batch: no copy per
//! recipient, no write buffer kept per connection, and none of
//! tungstenite's per-frame work (BENCHMARKS.md, issue 20).
//!
//! The two never interleave within a frame: a frame whose start was
//! written is finished before tungstenite is asked to read or write again
//! (tungstenite writes pong replies while reading), and tungstenite's own
//! buffer is flushed before the pool writes.

use std::{
    io::IoSlice,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::{Buf, Bytes};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWrite;
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::{frame::coding::CloseCode, CloseFrame as TsCloseFrame};

use super::{
    close::{close_text, read_error},
    sse::EventSocket,
};
use crate::{message::Encoded, DisconnectReason, Format, PoolError};

/// One connection's socket (see the [module docs](self)).
pub(crate) enum Socket {
    /// axum's `WebSocket`: every frame through tungstenite.
    Axum(WebSocket),
    /// Upgraded by the pool: its messages written by the pool.
    Direct(Direct),
    /// The HTTP fallback: server-sent events down, POSTs up.
    Events(EventSocket),
}

/// A socket upgraded by the pool: tungstenite reads and writes control
/// frames; the pool's messages are written straight to the stream.
pub(crate) struct Direct {
    ws: WebSocketStream<TokioIo<Upgraded>>,
    /// The rest of a frame whose start was written: written before
    /// anything else is read or written.
    rest: Bytes,
}

/// Most frames in one vectored write (well under any `IOV_MAX`).
const MAX_SLICES: usize = 64;

impl Socket {
    pub(crate) fn direct(ws: WebSocketStream<TokioIo<Upgraded>>) -> Self {
        Socket::Direct(Direct {
            ws,
            rest: Bytes::new(),
        })
    }

    /// The next frame from the client; a read error is the reason to end.
    pub(super) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Message, DisconnectReason>>> {
        match self {
            Socket::Axum(ws) => {
                let next = ready!(ws.poll_next_unpin(cx));
                Poll::Ready(next.map(|r| r.map_err(|e| read_error(&*e.into_inner()))))
            }
            Socket::Direct(d) => {
                if let Err(e) = ready!(d.poll_rest(cx)) {
                    return Poll::Ready(Some(Err(DisconnectReason::Error(e))));
                }
                loop {
                    return Poll::Ready(match ready!(d.ws.poll_next_unpin(cx)) {
                        None => None,
                        Some(Err(e)) => Some(Err(read_error(&e))),
                        Some(Ok(m)) => match from_tungstenite(m) {
                            Some(m) => Some(Ok(m)),
                            None => continue,
                        },
                    });
                }
            }
            Socket::Events(e) => e.poll_next(cx),
        }
    }

    /// Writes frames `*fed..batch.len()` of `batch` in `format`, then
    /// flushes; `*fed` counts what was handed to the socket across polls
    /// (a frame handed over is written in full, even if the write is then
    /// abandoned).
    pub(super) fn poll_write_batch(
        &mut self,
        cx: &mut Context<'_>,
        batch: &[Arc<Encoded>],
        format: Format,
        fed: &mut usize,
    ) -> Poll<Result<(), PoolError>> {
        match self {
            Socket::Axum(ws) => {
                while *fed < batch.len() {
                    ready!(ws.poll_ready_unpin(cx)).map_err(socket_error)?;
                    ws.start_send_unpin(batch[*fed].frame(format))
                        .map_err(socket_error)?;
                    *fed += 1;
                }
                ws.poll_flush_unpin(cx).map_err(socket_error)
            }
            Socket::Direct(d) => d.poll_write_batch(cx, batch, format, fed),
            Socket::Events(e) => e.poll_write_batch(cx, batch, format, fed),
        }
    }

    /// Sends a ping (`close` `None`) or a close frame for `close`, then
    /// flushes; `*fed` is set once it was handed to the socket.
    pub(super) fn poll_send_control(
        &mut self,
        cx: &mut Context<'_>,
        close: Option<&DisconnectReason>,
        fed: &mut bool,
    ) -> Poll<Result<(), PoolError>> {
        match self {
            Socket::Axum(ws) => {
                if !*fed {
                    ready!(ws.poll_ready_unpin(cx)).map_err(socket_error)?;
                    let frame = match close {
                        None => Message::Ping(Bytes::new()),
                        Some(reason) => Message::Close(Some(CloseFrame {
                            code: close_code(reason),
                            reason: Utf8Bytes::from_static(close_text(reason)),
                        })),
                    };
                    ws.start_send_unpin(frame).map_err(socket_error)?;
                    *fed = true;
                }
                ws.poll_flush_unpin(cx).map_err(socket_error)
            }
            Socket::Direct(d) => {
                ready!(d.poll_rest(cx))?;
                if !*fed {
                    ready!(d.ws.poll_ready_unpin(cx)).map_err(socket_error)?;
                    let frame = match close {
                        None => tungstenite::Message::Ping(Bytes::new()),
                        Some(reason) => tungstenite::Message::Close(Some(TsCloseFrame {
                            code: CloseCode::from(close_code(reason)),
                            reason: tungstenite::Utf8Bytes::from_static(close_text(reason)),
                        })),
                    };
                    d.ws.start_send_unpin(frame).map_err(socket_error)?;
                    *fed = true;
                }
                d.ws.poll_flush_unpin(cx).map_err(socket_error)
            }
            Socket::Events(e) => {
                let close = close.map(|r| (close_code(r), close_text(r)));
                e.poll_send_control(cx, close, fed)
            }
        }
    }

    /// Writes whatever is buffered (tungstenite's reply to a close frame,
    /// the rest of a frame).
    pub(super) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), PoolError>> {
        match self {
            Socket::Axum(ws) => ws.poll_flush_unpin(cx).map_err(socket_error),
            Socket::Direct(d) => {
                ready!(d.poll_rest(cx))?;
                d.ws.poll_flush_unpin(cx).map_err(socket_error)
            }
            // Events are handed to the response body as written.
            Socket::Events(_) => Poll::Ready(Ok(())),
        }
    }

    /// Sends a ping, or a close frame for `close`, and flushes.
    pub(super) async fn send_control(
        &mut self,
        close: Option<&DisconnectReason>,
    ) -> Result<(), PoolError> {
        let mut fed = false;
        std::future::poll_fn(|cx| self.poll_send_control(cx, close, &mut fed)).await
    }

    /// Flushes ([`Self::poll_flush`]).
    pub(super) async fn flush(&mut self) -> Result<(), PoolError> {
        std::future::poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// The next frame ([`Self::poll_next`]).
    pub(super) async fn next(&mut self) -> Option<Result<Message, DisconnectReason>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }
}

impl Direct {
    /// Finishes the frame whose start was written, if there is one.
    fn poll_rest(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), PoolError>> {
        while !self.rest.is_empty() {
            let io = Pin::new(self.ws.get_mut());
            let n = ready!(io.poll_write(cx, &self.rest)).map_err(io_error)?;
            if n == 0 {
                return Poll::Ready(Err(io_error(std::io::ErrorKind::WriteZero.into())));
            }
            self.rest.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write_batch(
        &mut self,
        cx: &mut Context<'_>,
        batch: &[Arc<Encoded>],
        format: Format,
        fed: &mut usize,
    ) -> Poll<Result<(), PoolError>> {
        ready!(self.poll_rest(cx))?;
        if *fed == 0 {
            // What tungstenite buffered (a pong, say) goes first, whole.
            ready!(self.ws.poll_flush_unpin(cx)).map_err(socket_error)?;
        }
        while *fed < batch.len() {
            let io = Pin::new(self.ws.get_mut());
            let frames = &batch[*fed..batch.len().min(*fed + MAX_SLICES)];
            let written = if io.is_write_vectored() {
                let slices: smallvec::SmallVec<[IoSlice<'_>; MAX_SLICES]> = frames
                    .iter()
                    .map(|m| IoSlice::new(m.wire(format)))
                    .collect();
                io.poll_write_vectored(cx, &slices)
            } else {
                io.poll_write(cx, frames[0].wire(format))
            };
            let mut n = ready!(written).map_err(io_error)?;
            if n == 0 {
                return Poll::Ready(Err(io_error(std::io::ErrorKind::WriteZero.into())));
            }
            // Whole frames written, then the start of one: its rest is
            // written before anything else.
            for m in frames {
                let frame = m.wire(format);
                *fed += 1;
                if n < frame.len() {
                    self.rest = frame.slice(n..);
                    ready!(self.poll_rest(cx))?;
                    break;
                }
                n -= frame.len();
                if n == 0 {
                    break;
                }
            }
        }
        Pin::new(self.ws.get_mut()).poll_flush(cx).map_err(io_error)
    }
}

fn close_code(reason: &DisconnectReason) -> u16 {
    reason.code().unwrap_or(crate::message::close_code::NORMAL)
}

/// tungstenite's message as axum's (the connection reads axum's); `None`
/// for a raw frame, which a read never gives.
fn from_tungstenite(m: tungstenite::Message) -> Option<Message> {
    use tungstenite::Message as T;
    Some(match m {
        // Already checked as UTF-8 by tungstenite; checked again by axum's
        // type (inbound text only, the JSON format's).
        T::Text(t) => Message::Text(Utf8Bytes::try_from(Bytes::from(t)).ok()?),
        T::Binary(b) => Message::Binary(b),
        T::Ping(b) => Message::Ping(b),
        T::Pong(b) => Message::Pong(b),
        T::Close(f) => Message::Close(f.map(|f| CloseFrame {
            code: f.code.into(),
            reason: Utf8Bytes::try_from(Bytes::from(f.reason)).unwrap_or_default(),
        })),
        T::Frame(_) => return None,
    })
}

fn socket_error(e: impl std::fmt::Display) -> PoolError {
    PoolError::Socket(e.to_string())
}

fn io_error(e: std::io::Error) -> PoolError {
    PoolError::Socket(e.to_string())
}
