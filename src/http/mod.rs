//! The HTTP surface: serving an app, the provided route, the layer that
//! puts the pool into requests, and the admin surface (feature `admin`). Everything here uses
//! the pool's API only.

#[cfg(feature = "admin")]
pub mod admin;
mod fallback;
pub mod handler;
pub mod handshake;
pub mod layer;
pub mod server;
mod sniff;
#[cfg(feature = "tls")]
pub mod tls;
