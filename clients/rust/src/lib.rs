//! The Rust client of a [wspool](../../README.md) server: connect with an
//! id and channels (the subprotocol token of PROTOCOL.md section 1),
//! binary (protobuf) or JSON frames, a `Stream` of what arrives with the
//! pool's receipts told apart, and reconnects with backoff and jitter
//! governed by the close code, as the JavaScript client does.
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use wspool_client::{Client, Event, Options};
//!
//! # async fn run() -> Result<(), wspool_client::Error> {
//! let mut client = Client::connect(Options::new("ws://127.0.0.1:3000/ws", "alice").channels(["room1"]))?;
//! client.send(wspool::SendMsg { channel: vec!["room1".into()], msg: "hello".into(), ..Default::default() })?;
//! while let Some(event) = client.next().await {
//!     match event {
//!         Event::Message(msg) => println!("{}: {}", msg.from_client_id, msg.msg),
//!         Event::Receipt(r) => println!("the pool says {} for {}", r.status, r.msg_id),
//!         Event::Closed { reconnecting: false, .. } => break,
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Semantics (the same as the JavaScript client's, `clients/js/README.md`):
//! - **Reconnects** after any close but the final ones ([`FINAL_CLOSE_CODES`]:
//!   1000 after [`Client::close`], protocol errors, 1008, 1009, 4001
//!   replaced, 4002 disconnected by the server). A refused handshake is
//!   retried like a lost connection (a restarting server answers 503).
//! - **Backoff**: attempt n waits a random time between half and all of
//!   `min(max_delay, min_delay * 2^n)`; an open starts over.
//! - **While away**, [`Client::send`] queues up to `max_queued` messages,
//!   written in order once open again; past that it returns
//!   [`Error::QueueFull`].
//! - **Unread events**: at most [`Options::event_buffer`] wait; then the
//!   client reads nothing more until the stream is read (the server sees
//!   a slow reader and, after its `slow_client_timeout`, closes with
//!   4008; the client reconnects).
//! - **The pool's answer** to one message: [`Client::send_and_wait`].

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use futures_util::{SinkExt, Stream, StreamExt};
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, protocol::CloseFrame, Message};
pub use wspool::{Format, SendMsg};

/// Close codes after which the client does not reconnect: the server (or
/// this client) meant the end, or reconnecting would fail the same way.
pub const FINAL_CLOSE_CODES: [u16; 9] = [1000, 1002, 1003, 1007, 1008, 1009, 1010, 4001, 4002];

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The id or a channel breaks the token's rules (PROTOCOL.md section 1).
    #[error("bad token: {0}")]
    Token(String),
    /// The URL is not a `ws://` or `wss://` URL the client can use.
    #[error("bad URL: {0}")]
    Url(String),
    /// Not connected, and `max_queued` messages are waiting already.
    #[error("not connected and {0} messages already queued")]
    QueueFull(usize),
    /// The client is closed.
    #[error("the client is closed")]
    Closed,
    /// [`Client::send_and_wait`] was given a message whose `msgId` is
    /// already awaited.
    #[error("msgId {0:?} is already awaited")]
    Awaited(String),
}

/// What the pool answered to one message ([`Client::send_and_wait`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Answer {
    /// The pool's receipt for it: not delivered, and why (`status`: 3
    /// expired, 4 not connected, 5 queue full, 7 refused).
    Receipt(Box<SendMsg>),
    /// No receipt within the time given. The pool acknowledges nothing
    /// that goes well, so this is as close to "delivered" as the protocol
    /// says: nothing was refused so far (a message that later expires in
    /// a queue still earns a status-3 receipt, on the stream).
    NoReceipt,
}

/// What the client tells its user.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// Connected (again).
    Open,
    /// A message from another client or the server application.
    Message(SendMsg),
    /// A message from the pool itself: a `status` and no sender
    /// (PROTOCOL.md section 4: 3 expired, 4 not connected, 5 queue full,
    /// 6 undecodable, 7 refused).
    Receipt(SendMsg),
    /// The connection closed; `reconnecting` says whether another attempt
    /// follows.
    Closed {
        code: u16,
        reason: String,
        reconnecting: bool,
    },
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct Options {
    url: String,
    id: String,
    channels: Vec<String>,
    format: Format,
    reconnect: bool,
    min_delay: Duration,
    max_delay: Duration,
    max_queued: usize,
    event_buffer: usize,
}

