//! The HTTP side, on the same port as the realtime socket: axum's router over our own accept
//! loop (connection limits, header-read timeout, accept backoff), with tower-http layers for
//! CORS, the request timeout and request tracing. REST/RPC live in `rest`; the WebSocket
//! upgrade hands off to `crate::realtime`.

mod broadcast;
pub mod rest;
mod upgrade;
mod web;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::routing::any;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::ServiceExt as _;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};

use crate::app::App;
use crate::backoff::Backoff;
use crate::metrics::{Counter, Histogram, Metrics, LATENCY_BUCKETS};
use crate::shutdown::Drain;

pub type Body = Full<Bytes>;

/// How long `/health` waits for the database before calling it down.
const HEALTH_DB_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves until `shutdown` resolves, then drains: requests in flight are answered, idle
/// connections closed and sockets told to close, for at most `shutdown_grace_secs`.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let drain = Drain::default();
    let grace = Duration::from_secs(app.config.shutdown_grace_secs);
    let accepted = accept(listener, app, shutdown, &drain).await;
    if !drain.finish(grace).await {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "connections still open after the shutdown grace period; stopping anyway"
        );
    }
    accepted
}

/// Accepts connections until `shutdown` resolves. An accept error (the open-files limit
/// reached, a connection reset before it was taken) is logged and backed off, never the end
/// of the server; connections past the limit are closed at once; a client that does not
/// finish its request head in time, or idles between requests, is disconnected.
async fn accept(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
    drain: &Drain,
) -> std::io::Result<()> {
    let router = router(app.clone());
    let limits = ConnectionLimits::new(&app);
    tokio::pin!(shutdown);
    let mut backoff = Backoff::new(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff.reset();
                    accepted
                }
                Err(error) => {
                    // EMFILE/ENFILE/ENOBUFS: connections close over time (timeouts below),
                    // so waiting frees descriptors; ECONNABORTED and the like are one
                    // client's problem.
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %error, backoff_ms = delay.as_millis() as u64, "accepting a connection failed; backing off");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = &mut shutdown => return Ok(()),
                    }
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let Ok(permit) = limits.connections.clone().try_acquire_owned() else {
            // Closing at once keeps the backlog moving and tells the client now.
            limits.refused.inc();
            drop(stream);
            continue;
        };
        let router = router.clone();
        let head_timeout = limits.header_read_timeout;
        let permit = ConnectionPermit(Arc::new(permit));
        let mut stop = drain.watcher();
        tokio::spawn(async move {
            let socket_stop = stop.clone();
            let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                // The auth service's rate limits count attempts per client address.
                req.extensions_mut()
                    .insert(crate::auth::ClientAddr(peer.ip()));
                // The realtime upgrade takes these along, so a WebSocket counts until it
                // closes and closes when the server shuts down.
                req.extensions_mut().insert(permit.clone());
                req.extensions_mut().insert(socket_stop.clone());
                router.clone().oneshot(req)
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // hyper starts the head timer whenever it waits for a request head, so it
            // covers both a slow first request and a keep-alive connection that idles.
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(head_timeout);
            // An HTTP/2 peer that stops answering pings is dropped.
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(head_timeout)
                .keep_alive_timeout(head_timeout);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                // The request in flight is answered; an idle connection closes now.
                () = stop.requested() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = ended {
                tracing::debug!(error = %error, "http connection ended with an error");
            }
        });
    }
}

