//! Server-side channel members: [`WsPool::subscribe`](crate::WsPool::subscribe).
//!
//! A [`Subscription`] is a `Stream` of every message broadcast to its
//! channels (relayed from clients, or sent with
//! [`WsPool::broadcast`](crate::WsPool::broadcast)), each message once even
//! when it lists several of them. It buffers `event_buffer` messages; a
//! consumer that falls further behind gets `Err(Lagged(n))` and continues
//! with the newest. Dropping it leaves the channels.
//!
//! ```no_run
//! use tokio_stream::StreamExt;
//! # async fn run(pool: wspool::WsPool) {
//! let mut room = pool.subscribe(["room1"]);
//! while let Some(Ok(msg)) = room.next().await {
//!     println!("{} said {}", msg.from_client_id, msg.msg);
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

use crate::{node::SubscriberState, routing::Hub, SendMsg};

/// The subscriber missed this many messages because it fell behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("subscription fell behind and missed {0} messages")]
pub struct Lagged(pub u64);

/// A stream of the messages broadcast to some channels; see the
/// [module docs](self).
///
/// # Cancel safety
/// `next()` is cancel safe.
pub struct Subscription {
    inner: BroadcastStream<Arc<SendMsg>>,
    hub: Arc<Hub>,
    id: u64,
    channels: Vec<Arc<str>>,
}

impl Subscription {
    pub(crate) fn new(hub: Arc<Hub>, channels: Vec<Arc<str>>) -> Self {
        let (tx, rx) = broadcast::channel(hub.config().event_buffer());
        let id = hub.node().next_id();
        let state = Arc::new(SubscriberState { id, tx });
        hub.node().subscribe(&state, &channels);
        Subscription {
            inner: BroadcastStream::new(rx),
            hub,
            id,
            channels,
        }
    }

    /// The channels it listens to.
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        self.channels.iter().map(|c| &**c)
    }
}

impl Stream for Subscription {
    type Item = Result<Arc<SendMsg>, Lagged>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner)
            .poll_next(cx)
            .map(|item| item.map(|r| r.map_err(|BroadcastStreamRecvError::Lagged(n)| Lagged(n))))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.node().unsubscribe(self.id, &self.channels);
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}
