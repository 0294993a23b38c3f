//! The pool's event stream: what happened, for whoever wants to know.
//!
//! [`WsPool::events`](crate::WsPool::events) returns an [`EventStream`]. Each
//! stream has its own buffer of `event_buffer` events (default 1024); a
//! consumer that falls further behind is told how many it missed with a
//! [`PoolEvent::Lagged`] item, then carries on with the newest. Nothing is
//! lost silently. Events are only built while at least one stream exists.
//!
//! ```no_run
//! use tokio_stream::StreamExt;
//! use wspool::{PoolEvent, WsPool};
//!
//! # async fn run(pool: WsPool) {
//! let mut events = pool.events();
//! while let Some(event) = events.next().await {
//!     match event {
//!         PoolEvent::Connected(info) => println!("{} connected", info.id),
//!         PoolEvent::Message { from, msg } => println!("{from}: {}", msg.msg),
//!         PoolEvent::Lagged(n) => eprintln!("missed {n} events"),
//!         _ => {}
//!     }
//! }
//! # }
//! ```

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::sync::broadcast;
use tokio_stream::{wrappers::errors::BroadcastStreamRecvError, wrappers::BroadcastStream, Stream};

use crate::{ClientId, ClientInfo, PoolError, SendMsg};

/// Something that happened in the pool.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PoolEvent {
    /// A client connected and was registered.
    Connected(ClientInfo),
    /// A client sent a message (after stamping and the `on_message`
    /// callback, before relaying).
    Message {
        /// The sender.
        from: ClientId,
        /// The message.
        msg: Arc<SendMsg>,
    },
    /// A connection ended.
    Disconnected {
        /// The client.
        id: ClientId,
        /// Why, with the close code when there was one.
        reason: DisconnectReason,
    },
    /// A runtime error of a connection (or of the pool when `id` is `None`).
    Error {
        /// The client concerned.
        id: Option<ClientId>,
        /// What went wrong.
        error: PoolError,
    },
    /// A message was not queued for a recipient because its queue was full
    /// (a broadcast skipping it, or a relayed message).
    Dropped {
        /// The recipient.
        to: ClientId,
        /// The message it did not get.
        msg: Arc<SendMsg>,
    },
    /// A message that was queued or buffered for a client will not be
    /// written to it. When it was relayed from a client, that client also
    /// gets a receipt (see [`UndeliveredReason::receipt_status`]).
    Undelivered {
        /// The recipient.
        to: ClientId,
        /// The message.
        msg: Arc<SendMsg>,
        /// Why.
        reason: UndeliveredReason,
    },
    /// This stream fell behind and missed this many events.
    Lagged(u64),
    /// The link to the cluster (Redis) broke. Until [`ClusterUp`](Self::ClusterUp),
    /// what needs the other nodes fails with `Unavailable`; this node's
    /// clients are still served.
    ClusterDown,
    /// The link to the cluster is back: subscriptions restored, and this
    /// node's ids checked (`closed` of them had been taken over by another
    /// node meanwhile and were closed with 4001).
    ClusterUp {
        /// Connections closed because another node had claimed their id.
        closed: usize,
    },
    /// Publications to `channel` (`*` for `broadcast_all`; empty for
    /// direct messages to this node's clients) were missed by this node
    /// and were no longer in the history: their recipients here did not
    /// get them.
    ClusterGap {
        /// The channel.
        channel: String,
        /// How many publications were missed.
        missed: u64,
    },
    /// The cluster's store (Redis) lost its data, e.g. restarted without
    /// persistence: what was buffered for clients that were away is gone.
    /// This node's ids are claimed again.
    ClusterDataLost,
}

