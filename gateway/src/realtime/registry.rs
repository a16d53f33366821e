//! The live `postgres_changes` subscriptions, indexed so that the candidates for a change are
//! found without looking at every subscriber: by table, then by the value of one `eq`
//! filter's column (`conversation_id=eq.X` is the common case: a change reaches the index
//! bucket for its own conversation only). The index is only a pre-filter; every candidate's
//! event and full filter are then checked against the row.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::filter::{self, CompareKind, Condition};
use super::resume::{ChannelResume, ResumeRequest};
use super::socket_handle::SocketHandle;
use crate::authorize::Identity;
use crate::change::{ChangeKind, Row, RowChange};

/// A joined channel, as the fan-out sees it: where to send, and as whom.
#[derive(Debug)]
pub struct ChannelRef {
    /// Unique for the process lifetime.
    pub key: u64,
    pub socket: SocketHandle,
    /// `realtime:<name>`.
    pub topic: Arc<str>,
    /// Whom its changes are authorized as (replaced when the client refreshes its token).
    identity: RwLock<Arc<Identity>>,
    /// Set when the channel asked for positions (and perhaps a replay) at join.
    pub resume: Option<Resumable>,
}

/// What a resumable channel needs beyond delivery: its join reference (its `system`
/// messages carry it) and its replay state.
#[derive(Debug)]
pub struct Resumable {
    pub join_ref: Option<Arc<str>>,
    pub state: ChannelResume,
}

impl ChannelRef {
    pub fn new(key: u64, socket: SocketHandle, topic: Arc<str>, identity: Arc<Identity>) -> Self {
        Self {
            key,
            socket,
            topic,
            identity: RwLock::new(identity),
            resume: None,
        }
    }

    /// Makes the channel resumable: each change it gets is followed by its position.
    pub fn resumable(mut self, join_ref: Option<Arc<str>>, request: ResumeRequest) -> Self {
        self.resume = Some(Resumable {
            join_ref,
            state: ChannelResume::new(request),
        });
        self
    }

    /// Should a live change at `p` be sent here? (Not while a replay is pending, nor what
    /// the replay covered.)
    pub fn wants_live(&self, p: super::resume::Position) -> bool {
        self.resume.as_ref().is_none_or(|r| r.state.wants(p))
    }

    pub fn identity(&self) -> Arc<Identity> {
        self.identity
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A refreshed token: later changes are authorized with these claims.
    pub fn set_identity(&self, identity: Arc<Identity>) {
        *self.identity.write().unwrap_or_else(|e| e.into_inner()) = identity;
    }
}

/// Which change kinds a subscription wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventFilter {
    All,
    Only(ChangeKind),
}

impl EventFilter {
    pub fn parse(s: &str) -> Option<EventFilter> {
        Some(match s.to_ascii_uppercase().as_str() {
            "*" => EventFilter::All,
            "INSERT" => EventFilter::Only(ChangeKind::Insert),
            "UPDATE" => EventFilter::Only(ChangeKind::Update),
            "DELETE" => EventFilter::Only(ChangeKind::Delete),
            _ => return None,
        })
    }

    pub fn accepts(self, kind: ChangeKind) -> bool {
        match self {
            EventFilter::All => kind != ChangeKind::Truncate,
            EventFilter::Only(k) => k == kind,
        }
    }
}

/// One `postgres_changes` binding of one channel.
#[derive(Debug)]
pub struct Subscription {
    /// The id the client sees in the join reply and in each change's `ids`.
    pub id: u32,
    pub channel: Arc<ChannelRef>,
    pub schema: String,
    /// `None`: every table of the schema.
    pub table: Option<String>,
    pub events: EventFilter,
    pub conditions: Vec<Condition>,
}

impl Subscription {
    /// Is this change of the subscription's table (or schema) and does it satisfy its event
    /// and filters? (The registry's index already picks by table; a replay does not.)
    pub fn takes(&self, change: &RowChange) -> bool {
        let rel = &change.relation;
        self.schema == rel.schema
            && self.table.as_ref().is_none_or(|t| *t == rel.name)
            && self.matches(change)
    }

    /// Does this change, as carried, satisfy the subscription's event and filters?
    pub fn matches(&self, change: &RowChange) -> bool {
        if !self.events.accepts(change.kind) {
            return false;
        }
        if self.conditions.is_empty() {
            return true;
        }
        match row_image(change) {
            Some(row) => filter::matches(&self.conditions, row),
            None => false,
        }
    }
}

