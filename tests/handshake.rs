//! PROTOCOL.md sections 1 and 6: the handshake, its refusals, and the layer.

mod common;

use axum::{routing::get, Router};
use common::*;
use wspool::{ClientConfig, DuplicatePolicy, PoolEvent, Rejection, WsPool};

/// The server echoes exactly the token it parsed, and registers id and channels.
#[tokio::test]
async fn echoes_token_and_registers() {
    let pool = WsPool::new();
    let addr = start(&pool).await;
    let client = connect(&pool, addr, "1001_1_2").await;
    assert_eq!(client.protocol.as_deref(), Some("1001_1_2"));
    let info = pool.client("1001").unwrap().info();
    assert_eq!(info.channels, ["1", "2"]);
    assert_eq!(info.kind, "ws");
    assert!(info.remote_addr.unwrap().ip().is_loopback());
    let mut members = pool.channel_members("2");
    members.sort();
    assert_eq!(members, ["1001"]);
}

/// With several offers, the first that parses in the client's order is used
/// (not axum's sorted order), across commas and header lines.
#[tokio::test]
async fn first_valid_offer_in_client_order() {
    let pool = WsPool::new();
    let addr = start(&pool).await;
    let mut events = pool.events();
    let client = try_connect(addr, "/ws", Some("bad/offer, zed_r1, amy_r2"))
        .await
        .unwrap();
    assert_eq!(client.protocol.as_deref(), Some("zed_r1"));
    wait_event(
        &mut events,
        |e| matches!(e, PoolEvent::Connected(i) if i.id == "zed"),
    )
    .await;
    assert!(pool.client("amy").is_none());

    // Two header lines: the first line's offer wins.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .append("sec-websocket-protocol", "yan_a".parse().unwrap());
    req.headers_mut()
        .append("sec-websocket-protocol", "bob_b".parse().unwrap());
    let (_ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "yan_a");
}

/// Every bad token gets a 400 with a one-line reason, and nothing is registered.
#[tokio::test]
async fn bad_tokens_get_400() {
    let pool = WsPool::builder()
        .max_id_len(8)
        .max_channel_len(4)
        .max_channels_per_client(2)
        .build();
    let addr = start(&pool).await;
    let long_id = "a".repeat(9);
    let cases: Vec<(Option<&str>, &str)> = vec![
        (None, "missing Sec-WebSocket-Protocol"),
        (Some("_room"), "empty id"),
        (Some("bad@id"), "invalid id"),
        (Some(long_id.as_str()), "more than the maximum of 8"),
        (Some("ok_b@c"), "invalid channel"),
        (Some("ok_toolong"), "more than the maximum of 4"),
        (Some("ok_a_b_c"), "3 channels, more than the maximum of 2"),
    ];
    for (offer, reason) in cases {
        let (status, body) = try_connect(addr, "/ws", offer)
            .await
            .err()
            .expect("must refuse");
        assert_eq!(status, 400, "{offer:?}");
        assert!(body.contains(reason), "{offer:?}: {body}");
        assert!(!body.contains('\n'));
    }
    assert_eq!(pool.stats().connections, 0);
    assert_eq!(pool.stats().refused.bad_request, 7);
}

/// Empty segments are ignored and a repeated channel counts once.
#[tokio::test]
async fn empty_segments_ignored() {
    let pool = WsPool::new();
    let addr = start(&pool).await;
    let client = connect(&pool, addr, "a__b_b_").await;
    assert_eq!(client.protocol.as_deref(), Some("a__b_b_"));
    assert_eq!(pool.client("a").unwrap().info().channels, ["b"]);
}

