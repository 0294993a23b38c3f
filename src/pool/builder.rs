//! [`WsPoolBuilder`]: the knobs of [`config`](crate::config), the
//! application's hooks, and the engine that joins other nodes.

use std::{future::Future, sync::Arc, time::Duration};

use super::{
    authorize::{AuthFuture, Authorize, HandshakeRequest, Rejection},
    Hooks, WsPool,
};
use crate::{
    client::{ClientConfig, ClientHandle, Relay},
    cluster::{ConnectError, Engine, Settings},
    config::{knobs, ClientIp, Config, ConfigError, DuplicatePolicy, RelayPolicy},
    routing::Hub,
    DisconnectReason, PoolError, SendMsg,
};

/// Builds a [`WsPool`]; see [`config`](crate::config) for every knob and
/// its default.
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
    /// The application's code: callbacks and the authorisation hook.
    hooks: Hooks,
    /// The engine that joins the other nodes (`connect`); none: one node.
    engine: Option<Engine>,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        impl WsPoolBuilder {
            $($(#[$doc])* pub fn $name(mut self, value: $ty) -> Self { self.config.$name = value; self })*
        }
    };
}

knobs!(setters);

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
        self.hooks.authorize = Some(Authorize(Arc::new(move |req| -> AuthFuture {
            Box::pin(hook(req))
        })));
        self
    }

    /// Run `f` when a connection has been registered (in the connection's
    /// task, before it reads anything).
    pub fn on_open(mut self, f: impl Fn(&ClientHandle) + Send + Sync + 'static) -> Self {
        self.hooks.callbacks = self.hooks.callbacks.on_open(f);
        self
    }

    /// Run `f` on every message a client sends, after stamping and before
    /// relaying, in order per connection. It may change the message, and
    /// return [`Relay::Stop`] to keep it from being relayed.
    pub fn on_message(
        mut self,
        f: impl Fn(&ClientHandle, &mut SendMsg) -> Relay + Send + Sync + 'static,
    ) -> Self {
        self.hooks.callbacks = self.hooks.callbacks.on_message(f);
        self
    }

    /// Run `f` when a connection has ended.
    pub fn on_close(
        mut self,
        f: impl Fn(&ClientHandle, &DisconnectReason) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.callbacks = self.hooks.callbacks.on_close(f);
        self
    }

    /// Run `f` on every runtime error of a connection (undecodable frame,
    /// write timeout, socket error, a panic in another callback).
    pub fn on_error(
        mut self,
        f: impl Fn(&ClientHandle, &PoolError) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.callbacks = self.hooks.callbacks.on_error(f);
        self
    }

    /// Build the pool; see [`try_build`](Self::try_build).
    ///
    /// # Panics
    /// When the settings cannot work together ([`ConfigError`]): a
    /// programming error, reported at start-up rather than as clients
    /// dropped later; or when an engine was set (a pool joining other
    /// nodes is built with [`connect`](Self::connect)).
    pub fn build(self) -> WsPool {
        assert!(
            self.engine.is_none(),
            "wspool: a pool joining a cluster is built with `connect().await`"
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
        self.config.check(self.ping_set)?;
        Ok(WsPool::start(Hub::new(self.config, None), self.hooks))
    }

    /// Joins the other nodes of a cluster through `engine`; build with
    /// [`connect`](Self::connect). An engine comes from its own module:
    /// `cluster::redis::RedisConfig` (feature `redis`), or [`memory::Network`](crate::cluster::memory::Network)
    /// for several pools in one process.
    ///
    /// ```
    /// # async fn run() -> Result<(), wspool::cluster::ConnectError> {
    /// use wspool::{cluster::memory::Network, WsPool};
    ///
    /// let network = Network::new();
    /// let a = WsPool::builder().engine(network.engine()).connect().await?;
    /// let b = WsPool::builder().engine(network.engine()).connect().await?;
    /// # drop((a, b)); Ok(()) }
    /// ```
    pub fn engine(mut self, engine: impl Into<Engine>) -> Self {
        self.engine = Some(engine.into());
        self
    }

    /// Joins the cluster whose Redis is at `url` (feature `redis`), with
    /// the defaults of [`RedisConfig`](crate::cluster::redis::RedisConfig);
    /// build with [`connect`](Self::connect).
    #[cfg(feature = "redis")]
    pub fn redis(self, url: impl Into<String>) -> Self {
        self.engine(crate::cluster::redis::RedisConfig::new(url))
    }

    /// As [`redis`](Self::redis), with every Redis setting.
    #[cfg(feature = "redis")]
    pub fn redis_config(self, config: crate::cluster::redis::RedisConfig) -> Self {
        self.engine(config)
    }

    /// Builds the pool and, when an [`engine`](Self::engine) was set,
    /// starts it: fails fast when the engine cannot reach its service.
    ///
    /// # Errors
    /// [`ConnectError::Config`] as [`try_build`](Self::try_build);
    /// [`ConnectError::BadAddress`] or [`ConnectError::Unreachable`] from
    /// the engine.
    pub async fn connect(mut self) -> Result<WsPool, ConnectError> {
        self.config.check(self.ping_set)?;
        let Some(engine) = self.engine.take() else {
            return Ok(WsPool::start(Hub::new(self.config, None), self.hooks));
        };
        let cluster = engine.start(Settings::of(&self.config)).await?;
        let hub = Hub::new(self.config, Some(cluster));
        hub.join_cluster().await;
        Ok(WsPool::start(hub, self.hooks))
    }
}
