//! [`ClientInfo`]: what the pool reports of one client, here or on another
//! node.

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::{ClientId, Format};

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runtime information about one client (a snapshot).
///
/// Serializes (for the admin API) with camelCase names and times as
/// milliseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ClientInfo {
    /// Its id.
    pub id: ClientId,
    /// Its kind (the original's `Type`).
    pub kind: String,
    /// The channels it is in.
    pub channels: Vec<String>,
    /// How the server frames what it sends to it.
    pub format: Format,
    /// The peer's address, when known.
    pub remote_addr: Option<SocketAddr>,
    /// When it connected.
    #[serde(serialize_with = "ser_time")]
    pub connected_at: SystemTime,
    /// When a frame (or pong) last arrived from it.
    #[serde(serialize_with = "ser_opt_time")]
    pub last_received_at: Option<SystemTime>,
    /// When a message was last written to it.
    #[serde(serialize_with = "ser_opt_time")]
    pub last_sent_at: Option<SystemTime>,
    /// Data frames received from it.
    pub messages_in: u64,
    /// Payload bytes received from it.
    pub bytes_in: u64,
    /// Data frames written to it.
    pub messages_out: u64,
    /// Payload bytes written to it.
    pub bytes_out: u64,
    /// Messages in its outbound queue now.
    pub queued_messages: usize,
    /// Bytes in its outbound queue now.
    pub queued_bytes: usize,
    /// In a cluster, the node it is connected to (`None` on a single
    /// node). For a client on another node, the counters and queue sizes
    /// are zero and `format` and `remote_addr` unknown: presence carries
    /// its id, kind, channels and connection time only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl ClientInfo {
    /// A client on another node, from what presence records of it.
    pub(crate) fn remote(
        id: &str,
        kind: String,
        channels: Vec<String>,
        connected_at_ms: u64,
        node: String,
    ) -> Self {
        ClientInfo {
            id: ClientId::from(id),
            kind,
            channels,
            format: Format::default(),
            remote_addr: None,
            connected_at: UNIX_EPOCH + Duration::from_millis(connected_at_ms),
            last_received_at: None,
            last_sent_at: None,
            messages_in: 0,
            bytes_in: 0,
            messages_out: 0,
            bytes_out: 0,
            queued_messages: 0,
            queued_bytes: 0,
            node: Some(node),
        }
    }
}

fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(epoch_ms(*t))
}

fn ser_opt_time<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_u64(epoch_ms(*t)),
        None => s.serialize_none(),
    }
}

/// What the pool reports of one node of a cluster (on a single node, of
/// itself): its connections, traffic and link, for the admin surface's
/// view of the whole cluster ([`WsPool::cluster_nodes`](crate::WsPool::cluster_nodes)).
///
/// Each node makes its own report (its counters, and its message rates
/// over the last second or more); another node's report is as old as
/// [`age_ms`](Self::age_ms) says (the Redis engine: written every second
/// beside the node's lease). Serializes with camelCase names and times as
/// milliseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct NodeInfo {
    /// The node's id in the cluster (`None` on a single node).
    pub node: Option<String>,
    /// Whether this is the node that answered.
    #[serde(default)]
    pub this: bool,
    /// Whether its link to the cluster is up: as it last reported, and
    /// (for another node) reported within the last 3 s. A single node is
    /// always up.
    pub up: bool,
    /// Connections registered on it.
    pub connections: usize,
    /// Channels with a member on it.
    pub channels: usize,
    /// Data frames received from its clients.
    pub messages_in: u64,
    /// Data frames written to its clients.
    pub messages_out: u64,
    /// Messages refused because a queue or buffer was full
    /// ([`Stats::dropped`](crate::Stats::dropped)).
    pub dropped: u64,
    /// Messages reported undelivered
    /// ([`Stats::undelivered`](crate::Stats::undelivered)).
    pub undelivered: u64,
    /// [`messages_in`](Self::messages_in) per second, over the last
    /// second or more.
    pub messages_in_per_sec: f64,
    /// [`messages_out`](Self::messages_out) per second, likewise.
    pub messages_out_per_sec: f64,
    /// Times its link to the cluster was lost.
    pub outages: u64,
    /// Publications it missed for good ([`ClusterStats::missed`](crate::ClusterStats::missed)).
    pub missed: u64,
    /// When it last missed publications for good (a
    /// [`PoolEvent::ClusterGap`](crate::PoolEvent::ClusterGap)), in
    /// milliseconds since the Unix epoch.
    pub last_gap_at: Option<u64>,
    /// How old this report is, in milliseconds (0 for the node that
    /// answered).
    #[serde(default)]
    pub age_ms: u64,
}

impl NodeInfo {
    /// A live node that has not reported yet (or whose report did not
    /// parse: another version): down, with no numbers.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn unreported(node: &str) -> Self {
        NodeInfo {
            node: Some(node.to_owned()),
            this: false,
            up: false,
            connections: 0,
            channels: 0,
            messages_in: 0,
            messages_out: 0,
            dropped: 0,
            undelivered: 0,
            messages_in_per_sec: 0.0,
            messages_out_per_sec: 0.0,
            outages: 0,
            missed: 0,
            last_gap_at: None,
            age_ms: 0,
        }
    }
}

/// A node's message rates, sampled when its report is made: over the time
/// since the sample before, once at least a second has passed (a report
/// made sooner gives the last rates again).
#[derive(Default)]
pub(crate) struct Rates(parking_lot::Mutex<Option<Sample>>);

struct Sample {
    at: std::time::Instant,
    messages_in: u64,
    messages_out: u64,
    rates: (f64, f64),
}

impl Rates {
    /// The rates (in, out, per second) as of counters `messages_in` and
    /// `messages_out` now.
    pub(crate) fn sample(&self, messages_in: u64, messages_out: u64) -> (f64, f64) {
        let now = std::time::Instant::now();
        let mut last = self.0.lock();
        let Some(prev) = last.as_mut() else {
            *last = Some(Sample {
                at: now,
                messages_in,
                messages_out,
                rates: (0.0, 0.0),
            });
            return (0.0, 0.0);
        };
        let secs = now.duration_since(prev.at).as_secs_f64();
        if secs >= 1.0 {
            let per_sec = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
            *prev = Sample {
                at: now,
                rates: (
                    per_sec(messages_in, prev.messages_in),
                    per_sec(messages_out, prev.messages_out),
                ),
                messages_in,
                messages_out,
            };
        }
        prev.rates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rates are taken over a second or more: a sample sooner gives the
    /// last rates again, one later the counters' growth per second.
    #[test]
    fn rates_are_taken_over_a_second_or_more() {
        let rates = Rates::default();
        assert_eq!(rates.sample(100, 10), (0.0, 0.0), "the first sample");
        assert_eq!(rates.sample(500, 50), (0.0, 0.0), "too soon: the last");
        // Backdate the sample by two seconds.
        rates.0.lock().as_mut().unwrap().at -= Duration::from_secs(2);
        let (r_in, r_out) = rates.sample(300, 50);
        assert!((r_in - 100.0).abs() < 1.0, "{r_in}");
        assert!((r_out - 20.0).abs() < 1.0, "{r_out}");
    }
}
