//! Hostile clients: every row of SECURITY.md's catalogue that a WebSocket
//! library would refuse to send is sent here as raw bytes to a real server,
//! and the outcome the catalogue promises is checked. Each test also checks
//! that the server goes on serving a well-behaved client.

mod common;

use std::{sync::Arc, time::Duration};

use common::{raw::*, *};
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wspool::{close_code, status, ClientIp, ConfigError, DisconnectReason, PoolEvent, WsPool};

/// The server still relays for a fresh, well-behaved pair of clients.
async fn still_serving(pool: &WsPool, addr: std::net::SocketAddr) {
    let mut a = connect(pool, addr, "witness-a").await;
    let mut b = connect(pool, addr, "witness-b").await;
    a.send(&text_msg("witness-b", &[], "still here")).await;
    assert_eq!(b.recv().await.msg, "still here");
    a.ws.close(None).await.unwrap();
    b.ws.close(None).await.unwrap();
}

/// Opens a raw WebSocket and waits until the pool has registered it.
async fn open(pool: &WsPool, addr: std::net::SocketAddr, token: &str) -> Raw {
    let mut events = pool.events();
    let raw = Raw::open(addr, token).await;
    wait_connected(&mut events, token).await;
    raw
}

// ----- the handshake -----

/// A Sec-WebSocket-Key that is not the base64 of 16 bytes gets 400 (RFC
/// 6455 4.2.1); a good key gets 101.
#[tokio::test]
async fn malformed_websocket_key_is_400() {
    let pool = WsPool::new();
    let addr = start(&pool).await;
    let token = "Sec-WebSocket-Protocol: alice\r\n";
    for key in [
        "x",
        "AAAA",
        "not base64 at all!!!!!==",
        "AAAAAAAAAAAAAAAAAAAA",         // 15 bytes
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAA", // 21 bytes
    ] {
        let mut raw = Raw::connect(addr).await;
        let (status, head) = raw
            .request(upgrade_request(addr, "/ws", key, token).as_bytes())
            .await;
        assert_eq!(status, 400, "key {key:?}: {head}");
        assert!(raw.body(&head).await.contains("Sec-WebSocket-Key"));
    }
    // Two key headers, each valid: which one would the accept key answer?
    let twice = format!("{token}Sec-WebSocket-Key: {KEY}\r\n");
    let mut raw = Raw::connect(addr).await;
    let (status, head) = raw
        .request(upgrade_request(addr, "/ws", KEY, &twice).as_bytes())
        .await;
    assert_eq!(status, 400, "two keys: {head}");
    let mut raw = Raw::connect(addr).await;
    let (status, _) = raw
        .request(upgrade_request(addr, "/ws", KEY, token).as_bytes())
        .await;
    assert_eq!(status, 101);
    assert_eq!(pool.stats().refused.bad_request, 6);
}

/// Requests that are not a complete WebSocket handshake are refused by
/// axum's checks before the pool sees them; nothing is registered.
#[tokio::test]
async fn incomplete_upgrades_are_refused() {
    let pool = WsPool::new();
    let addr = start(&pool).await;
    let token = "Sec-WebSocket-Protocol: a\r\n";
    let full = upgrade_request(addr, "/ws", KEY, token);
    let cases = [
        (full.replacen("GET", "POST", 1), 405),
        (full.replace("Upgrade: websocket\r\n", ""), 400),
        (
            full.replace("Connection: Upgrade\r\n", "Connection: keep-alive\r\n"),
            400,
        ),
        (
            full.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 12"),
            400,
        ),
        (
            full.replace(&format!("Sec-WebSocket-Key: {KEY}\r\n"), ""),
            400,
        ),
    ];
    for (head, want) in cases {
        let mut raw = Raw::connect(addr).await;
        let (status, resp) = raw.request(head.as_bytes()).await;
        assert_eq!(status, want, "{head}\n{resp}");
    }
    assert_eq!(pool.stats().connections_total, 0);
}