impl Options {
    /// `url` (`ws://host:port/ws`) as `id`; no channels, binary frames,
    /// reconnecting, 500 ms to 30 s of backoff, 1,000 messages queued.
    pub fn new(url: impl Into<String>, id: impl Into<String>) -> Self {
        Options {
            url: url.into(),
            id: id.into(),
            channels: Vec::new(),
            format: Format::Binary,
            reconnect: true,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_queued: 1000,
            event_buffer: 1024,
        }
    }

    /// Channels to join at connect.
    pub fn channels<I: IntoIterator<Item = S>, S: Into<String>>(mut self, channels: I) -> Self {
        self.channels = channels.into_iter().map(Into::into).collect();
        self
    }

    /// Binary (protobuf, the default) or JSON frames (adds `?format=json`).
    pub fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// Reconnect after a close that is not final (default true).
    pub fn reconnect(mut self, reconnect: bool) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// The backoff's first and largest ceilings.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        (self.min_delay, self.max_delay) = (min, max.max(min));
        self
    }

    /// Messages queued while away before [`Client::send`] fails.
    pub fn max_queued(mut self, max: usize) -> Self {
        self.max_queued = max;
        self
    }

    /// Events waiting for the stream's reader (default 1,024). When they
    /// are that many, the client stops reading its connection until the
    /// reader catches up: the server then sees a slow reader (its queue
    /// for this client fills; after its `slow_client_timeout` it closes
    /// with 4008, and the client reconnects), rather than this process
    /// buffering without bound.
    pub fn event_buffer(mut self, n: usize) -> Self {
        self.event_buffer = n.max(1);
        self
    }

    /// The subprotocol token `id_channel1_channel2`, checked as the server
    /// checks it.
    fn token(&self) -> Result<String, Error> {
        let limits = wspool::handshake::TokenLimits::default();
        wspool::handshake::check_id(&self.id, limits.max_id_len)
            .map_err(|e| Error::Token(e.to_string()))?;
        let mut parts = vec![self.id.as_str()];
        for channel in &self.channels {
            wspool::handshake::check_channel(channel, limits.max_channel_len)
                .map_err(|e| Error::Token(e.to_string()))?;
            if !parts[1..].contains(&channel.as_str()) {
                parts.push(channel);
            }
        }
        Ok(parts.join("_"))
    }
}

/// A connection to a wspool server, reconnecting by itself; a `Stream`
/// of [`Event`]s. Dropping it closes the connection.
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    events: mpsc::Receiver<Event>,
    away: Arc<Away>,
    max_queued: usize,
    /// The receipts [`send_and_wait`](Client::send_and_wait) awaits, by
    /// `msgId`.
    waiters: Arc<Waiters>,
    /// For `msgId`s given to messages that had none.
    id: String,
    next_msg: AtomicUsize,
}

/// Receipts awaited by `msgId`: the connection's task hands each such
/// receipt to its waiter instead of the stream.
type Waiters = parking_lot::Mutex<std::collections::HashMap<String, oneshot::Sender<SendMsg>>>;

/// What [`Client::send`] and the connection's task share.
#[derive(Default)]
struct Away {
    /// Connected now.
    open: AtomicBool,
    /// Sends made while not connected and not written yet.
    queued: AtomicUsize,
}

enum Command {
    /// A message; `counted` when it was counted in `Away::queued`.
    Send {
        msg: Box<SendMsg>,
        counted: bool,
    },
    Close,
}

