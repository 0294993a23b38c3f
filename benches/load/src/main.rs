//! wspool's load benchmark: wspool and its peers, side by side, in one run.
//!
//! ```text
//! cargo run --release -p wspool-bench -- all            # every server, every scenario, 3 rounds
//! cargo run --release -p wspool-bench -- all --quick    # at most about 5 minutes
//! ```
//!
//! Each run starts one server process pinned to core 0 (`taskset -c 0`)
//! and one load-generator process pinned to core 1, both this binary (the
//! Node server is `node/server.js`). Results: a table on stdout and
//! `target/bench/results.json`. See BENCHMARKS.md.

mod client;
mod cluster_soak;
/// The tests' Redis fixtures (one instance, Sentinel, a Redis Cluster):
/// `cluster-soak` and `cluster_fanout_sharded` start theirs with them.
#[path = "../../../tests/common/redis.rs"]
#[allow(dead_code)]
mod fixture;
mod proc_stats;
mod scale;
mod scenarios;
mod servers;
mod soak;
mod sse;

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};
use serde_json::{json, Value};

// The allocator experiment (BENCHMARKS.md): one of these (jemalloc if
// both), or glibc's.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SERVERS: [&str; 7] = [
    "wspool",
    "socketioxide",
    "node-ws",
    "bun",
    "naive-axum",
    "axum-floor",
    "limit",
];
const SCENARIOS: [&str; 8] = [
    "fanout_1k",
    "fanout_10k",
    "direct_10k",
    "idle_15k",
    "burst_idle_15k",
    "connect_10k",
    "cluster_fanout",
    "cluster_100k",
];

/// `cluster_fanout` over a six-instance Redis Cluster (three masters):
/// wspool only, and not in the default list (`--scenarios` names it).
const SHARDED: &str = "cluster_fanout_sharded";

/// The servers with a cluster mode over Redis: the only ones
/// `cluster_fanout` runs.
const CLUSTERED: [&str; 2] = ["wspool", "socketioxide"];

#[derive(Parser)]
#[command(about = "wspool load benchmark: wspool and its peers side by side")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every scenario against every server, in rounds.
    All {
        /// Shorter scenarios and one round: at most about 5 minutes.
        #[arg(long)]
        quick: bool,
        /// Rounds (default 3; 1 with --quick).
        #[arg(long)]
        rounds: Option<usize>,
        /// Comma-separated servers (default all).
        #[arg(long, value_delimiter = ',')]
        servers: Option<Vec<String>>,
        /// Comma-separated scenarios (default all).
        #[arg(long, value_delimiter = ',')]
        scenarios: Option<Vec<String>>,
    },
    /// Three nodes over Redis (one instance, Sentinel or a Redis Cluster,
    /// started here), clients with churn, faults on a schedule, and a
    /// ledger of every message (see CLUSTER.md).
    ClusterSoak {
        /// `single`, `sentinel` or `cluster`.
        #[arg(long, default_value = "cluster")]
        topology: String,
        /// Receivers (they churn).
        #[arg(long, default_value_t = 300)]
        receivers: usize,
        /// How long, in seconds.
        #[arg(long, default_value_t = 120.0)]
        seconds: f64,
        /// Write each node's log (`RUST_LOG`, default `wspool=info`) to
        /// DIR/<node id>.log.
        #[arg(long)]
        logs: Option<std::path::PathBuf>,
    },
    /// Hold thousands of connections for minutes with churn and steady
    /// traffic, and account for every message (see SECURITY.md).
    Soak {
        /// Connections (1 in 50 are stable senders, the rest churn).
        #[arg(long, default_value_t = 5_000)]
        connections: usize,
        /// How long, in minutes.
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// The pool's offline window, in seconds.
        #[arg(long, default_value_t = 15)]
        offline_ttl_secs: u64,
    },
    /// Run one server (used by `all`).
    Serve {
        server: String,
        port: u16,
        /// As one node of a cluster over this Redis.
        #[arg(long)]
        redis: Option<String>,
    },
    /// One load-generator process of `cluster_100k` (used by `all`).
    Part {
        /// The node's port.
        port: u16,
        /// Source address of every connection.
        #[arg(long)]
        from: std::net::IpAddr,
        /// First client number (ids are `s{N}`).
        #[arg(long)]
        first: usize,
        /// Clients to connect.
        #[arg(long)]
        clients: usize,
        /// Messages each client is to receive.
        #[arg(long)]
        expect: u64,
    },
    /// Run one scenario against a running server; prints its metrics as JSON.
    Load {
        scenario: String,
        server: String,
        port: u16,
        /// The server's process id, for its CPU time and memory.
        pid: u32,
        #[arg(long)]
        quick: bool,
        /// A second node of the same cluster: its port and process id.
        #[arg(long, num_args = 2, value_names = ["PORT", "PID"])]
        node2: Option<Vec<u32>>,
        /// The cluster's Redis, for its command counters.
        #[arg(long)]
        redis: Option<String>,
    },
}

