//! Every knob of a pool, with its default and what happens at its limit.
//! Set them with [`WsPoolBuilder`](crate::WsPoolBuilder).
//!
//! | knob | default | what happens at the limit |
//! |---|---|---|
//! | [`ping_interval`](crate::WsPoolBuilder::ping_interval) | 25 s, or half of a shorter `idle_timeout` | the server pings each connection this often; set explicitly, it must be shorter than `idle_timeout` ([`ConfigError`]) |
//! | [`idle_timeout`](crate::WsPoolBuilder::idle_timeout) | 60 s | nothing received (not even a pong) for this long: the connection is closed (1000) |
//! | [`write_timeout`](crate::WsPoolBuilder::write_timeout) | 10 s | a write (or the closing handshake) that takes longer: the connection is dropped |
//! | [`max_message_size`](crate::WsPoolBuilder::max_message_size) | 1 MiB | a bigger incoming frame closes the connection with 1009 |
//! | [`queue_max_messages`](crate::WsPoolBuilder::queue_max_messages) | 1024 | `send` returns [`SendError::QueueFull`](crate::SendError::QueueFull); a broadcast skips the client and emits [`PoolEvent::Dropped`](crate::PoolEvent::Dropped); a relayed direct message gets receipt 5 |
//! | [`queue_max_bytes`](crate::WsPoolBuilder::queue_max_bytes) | 8 MiB | as for `queue_max_messages` |
//! | [`max_connections`](crate::WsPoolBuilder::max_connections) | 100,000 | further handshakes get HTTP 503 |
//! | [`max_connections_per_ip`](crate::WsPoolBuilder::max_connections_per_ip) | 1,000 | further handshakes from that address get HTTP 429; the address is the peer's, or the one [`client_ip`](crate::WsPoolBuilder::client_ip) reads from a trusted proxy's header |
//! | [`max_handshakes_in_flight`](crate::WsPoolBuilder::max_handshakes_in_flight) | 1,024 | handshakes being checked, authorised or upgraded at once; more get HTTP 503 |
//! | [`max_inbound_messages_per_sec`](crate::WsPoolBuilder::max_inbound_messages_per_sec) | 1,000 | per connection, burst of one second's worth: a data frame beyond it is refused with receipt 7; a client that keeps sending at more than twice the rate for about a second is closed with 1008 |
//! | [`max_inbound_bytes_per_sec`](crate::WsPoolBuilder::max_inbound_bytes_per_sec) | 4 MiB | as for `max_inbound_messages_per_sec`, in payload bytes (one `max_message_size` message always fits the burst) |
//! | [`max_channels_per_message`](crate::WsPoolBuilder::max_channels_per_message) | 64 | a relayed message naming more channels is not relayed: receipt 7 |
//! | [`max_channels_per_client`](crate::WsPoolBuilder::max_channels_per_client) | 64 | handshake: HTTP 400; `join`: [`JoinError::TooManyChannels`](crate::JoinError::TooManyChannels) |
//! | [`max_id_len`](crate::WsPoolBuilder::max_id_len) | 128 bytes | HTTP 400 |
//! | [`max_channel_len`](crate::WsPoolBuilder::max_channel_len) | 128 bytes | HTTP 400, or [`JoinError::InvalidChannel`](crate::JoinError::InvalidChannel) |
//! | [`duplicate_policy`](crate::WsPoolBuilder::duplicate_policy) | [`Replace`](DuplicatePolicy::Replace) | the old connection is closed with 4001; with `Refuse` the newcomer gets HTTP 409 |
//! | [`relay_policy`](crate::WsPoolBuilder::relay_policy) | [`Targeted`](RelayPolicy::Targeted) | what the provided route relays of what clients send |
//! | [`event_buffer`](crate::WsPoolBuilder::event_buffer) | 1024 | a consumer of [`WsPool::events`](crate::WsPool::events) or [`WsPool::subscribe`](crate::WsPool::subscribe) that falls further behind gets a `Lagged(n)` item |
//! | [`read_buffer_size`](crate::WsPoolBuilder::read_buffer_size) | 512 B | per-socket read buffer, kept for the connection's life, and the most read from the socket at once: a message up to about this size is one read, a larger one several. An idle connection costs 4.0 KiB at 512 B, 4.6 at 1 KiB, 7.6 at 4 KiB; 64 KiB messages are read at 790, 1,100 and 1,600 MiB/s per core (BENCHMARKS.md). Raise it when clients send large messages often |
//! | [`write_buffer_size`](crate::WsPoolBuilder::write_buffer_size) | 4 KiB | tungstenite's per-socket write buffer. The provided route writes the pool's messages itself (frames built once per message, one vectored write per batch of at most 32 frames), so there it holds only control frames (pongs, pings, the close frame) and stays small. A connection from [`WsPool::accept`](crate::WsPool::accept) (axum's `WebSocket`) writes every frame through it: frames are collected up to this size before a write, and tungstenite keeps it at its high-water mark for the connection's life (10.1 KiB per connection after a burst at 4 KiB, 6.8 at 1 KiB at half the fan-out rate; the provided route: 4.4; BENCHMARKS.md, issue 20) |
//! | [`message_ttl`](crate::WsPoolBuilder::message_ttl) | 60 s | a message not written within it is reported [`Undelivered`](crate::PoolEvent::Undelivered) (`Expired`), receipt 3 to a relaying client |
//! | [`offline_ttl`](crate::WsPoolBuilder::offline_ttl) | 120 s | a client away this long is forgotten; what was buffered is reported undelivered (`OfflineTimeout`), receipt 3. Zero turns offline buffering off |
//! | [`offline_max_messages`](crate::WsPoolBuilder::offline_max_messages) | 1024 | per client away: more is refused (`send`: `QueueFull`; broadcast: skipped; relay: receipt 5) |
//! | [`offline_max_bytes`](crate::WsPoolBuilder::offline_max_bytes) | 8 MiB | as for `offline_max_messages` |
//! | [`offline_max_total_bytes`](crate::WsPoolBuilder::offline_max_total_bytes) | 256 MiB | all clients away together: as for `offline_max_messages` |
//! | [`offline_max_clients`](crate::WsPoolBuilder::offline_max_clients) | 100,000 | a client going away beyond it is forgotten at once; its queue is reported undelivered (`Disconnected`) |
//! | [`slow_client_timeout`](crate::WsPoolBuilder::slow_client_timeout) | 20 s | a queue full that long without draining below half: closed with 4008, its queue kept as for any disconnect |
//! | [`shutdown_timeout`](crate::WsPoolBuilder::shutdown_timeout) | 5 s | [`WsPool::shutdown`](crate::WsPool::shutdown) stops waiting for queues to flush |
//! | [`allowed_origins`](crate::WsPoolBuilder::allowed_origins) | any | a browser handshake from another `Origin` gets HTTP 403 |

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use http::{header::HeaderName, HeaderMap};

