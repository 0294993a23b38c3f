//! Hooks for the criterion micro-benchmarks (`benches/hot_paths.rs`): the
//! routing hot path driven without sockets. Not part of the API.

use std::sync::Arc;

use crate::{
    client::ClientState, mailbox::Mailbox, message::Encoded, ClientConfig, ClientId, Format,
    SendMsg, WsPool,
};

/// A pool with `members` registered clients (without sockets) in channel
/// `room`, and the writers' side of their mailboxes.
pub struct Fanout {
    pool: WsPool,
    /// The members of `room` first, then the others.
    states: Vec<Arc<ClientState>>,
    members: usize,
    batch: Vec<Arc<Encoded>>,
    expired: Vec<Arc<Encoded>>,
}

impl Fanout {
    /// `members` clients in `room`, plus `others` clients in channels of
    /// their own (to size the channel index).
    pub fn new(members: usize, others: usize) -> Self {
        let pool = WsPool::builder()
            .queue_max_messages(1 << 20)
            .queue_max_bytes(1 << 30)
            .build();
        let mut states = Vec::new();
        {
            let mut registry = pool.inner.registry.write();
            for i in 0..members + others {
                let id = format!("c{i}");
                let channel = if i < members {
                    "room".to_owned()
                } else {
                    format!("own{i}")
                };
                let config = ClientConfig::new(id.clone()).channels([channel.clone()]);
                let conn_id = pool.next_id();
                let (state, _) = registry.attach(
                    &id,
                    &[channel],
                    || Mailbox::new(pool.next_id(), ClientId::from(id.as_str()), Format::Binary),
                    |mailbox| ClientState::new(conn_id, &config, mailbox),
                    &pool.inner.limits,
                );
                states.push(state);
            }
        }
        Fanout {
            pool,
            states,
            members,
            batch: Vec::new(),
            expired: Vec::new(),
        }
    }

    /// Broadcasts one 128-byte message to `room` (encoded once, queued for
    /// every member), then drains every mailbox as the writers would,
    /// taking each member's frame. Returns the recipients.
    pub fn broadcast_and_drain(&mut self, priority: i32) -> usize {
        let msg = SendMsg {
            channel: vec!["room".into()],
            cmd_data: bytes::Bytes::from_static(&[b'x'; 128]),
            priority,
            ..Default::default()
        };
        let n = self.pool.broadcast(msg).unwrap_or(0);
        for state in &self.states[..self.members] {
            drain(&self.pool, state, &mut self.batch, &mut self.expired);
            for m in self.batch.drain(..) {
                std::hint::black_box(m.frame(state.format));
            }
        }
        n
    }

    /// Queues one message per given priority for one client, then drains
    /// them: the cost of the priority lanes.
    pub fn queue_and_drain_one(&mut self, priorities: &[i32]) -> usize {
        let state = &self.states[0];
        for &priority in priorities {
            let msg = SendMsg {
                priority,
                ..Default::default()
            };
            let enc = Encoded::new(Arc::new(msg), None, std::time::Duration::from_secs(60));
            let _ = state.mailbox.push(&enc, &self.pool.inner.limits, None);
        }
        let mut taken = 0;
        loop {
            drain(&self.pool, state, &mut self.batch, &mut self.expired);
            if self.batch.is_empty() {
                return taken;
            }
            taken += self.batch.len();
            self.batch.clear();
        }
    }

    /// The pool, for lookups.
    pub fn pool(&self) -> &WsPool {
        &self.pool
    }
}

/// One writer's drain: up to 64 messages.
fn drain(
    pool: &WsPool,
    state: &ClientState,
    batch: &mut Vec<Arc<Encoded>>,
    expired: &mut Vec<Arc<Encoded>>,
) {
    state.mailbox.drain(
        state.conn_id,
        batch,
        expired,
        64,
        1 << 20,
        &pool.inner.limits,
    );
}
