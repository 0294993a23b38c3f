//! Clients and channels: lookups here and cluster-wide, join and leave,
//! and what the cluster's presence records of this node's clients.

use std::sync::Arc;

use super::Hub;
use crate::{
    cluster::Local,
    event::UndeliveredReason,
    info::epoch_ms,
    message::Encoded,
    names::check_channel,
    node::{ClientState, CloseRequest, JoinRefused},
    ClientId, ClientInfo, DisconnectReason, JoinError, SendError,
};

impl Hub {
    /// `state` as the cluster sees it.
    pub(crate) fn local(&self, state: &ClientState) -> Local {
        Local {
            id: state.id.clone(),
            conn: state.conn_id,
            kind: state.kind.clone(),
            connected_at: epoch_ms(state.connected_at),
            channels: self.node.channels_of(state),
            epoch: state.epoch(),
        }
    }

    /// Connection `state` holds its id under claim `epoch` (when given);
    /// what the cluster held for the id goes ahead of its queue, and what
    /// does not fit is reported.
    pub(crate) fn claimed(
        &self,
        state: &ClientState,
        epoch: Option<u64>,
        buffered: Vec<Arc<Encoded>>,
    ) {
        if let Some(epoch) = epoch {
            state.set_epoch(epoch);
        }
        let rest = self.node.prepend(state, buffered);
        self.report_undelivered(&state.id, rest, UndeliveredReason::OfflineFull);
    }

    /// Adds `channel` to connection `state`; `Ok(false)` if it was a member.
    pub(crate) fn join(&self, state: &ClientState, channel: &str) -> Result<bool, JoinError> {
        let c = &self.config;
        check_channel(channel, c.max_channel_len()).map_err(JoinError::InvalidChannel)?;
        let max = c.max_channels_per_client();
        let joined = (self.node.join(state, channel, max)).map_err(|e| match e {
            JoinRefused::NotRegistered => JoinError::NotConnected,
            JoinRefused::Full => JoinError::TooManyChannels(max),
        })?;
        if joined {
            self.presence_changed(state);
        }
        Ok(joined)
    }

    /// Removes `channel` from connection `state`; `false` if not a member.
    pub(crate) fn leave(&self, state: &ClientState, channel: &str) -> bool {
        let left = self.node.leave(state, channel);
        if left {
            self.presence_changed(state);
        }
        left
    }

    /// Tells the cluster (if any) the channels of `state` changed.
    fn presence_changed(&self, state: &ClientState) {
        if let Some(cluster) = self.cluster() {
            cluster.channels_changed(&self.local(state));
        }
    }

    /// Joins or leaves `channel` for the client `id` if it is connected
    /// here; `None` if it is not.
    pub(crate) fn membership_here(
        &self,
        id: &str,
        channel: &str,
        join: bool,
    ) -> Option<Result<bool, JoinError>> {
        let state = self.node.conn(id)?;
        Some(match join {
            true => self.join(&state, channel),
            false => Ok(self.leave(&state, channel)),
        })
    }

    /// Closes (4002) the connection of `id` here, if any.
    pub(crate) fn disconnect_here(&self, id: &str) -> bool {
        match self.node.conn(id) {
            Some(state) => {
                state.request_close(CloseRequest::now(DisconnectReason::Kicked), false);
                true
            }
            None => false,
        }
    }

    /// Runtime info of connection `state`.
    pub(crate) fn info(&self, state: &ClientState) -> ClientInfo {
        state.info(self.node.channels_of(state))
    }

    fn node_id(&self) -> Option<String> {
        self.cluster().map(|c| c.node_id().to_owned())
    }

    /// Every client connected to any node (this node's first).
    pub(crate) async fn cluster_clients(&self) -> Result<Vec<ClientInfo>, SendError> {
        let mut list = self.node.clients();
        if let Some(cluster) = self.cluster() {
            let node = self.node_id();
            for info in list.iter_mut() {
                info.node = node.clone();
            }
            list.extend(cluster.presence().await?.into_iter().map(|p| p.info()));
        }
        Ok(list)
    }

    /// The client `id` wherever it is connected in the cluster.
    pub(crate) async fn cluster_client(&self, id: &str) -> Result<Option<ClientInfo>, SendError> {
        if let Some(state) = self.node.conn(id) {
            let mut info = self.info(&state);
            info.node = self.node_id();
            return Ok(Some(info));
        }
        let all = self.cluster_clients().await?;
        Ok(all.into_iter().find(|c| *c.id == *id))
    }

    /// The ids in `channel` on every node of the cluster.
    pub(crate) async fn cluster_channel_members(
        &self,
        channel: &str,
    ) -> Result<Vec<ClientId>, SendError> {
        let mut ids = self.node.members(channel);
        if let Some(cluster) = self.cluster() {
            let others = cluster.presence().await?;
            ids.extend(
                (others.into_iter())
                    .filter(|p| p.channels.iter().any(|c| c == channel))
                    .map(|p| ClientId::from(p.id.as_str())),
            );
        }
        Ok(ids)
    }

    /// The connection of `id` here.
    pub(crate) fn conn(&self, id: &str) -> Option<Arc<ClientState>> {
        self.node.conn(id)
    }
}
