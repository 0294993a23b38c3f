//! Who is connected, who is away, and who is in which channel.
//!
//! One structure holds both the clients (id to mailbox and connection) and
//! the channel index (channel to members), so they can never disagree: the
//! pool guards it with a single `RwLock`. Routing takes the read lock;
//! connects, disconnects, joins and leaves take the write lock. A broadcast
//! to a channel visits only that channel's members: O(recipients), not
//! O(clients).
//!
//! Channel members are mailboxes, so a client that is away (its mailbox
//! buffering for `offline_ttl`) still receives the broadcasts of the
//! channels it was in. Connections are told apart by number, so one that
//! has been replaced can never remove or disturb its successor.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use tokio::time::Instant;

use super::mailbox::{MailLimits, Mailbox};
use tokio::sync::broadcast;

use super::client::ClientState;
use crate::{message::Encoded, ClientId, SendMsg};

/// The registry's side of a subscription.
pub(crate) struct SubscriberState {
    /// Unique among connections and subscriptions (one counter), so a
    /// fan-out can deduplicate both in one set.
    pub(crate) id: u64,
    /// A broadcast channel with one receiver: it gives a bounded buffer that
    /// never blocks the sender and reports lag to the receiver.
    pub(crate) tx: broadcast::Sender<Arc<SendMsg>>,
}

#[derive(Default)]
pub(crate) struct Registry {
    clients: HashMap<ClientId, Entry>,
    channels: HashMap<Arc<str>, Members>,
    /// The entries that are away (no connection, buffering), by the end
    /// of their window and mailbox key: the sweeper reads the first, not
    /// every entry.
    away: BTreeMap<(Instant, u64), ClientId>,
    /// When watched (a cluster): channels that gained their first member
    /// (`true`) or lost their last (`false`), in order, since last taken.
    changes: Option<Vec<(Arc<str>, bool)>>,
}

pub(crate) struct Entry {
    pub(crate) mailbox: Arc<Mailbox>,
    /// The connection, or `None` while the client is away.
    pub(crate) conn: Option<Arc<ClientState>>,
    /// The channels it is in, in the order it joined them (at most
    /// `max_channels_per_client`).
    channels: Vec<Arc<str>>,
    /// While away: when its offline buffer is given up.
    pub(crate) offline_until: Option<Instant>,
}

#[derive(Default)]
struct Members {
    /// By mailbox key, in key order: keys are handed out as clients connect,
    /// so a broadcast visits its members, and wakes their tasks, in the
    /// order their connections (tasks, sockets, mailboxes) were allocated.
    /// Walking 10,000 of them in memory order rather than a hash table's
    /// order is 8% more deliveries a second and 10% less CPU per delivery
    /// at fanout_10k (BENCHMARKS.md, issue 20).
    clients: BTreeMap<u64, Arc<Mailbox>>,
    subscribers: Vec<Arc<SubscriberState>>,
}

impl Members {
    fn is_empty(&self) -> bool {
        self.clients.is_empty() && self.subscribers.is_empty()
    }
}

