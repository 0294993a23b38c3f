//! PROTOCOL.md sections 2 to 4: frames, relaying, receipts.

mod common;

use common::*;
use tokio_tungstenite::tungstenite::Message;
use wspool::{status, PoolEvent, RelayPolicy, SendMsg, WsPool};

/// A direct message reaches its recipient, stamped with the sender's id
/// (spoofing overwritten) and the server's time when the sender gave none.
#[tokio::test]
async fn direct_message_is_stamped() {
    let pool = WsPool::new();
    let addr = start(&pool).await;
    let mut alice = connect(&pool, addr, "alice").await;
    let mut bob = connect(&pool, addr, "bob").await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut msg = text_msg("bob", &[], "hi bob");
    msg.from_client_id = "mallory".into();
    msg.msg_id = "m1".into();
    alice.send(&msg).await;
    let got = bob.recv().await;
    assert_eq!(
        (
            got.from_client_id.as_str(),
            got.msg.as_str(),
            got.msg_id.as_str()
        ),
        ("alice", "hi bob", "m1")
    );
    assert!(
        got.timestamp >= before,
        "timestamp {} filled with server time",
        got.timestamp
    );
    // A timestamp the sender set is kept.
    let mut msg = text_msg("bob", &[], "dated");
    msg.timestamp = 42;
    alice.send(&msg).await;
    assert_eq!(bob.recv().await.timestamp, 42);
}

/// A channel message reaches every member, including the sender when it is
/// a member; non-members get nothing.
#[tokio::test]
async fn channel_message_reaches_members_and_sender() {
    let pool = WsPool::new();
    let addr = start(&pool).await;
    let mut a = connect(&pool, addr, "a_room").await;
    let mut b = connect(&pool, addr, "b_room").await;
    let mut c = connect(&pool, addr, "c_other").await;
    a.send(&text_msg("", &["room"], "hello room")).await;
    assert_eq!(b.recv().await.msg, "hello room");
    assert_eq!(a.recv().await.msg, "hello room");
    // c receives the next message for it, not the room's.
    pool.send(text_msg("c", &[], "marker")).unwrap();
    assert_eq!(c.recv().await.msg, "marker");
}

/// A recipient named directly and in several listed channels gets one copy.
#[tokio::test]
async fn each_recipient_gets_one_copy() {
    let pool = WsPool::new();
    let addr = start(&pool).await;
    let mut sender = connect(&pool, addr, "s").await;
    let mut r = connect(&pool, addr, "r_x_y").await;
    sender.send(&text_msg("r", &["x", "y", "x"], "once")).await;
    assert_eq!(r.recv().await.msg, "once");
    pool.send(text_msg("r", &[], "marker")).unwrap();
    assert_eq!(r.recv().await.msg, "marker", "a second copy arrived");
    assert_eq!(pool.broadcast(text_msg("", &["x", "y"], "b")).unwrap(), 1);
}

/// JSON and binary clients talk to each other; each receives in its format,
/// and all recipients of one format get identical bytes.
#[tokio::test]
async fn json_and_binary_clients_interoperate() {
    let pool = WsPool::new();
    let addr = start(&pool).await;
    let mut bin = connect(&pool, addr, "bin_room").await;
    let mut js = connect_json(&pool, addr, "js_room").await;
    let mut js2 = connect_json(&pool, addr, "js2_room").await;

    let mut msg = text_msg("", &["room"], "from binary");
    msg.cmd_data = bytes::Bytes::from_static(b"\x00\x01\xff");
    msg.timestamp = 1_700_000_000_000;
    bin.send(&msg).await;
    let Message::Text(t1) = js.next_frame().await else {
        panic!("json client got binary")
    };
    let Message::Text(t2) = js2.next_frame().await else {
        panic!()
    };
    assert_eq!(t1, t2);
    let v: serde_json::Value = serde_json::from_str(t1.as_str()).unwrap();
    assert_eq!(v["fromClientId"], "bin");
    assert_eq!(v["timestamp"], "1700000000000", "int64 as a string");
    assert_eq!(v["cmdData"], "AAH/", "bytes as base64");
    assert_eq!(v["channel"], serde_json::json!(["room"]));
    assert!(bin.next_frame().await.is_binary());

    // JSON in, binary out; a JSON number for int64 is accepted.
    js.send_raw(Message::text(
        r#"{"toClientId":"bin","msg":"from json","timestamp":5,"Desc":"d"}"#,
    ))
    .await;
    let got = bin.recv().await;
    assert_eq!(
        (
            got.msg.as_str(),
            got.from_client_id.as_str(),
            got.timestamp,
            got.desc.as_str()
        ),
        ("from json", "js", 5, "d")
    );
}

/// Receipt 4: a direct message to an id that is not connected.
#[tokio::test]
async fn receipt_not_connected() {
    let pool = WsPool::new();
    let addr = start(&pool).await;
    let mut a = connect(&pool, addr, "a").await;
    let mut msg = text_msg("ghost", &[], "anyone?");
    msg.cmd = 9;
    msg.msg_id = "id-1".into();
    msg.cmdkey = "k".into();
    msg.local_id = 77;
    msg.page_key = "pk".into();
    msg.page_id = "pg".into();
    a.send(&msg).await;
    let r = a.recv().await;
    assert_eq!(r.status, status::NOT_CONNECTED);
    assert_eq!(
        (r.from_client_id.as_str(), r.to_client_id.as_str()),
        ("", "a")
    );
    assert_eq!(
        (r.cmd, r.msg_id.as_str(), r.cmdkey.as_str(), r.local_id),
        (9, "id-1", "k", 77)
    );
    assert_eq!((r.page_key.as_str(), r.page_id.as_str()), ("pk", "pg"));
    assert!(!r.callback_msg.is_empty());
}