/// Slowloris: connections that send their request head a byte at a time,
/// or nothing at all, are closed at the header read timeout by
/// `wspool::serve`, while others are served.
#[tokio::test]
async fn slowloris_is_cut_off_by_serve() {
    let pool = WsPool::new();
    let (addr, _stop) = serve_safe(app(&pool), &pool, Duration::from_millis(500)).await;
    let head = upgrade_request(addr, "/ws", KEY, "Sec-WebSocket-Protocol: slow\r\n");
    let mut trickles = Vec::new();
    for _ in 0..20 {
        let head = head.clone().into_bytes();
        trickles.push(tokio::spawn(async move {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let started = tokio::time::Instant::now();
            for b in head {
                if tcp.write_all(&[b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let mut rest = Vec::new();
            let _ = tcp.read_to_end(&mut rest).await;
            started.elapsed()
        }));
    }
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    still_serving(&pool, addr).await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, silent.read(&mut buf))
        .await
        .expect("a silent connection was never closed");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    for t in trickles {
        let took = tokio::time::timeout(WAIT, t).await.unwrap().unwrap();
        // The whole head would take 50 ms x its length (> 8 s).
        assert!(took < Duration::from_secs(5), "a trickle lasted {took:?}");
    }
    assert_eq!(
        pool.stats().connections_total,
        2,
        "only the witnesses got in"
    );
}

/// Request heads over hyper's limits (too many headers, a huge header) are
/// refused with 431 or a closed connection; nothing is registered.
#[tokio::test]
async fn oversized_request_heads_are_refused() {
    let pool = WsPool::new();
    let (addr, _stop) = serve_safe(app(&pool), &pool, Duration::from_secs(5)).await;
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let huge = format!("X-Big: {}\r\n", "a".repeat(1024 * 1024));
    for extra in [many, huge] {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = upgrade_request(
            addr,
            "/ws",
            KEY,
            &format!("Sec-WebSocket-Protocol: big\r\n{extra}"),
        );
        let _ = tcp.write_all(head.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer))
            .await
            .expect("no answer to an oversized head");
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
            "{answer}"
        );
    }
    assert_eq!(pool.stats().connections, 0);
    still_serving(&pool, addr).await;
}

/// A subprotocol header with bytes that are not visible ASCII gets 400.
#[tokio::test]
async fn non_ascii_token_is_400() {
    let pool = WsPool::new();
    let addr = start(&pool).await;
    let mut head = upgrade_request(addr, "/ws", KEY, "Sec-WebSocket-Protocol: al").into_bytes();
    head.truncate(head.len() - 2); // reopen the last header line
    head.extend_from_slice(b"\xff\xfeice\r\n\r\n");
    let mut raw = Raw::connect(addr).await;
    let (status, head) = raw.request(&head).await;
    assert_eq!(status, 400, "{head}");
    assert_eq!(pool.stats().connections, 0);
}

/// Past max_connections_per_ip, handshakes from that address get 429;
/// others are admitted, and a closed connection frees its count.
#[tokio::test]
async fn connections_per_ip_limit() {
    let pool = WsPool::builder().max_connections_per_ip(2).build();
    let (addr, _stop) = serve_safe(app(&pool), &pool, Duration::from_secs(5)).await;
    let a = connect(&pool, addr, "a").await;
    let _b = connect(&pool, addr, "b").await;
    let refused = try_connect(addr, "/ws", Some("c")).await.err().unwrap();
    assert_eq!(refused.0, 429, "{refused:?}");
    assert_eq!(pool.stats().refused.per_ip, 1);
    let mut events = pool.events();
    a.close_gracefully().await;
    wait_event(&mut events, |e| matches!(e, PoolEvent::Disconnected { .. })).await;
    let _c = connect(&pool, addr, "c").await;
}

