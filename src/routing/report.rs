//! Accounting for what is not delivered: counters, events, and receipts to
//! the client a message was relayed from. Nothing is dropped silently.

use std::sync::Arc;

use super::Hub;
use crate::{
    event::UndeliveredReason,
    message::{receipt, status, Encoded},
    stats::bump,
    ClientId, PoolEvent, SendError,
};

impl Hub {
    /// Reports recipients skipped because their queue was full (counted
    /// as dropped by the push that failed).
    pub(super) fn report_dropped(&self, dropped: Vec<ClientId>, encoded: &Encoded) {
        for to in dropped {
            tracing::trace!(%to, "recipient's queue full: message skipped");
            self.emit(|| PoolEvent::Dropped {
                to,
                msg: encoded.msg.clone(),
            });
        }
    }

    /// Counts `n` undelivered messages, in all and by reason.
    fn count_undelivered(&self, reason: UndeliveredReason, n: u64) {
        let counters = self.counters();
        bump(&counters.undelivered, n);
        bump(&counters.undelivered_by[reason.index()], n);
    }

    /// Reports messages that will not be written to `to`: counted, an event
    /// each, and a receipt to the client each was relayed from.
    pub(crate) fn report_undelivered(
        &self,
        to: &ClientId,
        msgs: Vec<Arc<Encoded>>,
        reason: UndeliveredReason,
    ) {
        if msgs.is_empty() {
            return;
        }
        self.count_undelivered(reason, msgs.len() as u64);
        tracing::debug!(%to, count = msgs.len(), ?reason, "undelivered");
        for encoded in msgs {
            if let (Some(origin), Some(status)) = (&encoded.origin, reason.receipt_status()) {
                let text = format!("{} (to {to})", reason.describe());
                self.send_receipt(origin, receipt(&encoded.msg, status, &text));
            }
            self.emit(|| PoolEvent::Undelivered {
                to: to.clone(),
                msg: encoded.msg.clone(),
                reason,
            });
        }
    }

    /// Reports a direct message the cluster could not deliver: an event,
    /// and a receipt to the client it was relayed from.
    pub(super) fn report_undeliverable(&self, encoded: &Arc<Encoded>, to: &str, why: SendError) {
        let status = match why {
            SendError::QueueFull(_) => status::QUEUE_FULL,
            _ => status::NOT_CONNECTED,
        };
        if let Some(origin) = &encoded.origin {
            self.send_receipt(origin, receipt(&encoded.msg, status, &why.to_string()));
        }
        let (to, msg) = (ClientId::from(to), encoded.msg.clone());
        if let SendError::QueueFull(_) = why {
            // Counted as dropped by the push that failed.
            self.emit(|| PoolEvent::Dropped { to, msg });
        } else {
            let reason = UndeliveredReason::NotConnected;
            self.count_undelivered(reason, 1);
            self.emit(|| PoolEvent::Undelivered { to, msg, reason });
        }
    }

    /// Reports a broadcast that did not reach the other nodes (the cluster
    /// failed after accepting it): an `Undelivered` event to no one in
    /// particular (`to` is empty), counted.
    pub(super) fn report_lost(&self, encoded: &Arc<Encoded>) {
        self.count_undelivered(UndeliveredReason::ClusterUnavailable, 1);
        self.emit(|| PoolEvent::Undelivered {
            to: ClientId::from(""),
            msg: encoded.msg.clone(),
            reason: UndeliveredReason::ClusterUnavailable,
        });
    }
}
