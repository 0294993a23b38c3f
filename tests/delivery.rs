//! Delivery: priorities, expiry, offline buffer, reconnect recovery, slow
//! clients, replacement, shutdown, and a churn test that accounts for every
//! message.

mod common;

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use common::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use wspool::{
    status, Delivery, DisconnectReason, PoolEvent, SendMsg, SendOptions, UndeliveredReason, WsPool,
};

fn seq_msg(to: &str, channels: &[&str], seq: usize, priority: i32) -> SendMsg {
    let mut m = text_msg(to, channels, &seq.to_string());
    m.msg_id = seq.to_string();
    m.priority = priority;
    m
}

/// Takes a client away with a closing handshake and waits until the pool
/// has seen it go.
async fn go_away(pool: &WsPool, client: Client) -> Vec<SendMsg> {
    let mut events = pool.events();
    let got = client.close_gracefully().await;
    wait_event(&mut events, |e| matches!(e, PoolEvent::Disconnected { .. })).await;
    got
}

/// While a client is away, direct sends, relayed messages and channel
/// broadcasts are buffered (no status-4 receipt); a reconnect within the
/// window receives them first, in order, then live traffic.
#[tokio::test]
async fn reconnect_within_window_gets_buffered_first() {
    let pool = WsPool::new();
    let addr = start(&pool).await;
    let mut a = connect(&pool, addr, "a").await;
    let b = connect(&pool, addr, "b_room").await;
    go_away(&pool, b).await;
    assert!(pool.client("b").is_none());
    assert_eq!(pool.stats().offline_clients, 1);

    assert_eq!(pool.send(text_msg("b", &[], "one")), Ok(Delivery::Buffered));
    let mut events = pool.events();
    a.send(&text_msg("b", &[], "two")).await;
    wait_event(&mut events, |e| matches!(e, PoolEvent::Message { .. })).await;
    assert_eq!(pool.broadcast(text_msg("", &["room"], "three")), Ok(1));
    // No receipt for the buffered relay: a's next message is the marker.
    pool.send(text_msg("a", &[], "marker")).unwrap();
    assert_eq!(a.recv().await.msg, "marker");

    let mut b = connect(&pool, addr, "b_room").await;
    assert_eq!(pool.send(text_msg("b", &[], "live")), Ok(Delivery::Queued));
    for want in ["one", "two", "three", "live"] {
        assert_eq!(b.recv().await.msg, want);
    }
    let stats = pool.stats();
    assert_eq!(
        (stats.buffered, stats.offline_clients, stats.undelivered),
        (3, 0, 0)
    );
    assert_eq!(pool.client("b").unwrap().info().channels, ["room"]);
}

/// After the window closes, what was buffered is reported undelivered, the
/// relaying sender gets receipt 3, and the id is no longer known.
#[tokio::test]
async fn reconnect_after_window_reports_undelivered() {
    let pool = WsPool::builder()
        .offline_ttl(Duration::from_millis(200))
        .build();
    let addr = start(&pool).await;
    let mut a = connect(&pool, addr, "a").await;
    let b = connect(&pool, addr, "b").await;
    go_away(&pool, b).await;
    let mut events = pool.events();
    let mut relayed = text_msg("b", &[], "from a");
    relayed.msg_id = "r1".into();
    a.send(&relayed).await;
    assert_eq!(
        pool.send(text_msg("b", &[], "from server")),
        Ok(Delivery::Buffered)
    );
    let mut reported = Vec::new();
    while reported.len() < 2 {
        if let PoolEvent::Undelivered { to, msg, reason } =
            wait_event(&mut events, |e| matches!(e, PoolEvent::Undelivered { .. })).await
        {
            assert_eq!(
                (to.as_str(), reason),
                ("b", UndeliveredReason::OfflineTimeout)
            );
            reported.push(msg.msg.clone());
        }
    }
    reported.sort();
    assert_eq!(reported, ["from a", "from server"]);
    let r = a.recv().await;
    assert_eq!(
        (r.status, r.msg_id.as_str(), r.to_client_id.as_str()),
        (status::EXPIRED, "r1", "a")
    );
    assert_eq!(
        pool.send(text_msg("b", &[], "late")),
        Err(wspool::SendError::NotConnected("b".into()))
    );
    let stats = pool.stats();
    assert_eq!(
        (
            stats.undelivered,
            stats.offline_clients,
            stats.offline_bytes
        ),
        (2, 0, 0)
    );

    // A client that comes back now starts afresh.
    let mut b = connect(&pool, addr, "b").await;
    pool.send(text_msg("b", &[], "new")).unwrap();
    assert_eq!(b.recv().await.msg, "new");
}

