//! Reporting: the connection's callbacks, and its errors to the event
//! stream and `on_error`.

use super::Connection;
use crate::{client::ClientHandle, PoolError, PoolEvent};

impl Connection {
    /// Runs a callback; a panic is reported as an error.
    pub(super) fn callback(&self, f: impl FnOnce(&ClientHandle) -> Result<(), PoolError>) {
        if let Err(e) = f(&self.client) {
            self.report(e);
        }
    }

    /// Reports a runtime error to the event stream and `on_error`.
    pub(super) fn report(&self, error: PoolError) {
        tracing::trace!(%error, "connection error");
        let hub = self.hub();
        for callbacks in self.each_callbacks() {
            if let Err(panic) = callbacks.error(&self.client, &error) {
                hub.emit(|| PoolEvent::Error {
                    id: Some(self.state().id.clone()),
                    error: panic,
                });
            }
        }
        hub.emit(|| PoolEvent::Error {
            id: Some(self.state().id.clone()),
            error,
        });
    }
}
