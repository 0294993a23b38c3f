//! [`WsPool`]: the handle the application holds, and its builder.
//!
//! The handle is the public face of the pool; the work is done below it:
//! routing (`send`, broadcasts, relays) in [`routing`](crate::routing),
//! the clients on this node in the node module, the other nodes behind
//! the [`cluster`](crate::cluster) seam.

use std::sync::Arc;

use crate::{
    admission::Admission, client::Callbacks, event::EventStream, routing::Hub, BroadcastError,
    ClientHandle, ClientId, ClientInfo, Config, Delivery, JoinError, NodeInfo, SendError, SendMsg,
    SendOptions, Stats, Subscription,
};

mod accept;
mod authorize;
mod builder;
mod direct;
mod fallback;

pub(crate) use accept::Upgrade;
pub(crate) use authorize::{refuse, Authorize};
pub use authorize::{HandshakeRequest, Rejection};
pub use builder::WsPoolBuilder;
pub(crate) use direct::DirectUpgrade;

/// A pool of WebSocket connections, reachable by id, by channel, or all at
/// once.
///
/// `WsPool` is a handle: cloning it is cheap and every clone is the same
/// pool. Put it into an axum router with [`WsPool::layer`] (or
/// [`WsPoolLayer::new`](crate::WsPoolLayer::new)) and take it back out in any handler with the
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
    inner: Arc<Inner>,
}

struct Inner {
    /// Routing, this node, the engine, events: shared with every client
    /// handle and subscription.
    hub: Arc<Hub>,
    /// Run on every connection, before its own; shared with each
    /// connection's task.
    callbacks: Arc<Callbacks>,
    /// Decides who a connecting client is (the provided route).
    authorize: Option<Authorize>,
    /// Connection slots, per-address counts and handshakes in flight.
    admission: Admission,
    /// The HTTP fallback's live sessions, for their POSTs.
    sessions: Arc<crate::connection::Sessions>,
}

/// The application's code the pool runs, as the builder collects it.
#[derive(Clone, Default)]
struct Hooks {
    callbacks: Callbacks,
    authorize: Option<Authorize>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("callbacks", &self.callbacks)
            .field("authorize", &self.authorize.is_some())
            .finish()
    }
}

impl Default for WsPool {
    fn default() -> Self {
        WsPool::new()
    }
}

