//! [`WsPool::accept`]: admitting, checking and upgrading a handshake, for
//! the provided route and for handlers of your own.

use std::net::SocketAddr;

use axum::{extract::ws::WebSocketUpgrade, http::StatusCode, response::Response};

use super::{direct::DirectUpgrade, refuse, WsPool};
use crate::{
    admission::{Refusal, Ticket},
    connection::{self, Socket},
    names::{check_channel, check_id, TokenError, TokenLimits},
    stats::bump,
    ClientConfig, DuplicatePolicy,
};

/// A handshake to upgrade: axum's (from a handler of the application's
/// own, [`WsPool::accept`]) or the pool's own (the provided route).
pub(crate) enum Upgrade {
    Axum(WebSocketUpgrade),
    Direct(DirectUpgrade),
}

impl WsPool {
    /// Upgrades the connection and registers it as `config` says: the way
    /// to write a handler of your own (see [`handler`](crate::handler)).
    ///
    /// The handshake is admitted as by the provided route
    /// (`max_handshakes_in_flight`, `max_connections`: 503;
    /// `max_connections_per_ip` against `config`'s
    /// [`remote_addr`](ClientConfig::remote_addr), when set: 429); the id
    /// and channels are checked against the pool's limits (400) and the
    /// duplicate policy (409) before the upgrade; the pool's socket
    /// settings (`max_message_size`, buffer sizes) are applied to it.
    ///
    /// In a cluster, an id connected to another node is refused (409)
    /// before the upgrade, as by the provided route, when the duplicate
    /// policy is `Refuse`.
    ///
    /// Unlike the provided route, this does not check `Sec-WebSocket-Key`
    /// or the `Origin`: call [`handshake::valid_key`](crate::handshake::valid_key)
    /// and compare the origin yourself when it matters.
    ///
    /// The connection keeps axum's `WebSocket`, so every frame written to
    /// it goes through tungstenite's write buffer. The provided route
    /// ([`ws_handler`](crate::ws_handler), at any path, with
    /// [`authorize`](crate::WsPoolBuilder::authorize) for your own checks)
    /// upgrades connections itself and writes the pool's frames directly:
    /// about 40% less CPU per delivery on a broadcast, and no write buffer
    /// kept after a burst (BENCHMARKS.md, issue 20).
    pub async fn accept(&self, upgrade: WebSocketUpgrade, config: ClientConfig) -> Response {
        match self.admit(config.remote_addr) {
            Ok(ticket) => self.upgrade(Upgrade::Axum(upgrade), config, ticket).await,
            Err(refused) => *refused,
        }
    }

    /// Admits a handshake from `remote`, or answers why not.
    pub(crate) fn admit(&self, remote: Option<SocketAddr>) -> Result<Ticket, Box<Response>> {
        let refusal = match self.admission().admit(remote.map(|a| a.ip())) {
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

    /// Checks an admitted handshake's id, channels and duplicate policy
    /// (here, then cluster-wide), then upgrades it.
    pub(crate) async fn upgrade(
        &self,
        upgrade: Upgrade,
        mut config: ClientConfig,
        ticket: Ticket,
    ) -> Response {
        if let Err(refused) = self.vet(&mut config).await {
            return refused;
        }
        let c = self.config();
        let (hub, callbacks) = (self.hub().clone(), self.callbacks().clone());
        match upgrade {
            Upgrade::Axum(upgrade) => {
                let mut upgrade = upgrade
                    .read_buffer_size(c.read_buffer_size())
                    .write_buffer_size(c.write_buffer_size())
                    .max_message_size(c.max_message_size())
                    .max_frame_size(c.max_message_size());
                if let Some(protocol) = &config.protocol {
                    upgrade = upgrade.protocols([protocol.clone()]);
                }
                // Boxed before the upgrade future captures it: that future
                // keeps its callback's captures for the connection's life.
                let config = Box::new(config);
                upgrade
                    .on_failed_upgrade(|e| tracing::debug!(error = %e, "websocket upgrade failed"))
                    .on_upgrade(move |ws| {
                        connection::serve(hub, callbacks, config, Socket::Axum(ws), ticket)
                    })
            }
            Upgrade::Direct(upgrade) => {
                let socket_config = tungstenite::protocol::WebSocketConfig::default()
                    .read_buffer_size(c.read_buffer_size())
                    .write_buffer_size(c.write_buffer_size())
                    .max_message_size(Some(c.max_message_size()))
                    .max_frame_size(Some(c.max_message_size()));
                let protocol = config.protocol.clone();
                let config = Box::new(config);
                upgrade.on_upgrade(protocol.as_deref(), socket_config, move |socket| {
                    connection::serve(hub, callbacks, config, socket, ticket)
                })
            }
        }
    }

    /// Checks an admitted client's id and channels (400) and the duplicate
    /// policy, here then cluster-wide (409).
    pub(crate) async fn vet(&self, config: &mut ClientConfig) -> Result<(), Response> {
        let counters = self.counters();
        if let Err(reason) = self.check(config) {
            bump(&counters.refused_bad_request, 1);
            return Err(refuse(StatusCode::BAD_REQUEST, reason.to_string()));
        }
        let policy = self.config().duplicate_policy();
        if policy == DuplicatePolicy::Refuse && self.connected(&config.id).await {
            bump(&counters.refused_duplicate_id, 1);
            let why = format!("id {} is already connected", config.id);
            return Err(refuse(StatusCode::CONFLICT, why));
        }
        Ok(())
    }

    /// Is `id` connected here, or (in a cluster) to another live node? The
    /// claim at registration settles a race between two nodes (1008).
    async fn connected(&self, id: &str) -> bool {
        if self.hub().node().is_connected(id) {
            return true;
        }
        match self.hub().cluster() {
            Some(cluster) => cluster.connected_elsewhere(id).await == Ok(true),
            None => false,
        }
    }

    /// Checks the id and channels of `config` (the token's rules and
    /// wording), dropping repeated channels.
    fn check(&self, config: &mut ClientConfig) -> Result<(), TokenError> {
        let limits = self.token_limits();
        check_id(&config.id, limits.max_id_len)?;
        let mut seen: Vec<String> = Vec::with_capacity(config.channels.len());
        for ch in config.channels.drain(..) {
            check_channel(&ch, limits.max_channel_len)?;
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

impl WsPool {
    /// The limits a token or a [`ClientConfig`] is checked against.
    pub(crate) fn token_limits(&self) -> TokenLimits {
        let c = self.config();
        TokenLimits {
            max_id_len: c.max_id_len(),
            max_channel_len: c.max_channel_len(),
            max_channels: c.max_channels_per_client(),
        }
    }
}
