//! Errors: one enum per operation, one variant per cause a caller can act on.

use std::time::Duration;

use crate::{names::TokenError, ClientId};

/// Why [`WsPool::send`](crate::WsPool::send) or
/// [`ClientHandle::send`](crate::ClientHandle::send) did not queue a message.
/// A message is either queued for the socket or one of these comes back:
/// never a silent drop, never a wait.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// `toClientId` was empty: set it to the id of the recipient.
    #[error("the message has no toClientId: set it to the recipient's id")]
    EmptyTarget,
    /// No client with this id is connected.
    #[error("client {0} is not connected")]
    NotConnected(ClientId),
    /// The client's outbound queue is at its limit (messages or bytes); the
    /// message was not queued. Retry later, or raise
    /// `queue_max_messages` / `queue_max_bytes`.
    #[error("the outbound queue of client {0} is full")]
    QueueFull(ClientId),
    /// The client is not on this node and the cluster cannot be reached
    /// (Redis down or unreachable): the message was not sent.
    #[error("the cluster is unavailable: {0}")]
    Unavailable(String),
}

/// Why [`WsPool::broadcast`](crate::WsPool::broadcast) sent nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BroadcastError {
    /// `channel` was empty: list the channels to broadcast to, or use
    /// `broadcast_all`.
    #[error("the message has no channel: list the channels to broadcast to, or use broadcast_all")]
    NoChannel,
    /// This node's members were reached (`local` of them), the other
    /// nodes' were not: the cluster cannot be reached.
    #[error("reached {local} clients on this node only: the cluster is unavailable: {reason}")]
    Unavailable {
        /// How many clients on this node it reached.
        local: usize,
        /// Why the cluster could not be reached.
        reason: String,
    },
}

/// Why [`ClientHandle::join`](crate::ClientHandle::join) did not add a channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The channel name is empty, too long or has a character outside the
    /// RFC 7230 token set (or `_`): the same rule, and the same words, as
    /// for a channel in a handshake token.
    #[error("{0}")]
    InvalidChannel(TokenError),
    /// The client is already in `max_channels_per_client` channels.
    #[error("client is already in the maximum of {0} channels")]
    TooManyChannels(usize),
    /// The client has disconnected.
    #[error("client is not connected")]
    NotConnected,
    /// The client is on another node and the cluster cannot be reached
    /// now.
    #[error("the cluster is unavailable: {0}")]
    Unavailable(String),
}

/// A runtime error of a connection, reported on the event stream
/// ([`PoolEvent::Error`](crate::PoolEvent::Error)) and to `on_error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// A frame did not decode as a `SendMsg` (protobuf for binary frames,
    /// proto3 JSON for text frames). The connection stays open and the
    /// sender gets a receipt with status 6.
    #[error("frame could not be decoded as a SendMsg: {0}")]
    Decode(String),
    /// An application callback panicked; the panic was caught.
    #[error("callback {callback} panicked: {message}")]
    CallbackPanicked {
        /// Which callback: `on_open`, `on_message`, `on_close` or `on_error`.
        callback: &'static str,
        /// The panic's message.
        message: String,
    },
    /// Writing to the client took longer than `write_timeout`; the
    /// connection was dropped.
    #[error("write to the client timed out after {0:?}")]
    WriteTimeout(Duration),
    /// The WebSocket connection failed.
    #[error("websocket error: {0}")]
    Socket(String),
}
