//! Which subscribers may see a change: asked of the database's own row-level security.
//!
//! `contract` is the one interface the rest of Ripple uses (`Authorizer`, `Identity`,
//! `Check`, `Verdict`); `RlsAuthorizer` below implements it, and `live_row` is the
//! per-subscriber live-row check Supabase Realtime does (the benchmark's reference and a
//! real authorizer for tests of the fan-out).
//!
//! Supabase Realtime re-reads the live row once per subscriber per change. We instead:
//! - judge the row *as the change carries it* (the new row for INSERT/UPDATE, the old row
//!   for DELETE), so a row updated or deleted right after its insert is still judged as it
//!   was, and deletes are authorized too;
//! - ask once per distinct identity (role + claims), not per subscriber;
//! - check all rows of a transaction for an identity in one statement per table, and send
//!   every statement of the batch in one pipelined round trip;
//! - cache each (table, role) plan (`plan.rs`), dropping the cache when the replication
//!   stream shows a policy, grant or table change (`ripple.security_changes`).

mod cache;
mod contract;
mod live_row;
mod plan;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::Row;

use crate::change::{ChangeKind, ReplicaIdentity, RowChange, Transaction};
pub use cache::{CacheStats, VerdictCache, VerdictKey};
pub use contract::{
    AuthorizeError, AuthorizeFuture, Authorizer, Check, ColumnAccess, Identity, Verdict,
};
pub use live_row::LiveRowAuthorizer;
pub use plan::{private_channel_reads, CacheSpec, CheckPlan, Decision, PolicyReads};

/// Is this error the policy's own answer for these claims (a policy that raises, a claim
/// that does not cast), which hides the rows, rather than a failure to ask at all (a lost
/// connection, a terminated backend, a timeout, a server going down), which must never
/// hide anything?
fn is_verdict(client: &tokio_postgres::Client, e: &tokio_postgres::Error) -> bool {
    if client.is_closed() {
        return false;
    }
    let Some(code) = e.code() else {
        return false; // I/O, protocol, closed: no answer was given
    };
    // 08 connection, 40 rollback (serialization, deadlock), 53 resources, 57 operator
    // intervention (admin shutdown, cancel, statement timeout), 58 system, XX internal.
    !matches!(&code.code()[..2], "08" | "40" | "53" | "57" | "58" | "XX")
}

/// Are the transactions with these 32-bit xids (as BEGIN carries them) all visible to a
/// snapshot taken now? Each xid is widened to xid8 with the epoch of the current snapshot's
/// xmax: a committed xid is below xmax, so one at or above xmax's low half is from the epoch
/// before. In READ COMMITTED each statement takes a newer snapshot, so when this says yes,
/// the checks pipelined after it see the transactions too. (Commits become visible in
/// their own order, not always the stream's: one waiting for a synchronous standby stays
/// invisible while a later one is seen, so every xid of a batch is asked about.)
const VISIBLE_SQL: &str = "select coalesce(bool_and(pg_visible_in_snapshot(
        ((greatest(e.hi - case when t.x >= e.lo then 1 else 0 end, 0) << 32) | t.x)
            ::text::xid8,
        e.snap)), true)
   from (select s.snap, x >> 32 as hi, x & 4294967295 as lo
           from (select pg_current_snapshot() as snap) s,
                lateral (select pg_snapshot_xmax(s.snap)::text::int8 as x) m) e,
        unnest($1::int8[]) as t(x)";

/// Xids below this are not transactions of the stream (a batch assembled for a replay, or
/// by a test, carries 0): always visible.
const FIRST_NORMAL_XID: u32 = 3;

/// How long a streamed transaction may stay invisible before the batch gives up (and is
/// retried by the caller, which also checks whether Ripple itself is the standby the
/// commit waits for).
const VISIBILITY_WAIT: Duration = Duration::from_secs(5);

/// How long a cached plan may be used without a signal from the stream (covers databases
/// where the event trigger could not be installed).
const PLAN_TTL: Duration = Duration::from_secs(30);

/// The schema and table whose changes mean "policies or grants changed".
pub const SECURITY_FEED: (&str, &str) = ("ripple", "security_changes");

