//! From a committed transaction to the channels allowed to see it.
//!
//! 1. The registry names the candidate subscriptions of each change (table, event, filters).
//! 2. Candidates are grouped by their distinct identities, so each (change, identity) pair is
//!    asked about once, and the whole transaction goes to the [`Authorizer`] in one call
//!    (one database round trip for an authorizer that batches).
//! 3. Each visible change is shaped as Supabase sends it, without the columns the role may
//!    not select, and queued to its channels in commit order.
//!
//! A DELETE is only ever judged on its old row; a table whose deletes do not carry the full
//! old row (REPLICA IDENTITY not FULL) cannot have them judged, so they reach no one.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::protocol::ServerMessage;
use super::registry::{ChannelRef, Subscription};
use super::resume::{Position, ReplayRequest, TooOld, Window};
use super::socket_handle::{Outbound, Push};
use super::Realtime;
use crate::authorize::{AuthorizeError, Authorizer, Check, ColumnAccess, Identity, Verdict};
use crate::change::{ChangeKind, ReplicaIdentity, Row, RowChange, Transaction};

/// What one `deliver` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// (change, channel) pairs that matched by table, event and filter.
    pub candidates: usize,
    /// (change, identity) pairs asked of the authorizer.
    pub checks: usize,
    /// Messages queued to channels.
    pub delivered: usize,
    /// Candidate pairs the authorizer hid.
    pub hidden: usize,
    /// DELETEs not delivered because their table's old rows are not full.
    pub unjudgeable_deletes: usize,
    /// Messages that found their socket's queue full (that socket is being disconnected).
    pub overflowed: usize,
}

/// One channel's share of one change.
struct Target {
    channel: Arc<ChannelRef>,
    ids: Vec<u32>,
    identity_index: usize,
}

