//! The seam between this node and the rest of a cluster.
//!
//! Routing asks the local node first; what the node does not have (an id
//! connected elsewhere, the members of a channel on other nodes) it hands
//! to a cluster backend, the crate-private trait `Cluster`. A single-node
//! pool has none: routing pays one untaken branch for the seam
//! (`Option::None`), nothing else.
//!
//! A backend talks to the pool through `WsPool`'s crate-private
//! `cluster_*` methods (deliver what arrived, close a replaced client,
//! report a gap) and to the node only through its API, never its fields.
//! The Redis backend (`cluster::redis`, feature `redis`) is the one backend
//! today; what it does, and the keys and messages it uses, is in
//! `CLUSTER.md` in the repository.
//!
//! Messages cross processes as an `Envelope` (`proto/cluster.proto`): the
//! encoded `SendMsg` (the bytes binary clients get, so a message is
//! encoded once in the whole cluster), a wall-clock deadline, the origin client and node, a
//! per-node number (with the node, the message's name for dedupe), the
//! target (an id, channels in order, or everyone), and whether the origin
//! counts recipients. It is encoded once per send.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use prost::Message as _;

use crate::{
    client::ClientState,
    message::{now_ms, Encoded},
    proto::cluster::Envelope,
    ClientId, Delivery, SendError,
};

#[cfg(feature = "redis")]
pub mod redis;

/// Where an envelope goes.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum Target<'a> {
    /// One client id.
    Id(&'a str),
    /// The members of these channels.
    Channels(&'a [String]),
    /// Every connected client.
    All,
}

/// A cluster backend: what this node asks of the others. Every method
/// returns at once (the work happens on the backend's tasks); outcomes
/// that come later are reported through the pool (events and receipts).
pub(crate) trait Cluster: Send + Sync + 'static {
    /// This node's id in the cluster.
    fn node_id(&self) -> &str;

    /// The backend's counters.
    fn stats(&self) -> crate::ClusterStats;

    /// Routes `encoded` to client `to`, which is not on this node: to the
    /// node that owns it, or to its offline buffer. `Forwarded` means on
    /// its way; `NotConnected` comes back later as an `Undelivered` event
    /// (and a receipt to the client it was relayed from).
    ///
    /// # Errors
    /// [`SendError::Unavailable`] when the backend cannot reach the
    /// cluster now.
    fn send(&self, encoded: &Arc<Encoded>, to: &str) -> Result<Delivery, SendError>;

    /// Broadcasts `encoded` to the members of `channels` on the other
    /// nodes (this node's members are reached by the caller).
    ///
    /// # Errors
    /// [`SendError::Unavailable`] when the cluster cannot be reached.
    fn broadcast(&self, encoded: &Arc<Encoded>, channels: &[String]) -> Result<(), SendError>;

    /// Broadcasts `encoded` to every connected client on the other nodes.
    ///
    /// # Errors
    /// [`SendError::Unavailable`] when the cluster cannot be reached.
    fn broadcast_all(&self, encoded: &Arc<Encoded>) -> Result<(), SendError>;

    /// Broadcasts `encoded` to the other nodes' members of `channels`
    /// (everyone with `None`) and resolves to how many clients they queued
    /// or buffered it for. Nodes that have not answered within the
    /// backend's command timeout are not counted.
    ///
    /// # Errors
    /// [`SendError::Unavailable`] when the cluster cannot be reached.
    fn broadcast_counted<'a>(
        &'a self,
        encoded: &'a Arc<Encoded>,
        channels: Option<&'a [String]>,
    ) -> BoxFuture<'a, Result<usize, SendError>>;

    /// Is `id` connected to another live node? (The duplicate policy
    /// `Refuse` answers 409 before the upgrade when it is.)
    ///
    /// # Errors
    /// [`SendError::Unavailable`] when the cluster cannot be reached.
    fn connected_elsewhere<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, SendError>>;

    /// Closes (4002) the connection of `id` on whichever node has it, or
    /// forgets the id if it is away. Resolves to whether some node had it.
    ///
    /// # Errors
    /// [`SendError::Unavailable`] when the cluster cannot be reached.
    fn disconnect<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, SendError>>;

    /// The first member of `channel` on this node arrived (`true`) or the
    /// last left (`false`). Called in order, under the node's write lock:
    /// must not block.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn channel_changed(&self, channel: &str, present: bool);

    /// Claims connection `state`'s id for this node, cluster-wide (with
    /// `refuse`, only if no live node has it connected). Resolves to the
    /// claim number and what was buffered for the id elsewhere, oldest
    /// first.
    ///
    /// # Errors
    /// [`SendError::NotConnected`] when refused,
    /// [`SendError::Unavailable`] when the cluster cannot be reached.
    fn claim<'a>(
        &'a self,
        state: &'a ClientState,
        channels: Vec<String>,
        refuse: bool,
    ) -> BoxFuture<'a, Result<Claimed, SendError>>;

    /// Gives up connection `state`'s claim: `away` keeps the id (and
    /// `left`, what was still queued) buffered in the cluster for
    /// `offline_ttl`, still a member of `channels` for broadcasts;
    /// otherwise the id is forgotten and `left` reported. Returns at once.
    fn release(
        &self,
        state: Arc<ClientState>,
        channels: Vec<String>,
        away: bool,
        left: Vec<Arc<Encoded>>,
    );

    /// Tells the cluster that the channels of `state` changed (presence).
    fn channels_changed(&self, state: &ClientState, channels: Vec<String>);

    /// The clients connected to the other live nodes.
    ///
    /// # Errors
    /// [`SendError::Unavailable`] when the cluster cannot be reached.
    fn presence(&self) -> BoxFuture<'_, Result<Vec<Presence>, SendError>>;
}

