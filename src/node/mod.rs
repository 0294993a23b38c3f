//! The local node: the clients connected to this process, their mailboxes,
//! the channel index, and the work due by the clock.
//!
//! [`Node`] is the one owner of that state. Routing asks it to deliver
//! locally ("push to this id", "fan out to these channels"); connections
//! attach to it and depart from it; the sweeper asks it what is due. Nobody
//! else sees the registry or a mailbox's insides, so a cluster backend sits
//! beside the node, not inside it: routing asks the node first and the
//! cluster for what the node does not have.
//!
//! # Concurrency
//!
//! The registry (clients and channel index) sits under one parking_lot
//! `RwLock`: routing only reads; connects, departures, joins and leaves
//! write. No method holds it across an `.await`, and pushing into a mailbox
//! (under the read lock) never waits. Each mailbox has its own short mutex.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, OnceLock,
    },
};

use parking_lot::{Mutex, RwLock};
use tokio::time::Instant;

use crate::{
    config::Config,
    message::Encoded,
    stats::{bump, Counters, Gauges},
    ClientId, ClientInfo, Delivery,
};

mod client;
mod mailbox;
mod registry;

pub(crate) use client::{ClientState, CloseRequest, Joining};
pub(crate) use mailbox::{PushError, BURST_ROOM};
pub(crate) use registry::{Departure, JoinRefused, Leave, SubscriberState};

use mailbox::{MailLimits, Mailbox};
use registry::{Member, Registry};

/// This process's share of the pool. See the [module docs](self).
pub(crate) struct Node {
    /// Clients and the channel index under one lock, so they never disagree.
    registry: RwLock<Registry>,
    /// Queue and offline-buffer limits, shared by every mailbox.
    limits: MailLimits,
    /// This node's tallies; relaxed atomics, read as a snapshot.
    counters: Counters,
    /// Numbers connections, mailboxes and subscriptions (one sequence).
    next_id: AtomicU64,
    /// The mailboxes that may hold messages, each once: what the sweeper
    /// looks at, so a tick costs the busy mailboxes, not every client
    /// (`Pushed::watch`). Locked once per mailbox that starts holding
    /// messages after a sweep, and by the sweep.
    busy: Mutex<Vec<Arc<Mailbox>>>,
    /// Told when a channel gains its first member here or loses its last
    /// (a cluster subscribes to it), under the write lock, in order.
    watcher: OnceLock<ChannelWatcher>,
}

/// See [`Node::watch_channels`].
type ChannelWatcher = Box<dyn Fn(&str, bool) + Send + Sync>;

/// What a local fan-out reached.
#[derive(Default)]
pub(crate) struct FanOut {
    /// Clients it was queued or buffered for.
    pub(crate) recipients: usize,
    /// The direct recipient's outcome; `None` when there was no `to`, or
    /// `to` is not on this node.
    pub(crate) direct: Option<Result<Delivery, PushError>>,
    /// Recipients skipped because their queue was full.
    pub(crate) dropped: Vec<ClientId>,
}

/// What a sweep found due.
#[derive(Default)]
pub(crate) struct Due {
    /// Messages past their time to live, by recipient.
    pub(crate) expired: Vec<(ClientId, Vec<Arc<Encoded>>)>,
    /// Connections whose queue stayed full for `slow_client_timeout`.
    pub(crate) slow: Vec<Arc<ClientState>>,
    /// Clients away past `offline_ttl`, forgotten, with what they held.
    pub(crate) gone: Vec<(ClientId, Vec<Arc<Encoded>>)>,
}

impl Node {
    pub(crate) fn new(config: &Config) -> Self {
        Node {
            registry: RwLock::new(Registry::default()),
            limits: MailLimits {
                queue_max_messages: config.queue_max_messages,
                queue_max_bytes: config.queue_max_bytes,
                offline_max_messages: config.offline_max_messages,
                offline_max_bytes: config.offline_max_bytes,
                offline_max_total_bytes: config.offline_max_total_bytes,
                offline_bytes: AtomicUsize::new(0),
            },
            counters: Counters::default(),
            next_id: AtomicU64::new(1),
            busy: Mutex::new(Vec::new()),
            watcher: OnceLock::new(),
        }
    }