/// Behind a proxy, ClientIp::RightmostForwardedFor counts the address the
/// proxy appended, not the peer (the proxy) nor what the client wrote.
#[tokio::test]
async fn per_ip_limit_reads_the_proxy_header() {
    let pool = WsPool::builder()
        .max_connections_per_ip(1)
        .client_ip(ClientIp::RightmostForwardedFor)
        .build();
    let (addr, _stop) = serve_safe(app(&pool), &pool, Duration::from_secs(5)).await;
    // Each connection stays open (held in `open`) so that it counts.
    let mut open = Vec::new();
    for (token, xff, want) in [
        ("u1", "6.6.6.6, 203.0.113.1", 101),
        // Same peer (127.0.0.1), another client address: admitted.
        ("u2", "203.0.113.2", 101),
        // A spoofed first entry does not help: the proxy's entry is the same.
        ("u3", "1.1.1.1, 203.0.113.1", 429),
    ] {
        let extra = format!("Sec-WebSocket-Protocol: {token}\r\nX-Forwarded-For: {xff}\r\n");
        let mut raw = Raw::connect(addr).await;
        let (status, head) = raw
            .request(upgrade_request(addr, "/ws", KEY, &extra).as_bytes())
            .await;
        assert_eq!(status, want, "{token}: {head}");
        open.push(raw);
    }
    let info = pool.client("u2").unwrap().info();
    assert_eq!(info.remote_addr, Some("203.0.113.2:0".parse().unwrap()));
}

/// Past max_handshakes_in_flight (here held in a slow authorisation hook),
/// handshakes get 503; once they finish, new ones are admitted.
#[tokio::test]
async fn handshakes_in_flight_limit() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (entered_tx, mut entered) = tokio::sync::mpsc::unbounded_channel::<()>();
    let hook_gate = gate.clone();
    let pool = WsPool::builder()
        .max_handshakes_in_flight(2)
        .authorize(move |req| {
            let gate = hook_gate.clone();
            let entered = entered_tx.clone();
            async move {
                let token = req
                    .token
                    .map_err(|e| wspool::Rejection::unauthorized(e.to_string()))?;
                if token.id.starts_with("held") {
                    let _ = entered.send(());
                    let _ = gate.acquire().await.unwrap();
                }
                Ok(wspool::ClientConfig::new(token.id))
            }
        })
        .build();
    let addr = start(&pool).await;
    let held: Vec<_> = ["held0", "held1"]
        .into_iter()
        .map(|t| tokio::spawn(try_connect(addr, "/ws", Some(t))))
        .collect();
    for _ in 0..2 {
        tokio::time::timeout(WAIT, entered.recv()).await.unwrap();
    }
    let refused = try_connect(addr, "/ws", Some("probe")).await.err();
    let (code, body) = refused.expect("a third handshake was admitted");
    assert_eq!(code, 503);
    assert!(body.contains("handshakes"), "{body}");
    assert_eq!(pool.stats().refused.busy, 1);
    gate.add_permits(2);
    for h in held {
        assert!(h.await.unwrap().is_ok());
    }
    let _after = connect(&pool, addr, "after").await;
}

// ----- frames that break RFC 6455 -----

