//! The pool's one background task: the work that is due by the clock rather
//! than by traffic.
//!
//! Every tick it expires queued and buffered messages past their time to
//! live, forgets clients that have been away past `offline_ttl`, and closes
//! (4008) clients whose queue has stayed full for `slow_client_timeout`. It
//! starts with the first connection and holds only a weak reference to the
//! pool, so it stops when the last `WsPool` handle is dropped.
//!
//! A tick costs the mailboxes holding messages plus the clients whose
//! window ended, not the number of clients: the node keeps a list of the
//! mailboxes that were pushed to since they were last seen empty, and the
//! clients away ordered by the end of their window (`Node::sweep`). Over
//! 100,000 idle connections a tick went from 5.9 ms to 63 ns (criterion
//! `sweep_idle`, BENCHMARKS.md).

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use tokio::time::{Instant, MissedTickBehavior};

use crate::{
    client::CloseRequest, event::UndeliveredReason, pool::Inner, DisconnectReason, WsPool,
};

/// Starts the sweeper unless it is running.
pub(crate) fn ensure_started(pool: &WsPool) {
    if !pool.node().claim_sweeper() {
        return;
    }
    let period = period(pool);
    let weak = Arc::downgrade(&pool.inner);
    tokio::spawn(run(weak, period));
    #[cfg(feature = "metrics")]
    tokio::spawn(crate::metrics::run(Arc::downgrade(&pool.inner)));
}

/// A fraction of the shortest deadline, between 10 ms and 1 s.
fn period(pool: &WsPool) -> Duration {
    let c = pool.config();
    let mut shortest = c.message_ttl().min(c.slow_client_timeout());
    if !c.offline_ttl().is_zero() {
        shortest = shortest.min(c.offline_ttl());
    }
    (shortest / 8).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

async fn run(weak: Weak<Inner>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        sweep(&WsPool { inner }, Instant::now());
    }
}

/// One pass: asks the node what is due, then acts and reports.
pub(crate) fn sweep(pool: &WsPool, now: Instant) {
    let due = pool.node().sweep(now, pool.config().slow_client_timeout());
    for conn in due.slow {
        let close = CloseRequest {
            reason: DisconnectReason::TooSlow,
            flush: false,
        };
        if conn.request_close(close, false) {
            tracing::debug!(id = %conn.id, "queue stayed full: closing with 4008");
        }
    }
    for (id, msgs) in due.expired {
        pool.report_undelivered(&id, msgs, UndeliveredReason::Expired);
    }
    for (id, left) in due.gone {
        pool.report_undelivered(&id, left, UndeliveredReason::OfflineTimeout);
    }
}
