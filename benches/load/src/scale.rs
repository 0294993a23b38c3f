//! `cluster_100k`: 100,000 connections over six wspool nodes sharing one
//! Redis, and a `broadcast_all` each second that must reach all of them.
//!
//! One process holds at most ~19.9k sockets here (an fd limit of 20,000),
//! so the scale is reached the way a deployment would reach it: several
//! nodes, and the load generator split into one process per node
//! (`wspool-bench part`), each connecting from its own loopback source
//! address. Nothing is pinned: six nodes, six load processes and Redis
//! share the machine's two cores.
//!
//! The coordinator (this module's [`run`]) starts Redis and the nodes,
//! starts the parts and waits for each to report its clients connected,
//! then publishes through the admin API (`POST /api/broadcast_all`, which
//! answers with the cluster-wide recipient count) once a second, taking
//! the nodes in turn. Each part records publish-to-receive latency (one
//! clock: Unix time, see `client::now_ns`) and reports a histogram when
//! every message has reached every one of its clients, or when told the
//! run is over.

use std::{
    io::{BufRead, BufReader, Read as _, Write as _},
    net::{IpAddr, TcpStream},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{atomic::Ordering::Relaxed, mpsc, Arc},
    time::{Duration, Instant},
};

use base64::Engine as _;
use futures_util::StreamExt as _;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::{io::AsyncReadExt as _, sync::Semaphore};

use crate::{
    client::{self, Proto},
    free_port,
    proc_stats::{cpu_secs, cpu_split, rss_kib},
    scenarios::{Metrics, Recorder},
    Redis,
};

