//! A chat server on wspool: a page at `/`, the pool at `/ws`, and the JSON
//! admin API under `/api` (PROTOCOL.md section 8).
//!
//! ```text
//! cargo run --example chat                       # http://127.0.0.1:3000
//! cargo run --example chat -- --addr 0.0.0.0:8080 --max-message-size 65536 --queue-len 256
//! ```
//!
//! HTTPS and WSS, ALPN h2 and http/1.1 (feature `tls`):
//!
//! ```text
//! cargo run --example chat --features tls -- --tls-cert cert.pem --tls-key key.pem
//! ```
//!
//! Several processes over one Redis form one chat (feature `redis`):
//!
//! ```text
//! cargo run --example chat --features redis -- --redis redis://127.0.0.1:6379 --addr 127.0.0.1:3000
//! cargo run --example chat --features redis -- --redis redis://127.0.0.1:6379 --addr 127.0.0.1:3001
//! ```
//!
//! Open the page in two browser tabs, connect as two ids, and chat; the
//! library's live dashboard is at `/dashboard` (open, for local use; with
//! `--admin-password PASS` it and the admin API ask for user `admin`). Drive the pool from a shell:
//!
//! ```text
//! curl localhost:3000/api/clients
//! curl -XPOST localhost:3000/api/send -d '{"toClientId":"alice","msg":"hi from curl"}'
//! curl -XPOST localhost:3000/api/broadcast -d '{"channel":["room1"],"msg":"hello room"}'
//! curl -XPUT localhost:3000/api/clients/alice/channels/room2
//! curl -XDELETE localhost:3000/api/clients/alice
//! ```

use std::{net::SocketAddr, time::Duration};

use axum::{
    http::{header, StatusCode},
    response::Html,
    routing::get,
    Router,
};
use base64::{engine::general_purpose::STANDARD, Engine as _};
use clap::Parser;
use tokio_stream::StreamExt;
use wspool::{admin::Admin, ConfigError, PoolEvent, WsPool};

/// The chat example's flags.
#[derive(Parser, Debug)]
#[command(about = "wspool chat example: a chat page, the pool at /ws, and a JSON admin API")]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub addr: SocketAddr,
    /// Largest message a client may send, in bytes (bigger closes with 1009).
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_message_size: usize,
    /// Per-client outbound queue limit, in messages.
    #[arg(long, default_value_t = 1024)]
    pub queue_len: usize,
    /// Per-client outbound queue limit, in bytes.
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    pub queue_bytes: usize,
    /// Close a client silent for this long, in seconds.
    #[arg(long, default_value_t = 60)]
    pub idle_timeout_secs: u64,
    /// The most connections at once.
    #[arg(long, default_value_t = 100_000)]
    pub max_connections: usize,
    /// A message not written within this many seconds expires (receipt 3).
    #[arg(long, default_value_t = 60)]
    pub message_ttl_secs: u64,
    /// Keep a disconnected client's messages this many seconds for it to
    /// reconnect (0: off).
    #[arg(long, default_value_t = 120)]
    pub offline_ttl_secs: u64,
    /// Close with 4008 a client whose queue stays full this many seconds.
    #[arg(long, default_value_t = 20)]
    pub slow_client_timeout_secs: u64,
    /// Ping each client this often, in seconds (unset: the library's
    /// default, 25 s or half a shorter idle timeout; must be shorter than
    /// the idle timeout).
    #[arg(long)]
    pub ping_interval_secs: Option<u64>,
    /// Drop a client when a write to it takes this many seconds (unset:
    /// the library's default, 10 s).
    #[arg(long)]
    pub write_timeout_secs: Option<u64>,
    /// The most connections from one client address (unset: the library's
    /// default, 1,000).
    #[arg(long)]
    pub max_connections_per_ip: Option<usize>,
    /// Data frames a client may send a second (unset: the library's
    /// default, 1,000); beyond: receipt 7, sustained: closed with 1008.
    #[arg(long)]
    pub max_inbound_messages_per_sec: Option<u32>,
    /// Close a connection that has not sent a whole HTTP request head in
    /// this many seconds (slowloris).
    #[arg(long, default_value_t = 10)]
    pub header_read_timeout_secs: u64,
    /// Serve HTTPS and WSS with this certificate chain (PEM; with
    /// `--tls-key`; feature `tls`).
    #[arg(long)]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long)]
    pub tls_key: Option<std::path::PathBuf>,
    /// Protect the admin API and the dashboard with HTTP Basic
    /// authentication, user `admin` and this password (unset: they are
    /// open, for local use; the log says so).
    #[arg(long, env = "WSPOOL_ADMIN_PASSWORD")]
    pub admin_password: Option<String>,
    /// Join the cluster whose Redis is at this URL (feature `redis`):
    /// `redis://HOST:PORT`, `redis+sentinel://HOST:PORT[,...]/MASTER`, or
    /// `redis+cluster://HOST:PORT[,...]` (a Redis Cluster's seed nodes).
    #[cfg(feature = "redis")]
    #[arg(long)]
    pub redis: Option<String>,
    /// How long this node's lease in the cluster lives without renewal: a
    /// node that died leaves presence within it.
    #[cfg(feature = "redis")]
    #[arg(long, default_value_t = 10)]
    pub lease_secs: u64,
}

