//! PROTOCOL.md sections 5 and 7: the server API, limits and close codes.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::{
    protocol::frame::{
        coding::{Data, OpCode},
        Frame,
    },
    Message,
};
use wspool::{
    handshake::TokenError, BroadcastError, DisconnectReason, JoinError, PoolEvent, SendError,
    WsPool,
};

/// send, broadcast and broadcast_all reach whom they should and say how many.
#[tokio::test]
async fn server_send_broadcast_broadcast_all() {
    let pool = WsPool::new();
    let addr = start(&pool).await;
    let mut a = connect(&pool, addr, "a_red").await;
    let mut b = connect(&pool, addr, "b_red_blue").await;
    let mut c = connect(&pool, addr, "c_blue").await;

    pool.send(text_msg("a", &[], "direct")).unwrap();
    assert_eq!(a.recv().await.msg, "direct");
    assert_eq!(pool.broadcast(text_msg("", &["red"], "red")).unwrap(), 2);
    assert_eq!(a.recv().await.msg, "red");
    assert_eq!(b.recv().await.msg, "red");
    assert_eq!(
        pool.broadcast(text_msg("", &["red", "blue"], "both"))
            .unwrap(),
        3
    );
    for client in [&mut a, &mut b, &mut c] {
        assert_eq!(client.recv().await.msg, "both");
    }
    assert_eq!(pool.broadcast_all(text_msg("", &[], "all")), 3);
    for client in [&mut a, &mut b, &mut c] {
        assert_eq!(client.recv().await.msg, "all");
    }
    assert_eq!(pool.broadcast(text_msg("", &["nobody"], "x")).unwrap(), 0);
}

/// Send errors are explicit: empty target, unknown id; broadcast without channel.
#[tokio::test]
async fn send_errors_are_explicit() {
    let pool = WsPool::new();
    assert_eq!(
        pool.send(text_msg("", &[], "x")),
        Err(SendError::EmptyTarget)
    );
    assert_eq!(
        pool.send(text_msg("ghost", &[], "x")),
        Err(SendError::NotConnected("ghost".into()))
    );
    assert_eq!(
        pool.broadcast(text_msg("", &[], "x")),
        Err(BroadcastError::NoChannel)
    );
    assert_eq!(pool.broadcast_all(text_msg("", &[], "x")), 0);
}

/// A full queue makes send fail at once (never block, never drop silently),
/// by message count and by bytes.
#[tokio::test]
async fn full_queue_on_send() {
    let pool = WsPool::builder().queue_max_messages(3).build();
    let addr = start(&pool).await;
    let mut a = connect(&pool, addr, "a").await;
    // No await between the sends: the connection task cannot drain meanwhile.
    for i in 0..3 {
        pool.send(text_msg("a", &[], &i.to_string())).unwrap();
    }
    assert_eq!(
        pool.send(text_msg("a", &[], "4th")),
        Err(SendError::QueueFull("a".into()))
    );
    assert_eq!(pool.client("a").unwrap().info().queued_messages, 3);
    assert_eq!(pool.stats().dropped, 1);
    for i in 0..3 {
        assert_eq!(a.recv().await.msg, i.to_string());
    }

    let pool = WsPool::builder().queue_max_bytes(100).build();
    let addr = start(&pool).await;
    let _a = connect(&pool, addr, "a").await;
    pool.send(text_msg("a", &[], &"x".repeat(60))).unwrap();
    assert!(matches!(
        pool.send(text_msg("a", &[], &"x".repeat(60))),
        Err(SendError::QueueFull(_))
    ));
}

