//! The background tasks the hub owns: the work due by the clock rather
//! than by traffic, and (feature `metrics`) the export tick.
//!
//! The sweeper, every tick, expires queued and buffered messages past their
//! time to live, forgets clients that have been away past `offline_ttl`,
//! and closes (4008) clients whose queue has stayed full for
//! `slow_client_timeout`. Both tasks start with the first connection and
//! hold only a weak reference to the hub, so they stop when the last
//! handle on the pool is dropped (as mini-redis's purge task does with its
//! `DbDropGuard`). Nobody else holds the hub from a task.
//!
//! A tick costs the mailboxes holding messages plus the clients whose
//! window ended, not the number of clients: the node keeps a list of the
//! mailboxes that were pushed to since they were last seen empty, and the
//! clients away ordered by the end of their window (`Node::sweep`). Over
//! 100,000 idle connections a tick went from 5.9 ms to 63 ns (criterion
//! `sweep_idle`, BENCHMARKS.md).

use std::{
    sync::{atomic::Ordering, Arc, Weak},
    time::Duration,
};

use tokio::time::{Instant, MissedTickBehavior};

use super::Hub;
use crate::{event::UndeliveredReason, node::CloseRequest, DisconnectReason};

impl Hub {
    /// Starts the background tasks unless they are running.
    pub(super) fn tasks(self: &Arc<Self>) {
        if self.tasks_started.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(sweeper(Arc::downgrade(self), self.sweep_period()));
        #[cfg(feature = "metrics")]
        tokio::spawn(metrics_tick(Arc::downgrade(self)));
    }

    /// A fraction of the shortest deadline, between 10 ms and 1 s.
    fn sweep_period(&self) -> Duration {
        let c = &self.config;
        let mut shortest = c.message_ttl().min(c.slow_client_timeout());
        if !c.offline_ttl().is_zero() {
            shortest = shortest.min(c.offline_ttl());
        }
        (shortest / 8).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    /// One pass: asks the node what is due, then acts and reports.
    pub(crate) fn sweep(&self, now: Instant) {
        let due = self.node.sweep(now, self.config.slow_client_timeout());
        for conn in due.slow {
            if conn.request_close(CloseRequest::now(DisconnectReason::TooSlow), false) {
                tracing::debug!(id = %conn.id, "queue stayed full: closing with 4008");
            }
        }
        for (id, msgs) in due.expired {
            self.report_undelivered(&id, msgs, UndeliveredReason::Expired);
        }
        for (id, left) in due.gone {
            self.report_undelivered(&id, left, UndeliveredReason::OfflineTimeout);
        }
    }
}

async fn sweeper(weak: Weak<Hub>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(hub) = weak.upgrade() else { return };
        hub.sweep(Instant::now());
    }
}

/// Exports the pool's numbers every second while the pool lives.
#[cfg(feature = "metrics")]
async fn metrics_tick(weak: Weak<Hub>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(hub) = weak.upgrade() else { return };
        crate::metrics::export(&hub.stats());
    }
}
