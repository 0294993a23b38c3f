//! The HTTP fallback's socket: server-sent events down, POSTs up
//! (PROTOCOL.md section 10).
//!
//! A session is a connection like any other (registered, routed, limited
//! and closed the same way); only its socket differs. What the connection
//! writes goes into a bounded buffer that the event stream's response body
//! drains ([`EventBody`]); what the client POSTs reaches the connection
//! through a bounded channel, found by the session's id in [`Sessions`].
//! The session ends when either side goes: the response body is dropped
//! (the client went away) or the connection closes (an `event: close`,
//! then the end of the stream).

use std::{
    collections::HashMap,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use axum::extract::ws::Message;
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::{message::Encoded, DisconnectReason, Format, PoolError};

/// Most bytes of events waiting for the client to read: a writer that
/// would go past it waits (and `write_timeout`, `slow_client_timeout`
/// apply, as to a WebSocket whose socket is full).
const BUFFER_LIMIT: usize = 256 * 1024;

/// Most POSTed messages waiting for the connection: a POST past it is
/// refused (429).
pub(crate) const INBOUND_LIMIT: usize = 64;

/// The live sessions by id, for the POSTs to find.
#[derive(Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, mpsc::Sender<Message>>>,
}

/// Why a POST was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PostError {
    /// No live session has that id (never had, or it ended).
    Unknown,
    /// [`INBOUND_LIMIT`] messages are waiting already.
    Busy,
}

impl Sessions {
    /// Hands `msg` to session `id`'s connection.
    pub(crate) fn post(&self, id: &str, msg: Message) -> Result<(), PostError> {
        let tx = self.map.lock().get(id).cloned().ok_or(PostError::Unknown)?;
        tx.try_send(msg).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => PostError::Busy,
            mpsc::error::TrySendError::Closed(_) => PostError::Unknown,
        })
    }

    /// Is session `id` live?
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.map.lock().contains_key(id)
    }
}

/// The connection's side of a session.
pub(crate) struct EventSocket {
    inbound: mpsc::Receiver<Message>,
    out: Arc<Shared>,
    /// Removes the session from [`Sessions`] when the connection is done.
    _session: SessionGuard,
}

/// The event stream: the response body's side of a session.
pub(crate) struct EventBody {
    out: Arc<Shared>,
}

struct SessionGuard {
    sessions: Arc<Sessions>,
    id: String,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.sessions.map.lock().remove(&self.id);
    }
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    buf: BytesMut,
    /// The connection closed: the stream ends once `buf` is read.
    ended: bool,
    /// The response body was dropped: the client went away.
    gone: bool,
    /// The body, waiting for events.
    body: Option<Waker>,
    /// The connection, waiting for room in `buf`.
    writer: Option<Waker>,
    /// The connection's read side, waiting to hear that the client went.
    reader: Option<Waker>,
}

/// Opens a session under a new random id: its socket, its event stream
/// (starting with the `open` event that `open` builds from the id), and
/// the id.
pub(crate) fn open(
    sessions: &Arc<Sessions>,
    open: impl FnOnce(&str) -> Bytes,
) -> Result<(EventSocket, EventBody, String), PoolError> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(|e| PoolError::Socket(format!("no randomness: {e}")))?;
    let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let (tx, inbound) = mpsc::channel(INBOUND_LIMIT);
    sessions.map.lock().insert(id.clone(), tx);
    let out = Arc::new(Shared::default());
    out.state.lock().buf.extend_from_slice(&open(&id));
    let socket = EventSocket {
        inbound,
        out: out.clone(),
        _session: SessionGuard {
            sessions: sessions.clone(),
            id: id.clone(),
        },
    };
    Ok((socket, EventBody { out }, id))
}