/// Why a queued or buffered message will not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UndeliveredReason {
    /// It waited longer than its time to live (`message_ttl`, or the
    /// per-call [`SendOptions::ttl`](crate::SendOptions::ttl)).
    Expired,
    /// The recipient was away and did not reconnect within `offline_ttl`.
    OfflineTimeout,
    /// The recipient went away and its offline buffer could not hold this
    /// (`offline_max_messages`, `offline_max_bytes`,
    /// `offline_max_total_bytes`).
    OfflineFull,
    /// The recipient was disconnected by the server (4002), or went away
    /// while offline buffering was off or full (`offline_max_clients`).
    Disconnected,
    /// The pool shut down before it could be written.
    Shutdown,
    /// It was in a write that failed or timed out: it may or may not have
    /// reached the client (the one case where a report does not prove
    /// non-delivery).
    WriteFailed,
    /// Forwarded to a cluster in which no node has the client connected or
    /// away (the answer a single node gives at once as
    /// [`SendError::NotConnected`](crate::SendError::NotConnected)).
    NotConnected,
    /// The cluster failed after accepting it (Redis went away): it may not
    /// have reached the other nodes. `to` is empty for a broadcast.
    ClusterUnavailable,
}

impl UndeliveredReason {
    /// The status of the receipt sent to the client a message was relayed
    /// from: 3 (expired) for `Expired` and `OfflineTimeout`, 5 (dropped)
    /// for `OfflineFull`, 4 (not connected) for `Disconnected`; none for
    /// `Shutdown` and `WriteFailed`.
    pub fn receipt_status(self) -> Option<i32> {
        use crate::status;
        match self {
            UndeliveredReason::Expired | UndeliveredReason::OfflineTimeout => Some(status::EXPIRED),
            UndeliveredReason::OfflineFull => Some(status::QUEUE_FULL),
            UndeliveredReason::Disconnected | UndeliveredReason::NotConnected => {
                Some(status::NOT_CONNECTED)
            }
            UndeliveredReason::ClusterUnavailable => Some(status::NOT_CONNECTED),
            UndeliveredReason::Shutdown | UndeliveredReason::WriteFailed => None,
        }
    }

    /// Every reason, in the order of [`label`](Self::label)'s index.
    pub(crate) const ALL: [UndeliveredReason; 8] = [
        UndeliveredReason::Expired,
        UndeliveredReason::OfflineTimeout,
        UndeliveredReason::OfflineFull,
        UndeliveredReason::Disconnected,
        UndeliveredReason::Shutdown,
        UndeliveredReason::WriteFailed,
        UndeliveredReason::NotConnected,
        UndeliveredReason::ClusterUnavailable,
    ];

    /// A short snake_case name (a metrics label).
    pub fn label(self) -> &'static str {
        match self {
            UndeliveredReason::Expired => "expired",
            UndeliveredReason::OfflineTimeout => "offline_timeout",
            UndeliveredReason::OfflineFull => "offline_full",
            UndeliveredReason::Disconnected => "disconnected",
            UndeliveredReason::Shutdown => "shutdown",
            UndeliveredReason::WriteFailed => "write_failed",
            UndeliveredReason::NotConnected => "not_connected",
            UndeliveredReason::ClusterUnavailable => "cluster_unavailable",
        }
    }

    /// Its place in [`ALL`](Self::ALL).
    pub(crate) fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            UndeliveredReason::Expired => "expired in the queue",
            UndeliveredReason::OfflineTimeout => "recipient did not come back in time",
            UndeliveredReason::OfflineFull => "recipient's offline buffer full: dropped",
            UndeliveredReason::Disconnected => "recipient disconnected",
            UndeliveredReason::NotConnected => "recipient not connected",
            UndeliveredReason::ClusterUnavailable => "the cluster was unavailable",
            UndeliveredReason::Shutdown => "server shutting down",
            UndeliveredReason::WriteFailed => "the write to the recipient failed",
        }
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The client closed, with this code if it gave one.
    ClientClosed(Option<u16>),
    /// The connection dropped without a close frame.
    ConnectionLost,
    /// A newer connection with the same id replaced it (4001).
    Replaced,
    /// The application disconnected it (4002).
    Kicked,
    /// The pool shut down (1001).
    Shutdown,
    /// Nothing arrived for `idle_timeout` (1000).
    IdleTimeout,
    /// It sent a message bigger than `max_message_size` (1009).
    MessageTooBig,
    /// Its queue stayed full for `slow_client_timeout` (4008).
    TooSlow,
    /// Its id was taken while it connected and the duplicate policy is
    /// `Refuse` (1008).
    Refused,
    /// The client broke the WebSocket protocol: closed with
    /// [`PROTOCOL`](crate::close_code::PROTOCOL) (1002), or
    /// [`INVALID_PAYLOAD`](crate::close_code::INVALID_PAYLOAD) (1007) for
    /// text that is not UTF-8.
    ProtocolViolation {
        /// The close code sent.
        code: u16,
        /// What was wrong, as the WebSocket library put it.
        detail: String,
    },
    /// It kept sending faster than the inbound rate limits allow
    /// (`max_inbound_messages_per_sec`, `max_inbound_bytes_per_sec`): closed
    /// with [`POLICY`](crate::close_code::POLICY) (1008).
    RateLimited,
    /// A write timed out or the socket failed.
    Error(PoolError),
}