/// One ask's answer inside a batch (a [`Verdict`] once the batch is done).
#[derive(Clone)]
struct Answer {
    visible: bool,
    /// Columns the identity's role may select; the rest are removed before delivery.
    columns: Arc<HashSet<String>>,
}

impl Answer {
    fn hidden() -> Self {
        Self {
            visible: false,
            columns: Arc::new(HashSet::new()),
        }
    }
}

struct CachedPlan {
    plan: CheckPlan,
    loaded: Instant,
}

pub struct RlsAuthorizer {
    pool: deadpool_postgres::Pool,
    plans: Mutex<HashMap<(u32, String), Arc<CachedPlan>>>,
    /// Cached verdicts; only with a publication (whose changes the stream shows).
    verdicts: Mutex<VerdictCache>,
    publication: Option<String>,
    metrics: Option<CacheMetrics>,
    /// Which UPDATEs can change a cached answer (see `CacheSpec::identifiers`).
    relevant_updates: Mutex<RelevantUpdates>,
}

/// The identifiers the cacheable plans' policies and functions name; an UPDATE that
/// changes only columns outside them cannot change an answer.
#[derive(Default)]
struct RelevantUpdates {
    names: HashSet<String>,
    /// Some plan's functions may read columns they do not name: every UPDATE counts.
    all: bool,
}

impl RelevantUpdates {
    fn matters(&self, change: &RowChange) -> bool {
        if self.all || change.kind != ChangeKind::Update {
            return true;
        }
        let (Some(new), Some(old)) = (&change.record, &change.old_record) else {
            return true;
        };
        if change.relation.replica_identity != ReplicaIdentity::Full {
            return true;
        }
        new.iter()
            .any(|(k, v)| old.get(k) != Some(v) && self.names.contains(&k.to_ascii_lowercase()))
    }
}

struct CacheMetrics {
    hits: Arc<crate::metrics::Counter>,
    misses: Arc<crate::metrics::Counter>,
    invalidations: Arc<crate::metrics::Counter>,
    entries: Arc<crate::metrics::Gauge>,
}

/// The schema and table a DBA lists tables in to keep their verdicts out of the cache.
pub const CACHE_OFF_TABLE: (&str, &str) = ("ripple", "verdict_cache_off");

/// Most verdicts kept (about 200 bytes each).
const MAX_CACHED_VERDICTS: usize = 200_000;

const PUBLISHED_SQL: &str = "select format('%I.%I', schemaname, tablename)::regclass::oid::int8 \
    from pg_publication_tables where pubname = $1";

/// The row a change is judged on, or None when it cannot be judged (and so reaches no one).
pub fn row_to_judge(change: &RowChange) -> Option<Cow<'_, crate::change::Row>> {
    match change.kind {
        ChangeKind::Insert => change.record.as_ref().map(Cow::Borrowed),
        ChangeKind::Update => {
            let record = change.record.as_ref()?;
            // Unchanged TOASTed values are not in the new tuple; the full old row has them.
            match &change.old_record {
                Some(old) if !change.unchanged_toast.is_empty() => {
                    let mut row = record.clone();
                    for col in &change.unchanged_toast {
                        if let Some(v) = old.get(col) {
                            row.insert(col.clone(), v.clone());
                        }
                    }
                    Some(Cow::Owned(row))
                }
                _ => Some(Cow::Borrowed(record)),
            }
        }
        // Only a full old row can be judged; a key alone would let the policy see nulls.
        ChangeKind::Delete if change.relation.replica_identity == ReplicaIdentity::Full => {
            change.old_record.as_ref().map(Cow::Borrowed)
        }
        ChangeKind::Delete | ChangeKind::Truncate => None,
    }
}

type QueryFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send + 'a>>;

impl RlsAuthorizer {
    pub fn new(pool: deadpool_postgres::Pool) -> Self {
        Self {
            pool,
            plans: Mutex::new(HashMap::new()),
            verdicts: Mutex::new(VerdictCache::new(MAX_CACHED_VERDICTS)),
            publication: None,
            metrics: None,
            relevant_updates: Mutex::new(RelevantUpdates::default()),
        }
    }

    /// Caches verdicts whose every source table is in this publication (the one streamed:
    /// its changes are what invalidates them).
    pub fn with_verdict_cache(mut self, publication: &str) -> Self {
        self.publication = Some(publication.to_string());
        self
    }

