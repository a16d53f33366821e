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
        });
    }
    // Policies for SELECT (or ALL) that apply to this role, directly or through membership.
    let policies = client
        .query(
            "select p.polpermissive, coalesce(pg_get_expr(p.polqual, p.polrelid), 'true') \
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
    Ok(CheckPlan {
        decision: Decision::Check(sql),
        columns,
    })
}
