//! What a client sends, relayed (PROTOCOL.md section 3), and the receipts
//! that tell it what could not be done.

use std::sync::Arc;

use super::{push_error, Hub};
use crate::{
    config::RelayPolicy,
    message::{receipt, status, Encoded},
    stats::bump,
    ClientId, PoolEvent, SendError, SendMsg,
};

impl Hub {
    /// Relays what client `sender` sent, with receipts.
    pub(crate) fn relay(&self, sender: &ClientId, msg: Arc<SendMsg>) {
        let config = self.config();
        let policy = config.relay_policy();
        if policy == RelayPolicy::Disabled {
            return;
        }
        let max_channels = config.max_channels_per_message();
        if msg.channel.len() > max_channels {
            bump(&self.counters().relays_refused, 1);
            let why = format!(
                "{} channels, more than the maximum of {max_channels} per message: not relayed",
                msg.channel.len()
            );
            self.send_receipt(sender, receipt(&msg, status::REFUSED, &why));
            return;
        }
        let encoded = Encoded::new(msg, Some(sender.clone()), config.message_ttl());
        let msg = &encoded.msg;
        if msg.to_client_id.is_empty() && msg.channel.is_empty() {
            if policy == RelayPolicy::TargetedOrAll {
                self.broadcast_all_encoded(&encoded);
            }
            return;
        }
        let out = self.fan_out(&encoded, &msg.to_client_id, &msg.channel, &[]);
        let mut direct = out
            .direct
            .map(|r| r.map_err(|e| push_error(e, &msg.to_client_id)));
        if direct.is_none() && !msg.to_client_id.is_empty() {
            direct = Some(self.send_remote(&encoded, &msg.to_client_id));
        }
        if let (Some(cluster), false) = (self.cluster(), msg.channel.is_empty()) {
            if let Err(e) = cluster.broadcast(&encoded, Some(&msg.channel)) {
                let why = format!("not relayed to other nodes: {e}");
                self.send_receipt(sender, receipt(msg, status::NOT_CONNECTED, &why));
            }
        }
        let (status, reason) = match direct {
            Some(Err(SendError::NotConnected(_))) => {
                (status::NOT_CONNECTED, "recipient not connected")
            }
            Some(Err(SendError::Unavailable(_))) => {
                (status::NOT_CONNECTED, "recipient's node unreachable")
            }
            Some(Err(SendError::QueueFull(to))) => {
                self.emit(|| PoolEvent::Dropped {
                    to,
                    msg: msg.clone(),
                });
                (status::QUEUE_FULL, "recipient's queue full: dropped")
            }
            _ => return,
        };
        self.send_receipt(sender, receipt(msg, status, reason));
    }

    /// Tells client `sender` that a frame it sent was not read (undecodable,
    /// or over a rate limit): a receipt with `status` and no identifying
    /// fields, since the frame's were not read.
    pub(crate) fn refuse_frame(&self, sender: &ClientId, status: i32, reason: &str) {
        let frame = SendMsg {
            from_client_id: sender.to_string(),
            ..Default::default()
        };
        self.send_receipt(sender, receipt(&frame, status, reason));
    }

    /// Queues a receipt for client `to` (buffered if it is away; forwarded
    /// if it is on another node); one that does not fit is counted as
    /// dropped.
    pub(super) fn send_receipt(&self, to: &str, receipt: SendMsg) {
        let encoded = Encoded::new(Arc::new(receipt), None, self.config().message_ttl());
        if self.node().push(to, &encoded).is_none() {
            if let Some(cluster) = self.cluster() {
                let _ = cluster.send(&encoded, to);
            }
        }
    }
}
