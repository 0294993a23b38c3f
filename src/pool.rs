//! [`WsPool`]: the handle the application holds. Routing (`send`,
//! broadcasts, relays) is in [`routing`](crate::routing); the state of the
//! clients on this node is in the node module.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, Weak,
};

use tokio::sync::{broadcast, watch};

use crate::{
    admission::Admission,
    client::{ClientState, CloseRequest},
    cluster::Cluster,
    config::{Config, WsPoolBuilder},
    event::{EventStream, UndeliveredReason},
    handshake::{check_channel, TokenLimits},
    node::{JoinRefused, Node},
    stats::Counters,
    ClientHandle, ClientId, ClientInfo, DisconnectReason, JoinError, PoolEvent, Stats,
    Subscription, WsPoolLayer,
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
    /// The clients on this node, their mailboxes and the channel index.
    node: Node,
    /// The other nodes, when the pool is a cluster; `None` on one node.
    cluster: Option<Arc<dyn Cluster>>,
    /// Fan-out to every `EventStream`: a broadcast channel gives each
    /// consumer its own cursor and a `Lagged` count instead of blocking us.
    events: broadcast::Sender<PoolEvent>,
    /// Connection slots, per-address counts and handshakes in flight.
    pub(crate) admission: Admission,
    /// How many connection tasks are running; `shutdown` waits for zero.
    pub(crate) live: watch::Sender<usize>,
    shutting_down: AtomicBool,
}

