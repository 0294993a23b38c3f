//! The chat example's `GET /metrics` (feature `metrics`): scraped before
//! and after real traffic over real sockets, the numbers move as they
//! should (`cargo test --features metrics`).
#![cfg(feature = "metrics")]

mod common;

#[allow(dead_code)]
#[path = "../examples/chat.rs"]
mod chat;

use clap::Parser;
use common::*;

/// The value of the series `series` (name and labels, as rendered), if
/// present.
fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let (name, v) = line.rsplit_once(' ')?;
        (name == series).then(|| v.parse().ok())?
    })
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let (status, body) = http(addr, "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    body
}

/// Counters and gauges exist at 0 before any traffic and move with it;
/// labelled series appear when their reason occurs; the queue delay is a
/// histogram with buckets.
#[tokio::test]
async fn metrics_move_with_traffic() {
    chat::prometheus();
    let args = chat::Args::parse_from(["chat"]);
    let pool = chat::pool(&args);
    let addr = serve(chat::app(&pool, &args)).await;

    let before = scrape(addr).await;
    assert_eq!(value(&before, "wspool_connections"), Some(0.0));
    let msgs_in = value(&before, "wspool_messages_in_total").expect("exists at first scrape");
    let msgs_out = value(&before, "wspool_messages_out_total").expect("exists at first scrape");
    let delays = value(&before, "wspool_queue_delay_seconds_count").unwrap_or(0.0);
    for series in [
        "wspool_bytes_in_total",
        "wspool_dropped_total",
        "wspool_channels",
    ] {
        assert!(value(&before, series).is_some(), "{series} at first scrape");
    }

    let mut alice = connect(&pool, addr, "alice_room").await;
    let mut bob = connect(&pool, addr, "bob_room").await;
    for i in 0..3 {
        alice.send(&text_msg("bob", &[], &format!("m{i}"))).await;
        assert_eq!(bob.recv().await.msg, format!("m{i}"));
    }
    let during = scrape(addr).await;
    assert_eq!(value(&during, "wspool_connections"), Some(2.0));
    assert_eq!(value(&during, "wspool_channels"), Some(1.0));
    assert_eq!(
        value(&during, "wspool_messages_in_total"),
        Some(msgs_in + 3.0)
    );
    assert_eq!(
        value(&during, "wspool_messages_out_total"),
        Some(msgs_out + 3.0)
    );
    assert!(value(&during, "wspool_bytes_in_total").unwrap() > 0.0);
    assert!(value(&during, "wspool_queue_delay_seconds_count").unwrap() >= delays + 3.0);
    assert!(
        during.contains(r#"wspool_queue_delay_seconds_bucket{le="0.001"}"#),
        "a histogram, not a summary"
    );
    assert!(during.contains("# TYPE wspool_queue_delay_seconds histogram"));

    let mut events = pool.events();
    assert!(alice.close_gracefully().await.is_empty());
    wait_event(&mut events, |e| {
        matches!(e, wspool::PoolEvent::Disconnected { .. })
    })
    .await;
    assert!(try_connect(addr, "/ws", Some("bad id")).await.is_err());
    drop(bob);
    let after = scrape(addr).await;
    let closed = r#"wspool_disconnects_total{reason="client_closed"}"#;
    assert!(value(&after, closed).unwrap() >= 1.0, "{after}");
    let refused = r#"wspool_handshakes_refused_total{reason="bad_request"}"#;
    assert!(value(&after, refused).unwrap() >= 1.0);
    assert!(after.contains("# HELP wspool_connections Connections registered now."));
}
