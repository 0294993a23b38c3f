//! The seam between this node and the rest of a cluster, and its engines.
//!
//! A seam has two sides (the shape of centrifuge's `Broker` and
//! `BrokerEventHandler`, and of socketioxide's `CoreAdapter` and
//! `SocketEmitter`):
//!
//! - **Out**: the crate-private trait `Cluster`, what this node asks of the
//!   others: route to an id that is not here, broadcast to their members,
//!   claim an id cluster-wide, presence, kick, join and leave.
//! - **In**: the crate-private trait `Handler`, what an engine hands back:
//!   a message arrived for these clients or channels, replace or close
//!   this client, a gap, data lost, the link down and up. The pool's
//!   routing implements it and registers itself when the engine starts
//!   (`Cluster::run`), as centrifuge's `Node.Run` does.
//!
//! Both speak engine-neutral types only (ids, channel names, encoded
//! messages, claim numbers), never the pool's or the node's internals, so
//! an engine is one folder: [`memory`] (several pools in one process, for
//! tests and examples) and `redis` (feature `redis`), each with its own
//! settings, errors and counters. The builder takes any of them as an
//! [`Engine`]: `WsPool::builder().engine(e).connect().await`.
//!
//! A single-node pool has no engine: routing pays one untaken branch for
//! the seam (`Option::None`), nothing else.
//!
//! Messages cross processes as an `Envelope` (`proto/cluster.proto`): the
//! encoded `SendMsg` (the bytes binary clients get, so a message is
//! encoded once in the whole cluster), a wall-clock deadline, the origin
//! client and node, a per-node number (with the node, the message's name
//! for dedupe), the target (an id, channels in order, or everyone), and
//! whether the origin counts recipients. It is encoded once per send.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Weak,
    },
    time::Duration,
};

use bytes::Bytes;
use prost::Message as _;

use crate::{
    event::UndeliveredReason,
    message::{now_ms, Encoded},
    proto::cluster::Envelope,
    ClientId, ClientInfo, ClusterStats, ConfigError, Delivery, EngineStats, JoinError, NodeInfo,
    SendError,
};

pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;

/// A boxed future, as the seam's async methods return.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An engine that joins this pool to others, for
/// [`WsPoolBuilder::engine`](crate::WsPoolBuilder::engine). Made by each
/// engine's module: `From<RedisConfig>` (`cluster::redis`, feature
/// `redis`), [`memory::Network::engine`].
#[derive(Clone)]
pub struct Engine(Arc<dyn Start>);

impl Engine {
    pub(crate) fn new(start: impl Start) -> Self {
        Engine(Arc::new(start))
    }

    /// Starts the engine for a pool with `settings`: reaches its service,
    /// and answers the outbound side of the seam.
    pub(crate) fn start(
        &self,
        settings: Settings,
    ) -> BoxFuture<'static, Result<Arc<dyn Cluster>, ConnectError>> {
        self.0.start(settings)
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Engine").field(&self.0.name()).finish()
    }
}

/// How an engine starts (behind [`Engine`]).
pub(crate) trait Start: Send + Sync + 'static {
    /// Its name, for logs and [`ClusterStats::engine`].
    fn name(&self) -> &'static str;

    /// Connects; the engine's tasks start with [`Cluster::run`].
    fn start(
        &self,
        settings: Settings,
    ) -> BoxFuture<'static, Result<Arc<dyn Cluster>, ConnectError>>;
}

/// Why a pool could not join its cluster, from
/// [`WsPoolBuilder::connect`](crate::WsPoolBuilder::connect).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The pool's settings do not work together.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The engine's address (a URL) is not one it can use.
    #[error("bad cluster address: {0}")]
    BadAddress(String),
    /// The engine's service could not be reached, or refused it.
    #[error("cluster unreachable: {0}")]
    Unreachable(String),
}

