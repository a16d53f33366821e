//! The reference authorizer: one live-row check per subscriber's identity per change, the
//! way Supabase Realtime authorizes `postgres_changes`. It is correct for what it checks and
//! deliberately naive about cost (a transaction and a query per pair), which makes it the
//! benchmark's "per-subscriber live-row check" and a real (never mocked) authorizer for
//! tests of the fan-out.
//!
//! Per (change, claim set), in a transaction run as the subscriber's role with its claims:
//! - INSERT / UPDATE: is the row, looked up by primary key, visible *now*? (A live re-read:
//!   a row changed again since the commit is judged as it is now, which is this approach's
//!   known flaw and why the real authorizer judges the row as the change carries it.)
//! - DELETE: the row is gone, so the old row is put back first (as the table owner, with
//!   triggers off, in the same transaction that is then rolled back) and read as the user.
//!   Without the privilege to do that, the delete is judged hidden.
//! - Which columns may the role select? `has_column_privilege` for each column.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;

use super::{AuthorizeError, AuthorizeFuture, Authorizer, Check, ColumnAccess, Identity, Verdict};
use crate::change::{ChangeKind, RelationInfo, Row, RowChange, Transaction};

pub struct LiveRowAuthorizer {
    pool: deadpool_postgres::Pool,
}

impl LiveRowAuthorizer {
    pub fn new(pool: deadpool_postgres::Pool) -> Self {
        Self { pool }
    }
}

use postgres_protocol::escape::escape_identifier as ident;

fn qualified(rel: &RelationInfo) -> String {
    format!("{}.{}", ident(&rel.schema), ident(&rel.name))
}

impl Authorizer for LiveRowAuthorizer {
    fn authorize<'a>(
        &'a self,
        txs: &'a [&'a Transaction],
        checks: &'a [Check],
    ) -> AuthorizeFuture<'a> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(checks.len());
            for check in checks {
                let change = &txs[check.tx].changes[check.change];
                let mut verdicts = Vec::with_capacity(check.identities.len());
                for identity in &check.identities {
                    verdicts.push(self.check_one(change, identity).await?);
                }
                out.push(verdicts);
            }
            Ok(out)
        })
    }
}

impl LiveRowAuthorizer {
    async fn check_one(
        &self,
        change: &RowChange,
        identity: &Identity,
    ) -> Result<Verdict, AuthorizeError> {
        let rel = &change.relation;
        let table = qualified(rel);
        let mut conn = self.pool.get().await.map_err(AuthorizeError::Pool)?;
        let tx = conn.transaction().await.map_err(AuthorizeError::Db)?;
        let pk: Vec<String> = tx
            .query(
                "select a.attname::text
                   from pg_index i
                   join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
                  where i.indrelid = $1::text::regclass and i.indisprimary
                  order by array_position(i.indkey, a.attnum)",
                &[&table],
            )
            .await
            .map_err(AuthorizeError::Db)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let row: &Row = match change.kind {
            ChangeKind::Insert | ChangeKind::Update => match &change.record {
                Some(r) => r,
                None => return Ok(Verdict::Hidden),
            },
            ChangeKind::Delete => match &change.old_record {
                Some(r) => r,
                None => return Ok(Verdict::Hidden),
            },
            ChangeKind::Truncate => return Ok(Verdict::Hidden),
        };
        if pk.is_empty() || pk.iter().any(|k| !row.contains_key(k)) {
            return Ok(Verdict::Hidden);
        }
        let row_json = Value::Object(row.to_map());
        if change.kind == ChangeKind::Delete {
            // Put the old row back for the duration of this (rolled back) transaction.
            let restored = tx
                .batch_execute("set local session_replication_role = replica")
                .await;
            let restored = match restored {
                Ok(()) => tx
                    .execute(
                        &format!(
                            "insert into {table} overriding system value
                             select * from jsonb_populate_record(null::{table}, $1::jsonb)
                             on conflict do nothing"
                        ),
                        &[&row_json],
                    )
                    .await
                    .map(|_| ()),
                Err(e) => Err(e),
            };
            if restored.is_err() {
                let _ = tx.rollback().await;
                return Ok(Verdict::Hidden);
            }
        }
        let claims = tx
            .execute(
                crate::db::SET_REQUEST_CLAIMS_SQL,
                &[&identity.role(), &identity.claims_json()],
            )
            .await;
        match claims {
            Ok(_) => {}
            // A role the database does not know sees nothing.
            Err(e) if e.as_db_error().is_some() => return Ok(Verdict::Hidden),
            Err(e) => return Err(AuthorizeError::Db(e)),
        }
        let keys = pk.iter().map(|k| ident(k)).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "select exists (
                 select 1 from {table} r
                  where ({keys}) = (select {keys} from jsonb_populate_record(null::{table}, $1::jsonb) x)
             ),
             array(select a.attname::text from pg_attribute a
                    where a.attrelid = $2::text::regclass and a.attnum > 0 and not a.attisdropped
                      and has_column_privilege(a.attrelid, a.attnum, 'SELECT'))"
        );
        let result = tx.query_one(&sql, &[&row_json, &table]).await;
        let _ = tx.rollback().await;
        match result {
            Ok(r) => {
                if !r.get::<_, bool>(0) {
                    return Ok(Verdict::Hidden);
                }
                let cols: Vec<String> = r.get(1);
                let all = rel.columns.iter().all(|c| cols.contains(&c.name));
                Ok(Verdict::Visible(if all {
                    ColumnAccess::All
                } else {
                    ColumnAccess::Only(Arc::new(cols.into_iter().collect::<HashSet<_>>()))
                }))
            }
            // Refused by the database (no privilege on the key columns, a policy that
            // raises): hidden, not a failure of the whole transaction.
            Err(e) if e.as_db_error().is_some() => Ok(Verdict::Hidden),
            Err(e) => Err(AuthorizeError::Db(e)),
        }
    }
}
