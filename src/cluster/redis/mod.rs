//! The Redis backend: many nodes behave as one pool (feature `redis`).
//!
//! ```no_run
//! # async fn run() -> Result<(), wspool::cluster::redis::RedisError> {
//! use wspool::WsPool;
//!
//! // Every node connects to the same Redis; clients may land on any node.
//! let pool = WsPool::builder().redis("redis://127.0.0.1:6379").connect().await?;
//! # Ok(()) }
//! ```
//!
//! What each call does across nodes, the keys and messages in Redis, and
//! what happens when Redis or a node fails: CLUSTER.md in the repository.
//! In short:
//!
//! - **Send to an id** on another node: one script call that looks up the
//!   id's owner and publishes to that node's channel only, or buffers the
//!   message in Redis while the client is away (or its node died).
//! - **Broadcast**: one `PUBLISH` per target channel; a node subscribes only
//!   to the channels it has members in.
//! - **One connection per id**: a connect claims the id (a claim number
//!   that only grows); the previous owner's node closes its connection
//!   (4001) and routes what it had queued to the new owner.
//! - **Offline buffer** in Redis, so it survives the node the client left.
//! - **Failures are never silent**: a command that fails is an error
//!   (`SendError::Unavailable`) or an `Undelivered` event with a receipt;
//!   a pub/sub link that breaks or goes quiet is reconnected, resubscribed,
//!   and this node's ids are checked and claimed again.

mod scripts;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Weak,
    },
    time::Duration,
};

use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use prost::Message as _;
use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    Client, Script, Value,
};
use tokio::sync::mpsc;

use super::{arrived, envelope, BoxFuture, Claimed, Cluster, Presence, Target};
use crate::{
    client::ClientState, event::UndeliveredReason, message::Encoded, pool::Inner,
    proto::cluster::Envelope, stats::bump, ClientId, ClusterStats, Delivery, SendError, WsPool,
};

/// Why the Redis backend could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// The URL is not a Redis URL.
    #[error("not a Redis URL: {0}")]
    BadUrl(String),
    /// Redis could not be reached, or refused a command.
    #[error("redis: {0}")]
    Redis(String),
    /// The pool's settings do not work together.
    #[error(transparent)]
    Config(#[from] crate::ConfigError),
}

impl From<redis::RedisError> for RedisError {
    fn from(e: redis::RedisError) -> Self {
        RedisError::Redis(e.to_string())
    }
}

/// How a node joins a cluster over Redis. Every field has a default; see
/// [`WsPoolBuilder::redis`](crate::WsPoolBuilder::redis).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// Prepended to every key and channel (default `wspool`): several
    /// pools can share one Redis.
    pub prefix: String,
    /// This node's id (default: random). Must be unique in the cluster.
    pub node_id: String,
    /// How long this node's lease lives without renewal (default 10 s): a
    /// node that died drops out of presence within this long. Renewed
    /// every third of it.
    pub lease: Duration,
    /// How often the pub/sub link is probed with a PING (default 1 s); no
    /// answer within the probe interval and the link is reconnected.
    pub probe_interval: Duration,
    /// Commands waiting for the Redis writer (default 65,536). Beyond it,
    /// `send` and `broadcast` answer `Unavailable` rather than queue more.
    pub max_pending: usize,
    /// A Redis command's answer is awaited this long (default 2 s).
    pub command_timeout: Duration,
    /// Publications kept per channel (default 1,000, for at most the
    /// pool's `message_ttl`) so that a node that missed some recovers
    /// them; a node that missed more reports the gap.
    pub history_len: usize,
    /// The pause before reconnecting a lost pub/sub link (default 200 ms).
    pub reconnect_delay: Duration,
}

impl RedisConfig {
    /// The defaults, for Redis at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            prefix: "wspool".into(),
            node_id: random_id(),
            lease: Duration::from_secs(10),
            probe_interval: Duration::from_secs(1),
            max_pending: 65_536,
            command_timeout: Duration::from_secs(2),
            history_len: 1_000,
            reconnect_delay: Duration::from_millis(200),
        }
    }
}

fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// Connects to Redis and builds the pool: fails fast when Redis cannot be
/// reached at start.
pub(crate) async fn connect(
    config: crate::Config,
    redis: RedisConfig,
) -> Result<WsPool, RedisError> {
    let client = Client::open(redis.url.as_str()).map_err(|e| RedisError::BadUrl(e.to_string()))?;
    // Fails at once when Redis is down at start; later, each command after
    // a broken link tries one reconnect, and fails rather than waits.
    let conn_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(redis.command_timeout))
        .set_response_timeout(Some(redis.command_timeout))
        .set_number_of_retries(1)
        .set_max_delay(redis.command_timeout);
    let conn = client
        .get_connection_manager_with_config(conn_config)
        .await?;
    let (ops, ops_rx) = mpsc::channel(redis.max_pending.max(1));
    let (subs, subs_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        keys: Keys {
            prefix: redis.prefix.clone(),
        },
        node: redis.node_id.clone(),
        conn: conn.clone(),
        scripts: Scripts::new(),
        ops,
        subs,
        up: AtomicBool::new(true),
        next_id: AtomicU64::new(1),
        config: redis.clone(),
        pool: Mutex::new(Weak::new()),
        run: Mutex::new(String::new()),
        stop: tokio::sync::watch::Sender::new(false),
        tallies: Mutex::new(HashMap::new()),
        stats: Counters::default(),
    });
    shared.renew_lease().await?;
    *shared.run.lock() = mark_run(&shared).await?;
    shared.scripts.load(&mut conn.clone()).await;
    let backend = Arc::new(RedisCluster {
        shared: shared.clone(),
    });
    let pool = WsPool::with_cluster(config, |weak| {
        *shared.pool.lock() = weak;
        Some(backend as Arc<dyn Cluster>)
    });
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(writer(shared.clone(), ops_rx));
    tokio::spawn(subscriber(shared.clone(), client, subs_rx, ready_tx));
    tokio::spawn(heartbeat(Arc::downgrade(&shared)));
    tokio::spawn(expiry(Arc::downgrade(&shared)));
    // The node's own channels are subscribed before the pool is handed out.
    let _ = ready_rx.await;
    Ok(pool)
}

