//! # wspool
//!
//! A WebSocket connection pool for [axum]: reach browsers, apps and devices
//! by id, by channel, or all at once. The Rust successor of the Go library
//! wsPool, speaking its protobuf `SendMsg` (byte-compatible) and proto3 JSON.
//!
//! ## Quick start
//!
//! ```no_run
//! use axum::{routing::post, Router};
//! use tokio_stream::StreamExt;
//! use wspool::{Delivery, PoolEvent, SendMsg, WsPool};
//!
//! // Anywhere in the server: reach a client by id.
//! async fn notify(pool: WsPool) -> String {
//!     let msg = SendMsg { to_client_id: "alice".into(), msg: "hello".into(), ..Default::default() };
//!     match pool.send(msg) {
//!         Ok(Delivery::Buffered) => "alice is away: kept for her".into(),
//!         Ok(_) => "sent".into(),
//!         Err(e) => e.to_string(), // empty target, not connected, or queue full: never silent
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let pool = WsPool::builder().max_message_size(256 * 1024).build();
//!
//!     // Everything that happens, as a Stream.
//!     let mut events = pool.events();
//!     tokio::spawn(async move {
//!         while let Some(event) = events.next().await {
//!             if let PoolEvent::Message { from, msg } = event {
//!                 println!("{from} sent {:?}", msg.msg);
//!             }
//!         }
//!     });
//!
//!     let app = Router::new()
//!         .merge(wspool::route()) // GET /ws: clients connect with the subprotocol "alice_room1_room2"
//!         .route("/notify", post(notify))
//!         .layer(pool.layer());
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     // Header read timeout, TCP_NODELAY, client addresses, and on Ctrl-C or
//!     // SIGTERM a graceful shutdown that flushes and closes every client.
//!     wspool::serve(listener, app, &pool).await
//! }
//! ```
//!
//! ## Where things are
//!
//! | module | concept |
//! |---|---|
//! | [`layer`] | [`WsPoolLayer`] and the `WsPool` extractor |
//! | [`serve`](mod@serve) | [`serve()`]: serving an app safely (header timeout, nodelay, graceful shutdown) |
//! | [`admission`] | connection slots, per-address limits, handshakes in flight, [`ClientIp`] |
//! | [`route`](mod@route) | the provided `/ws` handler, the authorisation hook, [`WsPool::accept`] |
//! | [`handshake`] | reading id and channels from `Sec-WebSocket-Protocol` |
//! | [`pool`] | [`WsPool`], the handle: clients, channels, events, stats, shutdown |
//! | [`routing`] | `send`, `broadcast`, `broadcast_all`, relays, receipts; the delivery guarantees |
//! | [`cluster`] | the seam to other nodes, and the Redis backend (feature `redis`) |
//! | `metrics` | Prometheus-style numbers through the `metrics` facade (feature `metrics`) |
//! | [`client`] | [`ClientHandle`], [`ClientConfig`], [`ClientInfo`] |
//! | [`config`] | every knob, its default and what happens at its limit |
//! | [`event`] | [`PoolEvent`] and the event stream |
//! | [`subscribe`] | server-side channel members |
//! | [`callbacks`] | in-order per-connection callbacks |
//! | [`message`] | frame formats, receipts and their status codes |
//! | [`admin`] | a JSON admin API |
//! | (private) `node` | this node's clients, mailboxes, channel index, sweeper: one owner |
//! | (private) `connection` | one connection's task: read, write, keep time, rate limits |
//! | [`proto`] | the generated `SendMsg` |
//!
//! ## The wire contract
//!
//! The client offers one subprotocol token `<id>[_<channel>]*`; the server
//! echoes it (a browser requires that). Binary frames carry one protobuf
//! `SendMsg`, text frames one `SendMsg` in proto3 JSON; `?format=json`
//! makes the server send text. What a client sends is stamped with its id
//! (`fromClientId` cannot be spoofed) and relayed to `toClientId` and to the
//! members of `channel`, each recipient once. An undeliverable direct
//! message earns the sender a receipt (status 4 not connected, 5 queue
//! full, 6 undecodable, 7 refused by a limit). Close codes
//! ([`close_code`]): 1001 shutdown, 1002 protocol error, 1007 bad UTF-8,
//! 1008 flooding, 1009 too big, 4001 replaced, 4002 disconnected by the
//! server, 4008 too slow. The whole contract is `PROTOCOL.md` in the
//! repository; what a hostile client meets is `SECURITY.md`.
//!
//! ## Several nodes
//!
//! With the feature `redis`, nodes behind a load balancer behave as one
//! pool over one Redis: `WsPool::builder().redis(url).connect().await`.
//! `send`, `broadcast` and `broadcast_all` reach clients on every node,
//! one id has one connection cluster-wide, offline buffers live in Redis,
//! and the `cluster_*` methods answer for the whole cluster. See
//! [`cluster`] and `CLUSTER.md` in the repository.
//!
//! ## Concurrency
//!
//! Each connection is one task owning its socket. Routing never waits: it
//! pushes the message, encoded once per format, into each recipient's
//! bounded queue under a short read lock of the registry. A full queue is an
//! error for `send` and a counted, reported skip for a broadcast; nothing
//! is dropped silently.
//!
//! [axum]: https://docs.rs/axum

#![warn(missing_docs)]
#![warn(clippy::await_holding_lock)]

#[cfg(feature = "__bench")]
#[doc(hidden)]
pub mod bench_support;
pub mod callbacks;
pub mod client;
mod client_id;
pub mod cluster;
pub mod config;
mod connection;
mod error;
pub mod event;
mod http;
pub mod message;
#[cfg(feature = "metrics")]
pub mod metrics;
mod node;
pub mod pool;
pub mod proto;
pub mod routing;
mod stats;
pub mod subscribe;

pub use http::{admin, admission, handshake, layer, route, serve};

pub use admission::ClientIp;
pub use callbacks::{Callbacks, Relay};
pub use client::{ClientConfig, ClientHandle, ClientInfo};
pub use client_id::ClientId;
pub use config::{Config, ConfigError, DuplicatePolicy, RelayPolicy, WsPoolBuilder};
pub use error::{BroadcastError, JoinError, PoolError, SendError};
pub use event::{DisconnectReason, EventStream, PoolEvent, UndeliveredReason};
pub use layer::{MissingWsPool, WsPoolLayer};
pub use message::{close_code, status, Format};
pub use node::Delivery;
pub use pool::WsPool;
pub use proto::SendMsg;
pub use route::{route, ws_handler, HandshakeRequest, Rejection};
pub use routing::SendOptions;
pub use serve::{serve, Serve};
pub use stats::{ClusterStats, RefusedStats, Stats};
pub use subscribe::{Lagged, Subscription};