impl DisconnectReason {
    /// Every label, in the order of [`label`](Self::label)'s index.
    pub(crate) const LABELS: [&'static str; 12] = [
        "client_closed",
        "connection_lost",
        "replaced",
        "kicked",
        "shutdown",
        "idle_timeout",
        "message_too_big",
        "too_slow",
        "refused",
        "protocol_violation",
        "rate_limited",
        "error",
    ];

    /// A short snake_case name (a metrics label).
    pub fn label(&self) -> &'static str {
        Self::LABELS[self.index()]
    }

    /// Its place in [`LABELS`](Self::LABELS).
    pub(crate) fn index(&self) -> usize {
        match self {
            DisconnectReason::ClientClosed(_) => 0,
            DisconnectReason::ConnectionLost => 1,
            DisconnectReason::Replaced => 2,
            DisconnectReason::Kicked => 3,
            DisconnectReason::Shutdown => 4,
            DisconnectReason::IdleTimeout => 5,
            DisconnectReason::MessageTooBig => 6,
            DisconnectReason::TooSlow => 7,
            DisconnectReason::Refused => 8,
            DisconnectReason::ProtocolViolation { .. } => 9,
            DisconnectReason::RateLimited => 10,
            DisconnectReason::Error(_) => 11,
        }
    }

    /// The close code sent or received, if any.
    pub fn code(&self) -> Option<u16> {
        use crate::close_code::*;
        match self {
            DisconnectReason::ClientClosed(code) => *code,
            DisconnectReason::ConnectionLost | DisconnectReason::Error(_) => None,
            DisconnectReason::Replaced => Some(REPLACED),
            DisconnectReason::Kicked => Some(KICKED),
            DisconnectReason::Shutdown => Some(GOING_AWAY),
            DisconnectReason::IdleTimeout => Some(NORMAL),
            DisconnectReason::MessageTooBig => Some(TOO_BIG),
            DisconnectReason::TooSlow => Some(TOO_SLOW),
            DisconnectReason::Refused | DisconnectReason::RateLimited => Some(POLICY),
            DisconnectReason::ProtocolViolation { code, .. } => Some(*code),
        }
    }
}

/// A `Stream` of [`PoolEvent`]s; see the [module docs](self).
///
/// # Cancel safety
/// `next()` on this stream is cancel safe: an event is only taken out of
/// the buffer when it is returned.
pub struct EventStream {
    inner: BroadcastStream<PoolEvent>,
}

impl EventStream {
    pub(crate) fn new(rx: broadcast::Receiver<PoolEvent>) -> Self {
        EventStream {
            inner: BroadcastStream::new(rx),
        }
    }
}

impl Stream for EventStream {
    type Item = PoolEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<PoolEvent>> {
        Pin::new(&mut self.inner).poll_next(cx).map(|item| {
            item.map(|r| match r {
                Ok(event) => event,
                Err(BroadcastStreamRecvError::Lagged(n)) => PoolEvent::Lagged(n),
            })
        })
    }
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}
