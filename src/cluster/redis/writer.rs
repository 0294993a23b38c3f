//! The writer: what this node asks of Redis, in order, a batch at a time,
//! and what it learns from the answers.
//!
//! A batch goes out in up to three rounds, each one pipeline on one
//! instance (in a Redis Cluster, each command to its shard at once):
//!
//! 1. where each direct message goes ([`ROUTE`](super::scripts::ROUTE):
//!    buffered when its client is away), each broadcast published on each
//!    target ([`PUBLISH`](super::scripts::PUBLISH)), each reply;
//! 2. each direct message published on its owner's node channel
//!    ([`DIRECT`](super::scripts::DIRECT)); each node a broadcast seems to
//!    have missed checked for listeners;
//! 3. the nodes found gone adopted (their clients become away), then the
//!    broadcasts buffered for the members that are away
//!    ([`BUFFER`](super::scripts::BUFFER)) and the direct messages to a
//!    gone node routed again (now into their buffers).

use std::{
    collections::{HashMap, HashSet},
    sync::{atomic::Ordering, Arc},
};

use bytes::Bytes;
use redis::{Cmd, Value};
use tokio::sync::mpsc;

use super::{ids::adopt, stopped, Handler, Shared};
use crate::stats::bump;
use crate::{message::Encoded, ClientId, SendError};

/// Most operations sent in one batch.
pub(super) const BATCH: usize = 256;

/// Sends queued operations to Redis in order, a batch at a time, and
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
        if let Some(handler) = shared.handler() {
            flush(&shared, &*handler, &batch).await;
        }
        batch.clear();
    }
}

/// A broadcast of the batch, as its answers come in.
#[derive(Default)]
struct Broadcast {
    /// Nodes reached, summed over its targets.
    reached: u64,
    /// A target's publication failed.
    failed: bool,
    /// Members away, each once, with the targets it was found in.
    away: HashMap<String, Vec<String>>,
    buffered: u64,
}

