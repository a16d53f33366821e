//! One task per WebSocket: it reads the client's frames and writes the socket's bounded
//! queue, in one select loop, and owns the socket's channels. Producers elsewhere (the
//! fan-out, other sockets' broadcasts and presence) only ever `try_send` to the queue.
//!
//! Here: the loop, the replies and the goodbye. `channels`: a channel's life (join, token
//! refresh, expiry, access re-checks, close). `extensions`: broadcast and presence.

mod channels;
mod extensions;

use crate::realtime::last_seen::LastSeenHook;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;

use crate::auth::AuthError;
use crate::authorize::Identity;
use crate::realtime::private::TopicAccess;
use crate::realtime::protocol::{self, Frame, Inbound, ServerMessage, Vsn};
use crate::realtime::registry::ChannelRef;
use crate::realtime::socket_handle::{Outbound, Outbox, SocketHandle};
use crate::realtime::topics::TopicKey;
use crate::realtime::{Realtime, SocketContext};

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
    /// Also holds who the channel runs as (`channel.identity()`: role and claims JSON, the
    /// same `Arc` as `Session::user`'s). The parsed claims are not kept: two fields of
    /// them are, below.
    channel: Arc<ChannelRef>,
    /// The token's `exp` (seconds since the epoch) and `sub`.
    exp: i64,
    sub: Option<String>,
    /// SHA-256 of the token the channel runs under: a refresh with the same token is a
    /// no-op (only the digest is kept, not the token's few hundred bytes).
    token_digest: TokenDigest,
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

/// A token's SHA-256.
type TokenDigest = [u8; 32];

fn token_digest(token: &str) -> TokenDigest {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
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
    /// Boxed: a `HashMap` allocates room for several entries at its first insert, and a
    /// `Channel` inline would make that room several times an idle socket's one channel.
    channels: HashMap<String, Box<Channel>>,
    /// The user (`sub`) this socket counts for, with their latest claims.
    user: Option<(String, Arc<Identity>)>,
    /// What this socket may send per second.
    broadcasts: super::rate::Bucket,
    presence_updates: super::rate::Bucket,
}

