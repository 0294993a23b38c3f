//! Every knob of a pool, with its default, and the builder that sets them.
//!
//! | knob | default | what happens at the limit |
//! |---|---|---|
//! | [`ping_interval`](WsPoolBuilder::ping_interval) | 25 s, or half of a shorter `idle_timeout` | the server pings each connection this often; set explicitly, it must be shorter than `idle_timeout` ([`ConfigError`]) |
//! | [`idle_timeout`](WsPoolBuilder::idle_timeout) | 60 s | nothing received (not even a pong) for this long: the connection is closed (1000) |
//! | [`write_timeout`](WsPoolBuilder::write_timeout) | 10 s | a write (or the closing handshake) that takes longer: the connection is dropped |
//! | [`max_message_size`](WsPoolBuilder::max_message_size) | 1 MiB | a bigger incoming frame closes the connection with 1009 |
//! | [`queue_max_messages`](WsPoolBuilder::queue_max_messages) | 1024 | `send` returns [`SendError::QueueFull`](crate::SendError::QueueFull); a broadcast skips the client and emits [`PoolEvent::Dropped`](crate::PoolEvent::Dropped); a relayed direct message gets receipt 5 |
//! | [`queue_max_bytes`](WsPoolBuilder::queue_max_bytes) | 8 MiB | as for `queue_max_messages` |
//! | [`max_connections`](WsPoolBuilder::max_connections) | 100,000 | further handshakes get HTTP 503 |
//! | [`max_connections_per_ip`](WsPoolBuilder::max_connections_per_ip) | 1,000 | further handshakes from that address get HTTP 429; the address is the peer's, or the one [`client_ip`](WsPoolBuilder::client_ip) reads from a trusted proxy's header |
//! | [`max_handshakes_in_flight`](WsPoolBuilder::max_handshakes_in_flight) | 1,024 | handshakes being checked, authorised or upgraded at once; more get HTTP 503 |
//! | [`max_inbound_messages_per_sec`](WsPoolBuilder::max_inbound_messages_per_sec) | 1,000 | per connection, burst of one second's worth: a data frame beyond it is refused with receipt 7; a client that keeps sending at more than twice the rate for about a second is closed with 1008 |
//! | [`max_inbound_bytes_per_sec`](WsPoolBuilder::max_inbound_bytes_per_sec) | 4 MiB | as for `max_inbound_messages_per_sec`, in payload bytes (one `max_message_size` message always fits the burst) |
//! | [`max_channels_per_message`](WsPoolBuilder::max_channels_per_message) | 64 | a relayed message naming more channels is not relayed: receipt 7 |
//! | [`max_channels_per_client`](WsPoolBuilder::max_channels_per_client) | 64 | handshake: HTTP 400; `join`: [`JoinError::TooManyChannels`](crate::JoinError::TooManyChannels) |
//! | [`max_id_len`](WsPoolBuilder::max_id_len) | 128 bytes | HTTP 400 |
//! | [`max_channel_len`](WsPoolBuilder::max_channel_len) | 128 bytes | HTTP 400, or [`JoinError::InvalidChannel`](crate::JoinError::InvalidChannel) |
//! | [`duplicate_policy`](WsPoolBuilder::duplicate_policy) | [`Replace`](DuplicatePolicy::Replace) | the old connection is closed with 4001; with `Refuse` the newcomer gets HTTP 409 |
//! | [`relay_policy`](WsPoolBuilder::relay_policy) | [`Targeted`](RelayPolicy::Targeted) | what the provided route relays of what clients send |
//! | [`event_buffer`](WsPoolBuilder::event_buffer) | 1024 | a consumer of [`WsPool::events`](crate::WsPool::events) or [`WsPool::subscribe`](crate::WsPool::subscribe) that falls further behind gets a `Lagged(n)` item |
//! | [`read_buffer_size`](WsPoolBuilder::read_buffer_size) | 512 B | per-socket read buffer, kept for the connection's life, and the most read from the socket at once: a message up to about this size is one read, a larger one several. An idle connection costs 4.0 KiB at 512 B, 4.6 at 1 KiB, 7.6 at 4 KiB; 64 KiB messages are read at 790, 1,100 and 1,600 MiB/s per core (BENCHMARKS.md). Raise it when clients send large messages often |
//! | [`write_buffer_size`](WsPoolBuilder::write_buffer_size) | 4 KiB | per-socket write buffer: frames are collected up to this size before a write |
//! | [`message_ttl`](WsPoolBuilder::message_ttl) | 60 s | a message not written within it is reported [`Undelivered`](crate::PoolEvent::Undelivered) (`Expired`), receipt 3 to a relaying client |
//! | [`offline_ttl`](WsPoolBuilder::offline_ttl) | 120 s | a client away this long is forgotten; what was buffered is reported undelivered (`OfflineTimeout`), receipt 3. Zero turns offline buffering off |
//! | [`offline_max_messages`](WsPoolBuilder::offline_max_messages) | 1024 | per client away: more is refused (`send`: `QueueFull`; broadcast: skipped; relay: receipt 5) |
//! | [`offline_max_bytes`](WsPoolBuilder::offline_max_bytes) | 8 MiB | as for `offline_max_messages` |
//! | [`offline_max_total_bytes`](WsPoolBuilder::offline_max_total_bytes) | 256 MiB | all clients away together: as for `offline_max_messages` |
//! | [`offline_max_clients`](WsPoolBuilder::offline_max_clients) | 100,000 | a client going away beyond it is forgotten at once; its queue is reported undelivered (`Disconnected`) |
//! | [`slow_client_timeout`](WsPoolBuilder::slow_client_timeout) | 20 s | a queue full that long without draining below half: closed with 4008, its queue kept as for any disconnect |
//! | [`shutdown_timeout`](WsPoolBuilder::shutdown_timeout) | 5 s | [`WsPool::shutdown`](crate::WsPool::shutdown) stops waiting for queues to flush |
//! | [`allowed_origins`](WsPoolBuilder::allowed_origins) | any | a browser handshake from another `Origin` gets HTTP 403 |
//! | [`authorize`](WsPoolBuilder::authorize) | none (trust the token) | the hook may answer 401 or 403 |

