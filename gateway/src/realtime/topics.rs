//! Broadcast and presence: an in-memory hub of the channels joined on each topic, shared by
//! every socket. Nothing here touches the database (a keystroke is not a write).
//!
//! Public and private channels of the same name are different topics: a public joiner of
//! `conversation:X` must never see what the members' private channel carries.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};

use super::protocol::{BroadcastOut, ServerMessage};
use super::socket_handle::{Outbound, SocketHandle};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicKey {
    pub private: bool,
    /// `realtime:<name>`.
    pub topic: String,
}

/// A channel joined on a topic.
#[derive(Debug, Clone)]
pub struct Member {
    pub socket: SocketHandle,
    pub join_ref: Option<Arc<str>>,
    pub topic: Arc<str>,
    pub broadcast_self: bool,
    pub presence_enabled: bool,
    /// May this channel receive broadcasts / presence? Always on a public channel; on a
    /// private one, what the `realtime.messages` SELECT policies allowed at join.
    pub read_broadcast: bool,
    pub read_presence: bool,
    /// `config.presence.key`, or a generated one.
    pub presence_key: String,
}

#[derive(Debug, Clone)]
struct Meta {
    channel: u64,
    phx_ref: String,
    fields: Map<String, Value>,
}

impl Meta {
    fn to_json(&self, prev: Option<&str>) -> Value {
        let mut m = self.fields.clone();
        m.insert("phx_ref".into(), Value::String(self.phx_ref.clone()));
        if let Some(p) = prev {
            m.insert("phx_ref_prev".into(), Value::String(p.to_string()));
        }
        Value::Object(m)
    }
}

#[derive(Default)]
struct Topic {
    /// What all members together may send per second, created on first use.
    broadcasts: Option<super::rate::Bucket>,
    presence_updates: Option<super::rate::Bucket>,
    members: HashMap<u64, Member>,
    /// presence key -> the metas tracked under it (one per tracking channel).
    presence: BTreeMap<String, Vec<Meta>>,
}

#[derive(Default)]
pub struct Topics {
    inner: Mutex<HashMap<TopicKey, Topic>>,
    next_ref: AtomicU64,
}

fn message(member: &Member, event: &'static str, payload: String) -> Outbound {
    Outbound::Message(Arc::new(ServerMessage {
        join_ref: member.join_ref.clone(),
        r#ref: None,
        topic: member.topic.clone(),
        event,
        payload,
    }))
}

fn group(entries: &[(String, Value)]) -> Value {
    let mut out = Map::new();
    for (key, meta) in entries {
        let slot = out
            .entry(key.clone())
            .or_insert_with(|| json!({"metas": []}));
        if let Some(Value::Array(a)) = slot.get_mut("metas") {
            a.push(meta.clone());
        }
    }
    Value::Object(out)
}

impl Topic {
    fn state_json(&self) -> String {
        let mut out = Map::new();
        for (key, metas) in &self.presence {
            let metas: Vec<Value> = metas.iter().map(|m| m.to_json(None)).collect();
            out.insert(key.clone(), json!({ "metas": metas }));
        }
        Value::Object(out).to_string()
    }

    /// Sends a diff to every presence-enabled member (the tracker included, as Phoenix does).
    fn send_diff(&self, joins: &[(String, Value)], leaves: &[(String, Value)]) {
        if joins.is_empty() && leaves.is_empty() {
            return;
        }
        let payload = json!({"joins": group(joins), "leaves": group(leaves)}).to_string();
        for m in self
            .members
            .values()
            .filter(|m| m.presence_enabled && m.read_presence)
        {
            m.socket.push(message(m, "presence_diff", payload.clone()));
        }
    }

    /// Removes a channel's metas; returns them as diff leaves.
    fn take_metas(&mut self, channel: u64) -> Vec<(String, Value)> {
        let mut leaves = Vec::new();
        self.presence.retain(|key, metas| {
            metas.retain(|m| {
                if m.channel == channel {
                    leaves.push((key.clone(), m.to_json(None)));
                    false
                } else {
                    true
                }
            });
            !metas.is_empty()
        });
        leaves
    }
}

/// What a channel-wide rate limit counts.
#[derive(Debug, Clone, Copy)]
pub enum Sent {
    Broadcast,
    Presence,
}

