//! The writer: what this node asks of Redis, in order, a pipeline at a
//! time, and what it learns from the answers.

use std::sync::{atomic::Ordering, Arc};

use bytes::Bytes;
use redis::Value;
use tokio::sync::mpsc;

use super::{stopped, Shared};
use crate::stats::bump;
use crate::{message::Encoded, ClientId, SendError};

/// Most commands sent in one pipeline.
pub(super) const BATCH: usize = 256;

/// Sends queued operations to Redis in order, a pipeline at a time, and
/// reports what failed.
pub(super) async fn writer(shared: Arc<Shared>, mut ops: mpsc::Receiver<Op>) {
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
        let settings = &shared.settings;
        let (max, max_bytes, ttl) = (
            settings.offline_max_messages,
            settings.offline_max_bytes,
            settings.offline_ttl.as_millis() as u64,
        );
        // Publications older than a message's time to live are not worth
        // recovering.
        let history_ttl = settings.message_ttl.as_millis().min(u64::MAX as u128) as u64;
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
                        .arg(ttl.max(1))
                        .arg(max_bytes)
                        .arg(shared.config.history_len.max(1))
                        .arg(history_ttl.max(1));
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
                    pipe.arg(max_bytes).arg(&shared.node);
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
        let mut conn = shared.conn();
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
                // Through Sentinel the master may have moved (a demoted
                // one answers READONLY): the link is made again, asking.
                shared.relink_if_moved();
                if let Some(handler) = shared.handler() {
                    for op in &batch {
                        match op {
                            Op::Send { to, encoded, .. } => {
                                handler.undeliverable(encoded, to, shared.unavailable())
                            }
                            Op::Publish { encoded, .. } => {
                                handler.undeliverable(encoded, "", shared.unavailable())
                            }
                            Op::Reply { .. } => {}
                        }
                    }
                }
            }
        }
        batch.clear();
    }
}

pub(super) fn is_noscript(r: &redis::RedisResult<Value>) -> bool {
    matches!(r, Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript))
}

/// Acts on the results of a pipeline: reports the direct messages the
/// send script could not route; tells counted broadcasts how many answers
/// to expect.
pub(super) fn report_sends(shared: &Shared, batch: &[Op], results: &[redis::RedisResult<Value>]) {
    let Some(handler) = shared.handler() else {
        return;
    };
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
                handler.undeliverable(encoded, to, why);
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
                            handler.undeliverable(
                                encoded,
                                &id,
                                SendError::QueueFull(ClientId::from(&*id)),
                            );
                        }
                    }
                }
                if reached.is_none() {
                    handler.undeliverable(encoded, "", shared.unavailable());
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

pub(super) enum Op {
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
pub(super) struct Tally {
    /// How many answers to expect (the nodes its publications reached),
    /// once the publish has returned.
    pub(super) expected: Option<u64>,
    pub(super) answers: u64,
    pub(super) clients: u64,
    pub(super) done: Option<tokio::sync::oneshot::Sender<u64>>,
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

/// One node's answer to counted broadcast `id`.
pub(super) fn tally(shared: &Shared, id: u64, clients: u64) {
    if let Some(tally) = shared.tallies.lock().get_mut(&id) {
        tally.answers += 1;
        tally.clients += clients;
        tally.settle();
    }
}
