//! The connection's own behaviour: pongs, write timeout, reads while busy writing.

mod common;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use wspool::{DisconnectReason, PoolError, PoolEvent, WsPool};

/// A client's ping is answered with a pong carrying the same payload.
#[tokio::test]
async fn client_ping_gets_pong() {
    let pool = WsPool::new();
    let addr = start(&pool).await;
    let mut a = connect(&pool, addr, "a").await;
    a.ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(Ok(Message::Pong(p))) = a.ws.next().await {
                return p;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(&pong[..], b"are you there");
}

/// A client that stops reading is dropped when a write takes longer than
/// write_timeout, and the error is reported.
#[tokio::test]
async fn write_timeout_drops_stuck_client() {
    let pool = WsPool::builder()
        .write_timeout(Duration::from_millis(300))
        .queue_max_bytes(256 * 1024 * 1024)
        .build();
    let addr = start(&pool).await;
    let mut events = pool.events();
    let _stuck = connect(&pool, addr, "stuck").await; // never reads
    let big = "x".repeat(1024 * 1024);
    for _ in 0..64 {
        pool.send(text_msg("stuck", &[], &big)).unwrap();
    }
    let e = wait_event(&mut events, |e| matches!(e, PoolEvent::Disconnected { .. })).await;
    assert!(
        matches!(
            &e,
            PoolEvent::Disconnected {
                reason: DisconnectReason::Error(PoolError::WriteTimeout(_)),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(pool.client("stuck").is_none());
    // Nothing silent: written + reported (the batch whose write failed) +
    // still kept for the client (it went away, not kicked) = sent.
    let stats = pool.stats();
    assert!(stats.undelivered > 0, "the failed batch is reported");
    let kept = pool.stats().offline_clients;
    assert_eq!(kept, 1);
    let written = stats.messages_out;
    let buffered_bytes = stats.offline_bytes as u64;
    let per_msg = prost::Message::encoded_len(&text_msg("stuck", &[], &big)) as u64;
    assert_eq!(buffered_bytes % per_msg, 0);
    assert_eq!(written + stats.undelivered + buffered_bytes / per_msg, 64);
}

/// The read side is served while the connection is busy writing: every
/// frame a flooded client sends arrives, and so does its close. (The
/// connection polls its socket's read side only when that side signalled;
/// a lost signal would stall this test.)
#[tokio::test]
async fn reads_are_served_while_writes_are_busy() {
    let pool = WsPool::new();
    let addr = start(&pool).await;
    let mut events = pool.events();
    let client = connect(&pool, addr, "busy_room").await;
    let (mut tx, mut rx) = client.ws.split();
    // Broadcasts to the client until all its frames have been seen.
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let (pool, stop) = (pool.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = pool.broadcast(text_msg("", &["room"], &format!("flood {i}")));
                i += 1;
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let reader = tokio::spawn(async move {
        let mut floods = 0usize;
        while let Some(Ok(m)) = rx.next().await {
            if let Message::Binary(b) = m {
                let msg = <wspool::SendMsg as prost::Message>::decode(b).unwrap();
                floods += usize::from(msg.msg.starts_with("flood"));
            }
        }
        floods
    });
    for i in 0..200 {
        let up = text_msg("", &["elsewhere"], &format!("up {i}"));
        tx.send(Message::binary(prost::Message::encode_to_vec(&up)))
            .await
            .unwrap();
    }
    for i in 0..200 {
        let want = format!("up {i}");
        wait_event(
            &mut events,
            |e| matches!(e, PoolEvent::Message { from, msg } if *from == "busy" && msg.msg == want),
        )
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    flood.await.unwrap();
    tx.send(Message::Close(None)).await.unwrap();
    let e = wait_event(&mut events, |e| matches!(e, PoolEvent::Disconnected { .. })).await;
    assert!(
        matches!(
            &e,
            PoolEvent::Disconnected {
                reason: DisconnectReason::ClientClosed(_),
                ..
            }
        ),
        "{e:?}"
    );
    let floods = reader.await.unwrap();
    assert!(floods > 0, "the client was being written to meanwhile");
}
