//! The chat example (PROTOCOL.md section 8): its page, its flags and its
//! JSON admin API, served for real and driven over HTTP.

mod common;

#[allow(dead_code)]
#[path = "../examples/chat.rs"]
mod chat;

use clap::Parser;
use common::*;
use serde_json::json;
use wspool::{PoolEvent, WsPool};

async fn start_example(args: &[&str]) -> (WsPool, std::net::SocketAddr) {
    let args = chat::Args::parse_from(std::iter::once("chat").chain(args.iter().copied()));
    let pool = chat::pool(&args);
    let addr = serve(chat::app(&pool, &args)).await;
    (pool, addr)
}

/// The flags set the pool's knobs; `--addr` defaults to 127.0.0.1:3000.
#[test]
fn flags_configure_the_pool() {
    let args = chat::Args::parse_from([
        "chat",
        "--message-ttl-secs",
        "7",
        "--offline-ttl-secs",
        "0",
        "--slow-client-timeout-secs",
        "3",
        "--queue-len",
        "5",
        "--max-message-size",
        "999",
        "--addr",
        "0.0.0.0:8080",
    ]);
    let pool = chat::pool(&args);
    assert_eq!(
        (
            pool.config().queue_max_messages(),
            pool.config().max_message_size()
        ),
        (5, 999)
    );
    assert_eq!(args.addr.to_string(), "0.0.0.0:8080");
    let c = pool.config();
    assert_eq!(
        (
            c.message_ttl().as_secs(),
            c.offline_ttl().as_secs(),
            c.slow_client_timeout().as_secs()
        ),
        (7, 0, 3)
    );
    assert_eq!(
        chat::Args::parse_from(["chat"]).addr.to_string(),
        "127.0.0.1:3000"
    );
}

/// `--ping-interval-secs` and `--write-timeout-secs` set their knobs; unset,
/// the library's defaults hold (the ping following a short idle timeout);
/// a ping interval not shorter than the idle timeout is refused.
#[test]
fn ping_and_write_timeout_flags() {
    let parse =
        |args: &[&str]| chat::Args::parse_from(std::iter::once("chat").chain(args.iter().copied()));
    let c = chat::pool(&parse(&[
        "--ping-interval-secs",
        "7",
        "--write-timeout-secs",
        "3",
    ]));
    assert_eq!(
        (
            c.config().ping_interval().as_secs(),
            c.config().write_timeout().as_secs()
        ),
        (7, 3)
    );
    let defaults = WsPool::new();
    let c = chat::pool(&parse(&[]));
    assert_eq!(
        c.config().ping_interval(),
        defaults.config().ping_interval()
    );
    assert_eq!(
        c.config().write_timeout(),
        defaults.config().write_timeout()
    );
    let c = chat::pool(&parse(&["--idle-timeout-secs", "10"]));
    assert_eq!(c.config().ping_interval().as_secs(), 5);
    let refused = chat::try_pool(&parse(&[
        "--idle-timeout-secs",
        "10",
        "--ping-interval-secs",
        "25",
    ]));
    assert!(matches!(
        refused,
        Err(wspool::ConfigError::PingNotBeforeIdle { .. })
    ));
}

/// `/` serves the chat page, which uses the JavaScript client (served at
/// `/wspool-client.js`, the committed bundle) in JSON mode.
#[tokio::test]
async fn serves_the_page_and_the_client() {
    let (_pool, addr) = start_example(&[]).await;
    let (status, body) = http(addr, "GET", "/", "").await;
    assert_eq!(status, 200);
    assert!(body.contains("<title>wspool chat</title>"));
    assert!(body.contains("from '/wspool-client.js'"));
    assert!(body.contains("format: 'json'"));
    let (status, js) = http(addr, "GET", "/wspool-client.js", "").await;
    assert_eq!(status, 200);
    assert_eq!(js, chat::CLIENT_JS);
    assert!(js.contains("WsPoolClient"));
}

