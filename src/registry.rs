//! Who is connected and who is in which channel.
//!
//! One structure holds both the clients (id to connection) and the channel
//! index (channel to members), so they can never disagree: the pool guards
//! it with a single `RwLock`. Routing takes the read lock; connects,
//! disconnects, joins and leaves take the write lock. A broadcast to a
//! channel visits only that channel's members: O(recipients), not O(clients).
//!
//! Members are keyed by connection number, not by id, so a connection that
//! has been replaced can never remove its successor.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use crate::{client::ClientState, subscribe::SubscriberState, ClientId};

#[derive(Default)]
pub(crate) struct Registry {
    clients: HashMap<ClientId, Entry>,
    channels: HashMap<Arc<str>, Members>,
}

struct Entry {
    state: Arc<ClientState>,
    /// The channels it is in, in the order it joined them (at most
    /// `max_channels_per_client`).
    channels: Vec<Arc<str>>,
}

#[derive(Default)]
struct Members {
    clients: HashMap<u64, Arc<ClientState>>,
    subscribers: Vec<Arc<SubscriberState>>,
}

impl Members {
    fn is_empty(&self) -> bool {
        self.clients.is_empty() && self.subscribers.is_empty()
    }
}

/// A member of a channel, as visited by a fan-out.
pub(crate) enum Member<'a> {
    Client(&'a Arc<ClientState>),
    Subscriber(&'a SubscriberState),
}

/// Why `join` refused.
pub(crate) enum JoinRefused {
    NotRegistered,
    Full,
}

impl Registry {
    pub(crate) fn client_count(&self) -> usize {
        self.clients.len()
    }

    pub(crate) fn channel_count(&self) -> usize {
        self.channels.len()
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Arc<ClientState>> {
        self.clients.get(id).map(|e| &e.state)
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.clients.contains_key(id)
    }

    pub(crate) fn is_current(&self, state: &ClientState) -> bool {
        self.clients
            .get(&*state.id)
            .is_some_and(|e| e.state.conn_id == state.conn_id)
    }

    pub(crate) fn states(&self) -> impl Iterator<Item = &Arc<ClientState>> {
        self.clients.values().map(|e| &e.state)
    }

    /// Registers `state` in `channels` (already validated and deduplicated),
    /// returning the connection it replaced, if any.
    pub(crate) fn insert(
        &mut self,
        state: Arc<ClientState>,
        channels: &[String],
    ) -> Option<Arc<ClientState>> {
        let old = self.remove_id(&state.id.clone());
        let mut joined = Vec::with_capacity(channels.len());
        for ch in channels {
            let key = self.index(ch, &state);
            joined.push(key);
        }
        self.clients.insert(
            state.id.clone(),
            Entry {
                state,
                channels: joined,
            },
        );
        old
    }

    /// Adds `state` to the members of `channel`, returning the shared key.
    fn index(&mut self, channel: &str, state: &Arc<ClientState>) -> Arc<str> {
        let key = match self.channels.get_key_value(channel) {
            Some((k, _)) => k.clone(),
            None => Arc::from(channel),
        };
        let members = self.channels.entry(key.clone()).or_default();
        members.clients.insert(state.conn_id, state.clone());
        key
    }

    fn unindex(&mut self, channel: &str, conn_id: u64) {
        if let Some(members) = self.channels.get_mut(channel) {
            members.clients.remove(&conn_id);
            if members.is_empty() {
                self.channels.remove(channel);
            }
        }
    }

    fn remove_id(&mut self, id: &str) -> Option<Arc<ClientState>> {
        let entry = self.clients.remove(id)?;
        for ch in &entry.channels {
            self.unindex(ch, entry.state.conn_id);
        }
        Some(entry.state)
    }

    /// Unregisters `state` if it is still the registered connection for its id.
    pub(crate) fn remove(&mut self, state: &ClientState) -> bool {
        if !self.is_current(state) {
            return false;
        }
        self.remove_id(&state.id).is_some()
    }

    pub(crate) fn join(
        &mut self,
        state: &Arc<ClientState>,
        channel: &str,
        max: usize,
    ) -> Result<bool, JoinRefused> {
        let entry = match self.clients.get(&*state.id) {
            Some(e) if e.state.conn_id == state.conn_id => e,
            _ => return Err(JoinRefused::NotRegistered),
        };
        if entry.channels.iter().any(|c| &**c == channel) {
            return Ok(false);
        }
        if entry.channels.len() >= max {
            return Err(JoinRefused::Full);
        }
        let key = self.index(channel, state);
        if let Some(entry) = self.clients.get_mut(&*state.id) {
            entry.channels.push(key);
        }
        Ok(true)
    }

    pub(crate) fn leave(&mut self, state: &ClientState, channel: &str) -> bool {
        let Some(entry) = self.clients.get_mut(&*state.id) else {
            return false;
        };
        if entry.state.conn_id != state.conn_id {
            return false;
        }
        let Some(pos) = entry.channels.iter().position(|c| &**c == channel) else {
            return false;
        };
        entry.channels.remove(pos);
        self.unindex(channel, state.conn_id);
        true
    }

    pub(crate) fn channels_of(&self, state: &ClientState) -> Vec<String> {
        match self.clients.get(&*state.id) {
            Some(e) if e.state.conn_id == state.conn_id => {
                e.channels.iter().map(|c| c.to_string()).collect()
            }
            _ => Vec::new(),
        }
    }

    pub(crate) fn members(&self, channel: &str) -> Vec<ClientId> {
        self.channels
            .get(channel)
            .map(|m| m.clients.values().map(|s| s.id.clone()).collect())
            .unwrap_or_default()
    }

    pub(crate) fn channel_names(&self) -> Vec<String> {
        self.channels.keys().map(|k| k.to_string()).collect()
    }

    pub(crate) fn subscribe(&mut self, sub: &Arc<SubscriberState>, channels: &[Arc<str>]) {
        for ch in channels {
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
            for (conn_id, state) in &members.clients {
                if seen.as_mut().is_none_or(|s| s.insert(*conn_id)) {
                    visit(Member::Client(state));
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
