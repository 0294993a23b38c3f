//! Middleware that puts a [`WsPool`] into every request, and the `WsPool`
//! extractor that takes it back out.
//!
//! ```
//! use axum::{routing::get, Router};
//! use wspool::{WsPool, WsPoolLayer};
//!
//! async fn online(pool: WsPool) -> String {
//!     pool.stats().connections.to_string()
//! }
//!
//! let app: Router = Router::new()
//!     .merge(wspool::route())
//!     .route("/online", get(online))
//!     .layer(WsPoolLayer::new());
//! ```
//!
//! A handler that extracts `WsPool` on a router without the layer is
//! answered 500 with a message naming `WsPoolLayer`.

use std::task::{Context, Poll};

use axum::{
    extract::FromRequestParts,
    http::{request::Parts, Request, StatusCode},
    response::{IntoResponse, Response},
};
use tower::{Layer, Service};

use crate::WsPool;

/// Puts a [`WsPool`] into every request; see the [module docs](self).
#[derive(Clone, Debug, Default)]
pub struct WsPoolLayer {
    pool: WsPool,
}

impl WsPoolLayer {
    /// A layer with a new pool with every default.
    pub fn new() -> Self {
        WsPoolLayer {
            pool: WsPool::new(),
        }
    }

    /// A layer with this pool (same as [`WsPool::layer`]).
    pub fn from_pool(pool: WsPool) -> Self {
        WsPoolLayer { pool }
    }

    /// The pool it adds.
    pub fn pool(&self) -> &WsPool {
        &self.pool
    }
}

impl WsPool {
    /// A [`WsPoolLayer`] that puts this pool into every request.
    pub fn layer(&self) -> WsPoolLayer {
        WsPoolLayer::from_pool(self.clone())
    }
}

impl<S> Layer<S> for WsPoolLayer {
    type Service = AddWsPool<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AddWsPool {
            inner,
            pool: self.pool.clone(),
        }
    }
}

/// The service [`WsPoolLayer`] wraps around yours.
#[derive(Clone, Debug)]
pub struct AddWsPool<S> {
    inner: S,
    pool: WsPool,
}

impl<S, B> Service<Request<B>> for AddWsPool<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        req.extensions_mut().insert(self.pool.clone());
        self.inner.call(req)
    }
}

/// The rejection of the `WsPool` extractor: the request has no pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Missing WsPool in the request extensions. Perhaps you forgot to add `WsPoolLayer` to your router? (`.layer(WsPoolLayer::new())` or `.layer(pool.layer())`)")]
pub struct MissingWsPool;

impl IntoResponse for MissingWsPool {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}

impl<S> FromRequestParts<S> for WsPool
where
    S: Send + Sync,
{
    type Rejection = MissingWsPool;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<WsPool>()
            .cloned()
            .ok_or(MissingWsPool)
    }
}