    /// Calls `watcher(channel, true)` when `channel` gains its first member
    /// here (a client or a subscription), `watcher(channel, false)` when it
    /// loses its last. Called under the registry's write lock, so in order:
    /// it must not block. Set once.
    pub(crate) fn watch_channels(&self, watcher: impl Fn(&str, bool) + Send + Sync + 'static) {
        if self.watcher.set(Box::new(watcher)).is_ok() {
            self.registry.write().watch();
        }
    }

    /// Runs `f` under the write lock, then tells the watcher what changed.
    fn write<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        let mut registry = self.registry.write();
        let result = f(&mut registry);
        if let Some(watcher) = self.watcher.get() {
            for (channel, present) in registry.take_changes() {
                watcher(&channel, present);
            }
        }
        result
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    // ----- delivering -----

    /// Pushes into one mailbox, counting a refusal for being full and a
    /// message buffered for a client that is away.
    fn push_into(
        &self,
        mailbox: &Arc<Mailbox>,
        encoded: &Arc<Encoded>,
        only_conn: Option<u64>,
    ) -> Result<Delivery, PushError> {
        let pushed = match mailbox.push(encoded, &self.limits, only_conn) {
            Ok(pushed) => pushed,
            Err(e) => {
                if e == PushError::Full {
                    bump(&self.counters.dropped, 1);
                }
                return Err(e);
            }
        };
        if pushed.delivery == Delivery::Buffered {
            bump(&self.counters.buffered, 1);
        }
        if pushed.watch {
            self.list_busy(mailbox);
        }
        Ok(pushed.delivery)
    }

    /// Adds `mailbox` to the sweeper's list (its mark was just set).
    fn list_busy(&self, mailbox: &Arc<Mailbox>) {
        self.busy.lock().push(mailbox.clone());
    }

    /// Queues (or buffers) `encoded` for client `id` if this node has it;
    /// `None` if it does not.
    pub(crate) fn push(
        &self,
        id: &str,
        encoded: &Arc<Encoded>,
    ) -> Option<Result<Delivery, PushError>> {
        let mailbox = self.registry.read().get(id).map(|e| e.mailbox.clone())?;
        Some(self.push_into(&mailbox, encoded, None))
    }

    /// Queues `encoded` for client `id` if it is connected here under a
    /// claim of at least `epoch` (a cluster's fence); `None` if not here
    /// or fenced off. One lookup, under the read lock.
    pub(crate) fn push_fenced(
        &self,
        id: &str,
        epoch: u64,
        encoded: &Arc<Encoded>,
    ) -> Option<Result<Delivery, PushError>> {
        let registry = self.registry.read();
        let entry = registry.get(id)?;
        if entry.conn.as_ref()?.epoch() < epoch {
            return None;
        }
        Some(self.push_into(&entry.mailbox, encoded, None))
    }

    /// Queues `encoded` for connection `state` only, while it is attached.
    pub(crate) fn push_to_conn(
        &self,
        state: &ClientState,
        encoded: &Arc<Encoded>,
    ) -> Result<Delivery, PushError> {
        self.push_into(&state.mailbox, encoded, Some(state.conn_id))
    }

    /// Delivers to `to` (if not empty and here) and to the local members of
    /// `channels`, each once; members of the channels in `skip` are left
    /// out (they were reached through one of those).
    pub(crate) fn fan_out(
        &self,
        encoded: &Arc<Encoded>,
        to: &str,
        channels: &[String],
        skip: &[String],
    ) -> FanOut {
        let mut out = FanOut::default();
        let registry = self.registry.read();
        let dedupe = usize::from(!to.is_empty()) + channels.len() > 1 || !skip.is_empty();
        let mut seen = HashSet::new();
        if !skip.is_empty() {
            registry.for_each_member(skip, Some(&mut seen), |_| {});
        }
        if !to.is_empty() {
            if let Some(entry) = registry.get(to) {
                if dedupe {
                    seen.insert(entry.mailbox.key);
                }
                let result = self.push_into(&entry.mailbox, encoded, None);
                out.recipients += usize::from(result.is_ok());
                out.direct = Some(result);
            }
        }
        registry.for_each_member(
            channels,
            dedupe.then_some(&mut seen),
            |member| match member {
                Member::Client(mailbox) => self.tally(mailbox, encoded, &mut out),
                Member::Subscriber(sub) => {
                    // No receiver left means the subscription is being dropped;
                    // it unregisters itself.
                    let _ = sub.tx.send(encoded.msg.clone());
                }
            },
        );
        out
    }

