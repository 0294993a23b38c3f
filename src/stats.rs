//! Counters a user can read from the pool ([`WsPool::stats`](crate::WsPool::stats)).

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};

use crate::{DisconnectReason, UndeliveredReason};

/// Live counters. Relaxed atomics: each is an independent tally, read as a
/// snapshot that need not be consistent across counters.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) messages_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) buffered: AtomicU64,
    pub(crate) undelivered: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) relays_refused: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
    pub(crate) connections_total: AtomicU64,
    pub(crate) refused_bad_request: AtomicU64,
    pub(crate) refused_unauthorized: AtomicU64,
    pub(crate) refused_forbidden: AtomicU64,
    pub(crate) refused_duplicate_id: AtomicU64,
    pub(crate) refused_capacity: AtomicU64,
    pub(crate) refused_shutting_down: AtomicU64,
    pub(crate) refused_per_ip: AtomicU64,
    pub(crate) refused_busy: AtomicU64,
    /// Undelivered messages by reason (`UndeliveredReason::index`).
    pub(crate) undelivered_by: [AtomicU64; 8],
    /// Ended connections by reason (`DisconnectReason::index`).
    pub(crate) disconnects_by: [AtomicU64; 12],
}

pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}

/// The non-zero counters of `by`, under their labels.
fn labelled(
    by: &[AtomicU64],
    label: impl Fn(usize) -> &'static str,
) -> BTreeMap<&'static str, u64> {
    (by.iter().enumerate())
        .map(|(i, c)| (label(i), c.load(Relaxed)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// A snapshot of the pool's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Stats {
    /// Connections registered now.
    pub connections: usize,
    /// Channels with at least one member now.
    pub channels: usize,
    /// Connections accepted since the pool was built.
    pub connections_total: u64,
    /// Data frames received from clients.
    pub messages_in: u64,
    /// Payload bytes received from clients.
    pub bytes_in: u64,
    /// Data frames written to clients.
    pub messages_out: u64,
    /// Payload bytes written to clients.
    pub bytes_out: u64,
    /// Messages refused because the recipient's queue (or offline buffer)
    /// was full: a `send` error, a broadcast skip, a relay drop, a receipt
    /// that did not fit.
    pub dropped: u64,
    /// Messages accepted into the offline buffer of a client that is away.
    pub buffered: u64,
    /// Messages queued or buffered that were then reported undelivered
    /// ([`PoolEvent::Undelivered`](crate::PoolEvent::Undelivered)).
    pub undelivered: u64,
    /// Clients away now, their messages buffered.
    pub offline_clients: usize,
    /// Bytes buffered for clients that are away now.
    pub offline_bytes: usize,
    /// Frames that did not decode.
    pub decode_errors: u64,
    /// Data frames refused by the inbound rate limits (receipt 7), and
    /// connections closed for flooding (1008).
    pub rate_limited: u64,
    /// Relays refused for naming more than `max_channels_per_message`
    /// channels (receipt 7).
    pub relays_refused: u64,
    /// Connections closed for breaking the WebSocket protocol (1002, 1007).
    pub protocol_errors: u64,
    /// Handshakes refused, by reason.
    pub refused: RefusedStats,
    /// [`undelivered`](Self::undelivered) by reason
    /// ([`UndeliveredReason::label`](crate::UndeliveredReason::label)):
    /// the reasons that occurred.
    pub undelivered_by_reason: BTreeMap<&'static str, u64>,
    /// Connections that ended, by reason
    /// ([`DisconnectReason::label`](crate::DisconnectReason::label)): the
    /// reasons that occurred.
    pub disconnects: BTreeMap<&'static str, u64>,
    /// In a cluster, this node's traffic with the others (`None` on a
    /// single node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStats>,
}

/// This node's traffic with the rest of a cluster (CLUSTER.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ClusterStats {
    /// This node's id.
    pub node: String,
    /// Whether the link to the cluster is up now.
    pub up: bool,
    /// Direct messages forwarded to another node (or the id's buffer).
    pub forwarded: u64,
    /// Broadcasts published to the other nodes.
    pub published: u64,
    /// Messages received from other nodes.
    pub received: u64,
    /// Messages recovered after being missed: from a channel's history, or
    /// buffered for this node's clients while its link was down.
    pub recovered: u64,
    /// Publications known to be missed and no longer recoverable
    /// (reported as [`PoolEvent::ClusterGap`](crate::PoolEvent::ClusterGap)).
    pub missed: u64,
    /// When publications were last missed for good, in milliseconds since
    /// the Unix epoch (`None`: never).
    pub last_gap_at: Option<u64>,
    /// Sends and broadcasts refused with `Unavailable`.
    pub unavailable: u64,
    /// Times the link to the cluster was lost.
    pub outages: u64,
    /// Times the cluster's store was found to have lost its data.
    pub data_losses: u64,
    /// Messages from the engine that did not parse (dropped and logged at
    /// `debug`): another version of wspool, or something else writing to
    /// this pool's channels.
    pub malformed: u64,
    /// What only this engine counts.
    pub engine: EngineStats,
}

