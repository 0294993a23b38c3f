//! Close frames: the code and text for each reason, and how a read error
//! maps to a reason.

use crate::{message::close_code, DisconnectReason, PoolError};

/// Why a read failed, as the reason the connection ends. axum wraps
/// tungstenite's error (the same version as ours): both sockets give it.
pub(super) fn read_error(e: &(dyn std::error::Error + Send + Sync + 'static)) -> DisconnectReason {
    use tungstenite::{error::ProtocolError, Error};
    match e.downcast_ref::<Error>() {
        Some(Error::Capacity(_)) => DisconnectReason::MessageTooBig,
        Some(Error::Utf8(detail)) => DisconnectReason::ProtocolViolation {
            code: close_code::INVALID_PAYLOAD,
            detail: detail.clone(),
        },
        Some(
            Error::ConnectionClosed
            | Error::AlreadyClosed
            | Error::Io(_)
            | Error::Protocol(ProtocolError::ResetWithoutClosingHandshake),
        ) => DisconnectReason::ConnectionLost,
        Some(Error::Protocol(e)) => DisconnectReason::ProtocolViolation {
            code: close_code::PROTOCOL,
            detail: e.to_string(),
        },
        _ => DisconnectReason::Error(PoolError::Socket(e.to_string())),
    }
}

pub(super) fn close_text(reason: &DisconnectReason) -> &'static str {
    match reason {
        DisconnectReason::Replaced => "replaced",
        DisconnectReason::Kicked => "disconnected",
        DisconnectReason::Shutdown => "server shutting down",
        DisconnectReason::IdleTimeout => "idle timeout",
        DisconnectReason::MessageTooBig => "message too big",
        DisconnectReason::TooSlow => "too slow",
        DisconnectReason::Refused => "id in use",
        DisconnectReason::RateLimited => "rate limit exceeded",
        DisconnectReason::ProtocolViolation { code, .. }
            if *code == close_code::INVALID_PAYLOAD =>
        {
            "invalid UTF-8"
        }
        DisconnectReason::ProtocolViolation { .. } => "protocol error",
        _ => "",
    }
}
