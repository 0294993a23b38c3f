//! Messages on the wire: the two frame formats, encoding once per format,
//! decoding, stamping and receipts.

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::extract::ws::{Message, Utf8Bytes};
use bytes::Bytes;
use prost::Message as _;
use tokio::time::Instant;

use crate::{ClientId, PoolError, SendMsg};

/// The `status` values the pool itself puts in receipts (PROTOCOL.md
/// section 4). Every other value belongs to applications.
pub mod status {
    /// Expired: waited in a queue longer than its time to live.
    pub const EXPIRED: i32 = 3;
    /// The recipient is not connected.
    pub const NOT_CONNECTED: i32 = 4;
    /// The recipient's queue was full: dropped.
    pub const QUEUE_FULL: i32 = 5;
    /// The frame could not be decoded.
    pub const UNDECODABLE: i32 = 6;
    /// Refused by the relay policy or a rate limit.
    pub const REFUSED: i32 = 7;
}

/// The close codes the pool sends and reports (PROTOCOL.md section 7,
/// RFC 6455 section 7.4). One name per code, used everywhere.
pub mod close_code {
    /// Normal close; also an idle timeout.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the WebSocket protocol (RFC 6455): a bad frame
    /// header, an unmasked frame, a bad control frame or fragment sequence.
    pub const PROTOCOL: u16 = 1002;
    /// A text frame or close reason that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Policy violation: sustained flooding past the inbound rate limits,
    /// or an id taken while connecting under `DuplicatePolicy::Refuse`.
    pub const POLICY: u16 = 1008;
    /// A message bigger than `max_message_size`.
    pub const TOO_BIG: u16 = 1009;
    /// Replaced by a newer connection with the same id.
    pub const REPLACED: u16 = 4001;
    /// Disconnected by the server application.
    pub const KICKED: u16 = 4002;
    /// Too slow: its queue stayed full for `slow_client_timeout`.
    pub const TOO_SLOW: u16 = 4008;
}

/// How the server frames what it sends to one connection; chosen at the
/// handshake (`?format=json`). Inbound, both are accepted on every
/// connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Format {
    /// Binary frames, each one protobuf `SendMsg` (the default).
    #[default]
    Binary,
    /// Text frames, each one `SendMsg` in canonical proto3 JSON.
    Json,
}

/// Where a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// Queued for a connected client.
    Queued,
    /// Buffered for a client that is away, to be delivered if it reconnects
    /// within `offline_ttl`.
    Buffered,
    /// On its way to the node of a cluster that has the client (or its
    /// offline buffer). If no node has it, that is reported later as
    /// [`PoolEvent::Undelivered`](crate::PoolEvent::Undelivered) with
    /// [`UndeliveredReason::NotConnected`](crate::UndeliveredReason::NotConnected).
    Forwarded,
}

/// One outgoing message, shared by all its recipients: every recipient's
/// queue holds an `Arc` of it, and it is encoded at most once per format
/// however many recipients it has.
pub(crate) struct Encoded {
    pub(crate) msg: Arc<SendMsg>,
    /// The client it was relayed from (receipts go there), `None` when the
    /// server sent it.
    pub(crate) origin: Option<ClientId>,
    /// Not written after this instant: reported as expired instead.
    pub(crate) expires_at: Instant,
    /// When it was queued: the start of `wspool_queue_delay_seconds`.
    #[cfg(feature = "metrics")]
    pub(crate) queued_at: Instant,
    binary: OnceLock<Bytes>,
    json: OnceLock<Utf8Bytes>,
    /// The whole frames (header and payload) for a socket the pool writes
    /// itself, per format: built once, shared by every recipient.
    wire: [OnceLock<Bytes>; 2],
    /// The server-sent event for the HTTP fallback, per format: built
    /// once, shared by every recipient.
    event: [OnceLock<Bytes>; 2],
    /// Its name in a cluster (origin node, number there), set when it
    /// arrives from another node: a client that took it from its offline
    /// buffer does not get it again (see `Mailbox::prepend`). Unset on a
    /// single node.
    name: OnceLock<Name>,
}

/// A message's name in a cluster: the node it was sent on and its number
/// there.
pub(crate) type Name = Box<(Box<str>, u64)>;

