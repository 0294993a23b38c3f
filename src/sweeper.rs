//! The pool's one background task: the work that is due by the clock rather
//! than by traffic.
//!
//! Every tick it expires queued and buffered messages past their time to
//! live, forgets clients that have been away past `offline_ttl`, and closes
//! (4008) clients whose queue has stayed full for `slow_client_timeout`. It
//! starts with the first connection and holds only a weak reference to the
//! pool, so it stops when the last `WsPool` handle is dropped.

use std::{
    sync::{atomic::Ordering, Arc, Weak},
    time::Duration,
};

use tokio::time::{Instant, MissedTickBehavior};

use crate::{
    client::{ClientState, CloseRequest},
    event::UndeliveredReason,
    pool::Inner,
    ClientId, DisconnectReason, WsPool,
};

/// Starts the sweeper unless it is running.
pub(crate) fn ensure_started(pool: &WsPool) {
    if pool.inner.sweeper_started.swap(true, Ordering::AcqRel) {
        return;
    }
    let period = period(pool);
    let weak = Arc::downgrade(&pool.inner);
    tokio::spawn(run(weak, period));
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

/// One pass over the registry.
pub(crate) fn sweep(pool: &WsPool, now: Instant) {
    let limits = &pool.inner.limits;
    let slow_after = pool.config().slow_client_timeout();
    let mut expired: Vec<(ClientId, Vec<_>)> = Vec::new();
    let mut slow: Vec<Arc<ClientState>> = Vec::new();
    let mut offline_due = false;
    {
        let registry = pool.inner.registry.read();
        for (id, entry) in registry.entries() {
            let mut out = Vec::new();
            entry.mailbox.expire(now, limits, &mut out);
            if !out.is_empty() {
                expired.push((id.clone(), out));
            }
            match &entry.conn {
                Some(conn) => {
                    if entry
                        .mailbox
                        .full_since()
                        .is_some_and(|t| now.duration_since(t) >= slow_after)
                    {
                        slow.push(conn.clone());
                    }
                }
                None => offline_due |= entry.offline_until.is_some_and(|t| t <= now),
            }
        }
    }
    for conn in slow {
        let close = CloseRequest {
            reason: DisconnectReason::TooSlow,
            flush: false,
        };
        if conn.request_close(close, false) {
            tracing::debug!(id = %conn.id, "queue stayed full: closing with 4008");
        }
    }
    for (id, msgs) in expired {
        pool.report_undelivered(&id, msgs, UndeliveredReason::Expired);
    }
    if offline_due {
        let gone = pool
            .inner
            .registry
            .write()
            .expire_offline(Some(now), limits);
        for (id, left) in gone {
            pool.report_undelivered(&id, left, UndeliveredReason::OfflineTimeout);
        }
    }
}
