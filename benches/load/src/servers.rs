//! The servers under test, each a minimal "pub/sub by room, direct by id"
//! server built the way its users would build it. The Node `ws` server is
//! in `node/server.js`.
//!
//! Every server sends each client a first message once it is registered
//! (wspool: the client's own message echoed back; the others: `ready`), so
//! the load generator never publishes to a client the server does not know
//! yet.

use std::{collections::HashMap, sync::Arc};

use axum::{
    extract::{
        ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade},
        Query,
    },
    response::Response,
    routing::get,
    Router,
};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    net::{tcp::OwnedWriteHalf, TcpListener},
    sync::{broadcast, mpsc},
};

/// Serves `kind` on `port`; with `redis`, as one node of a cluster over
/// that Redis (wspool and socketioxide only).
pub async fn serve(kind: &str, port: u16, redis: Option<&str>) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    // Every server sends small frames at once: Nagle off, as node's ws does.
    let nodelay = |l: TcpListener| {
        l.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        })
    };
    if let Some(url) = redis {
        let app = match kind {
            "wspool" => wspool_cluster_app(url).await?,
            "socketioxide" => socketio_cluster_app(url).await?,
            other => {
                return Err(std::io::Error::other(format!(
                    "{other} has no cluster mode"
                )))
            }
        };
        return axum::serve(nodelay(listener), app).await;
    }
    match kind {
        // `wspool-sse`: the same server; its subscribers use the HTTP
        // fallback (`crate::sse`).
        "wspool" | "wspool-sse" => axum::serve(nodelay(listener), wspool_app()).await,
        "socketioxide" => axum::serve(nodelay(listener), socketio_app()).await,
        "naive-axum" => axum::serve(nodelay(listener), naive_app()).await,
        "limit" => limit(listener).await,
        "axum-floor" => axum::serve(nodelay(listener), floor_app()).await,
        other => Err(std::io::Error::other(format!("unknown server {other}"))),
    }
}

// ----- wspool: the crate's public API only -----

/// The pool with every default, except the limits meant for strangers on
/// the internet: the load generator is one address (127.0.0.1) opening
/// thousands of connections at once, and the fan-out publisher sends
/// faster than a browser would. The peers have no such limits.
pub fn wspool_pool() -> wspool::WsPool {
    wspool_builder().build()
}

fn wspool_builder() -> wspool::WsPoolBuilder {
    let builder = wspool::WsPool::builder()
        .max_connections_per_ip(usize::MAX)
        .max_handshakes_in_flight(usize::MAX)
        .max_inbound_messages_per_sec(u32::MAX)
        .max_inbound_bytes_per_sec(usize::MAX);
    // `benches/load/read_buffer.sh` compares read buffer sizes, and
    // BENCHMARKS.md write buffer sizes.
    let builder = match env_size("WSPOOL_BENCH_READ_BUFFER") {
        Some(size) => builder.read_buffer_size(size),
        None => builder,
    };
    match env_size("WSPOOL_BENCH_WRITE_BUFFER") {
        Some(size) => builder.write_buffer_size(size),
        None => builder,
    }
}

/// A size from the environment variable `name`, if set.
fn env_size(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// A wspool node of a cluster over the Redis at `url`. `cluster-soak`
/// names its nodes (`WSPOOL_BENCH_NODE_ID`) and sets their offline window
/// (`WSPOOL_BENCH_OFFLINE_TTL_SECS`).
async fn wspool_cluster_app(url: &str) -> std::io::Result<Router> {
    let mut config = wspool::cluster::redis::RedisConfig::new(url);
    if let Ok(id) = std::env::var("WSPOOL_BENCH_NODE_ID") {
        config.node_id = id;
    }
    let mut builder = wspool_builder();
    if let Some(secs) = std::env::var("WSPOOL_BENCH_OFFLINE_TTL_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        builder = builder.offline_ttl(std::time::Duration::from_secs(secs));
    }
    let pool = builder.redis_config(config).connect().await;
    let pool = pool.map_err(std::io::Error::other)?;
    // cluster-soak's ledger: the broadcasts this node reported lost to the
    // other nodes (`PoolEvent::Undelivered` to no one), by message id.
    let lost: Arc<parking_lot::Mutex<Vec<String>>> = Arc::default();
    let mut events = pool.events();
    let record = lost.clone();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if let wspool::PoolEvent::Undelivered { to, msg, .. } = event {
                if to.is_empty() {
                    record.lock().push(msg.msg_id.clone());
                }
            }
        }
    });
    let lost = move || {
        let lost = lost.clone();
        async move { axum::Json(lost.lock().clone()) }
    };
    // The admin API: `cluster_100k` publishes through its broadcast_all.
    let app = Router::new()
        .merge(wspool::route())
        .merge(wspool::admin::Admin::open_for_local_use().router())
        .route("/bench/lost", axum::routing::get(lost));
    Ok(app.layer(pool.layer()))
}

