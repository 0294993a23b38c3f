//! The command connection: to one instance (the one given, or the master
//! Sentinel names), or to a Redis Cluster, where each command goes to the
//! shard that owns its key's slot (the `redis` crate's cluster client
//! follows `MOVED`, `ASK` and failovers, and refreshes its slot map).

use futures_util::future::join_all;
use redis::{
    aio::{ConnectionLike, ConnectionManager},
    cluster_async::ClusterConnection,
    Cmd, Pipeline, RedisFuture, RedisResult, Value,
};

/// A command connection, cheap to clone (clones share the sockets).
#[derive(Clone)]
pub(super) enum Conn {
    /// One instance: one multiplexed connection, reconnected when it
    /// breaks; commands sent on it are pipelined in order.
    Single(ConnectionManager),
    /// A Redis Cluster: a multiplexed connection per shard; each command
    /// bounded by the duration (the command timeout): the client's own
    /// timeouts did not bound all (a node's recovery after a master was
    /// killed waited forever on one, and the node stayed down).
    Cluster(ClusterConnection, std::time::Duration),
}

impl Conn {
    /// Runs independent commands, each with its own result, in order per
    /// slot: one pipeline to one instance; in a Redis Cluster, each
    /// command to its shard, all at once (a pipeline there must stay in
    /// one slot).
    pub(super) async fn many(&mut self, cmds: Vec<Cmd>) -> RedisResult<Vec<RedisResult<Value>>> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Conn::Single(conn) => {
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                for cmd in cmds {
                    pipe.add_command(cmd);
                }
                pipe.query_async(conn).await
            }
            Conn::Cluster(..) => {
                let sent = cmds.iter().map(|cmd| {
                    let mut conn = self.clone();
                    async move { cmd.query_async::<Value>(&mut conn).await }
                });
                let results = join_all(sent).await;
                // Nothing reached Redis at all: the link is down, as a
                // failed pipeline says on one instance.
                if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
                    if results.iter().all(|r| r.as_ref().is_err_and(is_link)) {
                        return Err(e.clone());
                    }
                }
                Ok(results)
            }
        }
    }
}

/// Whether an error means Redis could not be reached (rather than that a
/// command was refused).
pub(super) fn is_link(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_cluster_error()
        || matches!(
            e.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown)
        )
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c, limit) => {
                let limit = *limit;
                Box::pin(bounded(limit, c.req_packed_command(cmd)))
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c, limit) => {
                let limit = *limit;
                Box::pin(bounded(
                    limit,
                    c.req_packed_commands(pipeline, offset, count),
                ))
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c, _) => c.get_db(),
        }
    }
}

/// `request`, or a timeout error after `limit`.
async fn bounded<T>(
    limit: std::time::Duration,
    request: impl std::future::Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    match tokio::time::timeout(limit, request).await {
        Ok(r) => r,
        Err(_) => Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "no answer within the command timeout",
        ))),
    }
}
