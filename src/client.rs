//! One connected client: its shared state, the handle the application holds,
//! the configuration it registers with, and the runtime info it reports.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{
            AtomicBool, AtomicU64,
            Ordering::{Acquire, Relaxed, Release},
        },
        Arc,
    },
    task::Context,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::{
    message::Encoded,
    node::{mailbox::Mailbox, PushError},
    Callbacks, ClientId, DisconnectReason, Format, JoinError, SendError, SendMsg, SendOptions,
    WsPool,
};

/// What a connection registers as: the original's `Config` (`Id`, `Type`,
/// `Channel`) plus the frame format, the remote address and per-connection
/// callbacks. The provided route builds one from the handshake token (or
/// from the authorisation hook); give one to
/// [`WsPool::accept`](crate::WsPool::accept) in a handler of your own.
///
/// ```
/// use wspool::{ClientConfig, Format};
///
/// let config = ClientConfig::new("alice").kind("app").channels(["room1", "room2"]).format(Format::Json);
/// assert_eq!(config.id(), "alice");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ClientConfig {
    pub(crate) id: String,
    pub(crate) kind: String,
    pub(crate) channels: Vec<String>,
    pub(crate) format: Format,
    pub(crate) remote_addr: Option<SocketAddr>,
    pub(crate) protocol: Option<String>,
    pub(crate) callbacks: Callbacks,
}

impl ClientConfig {
    /// A client with this id, kind `"ws"`, no channels, binary frames.
    pub fn new(id: impl Into<String>) -> Self {
        ClientConfig {
            id: id.into(),
            kind: "ws".to_owned(),
            channels: Vec::new(),
            format: Format::Binary,
            remote_addr: None,
            protocol: None,
            callbacks: Callbacks::default(),
        }
    }

    /// The id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The kind of client (the original's `Type`): free text for the
    /// application, e.g. `"web"`, `"app"`, `"device"`.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = kind.into();
        self
    }

    /// The channels it joins at once.
    pub fn channels<I, S>(mut self, channels: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.channels = channels.into_iter().map(Into::into).collect();
        self
    }

    /// How the server frames what it sends to it.
    pub fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// The client's address, for [`ClientInfo::remote_addr`] and, in
    /// [`WsPool::accept`](crate::WsPool::accept), for
    /// `max_connections_per_ip`.
    pub fn remote_addr(mut self, addr: SocketAddr) -> Self {
        self.remote_addr = Some(addr);
        self
    }

    /// The subprotocol to echo in the handshake response. A browser that
    /// offered subprotocols fails the handshake unless one is echoed.
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocol = Some(protocol.into());
        self
    }

    /// Callbacks for this connection only (they run after the pool's).
    pub fn callbacks(mut self, callbacks: Callbacks) -> Self {
        self.callbacks = callbacks;
        self
    }
}

/// A request to close a connection, carried to its task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CloseRequest {
    /// Why; gives the close code and text.
    pub(crate) reason: DisconnectReason,
    /// Write what is queued before closing (shutdown) or not (replace, kick).
    pub(crate) flush: bool,
}

/// The shared state of one connection. Its task owns the socket; everything
/// here is what others need to reach it or report on it.
pub(crate) struct ClientState {
    /// Unique per connection, so a replaced connection cannot unregister or
    /// disturb its successor with the same id.
    pub(crate) conn_id: u64,
    pub(crate) id: ClientId,
    pub(crate) kind: Arc<str>,
    pub(crate) format: Format,
    pub(crate) remote_addr: Option<SocketAddr>,
    pub(crate) connected_at: SystemTime,
    /// The client id's mailbox: what is queued for it. Shared with the
    /// connection that replaces this one or reconnects after it.
    pub(crate) mailbox: Arc<Mailbox>,
    /// Wakes this connection's task: the mailbox has messages, or a close
    /// was requested.
    pub(crate) wake: Arc<Notify>,
    /// A pending close request. A mutex because it is set from other tasks
    /// and read by the connection's; never held across an await.
    close: Mutex<Option<CloseRequest>>,
    /// Set with a close request that does not wait for the queue (replace,
    /// kick, 4008, shutdown past its timeout): a write in progress is
    /// abandoned for it. An atomic, so a write that is pending checks it
    /// with one load.
    pub(crate) close_now: AtomicBool,
    /// The connection task while it waits on a pending write, woken by such
    /// a request. An `AtomicWaker`: registering is a compare-and-swap, no
    /// lock and no waiter list on the write path.
    pub(crate) close_waker: AtomicWaker,
    pub(crate) callbacks: Callbacks,
    /// In a cluster, the claim number under which this connection owns its
    /// id (0 on a single node): a message routed under a newer claim is
    /// not for it.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    epoch: AtomicU64,
    // Relaxed atomics: independent tallies, written by the connection task.
    pub(crate) last_received_ms: AtomicU64,
    pub(crate) last_sent_ms: AtomicU64,
    pub(crate) messages_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
}