fn wspool_app() -> Router {
    let pool = wspool_pool();
    Router::new().merge(wspool::route()).layer(pool.layer())
}

// ----- socketioxide -----

#[derive(Deserialize)]
struct Hello {
    id: String,
    room: Option<String>,
}

#[derive(Deserialize)]
struct Publish {
    to: String,
    p: String,
}

fn socketio_app() -> Router {
    use socketioxide::{
        extract::{Data, SocketRef},
        SocketIo,
    };
    let (layer, io) = SocketIo::new_layer();
    io.ns("/", async |s: SocketRef, Data(hello): Data<Hello>| {
        s.join(hello.id);
        if let Some(room) = hello.room {
            s.join(room);
        }
        // Rooms and direct messages are the same operation here: a room per id.
        s.on("pub", async |s: SocketRef, Data(msg): Data<Publish>| {
            let _ = s.broadcast().to(msg.to).emit("m", &msg.p).await;
        });
        let _ = s.emit("ready", &());
    });
    Router::new().layer(layer)
}

/// A socketioxide node with its Redis adapter (socketioxide-redis), as its
/// README sets it up.
async fn socketio_cluster_app(url: &str) -> std::io::Result<Router> {
    use socketioxide::SocketIo;
    use socketioxide_redis::{RedisAdapter, RedisAdapterCtr};
    let client =
        redis::Client::open(format!("{url}/?protocol=resp3")).map_err(std::io::Error::other)?;
    let adapter = RedisAdapterCtr::new_with_redis(&client)
        .await
        .map_err(std::io::Error::other)?;
    let (layer, io) = SocketIo::builder()
        .with_adapter::<RedisAdapter<_>>(adapter)
        .build_layer();
    io.ns("/", sio_connect)
        .await
        .map_err(std::io::Error::other)?;
    Ok(Router::new().layer(layer))
}

async fn sio_connect<A: socketioxide::adapter::Adapter>(
    s: socketioxide::extract::SocketRef<A>,
    socketioxide::extract::Data(hello): socketioxide::extract::Data<Hello>,
) {
    let mut rooms = vec![hello.id];
    rooms.extend(hello.room);
    s.join(rooms);
    s.on("pub", sio_publish);
    let _ = s.emit("ready", &());
}

async fn sio_publish<A: socketioxide::adapter::Adapter>(
    s: socketioxide::extract::SocketRef<A>,
    socketioxide::extract::Data(msg): socketioxide::extract::Data<Publish>,
) {
    let _ = s.broadcast().to(msg.to).emit("m", &msg.p).await;
}

// ----- naive-axum: the axum chat-example pattern -----

#[derive(Deserialize)]
struct Who {
    id: String,
    room: Option<String>,
}

#[derive(Default)]
struct Naive {
    rooms: std::sync::Mutex<HashMap<String, broadcast::Sender<Utf8Bytes>>>,
    users: std::sync::Mutex<HashMap<String, mpsc::UnboundedSender<Utf8Bytes>>>,
}

fn naive_app() -> Router {
    let state = Arc::new(Naive::default());
    Router::new().route(
        "/",
        get(move |ws: WebSocketUpgrade, Query(who): Query<Who>| {
            let state = state.clone();
            async move { ws.on_upgrade(move |socket| naive_socket(socket, who, state)) as Response }
        }),
    )
}