    pub fn with_metrics(mut self, m: &crate::metrics::Metrics) -> Self {
        self.metrics = Some(CacheMetrics {
            hits: m.counter(
                "ripple_verdict_cache_hits_total",
                "Authorization questions answered from the verdict cache.",
                &[],
            ),
            misses: m.counter(
                "ripple_verdict_cache_misses_total",
                "Cacheable authorization questions asked of the database.",
                &[],
            ),
            invalidations: m.counter(
                "ripple_verdict_cache_invalidations_total",
                "Cached verdicts dropped because a table they were read from changed (or policies did).",
                &[],
            ),
            entries: m.gauge(
                "ripple_verdict_cache_entries",
                "Verdicts in the cache.",
                &[],
            ),
        });
        self
    }

    /// Forget every cached plan and verdict (policies, grants or tables changed).
    pub fn invalidate(&self) {
        self.plans.lock().expect("plan cache lock").clear();
        self.verdicts.lock().expect("verdict cache lock").clear();
        *self.relevant_updates.lock().expect("relevant updates lock") = RelevantUpdates::default();
    }

    fn record_cache_stats(&self) {
        if let Some(m) = &self.metrics {
            let mut cache = self.verdicts.lock().expect("verdict cache lock");
            let s = cache.take_stats();
            m.hits.add(s.hits);
            m.misses.add(s.misses);
            m.invalidations.add(s.invalidated);
            m.entries.set(cache.len() as i64);
        }
    }

    /// Call for every transaction, before authorizing its changes: a transaction that
    /// touched the security feed invalidates the plans.
    pub fn observe(&self, tx: &Transaction) {
        let is = |c: &RowChange, (schema, name): (&str, &str)| {
            c.relation.schema == schema && c.relation.name == name
        };
        let touched = tx
            .changes
            .iter()
            .any(|c| is(c, SECURITY_FEED) || is(c, CACHE_OFF_TABLE));
        if touched {
            tracing::info!("policies or grants changed; authorization plans reloaded");
            self.invalidate();
        }
        if self.publication.is_some() {
            // Every answer read from a table this transaction changed is stale from here
            // (but for UPDATEs of columns no policy or function of theirs names).
            let relevant = self.relevant_updates.lock().expect("relevant updates lock");
            let mut cache = self.verdicts.lock().expect("verdict cache lock");
            let mut bumped: Vec<u32> = Vec::new();
            for c in &tx.changes {
                if !bumped.contains(&c.relation.oid) && relevant.matters(c) {
                    tracing::debug!(table = c.relation.oid, kind = ?c.kind, "table changed");
                    cache.table_changed(c.relation.oid);
                    bumped.push(c.relation.oid);
                }
            }
        }
    }

    async fn plan(
        &self,
        client: &tokio_postgres::Client,
        oid: u32,
        role: &str,
    ) -> Result<Arc<CachedPlan>, tokio_postgres::Error> {
        let key = (oid, role.to_string());
        if let Some(p) = self.plans.lock().expect("plan cache lock").get(&key) {
            if p.loaded.elapsed() < PLAN_TTL {
                return Ok(p.clone());
            }
        }
        let plan = Arc::new(CachedPlan {
            plan: plan::load(client, oid, role).await?,
            loaded: Instant::now(),
        });
        if let Some(spec) = &plan.plan.cache {
            let mut relevant = self.relevant_updates.lock().expect("relevant updates lock");
            match &spec.identifiers {
                Some(names) => relevant.names.extend(names.iter().cloned()),
                None => relevant.all = true,
            }
        }
        self.plans
            .lock()
            .expect("plan cache lock")
            .insert(key, plan.clone());
        Ok(plan)
    }

