//! The admin surface (feature `admin`, on by default): a JSON API over the
//! pool and a live dashboard page, one [`Router`] that an application
//! nests where it likes, behind a decision about who may use it.
//!
//! There is no way to get the router without that decision: [`Admin`] is
//! made either with an authorisation hook ([`Admin::authorize`]), which
//! every request (the page, the API, the streams) passes first, or with
//! [`Admin::open_for_local_use`], which says in the code (and in the log,
//! once, when mounted) that anyone who reaches it may kick clients.
//!
//! ```
//! use axum::Router;
//! use wspool::{admin::Admin, Rejection, WsPool};
//!
//! let pool = WsPool::new();
//! let admin = Admin::authorize(|req| async move {
//!     match req.headers.get("authorization") {
//!         Some(v) if v == "Bearer change-me" => Ok(()),
//!         _ => Err(Rejection::unauthorized("admin token required")),
//!     }
//! });
//! let app: Router = Router::new()
//!     .merge(wspool::route())
//!     .nest("/admin", admin.router()) // the page at /admin/dashboard
//!     .layer(pool.layer());
//! ```
//!
//! Without a decision it does not compile:
//!
//! ```compile_fail
//! let admin = wspool::admin::Admin::default();
//! ```
//!
//! In a cluster, the page and the API show the cluster: every node with
//! its connections, message rates and link ([`NodeInfo`](crate::NodeInfo)),
//! the clients of every node with their node, and kick, join and leave on
//! any of them. Everything goes through the pool's public API; the page is
//! plain HTML, JavaScript and canvas, with no build step and nothing
//! fetched from elsewhere.
//!
//! | request | answer |
//! |---|---|
//! | `GET /dashboard` | the live dashboard (HTML); it finds the API beside itself, wherever the router is nested |
//! | `POST /api/send`, body a `SendMsg` in proto3 JSON | `200 {"recipients": 1, "delivery": "queued"}` (or `"buffered"` while the client is away, `"forwarded"` to another node of a cluster); 404 no such client; 400 bad body or no `toClientId`; 503 queue full, or the cluster unreachable |
//! | `POST /api/broadcast` | `200 {"recipients": N}` (queued or buffered, on every node of a cluster); 400 bad body or no `channel`; 503 the cluster unreachable |
//! | `POST /api/broadcast_all` | `200 {"recipients": N}`; 400 bad body; 503 |
//! | `GET /api/clients` | array of [`ClientInfo`](crate::ClientInfo), every node's in a cluster |
//! | `GET /api/clients/{id}` | one (on any node), or 404 |
//! | `PUT /api/clients/{id}/channels/{channel}` | `200 {"joined": bool}` (false: already a member), on whichever node has it; 404; 400; 503 the cluster unreachable |
//! | `DELETE /api/clients/{id}/channels/{channel}` | `200 {"left": bool}`, on whichever node has it; 404; 400; 503 |
//! | `DELETE /api/clients/{id}` | closes it with 4002 on whichever node has it: `200 {"disconnected": id}`; 404 |
//! | `GET /api/nodes` | array of [`NodeInfo`](crate::NodeInfo): this node first, then every other live node of the cluster (this node alone, shown down, while the others cannot be reached) |
//! | `GET /api/nodes/stream` | server-sent events once a second: `event: nodes`, the array above (the dashboard's feed) |
//! | `GET /api/stats` | [`Stats`](crate::Stats) of this node |
//! | `GET /api/stats/stream` | server-sent events: `event: stats`, the [`Stats`](crate::Stats) of this node as JSON, once a second |
//!
//! Every error is `{"error": "..."}` with its status, including the
//! rejections axum would answer in plain text: a body over the limit
//! (413; axum's default limit of 2 MB, change it with
//! `axum::extract::DefaultBodyLimit`), a path segment that is not UTF-8
//! (400), a method the route does not serve (405). A request the hook
//! refuses gets the hook's answer and reaches nothing else. (A path the
//! router does not have is the application's: nested, it falls through
//! to the application's fallback, the hook not asked.)

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc};