/// Every endpoint, and the layers around them (outermost first): request tracing (method
/// and path only: queries carry filter values and the socket's `apikey`), metrics by route,
/// CORS, the request timeout. The request body limit is applied where bodies are read
/// (`read_body`), so that a refusal is an error in the API's own form.
pub fn router(app: Arc<App>) -> Router {
    let metrics = Arc::new(HttpMetrics::register(&app.metrics));
    let request_timeout = Duration::from_secs(app.config.request_timeout_secs.max(1));
    let mut api = Router::new()
        .route("/health", any(health))
        .route("/metrics", any(metrics_page))
        .route("/realtime/v1/websocket", any(upgrade))
        .route("/socket/websocket", any(upgrade));
    // A path and everything under it (the router's wildcard needs one more character).
    for prefix in ["/rest/v1", "/auth/v1"] {
        let handler = if prefix == "/rest/v1" {
            any(rest_request)
        } else {
            any(auth_request)
        };
        api = api
            .route(&format!("{prefix}/"), handler.clone())
            .route(&format!("{prefix}/{{*rest}}"), handler);
    }
    for prefix in broadcast::PREFIXES {
        api = api
            .route(prefix, any(broadcast::handle))
            .route(&format!("{prefix}/"), any(broadcast::handle))
            .route(&format!("{prefix}/{{*rest}}"), any(broadcast::handle));
    }
    api.fallback(fallback)
        // Answered here, not by the endpoints: an OPTIONS request that is not a CORS
        // preflight (those the CORS layer answers) gets the same empty answer.
        .layer(axum::middleware::from_fn(options_no_content))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            request_timeout,
        ))
        .layer(cors(&app.config.cors_allow_origins))
        .layer(axum::middleware::from_fn_with_state(metrics, observe))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    tracing::debug_span!("http", method = %req.method(), path = %req.uri().path())
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::DEBUG))
                // A 503 from /health while the stream starts is not an error to log.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .with_state(app)
}

