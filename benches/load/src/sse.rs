//! Subscribers over wspool's HTTP fallback (PROTOCOL.md section 10): the
//! server `wspool-sse` is wspool itself, its subscribers reading
//! server-sent events instead of WebSocket frames (the publisher stays on
//! a WebSocket). What the fallback costs beside WebSocket, in one run.

use base64::Engine as _;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use prost::Message as _;
use tokio::net::TcpStream;
use wspool::SendMsg;

/// Opens a session for `id` in `room` on `port`; the event stream, once
/// open (the client is registered by then).
pub async fn open(port: u16, id: &str, room: Option<&str>) -> Result<Session, String> {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let token = match room {
        Some(r) => format!("{id}_{r}"),
        None => id.to_owned(),
    };
    let request = hyper::Request::get(format!("/ws?transport=sse&token={token}"))
        .header("host", format!("127.0.0.1:{port}"))
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = send
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("session refused: {}", response.status()));
    }
    let mut session = Session {
        body: response.into_body(),
        pending: Vec::new(),
        _conn: conn,
    };
    // The open event first.
    let open = session.next_event().await.ok_or("no open event")?;
    if !open.starts_with(b"event: open") {
        return Err("the stream did not start with its open event".into());
    }
    Ok(session)
}

/// One session's event stream.
pub struct Session {
    body: hyper::body::Incoming,
    pending: Vec<u8>,
    _conn: tokio::task::JoinHandle<Result<(), hyper::Error>>,
}

impl Session {
    /// The next event's text (up to its blank line); `None` at the end.
    async fn next_event(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
                let event = self.pending.drain(..end + 2).collect();
                return Some(event);
            }
            let frame = self.body.frame().await?.ok()?;
            if let Ok(data) = frame.into_data() {
                self.pending.extend_from_slice(&data);
            }
        }
    }

    /// Reads events until the stream ends, handing each message's payload
    /// (`cmdData`) to `record`.
    pub async fn run(mut self, record: impl Fn(&[u8]) + Send + 'static) {
        while let Some(event) = self.next_event().await {
            let Some(data) = event.strip_prefix(b"data: ") else {
                continue; // a ping comment, or a named event
            };
            let data = data.strip_suffix(b"\n\n").unwrap_or(data);
            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data) else {
                continue;
            };
            if let Ok(msg) = SendMsg::decode(&bytes[..]) {
                record(&msg.cmd_data);
            }
        }
    }
}