/// Fans committed transactions (in commit order) out to the subscriptions allowed to see
/// them: every change of every transaction is authorized in one call (one round trip for an
/// authorizer that batches), then each transaction's changes are queued in commit order,
/// followed by the broadcasts it sent from the database (`db_broadcast`). The pump hands
/// several transactions at once when they queued up while it was busy.
/// Returns `Err` (and delivers nothing) when the authorizer fails.
pub async fn deliver(
    hub: &Realtime,
    txs: &[&Transaction],
    authorizer: &dyn Authorizer,
) -> Result<DeliveryReport, AuthorizeError> {
    let mut report = DeliveryReport::default();
    let mut checks: Vec<Check> = Vec::new();
    let mut targets: Vec<Vec<Target>> = Vec::new();
    // Channels and identities are gathered per change; identities are interned across the
    // batch so each `Arc<Identity>` is hashed once per change, not per channel.
    let mut channel_slot: HashMap<u64, usize> = HashMap::new();
    let mut identity_slot: HashMap<Arc<Identity>, usize> = HashMap::new();
    for (t, tx) in txs.iter().enumerate() {
        for (i, change) in tx.changes.iter().enumerate() {
            if change.kind == ChangeKind::Truncate {
                continue;
            }
            let subs = hub.registry.candidates(change);
            if subs.is_empty() {
                continue;
            }
            if change.kind == ChangeKind::Delete
                && change.relation.replica_identity != ReplicaIdentity::Full
            {
                report.unjudgeable_deletes += 1;
                continue;
            }
            let mut by_channel: Vec<Target> = Vec::new();
            let mut identities: Vec<Arc<Identity>> = Vec::new();
            channel_slot.clear();
            identity_slot.clear();
            let position = Position::of(tx, i);
            for sub in subs {
                // A channel waiting for its replay gets this from the replay instead.
                if !sub.channel.wants_live(position) {
                    continue;
                }
                let slot = *channel_slot.entry(sub.channel.key).or_insert_with(|| {
                    let identity = sub.channel.identity();
                    let identity_index =
                        *identity_slot.entry(identity.clone()).or_insert_with(|| {
                            identities.push(identity);
                            identities.len() - 1
                        });
                    by_channel.push(Target {
                        channel: sub.channel.clone(),
                        ids: Vec::new(),
                        identity_index,
                    });
                    by_channel.len() - 1
                });
                by_channel[slot].ids.push(sub.id);
            }
            if by_channel.is_empty() {
                continue;
            }
            report.candidates += by_channel.len();
            report.checks += identities.len();
            checks.push(Check {
                tx: t,
                change: i,
                identities,
            });
            targets.push(by_channel);
        }
    }
    let verdicts = if checks.is_empty() {
        Vec::new()
    } else {
        authorizer.authorize(txs, &checks).await?
    };
    let mut answered = checks
        .iter()
        .zip(&targets)
        .zip(verdicts.into_iter().chain(std::iter::repeat_with(Vec::new)))
        .peekable();
    for (t, tx) in txs.iter().enumerate() {
        let commit_timestamp = tx.commit_timestamp();
        while let Some(((check, channels), verdicts)) = answered.next_if(|((c, _), _)| c.tx == t) {
            let change = &tx.changes[check.change];
            let position = Position::of(tx, check.change).encode();
            // Shaped once per distinct column access, shared by every channel that gets it.
            // Identities of one role share their plan's column set (one `Arc`), so a message
            // seen by ten members is serialized once, not ten times. The verdicts hold every
            // set alive for the loop, so pointers cannot be reused as keys.
            let mut shaped: HashMap<usize, Arc<str>> = HashMap::new();
            for target in channels {
                let verdict = verdicts
                    .get(target.identity_index)
                    .cloned()
                    .unwrap_or(Verdict::Hidden);
                let access = match verdict {
                    Verdict::Hidden => {
                        report.hidden += 1;
                        continue;
                    }
                    Verdict::Visible(access) => access,
                };
                let data = shaped
                    .entry(match &access {
                        ColumnAccess::All => 0,
                        ColumnAccess::Only(set) => Arc::as_ptr(set) as usize,
                    })
                    .or_insert_with(|| shape(change, &commit_timestamp, &position, &access).into())
                    .clone();
                send_change(&target.channel, &target.ids, &data, &position, &mut report);
            }
        }
        // Broadcasts the database sent (realtime.send), after the row changes.
        super::db_broadcast::deliver(hub, tx);
    }
    Ok(report)
}

/// Queues one change (and, for a resumable channel, its position) to a channel.
fn send_change(
    channel: &ChannelRef,
    ids: &[u32],
    data: &str,
    position: &str,
    report: &mut DeliveryReport,
) {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let payload = format!(
        r#"{{"ids":{},"data":{data}}}"#,
        serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into())
    );
    let msg = Outbound::Message(Arc::new(ServerMessage {
        join_ref: None,
        r#ref: None,
        topic: channel.topic.clone(),
        event: "postgres_changes",
        payload,
    }));
    match channel.socket.push(msg) {
        Push::Queued => report.delivered += 1,
        Push::Overflowed => {
            report.overflowed += 1;
            return;
        }
        Push::Closed => return,
    }
    // supabase-js hands an application only some fields of a change (not `position`), but
    // it does hand it `system` messages: the position follows its change there.
    if let Some(resume) = &channel.resume {
        channel
            .socket
            .push(Outbound::Message(Arc::new(system_message(
                channel,
                resume.join_ref.clone(),
                serde_json::json!({"status": "ok", "message": "position", "position": position}),
            ))));
    }
}

fn system_message(channel: &ChannelRef, join_ref: Option<Arc<str>>, body: Value) -> ServerMessage {
    let mut payload = body;
    payload["extension"] = Value::String("postgres_changes".into());
    payload["channel"] = Value::String(
        channel
            .topic
            .strip_prefix("realtime:")
            .unwrap_or(&channel.topic)
            .to_string(),
    );
    ServerMessage {
        join_ref,
        r#ref: None,
        topic: channel.topic.clone(),
        event: "system",
        payload: payload.to_string(),
    }
}

