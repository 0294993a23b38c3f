//! A real `redis-server` for the cluster tests, on a free port, with no
//! persistence; killed when dropped.

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// Arguments beyond the port, the address and no persistence.
    extra: Vec<String>,
    /// Where it keeps its snapshot (`SHUTDOWN SAVE`, then a restart, keeps
    /// the data); removed when dropped.
    dir: std::path::PathBuf,
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits until it is ready.
    pub fn start() -> Self {
        Self::start_with(Vec::new())
    }

    /// A replica of `master` (synced without the default 5 s delay).
    pub fn replica_of(master: &RedisServer) -> Self {
        let args = ["--replicaof", "127.0.0.1", &master.port.to_string()];
        let mut extra: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        extra.extend(["--repl-diskless-sync-delay".into(), "0".into()]);
        Self::start_with(extra)
    }

    fn start_with(extra: Vec<String>) -> Self {
        Self::start_on(free_port(), extra)
    }

    fn start_on(port: u16, extra: Vec<String>) -> Self {
        let dir = std::env::temp_dir().join(format!("wspool-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = RedisServer {
            child: None,
            port,
            extra,
            dir,
        };
        server.spawn();
        server
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills one node's pub/sub connection (found by its subscription
    /// count, `subs`), as a network blip would.
    pub fn kill_pubsub_with(&self, subs: usize) {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query(&mut self.conn())
            .unwrap();
        let line = list
            .lines()
            .find(|l| l.contains(&format!(" sub={subs} ")))
            .expect("the node's pub/sub connection");
        let id = line.split(' ').find_map(|f| f.strip_prefix("id=")).unwrap();
        let _: () = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query(&mut self.conn())
            .unwrap();
    }

    /// How many messages Redis buffers for `id` (pool prefix `wspool`).
    pub fn buffered(&self, id: &str) -> i64 {
        redis::cmd("LLEN")
            .arg(key::buffer(id))
            .query(&mut self.conn())
            .unwrap()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL): its data is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server with `SHUTDOWN SAVE` (its data written to disk) and
    /// starts it again on the same port: it comes back with its data.
    pub fn restart_keeping_data(&mut self) {
        let _: Result<(), _> = redis::cmd("SHUTDOWN").arg("SAVE").query(&mut self.conn());
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        self.spawn();
    }

    /// Kills the server and starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(self.dir.join("dump.rdb"));
        self.spawn();
    }

    fn spawn(&mut self) {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "notice"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server not found: the cluster tests need it on the PATH \
                 (Debian: apt-get install -y redis-server)",
            );
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("Ready to accept connections") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("redis-server did not become ready in 10 s");
        self.child = Some(child);
    }

    /// Whether the server is running.
    pub fn alive(&self) -> bool {
        self.child.is_some()
    }

    /// A plain connection for checks (`PUBSUB NUMSUB`, keys).
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A master, a replica and three sentinels watching them (quorum 2,
/// `down-after-milliseconds 1000`, `failover-timeout 5000`), ready: the
/// replica in sync and every sentinel knowing the replica and the other
/// two. Everything is stopped when dropped.
pub struct Sentinels {
    pub master: RedisServer,
    pub replica: RedisServer,
    sentinels: Vec<(Child, u16)>,
    dir: std::path::PathBuf,
}

pub const MASTER_NAME: &str = "wspool";

impl Sentinels {
    pub fn start() -> Self {
        let master = RedisServer::start();
        let replica = RedisServer::replica_of(&master);
        let dir = std::env::temp_dir().join(format!(
            "wspool-sentinels-{}-{}",
            master.port,
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let sentinels = (0..3)
            .map(|i| {
                let port = free_port();
                let conf = dir.join(format!("sentinel-{i}.conf"));
                let text = format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 5000\n",
                    dir.display(),
                    master.port
                );
                std::fs::write(&conf, text).unwrap();
                let child = Command::new("redis-server")
                    .arg(&conf)
                    .arg("--sentinel")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("redis-server (sentinel mode) not found");
                (child, port)
            })
            .collect();
        let topology = Sentinels {
            master,
            replica,
            sentinels,
            dir,
        };
        topology.wait_ready();
        topology
    }

    /// `redis+sentinel://...` for the pool.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = (self.sentinels.iter())
            .map(|(_, port)| format!("127.0.0.1:{port}"))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", hosts.join(","))
    }

    /// The port of the master the sentinels name now.
    pub fn master_port(&self) -> Option<u16> {
        let (_, port) = self.sentinels[0];
        let mut conn = sentinel_conn(port)?;
        let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(MASTER_NAME)
            .query(&mut conn)
            .ok()?;
        addr.map(|(_, port)| port)
    }

    /// Asks a sentinel for a failover (the master is demoted, not killed).
    pub fn failover(&self) {
        let (_, port) = self.sentinels[0];
        let mut conn = sentinel_conn(port).expect("a sentinel");
        let _: () = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(MASTER_NAME)
            .query(&mut conn)
            .unwrap();
    }

    fn wait_ready(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let synced = redis::cmd("INFO")
                .arg("replication")
                .query::<String>(&mut self.replica.conn())
                .is_ok_and(|i| i.contains("master_link_status:up"));
            let known = self.sentinels.iter().all(|(_, port)| {
                let Some(mut conn) = sentinel_conn(*port) else {
                    return false;
                };
                let mut count = |what: &str| {
                    redis::cmd("SENTINEL")
                        .arg(what)
                        .arg(MASTER_NAME)
                        .query::<Vec<redis::Value>>(&mut conn)
                        .map_or(0, |v| v.len())
                };
                count("replicas") == 1 && count("sentinels") == 2
            });
            if synced && known {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the sentinel topology did not settle in 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn sentinel_conn(port: u16) -> Option<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    client
        .get_connection_with_timeout(Duration::from_secs(1))
        .ok()
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for (child, _) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The names of the pool's keys and channels in Redis (prefix `wspool`;
/// see CLUSTER.md).
pub mod key {
    /// An id's owner hash.
    pub fn owner(id: &str) -> String {
        format!("wspool:{{i:{id}}}")
    }
    /// An id's offline buffer.
    pub fn buffer(id: &str) -> String {
        format!("wspool:{{i:{id}}}:buf")
    }
    /// A node's pub/sub channel.
    pub fn node(node: &str) -> String {
        format!("wspool:{{n:{node}}}")
    }
    /// A node's lease.
    pub fn lease(node: &str) -> String {
        format!("wspool:{{n:{node}}}:lease")
    }
    /// A pool channel's pub/sub channel.
    pub fn channel(channel: &str) -> String {
        format!("wspool:{{c:{channel}}}")
    }
}

/// Six cluster-mode instances made one Redis Cluster by `redis-cli
/// --cluster create` (three masters, each with a replica;
/// `cluster-node-timeout 2000`), ready: every node agrees on the three
/// masters and three replicas.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Self {
        let extra: Vec<String> = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
            "--repl-diskless-sync-delay",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| RedisServer::start_on(cluster_port(), extra.clone()))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli (Debian: apt-get install -y redis-server)");
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = RedisCluster { nodes };
        cluster.wait_agreed();
        cluster
    }

    /// Waits until every live node says the cluster is ok and lists three
    /// masters and three replicas, none failing.
    pub fn wait_agreed(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let agreed = self.nodes.iter().filter(|n| n.alive()).all(|n| {
                let mut conn = n.conn();
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut conn)
                    .unwrap_or_default();
                let nodes: String = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query(&mut conn)
                    .unwrap_or_default();
                let live: Vec<&str> = nodes.lines().filter(|l| !l.contains("fail")).collect();
                info.contains("cluster_state:ok")
                    && live.iter().filter(|l| l.contains("master")).count() == 3
                    && live.iter().filter(|l| l.contains("slave")).count()
                        == self.nodes.iter().filter(|n| n.alive()).count() - 3
                    && !nodes.contains("handshake")
            });
            if agreed {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the cluster did not settle in 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis+cluster://` with two seeds.
    pub fn url(&self) -> String {
        format!(
            "redis+cluster://127.0.0.1:{},127.0.0.1:{}",
            self.nodes[0].port, self.nodes[1].port
        )
    }

    /// A connection for checks: each command to the shard of its key.
    pub fn conn(&self) -> redis::cluster::ClusterConnection {
        let seeds: Vec<String> = (self.nodes.iter())
            .filter(|n| n.alive())
            .map(|n| n.url())
            .collect();
        redis::cluster::ClusterClient::new(seeds)
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// How many messages Redis buffers for `id`.
    pub fn buffered(&self, id: &str) -> i64 {
        redis::cmd("LLEN")
            .arg(key::buffer(id))
            .query(&mut self.conn())
            .unwrap()
    }

    /// Whether list `key` (a history) has an entry containing `text`.
    pub fn list_has(&self, key: &str, text: &str) -> bool {
        let entries: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query(&mut self.conn())
            .unwrap();
        entries
            .iter()
            .any(|e| e.windows(text.len()).any(|w| w == text.as_bytes()))
    }

    /// A field of `id`'s owner hash.
    pub fn field(&self, id: &str, field: &str) -> Option<String> {
        redis::cmd("HGET")
            .arg(key::owner(id))
            .arg(field)
            .query(&mut self.conn())
            .unwrap()
    }

    /// The master that owns `key`'s slot now.
    pub fn master_of(&mut self, key: &str) -> &mut RedisServer {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.conn())
            .unwrap();
        let i = (0..self.nodes.len())
            .find(|i| {
                let n = &self.nodes[*i];
                n.alive() && {
                    let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut n.conn()).unwrap();
                    let master =
                        matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master");
                    let slots: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
                        .arg("SLOTS")
                        .query(&mut n.conn())
                        .unwrap();
                    master
                        && slots.iter().any(|s| match (&s[0], &s[1], &s[2]) {
                            (
                                redis::Value::Int(a),
                                redis::Value::Int(b),
                                redis::Value::Array(m),
                            ) => {
                                (*a..=*b).contains(&(slot as i64))
                                    && matches!(&m[1], redis::Value::Int(p) if *p == n.port as i64)
                            }
                            _ => false,
                        })
                }
            })
            .expect("a master owns the slot");
        &mut self.nodes[i]
    }

    /// Kills every connection of wspool node `node` (they carry its
    /// name), on every instance, as a network blip would.
    pub fn kill_connections_of(&self, node: &str) {
        let name = format!(" name=wspool-{node} ");
        for n in self.nodes.iter().filter(|n| n.alive()) {
            let list: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query(&mut n.conn())
                .unwrap();
            for line in list.lines().filter(|l| l.contains(&name)) {
                let id = line.split(' ').find_map(|f| f.strip_prefix("id=")).unwrap();
                let _: redis::RedisResult<()> = redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("ID")
                    .arg(id)
                    .query(&mut n.conn());
            }
        }
    }
}

/// A free port in 15000-21999 whose cluster bus port (+10000) is free too:
/// outside the ephemeral range, so a port a killed node leaves stays free
/// for its restart.
fn cluster_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 15000 + ((std::process::id() as u16).wrapping_mul(97).wrapping_add(n) % 7000);
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10000) {
            return port;
        }
    }
}
