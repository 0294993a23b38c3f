//! Tracing: a span per connection. In a test binary of its own, because
//! the subscriber is process-wide.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use wspool::{PoolEvent, WsPool};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Each connection has a span carrying its id; connect and disconnect are
/// logged at debug, and nothing per message is logged at debug.
#[tokio::test]
async fn tracing_span_per_connection() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let pool = WsPool::new();
    let addr = start(&pool).await;
    let mut events = pool.events();
    let mut alice = connect(&pool, addr, "alice").await;
    for _ in 0..5 {
        alice.send(&text_msg("alice", &[], "per message")).await;
        alice.recv().await;
    }
    alice.ws.close(None).await.unwrap();
    wait_event(&mut events, |e| matches!(e, PoolEvent::Disconnected { .. })).await;
    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("ws{id=alice")).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("DEBUG") && l.contains("connected")),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("DEBUG") && l.contains("disconnected")),
        "{log}"
    );
    assert_eq!(
        lines.len(),
        2,
        "only connect and disconnect at debug:\n{log}"
    );
}
