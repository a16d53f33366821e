//! The WebSocket handshake of `GET /realtime/v1/websocket` (and `/socket/websocket`): the
//! `apikey` and protocol version are checked before upgrading, then the socket is handed to
//! `crate::realtime`, which runs it on a task of its own.

use std::sync::Arc;

use axum::extract::Request;
use hyper::{Response, StatusCode};

use super::{json, Body};
use crate::realtime::protocol::Vsn;
use crate::realtime::{describe_auth_error, Accepted, SocketContext};

fn unauthorized(message: &str) -> Response<Body> {
    json(
        StatusCode::UNAUTHORIZED,
        serde_json::json!({ "message": message }).to_string(),
    )
}

/// The `apikey` of a socket request: query parameter, else `apikey`/`x-api-key` header.
fn api_key<B>(req: &Request<B>) -> Option<String> {
    let from_query = req.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "apikey")
            .map(|(_, v)| v.into_owned())
    });
    from_query.or_else(|| {
        ["apikey", "x-api-key"].iter().find_map(|h| {
            req.headers()
                .get(*h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
    })
}

fn query_param<B>(req: &Request<B>, name: &str) -> Option<String> {
    req.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    })
}

/// `GET /realtime/v1/websocket` (and `/socket/websocket`): checks the `apikey` and the
/// protocol version, then upgrades and hands the socket to its own task.
// Async like every handler the router awaits; the socket itself runs on its own task.
#[allow(clippy::unused_async)]
pub async fn upgrade(mut req: Request, sockets: Arc<SocketContext>) -> Response<Body> {
    let Some(key) = api_key(&req) else {
        return unauthorized("apikey is required (query parameter `apikey` or header `apikey`)");
    };
    if let Err(e) = sockets.jwt.verify(&key) {
        return unauthorized(&format!("invalid apikey: {}", describe_auth_error(&e)));
    }
    let vsn_text = query_param(&req, "vsn");
    let Some(vsn) = Vsn::parse(vsn_text.as_deref()) else {
        return json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"message": "unsupported vsn: use 1.0.0 or 2.0.0"}).to_string(),
        );
    };
    let is_upgrade = req
        .headers()
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(ws_key) = req.headers().get("sec-websocket-key").cloned() else {
        return json(
            StatusCode::BAD_REQUEST,
            r#"{"message":"expected a WebSocket upgrade"}"#.into(),
        );
    };
    if !is_upgrade {
        return json(
            StatusCode::BAD_REQUEST,
            r#"{"message":"expected a WebSocket upgrade"}"#.into(),
        );
    }
    let Some(slot) = sockets.hub.reserve_socket(sockets.config.max_sockets) else {
        return json(
            StatusCode::TOO_MANY_REQUESTS,
            serde_json::json!({"message": "too many connections"}).to_string(),
        );
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(ws_key.as_bytes());
    let connection = req.extensions_mut().remove::<super::ConnectionPermit>();
    let stop = req.extensions_mut().remove::<crate::shutdown::Shutdown>();
    let accepted = Accepted {
        vsn,
        apikey_token: key,
        holds: vec![Box::new(slot), Box::new(connection)],
        stop,
    };
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => crate::realtime::start_socket(sockets, upgraded, accepted).await,
            Err(error) => tracing::debug!(error = %error, "websocket upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(hyper::header::CONNECTION, "upgrade")
        .header(hyper::header::UPGRADE, "websocket")
        .header("sec-websocket-accept", accept)
        .body(Body::default())
        .expect("static response")
}
