//! The life of one connection: register, read and write, close.
//!
//! Each connection is one task that owns its socket. It waits on three
//! things at once: a frame from the client, work in its outbound queue
//! (messages or a close request), and its ping and idle timers. Reads and
//! writes never block other connections: routing only pushes into queues.
//!
//! A write waits at most `write_timeout`, and less when the server decides
//! to close (replace, kick, 4008, a shutdown past its timeout): the write is
//! abandoned, its messages reported `WriteFailed`, the connection
//! unregistered and reported; then the socket finishes the frame in flight
//! and the close frame is written, within `write_timeout`. A client that
//! breaks the protocol gets a close frame too (1002, 1007, 1009), and one
//! that floods past the rate limits 1008.
//!
//! The task runs inside a `tracing` span `ws{id=.. conn=..}`; connects and
//! disconnects are logged at debug, nothing per message above trace.
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | the task: register, serve, close |
//! | `register.rs` | registration and the cluster-wide claim; the departure policy |
//! | `select.rs` | the select loop: frames in, the mailbox out, ping and idle timers |
//! | `write.rs` | writes that can be abandoned for a close |
//! | `inbound.rs` | one frame in: rate limits, decode, stamp, callbacks, relay |
//! | `report.rs` | callbacks and errors |
//! | `read_signal.rs` | the read side's waker |
//! | `close.rs` | close frames, and read errors as reasons |
//! | `socket.rs` | axum's `WebSocket`, or one whose messages the pool writes itself |
//! | `sse.rs` | the HTTP fallback's socket: events down, POSTs up |
//! | `rate_limit.rs` | the inbound token buckets |

use std::sync::Arc;

use tracing::Instrument;

mod close;
mod inbound;
mod rate_limit;
mod read_signal;
mod register;
mod report;
mod select;
mod socket;
mod sse;
mod write;

pub(crate) use socket::Socket;
pub(crate) use sse::{open as open_events, PostError, Sessions};

use crate::{
    admission::Ticket,
    client::{Callbacks, ClientConfig, ClientHandle},
    node::ClientState,
    routing::{Hub, LiveGuard},
    stats::bump,
    DisconnectReason, PoolEvent,
};

/// Why a connection's loop ended, and whether its socket is stalled.
struct Ended {
    reason: DisconnectReason,
    /// A write failed or was abandoned: report the end before trying the
    /// socket again.
    stalled: bool,
}

impl From<DisconnectReason> for Ended {
    fn from(reason: DisconnectReason) -> Self {
        Ended {
            reason,
            stalled: false,
        }
    }
}

/// Runs one upgraded connection to its end. `callbacks` are the pool's;
/// `ticket` is its hold on the pool's admission limits: the handshake's
/// part is given back once registered, the rest as soon as it is
/// unregistered.
///
/// Not an `async fn`: one would keep its arguments beside the futures they
/// are moved into for the connection's whole life. The connection is
/// registered here, before the task's future is made, and the registered
/// connection and the socket are boxed, so each nested future holds a
/// pointer, not a copy (the task of an idle connection: 3,712 bytes
/// before, measured with `-Zprint-type-sizes` in BENCHMARKS.md).
pub(crate) fn serve(
    hub: Arc<Hub>,
    callbacks: Arc<Callbacks>,
    config: Box<ClientConfig>,
    socket: Socket,
    ticket: Ticket,
) -> impl std::future::Future<Output = ()> + Send {
    let live = hub.live_guard();
    let conn_id = hub.node().next_id();
    let span = tracing::debug_span!("ws", id = %config.id, conn = conn_id);
    let registered = span.in_scope(|| register::register(&hub, conn_id, &config));
    let socket = Box::new(socket);
    let connection = registered.map(|state| {
        // Its own callbacks, only when it has some; the rest of the
        // configuration is freed now rather than held for its life.
        let own = (!config.callbacks.is_empty()).then(|| Box::new(config.callbacks.clone()));
        Box::new(Connection {
            client: ClientHandle::new(hub.clone(), state),
            callbacks,
            own,
            ticket: Some(ticket),
            live: Some(live),
        })
    });
    async move {
        match connection {
            Ok(connection) => connection.start(socket).await,
            Err(refusal) => refuse(&hub, socket, refusal).await,
        }
    }
    .instrument(span)
}

/// Tells a connection refused at registration why, and counts it.
async fn refuse(hub: &Hub, mut socket: Box<Socket>, refusal: DisconnectReason) {
    let counters = hub.counters();
    let counter = match refusal {
        DisconnectReason::Shutdown => &counters.refused_shutting_down,
        _ => &counters.refused_duplicate_id,
    };
    bump(counter, 1);
    let close = socket.send_control(Some(&refusal));
    let _ = tokio::time::timeout(hub.config().write_timeout(), close).await;
    tracing::debug!(reason = ?refusal, "refused at registration");
}

