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
    /// Where it keeps its snapshot (`SHUTDOWN SAVE`, then a restart, keeps
    /// the data); removed when dropped.
    dir: std::path::PathBuf,
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits until it is ready.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("wspool-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = RedisServer {
            child: None,
            port,
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
