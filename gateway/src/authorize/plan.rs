//! Turning a table's row-level security into one statement that asks PostgreSQL which of a
//! batch of rows a role may see.
//!
//! The policies are the DBA's own SQL, read from `pg_policy` with `pg_get_expr`. We only
//! combine them the way PostgreSQL does for SELECT (permissive ones ORed, restrictive ones
//! ANDed onto them, only those that apply to the role) and evaluate that expression over the
//! rows the replication stream carried, rebuilt with `jsonb_populate_record` into the
//! table's own row type. Functions the policies call run as the role, with its claims, as in
//! a real query. Nothing here decides visibility in Rust.

use std::collections::HashSet;
use std::sync::Arc;

/// How to check one (table, role) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckPlan {
    pub decision: Decision,
    /// Columns the role may SELECT (table or column privilege).
    pub columns: Arc<HashSet<String>>,
    /// When a `Check`'s verdicts may be cached, and keyed by what.
    pub cache: Option<CacheSpec>,
}

/// A check whose answer depends only on the claims, the values of `columns` in the row and
/// the contents of tables (the stream shows their changes): never on time, randomness or
/// the whole row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSpec {
    /// The table's columns the policies read, in a fixed order.
    pub columns: Vec<String>,
    /// Other tables the policies' expressions read directly (functions are observed when
    /// they run).
    pub tables: Vec<u32>,
    /// Every identifier in the policies and in the bodies of the functions they call
    /// (followed by name): a column of another table that none of them names cannot have
    /// been read, so an UPDATE that changes only such columns leaves the answer standing
    /// (a chat's per-member counters change with every message; membership does not).
    /// `None` when a body may read columns it does not name (`*`, a whole row, dynamic SQL).
    pub identifiers: Option<HashSet<String>>,
}

/// SQL that reads columns without naming them.
const OPAQUE_PATTERNS: &[&str] = &[
    ".*",
    "select *",
    "row_to_json",
    "to_json(",
    "to_jsonb(",
    "jsonb_populate",
    "json_populate",
    "hstore(",
    "execute ",
    "format(",
];

fn identifiers(text: &str, out: &mut HashSet<String>) {
    let lower = text.to_ascii_lowercase();
    for token in lower.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$')) {
        if token.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            out.insert(token.to_string());
        }
    }
}

fn opaque(text: &str) -> bool {
    let lower = text.to_ascii_lowercase().replace("count(*)", "count()");
    let squeezed: String = lower.split_whitespace().collect::<Vec<_>>().join(" ");
    OPAQUE_PATTERNS.iter().any(|p| squeezed.contains(p))
}

/// Functions whose result changes without any table changing. A policy that calls one,
/// directly or in the body of a function it calls, is never cached.
const UNCACHEABLE_WORDS: &[&str] = &[
    "now",
    "current_date",
    "current_time",
    "current_timestamp",
    "localtime",
    "localtimestamp",
    "clock_timestamp",
    "statement_timestamp",
    "transaction_timestamp",
    "timeofday",
    "random",
    "gen_random_uuid",
    "uuid_generate",
    "txid_current",
    "pg_current_xact_id",
    "nextval",
    "inet_client_addr",
    "pg_backend_pid",
];