/// Every protocol violation is answered with a close frame: 1002 for a
/// broken frame or sequence, 1007 for text that is not UTF-8, 1009 for a
/// length beyond the limit; the connection is counted and reported.
#[tokio::test]
async fn protocol_violations_get_close_codes() {
    let pool = WsPool::builder().max_message_size(64 * 1024).build();
    let addr = start(&pool).await;
    let p = close_code::PROTOCOL;
    let mut too_long = vec![0x82, 0xFF];
    too_long.extend_from_slice(&(1u64 << 62).to_be_bytes());
    too_long.extend_from_slice(&[0, 0, 0, 0]);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked", frame(true, 0, BINARY, false, b"hi"), p),
        ("rsv1", frame(true, 4, BINARY, true, b"hi"), p),
        ("rsv3", frame(true, 1, TEXT, true, b"hi"), p),
        ("opcode 3", frame(true, 0, 0x3, true, b""), p),
        ("opcode 0xB", frame(true, 0, 0xB, true, b""), p),
        ("126-byte ping", frame(true, 0, PING, true, &[0; 126]), p),
        ("fragmented ping", frame(false, 0, PING, true, b"a"), p),
        ("stray continuation", frame(true, 0, CONT, true, b"x"), p),
        (
            "text inside a fragmented message",
            [
                frame(false, 0, BINARY, true, b"a"),
                frame(true, 0, TEXT, true, b"b"),
            ]
            .concat(),
            p,
        ),
        ("1-byte close payload", frame(true, 0, CLOSE, true, &[3]), p),
        (
            "close code 1005",
            frame(true, 0, CLOSE, true, &1005u16.to_be_bytes()),
            p,
        ),
        (
            "close code 999",
            frame(true, 0, CLOSE, true, &999u16.to_be_bytes()),
            p,
        ),
        (
            "bad UTF-8 text",
            data(TEXT, b"\xff\xfe\xfd"),
            close_code::INVALID_PAYLOAD,
        ),
        (
            "bad UTF-8 across fragments",
            [
                frame(false, 0, TEXT, true, b"\xe2\x82"),
                frame(true, 0, CONT, true, b"\x28"),
            ]
            .concat(),
            close_code::INVALID_PAYLOAD,
        ),
        (
            "bad UTF-8 close reason",
            frame(true, 0, CLOSE, true, &[0x03, 0xE8, 0xff, 0xfe]),
            close_code::INVALID_PAYLOAD,
        ),
        ("2^62 length", too_long, close_code::TOO_BIG),
        (
            "frame over the limit",
            data(BINARY, &vec![0; 64 * 1024 + 1]),
            close_code::TOO_BIG,
        ),
        (
            "fragments over the limit",
            [
                frame(false, 0, BINARY, true, &vec![0; 40 * 1024]),
                frame(true, 0, CONT, true, &vec![0; 40 * 1024]),
            ]
            .concat(),
            close_code::TOO_BIG,
        ),
    ];
    let mut events = pool.events();
    for (name, bytes, code) in &cases {
        let mut raw = open(&pool, addr, "bad").await;
        raw.send_lossy(bytes).await;
        assert_eq!(raw.end().await, End::Close(*code), "{name}");
        let e = wait_event(&mut events, |e| matches!(e, PoolEvent::Disconnected { .. })).await;
        let PoolEvent::Disconnected { reason, .. } = e else {
            unreachable!()
        };
        assert_eq!(reason.code(), Some(*code), "{name}: {reason:?}");
    }
    // Counted as violations: every 1002 and 1007 case except the two close
    // codes tungstenite answers itself (those are the client's close).
    let violations = cases
        .iter()
        .filter(|(_, _, c)| *c != close_code::TOO_BIG)
        .count()
        - 2;
    assert_eq!(pool.stats().protocol_errors, violations as u64);
    still_serving(&pool, addr).await;
}

/// A flood of pings is answered, a flood of unsolicited pongs ignored, and
/// neither stops the connection from relaying or starves anyone else.
#[tokio::test]
async fn ping_flood_is_harmless() {
    let pool = WsPool::builder().max_inbound_messages_per_sec(10).build();
    let addr = start(&pool).await;
    let mut flooder = open(&pool, addr, "flooder").await;
    let mut other = connect(&pool, addr, "other").await;
    let ping = frame(true, 0, PING, true, b"p");
    flooder.send(&ping.repeat(20_000)).await;
    // Unsolicited pongs are allowed (RFC 6455 5.5.3) and ignored.
    let pong = frame(true, 0, PONG, true, b"unasked");
    flooder.send(&pong.repeat(5_000)).await;
    // Control frames are not data: the rate limit does not count them.
    let msg = text_msg("other", &[], "after the flood").encode_to_vec();
    flooder.send(&data(BINARY, &msg)).await;
    assert_eq!(other.recv().await.msg, "after the flood");
    assert_eq!(pool.stats().rate_limited, 0);
    still_serving(&pool, addr).await;
}

/// Garbage in a binary frame, and text that is not a SendMsg, get receipt 6
/// and leave the connection open.
#[tokio::test]
async fn garbage_payloads_get_receipt_6() {
    let pool = WsPool::new();
    let addr = start(&pool).await;
    let mut raw = open(&pool, addr, "g").await;
    for bytes in [
        data(BINARY, &[0xff; 32]),
        data(BINARY, &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]), // length past the end
        data(TEXT, b"{\"toClientId\": 5"),
        data(TEXT, b"[1,2,3]"),
        data(TEXT, b"{\"timestamp\": \"not a number\"}"),
        data(TEXT, b"{\"unknownField\": 1}"),
        data(TEXT, b"{\"priority\": 99999999999}"),
        data(
            TEXT,
            &[b"{\"msg\":".repeat(200), b"1".to_vec(), b"}".repeat(200)].concat(),
        ),
        data(TEXT, &[b"[".repeat(10_000), b"]".repeat(10_000)].concat()),
    ] {
        raw.send(&bytes).await;
        let receipt = raw.recv().await;
        assert_eq!(receipt.status, status::UNDECODABLE, "{bytes:02x?}");
        assert_eq!(receipt.from_client_id, "");
    }
    assert_eq!(pool.stats().decode_errors, 9);
    still_serving(&pool, addr).await;
}

