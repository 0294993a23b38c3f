//! Hooks for the criterion micro-benchmarks (`benches/hot_paths.rs`) and
//! the fuzz targets (`fuzz/`): the routing paths driven without sockets.
//! Not part of the API.

use std::{collections::HashMap, sync::Arc};

use axum::extract::ws::Message;

use crate::{
    message::{decode, stamp, status, Encoded},
    node::{register_bare, ClientState},
    Format, SendMsg, WsPool,
};

/// Registers a client without a socket.
fn register(pool: &WsPool, id: &str, channels: &[String], format: Format) -> Arc<ClientState> {
    register_bare(pool.hub().node(), id, channels, format)
}

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
        let states = (0..members + others)
            .map(|i| {
                let channel = if i < members {
                    "room".to_owned()
                } else {
                    format!("own{i}")
                };
                register(&pool, &format!("c{i}"), &[channel], Format::Binary)
            })
            .collect();
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
            let _ = self.pool.hub().node().push_to_conn(state, &enc);
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

    /// One pass of the sweeper (expiry, offline and slow-client checks)
    /// over every registered client, as its once-a-tick timer runs it.
    pub fn sweep(&self) {
        self.pool.hub().sweep(tokio::time::Instant::now());
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
    let now = tokio::time::Instant::now();
    pool.hub()
        .node()
        .drain(state, batch, expired, 64, 1 << 20, now);
}

/// A pool of eight socketless clients (`c0`..`c7`, half binary, half
/// JSON) in channels `r0`..`r2` and `all`, for fuzzing what a client's
/// frame does: decode, stamp, relay, receipts.
pub struct Relayer {
    pool: WsPool,
    states: Vec<Arc<ClientState>>,
    batch: Vec<Arc<Encoded>>,
    expired: Vec<Arc<Encoded>>,
}

impl Default for Relayer {
    fn default() -> Self {
        Self::new()
    }
}

impl Relayer {
    /// The pool and its eight clients.
    pub fn new() -> Self {
        let pool = WsPool::builder().max_channels_per_message(16).build();
        let states = (0..8)
            .map(|i| {
                let channels = [format!("r{}", i % 3), "all".to_owned()];
                let format = if i % 2 == 0 {
                    Format::Binary
                } else {
                    Format::Json
                };
                register(&pool, &format!("c{i}"), &channels, format)
            })
            .collect();
        Relayer {
            pool,
            states,
            batch: Vec::new(),
            expired: Vec::new(),
        }
    }

    /// Handles `frame` as if client `from % 8` had sent it (binary, or text
    /// when it is UTF-8 and `text`), then drains every mailbox and checks
    /// the routing rules, panicking when one is broken: each recipient gets
    /// at most one copy, stamped with the sender's id; receipts go to the
    /// sender only, with a pool status. Returns the frames written.
    pub fn relay_frame(&mut self, from: usize, frame: &[u8], text: bool) -> usize {
        let sender = self.states[from % self.states.len()].clone();
        let frame = match std::str::from_utf8(frame) {
            Ok(t) if text => Message::Text(t.into()),
            _ => Message::Binary(bytes::Bytes::copy_from_slice(frame)),
        };
        match decode(&frame) {
            Ok(mut msg) => {
                stamp(&mut msg, &sender.id);
                self.pool.hub().relay(&sender.id, Arc::new(msg));
            }
            Err(e) => {
                self.pool
                    .hub()
                    .refuse_frame(&sender.id, status::UNDECODABLE, &e.to_string());
            }
        }
        let mut copies: HashMap<&str, usize> = HashMap::new();
        let mut written = 0;
        for state in &self.states {
            loop {
                drain(&self.pool, state, &mut self.batch, &mut self.expired);
                if self.batch.is_empty() {
                    break;
                }
                for m in self.batch.drain(..) {
                    written += 1;
                    let bytes = match m.frame(state.format) {
                        Message::Binary(b) => b.to_vec(),
                        Message::Text(t) => t.as_str().as_bytes().to_vec(),
                        other => panic!("not a data frame: {other:?}"),
                    };
                    assert!(!bytes.is_empty() || m.msg.as_ref() == &SendMsg::default());
                    if m.msg.from_client_id.is_empty() {
                        assert_eq!(m.msg.to_client_id, sender.id.as_str(), "receipt to another");
                        assert!((3..=7).contains(&m.msg.status), "receipt status");
                    } else {
                        assert_eq!(m.msg.from_client_id, sender.id.as_str(), "not stamped");
                        *copies.entry(state.id.as_str()).or_default() += 1;
                    }
                }
            }
            assert!(self.expired.is_empty());
        }
        assert!(
            copies.values().all(|&n| n == 1),
            "duplicate copies: {copies:?}"
        );
        written
    }
}
