//! A TCP proxy between a node and Redis that can pause, reset and refuse
//! its connections: a network fault, injected on demand.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

pub struct Proxy {
    pub addr: SocketAddr,
    /// Forwarding paused (bytes wait) while true.
    paused: watch::Sender<bool>,
    /// Bumped to reset every connection open now.
    resets: watch::Sender<u64>,
    /// New connections are refused (closed at once) while true.
    refusing: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on a free port and forwards each connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (paused, _) = watch::channel(false);
        let (resets, _) = watch::channel(0u64);
        let refusing = Arc::new(AtomicBool::new(false));
        let (p, r, refuse) = (paused.clone(), resets.clone(), refusing.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if refuse.load(Ordering::Acquire) {
                    reset(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                tokio::spawn(pipe(client, server, p.subscribe(), r.subscribe()));
            }
        });
        Proxy {
            addr,
            paused,
            resets,
            refusing,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Stops forwarding (both ways) until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.paused.send_replace(false);
    }

    /// Resets (RST) every connection open now.
    pub fn reset_all(&self) {
        self.resets.send_modify(|n| *n += 1);
    }

    /// Refuses (`true`) or accepts new connections.
    pub fn refuse(&self, refuse: bool) {
        self.refusing.store(refuse, Ordering::Release);
    }
}

/// Closes `stream` with a reset rather than a FIN.
// A zero linger does not block on drop (the reset is sent at once), which is
// what tokio's deprecation of `set_linger` warns about.
#[allow(deprecated)]
fn reset(stream: TcpStream) {
    let _ = stream.set_linger(Some(std::time::Duration::ZERO));
    drop(stream);
}

async fn pipe(
    client: TcpStream,
    server: TcpStream,
    mut paused: watch::Receiver<bool>,
    mut resets: watch::Receiver<u64>,
) {
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let (mut up, mut down) = ([0u8; 16 * 1024], [0u8; 16 * 1024]);
    resets.borrow_and_update();
    loop {
        if *paused.borrow_and_update() {
            tokio::select! {
                _ = paused.changed() => continue,
                _ = resets.changed() => break,
            }
        }
        tokio::select! {
            n = cr.read(&mut up) => match n {
                Ok(n) if n > 0 => if sw.write_all(&up[..n]).await.is_err() { break },
                _ => break,
            },
            n = sr.read(&mut down) => match n {
                Ok(n) if n > 0 => if cw.write_all(&down[..n]).await.is_err() { break },
                _ => break,
            },
            _ = paused.changed() => {}
            _ = resets.changed() => break,
        }
    }
    if let (Ok(client), Ok(server)) = (cr.reunite(cw), sr.reunite(sw)) {
        reset(client);
        reset(server);
    }
}
