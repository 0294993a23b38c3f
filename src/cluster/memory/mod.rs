//! The in-process engine: several pools in one process behave as one
//! cluster, with no service to run (the pattern of centrifuge's memory
//! broker and socketioxide's stub driver).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), wspool::cluster::ConnectError> {
//! use wspool::{cluster::memory::Network, WsPool};
//!
//! let network = Network::new();
//! let a = WsPool::builder().engine(network.engine()).connect().await?;
//! let b = WsPool::builder().engine(network.engine()).connect().await?;
//! // A client connected to `a` is reached through `b` by id, by channel,
//! // or with everyone; one id has one connection across both.
//! # drop((a, b)); Ok(()) }
//! ```
//!
//! It keeps the cluster's promises as the Redis engine does (routing to the
//! owner, one id cluster-wide with fencing, offline buffers that outlive
//! the node a client left, presence, kick, join and leave anywhere, counted
//! broadcasts), so the same conformance suite runs over both. What it has
//! no counterpart for: a link that breaks (acted out with [`Network::cut`]),
//! and data that outlives the process. Offline buffers in the network are
//! bounded per id (`offline_max_messages`, `offline_max_bytes`), not in
//! total: `offline_max_clients` and `offline_max_total_bytes` hold per
//! pool only, as over Redis (CLUSTER.md).
//!
//! Delivery to another pool is a direct call into that pool's handler, with
//! the message carried as the other engines carry it: encoded once into an
//! envelope, decoded by each pool that receives it (its deadline on the
//! receiver's clock, its bytes as they were). The network's state sits
//! under one `parking_lot` mutex that is never held while a pool is
//! called.
//!
//! Its [`EngineStats`] counters: `nodes` (pools on the
//! network now) and `away` (ids buffered in the network now).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Weak,
    },
    time::Duration,
};

use bytes::Bytes;
use parking_lot::Mutex;
use prost::Message as _;
use tokio::time::Instant;

use super::{
    arrived, envelope, Arrival, BoxFuture, Claimed, Cluster, ConnectError, Engine, Handler, Link,
    Local, Presence, Reach, Settings, Start, Tallies, Target,
};
use crate::{
    event::UndeliveredReason, message::Encoded, proto::cluster::Envelope, stats::bump, ClientId,
    ClusterStats, Delivery, EngineStats, JoinError, NodeInfo, SendError,
};

/// A set of pools in one process that behave as one cluster. Cheap to
/// clone: every clone is the same network. See the [module docs](self).
#[derive(Clone, Default)]
pub struct Network {
    net: Arc<Net>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes = self.net.state.lock().nodes.len();
        f.debug_struct("Network").field("nodes", &nodes).finish()
    }
}

impl Network {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// An engine that joins a pool to this network, for
    /// [`WsPoolBuilder::engine`](crate::WsPoolBuilder::engine).
    pub fn engine(&self) -> Engine {
        Engine::new(self.clone())
    }
}

impl Network {
    /// Cuts the link of the pool whose node id is `node` (its
    /// [`ClusterStats::node`](crate::ClusterStats::node)), as a broken
    /// link to Redis would: it reports
    /// [`PoolEvent::ClusterDown`](crate::PoolEvent::ClusterDown), its own
    /// sends and broadcasts to other pools fail with `Unavailable`, and
    /// what the others send it is kept (direct messages by id, up to 1,000
    /// broadcasts within `message_ttl`) until [`heal`](Self::heal).
    /// Returns whether there is such a pool.
    pub fn cut(&self, node: &str) -> bool {
        let handler = {
            let mut state = self.net.state.lock();
            let Some(member) = state.nodes.values_mut().find(|m| m.name == node) else {
                return false;
            };
            if member.cut.is_none() {
                member.cut = Some(Cut::default());
                bump(&member.counters.outages, 1);
            }
            member.handler.as_ref().and_then(Weak::upgrade)
        };
        if let Some(handler) = handler {
            handler.link(Link::Down);
        }
        true
    }