impl Topics {
    /// Takes a token from the topic's bucket for `what` (`per_second` for all its senders
    /// together); false when the topic is over its rate.
    pub fn allow(&self, key: &TopicKey, what: Sent, per_second: u32) -> bool {
        let mut topics = self.lock();
        let Some(topic) = topics.get_mut(key) else {
            return true;
        };
        let bucket = match what {
            Sent::Broadcast => &mut topic.broadcasts,
            Sent::Presence => &mut topic.presence_updates,
        };
        bucket
            .get_or_insert_with(|| super::rate::Bucket::new(per_second))
            .take(std::time::Instant::now())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TopicKey, Topic>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a joined channel. With presence enabled its `presence_state` is queued here,
    /// under the lock, so no diff can overtake it.
    pub fn join(&self, key: &TopicKey, channel: u64, member: Member) {
        let mut topics = self.lock();
        let topic = topics.entry(key.clone()).or_default();
        if member.presence_enabled && member.read_presence {
            member
                .socket
                .push(message(&member, "presence_state", topic.state_json()));
        }
        topic.members.insert(channel, member);
    }

    /// Removes a channel (left, closed, socket gone); its presence leaves the others.
    pub fn leave(&self, key: &TopicKey, channel: u64) {
        let mut topics = self.lock();
        let Some(topic) = topics.get_mut(key) else {
            return;
        };
        topic.members.remove(&channel);
        let leaves = topic.take_metas(channel);
        topic.send_diff(&[], &leaves);
        if topic.members.is_empty() {
            topics.remove(key);
        }
    }

    /// Delivers a broadcast to the topic's channels (the sender's own only with `self`).
    /// Returns how many channels it was queued for.
    pub fn broadcast(&self, key: &TopicKey, from: u64, msg: &BroadcastOut) -> usize {
        let topics = self.lock();
        let Some(topic) = topics.get(key) else {
            return 0;
        };
        let mut n = 0;
        for (channel, m) in &topic.members {
            if (*channel == from && !m.broadcast_self) || !m.read_broadcast {
                continue;
            }
            let out = BroadcastOut {
                topic: m.topic.clone(),
                ..msg.clone()
            };
            if m.socket.push(Outbound::Broadcast(Arc::new(out)))
                == super::socket_handle::Push::Queued
            {
                n += 1;
            }
        }
        n
    }

    /// Tracks (or re-tracks) a channel's presence under its key. A channel that had not
    /// enabled presence does so now and first receives the current state.
    pub fn track(&self, key: &TopicKey, channel: u64, fields: Map<String, Value>) {
        let phx_ref = format!("F{}", self.next_ref.fetch_add(1, Ordering::Relaxed));
        let mut topics = self.lock();
        let Some(topic) = topics.get_mut(key) else {
            return;
        };
        let Some(member) = topic.members.get_mut(&channel) else {
            return;
        };
        if !member.presence_enabled {
            member.presence_enabled = true;
            let m = member.clone();
            if m.read_presence {
                m.socket
                    .push(message(&m, "presence_state", topic.state_json()));
            }
        }
        let pkey = topic.members[&channel].presence_key.clone();
        let leaves = topic.take_metas(channel);
        let prev = leaves
            .first()
            .and_then(|(_, v)| v.get("phx_ref"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let meta = Meta {
            channel,
            phx_ref,
            fields,
        };
        let joins = vec![(pkey.clone(), meta.to_json(prev.as_deref()))];
        topic.presence.entry(pkey).or_default().push(meta);
        topic.send_diff(&joins, &leaves);
    }

    pub fn untrack(&self, key: &TopicKey, channel: u64) {
        let mut topics = self.lock();
        if let Some(topic) = topics.get_mut(key) {
            let leaves = topic.take_metas(channel);
            topic.send_diff(&[], &leaves);
        }
    }

    /// Channels joined on a topic (tests, metrics).
    pub fn member_count(&self, key: &TopicKey) -> usize {
        self.lock().get(key).map_or(0, |t| t.members.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realtime::protocol::BroadcastBody;
    use crate::realtime::socket_handle::Outbox;

    fn member(id: u64, key: &str, presence: bool, me: bool) -> (Member, Outbox) {
        let (socket, rx) = SocketHandle::new(id, 16, usize::MAX);
        (
            Member {
                socket,
                join_ref: Some("1".into()),
                topic: "realtime:room".into(),
                broadcast_self: me,
                presence_enabled: presence,
                read_broadcast: true,
                read_presence: true,
                presence_key: key.into(),
            },
            rx,
        )
    }

    fn next(rx: &mut Outbox) -> (String, Value) {
        match rx.try_recv().expect("a queued message") {
            Outbound::Message(m) => (
                m.event.to_string(),
                serde_json::from_str(&m.payload).unwrap(),
            ),
            Outbound::Broadcast(b) => ("broadcast".into(), json!({"event": b.event})),
        }
    }

    fn key(private: bool) -> TopicKey {
        TopicKey {
            private,
            topic: "realtime:room".into(),
        }
    }

    #[test]
    fn broadcast_reaches_others_and_the_sender_only_with_self() {
        let t = Topics::default();
        let (a, mut ra) = member(1, "a", false, false);
        let (b, mut rb) = member(2, "b", false, true);
        t.join(&key(false), 1, a);
        t.join(&key(false), 2, b);
        let msg = BroadcastOut {
            topic: "realtime:room".into(),
            event: "typing".into(),
            body: BroadcastBody::Json("{}".into()),
        };
        assert_eq!(t.broadcast(&key(false), 1, &msg), 1);
        assert!(
            ra.try_recv().is_none(),
            "no self without config.broadcast.self"
        );
        assert_eq!(next(&mut rb).0, "broadcast");
        assert_eq!(t.broadcast(&key(false), 2, &msg), 2);
        assert_eq!(next(&mut ra).0, "broadcast");
        assert_eq!(next(&mut rb).0, "broadcast");
        assert_eq!(
            t.broadcast(&key(true), 2, &msg),
            0,
            "the private topic is another topic"
        );
        // A member the policies let read presence but not broadcasts gets no broadcasts.
        let (mut c, mut rc) = member(3, "c", false, false);
        c.read_broadcast = false;
        t.join(&key(false), 3, c);
        assert_eq!(t.broadcast(&key(false), 1, &msg), 1);
        assert!(rc.try_recv().is_none());
    }

    #[test]
    fn presence_state_on_join_diffs_on_track_retrack_and_leave() {
        let t = Topics::default();
        let (a, mut ra) = member(1, "alice", true, false);
        t.join(&key(false), 1, a);
        assert_eq!(next(&mut ra), ("presence_state".into(), json!({})));
        let mut fields = Map::new();
        fields.insert("status".into(), json!("online"));
        t.track(&key(false), 1, fields.clone());
        let (ev, diff) = next(&mut ra);
        assert_eq!(ev, "presence_diff");
        assert_eq!(diff["joins"]["alice"]["metas"][0]["status"], "online");
        let (b, mut rb) = member(2, "bob", true, false);
        t.join(&key(false), 2, b);
        let (_, state) = next(&mut rb);
        assert_eq!(state["alice"]["metas"][0]["status"], "online");
        let first_ref = state["alice"]["metas"][0]["phx_ref"].clone();
        fields.insert("status".into(), json!("away"));
        t.track(&key(false), 1, fields);
        let (_, diff) = next(&mut rb);
        assert_eq!(diff["leaves"]["alice"]["metas"][0]["status"], "online");
        assert_eq!(diff["joins"]["alice"]["metas"][0]["status"], "away");
        assert_eq!(
            diff["joins"]["alice"]["metas"][0]["phx_ref_prev"],
            first_ref
        );
        next(&mut ra);
        t.leave(&key(false), 1);
        let (_, diff) = next(&mut rb);
        assert_eq!(diff["leaves"]["alice"]["metas"][0]["status"], "away");
        assert_eq!(diff["joins"], json!({}));
        assert_eq!(t.member_count(&key(false)), 1);
        t.leave(&key(false), 2);
        assert_eq!(t.member_count(&key(false)), 0);
    }

    #[test]
    fn tracking_enables_presence_for_a_channel_that_had_it_off() {
        let t = Topics::default();
        let (a, mut ra) = member(1, "alice", false, false);
        t.join(&key(false), 1, a);
        assert!(ra.try_recv().is_none());
        t.track(&key(false), 1, Map::new());
        assert_eq!(next(&mut ra).0, "presence_state");
        assert_eq!(next(&mut ra).0, "presence_diff");
    }
}