use axum::{
    extract::{ConnectInfo, Request},
    http::{header, HeaderMap, Method, Uri},
    middleware::{self, Next},
    response::{Html, IntoResponse, Response},
    routing::get,
    Router,
};

use crate::WsPool;

mod api;

/// The dashboard page.
const DASHBOARD: &str = include_str!("dashboard.html");

/// What the admin surface's authorisation hook sees of a request.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AdminRequest {
    /// The request's method.
    pub method: Method,
    /// The request URI, with its query, as the admin router sees it (the
    /// prefix it is nested under removed).
    pub uri: Uri,
    /// All request headers (cookies, `Authorization`, ...).
    pub headers: HeaderMap,
    /// The client's address: the peer's when the server was started with
    /// [`wspool::serve`](crate::serve()) or with `ConnectInfo`, or the one
    /// read from a proxy's header as the pool's
    /// [`ClientIp`](crate::ClientIp) says.
    pub remote_addr: Option<SocketAddr>,
}

type Hook = dyn Fn(AdminRequest) -> Pin<Box<dyn Future<Output = Result<(), Response>> + Send>>
    + Send
    + Sync;

/// Who may use the admin surface: made with a decision, turned into a
/// router with [`router`](Self::router). See the [module docs](self).
#[derive(Clone)]
pub struct Admin {
    /// `None`: open, by [`Admin::open_for_local_use`].
    hook: Option<Arc<Hook>>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let access = if self.hook.is_some() {
            "authorized"
        } else {
            "open"
        };
        f.debug_struct("Admin").field("access", &access).finish()
    }
}

impl Admin {
    /// Every request passes `hook` first: `Ok(())` lets it through; an
    /// error is answered as it is (a [`Rejection`](crate::Rejection) for a
    /// 401 or 403 with a reason, or any response: a 401 with
    /// `WWW-Authenticate`, a redirect to a login page).
    pub fn authorize<F, Fut, E>(hook: F) -> Self
    where
        F: Fn(AdminRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: IntoResponse + 'static,
    {
        let hook = move |req| -> Pin<Box<dyn Future<Output = Result<(), Response>> + Send>> {
            let decided = hook(req);
            Box::pin(async move { decided.await.map_err(IntoResponse::into_response) })
        };
        Admin {
            hook: Some(Arc::new(hook)),
        }
    }

    /// No check at all: anyone who can reach the router can read every
    /// client and kick it. For a server on a loopback address, a
    /// development machine, or behind a proxy that authenticates; a
    /// warning is logged once when the router is made.
    pub fn open_for_local_use() -> Self {
        Admin { hook: None }
    }

    /// The admin API under `/api` and the dashboard at `/dashboard`, for
    /// `merge` or `nest`. The pool comes from
    /// [`WsPoolLayer`](crate::WsPoolLayer), as for the provided route.
    pub fn router<S>(self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let routes = api::routes().route(
            "/dashboard",
            get(|| async {
                // The page may be cached for no time: it changes with the
                // library, and it is small.
                ([(header::CACHE_CONTROL, "no-cache")], Html(DASHBOARD))
            }),
        );
        match self.hook {
            None => {
                tracing::warn!(
                    "wspool admin surface mounted open (Admin::open_for_local_use): \
                     anyone who reaches it can read and kick every client"
                );
                routes
            }
            Some(hook) => routes.layer(middleware::from_fn(move |req: Request, next: Next| {
                let hook = hook.clone();
                async move {
                    match hook(AdminRequest::of(&req)).await {
                        Ok(()) => next.run(req).await,
                        Err(refused) => refused,
                    }
                }
            })),
        }
    }
}

impl AdminRequest {
    fn of(req: &Request) -> Self {
        let peer = (req.extensions().get::<ConnectInfo<SocketAddr>>()).map(|c| c.0);
        let remote_addr = match req.extensions().get::<WsPool>() {
            Some(pool) => pool.config().client_ip().resolve(req.headers(), peer),
            None => peer,
        };
        AdminRequest {
            method: req.method().clone(),
            uri: req.uri().clone(),
            headers: req.headers().clone(),
            remote_addr,
        }
    }
}