/// Higher priority is written first, FIFO within a priority: in a backed-up
/// live queue and in an offline buffer alike.
#[tokio::test]
async fn priority_order_with_backed_up_queue() {
    let pool = WsPool::new();
    let addr = start(&pool).await;
    let mut c = connect(&pool, addr, "c").await;
    // No await between the sends: the queue backs up before the writer runs.
    let prios = [0, 5, 0, 9, 5, -1, 9];
    for (seq, p) in prios.iter().enumerate() {
        pool.send(seq_msg("c", &[], seq, *p)).unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..prios.len() {
        got.push(c.recv().await.msg.parse::<usize>().unwrap());
    }
    assert_eq!(got, [3, 6, 1, 4, 0, 2, 5]);

    go_away(&pool, c).await;
    for (seq, p) in prios.iter().enumerate() {
        assert_eq!(
            pool.send(seq_msg("c", &[], seq, *p)),
            Ok(Delivery::Buffered)
        );
    }
    let mut c = connect(&pool, addr, "c").await;
    let mut got = Vec::new();
    for _ in 0..prios.len() {
        got.push(c.recv().await.msg.parse::<usize>().unwrap());
    }
    assert_eq!(got, [3, 6, 1, 4, 0, 2, 5]);
}

/// Expiry, driven by a paused clock: a message past its time to live is not
/// written; it is reported, and a relaying sender gets receipt 3.
#[tokio::test]
async fn expiry_with_paused_time() {
    let pool = WsPool::builder()
        .message_ttl(Duration::from_secs(5))
        .build();
    let addr = start(&pool).await;
    let mut a = connect(&pool, addr, "a").await;
    let b = connect(&pool, addr, "b").await;
    go_away(&pool, b).await;
    let mut events = pool.events();
    a.send(&text_msg("b", &[], "relayed, 5 s")).await;
    wait_event(&mut events, |e| matches!(e, PoolEvent::Message { .. })).await;
    let opts = SendOptions::new().ttl(Duration::from_secs(2));
    pool.send_with(text_msg("b", &[], "server, 2 s"), &opts)
        .unwrap();
    pool.send_with(
        text_msg("b", &[], "server, 1 h"),
        &SendOptions::new().ttl(Duration::from_secs(3600)),
    )
    .unwrap();

    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(3)).await;
    let e = wait_event(&mut events, |e| matches!(e, PoolEvent::Undelivered { .. })).await;
    assert!(
        matches!(&e, PoolEvent::Undelivered { msg, reason: UndeliveredReason::Expired, .. } if msg.msg == "server, 2 s"),
        "{e:?}"
    );
    tokio::time::advance(Duration::from_secs(3)).await;
    let e = wait_event(&mut events, |e| matches!(e, PoolEvent::Undelivered { .. })).await;
    assert!(
        matches!(&e, PoolEvent::Undelivered { msg, reason: UndeliveredReason::Expired, .. } if msg.msg == "relayed, 5 s"),
        "{e:?}"
    );
    tokio::time::resume();

    let r = a.recv().await;
    assert_eq!(r.status, status::EXPIRED);
    let mut b = connect(&pool, addr, "b").await;
    assert_eq!(
        b.recv().await.msg,
        "server, 1 h",
        "only the unexpired message is written"
    );
    assert_eq!(pool.stats().undelivered, 2);
}