    /// Hands `encoded` to this node's server-side subscriptions to
    /// `channels` (each once) that are not subscribed to a channel in
    /// `skip`; clients are left out (they got it another way).
    pub(crate) fn notify_subscribers(
        &self,
        encoded: &Encoded,
        channels: &[String],
        skip: &[String],
    ) {
        let registry = self.registry.read();
        let mut seen = HashSet::new();
        registry.for_each_member(skip, Some(&mut seen), |_| {});
        registry.for_each_member(channels, Some(&mut seen), |member| {
            if let Member::Subscriber(sub) = member {
                let _ = sub.tx.send(encoded.msg.clone());
            }
        });
    }

    /// Queues `encoded` for every connected client (not those away).
    pub(crate) fn push_all(&self, encoded: &Arc<Encoded>) -> FanOut {
        let mut out = FanOut::default();
        for state in self.registry.read().online() {
            self.tally(&state.mailbox, encoded, &mut out);
        }
        out
    }

    fn tally(&self, mailbox: &Arc<Mailbox>, encoded: &Arc<Encoded>, out: &mut FanOut) {
        match self.push_into(mailbox, encoded, None) {
            Ok(_) => out.recipients += 1,
            Err(PushError::Full) => out.dropped.push(mailbox.client.clone()),
            Err(PushError::Closed) => {}
        }
    }

    /// Moves up to `max_frames` messages (about `max_bytes`) queued for
    /// connection `state` into `batch`, and those past their time to live
    /// at `now` into `expired`; returns the payload bytes taken.
    pub(crate) fn drain(
        &self,
        state: &ClientState,
        batch: &mut Vec<Arc<Encoded>>,
        expired: &mut Vec<Arc<Encoded>>,
        max_frames: usize,
        max_bytes: usize,
        now: Instant,
    ) -> usize {
        let take = mailbox::Take {
            max_frames,
            max_bytes,
            now,
        };
        (state.mailbox).drain(state.conn_id, batch, expired, take, &self.limits)
    }

    /// Puts `msgs` (oldest first) ahead of everything queued for `state`'s
    /// mailbox: what was buffered elsewhere for a client that reconnected
    /// here. Returns what did not fit.
    pub(crate) fn prepend(
        &self,
        state: &ClientState,
        msgs: Vec<Arc<Encoded>>,
    ) -> Vec<Arc<Encoded>> {
        let rest = state.mailbox.prepend(msgs, &self.limits);
        if state.mailbox.watch() {
            self.list_busy(&state.mailbox);
        }
        rest
    }

    // ----- clients -----

    /// Registers connection `conn_id` as `config` says, attaching it to its
    /// id's mailbox (new, left by a client that was away, or taken from the
    /// connection it replaces, which is returned). `admit` sees whether the
    /// id is connected now and may refuse, under the same write lock.
    pub(crate) fn attach<E>(
        &self,
        conn_id: u64,
        joining: &Joining<'_>,
        admit: impl FnOnce(bool) -> Result<(), E>,
    ) -> Result<(Arc<ClientState>, Option<Arc<ClientState>>), E> {
        self.write(|registry| {
            admit(registry.conn(joining.id).is_some())?;
            Ok(registry.attach(
                joining.id,
                joining.channels,
                || Mailbox::new(self.next_id(), ClientId::from(joining.id), joining.format),
                |mailbox| ClientState::new(conn_id, joining, mailbox),
                &self.limits,
            ))
        })
    }

    /// Ends `state`'s registration as `leave` says.
    pub(crate) fn depart(&self, state: &ClientState, leave: Leave) -> Departure {
        self.write(|r| r.depart(state, leave, &self.limits))
    }

    /// Forgets every client that is away, returning what they held.
    pub(crate) fn forget_offline(&self) -> Vec<(ClientId, Vec<Arc<Encoded>>)> {
        self.write(|r| r.expire_offline(None, &self.limits))
    }

    /// Is client `id` connected here?
    pub(crate) fn is_connected(&self, id: &str) -> bool {
        self.registry.read().conn(id).is_some()
    }

