//! [`ClientConfig`]: what a connection registers as.

use std::net::SocketAddr;

use super::Callbacks;
use crate::{node::Joining, Format};

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

    /// The client's address, for [`ClientInfo::remote_addr`](crate::ClientInfo::remote_addr) and, in
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

impl ClientConfig {
    /// Who it is and how it is written to, for the node.
    pub(crate) fn joining(&self) -> Joining<'_> {
        Joining {
            id: &self.id,
            kind: &self.kind,
            channels: &self.channels,
            format: self.format,
            remote_addr: self.remote_addr,
        }
    }
}
