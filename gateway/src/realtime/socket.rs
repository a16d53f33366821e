//! One task per WebSocket: it reads the client's frames and writes the socket's bounded
//! queue, in one select loop, and owns the socket's channels. Producers elsewhere (the
//! fan-out, other sockets' broadcasts and presence) only ever `try_send` to the queue.

use super::last_seen::LastSeenHook;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;

use super::join::{self, JoinConfig, ResolveError};
use super::private::{self, TopicAccess};
use super::protocol::{self, BroadcastBody, BroadcastOut, Frame, Inbound, ServerMessage, Vsn};
use super::registry::{ChannelRef, Subscription};
use super::resume::{ReplayRequest, ResumeRequest};
use super::socket_handle::{Outbound, SocketHandle};
use super::topics::{Member, Sent, TopicKey};
use super::{Realtime, SocketContext};
use crate::auth::{AuthError, Claims};
use crate::authorize::Identity;

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Messages written per wake-up before the loop looks at the client again.
const WRITE_BATCH: usize = 256;
/// How long a client that overflowed its queue gets to take the goodbye message.
const OVERFLOW_NOTICE_TIMEOUT: Duration = Duration::from_secs(10);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The presence meta field holding the tracker's verified `sub` (null for anonymous).
const VERIFIED_SUB: &str = "verified_sub";

/// A channel joined on this socket.
struct Channel {
    key: u64,
    join_ref: Option<Arc<str>>,
    topic: Arc<str>,
    sub_topic: String,
    channel: Arc<ChannelRef>,
    claims: Claims,
    token: String,
    private: bool,
    ack: bool,
    topic_key: TopicKey,
    /// Private channels: what the user may send, asked once per token.
    write_access: Option<TopicAccess>,
    /// (schema, table, column) named by this channel's filters: the role must keep SELECT
    /// on them.
    filter_columns: Vec<(String, String, String)>,
    /// Its `postgres_changes` bindings, against the per-socket limit.
    bindings: usize,
}

/// Why the loop ended.
enum End {
    ClientClosed,
    /// The server is shutting down: the client is told to go elsewhere (or come back).
    Shutdown,
    Idle,
    Overflow,
    Error(WsError),
}

struct Session {
    ctx: Arc<SocketContext>,
    hub: Arc<Realtime>,
    vsn: Vsn,
    handle: SocketHandle,
    apikey_token: String,
    channels: HashMap<String, Channel>,
    /// The user (`sub`) this socket counts for, with their latest claims.
    user: Option<(String, Claims)>,
    /// What this socket may send per second.
    broadcasts: super::rate::Bucket,
    presence_updates: super::rate::Bucket,
}

pub(super) async fn run(
    mut ws: Ws,
    ctx: Arc<SocketContext>,
    vsn: Vsn,
    _apikey: Claims,
    apikey_token: String,
    mut stop: Option<crate::shutdown::Shutdown>,
) {
    let hub = ctx.hub.clone();
    let (handle, mut rx) = SocketHandle::new(
        hub.next_id(),
        ctx.config.client_queue,
        ctx.config.client_queue_bytes,
    );
    let idle = Duration::from_secs(ctx.config.ws_idle_timeout_secs.max(1));
    let mut s = Session {
        ctx: ctx.clone(),
        hub,
        vsn,
        handle,
        apikey_token,
        channels: HashMap::new(),
        user: None,
        broadcasts: super::rate::Bucket::new(ctx.config.broadcasts_per_second),
        presence_updates: super::rate::Bucket::new(ctx.config.presence_per_second),
    };
    tracing::debug!(socket = s.handle.id, "socket opened");
    let mut notices = s.hub.notices.subscribe();
    let mut seen = *notices.borrow_and_update();
    let mut io = Io {
        handle: s.handle.clone(),
        vsn,
        inbox: std::collections::VecDeque::new(),
        last_heard: Instant::now(),
    };
    let end = loop {
        if s.handle.is_overflowed() {
            break End::Overflow;
        }
        // Frames that arrived while the database was being asked, in their order.
        if let Some(frame) = io.inbox.pop_front() {
            let outcome = match frame {
                Ok(m) => {
                    io.meanwhile(Box::pin(s.dispatch(m)), &mut ws, &mut rx)
                        .await
                }
                Err(e) => {
                    s.malformed(e);
                    Ok(())
                }
            };
            match outcome {
                Ok(()) => continue,
                Err(end) => break end,
            }
        }
        let expiry = s.next_expiry();
        // Arms that ask the database run through `io.meanwhile`, which keeps writing the
        // queue and answering heartbeats while they wait (for a pooled connection, say).
        // Their futures are boxed: a join's state machine is large, and held inline it
        // would be allocated for every idle socket for its whole life.
        let outcome = tokio::select! {
            _ = s.handle.overflow.notify.notified() => break End::Overflow,
            out = rx.recv() => {
                let Some(first) = out else { break End::ClientClosed };
                write_batch(&mut ws, vsn, &s.handle, first, &mut rx).await
            }
            frame = ws.next() => {
                io.last_heard = Instant::now();
                match frame {
                    None => break End::ClientClosed,
                    Some(Err(e)) => break End::Error(e),
                    Some(Ok(WsMessage::Close(_))) => break End::ClientClosed,
                    Some(Ok(frame)) => match decode(vsn, frame) {
                        Some(Ok(m)) => io.meanwhile(Box::pin(s.dispatch(m)), &mut ws, &mut rx).await,
                        Some(Err(e)) => {
                            s.malformed(e);
                            Ok(())
                        }
                        // tungstenite answers pings itself.
                        None => Ok(()),
                    },
                }
            }
            () = tokio::time::sleep_until(io.last_heard + idle) => break End::Idle,
            () = shutdown_requested(&mut stop) => break End::Shutdown,
            () = sleep_until_opt(expiry) => {
                s.expire_channels();
                Ok(())
            }
            Ok(()) = notices.changed() => {
                let now = *notices.borrow_and_update();
                let slot_lost = now.slot_lost != seen.slot_lost;
                let grants = now.grants != seen.grants;
                let members = now.access != seen.access;
                seen = now;
                if slot_lost {
                    s.changes_may_be_missed();
                }
                // Nothing to ask when only memberships changed and no channel is private.
                if grants || (members && s.channels.values().any(|c| c.private)) {
                    io.meanwhile(Box::pin(s.recheck_access(grants)), &mut ws, &mut rx).await
                } else {
                    Ok(())
                }
            }
        };
        if let Err(end) = outcome {
            break end;
        }
    };
    Box::pin(s.finish(&mut ws, end)).await;
}

