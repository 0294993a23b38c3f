//! The provided route's upgrade, done by the pool rather than by axum's
//! `WebSocketUpgrade`: the same checks and answers, but the connection's
//! socket is one whose messages the pool writes itself (see
//! `connection::socket`).

use std::future::Future;

use axum::{
    extract::{
        ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade},
        FromRequestParts,
    },
    http::{header, request::Parts, HeaderValue, StatusCode, Version},
    response::{IntoResponse, Response},
};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::{Role, WebSocketConfig};

use crate::connection::Socket;

/// An HTTP/1.1 upgrade or an HTTP/2 extended CONNECT (RFC 8441) to
/// WebSocket, checked.
pub(crate) struct DirectUpgrade {
    on_upgrade: OnUpgrade,
    /// `Sec-WebSocket-Key` (HTTP/1.1 only).
    key: Option<HeaderValue>,
}

impl DirectUpgrade {
    /// Checks `parts` as axum's `WebSocketUpgrade` does, with its
    /// refusals, and takes the connection's upgrade.
    ///
    /// axum's extractor is run for its checks with the upgrade taken out
    /// first: it looks for the upgrade last, so a handshake that passes
    /// everything else is refused only for that (tests hold axum to it:
    /// `incomplete_upgrades_are_refused`,
    /// `a_connection_that_cannot_upgrade_gets_426`).
    pub(crate) async fn from_parts(parts: &mut Parts) -> Result<Self, Response> {
        let on_upgrade = parts.extensions.remove::<OnUpgrade>();
        match WebSocketUpgrade::from_request_parts(parts, &()).await {
            Err(WebSocketUpgradeRejection::ConnectionNotUpgradable(r)) if on_upgrade.is_none() => {
                return Err(r.into_response())
            }
            Err(WebSocketUpgradeRejection::ConnectionNotUpgradable(_)) => {}
            Err(rejection) => return Err(rejection.into_response()),
            // Not without the upgrade; refused below if it happens.
            Ok(_) => {}
        }
        let on_upgrade = on_upgrade.ok_or_else(|| StatusCode::UPGRADE_REQUIRED.into_response())?;
        let key = if parts.version <= Version::HTTP_11 {
            parts.headers.get(header::SEC_WEBSOCKET_KEY).cloned()
        } else {
            None
        };
        Ok(DirectUpgrade { on_upgrade, key })
    }

    /// Answers the handshake (101 on HTTP/1.1, 200 on HTTP/2, echoing
    /// `protocol`) and, once the connection is upgraded, runs `serve` on
    /// its socket in a task of its own.
    pub(crate) fn on_upgrade<F, Fut>(
        self,
        protocol: Option<&str>,
        config: WebSocketConfig,
        serve: F,
    ) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let DirectUpgrade { on_upgrade, key } = self;
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => return tracing::debug!(error = %e, "websocket upgrade failed"),
            };
            let io = TokioIo::new(upgraded);
            let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
            serve(Socket::direct(ws)).await;
        });
        let mut response = Response::new(axum::body::Body::empty());
        if let Some(key) = key {
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
            let headers = response.headers_mut();
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            if let Ok(accept) = HeaderValue::from_str(&accept) {
                headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
            }
        }
        if let Some(Ok(protocol)) = protocol.map(HeaderValue::from_str) {
            response
                .headers_mut()
                .insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
        }
        response
    }
}