async fn naive_socket(socket: WebSocket, who: Who, state: Arc<Naive>) {
    let (mut sender, mut receiver) = socket.split();
    let mut room_rx = who.room.as_ref().map(|room| {
        let mut rooms = state.rooms.lock().unwrap();
        rooms
            .entry(room.clone())
            .or_insert_with(|| broadcast::channel(1024).0)
            .subscribe()
    });
    let (tx, mut rx) = mpsc::unbounded_channel();
    state.users.lock().unwrap().insert(who.id.clone(), tx);
    let _ = sender.send(Message::text("ready")).await;
    let mut send_task = tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                m = async { match &mut room_rx { Some(r) => r.recv().await, None => std::future::pending().await } } => match m {
                    Ok(m) => m,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => break,
                },
                m = rx.recv() => match m { Some(m) => m, None => break },
            };
            if sender.send(Message::Text(msg)).await.is_err() {
                break;
            }
        }
    });
    let recv_state = state.clone();
    let mut recv_task = tokio::spawn(async move {
        while let Some(Ok(Message::Text(text))) = receiver.next().await {
            let Some((target, payload)) = text.as_str().split_once(' ') else {
                continue;
            };
            let payload = Utf8Bytes::from(payload);
            match target.split_at(1) {
                ("R", room) => {
                    if let Some(tx) = recv_state.rooms.lock().unwrap().get(room) {
                        let _ = tx.send(payload);
                    }
                }
                (_, id) => {
                    if let Some(tx) = recv_state.users.lock().unwrap().get(id) {
                        let _ = tx.send(payload);
                    }
                }
            }
        }
    });
    tokio::select! {
        _ = &mut send_task => recv_task.abort(),
        _ = &mut recv_task => send_task.abort(),
    }
    state.users.lock().unwrap().remove(&who.id);
}

// ----- limit: a minimal handshake, then pre-encoded frames straight to TCP -----
//
// The ceiling: no framework between a published frame and the sockets.
// It speaks wspool's protocol (the id and rooms from the subprotocol,
// binary `SendMsg` frames), and what it writes is byte for byte what
// wspool writes: each inbound `SendMsg` decoded, stamped with its sender
// and the time, encoded once, framed once. So the ratio to it measures the
// server, not the envelope.
// The publisher encodes a frame once and appends its bytes to each
// recipient's pending buffer; each connection's writer task takes the whole
// buffer and writes it with one syscall. Coalescing is what any fast server
// does (wspool batches the same way), so this is the ceiling for the same
// design, not for one-syscall-per-frame.

/// One connection's outbound side: bytes waiting for its writer task.
#[derive(Default)]
struct Outbox {
    pending: std::sync::Mutex<Vec<u8>>,
    ready: tokio::sync::Notify,
}

impl Outbox {
    fn push(&self, frame: &[u8]) {
        let mut pending = self.pending.lock().unwrap();
        let was_empty = pending.is_empty();
        pending.extend_from_slice(frame);
        drop(pending);
        if was_empty {
            self.ready.notify_one();
        }
    }
}

/// Writes everything pushed to `outbox`, one syscall per batch.
async fn limit_writer(mut write: OwnedWriteHalf, outbox: Arc<Outbox>) {
    use tokio::io::AsyncWriteExt;
    let mut batch = Vec::new();
    loop {
        outbox.ready.notified().await;
        std::mem::swap(&mut batch, &mut *outbox.pending.lock().unwrap());
        if batch.is_empty() {
            continue;
        }
        if write.write_all(&batch).await.is_err() {
            return;
        }
        batch.clear();
    }
}

/// Who is in which room, and who is who: the limit's and axum-floor's
/// routing, over their own kind of outbox. Rooms keep a member after it
/// leaves (the scenarios never leave a room they stay connected to).
struct Routes<T> {
    rooms: std::sync::Mutex<HashMap<String, Vec<Arc<T>>>>,
    users: std::sync::Mutex<HashMap<String, Arc<T>>>,
}

impl<T> Default for Routes<T> {
    fn default() -> Self {
        Routes {
            rooms: Default::default(),
            users: Default::default(),
        }
    }
}