/// A text or binary frame as a message (None for control frames).
fn decode(vsn: Vsn, frame: WsMessage) -> Option<Result<Inbound, protocol::DecodeError>> {
    match frame {
        WsMessage::Text(text) => Some(protocol::decode_text(vsn, &text)),
        WsMessage::Binary(bytes) => Some(protocol::decode_binary(vsn, &bytes)),
        _ => None,
    }
}

/// Frames read while a handler waits, kept for when it is done (at most this many: then
/// the client is not read until the handler finishes).
const INBOX_LIMIT: usize = 64;

/// The socket's side of the loop that needs no `Session`: what keeps the socket alive
/// while a handler that asks the database is waiting.
struct Io {
    handle: SocketHandle,
    vsn: Vsn,
    /// Frames read while a handler was waiting, dispatched in order once it is done.
    inbox: std::collections::VecDeque<Result<Inbound, protocol::DecodeError>>,
    last_heard: Instant,
}

impl Io {
    /// Runs `handler` (a dispatch that may wait for the database) to completion while still
    /// writing the socket's queue and answering heartbeats; other frames wait in the inbox.
    /// The handler always finishes (it is never dropped halfway through a join): an end of
    /// the socket seen meanwhile is returned after it.
    async fn meanwhile(
        &mut self,
        handler: impl std::future::Future<Output = ()>,
        ws: &mut Ws,
        rx: &mut mpsc::Receiver<Outbound>,
    ) -> Result<(), End> {
        tokio::pin!(handler);
        let mut ended: Option<End> = None;
        loop {
            if ended.is_some() {
                handler.as_mut().await;
                return Err(ended.take().expect("ended"));
            }
            let reading = self.inbox.len() < INBOX_LIMIT;
            tokio::select! {
                biased;
                () = handler.as_mut() => return Ok(()),
                _ = self.handle.overflow.notify.notified() => ended = Some(End::Overflow),
                out = rx.recv() => match out {
                    Some(first) => {
                        if let Err(end) = write_batch(ws, self.vsn, &self.handle, first, rx).await {
                            ended = Some(end);
                        }
                    }
                    None => ended = Some(End::ClientClosed),
                },
                frame = ws.next(), if reading => {
                    self.last_heard = Instant::now();
                    match frame {
                        None | Some(Ok(WsMessage::Close(_))) => ended = Some(End::ClientClosed),
                        Some(Err(e)) => ended = Some(End::Error(e)),
                        Some(Ok(frame)) => match decode(self.vsn, frame) {
                            Some(Ok(m)) if m.topic == "phoenix" && m.event == "heartbeat" => {
                                self.handle
                                    .push(Outbound::Message(Arc::new(heartbeat_reply(&m))));
                            }
                            Some(m) => self.inbox.push_back(m),
                            None => {}
                        },
                    }
                }
            }
        }
    }
}

/// The answer to a heartbeat (it needs nothing of the session).
fn heartbeat_reply(m: &Inbound) -> ServerMessage {
    ServerMessage {
        join_ref: m.join_ref.as_deref().map(Arc::from),
        r#ref: m.r#ref.clone(),
        topic: m.topic.as_str().into(),
        event: "phx_reply",
        payload: json!({"status": "ok", "response": {}}).to_string(),
    }
}

