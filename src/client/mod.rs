//! One client: the handle the application holds ([`ClientHandle`]), the
//! configuration it registers with ([`ClientConfig`]), the runtime info it
//! reports ([`ClientInfo`]), and per-connection [`Callbacks`].
//!
//! # Callbacks
//!
//! Code that runs in order, per connection, inside the connection's own
//! task (the original's `OnOpen`, `OnMessage`, `OnClose`, `OnError`). Use
//! them for what must happen before the next frame of the same client is
//! handled; use [`WsPool::events`](crate::WsPool::events) for everything
//! else. A callback runs on the connection's task, so it must not block.
//! A panic in a callback is caught: it is reported as
//! [`PoolError::CallbackPanicked`](crate::PoolError::CallbackPanicked)
//! (event stream and `on_error`), the message it was handling is not
//! relayed, and the connection goes on.

use std::sync::Arc;

use crate::{
    message::Encoded,
    node::{ClientState, CloseRequest, PushError},
    routing::Hub,
    ClientId, DisconnectReason, JoinError, SendError, SendMsg, SendOptions,
};

mod callbacks;
mod config;

pub use crate::ClientInfo;
pub use callbacks::{Callbacks, Relay};
pub use config::ClientConfig;

/// A handle on one connection (the original's `Client`), from
/// [`WsPool::client`](crate::WsPool::client) or a callback. Cheap to clone.
/// It refers to that connection only: once it has ended, `send` and `join`
/// fail even if a new connection has taken the same id.
#[derive(Clone)]
pub struct ClientHandle {
    hub: Arc<Hub>,
    state: Arc<ClientState>,
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
    /// the id has reconnected: use [`WsPool::send`](crate::WsPool::send) to reach the id),
    /// [`SendError::QueueFull`] when its queue is at its limit.
    pub fn send(&self, msg: SendMsg) -> Result<(), SendError> {
        self.send_with(msg, &SendOptions::default())
    }

    /// [`send`](Self::send) with options (time to live).
    pub fn send_with(&self, msg: SendMsg, options: &SendOptions) -> Result<(), SendError> {
        let encoded = Encoded::new(Arc::new(msg), None, self.hub.ttl(options));
        match self.hub.node().push_to_conn(&self.state, &encoded) {
            Ok(_) => Ok(()),
            Err(PushError::Full) => Err(SendError::QueueFull(self.state.id.clone())),
            Err(PushError::Closed) => Err(SendError::NotConnected(self.state.id.clone())),
        }
    }

    /// Adds a channel at run time. `Ok(false)` if it was already a member.
    pub fn join(&self, channel: &str) -> Result<bool, JoinError> {
        self.hub.join(&self.state, channel)
    }

    /// Removes a channel at run time. `false` if it was not a member.
    pub fn leave(&self, channel: &str) -> bool {
        self.hub.leave(&self.state, channel)
    }

    /// Closes the connection with 4002 "disconnected". What is still queued
    /// is not sent: it is reported as
    /// [`PoolEvent::Undelivered`](crate::PoolEvent::Undelivered), and the
    /// id is forgotten (no offline buffer).
    pub fn disconnect(&self) {
        let close = CloseRequest::now(DisconnectReason::Kicked);
        self.state.request_close(close, false);
    }

    /// Is this connection still registered?
    pub fn is_connected(&self) -> bool {
        self.hub.node().is_current(&self.state)
    }

    /// A snapshot of its runtime info.
    pub fn info(&self) -> ClientInfo {
        self.hub.info(&self.state)
    }
}

impl ClientHandle {
    pub(crate) fn new(hub: Arc<Hub>, state: Arc<ClientState>) -> Self {
        ClientHandle { hub, state }
    }

    pub(crate) fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub(crate) fn state(&self) -> &Arc<ClientState> {
        &self.state
    }
}