/// The soaks' runtime: two workers (the machine's two cores).
fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn main() {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Soak {
            connections,
            minutes,
            offline_ttl_secs,
        } => {
            let rt = two_workers();
            let plan = soak::Plan {
                connections,
                duration: Duration::from_secs_f64(minutes * 60.0),
                offline_ttl: Duration::from_secs(offline_ttl_secs),
            };
            let report = rt.block_on(soak::run(plan));
            let out = workspace_root().join("target/bench/soak.json");
            let _ = std::fs::create_dir_all(out.parent().expect("dir"));
            let text = serde_json::to_string_pretty(&report).expect("json");
            let _ = std::fs::write(&out, &text);
            println!("{text}");
            let clean = report["unaccounted"] == 0
                && report["relays_settled"] == true
                && report["duplicates"] == 0
                && report["events_lagged"] == 0
                && report["unexpected_receipts"] == 0
                && report["leaks"]["registered_after"] == 0
                && report["leaks"]["offline_after"] == 0;
            eprintln!(
                "soak {}: report in {}",
                if clean { "passed" } else { "FAILED" },
                out.display()
            );
            std::process::exit(if clean { 0 } else { 1 });
        }
        Cmd::ClusterSoak {
            topology,
            receivers,
            seconds,
            logs,
        } => {
            let rt = two_workers();
            let plan = cluster_soak::Plan {
                topology,
                receivers,
                duration: Duration::from_secs_f64(seconds),
                logs,
            };
            let report = rt.block_on(cluster_soak::run(plan));
            println!("{}", serde_json::to_string_pretty(&report).expect("json"));
            // Receivers' broadcast copies are reported, not held to
            // exactly-once (see the module docs).
            let clean = report["unaccounted"] == 0 && report["duplicates"] == 0;
            eprintln!("cluster-soak {}", if clean { "passed" } else { "FAILED" });
            std::process::exit(if clean { 0 } else { 1 });
        }
        Cmd::Serve {
            server,
            port,
            redis,
        } => {
            // Logs to stderr when asked (cluster-soak's `--logs`).
            if let Ok(filter) = std::env::var("RUST_LOG") {
                tracing_subscriber::fmt()
                    .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                    .with_ansi(false)
                    .with_writer(std::io::stderr)
                    .init();
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build();
            let rt = rt.expect("runtime");
            if let Err(e) = rt.block_on(servers::serve(&server, port, redis.as_deref())) {
                eprintln!("server {server}: {e}");
                std::process::exit(1);
            }
        }
        Cmd::Part {
            port,
            from,
            first,
            clients,
            expect,
        } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(scale::part(port, from, first, clients, expect));
            // Leave without closing thousands of sockets one by one.
            std::process::exit(0);
        }
        Cmd::Load {
            scenario,
            server,
            port,
            pid,
            quick,
            node2,
            redis,
        } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let ctx = scenarios::Ctx {
                proto: client::Proto::of(&server),
                port,
                server_pid: pid,
                quick,
                others: node2.map(|v| vec![(v[0] as u16, v[1])]).unwrap_or_default(),
                redis,
            };
            let result = rt.block_on(async {
                match scenario.as_str() {
                    "fanout_1k" => scenarios::fanout(&ctx, 1_000).await,
                    "fanout_10k" => scenarios::fanout(&ctx, 10_000).await,
                    "direct_10k" => scenarios::direct(&ctx, 10_000, 20_000).await,
                    "idle_15k" => scenarios::idle(&ctx, 15_000).await,
                    "burst_idle_15k" => scenarios::burst_idle(&ctx, 15_000, 64).await,
                    "connect_10k" => scenarios::connect_storm(&ctx, 10_000).await,
                    "cluster_fanout" => scenarios::fanout(&ctx, 2_000).await,
                    "inbound_64k" => scenarios::inbound(&ctx, 100, 64 * 1024).await,
                    other => Err(format!("unknown scenario {other}")),
                }
            });
            match result {
                Ok(m) => println!("{}", serde_json::to_string(&m).expect("json")),
                Err(e) => {
                    println!("{}", json!({ "error": e }));
                    std::process::exit(1);
                }
            }
            // Leave without closing thousands of sockets one by one.
            std::process::exit(0);
        }
        Cmd::All {
            quick,
            rounds,
            servers,
            scenarios,
        } => {
            let rounds = rounds.unwrap_or(if quick { 1 } else { 3 });
            let servers =
                servers.unwrap_or_else(|| SERVERS.iter().map(|s| s.to_string()).collect());
            let scenarios =
                scenarios.unwrap_or_else(|| SCENARIOS.iter().map(|s| s.to_string()).collect());
            run_all(quick, rounds, &servers, &scenarios);
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn start_server(server: &str, port: u16, redis: Option<&str>) -> Child {
    let exe = std::env::current_exe().expect("exe");
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg("0");
    if let Some(url) = redis {
        cmd.arg(exe)
            .args(["serve", server, &port.to_string(), "--redis", url]);
    } else if server == "node-ws" {
        let dir = workspace_root().join("benches/load/node");
        cmd.arg("node")
            .arg(dir.join("server.js"))
            .arg(port.to_string());
    } else if server == "bun" {
        let dir = workspace_root().join("benches/load/bun");
        cmd.arg(dir.join("node_modules/@oven/bun-linux-x64/bin/bun"))
            .arg(dir.join("server.js"))
            .arg(port.to_string());
    } else {
        cmd.arg(exe).arg("serve").arg(server).arg(port.to_string());
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start server");
    // Ready when it accepts connections (startup, not a measurement).
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{server} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// A `redis-server` for `cluster_fanout`, pinned with the load generator
/// to core 1, no persistence; killed when dropped.
struct Redis {
    child: Child,
    url: String,
}

impl Redis {
    fn start() -> Self {
        Self::spawn(&["-c", "1"])
    }

    /// Not pinned: for `cluster_100k`, where nothing is.
    fn start_unpinned() -> Self {
        Self::spawn(&["-c", "0,1"])
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn spawn(cpus: &[&str]) -> Self {
        let port = free_port();
        let child = Command::new("taskset")
            .args(cpus)
            .args(["redis-server", "--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on the PATH (apt-get install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `scenario` against `server`: one process, or for `cluster_fanout`
/// two nodes over a fresh Redis.
fn run_one(scenario: &str, server: &str, quick: bool) -> Result<BTreeMap<String, f64>, String> {
    if scenario == "cluster_100k" {
        return scale::run(quick);
    }
    if scenario == SHARDED {
        return sharded(server, quick);
    }
    if scenario != "cluster_fanout" {
        let port = free_port();
        let mut child = start_server(server, port, None);
        let result = run_load(scenario, server, port, child.id(), quick, &[]);
        let _ = child.kill();
        let _ = child.wait();
        return result;
    }
    let redis = Redis::start();
    let (p1, p2) = (free_port(), free_port());
    let mut a = start_server(server, p1, Some(&redis.url));
    let mut b = start_server(server, p2, Some(&redis.url));
    let extra = [
        "--node2".to_owned(),
        p2.to_string(),
        b.id().to_string(),
        "--redis".to_owned(),
        redis.url.clone(),
    ];
    let result = run_load(scenario, server, p1, a.id(), quick, &extra);
    for child in [&mut a, &mut b] {
        let _ = child.kill();
        let _ = child.wait();
    }
    result
}

/// `cluster_fanout` with the two nodes over a fresh Redis Cluster (three
/// masters, three replicas), its six instances pinned to core 1 as the
/// one instance of `cluster_fanout` is.
fn sharded(server: &str, quick: bool) -> Result<BTreeMap<String, f64>, String> {
    let cluster = fixture::RedisCluster::start();
    for node in &cluster.nodes {
        if let Some(pid) = node.pid() {
            let pinned = Command::new("taskset")
                .args(["-a", "-p", "-c", "1", &pid.to_string()])
                .stdout(Stdio::null())
                .status();
            if !pinned.is_ok_and(|s| s.success()) {
                return Err(format!("could not pin redis-server {pid}"));
            }
        }
    }
    let url = cluster.url();
    let (p1, p2) = (free_port(), free_port());
    let mut a = start_server(server, p1, Some(&url));
    let mut b = start_server(server, p2, Some(&url));
    let extra = [
        "--node2".to_owned(),
        p2.to_string(),
        b.id().to_string(),
        "--redis".to_owned(),
        url.clone(),
    ];
    let result = run_load("cluster_fanout", server, p1, a.id(), quick, &extra);
    for child in [&mut a, &mut b] {
        let _ = child.kill();
        let _ = child.wait();
    }
    result
}

fn run_load(
    scenario: &str,
    server: &str,
    port: u16,
    pid: u32,
    quick: bool,
    extra: &[String],
) -> Result<BTreeMap<String, f64>, String> {
    let exe = std::env::current_exe().expect("exe");
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "1"]).arg(exe).args([
        "load",
        scenario,
        server,
        &port.to_string(),
        &pid.to_string(),
    ]);
    if quick {
        cmd.arg("--quick");
    }
    cmd.args(extra);
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    let v: Value = serde_json::from_str(line).map_err(|e| format!("bad output {line:?}: {e}"))?;
    if let Some(e) = v.get("error") {
        return Err(e.to_string());
    }
    serde_json::from_value(v).map_err(|e| e.to_string())
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let node = Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": kernel,
        "node": node,
        "pinning": "server on core 0, load generator on core 1 (taskset)",
    })
}

/// The metric compared between servers (the ratio is always wspool /
/// peer: above 1 is better for throughputs, below 1 for latency and memory).
fn headline(scenario: &str) -> &'static str {
    match scenario {
        s if s.contains("fanout") => "deliveries_per_s",
        "direct_10k" => "p99_ms",
        "idle_15k" => "rss_kib_per_conn",
        "burst_idle_15k" => "rss_kib_per_conn_after_burst",
        _ => "handshakes_per_s",
    }
}

/// The median of each list.
fn medians(lists: &BTreeMap<String, Vec<f64>>) -> BTreeMap<String, f64> {
    lists
        .iter()
        .map(|(k, v)| (k.clone(), median(v.clone())))
        .collect()
}

fn run_all(quick: bool, rounds: usize, servers: &[String], scenarios: &[String]) {
    let root = workspace_root();
    // The JavaScript peers, from the npm registry (Bun's binary too).
    for (server, dir) in [
        ("node-ws", "benches/load/node"),
        ("bun", "benches/load/bun"),
    ] {
        if servers.iter().any(|s| s == server) && !root.join(dir).join("node_modules").exists() {
            let ok = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(root.join(dir))
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "npm ci failed in {dir}");
        }
    }
    let mut raw = Vec::new();
    // results[scenario][server][metric] = values over rounds
    let mut results: BTreeMap<String, BTreeMap<String, BTreeMap<String, Vec<f64>>>> =
        BTreeMap::new();
    // ratios[scenario][peer] = wspool / peer (headline metric), per round
    let mut ratios: BTreeMap<String, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    for round in 1..=rounds {
        for scenario in scenarios {
            let mut this_round = BTreeMap::new();
            for server in servers {
                if scenario == SHARDED && server != "wspool" {
                    continue;
                }
                if scenario == "cluster_fanout" && !CLUSTERED.contains(&server.as_str()) {
                    continue;
                }
                // Only wspool's scale is measured (no peer to compare with).
                if scenario == "cluster_100k" && server != "wspool" {
                    continue;
                }
                eprintln!("round {round}/{rounds}  {scenario:12} {server}");
                let result = run_one(scenario, server, quick);
                match result {
                    Ok(metrics) => {
                        raw.push(json!({ "round": round, "scenario": scenario, "server": server, "metrics": metrics }));
                        for (k, v) in &metrics {
                            results
                                .entry(scenario.clone())
                                .or_default()
                                .entry(server.clone())
                                .or_default()
                                .entry(k.clone())
                                .or_default()
                                .push(*v);
                        }
                        this_round.insert(server.clone(), metrics);
                    }
                    Err(e) => {
                        eprintln!("  failed: {e}");
                        raw.push(json!({ "round": round, "scenario": scenario, "server": server, "error": e }));
                    }
                }
                // Let sockets of the last run wind down before the next.
                std::thread::sleep(Duration::from_millis(500));
            }
            let metric = headline(scenario);
            if let Some(ours) = this_round.get("wspool").and_then(|m| m.get(metric)) {
                for (peer, m) in &this_round {
                    if let (false, Some(theirs)) = (peer == "wspool", m.get(metric)) {
                        ratios
                            .entry(scenario.clone())
                            .or_default()
                            .entry(peer.clone())
                            .or_default()
                            .push(ours / theirs);
                    }
                }
            }
        }
    }
    let summary: BTreeMap<_, BTreeMap<_, _>> = results
        .iter()
        .map(|(sc, by_server)| {
            let s = by_server
                .iter()
                .map(|(srv, metrics)| (srv.clone(), medians(metrics)))
                .collect();
            (sc.clone(), s)
        })
        .collect();
    let ratio_summary: BTreeMap<_, _> = ratios
        .iter()
        .map(|(sc, peers)| (sc.clone(), medians(peers)))
        .collect();
    let doc = json!({
        "machine": machine(),
        "rounds": rounds,
        "quick": quick,
        "summary": summary,
        "ratios": ratio_summary,
        "ratio_metric": scenarios.iter().map(|s| (s.clone(), headline(s))).collect::<BTreeMap<_, _>>(),
        "raw": raw,
    });
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir).expect("target/bench");
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&doc).expect("json"),
    )
    .expect("write results");
    print_table(&summary, &ratio_summary, servers);
    eprintln!("\nwrote {}", dir.join("results.json").display());
}