async fn shutdown_requested(stop: &mut Option<crate::shutdown::Shutdown>) {
    match stop {
        Some(stop) => stop.requested().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn encode(vsn: Vsn, m: &Outbound) -> Option<WsMessage> {
    match m {
        Outbound::Message(m) => Some(WsMessage::Text(protocol::encode_text(vsn, m))),
        Outbound::Broadcast(b) => match protocol::encode_broadcast(vsn, b)? {
            Frame::Text(t) => Some(WsMessage::Text(t)),
            Frame::Binary(b) => Some(WsMessage::Binary(b)),
        },
    }
}

/// Writes what is queued, a batch at a time; gives up the moment the queue overflows (a
/// client that does not read must not keep this task waiting on its socket).
async fn write_batch(
    ws: &mut Ws,
    vsn: Vsn,
    handle: &SocketHandle,
    first: Outbound,
    rx: &mut mpsc::Receiver<Outbound>,
) -> Result<(), End> {
    let write = async {
        let mut next = Some(first);
        let mut n = 0;
        while let Some(m) = next {
            handle.taken(&m);
            if let Some(frame) = encode(vsn, &m) {
                ws.feed(frame).await?;
            }
            n += 1;
            next = if n < WRITE_BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        ws.flush().await
    };
    tokio::select! {
        r = write => r.map_err(End::Error),
        _ = handle.overflow.notify.notified() => Err(End::Overflow),
    }
}

fn reason_for(e: &AuthError) -> String {
    match e {
        AuthError::Expired => "InvalidJWTToken: Token has expired".into(),
        AuthError::MissingClaim(c) => format!(
            "InvalidJWTToken: Fields `role` and `exp` are required in JWT (`{c}` is missing)"
        ),
        AuthError::BadClaim(c) => format!("InvalidJWTToken: claim `{c}` has the wrong type"),
        AuthError::BadSignature => "JwtSignatureError: Failed to validate JWT signature".into(),
        AuthError::AlgorithmNotAllowed => "InvalidJWTToken: token algorithm is not accepted".into(),
        AuthError::Malformed => "MalformedJWT: The token provided is not a valid JWT".into(),
        AuthError::NoKey => "JwtSignerError: no key is configured to verify this token".into(),
        AuthError::RoleNotAllowed => {
            "InvalidJWTToken: the token's role is not one Ripple may act as".into()
        }
        AuthError::UnknownKid => "JwtSignerError: no key in the JWKS has the token's kid".into(),
        AuthError::NotYetValid => "InvalidJWTToken: Token is not valid yet (nbf)".into(),
        AuthError::WrongClaim(c) => format!("InvalidJWTToken: claim `{c}` is not accepted"),
    }
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Session {
    fn queue(&self, m: ServerMessage) {
        // A full queue flags the socket; the loop then says goodbye and disconnects.
        self.handle.push(Outbound::Message(Arc::new(m)));
    }

    fn reply(&self, to: &Inbound, status: &str, response: Value) {
        self.queue(ServerMessage {
            join_ref: to.join_ref.as_deref().map(Arc::from),
            r#ref: to.r#ref.clone(),
            topic: to.topic.as_str().into(),
            event: "phx_reply",
            payload: json!({"status": status, "response": response}).to_string(),
        });
    }

    fn reply_error(&self, to: &Inbound, reason: impl Into<String>) {
        self.reply(to, "error", json!({ "reason": reason.into() }));
    }

    /// A frame we could not read: an error reply where it can be addressed, else a
    /// `phx_error` on the socket's own topic. The socket stays open.
    fn malformed(&self, e: protocol::DecodeError) {
        tracing::debug!(socket = self.handle.id, reason = %e.reason, "malformed frame");
        let reason = format!("MalformedMessage: {}", e.reason);
        match (&e.topic, &e.r#ref) {
            (Some(topic), Some(r)) => self.queue(ServerMessage {
                join_ref: e.join_ref.as_deref().map(Arc::from),
                r#ref: Some(r.clone()),
                topic: topic.as_str().into(),
                event: "phx_reply",
                payload: json!({"status": "error", "response": {"reason": reason}}).to_string(),
            }),
            _ => self.queue(ServerMessage {
                join_ref: None,
                r#ref: None,
                topic: "phoenix".into(),
                event: "phx_error",
                payload: json!({ "reason": reason }).to_string(),
            }),
        }
    }

    fn system(
        &self,
        ch: &Channel,
        extension: &str,
        status: &str,
        message: &str,
        extra: Option<(&str, Value)>,
    ) {
        let mut payload = json!({
            "extension": extension, "status": status, "message": message, "channel": ch.sub_topic,
        });
        if let Some((k, v)) = extra {
            payload[k] = v;
        }
        self.queue(ServerMessage {
            join_ref: ch.join_ref.clone(),
            r#ref: None,
            topic: ch.topic.clone(),
            event: "system",
            payload: payload.to_string(),
        });
    }

    async fn dispatch(&mut self, m: Inbound) {
        if m.topic == "phoenix" {
            match m.event.as_str() {
                "heartbeat" => self.queue(heartbeat_reply(&m)),
                other => self.reply_error(
                    &m,
                    format!("UnknownEvent: `{other}` is not an event of the phoenix topic"),
                ),
            }
            return;
        }
        if m.event == "phx_join" {
            self.join(m).await;
            return;
        }
        if !self.channels.contains_key(&m.topic) {
            self.reply_error(&m, "unmatched topic");
            return;
        }
        match m.event.as_str() {
            "phx_leave" => {
                self.close_channel(&m.topic, false);
                self.reply(&m, "ok", json!({}));
            }
            "access_token" => self.refresh_token(m).await,
            "broadcast" => self.broadcast(m).await,
            "presence" => self.presence(m).await,
            other => self.reply_error(
                &m,
                format!("UnknownEvent: `{other}` is not understood on a channel (use broadcast, presence, access_token or phx_leave)"),
            ),
        }
    }

    async fn join(&mut self, m: Inbound) {
        let Some(sub_topic) = m.topic.strip_prefix("realtime:").map(str::to_string) else {
            self.reply_error(&m, "unmatched topic");
            return;
        };
        if sub_topic.is_empty() {
            self.reply_error(&m, "TopicNameRequired: You must provide a topic name");
            return;
        }
        let limits = &self.ctx.config;
        if !self.channels.contains_key(&m.topic)
            && self.channels.len() >= limits.max_channels_per_socket
        {
            self.reply_error(
                &m,
                format!(
                    "ChannelRateLimitReached: Too many channels (at most {} per socket)",
                    limits.max_channels_per_socket
                ),
            );
            return;
        }
        let size = m.payload.to_string().len();
        if size > limits.max_join_bytes {
            self.reply_error(
                &m,
                format!(
                    "InvalidJoinPayload: the join payload is {size} bytes, more than the limit of {}",
                    limits.max_join_bytes
                ),
            );
            return;
        }
        // A second join of the same topic replaces the first, as Phoenix does.
        if self.channels.contains_key(&m.topic) {
            self.close_channel(&m.topic, true);
        }
        let config = match JoinConfig::parse(&m.payload) {
            Ok(c) => c,
            Err(reason) => {
                self.reply_error(&m, format!("InvalidJoinPayload: {reason}"));
                return;
            }
        };
        if config.postgres_changes.len() > self.ctx.config.max_bindings_per_join {
            self.reply_error(
                &m,
                format!(
                    "InvalidJoinPayload: {} postgres_changes bindings, more than the limit of {} per join",
                    config.postgres_changes.len(),
                    self.ctx.config.max_bindings_per_join
                ),
            );
            return;
        }
        let held: usize = self
            .channels
            .values()
            .filter(|c| c.topic.as_ref() != m.topic.as_str())
            .map(|c| c.bindings)
            .sum();
        if held + config.postgres_changes.len() > self.ctx.config.max_bindings_per_socket {
            self.reply_error(
                &m,
                format!(
                    "InvalidJoinPayload: this socket would hold {} postgres_changes bindings, more than the limit of {} per socket",
                    held + config.postgres_changes.len(),
                    self.ctx.config.max_bindings_per_socket
                ),
            );
            return;
        }
        // The channel resumes as its first binding that says how (one position per channel:
        // apps pass the same `resume` object to every binding).
        let resume = match config
            .postgres_changes
            .iter()
            .map(|spec| ResumeRequest::parse(&spec.raw))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(requests) => requests.into_iter().flatten().next(),
            Err(reason) => {
                self.reply_error(&m, format!("InvalidJoinPayload: {reason}"));
                return;
            }
        };
        let token = config
            .access_token
            .clone()
            .filter(|t| !t.starts_with("sb_"))
            .unwrap_or_else(|| self.apikey_token.clone());
        let claims = match self.ctx.jwt.verify(&token) {
            Ok(c) => c,
            Err(e) => {
                self.reply_error(&m, reason_for(&e));
                return;
            }
        };
        let mut reads = TopicAccess {
            broadcast: true,
            presence: true,
        };
        if config.private {
            match private::read_access(&self.ctx.pool, &sub_topic, &claims).await {
                Ok(a) if a.any() => reads = a,
                Ok(_) => {
                    self.reply_error(
                        &m,
                        format!("Unauthorized: You do not have permissions to read from this Channel topic: {sub_topic}"),
                    );
                    return;
                }
                Err(error) => {
                    tracing::warn!(error = %error, "private channel authorization failed");
                    self.reply_error(
                        &m,
                        "UnableToSetPolicies: Realtime was unable to authorize this channel",
                    );
                    return;
                }
            }
        }
        // Presence cannot lie about who is present on a private channel: the key, when
        // given, must be the caller's own `sub`.
        if config.private
            && !config.presence_key.is_empty()
            && claims.sub.as_deref() != Some(config.presence_key.as_str())
        {
            self.reply_error(
                &m,
                "InvalidPresenceKey: on a private channel the presence key must be your user id (the token's sub)",
            );
            return;
        }
        let resolved = if config.postgres_changes.is_empty() {
            Vec::new()
        } else {
            let checked = match self.ctx.pool.get().await {
                Ok(client) => {
                    join::resolve(
                        &client,
                        &self.ctx.config.publication,
                        &config.postgres_changes,
                        &claims.role,
                    )
                    .await
                }
                Err(e) => Err(ResolveError::Db(Box::new(e))),
            };
            match checked {
                Ok(r) => r,
                Err(ResolveError::Invalid(reason)) => {
                    self.reply_error(&m, format!("InvalidPostgresChanges: {reason}"));
                    return;
                }
                Err(error) => {
                    tracing::warn!(error = %error, "postgres_changes catalog check failed");
                    self.reply_error(
                        &m,
                        "UnableToConnectToProject: Realtime was unable to connect to the project database",
                    );
                    return;
                }
            }
        };

        let key = self.hub.next_id();
        let topic: Arc<str> = m.topic.as_str().into();
        let join_ref: Option<Arc<str>> = m.join_ref.as_deref().map(Arc::from);
        let identity = Arc::new(Identity::new(&claims.role, &claims.raw));
        let mut channel_ref = ChannelRef::new(key, self.handle.clone(), topic.clone(), identity);
        if let Some(request) = resume {
            channel_ref = channel_ref.resumable(join_ref.clone(), request);
        }
        let channel_ref = Arc::new(channel_ref);
        // Identical bindings of one join share one subscription (and its id: realtime-js
        // runs every callback whose id a change carries), so repeating a binding costs the
        // fan-out nothing.
        let mut unique: HashMap<String, Arc<Subscription>> = HashMap::new();
        let per_binding: Vec<Arc<Subscription>> = resolved
            .iter()
            .map(|r| {
                let identity = format!(
                    "{:?}\u{0}{}\u{0}{:?}\u{0}{:?}",
                    r.spec.events, r.spec.schema, r.spec.table, r.spec.filter
                );
                unique
                    .entry(identity)
                    .or_insert_with(|| {
                        Arc::new(Subscription {
                            id: self.hub.registry.next_subscription_id(),
                            channel: channel_ref.clone(),
                            schema: r.spec.schema.clone(),
                            table: r.spec.table.clone(),
                            events: r.spec.events,
                            conditions: r.conditions.clone(),
                        })
                    })
                    .clone()
            })
            .collect();
        let mut subs: Vec<Arc<Subscription>> = unique.into_values().collect();
        subs.sort_by_key(|s| s.id);
        let echoed: Vec<Value> = resolved
            .iter()
            .zip(&per_binding)
            .map(|(r, s)| {
                let mut o = r.spec.raw.clone();
                o.insert("id".into(), json!(s.id));
                Value::Object(o)
            })
            .collect();
        self.reply(&m, "ok", json!({ "postgres_changes": echoed }));

        let topic_key = TopicKey {
            private: config.private,
            topic: m.topic.clone(),
        };
        let presence_key = if config.presence_key.is_empty() {
            // On a private channel the key is who you are; elsewhere, a fresh id.
            match (&claims.sub, config.private) {
                (Some(sub), true) => sub.clone(),
                _ => uuid::Uuid::new_v4().to_string(),
            }
        } else {
            config.presence_key.clone()
        };
        self.hub.topics.join(
            &topic_key,
            key,
            Member {
                socket: self.handle.clone(),
                join_ref: join_ref.clone(),
                topic: topic.clone(),
                broadcast_self: config.broadcast_self,
                presence_enabled: config.presence_enabled,
                read_broadcast: reads.broadcast,
                read_presence: reads.presence,
                presence_key,
            },
        );
        let channel = Channel {
            key,
            join_ref,
            topic,
            sub_topic,
            channel: channel_ref,
            claims: claims.clone(),
            token,
            private: config.private,
            ack: config.broadcast_ack,
            topic_key,
            write_access: None,
            bindings: per_binding.len(),
            filter_columns: {
                let mut cols: Vec<(String, String, String)> = resolved
                    .iter()
                    .flat_map(|r| {
                        r.conditions.iter().map(|c| {
                            (
                                r.spec.schema.clone(),
                                r.spec.table.clone().unwrap_or_default(),
                                c.column.clone(),
                            )
                        })
                    })
                    .collect();
                cols.sort();
                cols.dedup();
                cols
            },
        };
        if !subs.is_empty() {
            // Registered before we say so: a change processed after this message is
            // considered for these subscriptions.
            self.hub.registry.insert(subs.clone());
            let mut unjudgeable: Vec<String> = resolved
                .iter()
                .flat_map(|r| r.unjudgeable_delete_tables.iter().cloned())
                .collect();
            unjudgeable.sort();
            unjudgeable.dedup();
            let mut list: Vec<Value> = resolved
                .iter()
                .filter_map(|r| r.unreadable.clone().map(Value::String))
                .collect();
            list.dedup();
            list.extend(unjudgeable.iter().map(|t| {
                json!(format!(
                    "DELETE events on {t} are not delivered: its REPLICA IDENTITY is not FULL, so the deleted row cannot be authorized"
                ))
            }));
            let warnings = (!list.is_empty()).then(|| ("warnings", Value::Array(list)));
            self.system(
                &channel,
                "postgres_changes",
                "ok",
                "Subscribed to PostgreSQL",
                warnings,
            );
            if let Some(ResumeRequest::After(after)) = resume {
                // Until the pump serves this, live changes skip the channel; the replay
                // then sends what was missed, in order, and turns it live.
                self.hub.replays.request(ReplayRequest {
                    channel: channel.channel.clone(),
                    subs,
                    after,
                });
            }
        }
        self.note_user(&claims);
        tracing::debug!(socket = self.handle.id, channel = key, "channel joined");
        self.channels.insert(m.topic.clone(), channel);
    }

    /// Removes a channel everywhere; with `notify`, tells the client with `phx_close`.
    fn close_channel(&mut self, topic: &str, notify: bool) {
        let Some(ch) = self.channels.remove(topic) else {
            return;
        };
        self.hub.registry.remove_channel(ch.key);
        self.hub.topics.leave(&ch.topic_key, ch.key);
        if notify {
            self.queue(ServerMessage {
                join_ref: ch.join_ref.clone(),
                r#ref: None,
                topic: ch.topic.clone(),
                event: "phx_close",
                payload: "{}".into(),
            });
        }
    }

    /// Ends a channel with a `system` error, then `phx_close`, as Supabase does.
    fn shutdown_channel(&mut self, topic: &str, message: &str) {
        if let Some(ch) = self.channels.get(topic) {
            self.system(ch, "system", "error", message, None);
        }
        self.close_channel(topic, true);
    }

    async fn refresh_token(&mut self, m: Inbound) {
        let token = match m.payload.get("access_token") {
            None | Some(Value::Null) => {
                self.reply(&m, "ok", json!({}));
                return;
            }
            Some(Value::String(t)) => t.clone(),
            Some(_) => {
                self.reply_error(&m, "InvalidJoinPayload: `access_token` must be a string");
                return;
            }
        };
        let Some(ch) = self.channels.get(&m.topic) else {
            return;
        };
        if token.starts_with("sb_") || token == ch.token {
            self.reply(&m, "ok", json!({}));
            return;
        }
        let (private, sub_topic) = (ch.private, ch.sub_topic.clone());
        let claims = match self.ctx.jwt.verify(&token) {
            Ok(c) => c,
            Err(AuthError::Expired) => {
                self.shutdown_channel(&m.topic, "Token has expired");
                return;
            }
            Err(e) => {
                self.shutdown_channel(&m.topic, &reason_for(&e));
                return;
            }
        };
        if private {
            match private::read_access(&self.ctx.pool, &sub_topic, &claims).await {
                Ok(a) if a.any() => {}
                Ok(_) => {
                    self.shutdown_channel(
                        &m.topic,
                        &format!("You no longer have permission to read from this Channel topic: {sub_topic}"),
                    );
                    return;
                }
                Err(error) => {
                    tracing::warn!(error = %error, "private channel authorization failed");
                    self.shutdown_channel(
                        &m.topic,
                        "Realtime was unable to connect to the project database",
                    );
                    return;
                }
            }
        }
        if let Some(ch) = self.channels.get_mut(&m.topic) {
            ch.channel
                .set_identity(Arc::new(Identity::new(&claims.role, &claims.raw)));
            ch.claims = claims.clone();
            ch.token = token;
            ch.write_access = None;
        }
        self.note_user(&claims);
        self.reply(&m, "ok", json!({}));
    }

    /// Takes a token from this socket's bucket and the channel's; answers a sender over
    /// either rate with an error (only the sender hears it; nothing is relayed).
    fn within_rate(&mut self, m: &Inbound, what: Sent) -> bool {
        let now = Instant::now();
        let (socket_ok, per_channel) = match what {
            Sent::Broadcast => (
                self.broadcasts.take(now.into_std()),
                self.ctx.config.channel_broadcasts_per_second,
            ),
            Sent::Presence => (
                self.presence_updates.take(now.into_std()),
                self.ctx.config.channel_presence_per_second,
            ),
        };
        let channel_ok = socket_ok
            && self
                .channels
                .get(&m.topic)
                .is_some_and(|ch| self.hub.topics.allow(&ch.topic_key, what, per_channel));
        if channel_ok {
            return true;
        }
        let (kind, per_socket) = match what {
            Sent::Broadcast => ("broadcasts", self.ctx.config.broadcasts_per_second),
            Sent::Presence => ("presence updates", self.ctx.config.presence_per_second),
        };
        let reason = if socket_ok {
            format!("RateLimited: too many {kind} on this channel (at most {per_channel} per second from all its members)")
        } else {
            format!(
                "RateLimited: too many {kind} from this socket (at most {per_socket} per second)"
            )
        };
        self.reply_error(m, reason);
        false
    }

    /// The replication slot was lost: every joined channel is told, so the app refetches.
    fn changes_may_be_missed(&self) {
        for ch in self.channels.values() {
            self.system(
                ch,
                "postgres_changes",
                "error",
                "Changes may have been missed: Ripple's replication slot was lost and recreated, so changes committed in between were not delivered. Refetch what this channel shows.",
                Some(("code", json!("changes_missed"))),
            );
        }
    }

    /// Authorization may have changed (a grant, a policy, a membership): every private
    /// channel is asked again, every filter column checked for SELECT again; channels no
    /// longer allowed are closed with a `system` message. A check that cannot run closes
    /// the channel too: access is never assumed.
    /// Checks joined channels again: private channels' read access, and with `grants`, the
    /// SELECT privilege on every channel's filter columns.
    async fn recheck_access(&mut self, grants: bool) {
        let topics: Vec<String> = self.channels.keys().cloned().collect();
        for topic in topics {
            let Some(ch) = self.channels.get_mut(&topic) else {
                continue;
            };
            ch.write_access = None;
            let (private, sub_topic, claims, columns) = (
                ch.private,
                ch.sub_topic.clone(),
                ch.claims.clone(),
                ch.filter_columns.clone(),
            );
            if private {
                // On the pipeline's own connections: a revocation must not wait behind
                // REST requests (forty slow RPCs on the shared pool delayed it by seconds).
                match private::read_access(&self.ctx.authorize_pool, &sub_topic, &claims).await {
                    Ok(a) if a.any() => {}
                    Ok(_) => {
                        self.shutdown_channel(
                            &topic,
                            &format!("You no longer have permission to read from this Channel topic: {sub_topic}"),
                        );
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, "private channel re-check failed");
                        self.shutdown_channel(
                            &topic,
                            "Realtime was unable to check this channel's authorization again",
                        );
                        continue;
                    }
                }
            }
            if !grants {
                continue;
            }
            if let Some(denied) = self.unreadable_filter_column(&claims.role, &columns).await {
                self.shutdown_channel(&topic, &denied);
            }
        }
    }

    /// The first filter column the role may no longer SELECT, as the reason to close.
    async fn unreadable_filter_column(
        &self,
        role: &str,
        columns: &[(String, String, String)],
    ) -> Option<String> {
        if columns.is_empty() {
            return None;
        }
        // The pipeline's connections, as for the private channel re-check above.
        let client = match self.ctx.authorize_pool.get().await {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(error = %error, "filter column re-check failed");
                return Some("Realtime was unable to check this channel's filters again".into());
            }
        };
        for (schema, table, column) in columns {
            let allowed = client
                .query_one(
                    "select coalesce(has_column_privilege($1,
                               to_regclass(quote_ident($2) || '.' || quote_ident($3)), $4, 'SELECT'), false)",
                    &[&role, schema, table, column],
                )
                .await
                .map(|r| r.get::<_, bool>(0));
            match allowed {
                Ok(true) => {}
                Ok(false) => {
                    return Some(format!(
                        "You no longer have permission to filter on column {column} of {schema}.{table}"
                    ))
                }
                Err(error) => {
                    tracing::warn!(error = %error, "filter column re-check failed");
                    return Some(format!(
                        "You no longer have permission to filter on column {column} of {schema}.{table}"
                    ));
                }
            }
        }
        None
    }

    /// Private channels: may the user send? Asked of the database once per token.
    async fn write_access(&mut self, topic: &str) -> Option<TopicAccess> {
        let ch = self.channels.get(topic)?;
        if let Some(a) = ch.write_access {
            return Some(a);
        }
        let (sub_topic, claims) = (ch.sub_topic.clone(), ch.claims.clone());
        // Asked again after every re-check (which clears it): on the pipeline's
        // connections too, so a removed member's next broadcast is refused without
        // waiting for REST.
        match private::write_access(&self.ctx.authorize_pool, &sub_topic, &claims).await {
            Ok(a) => {
                if let Some(ch) = self.channels.get_mut(topic) {
                    ch.write_access = Some(a);
                }
                Some(a)
            }
            Err(error) => {
                tracing::warn!(error = %error, "private channel write check failed");
                None
            }
        }
    }

    async fn broadcast(&mut self, m: Inbound) {
        let Some(event) = m
            .payload
            .get("event")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            self.reply_error(&m, "InvalidBroadcast: `event` must be a string");
            return;
        };
        let Some(private) = self.channels.get(&m.topic).map(|c| c.private) else {
            return;
        };
        if private {
            let allowed = self.write_access(&m.topic).await.map(|a| a.broadcast);
            if allowed != Some(true) {
                let sub = m.topic.trim_start_matches("realtime:");
                self.reply_error(
                    &m,
                    format!("Unauthorized: You do not have permissions to write to this Channel topic: {sub}"),
                );
                return;
            }
        }
        if !self.within_rate(&m, Sent::Broadcast) {
            return;
        }
        let Some(ch) = self.channels.get(&m.topic) else {
            return;
        };
        let body = match &m.binary {
            Some(bytes) => BroadcastBody::Binary(bytes.clone()),
            None => BroadcastBody::Json(
                m.payload
                    .get("payload")
                    .cloned()
                    .unwrap_or_else(|| json!({}))
                    .to_string(),
            ),
        };
        let out = BroadcastOut {
            topic: ch.topic.clone(),
            event,
            body,
        };
        self.hub.topics.broadcast(&ch.topic_key, ch.key, &out);
        if ch.ack {
            self.reply(&m, "ok", json!({}));
        }
    }

    async fn presence(&mut self, m: Inbound) {
        let event = m.payload.get("event").and_then(Value::as_str).unwrap_or("");
        let Some(private) = self.channels.get(&m.topic).map(|c| c.private) else {
            return;
        };
        if !matches!(event, "track" | "untrack") {
            self.reply_error(&m, "InvalidPresence: `event` must be track or untrack");
            return;
        }
        if private {
            let allowed = self.write_access(&m.topic).await.map(|a| a.presence);
            if allowed != Some(true) {
                let sub = m.topic.trim_start_matches("realtime:");
                self.reply_error(
                    &m,
                    format!("Unauthorized: You do not have permissions to track presence on this Channel topic: {sub}"),
                );
                return;
            }
        }
        if !self.within_rate(&m, Sent::Presence) {
            return;
        }
        let Some(ch) = self.channels.get(&m.topic) else {
            return;
        };
        if event == "track" {
            let mut fields = match m.payload.get("payload") {
                None | Some(Value::Null) => serde_json::Map::new(),
                Some(Value::Object(o)) => o.clone(),
                Some(_) => {
                    self.reply_error(&m, "InvalidPresence: Presence track payload must be a map");
                    return;
                }
            };
            let size = Value::Object(fields.clone()).to_string().len();
            if size > self.ctx.config.max_presence_bytes {
                self.reply_error(
                    &m,
                    format!(
                        "InvalidPresence: the presence payload is {size} bytes, more than the limit of {}",
                        self.ctx.config.max_presence_bytes
                    ),
                );
                return;
            }
            // The verified user, set by the server whatever the client sent under this
            // name, so apps can trust who a presence entry belongs to.
            fields.insert(
                VERIFIED_SUB.into(),
                ch.claims.sub.clone().map_or(Value::Null, Value::String),
            );
            self.hub.topics.track(&ch.topic_key, ch.key, fields);
        } else {
            self.hub.topics.untrack(&ch.topic_key, ch.key);
        }
        self.reply(&m, "ok", json!({}));
    }

    fn note_user(&mut self, claims: &Claims) {
        let Some(sub) = claims.sub.clone() else {
            return;
        };
        match &mut self.user {
            None => {
                self.hub.user_connected(&sub);
                self.user = Some((sub, claims.clone()));
            }
            Some((current, latest)) if *current == sub => *latest = claims.clone(),
            // One socket counts for one user: its first.
            Some(_) => {}
        }
    }

    /// When the earliest channel token expires.
    fn next_expiry(&self) -> Option<Instant> {
        let exp = self.channels.values().map(|c| c.claims.exp).min()?;
        let wait_ms = (exp.saturating_mul(1000) - now_millis()).max(0) as u64;
        Some(Instant::now() + Duration::from_millis(wait_ms))
    }

    fn expire_channels(&mut self) {
        let now = crate::auth::now_epoch();
        let expired: Vec<(String, i64)> = self
            .channels
            .iter()
            .filter(|(_, c)| c.claims.is_expired_at(now))
            .map(|(t, c)| (t.clone(), now - c.claims.exp))
            .collect();
        for (topic, ago) in expired {
            self.shutdown_channel(&topic, &format!("Token has expired {ago} seconds ago"));
        }
    }

    async fn finish(mut self, ws: &mut Ws, end: End) {
        let id = self.handle.id;
        match end {
            End::Overflow => {
                let dropped = self
                    .handle
                    .overflow
                    .dropped
                    .load(std::sync::atomic::Ordering::Relaxed);
                tracing::info!(socket = id, dropped, "client too slow: disconnecting");
                let message = format!(
                    "Client is too slow: {dropped} message(s) could not be queued after {} waiting; disconnecting",
                    self.ctx.config.client_queue
                );
                let goodbye = async {
                    let mut targets: Vec<(Option<Arc<str>>, Arc<str>, String)> = self
                        .channels
                        .values()
                        .map(|c| (c.join_ref.clone(), c.topic.clone(), c.sub_topic.clone()))
                        .collect();
                    if targets.is_empty() {
                        targets.push((None, "phoenix".into(), String::new()));
                    }
                    for (join_ref, topic, sub_topic) in targets {
                        let m = ServerMessage {
                            join_ref,
                            r#ref: None,
                            topic,
                            event: "system",
                            payload: json!({"extension": "system", "status": "error",
                                            "message": message, "channel": sub_topic})
                            .to_string(),
                        };
                        ws.feed(WsMessage::Text(protocol::encode_text(self.vsn, &m)))
                            .await?;
                    }
                    ws.close(Some(CloseFrame {
                        code: CloseCode::Again,
                        reason: "client too slow".into(),
                    }))
                    .await
                };
                let _ = tokio::time::timeout(OVERFLOW_NOTICE_TIMEOUT, goodbye).await;
            }
            End::Shutdown => {
                tracing::debug!(socket = id, "closing for shutdown");
                let _ = tokio::time::timeout(
                    CLOSE_TIMEOUT,
                    ws.close(Some(CloseFrame {
                        code: CloseCode::Away,
                        reason: "server shutting down".into(),
                    })),
                )
                .await;
            }
            End::Idle => {
                tracing::debug!(socket = id, "closing a silent socket");
                let _ = tokio::time::timeout(
                    CLOSE_TIMEOUT,
                    ws.close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "heartbeat timeout".into(),
                    })),
                )
                .await;
            }
            End::Error(WsError::Capacity(e)) => {
                tracing::debug!(socket = id, error = %e, "frame too large");
                let _ = tokio::time::timeout(
                    CLOSE_TIMEOUT,
                    ws.close(Some(CloseFrame {
                        code: CloseCode::Size,
                        reason: "message too big".into(),
                    })),
                )
                .await;
            }
            End::Error(e) => tracing::debug!(socket = id, error = %e, "socket error"),
            // Completes the closing handshake (tungstenite queued our Close reply).
            End::ClientClosed => {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.flush()).await;
            }
        }
        let topics: Vec<String> = self.channels.keys().cloned().collect();
        for t in topics {
            self.close_channel(&t, false);
        }
        if let Some((sub, claims)) = self.user.take() {
            let last = self.hub.user_disconnected(&sub);
            if let Some(hook) =
                LastSeenHook::from_setting(&self.ctx.config.last_seen_function).filter(|_| last)
            {
                let pool = self.ctx.pool.clone();
                tokio::spawn(async move {
                    if let Err(error) = hook.call(&pool, &claims).await {
                        tracing::warn!(error = %error, "the last-seen function failed");
                    }
                });
            }
        }
        tracing::debug!(socket = id, "socket closed");
    }
}