/// Key and channel names (CLUSTER.md lists them all).
struct Keys {
    prefix: String,
}

impl Keys {
    fn owner(&self, id: &str) -> String {
        format!("{}:id:{id}", self.prefix)
    }
    fn buffer(&self, id: &str) -> String {
        format!("{}:buf:{id}", self.prefix)
    }
    fn presence(&self, node: &str) -> String {
        format!("{}:presence:{node}", self.prefix)
    }
    fn lease(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }
    fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }
    fn node_channel(&self, node: &str) -> String {
        format!("{}:n:{node}", self.prefix)
    }
    fn channel(&self, channel: &str) -> String {
        format!("{}:c:{channel}", self.prefix)
    }
    fn all(&self) -> String {
        format!("{}:all", self.prefix)
    }
    /// The publication counter of pub/sub channel `pubsub` (`P:c:<name>`
    /// or `P:all`).
    fn sequence(&self, pubsub: &str) -> String {
        format!("{}:seq:{}", self.prefix, self.suffix(pubsub))
    }
    /// The recent publications of pub/sub channel `pubsub`.
    fn history(&self, pubsub: &str) -> String {
        format!("{}:hist:{}", self.prefix, self.suffix(pubsub))
    }
    fn suffix<'a>(&self, pubsub: &'a str) -> &'a str {
        pubsub
            .strip_prefix(self.prefix.as_str())
            .and_then(|s| s.strip_prefix(':'))
            .unwrap_or(pubsub)
    }
    /// The nodes with members in pub/sub channel `pubsub`.
    fn nodes_of(&self, pubsub: &str) -> String {
        format!("{}:chnodes:{}", self.prefix, self.suffix(pubsub))
    }
    /// The members of pub/sub channel `pubsub` that are away.
    fn away(&self, pubsub: &str) -> String {
        format!("{}:away:{}", self.prefix, self.suffix(pubsub))
    }
    /// Set once per Redis lifetime: gone means Redis lost its data.
    fn run(&self) -> String {
        format!("{}:run", self.prefix)
    }
}

struct Scripts {
    send: Script,
    publish: Script,
    claim: Script,
    release: Script,
    check: Script,
    kick: Script,
    expire: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            send: Script::new(scripts::SEND),
            publish: Script::new(scripts::PUBLISH),
            claim: Script::new(scripts::CLAIM),
            release: Script::new(scripts::RELEASE),
            check: Script::new(scripts::CHECK),
            kick: Script::new(scripts::KICK),
            expire: Script::new(scripts::EXPIRE),
        }
    }

    /// Loads the scripts the writer pipelines by hash (after a restart
    /// Redis has forgotten them: `NOSCRIPT`).
    async fn load(&self, conn: &mut ConnectionManager) {
        for script in [&self.send, &self.publish] {
            let _ = script.prepare_invoke().load_async(conn).await;
        }
    }
}

/// State shared by the backend's handle and its tasks.
struct Shared {
    keys: Keys,
    node: String,
    /// One multiplexed connection for commands, reconnected when it breaks:
    /// cloning it shares the socket, and commands sent on it are pipelined
    /// in order.
    conn: ConnectionManager,
    scripts: Scripts,
    /// To the writer task, in order; bounded by `max_pending`.
    ops: mpsc::Sender<Op>,
    /// To the subscriber task: channels to (un)subscribe, in the order the
    /// node's channels appeared and emptied. Unbounded: one entry per
    /// change of a channel's presence on this node.
    subs: mpsc::UnboundedSender<SubOp>,
    /// Whether the last command or probe reached Redis.
    up: AtomicBool,
    /// Numbers the envelopes this node sends.
    next_id: AtomicU64,
    config: RedisConfig,
    /// The pool, to deliver what arrives; weak, so the tasks end with it.
    pool: Mutex<Weak<Inner>>,
    /// Set when the pool is dropped: the backend's tasks end.
    stop: tokio::sync::watch::Sender<bool>,
    /// The run marker seen in Redis (see `check_run`).
    run: Mutex<String>,
    /// Counted broadcasts waiting for answers, by envelope number. A
    /// parking_lot mutex: held to update a few fields, never across await.
    tallies: Mutex<HashMap<u64, Tally>>,
    stats: Counters,
}

/// The backend's tallies (relaxed atomics, read as a snapshot).
#[derive(Default)]
struct Counters {
    forwarded: AtomicU64,
    published: AtomicU64,
    received: AtomicU64,
    recovered: AtomicU64,
    missed: AtomicU64,
    unavailable: AtomicU64,
    outages: AtomicU64,
    data_losses: AtomicU64,
}

enum Op {
    /// A direct message to an id that is not here.
    Send {
        to: String,
        env: Bytes,
        encoded: Arc<Encoded>,
    },
    /// A broadcast, published to each channel (or to everyone); `counted`
    /// names the tally waiting for the nodes' answers.
    Publish {
        channels: Vec<String>,
        env: Bytes,
        encoded: Arc<Encoded>,
        counted: Option<u64>,
    },
    /// An answer to a counted broadcast: `R<id>:<count>` to its origin.
    Reply { node: String, frame: String },
}

/// A counted broadcast waiting for the nodes' answers.
struct Tally {
    /// How many answers to expect (the nodes its publications reached),
    /// once the publish has returned.
    expected: Option<u64>,
    answers: u64,
    clients: u64,
    done: Option<tokio::sync::oneshot::Sender<u64>>,
}

impl Tally {
    fn settle(&mut self) {
        if self.expected.is_some_and(|e| self.answers >= e) {
            if let Some(done) = self.done.take() {
                let _ = done.send(self.clients);
            }
        }
    }
}

