//! The pub/sub link in a Redis Cluster: sharded subscriptions
//! (`SSUBSCRIBE`), each on the connection to the shard that owns the
//! channel's slot, so a publication goes to that shard only.
//!
//! The cluster connection delivers the messages as RESP3 pushes. A
//! shard's connection lost (`Disconnection`), or a subscription the server
//! dropped (`sunsubscribe`: its slot moved, or its master became a
//! replica after a failover) breaks the link: every subscription is made
//! again (each goes to the shard that owns it now; the slot map is
//! refreshed on the way: the connection is made afresh, from the seeds),
//! then the same recovery as after any broken link runs (ids checked, buffers and histories read, lost data
//! detected). Each master is probed with a PING every probe interval, and
//! the slots' masters (`CLUSTER SLOTS`) are compared with those the link
//! was made with: a change (a failover that completed after the link was
//! made, a slot moved) makes the link again.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures_util::future::join_all;
use redis::{
    cluster_async::ClusterConnection,
    cluster_routing::{
        MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo, SingleNodeRoutingInfo,
    },
    PushKind, Value,
};
use tokio::sync::mpsc;

use super::{
    conn::Conn,
    stopped,
    subscriber::{announce, down, inbound, joining, leaving, linked, mark, wanted, Mark, SubOp},
    topology::{self, Pushes, Topology},
    Shared,
};

/// Keeps the sharded subscriptions (see the [module docs](self)).
pub(super) async fn subscriber(
    shared: Arc<Shared>,
    mut subs: mpsc::UnboundedReceiver<SubOp>,
    mut pushes: Pushes,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut first = true;
    let mut stop = shared.stop.subscribe();
    // The last publication seen per subscribed pub/sub channel.
    let mut last: HashMap<String, Mark> = HashMap::new();
    loop {
        let Some(handler) = shared.handler() else {
            return;
        };
        let Conn::Cluster(mut conn, _) = shared.conn() else {
            return;
        };
        // Changes queued before this point are in the list below.
        while subs.try_recv().is_ok() {}
        let mut channels = wanted(&shared, &*handler);
        tracing::debug!(channels = channels.len(), "redis cluster: linking");
        last.retain(|c, _| channels.contains(c));
        let mut numbered = true;
        for channel in &channels {
            if !last.contains_key(channel) {
                match mark(&shared, channel).await {
                    Ok(now) => {
                        last.insert(channel.clone(), now);
                    }
                    Err(e) => {
                        tracing::debug!(channel, error = %e, "redis cluster: a channel's mark could not be read");
                        numbered = false;
                    }
                }
            }
        }
        // Every master answers first: a connection made while a master
        // was dying still names it in its slot map, and the client did not
        // always notice the replica taking over (every command to that
        // shard timed out, and the recovery with them, for minutes).
        let subscribed = masters_answer(&mut conn, shared.config.command_timeout).await
            && numbered
            && join_all(channels.iter().map(|c| {
                let (mut conn, shared) = (conn.clone(), &shared);
                async move { bounded(shared, conn.ssubscribe(c)).await }
            }))
            .await
            .iter()
            .all(Result::is_ok);
        // Where each slot's master is as this link is made: a link made
        // while a failover is under way can subscribe where the channel's
        // slot will not be served once the replica is promoted (seen under
        // load: broadcasts on the killed shard's channel never came back),
        // so a change of it remakes the link.
        let map = if subscribed {
            slot_map(&mut conn, shared.config.command_timeout).await
        } else {
            None
        };
        if subscribed {
            // What was pushed before is of the link that broke.
            while pushes.try_recv().is_ok() {}
            // Named on every shard (`CLIENT LIST` shows whose each
            // connection is); best effort.
            let mut name = redis::cmd("CLIENT");
            name.arg("SETNAME").arg(format!("wspool-{}", shared.node));
            let _ = bounded(&shared, name.query_async::<Value>(&mut conn)).await;
            tracing::debug!("redis cluster: subscribed");
            let up = linked(
                &shared, &*handler, &channels, &mut first, &mut ready, &mut last,
            )
            .await;
            drop(handler);
            let mut probe = tokio::time::interval(shared.config.probe_interval);
            if up {
                loop {
                    tokio::select! {
                        _ = stopped(&mut stop) => return,
                        push = pushes.recv() => {
                            // No more pushes (the connection's sender is gone):
                            // broken, as a disconnection is.
                            let Some(push) = push else {
                                tracing::debug!("redis cluster: the connection's pushes ended");
                                break;
                            };
                            match push.kind {
                                PushKind::SMessage => {
                                    if let [channel, payload, ..] = push.data.as_slice() {
                                        if let (Value::BulkString(channel), Value::BulkString(payload)) = (channel, payload) {
                                            let channel = String::from_utf8_lossy(channel);
                                            inbound(&shared, &channel, payload, &mut last).await;
                                        }
                                    }
                                }
                                PushKind::Disconnection => break,
                                // Dropped by the server (not asked for): its
                                // slot moved, or its shard failed over.
                                PushKind::SUnsubscribe => {
                                    let dropped = match push.data.first() {
                                        Some(Value::BulkString(c)) => channels.contains(&*String::from_utf8_lossy(c)),
                                        _ => false,
                                    };
                                    if dropped { break; }
                                }
                                _ => {}
                            }
                        }
                        op = subs.recv() => {
                            let r = match op {
                                Some(SubOp::Subscribe(c)) => {
                                    let channel = joining(&shared, &mut last, &c).await;
                                    channels.insert(channel.clone());
                                    let r = bounded(&shared, conn.ssubscribe(&channel)).await;
                                    announce(&shared, [&channel], true).await;
                                    r
                                }
                                Some(SubOp::Unsubscribe(c)) => {
                                    let channel = leaving(&shared, &mut last, &c).await;
                                    channels.remove(&channel);
                                    bounded(&shared, conn.sunsubscribe(&channel)).await
                                }
                                Some(SubOp::Barrier(done)) => {
                                    let _ = done.send(());
                                    Ok(())
                                }
                                None => return,
                            };
                            if r.is_err() { break; }
                        }
                        _ = probe.tick() => {
                            let limit = shared.config.probe_interval.max(Duration::from_millis(100));
                            if !masters_answer(&mut conn, limit).await { break; }
                            if let (Some(was), Some(now)) = (&map, slot_map(&mut conn, limit).await) {
                                if *was != now {
                                    tracing::info!("redis cluster: the slots' masters changed; subscribing again");
                                    break;
                                }
                            }
                        }
                    }
                }
            }
        } else {
            tracing::debug!("redis cluster: subscribing failed; trying again");
        }
        down(&shared, &mut ready);
        // The connection the link was made on is let go at once: the Redis
        // client resubscribes a connection by itself when it reconnects
        // (on the writer's next command), and a node that counts itself
        // down would then look alive to the others. They would publish to
        // it rather than take its clients as away and buffer for them, and
        // it would drop what arrived and read it back from the histories,
        // which are shorter than buffers (seen as
        // `missed_traffic_is_recovered` finding nothing buffered).
        drop(conn);
        reopen(&shared, &mut pushes).await;
        tokio::time::sleep(shared.config.reconnect_delay).await;
        // And again: the slot map may be stale (a master died and its
        // replica took over; the client refreshes it on some errors, not
        // on all), and a connection made afresh from the seeds asks the
        // cluster where each slot is now.
        reopen(&shared, &mut pushes).await;
    }
}

