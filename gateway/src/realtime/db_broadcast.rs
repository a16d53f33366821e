//! Broadcast from the database: rows that `realtime.send` / `realtime.broadcast_changes`
//! insert into `realtime.messages` (see `sql/60_realtime_broadcast.sql`) arrive through the
//! replication stream like any change, and are delivered here as broadcast messages to the
//! channels joined on their topic, as Supabase Realtime does.
//!
//! Who receives is decided the way a broadcast between clients is: a `private` message
//! goes only to the private channels of the topic whose members the `realtime.messages`
//! SELECT policies allowed to read broadcasts when they joined (`private.rs`); a public
//! one to the public channels of the topic. Nothing here asks the database.

use std::sync::Arc;

use serde_json::Value;

use super::protocol::{BroadcastBody, BroadcastOut};
use super::topics::TopicKey;
use super::Realtime;
use crate::change::{ChangeKind, Transaction};

/// No channel has this id, so no joined channel is taken for the sender and skipped.
const FROM_THE_DATABASE: u64 = u64::MAX;

/// Delivers one broadcast to the channels joined on `sub_topic` (the topic without
/// `realtime:`). Returns how many channels it was queued for.
pub fn broadcast(
    realtime: &Realtime,
    sub_topic: &str,
    event: &str,
    payload: &Value,
    private: bool,
) -> usize {
    let key = TopicKey {
        private,
        topic: format!("realtime:{sub_topic}"),
    };
    let out = BroadcastOut {
        topic: Arc::from(key.topic.as_str()),
        event: event.to_string(),
        body: BroadcastBody::Json(payload.to_string()),
    };
    realtime.topics.broadcast(&key, FROM_THE_DATABASE, &out)
}

/// Called by the pump with each committed transaction, after its row changes were fanned
/// out: every broadcast row it inserted into `realtime.messages` is delivered, in commit
/// order. Returns how many channel deliveries were queued.
pub fn deliver(realtime: &Realtime, tx: &Transaction) -> usize {
    let mut queued = 0;
    for change in &tx.changes {
        let rel = &change.relation;
        if change.kind != ChangeKind::Insert || rel.schema != "realtime" || rel.name != "messages" {
            continue;
        }
        let Some(row) = &change.record else {
            continue;
        };
        if row.get("extension").and_then(Value::as_str) != Some("broadcast") {
            continue;
        }
        let (Some(topic), Some(event)) = (
            row.get("topic").and_then(Value::as_str),
            row.get("event").and_then(Value::as_str),
        ) else {
            continue;
        };
        let private = row.get("private").and_then(Value::as_bool).unwrap_or(true);
        let payload = match row.get("payload") {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(p) => p.clone(),
        };
        queued += broadcast(realtime, topic, event, &payload, private);
    }
    queued
}