/// A broadcast skips a recipient whose queue is full, counts it, reports it,
/// and still reaches the others.
#[tokio::test]
async fn broadcast_skips_full_recipient() {
    let pool = WsPool::builder().queue_max_messages(2).build();
    let addr = start(&pool).await;
    let mut full = connect(&pool, addr, "full_room").await;
    let mut ok = connect(&pool, addr, "ok_room").await;
    let mut events = pool.events();
    pool.send(text_msg("full", &[], "1")).unwrap();
    pool.send(text_msg("full", &[], "2")).unwrap();
    assert_eq!(pool.broadcast(text_msg("", &["room"], "news")).unwrap(), 1);
    let e = wait_event(&mut events, |e| matches!(e, PoolEvent::Dropped { .. })).await;
    let PoolEvent::Dropped { to, msg } = e else {
        unreachable!()
    };
    assert_eq!((to.as_str(), msg.msg.as_str()), ("full", "news"));
    assert_eq!(pool.stats().dropped, 1);
    assert_eq!(ok.recv().await.msg, "news");
    assert_eq!(full.recv().await.msg, "1");
    assert_eq!(full.recv().await.msg, "2");
    pool.send(text_msg("full", &[], "after")).unwrap();
    assert_eq!(
        full.recv().await.msg,
        "after",
        "the skipped broadcast must not arrive"
    );
}

/// Join and leave at run time change what a client receives; limits hold.
#[tokio::test]
async fn join_and_leave_at_run_time() {
    let pool = WsPool::builder()
        .max_channels_per_client(2)
        .max_channel_len(8)
        .build();
    let addr = start(&pool).await;
    let mut a = connect(&pool, addr, "a").await;
    let handle = pool.client("a").unwrap();
    assert_eq!(handle.join("news"), Ok(true));
    assert_eq!(handle.join("news"), Ok(false));
    assert_eq!(pool.broadcast(text_msg("", &["news"], "n1")).unwrap(), 1);
    assert_eq!(a.recv().await.msg, "n1");
    assert_eq!(
        handle.join("bad_name"),
        Err(JoinError::InvalidChannel(TokenError::InvalidChannel(
            "bad_name".into()
        )))
    );
    let too_long = handle.join("waytoolongname").unwrap_err();
    assert!(matches!(
        too_long,
        JoinError::InvalidChannel(TokenError::ChannelTooLong { len: 14, .. })
    ));
    // One rule, one wording: the handshake's.
    assert!(
        too_long.to_string().contains("more than the maximum"),
        "{too_long}"
    );
    assert_eq!(handle.join("two"), Ok(true));
    assert_eq!(handle.join("three"), Err(JoinError::TooManyChannels(2)));
    assert!(handle.leave("news"));
    assert!(!handle.leave("news"));
    assert_eq!(pool.broadcast(text_msg("", &["news"], "n2")).unwrap(), 0);
    assert_eq!(pool.channel_members("two"), ["a"]);
    let mut channels = pool.channels();
    channels.sort();
    assert_eq!(channels, ["two"]);
}

/// disconnect() closes with 4002 and reports it; the handle then fails.
#[tokio::test]
async fn disconnect_closes_with_4002() {
    let pool = WsPool::new();
    let addr = start(&pool).await;
    let mut a = connect(&pool, addr, "a_r").await;
    let mut events = pool.events();
    let handle = pool.client("a").unwrap();
    handle.disconnect();
    assert_eq!(a.close_code().await, 4002);
    wait_event(&mut events, |e| {
        matches!(
            e,
            PoolEvent::Disconnected {
                reason: DisconnectReason::Kicked,
                ..
            }
        )
    })
    .await;
    assert!(!handle.is_connected());
    assert!(pool.client("a").is_none());
    assert!(pool.channel_members("r").is_empty());
    assert_eq!(handle.join("x"), Err(JoinError::NotConnected));
    assert_eq!(
        handle.send(text_msg("", &[], "x")),
        Err(SendError::NotConnected("a".into()))
    );
}