/// A second connection with the same id replaces the first, which is closed with 4001.
#[tokio::test]
async fn duplicate_id_replaces_with_4001() {
    let pool = WsPool::new();
    let addr = start(&pool).await;
    let mut old = connect(&pool, addr, "alice_x").await;
    let mut events = pool.events();
    let mut new = connect(&pool, addr, "alice_y").await;
    assert_eq!(old.close_code().await, 4001);
    wait_event(&mut events, |e| {
        matches!(e, PoolEvent::Disconnected { id, reason: wspool::DisconnectReason::Replaced } if *id == "alice")
    })
    .await;
    // The newcomer stays registered, with its own channels.
    assert_eq!(pool.client("alice").unwrap().info().channels, ["y"]);
    assert!(pool.channel_members("x").is_empty());
    pool.send(text_msg("alice", &[], "to the new one")).unwrap();
    assert_eq!(new.recv().await.msg, "to the new one");
}

/// With the Refuse policy a second connection with the same id gets 409.
#[tokio::test]
async fn duplicate_id_refused_with_409() {
    let pool = WsPool::builder()
        .duplicate_policy(DuplicatePolicy::Refuse)
        .build();
    let addr = start(&pool).await;
    let mut first = connect(&pool, addr, "alice").await;
    let (status, body) = try_connect(addr, "/ws", Some("alice")).await.err().unwrap();
    assert_eq!(status, 409);
    assert!(body.contains("already connected"));
    pool.send(text_msg("alice", &[], "still here")).unwrap();
    assert_eq!(first.recv().await.msg, "still here");
    assert_eq!(pool.stats().refused.duplicate_id, 1);
}

/// Past max_connections, handshakes get 503; a freed slot can be reused.
#[tokio::test]
async fn max_connections_503() {
    let pool = WsPool::builder().max_connections(2).build();
    let addr = start(&pool).await;
    let a = connect(&pool, addr, "a").await;
    let _b = connect(&pool, addr, "b").await;
    let (status, body) = try_connect(addr, "/ws", Some("c")).await.err().unwrap();
    assert_eq!((status, body.as_str()), (503, "too many connections"));
    assert_eq!(pool.stats().refused.capacity, 1);
    let mut events = pool.events();
    drop(a);
    wait_event(&mut events, |e| matches!(e, PoolEvent::Disconnected { .. })).await;
    // The slot is free once the disconnect is reported.
    let _c = connect(&pool, addr, "c").await;
}