/// The query string is read for `format=json` only: anything else in it,
/// malformed escapes included, is ignored.
#[tokio::test]
async fn query_is_read_for_format_only() {
    let pool = WsPool::new();
    let addr = start(&pool).await;
    for (path, format) in [
        ("/ws?x=%ZZ&format=json&format=binary", wspool::Format::Json),
        ("/ws?format=JSON", wspool::Format::Binary),
        ("/ws?%00%ff=&&&=", wspool::Format::Binary),
    ] {
        let mut raw = Raw::connect(addr).await;
        let head = upgrade_request(addr, path, KEY, "Sec-WebSocket-Protocol: q\r\n");
        let mut events = pool.events();
        assert_eq!(raw.request(head.as_bytes()).await.0, 101, "{path}");
        let e = wait_event(&mut events, |e| matches!(e, PoolEvent::Connected(_))).await;
        let PoolEvent::Connected(info) = e else {
            unreachable!()
        };
        assert_eq!(info.format, format, "{path}");
    }
}

// ----- what one message may ask for -----

/// A relayed message naming more than max_channels_per_message channels is
/// not relayed to anyone; its sender gets receipt 7.
#[tokio::test]
async fn too_many_channels_in_one_message() {
    let pool = WsPool::builder().max_channels_per_message(8).build();
    let addr = start(&pool).await;
    let mut sender = connect(&pool, addr, "s").await;
    let mut member = connect(&pool, addr, "m_room0").await;
    let many: Vec<String> = (0..50_000).map(|i| format!("room{i}")).collect();
    let mut msg = text_msg("", &[], "to everyone I can name");
    msg.channel = many;
    msg.msg_id = "big".into();
    sender.send(&msg).await;
    let receipt = sender.recv().await;
    assert_eq!(
        (receipt.status, receipt.msg_id.as_str()),
        (status::REFUSED, "big")
    );
    assert!(
        receipt.callback_msg.contains("channels"),
        "{}",
        receipt.callback_msg
    );
    // Eight channels are fine; the member gets that one and not the other.
    let eight: Vec<&str> = vec!["room0", "a", "b", "c", "d", "e", "f", "g"];
    sender.send(&text_msg("", &eight, "eight")).await;
    assert_eq!(member.recv().await.msg, "eight");
    assert_eq!(pool.stats().relays_refused, 1);
}

/// Past max_inbound_messages_per_sec, data frames get receipt 7 and are not
/// relayed; a client that keeps flooding is closed with 1008 and the server
/// keeps serving others.
#[tokio::test]
async fn message_rate_limit_refuses_then_closes() {
    let pool = WsPool::builder().max_inbound_messages_per_sec(20).build();
    let addr = start(&pool).await;
    let mut flooder = open(&pool, addr, "flood").await;
    let mut sink = connect(&pool, addr, "sink").await;
    let mut events = pool.events();
    // 40 at once: the burst (20) passes, the rest are refused.
    let frames: Vec<u8> = (0..40)
        .flat_map(|i| {
            let mut m = text_msg("sink", &[], "x");
            m.msg_id = i.to_string();
            data(BINARY, &m.encode_to_vec())
        })
        .collect();
    flooder.send(&frames).await;
    // Each frame is relayed to the sink or refused to the flooder; a few
    // tokens may come back while the 40 are read.
    let (mut relayed, mut refused) = (Vec::new(), 0);
    while relayed.len() + refused < 40 {
        tokio::select! {
            m = sink.recv() => relayed.push(m.msg_id.parse::<u32>().unwrap()),
            r = flooder.recv() => {
                assert_eq!(r.status, status::REFUSED);
                refused += 1;
            }
        }
    }
    assert!((20..=25).contains(&relayed.len()), "{relayed:?}");
    assert!(relayed.windows(2).all(|w| w[0] < w[1]), "{relayed:?}");
    assert_eq!(&relayed[..20], &(0..20).collect::<Vec<_>>()[..]);
    // Keep flooding: closed with 1008.
    let flood = frames.repeat(10);
    flooder.send_lossy(&flood).await;
    assert_eq!(flooder.end().await, End::Close(close_code::POLICY));
    let e = wait_event(
        &mut events,
        |e| matches!(e, PoolEvent::Disconnected { id, .. } if id == "flood"),
    )
    .await;
    assert!(matches!(
        e,
        PoolEvent::Disconnected {
            reason: DisconnectReason::RateLimited,
            ..
        }
    ));
    assert!(pool.stats().rate_limited >= 21);
    still_serving(&pool, addr).await;
}

