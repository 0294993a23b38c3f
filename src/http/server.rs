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
//! It serves HTTP/1.1, which is what browsers use for WebSockets.
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
    pin::Pin,
    time::Duration,
};

use axum::{body::Body, extract::ConnectInfo, Router};
use hyper::{body::Incoming, server::conn::http1, Request};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::watch};
use tower::ServiceExt;

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
        signal: Box::pin(shutdown_signal()),
    }
}

type Signal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A server being set up by [`serve()`]; `.await` it to run it.
#[must_use = "a server does nothing until awaited"]
pub struct Serve {
    listener: TcpListener,
    app: Router,
    pool: WsPool,
    header_read_timeout: Duration,
    signal: Signal,
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
            mut signal,
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
            let mut stop = stop_rx.clone();
            let done = done_rx.clone();
            tokio::spawn(async move {
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_read_timeout)
                    .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service))
                    .with_upgrades();
                tokio::pin!(conn);
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::trace!(%peer, error = %e, "http connection ended");
                        }
                    }
                    _ = stop.changed() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
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