/// Makes the cluster connection afresh from the seeds (with no
/// subscriptions); the old one is let go once nothing holds it.
async fn reopen(shared: &Shared, pushes: &mut Pushes) {
    tracing::debug!("redis cluster: reopening the connection");
    if let Topology::Cluster(seeds) = &shared.topology {
        match topology::open_cluster(seeds, shared.config.command_timeout).await {
            Ok((conn, fresh)) => {
                shared.link.write().conn = conn;
                *pushes = fresh;
            }
            Err(e) => tracing::debug!(error = %e, "redis cluster: no connection yet"),
        }
    }
}

/// Whether every master in the connection's slot map answers a `PING`
/// within `limit`.
async fn masters_answer(conn: &mut ClusterConnection, limit: Duration) -> bool {
    let routing = RoutingInfo::MultiNode((
        MultipleNodeRoutingInfo::AllMasters,
        Some(ResponsePolicy::AllSucceeded),
    ));
    let ping = tokio::time::timeout(limit, conn.route_command(redis::cmd("PING"), routing));
    matches!(ping.await, Ok(Ok(_)))
}

/// Which master serves each range of slots (`CLUSTER SLOTS`, asked of a
/// master), as `start-end@host:port` in slot order; `None` when it cannot
/// be read (no answer in `limit`, or not allowed): then no change is seen.
async fn slot_map(conn: &mut ClusterConnection, limit: Duration) -> Option<Vec<String>> {
    let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary);
    let mut cmd = redis::cmd("CLUSTER");
    cmd.arg("SLOTS");
    let answer = tokio::time::timeout(limit, conn.route_command(cmd, routing));
    let Ok(Ok(Value::Array(ranges))) = answer.await else {
        return None;
    };
    let mut map: Vec<String> = ranges
        .iter()
        .filter_map(|range| {
            let Value::Array(parts) = range else {
                return None;
            };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
                (parts.first(), parts.get(1), parts.get(2))
            else {
                return None;
            };
            let host = match master.first() {
                Some(Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
                Some(Value::SimpleString(h)) => h.clone(),
                _ => return None,
            };
            let Some(Value::Int(port)) = master.get(1) else {
                return None;
            };
            Some(format!("{start}-{end}@{host}:{port}"))
        })
        .collect();
    map.sort();
    Some(map)
}

/// A command on the raw cluster connection (a subscription, which waits
/// for the server's confirmations; the connection's name), bounded by the
/// command timeout: one that never comes back (its shard died meanwhile)
/// held the link down for good (two nodes of three stayed down to the
/// end of a soak after a master was killed).
async fn bounded<T>(
    shared: &Shared,
    request: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    match tokio::time::timeout(shared.config.command_timeout, request).await {
        Ok(r) => r,
        Err(_) => Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "no confirmation in time",
        ))),
    }
}