/// The socket's task: everything it needs is set up here, outside the future, which then
/// holds each piece once. (An `async fn` keeps its arguments in the future beside the
/// locals it moves them to, so a socket would pay for its WebSocket twice for its life.)
pub(super) fn run(
    mut ws: Ws,
    ctx: Arc<SocketContext>,
    accepted: super::Accepted,
) -> impl std::future::Future<Output = ()> + Send {
    let super::Accepted {
        vsn,
        apikey_token,
        holds,
        mut stop,
    } = accepted;
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
    // Everything above is captured by the task's future, never rebound inside it (a
    // `let` there would give each its own room beside the captured one).
    async move {
        // Held until the socket closes (a place among the open sockets, a connection permit).
        let _holds = &holds;
        let end = loop {
            if s.handle.is_overflowed() {
                break End::Overflow;
            }
            // Frames read, in their order: one just read, or those that arrived while the
            // database was being asked.
            if let Some(frame) = io.inbox.pop_front() {
                // The frame moves into the boxed handler before anything is awaited, so the
                // loop's own state never holds one.
                let outcome = match frame {
                    Ok(m) => {
                        let handler = Box::pin(io.meanwhile(s.dispatch(m), &mut ws, &mut rx));
                        handler.await
                    }
                    Err(e) => {
                        s.malformed(e);
                        Ok(())
                    }
                };
                io.release_inbox();
                match outcome {
                    Ok(()) => continue,
                    Err(end) => break end,
                }
            }
            // One timer for both deadlines (each timer is part of every idle socket's state):
            // the client's silence and the earliest channel token's expiry.
            let silent_at = io.last_heard + idle;
            let expiry = s.next_expiry();
            let deadline = expiry.map_or(silent_at, |e| e.min(silent_at));
            // Arms that ask the database run through `io.meanwhile`, which keeps writing the
            // queue and answering heartbeats while they wait (for a pooled connection, say).
            // What an arm awaits is boxed: a join's state machine is large, and even a write
            // batch's is several times the loop's own state; held inline, each would be
            // allocated for every idle socket for its whole life (the task's size is the
            // largest state it can be in).
            let outcome = tokio::select! {
                _ = s.handle.queue.overflowed.notified() => break End::Overflow,
                first = rx.recv() => {
                    Box::pin(write_batch(&mut ws, vsn, &s.handle, first, &mut rx)).await
                }
                frame = ws.next() => {
                    io.last_heard = Instant::now();
                    match frame {
                        None | Some(Ok(WsMessage::Close(_))) => break End::ClientClosed,
                        Some(Err(e)) => break End::Error(e),
                        Some(Ok(frame)) => {
                            // Handled at the top of the loop, like frames held while a handler
                            // waited. (tungstenite answers pings itself: decode skips them.)
                            io.inbox.extend(decode(vsn, frame));
                            Ok(())
                        }
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    if Instant::now() >= silent_at {
                        break End::Idle;
                    }
                    s.expire_channels();
                    Ok(())
                }
                () = shutdown_requested(&mut stop) => break End::Shutdown,
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
                        Box::pin(io.meanwhile(s.recheck_access(grants), &mut ws, &mut rx)).await
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
    /// Frees the inbox's buffer once it is empty: it grows for a burst of frames and an
    /// idle socket would otherwise keep that room (a few hundred bytes an entry) for good.
    fn release_inbox(&mut self) {
        if self.inbox.is_empty() {
            self.inbox = std::collections::VecDeque::new();
        }
    }

    /// Runs `handler` (a dispatch that may wait for the database) to completion while still
    /// writing the socket's queue and answering heartbeats; other frames wait in the inbox.
    /// The handler always finishes (it is never dropped halfway through a join): an end of
    /// the socket seen meanwhile is returned after it.
    async fn meanwhile(
        &mut self,
        handler: impl std::future::Future<Output = ()>,
        ws: &mut Ws,
        rx: &mut Outbox,
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
                _ = self.handle.queue.overflowed.notified() => ended = Some(End::Overflow),
                first = rx.recv() => {
                    if let Err(end) =
                        Box::pin(write_batch(ws, self.vsn, &self.handle, first, rx)).await
                    {
                        ended = Some(end);
                    }
                }
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

fn encode(vsn: Vsn, m: &Outbound) -> Option<WsMessage> {
    match m {
        Outbound::Message(m) => Some(WsMessage::Text(protocol::encode_text(vsn, m).into())),
        Outbound::Broadcast(b) => match protocol::encode_broadcast(vsn, b)? {
            Frame::Text(t) => Some(WsMessage::Text(t.into())),
            Frame::Binary(b) => Some(WsMessage::Binary(b.into())),
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
    rx: &mut Outbox,
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
            next = if n < WRITE_BATCH { rx.try_recv() } else { None };
        }
        ws.flush().await
    };
    tokio::select! {
        r = write => r.map_err(End::Error),
        _ = handle.queue.overflowed.notified() => Err(End::Overflow),
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

    async fn finish(mut self, ws: &mut Ws, end: End) {
        let id = self.handle.id;
        match end {
            End::Overflow => {
                let dropped = self
                    .handle
                    .queue
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
                        ws.feed(WsMessage::Text(protocol::encode_text(self.vsn, &m).into()))
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
        if let Some((sub, who)) = self.user.take() {
            let last = self.hub.user_disconnected(&sub);
            if let Some(hook) =
                LastSeenHook::from_setting(&self.ctx.config.last_seen_function).filter(|_| last)
            {
                let pool = self.ctx.pool.clone();
                tokio::spawn(async move {
                    if let Err(error) = hook.call(&pool, &who).await {
                        tracing::warn!(error = %error, "the last-seen function failed");
                    }
                });
            }
        }
        tracing::debug!(socket = id, "socket closed");
    }
}
