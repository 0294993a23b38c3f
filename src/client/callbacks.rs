//! Callbacks: code that runs in order, per connection, inside the
//! connection's own task (the original's `OnOpen`, `OnMessage`, `OnClose`,
//! `OnError`).
//!
//! Use them for what must happen before the next frame of the same client is
//! handled; use [`WsPool::events`](crate::WsPool::events) for everything
//! else. A callback runs on the connection's task, so it must not block.
//!
//! A panic in a callback is caught: it is reported as
//! [`PoolError::CallbackPanicked`] (event stream and `on_error`), the
//! message it was handling is not relayed, and the connection goes on.

use std::{
    any::Any,
    fmt,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::Arc,
};

use super::ClientHandle;
use crate::{DisconnectReason, PoolError, SendMsg};

/// What `on_message` decides about a message. A yes or no, so not
/// `#[non_exhaustive]`: a match on it need not guess at a third answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Relay {
    /// Relay it as the pool's [`RelayPolicy`](crate::RelayPolicy) says.
    #[default]
    Continue,
    /// Do not relay it (the application has handled it).
    Stop,
}

type OnOpen = dyn Fn(&ClientHandle) + Send + Sync;
type OnMessage = dyn Fn(&ClientHandle, &mut SendMsg) -> Relay + Send + Sync;
type OnClose = dyn Fn(&ClientHandle, &DisconnectReason) + Send + Sync;
type OnError = dyn Fn(&ClientHandle, &PoolError) + Send + Sync;

/// A set of callbacks. Set pool-wide ones on the
/// [`WsPoolBuilder`](crate::WsPoolBuilder); give per-connection ones to
/// [`ClientConfig::callbacks`](crate::ClientConfig::callbacks). Both run:
/// the pool's first.
///
/// ```
/// use wspool::{Callbacks, Relay};
///
/// let callbacks = Callbacks::new()
///     .on_open(|client| println!("{} is here", client.id()))
///     .on_message(|_client, msg| if msg.cmd == 0 { Relay::Stop } else { Relay::Continue });
/// # drop(callbacks);
/// ```
#[derive(Clone, Default)]
pub struct Callbacks {
    on_open: Option<Arc<OnOpen>>,
    on_message: Option<Arc<OnMessage>>,
    on_close: Option<Arc<OnClose>>,
    on_error: Option<Arc<OnError>>,
}

impl fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Callbacks")
            .field("on_open", &self.on_open.is_some())
            .field("on_message", &self.on_message.is_some())
            .field("on_close", &self.on_close.is_some())
            .field("on_error", &self.on_error.is_some())
            .finish()
    }
}

impl Callbacks {
    /// No callbacks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Run `f` when the connection has been registered.
    #[must_use]
    pub fn on_open(mut self, f: impl Fn(&ClientHandle) + Send + Sync + 'static) -> Self {
        self.on_open = Some(Arc::new(f));
        self
    }

    /// Run `f` on each message the client sends (stamped, not yet relayed);
    /// [`Relay::Stop`] keeps it from being relayed.
    #[must_use]
    pub fn on_message(
        mut self,
        f: impl Fn(&ClientHandle, &mut SendMsg) -> Relay + Send + Sync + 'static,
    ) -> Self {
        self.on_message = Some(Arc::new(f));
        self
    }

    /// Run `f` when the connection has ended.
    #[must_use]
    pub fn on_close(
        mut self,
        f: impl Fn(&ClientHandle, &DisconnectReason) + Send + Sync + 'static,
    ) -> Self {
        self.on_close = Some(Arc::new(f));
        self
    }

    /// Run `f` on each runtime error of the connection.
    #[must_use]
    pub fn on_error(
        mut self,
        f: impl Fn(&ClientHandle, &PoolError) + Send + Sync + 'static,
    ) -> Self {
        self.on_error = Some(Arc::new(f));
        self
    }

    /// Are none set?
    pub(crate) fn is_empty(&self) -> bool {
        self.on_open.is_none()
            && self.on_message.is_none()
            && self.on_close.is_none()
            && self.on_error.is_none()
    }

    /// Runs `on_open`; a panic comes back as the error to report.
    pub(crate) fn open(&self, client: &ClientHandle) -> Result<(), PoolError> {
        match &self.on_open {
            Some(f) => guarded("on_open", || f(client)),
            None => Ok(()),
        }
    }

    pub(crate) fn message(
        &self,
        client: &ClientHandle,
        msg: &mut SendMsg,
    ) -> Result<Relay, PoolError> {
        match &self.on_message {
            Some(f) => guarded("on_message", || f(client, msg)),
            None => Ok(Relay::Continue),
        }
    }

    pub(crate) fn close(
        &self,
        client: &ClientHandle,
        reason: &DisconnectReason,
    ) -> Result<(), PoolError> {
        match &self.on_close {
            Some(f) => guarded("on_close", || f(client, reason)),
            None => Ok(()),
        }
    }

    pub(crate) fn error(&self, client: &ClientHandle, error: &PoolError) -> Result<(), PoolError> {
        match &self.on_error {
            Some(f) => guarded("on_error", || f(client, error)),
            None => Ok(()),
        }
    }
}

fn guarded<T>(callback: &'static str, f: impl FnOnce() -> T) -> Result<T, PoolError> {
    // The closure only borrows the client handle and the message; a panic
    // leaves neither half-updated in a way the pool relies on.
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| PoolError::CallbackPanicked {
        callback,
        message: panic_message(payload.as_ref()),
    })
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