/// Past max_inbound_bytes_per_sec, a frame is refused with receipt 7.
#[tokio::test]
async fn byte_rate_limit_refuses() {
    let pool = WsPool::builder()
        .max_message_size(1024)
        .max_inbound_bytes_per_sec(2048)
        .build();
    let addr = start(&pool).await;
    let mut c = open(&pool, addr, "bytes").await;
    let mut m = text_msg("", &[], &"x".repeat(900));
    m.msg_id = "big".into();
    let one = data(BINARY, &m.encode_to_vec());
    c.send(&[one.clone(), one.clone(), one].concat()).await;
    let r = c.recv().await;
    assert_eq!((r.status, r.msg_id.as_str()), (status::REFUSED, ""));
    assert_eq!(pool.stats().rate_limited, 1);
}

// ----- timing -----

/// A client that stops reading is closed with 4008 at slow_client_timeout,
/// promptly, even while a write to it is stalled (write_timeout is far
/// longer): the reason is TooSlow, and the test's deadline (10 s) is well
/// inside write_timeout (60 s).
#[tokio::test]
async fn slow_reader_is_closed_while_its_write_is_stalled() {
    let pool = WsPool::builder()
        .slow_client_timeout(Duration::from_millis(300))
        .write_timeout(Duration::from_secs(60))
        .queue_max_messages(16)
        .build();
    let addr = start(&pool).await;
    let mut events = pool.events();
    let _stuck = open(&pool, addr, "stuck").await; // never reads
    keep_full_until_too_slow(&pool, &mut events, "stuck", 256 * 1024).await;
    assert!(pool.client("stuck").is_none());
    still_serving(&pool, addr).await;
}

