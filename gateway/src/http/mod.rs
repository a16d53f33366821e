//! The HTTP side, on the same port as the realtime socket: routing, CORS, health, metrics.
//! REST/RPC live in `rest`; the WebSocket upgrade hands off to `crate::realtime`.

pub mod rest;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::app::App;

pub type Body = Full<Bytes>;

/// Accepts connections until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(route(req, app).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(error) = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %error, "http connection ended with an error");
            }
        });
    }
}

async fn route(req: Request<Incoming>, app: Arc<App>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let mut resp = if req.method() == Method::OPTIONS {
        Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Body::default())
            .expect("static response")
    } else {
        match path.as_str() {
            "/health" => json(StatusCode::OK, r#"{"status":"ok"}"#.into()),
            "/realtime/v1/websocket" | "/socket/websocket" => {
                crate::realtime::upgrade(req, app).await
            }
            p if p.starts_with("/rest/v1/") => rest::handle(req, app).await,
            _ => json(
                StatusCode::NOT_FOUND,
                r#"{"code":"PGRST000","message":"not found","details":null,"hint":null}"#.into(),
            ),
        }
    };
    cors(&mut resp);
    resp
}

/// Browser frontends call Ripple from their own origin.
fn cors(resp: &mut Response<Body>) {
    let h = resp.headers_mut();
    h.insert("access-control-allow-origin", "*".parse().expect("static"));
    h.insert(
        "access-control-allow-methods",
        "GET, POST, PATCH, PUT, DELETE, OPTIONS"
            .parse()
            .expect("static"),
    );
    h.insert(
        "access-control-allow-headers",
        "authorization, apikey, x-client-info, content-type, prefer, range, accept-profile, content-profile, x-supabase-api-version"
            .parse()
            .expect("static"),
    );
    h.insert(
        "access-control-expose-headers",
        "content-range, content-location".parse().expect("static"),
    );
}

pub fn json(status: StatusCode, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .body(Body::new(Bytes::from(body)))
        .expect("valid response")
}
