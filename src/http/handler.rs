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
    extract::ConnectInfo,
    http::{header::ORIGIN, request::Parts, StatusCode, Version},
    response::{IntoResponse, Response},
    routing::any,
    Router,
};

use super::handshake;
use crate::{
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
/// cannot reach it).
pub async fn ws_handler(pool: WsPool, mut parts: Parts) -> Response {
    let upgrade = match DirectUpgrade::from_parts(&mut parts).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection,
    };
    let counters = pool.counters();
    // HTTP/2's extended CONNECT has no key (RFC 8441 section 5).
    if parts.version <= Version::HTTP_11 && !handshake::valid_key(&parts.headers) {
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

    let mut config = match pool.authorize().cloned() {
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
                    let counter = if rejection.status() == StatusCode::UNAUTHORIZED {
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
    pool.upgrade(Upgrade::Direct(upgrade), config, ticket).await
}
