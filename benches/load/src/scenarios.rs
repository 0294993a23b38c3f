//! The scenarios, run by the load generator against one server.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    client::{self, connect, incoming, now_ns, parse_payload, Incoming, Proto, Ws},
    proc_stats::{cpu_secs, cpu_split, rss_kib},
    sse,
};

pub type Metrics = BTreeMap<String, f64>;

pub struct Ctx {
    pub proto: Proto,
    pub port: u16,
    pub server_pid: u32,
    pub quick: bool,
    /// The other nodes of a cluster (port, process id): clients are spread
    /// over all nodes, and CPU is the sum of all.
    pub others: Vec<(u16, u32)>,
    /// The cluster's Redis, whose command count is reported.
    pub redis: Option<String>,
}

impl Ctx {
    /// The port client `i` connects to: the nodes in turn.
    fn port_for(&self, i: usize) -> u16 {
        match i % (self.others.len() + 1) {
            0 => self.port,
            k => self.others[k - 1].0,
        }
    }

    /// User and system CPU seconds used by every node so far.
    fn cpu(&self) -> (f64, f64) {
        let pids = std::iter::once(self.server_pid).chain(self.others.iter().map(|(_, p)| *p));
        pids.map(cpu_split)
            .fold((0.0, 0.0), |(u, s), (du, ds)| (u + du, s + ds))
    }
}

/// What the cluster's Redis has done so far (`INFO`, summed over the
/// masters of a Redis Cluster), when there is one.
async fn redis_usage(ctx: &Ctx) -> Option<Usage> {
    let url = ctx.redis.as_deref()?;
    // A Redis Cluster (`redis+cluster://seed,...`): every master, asked
    // through the first seed.
    let addresses = match url.strip_prefix("redis+cluster://") {
        Some(seeds) => {
            let seed = seeds.split(',').next()?.trim_end_matches('/');
            let nodes = text(seed, redis::cmd("CLUSTER").arg("NODES")).await?;
            let masters = nodes
                .lines()
                .filter(|l| l.contains("master") && !l.contains("fail"));
            let mut addresses: Vec<String> = masters
                .filter_map(|l| Some(l.split(' ').nth(1)?.split('@').next()?.to_owned()))
                .collect();
            addresses.sort();
            addresses
        }
        None => vec![url.trim_start_matches("redis://").to_owned()],
    };
    let mut usage = Usage::default();
    for address in addresses {
        let info = text(&address, redis::cmd("INFO").arg("all")).await?;
        let field = |name: &str| -> Option<f64> {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
        };
        // `cmdstat_evalsha:calls=N,usec=U,...`: the scripts' own time.
        let scripts = |key: &str| -> f64 {
            let line = info
                .lines()
                .find_map(|l| l.strip_prefix("cmdstat_evalsha:"));
            let value = line.and_then(|l| {
                l.split(',')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            });
            value.and_then(|v| v.parse().ok()).unwrap_or(0.0)
        };
        usage.commands += field("total_commands_processed")?;
        usage
            .cpu
            .push(field("used_cpu_user")? + field("used_cpu_sys")?);
        usage.script_calls += scripts("calls");
        usage.script_usec += scripts("usec");
    }
    Some(usage)
}

/// `cmd`'s text answer from the Redis at `address` (`host:port`).
async fn text(address: &str, cmd: &redis::Cmd) -> Option<String> {
    let client = redis::Client::open(format!("redis://{address}")).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    cmd.query_async(&mut conn).await.ok()
}

/// What Redis did so far, summed over its masters (a Redis Cluster),
/// with each master's CPU seconds.
#[derive(Default)]
struct Usage {
    commands: f64,
    cpu: Vec<f64>,
    script_calls: f64,
    script_usec: f64,
}

/// Sequence numbers from here on mark warm-up traffic, which is not
/// recorded.
const WARM_UP_SEQ: u64 = 9_000_000_000_000_000;

