//! The soak: thousands of connections for minutes, with churn, and a
//! ledger that accounts for every message (SECURITY.md, "Soak").
//!
//! One process holds the server (`wspool::serve` on 127.0.0.1) and every
//! client, so the ledger sees both sides:
//!
//! - **senders** (1 in 50) connect once, read everything, and relay a direct
//!   message every `relay_every` to a random churner; their receipts are
//!   the relays' fates;
//! - **churners** connect as `u<k>` in channel `ch<k % 50>` (binary or
//!   JSON), read for a while (some stop reading for a while: slow readers,
//!   sent a burst of 32 KiB messages to fill their socket), then close
//!   cleanly, drop the TCP connection, or are replaced by a new connection
//!   with their id; then reconnect at once, within the offline window, or
//!   after it;
//! - **the server side** sends to random churners, broadcasts to random
//!   channels and broadcasts to all, at steady rates.
//!
//! At the end traffic stops, the relays in flight are awaited, and the pool
//! shuts down (what is queued is written or reported). The ledger then
//! holds: accepted (every copy the pool took: `send` Ok, the counts
//! broadcasts return, relays not refused at once, receipts) =
//! written (frames written to sockets) + reported (`Undelivered` events).
//! Written but never read is only possible for connections that were
//! dropped without a closing handshake (the documented at-most-once loss):
//! it is counted, not hidden. No copy may be read twice.

use std::{
    collections::{HashMap, HashSet},
    future::IntoFuture,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use prost::Message as _;
use serde_json::json;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
use wspool::{PoolEvent, SendMsg, WsPool};

use crate::client::Ws;

/// What the soak is asked to do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub connections: usize,
    pub duration: Duration,
    pub offline_ttl: Duration,
}

