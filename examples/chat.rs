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
//! live dashboard is at `/dashboard`. Drive the pool from a shell:
//!
//! ```text
//! curl localhost:3000/api/clients
//! curl -XPOST localhost:3000/api/send -d '{"toClientId":"alice","msg":"hi from curl"}'
//! curl -XPOST localhost:3000/api/broadcast -d '{"channel":["room1"],"msg":"hello room"}'
//! curl -XPUT localhost:3000/api/clients/alice/channels/room2
//! curl -XDELETE localhost:3000/api/clients/alice
//! ```

use std::{net::SocketAddr, time::Duration};

use axum::{http::header, response::Html, routing::get, Router};
use clap::Parser;
use tokio_stream::StreamExt;
use wspool::{ConfigError, PoolEvent, WsPool};

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

/// The whole app: page, pool route, admin API, metrics.
pub fn app(pool: &WsPool) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(|| async { Html(PAGE) }))
        .route("/dashboard", get(|| async { Html(DASHBOARD) }))
        .route(
            "/wspool-client.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], CLIENT_JS) }),
        )
        .merge(wspool::route())
        .merge(wspool::admin::router())
        .layer(pool.layer())
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
            wspool::serve(listener, app(&pool), &pool)
        }
        (Some(cert), Some(key)) => tls_server(listener, &pool, cert, key, addr),
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
    wspool::serve_tls(listener, app(pool), pool, tls)
}

#[cfg(not(feature = "tls"))]
fn tls_server(
    _: tokio::net::TcpListener,
    _: &WsPool,
    _: &std::path::Path,
    _: &std::path::Path,
    _: SocketAddr,
) -> wspool::Serve {
    eprintln!("chat: TLS needs the `tls` feature: cargo run --example chat --features tls -- ...");
    std::process::exit(2);
}