fn print_table(
    summary: &BTreeMap<String, BTreeMap<String, BTreeMap<String, f64>>>,
    ratios: &BTreeMap<String, BTreeMap<String, f64>>,
    servers: &[String],
) {
    let mut out = std::io::stdout().lock();
    for (scenario, by_server) in summary {
        let metric = headline(scenario);
        let metrics: Vec<&String> = by_server
            .values()
            .flat_map(|m| m.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let _ = writeln!(out, "\n## {scenario} (medians; ratio = wspool / server on {metric}, median of per-round ratios)");
        let _ = write!(out, "| server |");
        for m in &metrics {
            let _ = write!(out, " {m} |");
        }
        let _ = writeln!(out, " ratio |");
        let _ = writeln!(out, "|{}", "---|".repeat(metrics.len() + 2));
        for server in servers {
            let Some(m) = by_server.get(server) else {
                continue;
            };
            let _ = write!(out, "| {server} |");
            for k in &metrics {
                let _ = write!(out, " {} |", m.get(*k).map(|v| fmt(*v)).unwrap_or_default());
            }
            let ratio = ratios
                .get(scenario)
                .and_then(|r| r.get(server))
                .map(|r| format!("{r:.2}x"))
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(out, " {ratio} |");
        }
    }
}

fn fmt(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}
