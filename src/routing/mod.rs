//! Routing: reaching clients by id, by channel, or all at once, with
//! receipts and reports for what cannot be delivered.
//!
//! Every path asks the local node first and hands what it does not have to
//! the [cluster](crate::cluster), when there is one: an id that is not
//! here, the other nodes' members of a channel, everyone elsewhere. What
//! arrives from other nodes comes in through the seam's handler
//! (`inbound.rs`) and is routed locally by the same code.
//!
//! The crate-private `Hub` is what every public handle shares: the
//! settings, this node, the engine (if any), the event stream, and the
//! background tasks it owns (the sweeper, the metrics tick). Its parts, by
//! job:
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | the `Hub`: construction, events, stats, shutdown |
//! | `send.rs` | `send`, `broadcast`, `broadcast_all` and their counted, cluster-wide forms; kick, join and leave anywhere |
//! | `relay.rs` | what a client sends, relayed; receipts |
//! | `report.rs` | accounting for what is dropped or undelivered: counters, events, receipts |
//! | `clients.rs` | clients and channels: lookups, join and leave, presence |
//! | `inbound.rs` | the seam's handler: what an engine hands back |
//! | `tasks.rs` | the background tasks the hub owns |
//!
//! # Delivery guarantees
//!
//! - **Never silent.** A message handed to the pool is written to the
//!   client's socket, or refused at once with an error (`send`), or counted
//!   and reported: [`PoolEvent::Dropped`] (a full queue skipped by a
//!   broadcast) or [`PoolEvent::Undelivered`] (expired, offline window
//!   closed, offline buffer full, client disconnected by the server, pool
//!   shut down, no node has the id), with a receipt to the client it was
//!   relayed from.
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
//!   [`Delivery::Buffered`](crate::Delivery::Buffered), channel broadcasts reach it, relayed direct
//!   messages get no status-4 receipt. A reconnect with the same id within
//!   the window gets the buffered messages first, then live traffic.
//!   Bounded per id (`offline_max_messages`, `offline_max_bytes`), in total
//!   (`offline_max_total_bytes`) and in clients (`offline_max_clients`).
//! - **Time to live.** A message not written within `message_ttl` (or the
//!   per-call [`SendOptions::ttl`]) is not written.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Weak,
    },
    time::Duration,
};

use tokio::sync::{broadcast, watch};

use crate::{
    cluster::{Cluster, Handler},
    config::Config,
    event::{EventStream, UndeliveredReason},
    info::Rates,
    node::{CloseRequest, Node},
    stats::Counters,
    DisconnectReason, NodeInfo, PoolEvent, Stats,
};

mod clients;
mod inbound;
mod relay;
mod report;
mod send;
mod tasks;

pub(crate) use send::push_error;

/// What every handle on one pool shares. See the [module docs](self).
pub(crate) struct Hub {
    config: Config,
    /// The clients on this node, their mailboxes and the channel index.
    node: Node,
    /// The other nodes, when the pool is a cluster; `None` on one node.
    cluster: Option<Arc<dyn Cluster>>,
    /// Fan-out to every `EventStream`: a broadcast channel gives each
    /// consumer its own cursor and a `Lagged` count instead of blocking us.
    events: broadcast::Sender<PoolEvent>,
    /// How many connection tasks are running; `shutdown` waits for zero.
    live: watch::Sender<usize>,
    shutting_down: AtomicBool,
    /// Whether the background tasks were started (with the first
    /// connection).
    tasks_started: AtomicBool,
    /// Message rates, sampled when this node's report is made.
    rates: Rates,
    /// `wspool_queue_delay_seconds`, registered once with the recorder
    /// installed when the pool was built.
    #[cfg(feature = "metrics")]
    queue_delay: metrics::Histogram,
}

impl Hub {
    /// A hub over `config`, joined to the other nodes by `cluster` (whose
    /// tasks start with [`join_cluster`](Self::join_cluster)).
    pub(crate) fn new(config: Config, cluster: Option<Arc<dyn Cluster>>) -> Arc<Self> {
        let (events, _) = broadcast::channel(config.event_buffer());
        #[cfg(feature = "metrics")]
        crate::metrics::describe();
        let hub = Arc::new(Hub {
            node: Node::new(&config),
            cluster,
            config,
            events,
            live: watch::Sender::new(0),
            shutting_down: AtomicBool::new(false),
            tasks_started: AtomicBool::new(false),
            rates: Rates::default(),
            #[cfg(feature = "metrics")]
            queue_delay: crate::metrics::queue_delay(),
        });
        if let Some(cluster) = hub.cluster.clone() {
            let watcher = move |channel: &str, present| cluster.channel_changed(channel, present);
            hub.node.watch_channels(watcher);
        }
        hub
    }

