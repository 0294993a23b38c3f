//! A raw WebSocket client: the handshake and every frame written byte by
//! byte, so a test can send what a WebSocket library refuses to send.

use std::net::SocketAddr;

use prost::Message as _;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use wspool::SendMsg;

use super::WAIT;

pub const CONT: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// A valid `Sec-WebSocket-Key` (RFC 6455's example).
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A frame from the server.
#[derive(Debug)]
pub struct Frame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// How a read of the server's side ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// A close frame with this code (1005 for an empty one).
    Close(u16),
    /// The TCP connection ended with no close frame.
    Dropped,
}

pub struct Raw {
    pub tcp: TcpStream,
    buf: Vec<u8>,
}

/// The bytes of one frame; client frames are masked unless `mask` is false.
pub fn frame(fin: bool, rsv: u8, opcode: u8, mask: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (rsv << 4) | opcode];
    let m = if mask { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n <= 0xFFFF => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if mask {
        let key = [0x12, 0x34, 0x56, 0x78];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A masked, final data frame.
pub fn data(opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(true, 0, opcode, true, payload)
}

/// The request head of a WebSocket handshake to `path` with `extra`
/// header lines (each ending in `\r\n`).
pub fn upgrade_request(addr: SocketAddr, path: &str, key: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n{extra}\r\n"
    )
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            tcp: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    /// Sends `head` and reads the response head: its status and the head.
    pub async fn request(&mut self, head: &[u8]) -> (u16, String) {
        self.tcp.write_all(head).await.unwrap();
        self.response_head().await
    }

    /// Reads one HTTP response head (and keeps what follows it).
    pub async fn response_head(&mut self) -> (u16, String) {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&self.buf[..end + 4]).into_owned();
                    self.buf.drain(..end + 4);
                    let status = head[9..12].parse().unwrap();
                    return (status, head);
                }
                if self.fill().await == 0 {
                    panic!("connection closed before a response");
                }
            }
        })
        .await
        .expect("timed out waiting for a response")
    }

    /// The body that follows `head`: `Content-Length` bytes, or all until
    /// the connection closes.
    pub async fn body(&mut self, head: &str) -> String {
        let len = head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        });
        let Some(len) = len else {
            return self.body_to_end().await;
        };
        tokio::time::timeout(WAIT, async {
            while self.buf.len() < len {
                if self.fill().await == 0 {
                    break;
                }
            }
        })
        .await
        .expect("timed out reading a body");
        String::from_utf8_lossy(
            &self
                .buf
                .drain(..len.min(self.buf.len()))
                .collect::<Vec<_>>(),
        )
        .into_owned()
    }

    /// The rest of a response body after its head, until the connection closes.
    pub async fn body_to_end(&mut self) -> String {
        tokio::time::timeout(WAIT, async { while self.fill().await > 0 {} })
            .await
            .expect("timed out reading a body");
        String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned()
    }

    /// Opens a WebSocket to `/ws` as `token`: panics unless 101.
    pub async fn open(addr: SocketAddr, token: &str) -> Raw {
        let mut raw = Raw::connect(addr).await;
        let head = upgrade_request(
            addr,
            "/ws",
            KEY,
            &format!("Sec-WebSocket-Protocol: {token}\r\n"),
        );
        let (status, head) = raw.request(head.as_bytes()).await;
        assert_eq!(status, 101, "{head}");
        raw
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.unwrap();
    }

    /// Sends, ignoring a connection the server has already closed.
    pub async fn send_lossy(&mut self, bytes: &[u8]) {
        let _ = self.tcp.write_all(bytes).await;
    }

    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 16 * 1024];
        match self.tcp.read(&mut chunk).await {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                n
            }
            Err(_) => 0,
        }
    }

    /// The next frame from the server, or `None` when the connection ended.
    pub async fn frame(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            if self.fill().await == 0 {
                return None;
            }
        }
    }

    /// Reads until the server's close frame or the end of the connection
    /// (pings and data skipped).
    pub async fn end(&mut self) -> End {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.frame().await {
                    Some(Frame {
                        opcode: CLOSE,
                        payload,
                    }) => {
                        return End::Close(if payload.len() >= 2 {
                            u16::from_be_bytes([payload[0], payload[1]])
                        } else {
                            1005
                        })
                    }
                    Some(_) => continue,
                    None => return End::Dropped,
                }
            }
        })
        .await
        .expect("timed out waiting for the server to close")
    }

    /// The next data frame decoded as a `SendMsg` (pings and pongs skipped).
    pub async fn recv(&mut self) -> SendMsg {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.frame().await {
                    Some(Frame {
                        opcode: BINARY,
                        payload,
                    }) => return SendMsg::decode(&payload[..]).unwrap(),
                    Some(Frame {
                        opcode: TEXT,
                        payload,
                    }) => return serde_json::from_slice(&payload).unwrap(),
                    Some(Frame {
                        opcode: PING | PONG,
                        ..
                    }) => continue,
                    other => panic!("expected a message, got {other:?}"),
                }
            }
        })
        .await
        .expect("timed out waiting for a message")
    }
}

/// One unmasked server frame from the front of `buf`, and its length.
fn parse(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0F;
    let (len, mut at) = match buf[1] & 0x7F {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if buf[1] & 0x80 != 0 {
        at += 4; // a server never masks; tolerate it anyway
    }
    if buf.len() < at + len {
        return None;
    }
    Some((
        Frame {
            opcode,
            payload: buf[at..at + len].to_vec(),
        },
        at + len,
    ))
}
