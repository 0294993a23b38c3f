//! Serving an app with the pool, safely by default: [`serve()`].
//!
//! `axum::serve` is a fine start but, facing the internet, lacks what a
//! WebSocket server needs: it sets no timeout for reading request headers
//! (a client sending one byte a second holds a socket and a task forever:
//! "slowloris"), leaves Nagle's algorithm on (small frames wait), and
//! knows nothing of the pool at shutdown. [`serve()`] is that loop with:
//!
//! - **a header read timeout** (default 10 s): a connection that has not
//!   sent a whole request head within it is closed, idle keep-alive
//!   connections included;
//! - **`TCP_NODELAY`** on every accepted socket;
//! - **the client's address** in every request (`ConnectInfo<SocketAddr>`),
//!   for `max_connections_per_ip` and
//!   [`ClientInfo::remote_addr`](crate::ClientInfo::remote_addr);
//! - **graceful shutdown** on Ctrl-C or SIGTERM (or your own signal):
//!   stop accepting, [`WsPool::shutdown`] (queues flushed, clients closed
//!   with 1001), then let HTTP requests in progress finish, for at most the
//!   pool's `shutdown_timeout`.
//!
//! It serves HTTP/1.1 and HTTP/2 on the same port: a connection that opens
//! with HTTP/2's preface (prior knowledge, "h2c") is served as HTTP/2,
//! announcing extended CONNECT (RFC 8441), so WebSockets over HTTP/2 reach
//! the provided route, several on one connection
//! ([`Serve::http2_max_streams`]), each a client of its own. Browsers speak
//! HTTP/2 only over TLS: behind a proxy that terminates TLS and speaks h2c
//! to the server, or with the `tls` feature's `serve_tls`.
//!
//! ```no_run
//! use axum::Router;
//! use wspool::WsPool;
//!
//! # async fn run() -> std::io::Result<()> {
//! let pool = WsPool::new();
//! let app = Router::new().merge(wspool::route()).layer(pool.layer());
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:3000").await?;
//! wspool::serve(listener, app, &pool).await
//! # }
//! ```
//!
//! # Serving with your own hyper setup
//! An application that runs its own accept loop (hyper, or `axum::serve`)
//! should configure what this one does:
//! - hyper's `http1::Builder::header_read_timeout` **with a timer**
//!   (`.timer(hyper_util::rt::TokioTimer::new())`: without a timer the
//!   timeout is silently off), and `serve_connection(..).with_upgrades()`;
//! - for WebSockets over HTTP/2, `http2::Builder::enable_connect_protocol()`
//!   (`axum::serve` does it with axum's `http2` feature), and the route
//!   mounted with `any`, not `get` (a WebSocket over HTTP/2 is a CONNECT);
//! - `set_nodelay(true)` on each accepted `TcpStream`;
//! - `ConnectInfo<SocketAddr>` in the request extensions
//!   (`into_make_service_with_connect_info::<SocketAddr>()` with
//!   `axum::serve`), or the per-address limit cannot see addresses;
//! - a shutdown path that calls [`WsPool::shutdown`].
//!
//! With a TLS-terminating proxy in front, set
//! [`client_ip`](crate::WsPoolBuilder::client_ip) to read the client's
//! address from the proxy's header.

use std::{
    future::{Future, IntoFuture},
    io,
    net::SocketAddr,
    pin::Pin,
    time::Duration,
};

use axum::{body::Body, extract::ConnectInfo, Router};
use hyper::{
    body::Incoming,
    server::conn::{http1, http2},
    Request,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::watch};
use tower::ServiceExt;

use super::sniff::sniff;
use crate::WsPool;

/// Serves `app` on `listener` with the pool's safe defaults; see the
/// [module docs](self). Await it (it runs until shut down), after setting
/// options on it.
pub fn serve(listener: TcpListener, app: Router, pool: &WsPool) -> Serve {
    Serve {
        listener,
        app,
        pool: pool.clone(),
        header_read_timeout: Duration::from_secs(10),
        http2_max_streams: DEFAULT_HTTP2_MAX_STREAMS,
        signal: Box::pin(shutdown_signal()),
        #[cfg(feature = "tls")]
        tls: None,
    }
}

type Signal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The default [`Serve::http2_max_streams`].
const DEFAULT_HTTP2_MAX_STREAMS: u32 = 256;

/// A server being set up by [`serve()`]; `.await` it to run it.
#[must_use = "a server does nothing until awaited"]
pub struct Serve {
    listener: TcpListener,
    app: Router,
    pool: WsPool,
    header_read_timeout: Duration,
    http2_max_streams: u32,
    signal: Signal,
    #[cfg(feature = "tls")]
    tls: Option<super::tls::Tls>,
}

impl std::fmt::Debug for Serve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve")
            .field("listener", &self.listener)
            .field("header_read_timeout", &self.header_read_timeout)
            .finish_non_exhaustive()
    }
}

impl Serve {
    /// How long a client may take to send a whole request head (default
    /// 10 s); then its connection is closed.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// The most streams one HTTP/2 connection may have open at once
    /// (default 256): each WebSocket over HTTP/2 is one, for its life. A
    /// client that opens more waits for one to close (RFC 9113 section
    /// 5.1.2); each WebSocket still counts toward the pool's
    /// `max_connections` and `max_connections_per_ip`.
    pub fn http2_max_streams(mut self, max: u32) -> Self {
        self.http2_max_streams = max;
        self
    }

