//! What can revoke a joined private channel, read from the catalog rather than configured:
//! the tables that the policies on `realtime.messages` and the functions they call name
//! (`authorize::private_channel_reads`), and of those tables the columns they name. A
//! change elsewhere cannot revoke a channel, and neither can an UPDATE that changes only
//! unnamed columns (a member's unread counter or read position, which every chat message
//! updates) where the table's old rows are full (REPLICA IDENTITY FULL) so the stream shows
//! what changed. The pump asks this for every change, so the columns to compare are worked
//! out once per read of the catalog, not per row.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::AccessChange;
use crate::change::{ChangeKind, ReplicaIdentity, RowChange, Transaction};

/// How long a scope stands without a security-feed change (as authorization plans do).
const SCOPE_TTL: Duration = Duration::from_secs(30);
/// How soon a scope that could not be read is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The tables watched, each with the columns whose change counts (`None`: every column,
/// when a body may read columns it does not name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RevocationScope {
    watched: HashMap<u32, Option<Vec<String>>>,
    /// The catalog could not be read: every change counts until it can.
    everything: bool,
}

impl RevocationScope {
    /// When the catalog cannot be read: access is never assumed to stand.
    fn everything() -> Self {
        Self {
            everything: true,
            ..Self::default()
        }
    }

    /// Can this change alter a private channel's access?
    fn concerns(&self, c: &RowChange) -> bool {
        if self.everything {
            return true;
        }
        let Some(watched) = self.watched.get(&c.relation.oid) else {
            return false;
        };
        let Some(columns) = watched else {
            return true;
        };
        if c.kind != ChangeKind::Update || c.relation.replica_identity != ReplicaIdentity::Full {
            return true;
        }
        let (Some(new), Some(old)) = (&c.record, &c.old_record) else {
            return true;
        };
        // A named column missing from either row (unchanged TOAST) counts as changed.
        columns
            .iter()
            .any(|col| match (new.get(col), old.get(col)) {
                (Some(a), Some(b)) => a != b,
                _ => true,
            })
    }

    /// Reads it from the catalog; `None` without `realtime.messages` (no private channel
    /// can be joined).
    async fn read(client: &tokio_postgres::Client) -> Result<Option<Self>, tokio_postgres::Error> {
        let Some(reads) = crate::authorize::private_channel_reads(client).await? else {
            return Ok(None);
        };
        let mut watched: HashMap<u32, Option<Vec<String>>> = reads
            .tables
            .iter()
            .map(|t| (*t, (!reads.unnamed_reads).then(Vec::new)))
            .collect();
        if !reads.unnamed_reads {
            let tables: Vec<i64> = reads.tables.iter().map(|t| i64::from(*t)).collect();
            let columns = client
                .query(
                    "select attrelid::int8, attname::text from pg_attribute \
                      where attrelid = any($1::int8[]::oid[]) and attnum > 0 and not attisdropped",
                    &[&tables],
                )
                .await?;
            for row in columns {
                let (table, column): (i64, String) = (row.get(0), row.get(1));
                if let Some(Some(named)) = watched.get_mut(&(table as u32)) {
                    if reads.names.contains(&column) {
                        named.push(column);
                    }
                }
            }
        }
        Ok(Some(Self {
            watched,
            everything: false,
        }))
    }
}

/// The scope the pump consults, kept current: read at start, again when the security feed
/// shows a policy, grant or function change, and every `SCOPE_TTL` otherwise (a database
/// whose migration could not install the feed's event trigger still follows its policies).
/// It is read on the pipeline's own connections.
#[derive(Debug)]
pub struct RevocationWatch {
    scope: RevocationScope,
    read_at: Instant,
}

impl RevocationWatch {
    pub async fn load(pool: &deadpool_postgres::Pool) -> Self {
        let mut watch = Self {
            scope: RevocationScope::default(),
            read_at: Instant::now(),
        };
        watch.reload(pool).await;
        watch
    }

    /// Did this transaction change something a joined channel's authorization depends on?
    pub fn access_change(&self, tx: &Transaction) -> AccessChange {
        let (feed_schema, feed_table) = crate::authorize::SECURITY_FEED;
        let mut change = AccessChange::default();
        for c in &tx.changes {
            let (schema, name) = (&c.relation.schema, &c.relation.name);
            change.grants |= schema == feed_schema && name == feed_table;
            change.members |= self.scope.concerns(c);
        }
        change
    }

