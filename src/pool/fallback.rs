//! The HTTP fallback's sessions as the pool opens them and takes their
//! POSTs (PROTOCOL.md section 10; the socket is `connection::sse`).

use axum::{
    body::Body,
    extract::ws::{Message, Utf8Bytes},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;

use super::{refuse, WsPool};
use crate::{
    admission::Ticket,
    connection::{self, PostError, Socket},
    ClientConfig,
};

impl WsPool {
    /// Opens a session for an admitted client: checked as a WebSocket
    /// handshake is (400, 409), then registered as a connection whose
    /// socket is the response's event stream.
    pub(crate) async fn open_events(&self, mut config: ClientConfig, ticket: Ticket) -> Response {
        if let Err(refused) = self.vet(&mut config).await {
            return refused;
        }
        let token = config.protocol.clone().unwrap_or_else(|| config.id.clone());
        let ping_ms = self.config().ping_interval().as_millis() as u64;
        let open = |session: &str| {
            let data =
                serde_json::json!({ "session": session, "token": token, "ping_ms": ping_ms });
            Bytes::from(format!("event: open\ndata: {data}\n\n"))
        };
        let (socket, body, _) = match connection::open_events(&self.inner.sessions, open) {
            Ok(opened) => opened,
            Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        };
        let (hub, callbacks) = (self.hub().clone(), self.callbacks().clone());
        let socket = Socket::Events(socket);
        tokio::spawn(connection::serve(
            hub,
            callbacks,
            Box::new(config),
            socket,
            ticket,
        ));
        let mut response = Body::from_stream(body).into_response();
        let headers = response.headers_mut();
        let event_stream = HeaderValue::from_static("text/event-stream");
        headers.insert(header::CONTENT_TYPE, event_stream);
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        // nginx: pass each event on at once rather than buffer the stream.
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        response
    }

    /// A POST to session `id`: one message (protobuf, or JSON when `json`),
    /// or nothing at all to say the client is still there. 202 when
    /// handed to the session's connection (which answers as it answers a
    /// WebSocket frame: relayed, or a receipt on the event stream); 404
    /// for no such session, 413 past `max_message_size`, 408 for a body
    /// not in within `write_timeout`, 429 while too many wait.
    pub(crate) async fn post_event(&self, id: &str, json: bool, body: Body) -> Response {
        if !self.inner.sessions.contains(id) {
            return refuse(StatusCode::NOT_FOUND, "no such session");
        }
        // A body that trickles in holds a task: it has `write_timeout`, as
        // a frame being written has.
        let limit = self.config().max_message_size();
        let read = axum::body::to_bytes(body, limit);
        let bytes = match tokio::time::timeout(self.config().write_timeout(), read).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(_)) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, "message too big"),
            Err(_) => return refuse(StatusCode::REQUEST_TIMEOUT, "the body came too slowly"),
        };
        let msg = if bytes.is_empty() {
            Message::Pong(Bytes::new())
        } else if json {
            match Utf8Bytes::try_from(bytes) {
                Ok(text) => Message::Text(text),
                Err(_) => return refuse(StatusCode::BAD_REQUEST, "JSON must be UTF-8"),
            }
        } else {
            Message::Binary(bytes)
        };
        match self.inner.sessions.post(id, msg) {
            Ok(()) => StatusCode::ACCEPTED.into_response(),
            Err(PostError::Unknown) => refuse(StatusCode::NOT_FOUND, "no such session"),
            Err(PostError::Busy) => refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "too many messages waiting for this session: slow down",
            ),
        }
    }
}