use crate::message::NEVER;

/// The default [`ping_interval`](crate::WsPoolBuilder::ping_interval).
const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(25);

/// A pool setting that cannot work, from [`WsPoolBuilder::try_build`](crate::WsPoolBuilder::try_build).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Clients would be dropped as idle before they are ever pinged.
    #[error(
        "ping_interval ({ping:?}) must be shorter than idle_timeout ({idle:?}), or a client that \
         answers every ping is still closed as idle: shorten ping_interval, or leave it unset \
         to follow idle_timeout"
    )]
    PingNotBeforeIdle {
        /// The ping interval set.
        ping: Duration,
        /// The idle timeout set.
        idle: Duration,
    },
    /// A zero `idle_timeout` would close every connection at once.
    #[error("idle_timeout must be more than zero")]
    ZeroIdleTimeout,
    /// A zero `ping_interval` would ping without pause.
    #[error("ping_interval must be more than zero")]
    ZeroPingInterval,
}

/// What to do when a client connects with an id that is already connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DuplicatePolicy {
    /// Close the old connection with 4001 "replaced" and register the new one
    /// (the Go original's behaviour).
    #[default]
    Replace,
    /// Refuse the newcomer with HTTP 409; the old connection stays.
    Refuse,
}

/// What the provided route does with a message a client sends, after the
/// application's `on_message` callback has seen it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RelayPolicy {
    /// Relay nothing: the application sees every message (callback and
    /// event stream) and routes it itself.
    Disabled,
    /// Relay to `toClientId` and to the members of the listed channels; a
    /// message with neither is seen only by the application.
    #[default]
    Targeted,
    /// As `Targeted`, and a message with neither `toClientId` nor `channel`
    /// goes to every connected client (`broadcast_all`).
    TargetedOrAll,
}

