//! [`WsPool`]: the handle the application holds, and the routing that
//! reaches clients by id, by channel, or all at once.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
};

use parking_lot::RwLock;
use tokio::sync::{broadcast, watch, Semaphore};

use crate::{
    client::ClientState,
    config::{Config, RelayPolicy, WsPoolBuilder},
    event::EventStream,
    handshake::{valid_name, TokenLimits},
    message::{receipt, status, Encoded},
    outbox::{CloseRequest, PushError},
    registry::{JoinRefused, Member, Registry},
    stats::{bump, Counters},
    BroadcastError, ClientHandle, ClientId, ClientInfo, DisconnectReason, JoinError, PoolEvent,
    SendError, SendMsg, Stats, Subscription, WsPoolLayer,
};

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
///         Ok(()) => "queued".into(),
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
    /// One permit per connection, including upgrades in flight: enforces
    /// `max_connections` without taking the registry lock.
    pub(crate) slots: Arc<Semaphore>,
    /// How many connection tasks are running; `shutdown` waits for zero.
    pub(crate) live: watch::Sender<usize>,
    pub(crate) shutting_down: AtomicBool,
    /// Numbers connections and subscriptions (one sequence for both).
    next_id: AtomicU64,
}

/// What a fan-out reached.
#[derive(Default)]
struct FanOut {
    recipients: usize,
    direct: Option<Result<(), SendError>>,
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
        let slots = Arc::new(Semaphore::new(
            config.max_connections.min(Semaphore::MAX_PERMITS),
        ));
        WsPool {
            inner: Arc::new(Inner {
                config,
                registry: RwLock::new(Registry::default()),
                events,
                counters: Counters::default(),
                slots,
                live: watch::Sender::new(0),
                shutting_down: AtomicBool::new(false),
                next_id: AtomicU64::new(1),
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

    /// Queues `msg` for the client `msg.to_client_id`. Never waits.
    ///
    /// # Errors
    /// [`SendError::EmptyTarget`] when `to_client_id` is empty,
    /// [`SendError::NotConnected`] when no such client is connected,
    /// [`SendError::QueueFull`] when its outbound queue is at its limit.
    pub fn send(&self, msg: SendMsg) -> Result<(), SendError> {
        if msg.to_client_id.is_empty() {
            return Err(SendError::EmptyTarget);
        }
        let state = self.inner.registry.read().get(&msg.to_client_id).cloned();
        match state {
            Some(state) => self.deliver_to(&state, &Encoded::new(Arc::new(msg))),
            None => Err(SendError::NotConnected(ClientId::from(msg.to_client_id))),
        }
    }

    /// Queues `msg` for every member of any channel in `msg.channel`, each
    /// once, and for every [`subscribe`](Self::subscribe)r of those
    /// channels. Returns how many clients it reached. A member whose queue
    /// is full is skipped, counted in [`Stats::dropped`] and reported as
    /// [`PoolEvent::Dropped`].
    ///
    /// # Errors
    /// [`BroadcastError::NoChannel`] when `msg.channel` is empty.
    pub fn broadcast(&self, msg: SendMsg) -> Result<usize, BroadcastError> {
        if msg.channel.is_empty() {
            return Err(BroadcastError::NoChannel);
        }
        let encoded = Encoded::new(Arc::new(msg));
        Ok(self.fan_out(&encoded, "", &encoded.msg.channel).recipients)
    }

    /// Queues `msg` for every connected client. Returns how many it
    /// reached; full queues are skipped as in [`broadcast`](Self::broadcast).
    pub fn broadcast_all(&self, msg: SendMsg) -> usize {
        self.broadcast_all_encoded(&Encoded::new(Arc::new(msg)))
    }

    fn broadcast_all_encoded(&self, encoded: &Encoded) -> usize {
        let mut reached = 0;
        let mut dropped = Vec::new();
        for state in self.inner.registry.read().states() {
            match self.push(state, encoded) {
                Ok(()) => reached += 1,
                Err(PushError::Full) => dropped.push(state.id.clone()),
                Err(PushError::Closed) => {}
            }
        }
        self.report_dropped(dropped, encoded);
        reached
    }

    /// Pushes into one queue, counting a refusal for being full.
    fn push(&self, state: &ClientState, encoded: &Encoded) -> Result<(), PushError> {
        let (frame, len) = encoded.frame(state.format);
        let result = state.outbox.push(frame, len);
        if result == Err(PushError::Full) {
            bump(&self.inner.counters.dropped, 1);
        }
        result
    }

    pub(crate) fn deliver_to(
        &self,
        state: &ClientState,
        encoded: &Encoded,
    ) -> Result<(), SendError> {
        self.push(state, encoded).map_err(|e| match e {
            PushError::Full => SendError::QueueFull(state.id.clone()),
            PushError::Closed => SendError::NotConnected(state.id.clone()),
        })
    }

    /// Delivers to `to` (if not empty) and to the members of `channels`,
    /// each once.
    fn fan_out(&self, encoded: &Encoded, to: &str, channels: &[String]) -> FanOut {
        let mut out = FanOut::default();
        let mut dropped = Vec::new();
        {
            let registry = self.inner.registry.read();
            let dedupe = usize::from(!to.is_empty()) + channels.len() > 1;
            let mut seen = HashSet::new();
            if !to.is_empty() {
                let result = match registry.get(to) {
                    Some(state) => {
                        if dedupe {
                            seen.insert(state.conn_id);
                        }
                        self.deliver_to(state, encoded)
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
                    Member::Client(state) => match self.push(state, encoded) {
                        Ok(()) => out.recipients += 1,
                        Err(PushError::Full) => dropped.push(state.id.clone()),
                        Err(PushError::Closed) => {}
                    },
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

    /// Relays what a client sent (PROTOCOL.md section 3), with receipts.
    pub(crate) fn relay(&self, sender: &ClientState, msg: Arc<SendMsg>) {
        let policy = self.inner.config.relay_policy;
        if policy == RelayPolicy::Disabled {
            return;
        }
        let encoded = Encoded::new(msg);
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
        self.send_receipt(sender, receipt(msg, status, reason));
    }

    /// Queues a receipt for `sender`; one that does not fit is counted as
    /// dropped.
    pub(crate) fn send_receipt(&self, sender: &ClientState, receipt: SendMsg) {
        let _ = self.deliver_to(sender, &Encoded::new(Arc::new(receipt)));
    }

    // ----- clients and channels -----

    /// A handle on the connected client `id`.
    pub fn client(&self, id: &str) -> Option<ClientHandle> {
        let state = self.inner.registry.read().get(id).cloned()?;
        Some(ClientHandle {
            pool: self.clone(),
            state,
        })
    }

    /// Runtime info of every connected client.
    pub fn clients(&self) -> Vec<ClientInfo> {
        let registry = self.inner.registry.read();
        registry
            .states()
            .map(|s| s.info(registry.channels_of(s)))
            .collect()
    }

    /// The ids of the clients in `channel`.
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
        self.inner
            .counters
            .snapshot(registry.client_count(), registry.channel_count())
    }

    pub(crate) fn join(&self, state: &Arc<ClientState>, channel: &str) -> Result<bool, JoinError> {
        let c = &self.inner.config;
        if !valid_name(channel, c.max_channel_len) {
            return Err(JoinError::InvalidChannel(channel.to_owned()));
        }
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
        if self.inner.events.receiver_count() > 0 {
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
    /// closed at once without their queue.
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
        self.close_all(CloseRequest {
            reason: DisconnectReason::Shutdown,
            flush: true,
        });
        let mut live = self.inner.live.subscribe();
        let timeout = self.inner.config.shutdown_timeout;
        if tokio::time::timeout(timeout, live.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            tracing::debug!("shutdown timeout: closing the remaining connections without flushing");
            for state in self.inner.registry.read().states() {
                state.outbox.force_close(CloseRequest {
                    reason: DisconnectReason::Shutdown,
                    flush: false,
                });
            }
            let _ =
                tokio::time::timeout(self.inner.config.write_timeout, live.wait_for(|n| *n == 0))
                    .await;
        }
    }

    fn close_all(&self, request: CloseRequest) {
        for state in self.inner.registry.read().states() {
            state.outbox.request_close(request.clone());
        }
    }
}
