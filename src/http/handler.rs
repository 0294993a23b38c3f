//! The provided `/ws` route: handshake checks, authorisation, upgrade.
//!
//! Merge [`route()`] into your router (it serves `/ws`: `GET` on
//! HTTP/1.1, extended `CONNECT` on HTTP/2, RFC 8441), or mount
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
//!     pool.accept(upgrade, ClientConfig::new("device-7").kind("device").channels(["sensors"])).await
//! }
//!
//! let pool = WsPool::new();
//! let app: Router = Router::new().route("/device", get(device)).layer(pool.layer());
//! ```

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, Request},
    http::{header::ORIGIN, request::Parts, StatusCode, Version},
    response::{IntoResponse, Response},
    routing::any,
    Router,
};

use super::{fallback, handshake};
use crate::{
    admission::Ticket,
    names::{Token, TokenError},
    pool::{refuse, DirectUpgrade, Upgrade},
    stats::bump,
    ClientConfig, Format, HandshakeRequest, WsPool,
};

/// A router serving the pool at `/ws` (`GET` on HTTP/1.1, extended
/// `CONNECT` on HTTP/2); merge it into yours.
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
    // `any`: a WebSocket over HTTP/2 is a CONNECT (RFC 8441); other
    // methods get axum's refusal (405 on HTTP/1.1).
    Router::new().route("/ws", any(ws_handler))
}

/// The handler behind [`route()`], to mount at a path of your choice:
/// `.route("/live", any(wspool::ws_handler))` (`any`, or HTTP/2 clients
/// and the HTTP fallback's POSTs cannot reach it).
///
/// It serves the WebSocket handshake (HTTP/1.1 and HTTP/2) and the HTTP
/// fallback for clients that cannot open a WebSocket (PROTOCOL.md section
/// 10): `GET ?transport=sse&token=..` opens a session of server-sent
/// events, `POST ?session=..` sends to it.
pub async fn ws_handler(pool: WsPool, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    match fallback::what(&pool, &parts) {
        fallback::Request::Post(session) => {
            return fallback::post(&pool, &parts, &session, body).await
        }
        fallback::Request::Open(token, echo, json) => {
            let (mut config, ticket) = match admit(&pool, &parts, (token, echo)).await {
                Ok(admitted) => admitted,
                Err(refused) => return refused,
            };
            if json {
                config.format = Format::Json;
            }
            return pool.open_events(config, ticket).await;
        }
        fallback::Request::None => {}
    }
    let upgrade = match DirectUpgrade::from_parts(&mut parts).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection,
    };
    // HTTP/2's extended CONNECT has no key (RFC 8441 section 5).
    if parts.version <= Version::HTTP_11 && !handshake::valid_key(&parts.headers) {
        bump(&pool.counters().refused_bad_request, 1);
        return refuse(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key must be the base64 of 16 bytes (RFC 6455 section 4.2.1)",
        );
    }
    let token = handshake::parse_offers(&parts.headers, &pool.token_limits());
    let offered = || {
        handshake::offers(&parts.headers)
            .ok()
            .and_then(|o| o.first().map(|s| (*s).to_owned()))
    };
    let echo = token.as_ref().map(|t| t.raw.clone()).ok().or_else(offered);
    let (mut config, ticket) = match admit(&pool, &parts, (token, echo)).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    if parts
        .uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "format=json"))
    {
        config.format = Format::Json;
    }
    pool.upgrade(Upgrade::Direct(upgrade), config, ticket).await
}

/// The checks every way in shares, in order: shutting down (503), the
/// `Origin` (403), admission (503, 429), the token or the authorisation
/// hook (400, 401, 403). `token` is the client's, parsed, and what to
/// echo when the hook leaves the protocol unset.
async fn admit(
    pool: &WsPool,
    parts: &Parts,
    (token, echo): (Result<Token, TokenError>, Option<String>),
) -> Result<(ClientConfig, Ticket), Response> {
    let counters = pool.counters();
    if pool.is_shutting_down() {
        bump(&counters.refused_shutting_down, 1);
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "server shutting down",
        ));
    }
    if !origin_allowed(pool, parts) {
        bump(&counters.refused_forbidden, 1);
        return Err(refuse(StatusCode::FORBIDDEN, "origin not allowed"));
    }
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let remote_addr = pool.config().client_ip().resolve(&parts.headers, peer);
    // Admitted before any costly work: the token, the hook, the upgrade.
    let ticket = pool.admit(remote_addr).map_err(|refused| *refused)?;
    let mut config = match pool.authorize().cloned() {
        None => match token {
            Ok(t) => ClientConfig::new(t.id).channels(t.channels).protocol(t.raw),
            Err(e) => {
                bump(&counters.refused_bad_request, 1);
                return Err(refuse(StatusCode::BAD_REQUEST, e.to_string()));
            }
        },
        Some(hook) => {
            let request = HandshakeRequest {
                headers: parts.headers.clone(),
                uri: parts.uri.clone(),
                remote_addr,
                token,
            };
            match (hook.0)(request).await {
                Ok(mut config) => {
                    if config.protocol.is_none() {
                        // Echo what the client offered, so a browser
                        // accepts the answer.
                        config.protocol = echo;
                    }
                    config
                }
                Err(rejection) => {
                    let counter = if rejection.status() == StatusCode::UNAUTHORIZED {
                        &counters.refused_unauthorized
                    } else {
                        &counters.refused_forbidden
                    };
                    bump(counter, 1);
                    return Err(rejection.into_response());
                }
            }
        }
    };
    if config.remote_addr.is_none() {
        config.remote_addr = remote_addr;
    }
    Ok((config, ticket))
}

/// Is the request's `Origin` (if it has one) allowed?
pub(super) fn origin_allowed(pool: &WsPool, parts: &Parts) -> bool {
    match (pool.config().allowed_origins(), parts.headers.get(ORIGIN)) {
        (Some(allowed), Some(origin)) => allowed.iter().any(|a| origin.as_bytes() == a.as_bytes()),
        _ => true,
    }
}