impl Encoded {
    pub(crate) fn new(msg: Arc<SendMsg>, origin: Option<ClientId>, ttl: Duration) -> Arc<Self> {
        Self::with_binary(msg, OnceLock::new(), origin, ttl)
    }

    /// A message that came encoded (from another node): `binary` is its
    /// binary form, not encoded again.
    pub(crate) fn decoded(
        binary: Bytes,
        origin: Option<ClientId>,
        ttl: Duration,
    ) -> Result<Arc<Self>, prost::DecodeError> {
        let msg = SendMsg::decode(binary.clone())?;
        Ok(Self::with_binary(
            Arc::new(msg),
            OnceLock::from(binary),
            origin,
            ttl,
        ))
    }

    fn with_binary(
        msg: Arc<SendMsg>,
        binary: OnceLock<Bytes>,
        origin: Option<ClientId>,
        ttl: Duration,
    ) -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Encoded {
            msg,
            origin,
            expires_at: after_from(now, ttl),
            #[cfg(feature = "metrics")]
            queued_at: now,
            binary,
            json: OnceLock::new(),
            wire: Default::default(),
            event: Default::default(),
            name: OnceLock::new(),
        })
    }

    /// Its name in a cluster, if it came from another node.
    pub(crate) fn name(&self) -> Option<&(Box<str>, u64)> {
        self.name.get().map(|n| &**n)
    }

    /// Names it (when it arrives from another node); once.
    pub(crate) fn set_name(&self, node: &str, number: u64) {
        let _ = self.name.set(Box::new((node.into(), number)));
    }

    pub(crate) fn priority(&self) -> i32 {
        self.msg.priority
    }

    /// The payload length in `format` (encoding it if not done yet).
    /// Counted on every push: the length only, no clone of the bytes.
    pub(crate) fn encoded_len(&self, format: Format) -> usize {
        match format {
            Format::Binary => self.binary().len(),
            Format::Json => self.json().len(),
        }
    }

    /// The frame for `format`: a reference to the shared encoding, not a
    /// copy.
    pub(crate) fn frame(&self, format: Format) -> Message {
        match format {
            Format::Binary => Message::Binary(self.binary().clone()),
            Format::Json => Message::Text(self.json().clone()),
        }
    }

    /// The whole server frame for `format` (unmasked, final, binary or
    /// text), as a socket the pool upgraded is written: built on first
    /// use, then shared by every recipient.
    pub(crate) fn wire(&self, format: Format) -> &Bytes {
        match format {
            Format::Binary => self.wire[0].get_or_init(|| server_frame(0x2, self.binary())),
            Format::Json => self.wire[1].get_or_init(|| server_frame(0x1, self.json().as_bytes())),
        }
    }

    /// The message as one server-sent event (PROTOCOL.md section 10): a
    /// `data:` line with the JSON form, or the binary form in base64.
    pub(crate) fn event(&self, format: Format) -> &Bytes {
        use base64::Engine as _;
        let i = usize::from(format == Format::Json);
        self.event[i].get_or_init(|| {
            let data = match format {
                Format::Json => self.json().to_string(),
                Format::Binary => base64::engine::general_purpose::STANDARD.encode(self.binary()),
            };
            Bytes::from(format!("data: {data}\n\n"))
        })
    }

    /// The binary (protobuf) form, encoded on first use.
    pub(crate) fn binary(&self) -> &Bytes {
        self.binary
            .get_or_init(|| Bytes::from(self.msg.encode_to_vec()))
    }

    fn json(&self) -> &Utf8Bytes {
        self.json.get_or_init(|| {
            // Serializing plain strings, numbers and bytes into a String
            // cannot fail.
            Utf8Bytes::from(serde_json::to_string(&*self.msg).unwrap_or_default())
        })
    }
}

