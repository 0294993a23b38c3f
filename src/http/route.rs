//! The provided `/ws` route: handshake checks, authorisation, upgrade.
//!
//! Merge [`route()`] into your router (it serves `GET /ws`), or mount
//! [`ws_handler`] at a path of your choice. Either way the pool comes from
//! [`WsPoolLayer`](crate::WsPoolLayer). In order, a handshake is refused
//! with:
//!
//! | status | when |
//! |---|---|
//! | 400 | not a WebSocket handshake axum accepts, or a `Sec-WebSocket-Key` that is not the base64 of 16 bytes (RFC 6455 section 4.2.1) |
//! | 503 | the pool is shutting down |
//! | 403 | `allowed_origins` is set and the `Origin` header is not in it |
//! | 503 | `max_handshakes_in_flight` handshakes in progress, or `max_connections` held |
//! | 429 | `max_connections_per_ip` held from the client's address ([`ClientIp`](crate::ClientIp)) |
//! | 400 | no usable token, a bad id or channel, too many channels (PROTOCOL.md section 1) |
//! | 401 / 403 | the authorisation hook refused |
//! | 409 | the id is connected and the duplicate policy is `Refuse` |
//!
//! Each refusal has a one-line plain-text body naming the problem and is
//! counted in [`Stats::refused`](crate::Stats::refused). Otherwise the
//! server answers 101, echoes the token it used in
//! `Sec-WebSocket-Protocol`, and registers the client. `?format=json`
//! selects JSON text frames for what the server sends to it.
//!
//! To write a handler of your own (the original's `NewClient` +
//! `OpenClient`), build a [`ClientConfig`] and call [`WsPool::accept`]:
//!
//! ```
//! use axum::{extract::WebSocketUpgrade, response::Response, routing::get, Router};
//! use wspool::{ClientConfig, WsPool};
//!
//! async fn device(pool: WsPool, upgrade: WebSocketUpgrade) -> Response {
//!     pool.accept(upgrade, ClientConfig::new("device-7").kind("device").channels(["sensors"]))
//! }
//!
//! let pool = WsPool::new();
//! let app: Router = Router::new().route("/device", get(device)).layer(pool.layer());
//! ```

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc};

use axum::{
    extract::{ws::WebSocketUpgrade, ConnectInfo, FromRequestParts},
    http::{header::ORIGIN, request::Parts, HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

use crate::{
    admission::{Refusal, Ticket},
    connection,
    handshake::{self, Token, TokenError},
    stats::bump,
    ClientConfig, DuplicatePolicy, Format, WsPool,
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

fn refuse(status: StatusCode, reason: impl Into<String>) -> Response {
    let mut body = reason.into();
    body.retain(|c| c != '\n' && c != '\r');
    (status, body).into_response()
}

/// A router serving the pool at `GET /ws`; merge it into yours.
///
/// ```
/// use axum::Router;
/// use wspool::WsPoolLayer;
///
/// let app: Router = Router::new().merge(wspool::route()).layer(WsPoolLayer::new());
/// ```
pub fn route<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new().route("/ws", get(ws_handler))
}

/// The handler behind [`route()`], to mount at a path of your choice:
/// `.route("/live", get(wspool::ws_handler))`.
pub async fn ws_handler(pool: WsPool, mut parts: Parts) -> Response {
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let counters = pool.counters();
    if !handshake::valid_key(&parts.headers) {
        bump(&counters.refused_bad_request, 1);
        return refuse(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key must be the base64 of 16 bytes (RFC 6455 section 4.2.1)",
        );
    }
    if pool.is_shutting_down() {
        bump(&counters.refused_shutting_down, 1);
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "server shutting down");
    }
    if let (Some(allowed), Some(origin)) =
        (pool.config().allowed_origins(), parts.headers.get(ORIGIN))
    {
        if !allowed.iter().any(|a| origin.as_bytes() == a.as_bytes()) {
            bump(&counters.refused_forbidden, 1);
            return refuse(StatusCode::FORBIDDEN, "origin not allowed");
        }
    }
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let remote_addr = pool.config().client_ip().resolve(&parts.headers, peer);
    // Admitted before any costly work: the token, the hook, the upgrade.
    let ticket = match pool.admit(remote_addr) {
        Ok(ticket) => ticket,
        Err(refused) => return *refused,
    };
    let token = handshake::parse_offers(&parts.headers, &pool.token_limits());
    let json = parts
        .uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "format=json"));

    let mut config = match pool.config().authorize.clone() {
        None => match token {
            Ok(t) => ClientConfig::new(t.id).channels(t.channels).protocol(t.raw),
            Err(e) => {
                bump(&counters.refused_bad_request, 1);
                return refuse(StatusCode::BAD_REQUEST, e.to_string());
            }
        },
        Some(hook) => {
            // Echo what the client offered, so a browser accepts the answer.
            let echo = match &token {
                Ok(t) => Some(t.raw.clone()),
                Err(_) => handshake::offers(&parts.headers)
                    .ok()
                    .and_then(|o| o.first().map(|s| (*s).to_owned())),
            };
            let request = HandshakeRequest {
                headers: parts.headers.clone(),
                uri: parts.uri.clone(),
                remote_addr,
                token,
            };
            match (hook.0)(request).await {
                Ok(mut config) => {
                    if config.protocol.is_none() {
                        config.protocol = echo;
                    }
                    config
                }
                Err(rejection) => {
                    let counter = if rejection.status == StatusCode::UNAUTHORIZED {
                        &counters.refused_unauthorized
                    } else {
                        &counters.refused_forbidden
                    };
                    bump(counter, 1);
                    return rejection.into_response();
                }
            }
        }
    };
    if config.remote_addr.is_none() {
        config.remote_addr = remote_addr;
    }
    if json {
        config.format = Format::Json;
    }
    if let Some(cluster) = pool.cluster() {
        // The cluster-wide half of the duplicate check (the claim at
        // registration settles a race between two nodes: 1008).
        if pool.config().duplicate_policy() == DuplicatePolicy::Refuse
            && cluster.connected_elsewhere(&config.id).await == Ok(true)
        {
            bump(&counters.refused_duplicate_id, 1);
            let why = format!("id {} is already connected", config.id);
            return refuse(StatusCode::CONFLICT, why);
        }
    }
    pool.upgrade(upgrade, config, ticket)
}

