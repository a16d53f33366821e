//! REST and RPC under the caller's JWT, PostgREST-compatible (issue: "Frontends call SQL
//! directly"). Not built yet.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::{json, Body};
use crate::app::App;

pub async fn handle(_req: Request<Incoming>, _app: Arc<App>) -> Response<Body> {
    json(
        StatusCode::NOT_IMPLEMENTED,
        r#"{"code":"PGRST501","message":"REST is not available yet","details":null,"hint":null}"#
            .into(),
    )
}