    /// Registers the hub as the engine's handler and starts the engine's
    /// tasks; resolves once this node receives what is sent to it.
    pub(crate) async fn join_cluster(self: &Arc<Self>) {
        if let Some(cluster) = &self.cluster {
            let weak: Weak<Hub> = Arc::downgrade(self);
            cluster.run(weak as Weak<dyn Handler>).await;
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// This node's state.
    pub(crate) fn node(&self) -> &Node {
        &self.node
    }

    /// The engine, if the pool is a cluster.
    pub(crate) fn cluster(&self) -> Option<&dyn Cluster> {
        self.cluster.as_deref()
    }

    /// This node's tallies.
    pub(crate) fn counters(&self) -> &Counters {
        self.node.counters()
    }

    #[cfg(feature = "metrics")]
    pub(crate) fn queue_delay(&self) -> &metrics::Histogram {
        &self.queue_delay
    }

    /// The time to live `options` give a message.
    pub(crate) fn ttl(&self, options: &SendOptions) -> Duration {
        options.ttl.unwrap_or(self.config.message_ttl())
    }

    /// A snapshot of this node's counters, with the engine's.
    pub(crate) fn stats(&self) -> Stats {
        let mut stats = self.counters().snapshot(self.node.gauges());
        stats.cluster = self.cluster().map(|c| c.stats());
        stats
    }

    /// This node's report: its stats and message rates.
    pub(crate) fn report(&self) -> NodeInfo {
        let stats = self.stats();
        let (messages_in_per_sec, messages_out_per_sec) =
            self.rates.sample(stats.messages_in, stats.messages_out);
        let cluster = stats.cluster.as_ref();
        NodeInfo {
            node: cluster.map(|c| c.node.clone()),
            this: true,
            up: cluster.is_none_or(|c| c.up),
            connections: stats.connections,
            channels: stats.channels,
            messages_in: stats.messages_in,
            messages_out: stats.messages_out,
            dropped: stats.dropped,
            undelivered: stats.undelivered,
            messages_in_per_sec,
            messages_out_per_sec,
            outages: cluster.map_or(0, |c| c.outages),
            missed: cluster.map_or(0, |c| c.missed),
            last_gap_at: cluster.and_then(|c| c.last_gap_at),
            age_ms: 0,
        }
    }

    /// Every node of the cluster (this one first), or this one; this one
    /// alone, shown down, when the others cannot be reached.
    pub(crate) async fn cluster_nodes(&self) -> Vec<NodeInfo> {
        let mut nodes = vec![self.report()];
        if let Some(cluster) = self.cluster() {
            match cluster.nodes().await {
                Ok(mut others) => {
                    others.sort_by(|a, b| a.node.cmp(&b.node));
                    nodes.extend(others);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "the other nodes' reports could not be read");
                    nodes[0].up = false;
                }
            }
        }
        nodes
    }

    // ----- events -----

    pub(crate) fn events(&self) -> EventStream {
        EventStream::new(self.events.subscribe())
    }

    /// Sends the event built by `make` if anyone is listening.
    pub(crate) fn emit(&self, make: impl FnOnce() -> PoolEvent) {
        if self.wants_events() {
            let _ = self.events.send(make());
        }
    }

    pub(crate) fn wants_events(&self) -> bool {
        self.events.receiver_count() > 0
    }

    // ----- connections and shutdown -----

    /// Counts a running connection task until the guard is dropped.
    pub(crate) fn live_guard(self: &Arc<Self>) -> LiveGuard {
        self.tasks();
        self.live.send_modify(|n| *n += 1);
        LiveGuard(self.clone())
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// See `WsPool::shutdown`.
    pub(crate) async fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        let close = CloseRequest::after_flush(DisconnectReason::Shutdown);
        for state in self.node.online() {
            state.request_close(close.clone(), false);
        }
        let mut live = self.live.subscribe();
        let timeout = self.config.shutdown_timeout();
        if tokio::time::timeout(timeout, live.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            tracing::debug!("shutdown timeout: closing the remaining connections without flushing");
            let close = CloseRequest::now(DisconnectReason::Shutdown);
            for state in self.node.online() {
                state.request_close(close.clone(), true);
            }
            let wait = live.wait_for(|n| *n == 0);
            let _ = tokio::time::timeout(self.config.write_timeout(), wait).await;
        }
        for (id, left) in self.node.forget_offline() {
            self.report_undelivered(&id, left, UndeliveredReason::Shutdown);
        }
    }
}

/// Counts the connection in the hub's live connections until its side of
/// the close is done (or the task ends, however it ends); `shutdown` waits
/// for that count to reach zero.
pub(crate) struct LiveGuard(Arc<Hub>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.send_modify(|n| *n -= 1);
    }
}
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