/// One registered connection, as its task sees it.
struct Connection {
    client: ClientHandle,
    /// The pool's callbacks (run first).
    callbacks: Arc<Callbacks>,
    /// Its own, if it has any.
    own: Option<Box<Callbacks>>,
    /// Its hold on the admission limits, given back once unregistered.
    ticket: Option<Ticket>,
    /// Counts it in the live connections until its side of the close is
    /// done.
    live: Option<LiveGuard>,
}

impl Connection {
    fn hub(&self) -> &Hub {
        self.client.hub()
    }

    fn state(&self) -> &ClientState {
        self.client.state()
    }

    /// The pool's callbacks, then the connection's own.
    fn each_callbacks(&self) -> impl Iterator<Item = &Callbacks> {
        std::iter::once(&*self.callbacks).chain(self.own.as_deref())
    }

    /// Claims the id in a cluster, then runs the connection.
    async fn start(mut self: Box<Self>, socket: Box<Socket>) {
        if let Some(cluster) = self.hub().cluster() {
            // Boxed: the claim's future (a cluster's round trip) is over
            // once registered; the task must not keep room for it.
            let claimed = Box::pin(register::claim(self.hub(), cluster, self.client.state()));
            if let Err(refusal) = claimed.await {
                self.ticket = None;
                return refuse(self.hub(), socket, refusal).await;
            }
        }
        if let Some(ticket) = &mut self.ticket {
            ticket.handshake_done();
        }
        self.run(socket).await;
    }

    async fn run(mut self: Box<Self>, mut socket: Box<Socket>) {
        bump(&self.hub().counters().connections_total, 1);
        tracing::debug!(remote = ?self.state().remote_addr, "connected");
        if self.hub().wants_events() {
            let info = self.client.info();
            self.hub().emit(|| PoolEvent::Connected(info));
        }
        for callbacks in self.each_callbacks() {
            self.callback(|h| callbacks.open(h));
        }

        let Ended { reason, stalled } = self.serve(&mut socket).await;

        // Unregister first, so nothing new is routed here while closing.
        register::depart(self.client.hub(), self.client.state(), &reason);
        // The slot is free as soon as the client is gone from the registry.
        self.ticket = None;
        if let DisconnectReason::ProtocolViolation { detail, .. } = &reason {
            bump(&self.hub().counters().protocol_errors, 1);
            tracing::debug!(%detail, "protocol violation");
        }
        let write_timeout = self.hub().config().write_timeout();
        let we_close = !matches!(
            reason,
            DisconnectReason::ClientClosed(_)
                | DisconnectReason::ConnectionLost
                | DisconnectReason::Error(_)
        );
        if stalled {
            // The socket is slow: the close takes effect (and is reported)
            // now. The frame in flight is finished and the close frame
            // follows, within `write_timeout`: a client that resumes
            // reading in time reads why it was closed.
            self.ended(&reason);
            if !we_close {
                return; // the write failed: nothing more to say
            }
        }
        if we_close {
            let _ = tokio::time::timeout(write_timeout, socket.send_control(Some(&reason))).await;
        } else {
            // Sends tungstenite's reply to the client's close frame.
            let _ = tokio::time::timeout(write_timeout, socket.flush()).await;
        }
        if !stalled {
            self.ended(&reason);
        }
        // Our side is done: `shutdown` need not wait for the client's reply.
        self.live = None;
        if we_close {
            // Wait (bounded) for the client's close reply, reading what it
            // sent meanwhile: a socket closed with unread input is reset,
            // and a reset can destroy the close frame before the client
            // reads it.
            let _ = tokio::time::timeout(write_timeout, async {
                while let Some(Ok(_)) = socket.next().await {}
            })
            .await;
        }
    }

    /// Reports the end of the connection: log, event, `on_close` callbacks.
    fn ended(&self, reason: &DisconnectReason) {
        bump(&self.hub().counters().disconnects_by[reason.index()], 1);
        tracing::debug!(
            ?reason,
            still_queued = self.state().mailbox.len().0,
            "disconnected"
        );
        self.hub().emit(|| PoolEvent::Disconnected {
            id: self.state().id.clone(),
            reason: reason.clone(),
        });
        for callbacks in self.each_callbacks() {
            self.callback(|h| callbacks.close(h, reason));
        }
    }
}
