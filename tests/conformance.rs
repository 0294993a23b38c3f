//! The cluster's promises, one suite over every engine: the in-process
//! engine (`cluster::memory`) in `cargo test`; Redis, one instance and
//! through Sentinel (a master, a replica, three sentinels), with `cargo
//! test --features redis` (needs `redis-server` on the PATH). Each test is
//! written once against a [`Fixture`] and instantiated per engine by
//! `suite!` at the bottom. What only Redis can show (a restart, data on
//! disk, a node SIGKILLed, garbage in its channels) is in `cluster.rs`.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::*;
use wspool::{
    cluster::memory::Network, ClientConfig, Delivery, DuplicatePolicy, JoinError, PoolEvent,
    UndeliveredReason, WsPool, WsPoolBuilder,
};

/// The engine a test runs over, and what the test needs to know of it.
enum Fixture {
    Memory(Network),
    #[cfg(feature = "redis")]
    Redis(common::redis::RedisServer),
    /// Redis through three sentinels (a master and a replica).
    #[cfg(feature = "redis")]
    Sentinel(common::redis::Sentinels),
    /// A Redis Cluster: three masters, each with a replica.
    #[cfg(feature = "redis")]
    Cluster(common::redis::RedisCluster),
}

/// One node: a pool joined to the fixture's cluster, served on a free port.
struct Node {
    pool: WsPool,
    addr: SocketAddr,
}

impl Node {
    async fn connect(&self, token: &str) -> Client {
        connect(&self.pool, self.addr, token).await
    }

    /// Its id in the cluster.
    fn id(&self) -> String {
        self.pool.stats().cluster.expect("a cluster").node
    }
}

impl Fixture {
    fn memory() -> Self {
        common::logs();
        Fixture::Memory(Network::new())
    }

    #[cfg(feature = "redis")]
    fn redis() -> Self {
        Fixture::Redis(common::redis::RedisServer::start())
    }

    #[cfg(feature = "redis")]
    fn sentinel() -> Self {
        Fixture::Sentinel(common::redis::Sentinels::start())
    }

    #[cfg(feature = "redis")]
    fn cluster() -> Self {
        common::logs();
        Fixture::Cluster(common::redis::RedisCluster::start())
    }

    /// The Redis master of one instance or Sentinel, for checks of its
    /// state (no failover happens in the suite).
    #[cfg(feature = "redis")]
    fn master(&self) -> Option<&common::redis::RedisServer> {
        match self {
            Fixture::Redis(redis) => Some(redis),
            Fixture::Sentinel(topology) => Some(&topology.master),
            _ => None,
        }
    }

    /// A field of `id`'s owner hash in Redis.
    #[cfg(feature = "redis")]
    fn field(&self, id: &str, field: &str) -> Option<String> {
        match (self, self.master()) {
            (Fixture::Cluster(cluster), _) => cluster.field(id, field),
            (_, Some(redis)) => redis_field(redis, id, field),
            _ => unreachable!("no Redis in the memory fixture"),
        }
    }

    /// How many messages Redis buffers for `id`.
    #[cfg(feature = "redis")]
    fn buffered(&self, id: &str) -> i64 {
        match (self, self.master()) {
            (Fixture::Cluster(cluster), _) => cluster.buffered(id),
            (_, Some(redis)) => redis.buffered(id),
            _ => unreachable!("no Redis in the memory fixture"),
        }
    }

    async fn node(&self) -> Node {
        self.node_with(WsPool::builder()).await
    }

