//! The pool's numbers for Prometheus (or any exporter), through the
//! [`metrics`](https://docs.rs/metrics) facade: feature `metrics`.
//!
//! Install a recorder (e.g. `metrics-exporter-prometheus`), then build the
//! pool: every series below without a label exists from then on, at 0.
//! The pool pushes its counters and gauges into the recorder every second
//! once it has a connection, and whenever [`WsPool::export_metrics`](crate::WsPool::export_metrics) is
//! called (a scrape handler calls it first, so what it serves is current);
//! the queue delay is recorded as each message is taken for its socket.
//!
//! | name | type | what |
//! |---|---|---|
//! | `wspool_connections` | gauge | connections registered now |
//! | `wspool_offline_clients` | gauge | clients away now, their messages buffered |
//! | `wspool_channels` | gauge | channels with at least one member now |
//! | `wspool_messages_in_total` | counter | data frames received from clients |
//! | `wspool_messages_out_total` | counter | data frames written to clients |
//! | `wspool_bytes_in_total` | counter | payload bytes received |
//! | `wspool_bytes_out_total` | counter | payload bytes written |
//! | `wspool_dropped_total` | counter | messages refused because a queue or offline buffer was full |
//! | `wspool_undelivered_total{reason}` | counter | queued messages not written, by [`UndeliveredReason::label`](crate::UndeliveredReason::label) |
//! | `wspool_handshakes_refused_total{reason}` | counter | handshakes refused: `bad_request`, `unauthorized`, `forbidden`, `duplicate_id`, `capacity`, `shutting_down`, `per_ip`, `busy` |
//! | `wspool_disconnects_total{reason}` | counter | connections ended, by [`DisconnectReason::label`](crate::DisconnectReason::label) |
//! | `wspool_queue_delay_seconds` | histogram | from queued to taken for the socket, per message and recipient |
//!
//! A labelled series appears once its reason has occurred. Give the
//! histogram buckets, or the Prometheus exporter renders a summary:
//!
//! ```
//! use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
//!
//! let handle = PrometheusBuilder::new()
//!     .set_buckets_for_metric(
//!         Matcher::Full("wspool_queue_delay_seconds".into()),
//!         wspool::metrics::QUEUE_DELAY_BUCKETS,
//!     )
//!     .unwrap()
//!     .install_recorder()
//!     .unwrap();
//! let pool = wspool::WsPool::new();
//! pool.export_metrics();
//! assert!(handle.render().contains("wspool_connections 0"));
//! ```

use std::sync::Arc;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Histogram,
    Unit,
};
use tokio::time::Instant;

use crate::{message::Encoded, Stats};

/// Buckets for `wspool_queue_delay_seconds`: 100 µs to 10 s.
pub const QUEUE_DELAY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Describes every series to the recorder (once per pool built).
pub(crate) fn describe() {
    describe_gauge!(
        "wspool_connections",
        Unit::Count,
        "Connections registered now."
    );
    describe_gauge!(
        "wspool_offline_clients",
        Unit::Count,
        "Clients away now, their messages buffered."
    );
    describe_gauge!(
        "wspool_channels",
        Unit::Count,
        "Channels with at least one member now."
    );
    describe_counter!(
        "wspool_messages_in_total",
        Unit::Count,
        "Data frames received from clients."
    );
    describe_counter!(
        "wspool_messages_out_total",
        Unit::Count,
        "Data frames written to clients."
    );
    describe_counter!(
        "wspool_bytes_in_total",
        Unit::Bytes,
        "Payload bytes received from clients."
    );
    describe_counter!(
        "wspool_bytes_out_total",
        Unit::Bytes,
        "Payload bytes written to clients."
    );
    describe_counter!(
        "wspool_dropped_total",
        Unit::Count,
        "Messages refused: a queue or offline buffer was full."
    );
    describe_counter!(
        "wspool_undelivered_total",
        Unit::Count,
        "Queued messages not written, by reason."
    );
    describe_counter!(
        "wspool_handshakes_refused_total",
        Unit::Count,
        "Handshakes refused, by reason."
    );
    describe_counter!(
        "wspool_disconnects_total",
        Unit::Count,
        "Connections ended, by reason."
    );
    describe_histogram!(
        "wspool_queue_delay_seconds",
        Unit::Seconds,
        "From queued to taken for the socket, per message and recipient."
    );
}

/// The queue-delay histogram, registered once per node with the recorder
/// installed when the pool was built (a lookup per batch would cost more
/// than the recording).
pub(crate) fn queue_delay() -> Histogram {
    histogram!("wspool_queue_delay_seconds")
}

/// Records how long each message of a batch waited in its queue.
pub(crate) fn queue_delays(delays: &Histogram, batch: &[Arc<Encoded>], now: Instant) {
    for m in batch {
        delays.record(now.saturating_duration_since(m.queued_at).as_secs_f64());
    }
}

/// Pushes the numbers of `s` into the installed recorder.
pub(crate) fn export(s: &Stats) {
    gauge!("wspool_connections").set(s.connections as f64);
    gauge!("wspool_offline_clients").set(s.offline_clients as f64);
    gauge!("wspool_channels").set(s.channels as f64);
    counter!("wspool_messages_in_total").absolute(s.messages_in);
    counter!("wspool_messages_out_total").absolute(s.messages_out);
    counter!("wspool_bytes_in_total").absolute(s.bytes_in);
    counter!("wspool_bytes_out_total").absolute(s.bytes_out);
    counter!("wspool_dropped_total").absolute(s.dropped);
    for (reason, n) in &s.undelivered_by_reason {
        counter!("wspool_undelivered_total", "reason" => *reason).absolute(*n);
    }
    for (reason, n) in &s.disconnects {
        counter!("wspool_disconnects_total", "reason" => *reason).absolute(*n);
    }
    let r = &s.refused;
    for (reason, n) in [
        ("bad_request", r.bad_request),
        ("unauthorized", r.unauthorized),
        ("forbidden", r.forbidden),
        ("duplicate_id", r.duplicate_id),
        ("capacity", r.capacity),
        ("shutting_down", r.shutting_down),
        ("per_ip", r.per_ip),
        ("busy", r.busy),
    ] {
        if n > 0 {
            counter!("wspool_handshakes_refused_total", "reason" => reason).absolute(n);
        }
    }
}