/// What serving one replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// Changes in the window after the position that match the channel's bindings.
    pub candidates: usize,
    pub delivered: usize,
    pub too_old: bool,
    /// The client's queue had no room for the rest: serve again from here once it drained.
    pub continue_after: Option<Position>,
}

/// Serves a resuming channel from the window: every change after its position that its
/// bindings match and its claims may see, in commit order, then turns it live. Called by
/// the pump between two transactions, so nothing is missed or sent twice. `Err` (an
/// authorization failure) leaves the channel pending, to be served again.
///
/// A long gap is sent in pieces that fit the client's queue (half its free room, as each
/// change is followed by its position): the channel stays pending and `continue_after`
/// says where the next piece starts, so a resuming client is never disconnected as too
/// slow by its own replay.
pub async fn replay(
    window: &Window,
    req: &ReplayRequest,
    authorizer: &dyn Authorizer,
) -> Result<ReplayReport, AuthorizeError> {
    let mut report = ReplayReport::default();
    let Some(resume) = &req.channel.resume else {
        return Ok(report);
    };
    let missed = match window.since(req.after) {
        Ok(m) => m,
        Err(TooOld) => {
            report.too_old = true;
            req.channel.socket.push(Outbound::Message(Arc::new(system_message(
                &req.channel,
                resume.join_ref.clone(),
                serde_json::json!({
                    "status": "error",
                    "resume": "too_old",
                    "message": "ResumeTooOld: changes after this position are no longer retained; refetch history, live changes follow",
                }),
            ))));
            // Live from here: the next transaction the pump handles.
            resume.state.go_live(None);
            return Ok(report);
        }
    };
    // The matched changes, judged in one batch as one (already visible) transaction.
    let budget = (req.channel.socket.room() / 2).saturating_sub(8);
    let mut picked: Vec<(&Arc<Transaction>, usize, Vec<u32>)> = Vec::new();
    for (tx, index, change) in missed {
        if picked.len() >= budget {
            // The rest after what is picked (or, with no room at all, after the position).
            report.continue_after = Some(
                picked
                    .last()
                    .map(|(t, i, _)| Position::of(t, *i))
                    .unwrap_or(req.after),
            );
            break;
        }
        if change.kind == ChangeKind::Truncate
            || (change.kind == ChangeKind::Delete
                && change.relation.replica_identity != ReplicaIdentity::Full)
        {
            continue;
        }
        let ids: Vec<u32> = req
            .subs
            .iter()
            .filter(|s| s.takes(change))
            .map(|s: &Arc<Subscription>| s.id)
            .collect();
        if !ids.is_empty() {
            picked.push((tx, index, ids));
        }
    }
    report.candidates = picked.len();
    if !picked.is_empty() {
        // The transactions the picked changes come from, each once, in commit order.
        let mut txs: Vec<&Transaction> = Vec::new();
        let mut checks: Vec<Check> = Vec::with_capacity(picked.len());
        let identity = req.channel.identity();
        for (tx, index, _) in &picked {
            if !txs.last().is_some_and(|t| std::ptr::eq(*t, tx.as_ref())) {
                txs.push(tx);
            }
            checks.push(Check {
                tx: txs.len() - 1,
                change: *index,
                identities: vec![identity.clone()],
            });
        }
        let verdicts = authorizer.authorize(&txs, &checks).await?;
        let mut delivery = DeliveryReport::default();
        for ((tx, index, ids), verdict) in picked
            .iter()
            .zip(verdicts.into_iter().chain(std::iter::repeat_with(Vec::new)))
        {
            let Some(Verdict::Visible(access)) = verdict.into_iter().next() else {
                continue;
            };
            let position = Position::of(tx, *index).encode();
            let data = shape(
                &tx.changes[*index],
                &tx.commit_timestamp(),
                &position,
                &access,
            );
            send_change(&req.channel, ids, &data, &position, &mut delivery);
        }
        report.delivered = delivery.delivered;
    }
    if report.continue_after.is_some() {
        return Ok(report); // still pending
    }
    // Everything up to the pump's current transaction is now sent; anything at or below
    // the client's position that the pump has yet to reach (after a restart) is skipped.
    resume.state.go_live(Some(req.after));
    Ok(report)
}

