//! A client of the HTTP fallback (PROTOCOL.md section 10) over real TCP:
//! the event stream read as it arrives, and POSTs.

use std::net::SocketAddr;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use prost::Message as _;
use tokio::{net::TcpStream, sync::mpsc};
use wspool::SendMsg;

use super::WAIT;

/// One event of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `message` when the event names none.
    pub name: String,
    pub data: String,
}

pub struct Sse {
    pub addr: SocketAddr,
    pub session: String,
    pub json: bool,
    pub ping_ms: u64,
    events: mpsc::UnboundedReceiver<Event>,
    /// The tasks holding the stream's connection: dropping the client
    /// closes it, as a closed browser tab does.
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Sse {
    fn drop(&mut self) {
        self.tasks.iter().for_each(tokio::task::AbortHandle::abort);
    }
}

/// Opens a session with `query` (`transport=sse&token=..`); on a refusal,
/// the status and body.
pub async fn open_sse(addr: SocketAddr, query: &str) -> Result<Sse, (u16, String)> {
    let (status, body, conn) = request(addr, "GET", &format!("/ws?{query}"), None, None).await;
    let mut body = match body {
        Ok(body) => body,
        Err(text) => return Err((status, text)),
    };
    let (tx, mut events) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        let mut pending = String::new();
        while let Some(Ok(frame)) = body.frame().await {
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.push_str(std::str::from_utf8(&data).unwrap());
            while let Some(end) = pending.find("\n\n") {
                let block: String = pending.drain(..end + 2).collect();
                let mut event = Event {
                    name: "message".into(),
                    data: String::new(),
                };
                let mut any = false;
                for line in block.lines() {
                    if let Some(name) = line.strip_prefix("event: ") {
                        event.name = name.into();
                    } else if let Some(data) = line.strip_prefix("data: ") {
                        event.data = data.into();
                        any = true;
                    }
                }
                // Comments (`: ping`) carry nothing.
                if any && tx.send(event).is_err() {
                    return;
                }
            }
        }
    });
    let open = tokio::time::timeout(WAIT, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(open.name, "open");
    let open: serde_json::Value = serde_json::from_str(&open.data).unwrap();
    Ok(Sse {
        addr,
        session: open["session"].as_str().unwrap().to_owned(),
        json: query.contains("format=json"),
        ping_ms: open["ping_ms"].as_u64().unwrap(),
        events,
        tasks: vec![reader.abort_handle(), conn],
    })
}

/// A request on a connection of its own: the status, and the body as a
/// stream (2xx) or as text.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(Vec<u8>, &str)>,
    origin: Option<&str>,
) -> (
    u16,
    Result<hyper::body::Incoming, String>,
    tokio::task::AbortHandle,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    let conn = tokio::spawn(conn).abort_handle();
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let (bytes, content_type) = body.unwrap_or_default();
    if !content_type.is_empty() {
        request = request.header("content-type", content_type);
    }
    let response = send
        .send_request(request.body(Full::new(Bytes::from(bytes))).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    if response.status().is_success() {
        (status, Ok(response.into_body()), conn)
    } else {
        let text = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            Err(String::from_utf8_lossy(&text).into_owned()),
            conn,
        )
    }
}

/// POSTs `body` (`content_type`) to session `session`: the status.
pub async fn post_raw(
    addr: SocketAddr,
    session: &str,
    body: Vec<u8>,
    content_type: &str,
    origin: Option<&str>,
) -> u16 {
    let path = format!("/ws?session={session}");
    request(addr, "POST", &path, Some((body, content_type)), origin)
        .await
        .0
}

impl Sse {
    /// Sends `msg` as this session's format: the status.
    pub async fn send(&self, msg: &SendMsg) -> u16 {
        let (body, content_type) = if self.json {
            (serde_json::to_vec(msg).unwrap(), "application/json")
        } else {
            (msg.encode_to_vec(), "application/x-protobuf")
        };
        post_raw(self.addr, &self.session, body, content_type, None).await
    }

    /// The next event, whatever it is.
    pub async fn event(&mut self) -> Option<Event> {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("timed out waiting for an event")
    }

    /// The next message (a `data:` event), decoded.
    pub async fn recv(&mut self) -> SendMsg {
        let event = self.event().await.expect("the stream ended");
        assert_eq!(event.name, "message", "{event:?}");
        if self.json {
            serde_json::from_str(&event.data).unwrap()
        } else {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&event.data)
                .unwrap();
            SendMsg::decode(&bytes[..]).unwrap()
        }
    }

    /// The close event's code (messages before it skipped), then the end.
    pub async fn close_code(&mut self) -> u16 {
        loop {
            let event = self.event().await.expect("ended without a close event");
            if event.name == "close" {
                let data: serde_json::Value = serde_json::from_str(&event.data).unwrap();
                assert!(
                    self.event().await.is_none(),
                    "the stream goes on after close"
                );
                return data["code"].as_u64().unwrap() as u16;
            }
        }
    }
}