/// The settings of a pool. Read them with [`WsPool::config`](crate::WsPool::config); set
/// them with [`WsPool::builder`](crate::WsPool::builder).
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) ping_interval: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) max_message_size: usize,
    pub(crate) queue_max_messages: usize,
    pub(crate) queue_max_bytes: usize,
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_ip: usize,
    pub(crate) max_handshakes_in_flight: usize,
    pub(crate) max_inbound_messages_per_sec: u32,
    pub(crate) max_inbound_bytes_per_sec: usize,
    pub(crate) max_channels_per_message: usize,
    pub(crate) client_ip: ClientIp,
    pub(crate) max_channels_per_client: usize,
    pub(crate) max_id_len: usize,
    pub(crate) max_channel_len: usize,
    pub(crate) duplicate_policy: DuplicatePolicy,
    pub(crate) relay_policy: RelayPolicy,
    pub(crate) event_buffer: usize,
    pub(crate) read_buffer_size: usize,
    pub(crate) write_buffer_size: usize,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) message_ttl: Duration,
    pub(crate) offline_ttl: Duration,
    pub(crate) offline_max_messages: usize,
    pub(crate) offline_max_bytes: usize,
    pub(crate) offline_max_total_bytes: usize,
    pub(crate) offline_max_clients: usize,
    pub(crate) slow_client_timeout: Duration,
    pub(crate) allowed_origins: Option<Vec<String>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ping_interval: DEFAULT_PING_INTERVAL,
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            max_message_size: 1024 * 1024,
            queue_max_messages: 1024,
            queue_max_bytes: 8 * 1024 * 1024,
            max_connections: 100_000,
            max_connections_per_ip: 1_000,
            max_handshakes_in_flight: 1_024,
            max_inbound_messages_per_sec: 1_000,
            max_inbound_bytes_per_sec: 4 * 1024 * 1024,
            max_channels_per_message: 64,
            client_ip: ClientIp::Peer,
            max_channels_per_client: 64,
            max_id_len: 128,
            max_channel_len: 128,
            duplicate_policy: DuplicatePolicy::Replace,
            relay_policy: RelayPolicy::Targeted,
            event_buffer: 1024,
            read_buffer_size: 512,
            write_buffer_size: 4 * 1024,
            shutdown_timeout: Duration::from_secs(5),
            message_ttl: Duration::from_secs(60),
            offline_ttl: Duration::from_secs(120),
            offline_max_messages: 1024,
            offline_max_bytes: 8 * 1024 * 1024,
            offline_max_total_bytes: 256 * 1024 * 1024,
            offline_max_clients: 100_000,
            slow_client_timeout: Duration::from_secs(20),
            allowed_origins: None,
        }
    }
}

impl Config {
    /// The origins a browser may connect from, or `None` for any.
    pub fn allowed_origins(&self) -> Option<&[String]> {
        self.allowed_origins.as_deref()
    }

    /// How often the server pings each connection.
    pub fn ping_interval(&self) -> Duration {
        self.ping_interval
    }

    /// Where a client's address is read from.
    pub fn client_ip(&self) -> &ClientIp {
        &self.client_ip
    }
}