pub(crate) fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl ClientState {
    pub(crate) fn new(conn_id: u64, config: &ClientConfig, mailbox: Arc<Mailbox>) -> Self {
        ClientState {
            conn_id,
            id: mailbox.client.clone(),
            kind: Arc::from(config.kind.as_str()),
            format: config.format,
            remote_addr: config.remote_addr,
            connected_at: SystemTime::now(),
            mailbox,
            wake: Arc::new(Notify::new()),
            close: Mutex::new(None),
            close_now: AtomicBool::new(false),
            close_waker: AtomicWaker::new(),
            callbacks: config.callbacks.clone(),
            epoch: AtomicU64::new(0),
            last_received_ms: AtomicU64::new(0),
            last_sent_ms: AtomicU64::new(0),
            messages_in: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        }
    }

    /// Asks the connection's task to close. The first request wins, unless
    /// `force` (shutdown giving up on a flush). Returns whether this request
    /// was taken.
    pub(crate) fn request_close(&self, request: CloseRequest, force: bool) -> bool {
        let now = !request.flush;
        {
            let mut close = self.close.lock();
            if close.is_some() && !force {
                return false;
            }
            *close = Some(request);
        }
        self.wake.notify_one();
        if now {
            self.close_now.store(true, Release);
            self.close_waker.wake();
        }
        true
    }

    /// The claim number this connection holds its id under (a cluster).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Acquire)
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Release);
    }

    pub(crate) fn close_request(&self) -> Option<CloseRequest> {
        self.close.lock().clone()
    }

    /// The close request to act on at once, if one was made: registers
    /// `cx`'s waker first, so a request made after this check wakes it.
    pub(crate) fn poll_close_now(&self, cx: &Context<'_>) -> Option<CloseRequest> {
        self.close_waker.register(cx.waker());
        if !self.close_now.load(Acquire) {
            return None;
        }
        self.close_request().filter(|c| !c.flush)
    }

    pub(crate) fn info(&self, channels: Vec<String>) -> ClientInfo {
        let at = |ms: u64| (ms != 0).then(|| UNIX_EPOCH + Duration::from_millis(ms));
        let (queued_messages, queued_bytes) = self.mailbox.len();
        ClientInfo {
            id: self.id.clone(),
            kind: self.kind.to_string(),
            channels,
            format: self.format,
            remote_addr: self.remote_addr,
            connected_at: self.connected_at,
            last_received_at: at(self.last_received_ms.load(Relaxed)),
            last_sent_at: at(self.last_sent_ms.load(Relaxed)),
            messages_in: self.messages_in.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            messages_out: self.messages_out.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            queued_messages,
            queued_bytes,
            node: None,
        }
    }
}