/// The pool's settings an engine needs (offline buffers in the cluster,
/// how long a publication is worth recovering).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) message_ttl: Duration,
    pub(crate) offline_ttl: Duration,
    pub(crate) offline_max_messages: usize,
    pub(crate) offline_max_bytes: usize,
}

impl Settings {
    pub(crate) fn of(config: &crate::Config) -> Self {
        Settings {
            message_ttl: config.message_ttl(),
            offline_ttl: config.offline_ttl(),
            offline_max_messages: config.offline_max_messages(),
            offline_max_bytes: config.offline_max_bytes(),
        }
    }
}

/// A client connected to this node, as the cluster sees it.
#[derive(Debug, Clone)]
pub(crate) struct Local {
    pub(crate) id: ClientId,
    /// The connection's number on this node: a claim made for one
    /// connection is not taken for the next with the same id.
    pub(crate) conn: u64,
    pub(crate) kind: Arc<str>,
    /// Milliseconds since the Unix epoch.
    pub(crate) connected_at: u64,
    pub(crate) channels: Vec<String>,
    /// The claim it holds its id under (0: none yet).
    pub(crate) epoch: u64,
}

/// An id claimed for a connection on this node.
pub(crate) struct Claimed {
    /// The claim number: grows with every claim of any id, cluster-wide.
    pub(crate) epoch: u64,
    /// What was buffered for the id in the cluster, oldest first.
    pub(crate) buffered: Vec<Arc<Encoded>>,
}

/// What the cluster knows of a client on another node.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Presence {
    pub(crate) id: String,
    pub(crate) kind: String,
    pub(crate) channels: Vec<String>,
    pub(crate) connected_at: u64,
    pub(crate) node: String,
}

impl Presence {
    /// What `node` publishes of `client`.
    pub(crate) fn of(client: &Local, node: &str) -> Self {
        Presence {
            id: client.id.to_string(),
            kind: client.kind.to_string(),
            channels: client.channels.clone(),
            connected_at: client.connected_at,
            node: node.to_owned(),
        }
    }

    pub(crate) fn info(self) -> ClientInfo {
        ClientInfo::remote(
            &self.id,
            self.kind,
            self.channels,
            self.connected_at,
            self.node,
        )
    }
}

/// Which clients here a message from another node is for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reach<'a> {
    /// The connection of `id`, if it holds the id under a claim of at least
    /// `epoch` (0: any); otherwise the message is routed on.
    Id { id: &'a str, epoch: u64 },
    /// The members of `these` that are not members of `skip` (those were
    /// reached through one of `skip`), each once.
    Channels {
        these: &'a [String],
        skip: &'a [String],
    },
    /// Every connected client.
    All,
}

/// A message that arrived from another node.
pub(crate) struct Arrival<'a> {
    pub(crate) msg: Arc<Encoded>,
    pub(crate) reach: Reach<'a>,
    /// False when this node's clients already got it (from their buffers,
    /// after a reconnect): only server-side subscriptions get it.
    pub(crate) clients: bool,
}

/// A change in the link between this node and the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Link {
    /// The link broke (reported once per outage).
    Down,
    /// The link is back and this node's ids were checked: `closed` had
    /// been taken over meanwhile and were closed.
    Up { closed: usize },
    /// `missed` publications to `channel` were missed and are gone.
    Gap { channel: String, missed: u64 },
    /// The cluster's store lost its data: offline buffers and histories
    /// are gone.
    DataLost,
}