/// This node's id in the cluster.
fn cluster_node_id(cluster: &dyn Cluster) -> Option<String> {
    Some(cluster.node_id().to_owned())
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
        Self::with_cluster(config, |_| None)
    }

    /// A pool whose cluster backend (if any) is made by `cluster`, which
    /// gets a weak handle on the pool to deliver what arrives.
    pub(crate) fn with_cluster(
        config: Config,
        cluster: impl FnOnce(Weak<Inner>) -> Option<Arc<dyn Cluster>>,
    ) -> Self {
        let (events, _) = broadcast::channel(config.event_buffer);
        let pool = WsPool {
            inner: Arc::new_cyclic(|weak| Inner {
                node: Node::new(&config),
                admission: Admission::new(&config),
                cluster: cluster(weak.clone()),
                config,
                events,
                live: watch::Sender::new(0),
                shutting_down: AtomicBool::new(false),
            }),
        };
        if let Some(cluster) = pool.inner.cluster.clone() {
            let watcher = move |channel: &str, present| cluster.channel_changed(channel, present);
            pool.node().watch_channels(watcher);
        }
        #[cfg(feature = "metrics")]
        {
            crate::metrics::describe();
            pool.export_metrics();
        }
        pool
    }

    /// This node's state.
    pub(crate) fn node(&self) -> &Node {
        &self.inner.node
    }

    /// The cluster backend, if the pool is a cluster.
    pub(crate) fn cluster(&self) -> Option<&dyn Cluster> {
        self.inner.cluster.as_deref()
    }

    /// This node's tallies.
    pub(crate) fn counters(&self) -> &Counters {
        self.inner.node.counters()
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
        self.inner.node.next_id()
    }

    pub(crate) fn token_limits(&self) -> TokenLimits {
        let c = &self.inner.config;
        TokenLimits {
            max_id_len: c.max_id_len,
            max_channel_len: c.max_channel_len,
            max_channels: c.max_channels_per_client,
        }
    }

    // ----- clients and channels -----

    /// A handle on the client `id` connected to this node.
    pub fn client(&self, id: &str) -> Option<ClientHandle> {
        let state = self.node().conn(id)?;
        Some(ClientHandle {
            pool: self.clone(),
            state,
        })
    }

    /// Runtime info of every client connected to this node.
    pub fn clients(&self) -> Vec<ClientInfo> {
        self.node().clients()
    }

    /// Runtime info of every client connected to any node of the cluster
    /// (this node's first); on a single node, [`clients`](Self::clients).
    /// A node that died drops out within its lease.
    ///
    /// # Errors
    /// [`SendError::Unavailable`](crate::SendError::Unavailable) when the
    /// cluster cannot be reached.
    pub async fn cluster_clients(&self) -> Result<Vec<ClientInfo>, crate::SendError> {
        let mut list = self.clients();
        if let Some(cluster) = self.cluster() {
            let node = cluster_node_id(cluster);
            for info in list.iter_mut() {
                info.node = node.clone();
            }
            list.extend(cluster.presence().await?.into_iter().map(|p| p.info()));
        }
        Ok(list)
    }

    /// The client `id` wherever it is connected in the cluster; on a
    /// single node, [`client`](Self::client)'s info.
    ///
    /// # Errors
    /// As [`cluster_clients`](Self::cluster_clients).
    pub async fn cluster_client(&self, id: &str) -> Result<Option<ClientInfo>, crate::SendError> {
        if let Some(client) = self.client(id) {
            let mut info = client.info();
            info.node = self.cluster().and_then(cluster_node_id);
            return Ok(Some(info));
        }
        Ok(self
            .cluster_clients()
            .await?
            .into_iter()
            .find(|c| *c.id == *id))
    }

    /// The ids of the clients in `channel` on every node of the cluster; on
    /// a single node, [`channel_members`](Self::channel_members).
    ///
    /// # Errors
    /// As [`cluster_clients`](Self::cluster_clients).
    pub async fn cluster_channel_members(
        &self,
        channel: &str,
    ) -> Result<Vec<ClientId>, crate::SendError> {
        let mut ids = self.channel_members(channel);
        if let Some(cluster) = self.cluster() {
            let others = cluster.presence().await?;
            ids.extend(
                (others.into_iter())
                    .filter(|p| p.channels.iter().any(|c| c == channel))
                    .map(|p| ClientId::from(p.id.as_str())),
            );
        }
        Ok(ids)
    }

    /// The ids of the clients connected to this node in `channel`.
    pub fn channel_members(&self, channel: &str) -> Vec<ClientId> {
        self.node().members(channel)
    }

    /// The channels that have at least one member on this node.
    pub fn channels(&self) -> Vec<String> {
        self.node().channel_names()
    }

    /// A snapshot of this node's counters (in a cluster, with its traffic
    /// with the other nodes in [`Stats::cluster`]).
    pub fn stats(&self) -> Stats {
        let mut stats = self.counters().snapshot(self.node().gauges());
        stats.cluster = self.cluster().map(|c| c.stats());
        stats
    }

    pub(crate) fn join(&self, state: &ClientState, channel: &str) -> Result<bool, JoinError> {
        let c = &self.inner.config;
        check_channel(channel, c.max_channel_len).map_err(JoinError::InvalidChannel)?;
        let joined = (self.node())
            .join(state, channel, c.max_channels_per_client)
            .map_err(|e| match e {
                JoinRefused::NotRegistered => JoinError::NotConnected,
                JoinRefused::Full => JoinError::TooManyChannels(c.max_channels_per_client),
            })?;
        if joined {
            self.presence_changed(state);
        }
        Ok(joined)
    }

    pub(crate) fn leave(&self, state: &ClientState, channel: &str) -> bool {
        let left = self.node().leave(state, channel);
        if left {
            self.presence_changed(state);
        }
        left
    }

    /// Tells the cluster (if any) the channels of `state` changed.
    fn presence_changed(&self, state: &ClientState) {
        if let Some(cluster) = self.cluster() {
            cluster.channels_changed(state, self.node().channels_of(state));
        }
    }

    pub(crate) fn channels_of(&self, state: &ClientState) -> Vec<String> {
        self.node().channels_of(state)
    }

    pub(crate) fn is_registered(&self, state: &ClientState) -> bool {
        self.node().is_current(state)
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
        for (id, left) in self.node().forget_offline() {
            self.report_undelivered(&id, left, UndeliveredReason::Shutdown);
        }
    }

    fn online_states(&self) -> Vec<Arc<ClientState>> {
        self.node().online()
    }
}