/// The pool the flags describe, or why they cannot work together.
pub fn try_pool(args: &Args) -> Result<WsPool, ConfigError> {
    builder(args).try_build()
}

/// A builder with the knobs the flags set.
fn builder(args: &Args) -> wspool::WsPoolBuilder {
    let secs = Duration::from_secs;
    let mut builder = WsPool::builder()
        .max_message_size(args.max_message_size)
        .queue_max_messages(args.queue_len)
        .queue_max_bytes(args.queue_bytes)
        .idle_timeout(secs(args.idle_timeout_secs))
        .max_connections(args.max_connections)
        .message_ttl(secs(args.message_ttl_secs))
        .offline_ttl(secs(args.offline_ttl_secs))
        .slow_client_timeout(secs(args.slow_client_timeout_secs));
    if let Some(s) = args.ping_interval_secs {
        builder = builder.ping_interval(secs(s));
    }
    if let Some(s) = args.write_timeout_secs {
        builder = builder.write_timeout(secs(s));
    }
    if let Some(n) = args.max_connections_per_ip {
        builder = builder.max_connections_per_ip(n);
    }
    if let Some(n) = args.max_inbound_messages_per_sec {
        builder = builder.max_inbound_messages_per_sec(n);
    }
    builder
}

/// The pool: one node, or a node of the cluster at `--redis`.
async fn start_pool(args: &Args) -> Result<WsPool, String> {
    #[cfg(feature = "redis")]
    if let Some(url) = &args.redis {
        let mut redis = wspool::cluster::redis::RedisConfig::new(url);
        redis.lease = Duration::from_secs(args.lease_secs.max(1));
        let pool = builder(args).redis_config(redis).connect().await;
        return pool.map_err(|e| e.to_string());
    }
    try_pool(args).map_err(|e| e.to_string())
}

/// The pool the flags describe; panics on flags that cannot work together.
pub fn pool(args: &Args) -> WsPool {
    try_pool(args).unwrap_or_else(|e| panic!("{e}"))
}

/// `GET /metrics`: the pool in Prometheus text format (feature `metrics`).
#[cfg(feature = "metrics")]
async fn metrics(pool: WsPool) -> impl axum::response::IntoResponse {
    pool.export_metrics();
    let content_type = [(header::CONTENT_TYPE, "text/plain; version=0.0.4")];
    (content_type, prometheus().render())
}

#[cfg(not(feature = "metrics"))]
async fn metrics() -> impl axum::response::IntoResponse {
    let why = "metrics: run the example with --features metrics";
    (axum::http::StatusCode::NOT_FOUND, why)
}

/// The process's Prometheus recorder, installed on first use (before the
/// pool is built, so its series exist from the first scrape).
#[cfg(feature = "metrics")]
pub fn prometheus() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let delay = Matcher::Full("wspool_queue_delay_seconds".into());
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(delay, wspool::metrics::QUEUE_DELAY_BUCKETS)
            .expect("buckets");
        builder
            .install_recorder()
            .expect("the only metrics recorder")
    })
}

/// The whole app: page, pool route, the library's admin surface (API and
/// dashboard, behind `--admin-password` when given), metrics.
pub fn app(pool: &WsPool, args: &Args) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(|| async { Html(PAGE) }))
        .route("/online", get(online))
        .route(
            "/wspool-client.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], CLIENT_JS) }),
        )
        .merge(wspool::route())
        .merge(admin(args).router())
        .layer(pool.layer())
}

