//! [`WsPool`]: the handle the application holds, and the routing that
//! reaches clients by id, by channel, or all at once.
//!
//! # Delivery guarantees
//!
//! - **Never silent.** A message handed to the pool is written to the
//!   client's socket, or refused at once with an error (`send`), or counted
//!   and reported: [`PoolEvent::Dropped`] (a full queue skipped by a
//!   broadcast) or [`PoolEvent::Undelivered`] (expired, offline window
//!   closed, offline buffer full, client disconnected by the server, pool
//!   shut down), with a receipt to the client it was relayed from.
//! - **Order.** Messages to one client are written highest `priority` first
//!   and, within one priority, in the order they were queued; so messages
//!   from one sender to one recipient at one priority arrive in the order
//!   sent, across reconnects and replacements too.
//! - **At most once.** A message is written to a connection at most once.
//!   "Delivered" means written to the socket: WebSocket has no
//!   acknowledgements, so what was written just before a connection drops
//!   without a closing handshake may be lost unreported. A client that
//!   closes with a closing handshake and reads until the server's close
//!   frame loses nothing: what was not written stays queued for it.
//! - **Offline buffer.** When a client disconnects (not when it is replaced
//!   or kicked), its mailbox stays for `offline_ttl`: `send` answers
//!   [`Delivery::Buffered`], channel broadcasts reach it, relayed direct
//!   messages get no status-4 receipt. A reconnect with the same id within
//!   the window gets the buffered messages first, then live traffic.
//!   Bounded per id (`offline_max_messages`, `offline_max_bytes`), in total
//!   (`offline_max_total_bytes`) and in clients (`offline_max_clients`).
//! - **Time to live.** A message not written within `message_ttl` (or the
//!   per-call [`SendOptions::ttl`]) is not written.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use parking_lot::RwLock;
use tokio::sync::{broadcast, watch};

use crate::{
    admission::Admission,
    client::{ClientState, CloseRequest},
    config::{Config, RelayPolicy, WsPoolBuilder},
    event::{EventStream, UndeliveredReason},
    handshake::{check_channel, TokenLimits},
    mailbox::{Delivery, MailLimits, Mailbox, PushError},
    message::{receipt, status, Encoded},
    registry::{JoinRefused, Member, Registry},
    stats::{bump, Counters, Gauges},
    BroadcastError, ClientHandle, ClientId, ClientInfo, DisconnectReason, JoinError, PoolEvent,
    SendError, SendMsg, Stats, Subscription, WsPoolLayer,
};

/// Options for one `send` or broadcast.
///
/// ```
/// use std::time::Duration;
/// use wspool::{SendMsg, SendOptions, WsPool};
///
/// let pool = WsPool::new();
/// let msg = SendMsg { to_client_id: "alice".into(), ..Default::default() };
/// let quick = SendOptions::new().ttl(Duration::from_secs(5));
/// assert!(pool.send_with(msg, &quick).is_err()); // alice is not connected
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct SendOptions {
    ttl: Option<Duration>,
}

impl SendOptions {
    /// The pool's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Not written after this long in a queue or offline buffer (instead of
    /// the pool's `message_ttl`).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

/// A pool of WebSocket connections, reachable by id, by channel, or all at
/// once.
///
/// `WsPool` is a handle: cloning it is cheap and every clone is the same
/// pool. Put it into an axum router with [`WsPool::layer`] (or
/// [`WsPoolLayer::new`]) and take it back out in any handler with the
/// `WsPool` extractor.
///
/// ```
/// use axum::{routing::post, Router};
/// use wspool::{SendMsg, WsPool};
///
/// async fn notify(pool: WsPool) -> String {
///     let msg = SendMsg { to_client_id: "alice".into(), msg: "hello".into(), ..Default::default() };
///     match pool.send(msg) {
///         Ok(_) => "queued".into(),
///         Err(e) => e.to_string(),
///     }
/// }
///
/// let pool = WsPool::builder().max_message_size(64 * 1024).build();
/// let app: Router = Router::new()
///     .merge(wspool::route())
///     .route("/notify", post(notify))
///     .layer(pool.layer());
/// ```
#[derive(Clone)]
pub struct WsPool {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: Config,
    /// Clients and the channel index under one lock, so they never disagree.
    /// A parking_lot `RwLock`: routing only reads, and no code holds it
    /// across an `.await` (pushing into a queue never waits).
    pub(crate) registry: RwLock<Registry>,
    /// Fan-out to every `EventStream`: a broadcast channel gives each
    /// consumer its own cursor and a `Lagged` count instead of blocking us.
    events: broadcast::Sender<PoolEvent>,
    pub(crate) counters: Counters,
    /// Queue and offline-buffer limits, shared by every mailbox.
    pub(crate) limits: MailLimits,
    /// Connection slots, per-address counts and handshakes in flight.
    pub(crate) admission: Admission,
    /// How many connection tasks are running; `shutdown` waits for zero.
    pub(crate) live: watch::Sender<usize>,
    pub(crate) shutting_down: AtomicBool,
    /// Numbers connections, mailboxes and subscriptions (one sequence).
    next_id: AtomicU64,
    /// Whether the background sweeper (expiry, offline windows, slow
    /// clients) has been started; it starts with the first connection.
    pub(crate) sweeper_started: AtomicBool,
}

/// What a fan-out reached.
#[derive(Default)]
struct FanOut {
    recipients: usize,
    direct: Option<Result<Delivery, SendError>>,
}

impl Default for WsPool {
    fn default() -> Self {
        WsPool::new()
    }
}

impl std::fmt::Debug for WsPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsPool")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl WsPool {
    /// A pool with every default (see [`config`](crate::config)).
    pub fn new() -> Self {
        WsPoolBuilder::default().build()
    }