/// A final, unmasked server frame of `opcode` carrying `payload` (RFC 6455
/// section 5.2).
fn server_frame(opcode: u8, payload: &[u8]) -> Bytes {
    let len = payload.len();
    let mut frame = Vec::with_capacity(len + 10);
    frame.push(0x80 | opcode);
    if len < 126 {
        frame.push(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        frame.push(126);
        frame.extend_from_slice(&len.to_be_bytes());
    } else {
        frame.push(127);
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    frame.extend_from_slice(payload);
    Bytes::from(frame)
}

/// About a century: a duration at least this long means "never".
pub(crate) const NEVER: Duration = Duration::from_secs(86_400 * 365 * 100);

/// `d` from now; a duration too large for the clock (a configured
/// `Duration::MAX`, say) means about a century: never, in practice.
pub(crate) fn after(d: Duration) -> Instant {
    after_from(Instant::now(), d)
}

/// `d` after `now`, as [`after`].
pub(crate) fn after_from(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or(now + NEVER)
}

/// Decodes an inbound data frame.
pub(crate) fn decode(frame: &Message) -> Result<SendMsg, PoolError> {
    match frame {
        Message::Binary(b) => {
            SendMsg::decode(b.clone()).map_err(|e| PoolError::Decode(e.to_string()))
        }
        Message::Text(t) => {
            serde_json::from_str(t.as_str()).map_err(|e| PoolError::Decode(e.to_string()))
        }
        _ => Err(PoolError::Decode("not a data frame".into())),
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// PROTOCOL.md 3.1: the sender's id always, the server's time when none.
pub(crate) fn stamp(msg: &mut SendMsg, sender: &str) {
    if msg.from_client_id != sender {
        msg.from_client_id = sender.to_owned();
    }
    if msg.timestamp == 0 {
        msg.timestamp = now_ms();
    }
}

/// A receipt for `original` (PROTOCOL.md section 4): from the pool, to the
/// original sender, the original's identifying fields copied.
pub fn receipt(original: &SendMsg, status: i32, reason: &str) -> SendMsg {
    SendMsg {
        cmd: original.cmd,
        timestamp: now_ms(),
        from_client_id: String::new(),
        to_client_id: original.from_client_id.clone(),
        msg_id: original.msg_id.clone(),
        status,
        callback_msg: reason.to_owned(),
        cmdkey: original.cmdkey.clone(),
        local_id: original.local_id,
        page_key: original.page_key.clone(),
        page_id: original.page_id.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frames the pool writes itself are byte for byte what
    /// tungstenite writes for the same message, at every length encoding
    /// (7-bit, 16-bit, 64-bit), binary and text.
    #[test]
    fn wire_frames_are_tungstenites() {
        use tungstenite::protocol::frame::{
            coding::{Data, OpCode},
            Frame,
        };
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            for (opcode, data) in [(0x2, Data::Binary), (0x1, Data::Text)] {
                let payload = vec![b'a'; len];
                let mut want = Vec::new();
                Frame::message(payload.clone(), OpCode::Data(data), true)
                    .format(&mut want)
                    .unwrap();
                assert_eq!(&server_frame(opcode, &payload)[..], &want[..], "{len}");
            }
        }
        let e = Encoded::new(Arc::new(SendMsg::default()), None, Duration::from_secs(1));
        let (a, b) = (
            e.wire(Format::Binary).clone(),
            e.wire(Format::Binary).clone(),
        );
        assert_eq!(a.as_ptr(), b.as_ptr(), "built once, shared");
        assert_eq!(&a[2..], &e.binary()[..]);
        assert_eq!(&e.wire(Format::Json)[2..], e.json().as_bytes());
    }

    /// The same message yields the same bytes for every recipient, encoded once.
    #[test]
    fn encodes_once_per_format() {
        let msg = SendMsg {
            msg: "x".into(),
            ..Default::default()
        };
        let e = Encoded::new(Arc::new(msg), None, Duration::from_secs(1));
        let Message::Binary(a) = e.frame(Format::Binary) else {
            panic!()
        };
        let Message::Binary(b) = e.frame(Format::Binary) else {
            panic!()
        };
        assert_eq!(a.as_ptr(), b.as_ptr());
        let Message::Text(t) = e.frame(Format::Json) else {
            panic!()
        };
        assert_eq!(t.as_str(), r#"{"msg":"x"}"#);
        assert_eq!(e.encoded_len(Format::Json), t.len());
    }

    /// Stamping overwrites a spoofed sender and fills a zero timestamp only.
    #[test]
    fn stamping() {
        let mut m = SendMsg {
            from_client_id: "mallory".into(),
            ..Default::default()
        };
        stamp(&mut m, "alice");
        assert_eq!(m.from_client_id, "alice");
        assert!(m.timestamp > 0);
        let mut m = SendMsg {
            timestamp: 5,
            ..Default::default()
        };
        stamp(&mut m, "alice");
        assert_eq!(m.timestamp, 5);
    }
}