    /// Heals the link of pool `node`, as a reconnect to Redis does: its
    /// ids are checked (those claimed elsewhere meanwhile are closed with
    /// 4001; those it served unclaimed are claimed), what was kept for it
    /// is delivered in the order it was sent, what did not fit is reported
    /// as
    /// [`PoolEvent::ClusterGap`](crate::PoolEvent::ClusterGap) (channel
    /// `*`), and then [`PoolEvent::ClusterUp`](crate::PoolEvent::ClusterUp).
    /// Returns whether the pool's link was cut.
    pub fn heal(&self, node: &str) -> bool {
        let (id, cut, handler) = {
            let mut state = self.net.state.lock();
            let Some((id, member)) = state.nodes.iter_mut().find(|(_, m)| m.name == node) else {
                return false;
            };
            let Some(cut) = member.cut.take() else {
                return false;
            };
            (*id, cut, member.handler.as_ref().and_then(Weak::upgrade))
        };
        if let Some(handler) = handler {
            self.net.resync(id, cut, &*handler);
        }
        true
    }

    /// How many messages the network holds for `id` while its client is
    /// away; `None` when it is not away (connected, or unknown).
    pub fn held(&self, id: &str) -> Option<usize> {
        let state = self.net.state.lock();
        let away = state.owners.get(id)?.away.as_ref()?;
        Some(away.buffer.len())
    }

    /// Forgets everything the network holds (owners of ids, offline
    /// buffers), as a Redis restarted without persistence does: every pool
    /// reports [`PoolEvent::ClusterDataLost`](crate::PoolEvent::ClusterDataLost),
    /// claims its ids again, then reports `ClusterUp`.
    pub fn lose_data(&self) {
        let pools: Vec<(u64, Arc<dyn Handler>)> = {
            let mut state = self.net.state.lock();
            state.owners.clear();
            (state.nodes.iter())
                .filter_map(|(id, m)| Some((*id, m.handler.as_ref()?.upgrade()?)))
                .collect()
        };
        for (node, handler) in pools {
            handler.link(Link::DataLost);
            self.net.resync(node, Cut::default(), &*handler);
        }
    }
}

impl Net {
    /// Pool `node`'s link is back: checks its ids, delivers what was kept.
    fn resync(&self, node: u64, cut: Cut, handler: &dyn Handler) {
        // Channel changes made while cut did not reach the network (as
        // subscriptions made while Redis is away): taken afresh.
        let channels = handler.channels().into_iter().collect();
        if let Some(member) = self.state.lock().nodes.get_mut(&node) {
            member.channels = channels;
        }
        let mut closed = 0;
        let locals = handler.locals();
        for client in &locals {
            let id = client.id.as_str();
            let then = {
                let mut state = self.state.lock();
                match state.owners.get_mut(id) {
                    Some(o) if o.node == node && o.epoch == client.epoch && o.away.is_none() => {
                        Resync::Held
                    }
                    Some(o) if o.node != node && o.away.is_none() => Resync::Lost,
                    _ => {
                        state.epoch += 1;
                        let epoch = state.epoch;
                        let owner = Owner {
                            node,
                            epoch,
                            away: None,
                        };
                        let before = state.owners.insert(id.to_owned(), owner);
                        let held = before.and_then(|o| o.away).map(|a| a.buffer.into());
                        Resync::Claimed(epoch, held.unwrap_or_default())
                    }
                }
            };
            match then {
                Resync::Held => {}
                Resync::Lost => {
                    handler.replaced(id, u64::MAX);
                    closed += 1;
                }
                Resync::Claimed(epoch, held) => handler.reclaimed(client, Some(epoch), held),
            }
        }
        {
            // Ids it held whose connections ended while cut: forgotten.
            let mut state = self.state.lock();
            let here: HashSet<&str> = locals.iter().map(|l| l.id.as_str()).collect();
            state
                .owners
                .retain(|id, o| o.node != node || o.away.is_some() || here.contains(id.as_str()));
        }
        let mut recovered = 0;
        for (_, bytes, kept) in cut.backlog {
            let Some(msg) = carried(&bytes) else { continue };
            let reach = match &kept {
                Kept::Id(id) => Reach::Id { id, epoch: 0 },
                Kept::Broadcast(Some(these)) => Reach::Channels { these, skip: &[] },
                Kept::Broadcast(None) => Reach::All,
            };
            recovered += 1;
            handler.deliver(Arrival {
                msg,
                reach,
                clients: true,
            });
        }
        if let Some(member) = self.state.lock().nodes.get(&node) {
            bump(&member.counters.recovered, recovered);
            if cut.missed > 0 {
                member.counters.gap(cut.missed);
            }
        }
        if cut.missed > 0 {
            let (channel, missed) = ("*".to_owned(), cut.missed);
            handler.link(Link::Gap { channel, missed });
        }
        handler.link(Link::Up { closed });
    }
}