    /// A builder to set the pool's knobs.
    pub fn builder() -> WsPoolBuilder {
        WsPoolBuilder::default()
    }

    pub(crate) fn from_config(config: Config) -> Self {
        let (events, _) = broadcast::channel(config.event_buffer);
        let admission = Admission::new(&config);
        let limits = MailLimits {
            queue_max_messages: config.queue_max_messages,
            queue_max_bytes: config.queue_max_bytes,
            offline_max_messages: config.offline_max_messages,
            offline_max_bytes: config.offline_max_bytes,
            offline_max_total_bytes: config.offline_max_total_bytes,
            offline_bytes: AtomicUsize::new(0),
        };
        WsPool {
            inner: Arc::new(Inner {
                config,
                registry: RwLock::new(Registry::default()),
                events,
                counters: Counters::default(),
                limits,
                admission,
                live: watch::Sender::new(0),
                shutting_down: AtomicBool::new(false),
                next_id: AtomicU64::new(1),
                sweeper_started: AtomicBool::new(false),
            }),
        }
    }

    /// Its settings.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// A [`WsPoolLayer`] that puts this pool into every request.
    pub fn layer(&self) -> WsPoolLayer {
        WsPoolLayer::from_pool(self.clone())
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn token_limits(&self) -> TokenLimits {
        let c = &self.inner.config;
        TokenLimits {
            max_id_len: c.max_id_len,
            max_channel_len: c.max_channel_len,
            max_channels: c.max_channels_per_client,
        }
    }

    // ----- sending -----

    /// The time to live `options` give a message.
    pub(crate) fn ttl(&self, options: &SendOptions) -> Duration {
        options.ttl.unwrap_or(self.inner.config.message_ttl)
    }

    /// Queues `msg` for the client `msg.to_client_id`, or buffers it while
    /// that client is away (see [the delivery guarantees](crate::pool)).
    /// Never waits.
    ///
    /// # Errors
    /// [`SendError::EmptyTarget`] when `to_client_id` is empty,
    /// [`SendError::NotConnected`] when no such client is connected or
    /// away, [`SendError::QueueFull`] when its queue (or offline buffer) is
    /// at its limit.
    pub fn send(&self, msg: SendMsg) -> Result<Delivery, SendError> {
        self.send_with(msg, &SendOptions::default())
    }

    /// [`send`](Self::send) with options (time to live).
    pub fn send_with(&self, msg: SendMsg, options: &SendOptions) -> Result<Delivery, SendError> {
        if msg.to_client_id.is_empty() {
            return Err(SendError::EmptyTarget);
        }
        let encoded = Encoded::new(Arc::new(msg), None, self.ttl(options));
        match self.mailbox_of(&encoded.msg.to_client_id) {
            Some(mailbox) => self.deliver(&mailbox, &encoded),
            None => Err(SendError::NotConnected(ClientId::from(
                encoded.msg.to_client_id.as_str(),
            ))),
        }
    }

    /// Queues `msg` for every member of any channel in `msg.channel`, each
    /// once (buffering it for members that are away), and for every
    /// [`subscribe`](Self::subscribe)r of those channels. Returns how many
    /// clients it was queued or buffered for. A member whose queue is full
    /// is skipped, counted in [`Stats::dropped`] and reported as
    /// [`PoolEvent::Dropped`].
    ///
    /// # Errors
    /// [`BroadcastError::NoChannel`] when `msg.channel` is empty.
    pub fn broadcast(&self, msg: SendMsg) -> Result<usize, BroadcastError> {
        self.broadcast_with(msg, &SendOptions::default())
    }

    /// [`broadcast`](Self::broadcast) with options (time to live).
    pub fn broadcast_with(
        &self,
        msg: SendMsg,
        options: &SendOptions,
    ) -> Result<usize, BroadcastError> {
        if msg.channel.is_empty() {
            return Err(BroadcastError::NoChannel);
        }
        let encoded = Encoded::new(Arc::new(msg), None, self.ttl(options));
        Ok(self.fan_out(&encoded, "", &encoded.msg.channel).recipients)
    }

    /// Queues `msg` for every connected client (not those away). Returns
    /// how many it reached; full queues are skipped as in
    /// [`broadcast`](Self::broadcast).
    pub fn broadcast_all(&self, msg: SendMsg) -> usize {
        self.broadcast_all_with(msg, &SendOptions::default())
    }

    /// [`broadcast_all`](Self::broadcast_all) with options (time to live).
    pub fn broadcast_all_with(&self, msg: SendMsg, options: &SendOptions) -> usize {
        self.broadcast_all_encoded(&Encoded::new(Arc::new(msg), None, self.ttl(options)))
    }

    fn broadcast_all_encoded(&self, encoded: &Arc<Encoded>) -> usize {
        let mut reached = 0;
        let mut dropped = Vec::new();
        for state in self.inner.registry.read().online() {
            self.push_member(&state.mailbox, encoded, &mut reached, &mut dropped);
        }
        self.report_dropped(dropped, encoded);
        reached
    }

    /// The mailbox of client `id` (connected or away), taken out of the
    /// registry so the lock is not held while pushing.
    fn mailbox_of(&self, id: &str) -> Option<Arc<Mailbox>> {
        let registry = self.inner.registry.read();
        registry.get(id).map(|e| e.mailbox.clone())
    }

    /// Pushes into one mailbox, counting a refusal for being full and a
    /// message buffered for a client that is away.
    pub(crate) fn push(
        &self,
        mailbox: &Mailbox,
        encoded: &Arc<Encoded>,
        only_conn: Option<u64>,
    ) -> Result<Delivery, PushError> {
        let result = mailbox.push(encoded, &self.inner.limits, only_conn);
        match result {
            Ok(Delivery::Buffered) => bump(&self.inner.counters.buffered, 1),
            Err(PushError::Full) => bump(&self.inner.counters.dropped, 1),
            _ => {}
        }
        result
    }

    /// Pushes for one recipient of a broadcast: counted as reached, or noted
    /// as skipped (full) for `report_dropped`.
    fn push_member(
        &self,
        mailbox: &Mailbox,
        encoded: &Arc<Encoded>,
        reached: &mut usize,
        dropped: &mut Vec<ClientId>,
    ) {
        match self.push(mailbox, encoded, None) {
            Ok(_) => *reached += 1,
            Err(PushError::Full) => dropped.push(mailbox.client.clone()),
            Err(PushError::Closed) => {}
        }
    }

    fn deliver(&self, mailbox: &Mailbox, encoded: &Arc<Encoded>) -> Result<Delivery, SendError> {
        self.push(mailbox, encoded, None).map_err(|e| match e {
            PushError::Full => SendError::QueueFull(mailbox.client.clone()),
            PushError::Closed => SendError::NotConnected(mailbox.client.clone()),
        })
    }

    /// Delivers to `to` (if not empty) and to the members of `channels`,
    /// each once.
    fn fan_out(&self, encoded: &Arc<Encoded>, to: &str, channels: &[String]) -> FanOut {
        let mut out = FanOut::default();
        let mut dropped = Vec::new();
        {
            let registry = self.inner.registry.read();
            let dedupe = usize::from(!to.is_empty()) + channels.len() > 1;
            let mut seen = HashSet::new();
            if !to.is_empty() {
                let result = match registry.get(to) {
                    Some(entry) => {
                        if dedupe {
                            seen.insert(entry.mailbox.key);
                        }
                        self.deliver(&entry.mailbox, encoded)
                    }
                    None => Err(SendError::NotConnected(ClientId::from(to))),
                };
                out.recipients += usize::from(result.is_ok());
                out.direct = Some(result);
            }
            registry.for_each_member(
                channels,
                dedupe.then_some(&mut seen),
                |member| match member {
                    Member::Client(mailbox) => {
                        self.push_member(mailbox, encoded, &mut out.recipients, &mut dropped)
                    }
                    Member::Subscriber(sub) => {
                        // No receiver left means the subscription is being
                        // dropped; it unregisters itself.
                        let _ = sub.tx.send(encoded.msg.clone());
                    }
                },
            );
        }
        self.report_dropped(dropped, encoded);
        out
    }

    fn report_dropped(&self, dropped: Vec<ClientId>, encoded: &Encoded) {
        for to in dropped {
            tracing::trace!(%to, "recipient's queue full: message skipped");
            self.emit(|| PoolEvent::Dropped {
                to,
                msg: encoded.msg.clone(),
            });
        }
    }

    /// Reports messages that will not be written to `to`: counted, an event
    /// each, and a receipt to the client each was relayed from.
    pub(crate) fn report_undelivered(
        &self,
        to: &ClientId,
        msgs: Vec<Arc<Encoded>>,
        reason: UndeliveredReason,
    ) {
        if msgs.is_empty() {
            return;
        }
        bump(&self.inner.counters.undelivered, msgs.len() as u64);
        tracing::debug!(%to, count = msgs.len(), ?reason, "undelivered");
        for encoded in msgs {
            if let (Some(origin), Some(status)) = (&encoded.origin, reason.receipt_status()) {
                let text = format!("{} (to {to})", reason.describe());
                self.send_receipt(origin, receipt(&encoded.msg, status, &text));
            }
            self.emit(|| PoolEvent::Undelivered {
                to: to.clone(),
                msg: encoded.msg.clone(),
                reason,
            });
        }
    }

    /// Relays what a client sent (PROTOCOL.md section 3), with receipts.
    pub(crate) fn relay(&self, sender: &ClientState, msg: Arc<SendMsg>) {
        let policy = self.inner.config.relay_policy;
        if policy == RelayPolicy::Disabled {
            return;
        }
        let max_channels = self.inner.config.max_channels_per_message;
        if msg.channel.len() > max_channels {
            bump(&self.inner.counters.relays_refused, 1);
            let why = format!(
                "{} channels, more than the maximum of {max_channels} per message: not relayed",
                msg.channel.len()
            );
            self.send_receipt(&sender.id, receipt(&msg, status::REFUSED, &why));
            return;
        }
        let encoded = Encoded::new(msg, Some(sender.id.clone()), self.inner.config.message_ttl);
        let msg = &encoded.msg;
        if msg.to_client_id.is_empty() && msg.channel.is_empty() {
            if policy == RelayPolicy::TargetedOrAll {
                self.broadcast_all_encoded(&encoded);
            }
            return;
        }
        let out = self.fan_out(&encoded, &msg.to_client_id, &msg.channel);
        let (status, reason) = match out.direct {
            Some(Err(SendError::NotConnected(_))) => {
                (status::NOT_CONNECTED, "recipient not connected")
            }
            Some(Err(SendError::QueueFull(to))) => {
                self.emit(|| PoolEvent::Dropped {
                    to,
                    msg: msg.clone(),
                });
                (status::QUEUE_FULL, "recipient's queue full: dropped")
            }
            _ => return,
        };
        self.send_receipt(&sender.id, receipt(msg, status, reason));
    }

    /// Tells client `sender` that a frame it sent was not read (undecodable,
    /// or over a rate limit): a receipt with `status` and no identifying
    /// fields, since the frame's were not read.
    pub(crate) fn refuse_frame(&self, sender: &ClientId, status: i32, reason: &str) {
        let frame = SendMsg {
            from_client_id: sender.to_string(),
            ..Default::default()
        };
        self.send_receipt(sender, receipt(&frame, status, reason));
    }

    /// Queues a receipt for client `to` (buffered if it is away); one that
    /// does not fit is counted as dropped.
    pub(crate) fn send_receipt(&self, to: &str, receipt: SendMsg) {
        if let Some(mailbox) = self.mailbox_of(to) {
            let encoded = Encoded::new(Arc::new(receipt), None, self.inner.config.message_ttl);
            let _ = self.push(&mailbox, &encoded, None);
        }
    }

    // ----- clients and channels -----

    /// A handle on the connected client `id`.
    pub fn client(&self, id: &str) -> Option<ClientHandle> {
        let state = self.inner.registry.read().conn(id).cloned()?;
        Some(ClientHandle {
            pool: self.clone(),
            state,
        })
    }

    /// Runtime info of every connected client.
    pub fn clients(&self) -> Vec<ClientInfo> {
        let registry = self.inner.registry.read();
        registry
            .online()
            .map(|s| s.info(registry.channels_of(s)))
            .collect()
    }

    /// The ids of the connected clients in `channel`.
    pub fn channel_members(&self, channel: &str) -> Vec<ClientId> {
        self.inner.registry.read().members(channel)
    }

    /// The channels that have at least one member.
    pub fn channels(&self) -> Vec<String> {
        self.inner.registry.read().channel_names()
    }

    /// A snapshot of the pool's counters.
    pub fn stats(&self) -> Stats {
        let registry = self.inner.registry.read();
        self.inner.counters.snapshot(Gauges {
            connections: registry.online_count(),
            channels: registry.channel_count(),
            offline_clients: registry.offline_count(),
            offline_bytes: self.inner.limits.offline_bytes.load(Ordering::Relaxed),
        })
    }

    pub(crate) fn join(&self, state: &ClientState, channel: &str) -> Result<bool, JoinError> {
        let c = &self.inner.config;
        check_channel(channel, c.max_channel_len).map_err(JoinError::InvalidChannel)?;
        self.inner
            .registry
            .write()
            .join(state, channel, c.max_channels_per_client)
            .map_err(|e| match e {
                JoinRefused::NotRegistered => JoinError::NotConnected,
                JoinRefused::Full => JoinError::TooManyChannels(c.max_channels_per_client),
            })
    }

    pub(crate) fn leave(&self, state: &ClientState, channel: &str) -> bool {
        self.inner.registry.write().leave(state, channel)
    }

    pub(crate) fn channels_of(&self, state: &ClientState) -> Vec<String> {
        self.inner.registry.read().channels_of(state)
    }

    pub(crate) fn is_registered(&self, state: &ClientState) -> bool {
        self.inner.registry.read().is_current(state)
    }

    // ----- events -----

    /// A new stream of [`PoolEvent`]s from now on; see [`crate::event`].
    pub fn events(&self) -> EventStream {
        EventStream::new(self.inner.events.subscribe())
    }

    /// A server-side member of `channels`: a stream of every message
    /// broadcast to any of them; see [`crate::subscribe`].
    pub fn subscribe<I, S>(&self, channels: I) -> Subscription
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list: Vec<Arc<str>> = Vec::new();
        for ch in channels {
            if !list.iter().any(|c| &**c == ch.as_ref()) {
                list.push(Arc::from(ch.as_ref()));
            }
        }
        Subscription::new(self.clone(), list)
    }

