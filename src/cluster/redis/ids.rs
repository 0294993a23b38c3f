//! This node's ids in the cluster: claiming, releasing and checking them,
//! and reporting the offline windows that close.

use std::{
    collections::HashSet,
    sync::{Arc, Weak},
    time::Duration,
};

use prost::Message as _;
use redis::Value;

use super::Shared;
use crate::{
    client::ClientState,
    cluster::{arrived, envelope, Claimed, Target},
    event::UndeliveredReason,
    message::Encoded,
    proto::cluster::Envelope,
    stats::bump,
    ClientId, Delivery, SendError, WsPool,
};

/// After a reconnect: which of this node's ids does it still hold? Those
/// lost to another claim are closed (4001); those Redis forgot are claimed
/// again; what was buffered for held ones while the link was down is
/// delivered. Returns how many were closed, and the envelopes delivered.
pub(super) async fn resync(shared: &Shared, pool: &WsPool) -> (usize, Taken) {
    let _ = shared.renew_lease().await;
    let mut closed = 0;
    let mut taken = Taken::new();
    for state in pool.node().online() {
        let mut conn = shared.conn.clone();
        let info = presence(shared, &state, pool.node().channels_of(&state));
        let reply: redis::RedisResult<Vec<Value>> = shared
            .scripts
            .check
            .key(shared.keys.owner(&state.id))
            .key(shared.keys.buffer(&state.id))
            .key(shared.keys.presence(&shared.node))
            .arg(&shared.node)
            .arg(state.epoch())
            .arg(&*state.id)
            .arg(info)
            .invoke_async(&mut conn)
            .await;
        let Ok(reply) = reply else { continue };
        let mut it = reply.into_iter();
        match it.next() {
            Some(Value::Int(0)) => {
                pool.cluster_replaced(&state.id, u64::MAX);
                closed += 1;
            }
            Some(Value::Int(1)) => {
                let buffered = envelopes(it, &mut taken);
                bump(&shared.stats.recovered, buffered.len() as u64);
                pool.cluster_take_buffered(&state, buffered);
            }
            _ => {
                let channels = pool.node().channels_of(&state);
                if let Ok(claimed) = claim(shared, &state, channels, false).await {
                    state.set_epoch(claimed.epoch);
                    pool.cluster_take_buffered(&state, claimed.buffered);
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
    state: &ClientState,
    channels: Vec<String>,
    refuse: bool,
) -> Result<Claimed, SendError> {
    let info = presence(shared, state, channels);
    let mut conn = shared.conn.clone();
    let reply: Vec<Value> = shared
        .scripts
        .claim
        .key(shared.keys.owner(&state.id))
        .key(shared.keys.buffer(&state.id))
        .key(shared.keys.presence(&shared.node))
        .arg(&shared.keys.prefix)
        .arg(&shared.node)
        .arg(&*state.id)
        .arg(if refuse { "1" } else { "0" })
        .arg(info)
        .invoke_async(&mut conn)
        .await
        .map_err(|e| SendError::Unavailable(e.to_string()))?;
    let mut it = reply.into_iter();
    let epoch = match it.next() {
        Some(Value::Int(e)) if e >= 0 => e as u64,
        _ => return Err(SendError::NotConnected(state.id.clone())),
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
            Some(s) => match s.pool() {
                Some(pool) => {
                    let ttl = pool.config().offline_ttl();
                    if !ttl.is_zero() {
                        report_expired(&s, &pool).await;
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

pub(super) async fn report_expired(shared: &Shared, pool: &WsPool) {
    let mut conn = shared.conn.clone();
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
        pool.report_undelivered(&id, msgs, UndeliveredReason::OfflineTimeout);
    }
}

/// What other nodes see of a client here (`clients()` cluster-wide).
pub(super) fn presence(shared: &Shared, state: &ClientState, channels: Vec<String>) -> String {
    serde_json::json!({
        "id": &*state.id,
        "kind": &*state.kind,
        "channels": channels,
        "connectedAt": crate::client::epoch_ms(state.connected_at),
        "node": &shared.node,
    })
    .to_string()
}

/// Gives up `state`'s claim (see `Cluster::release`) and accounts for what
/// it still had queued: buffered, forwarded to the new owner, or reported.
pub(super) async fn release(
    shared: &Shared,
    state: &ClientState,
    channels: Vec<String>,
    away: bool,
    left: Vec<Arc<Encoded>>,
) {
    let Some(pool) = shared.pool() else { return };
    let config = pool.config();
    let mut inv = shared.scripts.release.prepare_invoke();
    inv.key(shared.keys.owner(&state.id))
        .key(shared.keys.buffer(&state.id))
        .key(shared.keys.presence(&shared.node))
        .arg(&shared.node)
        .arg(state.epoch())
        .arg(&*state.id)
        .arg(if away { "away" } else { "gone" })
        .arg((config.offline_ttl().as_millis() as u64).max(1))
        .arg(config.offline_max_messages())
        .arg(&shared.keys.prefix)
        .arg(channels.join(","))
        .arg(config.offline_max_bytes());
    for m in &left {
        let env = envelope(m, &shared.node, shared.next_id(), Target::Id(&state.id));
        inv.arg(env.as_ref());
    }
    let mut conn = shared.conn.clone();
    let reply = inv.invoke_async::<Vec<i64>>(&mut conn).await;
    let id = &state.id;
    match reply.as_deref() {
        Ok([0]) => {
            // Another claim holds the id: what was queued goes to it.
            for m in left {
                if let Err(e) = pool
                    .cluster()
                    .map_or(Ok(Delivery::Forwarded), |c| c.send(&m, id))
                {
                    pool.undeliverable(&m, id, e);
                }
            }
        }
        Ok([1, kept]) => {
            let kept = (*kept).max(0) as usize;
            let over: Vec<_> = left.into_iter().skip(kept).collect();
            pool.report_undelivered(id, over, UndeliveredReason::OfflineFull);
        }
        Ok(_) => pool.report_undelivered(id, left, UndeliveredReason::Disconnected),
        Err(e) => {
            tracing::warn!(error = %e, %id, "releasing the id in redis failed");
            for m in left {
                pool.undeliverable(&m, id, SendError::Unavailable(e.to_string()));
            }
        }
    }
}
