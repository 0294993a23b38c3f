//! The load generator's side of each server's protocol.

use std::{
    net::IpAddr,
    time::{SystemTime, UNIX_EPOCH},
};

use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    tungstenite::{client::IntoClientRequest, Message},
    MaybeTlsStream, WebSocketStream,
};
use wspool::SendMsg;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Payload size of every benchmark message.
pub const PAYLOAD: usize = 128;

/// Nanoseconds since the Unix epoch: one clock for every process on the
/// machine (`cluster_100k` publishes from one process and receives in
/// others).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// wspool's own: protobuf `SendMsg`, subprotocol `id_room` (wspool,
    /// and the limit, which writes wspool's very bytes).
    Wspool,
    /// socket.io v4 over a raw WebSocket.
    SocketIo,
    /// `R<room> <payload>` / `D<id> <payload>` text frames (node-ws, Bun,
    /// naive-axum).
    Simple,
    /// wspool, its subscribers on the HTTP fallback (server-sent events;
    /// `crate::sse`), its publishers and senders on WebSockets.
    WspoolSse,
}

impl Proto {
    pub fn of(server: &str) -> Proto {
        match server {
            "wspool" | "limit" | "axum-floor" => Proto::Wspool,
            "wspool-sse" => Proto::WspoolSse,
            "socketioxide" => Proto::SocketIo,
            _ => Proto::Simple,
        }
    }
}

/// A 128-byte payload carrying a sequence number and the send time.
pub fn payload(seq: u64) -> String {
    let mut s = format!("{seq:016}{:020}", now_ns());
    s.extend(std::iter::repeat_n('x', PAYLOAD - s.len()));
    s
}

/// (sequence number, send time in ns). Plain digit arithmetic: the load
/// generator parses every delivery and must cost less than the servers.
pub fn parse_payload(p: &[u8]) -> Option<(u64, u64)> {
    fn digits(d: &[u8]) -> Option<u64> {
        d.iter().try_fold(0u64, |n, &c| {
            c.is_ascii_digit()
                .then(|| n.wrapping_mul(10).wrapping_add(u64::from(c - b'0')))
        })
    }
    let seq = digits(p.get(..16)?)?;
    let ts = digits(p.get(16..36)?)?;
    Some((seq, ts))
}

/// What arrived.
pub enum Incoming<'a> {
    Payload(&'a [u8]),
    /// A socket.io ping: answer `pong()`.
    Ping,
    Other,
}

pub fn pong() -> Message {
    Message::text("3")
}

pub async fn connect(proto: Proto, port: u16, id: &str, room: Option<&str>) -> Result<Ws, String> {
    connect_from(proto, port, id, room, None).await
}

/// As [`connect`], from source address `from` (a loopback address other
/// than 127.0.0.1 gives another 28k ephemeral ports).
pub async fn connect_from(
    proto: Proto,
    port: u16,
    id: &str,
    room: Option<&str>,
    from: Option<IpAddr>,
) -> Result<Ws, String> {
    let url = match proto {
        Proto::Wspool | Proto::WspoolSse => format!("ws://127.0.0.1:{port}/ws"),
        Proto::SocketIo => format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"),
        Proto::Simple => match room {
            Some(r) => format!("ws://127.0.0.1:{port}/?id={id}&room={r}"),
            None => format!("ws://127.0.0.1:{port}/?id={id}"),
        },
    };
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    if matches!(proto, Proto::Wspool | Proto::WspoolSse) {
        let token = match room {
            Some(r) => format!("{id}_{r}"),
            None => id.to_owned(),
        };
        req.headers_mut().insert(
            "sec-websocket-protocol",
            token.parse().map_err(|_| "token")?,
        );
    }
    // Nagle off: the clients send small frames and want them sent now. A
    // small read buffer: tungstenite zero-fills it on every read, and at the
    // default 128 KiB that alone saturated the load generator.
    let config = tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
    let (mut ws, _) = match from {
        None => tokio_tungstenite::connect_async_with_config(req, Some(config), true).await,
        Some(from) => {
            let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
            no_port_at_bind(&socket)?;
            socket.bind((from, 0).into()).map_err(|e| e.to_string())?;
            let stream = socket
                .connect(([127, 0, 0, 1], port).into())
                .await
                .map_err(|e| e.to_string())?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            let stream = MaybeTlsStream::Plain(stream);
            tokio_tungstenite::client_async_with_config(req, stream, Some(config)).await
        }
    }
    .map_err(|e| e.to_string())?;
    match proto {
        Proto::Wspool | Proto::WspoolSse => {
            // Registered once a message to ourselves comes back.
            let hello = SendMsg {
                to_client_id: id.to_owned(),
                cmd: 1,
                ..Default::default()
            };
            ws.send(Message::binary(hello.encode_to_vec()))
                .await
                .map_err(|e| e.to_string())?;
            wait_for(&mut ws, |m| matches!(m, Message::Binary(_))).await
        }
        Proto::SocketIo => {
            wait_for(
                &mut ws,
                |m| matches!(m, Message::Text(t) if t.as_str().starts_with('0')),
            )
            .await?;
            let hello = serde_json::json!({ "id": id, "room": room });
            ws.send(Message::text(format!("40{hello}")))
                .await
                .map_err(|e| e.to_string())?;
            wait_for(
                &mut ws,
                |m| matches!(m, Message::Text(t) if t.as_str().starts_with("42[\"ready\"")),
            )
            .await
        }
        Proto::Simple => {
            wait_for(
                &mut ws,
                |m| matches!(m, Message::Text(t) if t.as_str() == "ready"),
            )
            .await
        }
    }
    .map(|()| ws)
}