/// A member of a channel, as visited by a fan-out.
pub(crate) enum Member<'a> {
    Client(&'a Arc<Mailbox>),
    Subscriber(&'a SubscriberState),
}

/// Why `join` refused.
pub(crate) enum JoinRefused {
    NotRegistered,
    Full,
}

/// What became of a connection's mailbox when it ended.
pub(crate) enum Departure {
    /// Replaced already: the mailbox belongs to the newcomer.
    NotCurrent,
    /// Buffering for the client while it is away; `trimmed` did not fit.
    Offline { trimmed: Vec<Arc<Encoded>> },
    /// Forgotten; these were still queued.
    Removed { left: Vec<Arc<Encoded>> },
}

/// How a client goes when its connection ends.
pub(crate) enum Leave {
    /// Keep its mailbox for this long (within `max_offline` clients away).
    Offline { ttl: Duration, max_offline: usize },
    /// Forget it (kicked, shutdown, or offline buffering off).
    Remove,
}

impl Registry {
    pub(crate) fn online_count(&self) -> usize {
        self.clients.len() - self.away.len()
    }

    /// Whether a client away is past its window at `now`.
    pub(crate) fn offline_due(&self, now: Instant) -> bool {
        (self.away.first_key_value()).is_some_and(|((until, _), _)| *until <= now)
    }

    pub(crate) fn offline_count(&self) -> usize {
        self.away.len()
    }

    pub(crate) fn channel_count(&self) -> usize {
        self.channels.len()
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Entry> {
        self.clients.get(id)
    }

    /// The connection of `id`, if it is connected.
    pub(crate) fn conn(&self, id: &str) -> Option<&Arc<ClientState>> {
        self.clients.get(id).and_then(|e| e.conn.as_ref())
    }

    /// The entry of `state`'s id, if `state` is still its connection.
    fn current(&self, state: &ClientState) -> Option<&Entry> {
        self.clients
            .get(&*state.id)
            .filter(|e| e.conn.as_ref().is_some_and(|c| c.conn_id == state.conn_id))
    }

    pub(crate) fn is_current(&self, state: &ClientState) -> bool {
        self.current(state).is_some()
    }

    pub(crate) fn online(&self) -> impl Iterator<Item = &Arc<ClientState>> {
        self.clients.values().filter_map(|e| e.conn.as_ref())
    }

    /// Registers a connection for `id` in `channels` (validated, without
    /// duplicates). The connection attaches to the id's mailbox, which is
    /// new, or the one a client that is away left, or the one of the
    /// connection it replaces (returned).
    pub(crate) fn attach(
        &mut self,
        id: &str,
        channels: &[String],
        new_mailbox: impl FnOnce() -> Mailbox,
        new_state: impl FnOnce(Arc<Mailbox>) -> ClientState,
        limits: &MailLimits,
    ) -> (Arc<ClientState>, Option<Arc<ClientState>>) {
        let (mailbox, replaced) = match self.clients.get_mut(id) {
            Some(entry) => {
                let old_channels = std::mem::take(&mut entry.channels);
                let mailbox = entry.mailbox.clone();
                let replaced = entry.conn.take();
                if let Some(until) = entry.offline_until.take() {
                    self.away.remove(&(until, mailbox.key));
                }
                for ch in &old_channels {
                    self.unindex(ch, mailbox.key);
                }
                (mailbox, replaced)
            }
            None => (Arc::new(new_mailbox()), None),
        };
        let state = Arc::new(new_state(mailbox.clone()));
        mailbox.attach(state.conn_id, state.wake.clone(), state.format, limits);
        let joined = channels.iter().map(|ch| self.index(ch, &mailbox)).collect();
        let entry = Entry {
            mailbox,
            conn: Some(state.clone()),
            channels: joined,
            offline_until: None,
        };
        self.clients.insert(state.id.clone(), entry);
        (state, replaced)
    }

    /// Ends `state`'s registration as `leave` says.
    pub(crate) fn depart(
        &mut self,
        state: &ClientState,
        leave: Leave,
        limits: &MailLimits,
    ) -> Departure {
        if !self.is_current(state) {
            return Departure::NotCurrent;
        }
        if let Leave::Offline { ttl, max_offline } = leave {
            if self.away.len() < max_offline {
                if let Some(entry) = self.clients.get_mut(&*state.id) {
                    entry.conn = None;
                    let until = crate::message::after(ttl);
                    entry.offline_until = Some(until);
                    self.away
                        .insert((until, entry.mailbox.key), state.id.clone());
                    let mut trimmed = Vec::new();
                    entry.mailbox.detach(state.conn_id, limits, &mut trimmed);
                    return Departure::Offline { trimmed };
                }
            }
        }
        match self.remove_id(&state.id, limits) {
            Some(left) => Departure::Removed { left },
            None => Departure::NotCurrent,
        }
    }

    /// Forgets the clients that have been away past their window (all of
    /// them with `now = None`), returning what their mailboxes held.
    pub(crate) fn expire_offline(
        &mut self,
        now: Option<Instant>,
        limits: &MailLimits,
    ) -> Vec<(ClientId, Vec<Arc<Encoded>>)> {
        let due: Vec<ClientId> = match now {
            Some(now) => (self.away.iter())
                .take_while(|((until, _), _)| *until <= now)
                .map(|(_, id)| id.clone())
                .collect(),
            None => self.away.values().cloned().collect(),
        };
        due.into_iter()
            .filter_map(|id| {
                let left = self.remove_id(&id, limits)?;
                Some((id, left))
            })
            .collect()
    }

    fn remove_id(&mut self, id: &str, limits: &MailLimits) -> Option<Vec<Arc<Encoded>>> {
        let entry = self.clients.remove(id)?;
        if let Some(until) = entry.offline_until {
            self.away.remove(&(until, entry.mailbox.key));
        }
        for ch in &entry.channels {
            self.unindex(ch, entry.mailbox.key);
        }
        Some(entry.mailbox.close(limits))
    }

    /// Adds `mailbox` to the members of `channel`, returning the shared key.
    /// Records changes of which channels have members, from now on.
    pub(crate) fn watch(&mut self) {
        self.changes.get_or_insert_with(Vec::new);
    }

    /// The changes recorded since last taken.
    pub(crate) fn take_changes(&mut self) -> Vec<(Arc<str>, bool)> {
        self.changes
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    fn changed(&mut self, channel: &Arc<str>, present: bool) {
        if let Some(changes) = &mut self.changes {
            changes.push((channel.clone(), present));
        }
    }

    fn index(&mut self, channel: &str, mailbox: &Arc<Mailbox>) -> Arc<str> {
        let key = match self.channels.get_key_value(channel) {
            Some((k, _)) => k.clone(),
            None => {
                let key = Arc::from(channel);
                self.changed(&key, true);
                key
            }
        };
        let members = self.channels.entry(key.clone()).or_default();
        members.clients.insert(mailbox.key, mailbox.clone());
        key
    }

    fn unindex(&mut self, channel: &str, mailbox_key: u64) {
        if let Some(members) = self.channels.get_mut(channel) {
            members.clients.remove(&mailbox_key);
            if members.is_empty() {
                if let Some((key, _)) = self.channels.remove_entry(channel) {
                    self.changed(&key, false);
                }
            }
        }
    }

    fn current_entry(&mut self, state: &ClientState) -> Option<&mut Entry> {
        self.clients
            .get_mut(&*state.id)
            .filter(|e| e.conn.as_ref().is_some_and(|c| c.conn_id == state.conn_id))
    }

    pub(crate) fn join(
        &mut self,
        state: &ClientState,
        channel: &str,
        max: usize,
    ) -> Result<bool, JoinRefused> {
        let entry = self
            .current_entry(state)
            .ok_or(JoinRefused::NotRegistered)?;
        if entry.channels.iter().any(|c| &**c == channel) {
            return Ok(false);
        }
        if entry.channels.len() >= max {
            return Err(JoinRefused::Full);
        }
        let mailbox = entry.mailbox.clone();
        let key = self.index(channel, &mailbox);
        if let Some(entry) = self.current_entry(state) {
            entry.channels.push(key);
        }
        Ok(true)
    }

    pub(crate) fn leave(&mut self, state: &ClientState, channel: &str) -> bool {
        let Some(entry) = self.current_entry(state) else {
            return false;
        };
        let Some(pos) = entry.channels.iter().position(|c| &**c == channel) else {
            return false;
        };
        entry.channels.remove(pos);
        let key = entry.mailbox.key;
        self.unindex(channel, key);
        true
    }

    pub(crate) fn channels_of(&self, state: &ClientState) -> Vec<String> {
        self.current(state)
            .map(|e| e.channels.iter().map(|c| c.to_string()).collect())
            .unwrap_or_default()
    }

    /// The connected members of `channel`.
    pub(crate) fn members(&self, channel: &str) -> Vec<ClientId> {
        let Some(members) = self.channels.get(channel) else {
            return Vec::new();
        };
        members
            .clients
            .values()
            .filter(|m| self.conn(&m.client).is_some())
            .map(|m| m.client.clone())
            .collect()
    }

    pub(crate) fn channel_names(&self) -> Vec<String> {
        self.channels.keys().map(|k| k.to_string()).collect()
    }

    pub(crate) fn subscribe(&mut self, sub: &Arc<SubscriberState>, channels: &[Arc<str>]) {
        for ch in channels {
            if !self.channels.contains_key(ch) {
                self.changed(ch, true);
            }
            self.channels
                .entry(ch.clone())
                .or_default()
                .subscribers
                .push(sub.clone());
        }
    }

    pub(crate) fn unsubscribe(&mut self, sub_id: u64, channels: &[Arc<str>]) {
        for ch in channels {
            if let Some(members) = self.channels.get_mut(&**ch) {
                members.subscribers.retain(|s| s.id != sub_id);
                if members.is_empty() {
                    self.channels.remove(&**ch);
                    self.changed(ch, false);
                }
            }
        }
    }

    /// Visits every member of every channel in `channels`. With `seen`, each
    /// member is visited at most once (and not if already in `seen`).
    pub(crate) fn for_each_member<'a>(
        &'a self,
        channels: &[String],
        mut seen: Option<&mut HashSet<u64>>,
        mut visit: impl FnMut(Member<'a>),
    ) {
        for ch in channels {
            let Some(members) = self.channels.get(ch.as_str()) else {
                continue;
            };
            for (key, mailbox) in &members.clients {
                if seen.as_mut().is_none_or(|s| s.insert(*key)) {
                    visit(Member::Client(mailbox));
                }
            }
            for sub in &members.subscribers {
                if seen.as_mut().is_none_or(|s| s.insert(sub.id)) {
                    visit(Member::Subscriber(sub));
                }
            }
        }
    }
}