/// Keeps the queue of client `id` full (messages of `size` bytes) until
/// it is closed; asserts it was closed as too slow (4008), with messages
/// queued to the end.
async fn keep_full_until_too_slow(
    pool: &WsPool,
    events: &mut wspool::EventStream,
    id: &'static str,
    size: usize,
) {
    let feeder = {
        let pool = pool.clone();
        let body = "x".repeat(size);
        tokio::spawn(async move {
            let mut queued = 0u64;
            while pool.client(id).is_some() {
                if pool.send(text_msg(id, &[], &body)).is_ok() {
                    queued += 1;
                }
                tokio::task::yield_now().await;
            }
            queued
        })
    };
    let e = wait_event(events, |e| matches!(e, PoolEvent::Disconnected { .. })).await;
    assert!(
        matches!(
            e,
            PoolEvent::Disconnected {
                reason: DisconnectReason::TooSlow,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(feeder.await.unwrap() > 0);
}

/// A slow client closed with 4008 that then resumes reading (within
/// `write_timeout`) reads why: it was unregistered at once, and the socket
/// finishes the frame in flight, then sends the 4008 close frame, under a
/// publisher that keeps its queue full throughout (raw socket: every byte
/// the server wrote is parsed).
#[tokio::test]
async fn a_slow_client_that_resumes_reading_gets_4008() {
    for round in 0..40 {
        let pool = WsPool::builder()
            .slow_client_timeout(Duration::from_millis(200))
            .write_timeout(Duration::from_secs(5))
            .queue_max_messages(64)
            .build();
        let addr = start(&pool).await;
        let mut events = pool.events();
        let mut slow = open(&pool, addr, "slow").await; // reads nothing for now
        keep_full_until_too_slow(&pool, &mut events, "slow", 2048).await;
        // It talks before it reads again (a message, a pong): what the
        // server has not read must not turn its close into a reset.
        let msg = text_msg("", &["room"], "still here");
        slow.send(&data(BINARY, &msg.encode_to_vec())).await;
        slow.send(&frame(true, 0, PONG, true, b"")).await;
        // Now it reads: everything the server wrote parses, and ends with
        // the close frame that says why.
        assert_eq!(
            slow.end().await,
            End::Close(close_code::TOO_SLOW),
            "round {round}"
        );
    }
}

/// Pings sent while the server's writes to a client are stalled are
/// answered between frames, never inside one: the pool writes its
/// messages itself and tungstenite writes the pongs, and a frame whose
/// start was written is finished first (raw socket: every byte the server
/// wrote is parsed, in order).
#[tokio::test]
async fn pings_during_a_stalled_write_do_not_split_a_frame() {
    let pool = WsPool::builder()
        .write_timeout(Duration::from_secs(60))
        .queue_max_messages(1024)
        .queue_max_bytes(1 << 30)
        .build();
    let addr = start(&pool).await;
    let mut p = open(&pool, addr, "p").await; // reads nothing for now
                                              // Far more than loopback's socket buffers hold: the writes stall
                                              // part-way through frames.
    let (count, size) = (300, 64 * 1024);
    let pad = "x".repeat(size);
    for i in 0..count {
        let body = format!("{i:06}{pad}");
        pool.send(text_msg("p", &[], &body)).unwrap();
    }
    for i in 0..20u8 {
        p.send(&frame(true, 0, PING, true, &[i; 4])).await;
    }
    let (mut next, mut pongs) = (0, 0);
    while next < count {
        match p.frame().await.expect("the server closed") {
            Frame {
                opcode: BINARY,
                payload,
            } => {
                let msg = wspool::SendMsg::decode(&payload[..]).unwrap();
                assert_eq!(&msg.msg[..6], format!("{next:06}"));
                assert_eq!(msg.msg.len(), 6 + size);
                next += 1;
            }
            Frame { opcode: PONG, .. } => pongs += 1,
            other => panic!("unexpected frame {other:?}"),
        }
    }
    if pongs == 0 {
        // The pings were read after the last message was written: the
        // pong follows it.
        assert_eq!(p.frame().await.map(|f| f.opcode), Some(PONG));
    }
    still_serving(&pool, addr).await;
}

/// A kick (4002) and a replacement (4001) also take effect at once while a
/// write to the client is stalled.
#[tokio::test]
async fn kick_and_replace_do_not_wait_for_a_stalled_write() {
    let pool = WsPool::builder()
        .write_timeout(Duration::from_secs(60))
        .queue_max_bytes(1 << 30)
        .build();
    let addr = start(&pool).await;
    let mut events = pool.events();
    let big = "x".repeat(1024 * 1024);
    let stall = |id: &'static str| {
        let pool = pool.clone();
        let big = big.clone();
        async move {
            for _ in 0..64 {
                pool.send(text_msg(id, &[], &big)).unwrap();
            }
            // Wait until the connection has stopped draining (its socket is full).
            tokio::time::timeout(WAIT, async {
                loop {
                    let before = pool.client(id).unwrap().info().queued_messages;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let after = pool.client(id).unwrap().info().queued_messages;
                    // Still holding messages and not draining: a write is stuck.
                    if after > 0 && after == before {
                        return;
                    }
                }
            })
            .await
            .unwrap();
        }
    };
    let _kicked = open(&pool, addr, "kicked").await;
    stall("kicked").await;
    pool.client("kicked").unwrap().disconnect();
    let e = wait_event(&mut events, |e| matches!(e, PoolEvent::Disconnected { .. })).await;
    assert!(
        matches!(
            e,
            PoolEvent::Disconnected {
                reason: DisconnectReason::Kicked,
                ..
            }
        ),
        "{e:?}"
    );

    let _old = open(&pool, addr, "twin").await;
    stall("twin").await;
    let _new = Raw::open(addr, "twin").await;
    let e = wait_event(&mut events, |e| matches!(e, PoolEvent::Disconnected { .. })).await;
    assert!(
        matches!(
            e,
            PoolEvent::Disconnected {
                reason: DisconnectReason::Replaced,
                ..
            }
        ),
        "{e:?}"
    );
    still_serving(&pool, addr).await;
}

/// A frame trickled a byte at a time never completes: the connection is
/// closed at idle_timeout (1000), since only whole frames count as life.
#[tokio::test]
async fn trickled_frame_is_closed_as_idle() {
    let pool = WsPool::builder()
        .idle_timeout(Duration::from_millis(600))
        .build();
    let addr = start(&pool).await;
    let mut raw = open(&pool, addr, "trickle").await;
    let bytes = data(BINARY, &[0u8; 100]);
    let (mut read, mut write) = raw.tcp.split();
    let trickle = async {
        for b in &bytes {
            if write.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let mut got = Vec::new();
    let read_all = async {
        let _ = tokio::time::timeout(WAIT, read.read_to_end(&mut got)).await;
    };
    tokio::join!(trickle, read_all);
    // The close frame: 0x88, length, code 1000.
    let at = got
        .windows(2)
        .position(|w| w[0] == 0x88)
        .expect("no close frame");
    assert_eq!(&got[at + 2..at + 4], &1000u16.to_be_bytes());
}

/// With idle_timeout below the default ping interval, pings follow the
/// idle timeout: a client that only answers pings stays connected past
/// several idle timeouts. An explicit pair that cannot work is refused.
#[tokio::test]
async fn ping_interval_follows_a_short_idle_timeout() {
    let idle = Duration::from_secs(1);
    let pool = WsPool::builder().idle_timeout(idle).build();
    assert_eq!(pool.config().ping_interval(), idle / 2);
    let addr = start(&pool).await;
    let mut c = connect(&pool, addr, "quiet").await;
    // tokio-tungstenite answers pings while we read; we send nothing else.
    let mut pings = 0;
    let quiet_for = tokio::time::timeout(idle * 3, async {
        loop {
            match futures_util::StreamExt::next(&mut c.ws).await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Ping(_))) => pings += 1,
                other => return other,
            }
        }
    })
    .await;
    assert!(
        quiet_for.is_err(),
        "closed while answering pings: {quiet_for:?}"
    );
    assert!(pings >= 4, "{pings} pings");
    assert!(pool.client("quiet").is_some());

    let refused = WsPool::builder()
        .idle_timeout(Duration::from_secs(10))
        .ping_interval(Duration::from_secs(25))
        .try_build()
        .err();
    assert!(matches!(
        refused,
        Some(ConfigError::PingNotBeforeIdle { .. })
    ));
    assert!(refused
        .unwrap()
        .to_string()
        .contains("shorter than idle_timeout"));
}

// ----- the admin API -----

/// Every admin API rejection is JSON: a body over the limit (413), a path
/// that is not UTF-8 (400), a wrong method (405), a body that is not a
/// SendMsg (400).
#[tokio::test]
async fn admin_rejections_are_json() {
    let pool = WsPool::new();
    let addr = start(&pool).await;
    let big = vec![b' '; 10 * 1024 * 1024];
    let cases: Vec<(String, Vec<u8>, u16)> = vec![
        (
            format!(
                "POST /api/send HTTP/1.1\r\nContent-Length: {}\r\n",
                big.len()
            ),
            big,
            413,
        ),
        ("GET /api/clients/%FF%FE HTTP/1.1\r\n".into(), vec![], 400),
        (
            "PUT /api/clients/%FF/channels/x HTTP/1.1\r\n".into(),
            vec![],
            400,
        ),
        ("PATCH /api/send HTTP/1.1\r\n".into(), vec![], 405),
        (
            "POST /api/broadcast HTTP/1.1\r\nContent-Length: 4\r\n".into(),
            b"nope".to_vec(),
            400,
        ),
    ];
    for (head, body, want) in cases {
        let mut raw = Raw::connect(addr).await;
        let mut req = format!("{head}Host: x\r\nConnection: close\r\n\r\n").into_bytes();
        req.extend_from_slice(&body);
        raw.send_lossy(&req).await;
        let (status, resp_head) = raw.response_head().await;
        assert_eq!(status, want, "{head}: {resp_head}");
        assert!(
            resp_head
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{head}: {resp_head}"
        );
        let body = raw.body_to_end().await;
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{head}: {body}"));
        assert!(v["error"].is_string(), "{v}");
    }
}