fn mentions_uncacheable(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    UNCACHEABLE_WORDS.iter().any(|w| {
        lower.match_indices(w).any(|(i, _)| {
            let before = i.checked_sub(1).map(|j| bytes[j]);
            let after = bytes.get(i + w.len()).copied();
            let ident = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_');
            !ident(before) && !ident(after)
        })
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No row is visible: no privilege, no permissive policy, or a role we must not use.
    Never,
    /// Every row is visible: RLS disabled on the table, or the role bypasses it.
    Always,
    /// Run this statement with `$1` = a JSON array of rows (as text); it returns the
    /// 1-based positions of the visible ones.
    Check(String),
}

/// Names the check statement's own columns so they cannot collide with a table's.
const ROW: &str = "__ripple_row";
const IDX: &str = "__ripple_idx";

use postgres_protocol::escape::escape_identifier as quote_ident;

/// Reads the catalog and builds the plan for `role` on table `oid`.
pub async fn load(
    client: &tokio_postgres::Client,
    oid: u32,
    role: &str,
) -> Result<CheckPlan, tokio_postgres::Error> {
    let never = || CheckPlan {
        decision: Decision::Never,
        columns: Arc::new(HashSet::new()),
        cache: None,
    };
    // A token may name any role; we act only for roles that exist, are not superusers, and
    // that this connection may switch to (SET ROLE fails otherwise, and that fails closed).
    let Some(role_row) = client
        .query_opt(
            "select rolsuper, rolbypassrls from pg_roles where rolname = $1",
            &[&role],
        )
        .await?
    else {
        return Ok(never());
    };
    let (is_super, bypass): (bool, bool) = (role_row.get(0), role_row.get(1));
    if is_super {
        return Ok(never());
    }
    let Some(table) = client
        .query_opt(
            "select n.nspname::text, c.relname::text, c.relrowsecurity \
               from pg_class c join pg_namespace n on n.oid = c.relnamespace \
              where c.oid = $1::int8::oid",
            &[&(oid as i64)],
        )
        .await?
    else {
        return Ok(never());
    };
    let (schema, name, rls): (String, String, bool) = (table.get(0), table.get(1), table.get(2));
    let columns: HashSet<String> = client
        .query(
            "select a.attname::text from pg_attribute a \
              where a.attrelid = $1::int8::oid and a.attnum > 0 and not a.attisdropped \
                and has_column_privilege($2, a.attrelid, a.attnum, 'SELECT') \
              order by a.attnum",
            &[&(oid as i64), &role],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if columns.is_empty() {
        return Ok(never());
    }
    let columns = Arc::new(columns);
    if !rls || bypass {
        return Ok(CheckPlan {
            decision: Decision::Always,
            columns,
            cache: None,
        });
    }
    // Policies for SELECT (or ALL) that apply to this role, directly or through membership.
    let policies = client
        .query(
            "select p.polpermissive, coalesce(pg_get_expr(p.polqual, p.polrelid), 'true'), \
                    p.oid::int8, coalesce(p.polqual::text like '%:varattno 0 %', false) \
               from pg_policy p \
              where p.polrelid = $1::int8::oid and p.polcmd in ('r', '*') \
                and exists (select 1 from unnest(p.polroles) r(oid) \
                             where r.oid = 0 or pg_has_role($2, r.oid, 'MEMBER')) \
              order by p.polname",
            &[&(oid as i64), &role],
        )
        .await?;
    let (permissive, restrictive): (Vec<_>, Vec<_>) =
        policies.iter().partition(|r| r.get::<_, bool>(0));
    if permissive.is_empty() {
        // PostgreSQL's default-deny: with RLS on, no permissive policy means no rows.
        return Ok(CheckPlan {
            decision: Decision::Never,
            columns,
            cache: None,
        });
    }
    let any = permissive
        .iter()
        .map(|r| format!("({})", r.get::<_, String>(1)))
        .collect::<Vec<_>>()
        .join(" or ");
    let mut qual = format!("({any})");
    for r in &restrictive {
        qual.push_str(&format!(" and ({})", r.get::<_, String>(1)));
    }
    let alias = quote_ident(&name);
    let sql = format!(
        "select e.{IDX} from jsonb_array_elements($1::text::jsonb) with ordinality as e({ROW}, {IDX}) \
         cross join lateral jsonb_populate_record(null::{}.{alias}, e.{ROW}) as {alias} \
         where {qual}",
        quote_ident(&schema)
    );
    let cache = cache_spec(client, oid, &policies).await?;
    Ok(CheckPlan {
        decision: Decision::Check(sql),
        columns,
        cache,
    })
}

/// Whether the verdicts of these policies may be cached, and by what they are keyed.
async fn cache_spec(
    client: &tokio_postgres::Client,
    oid: u32,
    policies: &[tokio_postgres::Row],
) -> Result<Option<CacheSpec>, tokio_postgres::Error> {
    // The DBA said no (the table exists from migration V8 on).
    let off: bool = client
        .query_one(
            "select to_regclass('ripple.verdict_cache_off') is not null \
                    and exists (select 1 from ripple.verdict_cache_off \
                                 where table_name = $1::int8::oid::regclass)",
            &[&(oid as i64)],
        )
        .await
        .map(|r| r.get(0))
        .or_else(|_| Ok::<bool, tokio_postgres::Error>(false))?;
    if off {
        return Ok(None);
    }
    let mut policy_oids = Vec::with_capacity(policies.len());
    let mut exprs = Vec::with_capacity(policies.len());
    for p in policies {
        let (expr, whole_row): (String, bool) = (p.get(1), p.get(3));
        // A whole-row reference (the row passed to a function) reads every column.
        if whole_row || mentions_uncacheable(&expr) {
            return Ok(None);
        }
        policy_oids.push(p.get::<_, i64>(2));
        exprs.push(expr);
    }
    let reads = policy_reads(client, oid, &policy_oids, &exprs).await?;
    if reads.time_or_chance || reads.unnamed_reads {
        return Ok(None);
    }
    Ok(Some(CacheSpec {
        columns: reads.own_columns,
        tables: reads.tables,
        identifiers: Some(reads.names),
    }))
}

/// What a set of policies reads, as far as the catalog and the bodies of the functions they
/// call tell.
#[derive(Debug, Default)]
pub struct PolicyReads {
    /// Columns of the policies' own table that they name (from `pg_depend`).
    pub own_columns: Vec<String>,
    /// Relations the policies or those bodies name, by name in any schema (a superset),
    /// a view standing for the tables under it.
    pub tables: Vec<u32>,
    /// Every identifier in the policies and in those bodies.
    pub names: HashSet<String>,
    /// A body reads columns it does not name (`*`, a whole row, dynamic SQL), or calls
    /// functions deeper than we follow: `names` is not the whole story.
    pub unnamed_reads: bool,
    /// A volatile function, or a body that asks the clock or for randomness.
    pub time_or_chance: bool,
}

/// Reads the catalog for what the policies `policy_oids` (their expressions `exprs`) on
/// table `oid` read.
pub(crate) async fn policy_reads(
    client: &tokio_postgres::Client,
    oid: u32,
    policy_oids: &[i64],
    exprs: &[String],
) -> Result<PolicyReads, tokio_postgres::Error> {
    let mut reads = PolicyReads::default();
    for expr in exprs {
        identifiers(expr, &mut reads.names);
        reads.time_or_chance |= mentions_uncacheable(expr);
    }
    let deps = client
        .query(
            "select c.attname::text, d.refobjid::int8, f.provolatile::text, f.prosrc, \
                    d.refclassid = 'pg_class'::regclass, d.refclassid = 'pg_proc'::regclass \
               from pg_depend d \
               left join pg_attribute c on d.refclassid = 'pg_class'::regclass \
                    and c.attrelid = d.refobjid and c.attnum = d.refobjsubid and d.refobjsubid > 0 \
               left join pg_proc f on d.refclassid = 'pg_proc'::regclass and f.oid = d.refobjid \
              where d.classid = 'pg_policy'::regclass and d.objid = any($1::int8[]::oid[])",
            &[&policy_oids],
        )
        .await?;
    let mut bodies: Vec<String> = Vec::new();
    for d in &deps {
        let (column, refobj, volatility, body, is_rel, is_proc): (
            Option<String>,
            i64,
            Option<String>,
            Option<String>,
            bool,
            bool,
        ) = (d.get(0), d.get(1), d.get(2), d.get(3), d.get(4), d.get(5));
        if is_proc {
            // Volatile functions may answer differently each time; a body that asks the
            // clock does too.
            reads.time_or_chance |= volatility.as_deref() == Some("v")
                || body.as_deref().is_some_and(mentions_uncacheable);
            bodies.extend(body);
        } else if is_rel && refobj as u32 == oid {
            if let Some(c) = column {
                reads.own_columns.push(c);
            }
        } else if is_rel {
            reads.tables.push(refobj as u32);
        }
    }
    // The functions those bodies call, by name, a few levels down: their bodies too must be
    // free of time and randomness, and their identifiers count.
    let mut seen: HashSet<String> = HashSet::new();
    let mut depth = 0;
    while !bodies.is_empty() && depth < 6 {
        depth += 1;
        let mut called: Vec<String> = Vec::new();
        for body in &bodies {
            identifiers(body, &mut reads.names);
            reads.unnamed_reads |= opaque(body);
            called.extend(
                called_names(body)
                    .into_iter()
                    .filter(|n| seen.insert(n.clone())),
            );
        }
        bodies.clear();
        if called.is_empty() {
            break;
        }
        let rows = client
            .query(
                "select provolatile::text, prosrc from pg_proc p join pg_language l on l.oid = p.prolang \
                  where p.proname = any($1::text[]) and l.lanname in ('sql', 'plpgsql')",
                &[&called],
            )
            .await?;
        for r in rows {
            let (volatility, body): (String, String) = (r.get(0), r.get(1));
            reads.time_or_chance |= volatility == "v" || mentions_uncacheable(&body);
            bodies.push(body);
        }
    }
    // Deeper than we follow.
    reads.unnamed_reads |= !bodies.is_empty();
    // Every relation the policies or those bodies name, by name in any schema (a superset):
    // an answer depends on them, and the stream must be able to show their changes. A view
    // stands for the tables it reads.
    let named: Vec<String> = reads.names.iter().cloned().collect();
    let rels = client
        .query(
            "select c.oid::int8, c.relkind::text from pg_class c \
              where c.relname = any($1::text[]) and c.relkind in ('r', 'p', 'v', 'm', 'f')",
            &[&named],
        )
        .await?;
    let mut views = Vec::new();
    for r in &rels {
        let (rel, kind): (i64, String) = (r.get(0), r.get(1));
        if kind == "v" || kind == "m" {
            views.push(rel);
        }
        reads.tables.push(rel as u32);
    }
    if !views.is_empty() {
        let under = client
            .query(
                "select distinct d.refobjid::int8 from pg_rewrite w \
                   join pg_depend d on d.classid = 'pg_rewrite'::regclass and d.objid = w.oid \
                    and d.refclassid = 'pg_class'::regclass and d.refobjid <> w.ev_class \
                  where w.ev_class = any($1::int8[]::oid[])",
                &[&views],
            )
            .await?;
        reads
            .tables
            .extend(under.iter().map(|r| r.get::<_, i64>(0) as u32));
    }
    reads.own_columns.sort();
    reads.own_columns.dedup();
    reads.tables.sort_unstable();
    reads.tables.dedup();
    Ok(reads)
}

/// What the policies on `realtime.messages` read: they decide who may use a private
/// channel, so a change to what they read may revoke a joined one. Every command's
/// policies count (`USING` and `WITH CHECK`), for every role. None without the table.
pub async fn private_channel_reads(
    client: &tokio_postgres::Client,
) -> Result<Option<PolicyReads>, tokio_postgres::Error> {
    let Some(oid) = client
        .query_one("select to_regclass('realtime.messages')::oid::int8", &[])
        .await?
        .get::<_, Option<i64>>(0)
    else {
        return Ok(None);
    };
    let policies = client
        .query(
            "select p.oid::int8, coalesce(pg_get_expr(p.polqual, p.polrelid), ''), \
                    coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '') \
               from pg_policy p where p.polrelid = $1::int8::oid",
            &[&oid],
        )
        .await?;
    let oids: Vec<i64> = policies.iter().map(|r| r.get(0)).collect();
    let exprs: Vec<String> = policies
        .iter()
        .flat_map(|r| [r.get::<_, String>(1), r.get::<_, String>(2)])
        .collect();
    policy_reads(client, oid as u32, &oids, &exprs)
        .await
        .map(Some)
}

/// Names followed by `(` in a function body: the functions (or keywords) it calls.
fn called_names(body: &str) -> Vec<String> {
    let lower = body.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_alphabetic() || bytes[i] == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let mut j = i;
            while j < bytes.len() && bytes[j] == b' ' {
                j += 1;
            }
            if bytes.get(j) == Some(&b'(') {
                out.push(lower[start..i].to_string());
            }
        } else {
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_and_randomness_are_found_as_words_only() {
        assert!(mentions_uncacheable(
            "created_at > now() - interval '1 day'"
        ));
        assert!(mentions_uncacheable("CURRENT_DATE"));
        assert!(mentions_uncacheable("random() < 0.5"));
        assert!(!mentions_uncacheable("select known_user, snow from t"));
        assert!(!mentions_uncacheable("private.is_member(conversation_id)"));
    }

    #[test]
    fn bodies_that_read_unnamed_columns_are_opaque() {
        assert!(opaque("select * from public.conversation_members"));
        assert!(opaque("select to_jsonb(m) from t m"));
        assert!(opaque("EXECUTE format('select %I from t', c)"));
        assert!(!opaque(
            "select count(*) from public.conversation_members m where m.user_id = $1"
        ));
        assert!(!opaque("select exists (select 1 from t where t.a = conv)"));
    }

    #[test]
    fn called_names_and_identifiers() {
        let body = "select exists (select 1 from public.conversation_members m \
                    where m.conversation_id = conv and m.user_id = (select auth.uid ()))";
        let called = called_names(body);
        assert!(called.contains(&"uid".to_string()) && called.contains(&"exists".to_string()));
        let mut names = HashSet::new();
        identifiers(body, &mut names);
        assert!(names.contains("conversation_id") && names.contains("user_id"));
        assert!(!names.contains("sent_since_read"));
    }
}