/// The live dashboard: charts fed by `/api/stats/stream` (server-sent
/// events), the client list from `/api/clients`, kick, join and leave
/// through the admin API. Plain HTML, JS and canvas; no build step.
pub const DASHBOARD: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>wspool dashboard</title>
<style>
 * { box-sizing: border-box; }
 body { font: 14px system-ui, sans-serif; margin: 0; padding: 16px 24px; color: #1d2433; background: #f6f7f9; }
 header { display: flex; align-items: baseline; gap: 16px; }
 h1 { font-size: 20px; margin: 0 0 12px; } header a { color: #2563eb; }
 .tiles { display: grid; grid-template-columns: repeat(6, 1fr); gap: 12px; margin-bottom: 12px; }
 .tile { background: #fff; border-radius: 8px; padding: 10px 14px; box-shadow: 0 1px 2px #0001; }
 .tile b { display: block; font-size: 22px; margin-top: 2px; font-variant-numeric: tabular-nums; }
 .tile span { color: #667085; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
 .charts { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; margin-bottom: 12px; }
 .chart { background: #fff; border-radius: 8px; padding: 10px 14px; box-shadow: 0 1px 2px #0001; }
 .chart h2 { font-size: 13px; margin: 0 0 6px; font-weight: 600; }
 canvas { width: 100%; height: 170px; display: block; }
 .legend i { display: inline-block; width: 10px; height: 3px; margin: 0 4px 3px 10px; vertical-align: middle; }
 table { width: 100%; border-collapse: collapse; background: #fff; border-radius: 8px; overflow: hidden; box-shadow: 0 1px 2px #0001; }
 th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid #eef0f3; }
 th { font-size: 12px; color: #667085; text-transform: uppercase; letter-spacing: .04em; background: #fafbfc; }
 .list { max-height: 270px; overflow-y: auto; border-radius: 8px; }
 button { font: inherit; padding: 2px 8px; border: 1px solid #d0d5dd; background: #fff; border-radius: 5px; cursor: pointer; }
 button.kick { color: #b42318; border-color: #fda29b; }
 input { font: inherit; width: 7em; padding: 2px 4px; border: 1px solid #d0d5dd; border-radius: 5px; }
 .muted { color: #98a2b3; }
</style>
</head>
<body>
<header><h1>wspool dashboard</h1><a href="/">chat</a><span class="muted" id="status">connecting...</span></header>
<section class="tiles">
 <div class="tile"><span>connections</span><b id="connections">-</b></div>
 <div class="tile"><span>messages in/s</span><b id="rateIn">-</b></div>
 <div class="tile"><span>messages out/s</span><b id="rateOut">-</b></div>
 <div class="tile"><span>messages in</span><b id="totalIn">-</b></div>
 <div class="tile"><span>dropped</span><b id="dropped">-</b></div>
 <div class="tile"><span>undelivered</span><b id="undelivered">-</b></div>
</section>
<section class="charts">
 <div class="chart"><h2>Connections <span class="legend"><i style="background:#2563eb"></i>now</span></h2><canvas id="connChart"></canvas></div>
 <div class="chart"><h2>Messages per second <span class="legend"><i style="background:#16a34a"></i>in<i style="background:#f97316"></i>out</span></h2><canvas id="rateChart"></canvas></div>
</section>
<div class="list"><table>
 <thead><tr><th>id</th><th>channels</th><th>address</th><th>connected since</th><th>in / out</th><th></th></tr></thead>
 <tbody id="clients"></tbody>
</table></div>
<script>
const $ = (id) => document.getElementById(id);
const WINDOW = 300; // samples: the last five minutes, one a second
const samples = [];
let last = null;
function draw(canvas, series) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = w * dpr; canvas.height = h * dpr;
  const g = canvas.getContext('2d'); g.scale(dpr, dpr); g.clearRect(0, 0, w, h);
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  g.strokeStyle = '#eef0f3'; g.fillStyle = '#98a2b3'; g.font = '11px system-ui';
  for (let k = 0; k <= 4; k++) {
    const y = 8 + (h - 24) * k / 4;
    g.beginPath(); g.moveTo(36, y); g.lineTo(w, y); g.stroke();
    const v = max * (4 - k) / 4;
    g.fillText(max < 10 ? v.toFixed(1) : String(Math.round(v)), 0, y + 4);
  }
  g.fillText('-5 min', 36, h - 2); g.fillText('now', w - 22, h - 2);
  for (const s of series) {
    g.strokeStyle = s.color; g.lineWidth = 2; g.beginPath();
    s.values.forEach((v, i) => {
      const x = 36 + (w - 36) * (i + WINDOW - s.values.length) / (WINDOW - 1);
      const y = 8 + (h - 24) * (1 - v / max);
      i ? g.lineTo(x, y) : g.moveTo(x, y);
    });
    g.stroke();
  }
  canvas.dataset.points = String(series[0].values.length);
}
function render() {
  draw($('connChart'), [{ color: '#2563eb', values: samples.map((p) => p.connections) }]);
  draw($('rateChart'), [
    { color: '#16a34a', values: samples.map((p) => p.rateIn) },
    { color: '#f97316', values: samples.map((p) => p.rateOut) },
  ]);
}
const stream = new EventSource('/api/stats/stream');
stream.onopen = () => { $('status').textContent = 'live'; };
stream.onerror = () => { $('status').textContent = 'reconnecting...'; };
stream.addEventListener('stats', (e) => {
  const s = JSON.parse(e.data), now = performance.now();
  if (last) {
    const dt = Math.max(0.001, (now - last.t) / 1000);
    samples.push({
      connections: s.connections,
      rateIn: (s.messagesIn - last.s.messagesIn) / dt,
      rateOut: (s.messagesOut - last.s.messagesOut) / dt,
    });
    if (samples.length > WINDOW) samples.shift();
  }
  last = { t: now, s };
  const p = samples[samples.length - 1];
  $('connections').textContent = s.connections;
  $('totalIn').textContent = s.messagesIn;
  $('dropped').textContent = s.dropped;
  $('undelivered').textContent = s.undelivered;
  $('rateIn').textContent = p ? p.rateIn.toFixed(1) : '0';
  $('rateOut').textContent = p ? p.rateOut.toFixed(1) : '0';
  render();
});
async function api(method, path) {
  const res = await fetch(path, { method });
  if (!res.ok) alert((await res.json()).error || res.status);
  refreshClients();
}
function cell(row, text) { const td = row.insertCell(); td.textContent = text; return td; }
async function refreshClients() {
  let list;
  try { list = await (await fetch('/api/clients')).json(); } catch { return; }
  const body = $('clients'); body.innerHTML = '';
  for (const c of list.slice(0, 500)) {
    const row = body.insertRow(); row.dataset.id = c.id;
    cell(row, c.id);
    cell(row, c.channels.join(', '));
    cell(row, c.remoteAddr || '');
    cell(row, new Date(c.connectedAt).toLocaleTimeString());
    cell(row, c.messagesIn + ' / ' + c.messagesOut);
    const act = row.insertCell();
    const id = encodeURIComponent(c.id);
    const ch = document.createElement('input'); ch.placeholder = 'channel';
    const join = document.createElement('button'); join.textContent = 'join'; join.className = 'join';
    join.onclick = () => ch.value && api('PUT', `/api/clients/${id}/channels/${encodeURIComponent(ch.value)}`);
    const leave = document.createElement('button'); leave.textContent = 'leave'; leave.className = 'leave';
    leave.onclick = () => ch.value && api('DELETE', `/api/clients/${id}/channels/${encodeURIComponent(ch.value)}`);
    const kick = document.createElement('button'); kick.textContent = 'kick'; kick.className = 'kick';
    kick.onclick = () => api('DELETE', `/api/clients/${id}`);
    act.append(ch, ' ', join, ' ', leave, ' ', kick);
  }
}
setInterval(refreshClients, 2000); refreshClients(); render();
</script>
</body>
</html>
"##;

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
    const clients = await (await fetch('/api/clients')).json();
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
