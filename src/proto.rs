//! The generated protobuf types.
//!
//! `proto/wspool.proto` is compiled by `build.rs`: prost generates the Rust
//! structs and pbjson generates their canonical proto3 JSON form (`serde`
//! `Serialize` / `Deserialize`: lowerCamelCase names, `int64` as a string,
//! `bytes` as base64; numbers are accepted for `int64` too).
//!
//! The field names and numbers are those of the Go original, so a binary
//! [`SendMsg`] is byte-compatible with it.
//!
//! ```
//! use wspool::SendMsg;
//!
//! let msg = SendMsg { to_client_id: "bob".into(), msg: "hi".into(), timestamp: 7, ..Default::default() };
//! let json = serde_json::to_string(&msg).unwrap();
//! assert_eq!(json, r#"{"timestamp":"7","toClientId":"bob","msg":"hi"}"#);
//! let back: SendMsg = serde_json::from_str(r#"{"timestamp":7,"toClientId":"bob","msg":"hi"}"#).unwrap();
//! assert_eq!(back, msg);
//! ```

#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub(crate) mod generated {
    include!(concat!(env!("OUT_DIR"), "/wspool.rs"));
    include!(concat!(env!("OUT_DIR"), "/wspool.serde.rs"));
}

pub use generated::SendMsg;

/// What nodes of one cluster say to each other (`proto/cluster.proto`).
#[allow(missing_docs, clippy::all, clippy::pedantic, dead_code)]
pub(crate) mod cluster {
    include!(concat!(env!("OUT_DIR"), "/wspool.cluster.rs"));
}