enum SubOp {
    Subscribe(String),
    Unsubscribe(String),
    /// Answered once every operation before it is done.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// The [`Cluster`] the pool holds.
struct RedisCluster {
    shared: Arc<Shared>,
}

/// The pool is gone: its tasks stop, and the node leaves the cluster (its
/// lease and presence are deleted, best effort), so other nodes buffer for
/// its clients instead of publishing to nobody.
impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.shared.stop.send_replace(true);
        let s = &self.shared;
        let mut conn = s.conn.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("DEL")
            .arg(s.keys.lease(&s.node))
            .arg(s.keys.presence(&s.node))
            .ignore();
        pipe.cmd("SREM").arg(s.keys.nodes()).arg(&s.node).ignore();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = pipe.query_async::<()>(&mut conn).await;
            });
        }
    }
}

impl Shared {
    fn pool(&self) -> Option<WsPool> {
        self.pool.lock().upgrade().map(|inner| WsPool { inner })
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn unavailable(&self) -> SendError {
        SendError::Unavailable(format!("redis at {} unreachable", self.config.url))
    }

    fn enqueue(&self, op: Op) -> Result<(), SendError> {
        if !self.up.load(Ordering::Acquire) {
            bump(&self.stats.unavailable, 1);
            return Err(self.unavailable());
        }
        self.ops.try_send(op).map_err(|e| {
            bump(&self.stats.unavailable, 1);
            match e {
                mpsc::error::TrySendError::Full(_) => {
                    SendError::Unavailable("too many commands waiting for redis".into())
                }
                mpsc::error::TrySendError::Closed(_) => self.unavailable(),
            }
        })
    }

    async fn renew_lease(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .cmd("SET")
            .arg(self.keys.lease(&self.node))
            .arg(crate::message::now_ms())
            .arg("PX")
            .arg(self.config.lease.as_millis() as u64)
            .ignore()
            .cmd("SADD")
            .arg(self.keys.nodes())
            .arg(&self.node)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
    }
}

impl Cluster for RedisCluster {
    fn node_id(&self) -> &str {
        &self.shared.node
    }

    fn stats(&self) -> ClusterStats {
        let c = &self.shared.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ClusterStats {
            node: self.shared.node.clone(),
            up: self.shared.up.load(Ordering::Acquire),
            forwarded: get(&c.forwarded),
            published: get(&c.published),
            received: get(&c.received),
            recovered: get(&c.recovered),
            missed: get(&c.missed),
            unavailable: get(&c.unavailable),
            outages: get(&c.outages),
            data_losses: get(&c.data_losses),
        }
    }

    fn presence(&self) -> BoxFuture<'_, Result<Vec<Presence>, SendError>> {
        Box::pin(async move {
            let s = &self.shared;
            let mut conn = s.conn.clone();
            let unavailable = |e: redis::RedisError| SendError::Unavailable(e.to_string());
            let nodes: Vec<String> = redis::cmd("SMEMBERS")
                .arg(s.keys.nodes())
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            let mut out = Vec::new();
            for node in nodes.into_iter().filter(|n| *n != s.node) {
                let (alive, records): (bool, Vec<String>) = redis::pipe()
                    .cmd("EXISTS")
                    .arg(s.keys.lease(&node))
                    .cmd("HVALS")
                    .arg(s.keys.presence(&node))
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                if !alive {
                    // Its lease ran out: the node is gone, and so are its
                    // clients.
                    let _: redis::RedisResult<()> = redis::pipe()
                        .cmd("SREM")
                        .arg(s.keys.nodes())
                        .arg(&node)
                        .ignore()
                        .cmd("DEL")
                        .arg(s.keys.presence(&node))
                        .ignore()
                        .query_async(&mut conn)
                        .await;
                    continue;
                }
                out.extend(records.iter().filter_map(|r| serde_json::from_str(r).ok()));
            }
            Ok(out)
        })
    }

    fn send(&self, encoded: &Arc<Encoded>, to: &str) -> Result<Delivery, SendError> {
        let s = &self.shared;
        let env = envelope(encoded, &s.node, s.next_id(), Target::Id(to));
        s.enqueue(Op::Send {
            to: to.to_owned(),
            env,
            encoded: encoded.clone(),
        })?;
        bump(&s.stats.forwarded, 1);
        Ok(Delivery::Forwarded)
    }

    fn broadcast(&self, encoded: &Arc<Encoded>, channels: &[String]) -> Result<(), SendError> {
        let s = &self.shared;
        let env = envelope(encoded, &s.node, s.next_id(), Target::Channels(channels));
        s.enqueue(Op::Publish {
            channels: channels.iter().map(|c| s.keys.channel(c)).collect(),
            env,
            encoded: encoded.clone(),
            counted: None,
        })
    }

    fn broadcast_all(&self, encoded: &Arc<Encoded>) -> Result<(), SendError> {
        let s = &self.shared;
        let env = envelope(encoded, &s.node, s.next_id(), Target::All);
        s.enqueue(Op::Publish {
            channels: vec![s.keys.all()],
            env,
            encoded: encoded.clone(),
            counted: None,
        })
    }

