//! A socket's channels through their life: joining (the token, the private-channel check,
//! the catalog check of its bindings), refreshing the token, expiry, re-checks when access
//! may have changed, and closing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::auth::AuthError;
use crate::authorize::Identity;
use crate::realtime::join::{self, JoinConfig, ResolveError};
use crate::realtime::private::{self, TopicAccess};
use crate::realtime::protocol::{Inbound, ServerMessage};
use crate::realtime::registry::{ChannelRef, Subscription};
use crate::realtime::resume::{ReplayRequest, ResumeRequest};
use crate::realtime::topics::{Member, TopicKey};

use super::{now_millis, reason_for, token_digest, Channel, Session};

impl Session {
    pub(super) async fn join(&mut self, m: Inbound) {
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
        let identity = Arc::new(Identity::new(&claims.role, &claims.raw));
        let mut reads = TopicAccess {
            broadcast: true,
            presence: true,
        };
        if config.private {
            match private::read_access(&self.ctx.pool, &sub_topic, &identity).await {
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
        let mut channel_ref =
            ChannelRef::new(key, self.handle.clone(), topic.clone(), identity.clone());
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
            exp: claims.exp,
            sub: claims.sub.clone(),
            token_digest: token_digest(&token),
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
        self.note_user(claims.sub, &identity);
        tracing::debug!(socket = self.handle.id, channel = key, "channel joined");
        if channel.private {
            self.hub.private_channel(true);
        }
        self.channels.insert(m.topic.clone(), Box::new(channel));
    }

    /// Removes a channel everywhere; with `notify`, tells the client with `phx_close`.
    pub(super) fn close_channel(&mut self, topic: &str, notify: bool) {
        let Some(ch) = self.channels.remove(topic) else {
            return;
        };
        if ch.private {
            self.hub.private_channel(false);
        }
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
    pub(super) fn shutdown_channel(&mut self, topic: &str, message: &str) {
        if let Some(ch) = self.channels.get(topic) {
            self.system(ch, "system", "error", message, None);
        }
        self.close_channel(topic, true);
    }

    pub(super) async fn refresh_token(&mut self, m: Inbound) {
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
        let digest = token_digest(&token);
        if token.starts_with("sb_") || digest == ch.token_digest {
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
        let identity = Arc::new(Identity::new(&claims.role, &claims.raw));
        if private {
            match private::read_access(&self.ctx.pool, &sub_topic, &identity).await {
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
            ch.channel.set_identity(identity.clone());
            ch.exp = claims.exp;
            ch.sub = claims.sub.clone();
            ch.token_digest = digest;
            ch.write_access = None;
        }
        self.note_user(claims.sub, &identity);
        self.reply(&m, "ok", json!({}));
    }

    /// The replication slot was lost: every joined channel is told, so the app refetches.
    pub(super) fn changes_may_be_missed(&self) {
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
    /// channel is asked again, and with `grants`, every filter column is checked for SELECT
    /// again; channels no longer allowed are closed with a `system` message. A check that
    /// cannot run closes the channel too: access is never assumed.
    pub(super) async fn recheck_access(&mut self, grants: bool) {
        let topics: Vec<String> = self.channels.keys().cloned().collect();
        for topic in topics {
            let Some(ch) = self.channels.get_mut(&topic) else {
                continue;
            };
            ch.write_access = None;
            let (private, sub_topic, identity, columns) = (
                ch.private,
                ch.sub_topic.clone(),
                ch.channel.identity(),
                ch.filter_columns.clone(),
            );
            if private {
                // On the pipeline's own connections: a revocation must not wait behind
                // REST requests (forty slow RPCs on the shared pool delayed it by seconds).
                match private::read_access(&self.ctx.authorize_pool, &sub_topic, &identity).await {
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
            if let Some(denied) = self
                .unreadable_filter_column(identity.role(), &columns)
                .await
            {
                self.shutdown_channel(&topic, &denied);
            }
        }
    }

    /// The first filter column the role may no longer SELECT, as the reason to close.
    pub(super) async fn unreadable_filter_column(
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

    pub(super) fn note_user(&mut self, sub: Option<String>, who: &Arc<Identity>) {
        let Some(sub) = sub else {
            return;
        };
        match &mut self.user {
            None => {
                self.hub.user_connected(&sub);
                self.user = Some((sub, who.clone()));
            }
            Some((current, latest)) if *current == sub => *latest = who.clone(),
            // One socket counts for one user: its first.
            Some(_) => {}
        }
    }

    /// When the earliest channel token expires.
    pub(super) fn next_expiry(&self) -> Option<Instant> {
        let exp = self.channels.values().map(|c| c.exp).min()?;
        let wait_ms = (exp.saturating_mul(1000) - now_millis()).max(0) as u64;
        Some(Instant::now() + Duration::from_millis(wait_ms))
    }

    pub(super) fn expire_channels(&mut self) {
        let now = crate::auth::now_epoch();
        let expired: Vec<(String, i64)> = self
            .channels
            .iter()
            .filter(|(_, c)| crate::auth::expired(c.exp, now))
            .map(|(t, c)| (t.clone(), now - c.exp))
            .collect();
        for (topic, ago) in expired {
            self.shutdown_channel(&topic, &format!("Token has expired {ago} seconds ago"));
        }
    }
}
