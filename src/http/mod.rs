//! The HTTP surface: serving an app, the provided route, the layer that
//! puts the pool into requests, and the admin API. Everything here uses
//! the pool's API only.

pub mod admin;
mod fallback;
pub mod handler;
pub mod handshake;
pub mod layer;
pub mod server;
mod sniff;
#[cfg(feature = "tls")]
pub mod tls;