    /// The connection of `id`, if connected here.
    pub(crate) fn conn(&self, id: &str) -> Option<Arc<ClientState>> {
        self.registry.read().conn(id).cloned()
    }

    /// The connections here.
    pub(crate) fn online(&self) -> Vec<Arc<ClientState>> {
        self.registry.read().online().cloned().collect()
    }

    /// Runtime info of every client connected here.
    pub(crate) fn clients(&self) -> Vec<ClientInfo> {
        let registry = self.registry.read();
        registry
            .online()
            .map(|s| s.info(registry.channels_of(s)))
            .collect()
    }

    /// Is `state` still the registered connection of its id?
    pub(crate) fn is_current(&self, state: &ClientState) -> bool {
        self.registry.read().is_current(state)
    }

    // ----- channels -----

    pub(crate) fn join(
        &self,
        state: &ClientState,
        channel: &str,
        max: usize,
    ) -> Result<bool, JoinRefused> {
        self.write(|r| r.join(state, channel, max))
    }

    pub(crate) fn leave(&self, state: &ClientState, channel: &str) -> bool {
        self.write(|r| r.leave(state, channel))
    }

    pub(crate) fn channels_of(&self, state: &ClientState) -> Vec<String> {
        self.registry.read().channels_of(state)
    }

    /// The ids connected here in `channel`.
    pub(crate) fn members(&self, channel: &str) -> Vec<ClientId> {
        self.registry.read().members(channel)
    }

    /// The channels with a member here (clients or subscriptions).
    pub(crate) fn channel_names(&self) -> Vec<String> {
        self.registry.read().channel_names()
    }

    pub(crate) fn subscribe(&self, sub: &Arc<SubscriberState>, channels: &[Arc<str>]) {
        self.write(|r| r.subscribe(sub, channels));
    }

    pub(crate) fn unsubscribe(&self, sub_id: u64, channels: &[Arc<str>]) {
        self.write(|r| r.unsubscribe(sub_id, channels));
    }

    /// The gauges of this node, for `stats()`.
    pub(crate) fn gauges(&self) -> Gauges {
        let registry = self.registry.read();
        Gauges {
            connections: registry.online_count(),
            channels: registry.channel_count(),
            offline_clients: registry.offline_count(),
            offline_bytes: self.limits.offline_bytes.load(Ordering::Relaxed),
        }
    }

    // ----- the clock -----

    /// What is due at `now`: expired messages (removed), slow connections
    /// (`slow_after` full), clients away past their window (forgotten).
    ///
    /// Looks at the mailboxes holding messages and at the first client
    /// away, not at every client: a tick over a million idle connections
    /// costs what one over ten does (criterion `sweep_idle`).
    pub(crate) fn sweep(&self, now: Instant, slow_after: std::time::Duration) -> Due {
        let mut due = Due::default();
        let busy = std::mem::take(&mut *self.busy.lock());
        let mut keep = Vec::with_capacity(busy.len());
        for mailbox in busy {
            let mut out = Vec::new();
            mailbox.expire(now, &self.limits, &mut out);
            if !out.is_empty() {
                due.expired.push((mailbox.client.clone(), out));
            }
            if (mailbox.full_since()).is_some_and(|t| now.duration_since(t) >= slow_after) {
                let registry = self.registry.read();
                let current = (registry.get(&mailbox.client))
                    .filter(|e| e.mailbox.key == mailbox.key)
                    .and_then(|e| e.conn.clone());
                due.slow.extend(current);
            }
            if mailbox.still_watched() {
                keep.push(mailbox);
            }
        }
        self.busy.lock().extend(keep);
        if self.registry.read().offline_due(now) {
            due.gone = self.write(|r| r.expire_offline(Some(now), &self.limits));
        }
        due
    }
}

