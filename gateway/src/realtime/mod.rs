//! Realtime over WebSocket, speaking Supabase Realtime's protocol. Not built yet.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::app::App;
use crate::http::{json, Body};

pub async fn upgrade(_req: Request<Incoming>, _app: Arc<App>) -> Response<Body> {
    json(
        StatusCode::NOT_IMPLEMENTED,
        r#"{"message":"realtime is not available yet"}"#.into(),
    )
}
