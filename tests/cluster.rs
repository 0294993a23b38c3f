//! What only the Redis engine can show, over a real `redis-server`
//! (`cargo test --features redis`; needs `redis-server` on the PATH): its
//! subscriptions, a restart, data on disk, a node SIGKILLed, garbage in
//! its channels, histories and their gaps. The cluster's promises that
//! every engine keeps are in `conformance.rs`, which runs over Redis too.
#![cfg(feature = "redis")]

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{
    redis::{key, RedisServer},
    *,
};
use wspool::{cluster::redis::RedisConfig, BroadcastError, Delivery, PoolEvent, SendError, WsPool};

/// One node: a pool joined to the cluster at `redis`, served on a free port.
struct Node {
    pool: WsPool,
    addr: SocketAddr,
}

async fn node(redis: &RedisServer) -> Node {
    node_with(redis, WsPool::builder()).await
}

async fn node_with(redis: &RedisServer, builder: wspool::WsPoolBuilder) -> Node {
    node_over(RedisConfig::new(redis.url()), builder).await
}

/// A node joined with `config` (its link probed every 200 ms), served on
/// a free port.
async fn node_over(mut config: RedisConfig, builder: wspool::WsPoolBuilder) -> Node {
    config.probe_interval = Duration::from_millis(200);
    let pool = builder
        .redis_config(config)
        .connect()
        .await
        .expect("joins the cluster");
    let addr = start(&pool).await;
    Node { pool, addr }
}

impl Node {
    async fn connect(&self, token: &str) -> Client {
        connect(&self.pool, self.addr, token).await
    }
}

/// `PUBSUB NUMSUB` of pool channel `channel`: how many nodes subscribe.
fn numsub(redis: &RedisServer, channel: &str) -> i64 {
    let (_, n): (String, i64) = ::redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(key::channel(channel))
        .query(&mut redis.conn())
        .unwrap();
    n
}

/// Waits until Redis has `id` away (its release is done on its node's
/// tasks, after the disconnect event).
async fn until_away(redis: &RedisServer, id: &str) {
    until(|| {
        let state: Option<String> = ::redis::cmd("HGET")
            .arg(key::owner(id))
            .arg("state")
            .query(&mut redis.conn())
            .unwrap();
        state.as_deref() == Some("away")
    })
    .await;
}

/// Waits until Redis buffers `n` messages for `id`.
async fn until_buffered(redis: &RedisServer, id: &str, n: i64) {
    until(|| redis.buffered(id) == n).await;
}

/// Only nodes with members subscribe to a channel (a publication reaches
/// only them), and a node unsubscribes when its last member leaves. (That
/// a broadcast reaches each member once is in the conformance suite.)
#[tokio::test]
async fn only_nodes_with_members_subscribe() {
    let redis = RedisServer::start();
    let (a, b, _c) = (node(&redis).await, node(&redis).await, node(&redis).await);
    let _a1 = a.connect("a1_room1").await;
    let _b1 = b.connect("b1_room1_room2").await;
    let b2 = b.connect("b2_room2").await;
    assert_eq!(numsub(&redis, "room1"), 2, "A and B, not C");
    assert_eq!(numsub(&redis, "room2"), 1, "B only");

    // The last member of room2 on B leaves: B unsubscribes.
    b.pool.client("b1").unwrap().leave("room2");
    drop(b2);
    until(|| numsub(&redis, "room2") == 0).await;
    assert_eq!(numsub(&redis, "room1"), 2);
}