/// With an origin allow-list, a browser from another origin gets 403.
#[tokio::test]
async fn origin_allow_list() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let pool = WsPool::builder()
        .allowed_origins(["http://good.example"])
        .build();
    let addr = start(&pool).await;
    for (origin, ok) in [
        ("http://good.example", true),
        ("http://evil.example", false),
    ] {
        let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
        req.headers_mut()
            .insert("sec-websocket-protocol", "u".parse().unwrap());
        req.headers_mut().insert("origin", origin.parse().unwrap());
        let result = tokio_tungstenite::connect_async(req).await;
        match result {
            Ok(_) => assert!(ok, "{origin} should be refused"),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert!(!ok);
                assert_eq!(resp.status(), 403);
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(pool.stats().refused.forbidden, 1);
}

/// Extracting WsPool without the layer is a 500 that names WsPoolLayer.
#[tokio::test]
async fn missing_layer_rejection_names_the_layer() {
    let addr = serve(Router::new().merge(wspool::route())).await;
    let (status, body) = try_connect(addr, "/ws", Some("a")).await.err().unwrap();
    assert_eq!(status, 500);
    assert!(body.contains("WsPoolLayer"), "{body}");
}

/// The handler can be mounted at any path, and WsPoolLayer::new() works alone.
#[tokio::test]
async fn custom_path_and_default_layer() {
    let layer = wspool::WsPoolLayer::new();
    let pool = layer.pool().clone();
    let addr = serve(
        Router::new()
            .route("/live", get(wspool::ws_handler))
            .layer(layer),
    )
    .await;
    let _c = connect_path(&pool, addr, "/live", "z").await;
    assert!(pool.client("z").is_some());
}

/// The authorisation hook can accept the client's token, assign the id and
/// channels itself, or reject with 401 or 403.
#[tokio::test]
async fn authorisation_hook() {
    let pool = WsPool::builder()
        .authorize(|req| async move {
            let cookie = req
                .headers
                .get("cookie")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if let Some(user) = cookie.strip_prefix("session=") {
                if user == "banned" {
                    return Err(Rejection::forbidden("banned"));
                }
                // Assign id and channels from the session, ignoring the token.
                return Ok(ClientConfig::new(user).kind("web").channels(["members"]));
            }
            match req.token {
                Ok(t) if t.id.starts_with("guest") => {
                    Ok(ClientConfig::new(t.id).channels(t.channels))
                }
                _ => Err(Rejection::unauthorized("log in first")),
            }
        })
        .build();
    let addr = start(&pool).await;

    // Accepted on the client's own token.
    let _guest = connect(&pool, addr, "guest1_lobby").await;
    assert_eq!(pool.client("guest1").unwrap().info().channels, ["lobby"]);

    // Id assigned from the cookie; the offered token is still echoed.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut events = pool.events();
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "mallory_admins".parse().unwrap());
    req.headers_mut()
        .insert("cookie", "session=carol".parse().unwrap());
    let (_ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "mallory_admins");
    wait_event(
        &mut events,
        |e| matches!(e, PoolEvent::Connected(i) if i.id == "carol"),
    )
    .await;
    let carol = pool.client("carol").unwrap().info();
    assert_eq!(
        (carol.kind.as_str(), carol.channels.clone()),
        ("web", vec!["members".to_owned()])
    );
    assert!(pool.client("mallory").is_none());

    // Rejected: 401 without credentials, 403 when banned.
    let (status, body) = try_connect(addr, "/ws", Some("mallory"))
        .await
        .err()
        .unwrap();
    assert_eq!((status, body.as_str()), (401, "log in first"));
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("cookie", "session=banned".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    let refused = pool.stats().refused;
    assert_eq!((refused.unauthorized, refused.forbidden), (1, 1));
}

/// `pool.accept` lets an application write its own handler.
#[tokio::test]
async fn accept_in_own_handler() {
    use axum::extract::WebSocketUpgrade;
    async fn device(pool: WsPool, upgrade: WebSocketUpgrade) -> axum::response::Response {
        pool.accept(
            upgrade,
            ClientConfig::new("dev-1")
                .kind("device")
                .channels(["sensors"]),
        )
        .await
    }
    let pool = WsPool::new();
    let addr = serve(
        Router::new()
            .route("/device", get(device))
            .layer(pool.layer()),
    )
    .await;
    let mut events = pool.events();
    let (mut dev, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/device"))
        .await
        .unwrap();
    wait_event(
        &mut events,
        |e| matches!(e, PoolEvent::Connected(i) if i.id == "dev-1"),
    )
    .await;
    assert_eq!(pool.client("dev-1").unwrap().kind(), "device");
    assert_eq!(
        pool.broadcast(text_msg("", &["sensors"], "ping")).unwrap(),
        1
    );
    use futures_util::StreamExt;
    let frame = dev.next().await.unwrap().unwrap();
    assert!(frame.is_binary());
}

/// A handshake that passes every check, on a connection that cannot be
/// upgraded (the router called directly: no upgrade in the request), gets
/// axum's 426, as from axum's own extractor: the provided route answers
/// what axum answers (the other refusals: `hostile.rs`,
/// `incomplete_upgrades_are_refused`).
#[tokio::test]
async fn a_connection_that_cannot_upgrade_gets_426() {
    use tower::ServiceExt;
    let pool = WsPool::new();
    let app: axum::Router = axum::Router::new()
        .merge(wspool::route())
        .layer(pool.layer());
    let request = axum::http::Request::get("/ws")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-protocol", "a")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 426);
    assert_eq!(pool.stats().connections_total, 0);
}