/// `IP_BIND_ADDRESS_NO_PORT`: the port is chosen at `connect`, for the
/// whole 4-tuple, instead of at `bind`, where the kernel searches its
/// bound ports for a free one (quadratic over thousands of sockets: it was
/// most of the load generator's system time in `cluster_100k`).
fn no_port_at_bind(socket: &tokio::net::TcpSocket) -> Result<(), String> {
    use std::os::fd::AsRawFd as _;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, and an option value of the size
    // given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            std::ptr::from_ref(&one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

async fn wait_for(ws: &mut Ws, mut done: impl FnMut(&Message) -> bool) -> Result<(), String> {
    loop {
        match ws.next().await {
            Some(Ok(m)) if done(&m) => return Ok(()),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("closed during handshake".into()),
        }
    }
}

/// A message to every member of `room`.
pub fn publish(proto: Proto, room: &str, payload: &str) -> Message {
    match proto {
        Proto::Wspool | Proto::WspoolSse => {
            let m = SendMsg {
                channel: vec![room.to_owned()],
                cmd_data: bytes::Bytes::copy_from_slice(payload.as_bytes()),
                ..Default::default()
            };
            Message::binary(m.encode_to_vec())
        }
        Proto::SocketIo => Message::text(format!(r#"42["pub",{{"to":"{room}","p":"{payload}"}}]"#)),
        Proto::Simple => Message::text(format!("R{room} {payload}")),
    }
}

/// A message to client `to`.
pub fn direct(proto: Proto, to: &str, payload: &str) -> Message {
    match proto {
        Proto::Wspool | Proto::WspoolSse => {
            let m = SendMsg {
                to_client_id: to.to_owned(),
                cmd_data: bytes::Bytes::copy_from_slice(payload.as_bytes()),
                ..Default::default()
            };
            Message::binary(m.encode_to_vec())
        }
        // A room per id is how socket.io reaches one client by name.
        Proto::SocketIo => Message::text(format!(r#"42["pub",{{"to":"{to}","p":"{payload}"}}]"#)),
        Proto::Simple => Message::text(format!("D{to} {payload}")),
    }
}

/// Field 5 (`cmdData`) of an encoded `SendMsg`, found without decoding
/// the rest: the load generator must cost less than the servers it loads.
fn cmd_data(mut b: &[u8]) -> Option<&[u8]> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    while !b.is_empty() {
        let key = varint(&mut b)?;
        match key & 7 {
            0 => {
                varint(&mut b)?;
            }
            2 => {
                let len = varint(&mut b)? as usize;
                let (field, rest) = b.split_at_checked(len)?;
                if key >> 3 == 5 {
                    return Some(field);
                }
                b = rest;
            }
            _ => return None,
        }
    }
    None
}

/// Decodes what a client received.
pub fn incoming(proto: Proto, msg: &Message) -> Incoming<'_> {
    match (proto, msg) {
        (Proto::Wspool | Proto::WspoolSse, Message::Binary(b)) => match cmd_data(b) {
            Some(p) => Incoming::Payload(p),
            None => Incoming::Other,
        },
        (Proto::SocketIo, Message::Text(t)) => {
            let s = t.as_str();
            if s == "2" {
                return Incoming::Ping;
            }
            match s.strip_prefix(r#"42["m",""#) {
                Some(rest) => Incoming::Payload(rest.as_bytes()),
                None => Incoming::Other,
            }
        }
        (Proto::Simple, Message::Text(t)) => Incoming::Payload(t.as_bytes()),
        _ => Incoming::Other,
    }
}