/// Redis killed and restarted (empty) mid-traffic: the nodes report the
/// outage and the lost data, a send to another node fails with `Unavailable` while local
/// clients are still served, and once Redis is back the nodes resubscribe
/// and reclaim their ids with no client traffic, and cross-node delivery
/// works again.
#[tokio::test]
async fn redis_restart_is_detected_and_recovered() {
    let mut redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut local = a.connect("local_room").await;
    let mut remote = b.connect("remote_room").await;
    let mut events_a = a.pool.events();
    let mut events_b = b.pool.events();

    redis.kill();
    wait_event(&mut events_a, |e| matches!(e, PoolEvent::ClusterDown)).await;
    match a.pool.send(text_msg("remote", &[], "x")) {
        Err(SendError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(
        a.pool.send(text_msg("local", &[], "still served")),
        Ok(Delivery::Queued)
    );
    assert_eq!(local.recv().await.msg, "still served");
    match a.pool.broadcast(text_msg("", &["room"], "local part")) {
        Err(BroadcastError::Unavailable { local: 1, .. }) => {}
        other => panic!("expected Unavailable with the local part served, got {other:?}"),
    }
    assert_eq!(local.recv().await.msg, "local part");

    redis.restart();
    wait_event(&mut events_a, |e| matches!(e, PoolEvent::ClusterDataLost)).await;
    wait_event(&mut events_a, |e| matches!(e, PoolEvent::ClusterUp { .. })).await;
    wait_event(&mut events_b, |e| matches!(e, PoolEvent::ClusterUp { .. })).await;
    until(|| numsub(&redis, "room") == 2).await;
    a.pool
        .send(text_msg("remote", &[], "after the restart"))
        .unwrap();
    assert_eq!(remote.recv().await.msg, "after the restart");
    b.pool
        .broadcast(text_msg("", &["room"], "to the room"))
        .unwrap();
    assert_eq!(local.recv().await.msg, "to the room");
    assert_eq!(remote.recv().await.msg, "to the room");
}

/// The next message a server-side subscription gets.
async fn next(feed: &mut wspool::Subscription) -> String {
    let got = tokio::time::timeout(WAIT, tokio_stream::StreamExt::next(feed)).await;
    got.expect("a message in time")
        .unwrap()
        .unwrap()
        .msg
        .clone()
}

/// What B missed while its pub/sub link was down is recovered when it is
/// back, with no client traffic: its clients get everything from the
/// buffers Redis kept for them (nobody listened on B's channel, so B's
/// clients were marked away at the first publication), in order, once;
/// its server-side subscriptions get channel publications from the
/// channel's history, and a gap past the history is reported.
#[tokio::test]
async fn missed_traffic_is_recovered_or_reported() {
    let redis = RedisServer::start();
    let mut short = RedisConfig::new(redis.url());
    short.history_len = 3;
    let a = WsPool::builder()
        .redis_config(short)
        .connect()
        .await
        .unwrap();
    // B stays away long enough for A's traffic to happen meanwhile.
    let mut slow = RedisConfig::new(redis.url());
    slow.reconnect_delay = Duration::from_secs(2);
    let b = WsPool::builder()
        .redis_config(slow)
        .connect()
        .await
        .unwrap();
    let b = Node {
        addr: start(&b).await,
        pool: b,
    };
    let mut bob = b.connect("bob_room").await; // B: n:B, all, c:room = 3
    let mut feed = b.pool.subscribe(["room"]);
    a.broadcast(text_msg("", &["room"], "before")).unwrap();
    assert_eq!(bob.recv().await.msg, "before");
    assert_eq!(next(&mut feed).await, "before");
    let mut events = b.pool.events();

    redis.kill_pubsub_with(3);
    wait_event(&mut events, |e| matches!(e, PoolEvent::ClusterDown)).await;
    for text in ["m1", "m2", "m3", "m4"] {
        a.broadcast(text_msg("", &["room"], text)).unwrap();
    }
    assert_eq!(
        a.send(text_msg("bob", &[], "direct")),
        Ok(Delivery::Forwarded)
    );
    until_buffered(&redis, "bob", 5).await;

    let gap = wait_event(&mut events, |e| matches!(e, PoolEvent::ClusterGap { .. })).await;
    let PoolEvent::ClusterGap { channel, missed } = gap else {
        unreachable!()
    };
    assert_eq!(
        (channel.as_str(), missed),
        ("room", 1),
        "m1 fell out of a history of 3"
    );
    let last_gap = b.pool.stats().cluster.unwrap().last_gap_at;
    assert!(last_gap.is_some(), "the gap's time, for the admin surface");
    wait_event(&mut events, |e| matches!(e, PoolEvent::ClusterUp { .. })).await;
    for expected in ["m1", "m2", "m3", "m4", "direct"] {
        assert_eq!(bob.recv().await.msg, expected);
    }
    for expected in ["m2", "m3", "m4"] {
        assert_eq!(next(&mut feed).await, expected);
    }
    let stats = b.pool.stats().cluster.unwrap();
    assert_eq!(
        (stats.recovered, stats.missed, stats.outages),
        (5 + 3, 1, 1)
    );

    a.broadcast(text_msg("", &["room"], "live")).unwrap();
    assert_eq!(bob.recv().await.msg, "live", "nothing twice before it");
    assert_eq!(next(&mut feed).await, "live");
}

/// The admin API on either node answers for the cluster: it lists every
/// node's clients, a send reaches a client on the other node, a broadcast
/// counts every recipient on every node once, and a disconnect closes the
/// client with 4002 wherever it is.
#[tokio::test]
async fn admin_api_answers_for_the_cluster() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut alice = a.connect("alice_room").await;
    let mut bob = b.connect("bob_room_lobby").await;
    let mut carol = b.connect("carol_lobby").await;

    let (status, list) = json_call(a.addr, "GET", "/api/clients", "").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alice", "bob", "carol"]);

    let (status, body) = json_call(
        a.addr,
        "POST",
        "/api/send",
        r#"{"toClientId":"bob","msg":"via A"}"#,
    )
    .await;
    assert_eq!(
        (status, body["delivery"].as_str()),
        (200, Some("forwarded"))
    );
    assert_eq!(bob.recv().await.msg, "via A");

    let (status, body) = json_call(
        a.addr,
        "POST",
        "/api/broadcast",
        r#"{"channel":["room","lobby"],"msg":"hi"}"#,
    )
    .await;
    assert_eq!(
        (status, body["recipients"].as_u64()),
        (200, Some(3)),
        "bob once"
    );
    for client in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(client.recv().await.msg, "hi");
    }
    let (_, body) = json_call(b.addr, "POST", "/api/broadcast_all", r#"{"msg":"all"}"#).await;
    assert_eq!(body["recipients"].as_u64(), Some(3));
    for client in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(client.recv().await.msg, "all");
    }

    let (status, _) = json_call(a.addr, "DELETE", "/api/clients/bob", "").await;
    assert_eq!(status, 200);
    assert_eq!(bob.close_code().await, wspool::close_code::KICKED);
    let (status, _) = json_call(a.addr, "DELETE", "/api/clients/nobody", "").await;
    assert_eq!(status, 404);
}

/// A node in a process of its own (the chat example with `--redis`), so it
/// can be SIGKILLed.
struct ChildNode {
    child: std::process::Child,
    addr: SocketAddr,
}