/// `GET /online`: who is in the chat, on every node (ids and channels:
/// what the page lists, without the admin API's details).
async fn online(pool: WsPool) -> axum::response::Response {
    use axum::response::IntoResponse;
    match pool.cluster_clients().await {
        Ok(mut list) => {
            list.sort_by(|a, b| a.id.cmp(&b.id));
            let who = list
                .iter()
                .map(|c| serde_json::json!({ "id": c.id, "channels": c.channels }));
            axum::Json(who.collect::<Vec<_>>()).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// Who may use the admin surface: with `--admin-password`, whoever gives
/// user `admin` and that password (HTTP Basic, so a browser asks for it);
/// otherwise anyone (for a demo on a loopback address).
fn admin(args: &Args) -> Admin {
    let Some(password) = args.admin_password.clone() else {
        return Admin::open_for_local_use();
    };
    let expected = format!("Basic {}", STANDARD.encode(format!("admin:{password}")));
    Admin::authorize(move |req| {
        let given = req.headers.get(header::AUTHORIZATION).cloned();
        let ok = given.is_some_and(|v| same(v.as_bytes(), expected.as_bytes()));
        async move {
            match ok {
                true => Ok(()),
                false => Err((
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, r#"Basic realm="wspool admin""#)],
                    "admin password required",
                )),
            }
        }
    })
}

/// Whether `a` and `b` are equal, in a time that does not depend on where
/// they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |d, (x, y)| d | (x ^ y)) == 0
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,wspool=debug".into()),
        )
        .init();
    #[cfg(feature = "metrics")]
    prometheus();
    let args = Args::parse();
    let pool = match start_pool(&args).await {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("chat: {e}");
            std::process::exit(2);
        }
    };

    // Log what happens in the pool.
    let mut events = pool.events();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                PoolEvent::Message { from, msg } => {
                    tracing::info!(%from, to = %msg.to_client_id, channels = ?msg.channel, "message")
                }
                PoolEvent::Error { id, error } => tracing::warn!(?id, %error, "error"),
                PoolEvent::Undelivered { to, msg, reason } => {
                    tracing::info!(%to, from = %msg.from_client_id, ?reason, "undelivered")
                }
                PoolEvent::Lagged(n) => tracing::warn!(n, "event log fell behind"),
                _ => {}
            }
        }
    });

    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    let addr = listener.local_addr()?;
    // Header read timeout, Nagle off, client addresses, HTTP/1.1 and
    // HTTP/2 on one port; Ctrl-C or SIGTERM flushes every queue and closes
    // every client with 1001.
    let server = match (&args.tls_cert, &args.tls_key) {
        (None, None) => {
            tracing::info!("chat on http://{addr}, dashboard on http://{addr}/dashboard");
            wspool::serve(listener, app(&pool, &args), &pool)
        }
        (Some(cert), Some(key)) => tls_server(listener, app(&pool, &args), &pool, cert, key, addr),
        _ => {
            eprintln!("chat: --tls-cert and --tls-key go together");
            std::process::exit(2);
        }
    };
    server
        .header_read_timeout(Duration::from_secs(args.header_read_timeout_secs))
        .await
}

/// HTTPS and WSS (ALPN h2 and http/1.1) with `cert` and `key` (PEM).
#[cfg(feature = "tls")]
fn tls_server(
    listener: tokio::net::TcpListener,
    app: Router,
    pool: &WsPool,
    cert: &std::path::Path,
    key: &std::path::Path,
    addr: SocketAddr,
) -> wspool::Serve {
    let tls = wspool::Tls::from_pem_files(cert, key).unwrap_or_else(|e| {
        eprintln!("chat: {e}");
        std::process::exit(2);
    });
    tracing::info!("chat on https://{addr}, dashboard on https://{addr}/dashboard");
    wspool::serve_tls(listener, app, pool, tls)
}

#[cfg(not(feature = "tls"))]
fn tls_server(
    _: tokio::net::TcpListener,
    _: Router,
    _: &WsPool,
    _: &std::path::Path,
    _: &std::path::Path,
    _: SocketAddr,
) -> wspool::Serve {
    eprintln!("chat: TLS needs the `tls` feature: cargo run --example chat --features tls -- ...");
    std::process::exit(2);
}

