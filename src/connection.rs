//! The life of one connection: register, read and write, close.
//!
//! Each connection is one task that owns its socket. It waits on three
//! things at once: a frame from the client, work in its outbound queue
//! (messages or a close request), and its ping and idle timers. Reads and
//! writes never block other connections: routing only pushes into queues.
//!
//! The task runs inside a `tracing` span `ws{id=.. conn=..}`; connects and
//! disconnects are logged at debug, nothing per message above trace.

use std::{
    future::{poll_fn, Future},
    sync::atomic::{
        AtomicBool,
        Ordering::{AcqRel, Relaxed, Release},
    },
    sync::Arc,
    task::{Context, Poll, Wake, Waker},
};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{task::AtomicWaker, SinkExt, StreamExt};
use tokio::{sync::OwnedSemaphorePermit, time::Instant};
use tracing::Instrument;

use crate::{
    client::{ClientState, CloseRequest},
    event::UndeliveredReason,
    mailbox::Mailbox,
    message::{after, decode, now_ms, receipt, stamp, status, Encoded},
    registry::{Departure, Leave},
    stats::bump,
    sweeper, ClientConfig, ClientHandle, ClientId, DisconnectReason, DuplicatePolicy, PoolError,
    PoolEvent, Relay, SendMsg, WsPool,
};

/// Most frames written before one flush.
const BATCH_FRAMES: usize = 64;
/// Most payload bytes written before one flush.
const BATCH_BYTES: usize = 256 * 1024;

/// Counts the connection in the pool's live connections until its side of
/// the close is done (or the task ends, however it ends); `shutdown` waits
/// for that count to reach zero.
struct LiveGuard(WsPool);

impl LiveGuard {
    fn new(pool: &WsPool) -> Self {
        pool.inner.live.send_modify(|n| *n += 1);
        LiveGuard(pool.clone())
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.inner.live.send_modify(|n| *n -= 1);
    }
}

/// Runs one upgraded connection to its end. `permit` is its
/// `max_connections` slot, released as soon as it is unregistered.
pub(crate) async fn serve(
    pool: WsPool,
    config: ClientConfig,
    mut socket: WebSocket,
    permit: OwnedSemaphorePermit,
) {
    let live = LiveGuard::new(&pool);
    sweeper::ensure_started(&pool);
    let conn_id = pool.next_id();
    let span = tracing::debug_span!("ws", id = %config.id, conn = conn_id);
    async move {
        let state = match register(&pool, conn_id, &config) {
            Ok(state) => state,
            Err(refusal) => {
                let counters = &pool.inner.counters;
                let counter = match refusal {
                    DisconnectReason::Shutdown => &counters.refused_shutting_down,
                    _ => &counters.refused_duplicate_id,
                };
                bump(counter, 1);
                let _ = tokio::time::timeout(
                    pool.config().write_timeout(),
                    socket.send(close_frame(&refusal)),
                )
                .await;
                tracing::debug!(reason = ?refusal, "refused at registration");
                return;
            }
        };
        // The registered state has what it needs; free the rest now rather
        // than hold it for the connection's life.
        drop(config);
        Connection {
            client: ClientHandle { pool, state },
        }
        .run(socket, permit, live)
        .await;
    }
    .instrument(span)
    .await;
}

/// Registers the connection, attaching it to its id's mailbox; replaces
/// (4001) or refuses per the duplicate policy.
fn register(
    pool: &WsPool,
    conn_id: u64,
    config: &ClientConfig,
) -> Result<Arc<ClientState>, DisconnectReason> {
    let (state, replaced) = {
        let mut registry = pool.inner.registry.write();
        if pool.is_shutting_down() {
            return Err(DisconnectReason::Shutdown);
        }
        if pool.config().duplicate_policy() == DuplicatePolicy::Refuse
            && registry.conn(&config.id).is_some()
        {
            return Err(DisconnectReason::Refused);
        }
        registry.attach(
            &config.id,
            &config.channels,
            || {
                Mailbox::new(
                    pool.next_id(),
                    ClientId::from(config.id.as_str()),
                    config.format,
                )
            },
            |mailbox| ClientState::new(conn_id, config, mailbox),
            &pool.inner.limits,
        )
    };
    if let Some(old) = replaced {
        old.request_close(
            CloseRequest {
                reason: DisconnectReason::Replaced,
                flush: false,
            },
            false,
        );
    }
    Ok(state)
}