/// What a healed pool does with one of its clients.
enum Resync {
    /// Still its own.
    Held,
    /// Claimed elsewhere meanwhile: closed.
    Lost,
    /// Claimed now (it was served unclaimed), with what was held for it.
    Claimed(u64, Vec<Arc<Encoded>>),
}

impl From<&Network> for Engine {
    fn from(network: &Network) -> Self {
        network.engine()
    }
}

#[derive(Default)]
struct Net {
    /// Everything the pools share. A mutex: held to look up and update a
    /// few maps, never across a call into a pool or an `.await`.
    state: Mutex<State>,
    /// Numbers the pools that join.
    next_node: AtomicU64,
}

#[derive(Default)]
struct State {
    nodes: HashMap<u64, Member>,
    /// Who holds each id, connected or away.
    owners: HashMap<String, Owner>,
    /// The last claim number given: grows with every claim of any id.
    epoch: u64,
}

/// One pool on the network.
struct Member {
    name: String,
    handler: Option<Weak<dyn Handler>>,
    /// The channels it has members in.
    channels: HashSet<String>,
    /// What it tells the others of its clients.
    presence: HashMap<String, Presence>,
    counters: Arc<Tallies>,
    /// `Some` while its link is cut ([`Network::cut`]).
    cut: Option<Cut>,
}

/// What a pool whose link is cut misses, kept for when it is healed (as
/// Redis keeps buffers and channel histories for a node whose link broke).
#[derive(Default)]
struct Cut {
    /// What was sent to it, in order, with when: at most [`BACKLOG`], for
    /// at most the pool's `message_ttl`.
    backlog: VecDeque<(Instant, Bytes, Kept)>,
    /// What did not fit the backlog.
    missed: u64,
}

/// Who a kept message is for.
enum Kept {
    /// A client, by id.
    Id(String),
    /// The members of these channels (everyone: `None`).
    Broadcast(Option<Vec<String>>),
}

/// Most messages kept for a pool whose link is cut (Redis's history
/// length, by default).
const BACKLOG: usize = 1_000;

struct Owner {
    node: u64,
    epoch: u64,
    /// `Some` while the client is away.
    away: Option<Away>,
}

/// An id whose client left: kept, with what is sent to it, for
/// `offline_ttl`.
struct Away {
    until: Instant,
    channels: Vec<String>,
    buffer: VecDeque<Arc<Encoded>>,
    bytes: usize,
    max_messages: usize,
    max_bytes: usize,
}

impl Away {
    /// Buffers `msg`; `false` when the buffer is full.
    fn push(&mut self, msg: &Arc<Encoded>) -> bool {
        let size = msg.binary().len();
        if self.buffer.len() >= self.max_messages || self.bytes + size > self.max_bytes {
            return false;
        }
        self.bytes += size;
        self.buffer.push_back(msg.clone());
        true
    }
}

impl Start for Network {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn start(
        &self,
        settings: Settings,
    ) -> BoxFuture<'static, Result<Arc<dyn Cluster>, ConnectError>> {
        let net = self.net.clone();
        Box::pin(async move {
            let node = net.next_node.fetch_add(1, Relaxed) + 1;
            let name = format!("memory-{node}");
            let counters = Arc::new(Tallies::default());
            let member = Member {
                name: name.clone(),
                handler: None,
                channels: HashSet::new(),
                presence: HashMap::new(),
                counters: counters.clone(),
                cut: None,
            };
            net.state.lock().nodes.insert(node, member);
            let cluster = MemoryCluster {
                net,
                node,
                name,
                settings,
                counters,
                next_id: AtomicU64::new(1),
            };
            Ok(Arc::new(cluster) as Arc<dyn Cluster>)
        })
    }
}

/// One pool's side of the network.
struct MemoryCluster {
    net: Arc<Net>,
    node: u64,
    name: String,
    settings: Settings,
    counters: Arc<Tallies>,
    /// Numbers the envelopes this pool sends.
    next_id: AtomicU64,
}