    /// Answers `asks`, each a (change index, identity index), in one round trip when the
    /// plans are cached. Returns one answer per ask, in order. Fails closed: a check that
    /// errors (a policy raising for some claims, say) makes its rows invisible. The checks
    /// run only once the transactions `xids` are visible to them (so a policy reading other
    /// tables sees the state they left).
    async fn judge(
        &self,
        changes: &[&RowChange],
        identities: &[&Identity],
        asks: &[(usize, usize)],
        xids: &[u32],
    ) -> Result<Vec<Answer>, AuthorizeError> {
        let mut verdicts = vec![Answer::hidden(); asks.len()];
        if asks.is_empty() {
            return Ok(verdicts);
        }
        let pooled = self.pool.get().await.map_err(AuthorizeError::Pool)?;
        let client: &tokio_postgres::Client = &pooled;
        let judged: Vec<Option<Cow<'_, crate::change::Row>>> =
            changes.iter().map(|c| row_to_judge(c)).collect();
        // Each row is serialized once, however many identities ask about it.
        let rows: Vec<Option<String>> = judged
            .iter()
            .map(|r| {
                r.as_ref()
                    .map(|r| serde_json::to_string(r.as_ref()).unwrap_or_default())
            })
            .collect();
        if let Some(publication) = &self.publication {
            let known = self
                .verdicts
                .lock()
                .expect("verdict cache lock")
                .published_known();
            if !known {
                let published: HashSet<u32> = client
                    .query(PUBLISHED_SQL, &[publication])
                    .await
                    .map_err(AuthorizeError::Db)?
                    .iter()
                    .map(|r| r.get::<_, i64>(0) as u32)
                    .collect();
                self.verdicts
                    .lock()
                    .expect("verdict cache lock")
                    .set_published(published);
            }
        }

        // Group the questions: identity -> table -> asks (with the row to check).
        let mut by_identity: HashMap<usize, HashMap<u32, Vec<usize>>> = HashMap::new();
        for (ask_idx, &(change_idx, ident_idx)) in asks.iter().enumerate() {
            if rows[change_idx].is_none() {
                continue; // cannot be judged: stays hidden
            }
            by_identity
                .entry(ident_idx)
                .or_default()
                .entry(changes[change_idx].relation.oid)
                .or_default()
                .push(ask_idx);
        }

        // Resolve plans first (catalog reads only on a cache miss).
        struct Check {
            ident: usize,
            asks: Vec<usize>,
            sql: String,
            /// A JSON array of the rows, as text.
            rows: String,
            /// Where each ask's answer is kept, when the plan allows it (with the tables
            /// its policies name).
            cache: Option<(Vec<VerdictKey>, Vec<u32>)>,
        }
        let mut checks: Vec<Check> = Vec::new();
        // A question asked twice in one batch (the same identity, table and policy-read
        // values: one conversation's messages queued together) is asked once; the rest
        // take its answer. Both would be answered by the same statement anyway.
        let mut leaders: HashMap<VerdictKey, usize> = HashMap::new();
        let mut followers: Vec<(usize, usize)> = Vec::new();
        for (&ident_idx, tables) in &by_identity {
            let role = identities[ident_idx].role();
            for (&oid, table_asks) in tables {
                let cached = self
                    .plan(client, oid, role)
                    .await
                    .map_err(AuthorizeError::Db)?;
                let plan = &cached.plan;
                match &plan.decision {
                    Decision::Never => {}
                    Decision::Always => {
                        for &a in table_asks {
                            verdicts[a] = Answer {
                                visible: true,
                                columns: plan.columns.clone(),
                            };
                        }
                    }
                    Decision::Check(sql) => {
                        for &a in table_asks {
                            // Visible only if the check says so; columns known already.
                            verdicts[a].columns = plan.columns.clone();
                        }
                        // Answered from the cache where it can be; asked otherwise.
                        let spec = plan.cache.as_ref().filter(|_| self.publication.is_some());
                        let mut to_ask = Vec::with_capacity(table_asks.len());
                        let mut keys = Vec::new();
                        if let Some(spec) = spec {
                            let identity = identities[ident_idx].key();
                            let mut cache = self.verdicts.lock().expect("verdict cache lock");
                            for &a in table_asks {
                                let row = judged[asks[a].0].as_ref().expect("judged rows only");
                                let key =
                                    VerdictKey::new(oid, identity.to_string(), &spec.columns, row);
                                match cache.get(&key) {
                                    Some(visible) => {
                                        tracing::debug!(table = oid, visible, "verdict cache hit");
                                        verdicts[a].visible = visible
                                    }
                                    None => {
                                        if let Some(&leader) = leaders.get(&key) {
                                            if cache.keeps(&spec.tables) {
                                                cache.asked_in_batch();
                                            }
                                            followers.push((a, leader));
                                            continue;
                                        }
                                        leaders.insert(key.clone(), a);
                                        to_ask.push(a);
                                        keys.push(key);
                                    }
                                }
                            }
                        } else {
                            to_ask.clone_from(table_asks);
                        }
                        if to_ask.is_empty() {
                            continue;
                        }
                        let batch: Vec<&str> = to_ask
                            .iter()
                            .map(|&a| rows[asks[a].0].as_deref().expect("judged rows only"))
                            .collect();
                        checks.push(Check {
                            ident: ident_idx,
                            asks: to_ask,
                            sql: sql.clone(),
                            rows: format!("[{}]", batch.join(",")),
                            cache: spec.map(|s| (keys, s.tables.clone())),
                        });
                    }
                }
            }
        }
        self.record_cache_stats();
        if checks.is_empty() {
            return Ok(verdicts);
        }
        checks.sort_by_key(|c| c.ident);
        let caching = checks.iter().any(|c| c.cache.is_some());

        let set_claims = pooled
            .prepare_cached(crate::db::SET_REQUEST_CLAIMS_SQL)
            .await
            .map_err(AuthorizeError::Db)?;
        let mut statements = Vec::with_capacity(checks.len());
        for c in &checks {
            statements.push(
                pooled
                    .prepare_cached(&c.sql)
                    .await
                    .map_err(AuthorizeError::Db)?,
            );
        }

        let xids: Vec<i64> = xids
            .iter()
            .filter(|&&x| x >= FIRST_NORMAL_XID)
            .map(|&x| i64::from(x))
            .collect();
        let visible_stmt = match xids.is_empty() {
            false => Some(
                pooled
                    .prepare_cached(VISIBLE_SQL)
                    .await
                    .map_err(AuthorizeError::Db)?,
            ),
            true => None,
        };

        // Fast path: one read-only transaction, every statement pipelined. Retried (after a
        // short wait) while the transaction being judged is not visible yet.
        let wait_started = Instant::now();
        let mut pause = Duration::from_millis(1);
        let outcome = loop {
            let mut futs: Vec<QueryFuture<'_>> = Vec::new();
            futs.push(Box::pin(async {
                client
                    .batch_execute("begin transaction isolation level read committed read only")
                    .await
                    .map(|()| Vec::new())
            }));
            let visible_slot = futs.len();
            if let Some(stmt) = &visible_stmt {
                let xids = &xids;
                futs.push(Box::pin(async move { client.query(stmt, &[xids]).await }));
            }
            let mut result_slots = Vec::new();
            let mut last_ident = None;
            for (i, c) in checks.iter().enumerate() {
                if last_ident != Some(c.ident) {
                    let id = &identities[c.ident];
                    let set_claims = &set_claims;
                    futs.push(Box::pin(async move {
                        client
                            .query(set_claims, &[&id.role(), &id.claims_json()])
                            .await
                    }));
                    last_ident = Some(c.ident);
                }
                result_slots.push(futs.len());
                let stmt = &statements[i];
                futs.push(Box::pin(
                    async move { client.query(stmt, &[&c.rows]).await },
                ));
            }
            futs.push(Box::pin(async {
                client.batch_execute("rollback").await.map(|()| Vec::new())
            }));
            let results = futures_util::future::join_all(futs).await;
            if let Some(bad) = results
                .iter()
                .position(|r| matches!(r, Err(e) if !is_verdict(client, e)))
            {
                // Not an answer: the whole transaction is asked again, elsewhere.
                let _ = client.batch_execute("rollback").await;
                let error = results
                    .into_iter()
                    .nth(bad)
                    .and_then(Result::err)
                    .expect("the failed statement");
                return Err(AuthorizeError::Db(error));
            }
            if visible_stmt.is_some() {
                let seen = results[visible_slot]
                    .as_ref()
                    .ok()
                    .and_then(|rows| rows.first())
                    .map(|r| r.get::<_, bool>(0));
                if seen == Some(false) {
                    let waited = wait_started.elapsed();
                    if waited >= VISIBILITY_WAIT {
                        return Err(AuthorizeError::NotVisible {
                            xid: xids.last().map_or(0, |&x| x as u32),
                            waited,
                        });
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                    continue;
                }
            }
            if results.iter().all(Result::is_ok) {
                break Some(
                    result_slots
                        .iter()
                        .map(|&s| results[s].as_ref().expect("checked ok").clone())
                        .collect::<Vec<_>>(),
                );
            }
            let _ = client.batch_execute("rollback").await;
            break None;
        };
        // Answers are kept only from the fast path: a batch in which a policy raised is
        // answered check by check, and not cached.
        let keep_answers = caching && outcome.is_some();
        let per_check: Vec<Option<Vec<Row>>> = match outcome {
            Some(all) => all.into_iter().map(Some).collect(),
            // Slow path: a policy raised for some claims and aborted the batch. Retry each
            // check alone so one identity's failure hides only its own rows. The
            // transaction is visible by now (the fast path saw it).
            None => {
                let mut out = Vec::with_capacity(checks.len());
                for (i, c) in checks.iter().enumerate() {
                    let id = &identities[c.ident];
                    let r = async {
                        client.batch_execute("begin transaction read only").await?;
                        client
                            .query(&set_claims, &[&id.role(), &id.claims_json()])
                            .await?;
                        let rows = client.query(&statements[i], &[&c.rows]).await;
                        client.batch_execute("rollback").await?;
                        rows
                    }
                    .await;
                    match r {
                        Ok(rows) => out.push(Some(rows)),
                        Err(error) if !is_verdict(client, &error) => {
                            return Err(AuthorizeError::Db(error));
                        }
                        Err(error) => {
                            let _ = client.batch_execute("rollback").await;
                            tracing::warn!(error = %error, role = %id.role(), "authorization check failed; rows hidden");
                            out.push(None);
                        }
                    }
                }
                out
            }
        };
        for (c, rows) in checks.iter().zip(per_check) {
            let Some(rows) = rows else { continue };
            for r in rows {
                let pos: i64 = r.get(0);
                if let Some(&ask) = c.asks.get((pos - 1) as usize) {
                    verdicts[ask].visible = true;
                }
            }
        }
        for &(ask, leader) in &followers {
            verdicts[ask].visible = verdicts[leader].visible;
        }
        // Keep the answers, with every table they may have been read from: the relations
        // the policies and the functions they call name (`CacheSpec::tables`).
        if keep_answers {
            let mut cache = self.verdicts.lock().expect("verdict cache lock");
            for c in &checks {
                let Some((keys, named)) = &c.cache else {
                    continue;
                };
                let sources: HashSet<u32> = named.iter().copied().collect();
                for (key, &ask) in keys.iter().zip(&c.asks) {
                    tracing::debug!(table = key.table, visible = verdicts[ask].visible, sources = ?sources, "verdict cached");
                    cache.put(key.clone(), verdicts[ask].visible, &sources);
                }
            }
        }
        self.record_cache_stats();
        Ok(verdicts)
    }
}

/// The fan-out's questions, answered in one batch: identities are deduplicated across the
/// whole batch, so each is set once per round trip.
impl Authorizer for RlsAuthorizer {
    fn authorize<'a>(
        &'a self,
        txs: &'a [&'a Transaction],
        checks: &'a [Check],
    ) -> AuthorizeFuture<'a> {
        Box::pin(async move {
            let changes: Vec<&RowChange> = checks
                .iter()
                .map(|c| &txs[c.tx].changes[c.change])
                .collect();
            let mut identities: Vec<&Identity> = Vec::new();
            let mut index: HashMap<&str, usize> = HashMap::new();
            let mut asks = Vec::new();
            for (ci, check) in checks.iter().enumerate() {
                for id in &check.identities {
                    let slot = *index.entry(id.key()).or_insert_with(|| {
                        identities.push(id);
                        identities.len() - 1
                    });
                    asks.push((ci, slot));
                }
            }
            let xids: Vec<u32> = txs.iter().map(|t| t.xid).collect();
            let answers = self.judge(&changes, &identities, &asks, &xids).await?;
            let mut answers = answers.into_iter();
            Ok(checks
                .iter()
                .map(|check| {
                    check
                        .identities
                        .iter()
                        .map(|_| match answers.next() {
                            Some(a) if a.visible => Verdict::Visible(ColumnAccess::Only(a.columns)),
                            _ => Verdict::Hidden,
                        })
                        .collect()
                })
                .collect())
        })
    }

    fn observe(&self, tx: &Transaction) {
        RlsAuthorizer::observe(self, tx);
    }
}