    fn broadcast_counted<'a>(
        &'a self,
        encoded: &'a Arc<Encoded>,
        channels: Option<&'a [String]>,
    ) -> BoxFuture<'a, Result<usize, SendError>> {
        Box::pin(async move {
            let s = &self.shared;
            let id = s.next_id();
            let (target, pubsub) = match channels {
                Some(list) => (
                    Target::Channels(list),
                    list.iter().map(|c| s.keys.channel(c)).collect(),
                ),
                None => (Target::All, vec![s.keys.all()]),
            };
            let env = super::counted_envelope(encoded, &s.node, id, target, true);
            let (done, answer) = tokio::sync::oneshot::channel();
            let tally = Tally {
                expected: None,
                answers: 0,
                clients: 0,
                done: Some(done),
            };
            s.tallies.lock().insert(id, tally);
            let op = Op::Publish {
                channels: pubsub,
                env,
                encoded: encoded.clone(),
                counted: Some(id),
            };
            if let Err(e) = s.enqueue(op) {
                s.tallies.lock().remove(&id);
                return Err(e);
            }
            let counted = tokio::time::timeout(s.config.command_timeout, answer).await;
            let partial = s.tallies.lock().remove(&id).map_or(0, |t| t.clients);
            match counted {
                Ok(Ok(clients)) => Ok(clients as usize),
                _ => {
                    tracing::debug!(id, "counted broadcast: not every node answered in time");
                    Ok(partial as usize)
                }
            }
        })
    }

    fn connected_elsewhere<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, SendError>> {
        Box::pin(async move {
            let s = &self.shared;
            let mut conn = s.conn.clone();
            let unavailable = |e: redis::RedisError| SendError::Unavailable(e.to_string());
            let (node, state): (Option<String>, Option<String>) = redis::cmd("HMGET")
                .arg(s.keys.owner(id))
                .arg("node")
                .arg("state")
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            let Some(node) = node.filter(|n| *n != s.node && state.as_deref() == Some("on")) else {
                return Ok(false);
            };
            redis::cmd("EXISTS")
                .arg(s.keys.lease(&node))
                .query_async(&mut conn)
                .await
                .map_err(unavailable)
        })
    }

    fn disconnect<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, SendError>> {
        Box::pin(async move {
            let s = &self.shared;
            let mut conn = s.conn.clone();
            let found: i64 = s
                .scripts
                .kick
                .key(s.keys.owner(id))
                .key(s.keys.buffer(id))
                .arg(&s.keys.prefix)
                .arg(id)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| SendError::Unavailable(e.to_string()))?;
            Ok(found == 1)
        })
    }

    fn channel_changed(&self, channel: &str, present: bool) {
        let _ = self.shared.subs.send(if present {
            SubOp::Subscribe(channel.to_owned())
        } else {
            SubOp::Unsubscribe(channel.to_owned())
        });
    }

    fn claim<'a>(
        &'a self,
        state: &'a ClientState,
        channels: Vec<String>,
        refuse: bool,
    ) -> BoxFuture<'a, Result<Claimed, SendError>> {
        Box::pin(async move {
            let s = &self.shared;
            // This node subscribes to the client's channels first, so a
            // broadcast made once it is registered reaches it.
            let (done, subscribed) = tokio::sync::oneshot::channel();
            if s.subs.send(SubOp::Barrier(done)).is_ok() {
                let _ = tokio::time::timeout(s.config.command_timeout, subscribed).await;
            }
            claim(s, state, channels, refuse).await
        })
    }

    fn release(
        &self,
        state: Arc<ClientState>,
        channels: Vec<String>,
        away: bool,
        left: Vec<Arc<Encoded>>,
    ) {
        let shared = self.shared.clone();
        tokio::spawn(async move { release(&shared, &state, channels, away, left).await });
    }

    fn channels_changed(&self, state: &ClientState, channels: Vec<String>) {
        let s = &self.shared;
        let info = presence(s, state, channels);
        let mut conn = s.conn.clone();
        let (key, id) = (s.keys.presence(&s.node), state.id.to_string());
        tokio::spawn(async move {
            let r: redis::RedisResult<()> = redis::cmd("HSET")
                .arg(key)
                .arg(id)
                .arg(info)
                .query_async(&mut conn)
                .await;
            if let Err(e) = r {
                tracing::debug!(error = %e, "presence update failed");
            }
        });
    }
}

/// What other nodes see of a client here (`clients()` cluster-wide).
fn presence(shared: &Shared, state: &ClientState, channels: Vec<String>) -> String {
    serde_json::json!({
        "id": &*state.id,
        "kind": &*state.kind,
        "channels": channels,
        "connectedAt": crate::client::epoch_ms(state.connected_at),
        "node": &shared.node,
    })
    .to_string()
}

/// Gives up `state`'s claim (see `Cluster::release`) and accounts for what
/// it still had queued: buffered, forwarded to the new owner, or reported.
async fn release(
    shared: &Shared,
    state: &ClientState,
    channels: Vec<String>,
    away: bool,
    left: Vec<Arc<Encoded>>,
) {
    let Some(pool) = shared.pool() else { return };
    let config = pool.config();
    let mut inv = shared.scripts.release.prepare_invoke();
    inv.key(shared.keys.owner(&state.id))
        .key(shared.keys.buffer(&state.id))
        .key(shared.keys.presence(&shared.node))
        .arg(&shared.node)
        .arg(state.epoch())
        .arg(&*state.id)
        .arg(if away { "away" } else { "gone" })
        .arg((config.offline_ttl().as_millis() as u64).max(1))
        .arg(config.offline_max_messages())
        .arg(&shared.keys.prefix)
        .arg(channels.join(","));
    for m in &left {
        let env = envelope(m, &shared.node, shared.next_id(), Target::Id(&state.id));
        inv.arg(env.as_ref());
    }
    let mut conn = shared.conn.clone();
    let reply = inv.invoke_async::<Vec<i64>>(&mut conn).await;
    let id = &state.id;
    match reply.as_deref() {
        Ok([0]) => {
            // Another claim holds the id: what was queued goes to it.
            for m in left {
                if let Err(e) = pool
                    .cluster()
                    .map_or(Ok(Delivery::Forwarded), |c| c.send(&m, id))
                {
                    pool.undeliverable(&m, id, e);
                }
            }
        }
        Ok([1, kept]) => {
            let kept = (*kept).max(0) as usize;
            let over: Vec<_> = left.into_iter().skip(kept).collect();
            pool.report_undelivered(id, over, UndeliveredReason::OfflineFull);
        }
        Ok(_) => pool.report_undelivered(id, left, UndeliveredReason::Disconnected),
        Err(e) => {
            tracing::warn!(error = %e, %id, "releasing the id in redis failed");
            for m in left {
                pool.undeliverable(&m, id, SendError::Unavailable(e.to_string()));
            }
        }
    }
}