/// The message in `bytes`, as the pool that receives it decodes it.
fn carried(bytes: &Bytes) -> Option<Arc<Encoded>> {
    let mut env = Envelope::decode(bytes.clone()).ok()?;
    arrived(&mut env)
}

/// The pool is gone: it leaves the network. Its connected ids are
/// forgotten (as a dead node's are once its lease ends); those away stay
/// buffered.
impl Drop for MemoryCluster {
    fn drop(&mut self) {
        let mut state = self.net.state.lock();
        state.nodes.remove(&self.node);
        let node = self.node;
        state
            .owners
            .retain(|_, o| o.node != node || o.away.is_some());
    }
}

impl MemoryCluster {
    /// The handler of pool `node`, if it is alive.
    fn handler_of(state: &State, node: u64) -> Option<Arc<dyn Handler>> {
        state.nodes.get(&node)?.handler.as_ref()?.upgrade()
    }

    /// This pool's own handler.
    fn own(&self) -> Option<Arc<dyn Handler>> {
        Self::handler_of(&self.net.state.lock(), self.node)
    }

    fn received(state: &State, node: u64) {
        if let Some(m) = state.nodes.get(&node) {
            bump(&m.counters.received, 1);
        }
    }

    /// Where a direct message to `to` goes.
    fn route(&self, msg: &Arc<Encoded>, to: &str) -> Route {
        let mut state = self.net.state.lock();
        let Some(owner) = state.owners.get_mut(to) else {
            return Route::Nowhere;
        };
        if let Some(away) = owner.away.as_mut() {
            return match away.push(msg) {
                true => Route::Buffered,
                false => Route::Full,
            };
        }
        let (node, epoch) = (owner.node, owner.epoch);
        if node == self.node {
            // This pool holds the claim but no longer the connection (it is
            // on its way out): nobody to deliver to.
            return Route::Nowhere;
        }
        if let Some(cut) = state.nodes.get_mut(&node).and_then(|m| m.cut.as_mut()) {
            let bytes = self.envelope(msg, Target::Id(to));
            cut.keep(
                Instant::now(),
                self.settings.message_ttl,
                bytes,
                Kept::Id(to.to_owned()),
            );
            return Route::Buffered;
        }
        Self::received(&state, node);
        match Self::handler_of(&state, node) {
            Some(handler) => Route::To(handler, epoch),
            None => Route::Nowhere,
        }
    }

    /// The other pools a broadcast to `channels` (everyone: `None`) goes
    /// to; away members buffer it. Returns the pools, and how many away
    /// members buffered it and which were full.
    fn fan_out(
        &self,
        msg: &Arc<Encoded>,
        channels: Option<&[String]>,
        bytes: &dyn Fn() -> Bytes,
    ) -> (Vec<Arc<dyn Handler>>, usize, Vec<String>) {
        let mut state = self.net.state.lock();
        let (mut buffered, mut full) = (0, Vec::new());
        if let Some(list) = channels {
            for (id, owner) in state.owners.iter_mut() {
                let Some(away) = owner.away.as_mut() else {
                    continue;
                };
                if away.channels.iter().any(|c| list.contains(c)) {
                    match away.push(msg) {
                        true => buffered += 1,
                        false => full.push(id.clone()),
                    }
                }
            }
        }
        let mut to = Vec::new();
        let now = Instant::now();
        for (node, member) in state.nodes.iter_mut() {
            let wanted = match channels {
                None => true,
                Some(list) => list.iter().any(|c| member.channels.contains(c)),
            };
            if *node == self.node || !wanted {
                continue;
            }
            if let Some(cut) = member.cut.as_mut() {
                let kept = Kept::Broadcast(channels.map(<[String]>::to_vec));
                cut.keep(now, self.settings.message_ttl, bytes(), kept);
                continue;
            }
            if let Some(handler) = member.handler.as_ref().and_then(Weak::upgrade) {
                bump(&member.counters.received, 1);
                to.push(handler);
            }
        }
        (to, buffered, full)
    }