/// One batch: round 1, then what its answers call for.
async fn flush(shared: &Shared, handler: &dyn Handler, batch: &[Op]) {
    let mut cmds = Vec::new();
    for op in batch {
        match op {
            Op::Send { to, env, .. } => cmds.push(shared.route_cmd(to, env)),
            Op::Publish { channels, env, .. } => {
                bump(&shared.stats.published, 1);
                cmds.extend(channels.iter().map(|ch| shared.publish_cmd(ch, env)));
            }
            Op::Reply { node, frame } => {
                let mut cmd = redis::cmd(shared.publish_command());
                cmd.arg(shared.keys.node_channel(node)).arg(frame);
                cmds.push(cmd);
            }
        }
    }
    let results = match shared.many(cmds).await {
        Ok(results) => results,
        Err(e) => return link_failed(shared, handler, batch, &e),
    };
    shared.up.store(true, Ordering::Release);

    // Round 1's answers.
    let mut results = results.into_iter();
    let mut direct: Vec<(usize, String, String)> = Vec::new();
    let mut casts: HashMap<usize, Broadcast> = HashMap::new();
    let mut suspects: HashSet<String> = HashSet::new();
    for (i, op) in batch.iter().enumerate() {
        match op {
            Op::Send { to, encoded, .. } => match routed(results.next()) {
                Routed::To(node, epoch) => direct.push((i, node, epoch)),
                Routed::Done => {}
                Routed::Failed(why) => handler.undeliverable(encoded, to, why.for_id(to)),
            },
            Op::Publish { channels, .. } => {
                let cast = casts.entry(i).or_default();
                for ch in channels {
                    let Some(Ok(Value::Array(out))) = results.next() else {
                        cast.failed = true;
                        continue;
                    };
                    let mut out = out.into_iter();
                    if let Some(Value::Int(got)) = out.next() {
                        cast.reached += got.max(0) as u64;
                    }
                    suspects.extend(strings(out.next()));
                    for id in strings(out.next()) {
                        cast.away.entry(id).or_default().push(ch.clone());
                    }
                }
            }
            Op::Reply { .. } => {
                results.next();
            }
        }
    }

    // Round 2: direct messages published, suspects checked.
    let mut cmds: Vec<Cmd> = (direct.iter())
        .map(|(i, node, epoch)| match &batch[*i] {
            Op::Send { env, .. } => shared.direct_cmd(node, epoch, env),
            _ => unreachable!("only sends are routed"),
        })
        .collect();
    let suspects: Vec<String> = suspects.into_iter().collect();
    cmds.extend(suspects.iter().map(|node| shared.listeners_cmd(node)));
    let mut results = match shared.many(cmds).await {
        Ok(results) => results.into_iter(),
        Err(e) => Vec::from_iter(std::iter::repeat_n(Err(e), direct.len())).into_iter(),
    };
    // The nodes found gone, and when (Redis's clock, ms).
    let mut gone: HashMap<String, u64> = HashMap::new();
    let mut seen_gone = |node: &str, at: u64| {
        let when = gone.entry(node.to_owned()).or_insert(at);
        *when = (*when).min(at);
    };
    let mut again = Vec::new();
    for (i, node, _) in &direct {
        let Op::Send { to, encoded, .. } = &batch[*i] else {
            continue;
        };
        match results.next() {
            Some(Ok(reply)) => {
                // Nobody listens on the owner's channel: its node is gone.
                if let Some(at) = nobody_listened(&reply) {
                    seen_gone(node, at);
                    again.push(*i);
                }
            }
            Some(Err(e)) => {
                handler.undeliverable(encoded, to, SendError::Unavailable(e.to_string()))
            }
            None => handler.undeliverable(encoded, to, shared.unavailable()),
        }
    }
    for node in suspects {
        if let Some(Ok(reply)) = results.next() {
            if let Some(at) = nobody_listened(&reply) {
                seen_gone(&node, at);
            }
        }
    }

    // Round 3: the gone nodes' clients become away, then buffers.
    for (node, at) in &gone {
        for (id, channels) in adopt(shared, node, *at).await {
            for (i, cast) in casts.iter_mut() {
                let Op::Publish {
                    channels: targets, ..
                } = &batch[*i]
                else {
                    continue;
                };
                let mine: Vec<String> = (channels.iter())
                    .map(|c| shared.keys.channel(c))
                    .filter(|c| targets.contains(c))
                    .collect();
                if !mine.is_empty() {
                    cast.away.entry(id.clone()).or_default().extend(mine);
                }
            }
        }
    }
    // In the batch's order: a direct message and a broadcast to one
    // client that is away are buffered in the order they were sent.
    let mut cmds = Vec::new();
    let mut asked: Vec<(usize, Option<&str>)> = Vec::new();
    let again: HashSet<usize> = again.into_iter().collect();
    for (i, op) in batch.iter().enumerate() {
        match op {
            Op::Send { to, env, .. } if again.contains(&i) => {
                cmds.push(shared.route_cmd(to, env));
                asked.push((i, None));
            }
            Op::Publish { env, .. } => {
                // One connected here got it from this node: marked away
                // by another node while this node's link was down (it
                // looked gone), it must not get it again from a buffer.
                let away = casts[&i].away.keys().filter(|id| !handler.is_local(id));
                for id in away {
                    cmds.push(shared.buffer_cmd(id, env));
                    asked.push((i, Some(id)));
                }
            }
            _ => {}
        }
    }
    let mut results = match shared.many(cmds).await {
        Ok(results) => results.into_iter(),
        Err(e) => Vec::from_iter(std::iter::repeat_n(Err(e), asked.len())).into_iter(),
    };
    let mut forget: Vec<Cmd> = Vec::new();
    let mut buffered: HashMap<usize, u64> = HashMap::new();
    for (i, id) in asked {
        let result = results.next();
        match (&batch[i], id) {
            (Op::Send { to, encoded, .. }, _) => match routed(result) {
                Routed::Done => {}
                // Connected again on a live node meanwhile: rare; reported.
                Routed::To(..) => handler.undeliverable(encoded, to, shared.unavailable()),
                Routed::Failed(why) => handler.undeliverable(encoded, to, why.for_id(to)),
            },
            (Op::Publish { encoded, .. }, Some(id)) => match result {
                Some(Ok(Value::Int(1))) => *buffered.entry(i).or_default() += 1,
                // Full: skipped, as a full queue is by a broadcast on one
                // node.
                Some(Ok(Value::Int(3))) => {
                    handler.undeliverable(encoded, id, SendError::QueueFull(ClientId::from(id)))
                }
                Some(Ok(Value::Int(-1))) => {
                    for ch in &casts[&i].away[id] {
                        let mut cmd = redis::cmd("SREM");
                        cmd.arg(shared.keys.away(ch)).arg(id);
                        forget.push(cmd);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    handler.undeliverable(encoded, id, SendError::Unavailable(e.to_string()))
                }
                None => handler.undeliverable(encoded, id, shared.unavailable()),
            },
            _ => {}
        }
    }
    if let Err(e) = shared.many(forget).await {
        tracing::debug!(error = %e, "dropping forgotten ids from away sets failed");
    }

    for (i, mut cast) in casts {
        cast.buffered = buffered.get(&i).copied().unwrap_or(0);
        let Op::Publish {
            encoded, counted, ..
        } = &batch[i]
        else {
            continue;
        };
        if cast.failed {
            handler.undeliverable(encoded, "", shared.unavailable());
        }
        if let Some(id) = counted {
            if let Some(tally) = shared.tallies.lock().get_mut(id) {
                // This node's own subscription answers too (it counts 0:
                // it reached its members directly).
                tally.expected = Some(cast.reached);
                tally.clients += cast.buffered;
                tally.settle();
            }
        }
    }
}

/// Nothing reached Redis: every message of the batch is reported.
fn link_failed(shared: &Shared, handler: &dyn Handler, batch: &[Op], e: &redis::RedisError) {
    tracing::warn!(error = %e, "redis command failed");
    shared.up.store(false, Ordering::Release);
    // Through Sentinel the master may have moved (a demoted one answers
    // READONLY): the link is made again, asking.
    shared.relink_if_moved();
    for op in batch {
        match op {
            Op::Send { to, encoded, .. } => {
                handler.undeliverable(encoded, to, shared.unavailable())
            }
            Op::Publish { encoded, .. } => handler.undeliverable(encoded, "", shared.unavailable()),
            Op::Reply { .. } => {}
        }
    }
}

/// When a node channel was found without listeners, from a `DIRECT` or
/// `LISTENERS` reply (`{0, ms}`); `None` when it had some.
fn nobody_listened(reply: &Value) -> Option<u64> {
    match reply {
        Value::Array(v) => match v.as_slice() {
            [Value::Int(0), Value::Int(at)] => Some((*at).max(0) as u64),
            _ => None,
        },
        _ => None,
    }
}

/// What [`ROUTE`](super::scripts::ROUTE) said.
enum Routed {
    /// Connected on this node under this claim: publish it there.
    To(String, String),
    /// Buffered.
    Done,
    Failed(Why),
}

enum Why {
    NotConnected,
    Full,
    Error(String),
}

impl Why {
    fn for_id(self, id: &str) -> SendError {
        match self {
            Why::NotConnected => SendError::NotConnected(ClientId::from(id)),
            Why::Full => SendError::QueueFull(ClientId::from(id)),
            Why::Error(e) => SendError::Unavailable(e),
        }
    }
}

fn routed(result: Option<redis::RedisResult<Value>>) -> Routed {
    let out = match result {
        Some(Ok(Value::Array(out))) => out,
        Some(Ok(other)) => return Routed::Failed(Why::Error(format!("unexpected {other:?}"))),
        Some(Err(e)) => return Routed::Failed(Why::Error(e.to_string())),
        None => return Routed::Failed(Why::Error("no answer".into())),
    };
    let mut out = out.into_iter();
    match (out.next(), out.next(), out.next()) {
        (Some(Value::Int(1)), Some(node), Some(epoch)) => match (text(node), text(epoch)) {
            (Some(node), Some(epoch)) => Routed::To(node, epoch),
            _ => Routed::Failed(Why::Error("bad owner".into())),
        },
        (Some(Value::Int(2)), ..) => Routed::Done,
        (Some(Value::Int(3)), ..) => Routed::Failed(Why::Full),
        _ => Routed::Failed(Why::NotConnected),
    }
}

/// A bulk string as text.
pub(super) fn text(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The strings of an array answer.
pub(super) fn strings(v: Option<Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items.into_iter().filter_map(text).collect(),
        _ => Vec::new(),
    }
}

pub(super) fn is_noscript(r: &redis::RedisResult<Value>) -> bool {
    matches!(r, Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript))
}

