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
    writer::{evalsha, tally, Op},
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
    // The last publication seen per subscribed pub/sub channel.
    let mut last: HashMap<String, Mark> = HashMap::new();
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
                        let now = mark(&shared, channel).await.unwrap_or_default();
                        last.insert(channel.clone(), now);
                    }
                }
                let list: Vec<&String> = channels.iter().collect();
                if sink.subscribe(&list).await.is_ok()
                    && linked(
                        &shared, &*handler, &channels, &mut first, &mut ready, &mut last,
                    )
                    .await
                {
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
                                        let channel = joining(&shared, &mut last, &c).await;
                                        let r = sink.subscribe(&channel).await;
                                        announce(&shared, [&channel], true).await;
                                        r
                                    }
                                    Some(SubOp::Unsubscribe(c)) => {
                                        let channel = leaving(&shared, &mut last, &c).await;
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
/// missed meanwhile is recovered, then `ClusterUp`. Returns whether it
/// was: a recovery that cannot reach Redis stops, the link is taken as
/// still down (no second `ClusterDown`), and made again.
pub(super) async fn relinked(
    shared: &Shared,
    handler: &dyn Handler,
    last: &mut HashMap<String, Mark>,
) -> bool {
    let started = std::time::Instant::now();
    shared.up.store(true, Ordering::Release);
    check_run(shared, handler).await;
    tracing::debug!("redis: recovery: ids");
    // Buffers first: what they held is not delivered to the clients
    // again from the histories.
    let (closed, taken) = match resync(shared, handler).await {
        Ok(done) => done,
        Err(e) => {
            tracing::debug!(error = %e, "redis: the recovery cannot reach redis: starting over");
            shared.up.store(false, Ordering::Release);
            return false;
        }
    };
    tracing::debug!("redis: recovery: histories");
    catch_up(shared, handler, last, &taken).await;
    handler.link(Link::Up { closed });
    tracing::info!(recovery = ?started.elapsed(), closed, "redis pub/sub link back");
    true
}

/// Every subscription of the link is made: recorded in Redis; after the
/// first time, what was missed meanwhile is recovered (`ClusterUp`); the
/// pool is told the link is ready (once). Returns whether the link is up
/// (false: the recovery could not reach Redis; see [`relinked`]).
pub(super) async fn linked(
    shared: &Shared,
    handler: &dyn Handler,
    channels: &HashSet<String>,
    first: &mut bool,
    ready: &mut Option<tokio::sync::oneshot::Sender<()>>,
    last: &mut HashMap<String, Mark>,
) -> bool {
    announce(shared, channels.iter(), true).await;
    if !std::mem::replace(first, false) && !relinked(shared, handler, last).await {
        return false;
    }
    if let Some(r) = ready.take() {
        let _ = r.send(());
    }
    true
}

/// The link could not be made, or broke: `ClusterDown` (once per
/// outage), the pool released if it waits for a first link, and a pause
/// before trying again.
pub(super) async fn unlinked(
    shared: &Shared,
    ready: &mut Option<tokio::sync::oneshot::Sender<()>>,
) {
    down(shared, ready);
    tokio::time::sleep(shared.config.reconnect_delay).await;
}

/// The link is down (reported once per outage); the first connect is
/// over, linked or not.
pub(super) fn down(shared: &Shared, ready: &mut Option<tokio::sync::oneshot::Sender<()>>) {
    broke(shared);
    if let Some(r) = ready.take() {
        let _ = r.send(());
    }
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

/// Pool channel `c` gets its first member here: numbered where it stands
/// before it is subscribed (a publication between the two shows as a gap
/// and is recovered, not skipped). Returns its pub/sub channel.
pub(super) async fn joining(shared: &Shared, last: &mut HashMap<String, Mark>, c: &str) -> String {
    let channel = shared.keys.channel(c);
    let now = mark(shared, &channel).await.unwrap_or_default();
    last.insert(channel.clone(), now);
    channel
}

/// Pool channel `c` lost its last member here: forgotten, and this node
/// no longer recorded among its nodes. Returns its pub/sub channel.
pub(super) async fn leaving(shared: &Shared, last: &mut HashMap<String, Mark>, c: &str) -> String {
    let channel = shared.keys.channel(c);
    last.remove(&channel);
    announce(shared, [&channel], false).await;
    channel
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
    last: &mut HashMap<String, Mark>,
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
    let Some((now, body)) = split_mark(payload) else {
        return malformed(shared, channel, "no publication number");
    };
    // Subscribed channels have an entry (set when subscribing).
    if let Some(prev) = last.get(channel).copied() {
        if !settle(shared, &*handler, channel, prev, now, body).await {
            return;
        }
    }
    // Marked as seen only once it parsed: garbage must not move the
    // count past the real publication of that number.
    if publication(shared, &*handler, channel, body, &Taken::new()) {
        last.insert(channel.to_owned(), now);
    }
}

/// Before a live publication `now` (its envelope `envelope`) is
/// delivered, with `prev` the last one seen on `channel`: whether it is
/// to be delivered (not seen already, not garbage); those it shows were
/// missed are recovered first, and a store that lost writes is reported.
async fn settle(
    shared: &Shared,
    handler: &dyn Handler,
    channel: &str,
    prev: Mark,
    now: Mark,
    envelope: &[u8],
) -> bool {
    if now.stamp <= prev.stamp {
        return false; // seen already (recovered from the history)
    }
    if follows(prev, now) {
        return true;
    }
    if !believable(shared, channel, now, envelope).await {
        return false;
    }
    if !next(prev, now) {
        let recovered = recover(shared, handler, channel, prev, now, &Taken::new()).await;
        after_recovery(shared, handler, channel, prev, now, recovered);
    }
    true
}

/// Where a pub/sub channel's numbering stands: the number and the stamp
/// of a publication. Numbers count a channel's publications (a jump says
/// some were missed, and how many); stamps tell publications apart when
/// numbers cannot: a store that lost its last writes (a replica promoted
/// before it had them; a restart from an old file) gives their numbers
/// again, to other publications, but stamps them later (see the
/// `PUBLISH` script: the store's clock, in microseconds). That rests on
/// the clocks of a master and its replicas agreeing to within a failover
/// (seconds), as claim numbers do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Mark {
    pub(super) seq: u64,
    pub(super) stamp: u64,
}

/// `<number>.<stamp>:<rest>`.
pub(super) fn split_mark(payload: &[u8]) -> Option<(Mark, &[u8])> {
    let colon = payload.iter().position(|b| *b == b':')?;
    let text = std::str::from_utf8(&payload[..colon]).ok()?;
    let (seq, stamp) = text.split_once('.')?;
    let mark = Mark {
        seq: seq.parse().ok()?,
        stamp: stamp.parse().ok()?,
    };
    Some((mark, &payload[colon + 1..]))
}

/// A stamp further than this past the last one seen (µs) is checked
/// against the store before it is believed.
const LEAP: u64 = 3_600 * 1_000_000;

/// Whether publication `now` follows `prev` as publications do: the next
/// number, stamped a little later (a channel quiet for over an hour is
/// checked once).
fn follows(prev: Mark, now: Mark) -> bool {
    next(prev, now) && now.stamp <= prev.stamp.saturating_add(LEAP)
}

/// Whether `now` is numbered right after `prev` (numbers come from Redis
/// and other nodes: no arithmetic on them may overflow).
fn next(prev: Mark, now: Mark) -> bool {
    prev.seq.checked_add(1) == Some(now.seq)
}

/// Whether a publication `now` that does not [follow](follows) the last
/// one seen is to be acted on: garbage (an envelope that does not decode,
/// a number ahead of the channel's counter, a stamp ahead of its history)
/// would otherwise report a false gap or loss, or hide the real
/// publications after it as seen.
async fn believable(shared: &Shared, channel: &str, now: Mark, envelope: &[u8]) -> bool {
    if Envelope::decode(envelope).is_err() {
        malformed(shared, channel, "undecodable envelope");
        return false;
    }
    let Ok(store) = mark(shared, channel).await else {
        return true; // unknown: not held back
    };
    if store.seq < now.seq || (store.stamp != 0 && store.stamp < now.stamp) {
        malformed(shared, channel, "number or stamp ahead of the channel's");
        return false;
    }
    true
}

/// After a live publication `now` that did not follow `prev` was
/// recovered up to (`recovered`: whether the store lost writes; `None`
/// when the history could not be read): a loss is reported. Unread, a
/// number at or below the last seen is one given again (its stamp is
/// later); above it, those between are reported as a gap.
fn after_recovery(
    shared: &Shared,
    handler: &dyn Handler,
    channel: &str,
    prev: Mark,
    now: Mark,
    recovered: Option<bool>,
) {
    match recovered {
        Some(false) => {}
        Some(true) => lost_writes(shared, handler, &[channel]),
        None if now.seq <= prev.seq => lost_writes(shared, handler, &[channel]),
        None => gap(shared, handler, channel, now.seq - prev.seq - 1),
    }
}

/// The store lacks publications this node saw on these channels, or gave
/// their numbers again: it lost writes (`ClusterDataLost`).
fn lost_writes(shared: &Shared, handler: &dyn Handler, channels: &[&str]) {
    tracing::warn!(
        ?channels,
        "redis lacks publications this node saw: it lost writes"
    );
    bump(&shared.stats.data_losses, 1);
    handler.link(Link::DataLost);
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
    last: &mut HashMap<String, Mark>,
) {
    let channel = shared.node_channel.as_str();
    let Some((epoch, rest)) = split_number(payload) else {
        return malformed(shared, channel, "no claim number");
    };
    let Some((now, body)) = split_mark(rest) else {
        return malformed(shared, channel, "no message number");
    };
    let prev = last.get(channel).copied().unwrap_or_default();
    if !settle(shared, handler, channel, prev, now, body).await {
        return;
    }
    if deliver_direct(shared, handler, epoch, body) {
        last.insert(channel.to_owned(), now);
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

/// Direct messages to this node after `after` and before `before` were
/// missed: deliver those in its history (`<seq>.<stamp>:<epoch>:<envelope>`;
/// `<seq>.<stamp>:-` went to a buffer, nothing to do), in order, unless
/// `taken` (delivered from a buffer already); report the rest as a gap of
/// channel `""`. Returns whether the store lost writes, `None` when its
/// history cannot be read now.
async fn recover_direct(
    shared: &Shared,
    handler: &dyn Handler,
    after: Mark,
    before: Mark,
    taken: &Taken,
) -> Option<bool> {
    let channel = shared.node_channel.as_str();
    let missed = from_history(shared, channel, after, before).await?;
    let mut recovered = 0;
    for entry in &missed.found {
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
    gap(shared, handler, channel, missed.missed);
    Some(missed.lost_writes)
}

/// `missed` publications of pub/sub channel `channel` (direct messages:
/// this node's channel) were missed and cannot be recovered: counted,
/// logged, reported (`ClusterGap`; the channel `""` for direct messages,
/// `*` for `all`).
fn gap(shared: &Shared, handler: &dyn Handler, channel: &str, missed: u64) {
    if missed == 0 {
        return;
    }
    shared.stats.gap(missed);
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

/// Publications on `channel` after `after` and before `before` were
/// missed: deliver those still in its history, in order; report the
/// rest. Returns whether the store lost writes, `None` when its history
/// cannot be read now (the caller says what happens to them). This
/// node's own channel: [`recover_direct`].
pub(super) async fn recover(
    shared: &Shared,
    handler: &dyn Handler,
    channel: &str,
    after: Mark,
    before: Mark,
    taken: &Taken,
) -> Option<bool> {
    if channel == shared.node_channel {
        return recover_direct(shared, handler, after, before, taken).await;
    }
    let missed = from_history(shared, channel, after, before).await?;
    bump(&shared.stats.recovered, missed.found.len() as u64);
    for body in &missed.found {
        publication(shared, handler, channel, body, taken);
    }
    gap(shared, handler, channel, missed.missed);
    Some(missed.lost_writes)
}

/// What a history holds of the publications between two marks.
struct Missed {
    /// Those it holds, in order, each once (without their marks).
    found: Vec<Vec<u8>>,
    /// How many it no longer holds.
    missed: u64,
    /// The store lost writes: it lacks publications the node saw, or
    /// gave their numbers again.
    lost_writes: bool,
}

/// What the history of pub/sub channel `channel` holds of the
/// publications stamped after `after` and before `before` (a `before`
/// stamped 0, unknown: numbered before it); `None` when it cannot be read
/// now (Redis out of reach; in a Redis Cluster, while the cluster is
/// failing over).
///
/// Counted from where the store and this node last agree: the newest
/// entry stamped no later than `after` (`after` itself, unless the store
/// lost writes), or `after` when the history no longer reaches back
/// there.
async fn from_history(shared: &Shared, channel: &str, after: Mark, before: Mark) -> Option<Missed> {
    let history: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg(shared.keys.history(channel))
        .arg(0)
        .arg(-1)
        .query_async(&mut shared.conn())
        .await
        .ok()?;
    let entries: Vec<(Mark, &[u8])> = history.iter().filter_map(|h| split_mark(h)).collect();
    let agreed = (entries.iter())
        .filter(|(m, _)| m.stamp <= after.stamp)
        .max_by_key(|(m, _)| m.stamp)
        .map(|(m, _)| m.seq);
    let mut found: Vec<(Mark, &[u8])> = (entries.into_iter())
        .filter(|(m, _)| m.stamp > after.stamp)
        .filter(|(m, _)| match before.stamp {
            0 => m.seq < before.seq,
            stamp => m.stamp < stamp,
        })
        .collect();
    found.sort_by_key(|(m, _)| m.stamp);
    found.dedup_by_key(|(m, _)| m.stamp);
    let lost_writes = before.seq <= after.seq || agreed.is_some_and(|seq| seq < after.seq);
    let from = agreed.or((!lost_writes).then_some(after.seq));
    let missed = from.map_or(0, |from| {
        (before.seq.saturating_sub(from.saturating_add(1))).saturating_sub(found.len() as u64)
    });
    let found = found.into_iter().map(|(_, e)| e.to_vec()).collect();
    Some(Missed {
        found,
        missed,
        lost_writes,
    })
}

/// Where the numbering of pub/sub channel `channel` stands: its counter
/// and the stamp of its newest history entry (0 when the history does
/// not have that number: it expired).
pub(super) async fn mark(shared: &Shared, channel: &str) -> redis::RedisResult<Mark> {
    let cmd = mark_cmd(shared, channel);
    let reply = shared
        .many(vec![cmd])
        .await?
        .pop()
        .unwrap_or(Ok(Value::Nil))?;
    let read = read_mark(reply)
        .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Parse, "an unreadable mark")))?;
    Ok(read.unwrap_or_default())
}

fn mark_cmd(shared: &Shared, channel: &str) -> redis::Cmd {
    let keys = [shared.keys.sequence(channel), shared.keys.history(channel)];
    evalsha(&shared.scripts.mark, keys)
}

/// A `MARK` reply: `None` when it does not parse, `Some(None)` when the
/// channel has no counter (nothing published yet, or Redis lost it).
fn read_mark(reply: Value) -> Option<Option<Mark>> {
    let (counter, head): (Vec<u8>, Vec<u8>) = redis::from_redis_value(reply).ok()?;
    if counter.is_empty() {
        return Some(None);
    }
    let seq = std::str::from_utf8(&counter).ok()?.parse().ok()?;
    let stamp = split_mark(&head)
        .filter(|(m, _)| m.seq == seq)
        .map_or(0, |(m, _)| m.stamp);
    Some(Some(Mark { seq, stamp }))
}

/// After a reconnect: what was published to the subscribed channels while
/// the link was down is recovered from their histories.
pub(super) async fn catch_up(
    shared: &Shared,
    handler: &dyn Handler,
    last: &mut HashMap<String, Mark>,
    taken: &Taken,
) {
    let channels: Vec<String> = last.keys().cloned().collect();
    let cmds = channels.iter().map(|c| mark_cmd(shared, c)).collect();
    let Ok(marks) = shared.many(cmds).await else {
        return;
    };
    let mut lost = Vec::new();
    for (channel, now) in channels.iter().zip(marks) {
        // A mark that could not be read: left for the next catch-up.
        let Some(now) = now.ok().and_then(read_mark) else {
            continue;
        };
        let Some(prev) = last.get_mut(channel) else {
            continue;
        };
        let Some(now) = now else {
            // The counter is gone: Redis lost its data (reported by
            // `check_run`); numbering starts again.
            *prev = Mark::default();
            continue;
        };
        if now == *prev {
            continue;
        }
        // Everything stamped after what this node saw. A store behind
        // what it saw (a master promoted after a failover lacks the last
        // writes of the one it replaced: replication is asynchronous), or
        // one that gave those numbers again, lost writes; numbering
        // follows the store from here, and what it stamped later is
        // recovered, not taken for what was seen.
        // Up to `now`, not past it: what is published after `now` was
        // read comes live too.
        let upto = Mark {
            seq: now.seq.saturating_add(1),
            stamp: if now.stamp == 0 {
                0
            } else {
                now.stamp.saturating_add(1)
            },
        };
        let recovered = recover(shared, handler, channel, *prev, upto, taken).await;
        // A history that cannot be read now leaves the mark where it
        // was: the next catch-up, or the next jump seen live, reads it.
        if let Some(lost_writes) = recovered {
            if lost_writes {
                lost.push(channel.as_str());
            }
            *prev = now;
        }
    }
    if !lost.is_empty() {
        lost_writes(shared, handler, &lost);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames from Redis (another node, or anything that publishes
    /// there): a mark parses only as two numbers that fit, and no number
    /// makes the arithmetic on it overflow.
    #[test]
    fn marks_from_redis_are_read_strictly() {
        let mark = |seq, stamp| Mark { seq, stamp };
        assert_eq!(split_mark(b"7.123:env"), Some((mark(7, 123), &b"env"[..])));
        for bad in [
            &b"7:env"[..],
            b"7.:env",
            b".5:env",
            b"7.5",
            b"-1.5:env",
            b"7.99999999999999999999:env",
            b"\xff.5:env",
        ] {
            assert_eq!(split_mark(bad), None, "{bad:?}");
        }
        let top = mark(u64::MAX, u64::MAX);
        assert!(!next(top, mark(0, 0)), "no wrap past the largest number");
        assert!(!follows(top, mark(0, 0)));
        assert!(follows(mark(1, 10), mark(2, 11)));
        assert!(
            !follows(mark(1, 10), mark(2, 10 + LEAP + 1)),
            "a leap is checked"
        );
    }
}
