//! The HTTP fallback's two requests on the provided route (PROTOCOL.md
//! section 10): `GET ?transport=sse&token=..` opens a session whose
//! response is a stream of server-sent events, `POST ?session=..` sends
//! one message to it.

use std::collections::HashMap;

use axum::{
    body::Body,
    extract::Query,
    http::{header::CONTENT_TYPE, request::Parts, Method, StatusCode},
    response::Response,
};

use super::handler::origin_allowed;
use crate::{
    names::{parse_token, Token, TokenError},
    pool::refuse,
    stats::bump,
    WsPool,
};

/// What a request to the route is, as far as the fallback is concerned.
pub(super) enum Request {
    /// Not the fallback's: a WebSocket handshake (or not one at all).
    None,
    /// Open a session: the token, parsed, what to echo, and whether the
    /// client asked for JSON.
    Open(Result<Token, TokenError>, Option<String>, bool),
    /// A message to the session with this id.
    Post(String),
}

pub(super) fn what(pool: &WsPool, parts: &Parts) -> Request {
    if parts.uri.query().is_none() {
        return Request::None;
    }
    let Ok(Query(query)) = Query::<HashMap<String, String>>::try_from_uri(&parts.uri) else {
        return Request::None;
    };
    if parts.method == Method::GET && query.get("transport").map(String::as_str) == Some("sse") {
        let raw = query.get("token").cloned();
        let token = match &raw {
            Some(raw) => parse_token(raw, &pool.token_limits()),
            None => Err(TokenError::Missing),
        };
        let json = query.get("format").map(String::as_str) == Some("json");
        return Request::Open(token, raw, json);
    }
    if parts.method == Method::POST {
        if let Some(session) = query.get("session") {
            return Request::Post(session.clone());
        }
    }
    Request::None
}

/// One POST: the session must be live and the `Origin` allowed before the
/// body is read, and the body within `max_message_size`.
pub(super) async fn post(pool: &WsPool, parts: &Parts, session: &str, body: Body) -> Response {
    if !origin_allowed(pool, parts) {
        bump(&pool.counters().refused_forbidden, 1);
        return refuse(StatusCode::FORBIDDEN, "origin not allowed");
    }
    let json = (parts.headers.get(CONTENT_TYPE))
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    pool.post_event(session, json, body).await
}