    async fn node_with(&self, builder: WsPoolBuilder) -> Node {
        let builder = match self {
            Fixture::Memory(network) => builder.engine(network.engine()),
            #[cfg(feature = "redis")]
            _ => {
                let url = match self {
                    Fixture::Sentinel(topology) => topology.url(),
                    Fixture::Cluster(cluster) => cluster.url(),
                    _ => self.master().expect("redis").url(),
                };
                let mut config = wspool::cluster::redis::RedisConfig::new(url);
                config.probe_interval = Duration::from_millis(200);
                if matches!(self, Fixture::Cluster(_)) {
                    // Twelve six-instance clusters at once on two cores:
                    // a command can take longer than the default 2 s
                    // there, and every command is bounded by this.
                    config.command_timeout = Duration::from_secs(6);
                }
                // A link that breaks stays down long enough for a test to
                // send meanwhile, also on a loaded machine.
                config.reconnect_delay = Duration::from_secs(3);
                builder.redis_config(config)
            }
        };
        let pool = builder.connect().await.expect("joins the cluster");
        let addr = start(&pool).await;
        Node { pool, addr }
    }

    /// Waits until the cluster has taken `id` as away (a release is done
    /// on the node's tasks, after the disconnect event).
    async fn settle_away(&self, id: &str) {
        match self {
            // Released before the disconnect is reported.
            Fixture::Memory(network) => assert_eq!(network.held(id), Some(0)),
            #[cfg(feature = "redis")]
            _ => until(|| self.field(id, "state").as_deref() == Some("away")).await,
        }
    }

    /// Waits until `n` messages for `id` are held by the cluster (away, or
    /// its node's link cut).
    async fn settle_held(&self, id: &str, n: i64) {
        match self {
            // Held as they are sent; a cut node's are kept in its backlog.
            Fixture::Memory(network) => {
                if let Some(held) = network.held(id) {
                    assert_eq!(held as i64, n);
                }
            }
            #[cfg(feature = "redis")]
            _ => until(|| self.buffered(id) == n).await,
        }
    }

    /// Waits until the cluster holds the `n` messages sent to `id` on
    /// `node` while the node's link is cut (broadcasts on `last.0`, the
    /// last of them `last.1`, then the direct message `direct`): in `id`'s
    /// offline buffer, its node taken as gone. In a Redis Cluster they may
    /// be held in the histories instead: the cut kills the node's
    /// connections by name, and the redis client can reconnect and
    /// resubscribe one of them by itself before the sends (seen now and
    /// then in CI: the others saw the node listening, published to it,
    /// and it recovered what it missed from the histories). Either way
    /// they reach `id` after the heal, in order, once: what the test holds
    /// the cluster to.
    async fn settle_missed(&self, node: &Node, id: &str, last: (&str, &str), direct: &str, n: i64) {
        match self {
            #[cfg(feature = "redis")]
            Fixture::Cluster(cluster) => {
                let channel = format!("{}:hist", common::redis::key::channel(last.0));
                let node = format!("{}:hist", common::redis::key::node(&node.id()));
                let buffer = common::redis::key::buffer(id);
                // Each kept one way or the other (the two shards involved
                // may have seen the node differently).
                let held = |text: &str, history: &str| {
                    cluster.list_has(&buffer, text) || cluster.list_has(history, text)
                };
                until(|| held(last.1, &channel) && held(direct, &node)).await;
            }
            _ => {
                let _ = (node, last, direct);
                self.settle_held(id, n).await
            }
        }
    }

    /// Breaks `node`'s link to the cluster (it reports `ClusterDown`);
    /// [`heal`](Self::heal) brings it back.
    async fn cut(&self, node: &Node) {
        let mut events = node.pool.events();
        match self {
            Fixture::Memory(network) => assert!(network.cut(&node.id())),
            #[cfg(feature = "redis")]
            Fixture::Cluster(cluster) => cluster.kill_connections_of(&node.id()),
            #[cfg(feature = "redis")]
            _ => {
                // Its pub/sub connection: its node channel, `all`, and one
                // per channel it has members in.
                (self.master().expect("redis")).kill_pubsub_with(node.pool.channels().len() + 2)
            }
        }
        wait_event(&mut events, |e| matches!(e, PoolEvent::ClusterDown)).await;
    }

    /// Brings `node`'s link back (Redis: it reconnects by itself).
    fn heal(&self, node: &Node) {
        match self {
            Fixture::Memory(network) => assert!(network.heal(&node.id())),
            #[cfg(feature = "redis")]
            _ => {}
        }
    }
}

