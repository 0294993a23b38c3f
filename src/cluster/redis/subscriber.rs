//! The pub/sub link: what other nodes send this node, the recovery of what
//! it missed, and the link's upkeep.

use std::{
    collections::{HashMap, HashSet},
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use futures_util::StreamExt;
use prost::Message as _;
use redis::Value;
use tokio::sync::mpsc;

use super::{
    config::random_id,
    ids::{decode_answer, encode_answer, resync, Taken},
    stopped,
    writer::{tally, Op},
    Shared,
};
use crate::{
    cluster::{arrived, Arrival, Handler, Link, Reach},
    proto::cluster::Envelope,
    stats::bump,
};

/// Keeps the pub/sub link: subscribes this node's channel, `all`, and the
/// channels this node has members in; delivers what arrives, recovering
/// publications it missed from their history; probes the link and
/// reconnects (resubscribing, recovering, then checking this node's ids)
/// when it breaks or goes quiet.
pub(super) async fn subscriber(
    shared: Arc<Shared>,
    mut subs: mpsc::UnboundedReceiver<SubOp>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut first = true;
    let mut stop = shared.stop.subscribe();
    // The last publication number seen per subscribed pub/sub channel.
    let mut last: HashMap<String, u64> = HashMap::new();
    loop {
        let Some(handler) = shared.handler() else {
            return;
        };
        if !first {
            // Sentinel: the master may have moved.
            if let Err(e) = shared.relocate().await {
                tracing::debug!(error = %e, "redis: no master to reconnect to yet");
            }
        }
        let Some(client) = shared.client() else {
            return;
        };
        match client.get_async_pubsub().await {
            Ok(pubsub) => {
                let (mut sink, mut stream) = pubsub.split();
                // Changes queued before this point are in the list below.
                while subs.try_recv().is_ok() {}
                let channels = wanted(&shared, &*handler);
                last.retain(|c, _| channels.contains(c));
                // Numbered before subscribing: a publication between the two
                // shows as a gap and is recovered, not skipped.
                for channel in &channels {
                    if !last.contains_key(channel) {
                        let seq = sequence(&shared, channel).await.unwrap_or(0);
                        last.insert(channel.clone(), seq);
                    }
                }
                let list: Vec<&String> = channels.iter().collect();
                if sink.subscribe(&list).await.is_ok() {
                    linked(
                        &shared, &*handler, &channels, &mut first, &mut ready, &mut last,
                    )
                    .await;
                    drop(handler);
                    let mut probe = tokio::time::interval(shared.config.probe_interval);
                    loop {
                        tokio::select! {
                            _ = stopped(&mut stop) => return,
                            msg = stream.next() => match msg {
                                Some(msg) => {
                                    let (channel, payload) = (msg.get_channel_name(), msg.get_payload_bytes());
                                    inbound(&shared, channel, payload, &mut last).await
                                }
                                None => break,
                            },
                            op = subs.recv() => {
                                let r = match op {
                                    Some(SubOp::Subscribe(c)) => {
                                        let channel = shared.keys.channel(&c);
                                        let seq = sequence(&shared, &channel).await.unwrap_or(0);
                                        last.insert(channel.clone(), seq);
                                        let r = sink.subscribe(&channel).await;
                                        announce(&shared, [&channel], true).await;
                                        r
                                    }
                                    Some(SubOp::Unsubscribe(c)) => {
                                        let channel = shared.keys.channel(&c);
                                        last.remove(&channel);
                                        announce(&shared, [&channel], false).await;
                                        sink.unsubscribe(channel).await
                                    }
                                    Some(SubOp::Barrier(done)) => {
                                        let _ = done.send(());
                                        Ok(())
                                    }
                                    None => return,
                                };
                                if r.is_err() { break; }
                            }
                            // A failed command or a sentinel's announcement:
                            // make the link again only if the master moved.
                            () = shared.relink.notified() => {
                                if shared.relocate().await.unwrap_or(false) { break; }
                            }
                            _ = probe.tick() => {
                                let ping = tokio::time::timeout(
                                    shared.config.probe_interval.max(Duration::from_millis(100)),
                                    sink.ping::<Value>(),
                                );
                                if !matches!(ping.await, Ok(Ok(_))) { break; }
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "redis pub/sub connect failed"),
        }
        unlinked(&shared, &mut ready).await;
    }
}

/// The link is back (every subscription made again): what the node
/// missed meanwhile is recovered, then `ClusterUp`.
pub(super) async fn relinked(
    shared: &Shared,
    handler: &dyn Handler,
    last: &mut HashMap<String, u64>,
) {
    shared.up.store(true, Ordering::Release);
    check_run(shared, handler).await;
    // Buffers first: what they held is not delivered to the clients
    // again from the histories.
    let (closed, taken) = resync(shared, handler).await;
    catch_up(shared, handler, last, &taken).await;
    handler.link(Link::Up { closed });
}

/// Every subscription of the link is made: recorded in Redis; after the
/// first time, what was missed meanwhile is recovered (`ClusterUp`); the
/// pool is told the link is ready (once).
pub(super) async fn linked(
    shared: &Shared,
    handler: &dyn Handler,
    channels: &HashSet<String>,
    first: &mut bool,
    ready: &mut Option<tokio::sync::oneshot::Sender<()>>,
    last: &mut HashMap<String, u64>,
) {
    announce(shared, channels.iter(), true).await;
    if !std::mem::replace(first, false) {
        relinked(shared, handler, last).await;
    }
    if let Some(r) = ready.take() {
        let _ = r.send(());
    }
}

/// The link could not be made, or broke: `ClusterDown` (once per
/// outage), the pool released if it waits for a first link, and a pause
/// before trying again.
pub(super) async fn unlinked(
    shared: &Shared,
    ready: &mut Option<tokio::sync::oneshot::Sender<()>>,
) {
    broke(shared);
    if let Some(r) = ready.take() {
        let _ = r.send(());
    }
    tokio::time::sleep(shared.config.reconnect_delay).await;
}

/// The link broke: `ClusterDown`, once per outage.
fn broke(shared: &Shared) {
    if let Some(handler) = shared.handler() {
        if shared.up.swap(false, Ordering::AcqRel) {
            tracing::warn!("redis pub/sub link lost: reconnecting");
            bump(&shared.stats.outages, 1);
            handler.link(Link::Down);
        }
    }
}

/// The pub/sub channels this node subscribes: its own, `all`, and those
/// of the channels it has members in.
pub(super) fn wanted(shared: &Shared, handler: &dyn Handler) -> HashSet<String> {
    let mut channels: HashSet<String> = (handler.channels().iter())
        .map(|c| shared.keys.channel(c))
        .collect();
    channels.insert(shared.node_channel.clone());
    channels.insert(shared.keys.all());
    channels
}

/// Records that this node has (`present`) or no longer has members in
/// these pub/sub channels (`P:chnodes:*`): a publication that reaches
/// fewer nodes than have members looks for a node that is gone.
pub(super) async fn announce<'a>(
    shared: &Shared,
    channels: impl IntoIterator<Item = &'a String>,
    present: bool,
) {
    let named = channels
        .into_iter()
        .filter(|c| shared.keys.channel_name(c).is_some());
    let cmds = named
        .map(|channel| {
            let mut cmd = redis::cmd(if present { "SADD" } else { "SREM" });
            cmd.arg(shared.keys.nodes_of(channel)).arg(&shared.node);
            cmd
        })
        .collect();
    if let Err(e) = shared.many(cmds).await {
        tracing::debug!(error = %e, "recording this node's channels failed");
    }
}

/// Handles one pub/sub message.
pub(super) async fn inbound(
    shared: &Shared,
    channel: &str,
    payload: &[u8],
    last: &mut HashMap<String, u64>,
) {
    let Some(handler) = shared.handler() else {
        return;
    };
    if channel == shared.node_channel {
        if let Some(direct) = payload.strip_prefix(b"D") {
            return direct_message(shared, &*handler, direct, last).await;
        }
        node_message(shared, &*handler, payload);
        return;
    }
    let Some((seq, body)) = split_number(payload) else {
        return malformed(shared, channel, "no publication number");
    };
    // Subscribed channels have an entry (set when subscribing).
    let prev = last.get(channel).copied();
    if prev.is_some_and(|prev| seq <= prev) {
        return; // seen already (recovered from the history)
    }
    if let Some(prev) = prev.filter(|prev| seq > prev + 1) {
        // A jump: believe it only if the channel's counter got there (a
        // forged number would otherwise report a gap and make every real
        // publication after it look seen already).
        if sequence(shared, channel).await.is_ok_and(|now| now < seq) {
            return malformed(shared, channel, "number ahead of the channel's counter");
        }
        if !recover(shared, &*handler, channel, prev, seq, &Taken::new()).await {
            // The history cannot be read now: this one goes on, the
            // others are reported.
            gap(shared, &*handler, channel, seq - prev - 1);
        }
    }
    // Numbered as seen only once it parsed: garbage must not move the
    // count past the real publication of that number.
    if publication(shared, &*handler, channel, body, &Taken::new()) {
        match last.get_mut(channel) {
            Some(n) => *n = seq,
            None => {
                last.insert(channel.to_owned(), seq);
            }
        }
    }
}

/// Counts and logs a message from Redis that does not parse: another
/// node of another version, or something else writing to our channels.
/// It is dropped; nothing else is disturbed.
pub(super) fn malformed(shared: &Shared, channel: &str, what: &str) {
    bump(&shared.stats.malformed, 1);
    tracing::debug!(channel, what, "malformed message from redis: dropped");
}

/// `<number>:<rest>`.
pub(super) fn split_number(payload: &[u8]) -> Option<(u64, &[u8])> {
    let colon = payload.iter().position(|b| *b == b':')?;
    let n = std::str::from_utf8(&payload[..colon]).ok()?.parse().ok()?;
    Some((n, &payload[colon + 1..]))
}

/// A control message on this node's own channel: a takeover, a kick, a
/// join or leave request and its answer, or a count.
pub(super) fn node_message(shared: &Shared, handler: &dyn Handler, payload: &[u8]) {
    let channel = shared.node_channel.as_str();
    let Some((kind, rest)) = payload.split_first() else {
        return malformed(shared, channel, "empty");
    };
    let Some((number, body)) = split_number(rest) else {
        return malformed(shared, channel, "no number");
    };
    let text = || std::str::from_utf8(body).ok();
    match (kind, text()) {
        (b'K', Some(id)) => handler.replaced(id, number),
        (b'R', Some(count)) => match count.parse() {
            Ok(clients) => tally(shared, number, clients),
            Err(_) => malformed(shared, channel, "bad count"),
        },
        (b'X', Some(id)) => {
            handler.disconnect(id);
        }
        (b'J' | b'L', Some(request)) => {
            let mut parts = request.splitn(3, ' ');
            let (Some(id), Some(ch), Some(node)) = (parts.next(), parts.next(), parts.next())
            else {
                return malformed(shared, channel, "bad membership request");
            };
            let answer = handler.membership(id, ch, *kind == b'J');
            let frame = format!("A{number}:{}", encode_answer(answer));
            let node = node.to_owned();
            if shared.enqueue(Op::Reply { node, frame }).is_err() {
                tracing::debug!(number, "could not answer a membership request");
            }
        }
        (b'A', Some(answer)) => match decode_answer(answer) {
            Some(answer) => {
                if let Some(done) = shared.asked.lock().remove(&number) {
                    let _ = done.send(answer);
                }
            }
            None => malformed(shared, channel, "bad membership answer"),
        },
        _ => malformed(shared, channel, "unknown kind or not UTF-8"),
    }
}

/// A direct message for a client here, `<epoch>:<seq>:<envelope>`: those
/// numbered between the last seen and this one were missed (in flight
/// when the link broke) and are taken from the node's history first.
async fn direct_message(
    shared: &Shared,
    handler: &dyn Handler,
    payload: &[u8],
    last: &mut HashMap<String, u64>,
) {
    let channel = shared.node_channel.as_str();
    let Some((epoch, rest)) = split_number(payload) else {
        return malformed(shared, channel, "no claim number");
    };
    let Some((seq, body)) = split_number(rest) else {
        return malformed(shared, channel, "no message number");
    };
    let prev = last.get(channel).copied().unwrap_or(0);
    if seq <= prev {
        return; // recovered from the history already
    }
    if seq > prev + 1 {
        if sequence(shared, channel).await.is_ok_and(|now| now < seq) {
            return malformed(shared, channel, "number ahead of the node's counter");
        }
        if !recover_direct(shared, handler, prev, seq, &Taken::new()).await {
            gap(shared, handler, channel, seq - prev - 1);
        }
    }
    if deliver_direct(shared, handler, epoch, body) {
        last.insert(channel.to_owned(), seq);
    }
}

/// Delivers one direct message (`body`: its envelope) under claim
/// `epoch`; whether it parsed.
fn deliver_direct(shared: &Shared, handler: &dyn Handler, epoch: u64, body: &[u8]) -> bool {
    let channel = shared.node_channel.as_str();
    let Some(mut env) = Envelope::decode(body).ok() else {
        malformed(shared, channel, "undecodable direct message");
        return false;
    };
    let Some(msg) = arrived(&mut env) else {
        malformed(shared, channel, "undecodable message");
        return false;
    };
    bump(&shared.stats.received, 1);
    let reach = Reach::Id { id: &env.to, epoch };
    handler.deliver(Arrival {
        msg,
        reach,
        clients: true,
    });
    true
}

/// Direct messages `after < n < before` to this node were missed: deliver
/// those in its history (`<seq>:<epoch>:<envelope>`; `<seq>:-` went to a
/// buffer, nothing to do), in order, unless `taken` (delivered from a
/// buffer already); report the rest as a gap of channel `""`.
async fn recover_direct(
    shared: &Shared,
    handler: &dyn Handler,
    after: u64,
    before: u64,
    taken: &Taken,
) -> bool {
    let channel = shared.node_channel.as_str();
    let Some((found, missed)) = from_history(shared, channel, after, before).await else {
        return false;
    };
    let mut recovered = 0;
    for entry in &found {
        let Some((epoch, body)) = split_number(entry) else {
            continue; // `-`: buffered, not published
        };
        let name = Envelope::decode(body)
            .ok()
            .map(|env| (env.origin_node, env.id));
        if name.is_some_and(|name| taken.contains(&name)) {
            continue;
        }
        recovered += u64::from(deliver_direct(shared, handler, epoch, body));
    }
    bump(&shared.stats.recovered, recovered);
    gap(shared, handler, channel, missed);
    true
}

/// `missed` publications of pub/sub channel `channel` (direct messages:
/// this node's channel) were missed and cannot be recovered: counted,
/// logged, reported (`ClusterGap`; the channel `""` for direct messages,
/// `*` for `all`).
fn gap(shared: &Shared, handler: &dyn Handler, channel: &str, missed: u64) {
    if missed == 0 {
        return;
    }
    bump(&shared.stats.missed, missed);
    tracing::warn!(channel, missed, "publications missed and not recovered");
    let channel = if channel == shared.node_channel {
        String::new()
    } else {
        shared.keys.channel_name(channel).unwrap_or("*").to_owned()
    };
    handler.link(Link::Gap { channel, missed });
}

/// Delivers one channel or `all` publication here (unless this node sent
/// it: it reached its own members directly).
///
/// `taken` names the envelopes this node's clients already got from their
/// buffers (after a reconnect): those reach only its subscriptions.
/// Returns whether it parsed.
pub(super) fn publication(
    shared: &Shared,
    handler: &dyn Handler,
    channel: &str,
    body: &[u8],
    taken: &Taken,
) -> bool {
    let Ok(mut env) = Envelope::decode(body) else {
        malformed(shared, channel, "undecodable envelope");
        return false;
    };
    // (The set is empty but after a reconnect: no allocation then.)
    let clients = taken.is_empty() || !taken.contains(&(env.origin_node.clone(), env.id));
    let answer = env.count.then(|| (env.origin_node.clone(), env.id));
    let reached = if env.origin_node == shared.node {
        0
    } else {
        let Some(msg) = arrived(&mut env) else {
            malformed(shared, channel, "undecodable message");
            return false;
        };
        bump(&shared.stats.received, 1);
        let reach = match shared.keys.channel_name(channel) {
            // Through `via`, the i-th target: members of the earlier ones
            // were reached through those.
            Some(via) => match env.channels.iter().position(|c| c == via) {
                Some(i) => Reach::Channels {
                    these: &env.channels[i..=i],
                    skip: &env.channels[..i],
                },
                None => Reach::Channels {
                    these: &[],
                    skip: &[],
                },
            },
            None => Reach::All,
        };
        handler.deliver(Arrival {
            msg,
            reach,
            clients,
        })
    };
    if let Some((node, id)) = answer {
        if node == shared.node {
            tally(shared, id, reached as u64);
        } else {
            let frame = format!("R{id}:{reached}");
            if shared.enqueue(Op::Reply { node, frame }).is_err() {
                tracing::debug!(id, "could not answer a counted broadcast");
            }
        }
    }
    true
}

/// Publications `after < n < before` on `channel` were missed: deliver
/// those still in its history, in order; report the rest.
pub(super) async fn recover(
    shared: &Shared,
    handler: &dyn Handler,
    channel: &str,
    after: u64,
    before: u64,
    taken: &Taken,
) -> bool {
    let Some((found, missed)) = from_history(shared, channel, after, before).await else {
        // Not readable now: the caller says what happens to them.
        return false;
    };
    bump(&shared.stats.recovered, found.len() as u64);
    for body in &found {
        publication(shared, handler, channel, body, taken);
    }
    gap(shared, handler, channel, missed);
    true
}

/// What the history of pub/sub channel `channel` still holds of the
/// entries numbered `after < n < before`, in order, each once (without
/// its number), and how many of them it no longer holds; `None` when it
/// cannot be read now (Redis out of reach; in a Redis Cluster, while the
/// cluster is failing over).
async fn from_history(
    shared: &Shared,
    channel: &str,
    after: u64,
    before: u64,
) -> Option<(Vec<Vec<u8>>, u64)> {
    let history: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg(shared.keys.history(channel))
        .arg(0)
        .arg(-1)
        .query_async(&mut shared.conn())
        .await
        .ok()?;
    let mut found: Vec<(u64, &[u8])> = (history.iter())
        .filter_map(|h| split_number(h))
        .filter(|(n, _)| *n > after && *n < before)
        .collect();
    found.sort_by_key(|(n, _)| *n);
    found.dedup_by_key(|(n, _)| *n);
    let missed = (before - after - 1).saturating_sub(found.len() as u64);
    Some((found.into_iter().map(|(_, e)| e.to_vec()).collect(), missed))
}

/// The number of the last publication to pub/sub channel `channel`.
pub(super) async fn sequence(shared: &Shared, channel: &str) -> redis::RedisResult<u64> {
    let mut conn = shared.conn();
    let seq: Option<u64> = redis::cmd("GET")
        .arg(shared.keys.sequence(channel))
        .query_async(&mut conn)
        .await?;
    Ok(seq.unwrap_or(0))
}

/// After a reconnect: what was published to the subscribed channels while
/// the link was down is recovered from their histories.
pub(super) async fn catch_up(
    shared: &Shared,
    handler: &dyn Handler,
    last: &mut HashMap<String, u64>,
    taken: &Taken,
) {
    let channels: Vec<String> = last.keys().cloned().collect();
    let cmds = (channels.iter())
        .map(|channel| {
            let mut cmd = redis::cmd("GET");
            cmd.arg(shared.keys.sequence(channel));
            cmd
        })
        .collect();
    let Ok(counters) = shared.many(cmds).await else {
        return;
    };
    let mut behind = Vec::new();
    for (channel, now) in channels.into_iter().zip(counters) {
        // A counter that could not be read: left for the next catch-up.
        let now: Option<u64> = match now.map(redis::from_redis_value::<Option<u64>>) {
            Ok(Ok(now)) => now,
            _ => continue,
        };
        let Some(prev) = last.get_mut(&channel) else {
            continue;
        };
        match now {
            // A history that cannot be read now leaves the number where
            // it was: the next catch-up, or the next jump seen live,
            // reads it.
            Some(now) if now > *prev && channel == shared.node_channel => {
                if recover_direct(shared, handler, *prev, now + 1, taken).await {
                    *prev = now;
                }
            }
            Some(now) if now > *prev => {
                if recover(shared, handler, &channel, *prev, now + 1, taken).await {
                    *prev = now;
                }
            }
            // Behind what this node saw: a master promoted after a
            // failover lacks the last writes of the one it replaced
            // (replication is asynchronous). Numbering follows the store,
            // or later publications would pass for ones seen already.
            Some(now) if now < *prev => {
                behind.push((channel.clone(), *prev - now));
                *prev = now;
            }
            Some(_) => {}
            // The counter is gone: Redis lost its data (reported by
            // `check_run`); numbering starts again.
            None => *prev = 0,
        }
    }
    if !behind.is_empty() {
        tracing::warn!(
            ?behind,
            "redis lacks publications this node saw: it lost writes"
        );
        bump(&shared.stats.data_losses, 1);
        handler.link(Link::DataLost);
    }
}

/// Detects a Redis that lost its data (restarted without persistence, or
/// flushed): the run marker this node saw is gone.
pub(super) async fn check_run(shared: &Shared, handler: &dyn Handler) {
    let seen = shared.run.lock().clone();
    match mark_run(shared).await {
        Ok(now) if now != seen => {
            bump(&shared.stats.data_losses, 1);
            tracing::warn!("redis lost its data: ids are claimed again, buffers are gone");
            handler.link(Link::DataLost);
            *shared.run.lock() = now;
        }
        _ => {}
    }
}

/// Sets the run marker unless present; returns it.
pub(super) async fn mark_run(shared: &Shared) -> redis::RedisResult<String> {
    let mut conn = shared.conn();
    let (run,): (String,) = redis::pipe()
        .cmd("SET")
        .arg(shared.keys.run())
        .arg(random_id())
        .arg("NX")
        .ignore()
        .cmd("GET")
        .arg(shared.keys.run())
        .query_async(&mut conn)
        .await?;
    Ok(run)
}

pub(super) enum SubOp {
    Subscribe(String),
    Unsubscribe(String),
    /// Answered once every operation before it is done.
    Barrier(tokio::sync::oneshot::Sender<()>),
}