impl<T> Routes<T> {
    /// Registers `outbox` under the subprotocol token `id_room1_room2`, as
    /// wspool reads it; returns the id.
    fn join(&self, token: &str, outbox: &Arc<T>) -> String {
        let mut parts = token.split('_');
        let id = parts.next().unwrap_or_default().to_owned();
        for room in parts {
            let mut rooms = self.rooms.lock().unwrap();
            rooms
                .entry(room.to_owned())
                .or_default()
                .push(outbox.clone());
        }
        (self.users.lock().unwrap()).insert(id.clone(), outbox.clone());
        id
    }

    /// Hands `msg` to its room's members, or to the one it is addressed to.
    fn route(&self, msg: &wspool::SendMsg, mut deliver: impl FnMut(&T)) {
        if let Some(room) = msg.channel.first() {
            if let Some(members) = self.rooms.lock().unwrap().get(room) {
                members.iter().for_each(|m| deliver(m));
            }
        } else if let Some(member) = self.users.lock().unwrap().get(&msg.to_client_id) {
            deliver(member);
        }
    }

    fn leave(&self, id: &str) {
        self.users.lock().unwrap().remove(id);
    }
}

type Limit = Routes<Outbox>;

async fn limit(listener: TcpListener) -> std::io::Result<()> {
    let state = Arc::new(Limit::default());
    loop {
        let (stream, _) = listener.accept().await?;
        let state = state.clone();
        tokio::spawn(async move {
            let _ = limit_conn(stream, state).await;
        });
    }
}

/// An unmasked server binary frame.
pub fn server_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(0x82);
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n < 65536 => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

async fn limit_conn(stream: tokio::net::TcpStream, state: Arc<Limit>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (read, write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = String::new();
    read.read_line(&mut line).await?;
    let (mut key, mut token) = (None, String::new());
    loop {
        line.clear();
        read.read_line(&mut line).await?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("sec-websocket-key") {
                key = Some(value.trim().to_owned());
            } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
                token = value.trim().to_owned();
            }
        }
    }
    let accept = tungstenite::handshake::derive_accept_key(key.unwrap_or_default().as_bytes());
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: {token}\r\n\r\n"
    );
    let outbox = Arc::new(Outbox::default());
    outbox.push(head.as_bytes());
    let writer = tokio::spawn(limit_writer(write, outbox.clone()));
    let id = state.join(&token, &outbox);
    // Read masked client frames; route text frames.
    loop {
        let mut head = [0u8; 2];
        read.read_exact(&mut head).await?;
        let opcode = head[0] & 0x0f;
        let mut len = (head[1] & 0x7f) as usize;
        if len == 126 {
            let mut b = [0u8; 2];
            read.read_exact(&mut b).await?;
            len = u16::from_be_bytes(b) as usize;
        } else if len == 127 {
            let mut b = [0u8; 8];
            read.read_exact(&mut b).await?;
            len = u64::from_be_bytes(b) as usize;
        }
        let mut mask = [0u8; 4];
        if head[1] & 0x80 != 0 {
            read.read_exact(&mut mask).await?;
        }
        let mut payload = vec![0u8; len];
        read.read_exact(&mut payload).await?;
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        if opcode == 0x8 {
            break;
        }
        if opcode != 0x2 {
            continue;
        }
        let Some(msg) = stamped(&id, &payload) else {
            continue;
        };
        let frame = server_frame(&prost::Message::encode_to_vec(&msg));
        state.route(&msg, |outbox| outbox.push(&frame));
    }
    state.leave(&id);
    writer.abort();
    Ok(())
}

/// A client's `SendMsg`, stamped as wspool stamps a relay (PROTOCOL.md
/// 3.1): its sender, and the time unless it has one.
fn stamped(id: &str, payload: &[u8]) -> Option<wspool::SendMsg> {
    let mut msg = <wspool::SendMsg as prost::Message>::decode(payload).ok()?;
    msg.from_client_id = id.to_owned();
    if msg.timestamp == 0 {
        msg.timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
    }
    Some(msg)
}