/// A place in the connection limit, held by the connection and, after an upgrade, by the
/// WebSocket that replaced it.
#[derive(Clone)]
pub struct ConnectionPermit(#[allow(dead_code)] Arc<tokio::sync::OwnedSemaphorePermit>);

const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Descriptors kept back from the connection limit for the database pool, the replication
/// connection, files and logs.
const RESERVED_FDS: u64 = 256;

/// The total connection budget (HTTP and WebSocket alike: a socket keeps its permit after
/// the upgrade) and the timeouts.
struct ConnectionLimits {
    connections: Arc<tokio::sync::Semaphore>,
    refused: Arc<Counter>,
    header_read_timeout: Duration,
}

impl ConnectionLimits {
    fn new(app: &App) -> Self {
        let fds = raise_open_files_limit();
        let mut max = app.config.max_connections.max(1);
        if let Some(fds) = fds {
            let fit = fds.saturating_sub(RESERVED_FDS).max(1) as usize;
            if fit < max {
                tracing::warn!(
                    max_connections = max,
                    open_files_limit = fds,
                    using = fit,
                    "the open-files limit is lower than the connection limit; lowering it"
                );
                max = fit;
            }
        }
        let refused = app.metrics.counter(
            "ripple_connections_refused_total",
            "Connections closed at accept because the connection limit was reached.",
            &[],
        );
        Self {
            connections: Arc::new(tokio::sync::Semaphore::new(max)),
            refused,
            header_read_timeout: Duration::from_secs(app.config.header_read_timeout_secs.max(1)),
        }
    }
}

/// Raises the open-files soft limit to the hard limit (once per process) and returns the
/// limit now in force; `None` where the platform has none.
fn raise_open_files_limit() -> Option<u64> {
    static RAISED: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *RAISED.get_or_init(|| {
        let (soft, hard) = rlimit::Resource::NOFILE.get().ok()?;
        if soft >= hard {
            return Some(soft);
        }
        match rlimit::Resource::NOFILE.set(hard, hard) {
            Ok(()) => {
                tracing::info!(
                    from = soft,
                    to = hard,
                    "raised the open-files limit to its hard limit"
                );
                Some(hard)
            }
            Err(error) => {
                tracing::warn!(error = %error, soft, hard, "could not raise the open-files limit");
                Some(soft)
            }
        }
    })
}

/// Where a request went, for metrics.
#[derive(Clone, Copy)]
enum Route {
    Rest,
    Auth,
    Realtime,
    Health,
    Metrics,
    Other,
}

const ROUTES: [(Route, &str); 6] = [
    (Route::Rest, "rest"),
    (Route::Auth, "auth"),
    (Route::Realtime, "realtime"),
    (Route::Health, "health"),
    (Route::Metrics, "metrics"),
    (Route::Other, "other"),
];
impl Route {
    fn of(path: &str) -> Self {
        match path {
            "/health" => Route::Health,
            "/metrics" => Route::Metrics,
            "/realtime/v1/websocket" | "/socket/websocket" => Route::Realtime,
            p if p.starts_with("/rest/v1/") => Route::Rest,
            p if p.starts_with("/auth/v1/") => Route::Auth,
            _ => Route::Other,
        }
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Registered once, so a request touches only atomics.
struct HttpMetrics {
    /// [route][status class]
    requests: Vec<Vec<Arc<Counter>>>,
    /// [route]
    latency: Vec<Arc<Histogram>>,
}

impl HttpMetrics {
    fn register(m: &Metrics) -> Self {
        let requests = ROUTES
            .iter()
            .map(|(_, route)| {
                CLASSES
                    .iter()
                    .map(|class| {
                        m.counter(
                            "ripple_http_requests_total",
                            "HTTP requests answered, by route and status class.",
                            &[("route", route), ("class", class)],
                        )
                    })
                    .collect()
            })
            .collect();
        let latency = ROUTES
            .iter()
            .map(|(_, route)| {
                m.histogram(
                    "ripple_http_request_duration_seconds",
                    "Time from request to response head, by route.",
                    &[("route", route)],
                    LATENCY_BUCKETS,
                )
            })
            .collect();
        Self { requests, latency }
    }

    fn record(&self, route: Route, status: StatusCode, started: Instant) {
        let r = route as usize;
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.requests[r][class].inc();
        self.latency[r].observe_since(started);
    }
}

/// Counts every answer by route and status class, CORS preflights included (as `other`, like
/// every OPTIONS request). A preflight is answered `204 No Content`, as it always was.
async fn observe(
    State(metrics): State<Arc<HttpMetrics>>,
    req: Request,
    next: Next,
) -> axum::response::Response {
    let started = Instant::now();
    let options = req.method() == Method::OPTIONS;
    let route = if options {
        Route::Other
    } else {
        Route::of(req.uri().path())
    };
    let mut resp = next.run(req).await;
    if options && resp.status() == StatusCode::OK {
        *resp.status_mut() = StatusCode::NO_CONTENT;
    }
    metrics.record(route, resp.status(), started);
    resp
}

async fn options_no_content(req: Request, next: Next) -> axum::response::Response {
    if req.method() == Method::OPTIONS {
        return axum::response::IntoResponse::into_response(StatusCode::NO_CONTENT);
    }
    next.run(req).await
}

/// Browser frontends call Ripple from their own origin: `origins` (`*` for any, the
/// default) may.
fn cors(origins: &[String]) -> CorsLayer {
    let allow_origin = if origins.is_empty() || origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| o.parse().ok())
                .collect::<Vec<_>>(),
        )
    };
    let names = |list: &[&'static str]| {
        list.iter()
            .map(|h| hyper::header::HeaderName::from_static(h))
            .collect::<Vec<_>>()
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PATCH,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(names(&[
            "authorization",
            "apikey",
            "x-client-info",
            "content-type",
            "prefer",
            "range",
            "range-unit",
            "accept",
            "accept-profile",
            "content-profile",
            "x-supabase-api-version",
            "x-retry-count",
        ]))
        .expose_headers(names(&[
            "content-range",
            "content-location",
            "preference-applied",
        ]))
        .max_age(Duration::from_secs(86400))
}

/// A path no API owns: the web app's files when `--web` is set, else an unknown API path.
async fn fallback(State(app): State<Arc<App>>, req: Request) -> Response<Body> {
    if let Some(root) = &app.config.web {
        if let Some(resp) = web::serve(&app, root, req.method(), req.uri().path()).await {
            return resp;
        }
    }
    json(
        StatusCode::NOT_FOUND,
        r#"{"code":"PGRST125","message":"invalid path","details":null,"hint":null}"#.into(),
    )
}

async fn upgrade(State(app): State<Arc<App>>, req: Request) -> Response<Body> {
    upgrade::upgrade(req, app.sockets.clone()).await
}

async fn rest_request(State(app): State<Arc<App>>, req: Request) -> Response<Body> {
    let (parts, body) = req.into_parts();
    match read_body(&parts, body, app.config.max_body_bytes).await {
        Ok(bytes) => rest::handle(parts, bytes, app).await,
        Err(e) => e.into_response(),
    }
}

async fn auth_request(State(app): State<Arc<App>>, req: Request) -> Response<Body> {
    let (parts, body) = req.into_parts();
    match read_body(&parts, body, app.config.max_body_bytes).await {
        Ok(bytes) => crate::auth::service::handle(parts, bytes, app).await,
        Err(e) => e.into_response(),
    }
}

/// The whole body, refused with 413 past `limit` bytes (before reading, when the client
/// announced its length).
async fn read_body(
    parts: &hyper::http::request::Parts,
    body: axum::body::Body,
    limit: usize,
) -> Result<Bytes, rest::ApiError> {
    if announced_length_over(&parts.headers, limit) {
        return Err(rest::ApiError::body_too_large(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(rest::ApiError::body_too_large(limit))
        }
        Err(e) => {
            Err(rest::ApiError::bad_body("could not read the request body")
                .with_source(BoxedError(e)))
        }
    }
}

/// Did the client announce a body longer than `limit`? (A missing or unreadable length is
/// not an announcement: the limited read catches those bodies.)
pub(crate) fn announced_length_over(headers: &hyper::HeaderMap, limit: usize) -> bool {
    headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit as u64)
}

/// `Limited`'s error is a `Box<dyn Error>`, which is not itself an `Error`.
#[derive(Debug)]
struct BoxedError(Box<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for BoxedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BoxedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Ready only when the database answers and the replication stream is up; otherwise 503
/// naming what is down.
async fn health(State(app): State<Arc<App>>) -> Response<Body> {
    let database = tokio::time::timeout(HEALTH_DB_TIMEOUT, async {
        // Not the REST pool: requests holding all of it make the database busy, not down.
        let conn = app.authorize_pool.get().await.ok()?;
        conn.simple_query("select 1").await.ok()
    })
    .await
    .ok()
    .flatten()
    .is_some();
    let replication_problem = app.status.replication_problem();
    let streaming = app
        .replication
        .get()
        .is_some_and(crate::replication::ReplicationHandle::is_up);
    let replication = streaming && replication_problem.is_none();
    let authorization = app.status.authorization_problem();
    let up = |b: bool| if b { "up" } else { "down" };
    let mut down = Vec::new();
    if !database {
        down.push("database");
    }
    if !replication {
        down.push("replication");
    }
    if authorization.is_some() {
        down.push("authorization");
    }
    let ready = down.is_empty();
    let mut body = serde_json::json!({
        "status": if ready { "ok" } else { "unavailable" },
        "database": up(database),
        "replication": up(replication),
        "authorization": up(authorization.is_none()),
        "down": down,
    });
    if let Some(problem) = authorization {
        body["authorization_problem"] = serde_json::Value::String(problem);
    }
    if let Some(problem) = replication_problem {
        body["replication_problem"] = serde_json::Value::String(problem);
    }
    // Serving, but changes were lost: ready (200), and says so until restarted.
    if let Some((at, count)) = app.status.slot_lost() {
        body["slot_lost"] = serde_json::json!({
            "at": at,
            "count": count,
            "message": "the replication slot was lost and recreated: changes committed while it was missing were not delivered; clients were told to refetch",
        });
        if ready {
            body["status"] = "degraded".into();
        }
    }
    json(
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        body.to_string(),
    )
}

// The router takes async handlers.
#[allow(clippy::unused_async)]
async fn metrics_page(State(app): State<Arc<App>>) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
        .body(Body::new(Bytes::from(app.metrics.render())))
        .expect("valid response")
}

pub fn json(status: StatusCode, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .body(Body::new(Bytes::from(body)))
        .expect("valid response")
}