/// Tallies shared by every task. Relaxed atomics: independent counts,
/// read once at the end after every task has stopped.
#[derive(Default)]
struct Ledger {
    // accepted copies
    sent_ok: AtomicU64,
    broadcast_copies: AtomicU64,
    relays_sent: AtomicU64,
    senders_quiet: AtomicU64,
    // what clients read
    read: AtomicU64,
    read_receipts: AtomicU64,
    receipts_not_connected: AtomicU64,
    receipts_other: AtomicU64,
    /// (msg_id, recipient) pairs read: a second read is a duplicate.
    seen: Mutex<HashSet<(u64, u32)>>,
    duplicates: AtomicU64,
    // what the event stream said
    received_relays: AtomicU64,
    dropped_relays: AtomicU64,
    undelivered: Mutex<std::collections::BTreeMap<String, u64>>,
    undelivered_relay_with_receipt: AtomicU64,
    undelivered_receipts: AtomicU64,
    undelivered_total: AtomicU64,
    lagged: AtomicU64,
    /// Server sends accepted, and reports, by (msg_id, recipient).
    sends: Mutex<HashSet<(u64, u32)>>,
    reported: Mutex<HashSet<(u64, u32)>>,
    /// Per message id: copies a broadcast said it reached; reports of it
    /// (undelivered, or a relay dropped or refused at once); relays sent.
    broadcasts: Mutex<HashMap<u64, u64>>,
    reports_by_id: Mutex<HashMap<u64, u64>>,
    relays: Mutex<HashSet<u64>>,
    // churn
    connects: AtomicU64,
    refused_handshakes: AtomicU64,
    clean_closes: AtomicU64,
    abrupt_closes: AtomicU64,
    replacements: AtomicU64,
    slow_sessions: AtomicU64,
    closed_4008: AtomicU64,
    back_within: AtomicU64,
    back_after: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

const CHANNELS: usize = 50;

fn rss_kib() -> u64 {
    crate::proc_stats::rss_kib(std::process::id())
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Runs the soak; returns its report.
pub async fn run(plan: Plan) -> serde_json::Value {
    let baseline_tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let baseline_fds = open_fds();
    let pool = WsPool::builder()
        .offline_ttl(plan.offline_ttl)
        .message_ttl(Duration::from_secs(30))
        .slow_client_timeout(Duration::from_secs(3))
        .queue_max_messages(64)
        .max_connections_per_ip(usize::MAX)
        .event_buffer(1 << 18)
        .shutdown_timeout(Duration::from_secs(20))
        .build();
    // The ledger's tables are sized for the whole run up front, so that
    // their growth does not show as the process's: RSS then measures the
    // pool and the clients.
    let secs = plan.duration.as_secs() as usize;
    let ledger = Arc::new(Ledger {
        seen: Mutex::new(HashSet::with_capacity(secs * 3_000)),
        sends: Mutex::new(HashSet::with_capacity(secs * 2_000)),
        reported: Mutex::new(HashSet::with_capacity(secs * 500)),
        broadcasts: Mutex::new(HashMap::with_capacity(secs * 10)),
        reports_by_id: Mutex::new(HashMap::with_capacity(secs * 500)),
        relays: Mutex::new(HashSet::with_capacity(secs * 400)),
        ..Ledger::default()
    });
    let events = tokio::spawn(tally_events(pool.events(), ledger.clone()));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new()
        .merge(wspool::route())
        .layer(pool.layer());
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        wspool::serve(listener, app, &pool)
            .with_graceful_shutdown(async move {
                let _ = server_stopped.await;
            })
            .into_future(),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let next_id = Arc::new(AtomicU64::new(1));
    let senders = (plan.connections / 50).max(1);
    let churners = plan.connections - senders;
    let started = Instant::now();

    let mut tasks = Vec::new();
    for k in 0..churners {
        tasks.push(tokio::spawn(churner(
            k,
            addr,
            pool.clone(),
            ledger.clone(),
            stop.clone(),
            next_id.clone(),
            plan.offline_ttl,
        )));
        if k % 200 == 199 {
            tokio::task::yield_now().await;
        }
    }
    let mut sender_tasks = Vec::new();
    for s in 0..senders {
        sender_tasks.push(tokio::spawn(sender(
            s,
            churners,
            addr,
            ledger.clone(),
            stop.clone(),
            next_id.clone(),
        )));
    }
    let server_side = tokio::spawn(server_traffic(
        pool.clone(),
        churners,
        ledger.clone(),
        stop.clone(),
        next_id.clone(),
    ));

    // Sample memory while it runs.
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    while started.elapsed() < plan.duration {
        tick.tick().await;
        let t = started.elapsed().as_secs_f64();
        let stats = pool.stats();
        samples.push((t, rss_kib()));
        eprintln!(
            "soak t={t:>5.0}s conns={} offline={} out={} undelivered={} rss={} KiB",
            stats.connections,
            stats.offline_clients,
            stats.messages_out,
            stats.undelivered,
            rss_kib()
        );
    }

    // Stop the traffic, then let every relay the senders sent arrive.
    stop.store(true, Relaxed);
    server_side.await.expect("server side");
    // Senders stop sending (and say so) but keep reading until the pool
    // closes them; then every relay they sent must have arrived.
    let relays_settled = tokio::time::timeout(Duration::from_secs(30), async {
        while ledger.senders_quiet.load(Relaxed) < senders as u64
            || ledger.received_relays.load(Relaxed) < ledger.relays_sent.load(Relaxed)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .is_ok();
    // Every client reads until the pool closes it: what is queued is
    // written, what cannot be is reported.
    pool.shutdown().await;
    for t in tasks.into_iter().chain(sender_tasks) {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    let _ = stop_server.send(());
    let _ = server.await;
    let final_stats = pool.stats();
    // Let the event tally see the last events, then stop it.
    tokio::time::timeout(Duration::from_secs(10), async {
        while ledger.undelivered_total.load(Relaxed) < final_stats.undelivered {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .ok();
    events.abort();
    let _ = events.await;
    drop(pool);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let l = &ledger;
    // Per message, for server sends: read by its recipient or reported
    // (a message written to a connection then dropped unread is neither).
    let sends_unseen = {
        let seen = l.seen.lock();
        let reported = l.reported.lock();
        l.sends
            .lock()
            .iter()
            .filter(|key| !seen.contains(key) && !reported.contains(key))
            .count()
    };
    // Per message, for broadcasts and relays: copies read + reports against
    // what was accepted.
    let (broadcast_short, broadcast_over, relays_unseen) = {
        let mut reads: HashMap<u64, u64> = HashMap::new();
        for (id, _) in l.seen.lock().iter() {
            *reads.entry(*id).or_default() += 1;
        }
        let reports = l.reports_by_id.lock();
        let got =
            |id: &u64| reads.get(id).copied().unwrap_or(0) + reports.get(id).copied().unwrap_or(0);
        let (mut short, mut over) = (0u64, 0u64);
        for (id, n) in l.broadcasts.lock().iter() {
            let g = got(id);
            if g < *n {
                short += n - g;
                eprintln!("broadcast {id}: {n} accepted, {g} read or reported");
            } else {
                over += g - n;
            }
        }
        let unseen: Vec<u64> = l
            .relays
            .lock()
            .iter()
            .copied()
            .filter(|id| got(id) == 0)
            .collect();
        for id in unseen.iter().take(20) {
            eprintln!("relay {id}: neither read nor reported");
        }
        (short, over, unseen.len())
    };
    let g = |c: &AtomicU64| c.load(Relaxed);
    // Copies of messages (receipts apart): every one the pool took is
    // written or reported. Receipts go to the senders, which read all they
    // are written (they close cleanly), so receipts written = receipts read.
    let immediate_refusals = g(&l.dropped_relays) + g(&l.receipts_not_connected);
    let accepted = g(&l.sent_ok) + g(&l.broadcast_copies) + g(&l.relays_sent) - immediate_refusals;
    let written = final_stats.messages_out - g(&l.read_receipts);
    let reported = final_stats.undelivered - g(&l.undelivered_receipts);
    let unaccounted = accepted as i64 - written as i64 - reported as i64;
    let receipts_expected = immediate_refusals + g(&l.undelivered_relay_with_receipt);
    let read = g(&l.read);
    let slope = slope_kib_per_min(&samples, 120.0);
    let tasks_after = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let fds_after = open_fds();
    json!({
        "connections": plan.connections,
        "senders": senders,
        "duration_s": plan.duration.as_secs(),
        "offline_ttl_s": plan.offline_ttl.as_secs(),
        "accepted": accepted,
        "accepted_parts": {
            "send_ok": g(&l.sent_ok),
            "broadcast_copies": g(&l.broadcast_copies),
            "relays_sent": g(&l.relays_sent),
            "relays_refused_at_once": immediate_refusals,
        },
        "receipts": {
            "expected": receipts_expected,
            "read": g(&l.read_receipts),
            "reported_undelivered": g(&l.undelivered_receipts),
        },
        "written": written,
        "reported_undelivered": reported,
        "reported_by_reason": *l.undelivered.lock(),
        "unaccounted": unaccounted,
        "read_by_clients": read,
        "unexpected_receipts": g(&l.receipts_other),
        // Positive: written to connections dropped without a closing
        // handshake and never read (at most once, as documented); negative:
        // frames of an interrupted write (reported `WriteFailed`) that
        // arrived anyway.
        "written_minus_read": final_stats.messages_out as i64 - read as i64,
        "duplicates": g(&l.duplicates),
        "sends_neither_read_nor_reported": sends_unseen,
        "broadcast_copies_short": broadcast_short,
        "broadcast_copies_over": broadcast_over,
        "relays_neither_read_nor_reported": relays_unseen,
        "events_lagged": g(&l.lagged),
        "relays_settled": relays_settled,
        "dropped_at_push": final_stats.dropped,
        "churn": {
            "connects": g(&l.connects),
            "refused_handshakes": g(&l.refused_handshakes),
            "clean_closes": g(&l.clean_closes),
            "abrupt_closes": g(&l.abrupt_closes),
            "replacements": g(&l.replacements),
            "slow_sessions": g(&l.slow_sessions),
            "closed_4008": g(&l.closed_4008),
            "back_within_window": g(&l.back_within),
            "back_after_window": g(&l.back_after),
        },
        "leaks": {
            "registered_after": final_stats.connections,
            "offline_after": final_stats.offline_clients,
            "tasks_before": baseline_tasks,
            "tasks_after": tasks_after,
            "fds_before": baseline_fds,
            "fds_after": fds_after,
        },
        "rss_kib": samples.iter().map(|s| s.1).collect::<Vec<_>>(),
        "rss_slope_kib_per_min_after_2min": slope,
        "final_stats": final_stats,
    })
}

/// Least-squares slope of RSS over time after `warmup` seconds, KiB/min.
fn slope_kib_per_min(samples: &[(f64, u64)], warmup: f64) -> f64 {
    let pts: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.0 >= warmup)
        .map(|&(t, r)| (t / 60.0, r as f64))
        .collect();
    let n = pts.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let num: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let den: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

async fn tally_events(mut events: wspool::EventStream, l: Arc<Ledger>) {
    while let Some(e) = events.next().await {
        match e {
            PoolEvent::Message { .. } => bump(&l.received_relays),
            PoolEvent::Dropped { msg, .. } if !msg.from_client_id.is_empty() && msg.status == 0 => {
                bump(&l.dropped_relays);
                if let Ok(id) = msg.msg_id.parse::<u64>() {
                    *l.reports_by_id.lock().entry(id).or_default() += 1;
                }
            }
            PoolEvent::Undelivered { msg, reason, to } => {
                bump(&l.undelivered_total);
                if let (Ok(id), true) = (msg.msg_id.parse::<u64>(), msg.status == 0) {
                    *l.reports_by_id.lock().entry(id).or_default() += 1;
                }
                if let (Ok(id), Some(Ok(k))) = (
                    msg.msg_id.parse::<u64>(),
                    to.strip_prefix('u').map(str::parse::<u32>),
                ) {
                    l.reported.lock().insert((id, k));
                }
                *l.undelivered
                    .lock()
                    .entry(format!("{reason:?}"))
                    .or_default() += 1;
                let relayed = !msg.from_client_id.is_empty();
                if relayed && reason.receipt_status().is_some() {
                    bump(&l.undelivered_relay_with_receipt);
                }
                if msg.from_client_id.is_empty() && msg.status != 0 {
                    bump(&l.undelivered_receipts);
                }
            }
            PoolEvent::Lagged(n) => {
                l.lagged.fetch_add(n, Relaxed);
            }
            _ => {}
        }
    }
}

fn msg(id: u64, to: &str, channels: Vec<String>, size: usize) -> SendMsg {
    SendMsg {
        to_client_id: to.to_owned(),
        channel: channels,
        msg_id: id.to_string(),
        msg: "x".repeat(size),
        ..Default::default()
    }
}

async fn server_traffic(
    pool: WsPool,
    churners: usize,
    l: Arc<Ledger>,
    stop: Arc<AtomicBool>,
    ids: Arc<AtomicU64>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut n: u64 = 0;
    while !stop.load(Relaxed) {
        tick.tick().await;
        n += 1;
        // 100 sends a second to random churners.
        let to = format!("u{}", fastrand::usize(..churners));
        let id = ids.fetch_add(1, Relaxed);
        if pool.send(msg(id, &to, vec![], 32)).is_ok() {
            bump(&l.sent_ok);
            l.sends.lock().insert((id, to[1..].parse().unwrap()));
        }
        // 5 channel broadcasts a second.
        if n.is_multiple_of(20) {
            let ch = vec![format!("ch{}", fastrand::usize(..CHANNELS))];
            let id = ids.fetch_add(1, Relaxed);
            if let Ok(k) = pool.broadcast(msg(id, "", ch, 32)) {
                l.broadcast_copies.fetch_add(k as u64, Relaxed);
                l.broadcasts.lock().insert(id, k as u64);
            }
        }
        // Everyone every 30 s.
        if n.is_multiple_of(3000) {
            let id = ids.fetch_add(1, Relaxed);
            let k = pool.broadcast_all(msg(id, "", vec![], 32));
            l.broadcast_copies.fetch_add(k as u64, Relaxed);
            l.broadcasts.lock().insert(id, k as u64);
        }
    }
}

async fn connect(addr: SocketAddr, token: &str, json: bool) -> Option<Ws> {
    let path = if json { "/ws?format=json" } else { "/ws" };
    let mut req = format!("ws://{addr}{path}").into_client_request().ok()?;
    req.headers_mut()
        .insert("sec-websocket-protocol", token.parse().ok()?);
    tokio_tungstenite::connect_async(req)
        .await
        .ok()
        .map(|(ws, _)| ws)
}

/// Records one frame a client read; returns the receipt's status, text and
/// message id if it was one.
fn record(frame: &Message, me: u32, l: &Ledger) -> Option<(i32, String, u64)> {
    let m = match frame {
        Message::Binary(b) => SendMsg::decode(b.clone()).ok()?,
        Message::Text(t) => serde_json::from_str::<SendMsg>(t.as_str()).ok()?,
        _ => return None,
    };
    bump(&l.read);
    if m.from_client_id.is_empty() && m.status != 0 {
        bump(&l.read_receipts);
        return Some((m.status, m.callback_msg, m.msg_id.parse().unwrap_or(0)));
    }
    let id: u64 = m.msg_id.parse().unwrap_or(0);
    if !l.seen.lock().insert((id, me)) {
        bump(&l.duplicates);
    }
    None
}

/// Reads until the server closes (or the connection ends); returns the
/// close code.
async fn read_to_end(ws: &mut Ws, me: u32, l: &Ledger) -> Option<u16> {
    while let Some(Ok(frame)) = ws.next().await {
        if let Message::Close(c) = &frame {
            return c.as_ref().map(|c| u16::from(c.code));
        }
        record(&frame, me, l);
    }
    None
}

async fn churner(
    k: usize,
    addr: SocketAddr,
    pool: WsPool,
    l: Arc<Ledger>,
    stop: Arc<AtomicBool>,
    ids: Arc<AtomicU64>,
    offline_ttl: Duration,
) {
    let me = k as u32;
    let id = format!("u{k}");
    let token = format!("{id}_ch{}", k % CHANNELS);
    let json = k % 2 == 1;
    // Spread the first connects over 20 s.
    tokio::time::sleep(Duration::from_millis(fastrand::u64(..20_000))).await;
    let mut ws = None;
    loop {
        let mut conn = match ws.take() {
            Some(c) => c,
            None => match connect(addr, &token, json).await {
                Some(c) => c,
                None => {
                    if stop.load(Relaxed) {
                        return; // refused because the pool is shutting down
                    }
                    bump(&l.refused_handshakes);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
        };
        bump(&l.connects);
        // A session: read for 10-120 s (or until stop); some pause reading.
        let session = Duration::from_millis(fastrand::u64(10_000..120_000));
        let slow = fastrand::u8(..20) == 0;
        let ends_at = Instant::now() + session;
        let mut closed_by_server = None;
        if slow {
            bump(&l.slow_sessions);
            // Fill its socket and queue, then read nothing for a while.
            // Read nothing for 4-10 s while 32 KiB arrive every 10 ms: the
            // socket buffers fill in about 3 s, then the queue; a pause
            // long enough ends with 4008.
            let pause_until = Instant::now() + Duration::from_millis(fastrand::u64(4_000..10_000));
            while Instant::now() < pause_until && !stop.load(Relaxed) {
                let n = ids.fetch_add(1, Relaxed);
                if pool.send(msg(n, &id, vec![], 32 * 1024)).is_ok() {
                    bump(&l.sent_ok);
                    l.sends.lock().insert((n, me));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        loop {
            if stop.load(Relaxed) {
                // The end: read until the pool's shutdown closes us.
                read_to_end(&mut conn, me, &l).await;
                return;
            }
            let next = tokio::time::timeout(Duration::from_millis(500), conn.next()).await;
            match next {
                Err(_) => {}
                Ok(Some(Ok(Message::Close(c)))) => {
                    closed_by_server = Some(c.map(|c| u16::from(c.code)).unwrap_or(1005));
                    break;
                }
                Ok(Some(Ok(frame))) => {
                    record(&frame, me, &l);
                }
                Ok(_) => {
                    closed_by_server = Some(1006);
                    break;
                }
            }
            if Instant::now() >= ends_at {
                break;
            }
        }
        match closed_by_server {
            Some(4008) => bump(&l.closed_4008),
            Some(_) => {}
            None => match fastrand::u8(..3) {
                0 => {
                    bump(&l.clean_closes);
                    let _ = conn.close(None).await;
                    read_to_end(&mut conn, me, &l).await;
                }
                1 => {
                    bump(&l.abrupt_closes);
                    drop(conn);
                }
                _ => {
                    bump(&l.replacements);
                    // A new connection with our id: the old one is told 4001
                    // and read to its end; the new one carries on.
                    match connect(addr, &token, json).await {
                        Some(new) => {
                            read_to_end(&mut conn, me, &l).await;
                            ws = Some(new);
                            continue;
                        }
                        // Not replaced after all: just drop it.
                        None => drop(conn),
                    }
                }
            },
        }
        // Away: back at once, within the offline window, or after it.
        let away = match fastrand::u8(..3) {
            0 => Duration::ZERO,
            1 => {
                bump(&l.back_within);
                offline_ttl.mul_f64(fastrand::f64() * 0.5)
            }
            _ => {
                bump(&l.back_after);
                offline_ttl + Duration::from_millis(fastrand::u64(1_000..5_000))
            }
        };
        let until = Instant::now() + away;
        while Instant::now() < until {
            if stop.load(Relaxed) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

async fn sender(
    s: usize,
    churners: usize,
    addr: SocketAddr,
    l: Arc<Ledger>,
    stop: Arc<AtomicBool>,
    ids: Arc<AtomicU64>,
) {
    let me = (1_000_000 + s) as u32;
    let mut ws = loop {
        if let Some(ws) = connect(addr, &format!("sender{s}"), false).await {
            break ws;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut sending = true;
    loop {
        // Once stopped, say so and never send again: the end waits for
        // every sender to be quiet before it counts the relays in flight.
        if sending && stop.load(Relaxed) {
            sending = false;
            bump(&l.senders_quiet);
        }
        tokio::select! {
            _ = tick.tick(), if sending => {
                let to = format!("u{}", fastrand::usize(..churners));
                let id = ids.fetch_add(1, Relaxed);
                let m = msg(id, &to, vec![], 32);
                if ws.send(Message::binary(m.encode_to_vec())).await.is_err() {
                    return;
                }
                bump(&l.relays_sent);
                l.relays.lock().insert(id);
            }
            frame = ws.next() => {
                let Some(Ok(frame)) = frame else { return };
                if matches!(frame, Message::Close(_)) {
                    return;
                }
                match record(&frame, me, &l) {
                    Some((4, text, id)) if text == "recipient not connected" => {
                        bump(&l.receipts_not_connected);
                        *l.reports_by_id.lock().entry(id).or_default() += 1;
                    }
                    Some((3..=5, _, _)) | None => {}
                    Some(_) => bump(&l.receipts_other),
                }
            }
        }
    }
}