/// A client too slow to keep up is closed with 4008 once its queue has
/// stayed full for slow_client_timeout; fast clients in the same channel
/// lose nothing (checked by sequence numbers); the slow client's queue is
/// kept for it like any disconnect.
#[tokio::test]
async fn slow_client_closed_with_4008_fast_clients_lose_nothing() {
    let pool = WsPool::builder()
        .queue_max_messages(32)
        .slow_client_timeout(Duration::from_millis(300))
        .write_timeout(Duration::from_secs(30))
        .build();
    let addr = start(&pool).await;
    let fast: Vec<Client> = vec![
        connect(&pool, addr, "f1_feed").await,
        connect(&pool, addr, "f2_feed").await,
    ];
    let slow = connect(&pool, addr, "slow_feed").await;
    let hurry = Arc::new(AtomicBool::new(false));

    let total = Arc::new(Mutex::new(None::<usize>));
    let mut readers = Vec::new();
    for mut f in fast {
        let total = total.clone();
        readers.push(tokio::spawn(async move {
            let mut next = 0;
            loop {
                if total.lock().unwrap().is_some_and(|t| next == t) {
                    return next;
                }
                let m = f.recv().await;
                assert_eq!(m.msg.len(), 4096 + next.to_string().len() + 1);
                assert_eq!(
                    m.msg_id,
                    next.to_string(),
                    "a fast client lost or reordered a message"
                );
                next += 1;
            }
        }));
    }
    let slow_hurry = hurry.clone();
    let slow_reader = tokio::spawn(async move {
        let mut slow = slow;
        let mut last = None::<usize>;
        loop {
            match slow.ws.next().await {
                Some(Ok(Message::Binary(b))) => {
                    let m: SendMsg = prost::Message::decode(b).unwrap();
                    let seq: usize = m.msg_id.parse().unwrap();
                    assert!(
                        last.is_none_or(|l| seq > l),
                        "slow client got a duplicate or reordering"
                    );
                    last = Some(seq);
                    if !slow_hurry.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(4)).await;
                    }
                }
                Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
                Some(Ok(_)) => {}
                other => panic!("slow client: {other:?}"),
            }
        }
    });

    let mut events = pool.events();
    let padding = "x".repeat(4096);
    let mut seq = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut slow_gone_at = None;
    while slow_gone_at.is_none_or(|at| seq < at + 50) {
        tick.tick().await;
        let mut m = seq_msg("", &["feed"], seq, 0);
        m.msg = format!("{padding} {seq}");
        let reached = pool.broadcast(m).unwrap();
        assert!(reached >= 2, "a fast client was skipped at {seq}");
        seq += 1;
        while let Some(Some(e)) = futures_util::FutureExt::now_or_never(events.next()) {
            match e {
                PoolEvent::Disconnected { id, reason } => {
                    assert_eq!((id.as_str(), reason), ("slow", DisconnectReason::TooSlow));
                    slow_gone_at = Some(seq);
                    hurry.store(true, Ordering::Relaxed);
                }
                PoolEvent::Dropped { to, .. } => assert_eq!(to, "slow"),
                _ => {}
            }
        }
        assert!(seq < 20_000, "the slow client was never closed");
    }
    *total.lock().unwrap() = Some(seq);
    for r in readers {
        assert_eq!(tokio::time::timeout(WAIT, r).await.unwrap().unwrap(), seq);
    }
    assert_eq!(
        tokio::time::timeout(WAIT, slow_reader)
            .await
            .unwrap()
            .unwrap(),
        4008
    );
    assert!(pool.stats().dropped > 0);
    assert_eq!(
        pool.send(text_msg("slow", &[], "x")),
        Ok(Delivery::Buffered),
        "the slow client's queue is kept for it"
    );
}

/// A replacement (4001) takes over the old connection's queue: what the old
/// connection did not write, the new one does; nothing lost, nothing twice.
#[tokio::test]
async fn replacement_hands_over_queued_messages() {
    let pool = WsPool::new();
    let addr = start(&pool).await;
    let mut old = connect(&pool, addr, "a").await;
    let n = 500;
    for seq in 0..n {
        pool.send(seq_msg("a", &[], seq, 0)).unwrap();
    }
    let old_reader = tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            match old.ws.next().await {
                Some(Ok(Message::Binary(b))) => {
                    let m: SendMsg = prost::Message::decode(b).unwrap();
                    got.push(m.msg_id.parse::<usize>().unwrap());
                }
                Some(Ok(Message::Close(Some(f)))) => return (got, u16::from(f.code)),
                Some(Ok(_)) => {}
                other => panic!("{other:?}"),
            }
        }
    });
    let mut new = connect(&pool, addr, "a").await;
    let (old_got, code) = tokio::time::timeout(WAIT, old_reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, 4001);
    let k = old_got.len();
    assert_eq!(old_got, (0..k).collect::<Vec<_>>());
    for seq in k..n {
        assert_eq!(new.recv().await.msg_id, seq.to_string());
    }
    pool.send(text_msg("a", &[], "after")).unwrap();
    assert_eq!(new.recv().await.msg, "after", "nothing twice");
}