    /// Broadcasts and counts the clients reached on the other pools.
    ///
    /// # Errors
    /// [`SendError::Unavailable`] while this pool's link is cut.
    fn publish(&self, msg: &Arc<Encoded>, channels: Option<&[String]>) -> Result<usize, SendError> {
        self.link_up()?;
        bump(&self.counters.published, 1);
        // Encoded once, and only when some pool gets it.
        let encoded = std::cell::OnceCell::new();
        let bytes = || {
            encoded
                .get_or_init(|| self.envelope(msg, channels.into()))
                .clone()
        };
        let (to, buffered, full) = self.fan_out(msg, channels, &bytes);
        let reach = match channels {
            Some(these) => Reach::Channels { these, skip: &[] },
            None => Reach::All,
        };
        let mut reached = buffered;
        for handler in to {
            let Some(msg) = carried(&bytes()) else { break };
            reached += handler.deliver(Arrival {
                msg,
                reach,
                clients: true,
            });
        }
        if let (false, Some(own)) = (full.is_empty(), self.own()) {
            for id in full {
                let why = SendError::QueueFull(ClientId::from(id.as_str()));
                own.undeliverable(msg, &id, why);
            }
        }
        Ok(reached)
    }

    /// `Err(Unavailable)` while this pool's link is cut.
    fn link_up(&self) -> Result<(), SendError> {
        let state = self.net.state.lock();
        match state.nodes.get(&self.node).is_some_and(|m| m.cut.is_some()) {
            false => Ok(()),
            true => {
                bump(&self.counters.unavailable, 1);
                Err(SendError::Unavailable(format!(
                    "the link of {} is cut",
                    self.name
                )))
            }
        }
    }
}

impl Cut {
    /// Keeps a broadcast for when the link is healed; drops what is older
    /// than `ttl` (it would expire) and, beyond [`BACKLOG`], the oldest
    /// (counted as missed).
    fn keep(&mut self, now: Instant, ttl: Duration, bytes: Bytes, kept: Kept) {
        while (self.backlog.front()).is_some_and(|(at, ..)| now.duration_since(*at) > ttl) {
            self.backlog.pop_front();
        }
        if self.backlog.len() == BACKLOG {
            self.backlog.pop_front();
            self.missed += 1;
        }
        self.backlog.push_back((now, bytes, kept));
    }
}

impl MemoryCluster {
    /// `msg` encoded for the other pools, once per send.
    fn envelope(&self, msg: &Encoded, target: Target<'_>) -> Bytes {
        envelope(
            msg,
            &self.name,
            self.next_id.fetch_add(1, Relaxed),
            target,
            false,
        )
    }
}

/// Where a direct message goes.
enum Route {
    To(Arc<dyn Handler>, u64),
    Buffered,
    Full,
    Nowhere,
}

/// What a released id became.
enum Released {
    /// Another claim holds the id: what was queued goes to its owner.
    Forward(Vec<Arc<Encoded>>),
    /// Kept while the client is away; `over` did not fit its buffer.
    Kept { over: Vec<Arc<Encoded>> },
    /// Forgotten, with what was still queued.
    Gone(Vec<Arc<Encoded>>),
}

/// Reports, while the pool lives, what the offline windows that closed
/// held: those pool `node` released, or whose pool is gone (so exactly one
/// pool reports each).
async fn expiry(net: Weak<Net>, node: u64, handler: Weak<dyn Handler>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let (Some(net), Some(handler)) = (net.upgrade(), handler.upgrade()) else {
            return;
        };
        let now = Instant::now();
        let mut gone = Vec::new();
        {
            let mut state = net.state.lock();
            if !state.nodes.contains_key(&node) {
                return;
            }
            let ids: Vec<String> = (state.owners.iter())
                .filter(|(_, o)| o.away.as_ref().is_some_and(|a| a.until <= now))
                .filter(|(_, o)| o.node == node || !state.nodes.contains_key(&o.node))
                .map(|(id, _)| id.clone())
                .collect();
            for id in ids {
                if let Some(Owner {
                    away: Some(away), ..
                }) = state.owners.remove(&id)
                {
                    gone.push((ClientId::from(id.as_str()), away.buffer));
                }
            }
        }
        for (id, held) in gone {
            handler.undelivered(&id, held.into(), UndeliveredReason::OfflineTimeout);
        }
    }
}

impl Cluster for MemoryCluster {
    fn node_id(&self) -> &str {
        &self.name
    }