/// What subscribers record.
pub(crate) struct Recorder {
    pub(crate) hist: Mutex<Histogram<u64>>,
    pub(crate) received: AtomicU64,
    /// Per message, how many subscribers got it (fan-out flow control).
    counts: Vec<AtomicU32>,
    /// Woken when a message has reached every subscriber.
    complete: Notify,
    expected: u32,
}

impl Recorder {
    pub(crate) fn new(slots: usize, expected: u32) -> Arc<Self> {
        Arc::new(Recorder {
            hist: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram")),
            received: AtomicU64::new(0),
            counts: (0..slots).map(|_| AtomicU32::new(0)).collect(),
            complete: Notify::new(),
            expected,
        })
    }

    pub(crate) fn record(&self, payload: &[u8]) {
        let Some((seq, ts)) = parse_payload(payload) else {
            return;
        };
        if seq >= WARM_UP_SEQ {
            return;
        }
        let micros = now_ns().saturating_sub(ts) / 1000;
        let _ = self.hist.lock().record(micros.max(1));
        self.received.fetch_add(1, Relaxed);
        if let Some(c) = self.counts.get(seq as usize) {
            if c.fetch_add(1, Relaxed) + 1 == self.expected {
                self.complete.notify_one();
            }
        }
    }

    /// Until `expected` deliveries are recorded (woken as each message
    /// reaches every client), or `limit` has passed.
    async fn wait_for(&self, expected: u64, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.received.load(Relaxed) < expected {
            if tokio::time::timeout_at(deadline, self.complete.notified())
                .await
                .is_err()
            {
                break;
            }
        }
    }

    fn latency(&self, m: &mut Metrics) {
        let h = self.hist.lock();
        let ms = |us: u64| us as f64 / 1000.0;
        m.insert("p50_ms".into(), ms(h.value_at_quantile(0.5)));
        m.insert("p99_ms".into(), ms(h.value_at_quantile(0.99)));
        m.insert("max_ms".into(), ms(h.max()));
    }
}

/// Server CPU seconds per million of `count` (deliveries, connections,
/// handshakes).
fn per_million(cpu_s: f64, count: u64) -> f64 {
    cpu_s / (count.max(1) as f64 / 1e6)
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("  {msg:24} [{bar:30}] {pos}/{len}").expect("template"),
    );
    pb.set_message(what.to_owned());
    pb
}

/// A client that records what it receives and sends what it is given.
async fn run_client(
    proto: Proto,
    mut ws: Ws,
    rec: Arc<Recorder>,
    mut outgoing: Option<mpsc::UnboundedReceiver<Message>>,
) {
    loop {
        tokio::select! {
            m = ws.next() => {
                let Some(Ok(m)) = m else { return };
                match incoming(proto, &m) {
                    Incoming::Payload(p) => rec.record(p),
                    Incoming::Ping => { let _ = ws.send(client::pong()).await; }
                    Incoming::Other => {}
                }
            }
            out = async { match &mut outgoing { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                match out {
                    Some(msg) => if ws.send(msg).await.is_err() { return },
                    None => outgoing = None,
                }
            }
        }
    }
}

/// `n` clients in `room`, recording what they receive: WebSockets, or
/// the HTTP fallback's sessions for `wspool-sse` (at most 256 handshakes
/// at once).
async fn subscribers(
    ctx: &Ctx,
    n: usize,
    room: &str,
    rec: &Arc<Recorder>,
    what: &str,
) -> Result<(), String> {
    if ctx.proto != Proto::WspoolSse {
        for ws in connect_many(ctx, n, Some(room), 256, what).await? {
            tokio::spawn(run_client(ctx.proto, ws, rec.clone(), None));
        }
        return Ok(());
    }
    let pb = bar(n as u64, what);
    let gate = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (gate, port, room, pb) = (gate.clone(), ctx.port_for(i), room.to_owned(), pb.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
            let session = sse::open(port, &format!("c{i}"), Some(&room)).await;
            pb.inc(1);
            session
        }));
    }
    for t in tasks {
        let session = t.await.map_err(|e| e.to_string())??;
        let rec = rec.clone();
        tokio::spawn(session.run(move |p: &[u8]| rec.record(p)));
    }
    pb.finish_and_clear();
    Ok(())
}

