//! Reaching clients from the application: by id, by channel, everyone;
//! the counted cluster-wide forms; kick, join and leave on any node.

use std::sync::Arc;

use super::{Hub, SendOptions};
use crate::{
    message::Encoded,
    names::check_channel,
    node::{FanOut, PushError},
    BroadcastError, ClientId, Delivery, JoinError, SendError, SendMsg,
};

/// The `send` error for a push that failed.
pub(crate) fn push_error(e: PushError, to: &str) -> SendError {
    match e {
        PushError::Full => SendError::QueueFull(ClientId::from(to)),
        PushError::Closed => SendError::NotConnected(ClientId::from(to)),
    }
}

impl Hub {
    pub(crate) fn send(&self, msg: SendMsg, options: &SendOptions) -> Result<Delivery, SendError> {
        if msg.to_client_id.is_empty() {
            return Err(SendError::EmptyTarget);
        }
        let encoded = Encoded::new(Arc::new(msg), None, self.ttl(options));
        let to = &encoded.msg.to_client_id;
        match self.node.push(to, &encoded) {
            Some(pushed) => pushed.map_err(|e| push_error(e, to)),
            None => self.send_remote(&encoded, to),
        }
    }

    /// `to` is not on this node: the cluster's, if any.
    pub(super) fn send_remote(
        &self,
        encoded: &Arc<Encoded>,
        to: &str,
    ) -> Result<Delivery, SendError> {
        match self.cluster() {
            None => Err(SendError::NotConnected(ClientId::from(to))),
            Some(cluster) => cluster.send(encoded, to),
        }
    }

    pub(crate) fn broadcast(
        &self,
        msg: SendMsg,
        options: &SendOptions,
    ) -> Result<usize, BroadcastError> {
        if msg.channel.is_empty() {
            return Err(BroadcastError::NoChannel);
        }
        let encoded = Encoded::new(Arc::new(msg), None, self.ttl(options));
        let channels = &encoded.msg.channel;
        let local = self.fan_out(&encoded, "", channels, &[]).recipients;
        match self
            .cluster()
            .map(|c| c.broadcast(&encoded, Some(channels)))
        {
            Some(Err(e)) => Err(BroadcastError::Unavailable {
                local,
                reason: e.to_string(),
            }),
            _ => Ok(local),
        }
    }

    pub(crate) fn broadcast_all(&self, msg: SendMsg, options: &SendOptions) -> usize {
        self.broadcast_all_encoded(&Encoded::new(Arc::new(msg), None, self.ttl(options)))
    }

    pub(super) fn broadcast_all_encoded(&self, encoded: &Arc<Encoded>) -> usize {
        let local = self.push_all(encoded);
        if let Some(cluster) = self.cluster() {
            if let Err(e) = cluster.broadcast(encoded, None) {
                tracing::warn!(error = %e, "broadcast_all reached this node only");
            }
        }
        local
    }

    /// Queues `encoded` for every client connected here; reports full
    /// queues. Returns how many it reached.
    pub(super) fn push_all(&self, encoded: &Arc<Encoded>) -> usize {
        let out = self.node.push_all(encoded);
        self.report_dropped(out.dropped, encoded);
        out.recipients
    }

    /// Delivers to `to` (if here) and to this node's members of `channels`
    /// not in `skip`, each once; reports full queues.
    pub(super) fn fan_out(
        &self,
        encoded: &Arc<Encoded>,
        to: &str,
        channels: &[String],
        skip: &[String],
    ) -> FanOut {
        let mut out = self.node.fan_out(encoded, to, channels, skip);
        self.report_dropped(std::mem::take(&mut out.dropped), encoded);
        out
    }

    /// A broadcast to `msg.channel` (`by_channel`) or to everyone, counted
    /// on every node.
    pub(crate) async fn broadcast_counted(
        &self,
        msg: SendMsg,
        by_channel: bool,
    ) -> Result<usize, BroadcastError> {
        if by_channel && msg.channel.is_empty() {
            return Err(BroadcastError::NoChannel);
        }
        let encoded = Encoded::new(Arc::new(msg), None, self.config.message_ttl());
        let targets = by_channel.then_some(encoded.msg.channel.as_slice());
        let local = match targets {
            Some(list) => self.fan_out(&encoded, "", list, &[]).recipients,
            None => self.push_all(&encoded),
        };
        let Some(cluster) = self.cluster() else {
            return Ok(local);
        };
        match cluster.broadcast_counted(&encoded, targets).await {
            Ok(remote) => Ok(local + remote),
            Err(e) => Err(BroadcastError::Unavailable {
                local,
                reason: e.to_string(),
            }),
        }
    }

    /// Closes (4002) `id` wherever it is in the cluster; whether some node
    /// had it connected or away.
    pub(crate) async fn disconnect_anywhere(&self, id: &str) -> Result<bool, SendError> {
        if self.disconnect_here(id) {
            return Ok(true);
        }
        match self.cluster() {
            Some(cluster) => cluster.disconnect(id).await,
            None => Ok(false),
        }
    }

    /// Adds (`join`) or removes `channel` for `id` wherever it is
    /// connected in the cluster.
    pub(crate) async fn membership_anywhere(
        &self,
        id: &str,
        channel: &str,
        join: bool,
    ) -> Result<bool, JoinError> {
        check_channel(channel, self.config.max_channel_len()).map_err(JoinError::InvalidChannel)?;
        if let Some(here) = self.membership_here(id, channel, join) {
            return here;
        }
        let Some(cluster) = self.cluster() else {
            return Err(JoinError::NotConnected);
        };
        match cluster.membership(id, channel, join).await {
            Ok(Some(answer)) => answer,
            Ok(None) => Err(JoinError::NotConnected),
            Err(e) => Err(JoinError::Unavailable(e.to_string())),
        }
    }
}