/// Runtime information about one client (a snapshot).
///
/// Serializes (for the admin API) with camelCase names and times as
/// milliseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ClientInfo {
    /// Its id.
    pub id: ClientId,
    /// Its kind (the original's `Type`).
    pub kind: String,
    /// The channels it is in.
    pub channels: Vec<String>,
    /// How the server frames what it sends to it.
    pub format: Format,
    /// The peer's address, when known.
    pub remote_addr: Option<SocketAddr>,
    /// When it connected.
    #[serde(serialize_with = "ser_time")]
    pub connected_at: SystemTime,
    /// When a frame (or pong) last arrived from it.
    #[serde(serialize_with = "ser_opt_time")]
    pub last_received_at: Option<SystemTime>,
    /// When a message was last written to it.
    #[serde(serialize_with = "ser_opt_time")]
    pub last_sent_at: Option<SystemTime>,
    /// Data frames received from it.
    pub messages_in: u64,
    /// Payload bytes received from it.
    pub bytes_in: u64,
    /// Data frames written to it.
    pub messages_out: u64,
    /// Payload bytes written to it.
    pub bytes_out: u64,
    /// Messages in its outbound queue now.
    pub queued_messages: usize,
    /// Bytes in its outbound queue now.
    pub queued_bytes: usize,
    /// In a cluster, the node it is connected to (`None` on a single
    /// node). For a client on another node, the counters and queue sizes
    /// are zero and `format` and `remote_addr` unknown: presence carries
    /// its id, kind, channels and connection time only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl ClientInfo {
    /// A client on another node, from the cluster's presence record.
    pub(crate) fn remote(p: crate::cluster::Presence) -> Self {
        ClientInfo {
            id: ClientId::from(p.id.as_str()),
            kind: p.kind,
            channels: p.channels,
            format: Format::default(),
            remote_addr: None,
            connected_at: UNIX_EPOCH + Duration::from_millis(p.connected_at),
            last_received_at: None,
            last_sent_at: None,
            messages_in: 0,
            bytes_in: 0,
            messages_out: 0,
            bytes_out: 0,
            queued_messages: 0,
            queued_bytes: 0,
            node: Some(p.node),
        }
    }
}

fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(epoch_ms(*t))
}

fn ser_opt_time<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_u64(epoch_ms(*t)),
        None => s.serialize_none(),
    }
}

/// A handle on one connection (the original's `Client`), from
/// [`WsPool::client`](crate::WsPool::client) or a callback. Cheap to clone.
/// It refers to that connection only: once it has ended, `send` and `join`
/// fail even if a new connection has taken the same id.
#[derive(Clone)]
pub struct ClientHandle {
    pub(crate) pool: WsPool,
    pub(crate) state: Arc<ClientState>,
}

impl std::fmt::Debug for ClientHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientHandle")
            .field("id", &self.state.id)
            .finish_non_exhaustive()
    }
}

impl ClientHandle {
    /// Its id.
    pub fn id(&self) -> &ClientId {
        &self.state.id
    }

    /// Its kind.
    pub fn kind(&self) -> &str {
        &self.state.kind
    }

    /// Queues `msg` for this connection, whatever its `toClientId`. Never
    /// waits.
    ///
    /// # Errors
    /// [`SendError::NotConnected`] once this connection has ended (even if
    /// the id has reconnected: use [`WsPool::send`] to reach the id),
    /// [`SendError::QueueFull`] when its queue is at its limit.
    pub fn send(&self, msg: SendMsg) -> Result<(), SendError> {
        self.send_with(msg, &SendOptions::default())
    }

    /// [`send`](Self::send) with options (time to live).
    pub fn send_with(&self, msg: SendMsg, options: &SendOptions) -> Result<(), SendError> {
        let encoded = Encoded::new(Arc::new(msg), None, self.pool.ttl(options));
        match self.pool.node().push_to_conn(&self.state, &encoded) {
            Ok(_) => Ok(()),
            Err(PushError::Full) => Err(SendError::QueueFull(self.state.id.clone())),
            Err(PushError::Closed) => Err(SendError::NotConnected(self.state.id.clone())),
        }
    }

    /// Adds a channel at run time. `Ok(false)` if it was already a member.
    pub fn join(&self, channel: &str) -> Result<bool, JoinError> {
        self.pool.join(&self.state, channel)
    }

    /// Removes a channel at run time. `false` if it was not a member.
    pub fn leave(&self, channel: &str) -> bool {
        self.pool.leave(&self.state, channel)
    }

    /// Closes the connection with 4002 "disconnected". What is still queued
    /// is not sent: it is reported as
    /// [`PoolEvent::Undelivered`](crate::PoolEvent::Undelivered), and the
    /// id is forgotten (no offline buffer).
    pub fn disconnect(&self) {
        let request = CloseRequest {
            reason: DisconnectReason::Kicked,
            flush: false,
        };
        self.state.request_close(request, false);
    }

    /// Is this connection still registered?
    pub fn is_connected(&self) -> bool {
        self.pool.is_registered(&self.state)
    }

    /// A snapshot of its runtime info.
    pub fn info(&self) -> ClientInfo {
        let channels = self.pool.channels_of(&self.state);
        self.state.info(channels)
    }
}
