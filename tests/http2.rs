//! WebSockets over HTTP/2 (RFC 8441 extended CONNECT) through
//! `wspool::serve`: cleartext with prior knowledge on the same port as
//! HTTP/1.1, several WebSockets on one connection, mixed rooms, and the
//! hostile cases of SECURITY.md's HTTP/2 rows.

mod common;

use std::time::Duration;

use common::{h2::*, *};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tokio::net::TcpStream;
use tokio_tungstenite::{tungstenite::Message, WebSocketStream};
use wspool::{DisconnectReason, PoolEvent, SendMsg, WsPool};

async fn h2c(addr: std::net::SocketAddr) -> H2 {
    let tcp = TcpStream::connect(addr).await.unwrap();
    H2::handshake(tcp, &addr.to_string()).await
}

async fn start_h2(pool: &WsPool) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    serve_safe(app(pool), pool, Duration::from_secs(10)).await
}

/// Opens `token` over `h2` and waits until the pool registered it.
async fn open(pool: &WsPool, h2: &H2, path: &str, token: &str) -> WebSocketStream<H2Stream> {
    let mut events = pool.events();
    let opened = h2.open(path, token).await;
    assert_eq!(opened.status, 200, "{token}");
    assert_eq!(opened.protocol.as_deref(), Some(token));
    wait_connected(&mut events, token).await;
    opened.ws.unwrap()
}

async fn send(ws: &mut WebSocketStream<H2Stream>, msg: &SendMsg) {
    ws.send(Message::binary(msg.encode_to_vec())).await.unwrap();
}

async fn recv(ws: &mut WebSocketStream<H2Stream>) -> SendMsg {
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => return SendMsg::decode(b).unwrap(),
                Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
                Some(Ok(_)) => continue,
                other => panic!("expected a message, got {other:?}"),
            }
        }
    })
    .await
    .expect("timed out waiting for a message")
}

/// The server announces extended CONNECT; two WebSockets share one
/// HTTP/2 connection and a room with an HTTP/1.1 client on the same
/// port; relays are stamped, JSON is chosen per stream, direct sends
/// cross transports.
#[tokio::test]
async fn websockets_over_h2c_share_a_connection_and_a_room() {
    let pool = WsPool::new();
    let (addr, _stop) = start_h2(&pool).await;
    let h2 = h2c(addr).await;
    let mut alice = open(&pool, &h2, "/ws", "alice_room1").await;
    // The server's SETTINGS have arrived by now.
    assert!(h2.connect_protocol_enabled());
    let mut bob = open(&pool, &h2, "/ws?format=json", "bob_room1").await;
    let mut carol = connect(&pool, addr, "carol_room1").await; // HTTP/1.1
    assert_eq!(pool.stats().connections, 3);

    send(&mut alice, &text_msg("", &["room1"], "from h2")).await;
    let got = recv(&mut bob).await;
    assert_eq!(
        (got.msg.as_str(), got.from_client_id.as_str()),
        ("from h2", "alice")
    );
    assert_eq!(carol.recv().await.msg, "from h2");

    // A member gets its own message to the room too.
    assert_eq!(recv(&mut alice).await.msg, "from h2");
    carol.send(&text_msg("alice", &[], "from h1")).await;
    let got = recv(&mut alice).await;
    assert_eq!(
        (got.msg.as_str(), got.from_client_id.as_str()),
        ("from h1", "carol")
    );
    pool.send(text_msg("bob", &[], "from the server")).unwrap();
    assert_eq!(recv(&mut bob).await.msg, "from the server");
}

/// A bad token over HTTP/2 is refused 400, as over HTTP/1.1, and the
/// connection goes on serving other streams.
#[tokio::test]
async fn a_bad_token_over_h2_is_400() {
    let pool = WsPool::new();
    let (addr, _stop) = start_h2(&pool).await;
    let h2 = h2c(addr).await;
    let opened = h2.open("/ws", "bad/token").await;
    assert_eq!(opened.status, 400);
    assert_eq!(pool.stats().refused.bad_request, 1);
    let mut ok = open(&pool, &h2, "/ws", "fine").await;
    pool.send(text_msg("fine", &[], "hi")).unwrap();
    assert_eq!(recv(&mut ok).await.msg, "hi");
}

