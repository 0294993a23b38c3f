//! The Redis backend: many nodes behave as one pool (feature `redis`).
//!
//! ```no_run
//! # async fn run() -> Result<(), wspool::cluster::ConnectError> {
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
//! - **Where Redis is**: one instance, the master Sentinel names (followed
//!   across failovers), or a Redis Cluster; one key layout for all
//!   three, hash-tagged so each script touches one slot.
//! - **Send to an id** on another node: a script looks up the id's owner,
//!   then another publishes to that node's channel only; or the message
//!   is buffered in Redis while the client is away (or its node died).
//! - **Broadcast**: one publication per target channel (sharded in a
//!   Redis Cluster); a node subscribes only to the channels it has members
//!   in.
//! - **One connection per id**: a connect claims the id (a claim number
//!   that only grows); the previous owner's node closes its connection
//!   (4001) and routes what it had queued to the new owner.
//! - **Offline buffer** in Redis, so it survives the node the client left.
//! - **Failures are never silent**: a command that fails is an error
//!   (`SendError::Unavailable`) or an `Undelivered` event with a receipt;
//!   a pub/sub link that breaks or goes quiet is reconnected, resubscribed,
//!   and this node's ids are checked and claimed again.

mod scripts;
mod sharded;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Weak,
    },
};

use parking_lot::{Mutex, RwLock};
use redis::{Client, Cmd, RedisResult, Value};
use tokio::sync::mpsc;

use super::{
    envelope, BoxFuture, Claimed, Cluster, ConnectError, Handler, Local, Presence, Settings,
    Tallies, Target, REPORT_EVERY, REPORT_STALE,
};
use crate::{
    message::Encoded, stats::bump, ClusterStats, Delivery, EngineStats, JoinError, NodeInfo,
    SendError,
};

mod config;
mod conn;
mod ids;
mod keys;
mod subscriber;
mod topology;
mod writer;

pub use config::RedisConfig;

use conn::Conn;

use ids::{claim, expiry, release};
use keys::Keys;
use scripts::Scripts;
use subscriber::{mark_run, subscriber, SubOp};
use topology::Topology;
use writer::{is_noscript, writer, Op, Tally};

/// Connects to Redis: fails fast when Redis cannot be reached at start.
/// The engine's tasks start with `Cluster::run`.
pub(super) async fn connect(
    settings: Settings,
    redis: RedisConfig,
) -> Result<Arc<dyn Cluster>, ConnectError> {
    let unreachable = |e: redis::RedisError| ConnectError::Unreachable(e.to_string());
    let topology = Topology::parse(&redis.url)?;
    if !crate::names::valid_name(&redis.node_id, 128)
        || !crate::names::valid_name(&redis.prefix, 128)
    {
        return Err(ConnectError::BadAddress(format!(
            "node id {:?} or prefix {:?}: 1-128 token characters (no braces or colons: they \
             are hash tags and separators in Redis keys)",
            redis.node_id, redis.prefix
        )));
    }
    let at = topology.locate(redis.command_timeout).await?;
    let (client, conn, pushes) = match &topology {
        Topology::Cluster(seeds) => {
            let (conn, pushes) = topology::open_cluster(seeds, redis.command_timeout).await?;
            (None, conn, Some(pushes))
        }
        _ => {
            let (client, conn) = topology::open(&at, redis.command_timeout).await?;
            (client, conn, None)
        }
    };
    let (ops, ops_rx) = mpsc::channel(redis.max_pending.max(1));
    let (subs, subs_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        keys: Keys::new(&redis.prefix),
        node_channel: Keys::new(&redis.prefix).node_channel(&redis.node_id),
        node: redis.node_id.clone(),
        link: RwLock::new(Link {
            at,
            client,
            conn: conn.clone(),
        }),
        topology,
        relink: tokio::sync::Notify::new(),
        moves: AtomicU64::new(0),
        scripts: Scripts::new(),
        ops,
        subs,
        up: AtomicBool::new(true),
        next_id: AtomicU64::new(1),
        config: redis.clone(),
        settings,
        handler: Mutex::new(None),
        run: Mutex::new(String::new()),
        stop: tokio::sync::watch::Sender::new(false),
        tallies: Mutex::new(HashMap::new()),
        asked: Mutex::new(HashMap::new()),
        stats: Tallies::default(),
    });
    shared.renew_lease().await.map_err(unreachable)?;
    *shared.run.lock() = mark_run(&shared).await.map_err(unreachable)?;
    shared.scripts.load(&mut conn.clone()).await;
    let tasks = Mutex::new(Some(Tasks {
        ops: ops_rx,
        subs: subs_rx,
        pushes,
    }));
    Ok(Arc::new(RedisCluster { shared, tasks }))
}

