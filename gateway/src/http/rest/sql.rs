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
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use super::catalog::{Catalog, Column, ForeignKey, Table};
use super::error::ApiError;
use super::parse::{
    Accept, ApiRequest, Condition, Embed, Filter, JsonStep, Op, OrderTerm, Resolution, Return,
    SelectItem, Verb,
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
pub use postgres_protocol::escape::escape_identifier as quote_ident;

pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

/// 400 for a column the relation does not have, in PostgreSQL's words.
fn no_column(relation: &str, column: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        SqlState::UNDEFINED_COLUMN.code(),
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

/// A relation as a statement sees it: its columns, its name (for errors) and the alias
/// its columns are qualified with.
#[derive(Clone, Copy)]
pub struct Rel<'a> {
    pub columns: &'a [Column],
    pub name: &'a str,
    pub alias: &'a str,
}

impl<'a> Rel<'a> {
    pub fn new(columns: &'a [Column], name: &'a str, alias: &'a str) -> Self {
        Self {
            columns,
            name,
            alias,
        }
    }

    fn column(&self, name: &str) -> Result<(&'a Column, String), ApiError> {
        let c = find_column(self.columns, self.name, name)?;
        Ok((c, format!("{}.{}", self.alias, quote_ident(&c.name))))
    }
}

/// A column, or a JSON path into it, as an expression and its SQL type. The path's keys
/// are bound like any value (`"data" -> $3 ->> $4::int`).
fn field_expr(
    binds: &mut Binds,
    rel: Rel<'_>,
    name: &str,
    json: &[JsonStep],
) -> Result<(String, String), ApiError> {
    let (c, mut expr) = rel.column(name)?;
    if json.is_empty() {
        return Ok((expr, c.type_sql.clone()));
    }
    for step in json {
        let key = if step.is_index() {
            format!("{}::int", binds.text(step.key.clone()))
        } else {
            binds.text(step.key.clone())
        };
        expr = format!("{expr} {} {key}", if step.as_text { "->>" } else { "->" });
    }
    Ok(if json.last().is_some_and(|s| s.as_text) {
        (format!("({expr})"), "text".into())
    } else {
        // Compared as jsonb whichever of json/jsonb the column is: json has no `=`.
        (format!("({expr})::jsonb"), "jsonb".into())
    })
}

/// A plain select item (`*` or a column, with its JSON path and cast) as select-list text.
fn plain_item(binds: &mut Binds, rel: Rel<'_>, item: &SelectItem) -> Result<String, ApiError> {
    match item {
        SelectItem::Star => {
            // `*` is every column the role may read; if it may read none, every column,
            // so that PostgreSQL answers with its own permission error, not empty objects.
            let readable: Vec<&Column> = rel.columns.iter().filter(|c| c.readable).collect();
            let cols: Vec<&Column> = if readable.is_empty() {
                rel.columns.iter().collect()
            } else {
                readable
            };
            Ok(cols
                .iter()
                .map(|c| {
                    format!(
                        "{}.{} as {}",
                        rel.alias,
                        quote_ident(&c.name),
                        quote_ident(&c.name)
                    )
                })
                .collect::<Vec<_>>()
                .join(", "))
        }
        SelectItem::Column {
            name,
            alias,
            json,
            cast,
        } => {
            let (expr, _) = field_expr(binds, rel, name, json)?;
            // As in PostgREST, a JSON path is named after its last key.
            let default_name = json.last().map(|s| s.key.as_str()).unwrap_or(name);
            let out = alias.as_deref().unwrap_or(default_name);
            Ok(match cast {
                Some(t) => format!("({expr})::{t} as {}", quote_ident(out)),
                None => format!("{expr} as {}", quote_ident(out)),
            })
        }
        SelectItem::Embed(e) => Err(ApiError::bad_query(format!(
            "\"{}\" cannot be embedded here: embedding follows foreign keys between tables",
            e.name
        ))),
    }
}

/// The select list of a relation without embedding (function results, RETURNING).
pub fn projection(
    binds: &mut Binds,
    rel: Rel<'_>,
    select: &[SelectItem],
) -> Result<String, ApiError> {
    let all = [SelectItem::Star];
    let select = if select.is_empty() { &all[..] } else { select };
    let items = select
        .iter()
        .map(|item| plain_item(binds, rel, item))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(items.join(", "))
}

/// One filter as a boolean expression, its value bound and cast to the column's type.
fn filter_sql(binds: &mut Binds, rel: Rel<'_>, f: &Filter) -> Result<String, ApiError> {
    let (col, ty) = field_expr(binds, rel, &f.column, &f.json)?;
    let expr = match &f.op {
        Op::Cmp(op, value) if op.is_textual() => {
            format!("{col}::text {} {}", op.sql(), binds.text(value.clone()))
        }
        Op::Cmp(op, value) => format!("{col} {} {}::{ty}", op.sql(), binds.text(value.clone())),
        Op::In(values) => format!(
            "{col} = any({}::text[]::{ty}[])",
            binds.bind(Param::TextArray(values.clone()))
        ),
        Op::Is(v) => format!("{col} {}", v.sql()),
        Op::Fts {
            kind,
            language,
            query,
        } => {
            let lang = language
                .as_ref()
                .map(|l| format!("{}::regconfig, ", binds.text(l.clone())));
            let lang = lang.as_deref().unwrap_or("");
            let q = format!("{}({lang}{})", kind.function(), binds.text(query.clone()));
            if ty == "tsvector" {
                format!("{col} @@ {q}")
            } else {
                format!("to_tsvector({lang}{col}::text) @@ {q}")
            }
        }
    };
    Ok(if f.negate {
        format!("not ({expr})")
    } else {
        expr
    })
}

fn condition_sql(binds: &mut Binds, rel: Rel<'_>, c: &Condition) -> Result<String, ApiError> {
    match c {
        Condition::Filter(f) => filter_sql(binds, rel, f),
        Condition::Tree {
            or,
            negate,
            children,
        } => {
            let parts = children
                .iter()
                .map(|c| condition_sql(binds, rel, c))
                .collect::<Result<Vec<_>, _>>()?;
            let joined = format!("({})", parts.join(if *or { " or " } else { " and " }));
            Ok(if *negate {
                format!("not {joined}")
            } else {
                joined
            })
        }
    }
}

/// The conditions as boolean expressions (to be joined with `and`).
pub fn conditions(
    binds: &mut Binds,
    rel: Rel<'_>,
    filters: &[Condition],
) -> Result<Vec<String>, ApiError> {
    filters
        .iter()
        .map(|c| condition_sql(binds, rel, c))
        .collect()
}

fn where_of(parts: &[String]) -> String {
    if parts.is_empty() {
        String::new()
    } else {
        format!(" where {}", parts.join(" and "))
    }
}

/// ` where ...` (or nothing) for the filters, each value bound.
pub fn where_clause(
    binds: &mut Binds,
    rel: Rel<'_>,
    filters: &[Condition],
) -> Result<String, ApiError> {
    Ok(where_of(&conditions(binds, rel, filters)?))
}

pub fn order_clause(rel: Rel<'_>, order: &[OrderTerm]) -> Result<String, ApiError> {
    let mut parts = Vec::new();
    for t in order {
        let (_, col) = rel.column(&t.column)?;
        let mut s = format!("{col} {}", if t.descending { "desc" } else { "asc" });
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
    page_clause(binds, req.limit, req.offset)
}

fn page_clause(binds: &mut Binds, limit: Option<u64>, offset: u64) -> String {
    let limit = binds.bind(Param::Text(limit.map(|l| l.to_string())));
    let offset = binds.text(offset.to_string());
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

/// The select list of one level of a request with what it embeds: the items, the lateral
/// joins that compute the embedded rows, and the conditions `!inner` adds.
struct Level {
    items: String,
    joins: String,
    inner: Vec<String>,
}

/// Builds one statement for a request that may embed related tables. Every embedded
/// table is read in a lateral subquery of the same statement, as the caller's role, so its
/// privileges and row-level security apply exactly as if it were queried alone.
struct Planner<'a> {
    catalog: &'a Catalog,
    req: &'a ApiRequest,
    binds: Binds,
    aliases: usize,
    /// Embedded paths the select list names, to refuse parameters for others.
    used: Vec<Vec<String>>,
}

impl<'a> Planner<'a> {
    fn new(catalog: &'a Catalog, req: &'a ApiRequest) -> Self {
        Self {
            catalog,
            req,
            binds: Binds::default(),
            aliases: 0,
            used: Vec::new(),
        }
    }

    fn level(
        &mut self,
        table: &'a Table,
        alias: &str,
        select: &[SelectItem],
        path: &[String],
    ) -> Result<Level, ApiError> {
        let rel = Rel::new(&table.columns, &table.name, alias);
        let all = [SelectItem::Star];
        let select = if select.is_empty() { &all[..] } else { select };
        let mut items = Vec::new();
        let mut joins = String::new();
        let mut inner = Vec::new();
        for item in select {
            let SelectItem::Embed(e) = item else {
                items.push(plain_item(&mut self.binds, rel, item)?);
                continue;
            };
            let link = relationship(self.catalog, table, e)?;
            let mut child_path = path.to_vec();
            child_path.push(e.key().to_string());
            self.used.push(child_path.clone());
            let params = self.req.embeds.iter().find(|p| p.path == child_path);
            self.aliases += 1;
            let n = self.aliases;
            let child_alias = format!("_ripple_{n}");
            let (rows, body) = (format!("_ripple_t{n}"), format!("_ripple_j{n}"));
            let child = self.level(link.target, &child_alias, &e.select, &child_path)?;
            let child_rel = Rel::new(&link.target.columns, &link.target.name, &child_alias);
            let mut conds: Vec<String> = link
                .pairs
                .iter()
                .map(|(c, p)| {
                    format!(
                        "{child_alias}.{} = {alias}.{}",
                        quote_ident(c),
                        quote_ident(p)
                    )
                })
                .collect();
            if let Some(p) = params {
                conds.extend(conditions(&mut self.binds, child_rel, &p.filters)?);
            }
            conds.extend(child.inner);
            let from = format!(
                "{} {child_alias}{}",
                qualified(&link.target.schema, &link.target.name),
                child.joins
            );
            let filter = where_of(&conds);
            let key = quote_ident(e.key());
            if link.to_one {
                joins.push_str(&format!(
                    " left join lateral (select row_to_json({rows}) as body from \
                     (select {} from {from}{filter}) {rows}) {body} on true",
                    child.items
                ));
                items.push(format!("{body}.body as {key}"));
            } else {
                let (order, page) = match params {
                    Some(p) => (
                        order_clause(child_rel, &p.order)?,
                        if p.limit.is_some() || p.offset > 0 {
                            page_clause(&mut self.binds, p.limit, p.offset)
                        } else {
                            String::new()
                        },
                    ),
                    None => (String::new(), String::new()),
                };
                joins.push_str(&format!(
                    " left join lateral (select json_agg({rows}) as body from \
                     (select {} from {from}{filter}{order}{page}) {rows}) {body} on true",
                    child.items
                ));
                items.push(format!("coalesce({body}.body, '[]') as {key}"));
            }
            if e.inner {
                inner.push(format!("{body}.body is not null"));
            }
        }
        Ok(Level {
            items: items.join(", "),
            joins,
            inner,
        })
    }

    /// Parameters for an embedded resource the select list does not name: PGRST108.
    fn check_unused(&self) -> Result<(), ApiError> {
        for p in &self.req.embeds {
            if !self.used.contains(&p.path) {
                return Err(ApiError::bad_query(format!(
                    "'{}' is not an embedded resource in this request",
                    p.path.join(".")
                ))
                .with_code("PGRST108")
                .with_hint(format!(
                    "Verify that '{}' is included in the 'select' query parameter.",
                    p.path.join(".")
                )));
            }
        }
        Ok(())
    }
}

/// How a parent reaches an embedded table: by which columns, and whether it has at most
/// one related row (it holds the foreign key) or many (the embedded table holds it).
struct Relationship<'a> {
    target: &'a Table,
    to_one: bool,
    /// (embedded table's column, parent's column) pairs to join on.
    pairs: Vec<(&'a str, &'a str)>,
}

fn describe(fk: &ForeignKey, to_one: bool) -> String {
    format!(
        "{} {}.{}({}) references {}.{}({})",
        if to_one { "many-to-one" } else { "one-to-many" },
        fk.schema,
        fk.table,
        fk.columns.join(", "),
        fk.ref_schema,
        fk.ref_table,
        fk.ref_columns.join(", ")
    )
}

/// The foreign key an embedding follows, as PostgREST picks it: the embedded name is a
/// related table (either direction), or one of the parent's foreign key columns or
/// constraint names; a hint (`!fk_name` or `!column`) chooses among several.
fn relationship<'a>(
    catalog: &'a Catalog,
    parent: &Table,
    e: &Embed,
) -> Result<Relationship<'a>, ApiError> {
    let same = |s: &[String], name: &str| s.len() == 1 && s[0] == name;
    let mut found: Vec<(&ForeignKey, bool)> = Vec::new();
    for fk in catalog.foreign_keys() {
        let parent_holds = fk.schema == parent.schema && fk.table == parent.name;
        if parent_holds
            && fk.ref_schema == parent.schema
            && (fk.ref_table == e.name || fk.name == e.name || same(&fk.columns, &e.name))
        {
            found.push((fk, true));
        }
        if fk.ref_schema == parent.schema
            && fk.ref_table == parent.name
            && fk.schema == parent.schema
            && fk.table == e.name
        {
            found.push((fk, false));
        }
    }
    if let Some(hint) = &e.hint {
        found.retain(|(fk, _)| {
            fk.name == *hint || same(&fk.columns, hint) || same(&fk.ref_columns, hint)
        });
        // A self-reference hinted by its column: the parent's own column, many-to-one.
        if found.len() == 2
            && std::ptr::eq(found[0].0, found[1].0)
            && same(&found[0].0.columns, hint)
        {
            found.retain(|(_, to_one)| *to_one);
        }
    }
    let (fk, to_one) = match found.as_slice() {
        [one] => *one,
        [] => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "PGRST200",
                format!(
                    "Could not find a relationship between '{}' and '{}' in the schema cache",
                    parent.name, e.name
                ),
            )
            .with_hint(
                "Embedding follows foreign keys between tables of the exposed schemas; \
                 check the name and the hint",
            ))
        }
        many => {
            return Err(ApiError::new(
                StatusCode::MULTIPLE_CHOICES,
                "PGRST201",
                format!(
                "Could not embed because more than one relationship was found for '{}' and '{}'",
                parent.name, e.name
            ),
            )
            .with_details(
                many.iter()
                    .map(|(fk, one)| describe(fk, *one))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
            .with_hint(format!(
                "Try changing '{}' to one of the following: {}",
                e.name,
                many.iter()
                    .map(|(fk, _)| format!("'{}!{}'", e.name, fk.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    };
    let (schema, name) = if to_one {
        (&fk.ref_schema, &fk.ref_table)
    } else {
        (&fk.schema, &fk.table)
    };
    let target = catalog.table(schema, name).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "PGRST200",
            format!("Could not find the table '{schema}.{name}' in the schema cache"),
        )
    })?;
    let pairs = if to_one {
        fk.ref_columns
            .iter()
            .map(String::as_str)
            .zip(fk.columns.iter().map(String::as_str))
            .collect()
    } else {
        fk.columns
            .iter()
            .map(String::as_str)
            .zip(fk.ref_columns.iter().map(String::as_str))
            .collect()
    };
    Ok(Relationship {
        target,
        to_one,
        pairs,
    })
}

/// Plans a request on a table or view.
pub fn table_statement(
    catalog: &Catalog,
    table: &Table,
    req: &ApiRequest,
) -> Result<Statement, ApiError> {
    match req.verb {
        Verb::Get | Verb::Head => read(catalog, table, req),
        Verb::Post => insert(catalog, table, req),
        Verb::Patch => update(catalog, table, req),
        Verb::Put => put(catalog, table, req),
        Verb::Delete => delete(catalog, table, req),
    }
}

fn has_embeds(select: &[SelectItem]) -> bool {
    select.iter().any(|i| matches!(i, SelectItem::Embed(_)))
}

fn read(catalog: &Catalog, table: &Table, req: &ApiRequest) -> Result<Statement, ApiError> {
    let mut p = Planner::new(catalog, req);
    let level = p.level(table, SRC, &req.select, &[])?;
    p.check_unused()?;
    let rel = Rel::new(&table.columns, &table.name, SRC);
    let mut conds = conditions(&mut p.binds, rel, &req.filters)?;
    conds.extend(level.inner);
    let filter = where_of(&conds);
    let order = order_clause(rel, &req.order)?;
    let limit = limit_clause(&mut p.binds, req);
    let from = format!(
        "{} {SRC}{}",
        qualified(&table.schema, &table.name),
        level.joins
    );
    let total = if req.prefer.count {
        format!("(select count(*) from {from}{filter})")
    } else {
        "null::bigint".into()
    };
    let sql = format!(
        "select {}::text, count(*), {total} from (select {} from {from}{filter}{order}{limit}) _ripple_r",
        json_array_of("_ripple_r", req.accept),
        level.items
    );
    Ok(Statement {
        sql,
        params: p.binds.params,
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
    catalog: &Catalog,
    mut binds: Binds,
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
    let agg = json_array_of("_ripple_r", req.accept);
    if has_embeds(&req.select) {
        // Embedding reads related tables from the written rows, as the caller.
        let mut p = Planner::new(catalog, req);
        p.binds = binds;
        let level = p.level(table, SRC, &req.select, &[])?;
        p.check_unused()?;
        let filter = where_of(&level.inner);
        let sql = format!(
            "with _ripple_w as ({statement} returning {SRC}.*) \
             select {agg}::text, count(*), count(*) from \
             (select {} from _ripple_w {SRC}{}{filter}) _ripple_r",
            level.items, level.joins
        );
        return Ok(Statement {
            sql,
            params: p.binds.params,
            kind: Kind::Rows,
            shape: Shape::Array,
        });
    }
    let rel = Rel::new(&table.columns, &table.name, SRC);
    let proj = projection(&mut binds, rel, &req.select)?;
    let sql = format!(
        "with _ripple_w as ({statement} returning {proj}) \
         select {agg}::text, count(*), count(*) from _ripple_w _ripple_r"
    );
    Ok(Statement {
        sql,
        params: binds.params,
        kind: Kind::Rows,
        shape: Shape::Array,
    })
}

fn insert(catalog: &Catalog, table: &Table, req: &ApiRequest) -> Result<Statement, ApiError> {
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
    let column_list = if names.is_empty() {
        String::new()
    } else {
        format!(" ({})", names.join(", "))
    };
    let mut statement = if req.prefer.missing_default == Some(true) {
        // A key an object leaves out takes the column's default, evaluated per row (the
        // expression is the table's own, from the catalog), not null.
        let values: Vec<String> = cols
            .iter()
            .map(|c| {
                let key = binds.text(c.name.clone());
                format!(
                    "case when _ripple_e.o::jsonb ? {key} then _ripple_b.{} else {} end",
                    quote_ident(&c.name),
                    c.default_sql.as_deref().unwrap_or("null")
                )
            })
            .collect();
        format!(
            "insert into {target} as {SRC}{column_list} select {} from json_array_elements({rows}::json) _ripple_e(o) \
             cross join lateral json_populate_record(null::{target}, _ripple_e.o) _ripple_b",
            values.join(", ")
        )
    } else {
        let values: Vec<String> = names.iter().map(|n| format!("_ripple_b.{n}")).collect();
        format!(
            "insert into {target} as {SRC}{column_list} select {} from json_populate_recordset(null::{target}, {rows}::json) _ripple_b",
            values.join(", ")
        )
    };
    let resolution = if req.verb == Verb::Put {
        Some(Resolution::MergeDuplicates)
    } else {
        req.prefer.resolution
    };
    if let Some(resolution) = resolution {
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
        if updates.is_empty() && req.verb == Verb::Put {
            // Only key columns: still "update" so the row comes back with return=representation.
            let keep: Vec<String> = conflict
                .iter()
                .map(|n| format!("{n} = excluded.{n}"))
                .collect();
            statement.push_str(&format!(" do update set {}", keep.join(", ")));
        } else if resolution == Resolution::IgnoreDuplicates || updates.is_empty() {
            statement.push_str(" do nothing");
        } else {
            statement.push_str(&format!(" do update set {}", updates.join(", ")));
        }
    }
    modification(catalog, binds, table, req, statement)
}

/// PUT: one row, named by `pk=eq.value` filters on exactly its primary key, whose body
/// carries the same key values; inserted, or replaced on conflict, as in PostgREST.
fn put(catalog: &Catalog, table: &Table, req: &ApiRequest) -> Result<Statement, ApiError> {
    let wrong_filters = || {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "PGRST105",
            "Filters must include all and only primary key columns with 'eq' operators",
        )
    };
    if table.primary_key.is_empty() {
        return Err(wrong_filters());
    }
    let mut keyed: Vec<(&str, &str)> = Vec::new();
    for c in &req.filters {
        match c {
            Condition::Filter(Filter {
                column,
                json,
                negate: false,
                op: Op::Cmp(super::parse::CmpOp::Eq, value),
            }) if json.is_empty() && table.primary_key.contains(column) => {
                keyed.push((column, value))
            }
            _ => return Err(wrong_filters()),
        }
    }
    let mut named: Vec<&str> = keyed.iter().map(|(c, _)| *c).collect();
    named.sort_unstable();
    named.dedup();
    if named.len() != keyed.len() || named.len() != table.primary_key.len() {
        return Err(wrong_filters());
    }
    let payload = req
        .payload
        .as_ref()
        .ok_or_else(|| ApiError::bad_body("Empty or invalid json"))?;
    let mismatch = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "PGRST115",
            "Payload values do not match URL in primary key column(s)",
        )
    };
    for (column, value) in &keyed {
        let body_value = match payload.value.get(*column) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Null) | None => return Err(mismatch()),
            Some(v) => v.to_string(),
        };
        if body_value != *value {
            return Err(mismatch());
        }
    }
    let mut req = req.clone();
    req.on_conflict = None;
    insert(catalog, table, &req)
}

fn update(catalog: &Catalog, table: &Table, req: &ApiRequest) -> Result<Statement, ApiError> {
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
    let filter = where_clause(
        &mut binds,
        Rel::new(&table.columns, &table.name, SRC),
        &req.filters,
    )?;
    let statement = format!(
        "update {target} as {SRC} set {} from json_populate_record(null::{target}, {row}::json) _ripple_b{filter}",
        sets.join(", ")
    );
    modification(catalog, binds, table, req, statement)
}

fn delete(catalog: &Catalog, table: &Table, req: &ApiRequest) -> Result<Statement, ApiError> {
    let mut binds = Binds::default();
    let target = qualified(&table.schema, &table.name);
    let filter = where_clause(
        &mut binds,
        Rel::new(&table.columns, &table.name, SRC),
        &req.filters,
    )?;
    let statement = format!("delete from {target} as {SRC}{filter}");
    modification(catalog, binds, table, req, statement)
}
