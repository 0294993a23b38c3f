//! The client against the real chat example (`cargo build --example chat`
//! first), over real sockets: chat in both formats, receipts, the close
//! codes that end it, and reconnecting across a server restart with what
//! was sent meanwhile flushed in order.

use std::{net::SocketAddr, process::Child, time::Duration};

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wspool_client::{Answer, Client, Event, Format, Options, SendMsg};

const WAIT: Duration = Duration::from_secs(10);

/// The chat example as a child process, killed if a test fails with it
/// still running.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The chat example on `addr`; returns once it serves.
fn chat(addr: SocketAddr) -> Server {
    chat_with(addr, &[])
}

/// The chat example on `addr` with flags `args`.
fn chat_with(addr: SocketAddr, args: &[&str]) -> Server {
    use std::io::{BufRead, BufReader};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var("CARGO_TARGET_DIR").map_or(root.join("target"), Into::into);
    let bin = target.join("debug/examples/chat");
    assert!(
        bin.exists(),
        "{} is missing: cargo build --example chat",
        bin.display()
    );
    let mut child = std::process::Command::new(bin)
        .args(["--addr", &addr.to_string()])
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.by_ref().map_while(Result::ok) {
            if line.contains("chat on http://") {
                let _ = tx.send(());
            }
        }
    });
    let started = rx.recv_timeout(WAIT);
    let server = Server(child);
    started.expect("the chat example did not start");
    server
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn options(addr: SocketAddr, id: &str) -> Options {
    Options::new(format!("ws://{addr}/ws"), id)
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
}

async fn next(client: &mut Client) -> Event {
    tokio::time::timeout(WAIT, client.next())
        .await
        .expect("no event in time")
        .expect("the client ended")
}

/// Open, and registered: the server has the client once a message to
/// itself comes back (the handshake's answer can come first).
async fn opened(client: &mut Client, id: &str) {
    assert_eq!(next(client).await, Event::Open);
    client.send(msg(id, &[], "registered?")).unwrap();
    assert_eq!(message(client).await.msg, "registered?");
}

