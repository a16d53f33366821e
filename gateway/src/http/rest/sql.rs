//! Building statements from a parsed request and the catalog. Pure: no I/O.
//!
//! The shape of the SQL comes only from the catalog (names, quoted here; types, as
//! `format_type` wrote them) and from fixed operator tables. Every value the request carries
//! is a bound parameter, sent as `text` and cast in SQL to the column's type
//! (`$1::uuid`, `$2::text[]::public.message_kind[]`, `$3::json`), so no input can change
//! what the statement does, only which rows it touches.
//!
//! Every row-returning statement yields one row: `(body text, page bigint, total bigint)`:
//! the JSON to send, how many rows it holds, and the full count when `count=exact` asked.

use hyper::StatusCode;
use tokio_postgres::types::Type;

use super::catalog::{Column, Table};
use super::error::ApiError;
use super::parse::{
    Accept, ApiRequest, Filter, Op, OrderTerm, Resolution, Return, SelectItem, Verb,
};

/// Alias of the table or function rows inside every statement; column references are
/// always qualified with it so that no name from the request can be ambiguous.
pub const SRC: &str = "_ripple_src";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    Text(Option<String>),
    TextArray(Vec<String>),
}

impl Param {
    pub fn pg_type(&self) -> Type {
        match self {
            Param::Text(_) => Type::TEXT,
            Param::TextArray(_) => Type::TEXT_ARRAY,
        }
    }
}

/// How the result becomes a response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A JSON array of rows.
    Array,
    /// A function returning one composite value: the row as an object (`null` if none).
    Object,
    /// A function returning a scalar: its JSON value.
    Scalar,
    /// Nothing to send (a void function, or `return=minimal`).
    Empty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One row `(body, page, total)`.
    Rows,
    /// No rows; the count of affected rows is all we learn.
    Execute,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Param>,
    pub kind: Kind,
    pub shape: Shape,
}

impl Statement {
    pub fn param_types(&self) -> Vec<Type> {
        self.params.iter().map(Param::pg_type).collect()
    }
}

/// Parameters collect here as SQL is written; `bind` answers the placeholder.
#[derive(Default)]
pub struct Binds {
    pub params: Vec<Param>,
}

impl Binds {
    pub fn bind(&mut self, p: Param) -> String {
        self.params.push(p);
        format!("${}", self.params.len())
    }

    pub fn text(&mut self, s: impl Into<String>) -> String {
        self.bind(Param::Text(Some(s.into())))
    }
}

/// `"name"`, with inner quotes doubled (the parser already refuses them; this is the
/// second line of defence).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

/// 400 for a column the relation does not have, in PostgreSQL's words.
fn no_column(relation: &str, column: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "42703",
        format!("column {relation}.{column} does not exist"),
    )
}

pub fn find_column<'a>(
    columns: &'a [Column],
    relation: &str,
    name: &str,
) -> Result<&'a Column, ApiError> {
    columns
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| no_column(relation, name))
}

/// The select list: `_ripple_src."a" as "a", _ripple_src."b" as "alias"`. `*` (or no
/// `select=`) is every column the role may read; if it may read none, every column, so
/// that PostgreSQL answers with its own permission error rather than empty objects.
pub fn projection(
    columns: &[Column],
    relation: &str,
    select: &[SelectItem],
) -> Result<String, ApiError> {
    let star = || -> Vec<&Column> {
        let readable: Vec<&Column> = columns.iter().filter(|c| c.readable).collect();
        if readable.is_empty() {
            columns.iter().collect()
        } else {
            readable
        }
    };
    let mut items = Vec::new();
    let all = [SelectItem::Star];
    let select = if select.is_empty() { &all[..] } else { select };
    for item in select {
        match item {
            SelectItem::Star => {
                for c in star() {
                    items.push(format!(
                        "{SRC}.{} as {}",
                        quote_ident(&c.name),
                        quote_ident(&c.name)
                    ));
                }
            }
            SelectItem::Column { name, alias } => {
                let c = find_column(columns, relation, name)?;
                let alias = alias.as_deref().unwrap_or(&c.name);
                items.push(format!(
                    "{SRC}.{} as {}",
                    quote_ident(&c.name),
                    quote_ident(alias)
                ));
            }
        }
    }
    Ok(items.join(", "))
}

