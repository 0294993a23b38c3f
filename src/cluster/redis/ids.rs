//! This node's ids in the cluster: claiming, releasing and checking them,
//! and reporting the offline windows that close.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Weak},
    time::Duration,
};

use prost::Message as _;
use redis::Value;

use super::{
    conn::is_link,
    writer::{evalsha, text, Op},
    Shared,
};
use crate::{
    cluster::{arrived, envelope, Claimed, Handler, Local, Presence, Target},
    event::UndeliveredReason,
    message::Encoded,
    proto::cluster::Envelope,
    stats::bump,
    ClientId, JoinError, SendError,
};

/// After a reconnect: which of this node's ids does it still hold? Those
/// lost to another claim are closed (4001); those Redis forgot are claimed
/// again; what was buffered for held ones while the link was down is
/// delivered. Returns how many were closed, and the envelopes delivered.
///
/// Stops at the first command that cannot reach Redis (`Err`): the
/// recovery starts over on a fresh connection rather than wait out the
/// timeout of every id on one that broke again (a connection made while a
/// Redis Cluster master was dying kept its dead shard, and a recovery of
/// a hundred ids took minutes).
pub(super) async fn resync(
    shared: &Shared,
    handler: &dyn Handler,
) -> Result<(usize, Taken), redis::RedisError> {
    let _ = shared.renew_lease().await;
    let mut closed = 0;
    let mut taken = Taken::new();
    for client in handler.locals() {
        if client.epoch == 0 {
            // Never claimed (Redis was out of reach when it connected).
            match claim(shared, &client, false).await {
                Ok(claimed) => handler.reclaimed(&client, Some(claimed.epoch), claimed.buffered),
                Err(SendError::Unavailable(why)) => return Err(unreachable(why)),
                Err(_) => {}
            }
            continue;
        }
        let mut conn = shared.conn();
        let reply: redis::RedisResult<Vec<Value>> = shared
            .scripts
            .check
            .key(shared.keys.owner(&client.id))
            .key(shared.keys.buffer(&client.id))
            .arg(&shared.node)
            .arg(client.epoch)
            .invoke_async(&mut conn)
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) if is_link(&e) => return Err(e),
            Err(_) => continue,
        };
        let mut it = reply.into_iter();
        match it.next() {
            Some(Value::Int(0)) => {
                handler.replaced(&client.id, u64::MAX);
                closed += 1;
            }
            Some(Value::Int(1)) => {
                // Adopted while the link was down, perhaps: connected again.
                let mut zrem = redis::cmd("ZREM");
                zrem.arg(shared.keys.expiring()).arg(&*client.id);
                let _ = shared.many(vec![shared.present_cmd(&client), zrem]).await;
                let buffered = envelopes(it, &mut taken);
                bump(&shared.stats.recovered, buffered.len() as u64);
                handler.reclaimed(&client, None, buffered);
            }
            _ => match claim(shared, &client, false).await {
                Ok(claimed) => handler.reclaimed(&client, Some(claimed.epoch), claimed.buffered),
                Err(SendError::Unavailable(why)) => return Err(unreachable(why)),
                Err(_) => {}
            },
        }
    }
    Ok((closed, taken))
}

/// A claim that could not reach Redis, as a link error.
fn unreachable(why: String) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "claim failed", why))
}

/// Claims, every `reconnect_delay`, the id of a client that connected
/// while Redis (or its id's shard) could not be reached, until the claim
/// holds or the connection ends; then what was buffered for it is
/// delivered. While this node's link is down it waits: the recovery
/// claims such clients when the link is back.
pub(super) async fn reclaim(shared: &Shared, client: Local) {
    loop {
        tokio::time::sleep(shared.config.reconnect_delay).await;
        let Some(handler) = shared.handler() else {
            return;
        };
        if !shared.up.load(std::sync::atomic::Ordering::Acquire) {
            continue;
        }
        let locals = handler.locals();
        let here = (locals.iter()).find(|l| l.conn == client.conn && l.id == client.id);
        // Gone, or claimed meanwhile (by the recovery after an outage).
        if here.is_none_or(|l| l.epoch != 0) {
            return;
        }
        match claim(shared, &client, false).await {
            Ok(claimed) => {
                handler.reclaimed(&client, Some(claimed.epoch), claimed.buffered);
                return;
            }
            Err(SendError::Unavailable(_)) => {}
            Err(_) => return,
        }
    }
}

