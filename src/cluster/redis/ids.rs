//! This node's ids in the cluster: claiming, releasing and checking them,
//! and reporting the offline windows that close.

use std::{
    collections::HashSet,
    sync::{Arc, Weak},
    time::Duration,
};

use prost::Message as _;
use redis::Value;

use super::{writer::Op, Shared};
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
pub(super) async fn resync(shared: &Shared, handler: &dyn Handler) -> (usize, Taken) {
    let _ = shared.renew_lease().await;
    let mut closed = 0;
    let mut taken = Taken::new();
    for client in handler.locals() {
        let mut conn = shared.conn();
        let info = presence(shared, &client);
        let reply: redis::RedisResult<Vec<Value>> = shared
            .scripts
            .check
            .key(shared.keys.owner(&client.id))
            .key(shared.keys.buffer(&client.id))
            .key(shared.keys.presence(&shared.node))
            .arg(&shared.node)
            .arg(client.epoch)
            .arg(&*client.id)
            .arg(info)
            .invoke_async(&mut conn)
            .await;
        let Ok(reply) = reply else { continue };
        let mut it = reply.into_iter();
        match it.next() {
            Some(Value::Int(0)) => {
                handler.replaced(&client.id, u64::MAX);
                closed += 1;
            }
            Some(Value::Int(1)) => {
                let buffered = envelopes(it, &mut taken);
                bump(&shared.stats.recovered, buffered.len() as u64);
                handler.reclaimed(&client, None, buffered);
            }
            _ => {
                if let Ok(claimed) = claim(shared, &client, false).await {
                    handler.reclaimed(&client, Some(claimed.epoch), claimed.buffered);
                }
            }
        }
    }
    (closed, taken)
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

/// Claims `state`'s id for this node; returns the claim number and what
/// was buffered for it in Redis.
pub(super) async fn claim(
    shared: &Shared,
    client: &Local,
    refuse: bool,
) -> Result<Claimed, SendError> {
    let info = presence(shared, client);
    let mut conn = shared.conn();
    let reply: Vec<Value> = shared
        .scripts
        .claim
        .key(shared.keys.owner(&client.id))
        .key(shared.keys.buffer(&client.id))
        .key(shared.keys.presence(&shared.node))
        .arg(&shared.keys.prefix)
        .arg(&shared.node)
        .arg(&*client.id)
        .arg(if refuse { "1" } else { "0" })
        .arg(info)
        .invoke_async(&mut conn)
        .await
        .map_err(|e| SendError::Unavailable(e.to_string()))?;
    let mut it = reply.into_iter();
    let epoch = match it.next() {
        Some(Value::Int(e)) if e >= 0 => e as u64,
        _ => return Err(SendError::NotConnected(client.id.clone())),
    };
    Ok(Claimed {
        epoch,
        buffered: envelopes(it, &mut Taken::new()),
    })
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
    let reply: redis::RedisResult<Vec<Value>> = shared
        .scripts
        .expire
        .key(format!("{}:expiring", shared.keys.prefix))
        .arg(&shared.keys.prefix)
        .arg(100)
        .invoke_async(&mut conn)
        .await;
    let Ok(reply) = reply else { return };
    let mut it = reply.into_iter();
    while let (Some(Value::BulkString(id)), Some(Value::Int(n))) = (it.next(), it.next()) {
        let id = ClientId::from(String::from_utf8_lossy(&id).as_ref());
        let msgs = envelopes(it.by_ref().take(n.max(0) as usize), &mut Taken::new());
        handler.undelivered(&id, msgs, UndeliveredReason::OfflineTimeout);
    }
}

/// What other nodes see of a client here (`clients()` cluster-wide).
pub(super) fn presence(shared: &Shared, client: &Local) -> String {
    serde_json::to_string(&Presence::of(client, &shared.node)).unwrap_or_default()
}

/// Gives up `client`'s claim (see `Cluster::release`) and accounts for
/// what it still had queued: buffered, forwarded to the new owner, or
/// reported.
pub(super) async fn release(shared: &Shared, client: &Local, away: bool, left: Vec<Arc<Encoded>>) {
    let Some(handler) = shared.handler() else {
        return;
    };
    let settings = &shared.settings;
    let id = &client.id;
    let mut inv = shared.scripts.release.prepare_invoke();
    inv.key(shared.keys.owner(id))
        .key(shared.keys.buffer(id))
        .key(shared.keys.presence(&shared.node))
        .arg(&shared.node)
        .arg(client.epoch)
        .arg(&**id)
        .arg(if away { "away" } else { "gone" })
        .arg((settings.offline_ttl.as_millis() as u64).max(1))
        .arg(settings.offline_max_messages)
        .arg(&shared.keys.prefix)
        .arg(client.channels.join(","))
        .arg(settings.offline_max_bytes);
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
        Ok([1, kept]) => {
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
    let mut conn = shared.conn();
    let told: Result<i64, _> = shared
        .scripts
        .tell
        .key(shared.keys.owner(id))
        .arg(&shared.keys.prefix)
        .arg(frame)
        .invoke_async(&mut conn)
        .await;
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
