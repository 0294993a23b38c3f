//! An HTTP/2 client that opens WebSockets with extended CONNECT (RFC 8441)
//! over one connection, cleartext with prior knowledge (h2c) or over any
//! stream (TLS).

use std::{
    io,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::{Buf, Bytes};
use h2::{client::SendRequest, ext::Protocol, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::{tungstenite::protocol::Role, WebSocketStream};

/// One HTTP/2 connection.
pub struct H2 {
    send: SendRequest<Bytes>,
    authority: String,
}

/// What the server answered a WebSocket CONNECT.
pub struct Opened {
    pub status: u16,
    pub protocol: Option<String>,
    /// The WebSocket, when the status is 200.
    pub ws: Option<WebSocketStream<H2Stream>>,
}

impl H2 {
    /// Speaks HTTP/2 over `io` (a TCP stream: h2c with prior knowledge).
    pub async fn handshake<I>(io: I, authority: &str) -> H2
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send, conn) = h2::client::handshake(io).await.expect("h2 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let send = send.ready().await.expect("h2 ready");
        H2 {
            send,
            authority: authority.to_owned(),
        }
    }

    /// Did the server announce SETTINGS_ENABLE_CONNECT_PROTOCOL?
    pub fn connect_protocol_enabled(&self) -> bool {
        self.send.is_extended_connect_protocol_enabled()
    }

    /// Opens a WebSocket at `path` offering `token` as its subprotocol.
    pub async fn open(&self, path: &str, token: &str) -> Opened {
        let mut send = self.send.clone().ready().await.expect("h2 ready");
        let request = self.connect_request(path, token);
        let (response, stream) = send.send_request(request, false).expect("send CONNECT");
        let response = response.await.expect("CONNECT answered");
        let status = response.status().as_u16();
        let protocol = (response.headers().get("sec-websocket-protocol"))
            .map(|v| v.to_str().unwrap().to_owned());
        let ws = if status == 200 {
            let io = H2Stream {
                send: stream,
                recv: response.into_body(),
                buf: Bytes::new(),
            };
            Some(WebSocketStream::from_raw_socket(io, Role::Client, None).await)
        } else {
            None
        };
        Opened {
            status,
            protocol,
            ws,
        }
    }
}

/// One stream of an HTTP/2 connection as a byte stream: DATA frames in
/// and out.
pub struct H2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    buf: Bytes,
}

impl H2Stream {
    /// Resets the stream (RST_STREAM, CANCEL): the WebSocket ends without
    /// a close frame.
    pub fn reset(&mut self) {
        self.send.send_reset(h2::Reason::CANCEL);
    }
}

impl AsyncRead for H2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.buf.is_empty() {
            match ready!(self.recv.poll_data(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.buf = data;
                }
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            }
        }
        let n = self.buf.len().min(out.remaining());
        out.put_slice(&self.buf[..n]);
        self.buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.send.reserve_capacity(data.len());
        match ready!(self.send.poll_capacity(cx)) {
            None => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            Some(Err(e)) => Poll::Ready(Err(io::Error::other(e))),
            Some(Ok(capacity)) => {
                let n = capacity.min(data.len());
                let chunk = Bytes::copy_from_slice(&data[..n]);
                self.send
                    .send_data(chunk, false)
                    .map_err(io::Error::other)?;
                Poll::Ready(Ok(n))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _ = self.send.send_data(Bytes::new(), true);
        Poll::Ready(Ok(()))
    }
}

impl H2 {
    /// Sends a WebSocket CONNECT and returns its stream without waiting for
    /// the answer (for resetting it at once); `None` once the server has
    /// closed the connection.
    pub async fn connect_and_reset(&self, token: &str) -> Option<SendStream<Bytes>> {
        let mut send = self.send.clone().ready().await.ok()?;
        let request = self.connect_request("/ws", token);
        let (_, stream) = send.send_request(request, false).ok()?;
        Some(stream)
    }

    /// A WebSocket CONNECT (RFC 8441) to `path` offering `token`.
    fn connect_request(&self, path: &str, token: &str) -> http::Request<()> {
        let mut request = http::Request::builder()
            .method("CONNECT")
            .uri(format!("http://{}{path}", self.authority))
            .header("sec-websocket-version", "13")
            .header("sec-websocket-protocol", token)
            .body(())
            .unwrap();
        request
            .extensions_mut()
            .insert(Protocol::from_static("websocket"));
        request
    }
}