/// ` where ...` (or nothing) for the filters, each value bound.
pub fn where_clause(
    binds: &mut Binds,
    columns: &[Column],
    relation: &str,
    filters: &[Filter],
) -> Result<String, ApiError> {
    let mut parts = Vec::new();
    for f in filters {
        let c = find_column(columns, relation, &f.column)?;
        let col = format!("{SRC}.{}", quote_ident(&c.name));
        let expr = match &f.op {
            Op::Cmp(op, value) => match op {
                super::parse::CmpOp::Like | super::parse::CmpOp::Ilike => {
                    format!("{col}::text {} {}", op.sql(), binds.text(value.clone()))
                }
                _ => format!(
                    "{col} {} {}::{}",
                    op.sql(),
                    binds.text(value.clone()),
                    c.type_sql
                ),
            },
            Op::In(values) => format!(
                "{col} = any({}::text[]::{}[])",
                binds.bind(Param::TextArray(values.clone())),
                c.type_sql
            ),
            Op::Is(v) => format!("{col} {}", v.sql()),
        };
        parts.push(if f.negate {
            format!("not ({expr})")
        } else {
            expr
        });
    }
    Ok(if parts.is_empty() {
        String::new()
    } else {
        format!(" where {}", parts.join(" and "))
    })
}

pub fn order_clause(
    columns: &[Column],
    relation: &str,
    order: &[OrderTerm],
) -> Result<String, ApiError> {
    let mut parts = Vec::new();
    for t in order {
        let c = find_column(columns, relation, &t.column)?;
        let mut s = format!(
            "{SRC}.{} {}",
            quote_ident(&c.name),
            if t.descending { "desc" } else { "asc" }
        );
        match t.nulls_first {
            Some(true) => s.push_str(" nulls first"),
            Some(false) => s.push_str(" nulls last"),
            None => {}
        }
        parts.push(s);
    }
    Ok(if parts.is_empty() {
        String::new()
    } else {
        format!(" order by {}", parts.join(", "))
    })
}

/// ` limit $n::bigint offset $m::bigint`: bound, so every page size shares one statement.
pub fn limit_clause(binds: &mut Binds, req: &ApiRequest) -> String {
    let limit = binds.bind(Param::Text(req.limit.map(|l| l.to_string())));
    let offset = binds.text(req.offset.to_string());
    format!(" limit {limit}::bigint offset {offset}::bigint")
}

/// `coalesce(json_agg(_ripple_r), '[]')`, without nulls if the client asked.
pub fn json_array_of(row: &str, accept: Accept) -> String {
    let agg = format!("coalesce(json_agg({row}), '[]')");
    if accept.strip_nulls() {
        format!("json_strip_nulls({agg})")
    } else {
        agg
    }
}

/// Plans a request on a table or view.
pub fn table_statement(table: &Table, req: &ApiRequest) -> Result<Statement, ApiError> {
    match req.verb {
        Verb::Get | Verb::Head => read(table, req),
        Verb::Post => insert(table, req),
        Verb::Patch => update(table, req),
        Verb::Delete => delete(table, req),
    }
}

fn relation_name(table: &Table) -> &str {
    &table.name
}

fn read(table: &Table, req: &ApiRequest) -> Result<Statement, ApiError> {
    let rel = relation_name(table);
    let mut binds = Binds::default();
    let proj = projection(&table.columns, rel, &req.select)?;
    let filter = where_clause(&mut binds, &table.columns, rel, &req.filters)?;
    let order = order_clause(&table.columns, rel, &req.order)?;
    let limit = limit_clause(&mut binds, req);
    let from = format!("{} {SRC}", qualified(&table.schema, &table.name));
    let total = if req.prefer.count {
        format!("(select count(*) from {from}{filter})")
    } else {
        "null::bigint".into()
    };
    let sql = format!(
        "select {}::text, count(*), {total} from (select {proj} from {from}{filter}{order}{limit}) _ripple_r",
        json_array_of("_ripple_r", req.accept)
    );
    Ok(Statement {
        sql,
        params: binds.params,
        kind: Kind::Rows,
        shape: Shape::Array,
    })
}

/// Body keys must be columns of the table (PostgREST's PGRST204).
fn payload_columns<'a>(table: &'a Table, keys: &[String]) -> Result<Vec<&'a Column>, ApiError> {
    keys.iter()
        .map(|k| {
            table.column(k).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "PGRST204",
                    format!(
                        "Could not find the '{k}' column of '{}' in the schema cache",
                        table.name
                    ),
                )
            })
        })
        .collect()
}