impl Client {
    /// Starts connecting (in a task of its own) and returns at once; the
    /// first [`Event::Open`] says it is connected.
    pub fn connect(options: Options) -> Result<Client, Error> {
        let token = options.token()?;
        let mut url = options.url.clone();
        if options.format == Format::Json {
            url.push_str(if url.contains('?') {
                "&format=json"
            } else {
                "?format=json"
            });
        }
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| Error::Url(e.to_string()))?;
        let protocol = token.parse().map_err(|_| Error::Token(token.clone()))?;
        request
            .headers_mut()
            .insert("sec-websocket-protocol", protocol);
        let (commands, rx) = mpsc::unbounded_channel();
        let (tx, events) = mpsc::channel(options.event_buffer);
        let away = Arc::new(Away::default());
        let waiters = Arc::new(Waiters::default());
        let (max_queued, id) = (options.max_queued, options.id.clone());
        let run = Run {
            request,
            options,
            commands: rx,
            events: tx,
            queue: Default::default(),
            away: away.clone(),
            waiters: waiters.clone(),
        };
        tokio::spawn(run.run());
        Ok(Client {
            commands,
            events,
            away,
            max_queued,
            waiters,
            id,
            next_msg: AtomicUsize::new(1),
        })
    }

    /// Sends `msg` as [`send`](Self::send) does, and waits up to `within`
    /// for the pool's answer: its receipt for this message (matched by
    /// `msgId`; one is made, `<id>-<n>`, when `msg` has none), which then
    /// goes here rather than to the stream, or [`Answer::NoReceipt`].
    ///
    /// ```no_run
    /// # async fn run(client: &wspool_client::Client) -> Result<(), wspool_client::Error> {
    /// use std::time::Duration;
    /// use wspool_client::{Answer, SendMsg};
    ///
    /// let msg = SendMsg { to_client_id: "bob".into(), msg: "hi".into(), ..Default::default() };
    /// match client.send_and_wait(msg, Duration::from_secs(1)).await? {
    ///     Answer::Receipt(r) if r.status == 4 => println!("bob is not connected"),
    ///     Answer::Receipt(r) => println!("refused: {}", r.callback_msg),
    ///     _ => println!("nothing refused"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`send`](Self::send); [`Error::Awaited`] when another call
    /// awaits the same `msgId`.
    pub async fn send_and_wait(&self, mut msg: SendMsg, within: Duration) -> Result<Answer, Error> {
        if msg.msg_id.is_empty() {
            let n = self.next_msg.fetch_add(1, SeqCst);
            msg.msg_id = format!("{}-{n}", self.id);
        }
        let key = msg.msg_id.clone();
        let (tx, rx) = oneshot::channel();
        {
            let mut waiters = self.waiters.lock();
            if waiters.contains_key(&key) {
                return Err(Error::Awaited(key));
            }
            waiters.insert(key.clone(), tx);
        }
        // Taken out however this ends (an error, the time, the caller
        // dropping the future).
        struct Forget<'a>(&'a Waiters, &'a str);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                self.0.lock().remove(self.1);
            }
        }
        let _forget = Forget(&self.waiters, &key);
        self.send(msg)?;
        match tokio::time::timeout(within, rx).await {
            Ok(Ok(receipt)) => Ok(Answer::Receipt(Box::new(receipt))),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Ok(Answer::NoReceipt),
        }
    }

    /// Sends `msg`: at once when connected, else queued (up to
    /// `max_queued`) and sent in order on reconnect.
    pub fn send(&self, msg: SendMsg) -> Result<(), Error> {
        let counted = !self.away.open.load(SeqCst);
        if counted && self.away.queued.fetch_add(1, SeqCst) >= self.max_queued {
            self.away.queued.fetch_sub(1, SeqCst);
            return Err(Error::QueueFull(self.max_queued));
        }
        // Encoded by the connection's task, once, in the format it
        // connected with.
        self.commands
            .send(Command::Send {
                msg: Box::new(msg),
                counted,
            })
            .map_err(|_| Error::Closed)
    }

    /// Closes with 1000, for good.
    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }
}

impl Stream for Client {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.events.poll_recv(cx)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Close);
    }
}