#[cfg(feature = "redis")]
fn redis_field(redis: &common::redis::RedisServer, id: &str, field: &str) -> Option<String> {
    ::redis::cmd("HGET")
        .arg(common::redis::key::owner(id))
        .arg(field)
        .query(&mut redis.conn())
        .unwrap()
}

fn undelivered(e: &PoolEvent) -> Option<(&str, UndeliveredReason)> {
    match e {
        PoolEvent::Undelivered { to, reason, .. } => Some((to.as_str(), *reason)),
        _ => None,
    }
}

// ----- the suite -----

/// `send` on one node reaches an id on another; an id no node has is
/// reported `Undelivered` (`NotConnected`).
async fn send_routes_to_the_owner(f: Fixture) {
    let (a, b) = (f.node().await, f.node().await);
    let mut bob = b.connect("bob").await;
    assert_eq!(
        a.pool.send(text_msg("bob", &[], "hi from A")),
        Ok(Delivery::Forwarded)
    );
    assert_eq!(bob.recv().await.msg, "hi from A");

    let mut events = a.pool.events();
    assert_eq!(
        a.pool.send(text_msg("nobody", &[], "lost")),
        Ok(Delivery::Forwarded)
    );
    let e = wait_event(&mut events, |e| undelivered(e).is_some()).await;
    assert_eq!(
        undelivered(&e),
        Some(("nobody", UndeliveredReason::NotConnected))
    );
}

/// A client on A relays to an id on B, stamped; a relay to an id no node
/// has earns the sender a status-4 receipt; B's client answers A's.
async fn relays_and_receipts_cross_nodes(f: Fixture) {
    let (a, b) = (f.node().await, f.node().await);
    let mut alice = a.connect("alice").await;
    let mut bob = b.connect("bob").await;

    alice.send(&text_msg("bob", &[], "psst")).await;
    let got = bob.recv().await;
    assert_eq!(
        (got.msg.as_str(), got.from_client_id.as_str()),
        ("psst", "alice")
    );
    let mut to_carol = text_msg("carol", &[], "anyone?");
    to_carol.msg_id = "m-1".into();
    alice.send(&to_carol).await;
    let receipt = alice.recv().await;
    assert_eq!(
        (receipt.status, receipt.msg_id.as_str()),
        (wspool::status::NOT_CONNECTED, "m-1")
    );
    bob.send(&text_msg("alice", &[], "back")).await;
    assert_eq!(alice.recv().await.msg, "back");
}

/// A broadcast from a node with no members reaches every member on every
/// other node exactly once, a member of two target channels included.
async fn broadcasts_reach_each_member_once(f: Fixture) {
    let (a, b, c) = (f.node().await, f.node().await, f.node().await);
    let mut a1 = a.connect("a1_room1").await;
    let mut b1 = b.connect("b1_room1_room2").await;
    let mut b2 = b.connect("b2_room2").await;
    let n = (c.pool.broadcast(text_msg("", &["room1", "room2"], "news"))).unwrap();
    assert_eq!(n, 0, "C has no members itself");
    for client in [&mut a1, &mut b1, &mut b2] {
        assert_eq!(client.recv().await.msg, "news");
    }
    // Nothing twice: the next frame each gets is the next message.
    for (node, id, client) in [
        (&a, "a1", &mut a1),
        (&b, "b1", &mut b1),
        (&b, "b2", &mut b2),
    ] {
        node.pool.send(text_msg(id, &[], "after")).unwrap();
        assert_eq!(client.recv().await.msg, "after");
    }
}

