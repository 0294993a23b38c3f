//! Shared test helpers: a real server on 127.0.0.1:0 and real
//! tokio-tungstenite clients over TCP.
#![allow(dead_code)]

pub mod h2;
#[cfg(feature = "redis")]
pub mod proxy;
pub mod raw;
#[cfg(feature = "redis")]
pub mod redis;
pub mod sse;

use std::{net::SocketAddr, time::Duration};

use axum::Router;
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tokio::net::TcpStream;
use tokio_stream::Stream;
use tokio_tungstenite::{
    tungstenite::{client::IntoClientRequest, protocol::frame::coding::CloseCode, Message},
    MaybeTlsStream, WebSocketStream,
};
use wspool::{PoolEvent, SendMsg, WsPool};

/// Logs to the test's output when `RUST_LOG` is set (for a test that
/// fails only now and then: run it with `RUST_LOG=wspool=debug`).
pub fn logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Longest any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// Serves `app` on an ephemeral port (with connect info) and returns it.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// Serves `app` with `wspool::serve` (header read timeout `header_timeout`)
/// on an ephemeral port; the server shuts down when the sender is dropped
/// or sent to.
pub async fn serve_safe(
    app: Router,
    pool: &WsPool,
    header_timeout: Duration,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = wspool::serve(listener, app, pool)
        .header_read_timeout(header_timeout)
        .with_graceful_shutdown(async move {
            let _ = stopped.await;
        });
    tokio::spawn(async move { server.await.unwrap() });
    (addr, stop)
}

/// Waits (bounded) until the async `check` holds (asked again every
/// 20 ms): for state read over the network.
pub async fn until_async<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    tokio::time::timeout(WAIT, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("condition not reached in time");
}

/// Waits (bounded) until `check` holds: for state with no event to await
/// (Redis's, say).
pub async fn until(mut check: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("condition not reached in time");
}

/// The provided route and the admin API for `pool`.
pub fn app(pool: &WsPool) -> Router {
    Router::new()
        .merge(wspool::route())
        .merge(wspool::admin::Admin::open_for_local_use().router())
        .layer(pool.layer())
}

/// Serves the provided route and the admin API for `pool`.
pub async fn start(pool: &WsPool) -> SocketAddr {
    serve(app(pool)).await
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub json: bool,
    pub protocol: Option<String>,
}

/// Opens a WebSocket to `/ws` offering `protocols` (one header line).
pub async fn try_connect(
    addr: SocketAddr,
    path: &str,
    protocols: Option<&str>,
) -> Result<Client, (u16, String)> {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(p) = protocols {
        req.headers_mut()
            .insert("sec-websocket-protocol", p.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, resp)) => Ok(Client {
            ws,
            json: path.contains("format=json"),
            protocol: resp
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap().to_owned()),
        }),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((resp.status().as_u16(), body))
        }
        Err(e) => panic!("unexpected handshake error: {e}"),
    }
}

/// Connects as `token` and waits until the pool has registered it.
pub async fn connect(pool: &WsPool, addr: SocketAddr, token: &str) -> Client {
    connect_path(pool, addr, "/ws", token).await
}

pub async fn connect_json(pool: &WsPool, addr: SocketAddr, token: &str) -> Client {
    connect_path(pool, addr, "/ws?format=json", token).await
}

pub async fn connect_path(pool: &WsPool, addr: SocketAddr, path: &str, token: &str) -> Client {
    let mut events = pool.events();
    let client = try_connect(addr, path, Some(token))
        .await
        .expect("handshake refused");
    wait_connected(&mut events, token).await;
    client
}

/// Waits until the client that offered `token` is registered.
pub async fn wait_connected<S>(events: &mut S, token: &str)
where
    S: Stream<Item = PoolEvent> + Unpin,
{
    let id = token.split('_').next().unwrap();
    wait_event(
        events,
        |e| matches!(e, PoolEvent::Connected(info) if info.id == *id),
    )
    .await;
}

/// Waits for the first event matching `pred`, failing after `WAIT`.
pub async fn wait_event<S>(events: &mut S, mut pred: impl FnMut(&PoolEvent) -> bool) -> PoolEvent
where
    S: Stream<Item = PoolEvent> + Unpin,
{
    tokio::time::timeout(WAIT, async {
        while let Some(e) = events.next().await {
            if pred(&e) {
                return e;
            }
        }
        panic!("event stream ended");
    })
    .await
    .expect("timed out waiting for an event")
}

pub fn text_msg(to: &str, channels: &[&str], text: &str) -> SendMsg {
    SendMsg {
        to_client_id: to.into(),
        channel: channels.iter().map(|c| c.to_string()).collect(),
        msg: text.into(),
        ..Default::default()
    }
}

impl Client {
    /// Sends `msg` in this client's format.
    pub async fn send(&mut self, msg: &SendMsg) {
        let frame = if self.json {
            Message::text(serde_json::to_string(msg).unwrap())
        } else {
            Message::binary(msg.encode_to_vec())
        };
        self.ws.send(frame).await.unwrap();
    }

    pub async fn send_raw(&mut self, frame: Message) {
        self.ws.send(frame).await.unwrap();
    }

    /// The next data frame, as it came (skipping pings and pongs).
    pub async fn next_frame(&mut self) -> Message {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(m)) => return m,
                    other => panic!("connection ended while waiting for a message: {other:?}"),
                }
            }
        })
        .await
        .expect("timed out waiting for a message")
    }

    /// The next message, decoded from whichever format it came in.
    pub async fn recv(&mut self) -> SendMsg {
        match self.next_frame().await {
            Message::Binary(b) => SendMsg::decode(b).unwrap(),
            Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
            other => panic!("expected a data frame, got {other:?}"),
        }
    }

    /// Closes with a closing handshake: sends a close frame and reads until
    /// the server's reply, returning the messages that arrived meanwhile.
    pub async fn close_gracefully(mut self) -> Vec<SendMsg> {
        self.ws.close(None).await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(WAIT, async {
            while let Some(Ok(m)) = self.ws.next().await {
                match m {
                    Message::Binary(b) => got.push(SendMsg::decode(b).unwrap()),
                    Message::Text(t) => got.push(serde_json::from_str(t.as_str()).unwrap()),
                    _ => {}
                }
            }
        })
        .await
        .expect("timed out closing");
        got
    }

    /// Reads until the server's close frame; returns its code.
    pub async fn close_code(&mut self) -> u16 {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
                    Some(Ok(Message::Close(None))) => return u16::from(CloseCode::Status),
                    Some(Ok(_)) => continue,
                    other => panic!("connection ended without a close frame: {other:?}"),
                }
            }
        })
        .await
        .expect("timed out waiting for a close frame")
    }
}

/// A minimal HTTP/1.1 client over a real TCP connection.
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    let (status, _, body) = http_with(addr, method, path, &[], body).await;
    (status, body)
}

/// [`http`] with `headers` added; answers the status, the response's
/// head (lowercase) and its body.
pub async fn http_with(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let status = raw[9..12].parse().unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    (status, head.to_ascii_lowercase(), body.to_owned())
}

pub async fn json_call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let (status, body) = http(addr, method, path, body).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}")),
    )
}
