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
//! Dependencies point one way, bottom to top (`python3 tools/layers.py
//! src` in the workspace that steers this crate reports no cycle):
//!
//! | layer | module | concept |
//! |---|---|---|
//! | core | [`message`], [`proto`], [`event`], [`config`], errors, names, [`ClientInfo`], [`Stats`] | ids and channel names and their rules, messages and their encodings, status and close codes, the clock, events, errors, plain settings |
//! | node | (private) `node` | this node's clients, mailboxes, channel index: one owner |
//! | seam | [`cluster`] | what this node asks of others and what an engine hands back; the engines: [`cluster::memory`], `cluster::redis` (feature `redis`) |
//! | routing | [`routing`] | `send`, `broadcast`, `broadcast_all`, relays, receipts, accounting; the seam's handler; the background tasks |
//! | client | [`client`], [`subscribe`] | [`ClientHandle`], [`ClientConfig`], [`Callbacks`]; server-side channel members |
//! | connection | (private) `connection`, [`admission`] | one connection's task: register, read, write, keep time, rate limits; connection slots |
//! | pool | [`WsPool`], [`WsPoolBuilder`] | the handle and its builder, [`WsPool::accept`], the authorisation hook |
//! | HTTP | [`layer`], [`handler`], [`handshake`], [`server`], [`admin`] | the layer and extractor, the provided `/ws` route, tokens from `Sec-WebSocket-Protocol`, [`serve()`], the admin API and dashboard (feature `admin`) |
//! | optional | `metrics` (feature `metrics`) | Prometheus-style numbers through the `metrics` facade |
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
//! and the `cluster_*` methods answer for the whole cluster. The engine is
//! a seam: [`WsPoolBuilder::engine`] takes Redis or
//! [`cluster::memory::Network`] (several pools in one process, no service
//! to run). See [`cluster`] and `CLUSTER.md` in the repository.
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

#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]
#![warn(clippy::await_holding_lock)]

pub mod admission;
#[cfg(feature = "__bench")]
#[doc(hidden)]
pub mod bench_support;
pub mod client;
mod client_id;
pub mod cluster;
pub mod config;
mod connection;
mod error;
pub mod event;
mod http;
mod info;
pub mod message;
#[cfg(feature = "metrics")]
pub mod metrics;
mod names;
mod node;
mod pool;
pub mod proto;
pub mod routing;
mod stats;
pub mod subscribe;

#[cfg(feature = "admin")]
pub use http::admin;
#[cfg(feature = "tls")]
pub use http::tls;
pub use http::{handler, handshake, layer, server};

pub use client::{Callbacks, ClientConfig, ClientHandle, Relay};
pub use client_id::ClientId;
pub use config::{ClientIp, Config, ConfigError, DuplicatePolicy, RelayPolicy};
pub use error::{BroadcastError, JoinError, PoolError, SendError};
pub use event::{DisconnectReason, EventStream, PoolEvent, UndeliveredReason};
pub use handler::{route, ws_handler};
#[cfg(feature = "tls")]
pub use http::tls::{serve_tls, Tls, TlsError};
pub use info::{ClientInfo, NodeInfo};
pub use layer::{MissingWsPool, WsPoolLayer};
pub use message::{close_code, status, Delivery, Format};
pub use pool::{HandshakeRequest, Rejection, WsPool, WsPoolBuilder};
pub use proto::SendMsg;
pub use routing::SendOptions;
pub use server::{serve, Serve};
pub use stats::{ClusterStats, EngineStats, RefusedStats, Stats};
pub use subscribe::{Lagged, Subscription};
