//! How a node joins a cluster over Redis.

use std::{sync::Arc, time::Duration};

use crate::cluster::{BoxFuture, Cluster, ConnectError, Engine, Settings, Start};

/// How a node joins a cluster over Redis. Every field has a default; see
/// [`WsPoolBuilder::redis`](crate::WsPoolBuilder::redis).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// Where Redis is: `redis://HOST:PORT[/DB]` (one instance),
    /// `redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER_NAME` (the master
    /// the sentinels name, followed across failovers), or
    /// `redis+cluster://HOST:PORT[,HOST:PORT...]` (a Redis Cluster, through
    /// these seed nodes; Redis 7). See CLUSTER.md.
    pub url: String,
    /// Prepended to every key and channel (default `wspool`): several
    /// pools can share one Redis.
    pub prefix: String,
    /// This node's id (default: random). Must be unique in the cluster.
    pub node_id: String,
    /// How long this node's lease lives without renewal (default 10 s): a
    /// node that died drops out of presence within this long. Renewed
    /// every third of it.
    pub lease: Duration,
    /// How often the pub/sub link is probed with a PING (default 1 s); no
    /// answer within the probe interval and the link is reconnected.
    pub probe_interval: Duration,
    /// Commands waiting for the Redis writer (default 65,536). Beyond it,
    /// `send` and `broadcast` answer `Unavailable` rather than queue more.
    pub max_pending: usize,
    /// A Redis command's answer is awaited this long (default 2 s).
    pub command_timeout: Duration,
    /// Publications kept per channel (default 1,000, for at most the
    /// pool's `message_ttl`) so that a node that missed some recovers
    /// them; a node that missed more reports the gap.
    pub history_len: usize,
    /// The pause before reconnecting a lost pub/sub link (default 200 ms).
    pub reconnect_delay: Duration,
}

impl RedisConfig {
    /// The defaults, for Redis at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            prefix: "wspool".into(),
            node_id: random_id(),
            lease: Duration::from_secs(10),
            probe_interval: Duration::from_secs(1),
            max_pending: 65_536,
            command_timeout: Duration::from_secs(2),
            history_len: 1_000,
            reconnect_delay: Duration::from_millis(200),
        }
    }
}

impl From<RedisConfig> for Engine {
    fn from(config: RedisConfig) -> Self {
        Engine::new(config)
    }
}

impl Start for RedisConfig {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn start(
        &self,
        settings: Settings,
    ) -> BoxFuture<'static, Result<Arc<dyn Cluster>, ConnectError>> {
        Box::pin(super::connect(settings, self.clone()))
    }
}

pub(super) fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}
