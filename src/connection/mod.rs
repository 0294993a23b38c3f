//! The life of one connection: register, read and write, close.
//!
//! Each connection is one task that owns its socket. It waits on three
//! things at once: a frame from the client, work in its outbound queue
//! (messages or a close request), and its ping and idle timers. Reads and
//! writes never block other connections: routing only pushes into queues.
//!
//! A write waits at most `write_timeout`, and less when the server decides
//! to close (replace, kick, 4008, a shutdown past its timeout): the write is
//! abandoned, its messages reported `WriteFailed`, the connection
//! unregistered and reported, and only then is the close frame tried. A
//! client that breaks the protocol gets a close frame too (1002, 1007,
//! 1009), and one that floods past the rate limits 1008.
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

mod rate_limit;

use rate_limit::{RateLimit, Verdict};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{task::AtomicWaker, SinkExt, StreamExt};
use tokio::time::Instant;
use tracing::Instrument;

use crate::{
    admission::Ticket,
    client::{ClientState, CloseRequest},
    cluster::Cluster,
    event::UndeliveredReason,
    message::{after, after_from, close_code, decode, now_ms, stamp, status, Encoded},
    node::{sweeper, Departure, Leave},
    stats::bump,
    ClientConfig, ClientHandle, DisconnectReason, DuplicatePolicy, PoolError, PoolEvent, Relay,
    SendError, WsPool,
};

/// Most frames written before one flush.
const BATCH_FRAMES: usize = 64;
/// Most payload bytes written before one flush.
const BATCH_BYTES: usize = 256 * 1024;

/// Why a connection's loop ended, and whether its socket is stalled.
struct Ended {
    reason: DisconnectReason,
    /// A write failed or was abandoned: report the end before trying the
    /// socket again.
    stalled: bool,
}

impl From<DisconnectReason> for Ended {
    fn from(reason: DisconnectReason) -> Self {
        Ended {
            reason,
            stalled: false,
        }
    }
}

/// Why a write did not complete.
enum WriteStop {
    /// It failed, or took longer than `write_timeout`.
    Failed(PoolError),
    /// A close that does not wait was requested meanwhile: the write was
    /// abandoned for it.
    Interrupted(CloseRequest),
}

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