    /// Serves TLS ([`serve_tls`](crate::serve_tls)).
    #[cfg(feature = "tls")]
    pub(crate) fn tls(mut self, tls: super::tls::Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Shut down when `signal` completes, instead of on Ctrl-C or SIGTERM.
    pub fn with_graceful_shutdown<F>(mut self, signal: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.signal = Box::pin(signal);
        self
    }

    async fn run(self) -> io::Result<()> {
        let Serve {
            listener,
            app,
            pool,
            header_read_timeout,
            http2_max_streams,
            mut signal,
            #[cfg(feature = "tls")]
            tls,
        } = self;
        // Dropped at shutdown: every HTTP connection then finishes its
        // request in progress and closes.
        let (stop_tx, stop_rx) = watch::channel(());
        // Each connection task holds a clone; `closed()` waits for them all.
        let (done_tx, done_rx) = watch::channel(());
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        accept_error(e).await;
                        continue;
                    }
                },
                () = &mut signal => break,
            };
            let _ = tcp.set_nodelay(true);
            let app = app.clone();
            let service = tower::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                app.clone().oneshot(req.map(Body::new))
            });
            let conn = Conn {
                service: TowerToHyperService::new(service),
                header_read_timeout,
                http2_max_streams,
                stop: stop_rx.clone(),
                peer,
            };
            let done = done_rx.clone();
            #[cfg(feature = "tls")]
            let tls = tls.clone();
            tokio::spawn(async move {
                #[cfg(feature = "tls")]
                if let Some(tls) = tls {
                    conn.serve_tls(tcp, tls).await;
                    drop(done);
                    return;
                }
                conn.serve(tcp).await;
                drop(done);
            });
        }
        drop(listener);
        tracing::debug!("shutting down: closing the pool's connections");
        pool.shutdown().await;
        drop(stop_tx);
        drop(done_rx);
        let _ = tokio::time::timeout(pool.config().shutdown_timeout(), done_tx.closed()).await;
        Ok(())
    }
}

impl IntoFuture for Serve {
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// One accepted connection, as [`serve()`] serves it.
struct Conn<S> {
    service: S,
    header_read_timeout: Duration,
    http2_max_streams: u32,
    /// Changes (is dropped) at shutdown: finish the requests in progress.
    stop: watch::Receiver<()>,
    peer: SocketAddr,
}

impl<S> Conn<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = axum::response::Response>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    /// Serves HTTP/1.1, or HTTP/2 when the connection opens with its
    /// preface (prior knowledge, as `h2c` clients do), until the
    /// connection ends or the server stops.
    async fn serve<I>(self, io: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        // The header read timeout covers the first bytes too: a client
        // that sends nothing is closed as one that sends a request head
        // too slowly.
        let Ok(Ok((io, h2))) = tokio::time::timeout(self.header_read_timeout, sniff(io)).await
        else {
            return;
        };
        self.serve_as(io, h2).await;
    }

    /// Serves TLS: HTTP/2 when ALPN chose `h2`, else HTTP/1.1. The
    /// handshake counts toward the header read timeout.
    #[cfg(feature = "tls")]
    async fn serve_tls(self, tcp: tokio::net::TcpStream, tls: super::tls::Tls) {
        let accept = tls.acceptor.accept(tcp);
        let Ok(Ok(io)) = tokio::time::timeout(self.header_read_timeout, accept).await else {
            return;
        };
        let h2 = io.get_ref().1.alpn_protocol() == Some(b"h2");
        self.serve_as(io, h2).await;
    }

    /// Serves `io` as HTTP/2 (`h2`) or HTTP/1.1.
    async fn serve_as<I>(self, io: I, h2: bool)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        if h2 {
            let conn = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .enable_connect_protocol()
                .max_concurrent_streams(self.http2_max_streams)
                .keep_alive_interval(HTTP2_KEEP_ALIVE)
                .keep_alive_timeout(HTTP2_KEEP_ALIVE)
                .serve_connection(io, self.service.clone());
            self.until_stopped(conn, |c| c.graceful_shutdown()).await;
        } else {
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(self.header_read_timeout)
                .serve_connection(io, self.service.clone())
                .with_upgrades();
            self.until_stopped(conn, |c| c.graceful_shutdown()).await;
        }
    }

    /// Drives `conn` to its end; at shutdown, lets it finish the requests
    /// in progress.
    async fn until_stopped<C, E>(mut self, conn: C, graceful: impl FnOnce(Pin<&mut C>))
    where
        C: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        tokio::pin!(conn);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(peer = %self.peer, error = %e, "http connection ended");
                }
            }
            _ = self.stop.changed() => {
                graceful(conn.as_mut());
                let _ = conn.await;
            }
        }
    }
}

/// How often an HTTP/2 connection is pinged, and how long an answer may
/// take before the connection is closed as dead.
const HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// Ctrl-C, or SIGTERM where there is one (what orchestrators send).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// An accept error: a connection that failed before we saw it is skipped;
/// anything else (out of file descriptors, say) is logged and waited out
/// for a moment rather than spun on.
async fn accept_error(e: io::Error) {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