/// The wspool JavaScript client (`clients/js`), bundled for browsers.
pub const CLIENT_JS: &str = include_str!("../clients/js/dist/wspool-client.js");

/// The chat page: plain HTML on the wspool JavaScript client, JSON frames.
pub const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>wspool chat</title>
<style>
 body { font: 15px system-ui, sans-serif; margin: 2em auto; max-width: 56em; display: grid; grid-template-columns: 1fr 14em; gap: 1em; }
 fieldset { border: 1px solid #ccc; border-radius: 6px; }
 #log { height: 24em; overflow-y: auto; border: 1px solid #ccc; border-radius: 6px; padding: .5em; white-space: pre-wrap; }
 .sys { color: #888; } .me { color: #064; } .err { color: #a00; }
 input { margin: .2em 0; }
</style>
</head>
<body>
<main>
 <h1>wspool chat <small><a href="/dashboard">dashboard</a></small></h1>
 <form id="connect">
  <fieldset><legend>Who are you</legend>
   id <input id="id" required pattern="[A-Za-z0-9!#$%&'*+.^`|~\-]+" placeholder="alice">
   channels <input id="channels" placeholder="room1 room2">
   <button id="connectBtn">Connect</button>
  </fieldset>
 </form>
 <div id="log"></div>
 <form id="send">
  <fieldset><legend>Send</legend>
   to id <input id="to" placeholder="bob" size="10">
   or channels <input id="toChannels" placeholder="room1" size="12"><br>
   <input id="text" placeholder="message" size="50" autocomplete="off"> <button>Send</button>
  </fieldset>
 </form>
</main>
<aside>
 <h2>Online</h2>
 <ul id="online"></ul>
</aside>
<script type="module">
// The wspool JavaScript client (clients/js), served by this example.
import { WsPoolClient, token } from '/wspool-client.js';
let client = null;
const $ = (id) => document.getElementById(id);
function log(text, cls) {
  const line = document.createElement('div');
  line.textContent = text; line.className = cls || '';
  $('log').appendChild(line); $('log').scrollTop = 1e9;
}
function disconnected() { client = null; $('connectBtn').textContent = 'Connect'; }
$('connect').onsubmit = (e) => {
  e.preventDefault();
  if (client) { client.close(); return; }
  const id = $('id').value;
  const channels = $('channels').value.split(/[\s,]+/).filter(Boolean);
  const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
  let c;
  try { c = new WsPoolClient(url, { id, channels, format: 'json' }); } catch (err) { log(err.message, 'err'); return; }
  client = c;
  $('connectBtn').textContent = 'Disconnect';
  c.on('open', () => { log('connected as ' + token(id, channels), 'sys'); refresh(); });
  c.on('close', ({ code, reason, reconnecting }) => {
    log('closed: ' + code + ' ' + reason + (reconnecting ? ' (reconnecting)' : ''), 'sys');
    if (!reconnecting && client === c) disconnected();
    refresh();
  });
  c.on('receipt', (m) => log('[pool] status ' + m.status + ': ' + m.callbackMsg, 'err'));
  c.on('message', (m) => {
    const who = m.fromClientId || 'server';
    const where = (m.channel && m.channel.length) ? '#' + m.channel.join(',#') : 'direct';
    log(who + ' (' + where + '): ' + m.msg, who === id ? 'me' : '');
  });
};
$('send').onsubmit = (e) => {
  e.preventDefault();
  if (!client) { log('not connected', 'err'); return; }
  const msg = { msg: $('text').value, toClientId: $('to').value,
                channel: $('toChannels').value.split(/[\s,]+/).filter(Boolean) };
  try { client.send(msg); } catch (err) { log(err.message, 'err'); return; }
  if (msg.toClientId && !msg.channel.length) log('you -> ' + msg.toClientId + ': ' + msg.msg, 'me');
  $('text').value = '';
};
async function refresh() {
  try {
    const clients = await (await fetch('/online')).json();
    $('online').innerHTML = '';
    for (const c of clients) {
      const li = document.createElement('li');
      li.textContent = c.id + (c.channels.length ? ' #' + c.channels.join(' #') : '');
      li.onclick = () => { $('to').value = c.id; $('toChannels').value = ''; };
      $('online').appendChild(li);
    }
  } catch (e) { /* server gone */ }
}
setInterval(refresh, 2000); refresh();
</script>
</body>
</html>
"#;