/// Runs one upgraded connection to its end. `ticket` is its hold on the
/// pool's admission limits: the handshake's part is given back once
/// registered, the rest as soon as it is unregistered.
///
/// Not an `async fn`: one would keep its arguments beside the futures they
/// are moved into for the connection's whole life. The socket and the
/// configuration are boxed, so each nested future holds a pointer, not a
/// copy (the task of an idle connection: 3,712 bytes before, measured with
/// `-Zprint-type-sizes` in BENCHMARKS.md).
pub(crate) fn serve(
    pool: WsPool,
    config: Box<ClientConfig>,
    socket: WebSocket,
    mut ticket: Ticket,
) -> impl std::future::Future<Output = ()> + Send {
    let mut socket = Box::new(socket);
    let live = LiveGuard::new(&pool);
    sweeper::ensure_started(&pool);
    let conn_id = pool.next_id();
    let span = tracing::debug_span!("ws", id = %config.id, conn = conn_id);
    async move {
        let mut registered = register(&pool, conn_id, &config);
        if let (Ok(state), Some(cluster)) = (&registered, pool.cluster()) {
            if let Err(refusal) = claim(&pool, cluster, state).await {
                registered = Err(refusal);
            }
        }
        ticket.handshake_done();
        let state = match registered {
            Ok(state) => state,
            Err(refusal) => {
                drop(ticket);
                let counters = pool.counters();
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
        .run(socket, ticket, live)
        .await;
    }
    .instrument(span)
}

/// Registers the connection, attaching it to its id's mailbox; replaces
/// (4001) or refuses per the duplicate policy.
fn register(
    pool: &WsPool,
    conn_id: u64,
    config: &ClientConfig,
) -> Result<Arc<ClientState>, DisconnectReason> {
    let refuse_duplicates = pool.config().duplicate_policy() == DuplicatePolicy::Refuse;
    let (state, replaced) = pool.node().attach(conn_id, config, |connected| {
        if pool.is_shutting_down() {
            Err(DisconnectReason::Shutdown)
        } else if refuse_duplicates && connected {
            Err(DisconnectReason::Refused)
        } else {
            Ok(())
        }
    })?;
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

/// Claims the id cluster-wide; puts what was buffered for it elsewhere
/// ahead of its queue. Refused (and unregistered) when the duplicate policy
/// refuses and another node has the id. When the cluster cannot be reached
/// the connection is served here unclaimed; the id is claimed when the
/// link is back.
async fn claim(
    pool: &WsPool,
    cluster: &dyn Cluster,
    state: &Arc<ClientState>,
) -> Result<(), DisconnectReason> {
    let refuse = pool.config().duplicate_policy() == DuplicatePolicy::Refuse;
    let channels = pool.node().channels_of(state);
    match cluster.claim(state, channels, refuse).await {
        Ok(claimed) => {
            state.set_epoch(claimed.epoch);
            pool.cluster_take_buffered(state, claimed.buffered);
            Ok(())
        }
        Err(SendError::NotConnected(_)) => {
            if let Departure::Removed { left } = pool.node().depart(state, Leave::Remove) {
                pool.report_undelivered(&state.id, left, UndeliveredReason::Disconnected);
            }
            Err(DisconnectReason::Refused)
        }
        Err(e) => {
            tracing::warn!(error = %e, "claim failed: served here until the cluster is back");
            Ok(())
        }
    }
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

    async fn run(self, mut socket: Box<WebSocket>, ticket: Ticket, live: LiveGuard) {
        bump(&self.pool().counters().connections_total, 1);
        tracing::debug!(remote = ?self.state().remote_addr, "connected");
        if self.pool().wants_events() {
            let info = self.client.info();
            self.pool().emit(|| PoolEvent::Connected(info));
        }
        let pool_callbacks = &self.pool().config().callbacks;
        self.callback(|h| pool_callbacks.open(h));
        let own = &self.state().callbacks;
        self.callback(|h| own.open(h));

        let Ended { reason, stalled } = self.serve(&mut socket).await;

        // Unregister first, so nothing new is routed here while closing.
        self.depart(&reason);
        // The slot is free as soon as the client is gone from the registry.
        drop(ticket);
        if let DisconnectReason::ProtocolViolation { detail, .. } = &reason {
            bump(&self.pool().counters().protocol_errors, 1);
            tracing::debug!(%detail, "protocol violation");
        }
        let write_timeout = self.pool().config().write_timeout();
        let we_close = !matches!(
            reason,
            DisconnectReason::ClientClosed(_)
                | DisconnectReason::ConnectionLost
                | DisconnectReason::Error(_)
        );
        if stalled {
            // The socket is slow: the close takes effect (and is reported)
            // now; the close frame follows on a best-effort basis.
            self.ended(&reason);
            if we_close {
                let _ =
                    tokio::time::timeout(write_timeout, socket.send(close_frame(&reason))).await;
            }
            return;
        }
        if we_close {
            let _ = tokio::time::timeout(write_timeout, socket.send(close_frame(&reason))).await;
        } else {
            // Sends tungstenite's reply to the client's close frame.
            let _ = tokio::time::timeout(write_timeout, socket.flush()).await;
        }
        self.ended(&reason);
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

    /// Reports the end of the connection: log, event, `on_close` callbacks.
    fn ended(&self, reason: &DisconnectReason) {
        bump(&self.pool().counters().disconnects_by[reason.index()], 1);
        tracing::debug!(
            ?reason,
            still_queued = self.state().mailbox.len().0,
            "disconnected"
        );
        self.pool().emit(|| PoolEvent::Disconnected {
            id: self.state().id.clone(),
            reason: reason.clone(),
        });
        let pool_callbacks = &self.pool().config().callbacks;
        self.callback(|h| pool_callbacks.close(h, reason));
        let own = &self.state().callbacks;
        self.callback(|h| own.close(h, reason));
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
        if let Some(cluster) = pool.cluster() {
            // In a cluster the offline buffer lives in the cluster, so it
            // outlives this node: the mailbox goes, its contents with it.
            let away = matches!(leave, Leave::Offline { .. });
            let channels = pool.node().channels_of(self.state());
            if let Departure::Removed { left } = pool.node().depart(self.state(), Leave::Remove) {
                cluster.release(self.client.state.clone(), channels, away, left);
            }
            return;
        }
        let departure = pool.node().depart(self.state(), leave);
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
    async fn serve(&self, socket: &mut WebSocket) -> Ended {
        let config = self.pool().config();
        let mut rate = RateLimit::new(
            config.max_inbound_messages_per_sec(),
            config.max_inbound_bytes_per_sec(),
            config.max_message_size(),
        );
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
                        Some(Err(e)) => return read_error(e).into(),
                        None => return DisconnectReason::ConnectionLost.into(),
                    };
                    let now = Instant::now();
                    idle_at = after_from(now, idle_timeout);
                    self.state().last_received_ms.store(now_ms() as u64, Relaxed);
                    match frame {
                        Message::Binary(_) | Message::Text(_) => {
                            if let Some(reason) = self.inbound(frame, &mut rate, now) {
                                return reason.into();
                            }
                        }
                        Message::Close(frame) => return DisconnectReason::ClientClosed(frame.map(|f| f.code)).into(),
                        // Pongs only prove liveness; tungstenite answers pings.
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
                () = self.state().wake.notified() => {
                    // Boxed, as the ping below: a write's future is the
                    // largest state of this loop, and the task would keep
                    // room for it all the time it is idle (one allocation
                    // per batch instead: BENCHMARKS.md, issue 11).
                    match Box::pin(self.write_queued(socket, &mut batch)).await {
                        Ok(None) => {}
                        Ok(Some(close)) => return close.reason.into(),
                        Err(stop) => return self.stopped(stop),
                    }
                }
                () = &mut timer => {
                    let now = Instant::now();
                    if now >= idle_at {
                        return DisconnectReason::IdleTimeout.into();
                    }
                    if now >= next_ping {
                        next_ping = after(ping_interval);
                        let ping = socket.send(Message::Ping(Default::default()));
                        if let Err(stop) = Box::pin(self.write(ping)).await {
                            return self.stopped(stop);
                        }
                    }
                    timer.as_mut().reset(next_ping.min(idle_at));
                }
            }
        }
    }

    /// Runs `write`, bounded by `write_timeout` and abandoned as soon as a
    /// close that does not wait is requested (a client that stopped
    /// reading must not delay its own 4008, a kick, or a replacement).
    async fn write(
        &self,
        write: impl Future<Output = Result<(), axum::Error>>,
    ) -> Result<(), WriteStop> {
        let timeout = self.pool().config().write_timeout();
        let write = tokio::time::timeout(timeout, write);
        tokio::pin!(write);
        let state = self.state();
        poll_fn(|cx| {
            // The write first: when it completes at once, nothing else is
            // touched; only a pending write watches for a close request.
            if let Poll::Ready(written) = write.as_mut().poll(cx) {
                return Poll::Ready(match written {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(WriteStop::Failed(PoolError::Socket(e.to_string()))),
                    Err(_) => Err(WriteStop::Failed(PoolError::WriteTimeout(timeout))),
                });
            }
            match state.poll_close_now(cx) {
                Some(close) => Poll::Ready(Err(WriteStop::Interrupted(close))),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// How the loop ends after a write did not complete.
    fn stopped(&self, stop: WriteStop) -> Ended {
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
    async fn write_queued(
        &self,
        socket: &mut WebSocket,
        batch: &mut Vec<Arc<Encoded>>,
    ) -> Result<Option<CloseRequest>, WriteStop> {
        let state = self.state();
        let close = state.close_request();
        if close.as_ref().is_some_and(|c| !c.flush) {
            return Ok(close);
        }
        let pool = self.pool();
        let mut expired = Vec::new();
        let bytes = (pool.node()).drain(state, batch, &mut expired, BATCH_FRAMES, BATCH_BYTES);
        pool.report_undelivered(&state.id, expired, UndeliveredReason::Expired);
        if !batch.is_empty() {
            let frames = batch.len() as u64;
            let write = async {
                for msg in batch.iter() {
                    socket.feed(msg.frame(state.format)).await?;
                }
                socket.flush().await
            };
            if let Err(stop) = self.write(write).await {
                // Some of the batch may have reached the client; none is
                // known to have: report it all rather than lose it silently.
                pool.report_undelivered(
                    &state.id,
                    std::mem::take(batch),
                    UndeliveredReason::WriteFailed,
                );
                return Err(stop);
            }
            batch.clear();
            let counters = pool.counters();
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

    /// Handles one data frame from the client: rate limits, decode, stamp,
    /// callbacks, event, relay. Returns a reason to close when the client
    /// keeps flooding.
    fn inbound(
        &self,
        frame: Message,
        rate: &mut RateLimit,
        now: Instant,
    ) -> Option<DisconnectReason> {
        let pool = self.pool();
        let state = self.state();
        let len = match &frame {
            Message::Binary(b) => b.len(),
            Message::Text(t) => t.len(),
            _ => 0,
        } as u64;
        let counters = pool.counters();
        bump(&counters.messages_in, 1);
        bump(&counters.bytes_in, len);
        bump(&state.messages_in, 1);
        bump(&state.bytes_in, len);
        tracing::trace!(len, "frame in");
        match rate.check(len as usize, now) {
            Verdict::Accept => {}
            Verdict::Refuse => {
                bump(&counters.rate_limited, 1);
                let why = "rate limit: message refused, slow down";
                pool.refuse_frame(&state.id, status::REFUSED, why);
                return None;
            }
            Verdict::Close => {
                bump(&counters.rate_limited, 1);
                tracing::debug!("inbound rate limit exceeded for too long: closing with 1008");
                return Some(DisconnectReason::RateLimited);
            }
        }

        let mut msg = match decode(&frame) {
            Ok(msg) => msg,
            Err(e) => {
                bump(&counters.decode_errors, 1);
                pool.refuse_frame(&state.id, status::UNDECODABLE, &e.to_string());
                self.report(e);
                return None;
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
            pool.relay(&state.id, msg);
        }
        None
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
        Some(Error::Utf8(detail)) => DisconnectReason::ProtocolViolation {
            code: close_code::INVALID_PAYLOAD,
            detail: detail.clone(),
        },
        Some(
            Error::ConnectionClosed
            | Error::AlreadyClosed
            | Error::Io(_)
            | Error::Protocol(ProtocolError::ResetWithoutClosingHandshake),
        ) => DisconnectReason::ConnectionLost,
        Some(Error::Protocol(e)) => DisconnectReason::ProtocolViolation {
            code: close_code::PROTOCOL,
            detail: e.to_string(),
        },
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
        DisconnectReason::RateLimited => "rate limit exceeded",
        DisconnectReason::ProtocolViolation { code, .. }
            if *code == close_code::INVALID_PAYLOAD =>
        {
            "invalid UTF-8"
        }
        DisconnectReason::ProtocolViolation { .. } => "protocol error",
        _ => "",
    }
}

fn close_frame(reason: &DisconnectReason) -> Message {
    Message::Close(Some(CloseFrame {
        code: reason.code().unwrap_or(close_code::NORMAL),
        reason: close_text(reason).into(),
    }))
}
