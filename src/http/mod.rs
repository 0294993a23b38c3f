//! The HTTP surface: serving an app, admitting and upgrading handshakes,
//! the layer that puts the pool into requests, and the admin API.

pub mod admin;
pub mod admission;
pub mod handshake;
pub mod layer;
pub mod route;
pub mod serve;
