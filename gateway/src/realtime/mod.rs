//! Realtime over WebSocket, speaking Supabase Realtime's protocol so `@supabase/supabase-js`
//! works unchanged.
//!
//! ```text
//! upgrade (HTTP -> WebSocket, apikey checked before the upgrade)
//!   -> socket   (one task per socket: reads frames, writes its bounded queue)
//!        join   (config + postgres_changes checked against the catalog)
//!        private (RLS probes on realtime.messages for private channels)
//!        topics (broadcast and presence, in memory)
//!        registry (live postgres_changes subscriptions, indexed by table and eq filter)
//! fanout::deliver (a committed transaction -> authorizer -> the channels allowed to see it)
//! ```
//!
//! `protocol` and `filter` are pure (no I/O). Who may see what is `crate::authorize`'s
//! contract (`Authorizer`, `Identity`, `Verdict`); this module only asks it.
//!
//! Wiring (`crate::server`): `App::new` creates `app.realtime`. The pump calls, for each
//! committed transaction in commit order, `fanout::deliver(&app.realtime, &tx, &authorizer)`
//! and may confirm `tx.commit_lsn` once it returns (messages are then in the sockets' queues).
//! A subscription takes part in every `deliver` that starts after its channel was told
//! "Subscribed to PostgreSQL".

pub mod db_broadcast;
pub mod fanout;
pub mod filter;
pub mod join;
pub mod private;
pub mod protocol;
pub mod rate;
pub mod registry;
pub mod resume;
mod socket;
pub mod socket_handle;
pub mod topics;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::app::App;
use crate::auth::{AuthError, Claims};
use crate::http::{json, Body};

pub use fanout::{deliver, DeliveryReport};
pub use registry::Registry;

/// The shared realtime state: held by `App`, used by every socket task and by the fan-out.
#[derive(Default)]
pub struct Realtime {
    pub registry: Registry,
    pub topics: topics::Topics,
    /// Joins that asked to resume, for the pump to serve between transactions.
    pub replays: resume::ReplayQueue,
    next_id: AtomicU64,
    /// Open sockets per user (`sub`), to record `last_seen_at` on their last disconnect.
    users: Mutex<HashMap<String, usize>>,
    /// Open sockets in all, against `RIPPLE_MAX_SOCKETS`.
    open_sockets: std::sync::atomic::AtomicUsize,
    /// What every socket task reacts to (it watches for the counters to move).
    pub notices: tokio::sync::watch::Sender<Notices>,
}

/// Counters that move when something happens that concerns every socket; a socket compares
/// them with the values it last saw, so bursts coalesce into one reaction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Notices {
    /// Rows that policies on `realtime.messages` read changed (memberships): private
    /// channels are checked again and closed if no longer allowed.
    pub access: u64,
    /// Grants, policies or tables changed: every joined channel is checked again (private
    /// ones, and the SELECT privilege on the columns its filters name).
    pub grants: u64,
    /// The replication slot was lost and recreated: changes may have been missed.
    pub slot_lost: u64,
}

/// What a transaction changed that joined channels' authorization depends on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccessChange {
    /// One of `revocation_tables` (`schema.table`, the rows that policies on
    /// `realtime.messages` read, such as memberships).
    pub members: bool,
    /// The security feed (grants, policies, tables).
    pub grants: bool,
}

/// Did this transaction change something a joined channel's authorization depends on?
pub fn access_change(tx: &crate::change::Transaction, tables: &[String]) -> AccessChange {
    let (feed_schema, feed_table) = crate::authorize::SECURITY_FEED;
    let mut change = AccessChange::default();
    for c in &tx.changes {
        let (schema, name) = (&c.relation.schema, &c.relation.name);
        change.grants |= schema == feed_schema && name == feed_table;
        change.members |= tables.iter().any(|t| {
            t.split_once('.')
                .is_some_and(|(s, n)| s == schema && n == name)
        });
    }
    change
}