/// Resolves once the pool is gone.
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Most commands sent in one pipeline.
const BATCH: usize = 256;

/// Sends queued operations to Redis in order, a pipeline at a time, and
/// reports what failed.
async fn writer(shared: Arc<Shared>, mut ops: mpsc::Receiver<Op>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut stop = shared.stop.subscribe();
    loop {
        let got = tokio::select! {
            n = ops.recv_many(&mut batch, BATCH) => n,
            _ = stopped(&mut stop) => 0,
        };
        if got == 0 {
            return;
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let Some(pool) = shared.pool() else { return };
        let (max, ttl) = (
            pool.config().offline_max_messages(),
            pool.config().offline_ttl().as_millis() as u64,
        );
        // Publications older than a message's time to live are not worth
        // recovering.
        let history_ttl = pool
            .config()
            .message_ttl()
            .as_millis()
            .min(u64::MAX as u128) as u64;
        drop(pool);
        for op in &batch {
            match op {
                Op::Send { to, env, .. } => {
                    pipe.cmd("EVALSHA")
                        .arg(shared.scripts.send.get_hash())
                        .arg(2)
                        .arg(shared.keys.owner(to))
                        .arg(shared.keys.buffer(to))
                        .arg(&shared.keys.prefix)
                        .arg(env.as_ref())
                        .arg(max)
                        .arg(ttl.max(1));
                }
                Op::Publish { channels, env, .. } => {
                    pipe.cmd("EVALSHA")
                        .arg(shared.scripts.publish.get_hash())
                        .arg(channels.len() * 4);
                    for ch in channels {
                        pipe.arg(shared.keys.sequence(ch))
                            .arg(shared.keys.history(ch))
                            .arg(shared.keys.away(ch))
                            .arg(shared.keys.nodes_of(ch));
                    }
                    pipe.arg(shared.config.history_len.max(1))
                        .arg(history_ttl.max(1))
                        .arg(env.as_ref())
                        .arg(&shared.keys.prefix)
                        .arg(max)
                        .arg(ttl.max(1));
                    for ch in channels {
                        pipe.arg(ch);
                    }
                    bump(&shared.stats.published, 1);
                }
                Op::Reply { node, frame } => {
                    pipe.cmd("PUBLISH")
                        .arg(shared.keys.node_channel(node))
                        .arg(frame)
                        .ignore();
                }
            }
        }
        let mut conn = shared.conn.clone();
        let mut result = pipe
            .query_async::<Vec<redis::RedisResult<Value>>>(&mut conn)
            .await;
        if let Ok(results) = &result {
            if results.iter().any(is_noscript) {
                // Redis restarted and forgot the scripts: load them, retry
                // (a script that failed with NOSCRIPT did nothing).
                shared.scripts.load(&mut conn).await;
                result = pipe.query_async(&mut conn).await;
            }
        }
        match result {
            Ok(results) => {
                shared.up.store(true, Ordering::Release);
                report_sends(&shared, &batch, &results);
            }
            Err(e) => {
                tracing::warn!(error = %e, "redis command failed");
                shared.up.store(false, Ordering::Release);
                if let Some(pool) = shared.pool() {
                    for op in &batch {
                        match op {
                            Op::Send { to, encoded, .. } => {
                                pool.undeliverable(encoded, to, shared.unavailable())
                            }
                            Op::Publish { encoded, .. } => pool.cluster_lost(encoded),
                            Op::Reply { .. } => {}
                        }
                    }
                }
            }
        }
        batch.clear();
    }
}

fn is_noscript(r: &redis::RedisResult<Value>) -> bool {
    matches!(r, Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript))
}

/// Acts on the results of a pipeline: reports the direct messages the
/// send script could not route; tells counted broadcasts how many answers
/// to expect.
fn report_sends(shared: &Shared, batch: &[Op], results: &[redis::RedisResult<Value>]) {
    let Some(pool) = shared.pool() else { return };
    let mut results = results.iter();
    for op in batch {
        match op {
            Op::Send { to, encoded, .. } => {
                let why = match results.next() {
                    Some(Ok(Value::Int(0))) => SendError::NotConnected(ClientId::from(to.as_str())),
                    Some(Ok(Value::Int(3))) => SendError::QueueFull(ClientId::from(to.as_str())),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => SendError::Unavailable(e.to_string()),
                    None => shared.unavailable(),
                };
                pool.undeliverable(encoded, to, why);
            }
            Op::Publish {
                counted, encoded, ..
            } => {
                let (mut reached, mut buffered) = (None, 0);
                if let Some(Ok(Value::Array(out))) = results.next() {
                    let mut out = out.iter();
                    if let (Some(Value::Int(r)), Some(Value::Int(b))) = (out.next(), out.next()) {
                        reached = Some(*r as u64);
                        buffered = *b as u64;
                    }
                    // Away members whose buffer was full: skipped, as a
                    // full queue is by a broadcast on one node.
                    for id in out {
                        if let Value::BulkString(id) = id {
                            let id = String::from_utf8_lossy(id);
                            pool.undeliverable(
                                encoded,
                                &id,
                                SendError::QueueFull(ClientId::from(&*id)),
                            );
                        }
                    }
                }
                if reached.is_none() {
                    pool.cluster_lost(encoded);
                }
                if let Some(id) = counted {
                    if let Some(tally) = shared.tallies.lock().get_mut(id) {
                        // This node's own subscription answers too (it
                        // counts 0: it reached its members directly).
                        tally.expected = Some(reached.unwrap_or(0));
                        tally.clients += buffered;
                        tally.settle();
                    }
                }
            }
            Op::Reply { .. } => {}
        }
    }
}