/// send, broadcast and broadcast_all over HTTP, with their error answers.
#[tokio::test]
async fn api_send_and_broadcast() {
    let (pool, addr) = start_example(&[]).await;
    let mut alice = connect_json(&pool, addr, "alice_room1").await;
    let mut bob = connect(&pool, addr, "bob_room1").await;

    let (s, v) = json_call(
        addr,
        "POST",
        "/api/send",
        r#"{"toClientId":"alice","msg":"hi from curl"}"#,
    )
    .await;
    assert_eq!(
        (s, v),
        (200, json!({"recipients": 1, "delivery": "queued"}))
    );
    assert_eq!(alice.recv().await.msg, "hi from curl");

    let (s, v) = json_call(
        addr,
        "POST",
        "/api/broadcast",
        r#"{"channel":["room1"],"msg":"room"}"#,
    )
    .await;
    assert_eq!((s, v), (200, json!({"recipients": 2})));
    assert_eq!(alice.recv().await.msg, "room");
    assert_eq!(bob.recv().await.msg, "room");

    let (s, v) = json_call(addr, "POST", "/api/broadcast_all", r#"{"msg":"all"}"#).await;
    assert_eq!((s, v), (200, json!({"recipients": 2})));
    assert_eq!(bob.recv().await.msg, "all");

    let (s, v) = json_call(
        addr,
        "POST",
        "/api/send",
        r#"{"toClientId":"ghost","msg":"x"}"#,
    )
    .await;
    assert_eq!(s, 404);
    assert!(v["error"].as_str().unwrap().contains("ghost"));
    for (path, body) in [
        ("/api/send", "not json"),
        ("/api/send", r#"{"msg":"no target"}"#),
        ("/api/broadcast", r#"{"msg":"no channel"}"#),
        ("/api/broadcast_all", r#"{"timestamp":"x"}"#),
    ] {
        let (s, v) = json_call(addr, "POST", path, body).await;
        assert_eq!(s, 400, "{path} {body}");
        assert!(v["error"].is_string());
    }

    // While bob is away, what is sent to him is buffered.
    let mut events = pool.events();
    bob.close_gracefully().await;
    wait_event(&mut events, |e| matches!(e, PoolEvent::Disconnected { .. })).await;
    let (s, v) = json_call(
        addr,
        "POST",
        "/api/send",
        r#"{"toClientId":"bob","msg":"later"}"#,
    )
    .await;
    assert_eq!(
        (s, v),
        (200, json!({"recipients": 1, "delivery": "buffered"}))
    );
    let mut bob = connect(&pool, addr, "bob_room1").await;
    assert_eq!(bob.recv().await.msg, "later");
}

/// Clients, one client, join, leave and disconnect over HTTP; stats too.
#[tokio::test]
async fn api_clients_channels_disconnect() {
    let (pool, addr) = start_example(&[]).await;
    let mut alice = connect(&pool, addr, "alice_room1").await;

    let (s, v) = json_call(addr, "GET", "/api/clients", "").await;
    assert_eq!(s, 200);
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], "alice");
    assert_eq!(list[0]["kind"], "ws");
    assert_eq!(list[0]["channels"], json!(["room1"]));
    assert!(list[0]["remoteAddr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(list[0]["connectedAt"].as_u64().unwrap() > 1_600_000_000_000);

    let (s, v) = json_call(addr, "GET", "/api/clients/alice", "").await;
    assert_eq!((s, v["id"].clone()), (200, json!("alice")));
    assert_eq!(
        json_call(addr, "GET", "/api/clients/ghost", "").await.0,
        404
    );

    let (s, v) = json_call(addr, "PUT", "/api/clients/alice/channels/room2", "").await;
    assert_eq!((s, v), (200, json!({"joined": true})));
    assert_eq!(pool.channel_members("room2"), ["alice"]);
    assert_eq!(
        json_call(addr, "PUT", "/api/clients/alice/channels/bad_name", "")
            .await
            .0,
        400
    );
    assert_eq!(
        json_call(addr, "PUT", "/api/clients/ghost/channels/room2", "")
            .await
            .0,
        404
    );
    let (s, v) = json_call(addr, "DELETE", "/api/clients/alice/channels/room1", "").await;
    assert_eq!((s, v), (200, json!({"left": true})));
    assert!(pool.channel_members("room1").is_empty());

    let (s, v) = json_call(addr, "GET", "/api/stats", "").await;
    assert_eq!(s, 200);
    assert_eq!(v["connections"], 1);
    assert!(v["refused"]["badRequest"].is_u64());

    let mut events = pool.events();
    let (s, _) = json_call(addr, "DELETE", "/api/clients/alice", "").await;
    assert_eq!(s, 200);
    assert_eq!(alice.close_code().await, 4002);
    wait_event(&mut events, |e| matches!(e, PoolEvent::Disconnected { .. })).await;
    assert_eq!(
        json_call(addr, "DELETE", "/api/clients/alice", "").await.0,
        404
    );
}

/// `--max-message-size` is enforced by the running example (1009).
#[tokio::test]
async fn example_enforces_max_message_size() {
    let (pool, addr) = start_example(&["--max-message-size", "100"]).await;
    let mut a = connect(&pool, addr, "a").await;
    a.send(&text_msg("a", &[], &"x".repeat(200))).await;
    assert_eq!(a.close_code().await, 1009);
}

/// `/dashboard` serves the live dashboard, linked with the chat page, and
/// `/api/stats/stream` feeds it: server-sent `stats` events, once a second.
#[tokio::test]
async fn serves_the_dashboard_and_its_stream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_pool, addr) = start_example(&[]).await;
    let (status, body) = http(addr, "GET", "/dashboard", "").await;
    assert_eq!(status, 200);
    assert!(body.contains("<title>wspool dashboard</title>"));
    assert!(body.contains("new EventSource(BASE + '/api/nodes/stream')"));
    let (_, page) = http(addr, "GET", "/", "").await;
    assert!(page.contains(r#"href="/dashboard""#));

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /api/stats/stream HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        // Two events: the feed keeps coming.
        while seen.matches("event: stats").count() < 2 {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "stream ended: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await
    .expect("two stats events");
    assert!(seen.contains("content-type: text/event-stream"));
    assert!(seen.contains(r#"data: {"connections":0"#), "{seen}");
}

/// `--admin-password` puts the library's admin surface behind HTTP Basic
/// authentication (user `admin`): without it or with a wrong password,
/// 401 with `WWW-Authenticate` (so a browser asks); with it, the page and
/// the API answer. The chat page and the pool's route stay open.
#[tokio::test]
async fn admin_password_protects_the_admin_surface() {
    let (pool, addr) = start_example(&["--admin-password", "hunter2"]).await;
    let right = format!("Basic {}", base64_of("admin:hunter2"));
    let wrong = format!("Basic {}", base64_of("admin:hunter3"));
    for auth in [None, Some(wrong.as_str())] {
        for path in ["/dashboard", "/api/clients", "/api/nodes"] {
            let headers: Vec<_> = auth.iter().map(|a| ("authorization", *a)).collect();
            let (status, head, _) = http_with(addr, "GET", path, &headers, "").await;
            assert_eq!(status, 401, "{path} with {auth:?}");
            assert!(
                head.contains(r#"www-authenticate: basic realm="wspool admin""#),
                "{head}"
            );
        }
    }
    let (status, _, page) =
        http_with(addr, "GET", "/dashboard", &[("authorization", &right)], "").await;
    assert_eq!(status, 200);
    assert!(page.contains("<title>wspool dashboard</title>"));
    let mut alice = connect(&pool, addr, "alice").await;
    let (status, _, body) = http_with(
        addr,
        "POST",
        "/api/send",
        &[("authorization", &right)],
        r#"{"toClientId":"alice","msg":"hi"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(alice.recv().await.msg, "hi");
    let (status, _) = http(addr, "GET", "/", "").await;
    assert_eq!(status, 200, "the chat page is not the admin's");
}

/// Standard base64, for the Basic credentials.
fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}