/// The row a filter is judged on: the new row for INSERT and UPDATE, the old row for DELETE.
pub fn row_image(change: &RowChange) -> Option<&Row> {
    match change.kind {
        ChangeKind::Insert | ChangeKind::Update => change.record.as_ref(),
        ChangeKind::Delete => change.old_record.as_ref(),
        ChangeKind::Truncate => None,
    }
}

type SubMap = HashMap<u64, Arc<Subscription>>;

#[derive(Default)]
struct TableIndex {
    /// Subscriptions without an indexable `eq` or `in` condition.
    scan: SubMap,
    /// column -> (its kind, canonical value -> subscriptions whose first indexable `eq` or
    /// `in` condition is on that column and admits that value). An `in` subscription is
    /// filed under each of its values; a row has one value, so it is found at most once.
    by_eq: HashMap<String, (CompareKind, HashMap<String, SubMap>)>,
}

impl TableIndex {
    fn is_empty(&self) -> bool {
        self.scan.is_empty() && self.by_eq.is_empty()
    }
}

/// Where a subscription was filed, to take it out again.
#[derive(Debug, Clone)]
enum Slot {
    Scan,
    Eq { column: String, keys: Vec<String> },
    Schema,
}

#[derive(Default)]
struct Inner {
    tables: HashMap<(String, String), TableIndex>,
    /// Schema-wide subscriptions (no table).
    schemas: HashMap<String, SubMap>,
    /// channel key -> its subscriptions and where they are filed.
    by_channel: HashMap<u64, Vec<(u64, Arc<Subscription>, Slot)>>,
}

#[derive(Default)]
pub struct Registry {
    inner: RwLock<Inner>,
    next_uid: AtomicU64,
    next_id: std::sync::atomic::AtomicU32,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh subscription id for a join reply.
    pub fn next_subscription_id(&self) -> u32 {
        // Start at 1: some clients treat 0 as "no id".
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Files the subscriptions of a channel. From this call on, every change handed to
    /// `candidates` is considered for them.
    pub fn insert(&self, subs: Vec<Arc<Subscription>>) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        for sub in subs {
            let uid = self.next_uid.fetch_add(1, Ordering::Relaxed);
            let slot = match &sub.table {
                None => {
                    inner
                        .schemas
                        .entry(sub.schema.clone())
                        .or_default()
                        .insert(uid, sub.clone());
                    Slot::Schema
                }
                Some(table) => {
                    let index = inner
                        .tables
                        .entry((sub.schema.clone(), table.clone()))
                        .or_default();
                    let eq = sub
                        .conditions
                        .iter()
                        .find_map(|c| c.index_keys().map(|k| (c, k)));
                    match eq {
                        Some((cond, keys)) => {
                            let (_, buckets) = index
                                .by_eq
                                .entry(cond.column.clone())
                                .or_insert_with(|| (cond.kind, HashMap::new()));
                            for key in &keys {
                                buckets
                                    .entry(key.clone())
                                    .or_default()
                                    .insert(uid, sub.clone());
                            }
                            Slot::Eq {
                                column: cond.column.clone(),
                                keys,
                            }
                        }
                        None => {
                            index.scan.insert(uid, sub.clone());
                            Slot::Scan
                        }
                    }
                }
            };
            inner
                .by_channel
                .entry(sub.channel.key)
                .or_default()
                .push((uid, sub, slot));
        }
    }