/// Shutdown reports what it could not write, and what was buffered for
/// clients that are away, as undelivered: delivered + reported = sent.
#[tokio::test]
async fn shutdown_reports_what_it_could_not_flush() {
    let pool = WsPool::builder()
        .shutdown_timeout(Duration::from_millis(200))
        .queue_max_bytes(256 * 1024 * 1024)
        .event_buffer(4096)
        .build();
    let addr = start(&pool).await;
    let mut c = connect(&pool, addr, "c").await;
    let away = connect(&pool, addr, "away").await;
    go_away(&pool, away).await;
    pool.send(text_msg("away", &[], "buffered")).unwrap();
    // 64 MiB for a client reading 64 KiB a millisecond: more than 200 ms.
    let n = 1000;
    let big = "x".repeat(64 * 1024);
    let mut events = pool.events();
    for seq in 0..n {
        let mut m = seq_msg("c", &[], seq, 0);
        m.msg = big.clone();
        pool.send(m).unwrap();
    }
    let reader = tokio::spawn(async move {
        let mut got = 0;
        loop {
            match c.ws.next().await {
                Some(Ok(Message::Binary(_))) => {
                    got += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Some(Ok(Message::Close(Some(f)))) => return (got, u16::from(f.code)),
                Some(Ok(_)) => {}
                other => panic!("{other:?}"),
            }
        }
    });
    pool.shutdown().await;
    let (got, code) = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
    assert_eq!(code, 1001);
    // Every report the counter shows comes as an event, for the right reason.
    let total = pool.stats().undelivered as usize;
    let mut reported = 0;
    // The batch being written when the forced close came: it may or may
    // not have reached the client (at most one batch, never silent).
    let mut in_flight = 0;
    let mut away_reported = false;
    for _ in 0..total {
        let e = wait_event(&mut events, |e| {
            matches!(e, PoolEvent::Undelivered { .. } | PoolEvent::Lagged(_))
        })
        .await;
        let PoolEvent::Undelivered { to, reason, .. } = e else {
            panic!("{e:?}")
        };
        match (to.as_str(), reason) {
            ("away", UndeliveredReason::Shutdown) => away_reported = true,
            ("c", UndeliveredReason::Shutdown) => reported += 1,
            ("c", UndeliveredReason::WriteFailed) => in_flight += 1,
            other => panic!("unexpected report {other:?}"),
        }
    }
    assert!(away_reported);
    assert!(
        reported > 0,
        "with no time to flush, something must be reported"
    );
    assert!(
        in_flight <= 64,
        "more than one batch in flight: {in_flight}"
    );
    assert!(
        got + reported <= n && n <= got + reported + in_flight,
        "delivered {got} + reported {reported} (+ {in_flight} in flight) vs {n} sent"
    );
    assert_eq!(pool.stats().undelivered as usize, reported + in_flight + 1);
}

/// 200 clients reconnect at random (20 of them leave for good) while direct
/// messages and channel broadcasts flow: every accepted copy is delivered
/// exactly once or reported undelivered. Zero unaccounted.
#[tokio::test]
async fn churn_every_message_accounted() {
    const CLIENTS: usize = 200;
    const QUITTERS: usize = 20;
    let pool = WsPool::builder()
        .offline_ttl(Duration::from_millis(500))
        .event_buffer(1 << 17)
        .build();
    let addr = start(&pool).await;

    #[derive(Default)]
    struct Ledger {
        delivered: HashSet<(String, String)>,
        undelivered: HashSet<(String, String)>,
        duplicates: Vec<(String, String)>,
    }
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let progress = Arc::new(tokio::sync::Notify::new());
    let stop = Arc::new(AtomicBool::new(false));

    // Undelivered reports, from the event stream.
    let mut events = pool.events();
    let (l, p) = (ledger.clone(), progress.clone());
    let listener = tokio::spawn(async move {
        while let Some(e) = events.next().await {
            match e {
                PoolEvent::Undelivered { to, msg, .. } => {
                    let key = (msg.msg_id.clone(), to.to_string());
                    let mut l = l.lock().unwrap();
                    if l.delivered.contains(&key) || !l.undelivered.insert(key.clone()) {
                        l.duplicates.push(key);
                    }
                    p.notify_one();
                }
                PoolEvent::Lagged(n) => panic!("event listener lagged by {n}"),
                _ => {}
            }
        }
    });

    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let (l, p, stop) = (ledger.clone(), progress.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let id = format!("c{i}");
            let token = format!("{id}_g{}", i % 10);
            let mut rounds = 0u64;
            let record = |m: SendMsg| {
                let key = (m.msg_id.clone(), id.clone());
                let mut l = l.lock().unwrap();
                if l.undelivered.contains(&key) || !l.delivered.insert(key.clone()) {
                    l.duplicates.push(key);
                }
                p.notify_one();
            };
            loop {
                let mut c = try_connect(addr, "/ws", Some(&token))
                    .await
                    .expect("handshake");
                rounds += 1;
                let final_round = stop.load(Ordering::Relaxed);
                // Pseudo-random but reproducible stay and pause lengths.
                let stay = Duration::from_millis(5 + (i as u64 * 7 + rounds * 13) % 40);
                let deadline = tokio::time::Instant::now() + stay;
                loop {
                    let next = if final_round {
                        c.ws.next().await
                    } else {
                        match tokio::time::timeout_at(deadline, c.ws.next()).await {
                            Ok(n) => n,
                            Err(_) => break,
                        }
                    };
                    match next {
                        Some(Ok(Message::Binary(b))) => record(prost::Message::decode(b).unwrap()),
                        Some(Ok(_)) => {}
                        other => panic!("{id}: {other:?}"),
                    }
                }
                for m in c.close_gracefully().await {
                    record(m);
                }
                if i < QUITTERS && rounds >= 3 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis((i as u64 + rounds) % 7)).await;
            }
        }));
    }

    // Publish: direct messages to random ids and broadcasts to groups.
    let mut accepted = 0usize;
    let mut rng = 12345u64;
    for seq in 0..3000usize {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = (rng >> 33) as usize;
        if seq % 5 == 0 {
            let group = format!("g{}", r % 10);
            accepted += pool.broadcast(seq_msg("", &[&group], seq, 0)).unwrap();
        } else if pool
            .send(seq_msg(&format!("c{}", r % CLIENTS), &[], seq, 0))
            .is_ok()
        {
            accepted += 1;
        }
        if seq % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);

    // Wait until every accepted copy is accounted for.
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let notified = progress.notified();
            {
                let l = ledger.lock().unwrap();
                assert!(
                    l.duplicates.is_empty(),
                    "accounted twice: {:?}",
                    &l.duplicates[..l.duplicates.len().min(5)]
                );
                if l.delivered.len() + l.undelivered.len() == accepted {
                    return;
                }
                assert!(
                    l.delivered.len() + l.undelivered.len() < accepted,
                    "more accounted than accepted"
                );
            }
            notified.await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        let l = ledger.lock().unwrap();
        panic!(
            "unaccounted: accepted {accepted}, delivered {}, undelivered {}",
            l.delivered.len(),
            l.undelivered.len()
        )
    });
    let l = ledger.lock().unwrap();
    assert!(
        l.delivered.len() > accepted / 2,
        "most messages should be delivered"
    );
    assert!(
        !l.undelivered.is_empty(),
        "the quitters' buffers should have been reported"
    );
    drop(l);
    listener.abort();
    for c in clients {
        c.abort();
    }
}

/// The offline buffer's limits hold: past `offline_max_clients` a client
/// that goes away is forgotten at once (its queue reported), and past
/// `offline_max_messages` `send` to a client away answers `QueueFull`.
#[tokio::test]
async fn offline_limits_are_enforced() {
    let pool = WsPool::builder()
        .offline_max_clients(1)
        .offline_max_messages(2)
        .build();
    let addr = start(&pool).await;
    let a = connect(&pool, addr, "a").await;
    let b = connect(&pool, addr, "b").await;
    go_away(&pool, a).await;
    for want in [
        Ok(Delivery::Buffered),
        Ok(Delivery::Buffered),
        Err(wspool::SendError::QueueFull("a".into())),
    ] {
        assert_eq!(pool.send(text_msg("a", &[], "x")), want);
    }
    go_away(&pool, b).await;
    assert_eq!(pool.stats().offline_clients, 1);
    assert_eq!(
        pool.send(text_msg("b", &[], "x")),
        Err(wspool::SendError::NotConnected("b".into()))
    );
}