impl ChildNode {
    fn start(redis: &RedisServer, lease_secs: u64) -> Self {
        use std::io::{BufRead, BufReader};
        // target/<profile>/deps/cluster-* -> target/<profile>/examples/chat
        let exe = std::env::current_exe().unwrap();
        let bin = exe
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("examples/chat");
        assert!(
            bin.exists(),
            "{} is missing: `cargo test --features redis` builds it (or `cargo build --example chat --features redis`)",
            bin.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut child = std::process::Command::new(bin)
            .args(["--redis", &redis.url(), "--addr", &addr.to_string()])
            .args(["--lease-secs", &lease_secs.to_string()])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("chat on http://") {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(WAIT).is_err() {
            let status = child.try_wait().ok().flatten();
            panic!(
                "the chat example did not start as a cluster node (exit: {status:?}); it must be \
                 built with the feature: `cargo test --features redis` builds it so"
            );
        }
        ChildNode { child, addr }
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node's report is read from Redis, where anything may have written
/// it: a lease whose value is not a report (garbage, another version's, a
/// report of wrong types) shows that node down with no numbers, and the
/// other nodes as usual.
#[tokio::test]
async fn a_report_that_does_not_parse_shows_its_node_down() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    let mut conn = redis.conn();
    for (ghost, value) in [
        ("ghost-1", "not json".to_owned()),
        ("ghost-2", r#"{"leaseMs":10000}"#.to_owned()),
        (
            "ghost-3",
            r#"{"lease_ms":"x","info":{"up":"yes"}}"#.to_owned(),
        ),
        ("ghost-4", "x".repeat(1 << 20)),
    ] {
        let _: () = ::redis::cmd("SET")
            .arg(key::lease(ghost))
            .arg(value)
            .arg("PX")
            .arg(60_000)
            .query(&mut conn)
            .unwrap();
        let _: i64 = ::redis::cmd("SADD")
            .arg("wspool:{g}:nodes")
            .arg(ghost)
            .query(&mut conn)
            .unwrap();
    }
    let nodes = a.pool.cluster_nodes().await;
    assert_eq!(nodes.len(), 5, "{nodes:?}");
    assert!(nodes[0].this && nodes[0].up);
    for (i, ghost) in nodes[1..].iter().enumerate() {
        assert_eq!(
            ghost.node.as_deref(),
            Some(format!("ghost-{}", i + 1).as_str())
        );
        assert!(!ghost.up && !ghost.this, "{ghost:?}");
        assert_eq!((ghost.connections, ghost.messages_in), (0, 0));
    }
}

/// The admin surface over Redis: each node's report reaches the others
/// (the chat example's `/api/nodes`, mounted from the library, shows the
/// in-process node and itself), and a node SIGKILLed is shown down once
/// its report is 3 s old, then drops out with its lease.
#[tokio::test]
async fn nodes_report_to_each_other_and_a_dead_one_shows_down() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    let _peer = a.connect("peer_room").await;
    let mut k = ChildNode::start(&redis, 8);
    let _kim = try_connect(k.addr, "/ws", Some("kim_room")).await.unwrap();
    let _kit = try_connect(k.addr, "/ws", Some("kit_room")).await.unwrap();
    let a_name = a.pool.stats().cluster.unwrap().node;
    let other = || async {
        let nodes = a.pool.cluster_nodes().await;
        assert!(nodes[0].this && nodes[0].node.as_deref() == Some(a_name.as_str()));
        nodes.into_iter().nth(1)
    };
    tokio::time::timeout(WAIT, async {
        while !other().await.is_some_and(|k| k.up && k.connections == 2) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("k's report, its two clients, reaches a");

    let (status, body) = json_call(k.addr, "GET", "/api/nodes", "").await;
    assert_eq!(status, 200);
    let seen: Vec<_> = body.as_array().unwrap().iter().collect();
    assert_eq!(seen.len(), 2, "{body}");
    assert_eq!(
        (seen[0]["this"].clone(), seen[0]["connections"].clone()),
        (true.into(), 2.into())
    );
    assert_eq!(seen[1]["node"], a_name.as_str());
    assert_eq!(seen[1]["connections"], 1);
    assert_eq!(seen[1]["up"], true);

    k.child.kill().unwrap(); // SIGKILL
    k.child.wait().unwrap();
    let killed = std::time::Instant::now();
    tokio::time::timeout(WAIT, async {
        while other().await.is_some_and(|k| k.up) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("k shown down");
    let down = other().await.expect("still within its lease");
    assert!(down.age_ms >= 3_000, "{down:?}");
    assert!(
        killed.elapsed() < Duration::from_secs(8),
        "before its lease ended"
    );
    tokio::time::timeout(WAIT, async {
        while other().await.is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("k drops out with its lease");
}

/// A node killed with SIGKILL loses nothing sent after its death: its
/// client becomes away, what is sent to it (direct and to its channel) is
/// buffered in Redis, it leaves presence within the lease, and it gets
/// everything, in order, when it reconnects to another node.
#[tokio::test]
async fn a_killed_node_loses_nothing_sent_after_its_death() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    let _peer = a.connect("peer_room").await;
    let mut k = ChildNode::start(&redis, 2);
    let kim = try_connect(k.addr, "/ws", Some("kim_room")).await.unwrap();
    let on_k = || async { a.pool.cluster_client("kim").await.unwrap().is_some() };
    tokio::time::timeout(WAIT, async {
        while !on_k().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("kim shows in presence");

    k.child.kill().unwrap(); // SIGKILL
    k.child.wait().unwrap();
    drop(kim);
    assert_eq!(
        a.pool.send(text_msg("kim", &[], "direct")),
        Ok(Delivery::Forwarded)
    );
    let n = a
        .pool
        .cluster_broadcast(text_msg("", &["room"], "to the room"))
        .await
        .unwrap();
    assert_eq!(n, 2, "peer here, and kim's buffer");

    tokio::time::timeout(WAIT, async {
        while on_k().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("kim leaves presence within the lease");

    let mut back = a.connect("kim_room").await;
    assert_eq!(back.recv().await.msg, "direct");
    assert_eq!(back.recv().await.msg, "to the room");
}

/// A pool that is dropped leaves the cluster: its pub/sub connection
/// closes and its lease is deleted, so other nodes stop counting on it.
#[tokio::test]
async fn a_dropped_pool_leaves_the_cluster() {
    let redis = RedisServer::start();
    let pool = WsPool::builder()
        .redis(redis.url())
        .connect()
        .await
        .unwrap();
    let node = pool.stats().cluster.unwrap().node;
    let listeners = |redis: &RedisServer| -> i64 {
        let (_, n): (String, i64) = ::redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(key::node(&node))
            .query(&mut redis.conn())
            .unwrap();
        n
    };
    assert_eq!(listeners(&redis), 1);
    drop(pool);
    until(|| listeners(&redis) == 0).await;
    until(|| {
        let alive: bool = ::redis::cmd("EXISTS")
            .arg(key::lease(&node))
            .query(&mut redis.conn())
            .unwrap();
        !alive
    })
    .await;
}

/// A pub/sub link that goes quiet (Redis stops answering without closing
/// the connection) is noticed by the probe and reconnected once Redis
/// answers again.
#[tokio::test]
async fn a_quiet_link_is_noticed_by_the_probe() {
    let redis = RedisServer::start();
    let a = node(&redis).await; // probe every 200 ms
    let mut events = a.pool.events();
    let _: () = ::redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1_500)
        .arg("ALL")
        .query(&mut redis.conn())
        .unwrap();
    wait_event(&mut events, |e| matches!(e, PoolEvent::ClusterDown)).await;
    wait_event(&mut events, |e| matches!(e, PoolEvent::ClusterUp { .. })).await;
    assert_eq!(a.pool.stats().cluster.unwrap().outages, 1);
}

/// Redis restarted with its data (`SHUTDOWN SAVE`): no data loss is
/// reported, and what was buffered for a client that is away survives the
/// restart and reaches it on another node.
#[tokio::test]
async fn a_restart_with_persistence_keeps_the_buffers() {
    let mut redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut events = a.pool.events();
    let alice = a.connect("alice").await;
    assert!(alice.close_gracefully().await.is_empty());
    until_away(&redis, "alice").await;
    b.pool.send(text_msg("alice", &[], "kept")).unwrap();
    until_buffered(&redis, "alice", 1).await;

    redis.restart_keeping_data();
    wait_event(&mut events, |e| matches!(e, PoolEvent::ClusterDown)).await;
    let up = wait_event(&mut events, |e| {
        matches!(e, PoolEvent::ClusterUp { .. } | PoolEvent::ClusterDataLost)
    })
    .await;
    assert!(
        matches!(up, PoolEvent::ClusterUp { .. }),
        "no data loss: {up:?}"
    );
    let mut back = b.connect("alice").await;
    assert_eq!(back.recv().await.msg, "kept");
    assert_eq!(a.pool.stats().cluster.unwrap().data_losses, 0);
}

/// Two nodes built by `builder`; alice goes away from the first, and bob,
/// on the second, sends her `first` then `second` (msg ids m-1, m-2): the
/// second must not fit her offline buffer in Redis and earns bob a
/// status-5 receipt. Returns the nodes and bob.
async fn overflow_offline_buffer(
    redis: &RedisServer,
    builder: impl Fn() -> wspool::WsPoolBuilder,
    first: &str,
    second: &str,
) -> (Node, Node, Client) {
    let (a, b) = (
        node_with(redis, builder()).await,
        node_with(redis, builder()).await,
    );
    let alice = a.connect("alice").await;
    let mut bob = b.connect("bob").await;
    assert!(alice.close_gracefully().await.is_empty());
    until_away(redis, "alice").await;
    for (text, id) in [(first, "m-1"), (second, "m-2")] {
        let mut msg = text_msg("alice", &[], text);
        msg.msg_id = id.into();
        bob.send(&msg).await;
    }
    let receipt = bob.recv().await;
    assert_eq!(
        (receipt.status, receipt.msg_id.as_str()),
        (wspool::status::QUEUE_FULL, "m-2")
    );
    (a, b, bob)
}

/// An offline buffer in Redis is bounded as on one node: past
/// `offline_max_messages`, a relayed message earns its sender a receipt
/// with status 5.
#[tokio::test]
async fn a_full_offline_buffer_refuses_with_a_receipt() {
    let redis = RedisServer::start();
    let one = || WsPool::builder().offline_max_messages(1);
    let (a, _b, _bob) = overflow_offline_buffer(&redis, one, "fits", "does not fit").await;
    let mut back = a.connect("alice").await;
    assert_eq!(back.recv().await.msg, "fits");
}

/// Priorities and time to live hold across nodes: what was buffered in
/// Redis comes highest priority first, and a message past its time to live
/// (a wall-clock deadline that crossed the nodes) is not written: its
/// sender on the other node gets a status-3 receipt.
#[tokio::test]
async fn priorities_and_ttl_cross_nodes() {
    let redis = RedisServer::start();
    let short_ttl = WsPool::builder().message_ttl(Duration::from_millis(100));
    let (a, b) = (node_with(&redis, short_ttl).await, node(&redis).await);
    let mut alice = a.connect("alice").await;
    let bob = b.connect("bob").await;
    assert!(bob.close_gracefully().await.is_empty());
    until_away(&redis, "bob").await;

    let mut low = text_msg("bob", &[], "low");
    low.priority = 0;
    let mut high = text_msg("bob", &[], "high");
    high.priority = 5;
    let long = wspool::SendOptions::new().ttl(Duration::from_secs(60));
    a.pool.send_with(low, &long).unwrap();
    a.pool.send_with(high, &long).unwrap();
    let mut stale = text_msg("bob", &[], "stale");
    stale.msg_id = "m-9".into();
    alice.send(&stale).await; // relayed with A's message_ttl: 100 ms
    until_buffered(&redis, "bob", 3).await;
    // Let the relayed message's deadline pass: the time to live is what is
    // under test.
    tokio::time::sleep(Duration::from_millis(150)).await;

    let mut back = b.connect("bob").await;
    assert_eq!(back.recv().await.msg, "high");
    assert_eq!(back.recv().await.msg, "low");
    let receipt = alice.recv().await;
    assert_eq!(
        (receipt.status, receipt.msg_id.as_str()),
        (wspool::status::EXPIRED, "m-9")
    );
    b.pool.send(text_msg("bob", &[], "next")).unwrap();
    assert_eq!(
        back.recv().await.msg,
        "next",
        "the stale one was not written"
    );
}

/// Garbage on a node's channels in Redis (as from another version of
/// wspool, or another program) is counted, dropped, and disturbs nothing:
/// no frame without a number, no undecodable envelope or message, no
/// unknown kind, no publication number ahead of the channel's counter
/// (which would otherwise report a false gap and hide what follows).
#[tokio::test]
async fn malformed_messages_from_redis_are_dropped_and_counted() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut bob = b.connect("bob_room").await;
    a.pool.broadcast(text_msg("", &["room"], "before")).unwrap();
    assert_eq!(bob.recv().await.msg, "before");

    let node = b.pool.stats().cluster.unwrap().node;
    // An envelope (field 1, 2 bytes) whose message is not a SendMsg.
    let bad_msg: &[u8] = &[0x0a, 0x02, 0xff, 0xff];
    let mut frames: Vec<(String, Vec<u8>)> = vec![
        (key::node(&node), b"".to_vec()),
        (key::node(&node), b"Dnot-a-number".to_vec()),
        (key::node(&node), b"D1:\xff\xff\xff".to_vec()),
        (key::node(&node), [b"D1:".as_slice(), bad_msg].concat()),
        (key::node(&node), b"D1:1:\xff\xff\xff".to_vec()),
        (key::node(&node), [b"D1:1:".as_slice(), bad_msg].concat()),
        // A number far ahead of the node's counter: not believed.
        (key::node(&node), b"D1:999999.9999999999999999999:".to_vec()),
        (key::node(&node), b"J7:no-spaces".to_vec()),
        (key::node(&node), b"L7:bob".to_vec()),
        (key::node(&node), b"A7:z".to_vec()),
        (key::node(&node), b"A7:mNaN".to_vec()),
        (key::node(&node), b"Z1:x".to_vec()),
        (key::node(&node), b"K1:\xff".to_vec()),
        (key::channel("room"), b"no number".to_vec()),
        (
            key::channel("room"),
            b"999999.9999999999999999999:".to_vec(),
        ),
        // Not numbered and stamped.
        (key::channel("room"), b"2:".to_vec()),
    ];
    frames.push((
        key::channel("room"),
        [b"2.9999999999999999999:".as_slice(), bad_msg].concat(),
    ));
    let mut conn = redis.conn();
    for (channel, payload) in &frames {
        let _: i64 = ::redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload.as_slice())
            .query(&mut conn)
            .unwrap();
    }

    // Real traffic still flows, in order, and nothing was delivered twice
    // or reported missing.
    a.pool.broadcast(text_msg("", &["room"], "after")).unwrap();
    a.pool.send(text_msg("bob", &[], "direct")).unwrap();
    assert_eq!(bob.recv().await.msg, "after");
    assert_eq!(bob.recv().await.msg, "direct");
    let stats = b.pool.stats().cluster.unwrap();
    assert_eq!(stats.malformed, frames.len() as u64);
    assert_eq!(stats.missed, 0, "no false gap (ClusterGap goes with it)");
    a.pool.broadcast(text_msg("", &["room"], "last")).unwrap();
    assert_eq!(bob.recv().await.msg, "last");
}

/// The offline buffer in Redis is bounded in bytes too
/// (`offline_max_bytes`, counted in envelope bytes): a message that would
/// pass it earns its sender a status-5 receipt, and a reconnect gets what
/// fitted.
#[tokio::test]
async fn an_offline_buffer_is_bounded_in_bytes() {
    let redis = RedisServer::start();
    let small = || WsPool::builder().offline_max_bytes(1_000);
    let big = "x".repeat(600);
    let (a, b, _bob) = overflow_offline_buffer(&redis, small, &big, &big).await;
    let mut back = a.connect("alice").await;
    assert_eq!(back.recv().await.msg_id, "m-1");
    b.pool.send(text_msg("alice", &[], "live")).unwrap();
    assert_eq!(
        back.recv().await.msg,
        "live",
        "only what fitted was buffered"
    );
}

/// Sends `try <n>` from `from` to `id` every 200 ms until `client` (the
/// connection of `id`) reads one: each send is refused (`Unavailable`) or
/// accepted while the cluster's link is down, and the first read proves
/// cross-node delivery is back. Fails after 30 s.
async fn resend_until_read(from: &Node, id: &str, client: &mut Client) -> wspool::SendMsg {
    tokio::time::timeout(Duration::from_secs(30), async {
        for n in 0.. {
            let _ = from.pool.send(text_msg(id, &[], &format!("try {n}")));
            let read = tokio::time::timeout(Duration::from_millis(200), client.recv());
            if let Ok(got) = read.await {
                return got;
            }
        }
        unreachable!()
    })
    .await
    .expect("cross-node delivery back within 30 s")
}

/// Through Sentinel, the master killed (SIGKILL) mid-traffic: the nodes
/// report the outage, follow the sentinels to the promoted replica, and
/// cross-node delivery resumes well within 30 s with no client
/// reconnecting (the clients' connections are the same throughout).
#[tokio::test]
async fn a_sentinel_failover_is_followed() {
    let mut topology = common::redis::Sentinels::start();
    let first_master = topology.master_port();
    let node_at = || node_over(RedisConfig::new(topology.url()), WsPool::builder());
    let (a, b) = (node_at().await, node_at().await);
    let mut alice = a.connect("alice_room").await;
    let mut bob = b.connect("bob_room").await;
    a.pool.send(text_msg("bob", &[], "before")).unwrap();
    assert_eq!(bob.recv().await.msg, "before");
    let mut events = a.pool.events();

    let killed = std::time::Instant::now();
    topology.master.kill();
    wait_event(&mut events, |e| matches!(e, PoolEvent::ClusterDown)).await;
    // Send until one gets through: each is either refused (Unavailable) or
    // accepted; the first that bob reads proves delivery is back.
    let resumed = resend_until_read(&a, "bob", &mut bob).await;
    let took = killed.elapsed();
    assert!(resumed.msg.starts_with("try "), "{}", resumed.msg);
    // The sentinel asked may learn of the promotion a moment after the
    // one the nodes followed (sentinels tell each other every 2 s).
    let promoted = tokio::time::timeout(WAIT, async {
        while topology.master_port() == first_master {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    promoted.await.expect("the replica was promoted");
    wait_event(&mut events, |e| matches!(e, PoolEvent::ClusterUp { .. })).await;
    // Both ways, and broadcasts, on the same connections.
    b.pool.send(text_msg("alice", &[], "back")).unwrap();
    assert_eq!(alice.recv().await.msg, "back");
    a.pool.broadcast(text_msg("", &["room"], "room")).unwrap();
    assert_eq!(alice.recv().await.msg, "room");
    loop {
        // bob may still have later tries queued before the broadcast.
        if bob.recv().await.msg == "room" {
            break;
        }
    }
    let stats = a.pool.stats().cluster.unwrap();
    assert!(stats.up && stats.outages >= 1, "{stats:?}");
    eprintln!("sentinel failover: delivery resumed {took:?} after the kill");
}

/// A store that comes back behind what a node saw (a master promoted
/// after a failover lacks the last writes of the one it replaced, acted
/// out here by rewinding a channel's counter while a node's link is down)
/// is reported as `ClusterDataLost`, and the node numbers publications as
/// the store does from then on: the next ones are delivered, not taken
/// for ones seen already.
#[tokio::test]
async fn a_store_behind_what_a_node_saw_is_reported() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut bob = b.connect("bob_room").await; // B: n:B, all, c:room = 3
    for text in ["m1", "m2", "m3"] {
        a.pool.broadcast(text_msg("", &["room"], text)).unwrap();
        assert_eq!(bob.recv().await.msg, text);
    }
    let mut events = b.pool.events();
    let _: () = ::redis::cmd("SET")
        .arg(format!("{}:seq", key::channel("room")))
        .arg(1)
        .query(&mut redis.conn())
        .unwrap();
    redis.kill_pubsub_with(3);
    wait_event(&mut events, |e| matches!(e, PoolEvent::ClusterDataLost)).await;
    wait_event(&mut events, |e| matches!(e, PoolEvent::ClusterUp { .. })).await;
    assert_eq!(b.pool.stats().cluster.unwrap().data_losses, 1);
    a.pool.broadcast(text_msg("", &["room"], "after")).unwrap();
    assert_eq!(
        bob.recv().await.msg,
        "after",
        "numbered 2 again, and delivered"
    );
}

/// Rewinds channel `room`'s numbering to its first publication, as a
/// master promoted after a failover that lacks the old master's last
/// writes would have it (the counter and the history replicate together).
fn rewind_to_first(redis: &RedisServer) {
    let mut conn = redis.conn();
    let _: () = ::redis::cmd("SET")
        .arg(format!("{}:seq", key::channel("room")))
        .arg(1)
        .query(&mut conn)
        .unwrap();
    let _: () = ::redis::cmd("LTRIM")
        .arg(format!("{}:hist", key::channel("room")))
        .arg(-1)
        .arg(-1)
        .query(&mut conn)
        .unwrap();
}

/// A store that lost writes gives their numbers again: publications made
/// on it are new even where their numbers were seen (a promoted replica
/// numbers on from what it had; nodes saw the old master's later ones).
/// Live, they are delivered, and the loss is reported (`ClusterDataLost`).
#[tokio::test]
async fn numbers_given_again_by_a_store_that_lost_writes_are_delivered() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut bob = b.connect("bob_room").await;
    for text in ["m1", "m2", "m3"] {
        a.pool.broadcast(text_msg("", &["room"], text)).unwrap();
        assert_eq!(bob.recv().await.msg, text);
    }
    let mut events = b.pool.events();
    rewind_to_first(&redis);
    for text in ["n2", "n3", "n4"] {
        a.pool.broadcast(text_msg("", &["room"], text)).unwrap();
        assert_eq!(bob.recv().await.msg, text, "numbered 2, 3, 4 again");
    }
    wait_event(&mut events, |e| matches!(e, PoolEvent::ClusterDataLost)).await;
    let stats = b.pool.stats().cluster.unwrap();
    assert_eq!((stats.data_losses, stats.missed), (1, 0));
}

/// The same, found after an outage: while B's link was down the store
/// lost writes and gave their numbers again, up to the number B had seen
/// last. B's recovery tells the new publications from the ones it saw
/// (by when each was made, not by its number): its subscription gets
/// them from the history, and the loss is reported.
#[tokio::test]
async fn numbers_given_again_while_a_node_was_away_are_recovered() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    // B stays away long enough for A's traffic to happen meanwhile.
    let mut slow = RedisConfig::new(redis.url());
    slow.reconnect_delay = Duration::from_secs(2);
    let b = node_over(slow, WsPool::builder()).await;
    // Bob's arrival has B subscribed to the room in Redis.
    let _bob = b.connect("bob_room").await;
    let mut feed = b.pool.subscribe(["room"]);
    for text in ["m1", "m2", "m3"] {
        a.pool.broadcast(text_msg("", &["room"], text)).unwrap();
        assert_eq!(next(&mut feed).await, text);
    }
    let mut events = b.pool.events();
    rewind_to_first(&redis);
    redis.kill_pubsub_with(3); // B: n:B, all, c:room
    wait_event(&mut events, |e| matches!(e, PoolEvent::ClusterDown)).await;
    for text in ["n2", "n3"] {
        a.pool.broadcast(text_msg("", &["room"], text)).unwrap();
    }
    wait_event(&mut events, |e| matches!(e, PoolEvent::ClusterDataLost)).await;
    wait_event(&mut events, |e| matches!(e, PoolEvent::ClusterUp { .. })).await;
    for expected in ["n2", "n3"] {
        assert_eq!(next(&mut feed).await, expected);
    }
    a.pool.broadcast(text_msg("", &["room"], "live")).unwrap();
    assert_eq!(next(&mut feed).await, "live", "nothing twice before it");
    let stats = b.pool.stats().cluster.unwrap();
    assert_eq!((stats.data_losses, stats.missed), (1, 0));
}

/// A client connected here that another node marked away (this node's
/// link was down a moment: it looked gone, and its clients were adopted)
/// gets this node's own broadcasts once: from this node, not again from
/// a buffer when the link is back. Acted out by marking it away in Redis
/// as the adoption does.
#[tokio::test]
async fn a_local_member_marked_away_elsewhere_is_not_buffered_for() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut alice = a.connect("alice_room").await;
    let mut bob = b.connect("bob").await;
    let mut conn = redis.conn();
    let far = 4_000_000_000_000u64; // ms: not expiring in this test
    let _: () = ::redis::cmd("HSET")
        .arg(key::owner("alice"))
        .arg(&[
            "state",
            "away",
            "channels",
            "room",
            "until",
            &far.to_string(),
        ])
        .query(&mut conn)
        .unwrap();
    let _: () = ::redis::cmd("SADD")
        .arg(format!("{}:away", key::channel("room")))
        .arg("alice")
        .query(&mut conn)
        .unwrap();

    a.pool.broadcast(text_msg("", &["room"], "mine")).unwrap();
    assert_eq!(alice.recv().await.msg, "mine");
    // A's writer takes its work in order: once this reached B, the
    // broadcast's buffering round is done.
    a.pool.send(text_msg("bob", &[], "after")).unwrap();
    assert_eq!(bob.recv().await.msg, "after");
    assert_eq!(redis.buffered("alice"), 0, "not buffered for alice");
}

/// Runs a ledger: a client on A relays `N` direct messages (10 ms apart)
/// to a client on B and a broadcast every third to a channel with members
/// on both, while `faults` runs; then checks that every message was
/// delivered exactly once or reported to its sender (a receipt, or an
/// `Undelivered` event): none unaccounted, none twice. Returns a summary.
async fn ledger(a: &Node, b: &Node, faults: impl std::future::Future<Output = ()>) -> String {
    ledger_of(300, a, b, faults).await
}

/// [`ledger`] with `N` direct messages (one every 10 ms).
async fn ledger_of(
    #[allow(non_snake_case)] N: usize,
    a: &Node,
    b: &Node,
    faults: impl std::future::Future<Output = ()>,
) -> String {
    use std::collections::{HashMap, HashSet};
    let mut events_a = a.pool.events();
    let mut alice = a.connect("alice").await;
    let mut bob = b.connect("bob_room").await;
    let mut carol = a.connect("carol_room").await;
    let sender = tokio::spawn(async move {
        for i in 0..N {
            let mut direct = text_msg("bob", &[], &format!("d{i}"));
            direct.msg_id = format!("d{i}");
            alice.send(&direct).await;
            if i % 3 == 0 {
                let mut room = text_msg("", &["room"], &format!("c{i}"));
                room.msg_id = format!("c{i}");
                alice.send(&room).await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        alice
    });
    faults.await;
    let mut alice = sender.await.unwrap();

    // Everything settles: read until nothing new comes for 3 s.
    let mut got: HashMap<String, usize> = HashMap::new();
    while let Ok(msg) = tokio::time::timeout(Duration::from_secs(3), bob.recv()).await {
        *got.entry(msg.msg).or_default() += 1;
    }
    let mut reported: HashSet<String> = HashSet::new();
    while let Ok(receipt) = tokio::time::timeout(Duration::from_millis(300), alice.recv()).await {
        assert_ne!(receipt.status, 0, "alice is sent receipts only");
        reported.insert(receipt.msg_id);
    }
    let quiet = Duration::from_millis(100);
    while let Ok(Some(e)) =
        tokio::time::timeout(quiet, tokio_stream::StreamExt::next(&mut events_a)).await
    {
        if let PoolEvent::Undelivered { msg, .. } = e {
            reported.insert(msg.msg_id.clone());
        }
    }
    let mut carol_got = HashSet::new();
    while let Ok(msg) = tokio::time::timeout(Duration::from_millis(300), carol.recv()).await {
        assert!(carol_got.insert(msg.msg), "carol got a message twice");
    }

    let sent: Vec<String> = (0..N)
        .flat_map(|i| {
            let room = (i % 3 == 0).then(|| format!("c{i}"));
            std::iter::once(format!("d{i}")).chain(room)
        })
        .collect();
    let twice: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let unaccounted: Vec<_> = (sent.iter())
        .filter(|id| !got.contains_key(*id) && !reported.contains(*id))
        .collect();
    assert!(
        unaccounted.is_empty(),
        "neither delivered nor reported: {unaccounted:?}"
    );
    let rooms = (0..N).filter(|i| i % 3 == 0).count();
    assert_eq!(
        carol_got.len(),
        rooms,
        "the local member gets every room message"
    );
    let both = (sent.iter()).filter(|id| got.contains_key(*id) && reported.contains(*id));
    format!(
        "{} sent, {} delivered to B's client, {} reported, {} both (reported, then delivered after all)",
        sent.len(),
        got.len(),
        reported.len(),
        both.count()
    )
}

/// A node over `url` with a short probe and command timeout.
async fn quick_node(url: String) -> Node {
    let mut config = RedisConfig::new(url);
    config.command_timeout = Duration::from_millis(500);
    node_over(config, WsPool::builder()).await
}

/// A ledger under link faults: B's links to Redis are reset, then A's
/// held past the command timeout (a TCP proxy between each node and
/// Redis). Nothing unaccounted, nothing twice.
#[tokio::test]
async fn a_ledger_under_link_faults() {
    let redis = RedisServer::start();
    let upstream: SocketAddr = format!("127.0.0.1:{}", redis.port).parse().unwrap();
    let (pa, pb) = (
        common::proxy::Proxy::start(upstream).await,
        common::proxy::Proxy::start(upstream).await,
    );
    let (a, b) = (quick_node(pa.url()).await, quick_node(pb.url()).await);
    let faults = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        pb.reset_all();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        pa.pause();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        pa.resume();
    };
    eprintln!("ledger (link faults): {}", ledger(&a, &b, faults).await);
}

/// A ledger across a Sentinel failover: the master is SIGKILLed mid-traffic
/// and the nodes follow the promoted replica. Nothing unaccounted, nothing
/// twice.
#[tokio::test]
async fn a_ledger_across_a_sentinel_failover() {
    let mut topology = common::redis::Sentinels::start();
    let (a, b) = (
        quick_node(topology.url()).await,
        quick_node(topology.url()).await,
    );
    let faults = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        topology.master.kill();
    };
    eprintln!(
        "ledger (sentinel failover): {}",
        ledger(&a, &b, faults).await
    );
}

/// A graceful failover (`SENTINEL FAILOVER`: the master is demoted to a
/// replica, not killed, and keeps its clients' connections): the sentinels
/// announce `+switch-master` and both nodes move to the new master within
/// 2 s with nothing to write (without the announcement they stayed on the
/// demoted master past 10 s); cross-node delivery goes on, no client
/// reconnecting.
#[tokio::test]
async fn a_graceful_sentinel_failover_is_followed() {
    let topology = common::redis::Sentinels::start();
    let first_master = topology.master_port();
    let node_at = || {
        // Long leases: no lease renewal fails on the demoted master and
        // tells a node in the window this test watches.
        let mut config = RedisConfig::new(topology.url());
        config.lease = Duration::from_secs(60);
        node_over(config, WsPool::builder())
    };
    let (a, b) = (node_at().await, node_at().await);
    let mut bob = b.connect("bob").await;
    a.pool.send(text_msg("bob", &[], "before")).unwrap();
    assert_eq!(bob.recv().await.msg, "before");
    let moves = |n: &Node| n.pool.stats().cluster.unwrap().engine.counters["moves"];
    assert_eq!((moves(&a), moves(&b)), (0, 0));

    topology.failover();
    until(|| (topology.master_port()).is_some_and(|p| Some(p) != first_master)).await;
    let switched = std::time::Instant::now();
    // With nothing to write, both move: the announcement tells them.
    until(|| moves(&a) == 1 && moves(&b) == 1).await;
    assert!(
        switched.elapsed() < Duration::from_secs(2),
        "both nodes followed within 2 s: {:?}",
        switched.elapsed()
    );
    // Sends go on; once a node has followed, they are delivered again.
    let resumed = resend_until_read(&a, "bob", &mut bob).await;
    assert!(resumed.msg.starts_with("try "));
    // And B answers on the new master too.
    let mut alice = a.connect("alice").await;
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let _ = b.pool.send(text_msg("alice", &[], "back"));
            if let Ok(got) = tokio::time::timeout(Duration::from_millis(200), alice.recv()).await {
                assert_eq!(got.msg, "back");
                return;
            }
        }
    })
    .await
    .expect("B reaches A after the failover");
}

/// A direct message lost in flight (its number skipped on the node's
/// channel) is recovered from the node's direct history, a number marked
/// as buffered (`-`) is nothing to recover, and one no longer in the
/// history is reported as a gap (`ClusterGap` with an empty channel);
/// numbering goes on from there. Acted out by writing the history and the
/// counter as the send script would, then publishing a later number.
#[tokio::test]
async fn direct_messages_missed_in_flight_are_recovered_or_reported() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut bob = b.connect("bob").await;
    a.pool.send(text_msg("bob", &[], "first")).unwrap();
    assert_eq!(bob.recv().await.msg, "first");

    let node = b.pool.stats().cluster.unwrap().node;
    let hist = format!("{}:hist", key::node(&node));
    let mut conn = redis.conn();
    let entries: Vec<Vec<u8>> = ::redis::cmd("LRANGE")
        .arg(&hist)
        .arg(0)
        .arg(0)
        .query(&mut conn)
        .unwrap();
    // "1.<stamp>:<epoch>:<envelope>": the envelope of "first", under its
    // claim; later entries are stamped later.
    let colon = entries[0].iter().position(|b| *b == b':').unwrap();
    let (mark, first) = (&entries[0][..colon], entries[0][colon + 1..].to_vec());
    let stamp: u64 = std::str::from_utf8(mark)
        .unwrap()
        .strip_prefix("1.")
        .expect("number 1")
        .parse()
        .unwrap();
    let marked = |seq: u64| format!("{seq}.{}:", stamp + seq).into_bytes();
    let mut events = b.pool.events();
    let mut cmd = |args: &[&[u8]]| {
        let mut c = ::redis::cmd(std::str::from_utf8(args[0]).unwrap());
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query::<::redis::Value>(&mut conn).unwrap();
    };
    cmd(&[
        b"LPUSH",
        hist.as_bytes(),
        &[marked(2), first.clone()].concat(),
    ]);
    cmd(&[
        b"LPUSH",
        hist.as_bytes(),
        &[marked(3), b"-".to_vec()].concat(),
    ]); // went to a buffer
        // 4: gone from the history.
    cmd(&[b"SET", format!("{}:seq", key::node(&node)).as_bytes(), b"5"]);
    let channel = key::node(&node);
    let colon = first.iter().position(|b| *b == b':').unwrap();
    let (epoch, envelope) = (&first[..colon], &first[colon + 1..]);
    let frame = [b"D".as_slice(), epoch, b":", &marked(5), envelope].concat();
    cmd(&[b"PUBLISH", channel.as_bytes(), &frame]);

    assert_eq!(bob.recv().await.msg, "first", "2, from the history");
    assert_eq!(bob.recv().await.msg, "first", "5, as published");
    let gap = wait_event(&mut events, |e| matches!(e, PoolEvent::ClusterGap { .. })).await;
    assert!(
        matches!(&gap, PoolEvent::ClusterGap { channel, missed: 1 } if channel.is_empty()),
        "{gap:?}"
    );
    let stats = b.pool.stats().cluster.unwrap();
    assert_eq!((stats.recovered, stats.missed), (1, 1));
    a.pool.send(text_msg("bob", &[], "next")).unwrap();
    assert_eq!(bob.recv().await.msg, "next", "6: delivered, no false gap");
}

/// Through Sentinel, nothing to ask: with no sentinel listening, or a
/// server there that is not a sentinel, `connect` fails at once with
/// `ConnectError::Unreachable` saying which sentinel and why.
#[tokio::test]
async fn no_usable_sentinel_fails_fast() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let not_a_sentinel = RedisServer::start();
    for port in [closed, not_a_sentinel.port] {
        let url = format!("redis+sentinel://127.0.0.1:{port}/wspool");
        let connect = WsPool::builder().redis(url).connect();
        let result = tokio::time::timeout(Duration::from_secs(5), connect)
            .await
            .expect("fails at once");
        match result {
            Err(wspool::cluster::ConnectError::Unreachable(why)) => {
                assert!(why.contains(&format!("127.0.0.1:{port}")), "{why}")
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }
}

/// A Redis Cluster (three masters, each with a replica): the master that
/// owns the slot of channel `room` is killed (SIGKILL) mid-traffic. Its
/// replica is promoted, the nodes resubscribe there, and broadcasts to
/// `room` reach the other node's member again within 30 s, with no client
/// reconnecting; direct messages too.
#[tokio::test]
async fn a_redis_cluster_failover_is_followed() {
    common::logs();
    let mut cluster = common::redis::RedisCluster::start();
    let node_at = || {
        let mut config = RedisConfig::new(cluster.url());
        config.probe_interval = Duration::from_millis(500);
        node_over(config, WsPool::builder())
    };
    let (a, b) = (node_at().await, node_at().await);
    let mut bob = b.connect("bob_room").await;
    a.pool.broadcast(text_msg("", &["room"], "before")).unwrap();
    assert_eq!(bob.recv().await.msg, "before");
    let mut events = b.pool.events();

    let master = cluster.master_of(&key::channel("room"));
    let killed_port = master.port;
    let killed = std::time::Instant::now();
    master.kill();
    wait_event(&mut events, |e| matches!(e, PoolEvent::ClusterDown)).await;
    let resumed = tokio::time::timeout(Duration::from_secs(30), async {
        for n in 0.. {
            let _ = a
                .pool
                .broadcast(text_msg("", &["room"], &format!("try {n}")));
            let read = tokio::time::timeout(Duration::from_millis(200), bob.recv());
            if let Ok(got) = read.await {
                return got;
            }
        }
        unreachable!()
    })
    .await
    .expect("broadcasts on the killed shard's channel back within 30 s");
    let took = killed.elapsed();
    assert!(resumed.msg.starts_with("try "), "{}", resumed.msg);
    assert_ne!(
        cluster.master_of(&key::channel("room")).port,
        killed_port,
        "the replica was promoted"
    );
    wait_event(&mut events, |e| matches!(e, PoolEvent::ClusterUp { .. })).await;
    let direct = resend_until_read(&a, "bob", &mut bob).await;
    assert!(direct.msg.starts_with("try "), "{}", direct.msg);
    let stats = b.pool.stats().cluster.unwrap();
    assert!(stats.up && stats.outages >= 1, "{stats:?}");
    eprintln!("redis cluster failover: room's broadcasts resumed {took:?} after the kill");
}

/// A ledger across a Redis Cluster failover: the master owning bob's id is
/// SIGKILLed mid-traffic; its replica is promoted. Nothing unaccounted,
/// nothing twice.
#[tokio::test]
async fn a_ledger_across_a_redis_cluster_failover() {
    let mut cluster = common::redis::RedisCluster::start();
    let (a, b) = (
        quick_node(cluster.url()).await,
        quick_node(cluster.url()).await,
    );
    let master = cluster.master_of(&key::owner("bob"));
    let faults = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        master.kill();
    };
    eprintln!(
        "ledger (redis cluster failover): {}",
        ledger_of(800, &a, &b, faults).await
    );
}