async fn message(client: &mut Client) -> SendMsg {
    loop {
        match next(client).await {
            Event::Message(m) => return m,
            // Reconnecting meanwhile (a server not back yet): attempts.
            Event::Open
            | Event::Closed {
                reconnecting: true, ..
            } => {}
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

async fn closed(client: &mut Client) -> (u16, bool) {
    loop {
        if let Event::Closed {
            code, reconnecting, ..
        } = next(client).await
        {
            return (code, reconnecting);
        }
    }
}

fn msg(to: &str, channels: &[&str], text: &str) -> SendMsg {
    SendMsg {
        to_client_id: to.into(),
        channel: channels.iter().map(|c| c.to_string()).collect(),
        msg: text.into(),
        ..Default::default()
    }
}

/// `GET path` on the chat example's admin API: the status and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut http = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    http.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    http.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_owned())
}

/// `POST path` with `body` on the chat example's admin API: the status.
async fn post(addr: SocketAddr, path: &str, body: &str) -> u16 {
    let mut http = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    http.read_to_string(&mut response).await.unwrap();
    response[9..12].parse().unwrap()
}

/// Kills the server gently (SIGINT: it closes every client with 1001).
fn stop(mut server: Server) {
    let pid = server.0.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status();
    let _ = server.0.wait();
}

#[tokio::test]
async fn binary_and_json_clients_chat_and_receipts_are_told_apart() {
    let addr = free_addr();
    let server = chat(addr);
    let mut alice = Client::connect(options(addr, "alice").channels(["room1"])).unwrap();
    let mut bob = Client::connect(
        options(addr, "bob")
            .channels(["room1"])
            .format(Format::Json),
    )
    .unwrap();
    opened(&mut alice, "alice").await;
    opened(&mut bob, "bob").await;

    alice.send(msg("", &["room1"], "hello room")).unwrap();
    let got = message(&mut bob).await;
    assert_eq!(
        (got.msg.as_str(), got.from_client_id.as_str()),
        ("hello room", "alice")
    );
    assert_eq!(
        message(&mut alice).await.msg,
        "hello room",
        "a member gets its own"
    );

    bob.send(msg("alice", &[], "hi alice")).unwrap();
    let got = message(&mut alice).await;
    assert_eq!(
        (got.msg.as_str(), got.from_client_id.as_str()),
        ("hi alice", "bob")
    );

    bob.send(SendMsg {
        msg_id: "m-1".into(),
        ..msg("nobody", &[], "anyone?")
    })
    .unwrap();
    match next(&mut bob).await {
        Event::Receipt(r) => assert_eq!((r.status, r.msg_id.as_str()), (4, "m-1")),
        other => panic!("expected a receipt, got {other:?}"),
    }
    alice.close();
    assert_eq!(closed(&mut alice).await, (1000, false));
    assert!(
        tokio::time::timeout(WAIT, alice.next())
            .await
            .unwrap()
            .is_none(),
        "ended"
    );
    stop(server);
}

/// 4001 (replaced) and 4002 (disconnected by the server) end the client.
#[tokio::test]
async fn replaced_and_kicked_do_not_reconnect() {
    let addr = free_addr();
    let server = chat(addr);
    let mut first = Client::connect(options(addr, "dup")).unwrap();
    opened(&mut first, "dup").await;
    let mut second = Client::connect(options(addr, "dup")).unwrap();
    opened(&mut second, "dup").await;
    assert_eq!(closed(&mut first).await, (4001, false));
    assert!(tokio::time::timeout(WAIT, first.next())
        .await
        .unwrap()
        .is_none());

    // The chat example's admin API: DELETE /api/clients/dup.
    let mut http = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request =
        format!("DELETE /api/clients/dup HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    http.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    http.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(closed(&mut second).await, (4002, false));
    stop(server);
}

/// A server restart: the client reconnects with backoff, and what was
/// sent while it was away is written in order once it is back.
#[tokio::test]
async fn reconnects_after_a_restart_and_flushes_what_was_queued_in_order() {
    let addr = free_addr();
    let server = chat(addr);
    let mut me = Client::connect(options(addr, "me")).unwrap();
    opened(&mut me, "me").await;
    stop(server);
    // 1001 from the server's shutdown, or 1006 when the process is gone
    // before its close frame is read: either way, lost and reconnecting.
    let (code, reconnecting) = closed(&mut me).await;
    assert!(
        matches!(code, 1001 | 1006) && reconnecting,
        "{code} {reconnecting}"
    );
    for n in ["1", "2", "3"] {
        me.send(msg("me", &[], n)).unwrap();
    }
    let server = chat(addr);
    for n in ["1", "2", "3"] {
        assert_eq!(message(&mut me).await.msg, n);
    }
    stop(server);
}

/// While away, at most `max_queued` sends wait; the next is refused with
/// `QueueFull`, and once connected sends go out at once again.
#[tokio::test]
async fn the_queue_while_away_is_bounded() {
    let addr = free_addr();
    let server = chat(addr);
    let mut me = Client::connect(options(addr, "bounded").max_queued(2)).unwrap();
    opened(&mut me, "bounded").await;
    stop(server);
    assert!(closed(&mut me).await.1, "reconnecting");
    me.send(msg("bounded", &[], "1")).unwrap();
    me.send(msg("bounded", &[], "2")).unwrap();
    assert_eq!(
        me.send(msg("bounded", &[], "3")),
        Err(wspool_client::Error::QueueFull(2))
    );
    let server = chat(addr);
    assert_eq!(message(&mut me).await.msg, "1");
    assert_eq!(message(&mut me).await.msg, "2");
    for n in ["4", "5", "6"] {
        me.send(msg("bounded", &[], n)).unwrap();
    }
    for n in ["4", "5", "6"] {
        assert_eq!(message(&mut me).await.msg, n);
    }
    stop(server);
}

/// `send_and_wait` gets the pool's receipt for its message (matched by a
/// `msgId` it makes), which then does not reach the stream; a message the
/// pool refuses nothing of gets `NoReceipt` and is delivered; a `msgId`
/// awaited twice is refused.
#[tokio::test]
async fn send_and_wait_answers_with_the_pools_receipt() {
    let addr = free_addr();
    let server = chat(addr);
    let mut me = Client::connect(options(addr, "asker")).unwrap();
    opened(&mut me, "asker").await;

    let answer = me
        .send_and_wait(msg("nobody", &[], "anyone?"), WAIT)
        .await
        .unwrap();
    let Answer::Receipt(receipt) = answer else {
        panic!("expected a receipt, got {answer:?}")
    };
    assert_eq!((receipt.status, receipt.msg_id.as_str()), (4, "asker-1"));

    let short = Duration::from_millis(300);
    let answer = me.send_and_wait(msg("asker", &[], "to me"), short).await;
    assert_eq!(answer, Ok(Answer::NoReceipt));
    // The stream has the message, and not the receipt taken above.
    let Event::Message(got) = next(&mut me).await else {
        panic!("expected the message")
    };
    assert_eq!(
        (got.msg.as_str(), got.msg_id.as_str()),
        ("to me", "asker-2")
    );

    let same = SendMsg {
        msg_id: "m".into(),
        ..msg("nobody", &[], "twice")
    };
    let (first, second) = tokio::join!(
        me.send_and_wait(same.clone(), WAIT),
        me.send_and_wait(same, WAIT)
    );
    assert!(matches!(first, Ok(Answer::Receipt(r)) if r.msg_id == "m"));
    assert_eq!(second, Err(wspool_client::Error::Awaited("m".into())));
    stop(server);
}

/// A reader that falls behind: the client stops reading its connection
/// when its events wait unread, the server's queue for it fills, the
/// server closes it with 4008 (too slow), and the client reconnects and
/// serves again.
#[tokio::test]
async fn a_reader_that_falls_behind_is_closed_4008_and_reconnects() {
    let addr = free_addr();
    let server = chat_with(
        addr,
        // No offline buffer: what was queued for it at the close would
        // fill its new queue, and its own message after the reconnect
        // would not fit.
        &[
            "--slow-client-timeout-secs",
            "1",
            "--queue-len",
            "8",
            "--offline-ttl-secs",
            "0",
        ],
    );
    let mut slow = Client::connect(options(addr, "slow").event_buffer(1)).unwrap();
    opened(&mut slow, "slow").await;
    // 64 KiB at a time for slow through the admin API (the server's own
    // sends, which no inbound rate limit slows), while slow reads none of
    // it: the sockets' buffers fill, then its queue on the server, and
    // the API answers 503 (queue full).
    let body =
        serde_json::json!({ "toClientId": "slow", "msg": "x".repeat(64 * 1024) }).to_string();
    tokio::time::timeout(WAIT, async {
        for sent in 0.. {
            match post(addr, "/api/send", &body).await {
                200 => continue,
                503 => return sent,
                other => panic!("api/send answered {other}"),
            }
        }
        unreachable!()
    })
    .await
    .expect("slow's queue on the server fills");
    // Still reading nothing: after `slow_client_timeout` the server gives
    // up on it (it is gone from the admin API).
    tokio::time::timeout(WAIT, async {
        while get(addr, "/api/clients/slow").await.0 != 404 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the server closes slow");

    // Reading again: what was in the sockets, then the close, then the
    // reconnect.
    let (code, reconnecting) = closed(&mut slow).await;
    assert_eq!((code, reconnecting), (4008, true));
    assert_eq!(next(&mut slow).await, Event::Open);
    slow.send(msg("slow", &[], "back")).unwrap();
    assert_eq!(message(&mut slow).await.msg, "back");
    stop(server);
}
