//! `cluster-soak`: three wspool nodes (child processes) over Redis (one
//! instance, Sentinel, or a Redis Cluster, started here with the tests'
//! fixtures), clients with churn, direct and channel traffic, faults on a
//! schedule, and a ledger of every message (CLUSTER.md, "cluster-soak").
//!
//! - **senders** `s0` (node 0) and `s1` (node 1) relay a direct message to
//!   a random receiver every 10 ms and a broadcast to a random channel
//!   every 100 ms; every failure comes back to them as a receipt;
//! - **listeners** `l0`, `l1`, `l2` (one per node) are members of every
//!   channel and never leave on their own;
//! - **receivers** `r<k>` (member of `ch<k % 10>`) churn: read for 0.5-3 s,
//!   close cleanly, come back 0-1.5 s later on another node (within the
//!   offline window, so what is sent meanwhile waits for them).
//!
//! Faults, at fractions of the run: at 25% a node's link to Redis is cut
//! (one instance: node 2 goes through a TCP proxy that resets its
//! connections and holds them for 1.5 s; Sentinel: every node's pub/sub
//! connection is killed; Redis Cluster: every connection of node 2); at
//! 50% a master is SIGKILLed (Sentinel: the master; Redis Cluster: the
//! master owning `ch0`'s slot); at 70% node 2 is SIGKILLed and, 2 s later,
//! a new node (a new id, as a restarted process has) starts on its port.
//! Clients whose node died reconnect to another.
//!
//! The ledger: every direct message must be read exactly once by its
//! receiver or reported to its sender; every broadcast exactly once by
//! each listener or reported (a receipt to the sender, or, for a
//! broadcast that never reached the other nodes, the `Undelivered` event
//! its node reported: each node lists those at `GET /bench/lost`). What
//! the SIGKILLed node had taken and not
//! yet written dies with it (CLUSTER.md, "A node that dies"): a message
//! neither read nor reported that was sent within 2 s of that kill is
//! counted apart (`lost_with_the_killed_node`), any other is
//! `unaccounted`. Receivers' broadcasts are counted (copies read, copies
//! read twice) but not held to exactly-once: a broadcast racing a
//! disconnect may miss the client (CLUSTER.md, "Guarantees"), and one in
//! a few thousand is read twice around a clean close (CLUSTER.md,
//! "cluster-soak": an open finding, there before this tool).

use crate::fixture;
#[path = "../../../tests/common/proxy.rs"]
#[allow(dead_code)]
mod proxy;

