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

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

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
    for p in policies {
        let (expr, whole_row): (String, bool) = (p.get(1), p.get(3));
        // A whole-row reference (the row passed to a function) reads every column.
        if whole_row || mentions_uncacheable(&expr) {
            return Ok(None);
        }
        policy_oids.push(p.get::<_, i64>(2));
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
    let mut columns = Vec::new();
    let mut tables = Vec::new();
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
            if volatility.as_deref() == Some("v")
                || body.as_deref().is_some_and(mentions_uncacheable)
            {
                return Ok(None);
            }
        } else if is_rel && refobj as u32 == oid {
            if let Some(c) = column {
                columns.push(c);
            }
        } else if is_rel {
            tables.push(refobj as u32);
        }
    }
    columns.sort();
    columns.dedup();
    tables.sort_unstable();
    tables.dedup();
    Ok(Some(CacheSpec { columns, tables }))
}
