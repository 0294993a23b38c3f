//! The authorisation hook's types: what it sees of a handshake, and how it
//! refuses one.

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc};

use axum::{
    http::{HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Response},
};

use crate::{
    client::ClientConfig,
    names::{Token, TokenError},
};

/// What the authorisation hook sees of a handshake request.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HandshakeRequest {
    /// All request headers (cookies, `Authorization`, `Origin`, ...).
    pub headers: HeaderMap,
    /// The request URI, with its query.
    pub uri: Uri,
    /// The client's address: the peer's when the server was started with
    /// [`wspool::serve`](crate::serve()) or
    /// `into_make_service_with_connect_info::<SocketAddr>()`, or the one
    /// read from a proxy's header ([`ClientIp`](crate::ClientIp)).
    pub remote_addr: Option<SocketAddr>,
    /// The token the client offered, parsed, or why none parsed.
    pub token: Result<Token, TokenError>,
}

/// The authorisation hook's refusal: 401 or 403 with a one-line reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    status: StatusCode,
    reason: String,
}

impl Rejection {
    /// 401 Unauthorized: the client did not prove who it is.
    pub fn unauthorized(reason: impl Into<String>) -> Self {
        Rejection {
            status: StatusCode::UNAUTHORIZED,
            reason: reason.into(),
        }
    }

    /// 403 Forbidden: the client is known and may not connect.
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Rejection {
            status: StatusCode::FORBIDDEN,
            reason: reason.into(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The reason.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        refuse(self.status, self.reason)
    }
}

pub(crate) type AuthFuture = Pin<Box<dyn Future<Output = Result<ClientConfig, Rejection>> + Send>>;
/// The authorisation hook, boxed.
#[derive(Clone)]
pub(crate) struct Authorize(pub(crate) Arc<dyn Fn(HandshakeRequest) -> AuthFuture + Send + Sync>);

impl std::fmt::Debug for Authorize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authorize(..)")
    }
}

/// A refused handshake: `status` with a one-line plain-text body.
pub(crate) fn refuse(status: StatusCode, reason: impl Into<String>) -> Response {
    let mut body = reason.into();
    body.retain(|c| c != '\n' && c != '\r');
    (status, body).into_response()
}