/// Wraps a data-modifying statement: with `return=representation` its RETURNING rows become
/// the body; otherwise it runs bare (no RETURNING, so no SELECT rights or policies are
/// needed on the rows written, as in PostgREST).
fn modification(
    binds: Binds,
    table: &Table,
    req: &ApiRequest,
    statement: String,
) -> Result<Statement, ApiError> {
    if req.prefer.return_ != Some(Return::Representation) {
        return Ok(Statement {
            sql: statement,
            params: binds.params,
            kind: Kind::Execute,
            shape: Shape::Empty,
        });
    }
    let proj = projection(&table.columns, relation_name(table), &req.select)?;
    let sql = format!(
        "with _ripple_w as ({statement} returning {proj}) \
         select {}::text, count(*), count(*) from _ripple_w _ripple_r",
        json_array_of("_ripple_r", req.accept)
    );
    Ok(Statement {
        sql,
        params: binds.params,
        kind: Kind::Rows,
        shape: Shape::Array,
    })
}

fn insert(table: &Table, req: &ApiRequest) -> Result<Statement, ApiError> {
    let payload = req
        .payload
        .as_ref()
        .ok_or_else(|| ApiError::bad_body("Empty or invalid json"))?;
    let cols = payload_columns(table, &payload.keys)?;
    let mut binds = Binds::default();
    // json_populate_recordset takes an array; a single object becomes a one-row array.
    let rows = if payload.value.is_array() {
        payload.json.clone()
    } else {
        format!("[{}]", payload.json)
    };
    let rows = binds.text(rows);
    let target = qualified(&table.schema, &table.name);
    let names: Vec<String> = cols.iter().map(|c| quote_ident(&c.name)).collect();
    let values: Vec<String> = names.iter().map(|n| format!("_ripple_b.{n}")).collect();
    let column_list = if names.is_empty() {
        String::new()
    } else {
        format!(" ({})", names.join(", "))
    };
    let mut statement = format!(
        "insert into {target} as {SRC}{column_list} select {} from json_populate_recordset(null::{target}, {rows}::json) _ripple_b",
        values.join(", ")
    );
    if let Some(resolution) = req.prefer.resolution {
        let conflict: Vec<String> = match &req.on_conflict {
            Some(cols) => cols
                .iter()
                .map(|c| find_column(&table.columns, &table.name, c).map(|c| quote_ident(&c.name)))
                .collect::<Result<_, _>>()?,
            None => table.primary_key.iter().map(|c| quote_ident(c)).collect(),
        };
        if conflict.is_empty() {
            return Err(ApiError::bad_query(
                "an upsert needs on_conflict= or a primary key on the table",
            ));
        }
        let updates: Vec<String> = names
            .iter()
            .filter(|n| !conflict.contains(n))
            .map(|n| format!("{n} = excluded.{n}"))
            .collect();
        statement.push_str(&format!(" on conflict ({})", conflict.join(", ")));
        if resolution == Resolution::IgnoreDuplicates || updates.is_empty() {
            statement.push_str(" do nothing");
        } else {
            statement.push_str(&format!(" do update set {}", updates.join(", ")));
        }
    }
    modification(binds, table, req, statement)
}

fn update(table: &Table, req: &ApiRequest) -> Result<Statement, ApiError> {
    let payload = req
        .payload
        .as_ref()
        .ok_or_else(|| ApiError::bad_body("Empty or invalid json"))?;
    let cols = payload_columns(table, &payload.keys)?;
    if cols.is_empty() {
        return Err(ApiError::bad_body("PATCH needs at least one column to set"));
    }
    let mut binds = Binds::default();
    let row = binds.text(payload.json.clone());
    let target = qualified(&table.schema, &table.name);
    let sets: Vec<String> = cols
        .iter()
        .map(|c| {
            let n = quote_ident(&c.name);
            format!("{n} = _ripple_b.{n}")
        })
        .collect();
    let filter = where_clause(&mut binds, &table.columns, &table.name, &req.filters)?;
    let statement = format!(
        "update {target} as {SRC} set {} from json_populate_record(null::{target}, {row}::json) _ripple_b{filter}",
        sets.join(", ")
    );
    modification(binds, table, req, statement)
}

fn delete(table: &Table, req: &ApiRequest) -> Result<Statement, ApiError> {
    let mut binds = Binds::default();
    let target = qualified(&table.schema, &table.name);
    let filter = where_clause(&mut binds, &table.columns, &table.name, &req.filters)?;
    let statement = format!("delete from {target} as {SRC}{filter}");
    modification(binds, table, req, statement)
}
