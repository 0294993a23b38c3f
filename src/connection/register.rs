//! Registration: attaching to the id's mailbox here, claiming the id
//! cluster-wide, and the departure policy when the connection ends.

use std::sync::Arc;

use crate::{
    client::ClientConfig,
    cluster::Cluster,
    event::UndeliveredReason,
    node::{ClientState, CloseRequest, Departure, Leave},
    routing::Hub,
    DisconnectReason, DuplicatePolicy, SendError,
};

/// Registers the connection, attaching it to its id's mailbox; replaces
/// (4001) or refuses per the duplicate policy. In a cluster the id is then
/// [`claim`]ed.
pub(super) fn register(
    hub: &Hub,
    conn_id: u64,
    config: &ClientConfig,
) -> Result<Arc<ClientState>, DisconnectReason> {
    let refuse_duplicates = hub.config().duplicate_policy() == DuplicatePolicy::Refuse;
    let (state, replaced) = hub.node().attach(conn_id, &config.joining(), |connected| {
        if hub.is_shutting_down() {
            Err(DisconnectReason::Shutdown)
        } else if refuse_duplicates && connected {
            Err(DisconnectReason::Refused)
        } else {
            Ok(())
        }
    })?;
    if let Some(old) = replaced {
        old.request_close(CloseRequest::now(DisconnectReason::Replaced), false);
    }
    Ok(state)
}

/// Claims the id cluster-wide; puts what was buffered for it elsewhere
/// ahead of its queue. Refused (and unregistered) when the duplicate policy
/// refuses and another node has the id. When the cluster cannot be reached
/// the connection is served here unclaimed; the id is claimed when the
/// link is back.
pub(super) async fn claim(
    hub: &Hub,
    cluster: &dyn Cluster,
    state: &Arc<ClientState>,
) -> Result<(), DisconnectReason> {
    let refuse = hub.config().duplicate_policy() == DuplicatePolicy::Refuse;
    match cluster.claim(&hub.local(state), refuse).await {
        Ok(claimed) => {
            hub.claimed(state, Some(claimed.epoch), claimed.buffered);
            Ok(())
        }
        Err(SendError::NotConnected(_)) => {
            if let Departure::Removed { left } = hub.node().depart(state, Leave::Remove) {
                hub.report_undelivered(&state.id, left, UndeliveredReason::Disconnected);
            }
            Err(DisconnectReason::Refused)
        }
        Err(e) => {
            tracing::warn!(error = %e, "claim failed: served here until the cluster is back");
            Ok(())
        }
    }
}

/// Unregisters the connection. Its mailbox goes to the connection that
/// replaced it, or is kept while the client is away, or is given up
/// (kicked, shutdown, buffering off or full) with what it held reported.
pub(super) fn depart(hub: &Hub, state: &Arc<ClientState>, reason: &DisconnectReason) {
    let config = hub.config();
    let leave = match reason {
        DisconnectReason::Kicked | DisconnectReason::Shutdown => Leave::Remove,
        _ if config.offline_ttl().is_zero() => Leave::Remove,
        _ => Leave::Offline {
            ttl: config.offline_ttl(),
            max_offline: config.offline_max_clients(),
        },
    };
    if let Some(cluster) = hub.cluster() {
        // In a cluster the offline buffer lives in the cluster, so it
        // outlives this node: the mailbox goes, its contents with it.
        let away = matches!(leave, Leave::Offline { .. });
        let local = hub.local(state);
        if let Departure::Removed { left } = hub.node().depart(state, Leave::Remove) {
            cluster.release(local, away, left);
        }
        return;
    }
    let id = &state.id;
    match hub.node().depart(state, leave) {
        Departure::NotCurrent => {}
        Departure::Offline { trimmed } => {
            hub.report_undelivered(id, trimmed, UndeliveredReason::OfflineFull);
        }
        Departure::Removed { left } => {
            let why = match reason {
                DisconnectReason::Shutdown => UndeliveredReason::Shutdown,
                _ => UndeliveredReason::Disconnected,
            };
            hub.report_undelivered(id, left, why);
        }
    }
}