/// The part of [`ClusterStats`] only one engine has: its name and its own
/// counters (see each engine's module for what they mean).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct EngineStats {
    /// `"redis"`, `"memory"`, ...
    pub name: &'static str,
    /// Its counters and gauges, by name.
    pub counters: BTreeMap<&'static str, u64>,
}

impl EngineStats {
    /// Stats named `name`, with `counters`.
    pub(crate) fn new(
        name: &'static str,
        counters: impl IntoIterator<Item = (&'static str, u64)>,
    ) -> Self {
        EngineStats {
            name,
            counters: counters.into_iter().collect(),
        }
    }
}

/// Handshakes refused, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RefusedStats {
    /// 400: no usable token, bad id or channel, too many channels.
    pub bad_request: u64,
    /// 401 from the authorisation hook.
    pub unauthorized: u64,
    /// 403: the origin allow-list or the authorisation hook.
    pub forbidden: u64,
    /// 409: the id is connected and the policy is `Refuse`.
    pub duplicate_id: u64,
    /// 503: `max_connections` reached.
    pub capacity: u64,
    /// 503: the pool is shutting down.
    pub shutting_down: u64,
    /// 429: `max_connections_per_ip` reached for the client's address.
    pub per_ip: u64,
    /// 503: `max_handshakes_in_flight` handshakes in progress.
    pub busy: u64,
}

/// The figures that are read off the registry rather than counted.
pub(crate) struct Gauges {
    pub(crate) connections: usize,
    pub(crate) channels: usize,
    pub(crate) offline_clients: usize,
    pub(crate) offline_bytes: usize,
}

impl Counters {
    pub(crate) fn snapshot(&self, now: Gauges) -> Stats {
        let r = |c: &AtomicU64| c.load(Relaxed);
        Stats {
            connections: now.connections,
            channels: now.channels,
            offline_clients: now.offline_clients,
            offline_bytes: now.offline_bytes,
            connections_total: r(&self.connections_total),
            messages_in: r(&self.messages_in),
            bytes_in: r(&self.bytes_in),
            messages_out: r(&self.messages_out),
            bytes_out: r(&self.bytes_out),
            dropped: r(&self.dropped),
            buffered: r(&self.buffered),
            undelivered: r(&self.undelivered),
            decode_errors: r(&self.decode_errors),
            rate_limited: r(&self.rate_limited),
            relays_refused: r(&self.relays_refused),
            protocol_errors: r(&self.protocol_errors),
            refused: RefusedStats {
                bad_request: r(&self.refused_bad_request),
                unauthorized: r(&self.refused_unauthorized),
                forbidden: r(&self.refused_forbidden),
                duplicate_id: r(&self.refused_duplicate_id),
                capacity: r(&self.refused_capacity),
                shutting_down: r(&self.refused_shutting_down),
                per_ip: r(&self.refused_per_ip),
                busy: r(&self.refused_busy),
            },
            undelivered_by_reason: labelled(&self.undelivered_by, |i| {
                UndeliveredReason::ALL[i].label()
            }),
            disconnects: labelled(&self.disconnects_by, |i| DisconnectReason::LABELS[i]),
            cluster: None,
        }
    }
}