/// What the engine's tasks start with (taken by `run`).
struct Tasks {
    ops: mpsc::Receiver<Op>,
    subs: mpsc::UnboundedReceiver<SubOp>,
    /// A Redis Cluster's pushes (its sharded subscriptions' messages).
    pushes: Option<topology::Pushes>,
}

/// The instance in use, and the connections to it.
struct Link {
    /// Its URL.
    at: String,
    /// Opens the pub/sub connection (one instance; in a Redis Cluster the
    /// command connection carries the subscriptions).
    client: Option<Client>,
    /// The command connection (see [`Conn`]).
    conn: Conn,
}

/// State shared by the backend's handle and its tasks.
struct Shared {
    keys: Keys,
    node: String,
    /// `P:n:<node>`, made once: matched against every message received.
    node_channel: String,
    /// Where Redis is (one instance, or through Sentinel).
    topology: Topology,
    /// The instance in use and the connections to it; replaced when
    /// Sentinel names another master (`relocate`). A lock held only to
    /// clone or swap them, never across an await.
    link: RwLock<Link>,
    /// Tells the subscriber to make its link again (and ask Sentinel where
    /// the master is): a command failed, or the sentinels announced a new
    /// master.
    relink: tokio::sync::Notify,
    /// Times this node moved to another master.
    moves: AtomicU64,
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
    /// The pool's settings the engine needs.
    settings: Settings,
    /// The pool's side of the seam, to deliver what arrives; weak, so the
    /// tasks end with the pool. Set once by `run`.
    handler: Mutex<Option<Weak<dyn Handler>>>,
    /// Set when the pool is dropped: the backend's tasks end.
    stop: tokio::sync::watch::Sender<bool>,
    /// The run marker seen in Redis (see `check_run`).
    run: Mutex<String>,
    /// Counted broadcasts waiting for answers, by envelope number. A
    /// parking_lot mutex: held to update a few fields, never across await.
    tallies: Mutex<HashMap<u64, Tally>>,
    /// Join and leave requests to other nodes waiting for their answer,
    /// by request number; as `tallies`.
    asked: Mutex<HashMap<u64, Asked>>,
    stats: Tallies,
}

/// A join or leave request's answer, when it comes.
type Asked = tokio::sync::oneshot::Sender<Option<Result<bool, JoinError>>>;

/// The [`Cluster`] the pool holds.
struct RedisCluster {
    shared: Arc<Shared>,
    /// Until `run`.
    tasks: Mutex<Option<Tasks>>,
}

/// The pool is gone: its tasks stop, and the node leaves the cluster (its
/// lease and presence are deleted, best effort), so other nodes buffer for
/// its clients instead of publishing to nobody.
impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.shared.stop.send_replace(true);
        let s = &self.shared;
        let mut conn = s.conn();
        let mut del = redis::cmd("DEL");
        del.arg(s.keys.lease(&s.node)).arg(s.keys.presence(&s.node));
        let mut srem = redis::cmd("SREM");
        srem.arg(s.keys.nodes()).arg(&s.node);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = conn.many(vec![del, srem]).await;
            });
        }
    }
}

/// Resolves once the pool is gone.
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

impl Shared {
    /// The command connection to the instance in use.
    fn conn(&self) -> Conn {
        self.link.read().conn.clone()
    }

    /// A client for the instance in use (its pub/sub connection); none in
    /// a Redis Cluster.
    fn client(&self) -> Option<Client> {
        self.link.read().client.clone()
    }