/// Connects `n` clients (at most `parallel` handshakes at once).
async fn connect_many(
    ctx: &Ctx,
    n: usize,
    room: Option<&str>,
    parallel: usize,
    what: &str,
) -> Result<Vec<Ws>, String> {
    let pb = bar(n as u64, what);
    let gate = Arc::new(Semaphore::new(parallel));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let gate = gate.clone();
        let (proto, port, room) = (ctx.proto, ctx.port_for(i), room.map(str::to_owned));
        let pb = pb.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
            let ws = connect(proto, port, &format!("c{i}"), room.as_deref()).await;
            pb.inc(1);
            ws
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.map_err(|e| e.to_string())??);
    }
    pb.finish_and_clear();
    Ok(out)
}

/// One publisher, `n` subscribers in one room, 128-byte payloads, at most
/// `WINDOW` messages not yet at every subscriber.
pub async fn fanout(ctx: &Ctx, n: usize) -> Result<Metrics, String> {
    const WINDOW: u64 = 16;
    let duration = if ctx.quick {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(10)
    };
    let slots = 4_000_000;
    let rec = Recorder::new(slots, n as u32);
    subscribers(ctx, n, "room", &rec, "subscribers").await?;
    let mut publisher = connect(ctx.proto, ctx.port, "publisher", None).await?;
    let cpu0 = ctx.cpu();
    let redis0 = redis_usage(ctx).await;
    let start = Instant::now();
    let mut seq = 0u64;
    let pb = bar(duration.as_secs(), "publishing (s)");
    while start.elapsed() < duration && (seq as usize) < slots {
        if seq >= WINDOW {
            let old = &rec.counts[(seq - WINDOW) as usize];
            let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
            while old.load(Relaxed) < n as u32 {
                if tokio::time::timeout_at(deadline, rec.complete.notified())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
        let msg = client::publish(ctx.proto, "room", &client::payload(seq));
        publisher.send(msg).await.map_err(|e| e.to_string())?;
        seq += 1;
        pb.set_position(start.elapsed().as_secs());
        // Answer socket.io pings on the publisher, without blocking.
        while let Some(Some(Ok(m))) = futures_util::FutureExt::now_or_never(publisher.next()) {
            if ctx.proto == Proto::SocketIo && matches!(&m, Message::Text(t) if t.as_str() == "2") {
                let _ = publisher.send(client::pong()).await;
            }
        }
    }
    pb.finish_and_clear();
    // Drain: until every message reached every subscriber, or 2 s.
    let expected = seq * n as u64;
    rec.wait_for(expected, Duration::from_secs(2)).await;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu1 = ctx.cpu();
    let (user, system) = (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1);
    let received = rec.received.load(Relaxed);
    let mut m = Metrics::new();
    if let (Some(before), Some(after)) = (redis0, redis_usage(ctx).await) {
        m.insert(
            "redis_cmds_per_s".into(),
            (after.commands - before.commands) / elapsed,
        );
        let shares: Vec<f64> = (after.cpu.iter().zip(&before.cpu))
            .map(|(a, b)| (a - b) / elapsed)
            .collect();
        m.insert("redis_cpu_share".into(), shares.iter().sum());
        if shares.len() > 1 {
            // Each master's share, busiest first.
            let mut shares = shares;
            shares.sort_by(|a, b| b.total_cmp(a));
            for (i, share) in shares.iter().enumerate() {
                m.insert(format!("redis_cpu_share_master{i}"), *share);
            }
        }
        let calls = after.script_calls - before.script_calls;
        if calls > 0.0 {
            m.insert("redis_scripts_per_s".into(), calls / elapsed);
            let usec = after.script_usec - before.script_usec;
            m.insert("redis_usec_per_script".into(), usec / calls);
        }
    }
    m.insert("deliveries_per_s".into(), received as f64 / elapsed);
    m.insert("published".into(), seq as f64);
    m.insert("lost".into(), expected.saturating_sub(received) as f64);
    m.insert(
        "cpu_s_per_million".into(),
        per_million(user + system, received),
    );
    // Where it goes: on loopback the system time includes the receiving
    // side's TCP work.
    m.insert("user_cpu_s_per_million".into(), per_million(user, received));
    m.insert(
        "system_cpu_s_per_million".into(),
        per_million(system, received),
    );
    rec.latency(&mut m);
    Ok(m)
}

/// `n` clients, each sending to a random other, `rate` messages a second in all.
pub async fn direct(ctx: &Ctx, n: usize, rate: u64) -> Result<Metrics, String> {
    let duration = if ctx.quick {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(10)
    };
    let rec = Recorder::new(0, 1);
    let clients = connect_many(ctx, n, None, 256, "clients").await?;
    let mut senders = Vec::with_capacity(n);
    for ws in clients {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        tokio::spawn(run_client(ctx.proto, ws, rec.clone(), Some(rx)));
    }
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // One second of the same traffic, not recorded, first: the 10,000
    // client tasks were just spawned, and the first milliseconds of
    // polling them all measure the load generator, not the server.
    let mut send_for = async |length: Duration, first_seq: u64| {
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut sent = 0u64;
        while start.elapsed() < length {
            tick.tick().await;
            let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
            while sent < due {
                let from = (next() % n as u64) as usize;
                let mut to = (next() % n as u64) as usize;
                if to == from {
                    to = (to + 1) % n;
                }
                let payload = client::payload(first_seq + sent);
                let msg = client::direct(ctx.proto, &format!("c{to}"), &payload);
                let _ = senders[from].send(msg);
                sent += 1;
            }
        }
        sent
    };
    send_for(Duration::from_secs(1), WARM_UP_SEQ).await;
    let cpu0 = cpu_secs(ctx.server_pid);
    let sent = send_for(duration, 0).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while rec.received.load(Relaxed) < sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu = cpu_secs(ctx.server_pid) - cpu0;
    let received = rec.received.load(Relaxed);
    let mut m = Metrics::new();
    m.insert("sent_per_s".into(), sent as f64 / duration.as_secs_f64());
    m.insert("lost".into(), sent.saturating_sub(received) as f64);
    m.insert("cpu_s_per_million".into(), per_million(cpu, received));
    rec.latency(&mut m);
    Ok(m)
}

/// `n` idle connections: server memory per connection.
pub async fn idle(ctx: &Ctx, n: usize) -> Result<Metrics, String> {
    let rss0 = rss_kib(ctx.server_pid);
    let cpu0 = cpu_secs(ctx.server_pid);
    let rec = Recorder::new(0, 1);
    subscribers(ctx, n, "idle", &rec, "idle clients").await?;
    // Let the server settle (buffers released after the handshakes).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = rss_kib(ctx.server_pid);
    let cpu = cpu_secs(ctx.server_pid) - cpu0;
    let mut m = Metrics::new();
    m.insert(
        "rss_kib_per_conn".into(),
        (rss1.saturating_sub(rss0)) as f64 / n as f64,
    );
    m.insert("rss_mib_total".into(), rss1 as f64 / 1024.0);
    m.insert("cpu_s_per_million".into(), per_million(cpu, n as u64));
    Ok(m)
}

/// `n` idle connections that each receive a burst of `burst` broadcasts
/// (sent back to back, so queues and write buffers grow), then sit idle:
/// server memory per connection before and after. What a burst grows must
/// not stay with every idle connection.
pub async fn burst_idle(ctx: &Ctx, n: usize, burst: u64) -> Result<Metrics, String> {
    let rss0 = rss_kib(ctx.server_pid);
    let rec = Recorder::new(burst as usize, n as u32);
    subscribers(ctx, n, "idle", &rec, "idle clients").await?;
    let mut publisher = connect(ctx.proto, ctx.port, "publisher", None).await?;
    // As `idle`: the server settles after the handshakes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = rss_kib(ctx.server_pid);
    for seq in 0..burst {
        let msg = client::publish(ctx.proto, "idle", &client::payload(seq));
        publisher.send(msg).await.map_err(|e| e.to_string())?;
    }
    let expected = burst * n as u64;
    rec.wait_for(expected, Duration::from_secs(30)).await;
    // Every copy is read: the burst is over. Then the same settling time.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss2 = rss_kib(ctx.server_pid);
    let per_conn = |rss: u64| rss.saturating_sub(rss0) as f64 / n as f64;
    let mut m = Metrics::new();
    m.insert("rss_kib_per_conn".into(), per_conn(rss1));
    m.insert("rss_kib_per_conn_after_burst".into(), per_conn(rss2));
    m.insert("after_burst_ratio".into(), per_conn(rss2) / per_conn(rss1));
    m.insert(
        "lost".into(),
        expected.saturating_sub(rec.received.load(Relaxed)) as f64,
    );
    Ok(m)
}

/// `n` clients each sending `size`-byte messages (to a channel nobody is
/// in) as fast as the server reads them: the read path for large inbound
/// messages, which the read buffer's size governs.
pub async fn inbound(ctx: &Ctx, n: usize, size: usize) -> Result<Metrics, String> {
    let duration = if ctx.quick {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(10)
    };
    let clients = connect_many(ctx, n, None, 64, "senders").await?;
    let msg = client::publish(ctx.proto, "void", &"x".repeat(size));
    let sent = Arc::new(AtomicU64::new(0));
    let cpu0 = cpu_secs(ctx.server_pid);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut ws in clients {
        let (msg, sent) = (msg.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            while start.elapsed() < duration {
                if ws.send(msg.clone()).await.is_err() {
                    return;
                }
                sent.fetch_add(1, Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_secs(ctx.server_pid) - cpu0;
    let bytes = sent.load(Relaxed) as f64 * size as f64;
    let mut m = Metrics::new();
    m.insert("mib_in_per_s".into(), bytes / elapsed / (1 << 20) as f64);
    m.insert("cpu_s_per_gib".into(), cpu / (bytes / (1u64 << 30) as f64));
    Ok(m)
}

/// `n` clients connecting at once.
pub async fn connect_storm(ctx: &Ctx, n: usize) -> Result<Metrics, String> {
    let cpu0 = cpu_secs(ctx.server_pid);
    let start = Instant::now();
    let pb = bar(n as u64, "handshakes");
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (proto, port) = (ctx.proto, ctx.port);
        let pb = pb.clone();
        tasks.push(tokio::spawn(async move {
            let r = tokio::time::timeout(
                Duration::from_secs(30),
                connect(proto, port, &format!("c{i}"), None),
            )
            .await;
            pb.inc(1);
            r.ok().and_then(Result::ok)
        }));
    }
    // Kept open until the figures are taken.
    let mut keep = Vec::new();
    for t in tasks {
        if let Ok(Some(ws)) = t.await {
            keep.push(ws);
        }
    }
    let ok = keep.len() as u64;
    let elapsed = start.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let cpu = cpu_secs(ctx.server_pid) - cpu0;
    let mut m = Metrics::new();
    m.insert("handshakes_per_s".into(), ok as f64 / elapsed);
    m.insert("failed".into(), (n as u64 - ok) as f64);
    m.insert("cpu_s_per_million".into(), per_million(cpu, ok));
    drop(keep);
    Ok(m)
}
