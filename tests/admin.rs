//! The admin surface (`wspool::admin`): mounted only with a decision about
//! who may use it, nested anywhere, and showing every node of a cluster.
//! Real servers on 127.0.0.1:0, real HTTP and WebSocket clients.

mod common;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::Router;
use common::{connect, http, http_with, serve, text_msg, until_async, WAIT};
use parking_lot::Mutex;
use wspool::{admin::Admin, cluster::memory::Network, Rejection, WsPool};

const TOKEN: (&str, &str) = ("authorization", "Bearer s3cret");

/// `pool`'s provided route, and the admin surface `admin` nested at
/// `/ops`.
async fn start(pool: &WsPool, admin: Admin) -> SocketAddr {
    let app = Router::new()
        .merge(wspool::route())
        .nest("/ops", admin.router())
        .layer(pool.layer());
    serve(app).await
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

/// With an authorisation hook, every request passes it first: without the
/// token the page, the API and the streams answer the hook's 401 and
/// nothing is done (a kick without it leaves the client connected); with
/// it, they answer. The hook sees the method, the path as the admin
/// router sees it, and the client's address.
#[tokio::test]
async fn an_authorized_surface_answers_only_whom_the_hook_lets_in() {
    let pool = WsPool::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let admin = Admin::authorize(move |req| {
        log.lock().push((
            req.method.to_string(),
            req.uri.path().to_owned(),
            req.remote_addr,
        ));
        let ok = req.headers.get(TOKEN.0).is_some_and(|v| v == TOKEN.1);
        async move {
            match ok {
                true => Ok(()),
                false => Err(Rejection::unauthorized("admin token required")),
            }
        }
    });
    let addr = start(&pool, admin).await;
    let mut alice = connect(&pool, addr, "alice_room").await;

    for (method, path) in [
        ("GET", "/ops/dashboard"),
        ("GET", "/ops/api/clients"),
        ("GET", "/ops/api/nodes"),
        ("GET", "/ops/api/nodes/stream"),
        ("GET", "/ops/api/stats/stream"),
        ("DELETE", "/ops/api/clients/alice"),
    ] {
        let (status, _, body) = http_with(addr, method, path, &[], "").await;
        assert_eq!(status, 401, "{method} {path}: {body}");
        assert!(body.contains("admin token required"), "{body}");
    }
    // The refused kick did nothing: alice still gets messages.
    pool.send(text_msg("alice", &[], "still here")).unwrap();
    assert_eq!(alice.recv().await.msg, "still here");
    {
        let seen = seen.lock();
        let (method, path, from) = seen.last().unwrap().clone();
        assert_eq!(
            (method.as_str(), path.as_str()),
            ("DELETE", "/api/clients/alice")
        );
        assert_eq!(from.map(|a| a.ip()), Some([127, 0, 0, 1].into()));
    }

    let (status, _, page) = http_with(addr, "GET", "/ops/dashboard", &[TOKEN], "").await;
    assert_eq!(status, 200);
    assert!(page.contains("<title>wspool dashboard</title>"));
    let (status, _, list) = http_with(addr, "GET", "/ops/api/clients", &[TOKEN], "").await;
    assert_eq!(status, 200);
    assert_eq!(json(&list)[0]["id"], "alice");
    let (status, _, _) = http_with(addr, "DELETE", "/ops/api/clients/alice", &[TOKEN], "").await;
    assert_eq!(status, 200);
    assert_eq!(alice.close_code().await, wspool::close_code::KICKED);
}

/// Opened explicitly for local use, it answers anyone, wherever it is
/// nested: the page finds its API beside itself, and `/api/nodes` shows
/// the single node as it is.
#[tokio::test]
async fn an_open_surface_answers_anyone_wherever_it_is_nested() {
    let pool = WsPool::new();
    let addr = start(&pool, Admin::open_for_local_use()).await;
    let (status, head, page) = http_with(addr, "GET", "/ops/dashboard", &[], "").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(page.contains("location.pathname.replace(/\\/dashboard\\/?$/, '')"));
    assert!(page.contains("BASE + '/api/nodes/stream'"));

    let _alice = connect(&pool, addr, "alice_room").await;
    let _bob = connect(&pool, addr, "bob_room_lobby").await;
    let (status, body) = http(addr, "GET", "/ops/api/nodes", "").await;
    assert_eq!(status, 200);
    let nodes = json(&body);
    assert_eq!(nodes.as_array().unwrap().len(), 1, "{nodes}");
    let me = &nodes[0];
    assert_eq!(me["this"], true);
    assert_eq!(me["up"], true);
    assert_eq!(me["node"], serde_json::Value::Null);
    assert_eq!(me["connections"], 2);
    assert_eq!(me["channels"], 2);
    assert_eq!(me["lastGapAt"], serde_json::Value::Null);
    // Not under the prefix: nothing.
    let (status, _) = http(addr, "GET", "/api/nodes", "").await;
    assert_eq!(status, 404);
}

/// Two pools over one in-process network: either node's surface shows
/// both nodes (the answering one first) with their connections and
/// message rates, the clients of both with their node, a cut link as
/// down, and kicks, joins and leaves reach a client on the other node.
#[tokio::test]
async fn the_surface_shows_and_drives_the_whole_cluster() {
    let network = Network::new();
    let node = || {
        let network = network.clone();
        async move {
            let pool = (WsPool::builder().engine(network.engine()))
                .connect()
                .await
                .unwrap();
            let addr = start(&pool, Admin::open_for_local_use()).await;
            let name = pool.stats().cluster.unwrap().node;
            (pool, addr, name)
        }
    };
    let (a, a_addr, a_name) = node().await;
    let (b, b_addr, b_name) = node().await;
    let mut bob = connect(&b, b_addr, "bob_room").await;
    let _alice = connect(&a, a_addr, "alice_room").await;

    let nodes = || async { json(&http(a_addr, "GET", "/ops/api/nodes", "").await.1) };
    let view = nodes().await;
    assert_eq!(view[0]["node"], *a_name);
    assert_eq!(view[0]["this"], true);
    assert_eq!(view[1]["node"], *b_name);
    assert_eq!(view[1]["this"], false);
    assert_eq!(view[1]["connections"], 1);
    assert_eq!(view[1]["up"], true);

    // b's clients send; a sees b's rate (taken over a second or more).
    let rated = tokio::time::timeout(WAIT, async {
        loop {
            for n in 0..20 {
                bob.send(&text_msg("", &["room"], &format!("n{n}"))).await;
            }
            if nodes().await[1]["messagesInPerSec"].as_f64().unwrap() > 0.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    rated.await.expect("b's rate seen from a");

    let (_, clients) = http(a_addr, "GET", "/ops/api/clients", "").await;
    let clients = json(&clients);
    let node_of = |id: &str| {
        let c = clients.as_array().unwrap().iter().find(|c| c["id"] == id);
        c.map(|c| c["node"].clone())
    };
    assert_eq!(node_of("alice"), Some(a_name.clone().into()));
    assert_eq!(node_of("bob"), Some(b_name.clone().into()));

    // Join and leave a client on the other node, through a's surface.
    let (status, body) = http(a_addr, "PUT", "/ops/api/clients/bob/channels/lobby", "").await;
    assert_eq!((status, json(&body)["joined"].clone()), (200, true.into()));
    assert!(b
        .channel_members("lobby")
        .iter()
        .any(|id| id.as_ref() == "bob"));
    let (status, body) = http(a_addr, "DELETE", "/ops/api/clients/bob/channels/lobby", "").await;
    assert_eq!((status, json(&body)["left"].clone()), (200, true.into()));

    // A cut link shows as down on both sides: b sees itself alone and
    // down, a sees b down.
    assert!(network.cut(&b_name));
    let view = json(&http(b_addr, "GET", "/ops/api/nodes", "").await.1);
    assert_eq!(view.as_array().unwrap().len(), 1, "{view}");
    assert_eq!(view[0]["up"], false, "{view}");
    let view = nodes().await;
    assert_eq!(view[0]["up"], true, "{view}");
    assert_eq!(view[1]["up"], false, "{view}");
    assert!(network.heal(&b_name));
    until_async(|| async { nodes().await[1]["up"] == true }).await;
    assert!(nodes().await[1]["outages"].as_u64().unwrap() >= 1);

    // Kick the client on the other node.
    let (status, _) = http(a_addr, "DELETE", "/ops/api/clients/bob", "").await;
    assert_eq!(status, 200);
    assert_eq!(bob.close_code().await, wspool::close_code::KICKED);
    until_async(|| async { nodes().await[1]["connections"] == 0 }).await;
}

/// `/api/nodes/stream` feeds the dashboard: an `event: nodes` with every
/// node's report, once a second.
#[tokio::test]
async fn the_nodes_stream_reports_every_second() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pool = WsPool::new();
    let addr = start(&pool, Admin::open_for_local_use()).await;
    let _alice = connect(&pool, addr, "alice").await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /ops/api/nodes/stream HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let started = tokio::time::Instant::now();
    tokio::time::timeout(WAIT, async {
        while seen.matches("event: nodes").count() < 2 {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "stream ended: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await
    .expect("two nodes events");
    assert!(started.elapsed() >= Duration::from_millis(900), "paced");
    assert!(seen.contains("content-type: text/event-stream"));
    assert!(seen.contains(r#""connections":1"#), "{seen}");
}