pub(super) enum Op {
    /// A direct message to an id that is not here.
    Send {
        to: String,
        env: Bytes,
        encoded: Arc<Encoded>,
    },
    /// A broadcast, published to each pub/sub channel (or to everyone);
    /// `counted` names the tally waiting for the nodes' answers.
    Publish {
        channels: Vec<String>,
        env: Bytes,
        encoded: Arc<Encoded>,
        counted: Option<u64>,
    },
    /// An answer to a counted broadcast, `R<id>:<count>`, or to a
    /// membership request, to the node that asked.
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

/// The commands a batch is made of.
impl Shared {
    /// `PUBLISH` on one instance, `SPUBLISH` (sharded) in a Redis Cluster.
    pub(super) fn publish_command(&self) -> &'static str {
        if self.topology.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    fn route_cmd(&self, to: &str, env: &Bytes) -> Cmd {
        let settings = &self.settings;
        let mut cmd = evalsha(
            &self.scripts.route,
            [self.keys.owner(to), self.keys.buffer(to)],
        );
        cmd.arg(env.as_ref())
            .arg(settings.offline_max_messages)
            .arg(settings.offline_max_bytes);
        cmd
    }

    fn direct_cmd(&self, node: &str, epoch: &str, env: &Bytes) -> Cmd {
        let channel = self.keys.node_channel(node);
        let keys = [self.keys.sequence(&channel), self.keys.history(&channel)];
        let mut cmd = evalsha(&self.scripts.direct, keys);
        cmd.arg(self.publish_command())
            .arg(&channel)
            .arg(epoch)
            .arg(env.as_ref())
            .arg(self.config.history_len.max(1))
            .arg(self.history_ttl());
        cmd
    }