/// What the cluster knows of a client on another node.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Presence {
    pub(crate) id: String,
    pub(crate) kind: String,
    pub(crate) channels: Vec<String>,
    pub(crate) connected_at: u64,
    pub(crate) node: String,
}

impl Presence {
    pub(crate) fn info(self) -> crate::ClientInfo {
        crate::ClientInfo::remote(self)
    }
}

/// An id claimed for a connection on this node.
pub(crate) struct Claimed {
    /// The claim number: grows with every claim of any id, cluster-wide.
    pub(crate) epoch: u64,
    /// What was buffered for the id in the cluster, oldest first.
    pub(crate) buffered: Vec<Arc<Encoded>>,
}

/// A boxed future, as the backend's async methods return.
pub(crate) type BoxFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Encodes `encoded` for another node: once per send, whatever the number
/// of channels it is published to.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn envelope(encoded: &Encoded, node: &str, id: u64, target: Target<'_>) -> Bytes {
    counted_envelope(encoded, node, id, target, false)
}

/// [`envelope`], asking the nodes that deliver it to count (`count`).
pub(crate) fn counted_envelope(
    encoded: &Encoded,
    node: &str,
    id: u64,
    target: Target<'_>,
    count: bool,
) -> Bytes {
    let remaining = encoded
        .expires_at
        .saturating_duration_since(tokio::time::Instant::now());
    let deadline_ms = now_ms().saturating_add(remaining.as_millis().min(i64::MAX as u128) as i64);
    let mut env = Envelope {
        // The recipients' bytes, encoded once: a clone of the shared buffer.
        msg: encoded.binary().clone(),
        deadline_ms,
        origin: encoded.origin.as_deref().unwrap_or_default().to_owned(),
        origin_node: node.to_owned(),
        id,
        count,
        ..Default::default()
    };
    match target {
        Target::Id(to) => env.to = to.to_owned(),
        Target::Channels(channels) => env.channels = channels.to_vec(),
        Target::All => env.all = true,
    }
    Bytes::from(env.encode_to_vec())
}

/// A message that arrived from another node, ready for local mailboxes:
/// its deadline turned back into an `Instant` on this node's clock, its
/// bytes kept as they came. `None` (logged) when the message does not
/// decode: another node, or whatever wrote to Redis, sent garbage.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn arrived(env: &mut Envelope) -> Option<Arc<Encoded>> {
    let left_ms = env.deadline_ms.saturating_sub(now_ms()).max(0) as u64;
    let origin = (!env.origin.is_empty()).then(|| ClientId::from(env.origin.as_str()));
    let ttl = Duration::from_millis(left_ms);
    match Encoded::decoded(std::mem::take(&mut env.msg), origin, ttl) {
        Ok(encoded) => Some(encoded),
        Err(e) => {
            let from = &env.origin_node;
            tracing::debug!(error = %e, %from, "undecodable message from another node");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SendMsg;

    /// An envelope carries the message, its origin and a deadline that
    /// survives the trip (within the clock's granularity).
    #[tokio::test]
    async fn envelope_round_trip() {
        let msg = SendMsg {
            msg: "hi".into(),
            priority: 3,
            ..Default::default()
        };
        let enc = Encoded::new(Arc::new(msg), Some("alice".into()), Duration::from_secs(30));
        let bytes = envelope(&enc, "node-a", 7, Target::Id("bob"));
        let mut env = Envelope::decode(bytes).unwrap();
        assert_eq!((env.to.as_str(), env.id), ("bob", 7));
        assert_eq!(env.origin_node, "node-a");
        let back = arrived(&mut env).unwrap();
        assert_eq!(back.binary(), enc.binary(), "the bytes travel as they are");
        assert_eq!(back.msg.msg, "hi");
        assert_eq!(back.priority(), 3);
        assert_eq!(back.origin.as_deref(), Some("alice"));
        let left = back.expires_at - tokio::time::Instant::now();
        assert!(left > Duration::from_secs(29) && left <= Duration::from_secs(30));
    }
}