impl Config {
    /// Raises zero limits to 1 and checks the settings work together;
    /// `ping_set`: `ping_interval` was set explicitly (else it follows
    /// `idle_timeout`).
    pub(crate) fn check(&mut self, ping_set: bool) -> Result<(), ConfigError> {
        let c = self;
        for v in [
            &mut c.queue_max_messages,
            &mut c.queue_max_bytes,
            &mut c.max_connections,
            &mut c.max_connections_per_ip,
            &mut c.max_handshakes_in_flight,
            &mut c.max_inbound_bytes_per_sec,
            &mut c.max_channels_per_message,
            &mut c.max_id_len,
            &mut c.max_channel_len,
            &mut c.event_buffer,
            &mut c.max_message_size,
        ] {
            *v = (*v).max(1);
        }
        c.max_inbound_messages_per_sec = c.max_inbound_messages_per_sec.max(1);
        if c.idle_timeout.is_zero() {
            return Err(ConfigError::ZeroIdleTimeout);
        }
        if !ping_set {
            c.ping_interval = DEFAULT_PING_INTERVAL.min(c.idle_timeout / 2);
        } else if c.ping_interval.is_zero() {
            return Err(ConfigError::ZeroPingInterval);
        } else if c.ping_interval >= c.idle_timeout && c.idle_timeout < NEVER {
            return Err(ConfigError::PingNotBeforeIdle {
                ping: c.ping_interval,
                idle: c.idle_timeout,
            });
        }
        Ok(())
    }
}

/// One list of the plain knobs, handed to `$then`: each gets a getter on
/// [`Config`] (here) and a setter on the builder (`pool::builder`), with the
/// same doc.
macro_rules! knobs {
    ($then:ident) => {
        $then! {
        /// How long a connection may stay silent (no frame, no pong) before it
        /// is closed (default 60 s).
        idle_timeout: Duration;
        /// How long a write, or the closing handshake, may take before the
        /// connection is dropped (default 10 s).
        write_timeout: Duration;
        /// The largest incoming message in bytes; a bigger one closes the
        /// connection with 1009 (default 1 MiB).
        max_message_size: usize;
        /// Per-connection outbound queue limit in messages (default 1024).
        queue_max_messages: usize;
        /// Per-connection outbound queue limit in bytes (default 8 MiB).
        queue_max_bytes: usize;
        /// The most connections held at once; more get HTTP 503 (default 100,000).
        max_connections: usize;
        /// The most connections from one client address at once; more get
        /// HTTP 429 (default 1,000). Many users can share one address (carrier
        /// NAT, an office): raise it rather than set it low.
        max_connections_per_ip: usize;
        /// The most handshakes being checked, authorised and upgraded at once;
        /// more get HTTP 503 (default 1,024). Bounds the work a burst of
        /// handshakes (or a slow authorisation hook) can pile up.
        max_handshakes_in_flight: usize;
        /// Per connection, data frames a second (burst: one second's worth).
        /// Beyond: receipt 7; sustained at more than twice: closed with 1008
        /// (default 1,000).
        max_inbound_messages_per_sec: u32;
        /// Per connection, payload bytes a second, as for
        /// `max_inbound_messages_per_sec` (default 4 MiB).
        max_inbound_bytes_per_sec: usize;
        /// The most channels one relayed message may name; more: not relayed,
        /// receipt 7 (default 64).
        max_channels_per_message: usize;
        /// The most channels one client may be in (default 64).
        max_channels_per_client: usize;
        /// The longest id in bytes (default 128).
        max_id_len: usize;
        /// The longest channel name in bytes (default 128).
        max_channel_len: usize;
        /// Replace (4001) or refuse (409) a second connection with a connected
        /// id (default replace).
        duplicate_policy: DuplicatePolicy;
        /// What the provided route relays (default [`RelayPolicy::Targeted`]).
        relay_policy: RelayPolicy;
        /// Capacity of the event stream and of each subscription (default 1024).
        event_buffer: usize;
        /// Per-socket read buffer in bytes, and the most read at once (default
        /// 512 B; allocated per connection; see the table above).
        read_buffer_size: usize;
        /// tungstenite's per-socket write buffer in bytes (default 4 KiB): all
        /// frames of a connection from [`WsPool::accept`](crate::WsPool::accept),
        /// only control frames of the provided route's (see the table above).
        write_buffer_size: usize;
        /// How long [`WsPool::shutdown`](crate::WsPool::shutdown) waits for queues to flush (default 5 s).
        shutdown_timeout: Duration;
        /// How long a message may wait in a queue or offline buffer before it
        /// expires (default 60 s); per call: [`SendOptions::ttl`](crate::SendOptions::ttl).
        message_ttl: Duration;
        /// How long a disconnected client's mailbox is kept for it to reconnect
        /// (default 120 s; zero turns offline buffering off).
        offline_ttl: Duration;
        /// Per client away: the most messages buffered (default 1024).
        offline_max_messages: usize;
        /// Per client away: the most bytes buffered (default 8 MiB).
        offline_max_bytes: usize;
        /// All clients away together: the most bytes buffered (default 256 MiB).
        offline_max_total_bytes: usize;
        /// The most clients away (buffering) at once (default 100,000).
        offline_max_clients: usize;
        /// Close with 4008 a client whose queue stays full this long (default 20 s).
        slow_client_timeout: Duration;
            }
    };
}
pub(crate) use knobs;