/// Receipt 6: an undecodable frame leaves the connection open, raises an
/// error event and gets a receipt; binary and text alike.
#[tokio::test]
async fn receipt_undecodable_frame() {
    let pool = WsPool::new();
    let addr = start(&pool).await;
    let mut events = pool.events();
    let mut a = connect(&pool, addr, "a").await;
    a.send_raw(Message::binary(vec![0xff, 0xff, 0xff])).await;
    let r = a.recv().await;
    assert_eq!(
        (r.status, r.to_client_id.as_str()),
        (status::UNDECODABLE, "a")
    );
    wait_event(&mut events, |e| matches!(e, PoolEvent::Error { id: Some(id), error: wspool::PoolError::Decode(_) } if *id == "a")).await;
    a.send_raw(Message::text("not json")).await;
    assert_eq!(a.recv().await.status, status::UNDECODABLE);
    // Still open and working.
    a.send(&text_msg("a", &[], "self")).await;
    assert_eq!(a.recv().await.msg, "self");
    assert_eq!(pool.stats().decode_errors, 2);
}

/// Receipt 5: a direct message to a client whose queue is full is dropped,
/// reported, and the sender told.
#[tokio::test]
async fn receipt_queue_full() {
    let pool = WsPool::builder()
        .queue_max_messages(4)
        .write_timeout(std::time::Duration::from_secs(60))
        .build();
    let addr = start(&pool).await;
    let mut a = connect(&pool, addr, "a").await;
    let _stuck = connect(&pool, addr, "stuck").await; // never reads
                                                      // Fill the socket buffers and then the queue of "stuck".
    let big = "x".repeat(256 * 1024);
    let mut n = 0;
    loop {
        match pool.send(text_msg("stuck", &[], &big)) {
            Ok(_) => {
                n += 1;
                assert!(n < 10_000, "queue never filled");
                tokio::task::yield_now().await;
            }
            Err(wspool::SendError::QueueFull(id)) => {
                assert_eq!(id, "stuck");
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let mut events = pool.events();
    let mut msg = text_msg("stuck", &[], "will not fit");
    msg.msg_id = "m9".into();
    a.send(&msg).await;
    let r = a.recv().await;
    assert_eq!((r.status, r.msg_id.as_str()), (status::QUEUE_FULL, "m9"));
    wait_event(
        &mut events,
        |e| matches!(e, PoolEvent::Dropped { to, .. } if *to == "stuck"),
    )
    .await;
}

/// A message with neither toClientId nor channel is seen by the application
/// only; with RelayPolicy::TargetedOrAll it goes to everyone.
#[tokio::test]
async fn untargeted_messages() {
    let pool = WsPool::new();
    let addr = start(&pool).await;
    let mut events = pool.events();
    let mut a = connect(&pool, addr, "a").await;
    let mut b = connect(&pool, addr, "b").await;
    a.send(&text_msg("", &[], "app only")).await;
    let e = wait_event(&mut events, |e| matches!(e, PoolEvent::Message { .. })).await;
    let PoolEvent::Message { from, msg } = e else {
        unreachable!()
    };
    assert_eq!((from.as_str(), msg.msg.as_str()), ("a", "app only"));
    pool.send(text_msg("b", &[], "marker")).unwrap();
    assert_eq!(b.recv().await.msg, "marker");

    let pool = WsPool::builder()
        .relay_policy(RelayPolicy::TargetedOrAll)
        .build();
    let addr = start(&pool).await;
    let mut a = connect(&pool, addr, "a").await;
    let mut b = connect(&pool, addr, "b").await;
    a.send(&text_msg("", &[], "everyone")).await;
    assert_eq!(b.recv().await.msg, "everyone");
    assert_eq!(a.recv().await.msg, "everyone");
}

/// With RelayPolicy::Disabled nothing is relayed, but the application sees it.
#[tokio::test]
async fn relay_disabled() {
    let pool = WsPool::builder()
        .relay_policy(RelayPolicy::Disabled)
        .build();
    let addr = start(&pool).await;
    let mut events = pool.events();
    let mut a = connect(&pool, addr, "a").await;
    let mut b = connect(&pool, addr, "b_r").await;
    a.send(&text_msg("b", &["r"], "not relayed")).await;
    wait_event(
        &mut events,
        |e| matches!(e, PoolEvent::Message { msg, .. } if msg.msg == "not relayed"),
    )
    .await;
    pool.send(text_msg("b", &[], "marker")).unwrap();
    assert_eq!(b.recv().await.msg, "marker");
}

/// The counters follow the traffic.
#[tokio::test]
async fn stats_count_traffic() {
    let pool = WsPool::new();
    let addr = start(&pool).await;
    let mut a = connect(&pool, addr, "a").await;
    let mut b = connect(&pool, addr, "b").await;
    let msg = SendMsg {
        to_client_id: "b".into(),
        msg: "12345".into(),
        ..Default::default()
    };
    a.send(&msg).await;
    let got = b.recv().await;
    let stats = pool.stats();
    assert_eq!((stats.connections, stats.messages_in), (2, 1));
    assert!(stats.bytes_in > 0);
    let info = pool.client("b").unwrap().info();
    assert_eq!(info.messages_out, 1);
    assert_eq!(info.bytes_out as usize, prost::Message::encoded_len(&got));
    assert!(info.last_sent_at.is_some());
    assert_eq!(pool.client("a").unwrap().info().messages_in, 1);
}
