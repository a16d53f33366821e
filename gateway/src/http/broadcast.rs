//! Broadcast over HTTP, as Supabase Realtime's REST API takes it (realtime-js `httpSend`,
//! and `send` on a channel that is not subscribed), for backends and serverless functions
//! that have no socket:
//!
//! - `POST /realtime/v1/api/broadcast` with `{"messages":[{"topic","event","payload","private"}]}`
//! - `POST /realtime/v1/api/broadcast/<topic>/events/<event>[?private=true]`, the body being
//!   the payload (httpSend).
//!
//! (`/api/broadcast...` too, the path without the `/realtime/v1` prefix.) The caller's JWT
//! (`Authorization: Bearer`, else `apikey`) decides: any valid token may send on a public
//! topic; a private one needs the `realtime.messages` INSERT policies to let the caller
//! write to it, exactly as for a broadcast sent over the socket. Every message is checked
//! before any is delivered, so a refused batch delivers nothing. Answers 202, as Supabase.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use bytes::Bytes;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::{json, Body};
use crate::auth::Claims;
use crate::http::App;
use crate::realtime::{db_broadcast, private};

/// Messages one request may carry; a backend sending more can send more requests.
const MAX_MESSAGES: usize = 1000;

/// Where broadcast is served: each prefix, and everything under it.
pub const PREFIXES: [&str; 2] = ["/realtime/v1/api/broadcast", "/api/broadcast"];

#[cfg_attr(not(test), allow(dead_code))]
pub fn is_broadcast_path(path: &str) -> bool {
    PREFIXES.iter().any(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

struct Message {
    topic: String,
    event: String,
    payload: Value,
    private: bool,
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(
        status,
        json!({ "error": message, "message": message }).to_string(),
    )
}

pub async fn handle(State(app): State<Arc<App>>, req: Request) -> Response<Body> {
    if req.method() != hyper::Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "use POST to broadcast");
    }
    let claims = match caller(&req, &app) {
        Ok(c) => c,
        Err(why) => return error(StatusCode::UNAUTHORIZED, &why),
    };
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let (parts, body) = req.into_parts();
    let body = match super::read_body(&parts, body, app.config.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let messages = match messages(&path, query.as_deref(), &body) {
        Ok(m) => m,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    // Ask the policies once per private topic, all before delivering anything.
    let mut allowed: HashMap<&str, bool> = HashMap::new();
    let who = crate::authorize::Identity::new(&claims.role, &claims.raw);
    for m in messages.iter().filter(|m| m.private) {
        if allowed.contains_key(m.topic.as_str()) {
            continue;
        }
        let ok = match private::write_access(&app.pool, &m.topic, &who).await {
            Ok(a) => a.broadcast,
            Err(e) => {
                tracing::warn!(error = %e, "broadcast write check failed");
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the authorization check could not run; try again",
                );
            }
        };
        if !ok {
            return error(
                StatusCode::FORBIDDEN,
                &format!(
                    "Unauthorized: You do not have permissions to write to this Channel topic: {}",
                    m.topic
                ),
            );
        }
        allowed.insert(&m.topic, true);
    }
    for m in &messages {
        db_broadcast::broadcast(&app.realtime, &m.topic, &m.event, &m.payload, m.private);
    }
    Response::builder()
        .status(StatusCode::ACCEPTED)
        .body(Body::default())
        .expect("valid response")
}

/// The caller's verified claims, or why there are none (a 401).
fn caller(req: &Request, app: &App) -> Result<Claims, String> {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let token = match header("authorization") {
        Some(v) => match v.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
            _ => return Err("the Authorization header must be a Bearer token".into()),
        },
        None => match header("apikey") {
            Some(k) => k.trim(),
            None => return Err("apikey or Authorization is required".into()),
        },
    };
    app.jwt.verify(token).map_err(|e| {
        format!(
            "invalid token: {}",
            crate::realtime::describe_auth_error(&e)
        )
    })
}

/// The messages a request carries, from its path and body.
fn messages(path: &str, query: Option<&str>, body: &Bytes) -> Result<Vec<Message>, String> {
    let rest = path
        .strip_prefix("/realtime/v1")
        .unwrap_or(path)
        .strip_prefix("/api/broadcast")
        .unwrap_or("");
    let value: Value =
        serde_json::from_slice(body).map_err(|_| "the body must be JSON".to_string())?;
    if rest.is_empty() || rest == "/" {
        let list = value
            .get("messages")
            .and_then(Value::as_array)
            .ok_or("the body must be {\"messages\": [...]}")?;
        if list.is_empty() || list.len() > MAX_MESSAGES {
            return Err(format!("send between 1 and {MAX_MESSAGES} messages"));
        }
        return list.iter().map(message).collect();
    }
    // /<topic>/events/<event>
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let [topic, "events", event] = segments.as_slice() else {
        return Err("use /api/broadcast or /api/broadcast/<topic>/events/<event>".into());
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| "the path is not valid UTF-8".to_string())
    };
    let private = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .any(|(k, v)| k == "private" && v == "true");
    message(&json!({
        "topic": decode(topic)?,
        "event": decode(event)?,
        "payload": value,
        "private": private,
    }))
    .map(|m| vec![m])
}

fn message(v: &Value) -> Result<Message, String> {
    let text = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 255)
            .map(str::to_string)
            .ok_or_else(|| format!("every message needs a `{k}` string of 1 to 255 bytes"))
    };
    let private = match v.get("private") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("`private` must be true or false".into()),
    };
    Ok(Message {
        topic: text("topic")?,
        event: text("event")?,
        payload: v.get("payload").cloned().unwrap_or_else(|| json!({})),
        private,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_request_forms_are_read() {
        let body = Bytes::from(
            r#"{"messages":[{"topic":"room","event":"e","payload":{"a":1},"private":true},{"topic":"t","event":"f"}]}"#,
        );
        let m = messages("/realtime/v1/api/broadcast", None, &body).unwrap();
        assert_eq!(m.len(), 2);
        assert!(m[0].private && !m[1].private);
        assert_eq!(m[0].payload, json!({"a": 1}));
        let m = messages(
            "/api/broadcast/conversation%3Ax/events/typing",
            Some("private=true"),
            &Bytes::from(r#"{"x":1}"#),
        )
        .unwrap();
        assert_eq!(
            (m[0].topic.as_str(), m[0].event.as_str(), m[0].private),
            ("conversation:x", "typing", true)
        );
        for (path, body) in [
            ("/api/broadcast", "{}"),
            ("/api/broadcast", r#"{"messages":[]}"#),
            ("/api/broadcast", r#"{"messages":[{"topic":"t"}]}"#),
            (
                "/api/broadcast",
                r#"{"messages":[{"topic":"t","event":"e","private":"yes"}]}"#,
            ),
            ("/api/broadcast", "not json"),
            ("/api/broadcast/t/e", "{}"),
        ] {
            assert!(
                messages(path, None, &Bytes::from(body)).is_err(),
                "{path} {body}"
            );
        }
        assert!(is_broadcast_path("/api/broadcast"));
        assert!(is_broadcast_path("/realtime/v1/api/broadcast/x/events/y"));
        assert!(!is_broadcast_path("/rest/v1/api/broadcast"));
    }
}