/// Envelopes by name (origin node, number).
pub(super) type Taken = HashSet<(String, u64)>;

/// Buffered envelopes from a script's reply, as messages for this node;
/// their names go to `taken`.
pub(super) fn envelopes(
    values: impl Iterator<Item = Value>,
    taken: &mut Taken,
) -> Vec<Arc<Encoded>> {
    values
        .filter_map(|v| match v {
            Value::BulkString(b) => Envelope::decode(b.as_slice()).ok(),
            _ => None,
        })
        .filter_map(|mut env| {
            taken.insert((env.origin_node.clone(), env.id));
            arrived(&mut env)
        })
        .collect()
}

/// Claims `client`'s id for this node; returns the claim number and what
/// was buffered for it in Redis.
///
/// The claim itself is one script on the id's slot; then, at once: this
/// node's presence gets the client, the id leaves the sets of members
/// away of the channels it had, its offline deadline is dropped, and the
/// previous owner's node is told (`K<epoch>:<id>`: it closes its
/// connection, 4001). Under the refuse policy, a holder the script names
/// has its lease checked first, and the script asked again.
pub(super) async fn claim(
    shared: &Shared,
    client: &Local,
    refuse: bool,
) -> Result<Claimed, SendError> {
    let unavailable = |e: redis::RedisError| SendError::Unavailable(e.to_string());
    let mut conn = shared.conn();
    let (mut holder, mut alive) = (String::new(), false);
    let mut asked = 0;
    let reply = loop {
        asked += 1;
        let reply: Vec<Value> = shared
            .scripts
            .claim
            .key(shared.keys.owner(&client.id))
            .key(shared.keys.buffer(&client.id))
            .arg(&shared.node)
            .arg(if refuse { "1" } else { "0" })
            .arg(&holder)
            .arg(if alive { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        match reply.first() {
            // Another holder each time we look (connects racing on several
            // nodes): refused after three looks rather than spinning.
            Some(Value::Int(-2)) if asked >= 3 => {
                return Err(SendError::NotConnected(client.id.clone()))
            }
            Some(Value::Int(-2)) if reply.len() == 2 => {
                let node = reply.into_iter().nth(1).and_then(text).unwrap_or_default();
                alive = redis::cmd("EXISTS")
                    .arg(shared.keys.lease(&node))
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                holder = node;
            }
            _ => break reply,
        }
    };
    let mut it = reply.into_iter();
    let epoch = match it.next().and_then(text).map(|e| e.parse::<u64>()) {
        Some(Ok(e)) => e,
        _ => return Err(SendError::NotConnected(client.id.clone())),
    };
    let (previous, was, late) = (
        it.next().and_then(text).unwrap_or_default(),
        it.next().and_then(text).unwrap_or_default(),
        matches!(it.next(), Some(Value::Int(1))),
    );
    let buffered = match it.next() {
        Some(Value::Array(envs)) => envelopes(envs.into_iter(), &mut Taken::new()),
        _ => Vec::new(),
    };
    let mut cmds = vec![shared.present_cmd(client)];
    cmds.extend(shared.away_cmds("SREM", &client.id, was.split(',')));
    if !late {
        let mut zrem = redis::cmd("ZREM");
        zrem.arg(shared.keys.expiring()).arg(&*client.id);
        cmds.push(zrem);
    }
    if !previous.is_empty() {
        let mut told = redis::cmd(shared.publish_command());
        told.arg(shared.keys.node_channel(&previous))
            .arg(format!("K{epoch}:{}", client.id));
        cmds.push(told);
    }
    if let Err(e) = shared.many(cmds).await {
        tracing::debug!(error = %e, id = %client.id, "claim: follow-up commands failed");
    }
    Ok(Claimed { epoch, buffered })
}

/// A node is gone (nobody listens on its channel): each of its clients
/// becomes away, so what is sent to it from now on waits in Redis; its
/// presence and its place in its channels' sets of nodes are dropped.
/// Returns the clients made away, with their channels.
///
/// In steps (the keys are on several slots): the presence hash is read;
/// each client joins its channels' sets of members away, then is made
/// away ([`ADOPT`](super::scripts::ADOPT)) and given an offline deadline.
/// Several nodes may adopt the same node at once: each step is
/// idempotent.
///
/// `seen` is when the node was found gone (Redis's clock, ms): a client
/// its node checked or claimed since is left alone (the node's link was
/// down a moment and is back; see [`ADOPT`](super::scripts::ADOPT)).
pub(super) async fn adopt(shared: &Shared, node: &str, seen: u64) -> Vec<(String, Vec<String>)> {
    let mut conn = shared.conn();
    let records: HashMap<String, String> = match redis::cmd("HGETALL")
        .arg(shared.keys.presence(node))
        .query_async(&mut conn)
        .await
    {
        Ok(records) => records,
        Err(e) => {
            tracing::debug!(error = %e, node, "reading a gone node's presence failed");
            return Vec::new();
        }
    };
    tracing::info!(
        node,
        clients = records.len(),
        "a node is gone: its clients are away"
    );
    let clients: Vec<(String, Vec<String>)> = (records.into_iter())
        .map(|(id, record)| {
            let channels = serde_json::from_str::<Presence>(&record)
                .map(|p| p.channels)
                .unwrap_or_default();
            (id, channels)
        })
        .collect();
    let ttl = (shared.settings.offline_ttl.as_millis() as u64).max(1);
    let mut first = Vec::new();
    let mut adopt = Vec::new();
    let mut channels: HashSet<&String> = HashSet::new();
    for (id, chans) in &clients {
        first.extend(shared.away_cmds("SADD", id, chans.iter().map(String::as_str)));
        channels.extend(chans);
        let mut cmd = evalsha(&shared.scripts.adopt, [shared.keys.owner(id)]);
        cmd.arg(node).arg(chans.join(",")).arg(ttl).arg(seen);
        adopt.push(cmd);
    }
    let _ = shared.many(first).await;
    let mut made = Vec::new();
    let mut last = Vec::new();
    if let Ok(results) = shared.many(adopt).await {
        for ((id, chans), r) in clients.iter().cloned().zip(results) {
            if let Ok(Value::Int(due)) = r {
                if due > 0 {
                    let mut zadd = redis::cmd("ZADD");
                    zadd.arg(shared.keys.expiring()).arg(due).arg(&id);
                    last.push(zadd);
                    made.push((id, chans));
                }
            }
        }
    }
    for channel in channels {
        let mut srem = redis::cmd("SREM");
        srem.arg(shared.keys.nodes_of(&shared.keys.channel(channel)))
            .arg(node);
        last.push(srem);
    }
    let mut del = redis::cmd("DEL");
    del.arg(shared.keys.presence(node));
    let mut srem = redis::cmd("SREM");
    srem.arg(shared.keys.nodes()).arg(node);
    last.extend([del, srem]);
    let _ = shared.many(last).await;
    made
}

/// Reports the offline windows that closed without the client coming
/// back (on any node: the script hands each to one node): what its buffer
/// held is `Undelivered` (`OfflineTimeout`), with receipts, as on one node.
pub(super) async fn expiry(shared: Weak<Shared>) {
    loop {
        let period = match shared.upgrade() {
            Some(s) => match s.handler() {
                Some(handler) => {
                    let ttl = s.settings.offline_ttl;
                    if !ttl.is_zero() {
                        report_expired(&s, &*handler).await;
                    }
                    (ttl / 8).clamp(Duration::from_millis(50), Duration::from_secs(1))
                }
                None => return,
            },
            None => return,
        };
        tokio::time::sleep(period).await;
    }
}

pub(super) async fn report_expired(shared: &Shared, handler: &dyn Handler) {
    let mut conn = shared.conn();
    let due: redis::RedisResult<Vec<String>> = shared
        .scripts
        .expiring
        .key(shared.keys.expiring())
        .arg(100)
        .invoke_async(&mut conn)
        .await;
    let Ok(due) = due else { return };
    let cmds = (due.iter())
        .map(|id| {
            evalsha(
                &shared.scripts.expire,
                [shared.keys.owner(id), shared.keys.buffer(id)],
            )
        })
        .collect();
    let Ok(results) = shared.many(cmds).await else {
        return;
    };
    let mut forget = Vec::new();
    for (id, r) in due.iter().zip(results) {
        let Ok(Value::Array(out)) = r else { continue };
        let mut out = out.into_iter();
        let channels = out.next().and_then(text).unwrap_or_default();
        forget.extend(shared.away_cmds("SREM", id, channels.split(',')));
        let msgs = match out.next() {
            Some(Value::Array(envs)) => envelopes(envs.into_iter(), &mut Taken::new()),
            _ => Vec::new(),
        };
        if !msgs.is_empty() {
            let id = ClientId::from(id.as_str());
            handler.undelivered(&id, msgs, UndeliveredReason::OfflineTimeout);
        }
    }
    let _ = shared.many(forget).await;
}

/// What other nodes see of a client here (`clients()` cluster-wide).
pub(super) fn presence(shared: &Shared, client: &Local) -> String {
    serde_json::to_string(&Presence::of(client, &shared.node)).unwrap_or_default()
}

/// Gives up `client`'s claim (see `Cluster::release`) and accounts for
/// what it still had queued: buffered, forwarded to the new owner, or
/// reported.
///
/// Away, the id joins its channels' sets of members away first (a
/// broadcast in between finds it still connected and skips it, as it
/// would a moment earlier), then the script makes it away and buffers
/// what was queued, then it gets its offline deadline.
pub(super) async fn release(shared: &Shared, client: &Local, away: bool, left: Vec<Arc<Encoded>>) {
    let Some(handler) = shared.handler() else {
        return;
    };
    let settings = &shared.settings;
    let id = &client.id;
    let mut first = vec![];
    let mut hdel = redis::cmd("HDEL");
    hdel.arg(shared.keys.presence(&shared.node)).arg(&**id);
    first.push(hdel);
    if away {
        first.extend(shared.away_cmds("SADD", id, client.channels.iter().map(|c| c.as_str())));
    }
    let _ = shared.many(first).await;
    let mut inv = shared.scripts.release.prepare_invoke();
    inv.key(shared.keys.owner(id))
        .key(shared.keys.buffer(id))
        .arg(&shared.node)
        .arg(client.epoch)
        .arg(if away { "away" } else { "gone" })
        .arg((settings.offline_ttl.as_millis() as u64).max(1))
        .arg(settings.offline_max_messages)
        .arg(settings.offline_max_bytes)
        .arg(client.channels.join(","));
    for m in &left {
        let env = envelope(m, &shared.node, shared.next_id(), Target::Id(id), false);
        inv.arg(env.as_ref());
    }
    let mut conn = shared.conn();
    let reply = inv.invoke_async::<Vec<i64>>(&mut conn).await;
    match reply.as_deref() {
        Ok([0]) => {
            // Another claim holds the id: what was queued goes to it.
            for m in left {
                let env = envelope(&m, &shared.node, shared.next_id(), Target::Id(id), false);
                let op = Op::Send {
                    to: id.to_string(),
                    env,
                    encoded: m.clone(),
                };
                if let Err(e) = shared.enqueue(op) {
                    handler.undeliverable(&m, id, e);
                }
            }
        }
        Ok([1, kept, due]) => {
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(shared.keys.expiring()).arg(*due).arg(&**id);
            if let Err(e) = zadd.query_async::<()>(&mut conn).await {
                tracing::warn!(error = %e, %id, "setting the offline deadline failed");
            }
            let kept = (*kept).max(0) as usize;
            let over: Vec<_> = left.into_iter().skip(kept).collect();
            handler.undelivered(id, over, UndeliveredReason::OfflineFull);
        }
        Ok(_) => handler.undelivered(id, left, UndeliveredReason::Disconnected),
        Err(e) => {
            tracing::warn!(error = %e, %id, "releasing the id in redis failed");
            for m in left {
                handler.undeliverable(&m, id, SendError::Unavailable(e.to_string()));
            }
        }
    }
}

/// Asks the node that has `id` connected to add (`join`) or remove
/// `channel`, and waits (at most the command timeout) for its answer.
pub(super) async fn membership(
    shared: &Shared,
    id: &str,
    channel: &str,
    join: bool,
) -> Result<Option<Result<bool, JoinError>>, SendError> {
    let number = shared.next_id();
    let kind = if join { 'J' } else { 'L' };
    // Ids and channels are token characters (no space); the node id last.
    let frame = format!("{kind}{number}:{id} {channel} {}", shared.node);
    let (done, answer) = tokio::sync::oneshot::channel();
    shared.asked.lock().insert(number, done);
    let told = tell(shared, id, &frame).await;
    let told = match told {
        Ok(n) => n,
        Err(e) => {
            shared.asked.lock().remove(&number);
            return Err(SendError::Unavailable(e.to_string()));
        }
    };
    if told == 0 {
        shared.asked.lock().remove(&number);
        return Ok(None);
    }
    let answered = tokio::time::timeout(shared.config.command_timeout, answer).await;
    shared.asked.lock().remove(&number);
    match answered {
        Ok(Ok(answer)) => Ok(answer),
        _ => Err(SendError::Unavailable(format!(
            "the node of {id} did not answer within {:?}",
            shared.config.command_timeout
        ))),
    }
}

/// Encodes a membership answer: `t`/`f` (changed or not), `n` (not here),
/// `m<max>` (too many channels), `i<reason>` (invalid channel).
pub(super) fn encode_answer(answer: Option<Result<bool, JoinError>>) -> String {
    match answer {
        None => "n".into(),
        Some(Ok(true)) => "t".into(),
        Some(Ok(false)) => "f".into(),
        Some(Err(JoinError::TooManyChannels(max))) => format!("m{max}"),
        Some(Err(e)) => format!("i{e}"),
    }
}

/// The inverse of [`encode_answer`]; `None` when it does not parse.
pub(super) fn decode_answer(text: &str) -> Option<Option<Result<bool, JoinError>>> {
    let (kind, rest) = text.split_at_checked(1)?;
    Some(match kind {
        "n" => None,
        "t" => Some(Ok(true)),
        "f" => Some(Ok(false)),
        "m" => Some(Err(JoinError::TooManyChannels(rest.parse().ok()?))),
        "i" => Some(Err(JoinError::Unavailable(rest.to_owned()))),
        _ => return None,
    })
}

/// Publishes `frame` on the channel of the node that has `id` connected;
/// how many got it (0: no node has it connected).
pub(super) async fn tell(shared: &Shared, id: &str, frame: &str) -> redis::RedisResult<i64> {
    let mut conn = shared.conn();
    let (node, state): (Option<String>, Option<String>) = redis::cmd("HMGET")
        .arg(shared.keys.owner(id))
        .arg("node")
        .arg("state")
        .query_async(&mut conn)
        .await?;
    match node {
        Some(node) if state.as_deref() == Some("on") => {
            redis::cmd(shared.publish_command())
                .arg(shared.keys.node_channel(&node))
                .arg(frame)
                .query_async(&mut conn)
                .await
        }
        _ => Ok(0),
    }
}

/// The commands and helpers the id steps share.
impl Shared {
    /// `HSET` of `client`'s presence record in this node's presence hash.
    pub(super) fn present_cmd(&self, client: &Local) -> redis::Cmd {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(self.keys.presence(&self.node))
            .arg(&*client.id)
            .arg(presence(self, client));
        cmd
    }

    /// `SADD` or `SREM` of `id` in the sets of members away of `channels`.
    pub(super) fn away_cmds<'a>(
        &self,
        verb: &'static str,
        id: &str,
        channels: impl Iterator<Item = &'a str>,
    ) -> Vec<redis::Cmd> {
        (channels.filter(|c| !c.is_empty()))
            .map(|c| {
                let mut cmd = redis::cmd(verb);
                cmd.arg(self.keys.away(&self.keys.channel(c))).arg(id);
                cmd
            })
            .collect()
    }
}