macro_rules! getters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        impl Config {
            $($(#[$doc])* pub fn $name(&self) -> $ty { self.$name })*
        }
    };
}

knobs!(getters);

/// Where the pool reads a client's address; set it with
/// [`WsPoolBuilder::client_ip`](crate::WsPoolBuilder::client_ip).
///
/// A header is only as trustworthy as the proxy that sets it: use one only
/// when clients can reach the server through that proxy alone (else a
/// client names any address it likes). When the header is missing or does
/// not parse, the TCP peer's address is used. An address read from a
/// header has port 0 in [`ClientInfo::remote_addr`](crate::ClientInfo::remote_addr).
///
/// ```
/// use wspool::{ClientIp, WsPool};
///
/// // nginx: proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
/// let pool = WsPool::builder().client_ip(ClientIp::RightmostForwardedFor).build();
/// # drop(pool);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientIp {
    /// The TCP peer (the default): right when clients connect directly.
    #[default]
    Peer,
    /// The last address in `X-Forwarded-For`: the one your proxy appended
    /// (what came before it, the client may have written).
    RightmostForwardedFor,
    /// A header whose whole value is the client's address, set by your
    /// proxy: e.g. `X-Real-IP`, `CF-Connecting-IP`, `Fly-Client-IP`.
    Header(HeaderName),
}

impl ClientIp {
    /// The client's address for a request from `peer` with `headers`.
    pub fn resolve(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Option<SocketAddr> {
        let from_header = match self {
            ClientIp::Peer => None,
            ClientIp::RightmostForwardedFor => headers
                .get_all("x-forwarded-for")
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(parse_ip),
            ClientIp::Header(name) => headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_ip),
        };
        from_header.map(|ip| SocketAddr::new(ip, 0)).or(peer)
    }
}

/// An address as proxies write it: `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]`.
fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let s = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(s);
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The proxy's address is the rightmost of X-Forwarded-For; a missing
    /// or bad header falls back to the peer.
    #[test]
    fn client_ip_from_headers() {
        let peer: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "6.6.6.6, 203.0.113.7".parse().unwrap());
        let xff = ClientIp::RightmostForwardedFor;
        assert_eq!(
            xff.resolve(&h, Some(peer)),
            Some("203.0.113.7:0".parse().unwrap())
        );
        h.append("x-forwarded-for", "[2001:db8::5]".parse().unwrap());
        assert_eq!(
            xff.resolve(&h, Some(peer)).map(|a| a.ip()),
            Some("2001:db8::5".parse::<IpAddr>().unwrap())
        );
        let real = ClientIp::Header(HeaderName::from_static("x-real-ip"));
        assert_eq!(real.resolve(&h, Some(peer)), Some(peer));
        h.insert("x-real-ip", "not an address".parse().unwrap());
        assert_eq!(real.resolve(&h, Some(peer)), Some(peer));
        h.insert(
            "x-real-ip",
            http::HeaderValue::from_bytes(b"1.2.3.4\xff").unwrap(),
        );
        assert_eq!(real.resolve(&h, Some(peer)), Some(peer));
        let mut bad = HeaderMap::new();
        bad.insert(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"\xfe, \xff").unwrap(),
        );
        assert_eq!(xff.resolve(&bad, Some(peer)), Some(peer));
        assert_eq!(xff.resolve(&HeaderMap::new(), None), None);
        h.insert("x-real-ip", "198.51.100.3".parse().unwrap());
        assert_eq!(
            real.resolve(&h, None),
            Some("198.51.100.3:0".parse().unwrap())
        );
        assert_eq!(ClientIp::Peer.resolve(&h, Some(peer)), Some(peer));
    }
}