/// The outbound side: what this node asks of the others. Every method
/// that is not `async` returns at once (the work happens on the engine's
/// tasks); outcomes that come later are reported through the [`Handler`].
pub(crate) trait Cluster: Send + Sync + 'static {
    /// This node's id in the cluster.
    fn node_id(&self) -> &str;

    /// Starts the engine's tasks, delivering to `handler`; resolves once
    /// this node receives what is sent to it.
    fn run(&self, handler: Weak<dyn Handler>) -> BoxFuture<'_, ()>;

    /// The engine's counters.
    fn stats(&self) -> ClusterStats;

    /// Routes `msg` to client `to`, which is not on this node: to the node
    /// that owns it, or to its offline buffer. `Forwarded` means on its
    /// way; `NotConnected` comes back later as [`Handler::undeliverable`].
    ///
    /// # Errors
    /// [`SendError::Unavailable`] when the cluster cannot be reached now.
    fn send(&self, msg: &Arc<Encoded>, to: &str) -> Result<Delivery, SendError>;

    /// Broadcasts `msg` to the members of `channels` on the other nodes, or
    /// (`None`) to every client connected to them.
    ///
    /// # Errors
    /// [`SendError::Unavailable`] when the cluster cannot be reached.
    fn broadcast(&self, msg: &Arc<Encoded>, channels: Option<&[String]>) -> Result<(), SendError>;

    /// [`broadcast`](Self::broadcast), resolving to how many clients the
    /// other nodes queued or buffered it for. Nodes that have not answered
    /// within the engine's timeout are not counted.
    ///
    /// # Errors
    /// [`SendError::Unavailable`] when the cluster cannot be reached.
    fn broadcast_counted<'a>(
        &'a self,
        msg: &'a Arc<Encoded>,
        channels: Option<&'a [String]>,
    ) -> BoxFuture<'a, Result<usize, SendError>>;

    /// Is `id` connected to another live node?
    ///
    /// # Errors
    /// [`SendError::Unavailable`] when the cluster cannot be reached.
    fn connected_elsewhere<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, SendError>>;

    /// Closes (4002) the connection of `id` on whichever node has it, or
    /// forgets the id if it is away. Resolves to whether some node had it.
    ///
    /// # Errors
    /// [`SendError::Unavailable`] when the cluster cannot be reached.
    fn disconnect<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, SendError>>;

    /// Adds (`join`) or removes `channel` for the client `id` on the node
    /// that has it connected. Resolves to that node's answer: whether the
    /// membership changed; `Ok(None)` when no live node has `id`.
    ///
    /// # Errors
    /// [`SendError::Unavailable`] when the cluster cannot be reached.
    fn membership<'a>(
        &'a self,
        id: &'a str,
        channel: &'a str,
        join: bool,
    ) -> BoxFuture<'a, Result<Option<Result<bool, JoinError>>, SendError>>;

    /// The first member of `channel` on this node arrived (`true`) or the
    /// last left (`false`). Called in order, under the node's write lock:
    /// must not block.
    fn channel_changed(&self, channel: &str, present: bool);

    /// Claims `client`'s id for this node, cluster-wide (with `refuse`,
    /// only if no live node has it connected).
    ///
    /// # Errors
    /// [`SendError::NotConnected`] when refused,
    /// [`SendError::Unavailable`] when the cluster cannot be reached.
    fn claim<'a>(
        &'a self,
        client: &'a Local,
        refuse: bool,
    ) -> BoxFuture<'a, Result<Claimed, SendError>>;

    /// Gives up `client`'s claim: `away` keeps the id (and `left`, what was
    /// still queued) buffered in the cluster for `offline_ttl`, still a
    /// member of its channels for broadcasts; otherwise the id is
    /// forgotten and `left` reported. Returns at once.
    fn release(&self, client: Local, away: bool, left: Vec<Arc<Encoded>>);

    /// Tells the cluster that `client`'s channels changed (presence).
    fn channels_changed(&self, client: &Local);

    /// The clients connected to the other live nodes.
    ///
    /// # Errors
    /// [`SendError::Unavailable`] when the cluster cannot be reached.
    fn presence(&self) -> BoxFuture<'_, Result<Vec<Presence>, SendError>>;

    /// The last reports of the other live nodes
    /// ([`Handler::report`]), each with its age, and `up` false for one
    /// that has not reported within [`REPORT_STALE`].
    ///
    /// # Errors
    /// [`SendError::Unavailable`] when the cluster cannot be reached.
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, SendError>>;
}