/// `broadcast_all` reaches every client on every node; the counted form
/// answers how many on every node.
async fn broadcast_all_reaches_every_node(f: Fixture) {
    let (a, b) = (f.node().await, f.node().await);
    let mut x = a.connect("x").await;
    let mut y = b.connect("y_room").await;
    let mut z = b.connect("z").await;
    assert_eq!(a.pool.broadcast_all(text_msg("", &[], "all")), 1);
    for client in [&mut x, &mut y, &mut z] {
        assert_eq!(client.recv().await.msg, "all");
    }
    let counted = a.pool.cluster_broadcast_all(text_msg("", &[], "counted"));
    assert_eq!(counted.await, Ok(3));
    let in_room = a.pool.cluster_broadcast(text_msg("", &["room"], "room"));
    assert_eq!(in_room.await, Ok(1));
    for client in [&mut x, &mut y, &mut z] {
        assert_eq!(client.recv().await.msg, "counted");
    }
    assert_eq!(y.recv().await.msg, "room");
}

/// One connection per id, cluster-wide: connecting on B closes A's with
/// 4001, and the id is routed to B from then on (A's stale claim fenced).
async fn one_connection_per_id(f: Fixture) {
    let (a, b) = (f.node().await, f.node().await);
    let mut old = a.connect("alice").await;
    let mut new = b.connect("alice").await;
    assert_eq!(old.close_code().await, wspool::close_code::REPLACED);
    assert_eq!(
        a.pool.send(text_msg("alice", &[], "to the new one")),
        Ok(Delivery::Forwarded)
    );
    assert_eq!(new.recv().await.msg, "to the new one");
}