struct Connection {
    client: ClientHandle,
}

impl Connection {
    fn pool(&self) -> &WsPool {
        &self.client.pool
    }

    fn state(&self) -> &ClientState {
        &self.client.state
    }

    async fn run(self, mut socket: WebSocket, permit: OwnedSemaphorePermit, live: LiveGuard) {
        bump(&self.pool().inner.counters.connections_total, 1);
        tracing::debug!(remote = ?self.state().remote_addr, "connected");
        if self.pool().wants_events() {
            let info = self.client.info();
            self.pool().emit(|| PoolEvent::Connected(info));
        }
        let pool_callbacks = self.pool().config().callbacks.clone();
        self.callback(|h| pool_callbacks.open(h));
        let own = self.state().callbacks.clone();
        self.callback(|h| own.open(h));

        let reason = self.serve(&mut socket).await;

        // Unregister first, so nothing new is routed here while closing.
        self.depart(&reason);
        // The slot is free as soon as the client is gone from the registry.
        drop(permit);
        let write_timeout = self.pool().config().write_timeout();
        let we_close = !matches!(
            reason,
            DisconnectReason::ClientClosed(_)
                | DisconnectReason::ConnectionLost
                | DisconnectReason::Error(_)
        );
        if we_close {
            let _ = tokio::time::timeout(write_timeout, socket.send(close_frame(&reason))).await;
        } else {
            // Sends tungstenite's reply to the client's close frame.
            let _ = tokio::time::timeout(write_timeout, socket.flush()).await;
        }
        tracing::debug!(
            ?reason,
            still_queued = self.state().mailbox.len().0,
            "disconnected"
        );
        self.pool().emit(|| PoolEvent::Disconnected {
            id: self.state().id.clone(),
            reason: reason.clone(),
        });
        self.callback(|h| pool_callbacks.close(h, &reason));
        self.callback(|h| own.close(h, &reason));
        // Our side is done: `shutdown` need not wait for the client's reply.
        drop(live);
        if we_close {
            // Wait (bounded) for the client's close reply, so it reads ours.
            let _ = tokio::time::timeout(write_timeout, async {
                while let Some(Ok(_)) = socket.next().await {}
            })
            .await;
        }
    }

    /// Unregisters the connection. Its mailbox goes to the connection that
    /// replaced it, or is kept while the client is away, or is given up
    /// (kicked, shutdown, buffering off or full) with what it held reported.
    fn depart(&self, reason: &DisconnectReason) {
        let pool = self.pool();
        let config = pool.config();
        let leave = match reason {
            DisconnectReason::Kicked | DisconnectReason::Shutdown => Leave::Remove,
            _ if config.offline_ttl().is_zero() => Leave::Remove,
            _ => Leave::Offline {
                ttl: config.offline_ttl(),
                max_offline: config.offline_max_clients(),
            },
        };
        let departure = pool
            .inner
            .registry
            .write()
            .depart(self.state(), leave, &pool.inner.limits);
        let id = &self.state().id;
        match departure {
            Departure::NotCurrent => {}
            Departure::Offline { trimmed } => {
                pool.report_undelivered(id, trimmed, UndeliveredReason::OfflineFull);
            }
            Departure::Removed { left } => {
                let why = match reason {
                    DisconnectReason::Shutdown => UndeliveredReason::Shutdown,
                    _ => UndeliveredReason::Disconnected,
                };
                pool.report_undelivered(id, left, why);
            }
        }
    }