/// ClientHandle::send and info() report what happened to that client.
#[tokio::test]
async fn client_handle_send_and_info() {
    let pool = WsPool::new();
    let addr = start(&pool).await;
    let mut a = connect(&pool, addr, "a_r1").await;
    let handle = pool.client("a").unwrap();
    handle
        .send(text_msg("someone-else", &[], "via handle"))
        .unwrap();
    assert_eq!(a.recv().await.msg, "via handle");
    a.send(&text_msg("", &[], "hello")).await;
    let mut events = pool.events();
    a.send(&text_msg("", &[], "again")).await;
    wait_event(
        &mut events,
        |e| matches!(e, PoolEvent::Message { msg, .. } if msg.msg == "again"),
    )
    .await;
    let info = handle.info();
    assert_eq!(info.id, "a");
    assert_eq!(info.channels, ["r1"]);
    assert_eq!((info.messages_in, info.messages_out), (2, 1));
    assert!(info.last_received_at.is_some() && info.last_sent_at.is_some());
    assert!(info.connected_at <= std::time::SystemTime::now());
    let all = pool.clients();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id, "a");
}

/// The read buffer bounds a read, not a message: messages many times its
/// size (the default 512 B, and a tiny one) arrive whole, in one frame or
/// in fragments, and are relayed intact.
#[tokio::test]
async fn messages_larger_than_the_read_buffer_arrive_whole() {
    for pool in [
        WsPool::new(),
        WsPool::builder().read_buffer_size(64).build(),
    ] {
        let addr = start(&pool).await;
        let mut a = connect(&pool, addr, "a").await;
        let mut b = connect(&pool, addr, "b").await;
        let big: String = (0..200_000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        a.send(&text_msg("b", &[], &big)).await;
        let got = b.recv().await;
        assert_eq!((got.msg.len(), got.msg == big), (big.len(), true));
        // The same bytes as fragments of one message.
        let bytes = prost::Message::encode_to_vec(&text_msg("b", &[], &big));
        let (head, tail) = bytes.split_at(bytes.len() / 3);
        let fragment = |data: &[u8], op, fin| {
            Message::Frame(Frame::message(data.to_vec(), OpCode::Data(op), fin))
        };
        a.send_raw(fragment(head, Data::Binary, false)).await;
        a.send_raw(fragment(tail, Data::Continue, true)).await;
        assert_eq!(b.recv().await.msg, big);
    }
}

/// A frame bigger than max_message_size closes the connection with 1009.
#[tokio::test]
async fn oversized_frame_closes_with_1009() {
    let pool = WsPool::builder().max_message_size(1024).build();
    let addr = start(&pool).await;
    let mut events = pool.events();
    let mut a = connect(&pool, addr, "a").await;
    a.send_raw(Message::binary(vec![0u8; 2048])).await;
    assert_eq!(a.close_code().await, 1009);
    wait_event(&mut events, |e| {
        matches!(
            e,
            PoolEvent::Disconnected {
                reason: DisconnectReason::MessageTooBig,
                ..
            }
        )
    })
    .await;
}

/// A client from which nothing arrives for idle_timeout is closed; the
/// server pings every ping_interval, and a client answering pings stays.
#[tokio::test]
async fn idle_timeout_and_pings() {
    let pool = WsPool::builder()
        .ping_interval(Duration::from_millis(100))
        .idle_timeout(Duration::from_millis(400))
        .build();
    let addr = start(&pool).await;
    let mut events = pool.events();
    // `silent` never reads, so it never answers pings.
    let _silent = connect(&pool, addr, "silent").await;
    let mut lively = connect(&pool, addr, "lively").await;
    // `lively` reads (and so answers) pings while we wait for the timeout.
    let reader = tokio::spawn(async move {
        let mut pings = 0;
        while let Some(Ok(m)) = lively.ws.next().await {
            if m.is_ping() {
                pings += 1;
            }
            if m.is_close() {
                break;
            }
        }
        pings
    });
    let e = wait_event(&mut events, |e| matches!(e, PoolEvent::Disconnected { .. })).await;
    let PoolEvent::Disconnected { id, reason } = e else {
        unreachable!()
    };
    assert_eq!(
        (id.as_str(), reason),
        ("silent", DisconnectReason::IdleTimeout)
    );
    assert!(pool.client("lively").is_some());
    pool.client("lively").unwrap().disconnect();
    assert!(reader.await.unwrap() >= 2, "lively should have seen pings");
}

/// shutdown() writes what is queued, then closes every connection with 1001,
/// and refuses new handshakes.
#[tokio::test]
async fn shutdown_flushes_then_closes_with_1001() {
    let pool = WsPool::new();
    let addr = start(&pool).await;
    let mut a = connect(&pool, addr, "a").await;
    let mut b = connect(&pool, addr, "b").await;
    for i in 0..50 {
        pool.send(text_msg("a", &[], &i.to_string())).unwrap();
    }
    pool.shutdown().await;
    for i in 0..50 {
        assert_eq!(a.recv().await.msg, i.to_string());
    }
    assert_eq!(a.close_code().await, 1001);
    assert_eq!(b.close_code().await, 1001);
    assert_eq!(pool.stats().connections, 0);
    let (status, _) = try_connect(addr, "/ws", Some("c")).await.err().unwrap();
    assert_eq!(status, 503);
    assert_eq!(pool.stats().refused.shutting_down, 1);
}

/// The event stream reports connects, messages, disconnects; a consumer that
/// falls behind gets Lagged(n) rather than losing events silently.
#[tokio::test]
async fn events_and_lagged() {
    let pool = WsPool::builder().event_buffer(4).build();
    let addr = start(&pool).await;
    let mut slow = pool.events();
    let mut a = connect(&pool, addr, "a").await;
    let mut b = connect(&pool, addr, "b").await;
    for i in 0..10 {
        a.send(&text_msg("b", &[], &i.to_string())).await;
    }
    for i in 0..10 {
        assert_eq!(b.recv().await.msg, i.to_string());
    }
    // 2 connects + 10 messages = 12 events into a buffer of 4.
    assert!(matches!(slow.next().await, Some(PoolEvent::Lagged(8))));
    for i in 6..10 {
        match slow.next().await {
            Some(PoolEvent::Message { from, msg }) => {
                assert_eq!((from.as_str(), msg.msg.clone()), ("a", i.to_string()))
            }
            other => panic!("{other:?}"),
        }
    }
    let mut events = pool.events();
    drop(a);
    let e = wait_event(&mut events, |_| true).await;
    assert!(
        matches!(&e, PoolEvent::Disconnected { id, reason: DisconnectReason::ConnectionLost } if *id == "a"),
        "{e:?}"
    );
}

/// subscribe() receives every message broadcast to its channels, once, and
/// reports lag; dropping it leaves the channels.
#[tokio::test]
async fn subscribe_stream() {
    let pool = WsPool::builder().event_buffer(2).build();
    let addr = start(&pool).await;
    let mut sub = pool.subscribe(["room", "hall"]);
    let mut a = connect(&pool, addr, "a").await;
    a.send(&text_msg("", &["room", "hall"], "relayed")).await;
    let got = sub.next().await.unwrap().unwrap();
    assert_eq!(
        (got.from_client_id.as_str(), got.msg.as_str()),
        ("a", "relayed")
    );
    assert_eq!(
        pool.broadcast(text_msg("", &["hall"], "server")).unwrap(),
        0
    );
    assert_eq!(sub.next().await.unwrap().unwrap().msg, "server");
    pool.send(text_msg("a", &[], "direct")).unwrap();
    for i in 0..5 {
        pool.broadcast(text_msg("", &["room"], &i.to_string()))
            .unwrap();
    }
    assert_eq!(sub.next().await.unwrap(), Err(wspool::Lagged(3)));
    assert_eq!(sub.next().await.unwrap().unwrap().msg, "3");
    assert_eq!(pool.channels().len(), 2);
    drop(sub);
    assert!(pool.channels().is_empty());
    assert_eq!(a.recv().await.msg, "direct");
}

/// Callbacks run per connection in order; on_message can change a message
/// and stop the relay; a panicking callback is reported and harms nothing.
#[tokio::test]
async fn callbacks_and_panics() {
    use std::sync::{Arc, Mutex};
    use wspool::{Callbacks, Relay};
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let (l1, l2, l3, l4) = (log.clone(), log.clone(), log.clone(), log.clone());
    let pool = WsPool::builder()
        .on_open(move |c| l1.lock().unwrap().push(format!("open {}", c.id())))
        .on_message(move |c, msg| {
            l2.lock()
                .unwrap()
                .push(format!("msg {} {}", c.id(), msg.msg));
            match msg.msg.as_str() {
                "panic" => panic!("boom"),
                "secret" => Relay::Stop,
                _ => {
                    msg.desc = "seen".into();
                    Relay::Continue
                }
            }
        })
        .on_close(move |c, reason| {
            l3.lock()
                .unwrap()
                .push(format!("close {} {:?}", c.id(), reason.code()))
        })
        .on_error(move |c, e| l4.lock().unwrap().push(format!("error {} {e}", c.id())))
        .build();
    let addr = start(&pool).await;
    let mut events = pool.events();
    let mut a = connect(&pool, addr, "a").await;
    let mut b = connect(&pool, addr, "b").await;
    a.send(&text_msg("b", &[], "panic")).await;
    let e = wait_event(&mut events, |e| matches!(e, PoolEvent::Error { .. })).await;
    assert!(matches!(
        e,
        PoolEvent::Error {
            error: wspool::PoolError::CallbackPanicked {
                callback: "on_message",
                ..
            },
            ..
        }
    ));
    a.send(&text_msg("b", &[], "secret")).await;
    a.send(&text_msg("b", &[], "hello")).await;
    let got = b.recv().await;
    assert_eq!(
        (got.msg.as_str(), got.desc.as_str()),
        ("hello", "seen"),
        "panic and Stop are not relayed"
    );
    b.ws.close(None).await.unwrap();
    wait_event(
        &mut events,
        |e| matches!(e, PoolEvent::Disconnected { id, .. } if *id == "b"),
    )
    .await;
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log,
        [
            "open a",
            "open b",
            "msg a panic",
            "error a callback on_message panicked: boom",
            "msg a secret",
            "msg a hello",
            "close b None",
        ]
    );

    // Per-connection callbacks from ClientConfig run after the pool's; a
    // panicking on_open does not stop the connection.
    use axum::{extract::WebSocketUpgrade, routing::get, Router};
    let pool = WsPool::new();
    let app = Router::new()
        .route(
            "/own",
            get(|pool: WsPool, up: WebSocketUpgrade| async move {
                let cb = Callbacks::new()
                    .on_open(|_| panic!("open failed"))
                    .on_message(|_, m| {
                        m.msg.push('!');
                        Relay::Continue
                    });
                pool.accept(up, wspool::ClientConfig::new("own").callbacks(cb))
                    .await
            }),
        )
        .layer(pool.layer());
    let addr = serve(app).await;
    let mut events = pool.events();
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/own"))
        .await
        .unwrap();
    let mut own = Client {
        ws,
        json: false,
        protocol: None,
    };
    wait_event(&mut events, |e| {
        matches!(
            e,
            PoolEvent::Error {
                error: wspool::PoolError::CallbackPanicked {
                    callback: "on_open",
                    ..
                },
                ..
            }
        )
    })
    .await;
    own.send(&text_msg("own", &[], "hi")).await;
    assert_eq!(own.recv().await.msg, "hi!");
}

/// Durations too large for the clock (e.g. `Duration::MAX` to mean "never")
/// are accepted and behave as "never"; nothing panics.
#[tokio::test]
async fn huge_durations_mean_never() {
    let never = Duration::MAX;
    let pool = WsPool::builder()
        .ping_interval(never)
        .idle_timeout(never)
        .message_ttl(never)
        .offline_ttl(never)
        .slow_client_timeout(never)
        .build();
    let addr = start(&pool).await;
    let mut a = connect(&pool, addr, "a").await;
    let b = connect(&pool, addr, "b").await;
    let mut events = pool.events();
    b.close_gracefully().await;
    wait_event(&mut events, |e| matches!(e, PoolEvent::Disconnected { .. })).await;
    assert_eq!(
        pool.send(text_msg("b", &[], "kept")),
        Ok(wspool::Delivery::Buffered)
    );
    a.send(&text_msg("a", &[], "still alive")).await;
    assert_eq!(a.recv().await.msg, "still alive");
}