use std::{future::Future, sync::Arc, time::Duration};

use crate::{
    admission::ClientIp,
    callbacks::{Callbacks, Relay},
    message::NEVER,
    route::{AuthFuture, Authorize, HandshakeRequest},
    ClientConfig, ClientHandle, DisconnectReason, PoolError, Rejection, SendMsg, WsPool,
};

/// The default [`ping_interval`](WsPoolBuilder::ping_interval).
const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(25);

/// A pool setting that cannot work, from [`WsPoolBuilder::try_build`].
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

/// The settings of a pool. Read them with [`WsPool::config`]; set them with
/// [`WsPool::builder`].
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
    pub(crate) authorize: Option<Authorize>,
    pub(crate) callbacks: Callbacks,
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
            authorize: None,
            callbacks: Callbacks::default(),
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

/// Builds a [`WsPool`]; see the [module docs](crate::config) for every knob
/// and its default.
///
/// ```
/// use std::time::Duration;
/// use wspool::{DuplicatePolicy, WsPool};
///
/// let pool = WsPool::builder()
///     .max_message_size(64 * 1024)
///     .queue_max_messages(256)
///     .idle_timeout(Duration::from_secs(30))
///     .duplicate_policy(DuplicatePolicy::Refuse)
///     .build();
/// assert_eq!(pool.config().max_message_size(), 64 * 1024);
/// ```
#[derive(Debug, Default, Clone)]
#[must_use]
pub struct WsPoolBuilder {
    config: Config,
    /// `ping_interval` was set explicitly (else it follows `idle_timeout`).
    ping_set: bool,
    /// The cluster to join (`connect`).
    #[cfg(feature = "redis")]
    redis: Option<crate::cluster::redis::RedisConfig>,
}

