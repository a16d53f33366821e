//! The socket's Realtime extensions beside `postgres_changes`: broadcast and presence, with
//! their rate limits and, on private channels, the write permission the policies give.

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::realtime::private::{self, TopicAccess};
use crate::realtime::protocol::{BroadcastBody, BroadcastOut, Inbound};
use crate::realtime::topics::Sent;

use super::{Session, VERIFIED_SUB};

impl Session {
    /// Takes a token from this socket's bucket and the channel's; answers a sender over
    /// either rate with an error (only the sender hears it; nothing is relayed).
    pub(super) fn within_rate(&mut self, m: &Inbound, what: Sent) -> bool {
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

    /// Private channels: may the user send? Asked of the database once per token.
    pub(super) async fn write_access(&mut self, topic: &str) -> Option<TopicAccess> {
        let ch = self.channels.get(topic)?;
        if let Some(a) = ch.write_access {
            return Some(a);
        }
        let (sub_topic, who) = (ch.sub_topic.clone(), ch.channel.identity());
        // Asked again after every re-check (which clears it): on the pipeline's
        // connections too, so a removed member's next broadcast is refused without
        // waiting for REST.
        match private::write_access(&self.ctx.authorize_pool, &sub_topic, &who).await {
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

    pub(super) async fn broadcast(&mut self, m: Inbound) {
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

    pub(super) async fn presence(&mut self, m: Inbound) {
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
                ch.sub.clone().map_or(Value::Null, Value::String),
            );
            self.hub.topics.track(&ch.topic_key, ch.key, fields);
        } else {
            self.hub.topics.untrack(&ch.topic_key, ch.key);
        }
        self.reply(&m, "ok", json!({}));
    }
}