/// Resetting one stream, or closing one WebSocket, unregisters that client
/// only: the others on the same connection stay and are served.
#[tokio::test]
async fn closing_or_resetting_one_stream_unregisters_that_client_only() {
    // No offline buffering: a client gone is out of its rooms at once.
    let pool = WsPool::builder().offline_ttl(Duration::ZERO).build();
    let (addr, _stop) = start_h2(&pool).await;
    let h2 = h2c(addr).await;
    let mut events = pool.events();
    let mut alice = open(&pool, &h2, "/ws", "alice_room").await;
    let mut bob = open(&pool, &h2, "/ws", "bob_room").await;
    let mut carol = open(&pool, &h2, "/ws", "carol_room").await;

    alice.get_mut().reset();
    let gone = wait_event(&mut events, |e| matches!(e, PoolEvent::Disconnected { .. })).await;
    assert!(
        matches!(&gone, PoolEvent::Disconnected { id, reason: DisconnectReason::ConnectionLost } if id.as_ref() == "alice"),
        "{gone:?}"
    );
    bob.close(None).await.unwrap();
    let gone = wait_event(&mut events, |e| matches!(e, PoolEvent::Disconnected { .. })).await;
    assert!(
        matches!(&gone, PoolEvent::Disconnected { id, reason: DisconnectReason::ClientClosed(_) } if id.as_ref() == "bob"),
        "{gone:?}"
    );
    assert!(pool.client("alice").is_none() && pool.client("bob").is_none());
    let recipients = pool
        .broadcast(text_msg("", &["room"], "left: carol"))
        .unwrap();
    assert_eq!(recipients, 1);
    assert_eq!(recv(&mut carol).await.msg, "left: carol");
}

/// A client may hold at most `http2_max_streams` WebSockets on one
/// connection: the next CONNECT waits until one closes, then opens.
#[tokio::test]
async fn streams_beyond_the_limit_wait_for_one_to_close() {
    let pool = WsPool::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = wspool::serve(listener, app(&pool), &pool)
        .http2_max_streams(4)
        .with_graceful_shutdown(std::future::pending());
    tokio::spawn(async move { server.await.unwrap() });
    let h2 = h2c(addr).await;
    let mut open_ones = Vec::new();
    for i in 0..4 {
        open_ones.push(open(&pool, &h2, "/ws", &format!("c{i}")).await);
    }
    let fifth = h2.open("/ws", "c4");
    tokio::pin!(fifth);
    // Not opened while four are open (a deadline, not a synchronisation:
    // the wait is the assertion).
    assert!(
        tokio::time::timeout(Duration::from_millis(300), fifth.as_mut())
            .await
            .is_err()
    );
    assert_eq!(pool.stats().connections, 4);
    open_ones[0].close(None).await.unwrap();
    let opened = tokio::time::timeout(WAIT, fifth)
        .await
        .expect("opened once one closed");
    assert_eq!(opened.status, 200);
}

/// "Rapid reset" (CVE-2023-44487): thousands of CONNECTs each reset at
/// once. The server stays up, nothing the flood started outlives its
/// connection, every admission slot comes back (with `max_connections`
/// 8, eight clients are then admitted), and others are served.
#[tokio::test]
async fn a_flood_of_reset_streams_leaves_nothing_behind() {
    let pool = WsPool::builder().max_connections(8).build();
    let (addr, _stop) = start_h2(&pool).await;
    let h2 = h2c(addr).await;
    let mut sent = 0;
    for i in 0..2_000 {
        let Some(mut stream) = h2.connect_and_reset(&format!("flood{i}")).await else {
            break; // the server closed the connection (GOAWAY): also fine
        };
        stream.send_reset(::h2::Reason::CANCEL);
        sent += 1;
    }
    assert!(sent > 0);
    drop(h2);
    // No event says that every stream of the flood is done with: the
    // pool's own gauge is watched until it is.
    let deadline = tokio::time::Instant::now() + WAIT;
    while pool.stats().connections > 0 {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", pool.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let h2 = h2c(addr).await;
    let mut held = Vec::new();
    for i in 0..8 {
        held.push(open(&pool, &h2, "/ws", &format!("after{i}")).await);
    }
    pool.send(text_msg("after7", &[], "still serving")).unwrap();
    assert_eq!(recv(&mut held[7]).await.msg, "still serving");
}