    /// Runs independent commands (see [`Conn::many`]); scripts Redis does
    /// not know (`NOSCRIPT`: it restarted, or a replica took over) are
    /// loaded and those commands run again (one that failed so did
    /// nothing).
    async fn many(&self, cmds: Vec<Cmd>) -> RedisResult<Vec<RedisResult<Value>>> {
        let mut conn = self.conn();
        let mut results = conn.many(cmds.clone()).await?;
        let again: Vec<usize> = (0..results.len())
            .filter(|i| is_noscript(&results[*i]))
            .collect();
        if !again.is_empty() {
            self.scripts.load(&mut conn).await;
            let retry = again.iter().map(|i| cmds[*i].clone()).collect();
            for (i, r) in again.into_iter().zip(conn.many(retry).await?) {
                results[i] = r;
            }
        }
        Ok(results)
    }

    /// Asks where Redis is now (Sentinel: the master may have changed) and
    /// moves to it if it moved; returns whether it did. Called before the
    /// pub/sub link is made again, so a failover is followed by the same
    /// recovery as any broken link (resubscribe, reclaim ids, recover
    /// buffers and histories, detect lost data).
    async fn relocate(&self) -> Result<bool, ConnectError> {
        let timeout = self.config.command_timeout;
        let at = self.topology.locate(timeout).await?;
        if at == self.link.read().at {
            return Ok(false);
        }
        let (client, conn) = topology::open(&at, timeout).await?;
        self.scripts.load(&mut conn.clone()).await;
        tracing::warn!(%at, "redis master moved: following it");
        *self.link.write() = Link { at, client, conn };
        bump(&self.moves, 1);
        Ok(true)
    }

    /// After a failed command: through Sentinel, have the subscriber make
    /// its link again, asking where the master is (one instance: the link
    /// is probed as usual).
    fn relink_if_moved(&self) {
        if matches!(self.topology, Topology::Sentinel { .. }) {
            self.relink.notify_one();
        }
    }

    /// The pool's side of the seam, while the pool lives.
    fn handler(&self) -> Option<Arc<dyn Handler>> {
        self.handler.lock().as_ref()?.upgrade()
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn unavailable(&self) -> SendError {
        SendError::Unavailable(format!("redis at {} unreachable", self.config.url))
    }

    /// The pub/sub channels a broadcast to `channels` (everyone: `None`)
    /// is published to.
    fn pubsub_channels(&self, channels: Option<&[String]>) -> Vec<String> {
        match channels {
            Some(list) => list.iter().map(|c| self.keys.channel(c)).collect(),
            None => vec![self.keys.all()],
        }
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

    /// The other nodes that registered (live or not: each has its lease
    /// checked by the caller).
    async fn other_nodes(&self, conn: &mut Conn) -> redis::RedisResult<Vec<String>> {
        let mut nodes: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys.nodes())
            .query_async(conn)
            .await?;
        nodes.retain(|n| *n != self.node);
        Ok(nodes)
    }

    /// Renews this node's lease; its value is this node's report
    /// ([`Handler::report`], read by [`Cluster::nodes`]).
    async fn renew_lease(&self) -> redis::RedisResult<()> {
        let report = Report {
            lease_ms: self.config.lease.as_millis() as u64,
            info: self.handler().map(|h| h.report()),
        };
        let mut set = redis::cmd("SET");
        set.arg(self.keys.lease(&self.node))
            .arg(serde_json::to_string(&report).unwrap_or_default())
            .arg("PX")
            .arg(self.config.lease.as_millis() as u64);
        let mut sadd = redis::cmd("SADD");
        sadd.arg(self.keys.nodes()).arg(&self.node);
        for r in self.many(vec![set, sadd]).await? {
            r?;
        }
        Ok(())
    }
}

/// A node's lease's value: its report, and how long its lease lives (so
/// another node can tell the report's age from the lease's time to live).
#[derive(serde::Serialize, serde::Deserialize)]
struct Report {
    lease_ms: u64,
    info: Option<NodeInfo>,
}

impl Cluster for RedisCluster {
    fn node_id(&self) -> &str {
        &self.shared.node
    }