    /// Reads, writes and keeps time until the connection must end.
    ///
    /// One task owns the whole socket (no split halves and their lock): the
    /// `select!` drops its futures before a branch's handler runs, so the
    /// handlers may use the socket.
    async fn serve(&self, socket: &mut WebSocket) -> DisconnectReason {
        let config = self.pool().config();
        let (idle_timeout, ping_interval) = (config.idle_timeout(), config.ping_interval());
        // One timer serves both the pings and the idle timeout. A frame only
        // moves `idle_at` later; the timer is not touched on the per-frame
        // path, and when it fires early it is simply set again.
        let mut next_ping = after(ping_interval);
        let mut idle_at = after(idle_timeout);
        let timer = tokio::time::sleep_until(next_ping.min(idle_at));
        tokio::pin!(timer);
        let mut batch = Vec::new();
        let readable = ReadSignal::new();
        loop {
            tokio::select! {
                frame = readable.next_frame(socket) => {
                    let frame = match frame {
                        Some(Ok(frame)) => frame,
                        Some(Err(e)) => return read_error(e),
                        None => return DisconnectReason::ConnectionLost,
                    };
                    idle_at = after(idle_timeout);
                    self.state().last_received_ms.store(now_ms() as u64, Relaxed);
                    match frame {
                        Message::Binary(_) | Message::Text(_) => self.inbound(frame),
                        Message::Close(frame) => return DisconnectReason::ClientClosed(frame.map(|f| f.code)),
                        // Pongs only prove liveness; tungstenite answers pings.
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
                () = self.state().wake.notified() => {
                    match self.write_queued(socket, &mut batch).await {
                        Ok(None) => {}
                        Ok(Some(close)) => return close.reason,
                        Err(e) => {
                            self.report(e.clone());
                            return DisconnectReason::Error(e);
                        }
                    }
                }
                () = &mut timer => {
                    let now = Instant::now();
                    if now >= idle_at {
                        return DisconnectReason::IdleTimeout;
                    }
                    if now >= next_ping {
                        next_ping = after(ping_interval);
                        let timeout = config.write_timeout();
                        match tokio::time::timeout(timeout, socket.send(Message::Ping(Default::default()))).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => return DisconnectReason::Error(PoolError::Socket(e.to_string())),
                            Err(_) => return DisconnectReason::Error(PoolError::WriteTimeout(timeout)),
                        }
                    }
                    timer.as_mut().reset(next_ping.min(idle_at));
                }
            }
        }
    }

    /// Writes one batch from the mailbox with a single flush; returns a
    /// close request when it is due (at once, or once the mailbox is empty
    /// for a flushing close).
    async fn write_queued(
        &self,
        socket: &mut WebSocket,
        batch: &mut Vec<Arc<Encoded>>,
    ) -> Result<Option<CloseRequest>, PoolError> {
        let state = self.state();
        let close = state.close_request();
        if close.as_ref().is_some_and(|c| !c.flush) {
            return Ok(close);
        }
        let pool = self.pool();
        let mut expired = Vec::new();
        let bytes = state.mailbox.drain(
            state.conn_id,
            batch,
            &mut expired,
            BATCH_FRAMES,
            BATCH_BYTES,
            &pool.inner.limits,
        );
        pool.report_undelivered(&state.id, expired, UndeliveredReason::Expired);
        if !batch.is_empty() {
            let frames = batch.len() as u64;
            let timeout = pool.config().write_timeout();
            let write = async {
                for msg in batch.iter() {
                    socket.feed(msg.frame(state.format)).await?;
                }
                socket.flush().await
            };
            let failed = match tokio::time::timeout(timeout, write).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(PoolError::Socket(e.to_string())),
                Err(_) => Some(PoolError::WriteTimeout(timeout)),
            };
            if let Some(error) = failed {
                // Some of the batch may have reached the client; none is
                // known to have: report it all rather than lose it silently.
                pool.report_undelivered(
                    &state.id,
                    std::mem::take(batch),
                    UndeliveredReason::WriteFailed,
                );
                return Err(error);
            }
            batch.clear();
            let counters = &pool.inner.counters;
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

    /// Handles one data frame from the client: decode, stamp, callbacks,
    /// event, relay.
    fn inbound(&self, frame: Message) {
        let pool = self.pool();
        let state = self.state();
        let len = match &frame {
            Message::Binary(b) => b.len(),
            Message::Text(t) => t.len(),
            _ => 0,
        } as u64;
        let counters = &pool.inner.counters;
        bump(&counters.messages_in, 1);
        bump(&counters.bytes_in, len);
        bump(&state.messages_in, 1);
        bump(&state.bytes_in, len);
        tracing::trace!(len, "frame in");

        let mut msg = match decode(&frame) {
            Ok(msg) => msg,
            Err(e) => {
                bump(&counters.decode_errors, 1);
                let reason = e.to_string();
                self.report(e);
                let original = SendMsg {
                    from_client_id: state.id.to_string(),
                    ..Default::default()
                };
                pool.send_receipt(&state.id, receipt(&original, status::UNDECODABLE, &reason));
                return;
            }
        };
        stamp(&mut msg, &state.id);
        let mut relay = Relay::Continue;
        for callbacks in [&pool.config().callbacks, &state.callbacks] {
            match callbacks.message(&self.client, &mut msg) {
                Ok(Relay::Continue) => {}
                Ok(Relay::Stop) => relay = Relay::Stop,
                Err(e) => {
                    self.report(e);
                    relay = Relay::Stop;
                }
            }
        }
        let msg = Arc::new(msg);
        pool.emit(|| PoolEvent::Message {
            from: state.id.clone(),
            msg: msg.clone(),
        });
        if relay == Relay::Continue {
            pool.relay(state, msg);
        }
    }

    /// Runs a callback; a panic is reported as an error.
    fn callback(&self, f: impl FnOnce(&ClientHandle) -> Result<(), PoolError>) {
        if let Err(e) = f(&self.client) {
            self.report(e);
        }
    }

    /// Reports a runtime error to the event stream and `on_error`.
    fn report(&self, error: PoolError) {
        tracing::trace!(%error, "connection error");
        let pool = self.pool();
        for callbacks in [&pool.config().callbacks, &self.state().callbacks] {
            if let Err(panic) = callbacks.error(&self.client, &error) {
                pool.emit(|| PoolEvent::Error {
                    id: Some(self.state().id.clone()),
                    error: panic,
                });
            }
        }
        pool.emit(|| PoolEvent::Error {
            id: Some(self.state().id.clone()),
            error,
        });
    }
}

/// Polls the socket's read side only when it asked to be polled.
///
/// The connection task is woken for outbound work far more often than for
/// inbound frames (a subscriber of a busy channel, every message). Polling
/// the read side on each of those wakes costs a failed read attempt, and
/// tungstenite zero-fills its read buffer before every attempt. So the read
/// side is polled with a waker of its own that records "readable" before
/// waking the task, and is polled again only once that was recorded (or
/// after it produced a frame, as more may be buffered).
struct ReadSignal {
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
    fn new() -> Self {
        let flag = Arc::new(ReadFlag {
            ready: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(flag.clone());
        ReadSignal { flag, waker }
    }

    /// The next frame from the client, as `StreamExt::next` would give it.
    fn next_frame<'a>(
        &'a self,
        socket: &'a mut WebSocket,
    ) -> impl Future<Output = Option<Result<Message, axum::Error>>> + 'a {
        poll_fn(move |cx| {
            // Register before checking, so a wake in between is not lost.
            self.flag.task.register(cx.waker());
            if !self.flag.ready.swap(false, AcqRel) {
                return Poll::Pending;
            }
            let polled = socket.poll_next_unpin(&mut Context::from_waker(&self.waker));
            if polled.is_ready() {
                // More frames may already be buffered: look again next time.
                self.flag.ready.store(true, Release);
            }
            polled
        })
    }
}

fn read_error(e: axum::Error) -> DisconnectReason {
    use tungstenite::{error::ProtocolError, Error};
    // axum wraps tungstenite's error; it is the same version as ours.
    let inner = e.into_inner();
    match inner.downcast_ref::<Error>() {
        Some(Error::Capacity(_)) => DisconnectReason::MessageTooBig,
        Some(
            Error::ConnectionClosed
            | Error::AlreadyClosed
            | Error::Io(_)
            | Error::Protocol(ProtocolError::ResetWithoutClosingHandshake),
        ) => DisconnectReason::ConnectionLost,
        _ => DisconnectReason::Error(PoolError::Socket(inner.to_string())),
    }
}

fn close_text(reason: &DisconnectReason) -> &'static str {
    match reason {
        DisconnectReason::Replaced => "replaced",
        DisconnectReason::Kicked => "disconnected",
        DisconnectReason::Shutdown => "server shutting down",
        DisconnectReason::IdleTimeout => "idle timeout",
        DisconnectReason::MessageTooBig => "message too big",
        DisconnectReason::TooSlow => "too slow",
        DisconnectReason::Refused => "id in use",
        _ => "",
    }
}

fn close_frame(reason: &DisconnectReason) -> Message {
    Message::Close(Some(CloseFrame {
        code: reason.code().unwrap_or(1000),
        reason: close_text(reason).into(),
    }))
}
