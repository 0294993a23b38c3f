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
//! detected). Each master is probed with a PING every probe interval.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures_util::future::join_all;
use redis::{
    cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo},
    PushKind, Value,
};
use tokio::sync::mpsc;

use super::{
    conn::Conn,
    stopped,
    subscriber::{announce, inbound, linked, mark, unlinked, wanted, Mark, SubOp},
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
        last.retain(|c, _| channels.contains(c));
        let mut numbered = true;
        for channel in &channels {
            if !last.contains_key(channel) {
                match mark(&shared, channel).await {
                    Ok(now) => {
                        last.insert(channel.clone(), now);
                    }
                    Err(_) => numbered = false,
                }
            }
        }
        let subscribed = numbered
            && join_all(channels.iter().map(|c| {
                let (mut conn, shared) = (conn.clone(), &shared);
                async move { bounded(shared, conn.ssubscribe(c)).await }
            }))
            .await
            .iter()
            .all(Result::is_ok);
        if subscribed {
            // What was pushed before is of the link that broke.
            while pushes.try_recv().is_ok() {}
            // Named on every shard (`CLIENT LIST` shows whose each
            // connection is); best effort.
            let mut name = redis::cmd("CLIENT");
            name.arg("SETNAME").arg(format!("wspool-{}", shared.node));
            let _ = name.query_async::<Value>(&mut conn).await;
            linked(
                &shared, &*handler, &channels, &mut first, &mut ready, &mut last,
            )
            .await;
            drop(handler);
            let mut probe = tokio::time::interval(shared.config.probe_interval);
            loop {
                tokio::select! {
                    _ = stopped(&mut stop) => return,
                    push = pushes.recv() => {
                        let Some(push) = push else { return };
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
                                let channel = shared.keys.channel(&c);
                                let now = mark(&shared, &channel).await.unwrap_or_default();
                                last.insert(channel.clone(), now);
                                channels.insert(channel.clone());
                                let r = bounded(&shared, conn.ssubscribe(&channel)).await;
                                announce(&shared, [&channel], true).await;
                                r
                            }
                            Some(SubOp::Unsubscribe(c)) => {
                                let channel = shared.keys.channel(&c);
                                last.remove(&channel);
                                channels.remove(&channel);
                                announce(&shared, [&channel], false).await;
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
                        let routing = RoutingInfo::MultiNode((
                            MultipleNodeRoutingInfo::AllMasters,
                            Some(ResponsePolicy::AllSucceeded),
                        ));
                        let ping = tokio::time::timeout(
                            shared.config.probe_interval.max(Duration::from_millis(100)),
                            conn.route_command(redis::cmd("PING"), routing),
                        );
                        if !matches!(ping.await, Ok(Ok(_))) { break; }
                    }
                }
            }
        }
        unlinked(&shared, &mut ready).await;
        // The slot map may be stale (a master died and its replica took
        // over; the client refreshes it on some errors, not on all): the
        // connection is made afresh from the seeds, which asks the cluster
        // where each slot is now.
        if let Topology::Cluster(seeds) = &shared.topology {
            match topology::open_cluster(seeds, shared.config.command_timeout).await {
                Ok((conn, fresh)) => {
                    shared.link.write().conn = conn;
                    pushes = fresh;
                }
                Err(e) => tracing::debug!(error = %e, "redis cluster: no connection yet"),
            }
        }
    }
}

/// A subscription command, bounded by the command timeout: it waits for
/// the server's confirmations, and one that never comes (its shard died
/// meanwhile) held the link down for good (two nodes of three stayed down
/// to the end of a soak after a master was killed).
async fn bounded(
    shared: &Shared,
    subscribed: impl std::future::Future<Output = redis::RedisResult<()>>,
) -> redis::RedisResult<()> {
    match tokio::time::timeout(shared.config.command_timeout, subscribed).await {
        Ok(r) => r,
        Err(_) => Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "no confirmation in time",
        ))),
    }
}