impl EventSocket {
    /// The next message POSTed; `None` once the client went away.
    pub(super) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Message, DisconnectReason>>> {
        if let Poll::Ready(Some(msg)) = self.inbound.poll_recv(cx) {
            return Poll::Ready(Some(Ok(msg)));
        }
        let mut s = self.out.state.lock();
        if s.gone {
            return Poll::Ready(None);
        }
        s.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Appends events made by `write` once there is room: `Err` if the
    /// client went away.
    fn poll_append(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(&mut BytesMut),
    ) -> Poll<Result<(), PoolError>> {
        let mut s = self.out.state.lock();
        if s.gone || s.ended {
            return Poll::Ready(Err(PoolError::Socket("the event stream is closed".into())));
        }
        if s.buf.len() >= BUFFER_LIMIT {
            s.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        write(&mut s.buf);
        if let Some(body) = s.body.take() {
            body.wake();
        }
        Poll::Ready(Ok(()))
    }

    /// Writes frames `*fed..` of `batch` as events, as room allows.
    pub(super) fn poll_write_batch(
        &mut self,
        cx: &mut Context<'_>,
        batch: &[Arc<Encoded>],
        format: Format,
        fed: &mut usize,
    ) -> Poll<Result<(), PoolError>> {
        while *fed < batch.len() {
            let mut n = *fed;
            std::task::ready!(self.poll_append(cx, |buf| {
                // As many as fit; at least one.
                while n < batch.len() && (n == *fed || buf.len() < BUFFER_LIMIT) {
                    buf.extend_from_slice(batch[n].event(format));
                    n += 1;
                }
            }))?;
            *fed = n;
        }
        Poll::Ready(Ok(()))
    }

    /// A ping (a comment line: it keeps proxies from timing the stream
    /// out), or the close event, after which the stream ends.
    pub(super) fn poll_send_control(
        &mut self,
        cx: &mut Context<'_>,
        close: Option<(u16, &str)>,
        fed: &mut bool,
    ) -> Poll<Result<(), PoolError>> {
        if *fed {
            return Poll::Ready(Ok(()));
        }
        std::task::ready!(self.poll_append(cx, |buf| match close {
            None => buf.extend_from_slice(b": ping\n\n"),
            Some((code, reason)) => {
                let data = serde_json::json!({ "code": code, "reason": reason });
                buf.extend_from_slice(format!("event: close\ndata: {data}\n\n").as_bytes());
            }
        }))?;
        if close.is_some() {
            self.out.state.lock().ended = true;
            self.out.wake_body();
        }
        *fed = true;
        Poll::Ready(Ok(()))
    }
}

impl Drop for EventSocket {
    fn drop(&mut self) {
        self.out.state.lock().ended = true;
        self.out.wake_body();
    }
}

impl Shared {
    fn wake_body(&self) {
        if let Some(body) = self.state.lock().body.take() {
            body.wake();
        }
    }
}

impl futures_util::Stream for EventBody {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut s = self.out.state.lock();
        if !s.buf.is_empty() {
            let chunk = s.buf.split().freeze();
            if s.buf.capacity() > BUFFER_LIMIT {
                // A burst's room goes back once read.
                s.buf = BytesMut::new();
            }
            if let Some(writer) = s.writer.take() {
                writer.wake();
            }
            return Poll::Ready(Some(Ok(chunk)));
        }
        if s.ended {
            return Poll::Ready(None);
        }
        s.body = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for EventBody {
    fn drop(&mut self) {
        let mut s = self.out.state.lock();
        s.gone = true;
        let (writer, reader) = (s.writer.take(), s.reader.take());
        drop(s);
        writer.into_iter().chain(reader).for_each(Waker::wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// POSTs past [`INBOUND_LIMIT`] waiting are refused as busy; an
    /// unknown id, or the id of a session that ended, is unknown.
    #[test]
    fn posts_are_bounded_and_die_with_their_session() {
        let sessions = Arc::new(Sessions::default());
        let (socket, _body, id) = open(&sessions, |_| Bytes::new()).unwrap();
        assert_eq!(id.len(), 32, "128 bits in hex");
        let msg = || Message::Binary(Bytes::from_static(b"x"));
        for _ in 0..INBOUND_LIMIT {
            assert_eq!(sessions.post(&id, msg()), Ok(()));
        }
        assert_eq!(sessions.post(&id, msg()), Err(PostError::Busy));
        assert_eq!(sessions.post("feed", msg()), Err(PostError::Unknown));
        drop(socket);
        assert!(!sessions.contains(&id));
        assert_eq!(sessions.post(&id, msg()), Err(PostError::Unknown));
        let (_, _, other) = open(&sessions, |_| Bytes::new()).unwrap();
        assert_ne!(other, id);
    }
}