fn filtered(row: &Row, access: &ColumnAccess) -> Value {
    Value::Object(
        row.iter()
            .filter(|(k, _)| access.allows(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

/// The `data` of a `postgres_changes` message, as Supabase shapes it.
/// Beyond Supabase's fields, `position` says where the change sits in the stream (see
/// `resume`).
pub fn shape(
    change: &RowChange,
    commit_timestamp: &str,
    position: &str,
    access: &ColumnAccess,
) -> String {
    let rel = &change.relation;
    let columns: Vec<Value> = rel
        .columns
        .iter()
        .filter(|c| access.allows(&c.name))
        .map(|c| serde_json::json!({"name": c.name, "type": c.type_name}))
        .collect();
    let mut data = Map::new();
    data.insert("schema".into(), Value::String(rel.schema.clone()));
    data.insert("table".into(), Value::String(rel.name.clone()));
    data.insert(
        "commit_timestamp".into(),
        Value::String(commit_timestamp.to_string()),
    );
    data.insert("type".into(), Value::String(change.kind.as_str().into()));
    data.insert("columns".into(), Value::Array(columns));
    let empty = Row::default();
    if matches!(change.kind, ChangeKind::Insert | ChangeKind::Update) {
        data.insert(
            "record".into(),
            filtered(change.record.as_ref().unwrap_or(&empty), access),
        );
    }
    if matches!(change.kind, ChangeKind::Update | ChangeKind::Delete) {
        data.insert(
            "old_record".into(),
            filtered(change.old_record.as_ref().unwrap_or(&empty), access),
        );
    }
    data.insert("errors".into(), Value::Null);
    data.insert("position".into(), Value::String(position.to_string()));
    Value::Object(data).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{ColumnInfo, RelationInfo};
    use serde_json::json;

    fn change(kind: ChangeKind) -> RowChange {
        let col = |n: &str, t: &str| ColumnInfo {
            name: n.into(),
            type_oid: 0,
            type_name: t.into(),
            is_key: n == "id",
        };
        let row = json!({"id": 1, "secret": "s", "body": "hi"});
        RowChange {
            relation: Arc::new(RelationInfo {
                oid: 1,
                schema: "public".into(),
                name: "t".into(),
                replica_identity: ReplicaIdentity::Full,
                columns: vec![
                    col("id", "int8"),
                    col("secret", "text"),
                    col("body", "text"),
                ],
            }),
            kind,
            record: (kind != ChangeKind::Delete).then(|| row.as_object().unwrap().clone().into()),
            old_record: (kind != ChangeKind::Insert)
                .then(|| row.as_object().unwrap().clone().into()),
            unchanged_toast: vec![],
        }
    }

    #[test]
    fn shape_follows_supabase_and_drops_unselectable_columns() {
        let only: ColumnAccess = ColumnAccess::Only(Arc::new(
            ["id", "body"].map(String::from).into_iter().collect(),
        ));
        let ins: Value =
            serde_json::from_str(&shape(&change(ChangeKind::Insert), "T", "P", &only)).unwrap();
        assert_eq!(
            ins,
            json!({"schema":"public","table":"t","commit_timestamp":"T","type":"INSERT",
                   "columns":[{"name":"id","type":"int8"},{"name":"body","type":"text"}],
                   "record":{"id":1,"body":"hi"},"errors":null,"position":"P"})
        );
        let del: Value = serde_json::from_str(&shape(
            &change(ChangeKind::Delete),
            "T",
            "P",
            &ColumnAccess::All,
        ))
        .unwrap();
        assert!(del.get("record").is_none());
        assert_eq!(del["old_record"]["secret"], "s");
        let upd: Value =
            serde_json::from_str(&shape(&change(ChangeKind::Update), "T", "P", &only)).unwrap();
        assert!(upd["old_record"].get("secret").is_none());
        assert!(upd["record"].get("secret").is_none());
    }
}