    /// Reads the scope again when the feed showed a change or it is due.
    pub async fn refresh(&mut self, pool: &deadpool_postgres::Pool, feed_changed: bool) {
        let ttl = if self.scope.everything {
            RETRY_AFTER
        } else {
            SCOPE_TTL
        };
        if feed_changed || self.read_at.elapsed() > ttl {
            self.reload(pool).await;
        }
    }

    async fn reload(&mut self, pool: &deadpool_postgres::Pool) {
        let read = async {
            let client = pool.get().await.map_err(|e| e.to_string())?;
            RevocationScope::read(&client)
                .await
                .map_err(|e| e.to_string())
        };
        let scope = match read.await {
            Ok(scope) => scope.unwrap_or_default(),
            Err(error) => {
                tracing::warn!(
                    error = %error,
                    "could not read what the realtime.messages policies depend on: every change re-checks private channels until it can"
                );
                RevocationScope::everything()
            }
        };
        if scope != self.scope && !scope.everything {
            tracing::info!(
                tables = scope.watched.len(),
                every_column = scope.watched.values().any(Option::is_none),
                "private channels are re-checked on changes to what the realtime.messages policies read"
            );
        }
        self.scope = scope;
        self.read_at = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::RelationInfo;
    use serde_json::{json, Value};
    use std::sync::Arc;

    const MEMBERS: u32 = 7;

    fn change(
        oid: u32,
        kind: ChangeKind,
        old: Value,
        new: Value,
        identity: ReplicaIdentity,
    ) -> Transaction {
        let row = |v: Value| v.as_object().unwrap().clone().into();
        Transaction {
            xid: 1,
            commit_lsn: 1,
            commit_time_micros: 0,
            changes: vec![RowChange {
                relation: Arc::new(RelationInfo {
                    oid,
                    schema: "public".into(),
                    name: "conversation_members".into(),
                    replica_identity: identity,
                    columns: vec![],
                }),
                kind,
                record: (kind != ChangeKind::Delete).then(|| row(new)),
                old_record: (kind != ChangeKind::Insert).then(|| row(old)),
                unchanged_toast: vec![],
            }],
        }
    }

    fn watch(scope: RevocationScope) -> RevocationWatch {
        RevocationWatch {
            scope,
            read_at: Instant::now(),
        }
    }

    /// As the catalog reads the chat's policies: `private.is_member` names the member's
    /// conversation and user (`None`: a body reads columns it does not name).
    fn scope(columns: Option<&[&str]>) -> RevocationWatch {
        watch(RevocationScope {
            watched: HashMap::from([(
                MEMBERS,
                columns.map(|c| c.iter().map(|s| s.to_string()).collect()),
            )]),
            everything: false,
        })
    }

    #[test]
    fn an_update_of_columns_no_policy_names_concerns_no_channel() {
        let named = scope(Some(&["conversation_id", "user_id"]));
        let opaque = scope(None);
        let old = json!({"conversation_id": "c", "user_id": "u", "unread_count": 1});
        let counter = json!({"conversation_id": "c", "user_id": "u", "unread_count": 2});
        let moved = json!({"conversation_id": "c", "user_id": "v", "unread_count": 1});
        let full = ReplicaIdentity::Full;
        let update =
            |new: &Value, id| change(MEMBERS, ChangeKind::Update, old.clone(), new.clone(), id);
        // A counter changed: ignored where the policies name their columns, counted where
        // a body may read columns it does not name.
        assert!(!named.access_change(&update(&counter, full)).members);
        assert!(opaque.access_change(&update(&counter, full)).members);
        // A named column changed.
        assert!(named.access_change(&update(&moved, full)).members);
        // Without full old rows the stream cannot show what changed: it counts.
        assert!(
            named
                .access_change(&update(&counter, ReplicaIdentity::Default))
                .members
        );
        // Rows added or removed always count.
        for kind in [ChangeKind::Insert, ChangeKind::Delete] {
            let tx = change(MEMBERS, kind, old.clone(), old.clone(), full);
            assert!(named.access_change(&tx).members, "{kind:?}");
        }
        // A table the policies do not read never counts; with the catalog unread, all do.
        let elsewhere = change(
            MEMBERS + 1,
            ChangeKind::Insert,
            old.clone(),
            old.clone(),
            full,
        );
        assert!(!named.access_change(&elsewhere).members);
        assert!(
            watch(RevocationScope::everything())
                .access_change(&elsewhere)
                .members
        );
    }
}