    fn run(&self, handler: Weak<dyn Handler>) -> BoxFuture<'_, ()> {
        if let Some(member) = self.net.state.lock().nodes.get_mut(&self.node) {
            member.handler = Some(handler.clone());
        }
        let ttl = self.settings.offline_ttl;
        if !ttl.is_zero() {
            let period = (ttl / 8).clamp(Duration::from_millis(10), Duration::from_secs(1));
            let net = Arc::downgrade(&self.net);
            tokio::spawn(expiry(net, self.node, handler, period));
        }
        Box::pin(async {})
    }

    fn stats(&self) -> ClusterStats {
        let state = self.net.state.lock();
        let away = state.owners.values().filter(|o| o.away.is_some()).count();
        let up = state.nodes.get(&self.node).is_some_and(|m| m.cut.is_none());
        let counts = [("nodes", state.nodes.len() as u64), ("away", away as u64)];
        (self.counters).snapshot(&self.name, up, EngineStats::new("memory", counts))
    }

    fn send(&self, msg: &Arc<Encoded>, to: &str) -> Result<Delivery, SendError> {
        self.link_up()?;
        bump(&self.counters.forwarded, 1);
        let why = match self.route(msg, to) {
            Route::To(handler, epoch) => {
                let reach = Reach::Id { id: to, epoch };
                if let Some(msg) = carried(&self.envelope(msg, Target::Id(to))) {
                    handler.deliver(Arrival {
                        msg,
                        reach,
                        clients: true,
                    });
                }
                return Ok(Delivery::Forwarded);
            }
            Route::Buffered => return Ok(Delivery::Forwarded),
            Route::Full => SendError::QueueFull(ClientId::from(to)),
            Route::Nowhere => SendError::NotConnected(ClientId::from(to)),
        };
        // As over Redis: accepted now, reported when found undeliverable.
        if let Some(own) = self.own() {
            own.undeliverable(msg, to, why);
        }
        Ok(Delivery::Forwarded)
    }

    fn broadcast(&self, msg: &Arc<Encoded>, channels: Option<&[String]>) -> Result<(), SendError> {
        self.publish(msg, channels).map(drop)
    }

    fn broadcast_counted<'a>(
        &'a self,
        msg: &'a Arc<Encoded>,
        channels: Option<&'a [String]>,
    ) -> BoxFuture<'a, Result<usize, SendError>> {
        Box::pin(async move { self.publish(msg, channels) })
    }

    fn connected_elsewhere<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, SendError>> {
        Box::pin(async move {
            self.link_up()?;
            let state = self.net.state.lock();
            Ok(state.owners.get(id).is_some_and(|o| {
                o.away.is_none() && o.node != self.node && state.nodes.contains_key(&o.node)
            }))
        })
    }

    fn disconnect<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, SendError>> {
        Box::pin(async move {
            self.link_up()?;
            let handler = {
                let mut state = self.net.state.lock();
                match state.owners.get(id) {
                    None => return Ok(false),
                    Some(o) if o.away.is_some() => {
                        state.owners.remove(id);
                        return Ok(true);
                    }
                    Some(o) => Self::handler_of(&state, o.node),
                }
            };
            Ok(handler.is_some_and(|h| h.disconnect(id)))
        })
    }

    fn membership<'a>(
        &'a self,
        id: &'a str,
        channel: &'a str,
        join: bool,
    ) -> BoxFuture<'a, Result<Option<Result<bool, JoinError>>, SendError>> {
        Box::pin(async move {
            self.link_up()?;
            let handler = {
                let state = self.net.state.lock();
                match state.owners.get(id) {
                    Some(o) if o.away.is_none() => Self::handler_of(&state, o.node),
                    _ => None,
                }
            };
            Ok(handler.and_then(|h| h.membership(id, channel, join)))
        })
    }

    fn channel_changed(&self, channel: &str, present: bool) {
        let mut state = self.net.state.lock();
        let member = state.nodes.get_mut(&self.node);
        if let Some(member) = member.filter(|m| m.cut.is_none()) {
            match present {
                true => member.channels.insert(channel.to_owned()),
                false => member.channels.remove(channel),
            };
        }
    }

    fn claim<'a>(
        &'a self,
        client: &'a Local,
        refuse: bool,
    ) -> BoxFuture<'a, Result<Claimed, SendError>> {
        Box::pin(async move {
            self.link_up()?;
            let (epoch, buffered, replaced) = {
                let mut state = self.net.state.lock();
                let state = &mut *state;
                let id = client.id.as_str();
                let held = state.owners.get(id).filter(|o| {
                    o.away.is_none() && o.node != self.node && state.nodes.contains_key(&o.node)
                });
                if refuse && held.is_some() {
                    return Err(SendError::NotConnected(client.id.clone()));
                }
                state.epoch += 1;
                let epoch = state.epoch;
                let owner = Owner {
                    node: self.node,
                    epoch,
                    away: None,
                };
                let previous = state.owners.insert(id.to_owned(), owner);
                let (buffered, replaced) = match previous {
                    Some(Owner {
                        away: Some(away), ..
                    }) => (away.buffer.into(), None),
                    Some(Owner { node, .. }) if node != self.node => {
                        (Vec::new(), Self::handler_of(state, node))
                    }
                    _ => (Vec::new(), None),
                };
                if let Some(member) = state.nodes.get_mut(&self.node) {
                    let record = Presence::of(client, &member.name);
                    member.presence.insert(id.to_owned(), record);
                }
                (epoch, buffered, replaced)
            };
            if let Some(previous) = replaced {
                previous.replaced(&client.id, epoch);
            }
            Ok(Claimed { epoch, buffered })
        })
    }

    fn release(&self, client: Local, away: bool, left: Vec<Arc<Encoded>>) {
        let id = client.id.as_str();
        if let Err(e) = self.link_up() {
            // As over Redis: the release fails; the id is forgotten when
            // the link is healed.
            if let Some(own) = self.own() {
                for msg in left {
                    own.undeliverable(&msg, id, e.clone());
                }
            }
            return;
        }
        let released = {
            let mut state = self.net.state.lock();
            if let Some(member) = state.nodes.get_mut(&self.node) {
                member.presence.remove(id);
            }
            let ours = (state.owners.get(id))
                .is_some_and(|o| o.node == self.node && o.epoch == client.epoch);
            if !ours {
                Released::Forward(left)
            } else if away && !self.settings.offline_ttl.is_zero() {
                let mut kept = Away {
                    until: Instant::now() + self.settings.offline_ttl,
                    channels: client.channels.clone(),
                    buffer: VecDeque::new(),
                    bytes: 0,
                    max_messages: self.settings.offline_max_messages,
                    max_bytes: self.settings.offline_max_bytes,
                };
                let over = left.into_iter().filter(|m| !kept.push(m)).collect();
                if let Some(owner) = state.owners.get_mut(id) {
                    owner.away = Some(kept);
                }
                Released::Kept { over }
            } else {
                state.owners.remove(id);
                Released::Gone(left)
            }
        };
        match released {
            // Another claim holds the id: what was queued goes to it.
            Released::Forward(left) => {
                for msg in left {
                    let _ = self.send(&msg, id);
                }
            }
            Released::Kept { over } => {
                if let Some(own) = self.own() {
                    own.undelivered(&client.id, over, UndeliveredReason::OfflineFull);
                }
            }
            Released::Gone(left) => {
                if let Some(own) = self.own() {
                    own.undelivered(&client.id, left, UndeliveredReason::Disconnected);
                }
            }
        }
    }

    fn channels_changed(&self, client: &Local) {
        let mut state = self.net.state.lock();
        if let Some(member) = state.nodes.get_mut(&self.node) {
            let record = Presence::of(client, &member.name);
            if let Some(slot) = member.presence.get_mut(client.id.as_str()) {
                *slot = record;
            }
        }
    }

    fn presence(&self) -> BoxFuture<'_, Result<Vec<Presence>, SendError>> {
        Box::pin(async move {
            self.link_up()?;
            let state = self.net.state.lock();
            Ok((state.nodes.iter())
                .filter(|(node, _)| **node != self.node)
                .flat_map(|(_, m)| m.presence.values().cloned())
                .collect())
        })
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, SendError>> {
        Box::pin(async move {
            self.link_up()?;
            // Asked outside the network's lock: a report reads its node's
            // stats, which take it.
            let others: Vec<_> = {
                let state = self.net.state.lock();
                (state.nodes.keys())
                    .filter(|node| **node != self.node)
                    .filter_map(|node| Self::handler_of(&state, *node))
                    .collect()
            };
            Ok(others
                .iter()
                .map(|h| NodeInfo {
                    this: false,
                    ..h.report()
                })
                .collect())
        })
    }
}