/// Nodes of the cluster, and load-generator processes (one per node).
const NODES: usize = 6;
/// Connections in all.
const CLIENTS: usize = 100_000;

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the scenario; `quick` publishes 3 broadcasts instead of 10.
pub fn run(quick: bool) -> Result<Metrics, String> {
    let broadcasts = if quick { 3 } else { 10 };
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let redis = Redis::start_unpinned();
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        let port = free_port();
        let child = Command::new(&exe)
            .args(["serve", "wspool", &port.to_string(), "--redis", &redis.url])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| e.to_string())?;
        nodes.push((port, Proc(child)));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for (port, _) in &nodes {
        // Ready when it accepts connections (startup, not a measurement).
        while TcpStream::connect(("127.0.0.1", *port)).is_err() {
            if Instant::now() > deadline {
                return Err("a node did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let pid = |(_, p): &(u16, Proc)| p.0.id();
    let rss0: Vec<u64> = nodes.iter().map(|n| rss_kib(pid(n))).collect();
    let redis0 = redis_used_bytes(&redis.url);

    // The parts: one per node, each from its own source address.
    let started = Instant::now();
    let (lines_tx, lines) = mpsc::channel::<(usize, Value)>();
    let mut parts = Vec::new();
    let mut stdins: Vec<Option<ChildStdin>> = Vec::new();
    let per_part = CLIENTS / NODES;
    for (k, (port, _)) in nodes.iter().enumerate() {
        let n = if k + 1 == NODES {
            CLIENTS - per_part * k
        } else {
            per_part
        };
        let mut child = Command::new(&exe)
            .args(["part", &port.to_string()])
            .args(["--from", &format!("127.0.0.{}", k + 2)])
            .args(["--first", &(k * per_part).to_string()])
            .args(["--clients", &n.to_string()])
            .args(["--expect", &broadcasts.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| e.to_string())?;
        stdins.push(child.stdin.take());
        let out = child.stdout.take().ok_or("part stdout")?;
        let tx = lines_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    let _ = tx.send((k, v));
                }
            }
        });
        parts.push(Proc(child));
    }
    drop(lines_tx);
    let mut connect_s = [0.0; NODES];
    for _ in 0..NODES {
        let (k, v) = lines
            .recv_timeout(Duration::from_secs(600))
            .map_err(|_| "a part did not connect its clients in 10 minutes")?;
        if let Some(e) = v.get("error") {
            return Err(format!("part {k}: {e}"));
        }
        connect_s[k] = v["ready"].as_f64().ok_or("bad ready line")?;
    }
    let all_connected_s = started.elapsed().as_secs_f64();
    let rss1: Vec<u64> = nodes.iter().map(|n| rss_kib(pid(n))).collect();
    let redis1 = redis_used_bytes(&redis.url);

    // Broadcast once a second, from each node in turn.
    let node_cpu = || {
        nodes
            .iter()
            .map(|n| cpu_split(pid(n)))
            .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    let node_cpu0 = node_cpu();
    let redis_cpu0 = cpu_secs(redis.pid());
    let t0 = Instant::now();
    let mut min_recipients = u64::MAX;
    for seq in 0..broadcasts {
        let at = t0 + Duration::from_secs(seq as u64);
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        let port = nodes[seq % NODES].0;
        let recipients = broadcast_all(port, &client::payload(seq as u64))?;
        min_recipients = min_recipients.min(recipients);
    }
    // Each part reports once all its clients have every message; after a
    // 5-second drain the rest are told to report what they have.
    let mut reports = Vec::new();
    let mut deadline = Instant::now() + Duration::from_secs(5);
    while reports.len() < NODES {
        let wait = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(wait) {
            Ok((_, v)) => reports.push(v),
            Err(mpsc::RecvTimeoutError::Timeout) if stdins.iter().any(Option::is_some) => {
                // Closing stdin tells the rest to report what they have.
                stdins.iter_mut().for_each(|s| drop(s.take()));
                deadline = Instant::now() + Duration::from_secs(30);
            }
            Err(_) => return Err("a part ended without a report".into()),
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let node_cpu1 = node_cpu();
    let (user, system) = (node_cpu1.0 - node_cpu0.0, node_cpu1.1 - node_cpu0.1);
    let redis_cpu = cpu_secs(redis.pid()) - redis_cpu0;

    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let mut received = 0;
    for r in &reports {
        received += r["received"].as_u64().ok_or("bad report")?;
        for pair in r["hist"].as_array().ok_or("bad report")? {
            let (v, c) = (pair[0].as_u64(), pair[1].as_u64());
            let (Some(v), Some(c)) = (v, c) else {
                return Err("bad histogram".into());
            };
            hist.record_n(v, c).map_err(|e| e.to_string())?;
        }
    }
    let expected = (CLIENTS * broadcasts) as u64;
    let ms = |us: u64| us as f64 / 1000.0;
    let rss_total: u64 = rss1.iter().sum();
    let grown: u64 = rss1
        .iter()
        .zip(&rss0)
        .map(|(a, b)| a.saturating_sub(*b))
        .sum();
    let max_connect = connect_s.iter().copied().fold(0.0, f64::max);
    let mut m = Metrics::new();
    m.insert("connections".into(), CLIENTS as f64);
    m.insert("connect_all_s".into(), all_connected_s);
    m.insert("connect_slowest_part_s".into(), max_connect);
    m.insert("handshakes_per_s".into(), CLIENTS as f64 / all_connected_s);
    m.insert("min_recipients".into(), min_recipients as f64);
    m.insert("p50_ms".into(), ms(hist.value_at_quantile(0.5)));
    m.insert("p99_ms".into(), ms(hist.value_at_quantile(0.99)));
    m.insert("max_ms".into(), ms(hist.max()));
    m.insert("lost".into(), expected.saturating_sub(received) as f64);
    m.insert("deliveries".into(), received as f64);
    m.insert(
        "rss_mib_per_node".into(),
        rss_total as f64 / 1024.0 / NODES as f64,
    );
    m.insert(
        "rss_mib_max_node".into(),
        rss1.iter().copied().max().unwrap_or(0) as f64 / 1024.0,
    );
    m.insert("rss_kib_per_conn".into(), grown as f64 / CLIENTS as f64);
    let millions = received.max(1) as f64 / 1e6;
    m.insert("cpu_s_per_million".into(), (user + system) / millions);
    // Kernel time includes, on loopback, the receiving side's TCP work.
    m.insert("user_cpu_s_per_million".into(), user / millions);
    m.insert("system_cpu_s_per_million".into(), system / millions);
    m.insert("redis_cpu_share".into(), redis_cpu / elapsed);
    if let (Some(before), Some(after)) = (redis0, redis1) {
        // Presence and claims: what each connection costs Redis.
        let per_conn = (after - before) / CLIENTS as f64 / 1024.0;
        m.insert("redis_kib_per_conn".into(), per_conn);
    }
    drop(parts);
    drop(nodes);
    Ok(m)
}

/// Redis's `used_memory`, in bytes.
fn redis_used_bytes(url: &str) -> Option<f64> {
    let client = redis::Client::open(url).ok()?;
    let mut conn = client.get_connection().ok()?;
    let info: String = redis::cmd("INFO").arg("memory").query(&mut conn).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
}

/// `POST /api/broadcast_all` to the node on `port`; the cluster-wide
/// recipient count it answers.
fn broadcast_all(port: u16, payload: &str) -> Result<u64, String> {
    let data = base64::engine::general_purpose::STANDARD.encode(payload);
    let body = json!({ "cmd": 1, "cmdData": data }).to_string();
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    write!(
        s,
        "POST /api/broadcast_all HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    let json = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v: Value = serde_json::from_str(json).map_err(|_| format!("broadcast_all: {answer}"))?;
    v["recipients"]
        .as_u64()
        .ok_or_else(|| format!("broadcast_all: {answer}"))
}

/// One load-generator process: `n` clients (ids `s{first}`..) on the node
/// at `port`, from source address `from`. Prints `{"ready": seconds}` once
/// all are connected, then `{"received": n, "hist": [[us, count]..]}` when
/// every client has `expect` messages or stdin closes.
pub async fn part(port: u16, from: IpAddr, first: usize, n: usize, expect: u64) {
    let report = |v: Value| println!("{v}");
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(200));
    let mut tasks = Vec::with_capacity(n);
    for i in first..first + n {
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
            let id = format!("s{i}");
            client::connect_from(Proto::Wspool, port, &id, None, Some(from)).await
        }));
    }
    let mut clients = Vec::with_capacity(n);
    for t in tasks {
        match t.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(ws) => clients.push(ws),
            Err(e) => return report(json!({ "error": e })),
        }
    }
    report(json!({ "ready": started.elapsed().as_secs_f64() }));
    let rec = Recorder::new(0, 1);
    let all = expect * n as u64;
    let done = Arc::new(tokio::sync::Notify::new());
    for mut ws in clients {
        let (rec, done) = (rec.clone(), done.clone());
        tokio::spawn(async move {
            while let Some(Ok(m)) = ws.next().await {
                if let client::Incoming::Payload(p) = client::incoming(Proto::Wspool, &m) {
                    rec.record(p);
                    if rec.received.load(Relaxed) >= all {
                        done.notify_one();
                    }
                }
            }
        });
    }
    let mut stdin = tokio::io::stdin();
    let mut sink = Vec::new();
    tokio::select! {
        () = done.notified() => {}
        _ = stdin.read_to_end(&mut sink) => {}
    }
    let hist = rec.hist.lock();
    let pairs: Vec<[u64; 2]> = hist
        .iter_recorded()
        .map(|v| [v.value_iterated_to(), v.count_at_value()])
        .collect();
    report(json!({ "received": rec.received.load(Relaxed), "hist": pairs }));
}