    fn publish_cmd(&self, channel: &str, env: &Bytes) -> Cmd {
        let keys = [
            self.keys.sequence(channel),
            self.keys.history(channel),
            self.keys.away(channel),
            self.keys.nodes_of(channel),
        ];
        let mut cmd = evalsha(&self.scripts.publish, keys);
        cmd.arg(self.publish_command())
            .arg(channel)
            .arg(env.as_ref())
            .arg(self.config.history_len.max(1))
            .arg(self.history_ttl())
            .arg(&self.node);
        cmd
    }

    fn buffer_cmd(&self, id: &str, env: &Bytes) -> Cmd {
        let settings = &self.settings;
        let mut cmd = evalsha(
            &self.scripts.buffer,
            [self.keys.owner(id), self.keys.buffer(id)],
        );
        cmd.arg(env.as_ref())
            .arg(settings.offline_max_messages)
            .arg(settings.offline_max_bytes);
        cmd
    }

    /// How many listen on `node`'s channel (0: the node is gone).
    pub(super) fn listeners_cmd(&self, node: &str) -> Cmd {
        let mut cmd = evalsha(&self.scripts.listeners, [self.keys.lease(node)]);
        let numsub = if self.topology.is_cluster() {
            "SHARDNUMSUB"
        } else {
            "NUMSUB"
        };
        cmd.arg(numsub).arg(self.keys.node_channel(node));
        cmd
    }

    /// Publications older than a message's time to live are not worth
    /// recovering.
    fn history_ttl(&self) -> u64 {
        (self.settings.message_ttl.as_millis().min(u64::MAX as u128) as u64).max(1)
    }
}

/// `EVALSHA` of `script` on `keys` (arguments follow).
pub(super) fn evalsha<const N: usize>(script: &redis::Script, keys: [String; N]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(N);
    for key in keys {
        cmd.arg(key);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply from Redis (`DIRECT`, `LISTENERS`) says a node is gone only
    /// as `{0, ms}`: anything else (listeners, an older script's bare
    /// count, garbage) is not taken as gone, so no adoption follows.
    #[test]
    fn only_a_well_formed_reply_says_a_node_is_gone() {
        let gone = |v: Vec<Value>| nobody_listened(&Value::Array(v));
        assert_eq!(gone(vec![Value::Int(0), Value::Int(1_700)]), Some(1_700));
        assert_eq!(gone(vec![Value::Int(0), Value::Int(-5)]), Some(0));
        assert_eq!(gone(vec![Value::Int(2), Value::Int(1_700)]), None);
        assert_eq!(gone(vec![Value::Int(0)]), None);
        assert_eq!(gone(vec![Value::Int(0), Value::Nil]), None);
        assert_eq!(gone(Vec::new()), None);
        assert_eq!(nobody_listened(&Value::Int(0)), None);
        assert_eq!(nobody_listened(&Value::Nil), None);
    }
}
