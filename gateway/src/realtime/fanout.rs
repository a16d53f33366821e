//! From a committed transaction to the channels allowed to see it.
//!
//! 1. The registry names the candidate subscriptions of each change (table, event, filters).
//! 2. Candidates are grouped by their distinct claim sets, so each (change, claim set) pair is
//!    asked about once, and the whole transaction goes to the [`Authorizer`] in one call
//!    (one database round trip for an authorizer that batches).
//! 3. Each visible change is shaped as Supabase sends it, without the columns the role may
//!    not select, and queued to its channels in commit order.
//!
//! A DELETE is only ever judged on its old row; a table whose deletes do not carry the full
//! old row (REPLICA IDENTITY not FULL) cannot have them judged, so they reach no one.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::protocol::ServerMessage;
use super::registry::{ChannelRef, ClaimSet, Subscription};
use super::resume::{Position, ReplayRequest, TooOld, Window};
use super::socket_handle::{Outbound, Push};
use super::Realtime;
use crate::change::{ChangeKind, ReplicaIdentity, Row, RowChange, Transaction};

/// The columns of a table a role may select.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnAccess {
    All,
    Only(Arc<HashSet<String>>),
}

impl ColumnAccess {
    pub fn allows(&self, column: &str) -> bool {
        match self {
            ColumnAccess::All => true,
            ColumnAccess::Only(set) => set.contains(column),
        }
    }
}

/// The database's answer for one change and one claim set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// RLS (or table privileges) hide the row from this role and claims.
    Hidden,
    Visible(ColumnAccess),
}

/// One change of the transaction and the distinct claim sets of its candidate subscribers.
#[derive(Debug)]
pub struct Check {
    /// Index into `Transaction::changes`.
    pub change: usize,
    pub claim_sets: Vec<Arc<ClaimSet>>,
}

#[derive(Debug, thiserror::Error)]
#[error("authorization check failed")]
pub struct AuthorizeError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl AuthorizeError {
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(e))
    }
}

pub type AuthorizeFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Vec<Verdict>>, AuthorizeError>> + Send + 'a>>;

/// Decides, for a whole transaction at once, which claim sets may see which changes.
///
/// `checks` lists only the changes that have candidates; `checks[i].claim_sets` are distinct.
/// The answer is parallel to it: `verdicts[i][j]` is the verdict for
/// `tx.changes[checks[i].change]` under `checks[i].claim_sets[j]`. For INSERT and UPDATE the
/// row to judge is `record`; for DELETE it is `old_record` (always the full old row: the
/// fan-out never asks about deletes it cannot judge). A shorter answer than asked counts as
/// Hidden for what is missing; an error hides the whole transaction (fail closed).
pub trait Authorizer: Send + Sync {
    fn authorize<'a>(&'a self, tx: &'a Transaction, checks: &'a [Check]) -> AuthorizeFuture<'a>;

    /// Sees every transaction, in commit order, before any of its changes are authorized
    /// (whether or not they have candidates): an authorizer that caches what it read from
    /// the catalog drops it here when the stream shows a policy or grant change.
    fn observe(&self, _tx: &Transaction) {}
}

/// What one `deliver` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// (change, channel) pairs that matched by table, event and filter.
    pub candidates: usize,
    /// (change, claim set) pairs asked of the authorizer.
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
    claim_index: usize,
}

/// Fans a committed transaction out to the subscriptions allowed to see it, in commit order.
/// Returns `Err` (and delivers nothing) when the authorizer fails.
pub async fn deliver(
    hub: &Realtime,
    tx: &Transaction,
    authorizer: &dyn Authorizer,
) -> Result<DeliveryReport, AuthorizeError> {
    let mut report = DeliveryReport::default();
    let mut checks: Vec<Check> = Vec::new();
    let mut targets: Vec<Vec<Target>> = Vec::new();
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
        let mut channel_slot: HashMap<u64, usize> = HashMap::new();
        let mut claim_sets: Vec<Arc<ClaimSet>> = Vec::new();
        let mut claim_slot: HashMap<String, usize> = HashMap::new();
        let position = Position::of(tx, i);
        for sub in subs {
            // A channel waiting for its replay gets this from the replay instead.
            if !sub.channel.wants_live(position) {
                continue;
            }
            let slot = *channel_slot.entry(sub.channel.key).or_insert_with(|| {
                let claims = sub.channel.claims();
                let claim_index =
                    *claim_slot
                        .entry(claims.key().to_string())
                        .or_insert_with(|| {
                            claim_sets.push(claims.clone());
                            claim_sets.len() - 1
                        });
                by_channel.push(Target {
                    channel: sub.channel.clone(),
                    ids: Vec::new(),
                    claim_index,
                });
                by_channel.len() - 1
            });
            by_channel[slot].ids.push(sub.id);
        }
        if by_channel.is_empty() {
            continue;
        }
        report.candidates += by_channel.len();
        report.checks += claim_sets.len();
        checks.push(Check {
            change: i,
            claim_sets,
        });
        targets.push(by_channel);
    }
    if checks.is_empty() {
        return Ok(report);
    }
    let verdicts = authorizer.authorize(tx, &checks).await?;
    let commit_timestamp = tx.commit_timestamp();
    for ((check, channels), verdicts) in checks
        .iter()
        .zip(&targets)
        .zip(verdicts.into_iter().chain(std::iter::repeat_with(Vec::new)))
    {
        let change = &tx.changes[check.change];
        let position = Position::of(tx, check.change).encode();
        // Shaped once per distinct column access, shared by every channel that gets it.
        // Identities of one role share their plan's column set (one `Arc`), so a message
        // seen by ten members is serialized once, not ten times. The verdicts hold every
        // set alive for the loop, so pointers cannot be reused as keys.
        let mut shaped: HashMap<usize, Arc<str>> = HashMap::new();
        for target in channels {
            let verdict = verdicts
                .get(target.claim_index)
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
        let batch = Transaction {
            xid: 0,
            commit_lsn: picked.last().map(|(t, _, _)| t.commit_lsn).unwrap_or(0),
            commit_time_micros: 0,
            changes: picked
                .iter()
                .map(|(t, i, _)| t.changes[*i].clone())
                .collect(),
        };
        let claims = req.channel.claims();
        let checks: Vec<Check> = (0..picked.len())
            .map(|change| Check {
                change,
                claim_sets: vec![claims.clone()],
            })
            .collect();
        let verdicts = authorizer.authorize(&batch, &checks).await?;
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