/// Holds one place among the open sockets until dropped.
struct SocketSlot(Arc<App>);

impl Drop for SocketSlot {
    fn drop(&mut self) {
        self.0.realtime.open_sockets.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Realtime {
    pub fn new() -> Self {
        Self::default()
    }

    /// A process-unique id for a socket or channel.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn user_connected(&self, sub: &str) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        *users.entry(sub.to_string()).or_default() += 1;
    }

    /// True when this was the user's last socket.
    fn user_disconnected(&self, sub: &str) -> bool {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        match users.get_mut(sub) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                users.remove(sub);
                true
            }
            None => false,
        }
    }

    /// Sockets re-check their channels' authorization: private channels when memberships
    /// changed, every channel when grants or policies did. (Only private channels ask the
    /// database for a membership change: in a chat every message updates its members'
    /// counters, and ten thousand sockets asking per message would starve the pipeline.)
    pub fn access_may_have_changed(&self, change: AccessChange) {
        if change.members || change.grants {
            self.notices.send_modify(|n| {
                n.access += u64::from(change.members);
                n.grants += u64::from(change.grants);
            });
        }
    }

    /// Every joined channel is told that changes may have been missed.
    pub fn slot_lost(&self) {
        self.notices.send_modify(|n| n.slot_lost += 1);
    }

    /// Sockets open now.
    pub fn open_sockets(&self) -> usize {
        self.open_sockets.load(Ordering::Acquire)
    }

    /// Takes a place for a new socket, or None when `max` are open.
    fn reserve_socket(app: &Arc<App>) -> Option<SocketSlot> {
        let max = app.config.max_sockets;
        app.realtime
            .open_sockets
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| SocketSlot(app.clone()))
    }

    /// Sockets currently open for a user.
    pub fn sockets_of(&self, sub: &str) -> usize {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.get(sub).copied().unwrap_or(0)
    }
}

fn unauthorized(message: &str) -> Response<Body> {
    json(
        StatusCode::UNAUTHORIZED,
        serde_json::json!({ "message": message }).to_string(),
    )
}

/// The `apikey` of a socket request: query parameter, else `apikey`/`x-api-key` header.
fn api_key(req: &Request<Incoming>) -> Option<String> {
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

fn query_param(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    })
}

pub(crate) fn describe_auth_error(e: &AuthError) -> String {
    match e {
        AuthError::Expired => "token has expired".into(),
        other => other.to_string(),
    }
}

/// `GET /realtime/v1/websocket` (and `/socket/websocket`): checks the `apikey` and the
/// protocol version, then upgrades and hands the socket to its own task.
// Async like every handler the router awaits; the socket itself runs on its own task.
#[allow(clippy::unused_async)]
pub async fn upgrade(mut req: Request<Incoming>, app: Arc<App>) -> Response<Body> {
    let Some(key) = api_key(&req) else {
        return unauthorized("apikey is required (query parameter `apikey` or header `apikey`)");
    };
    let claims: Claims = match app.jwt.verify(&key) {
        Ok(c) => c,
        Err(e) => return unauthorized(&format!("invalid apikey: {}", describe_auth_error(&e))),
    };
    let vsn_text = query_param(&req, "vsn");
    let Some(vsn) = protocol::Vsn::parse(vsn_text.as_deref()) else {
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
    let Some(slot) = Realtime::reserve_socket(&app) else {
        return json(
            StatusCode::TOO_MANY_REQUESTS,
            serde_json::json!({"message": "too many connections"}).to_string(),
        );
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(ws_key.as_bytes());
    let max = app.config.max_body_bytes;
    let connection = req
        .extensions_mut()
        .remove::<crate::http::ConnectionPermit>();
    tokio::spawn(async move {
        let _slot = slot;
        let _connection = connection;
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let config = WebSocketConfig {
                    max_message_size: Some(max),
                    max_frame_size: Some(max),
                    ..WebSocketConfig::default()
                };
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                socket::run(ws, app, vsn, claims, key).await;
            }
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