    fn run(&self, handler: Weak<dyn Handler>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(tasks) = self.tasks.lock().take() else {
                return;
            };
            let shared = self.shared.clone();
            *shared.handler.lock() = Some(handler);
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            tokio::spawn(writer(shared.clone(), tasks.ops));
            match tasks.pushes {
                Some(pushes) => {
                    let link = sharded::subscriber(shared.clone(), tasks.subs, pushes, ready_tx);
                    tokio::spawn(link);
                }
                None => {
                    tokio::spawn(subscriber(shared.clone(), tasks.subs, ready_tx));
                }
            }
            tokio::spawn(heartbeat(Arc::downgrade(&shared)));
            tokio::spawn(expiry(Arc::downgrade(&shared)));
            if let Topology::Sentinel { sentinels, master } = &shared.topology {
                let weak = Arc::downgrade(&shared);
                let moved = move || {
                    if let Some(s) = weak.upgrade() {
                        s.relink.notify_one();
                    }
                };
                let (sentinels, master) = (sentinels.clone(), master.clone());
                let stop = shared.stop.subscribe();
                tokio::spawn(topology::watch_switches(sentinels, master, stop, moved));
            }
            // The node's own channels are subscribed before the pool is
            // handed out.
            let _ = ready_rx.await;
        })
    }

    fn stats(&self) -> ClusterStats {
        let s = &self.shared;
        let pending = (s.config.max_pending.max(1) - s.ops.capacity()) as u64;
        let waiting = (s.tallies.lock().len() + s.asked.lock().len()) as u64;
        let moves = s.moves.load(Ordering::Relaxed);
        let counts = [("pending", pending), ("waiting", waiting), ("moves", moves)];
        let engine = EngineStats::new("redis", counts);
        s.stats
            .snapshot(&s.node, s.up.load(Ordering::Acquire), engine)
    }

    fn presence(&self) -> BoxFuture<'_, Result<Vec<Presence>, SendError>> {
        Box::pin(async move {
            let s = &self.shared;
            let mut conn = s.conn();
            let unavailable = |e: redis::RedisError| SendError::Unavailable(e.to_string());
            let mut out = Vec::new();
            for node in s.other_nodes(&mut conn).await.map_err(unavailable)? {
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
                    let mut srem = redis::cmd("SREM");
                    srem.arg(s.keys.nodes()).arg(&node);
                    let mut del = redis::cmd("DEL");
                    del.arg(s.keys.presence(&node));
                    let _ = s.many(vec![srem, del]).await;
                    continue;
                }
                out.extend(records.iter().filter_map(|r| serde_json::from_str(r).ok()));
            }
            Ok(out)
        })
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, SendError>> {
        Box::pin(async move {
            let s = &self.shared;
            let mut conn = s.conn();
            let unavailable = |e: redis::RedisError| SendError::Unavailable(e.to_string());
            let mut out = Vec::new();
            for node in s.other_nodes(&mut conn).await.map_err(unavailable)? {
                let (value, ttl_ms): (Option<String>, i64) = redis::pipe()
                    .cmd("GET")
                    .arg(s.keys.lease(&node))
                    .cmd("PTTL")
                    .arg(s.keys.lease(&node))
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                // No lease: gone (`presence` tidies up after it).
                let Some(value) = value.filter(|_| ttl_ms >= 0) else {
                    continue;
                };
                let report: Option<Report> = serde_json::from_str(&value).ok();
                let age_ms = report
                    .as_ref()
                    .map_or(0, |r| r.lease_ms.saturating_sub(ttl_ms as u64));
                let mut info =
                    (report.and_then(|r| r.info)).unwrap_or_else(|| NodeInfo::unreported(&node));
                info.node = Some(node);
                info.this = false;
                info.age_ms = age_ms;
                info.up &= std::time::Duration::from_millis(age_ms) <= REPORT_STALE;
                out.push(info);
            }
            Ok(out)
        })
    }

    fn send(&self, encoded: &Arc<Encoded>, to: &str) -> Result<Delivery, SendError> {
        let s = &self.shared;
        let env = envelope(encoded, &s.node, s.next_id(), Target::Id(to), false);
        s.enqueue(Op::Send {
            to: to.to_owned(),
            env,
            encoded: encoded.clone(),
        })?;
        bump(&s.stats.forwarded, 1);
        Ok(Delivery::Forwarded)
    }

    fn broadcast(
        &self,
        encoded: &Arc<Encoded>,
        channels: Option<&[String]>,
    ) -> Result<(), SendError> {
        let s = &self.shared;
        let env = envelope(encoded, &s.node, s.next_id(), channels.into(), false);
        s.enqueue(Op::Publish {
            channels: s.pubsub_channels(channels),
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
            let pubsub = s.pubsub_channels(channels);
            let env = envelope(encoded, &s.node, id, channels.into(), true);
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
            let mut conn = s.conn();
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
            let unavailable = |e: redis::RedisError| SendError::Unavailable(e.to_string());
            let mut conn = s.conn();
            let (node, epoch, state): (Option<String>, Option<String>, Option<String>) =
                redis::cmd("HMGET")
                    .arg(s.keys.owner(id))
                    .arg("node")
                    .arg("epoch")
                    .arg("state")
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
            let Some(node) = node else {
                return Ok(false);
            };
            // Connected: its node is told (`X0:<id>`), if it listens.
            // Away, or its node gone: the id is forgotten.
            let mut held = (String::new(), String::new());
            if state.as_deref() == Some("on") {
                let told: i64 = redis::cmd(s.publish_command())
                    .arg(s.keys.node_channel(&node))
                    .arg(format!("X0:{id}"))
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                if told > 0 {
                    return Ok(true);
                }
                held = (node, epoch.unwrap_or_default());
            }
            let _: i64 = s
                .scripts
                .forget
                .key(s.keys.owner(id))
                .key(s.keys.buffer(id))
                .arg(held.0)
                .arg(held.1)
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            Ok(true)
        })
    }

    fn channel_changed(&self, channel: &str, present: bool) {
        let _ = self.shared.subs.send(if present {
            SubOp::Subscribe(channel.to_owned())
        } else {
            SubOp::Unsubscribe(channel.to_owned())
        });
    }

    fn membership<'a>(
        &'a self,
        id: &'a str,
        channel: &'a str,
        join: bool,
    ) -> BoxFuture<'a, Result<Option<Result<bool, JoinError>>, SendError>> {
        Box::pin(ids::membership(&self.shared, id, channel, join))
    }

    fn claim<'a>(
        &'a self,
        client: &'a Local,
        refuse: bool,
    ) -> BoxFuture<'a, Result<Claimed, SendError>> {
        Box::pin(async move {
            let s = &self.shared;
            // Not while this node's link is down (in a Redis Cluster the
            // id's shard may be up while another is not): what the client
            // took from its buffer now could reach it again from a
            // channel's history when the link is back. It is served here
            // unclaimed, and claimed by the recovery, before the histories
            // are read.
            if !s.up.load(Ordering::Acquire) {
                bump(&s.stats.unavailable, 1);
                return Err(s.unavailable());
            }
            // This node subscribes to the client's channels first, so a
            // broadcast made once it is registered reaches it.
            let (done, subscribed) = tokio::sync::oneshot::channel();
            if s.subs.send(SubOp::Barrier(done)).is_ok() {
                let _ = tokio::time::timeout(s.config.command_timeout, subscribed).await;
            }
            let claimed = claim(s, client, refuse).await;
            if matches!(claimed, Err(SendError::Unavailable(_))) {
                // Redis (or the id's shard) cannot be reached now: the
                // client is served here unclaimed (see `Cluster::claim`),
                // and the claim is tried again until it holds.
                let (shared, client) = (self.shared.clone(), client.clone());
                tokio::spawn(async move { ids::reclaim(&shared, client).await });
            }
            claimed
        })
    }

    fn release(&self, client: Local, away: bool, left: Vec<Arc<Encoded>>) {
        let shared = self.shared.clone();
        tokio::spawn(async move { release(&shared, &client, away, left).await });
    }

    fn channels_changed(&self, client: &Local) {
        let s = &self.shared;
        let cmd = s.present_cmd(client);
        let mut conn = s.conn();
        tokio::spawn(async move {
            if let Err(e) = cmd.query_async::<()>(&mut conn).await {
                tracing::debug!(error = %e, "presence update failed");
            }
        });
    }
}

/// Renews this node's lease (and so its report) every third of it, or
/// every [`REPORT_EVERY`] if sooner.
async fn heartbeat(shared: Weak<Shared>) {
    loop {
        let period = match shared.upgrade() {
            Some(s) if s.handler().is_some() => {
                if let Err(e) = s.renew_lease().await {
                    tracing::debug!(error = %e, "lease renewal failed");
                }
                (s.config.lease / 3).min(REPORT_EVERY)
            }
            _ => return,
        };
        tokio::time::sleep(period).await;
    }
}