use std::{
    collections::{HashMap, HashSet},
    process::{Child, Command, Stdio},
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
use wspool::SendMsg;

use crate::client::Ws;
use wspool_client::{Client, Event, Options};

const CHANNELS: usize = 10;
const NODES: usize = 3;

/// What the soak is asked to do.
pub struct Plan {
    /// `single`, `sentinel` or `cluster`.
    pub topology: String,
    pub receivers: usize,
    pub duration: Duration,
    /// Where each node's log goes (`<id>.log`), if anywhere.
    pub logs: Option<std::path::PathBuf>,
}

/// The Redis the nodes share, kept alive for the run.
enum Topology {
    Single(fixture::RedisServer, proxy::Proxy),
    Sentinel(fixture::Sentinels),
    Cluster(fixture::RedisCluster),
}

/// What every client records.
#[derive(Default)]
struct Book {
    /// (message id, reader) → times read.
    read: Mutex<HashMap<(String, String), u32>>,
    /// Message ids a sender got an error receipt for.
    reported: Mutex<HashSet<String>>,
    /// Direct messages sent: id → (receiver, when).
    direct: Mutex<HashMap<String, (String, Instant)>>,
    /// Broadcasts sent: id → (channel, when).
    broadcasts: Mutex<HashMap<String, (String, Instant)>>,
    reconnects: AtomicU64,
    /// Broadcasts a node reported lost to the other nodes (an
    /// `Undelivered` event to no one), read from the nodes at the end.
    lost_events: Mutex<HashSet<String>>,
}

pub async fn run(plan: Plan) -> serde_json::Value {
    let mut topology = match plan.topology.as_str() {
        "sentinel" => Topology::Sentinel(fixture::Sentinels::start()),
        "cluster" => Topology::Cluster(fixture::RedisCluster::start()),
        _ => {
            let redis = fixture::RedisServer::start();
            let upstream = format!("127.0.0.1:{}", redis.port).parse().expect("addr");
            let proxy = proxy::Proxy::start(upstream).await;
            Topology::Single(redis, proxy)
        }
    };
    let url = |node: usize| match &topology {
        Topology::Single(_, proxy) if node == 2 => proxy.url(),
        Topology::Single(redis, _) => redis.url(),
        Topology::Sentinel(s) => s.url(),
        Topology::Cluster(c) => c.url(),
    };
    let urls: Vec<String> = (0..NODES).map(url).collect();
    // Redis Cluster: the master (port) owning each channel's, receiver's
    // and node's keys, to tell what was on the shard that is killed.
    let mut shards: HashMap<String, u16> = HashMap::new();
    if let Topology::Cluster(c) = &mut topology {
        let names =
            (0..CHANNELS).map(|k| (format!("ch{k}"), fixture::key::channel(&format!("ch{k}"))));
        let names = names.chain(
            (0..plan.receivers).map(|k| (format!("r{k}"), fixture::key::owner(&format!("r{k}")))),
        );
        let names = names
            .chain((0..NODES).map(|k| (format!("n{k}"), fixture::key::node(&format!("n{k}")))));
        for (name, key) in names.collect::<Vec<_>>() {
            shards.insert(name, c.master_of(&key).port);
        }
    }
    let ports: Vec<u16> = (0..NODES).map(|_| crate::free_port()).collect();
    let mut nodes: Vec<Child> = (0..NODES)
        .map(|i| start_node(ports[i], &urls[i], &format!("n{i}"), &plan.logs))
        .collect();

    let book = Arc::new(Book::default());
    let stop = Arc::new(AtomicBool::new(false));
    let ports = Arc::new(ports);
    let mut tasks = Vec::new();
    let all: Vec<String> = (0..CHANNELS).map(|c| format!("ch{c}")).collect();
    for i in 0..NODES {
        let token = format!("l{i}_{}", all.join("_"));
        tasks.push(tokio::spawn(listener(
            token,
            i,
            ports.clone(),
            book.clone(),
            stop.clone(),
        )));
    }
    for k in 0..plan.receivers {
        let token = format!("r{k}_ch{}", k % CHANNELS);
        let churn = churner(token, k % NODES, ports.clone(), book.clone(), stop.clone());
        tasks.push(tokio::spawn(churn));
    }
    // Everybody connected once before traffic starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let senders: Vec<_> = (0..2)
        .map(|i| {
            let s = sender(i, ports[i], plan.receivers, book.clone(), stop.clone());
            tokio::spawn(s)
        })
        .collect();

    // The faults.
    let start = Instant::now();
    let at = |f: f64| start + plan.duration.mul_f64(f);
    let mut faults = Vec::new();
    tokio::time::sleep_until(at(0.25).into()).await;
    match &topology {
        Topology::Single(_, proxy) => {
            proxy.reset_all();
            proxy.pause();
            tokio::time::sleep(Duration::from_millis(1500)).await;
            proxy.resume();
            faults.push("node 2's link reset and held 1.5 s (proxy)");
        }
        Topology::Sentinel(s) => {
            let _: redis::RedisResult<()> = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("pubsub")
                .query(&mut s.master.conn());
            faults.push("every node's pub/sub connection killed");
        }
        Topology::Cluster(c) => {
            c.kill_connections_of("n2");
            faults.push("every connection of node 2 killed");
        }
    }
    tokio::time::sleep_until(at(0.5).into()).await;
    let master_killed_at = Instant::now();
    match &mut topology {
        Topology::Single(..) => {}
        Topology::Sentinel(s) => {
            s.master.kill();
            faults.push("the master SIGKILLed (Sentinel promotes its replica)");
        }
        Topology::Cluster(c) => {
            c.master_of("wspool:{c:ch0}").kill();
            faults.push("the master owning ch0's slot SIGKILLed (its replica is promoted)");
        }
    }
    tokio::time::sleep_until(at(0.7).into()).await;
    let killed_at = Instant::now();
    let _ = nodes[2].kill();
    let _ = nodes[2].wait();
    tokio::time::sleep(Duration::from_secs(2)).await;
    nodes[2] = start_node(ports[2], &urls[2], "n2b", &plan.logs);
    faults.push("node 2 SIGKILLed; 2 s later a new node on its port");

    tokio::time::sleep_until(at(1.0).into()).await;
    stop.store(true, Relaxed);
    for s in senders {
        let _ = s.await;
    }
    // Everything settles: the clients read on for a while.
    tokio::time::sleep(Duration::from_secs(8)).await;
    // What the nodes reported (gaps, data lost): nodes 0 and 1, and node
    // 2's replacement (what the killed one said died with it).
    let mut reports = Vec::new();
    // Broadcasts the senders' nodes (0 and 1, never killed) reported lost
    // to the other nodes: an `Undelivered` event each.
    for port in ports.iter() {
        reports.push(node_reports(*port).await);
        let lost = get_json(*port, "/bench/lost").await;
        let ids = lost
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str());
        book.lost_events.lock().extend(ids.map(str::to_owned));
    }
    // Where Redis says each receiver is now: who is at fault when one
    // misses messages.
    let owners = owners(&topology, plan.receivers);
    for t in &tasks {
        t.abort();
    }
    for mut n in nodes {
        let _ = n.kill();
        let _ = n.wait();
    }
    drop(topology);
    let mut report = ledger(
        &book,
        start,
        killed_at,
        master_killed_at,
        &reports,
        &faults,
        &plan,
    );
    report["node_reports"] = json!(reports);
    let stuck: serde_json::Map<String, serde_json::Value> = (report["unaccounted_readers"]
        .as_array()
        .into_iter()
        .flatten())
    .filter_map(|r| r.as_str())
    .filter_map(|r| Some((r.to_owned(), owners.get(r)?.clone())))
    .collect();
    report["unaccounted_owners"] = json!(stuck);
    // Each unaccounted or duplicate copy with where its keys live: `*`
    // marks the killed master's shard (Redis Cluster).
    let killed = shards.get("ch0").copied();
    let place = |name: &str| match shards.get(name) {
        Some(port) if Some(*port) == killed => format!("{name}*"),
        Some(_) => name.to_owned(),
        None => String::new(),
    };
    let broadcasts = book.broadcasts.lock();
    for field in ["unaccounted_sample", "duplicates_sample"] {
        let annotated: Vec<String> = (report[field].as_array().into_iter().flatten())
            .filter_map(|v| v.as_str())
            .map(|copy| {
                let (id, reader) = copy.split_once('→').unwrap_or((copy, ""));
                let what = match broadcasts.get(id) {
                    Some((channel, _)) => place(channel),
                    None => place(reader),
                };
                let node = reader.strip_prefix('l').map(|n| place(&format!("n{n}")));
                format!("{copy} [{what} {}]", node.unwrap_or_default())
            })
            .collect();
        report[field] = json!(annotated);
    }
    drop(broadcasts);
    report
}