/// Registers a socketless client, for the benchmarks and fuzz targets.
#[cfg(feature = "__bench")]
pub(crate) fn register_bare(
    node: &Node,
    id: &str,
    channels: &[String],
    format: crate::Format,
) -> Arc<ClientState> {
    let joining = Joining {
        id,
        kind: "ws",
        channels,
        format,
        remote_addr: None,
    };
    let conn_id = node.next_id();
    match node.attach(
        conn_id,
        &joining,
        |_| Ok::<(), std::convert::Infallible>(()),
    ) {
        Ok((state, _)) => state,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use std::{convert::Infallible, time::Duration};

    use super::*;
    use crate::SendMsg;

    const MINUTE: Duration = Duration::from_secs(60);

    fn attach(node: &Node, id: &str) -> Arc<ClientState> {
        let admit = |_| Ok::<(), Infallible>(());
        let joining = Joining {
            id,
            kind: "ws",
            channels: &[],
            format: crate::Format::Binary,
            remote_addr: None,
        };
        match node.attach(node.next_id(), &joining, admit) {
            Ok((state, _)) => state,
            Err(never) => match never {},
        }
    }

    fn msg(ttl: Duration) -> Arc<Encoded> {
        Encoded::new(Arc::new(SendMsg::default()), None, ttl)
    }

    fn watched(node: &Node) -> usize {
        node.busy.lock().len()
    }

    #[test]
    fn a_sweep_looks_only_at_mailboxes_holding_messages() {
        let node = Node::new(&Config::default());
        let clients: Vec<_> = (0..1000).map(|i| attach(&node, &format!("c{i}"))).collect();
        assert_eq!(watched(&node), 0, "idle clients are not watched");
        node.push_to_conn(&clients[7], &msg(MINUTE)).unwrap();
        node.push_to_conn(&clients[7], &msg(MINUTE)).unwrap();
        node.push_to_conn(&clients[9], &msg(Duration::ZERO))
            .unwrap();
        assert_eq!(watched(&node), 2, "each mailbox holding messages, once");

        let later = Instant::now() + Duration::from_secs(1);
        let due = node.sweep(later, MINUTE);
        let expired: Vec<_> = due.expired.iter().map(|(id, m)| (&**id, m.len())).collect();
        assert_eq!(expired, [("c9", 1)]);
        assert_eq!(watched(&node), 1, "c9 is empty now: off the list; c7 stays");

        let (mut batch, mut gone) = (Vec::new(), Vec::new());
        node.drain(&clients[7], &mut batch, &mut gone, 64, usize::MAX, later);
        assert_eq!(batch.len(), 2);
        assert!(node.sweep(later, MINUTE).expired.is_empty());
        assert_eq!(watched(&node), 0, "drained: off the list");

        node.push_to_conn(&clients[7], &msg(Duration::ZERO))
            .unwrap();
        assert_eq!(watched(&node), 1, "a push after the sweep puts it back");
        assert_eq!(node.sweep(later, MINUTE).expired.len(), 1);
    }

    #[test]
    fn a_full_queue_is_found_slow_by_the_sweep() {
        let config = Config {
            queue_max_messages: 2,
            ..Config::default()
        };
        let node = Node::new(&config);
        let _idle = attach(&node, "idle");
        let slow = attach(&node, "slow");
        for _ in 0..2 {
            node.push_to_conn(&slow, &msg(MINUTE)).unwrap();
        }
        assert_eq!(node.push_to_conn(&slow, &msg(MINUTE)), Err(PushError::Full));
        let due = node.sweep(
            Instant::now() + Duration::from_secs(30),
            Duration::from_secs(20),
        );
        assert_eq!(due.slow.len(), 1);
        assert!(Arc::ptr_eq(&due.slow[0], &slow));
        assert!(node
            .sweep(Instant::now(), Duration::from_secs(20))
            .slow
            .is_empty());
    }

    #[test]
    fn clients_away_are_forgotten_when_their_window_ends() {
        let node = Node::new(&Config::default());
        let short = attach(&node, "short");
        let long = attach(&node, "long");
        let back = attach(&node, "back");
        let away = |ttl| Leave::Offline {
            ttl,
            max_offline: 10,
        };
        node.depart(&short, away(Duration::from_millis(10)));
        node.depart(&long, away(Duration::from_secs(3600)));
        node.depart(&back, away(Duration::from_millis(10)));
        assert_eq!(node.gauges().offline_clients, 3);
        attach(&node, "back"); // returns within its window: not forgotten

        let due = node.sweep(Instant::now() + Duration::from_secs(1), MINUTE);
        let gone: Vec<_> = due.gone.iter().map(|(id, _)| &**id).collect();
        assert_eq!(gone, ["short"]);
        assert_eq!(node.gauges().offline_clients, 1);
        assert!(node
            .sweep(Instant::now() + Duration::from_secs(1), MINUTE)
            .gone
            .is_empty());
    }
}