/// One list of the plain knobs: each gets a getter on [`Config`] and a
/// setter on [`WsPoolBuilder`], with the same doc.
macro_rules! knobs {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        impl Config {
            $($(#[$doc])* pub fn $name(&self) -> $ty { self.$name })*
        }
        impl WsPoolBuilder {
            $($(#[$doc])* pub fn $name(mut self, value: $ty) -> Self { self.config.$name = value; self })*
        }
    };
}

knobs! {
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
    /// Per-socket write buffer in bytes (default 4 KiB).
    write_buffer_size: usize;
    /// How long [`WsPool::shutdown`] waits for queues to flush (default 5 s).
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

impl WsPoolBuilder {
    /// How often the server pings each connection. Default: 25 s, or half
    /// of `idle_timeout` when that is shorter than 50 s. Set explicitly, it
    /// must be shorter than `idle_timeout` (see [`try_build`](Self::try_build)).
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.config.ping_interval = interval;
        self.ping_set = true;
        self
    }

    /// Where the pool reads a client's address (for
    /// `max_connections_per_ip` and [`ClientInfo::remote_addr`](crate::ClientInfo::remote_addr)).
    /// Default: the TCP peer. Behind a load balancer every peer is the
    /// balancer: read the address it adds instead, e.g.
    /// [`ClientIp::RightmostForwardedFor`]. Only do so when clients cannot
    /// reach the server except through that proxy, or they choose their
    /// own address.
    pub fn client_ip(mut self, source: ClientIp) -> Self {
        self.config.client_ip = source;
        self
    }

    /// Accept browser handshakes only from these origins (exact match on the
    /// `Origin` header, e.g. `https://example.com`). A request without an
    /// `Origin` header (not a browser) is not affected. Default: any origin.
    pub fn allowed_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.allowed_origins = Some(origins.into_iter().map(Into::into).collect());
        self
    }

    /// Decide who a connecting client is, instead of trusting its token.
    ///
    /// The hook receives the request's headers, URI (query) and remote
    /// address, and the token the client offered (parsed, or why it did not
    /// parse). It answers the [`ClientConfig`] to register, or a
    /// [`Rejection`] (401 or 403 with a reason).
    ///
    /// ```
    /// use wspool::{ClientConfig, Rejection, WsPool};
    ///
    /// let pool = WsPool::builder()
    ///     .authorize(|req| async move {
    ///         let user = req
    ///             .headers
    ///             .get("x-user")
    ///             .and_then(|v| v.to_str().ok())
    ///             .ok_or_else(|| Rejection::unauthorized("missing x-user header"))?;
    ///         Ok(ClientConfig::new(user).channels(["lobby"]))
    ///     })
    ///     .build();
    /// # drop(pool);
    /// ```
    pub fn authorize<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(HandshakeRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ClientConfig, Rejection>> + Send + 'static,
    {
        self.config.authorize = Some(Authorize(Arc::new(move |req| -> AuthFuture {
            Box::pin(hook(req))
        })));
        self
    }

    /// Run `f` when a connection has been registered (in the connection's
    /// task, before it reads anything).
    pub fn on_open(mut self, f: impl Fn(&ClientHandle) + Send + Sync + 'static) -> Self {
        self.config.callbacks = self.config.callbacks.on_open(f);
        self
    }

    /// Run `f` on every message a client sends, after stamping and before
    /// relaying, in order per connection. It may change the message, and
    /// return [`Relay::Stop`] to keep it from being relayed.
    pub fn on_message(
        mut self,
        f: impl Fn(&ClientHandle, &mut SendMsg) -> Relay + Send + Sync + 'static,
    ) -> Self {
        self.config.callbacks = self.config.callbacks.on_message(f);
        self
    }

    /// Run `f` when a connection has ended.
    pub fn on_close(
        mut self,
        f: impl Fn(&ClientHandle, &DisconnectReason) + Send + Sync + 'static,
    ) -> Self {
        self.config.callbacks = self.config.callbacks.on_close(f);
        self
    }

    /// Run `f` on every runtime error of a connection (undecodable frame,
    /// write timeout, socket error, a panic in another callback).
    pub fn on_error(
        mut self,
        f: impl Fn(&ClientHandle, &PoolError) + Send + Sync + 'static,
    ) -> Self {
        self.config.callbacks = self.config.callbacks.on_error(f);
        self
    }

    /// Build the pool; see [`try_build`](Self::try_build).
    ///
    /// # Panics
    /// When the settings cannot work together ([`ConfigError`]): a
    /// programming error, reported at start-up rather than as clients
    /// dropped later.
    pub fn build(self) -> WsPool {
        #[cfg(feature = "redis")]
        assert!(
            self.redis.is_none(),
            "wspool: a pool joining a Redis cluster is built with `connect().await`"
        );
        match self.try_build() {
            Ok(pool) => pool,
            Err(e) => panic!("wspool: {e}"),
        }
    }

    /// Build the pool, or say which settings cannot work together.
    ///
    /// Zero queue, connection, name, event, rate and message-size limits
    /// are raised to 1; the offline limits may be zero (nothing is buffered
    /// for a client that is away). A `ping_interval` left unset follows a
    /// short `idle_timeout` (half of it).
    ///
    /// ```
    /// use std::time::Duration;
    /// use wspool::{config::ConfigError, WsPool};
    ///
    /// let quick = WsPool::builder().idle_timeout(Duration::from_secs(10)).build();
    /// assert_eq!(quick.config().ping_interval(), Duration::from_secs(5));
    ///
    /// let broken = WsPool::builder()
    ///     .idle_timeout(Duration::from_secs(10))
    ///     .ping_interval(Duration::from_secs(25))
    ///     .try_build();
    /// assert!(matches!(broken, Err(ConfigError::PingNotBeforeIdle { .. })));
    /// ```
    ///
    /// # Errors
    /// [`ConfigError`] when an explicitly set `ping_interval` is zero or not
    /// shorter than `idle_timeout` (unless that is a century or more:
    /// never), or `idle_timeout` is zero.
    pub fn try_build(mut self) -> Result<WsPool, ConfigError> {
        self.check()?;
        Ok(WsPool::from_config(self.config))
    }

    /// Joins the cluster whose Redis is at `url` (feature `redis`), with
    /// the defaults of [`RedisConfig`](crate::cluster::redis::RedisConfig);
    /// build with [`connect`](Self::connect).
    #[cfg(feature = "redis")]
    pub fn redis(self, url: impl Into<String>) -> Self {
        self.redis_config(crate::cluster::redis::RedisConfig::new(url))
    }

    /// Joins a cluster over Redis as `config` says (key prefix, node id,
    /// lease, probe interval, ...); build with [`connect`](Self::connect).
    #[cfg(feature = "redis")]
    pub fn redis_config(mut self, config: crate::cluster::redis::RedisConfig) -> Self {
        self.redis = Some(config);
        self
    }

    /// Builds the pool and, when [`redis`](Self::redis) was set, connects
    /// it to the cluster: the node's channels are subscribed before it
    /// returns.
    ///
    /// # Errors
    /// [`RedisError::Config`](crate::cluster::redis::RedisError::Config)
    /// as [`try_build`](Self::try_build), or Redis cannot be reached.
    #[cfg(feature = "redis")]
    pub async fn connect(mut self) -> Result<WsPool, crate::cluster::redis::RedisError> {
        self.check()?;
        match self.redis.take() {
            Some(redis) => crate::cluster::redis::connect(self.config, redis).await,
            None => Ok(WsPool::from_config(self.config)),
        }
    }

    /// Raises zero limits to 1 and checks the settings work together.
    fn check(&mut self) -> Result<(), ConfigError> {
        let c = &mut self.config;
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
        if !self.ping_set {
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