fn ledger(
    book: &Book,
    started: Instant,
    killed_at: Instant,
    master_killed_at: Instant,
    reports: &[serde_json::Value],
    faults: &[&str],
    plan: &Plan,
) -> serde_json::Value {
    // A node that reported data lost (`ClusterDataLost`: a promoted
    // replica lacked the last writes) or publications it could not
    // recover (`ClusterGap`) accounts, by that event, for copies sent
    // from the master's kill until it was whole again (10 s).
    let node_reported = (reports.iter())
        .any(|r| r["data_losses"].as_u64() > Some(0) || r["missed"].as_u64() > Some(0));
    let by_event = |t: Instant| {
        node_reported && t >= master_killed_at && t <= master_killed_at + Duration::from_secs(10)
    };
    let (mut event_reported, mut lost_reported) = (0u64, 0u64);
    let read = book.read.lock();
    let reported = book.reported.lock();
    let lost_events = book.lost_events.lock();
    let near_kill = |t: Instant| {
        let d = if t > killed_at {
            t - killed_at
        } else {
            killed_at - t
        };
        d <= Duration::from_secs(2)
    };
    let (mut delivered, mut twice, mut lost, mut unaccounted) =
        (0u64, Vec::new(), 0u64, Vec::new());
    let mut when_lost: std::collections::BTreeMap<u64, u64> = Default::default();
    let mut both = 0u64;
    let mut count = |id: &String, reader: &str, when: Instant| {
        let n = read
            .get(&(id.clone(), reader.to_owned()))
            .copied()
            .unwrap_or(0);
        match (n, reported.contains(id)) {
            (0, true) => {}
            (0, false) if lost_events.contains(id) => lost_reported += 1,
            (0, false) if near_kill(when) => lost += 1,
            (0, false) if by_event(when) => event_reported += 1,
            (0, false) => {
                unaccounted.push(format!("{id}→{reader}"));
                *when_lost
                    .entry(when.duration_since(started).as_secs())
                    .or_default() += 1;
            }
            (1, r) => {
                delivered += 1;
                both += u64::from(r);
            }
            _ => twice.push(format!("{id}→{reader}")),
        }
    };
    let direct = book.direct.lock();
    for (id, (to, when)) in direct.iter() {
        count(id, to, *when);
    }
    let broadcasts = book.broadcasts.lock();
    for (id, (_, when)) in broadcasts.iter() {
        for l in 0..NODES {
            count(id, &format!("l{l}"), *when);
        }
    }
    // Receivers' copies of broadcasts: counted, twice is still an error.
    let receiver_copies = (read.iter())
        .filter(|((id, reader), _)| id.starts_with('b') && reader.starts_with('r'))
        .count();
    let receiver_twice = (read.iter())
        .filter(|((id, reader), n)| id.starts_with('b') && reader.starts_with('r') && **n > 1)
        .count() as u64;
    let sample: Vec<&String> = unaccounted.iter().take(50).collect();
    json!({
        "topology": plan.topology,
        "receivers": plan.receivers,
        "seconds": plan.duration.as_secs_f64(),
        "faults": faults,
        "direct_sent": direct.len(),
        "broadcasts_sent": broadcasts.len(),
        "expected_copies": direct.len() + broadcasts.len() * NODES,
        "delivered_once": delivered,
        "reported": reported.len(),
        "reported_then_delivered": both,
        "lost_with_the_killed_node": lost,
        "reported_by_a_node_event": event_reported,
        "reported_lost_by_an_event": lost_reported,
        "unaccounted": unaccounted.len(),
        "unaccounted_sample": sample,
        "unaccounted_readers": unaccounted.iter().filter_map(|u| u.split('→').nth(1)).collect::<std::collections::BTreeSet<_>>(),
        "duplicates": twice.len(),
        "receiver_broadcast_duplicates": receiver_twice,
        "duplicates_sample": twice.iter().take(50).collect::<Vec<_>>(),
        "receiver_duplicates_sample": (read.iter())
            .filter(|((id, reader), n)| id.starts_with('b') && reader.starts_with('r') && **n > 1)
            .take(10)
            .map(|((id, reader), _)| format!("{id}→{reader}"))
            .collect::<Vec<_>>(),
        "unaccounted_by_second": when_lost,
        "receiver_broadcast_copies": receiver_copies,
        "reconnects": book.reconnects.load(Relaxed),
    })
}