impl WsPool {
    /// Upgrades the connection and registers it as `config` says: the way
    /// to write a handler of your own (see [the module docs](mod@crate::route)).
    ///
    /// The handshake is admitted as by the provided route
    /// (`max_handshakes_in_flight`, `max_connections`: 503;
    /// `max_connections_per_ip` against `config`'s
    /// [`remote_addr`](ClientConfig::remote_addr), when set: 429); the id
    /// and channels are checked against the pool's limits (400) and the
    /// duplicate policy (409) before the upgrade; the pool's socket
    /// settings (`max_message_size`, buffer sizes) are applied to it.
    ///
    /// Unlike the provided route, this does not check `Sec-WebSocket-Key`
    /// or the `Origin`: call [`handshake::valid_key`] and compare the
    /// origin yourself when it matters.
    pub fn accept(&self, upgrade: WebSocketUpgrade, config: ClientConfig) -> Response {
        match self.admit(config.remote_addr) {
            Ok(ticket) => self.upgrade(upgrade, config, ticket),
            Err(refused) => *refused,
        }
    }

    /// Admits a handshake from `remote`, or answers why not.
    fn admit(&self, remote: Option<SocketAddr>) -> Result<Ticket, Box<Response>> {
        let refusal = match self.inner.admission.admit(remote.map(|a| a.ip())) {
            Ok(ticket) => return Ok(ticket),
            Err(refusal) => refusal,
        };
        let counters = self.counters();
        let (counter, status, reason) = match refusal {
            Refusal::Busy => (
                &counters.refused_busy,
                StatusCode::SERVICE_UNAVAILABLE,
                "too many handshakes in progress: retry shortly",
            ),
            Refusal::Capacity => (
                &counters.refused_capacity,
                StatusCode::SERVICE_UNAVAILABLE,
                "too many connections",
            ),
            Refusal::PerIp => (
                &counters.refused_per_ip,
                StatusCode::TOO_MANY_REQUESTS,
                "too many connections from your address",
            ),
        };
        bump(counter, 1);
        Err(Box::new(refuse(status, reason)))
    }

    /// Checks an admitted handshake's id, channels and duplicate policy,
    /// then upgrades it.
    fn upgrade(
        &self,
        upgrade: WebSocketUpgrade,
        mut config: ClientConfig,
        ticket: Ticket,
    ) -> Response {
        let c = self.config();
        let counters = self.counters();
        if let Err(reason) = self.check(&mut config) {
            bump(&counters.refused_bad_request, 1);
            return refuse(StatusCode::BAD_REQUEST, reason.to_string());
        }
        if c.duplicate_policy() == DuplicatePolicy::Refuse && self.node().is_connected(&config.id) {
            bump(&counters.refused_duplicate_id, 1);
            return refuse(
                StatusCode::CONFLICT,
                format!("id {} is already connected", config.id),
            );
        }
        let mut upgrade = upgrade
            .read_buffer_size(c.read_buffer_size())
            .write_buffer_size(c.write_buffer_size())
            .max_message_size(c.max_message_size())
            .max_frame_size(c.max_message_size());
        if let Some(protocol) = &config.protocol {
            upgrade = upgrade.protocols([protocol.clone()]);
        }
        let pool = self.clone();
        // Boxed before axum's upgrade future captures it: that future keeps
        // its callback's captures for the connection's whole life.
        let config = Box::new(config);
        upgrade
            .on_failed_upgrade(|e| tracing::debug!(error = %e, "websocket upgrade failed"))
            .on_upgrade(move |socket| connection::serve(pool, config, socket, ticket))
    }

    /// Checks the id and channels of `config` (the token's rules and
    /// wording), dropping repeated channels.
    fn check(&self, config: &mut ClientConfig) -> Result<(), TokenError> {
        let limits = self.token_limits();
        handshake::check_id(&config.id, limits.max_id_len)?;
        let mut seen: Vec<String> = Vec::with_capacity(config.channels.len());
        for ch in config.channels.drain(..) {
            handshake::check_channel(&ch, limits.max_channel_len)?;
            if !seen.contains(&ch) {
                seen.push(ch);
            }
        }
        if seen.len() > limits.max_channels {
            return Err(TokenError::TooManyChannels {
                count: seen.len(),
                max: limits.max_channels,
            });
        }
        config.channels = seen;
        Ok(())
    }
}