/// The connection's task.
struct Run {
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
    options: Options,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Bounded: a full stream stops the reading (see
    /// [`Options::event_buffer`]).
    events: mpsc::Sender<Event>,
    /// Messages waiting for a connection, and whether each is counted in
    /// `away.queued`.
    queue: std::collections::VecDeque<(Box<SendMsg>, bool)>,
    away: Arc<Away>,
    waiters: Arc<Waiters>,
}

/// How one connection ended.
enum End {
    /// By the server or the network, with this code and reason.
    Lost(u16, String),
    /// By [`Client::close`] (or the client was dropped).
    Closed,
}

impl Run {
    async fn run(mut self) {
        let mut attempt = 0u32;
        loop {
            let end = match tokio_tungstenite::connect_async(self.request.clone()).await {
                Ok((ws, _)) => {
                    attempt = 0;
                    self.serve(ws).await
                }
                // A refused handshake looks like a lost connection, as in
                // a browser: retried.
                Err(e) => {
                    tracing::debug!(error = %e, "wspool-client: connect failed");
                    End::Lost(1006, String::new())
                }
            };
            let (code, reason, by_us) = match end {
                End::Closed => (1000, String::new(), true),
                End::Lost(code, reason) => (code, reason, false),
            };
            let reconnecting =
                self.options.reconnect && !by_us && !FINAL_CLOSE_CODES.contains(&code);
            let closed = Event::Closed {
                code,
                reason,
                reconnecting,
            };
            let _ = self.events.send(closed).await;
            if !reconnecting {
                return;
            }
            let wait = backoff(attempt, self.options.min_delay, self.options.max_delay);
            attempt = attempt.saturating_add(1);
            // Sends queue while waiting; a close ends it.
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    command = self.commands.recv() => match command {
                        Some(Command::Send { msg, counted }) => self.queue.push_back((msg, counted)),
                        Some(Command::Close) | None => return,
                    },
                }
            }
        }
    }

    /// One connection: the queue first, then sends and what arrives.
    async fn serve<S>(&mut self, mut ws: tokio_tungstenite::WebSocketStream<S>) -> End
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let json = self.options.format == Format::Json;
        self.away.open.store(true, SeqCst);
        let _ = self.events.send(Event::Open).await;
        let end = self.serve_open(&mut ws, json).await;
        self.away.open.store(false, SeqCst);
        end
    }

    async fn serve_open<S>(
        &mut self,
        ws: &mut tokio_tungstenite::WebSocketStream<S>,
        json: bool,
    ) -> End
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        // What waited, first and in order; then what arrives.
        while let Some((msg, counted)) = self.queue.pop_front() {
            if counted {
                self.away.queued.fetch_sub(1, SeqCst);
            }
            if ws.send(frame(&msg, json)).await.is_err() {
                return End::Lost(1006, String::new());
            }
        }
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Send { msg, counted }) => {
                        if counted {
                            self.away.queued.fetch_sub(1, SeqCst);
                        }
                        if ws.send(frame(&msg, json)).await.is_err() {
                            return End::Lost(1006, String::new());
                        }
                    }
                    Some(Command::Close) | None => {
                        let frame = CloseFrame { code: 1000.into(), reason: "".into() };
                        let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(Some(frame))).await;
                        return End::Closed;
                    }
                },
                frame = ws.next() => match frame {
                    Some(Ok(Message::Binary(b))) => self.deliver(SendMsg::decode(b).map_err(|e| e.to_string())).await,
                    Some(Ok(Message::Text(t))) => self.deliver(serde_json::from_str(t.as_str()).map_err(|e| e.to_string())).await,
                    Some(Ok(Message::Close(frame))) => {
                        let (code, reason) = frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                        // Let tungstenite answer the close.
                        let _ = tokio::time::timeout(Duration::from_secs(1), ws.next()).await;
                        return End::Lost(code, reason);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return End::Lost(1006, String::new()),
                },
            }
        }
    }

    /// Hands what arrived to its waiter or the stream; waits while the
    /// stream is full (and so reads nothing meanwhile).
    async fn deliver(&self, msg: Result<SendMsg, String>) {
        match msg {
            // The pool's own receipts come with a status and no sender.
            Ok(msg) if msg.status != 0 && msg.from_client_id.is_empty() => {
                let waiter = self.waiters.lock().remove(&msg.msg_id);
                let msg = match waiter {
                    Some(waiter) => match waiter.send(msg) {
                        Ok(()) => return,
                        // Its caller stopped waiting just now.
                        Err(msg) => msg,
                    },
                    None => msg,
                };
                let _ = self.events.send(Event::Receipt(msg)).await;
            }
            Ok(msg) => {
                let _ = self.events.send(Event::Message(msg)).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "wspool-client: undecodable frame from the server")
            }
        }
    }
}

/// `msg` as a frame of the connection's format: binary protobuf, or proto3
/// JSON text.
fn frame(msg: &SendMsg, json: bool) -> Message {
    if json {
        // Plain strings, numbers and bytes: serializing cannot fail.
        Message::text(serde_json::to_string(msg).unwrap_or_default())
    } else {
        Message::binary(msg.encode_to_vec())
    }
}

/// min(max, min * 2^attempt), then a random half of it to a whole.
fn backoff(attempt: u32, min: Duration, max: Duration) -> Duration {
    let ceiling = min
        .saturating_mul(2u32.saturating_pow(attempt.min(30)))
        .min(max);
    ceiling / 2 + ceiling.mul_f64(fastrand::f64() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_ceiling_with_jitter() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(1));
        for attempt in 0..40 {
            let ceiling = Duration::from_millis(100 * 2u64.pow(attempt.min(10))).min(max);
            let wait = backoff(attempt, min, max);
            assert!(
                wait >= ceiling / 2 && wait <= ceiling,
                "{attempt}: {wait:?}"
            );
        }
    }

    #[test]
    fn tokens_are_checked_as_the_server_checks_them() {
        let token = |id: &str, ch: &[&str]| {
            Options::new("ws://x/ws", id)
                .channels(ch.iter().copied())
                .token()
        };
        assert_eq!(
            token("alice", &["r1", "r2", "r1"]),
            Ok("alice_r1_r2".into())
        );
        assert!(matches!(token("", &[]), Err(Error::Token(_))));
        assert!(matches!(token("a_b", &[]), Err(Error::Token(_))));
        assert!(matches!(token("a", &["bad room"]), Err(Error::Token(_))));
    }
}
