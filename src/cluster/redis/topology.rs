//! Where Redis is: one instance, or a master found through Sentinel, and
//! the connections to it, replaced when the master changes.
//!
//! | address | meaning |
//! |---|---|
//! | `redis://HOST:PORT[/DB]` | one instance, as given |
//! | `redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER_NAME` | the master the sentinels name `MASTER_NAME`: asked of any reachable sentinel at start, again whenever the link breaks and whenever a sentinel announces `+switch-master` for it ([`watch_switches`]), and checked with `ROLE` before it is used |
//!
//! | `redis+cluster://HOST:PORT[,HOST:PORT...]` | a Redis Cluster, through these seed nodes: keys go to the shard owning their slot, pub/sub is sharded (`SSUBSCRIBE`, `SPUBLISH`; Redis 7) |

use std::time::Duration;

use redis::{aio::ConnectionManagerConfig, Client, Value};

use super::conn::Conn;
use crate::cluster::ConnectError;

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Topology {
    /// One instance at this URL.
    Single(String),
    /// The master named `master`, as the `sentinels` (host, port) say.
    Sentinel {
        sentinels: Vec<(String, u16)>,
        master: String,
    },
    /// A Redis Cluster, found through these seed nodes (`redis://` URLs).
    Cluster(Vec<String>),
}

impl Topology {
    /// Reads an address (see the [module docs](self)).
    pub(super) fn parse(url: &str) -> Result<Self, ConnectError> {
        let bad = |why: &str| ConnectError::BadAddress(format!("{url}: {why}"));
        let hosts = |hosts: &str| {
            (hosts.split(','))
                .map(|h| {
                    let (host, port) = h
                        .rsplit_once(':')
                        .ok_or_else(|| bad("a host without :PORT"))?;
                    let port = port
                        .parse::<u16>()
                        .map_err(|_| bad("a port is not a number"))?;
                    match host.is_empty() {
                        true => Err(bad("a :PORT without a host")),
                        false => Ok((host.to_owned(), port)),
                    }
                })
                .collect::<Result<Vec<_>, _>>()
        };
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            let seeds = hosts(rest.strip_suffix('/').unwrap_or(rest))?;
            let seeds = (seeds.into_iter())
                .map(|(host, port)| format!("redis://{host}:{port}"))
                .collect();
            return Ok(Topology::Cluster(seeds));
        }
        let Some(rest) = url.strip_prefix("redis+sentinel://") else {
            return Ok(Topology::Single(url.to_owned()));
        };
        let (list, master) = rest
            .split_once('/')
            .ok_or_else(|| bad("no master name: redis+sentinel://HOST:PORT[,...]/MASTER_NAME"))?;
        if master.is_empty() || master.contains('/') {
            return Err(bad("the master name is one path segment"));
        }
        Ok(Topology::Sentinel {
            sentinels: hosts(list)?,
            master: master.to_owned(),
        })
    }

    /// Whether this is a Redis Cluster (sharded pub/sub, a connection per
    /// shard).
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Topology::Cluster(_))
    }

    /// The URL of the instance to use now (see [`locate`](Self::locate));
    /// for a Redis Cluster, its seeds, which do not change.
    pub(super) async fn locate(&self, timeout: Duration) -> Result<String, ConnectError> {
        let (sentinels, master) = match self {
            Topology::Single(url) => return Ok(url.clone()),
            Topology::Cluster(seeds) => return Ok(seeds.join(",")),
            Topology::Sentinel { sentinels, master } => (sentinels, master),
        };
        let mut why = String::from("no sentinel answered");
        for (host, port) in sentinels {
            match ask(host, *port, master, timeout).await {
                Ok(url) => return Ok(url),
                Err(e) => why = format!("sentinel {host}:{port}: {e}"),
            }
        }
        Err(ConnectError::Unreachable(why))
    }
}

/// Asks one sentinel where `master` is, and checks with `ROLE` that the
/// instance there is a master (a failed master restarted on its old
/// address is an empty master for a while, until the sentinels demote it).
async fn ask(host: &str, port: u16, master: &str, timeout: Duration) -> Result<String, String> {
    let sentinel = Client::open(format!("redis://{host}:{port}")).map_err(|e| e.to_string())?;
    let asked = async {
        let mut conn = sentinel.get_multiplexed_async_connection().await?;
        redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(master)
            .query_async::<Option<(String, u16)>>(&mut conn)
            .await
    };
    let addr = match tokio::time::timeout(timeout, asked).await {
        Ok(Ok(Some((host, port)))) => format!("redis://{host}:{port}"),
        Ok(Ok(None)) => return Err(format!("knows no master named {master}")),
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("no answer in time".into()),
    };
    let client = Client::open(addr.as_str()).map_err(|e| e.to_string())?;
    let role = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("ROLE")
            .query_async::<Vec<Value>>(&mut conn)
            .await
    };
    match tokio::time::timeout(timeout, role).await {
        Ok(Ok(role)) if matches!(role.first(), Some(Value::BulkString(r)) if r == b"master") => {
            Ok(addr)
        }
        Ok(Ok(_)) => Err(format!("{addr} is not a master (yet)")),
        Ok(Err(e)) => Err(format!("{addr}: {e}")),
        Err(_) => Err(format!("{addr}: no answer in time")),
    }
}

