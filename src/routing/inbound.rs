//! The seam's inbound side: the hub is the [`Handler`] every engine
//! delivers to. What arrives from other nodes is routed here by the same
//! code as local traffic.

use std::sync::Arc;

use super::{push_error, Hub};
use crate::{
    cluster::{Arrival, Handler, Link, Local, Reach},
    event::UndeliveredReason,
    message::Encoded,
    node::CloseRequest,
    ClientId, DisconnectReason, JoinError, NodeInfo, PoolEvent, SendError,
};

impl Handler for Hub {
    fn deliver(&self, arrival: Arrival<'_>) -> usize {
        let Arrival {
            msg,
            reach,
            clients,
        } = arrival;
        if msg.expires_at <= tokio::time::Instant::now() {
            let to = match reach {
                Reach::Id { id, .. } => id,
                _ => "",
            };
            let to = ClientId::from(to);
            self.report_undelivered(&to, vec![msg], UndeliveredReason::Expired);
            return 0;
        }
        match reach {
            Reach::Id { id, epoch } => match self.node.push_fenced(id, epoch, &msg) {
                Some(Ok(_)) => 1,
                Some(Err(e)) => {
                    self.report_undeliverable(&msg, id, push_error(e, id));
                    0
                }
                // Not here (any more), or here under an older claim: the
                // cluster knows where it is now.
                None => {
                    if let Err(e) = self.send_remote(&msg, id) {
                        self.report_undeliverable(&msg, id, e);
                    }
                    0
                }
            },
            Reach::All if clients => self.push_all(&msg),
            Reach::All => 0,
            Reach::Channels { these, skip } if clients => {
                self.fan_out(&msg, "", these, skip).recipients
            }
            Reach::Channels { these, skip } => {
                self.node.notify_subscribers(&msg, these, skip);
                0
            }
        }
    }

    fn replaced(&self, id: &str, epoch: u64) {
        if let Some(state) = self.node.conn(id) {
            if state.epoch() < epoch {
                state.request_close(CloseRequest::now(DisconnectReason::Replaced), false);
            }
        }
    }

    fn disconnect(&self, id: &str) -> bool {
        self.disconnect_here(id)
    }

    fn membership(&self, id: &str, channel: &str, join: bool) -> Option<Result<bool, JoinError>> {
        self.membership_here(id, channel, join)
    }

    fn reclaimed(&self, client: &Local, epoch: Option<u64>, buffered: Vec<Arc<Encoded>>) {
        let current = self.node.conn(&client.id);
        let Some(state) = current.filter(|s| s.conn_id == client.conn) else {
            // The connection ended meanwhile: what was held for it goes
            // where the id is now.
            for msg in buffered {
                if let Err(e) = self.send_remote(&msg, &client.id) {
                    self.report_undeliverable(&msg, &client.id, e);
                }
            }
            return;
        };
        self.claimed(&state, epoch, buffered);
    }

    fn undelivered(&self, to: &ClientId, msgs: Vec<Arc<Encoded>>, reason: UndeliveredReason) {
        self.report_undelivered(to, msgs, reason);
    }

    fn undeliverable(&self, msg: &Arc<Encoded>, to: &str, why: SendError) {
        match to {
            "" => self.report_lost(msg),
            to => self.report_undeliverable(msg, to, why),
        }
    }

    fn link(&self, change: Link) {
        self.emit(|| match change {
            Link::Down => PoolEvent::ClusterDown,
            Link::Up { closed } => PoolEvent::ClusterUp { closed },
            Link::Gap { channel, missed } => PoolEvent::ClusterGap { channel, missed },
            Link::DataLost => PoolEvent::ClusterDataLost,
        });
    }

    fn locals(&self) -> Vec<Local> {
        self.node.online().iter().map(|s| self.local(s)).collect()
    }

    #[cfg(feature = "redis")]
    fn is_local(&self, id: &str) -> bool {
        self.node.is_connected(id)
    }

    fn channels(&self) -> Vec<String> {
        self.node.channel_names()
    }

    fn report(&self) -> NodeInfo {
        Hub::report(self)
    }
}
