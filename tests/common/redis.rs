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
        let port = free_port();
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
            .arg(format!("wspool:buf:{id}"))
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