/// Follows the sentinels' `+switch-master` announcements for `master`:
/// calls `moved` each time one names it, so a node moves to the new master
/// as soon as it is elected, even when it has nothing to write (otherwise
/// it would notice at its next failed command: a demoted master keeps its
/// clients' connections open). Listens to one sentinel at a time, the next
/// when that one goes away; ends when `stop` is set.
pub(super) async fn watch_switches(
    sentinels: Vec<(String, u16)>,
    master: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
    moved: impl Fn(),
) {
    use futures_util::StreamExt;
    for (host, port) in sentinels.iter().cycle() {
        let listen = async {
            let client = Client::open(format!("redis://{host}:{port}")).ok()?;
            let mut pubsub = client.get_async_pubsub().await.ok()?;
            pubsub.subscribe("+switch-master").await.ok()?;
            let mut messages = pubsub.on_message();
            while let Some(msg) = messages.next().await {
                // "<name> <old ip> <old port> <new ip> <new port>"
                let text: String = msg.get_payload().unwrap_or_default();
                if text.split(' ').next() == Some(master.as_str()) {
                    moved();
                }
            }
            Some(())
        };
        tokio::select! {
            _ = listen => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A client and a command connection to `url`: fails at once when it
/// cannot be reached; later, each command after a broken link tries one
/// reconnect, and fails rather than waits.
pub(super) async fn open(
    url: &str,
    timeout: Duration,
) -> Result<(Option<Client>, Conn), ConnectError> {
    let client = Client::open(url).map_err(|e| ConnectError::BadAddress(e.to_string()))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_max_delay(timeout);
    let conn = client
        .get_connection_manager_with_config(config)
        .await
        .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
    Ok((Some(client), Conn::Single(conn)))
}

/// The pushes of a Redis Cluster connection: sharded messages, subscription
/// changes, and a shard's connection lost.
pub(super) type Pushes = tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>;

/// A connection to the Redis Cluster the `seeds` belong to (RESP3: the
/// subscriptions' messages come as pushes, on the same connections as
/// the commands, one per shard).
///
/// The seeds are tried one at a time, each alone: a client given several
/// fails to connect while one of them is down, and a dead master is a
/// seed as often as not (the soak lost a node for good that way).
pub(super) async fn open_cluster(
    seeds: &[String],
    timeout: Duration,
) -> Result<(Conn, Pushes), ConnectError> {
    let mut why = String::from("no seed given");
    for seed in seeds {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let client = redis::cluster::ClusterClientBuilder::new(vec![seed.clone()])
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(tx)
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(2)
            .build()
            .map_err(|e| ConnectError::BadAddress(e.to_string()))?;
        match tokio::time::timeout(timeout, client.get_async_connection()).await {
            Ok(Ok(conn)) => return Ok((Conn::Cluster(conn, timeout), rx)),
            Ok(Err(e)) => why = format!("{seed}: {e}"),
            Err(_) => why = format!("{seed}: no answer in time"),
        }
    }
    Err(ConnectError::Unreachable(why))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each address form, and the mistakes a user can make in one.
    #[test]
    fn addresses() {
        assert_eq!(
            Topology::parse("redis://127.0.0.1:6379"),
            Ok(Topology::Single("redis://127.0.0.1:6379".into()))
        );
        assert_eq!(
            Topology::parse("redis+sentinel://a:26379,b:26380/mymaster"),
            Ok(Topology::Sentinel {
                sentinels: vec![("a".into(), 26379), ("b".into(), 26380)],
                master: "mymaster".into(),
            })
        );
        assert_eq!(
            Topology::parse("redis+cluster://a:7000,b:7001/"),
            Ok(Topology::Cluster(vec![
                "redis://a:7000".into(),
                "redis://b:7001".into()
            ]))
        );
        for bad in [
            "redis+sentinel://a:1",
            "redis+sentinel://a:1/",
            "redis+sentinel://a/m",
            "redis+sentinel://a:x/m",
            "redis+sentinel://:1/m",
            "redis+sentinel://a:1/m/n",
            "redis+cluster://a",
            "redis+cluster://a:1,:2",
        ] {
            assert!(
                matches!(Topology::parse(bad), Err(ConnectError::BadAddress(_))),
                "{bad}"
            );
        }
    }
}