    /// Removes every subscription of a channel (left, closed, or its socket gone).
    pub fn remove_channel(&self, channel_key: u64) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let Some(entries) = inner.by_channel.remove(&channel_key) else {
            return;
        };
        for (uid, sub, slot) in entries {
            match slot {
                Slot::Schema => {
                    if let Some(m) = inner.schemas.get_mut(&sub.schema) {
                        m.remove(&uid);
                        if m.is_empty() {
                            inner.schemas.remove(&sub.schema);
                        }
                    }
                }
                Slot::Scan | Slot::Eq { .. } => {
                    let tkey = (sub.schema.clone(), sub.table.clone().unwrap_or_default());
                    if let Some(index) = inner.tables.get_mut(&tkey) {
                        match slot {
                            Slot::Scan => {
                                index.scan.remove(&uid);
                            }
                            Slot::Eq { column, keys } => {
                                if let Some((_, buckets)) = index.by_eq.get_mut(&column) {
                                    for key in &keys {
                                        if let Some(b) = buckets.get_mut(key) {
                                            b.remove(&uid);
                                            if b.is_empty() {
                                                buckets.remove(key);
                                            }
                                        }
                                    }
                                    if buckets.is_empty() {
                                        index.by_eq.remove(&column);
                                    }
                                }
                            }
                            Slot::Schema => {}
                        }
                        if index.is_empty() {
                            inner.tables.remove(&tkey);
                        }
                    }
                }
            }
        }
    }

    /// The subscriptions this change reaches by event and filters (before authorization).
    pub fn candidates(&self, change: &RowChange) -> Vec<Arc<Subscription>> {
        let rel = &change.relation;
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        let mut consider = |sub: &Arc<Subscription>| {
            if sub.matches(change) {
                out.push(sub.clone());
            }
        };
        if let Some(index) = inner.tables.get(&(rel.schema.clone(), rel.name.clone())) {
            index.scan.values().for_each(&mut consider);
            if let Some(row) = row_image(change) {
                for (column, (kind, buckets)) in &index.by_eq {
                    let key =
                        filter::record_value(*kind, row.get(column)).and_then(|v| v.index_key());
                    if let Some(bucket) = key.and_then(|k| buckets.get(&k)) {
                        bucket.values().for_each(&mut consider);
                    }
                }
            }
        }
        if let Some(subs) = inner.schemas.get(&rel.schema) {
            subs.values().for_each(&mut consider);
        }
        out
    }

    /// Live subscriptions (for metrics and tests).
    pub fn len(&self) -> usize {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.by_channel.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{ColumnInfo, RelationInfo, ReplicaIdentity};
    use crate::realtime::filter::{bind, parse, ColumnType};
    use serde_json::json;

    fn relation() -> Arc<RelationInfo> {
        let col = |name: &str, t: &str| ColumnInfo {
            name: name.into(),
            type_oid: 0,
            type_name: t.into(),
            is_key: name == "id",
        };
        Arc::new(RelationInfo {
            oid: 1,
            schema: "public".into(),
            name: "messages".into(),
            replica_identity: ReplicaIdentity::Full,
            columns: vec![col("id", "int8"), col("conv", "text"), col("n", "int4")],
        })
    }

    fn columns() -> HashMap<String, ColumnType> {
        relation()
            .columns
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    ColumnType {
                        type_name: c.type_name.clone(),
                        kind: CompareKind::from_pg(&c.type_name, "b"),
                    },
                )
            })
            .collect()
    }

    fn channel(key: u64) -> Arc<ChannelRef> {
        let (socket, _rx) = SocketHandle::new_for_test(4);
        Arc::new(ChannelRef::new(
            key,
            socket,
            "realtime:t".into(),
            Arc::new(Identity::new("authenticated", &json!({}))),
        ))
    }

    fn sub(
        reg: &Registry,
        ch: &Arc<ChannelRef>,
        table: Option<&str>,
        ev: &str,
        f: &str,
    ) -> Arc<Subscription> {
        Arc::new(Subscription {
            id: reg.next_subscription_id(),
            channel: ch.clone(),
            schema: "public".into(),
            table: table.map(str::to_string),
            events: EventFilter::parse(ev).unwrap(),
            conditions: bind(&parse(f).unwrap(), &columns()).unwrap(),
        })
    }

    fn insert(conv: &str, n: i32) -> RowChange {
        RowChange {
            relation: relation(),
            kind: ChangeKind::Insert,
            record: Some(
                json!({"id": 1, "conv": conv, "n": n})
                    .as_object()
                    .unwrap()
                    .clone()
                    .into(),
            ),
            old_record: None,
            unchanged_toast: vec![],
        }
    }

    fn ids(v: &[Arc<Subscription>]) -> Vec<u32> {
        let mut ids: Vec<u32> = v.iter().map(|s| s.id).collect();
        ids.sort();
        ids
    }

    #[test]
    fn candidates_come_from_the_eq_bucket_of_the_changed_row_and_the_unfiltered() {
        let reg = Registry::new();
        let ch = channel(1);
        let a = sub(&reg, &ch, Some("messages"), "*", "conv=eq.a");
        let b = sub(&reg, &ch, Some("messages"), "*", "conv=eq.b");
        let all = sub(&reg, &ch, Some("messages"), "INSERT", "");
        let big = sub(&reg, &ch, Some("messages"), "*", "n=gt.10");
        let a_big = sub(&reg, &ch, Some("messages"), "*", "conv=eq.a,n=gt.10");
        let schema = sub(&reg, &ch, None, "*", "");
        let updates = sub(&reg, &ch, Some("messages"), "UPDATE", "");
        reg.insert(vec![
            a.clone(),
            b.clone(),
            all.clone(),
            big.clone(),
            a_big.clone(),
            schema.clone(),
            updates,
        ]);
        assert_eq!(
            ids(&reg.candidates(&insert("a", 1))),
            vec![a.id, all.id, schema.id]
        );
        assert_eq!(
            ids(&reg.candidates(&insert("a", 11))),
            vec![a.id, all.id, big.id, a_big.id, schema.id]
        );
        assert_eq!(
            ids(&reg.candidates(&insert("c", 1))),
            vec![all.id, schema.id]
        );
    }

    #[test]
    fn an_in_filter_is_indexed_under_each_value_and_found_once() {
        let reg = Registry::new();
        let ch = channel(1);
        let ab = sub(&reg, &ch, Some("messages"), "*", "conv=in.(a,b,a)");
        reg.insert(vec![ab.clone()]);
        {
            let inner = reg.inner.read().unwrap();
            let index = &inner.tables[&("public".to_string(), "messages".to_string())];
            assert!(index.scan.is_empty(), "not scanned for every change");
            assert_eq!(index.by_eq["conv"].1.len(), 2);
        }
        assert_eq!(ids(&reg.candidates(&insert("a", 1))), vec![ab.id]);
        assert_eq!(ids(&reg.candidates(&insert("b", 1))), vec![ab.id]);
        assert!(reg.candidates(&insert("c", 1)).is_empty());
        reg.remove_channel(1);
        assert!(reg.inner.read().unwrap().tables.is_empty());
    }

    #[test]
    fn deletes_are_matched_on_the_old_row() {
        let reg = Registry::new();
        let ch = channel(1);
        let a = sub(&reg, &ch, Some("messages"), "DELETE", "conv=eq.a");
        reg.insert(vec![a.clone()]);
        let mut del = insert("a", 1);
        del.kind = ChangeKind::Delete;
        del.old_record = del.record.take();
        assert_eq!(ids(&reg.candidates(&del)), vec![a.id]);
        assert!(
            reg.candidates(&insert("a", 1)).is_empty(),
            "only DELETE was asked for"
        );
    }

    #[test]
    fn removing_a_channel_removes_all_its_subscriptions_and_only_those() {
        let reg = Registry::new();
        let (c1, c2) = (channel(1), channel(2));
        let s1 = sub(&reg, &c1, Some("messages"), "*", "conv=eq.a");
        let s2 = sub(&reg, &c1, None, "*", "");
        let s3 = sub(&reg, &c2, Some("messages"), "*", "conv=eq.a");
        reg.insert(vec![s1, s2]);
        reg.insert(vec![s3.clone()]);
        assert_eq!(reg.len(), 3);
        reg.remove_channel(1);
        assert_eq!(reg.len(), 1);
        assert_eq!(ids(&reg.candidates(&insert("a", 1))), vec![s3.id]);
        reg.remove_channel(2);
        assert!(reg.is_empty());
        assert!(
            reg.inner.read().unwrap().tables.is_empty(),
            "empty indexes are dropped"
        );
    }

    #[test]
    fn a_changed_token_changes_the_identity_used_for_later_changes() {
        let ch = channel(1);
        assert_eq!(ch.identity().role(), "authenticated");
        ch.set_identity(Arc::new(Identity::new("anon", &json!({"role": "anon"}))));
        assert_eq!(ch.identity().role(), "anon");
        assert_eq!(ch.identity().claims_json(), r#"{"role":"anon"}"#);
        let a = Identity::new("r", &json!({"sub": "1"}));
        let b = Identity::new("r", &json!({"sub": "1"}));
        assert_eq!(a, b);
        assert_ne!(a, Identity::new("r", &json!({"sub": "2"})));
        assert_ne!(a, Identity::new("s", &json!({"sub": "1"})));
    }
}