    /// Sends the event built by `make` if anyone is listening.
    pub(crate) fn emit(&self, make: impl FnOnce() -> PoolEvent) {
        if self.wants_events() {
            let _ = self.inner.events.send(make());
        }
    }

    pub(crate) fn wants_events(&self) -> bool {
        self.inner.events.receiver_count() > 0
    }

    // ----- shutdown -----

    /// Is the pool shutting down?
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Acquire)
    }

    /// Shuts the pool down: new handshakes get 503; every connection writes
    /// what is queued for it and is then closed with 1001. Waits up to
    /// `shutdown_timeout` for that; connections still busy after it are
    /// closed at once. What was not written, and what was buffered for
    /// clients that are away, is reported as [`PoolEvent::Undelivered`]
    /// with [`UndeliveredReason::Shutdown`].
    ///
    /// Works with axum's graceful shutdown:
    ///
    /// ```no_run
    /// # async fn run(app: axum::Router, pool: wspool::WsPool) -> std::io::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    /// axum::serve(listener, app)
    ///     .with_graceful_shutdown(async move {
    ///         let _ = tokio::signal::ctrl_c().await;
    ///         pool.shutdown().await;
    ///     })
    ///     .await
    /// # }
    /// ```
    pub async fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Release);
        let request = CloseRequest {
            reason: DisconnectReason::Shutdown,
            flush: true,
        };
        for state in self.online_states() {
            state.request_close(request.clone(), false);
        }
        let mut live = self.inner.live.subscribe();
        let timeout = self.inner.config.shutdown_timeout;
        if tokio::time::timeout(timeout, live.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            tracing::debug!("shutdown timeout: closing the remaining connections without flushing");
            let request = CloseRequest {
                reason: DisconnectReason::Shutdown,
                flush: false,
            };
            for state in self.online_states() {
                state.request_close(request.clone(), true);
            }
            let _ =
                tokio::time::timeout(self.inner.config.write_timeout, live.wait_for(|n| *n == 0))
                    .await;
        }
        let away = self
            .inner
            .registry
            .write()
            .expire_offline(None, &self.inner.limits);
        for (id, left) in away {
            self.report_undelivered(&id, left, UndeliveredReason::Shutdown);
        }
    }

    fn online_states(&self) -> Vec<Arc<ClientState>> {
        self.inner.registry.read().online().cloned().collect()
    }
}
