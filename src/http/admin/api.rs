//! The admin API's handlers (the table is in the [module docs](super)).
//! Each answers through the pool's API only.

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Path, Request},
    http::{request::Parts, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post, put},
    Json, Router,
};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio_stream::{wrappers::IntervalStream, Stream, StreamExt};

use crate::{BroadcastError, Delivery, JoinError, SendError, SendMsg, WsPool};

/// The admin routes under `/api`; the pool comes from
/// [`WsPoolLayer`](crate::WsPoolLayer).
pub(super) fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/api/nodes", get(nodes))
        .route("/api/nodes/stream", get(nodes_stream))
        .route("/api/send", post(send))
        .route("/api/broadcast", post(broadcast))
        .route("/api/broadcast_all", post(broadcast_all))
        .route("/api/clients", get(clients))
        .route("/api/stats/stream", get(stats_stream))
        .route("/api/clients/{id}", get(client).delete(disconnect))
        .route(
            "/api/clients/{id}/channels/{channel}",
            put(join).delete(leave),
        )
        .route("/api/stats", get(stats))
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this path",
            )
        })
}

/// Path parameters; a rejection answers as a JSON error.
struct Params<T>(T);

impl<S, T> FromRequestParts<S> for Params<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(params)) => Ok(Params(params)),
            Err(e) => Err(error(e.status(), e.body_text())),
        }
    }
}

/// A body that is a `SendMsg` in proto3 JSON; a rejection (too large, not
/// JSON) answers as a JSON error.
struct MsgBody(SendMsg);

impl<S: Send + Sync> FromRequest<S> for MsgBody {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| error(e.status(), e.body_text()))?;
        match serde_json::from_slice(&body) {
            Ok(msg) => Ok(MsgBody(msg)),
            Err(e) => Err(error(
                StatusCode::BAD_REQUEST,
                format!("body is not a SendMsg in proto3 JSON: {e}"),
            )),
        }
    }
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

fn recipients(n: usize) -> Response {
    Json(json!({ "recipients": n })).into_response()
}

async fn send(pool: WsPool, MsgBody(msg): MsgBody) -> Response {
    match pool.send(msg) {
        Ok(delivery) => {
            let how = match delivery {
                Delivery::Queued => "queued",
                Delivery::Buffered => "buffered",
                Delivery::Forwarded => "forwarded",
            };
            Json(json!({ "recipients": 1, "delivery": how })).into_response()
        }
        Err(e @ SendError::EmptyTarget) => error(StatusCode::BAD_REQUEST, e),
        Err(e @ SendError::NotConnected(_)) => error(StatusCode::NOT_FOUND, e),
        Err(e @ (SendError::QueueFull(_) | SendError::Unavailable(_))) => {
            error(StatusCode::SERVICE_UNAVAILABLE, e)
        }
    }
}

fn broadcast_answer(result: Result<usize, BroadcastError>) -> Response {
    match result {
        Ok(n) => recipients(n),
        Err(e @ BroadcastError::NoChannel) => error(StatusCode::BAD_REQUEST, e),
        Err(e @ BroadcastError::Unavailable { .. }) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn broadcast(pool: WsPool, MsgBody(msg): MsgBody) -> Response {
    broadcast_answer(pool.cluster_broadcast(msg).await)
}

async fn broadcast_all(pool: WsPool, MsgBody(msg): MsgBody) -> Response {
    broadcast_answer(pool.cluster_broadcast_all(msg).await)
}

/// This node's stats once a second, as server-sent events, until the
/// client goes away.
async fn stats_stream(
    pool: WsPool,
) -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
    let ticks = IntervalStream::new(tokio::time::interval(std::time::Duration::from_secs(1)));
    let events = ticks.map(move |_| {
        let event = Event::default().event("stats");
        // Serializing counters and maps of counters cannot fail.
        Ok(event
            .json_data(pool.stats())
            .unwrap_or_else(|_| Event::default()))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

async fn nodes(pool: WsPool) -> Response {
    Json(pool.cluster_nodes().await).into_response()
}

/// Every node's report once a second, as server-sent events (`nodes`),
/// until the client goes away.
async fn nodes_stream(
    pool: WsPool,
) -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
    let ticks = IntervalStream::new(tokio::time::interval(std::time::Duration::from_secs(1)));
    let events = ticks.then(move |_| {
        let pool = pool.clone();
        async move {
            let event = Event::default().event("nodes");
            // Serializing numbers and strings cannot fail.
            Ok((event.json_data(pool.cluster_nodes().await)).unwrap_or_else(|_| Event::default()))
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

async fn clients(pool: WsPool) -> Response {
    match pool.cluster_clients().await {
        Ok(mut list) => {
            list.sort_by(|a, b| a.id.cmp(&b.id));
            Json(list).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

fn not_found(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("client {id} is not connected"),
    )
}

async fn client(pool: WsPool, Params(id): Params<String>) -> Response {
    match pool.cluster_client(&id).await {
        Ok(Some(info)) => Json(info).into_response(),
        Ok(None) => not_found(&id),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn disconnect(pool: WsPool, Params(id): Params<String>) -> Response {
    match pool.cluster_disconnect(&id).await {
        Ok(true) => Json(json!({ "disconnected": id })).into_response(),
        Ok(false) => not_found(&id),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn join(pool: WsPool, Params((id, channel)): Params<(String, String)>) -> Response {
    membership(pool.cluster_join(&id, &channel).await, "joined", &id)
}

async fn leave(pool: WsPool, Params((id, channel)): Params<(String, String)>) -> Response {
    membership(pool.cluster_leave(&id, &channel).await, "left", &id)
}

/// The answer to a join or leave on any node.
fn membership(answer: Result<bool, JoinError>, done: &str, id: &str) -> Response {
    match answer {
        Ok(changed) => Json(json!({ done: changed })).into_response(),
        Err(JoinError::NotConnected) => not_found(id),
        Err(e @ JoinError::Unavailable(_)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn stats(pool: WsPool) -> Response {
    Json(pool.stats()).into_response()
}