/// Three nodes race to register one id: exactly one connection is left,
/// the others are told 4001, and the cluster routes to the survivor.
async fn concurrent_connects_leave_exactly_one(f: Fixture) {
    let nodes = [f.node().await, f.node().await, f.node().await];
    let mut registered: Vec<_> = nodes.iter().map(|n| n.pool.events()).collect();
    let (x, y, z) = tokio::join!(
        try_connect(nodes[0].addr, "/ws", Some("dup")),
        try_connect(nodes[1].addr, "/ws", Some("dup")),
        try_connect(nodes[2].addr, "/ws", Some("dup")),
    );
    let mut clients = [x.unwrap(), y.unwrap(), z.unwrap()];
    for events in &mut registered {
        wait_event(events, |e| matches!(e, PoolEvent::Connected(_))).await;
    }
    let owner = tokio::time::timeout(WAIT, async {
        loop {
            let list = nodes[0].pool.cluster_clients().await.unwrap();
            let connected: usize = nodes.iter().map(|n| n.pool.clients().len()).sum();
            if connected == 1 && list.len() == 1 {
                return list[0].node.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("one connection left");
    let survivor = (nodes.iter())
        .position(|n| n.pool.clients().len() == 1)
        .unwrap();
    assert_eq!(owner, Some(nodes[survivor].id()));
    for (i, client) in clients.iter_mut().enumerate() {
        if i != survivor {
            assert_eq!(client.close_code().await, wspool::close_code::REPLACED);
        }
    }
    (nodes[(survivor + 1) % 3].pool)
        .send(text_msg("dup", &[], "to the one"))
        .unwrap();
    assert_eq!(clients[survivor].recv().await.msg, "to the one");
}

/// With `DuplicatePolicy::Refuse`, a second connection of an id on another
/// node is refused with 409 before the upgrade, by the provided route and
/// by `WsPool::accept` alike; the first stays.
async fn refuse_policy_holds_across_nodes(f: Fixture) {
    use axum::{extract::WebSocketUpgrade, routing::get, Router};
    let refuse = || WsPool::builder().duplicate_policy(DuplicatePolicy::Refuse);
    let (a, b) = (f.node_with(refuse()).await, f.node_with(refuse()).await);
    let mut first = a.connect("alice").await;
    match try_connect(b.addr, "/ws", Some("alice")).await {
        Err((status, _)) => assert_eq!(status, 409),
        Ok(_) => panic!("a second connection of alice was accepted on B"),
    }
    let own = Router::new()
        .route(
            "/own",
            get(|pool: WsPool, up: WebSocketUpgrade| async move {
                pool.accept(up, ClientConfig::new("alice")).await
            }),
        )
        .layer(b.pool.layer());
    let own = serve(own).await;
    match try_connect(own, "/own", None).await {
        Err((status, _)) => assert_eq!(status, 409, "accept refuses before the upgrade"),
        Ok(_) => panic!("accept upgraded a duplicate of alice"),
    }
    assert_eq!(b.pool.stats().refused.duplicate_id, 2);
    b.pool.send(text_msg("alice", &[], "still here")).unwrap();
    assert_eq!(first.recv().await.msg, "still here");
}

/// A client that leaves A and comes back on B gets what was sent to it
/// meanwhile (direct and channel messages), in order, once, then live
/// traffic; a counted broadcast counts it while it is away.
async fn offline_buffer_follows_the_client(f: Fixture) {
    let (a, b) = (f.node().await, f.node().await);
    let _peer = b.connect("peer_room").await;
    let mut events = a.pool.events();
    let alice = a.connect("alice_room").await;
    assert!(alice.close_gracefully().await.is_empty());
    wait_event(&mut events, |e| matches!(e, PoolEvent::Disconnected { .. })).await;
    f.settle_away("alice").await;

    assert_eq!(
        b.pool.send(text_msg("alice", &[], "one")),
        Ok(Delivery::Forwarded)
    );
    let n = (b.pool.cluster_broadcast(text_msg("", &["room"], "two"))).await;
    assert_eq!(n, Ok(2), "peer on B, and alice's buffer");
    b.pool.send(text_msg("alice", &[], "three")).unwrap();
    f.settle_held("alice", 3).await;

    let mut back = b.connect("alice_room").await;
    for expected in ["one", "two", "three"] {
        assert_eq!(back.recv().await.msg, expected);
    }
    b.pool.send(text_msg("alice", &[], "live")).unwrap();
    assert_eq!(back.recv().await.msg, "live");
}

/// A client that does not come back within `offline_ttl`: what was held
/// for it is reported once, `Undelivered` (`OfflineTimeout`), with a
/// status-3 receipt to the client it was relayed from; the id is then
/// unknown.
async fn a_closed_offline_window_is_reported(f: Fixture) {
    let short = || WsPool::builder().offline_ttl(Duration::from_millis(300));
    let (a, b) = (f.node_with(short()).await, f.node_with(short()).await);
    let mut events_a = a.pool.events();
    let mut events_b = b.pool.events();
    let alice = a.connect("alice").await;
    let mut bob = b.connect("bob").await;
    assert!(alice.close_gracefully().await.is_empty());
    f.settle_away("alice").await;
    let mut ping = text_msg("alice", &[], "are you there?");
    ping.msg_id = "m-7".into();
    bob.send(&ping).await;

    let receipt = bob.recv().await;
    assert_eq!(
        (receipt.status, receipt.msg_id.as_str()),
        (wspool::status::EXPIRED, "m-7")
    );
    let timeout =
        |e: &PoolEvent| undelivered(e) == Some(("alice", UndeliveredReason::OfflineTimeout));
    let reported = tokio::select! {
        e = wait_event(&mut events_a, timeout) => e,
        e = wait_event(&mut events_b, timeout) => e,
    };
    let PoolEvent::Undelivered { msg, .. } = reported else {
        unreachable!()
    };
    assert_eq!(msg.msg, "are you there?");

    let mut events = a.pool.events();
    a.pool.send(text_msg("alice", &[], "late")).unwrap();
    let e = wait_event(&mut events, |e| undelivered(e).is_some()).await;
    assert_eq!(
        undelivered(&e),
        Some(("alice", UndeliveredReason::NotConnected))
    );
}

/// Presence is cluster-wide: any node lists every node's clients with the
/// node each is on, and every node's members of a channel; a leave and a
/// disconnect on one node show on the others.
async fn presence_is_cluster_wide(f: Fixture) {
    let (a, b) = (f.node().await, f.node().await);
    let _alice = a.connect("alice_room").await;
    let bob = b.connect("bob_room").await;

    let mut all = a.pool.cluster_clients().await.unwrap();
    all.sort_by(|x, y| x.id.cmp(&y.id));
    let ids: Vec<&str> = all.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["alice", "bob"]);
    assert_eq!(all[0].node, Some(a.id()));
    assert_eq!(all[1].node, Some(b.id()));
    assert_eq!(all[1].channels, ["room"]);
    let found = a.pool.cluster_client("bob").await.unwrap();
    assert_eq!(found.and_then(|c| c.node), Some(b.id()));
    let mut members = b.pool.cluster_channel_members("room").await.unwrap();
    members.sort();
    assert_eq!(members, ["alice", "bob"]);

    b.pool.client("bob").unwrap().leave("room");
    let members_seen_by_a = || async { a.pool.cluster_channel_members("room").await.unwrap() };
    tokio::time::timeout(WAIT, async {
        while members_seen_by_a().await.len() != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the leave shows on A");
    drop(bob);
    tokio::time::timeout(WAIT, async {
        while a.pool.cluster_clients().await.unwrap().len() != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the disconnect shows on A");
    assert!(a.pool.cluster_client("bob").await.unwrap().is_none());
}

/// Kick, join and leave act on a client wherever it is, from the pool and
/// from the admin API of any node: a join on A adds a channel to B's
/// client (broadcasts then reach it), a leave removes it, a kick closes it
/// with 4002; an id no node has is `NotConnected` (404).
async fn kick_join_and_leave_anywhere(f: Fixture) {
    let (a, b) = (f.node().await, f.node().await);
    let mut bob = b.connect("bob").await;

    assert_eq!(a.pool.cluster_join("bob", "news").await, Ok(true));
    assert_eq!(a.pool.cluster_join("bob", "news").await, Ok(false));
    assert_eq!(b.pool.channel_members("news"), ["bob"]);
    let reached = a.pool.cluster_broadcast(text_msg("", &["news"], "joined"));
    assert_eq!(reached.await, Ok(1));
    assert_eq!(bob.recv().await.msg, "joined");
    assert!(matches!(
        a.pool.cluster_join("bob", "bad channel").await,
        Err(JoinError::InvalidChannel(_))
    ));
    assert_eq!(
        a.pool.cluster_join("nobody", "news").await,
        Err(JoinError::NotConnected)
    );

    let (status, body) = json_call(a.addr, "PUT", "/api/clients/bob/channels/sport", "").await;
    assert_eq!((status, body["joined"].as_bool()), (200, Some(true)));
    let (status, body) = json_call(a.addr, "DELETE", "/api/clients/bob/channels/news", "").await;
    assert_eq!((status, body["left"].as_bool()), (200, Some(true)));
    assert_eq!(a.pool.cluster_leave("bob", "news").await, Ok(false));
    let mut channels = b.pool.client("bob").unwrap().info().channels;
    channels.sort();
    assert_eq!(channels, ["sport"]);
    let (status, _) = json_call(a.addr, "PUT", "/api/clients/nobody/channels/x", "").await;
    assert_eq!(status, 404);

    assert_eq!(a.pool.cluster_disconnect("bob").await, Ok(true));
    assert_eq!(bob.close_code().await, wspool::close_code::KICKED);
    assert_eq!(a.pool.cluster_disconnect("nobody").await, Ok(false));
}

/// What a node missed while its link was down reaches its clients when the
/// link is back, in order, once, with no client traffic: `ClusterDown`,
/// then `ClusterUp`; while down, its own cross-node sends fail with
/// `Unavailable` and its local clients are still served.
async fn missed_traffic_is_recovered(f: Fixture) {
    let (a, b) = (f.node().await, f.node().await);
    let mut bob = b.connect("bob_room").await;
    let mut local = b.connect("local").await;
    a.pool.broadcast(text_msg("", &["room"], "before")).unwrap();
    assert_eq!(bob.recv().await.msg, "before");
    let mut events = b.pool.events();

    f.cut(&b).await;
    assert!(matches!(
        b.pool.send(text_msg("somebody-on-a", &[], "x")),
        Err(wspool::SendError::Unavailable(_))
    ));
    b.pool.send(text_msg("local", &[], "still served")).unwrap();
    assert_eq!(local.recv().await.msg, "still served");
    for text in ["m1", "m2", "m3"] {
        a.pool.broadcast(text_msg("", &["room"], text)).unwrap();
    }
    a.pool.send(text_msg("bob", &[], "direct")).unwrap();
    f.settle_missed(&b, "bob", ("room", "m3"), "direct", 4)
        .await;
    f.heal(&b);

    wait_event(&mut events, |e| matches!(e, PoolEvent::ClusterUp { .. })).await;
    for expected in ["m1", "m2", "m3", "direct"] {
        assert_eq!(bob.recv().await.msg, expected);
    }
    let stats = b.pool.stats().cluster.unwrap();
    assert!(stats.up);
    assert_eq!(stats.outages, 1);
    assert!(stats.recovered >= 4, "at least what bob got: {stats:?}");
    a.pool.broadcast(text_msg("", &["room"], "live")).unwrap();
    assert_eq!(bob.recv().await.msg, "live", "nothing twice before it");
}

/// The in-process engine keeps at most 1,000 messages for a pool whose
/// link is cut: past that the oldest go, and the heal reports them as a
/// gap (`*`) and delivers the rest, in order.
#[tokio::test]
async fn memory_keeps_a_bounded_backlog_for_a_cut_pool() {
    let f = Fixture::memory();
    let (a, b) = (f.node().await, f.node().await);
    let mut bob = b.connect("bob_room").await;
    let mut events = b.pool.events();
    assert_eq!(b.pool.stats().cluster.unwrap().last_gap_at, None);
    f.cut(&b).await;
    let before = std::time::SystemTime::now();
    for i in 0..1005 {
        let msg = text_msg("", &["room"], &format!("m{i}"));
        a.pool.broadcast(msg).unwrap();
    }
    f.heal(&b);
    let gap = wait_event(&mut events, |e| matches!(e, PoolEvent::ClusterGap { .. })).await;
    assert!(
        matches!(&gap, PoolEvent::ClusterGap { channel, missed: 5 } if channel == "*"),
        "{gap:?}"
    );
    for i in 5..1005 {
        assert_eq!(bob.recv().await.msg, format!("m{i}"));
    }
    let stats = b.pool.stats().cluster.unwrap();
    assert_eq!((stats.recovered, stats.missed), (1000, 5));
    // When, for the admin surface's "last gap".
    let since = before.duration_since(std::time::UNIX_EPOCH).unwrap();
    let at = stats.last_gap_at.expect("the gap's time");
    assert!(at >= since.as_millis() as u64, "{at} {since:?}");
    let report = b.pool.cluster_nodes().await.remove(0);
    assert_eq!((report.missed, report.last_gap_at), (5, Some(at)));
}

/// Runs each test of the suite over each engine.
macro_rules! suite {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Fixture::memory()).await
                }
            )*
        }
        #[cfg(feature = "redis")]
        mod redis {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Fixture::redis()).await
                }
            )*
        }
        #[cfg(feature = "redis")]
        mod sentinel {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Fixture::sentinel()).await
                }
            )*
        }
        #[cfg(feature = "redis")]
        mod redis_cluster {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Fixture::cluster()).await
                }
            )*
        }
    };
}

suite!(
    send_routes_to_the_owner,
    relays_and_receipts_cross_nodes,
    broadcasts_reach_each_member_once,
    broadcast_all_reaches_every_node,
    one_connection_per_id,
    concurrent_connects_leave_exactly_one,
    refuse_policy_holds_across_nodes,
    offline_buffer_follows_the_client,
    a_closed_offline_window_is_reported,
    presence_is_cluster_wide,
    kick_join_and_leave_anywhere,
    missed_traffic_is_recovered,
);
