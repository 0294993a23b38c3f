//! A chat server on wspool: a page at `/`, the pool at `/ws`, and the JSON
//! admin API under `/api` (PROTOCOL.md section 8).
//!
//! ```text
//! cargo run --example chat                       # http://127.0.0.1:3000
//! cargo run --example chat -- --addr 0.0.0.0:8080 --max-message-size 65536 --queue-len 256
//! ```
//!
//! Open the page in two browser tabs, connect as two ids, and chat. Drive
//! the pool from a shell:
//!
//! ```text
//! curl localhost:3000/api/clients
//! curl -XPOST localhost:3000/api/send -d '{"toClientId":"alice","msg":"hi from curl"}'
//! curl -XPOST localhost:3000/api/broadcast -d '{"channel":["room1"],"msg":"hello room"}'
//! curl -XPUT localhost:3000/api/clients/alice/channels/room2
//! curl -XDELETE localhost:3000/api/clients/alice
//! ```

use std::{net::SocketAddr, time::Duration};

use axum::{response::Html, routing::get, serve::ListenerExt, Router};
use clap::Parser;
use tokio_stream::StreamExt;
use wspool::{PoolEvent, WsPool};

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
}

/// The pool the flags describe.
pub fn pool(args: &Args) -> WsPool {
    WsPool::builder()
        .max_message_size(args.max_message_size)
        .queue_max_messages(args.queue_len)
        .queue_max_bytes(args.queue_bytes)
        .idle_timeout(Duration::from_secs(args.idle_timeout_secs))
        .max_connections(args.max_connections)
        .message_ttl(Duration::from_secs(args.message_ttl_secs))
        .offline_ttl(Duration::from_secs(args.offline_ttl_secs))
        .slow_client_timeout(Duration::from_secs(args.slow_client_timeout_secs))
        .build()
}

/// The whole app: page, pool route, admin API.
pub fn app(pool: &WsPool) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
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
    let args = Args::parse();
    let pool = pool(&args);

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
    tracing::info!("chat on http://{}", listener.local_addr()?);
    // Small frames should leave at once: turn Nagle's algorithm off.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let shutdown_pool = pool.clone();
    axum::serve(
        listener,
        app(&pool).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
        shutdown_pool.shutdown().await;
    })
    .await
}

/// The chat page: plain HTML and JS, JSON frames, no build step.
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
 <h1>wspool chat</h1>
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
<script>
let ws = null;
const $ = (id) => document.getElementById(id);
function log(text, cls) {
  const line = document.createElement('div');
  line.textContent = text; line.className = cls || '';
  $('log').appendChild(line); $('log').scrollTop = 1e9;
}
$('connect').onsubmit = (e) => {
  e.preventDefault();
  if (ws) { ws.close(); ws = null; $('connectBtn').textContent = 'Connect'; return; }
  const chans = $('channels').value.split(/[\s,]+/).filter(Boolean);
  const token = [$('id').value, ...chans].join('_');
  const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws?format=json';
  ws = new WebSocket(url, token);
  ws.onopen = () => { log('connected as ' + token, 'sys'); $('connectBtn').textContent = 'Disconnect'; refresh(); };
  ws.onclose = (ev) => { log('closed: ' + ev.code + ' ' + ev.reason, 'sys'); ws = null; $('connectBtn').textContent = 'Connect'; refresh(); };
  ws.onerror = () => log('connection failed (is the id valid and free?)', 'err');
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    if (!m.fromClientId && m.status) { log('[pool] status ' + m.status + ': ' + m.callbackMsg, 'err'); return; }
    const who = m.fromClientId || 'server';
    const where = (m.channel && m.channel.length) ? '#' + m.channel.join(',#') : 'direct';
    log(who + ' (' + where + '): ' + m.msg, who === $('id').value ? 'me' : '');
  };
};
$('send').onsubmit = (e) => {
  e.preventDefault();
  if (!ws || ws.readyState !== 1) { log('not connected', 'err'); return; }
  const msg = { msg: $('text').value, toClientId: $('to').value,
                channel: $('toChannels').value.split(/[\s,]+/).filter(Boolean) };
  ws.send(JSON.stringify(msg));
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
