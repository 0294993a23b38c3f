//! A JSON admin API over the pool (the `chat` example's API, PROTOCOL.md
//! section 8), ready to mount behind your own authentication.
//!
//! | request | answer |
//! |---|---|
//! | `POST /api/send`, body a `SendMsg` in proto3 JSON | `200 {"recipients": 1, "delivery": "queued"}` (or `"buffered"` while the client is away); 404 no such client; 400 bad body or no `toClientId`; 503 queue full |
//! | `POST /api/broadcast` | `200 {"recipients": N}` (queued or buffered); 400 bad body or no `channel` |
//! | `POST /api/broadcast_all` | `200 {"recipients": N}`; 400 bad body |
//! | `GET /api/clients` | array of [`ClientInfo`](crate::ClientInfo) |
//! | `GET /api/clients/{id}` | one, or 404 |
//! | `PUT /api/clients/{id}/channels/{channel}` | `200 {"joined": bool}` (false: already a member); 404; 400 |
//! | `DELETE /api/clients/{id}/channels/{channel}` | `200 {"left": bool}`; 404 |
//! | `DELETE /api/clients/{id}` | closes it with 4002: `200 {"disconnected": id}`; 404 |
//! | `GET /api/stats` | [`Stats`](crate::Stats) |
//!
//! Every error is `{"error": "..."}`.
//!
//! ```
//! use axum::Router;
//! use wspool::WsPool;
//!
//! let pool = WsPool::new();
//! let app: Router = Router::new().merge(wspool::route()).merge(wspool::admin::router()).layer(pool.layer());
//! ```

use axum::{
    body::Bytes,
    extract::Path,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post, put},
    Json, Router,
};
use serde_json::json;

use crate::{BroadcastError, Delivery, JoinError, SendError, SendMsg, WsPool};

/// The admin routes under `/api`; the pool comes from
/// [`WsPoolLayer`](crate::WsPoolLayer).
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/api/send", post(send))
        .route("/api/broadcast", post(broadcast))
        .route("/api/broadcast_all", post(broadcast_all))
        .route("/api/clients", get(clients))
        .route("/api/clients/{id}", get(client).delete(disconnect))
        .route(
            "/api/clients/{id}/channels/{channel}",
            put(join).delete(leave),
        )
        .route("/api/stats", get(stats))
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

fn parse(body: &[u8]) -> Result<SendMsg, String> {
    serde_json::from_slice(body).map_err(|e| format!("body is not a SendMsg in proto3 JSON: {e}"))
}

fn recipients(n: usize) -> Response {
    Json(json!({ "recipients": n })).into_response()
}

async fn send(pool: WsPool, body: Bytes) -> Response {
    let msg = match parse(&body) {
        Ok(msg) => msg,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match pool.send(msg) {
        Ok(delivery) => {
            let how = match delivery {
                Delivery::Queued => "queued",
                Delivery::Buffered => "buffered",
            };
            Json(json!({ "recipients": 1, "delivery": how })).into_response()
        }
        Err(e @ SendError::EmptyTarget) => error(StatusCode::BAD_REQUEST, e),
        Err(e @ SendError::NotConnected(_)) => error(StatusCode::NOT_FOUND, e),
        Err(e @ SendError::QueueFull(_)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn broadcast(pool: WsPool, body: Bytes) -> Response {
    let msg = match parse(&body) {
        Ok(msg) => msg,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match pool.broadcast(msg) {
        Ok(n) => recipients(n),
        Err(e @ BroadcastError::NoChannel) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn broadcast_all(pool: WsPool, body: Bytes) -> Response {
    match parse(&body) {
        Ok(msg) => recipients(pool.broadcast_all(msg)),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn clients(pool: WsPool) -> Response {
    let mut list = pool.clients();
    list.sort_by(|a, b| a.id.cmp(&b.id));
    Json(list).into_response()
}

fn not_found(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("client {id} is not connected"),
    )
}

async fn client(pool: WsPool, Path(id): Path<String>) -> Response {
    match pool.client(&id) {
        Some(client) => Json(client.info()).into_response(),
        None => not_found(&id),
    }
}

async fn disconnect(pool: WsPool, Path(id): Path<String>) -> Response {
    match pool.client(&id) {
        Some(client) => {
            client.disconnect();
            Json(json!({ "disconnected": id })).into_response()
        }
        None => not_found(&id),
    }
}

async fn join(pool: WsPool, Path((id, channel)): Path<(String, String)>) -> Response {
    let Some(client) = pool.client(&id) else {
        return not_found(&id);
    };
    match client.join(&channel) {
        Ok(joined) => Json(json!({ "joined": joined })).into_response(),
        Err(JoinError::NotConnected) => not_found(&id),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn leave(pool: WsPool, Path((id, channel)): Path<(String, String)>) -> Response {
    match pool.client(&id) {
        Some(client) => Json(json!({ "left": client.leave(&channel) })).into_response(),
        None => not_found(&id),
    }
}

async fn stats(pool: WsPool) -> Response {
    Json(pool.stats()).into_response()
}