fn start_node(port: u16, url: &str, id: &str, logs: &Option<std::path::PathBuf>) -> Child {
    // Another build's nodes (an A/B of the engine), or this one's.
    let exe = std::env::var_os("WSPOOL_BENCH_NODE_EXE")
        .map(Into::into)
        .unwrap_or_else(|| std::env::current_exe().expect("exe"));
    let mut cmd = Command::new(exe);
    cmd.args(["serve", "wspool", &port.to_string(), "--redis", url])
        .env("WSPOOL_BENCH_NODE_ID", id)
        .env("WSPOOL_BENCH_OFFLINE_TTL_SECS", "60")
        .stdout(Stdio::null());
    if let Some(dir) = logs {
        std::fs::create_dir_all(dir).expect("the log directory");
        let file = std::fs::File::create(dir.join(format!("{id}.log"))).expect("a log file");
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "wspool=info".into());
        cmd.env("RUST_LOG", filter).stderr(file);
    }
    let child = cmd.spawn().expect("start a node");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "node {id} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Connects `token` to the node `first`, or the next one that accepts.
async fn connect(token: &str, first: usize, ports: &[u16]) -> (Ws, usize) {
    for attempt in 0.. {
        let node = (first + attempt) % ports.len();
        let url = format!("ws://127.0.0.1:{}/ws", ports[node]);
        let mut req = url.into_client_request().expect("url");
        req.headers_mut()
            .insert("sec-websocket-protocol", token.parse().expect("token"));
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(req).await {
            return (ws, node);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

/// Records a frame `me` read; an error receipt goes to `reported`.
fn record(book: &Book, me: &str, frame: &Message) {
    let Message::Binary(b) = frame else { return };
    let Ok(m) = SendMsg::decode(b.clone()) else {
        return;
    };
    if m.status != 0 {
        book.reported.lock().insert(m.msg_id);
        return;
    }
    *book
        .read
        .lock()
        .entry((m.msg_id, me.to_owned()))
        .or_default() += 1;
}

fn id_of(token: &str) -> &str {
    token.split('_').next().unwrap_or(token)
}

/// A member of every channel: reads until the run ends, reconnecting
/// elsewhere when its node dies.
async fn listener(
    token: String,
    node: usize,
    ports: Arc<Vec<u16>>,
    book: Arc<Book>,
    stop: Arc<AtomicBool>,
) {
    let me = id_of(&token).to_owned();
    let mut node = node;
    loop {
        let (mut ws, at) = connect(&token, node, &ports).await;
        while let Some(Ok(frame)) = ws.next().await {
            record(&book, &me, &frame);
        }
        if stop.load(Relaxed) {
            return;
        }
        book.reconnects.fetch_add(1, Relaxed);
        node = at + 1;
    }
}

/// A receiver that comes and goes (see the module docs).
async fn churner(
    token: String,
    node: usize,
    ports: Arc<Vec<u16>>,
    book: Arc<Book>,
    stop: Arc<AtomicBool>,
) {
    let me = id_of(&token).to_owned();
    let mut node = node;
    loop {
        let (mut ws, at) = connect(&token, node, &ports).await;
        let stay = Duration::from_millis(fastrand::u64(500..3000));
        let until = tokio::time::Instant::now() + stay;
        let mut closed = false;
        loop {
            tokio::select! {
                frame = ws.next() => match frame {
                    Some(Ok(f)) => record(&book, &me, &f),
                    _ => { closed = true; break; }
                },
                _ = tokio::time::sleep_until(until), if !stop.load(Relaxed) => break,
            }
        }
        if !closed {
            // A clean close: the client is away, its messages wait for it.
            let _ = ws.send(Message::Close(None)).await;
            while let Some(Ok(f)) = ws.next().await {
                record(&book, &me, &f);
            }
        }
        book.reconnects.fetch_add(1, Relaxed);
        let away = fastrand::u64(0..1500);
        tokio::time::sleep(Duration::from_millis(away)).await;
        node = at + 1;
    }
}

/// Relays direct messages and broadcasts through its node; reads the
/// receipts. On the Rust client (`wspool-client`), not reconnecting: a
/// sender whose connection ends stops sending, and what it sent is held to
/// the ledger as before.
async fn sender(i: usize, port: u16, receivers: usize, book: Arc<Book>, stop: Arc<AtomicBool>) {
    let options = Options::new(format!("ws://127.0.0.1:{port}/ws"), format!("s{i}"))
        .reconnect(false)
        .backoff(Duration::from_millis(100), Duration::from_millis(100));
    let mut client = Client::connect(options).expect("a sender's id");
    let read = |book: &Book, event: Option<Event>| match event {
        Some(Event::Receipt(m)) => {
            book.reported.lock().insert(m.msg_id);
            true
        }
        Some(Event::Closed { .. }) | None => false,
        Some(_) => true,
    };
    match tokio::time::timeout(Duration::from_secs(10), client.next()).await {
        Ok(Some(Event::Open)) => {}
        other => panic!("sender s{i} did not connect: {other:?}"),
    }
    let mut n = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while !stop.load(Relaxed) {
        tokio::select! {
            event = client.next() => if !read(&book, event) { return },
            _ = tick.tick() => {
                n += 1;
                let to = format!("r{}", fastrand::usize(..receivers));
                let direct = SendMsg {
                    to_client_id: to.clone(),
                    ..Default::default()
                };
                if !relay(&client, &book.direct, format!("d{i}-{n}"), to, direct) {
                    break;
                }
                if n.is_multiple_of(10) {
                    let channel = format!("ch{}", fastrand::usize(..CHANNELS));
                    let broadcast = SendMsg {
                        channel: vec![channel.clone()],
                        ..Default::default()
                    };
                    let id = format!("b{i}-{n}");
                    if !relay(&client, &book.broadcasts, id, channel, broadcast) {
                        break;
                    }
                }
            }
        }
    }
    // Receipts of the last ones.
    let _ = tokio::time::timeout(Duration::from_secs(6), async {
        while read(&book, client.next().await) {}
    })
    .await;
}

/// A node's cluster counters (`GET /api/stats`: `stats().cluster`).
async fn node_reports(port: u16) -> serde_json::Value {
    let stats = get_json(port, "/api/stats").await;
    let c = &stats["cluster"];
    json!({
        "node": c["node"],
        "missed": c["missed"],
        "data_losses": c["dataLosses"],
        "outages": c["outages"],
        "up": c["up"],
        "recovered": c["recovered"],
    })
}

/// `GET path` on the node at `port`, as JSON (`null` when it does not
/// answer in 5 s).
async fn get_json(port: u16, path: &str) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let asked = async {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.ok()?;
        let text = String::from_utf8_lossy(&answer);
        let body = text.split_once("\r\n\r\n")?.1;
        serde_json::from_str(body).ok()
    };
    tokio::time::timeout(Duration::from_secs(5), asked)
        .await
        .ok()
        .flatten()
        .unwrap_or(serde_json::Value::Null)
}

/// Each receiver's owner hash in Redis (node, claim, state).
fn owners(topology: &Topology, receivers: usize) -> HashMap<String, serde_json::Value> {
    let read = |conn: &mut dyn redis::ConnectionLike| {
        (0..receivers)
            .map(|k| {
                let id = format!("r{k}");
                let hash: HashMap<String, String> = redis::cmd("HGETALL")
                    .arg(fixture::key::owner(&id))
                    .query(conn)
                    .unwrap_or_default();
                (id, json!(hash))
            })
            .collect()
    };
    match topology {
        Topology::Single(redis, _) => read(&mut redis.conn()),
        Topology::Sentinel(s) => {
            // The master now (the first one was killed).
            let master = (s.master_port())
                .and_then(|port| redis::Client::open(format!("redis://127.0.0.1:{port}")).ok())
                .and_then(|client| client.get_connection().ok());
            match master {
                Some(mut conn) => read(&mut conn),
                None => HashMap::new(),
            }
        }
        Topology::Cluster(c) => read(&mut c.conn()),
    }
}

/// Relays `msg` as `id` (to `target`: a receiver or a channel), recorded in
/// `sent` first; whether the client took it.
fn relay(
    client: &Client,
    sent: &Mutex<HashMap<String, (String, Instant)>>,
    id: String,
    target: String,
    mut msg: SendMsg,
) -> bool {
    msg.msg_id = id.clone();
    msg.msg = "x".repeat(64);
    sent.lock().insert(id, (target, Instant::now()));
    client.send(msg).is_ok()
}
