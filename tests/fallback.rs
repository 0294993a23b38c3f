//! The HTTP fallback (PROTOCOL.md section 10): server-sent events down,
//! POSTs up, through `wspool::serve` over real TCP. The same semantics as
//! a WebSocket (the token, stamped relays, receipts, replacement, the
//! offline buffer, limits and close codes), clients of every transport in
//! one room, and the hostile cases of SECURITY.md's fallback rows.

mod common;

use std::time::Duration;

use common::{h2::H2, sse::*, *};
use wspool::{close_code, status, DisconnectReason, PoolEvent, WsPool};

async fn start_all(pool: &WsPool) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    serve_safe(app(pool), pool, Duration::from_secs(10)).await
}

/// Opens a fallback session for `token` and waits until it is registered.
async fn sse(pool: &WsPool, addr: std::net::SocketAddr, token: &str, json: bool) -> Sse {
    let mut events = pool.events();
    let format = if json { "&format=json" } else { "" };
    let sse = open_sse(addr, &format!("transport=sse&token={token}{format}"))
        .await
        .expect("session refused");
    wait_connected(&mut events, token).await;
    sse
}

/// One room, four transports: the fallback in binary and in JSON,
/// WebSocket over HTTP/1.1 and over HTTP/2. Relays are stamped, direct
/// sends cross transports, and a relay to nobody gets receipt 4 on the
/// event stream.
#[tokio::test]
async fn every_transport_talks_with_every_other() {
    let pool = WsPool::new();
    let (addr, _stop) = start_all(&pool).await;
    let mut alice = sse(&pool, addr, "alice_room", false).await;
    let mut bob = sse(&pool, addr, "bob_room", true).await;
    let mut carol = connect(&pool, addr, "carol_room").await;
    let h2 = H2::handshake(
        tokio::net::TcpStream::connect(addr).await.unwrap(),
        &addr.to_string(),
    )
    .await;
    let mut events = pool.events();
    let mut dave = h2.open("/ws", "dave_room").await.ws.unwrap();
    wait_connected(&mut events, "dave_room").await;
    assert_eq!(pool.stats().connections, 4);

    assert_eq!(alice.send(&text_msg("", &["room"], "from sse")).await, 202);
    for got in [alice.recv().await, bob.recv().await, carol.recv().await] {
        assert_eq!(
            (got.msg.as_str(), got.from_client_id.as_str()),
            ("from sse", "alice")
        );
    }
    use futures_util::StreamExt;
    let frame = tokio::time::timeout(WAIT, dave.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let got = <wspool::SendMsg as prost::Message>::decode(frame.into_data()).unwrap();
    assert_eq!(got.from_client_id, "alice");

    carol.send(&text_msg("bob", &[], "to json sse")).await;
    let got = bob.recv().await;
    assert_eq!(
        (got.msg.as_str(), got.from_client_id.as_str()),
        ("to json sse", "carol")
    );
    assert_eq!(bob.send(&text_msg("carol", &[], "back")).await, 202);
    assert_eq!(carol.recv().await.msg, "back");

    assert_eq!(alice.send(&text_msg("nobody", &[], "lost")).await, 202);
    let receipt = alice.recv().await;
    assert_eq!(receipt.status, status::NOT_CONNECTED);
}

/// A session replaces a WebSocket with its id (4001), is replaced in
/// turn (its close event says 4001 and its stream ends), and what is sent
/// while no one holds the id waits in the offline buffer for the next.
#[tokio::test]
async fn replacement_and_the_offline_buffer_cross_transports() {
    let pool = WsPool::new();
    let (addr, _stop) = start_all(&pool).await;
    let mut ws = connect(&pool, addr, "eve").await;
    let mut first = sse(&pool, addr, "eve", false).await;
    assert_eq!(ws.close_code().await, close_code::REPLACED);
    pool.send(text_msg("eve", &[], "one")).unwrap();
    assert_eq!(first.recv().await.msg, "one");

    let mut second = sse(&pool, addr, "eve", false).await;
    assert_eq!(first.close_code().await, close_code::REPLACED);
    pool.send(text_msg("eve", &[], "two")).unwrap();
    assert_eq!(second.recv().await.msg, "two");
    let mut events = pool.events();
    drop(second); // the tab is closed
    let gone = wait_event(&mut events, |e| matches!(e, PoolEvent::Disconnected { .. })).await;
    assert!(
        matches!(
            gone,
            PoolEvent::Disconnected {
                reason: DisconnectReason::ConnectionLost,
                ..
            }
        ),
        "{gone:?}"
    );
    pool.send(text_msg("eve", &[], "while away")).unwrap();
    let mut back = connect(&pool, addr, "eve").await;
    assert_eq!(back.recv().await.msg, "while away");
}

/// A session that neither POSTs nor keeps alive is closed at the idle
/// timeout with the WebSocket's code; an empty POST keeps it alive.
#[tokio::test]
async fn a_silent_session_is_closed_at_the_idle_timeout() {
    let pool = WsPool::builder()
        .idle_timeout(Duration::from_millis(400))
        .build();
    let (addr, _stop) = start_all(&pool).await;
    let mut quiet = sse(&pool, addr, "quiet", false).await;
    let alive = sse(&pool, addr, "alive", false).await;
    let mut events = pool.events();
    // The keepalive: an empty POST, as the JS client sends every ping_ms.
    let keep = tokio::spawn(async move {
        let mut statuses = Vec::new();
        for _ in 0..10 {
            statuses.push(post_raw(alive.addr, &alive.session, Vec::new(), "", None).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (alive, statuses)
    });
    assert_eq!(quiet.close_code().await, close_code::NORMAL);
    let gone = wait_event(&mut events, |e| matches!(e, PoolEvent::Disconnected { .. })).await;
    assert!(
        matches!(&gone, PoolEvent::Disconnected { id, reason: DisconnectReason::IdleTimeout } if id.as_ref() == "quiet"),
        "{gone:?}"
    );
    let (_alive, statuses) = keep.await.unwrap();
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    assert!(pool.client("alive").is_some(), "kept alive by empty POSTs");
}

/// Hostile POSTs: a session id guessed, one reused after its session
/// ended, a body past `max_message_size`, a foreign `Origin`, garbage; and
/// a session opened with a bad token. None of them reaches a client; the
/// server goes on serving.
#[tokio::test]
async fn hostile_posts_and_opens_are_refused() {
    let pool = WsPool::builder()
        .max_message_size(1024)
        .allowed_origins(["https://good.example"])
        .build();
    let (addr, _stop) = start_all(&pool).await;
    let mut victim = sse(&pool, addr, "victim", false).await;
    let body = text_msg("victim", &[], "forged").encode_to_vec_for_test();

    let guessed = "0123456789abcdef0123456789abcdef";
    assert_eq!(
        post_raw(addr, guessed, body.clone(), "application/x-protobuf", None).await,
        404
    );
    assert_eq!(
        post_raw(addr, "", body.clone(), "application/x-protobuf", None).await,
        404
    );
    let big = vec![b'x'; 4096];
    assert_eq!(
        post_raw(addr, &victim.session, big, "application/x-protobuf", None).await,
        413
    );
    let foreign = Some("https://evil.example");
    assert_eq!(
        post_raw(
            addr,
            &victim.session,
            body.clone(),
            "application/x-protobuf",
            foreign
        )
        .await,
        403
    );
    assert_eq!(
        post_raw(
            addr,
            &victim.session,
            vec![0xff, 0xfe],
            "application/json",
            None
        )
        .await,
        400
    );
    // Garbage that is a POST: receipt 6 on the stream, as for a WebSocket frame.
    assert_eq!(
        post_raw(
            addr,
            &victim.session,
            vec![0xff; 8],
            "application/x-protobuf",
            None
        )
        .await,
        202
    );
    assert_eq!(victim.recv().await.status, status::UNDECODABLE);

    for (query, want) in [
        ("transport=sse", 400),
        ("transport=sse&token=bad%2Fid", 400),
        ("transport=sse&token=_room", 400),
    ] {
        let refused = open_sse(addr, query).await.err().expect("refused");
        assert_eq!(refused.0, want, "{query}: {}", refused.1);
    }

    // A session's id is dead once the session ends.
    let session = victim.session.clone();
    pool.client("victim").unwrap().disconnect();
    assert_eq!(victim.close_code().await, close_code::KICKED);
    assert_eq!(
        post_raw(addr, &session, body, "application/x-protobuf", None).await,
        404
    );
    let mut witness = sse(&pool, addr, "witness", false).await;
    pool.send(text_msg("witness", &[], "still serving"))
        .unwrap();
    assert_eq!(witness.recv().await.msg, "still serving");
}

trait EncodeForTest {
    fn encode_to_vec_for_test(&self) -> Vec<u8>;
}

impl EncodeForTest for wspool::SendMsg {
    fn encode_to_vec_for_test(&self) -> Vec<u8> {
        prost::Message::encode_to_vec(self)
    }
}

/// A POST whose body trickles in (its head promises 100 bytes, 10 come)
/// gets 408 at `write_timeout`; the session goes on.
#[tokio::test]
async fn a_trickled_post_body_times_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pool = WsPool::builder()
        .write_timeout(Duration::from_millis(300))
        .build();
    let (addr, _stop) = start_all(&pool).await;
    let mut slow = sse(&pool, addr, "slow", false).await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /ws?session={} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nConnection: close\r\n\r\n0123456789",
        slow.session
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, tcp.read_to_string(&mut response))
        .await
        .expect("answered in time")
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    pool.send(text_msg("slow", &[], "still here")).unwrap();
    assert_eq!(slow.recv().await.msg, "still here");
}

/// A session whose client stops reading: its events fill the stream's
/// buffer (256 KiB), then its queue, and it is closed as too slow (4008)
/// at `slow_client_timeout`, as a WebSocket is.
#[tokio::test]
async fn a_session_that_stops_reading_is_closed_as_too_slow() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pool = WsPool::builder()
        .slow_client_timeout(Duration::from_millis(300))
        .queue_max_messages(16)
        .build();
    let (addr, _stop) = start_all(&pool).await;
    let mut events = pool.events();
    // A raw client: it reads the response's head, then nothing more.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = "GET /ws?transport=sse&token=stuck HTTP/1.1\r\nHost: x\r\n\r\n";
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut first = [0u8; 64];
    let n = tcp.read(&mut first).await.unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    wait_connected(&mut events, "stuck").await;
    let body = "x".repeat(64 * 1024);
    let feeder = {
        let pool = pool.clone();
        tokio::spawn(async move {
            while pool.client("stuck").is_some() {
                let _ = pool.send(text_msg("stuck", &[], &body));
                tokio::task::yield_now().await;
            }
        })
    };
    let gone = wait_event(&mut events, |e| matches!(e, PoolEvent::Disconnected { .. })).await;
    assert!(
        matches!(
            gone,
            PoolEvent::Disconnected {
                reason: DisconnectReason::TooSlow,
                ..
            }
        ),
        "{gone:?}"
    );
    feeder.await.unwrap();
    drop(tcp);
}