/// Keeps the pub/sub link: subscribes this node's channel, `all`, and the
/// channels this node has members in; delivers what arrives, recovering
/// publications it missed from their history; probes the link and
/// reconnects (resubscribing, recovering, then checking this node's ids)
/// when it breaks or goes quiet.
async fn subscriber(
    shared: Arc<Shared>,
    client: Client,
    mut subs: mpsc::UnboundedReceiver<SubOp>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut first = true;
    let mut stop = shared.stop.subscribe();
    // The last publication number seen per subscribed pub/sub channel.
    let mut last: HashMap<String, u64> = HashMap::new();
    loop {
        let Some(pool) = shared.pool() else { return };
        match client.get_async_pubsub().await {
            Ok(pubsub) => {
                let (mut sink, mut stream) = pubsub.split();
                // Changes queued before this point are in the list below.
                while subs.try_recv().is_ok() {}
                let mut channels: HashSet<String> = (pool.node().channel_names().iter())
                    .map(|c| shared.keys.channel(c))
                    .collect();
                channels.insert(shared.keys.node_channel(&shared.node));
                channels.insert(shared.keys.all());
                last.retain(|c, _| channels.contains(c));
                // Numbered before subscribing: a publication between the two
                // shows as a gap and is recovered, not skipped.
                for channel in &channels {
                    if !last.contains_key(channel) {
                        let seq = sequence(&shared, channel).await.unwrap_or(0);
                        last.insert(channel.clone(), seq);
                    }
                }
                let list: Vec<&String> = channels.iter().collect();
                if sink.subscribe(&list).await.is_ok() {
                    announce(&shared, channels.iter(), true).await;
                    if !first {
                        shared.up.store(true, Ordering::Release);
                        check_run(&shared, &pool).await;
                        // Buffers first: what they held is not delivered
                        // to the clients again from the histories.
                        let (closed, taken) = resync(&shared, &pool).await;
                        catch_up(&shared, &pool, &mut last, &taken).await;
                        pool.cluster_resynced(closed);
                    }
                    first = false;
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                    drop(pool);
                    let mut probe = tokio::time::interval(shared.config.probe_interval);
                    loop {
                        tokio::select! {
                            _ = stopped(&mut stop) => return,
                            msg = stream.next() => match msg {
                                Some(msg) => inbound(&shared, msg, &mut last).await,
                                None => break,
                            },
                            op = subs.recv() => {
                                let r = match op {
                                    Some(SubOp::Subscribe(c)) => {
                                        let channel = shared.keys.channel(&c);
                                        let seq = sequence(&shared, &channel).await.unwrap_or(0);
                                        last.insert(channel.clone(), seq);
                                        let r = sink.subscribe(&channel).await;
                                        announce(&shared, [&channel], true).await;
                                        r
                                    }
                                    Some(SubOp::Unsubscribe(c)) => {
                                        let channel = shared.keys.channel(&c);
                                        last.remove(&channel);
                                        announce(&shared, [&channel], false).await;
                                        sink.unsubscribe(channel).await
                                    }
                                    Some(SubOp::Barrier(done)) => {
                                        let _ = done.send(());
                                        Ok(())
                                    }
                                    None => return,
                                };
                                if r.is_err() { break; }
                            }
                            _ = probe.tick() => {
                                let ping = tokio::time::timeout(
                                    shared.config.probe_interval.max(Duration::from_millis(100)),
                                    sink.ping::<Value>(),
                                );
                                if !matches!(ping.await, Ok(Ok(_))) { break; }
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "redis pub/sub connect failed"),
        }
        if let Some(pool) = shared.pool() {
            if shared.up.swap(false, Ordering::AcqRel) {
                tracing::warn!("redis pub/sub link lost: reconnecting");
                bump(&shared.stats.outages, 1);
                pool.cluster_down();
            }
        }
        if let Some(r) = ready.take() {
            let _ = r.send(());
        }
        tokio::time::sleep(shared.config.reconnect_delay).await;
    }
}

/// Records that this node has (`present`) or no longer has members in
/// these pub/sub channels (`P:chnodes:*`): a publication that reaches
/// fewer nodes than have members looks for a node that is gone.
async fn announce<'a>(
    shared: &Shared,
    channels: impl IntoIterator<Item = &'a String>,
    present: bool,
) {
    let mut pipe = redis::pipe();
    let prefix = shared.keys.channel("");
    for channel in channels.into_iter().filter(|c| c.starts_with(&prefix)) {
        let cmd = if present { "SADD" } else { "SREM" };
        pipe.cmd(cmd)
            .arg(shared.keys.nodes_of(channel))
            .arg(&shared.node)
            .ignore();
    }
    let mut conn = shared.conn.clone();
    if let Err(e) = pipe.query_async::<()>(&mut conn).await {
        tracing::debug!(error = %e, "recording this node's channels failed");
    }
}

/// Handles one pub/sub message.
async fn inbound(shared: &Shared, msg: redis::Msg, last: &mut HashMap<String, u64>) {
    let Some(pool) = shared.pool() else { return };
    let channel = msg.get_channel_name();
    let payload = msg.get_payload_bytes();
    if channel == shared.keys.node_channel(&shared.node) {
        node_message(shared, &pool, payload);
        return;
    }
    let Some((seq, body)) = split_number(payload) else {
        tracing::debug!(channel, "malformed publication");
        return;
    };
    if last.get(channel).is_some_and(|&prev| seq <= prev) {
        return; // seen already (recovered from the history)
    }
    if let Some(&prev) = last.get(channel) {
        if seq > prev + 1 {
            recover(shared, &pool, channel, prev, seq, &Taken::new()).await;
        }
    }
    last.insert(channel.to_owned(), seq);
    publication(shared, &pool, channel, body, &Taken::new());
}

/// `<number>:<rest>`.
fn split_number(payload: &[u8]) -> Option<(u64, &[u8])> {
    let colon = payload.iter().position(|b| *b == b':')?;
    let n = std::str::from_utf8(&payload[..colon]).ok()?.parse().ok()?;
    Some((n, &payload[colon + 1..]))
}

/// A message on this node's own channel: a direct message, or a takeover.
fn node_message(shared: &Shared, pool: &WsPool, payload: &[u8]) {
    let Some((&kind, rest)) = payload.split_first() else {
        return;
    };
    let Some((epoch, body)) = split_number(rest) else {
        return;
    };
    match kind {
        b'D' => {
            if let Ok(env) = Envelope::decode(body) {
                bump(&shared.stats.received, 1);
                pool.cluster_deliver(env, None, epoch, true);
            }
        }
        b'K' => {
            if let Ok(id) = std::str::from_utf8(body) {
                pool.cluster_replaced(id, epoch);
            }
        }
        b'R' => {
            if let Some(clients) = std::str::from_utf8(body).ok().and_then(|c| c.parse().ok()) {
                tally(shared, epoch, clients);
            }
        }
        b'X' => {
            if let Ok(id) = std::str::from_utf8(body) {
                if let Some(client) = pool.client(id) {
                    client.disconnect();
                }
            }
        }
        _ => tracing::debug!(kind, "unknown node message"),
    }
}

/// Delivers one channel or `all` publication here (unless this node sent
/// it: it reached its own members directly).
///
/// `taken` names the envelopes this node's clients already got from their
/// buffers (after a reconnect): those reach only its subscriptions.
fn publication(shared: &Shared, pool: &WsPool, channel: &str, body: &[u8], taken: &Taken) {
    let Ok(env) = Envelope::decode(body) else {
        tracing::debug!(channel, "undecodable envelope");
        return;
    };
    let clients = !taken.contains(&(env.origin_node.clone(), env.id));
    let answer = env.count.then(|| (env.origin_node.clone(), env.id));
    let reached = if env.origin_node == shared.node {
        0
    } else {
        bump(&shared.stats.received, 1);
        if env.all {
            pool.cluster_deliver(env, None, 0, clients)
        } else if let Some(name) = channel.strip_prefix(&shared.keys.channel("")) {
            let name = name.to_owned();
            pool.cluster_deliver(env, Some(&name), 0, clients)
        } else {
            0
        }
    };
    if let Some((node, id)) = answer {
        if node == shared.node {
            tally(shared, id, reached as u64);
        } else {
            let frame = format!("R{id}:{reached}");
            if shared.enqueue(Op::Reply { node, frame }).is_err() {
                tracing::debug!(id, "could not answer a counted broadcast");
            }
        }
    }
}

/// One node's answer to counted broadcast `id`.
fn tally(shared: &Shared, id: u64, clients: u64) {
    if let Some(tally) = shared.tallies.lock().get_mut(&id) {
        tally.answers += 1;
        tally.clients += clients;
        tally.settle();
    }
}

/// Publications `after < n < before` on `channel` were missed: deliver
/// those still in its history, in order; report the rest.
async fn recover(
    shared: &Shared,
    pool: &WsPool,
    channel: &str,
    after: u64,
    before: u64,
    taken: &Taken,
) {
    let mut conn = shared.conn.clone();
    let history: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg(shared.keys.history(channel))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    let mut found: Vec<(u64, &[u8])> = (history.iter())
        .filter_map(|h| split_number(h))
        .filter(|(n, _)| *n > after && *n < before)
        .collect();
    found.sort_by_key(|(n, _)| *n);
    found.dedup_by_key(|(n, _)| *n);
    let missed = (before - after - 1).saturating_sub(found.len() as u64);
    bump(&shared.stats.recovered, found.len() as u64);
    for (_, body) in found {
        publication(shared, pool, channel, body, taken);
    }
    if missed > 0 {
        bump(&shared.stats.missed, missed);
        tracing::warn!(
            channel,
            missed,
            "publications missed and no longer in the history"
        );
        pool.cluster_gap(
            channel
                .strip_prefix(&shared.keys.channel(""))
                .unwrap_or("*"),
            missed,
        );
    }
}

/// The number of the last publication to pub/sub channel `channel`.
async fn sequence(shared: &Shared, channel: &str) -> redis::RedisResult<u64> {
    let mut conn = shared.conn.clone();
    let seq: Option<u64> = redis::cmd("GET")
        .arg(shared.keys.sequence(channel))
        .query_async(&mut conn)
        .await?;
    Ok(seq.unwrap_or(0))
}

/// After a reconnect: what was published to the subscribed channels while
/// the link was down is recovered from their histories.
async fn catch_up(shared: &Shared, pool: &WsPool, last: &mut HashMap<String, u64>, taken: &Taken) {
    let mut conn = shared.conn.clone();
    for (channel, prev) in last.iter_mut() {
        let now: Option<u64> = redis::cmd("GET")
            .arg(shared.keys.sequence(channel))
            .query_async(&mut conn)
            .await
            .unwrap_or(None);
        if channel == &shared.keys.node_channel(&shared.node) {
            continue; // direct messages: recovered by `resync`
        }
        match now {
            Some(now) if now > *prev => {
                recover(shared, pool, channel, *prev, now + 1, taken).await;
                *prev = now;
            }
            Some(_) => {}
            // The counter is gone: Redis lost its data (reported by
            // `check_run`); numbering starts again.
            None => *prev = 0,
        }
    }
}

/// Detects a Redis that lost its data (restarted without persistence, or
/// flushed): the run marker this node saw is gone.
async fn check_run(shared: &Shared, pool: &WsPool) {
    let seen = shared.run.lock().clone();
    match mark_run(shared).await {
        Ok(now) if now != seen => {
            bump(&shared.stats.data_losses, 1);
            tracing::warn!("redis lost its data: ids are claimed again, buffers are gone");
            pool.cluster_data_lost();
            *shared.run.lock() = now;
        }
        _ => {}
    }
}

/// Sets the run marker unless present; returns it.
async fn mark_run(shared: &Shared) -> redis::RedisResult<String> {
    let mut conn = shared.conn.clone();
    let (run,): (String,) = redis::pipe()
        .cmd("SET")
        .arg(shared.keys.run())
        .arg(random_id())
        .arg("NX")
        .ignore()
        .cmd("GET")
        .arg(shared.keys.run())
        .query_async(&mut conn)
        .await?;
    Ok(run)
}

/// After a reconnect: which of this node's ids does it still hold? Those
/// lost to another claim are closed (4001); those Redis forgot are claimed
/// again; what was buffered for held ones while the link was down is
/// delivered. Returns how many were closed, and the envelopes delivered.
async fn resync(shared: &Shared, pool: &WsPool) -> (usize, Taken) {
    let _ = shared.renew_lease().await;
    let mut closed = 0;
    let mut taken = Taken::new();
    for state in pool.node().online() {
        let mut conn = shared.conn.clone();
        let info = presence(shared, &state, pool.node().channels_of(&state));
        let reply: redis::RedisResult<Vec<Value>> = shared
            .scripts
            .check
            .key(shared.keys.owner(&state.id))
            .key(shared.keys.buffer(&state.id))
            .key(shared.keys.presence(&shared.node))
            .arg(&shared.node)
            .arg(state.epoch())
            .arg(&*state.id)
            .arg(info)
            .invoke_async(&mut conn)
            .await;
        let Ok(reply) = reply else { continue };
        let mut it = reply.into_iter();
        match it.next() {
            Some(Value::Int(0)) => {
                pool.cluster_replaced(&state.id, u64::MAX);
                closed += 1;
            }
            Some(Value::Int(1)) => {
                let buffered = envelopes(it, &mut taken);
                bump(&shared.stats.recovered, buffered.len() as u64);
                pool.cluster_take_buffered(&state, buffered);
            }
            _ => {
                let channels = pool.node().channels_of(&state);
                if let Ok(claimed) = claim(shared, &state, channels, false).await {
                    state.set_epoch(claimed.epoch);
                    pool.cluster_take_buffered(&state, claimed.buffered);
                }
            }
        }
    }
    (closed, taken)
}

/// Envelopes by name (origin node, number).
type Taken = HashSet<(String, u64)>;

/// Buffered envelopes from a script's reply, as messages for this node;
/// their names go to `taken`.
fn envelopes(values: impl Iterator<Item = Value>, taken: &mut Taken) -> Vec<Arc<Encoded>> {
    values
        .filter_map(|v| match v {
            Value::BulkString(b) => Envelope::decode(b.as_slice()).ok(),
            _ => None,
        })
        .map(|mut env| {
            taken.insert((env.origin_node.clone(), env.id));
            arrived(&mut env)
        })
        .collect()
}

/// Claims `state`'s id for this node; returns the claim number and what
/// was buffered for it in Redis.
async fn claim(
    shared: &Shared,
    state: &ClientState,
    channels: Vec<String>,
    refuse: bool,
) -> Result<Claimed, SendError> {
    let info = presence(shared, state, channels);
    let mut conn = shared.conn.clone();
    let reply: Vec<Value> = shared
        .scripts
        .claim
        .key(shared.keys.owner(&state.id))
        .key(shared.keys.buffer(&state.id))
        .key(shared.keys.presence(&shared.node))
        .arg(&shared.keys.prefix)
        .arg(&shared.node)
        .arg(&*state.id)
        .arg(if refuse { "1" } else { "0" })
        .arg(info)
        .invoke_async(&mut conn)
        .await
        .map_err(|e| SendError::Unavailable(e.to_string()))?;
    let mut it = reply.into_iter();
    let epoch = match it.next() {
        Some(Value::Int(e)) if e >= 0 => e as u64,
        _ => return Err(SendError::NotConnected(state.id.clone())),
    };
    Ok(Claimed {
        epoch,
        buffered: envelopes(it, &mut Taken::new()),
    })
}

/// Reports the offline windows that closed without the client coming
/// back (on any node: the script hands each to one node): what its buffer
/// held is `Undelivered` (`OfflineTimeout`), with receipts, as on one node.
async fn expiry(shared: Weak<Shared>) {
    loop {
        let period = match shared.upgrade() {
            Some(s) => match s.pool() {
                Some(pool) => {
                    let ttl = pool.config().offline_ttl();
                    if !ttl.is_zero() {
                        report_expired(&s, &pool).await;
                    }
                    (ttl / 8).clamp(Duration::from_millis(50), Duration::from_secs(1))
                }
                None => return,
            },
            None => return,
        };
        tokio::time::sleep(period).await;
    }
}

async fn report_expired(shared: &Shared, pool: &WsPool) {
    let mut conn = shared.conn.clone();
    let reply: redis::RedisResult<Vec<Value>> = shared
        .scripts
        .expire
        .key(format!("{}:expiring", shared.keys.prefix))
        .arg(&shared.keys.prefix)
        .arg(100)
        .invoke_async(&mut conn)
        .await;
    let Ok(reply) = reply else { return };
    let mut it = reply.into_iter();
    while let (Some(Value::BulkString(id)), Some(Value::Int(n))) = (it.next(), it.next()) {
        let id = ClientId::from(String::from_utf8_lossy(&id).as_ref());
        let msgs = envelopes(it.by_ref().take(n.max(0) as usize), &mut Taken::new());
        pool.report_undelivered(&id, msgs, UndeliveredReason::OfflineTimeout);
    }
}

/// Renews this node's lease every third of it.
async fn heartbeat(shared: Weak<Shared>) {
    loop {
        let period = match shared.upgrade() {
            Some(s) if s.pool().is_some() => {
                if let Err(e) = s.renew_lease().await {
                    tracing::debug!(error = %e, "lease renewal failed");
                }
                s.config.lease / 3
            }
            _ => return,
        };
        tokio::time::sleep(period).await;
    }
}