impl std::fmt::Debug for WsPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsPool")
            .field("config", self.config())
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

    fn start(hub: Arc<Hub>, hooks: Hooks) -> Self {
        let admission = Admission::new(hub.config());
        WsPool {
            inner: Arc::new(Inner {
                hub,
                callbacks: Arc::new(hooks.callbacks),
                authorize: hooks.authorize,
                admission,
                sessions: Default::default(),
            }),
        }
    }

    pub(crate) fn hub(&self) -> &Arc<Hub> {
        &self.inner.hub
    }

    /// This node's tallies (the HTTP surface counts refused handshakes).
    pub(crate) fn counters(&self) -> &crate::stats::Counters {
        self.hub().counters()
    }

    pub(crate) fn authorize(&self) -> Option<&Authorize> {
        self.inner.authorize.as_ref()
    }

    /// Its settings.
    pub fn config(&self) -> &Config {
        self.hub().config()
    }

    // ----- reaching clients -----

    /// Queues `msg` for the client `msg.to_client_id`, or buffers it while
    /// that client is away (see [the delivery guarantees](crate::routing)).
    /// Never waits. In a cluster, an id on another node is
    /// [`Delivery::Forwarded`] to it.
    ///
    /// # Errors
    /// [`SendError::EmptyTarget`] when `to_client_id` is empty,
    /// [`SendError::NotConnected`] when no such client is connected or
    /// away, [`SendError::QueueFull`] when its queue (or offline buffer) is
    /// at its limit, [`SendError::Unavailable`] when the id is not here and
    /// the cluster cannot be reached.
    pub fn send(&self, msg: SendMsg) -> Result<Delivery, SendError> {
        self.hub().send(msg, &SendOptions::default())
    }

    /// [`send`](Self::send) with options (time to live).
    pub fn send_with(&self, msg: SendMsg, options: &SendOptions) -> Result<Delivery, SendError> {
        self.hub().send(msg, options)
    }

    /// Queues `msg` for every member of any channel in `msg.channel`, each
    /// member once (clients that are away buffer it). Returns how many it
    /// reached on this node. A member whose queue is full is skipped:
    /// counted in [`Stats::dropped`](crate::Stats::dropped) and reported as
    /// [`PoolEvent::Dropped`](crate::PoolEvent::Dropped). In a cluster, the
    /// other nodes' members are reached too, and the count is this node's.
    ///
    /// # Errors
    /// [`BroadcastError::NoChannel`] when `msg.channel` is empty;
    /// [`BroadcastError::Unavailable`] when the cluster cannot be reached
    /// (this node's members were still reached).
    pub fn broadcast(&self, msg: SendMsg) -> Result<usize, BroadcastError> {
        self.hub().broadcast(msg, &SendOptions::default())
    }

    /// [`broadcast`](Self::broadcast) with options (time to live).
    pub fn broadcast_with(
        &self,
        msg: SendMsg,
        options: &SendOptions,
    ) -> Result<usize, BroadcastError> {
        self.hub().broadcast(msg, options)
    }

    /// Queues `msg` for every connected client (not those away). Returns
    /// how many it reached on this node; full queues are skipped as in
    /// [`broadcast`](Self::broadcast). In a cluster it is also published to
    /// every other node (a failure to is logged).
    pub fn broadcast_all(&self, msg: SendMsg) -> usize {
        self.hub().broadcast_all(msg, &SendOptions::default())
    }

    /// [`broadcast_all`](Self::broadcast_all) with options (time to live).
    pub fn broadcast_all_with(&self, msg: SendMsg, options: &SendOptions) -> usize {
        self.hub().broadcast_all(msg, options)
    }

    /// [`broadcast`](Self::broadcast), answering how many clients it was
    /// queued or buffered for on every node of the cluster (on a single
    /// node, the same as `broadcast`). Waits for the other nodes' counts,
    /// at most the engine's timeout; a node that has not answered by then
    /// is not counted.
    ///
    /// # Errors
    /// As [`broadcast`](Self::broadcast).
    pub async fn cluster_broadcast(&self, msg: SendMsg) -> Result<usize, BroadcastError> {
        self.hub().broadcast_counted(msg, true).await
    }

    /// [`broadcast_all`](Self::broadcast_all), answering how many clients
    /// it reached on every node (see [`cluster_broadcast`](Self::cluster_broadcast)).
    ///
    /// # Errors
    /// [`BroadcastError::Unavailable`] when the other nodes could not be
    /// reached (this node's clients were).
    pub async fn cluster_broadcast_all(&self, msg: SendMsg) -> Result<usize, BroadcastError> {
        self.hub().broadcast_counted(msg, false).await
    }

    /// Closes (4002) the connection of `id` wherever it is in the cluster
    /// (on a single node: this node's), forgetting the id. Resolves to
    /// whether some node had it connected or away.
    ///
    /// # Errors
    /// [`SendError::Unavailable`] when the cluster cannot be reached.
    pub async fn cluster_disconnect(&self, id: &str) -> Result<bool, SendError> {
        self.hub().disconnect_anywhere(id).await
    }

    /// Adds `channel` to the client `id` wherever it is connected in the
    /// cluster (on a single node: this node's, as
    /// [`ClientHandle::join`]). `Ok(false)` if it was already a member.
    ///
    /// # Errors
    /// [`JoinError::NotConnected`] when no node has `id` connected,
    /// [`JoinError::InvalidChannel`] and [`JoinError::TooManyChannels`] as
    /// for `join`, [`JoinError::Unavailable`] when the cluster cannot be
    /// reached.
    pub async fn cluster_join(&self, id: &str, channel: &str) -> Result<bool, JoinError> {
        self.hub().membership_anywhere(id, channel, true).await
    }

    /// Removes `channel` from the client `id` wherever it is connected in
    /// the cluster. `Ok(false)` if it was not a member.
    ///
    /// # Errors
    /// As [`cluster_join`](Self::cluster_join).
    pub async fn cluster_leave(&self, id: &str, channel: &str) -> Result<bool, JoinError> {
        self.hub().membership_anywhere(id, channel, false).await
    }

    // ----- clients and channels -----

    /// A handle on the client `id` connected to this node.
    pub fn client(&self, id: &str) -> Option<ClientHandle> {
        let state = self.hub().conn(id)?;
        Some(ClientHandle::new(self.hub().clone(), state))
    }

    /// Runtime info of every client connected to this node.
    pub fn clients(&self) -> Vec<ClientInfo> {
        self.hub().node().clients()
    }

    /// Runtime info of every client connected to any node of the cluster
    /// (this node's first); on a single node, [`clients`](Self::clients).
    /// A node that died drops out within its lease.
    ///
    /// # Errors
    /// [`SendError::Unavailable`] when the cluster cannot be reached.
    pub async fn cluster_clients(&self) -> Result<Vec<ClientInfo>, SendError> {
        self.hub().cluster_clients().await
    }

    /// Every node of the cluster, this one first: its connections, message
    /// rates and link ([`NodeInfo`]); on a single node, this one. Each
    /// node reports itself every second (the Redis engine); a node that
    /// has not reported for 3 s is shown down, and one that died drops out
    /// within its lease. When the others cannot be reached (this node's
    /// link is down), this node alone, shown down.
    pub async fn cluster_nodes(&self) -> Vec<NodeInfo> {
        self.hub().cluster_nodes().await
    }

    /// The client `id` wherever it is connected in the cluster; on a
    /// single node, [`client`](Self::client)'s info.
    ///
    /// # Errors
    /// As [`cluster_clients`](Self::cluster_clients).
    pub async fn cluster_client(&self, id: &str) -> Result<Option<ClientInfo>, SendError> {
        self.hub().cluster_client(id).await
    }

    /// The ids of the clients in `channel` on every node of the cluster; on
    /// a single node, [`channel_members`](Self::channel_members).
    ///
    /// # Errors
    /// As [`cluster_clients`](Self::cluster_clients).
    pub async fn cluster_channel_members(&self, channel: &str) -> Result<Vec<ClientId>, SendError> {
        self.hub().cluster_channel_members(channel).await
    }

    /// The ids of the clients connected to this node in `channel`.
    pub fn channel_members(&self, channel: &str) -> Vec<ClientId> {
        self.hub().node().members(channel)
    }

    /// The channels that have at least one member on this node.
    pub fn channels(&self) -> Vec<String> {
        self.hub().node().channel_names()
    }

    /// A snapshot of this node's counters (in a cluster, with its traffic
    /// with the other nodes in [`Stats::cluster`]).
    pub fn stats(&self) -> Stats {
        self.hub().stats()
    }

    /// Pushes the pool's counters and gauges into the installed `metrics`
    /// recorder (see [the module docs](crate::metrics)): call it before
    /// rendering a scrape. Cheap: a snapshot of [`stats`](Self::stats).
    #[cfg(feature = "metrics")]
    pub fn export_metrics(&self) {
        crate::metrics::export(&self.stats());
    }

    // ----- events -----

    /// A new stream of [`PoolEvent`](crate::PoolEvent)s from now on; see
    /// [`event`](crate::event).
    pub fn events(&self) -> EventStream {
        self.hub().events()
    }

    /// A server-side member of `channels`: a stream of every message
    /// broadcast to any of them; see [`subscribe`](crate::subscribe).
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
        Subscription::new(self.hub().clone(), list)
    }

    // ----- shutdown -----

    /// Is the pool shutting down?
    pub fn is_shutting_down(&self) -> bool {
        self.hub().is_shutting_down()
    }

    /// Shuts the pool down: new handshakes get 503; every connection writes
    /// what is queued for it and is then closed with 1001. Waits up to
    /// `shutdown_timeout` for that; connections still busy after it are
    /// closed at once. What was not written, and what was buffered for
    /// clients that are away, is reported as
    /// [`PoolEvent::Undelivered`](crate::PoolEvent::Undelivered) with
    /// [`UndeliveredReason::Shutdown`](crate::UndeliveredReason::Shutdown).
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
        self.hub().shutdown().await
    }

    /// The limits a handshake takes a ticket from.
    fn admission(&self) -> &Admission {
        &self.inner.admission
    }

    fn callbacks(&self) -> &Arc<Callbacks> {
        &self.inner.callbacks
    }
}
