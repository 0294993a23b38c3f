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