// ----- axum-floor: the limit's design through axum's WebSocket -----
//
// What wspool's public shape (axum's `WebSocketUpgrade`, one task per
// connection owning its `WebSocket`) costs before any pool logic: the
// limit's routing and batching (one encode per message, a queue per
// connection, one flush per batch), but frames written through axum's
// WebSocket (tungstenite) instead of straight to TCP. wspool / axum-floor
// is wspool's own overhead; axum-floor / limit is the framework's.

/// One connection's outbound side: messages waiting for its task.
#[derive(Default)]
struct FloorOutbox {
    pending: std::sync::Mutex<Vec<bytes::Bytes>>,
    ready: tokio::sync::Notify,
}

impl FloorOutbox {
    fn push(&self, frame: &bytes::Bytes) {
        let mut pending = self.pending.lock().unwrap();
        pending.push(frame.clone());
        let first = pending.len() == 1;
        drop(pending);
        if first {
            self.ready.notify_one();
        }
    }
}

type Floor = Routes<FloorOutbox>;

fn floor_app() -> Router {
    let state = Arc::new(Floor::default());
    // wspool's buffer sizes: the two differ only in what wspool does
    // between the socket and the routing.
    let defaults = wspool::Config::default();
    let (read, write) = (defaults.read_buffer_size(), defaults.write_buffer_size());
    Router::new().route(
        "/ws",
        get(
            move |ws: WebSocketUpgrade, headers: axum::http::HeaderMap| {
                let state = state.clone();
                async move {
                    let token = headers
                        .get("sec-websocket-protocol")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    ws.protocols([token.clone()])
                        .read_buffer_size(read)
                        .write_buffer_size(write)
                        .on_upgrade(move |socket| floor_socket(socket, token, state))
                }
            },
        ),
    )
}

async fn floor_socket(mut socket: WebSocket, token: String, state: Arc<Floor>) {
    let outbox = Arc::new(FloorOutbox::default());
    let id = state.join(&token, &outbox);
    let mut batch = Vec::new();
    let readable = Readable::new();
    loop {
        tokio::select! {
            frame = readable.next(&mut socket) => {
                let payload = match frame {
                    Some(Ok(Message::Binary(payload))) => payload,
                    Some(Ok(_)) => continue,
                    _ => break,
                };
                let Some(msg) = stamped(&id, &payload) else { continue };
                let frame = bytes::Bytes::from(prost::Message::encode_to_vec(&msg));
                state.route(&msg, |member| member.push(&frame));
            }
            () = outbox.ready.notified() => {
                std::mem::swap(&mut batch, &mut *outbox.pending.lock().unwrap());
                let mut failed = false;
                for frame in batch.drain(..) {
                    failed |= socket.feed(Message::Binary(frame)).await.is_err();
                }
                if failed || socket.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    state.leave(&id);
}

/// The socket's read side polled only once it asked to be (as wspool's
/// connection does): a task woken for each outbound batch would otherwise
/// try a read, and fail, every time.
struct Readable {
    flag: Arc<ReadableFlag>,
    waker: std::task::Waker,
}

struct ReadableFlag {
    ready: std::sync::atomic::AtomicBool,
    task: futures_util::task::AtomicWaker,
}

impl std::task::Wake for ReadableFlag {
    fn wake(self: Arc<Self>) {
        self.ready.store(true, std::sync::atomic::Ordering::Release);
        self.task.wake();
    }
}

impl Readable {
    fn new() -> Self {
        let flag = Arc::new(ReadableFlag {
            ready: true.into(),
            task: Default::default(),
        });
        let waker = flag.clone().into();
        Readable { flag, waker }
    }

    async fn next(&self, socket: &mut WebSocket) -> Option<Result<Message, axum::Error>> {
        use std::sync::atomic::Ordering::{AcqRel, Release};
        std::future::poll_fn(|cx| {
            self.flag.task.register(cx.waker());
            if !self.flag.ready.swap(false, AcqRel) {
                return std::task::Poll::Pending;
            }
            let polled = socket.poll_next_unpin(&mut std::task::Context::from_waker(&self.waker));
            if polled.is_ready() {
                self.flag.ready.store(true, Release);
            }
            polled
        })
        .await
    }
}