/// How often an engine that stores reports has each node make its own
/// ([`Handler::report`]).
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(1);

/// A node whose report is older than this is shown down: its link broke,
/// or it is too busy to tell.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) const REPORT_STALE: Duration = Duration::from_secs(3);

/// The inbound side: what an engine hands back to this node. Registered
/// with [`Cluster::run`]; every method returns at once.
pub(crate) trait Handler: Send + Sync + 'static {
    /// Delivers a message from another node to clients here; returns how
    /// many it was queued or buffered for. A direct message for an id no
    /// longer here is routed on.
    fn deliver(&self, arrival: Arrival<'_>) -> usize;

    /// Another node claimed `id` under `epoch`: a connection here holding
    /// it under an older claim is closed (4001).
    fn replaced(&self, id: &str, epoch: u64);

    /// Closes (4002) the connection of `id` here; whether it was here.
    fn disconnect(&self, id: &str) -> bool;

    /// Adds or removes `channel` for the client `id` here; `None` when `id`
    /// is not connected here.
    fn membership(&self, id: &str, channel: &str, join: bool) -> Option<Result<bool, JoinError>>;

    /// What the cluster held for `id` while its connection here had no
    /// claim (after the link came back), or held under `client`'s new
    /// claim: put ahead of its queue; what does not fit is reported.
    fn reclaimed(&self, client: &Local, epoch: Option<u64>, buffered: Vec<Arc<Encoded>>);

    /// Messages for `to` that will not be written (its offline window
    /// ended, its buffer was full): counted, reported, receipts sent.
    fn undelivered(&self, to: &ClientId, msgs: Vec<Arc<Encoded>>, reason: UndeliveredReason);

    /// A message the cluster accepted and could not deliver: a direct
    /// message to `to`, or (with `to` empty) a broadcast that did not reach
    /// the other nodes.
    fn undeliverable(&self, msg: &Arc<Encoded>, to: &str, why: SendError);

    /// The link changed.
    fn link(&self, change: Link);

    /// The clients connected here.
    fn locals(&self) -> Vec<Local>;

    /// Whether `id` is connected here (the Redis engine asks before
    /// buffering a broadcast for a member another node marked away).
    #[cfg(feature = "redis")]
    fn is_local(&self, id: &str) -> bool;

    /// The channels with a member here.
    fn channels(&self) -> Vec<String>;

    /// What this node tells the others of itself: its connections,
    /// traffic and link (this engine's [`Cluster::stats`] included).
    fn report(&self) -> NodeInfo;
}

/// The counters every engine keeps, as [`ClusterStats`] reports them
/// (relaxed atomics, read as a snapshot; see its fields for what each
/// counts).
#[derive(Default)]
pub(crate) struct Tallies {
    pub(crate) forwarded: AtomicU64,
    pub(crate) published: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) recovered: AtomicU64,
    pub(crate) missed: AtomicU64,
    pub(crate) unavailable: AtomicU64,
    pub(crate) outages: AtomicU64,
    pub(crate) data_losses: AtomicU64,
    pub(crate) malformed: AtomicU64,
    /// When publications were last missed for good (ms since the Unix
    /// epoch; 0: never).
    pub(crate) last_gap_ms: AtomicU64,
}

impl Tallies {
    /// `n` publications were missed for good, now.
    pub(crate) fn gap(&self, n: u64) {
        self.missed.fetch_add(n, Relaxed);
        self.last_gap_ms.store(now_ms().max(1) as u64, Relaxed);
    }

    /// The stats of `node`, its link `up` or not, with the engine's own.
    pub(crate) fn snapshot(&self, node: &str, up: bool, engine: EngineStats) -> ClusterStats {
        let get = |a: &AtomicU64| a.load(Relaxed);
        ClusterStats {
            node: node.to_owned(),
            up,
            forwarded: get(&self.forwarded),
            published: get(&self.published),
            received: get(&self.received),
            recovered: get(&self.recovered),
            missed: get(&self.missed),
            last_gap_at: Some(get(&self.last_gap_ms)).filter(|&ms| ms > 0),
            unavailable: get(&self.unavailable),
            outages: get(&self.outages),
            data_losses: get(&self.data_losses),
            malformed: get(&self.malformed),
            engine,
        }
    }
}

/// Where an envelope goes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    /// One client id.
    Id(&'a str),
    /// The members of these channels.
    Channels(&'a [String]),
    /// Every connected client.
    All,
}

impl<'a> From<Option<&'a [String]>> for Target<'a> {
    fn from(channels: Option<&'a [String]>) -> Self {
        channels.map_or(Target::All, Target::Channels)
    }
}

/// Encodes `msg` for another node: once per send, whatever the number of
/// channels it is published to; `count` asks the nodes that deliver it to
/// say to how many clients.
pub(crate) fn envelope(
    msg: &Encoded,
    node: &str,
    id: u64,
    target: Target<'_>,
    count: bool,
) -> Bytes {
    let remaining = msg
        .expires_at
        .saturating_duration_since(tokio::time::Instant::now());
    let deadline_ms = now_ms().saturating_add(remaining.as_millis().min(i64::MAX as u128) as i64);
    let mut env = Envelope {
        // The recipients' bytes, encoded once: a clone of the shared buffer.
        msg: msg.binary().clone(),
        deadline_ms,
        origin: msg.origin.as_deref().unwrap_or_default().to_owned(),
        origin_node: node.to_owned(),
        id,
        count,
        ..Default::default()
    };
    match target {
        Target::Id(to) => env.to = to.to_owned(),
        Target::Channels(channels) => env.channels = channels.to_vec(),
        Target::All => env.all = true,
    }
    Bytes::from(env.encode_to_vec())
}

/// A message that arrived from another node, ready for local mailboxes:
/// its deadline turned back into an `Instant` on this node's clock, its
/// bytes kept as they came. `None` (logged) when the message does not
/// decode: another node, or whatever wrote to the engine, sent garbage.
pub(crate) fn arrived(env: &mut Envelope) -> Option<Arc<Encoded>> {
    let left_ms = env.deadline_ms.saturating_sub(now_ms()).max(0) as u64;
    let origin = (!env.origin.is_empty()).then(|| ClientId::from(env.origin.as_str()));
    let ttl = Duration::from_millis(left_ms);
    match Encoded::decoded(std::mem::take(&mut env.msg), origin, ttl) {
        Ok(encoded) => {
            encoded.set_name(&env.origin_node, env.id);
            Some(encoded)
        }
        Err(e) => {
            let from = &env.origin_node;
            tracing::debug!(error = %e, %from, "undecodable message from another node");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SendMsg;

    /// An envelope carries the message, its origin and a deadline that
    /// survives the trip (within the clock's granularity).
    #[tokio::test]
    async fn envelope_round_trip() {
        let msg = SendMsg {
            msg: "hi".into(),
            priority: 3,
            ..Default::default()
        };
        let enc = Encoded::new(Arc::new(msg), Some("alice".into()), Duration::from_secs(30));
        let bytes = envelope(&enc, "node-a", 7, Target::Id("bob"), false);
        let mut env = Envelope::decode(bytes).unwrap();
        assert_eq!((env.to.as_str(), env.id), ("bob", 7));
        assert_eq!(env.origin_node, "node-a");
        let back = arrived(&mut env).unwrap();
        assert_eq!(back.binary(), enc.binary(), "the bytes travel as they are");
        assert_eq!(back.msg.msg, "hi");
        assert_eq!(back.priority(), 3);
        assert_eq!(back.origin.as_deref(), Some("alice"));
        let left = back.expires_at - tokio::time::Instant::now();
        assert!(left > Duration::from_secs(29) && left <= Duration::from_secs(30));
    }
}
