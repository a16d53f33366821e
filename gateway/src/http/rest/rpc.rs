//! `/rpc/<function>`: choosing the function from its named arguments, and the statement
//! that calls it. Pure: no I/O.
//!
//! Arguments travel as one `json` parameter and are typed by `json_to_record` with the
//! function's own argument types (the way PostgREST does it), so JSON arrays become
//! PostgreSQL arrays, objects become `jsonb`, and strings from a GET query string go
//! through each type's input function. Only the arguments the caller names are passed;
//! the others take their defaults.
//!
//! Result shapes follow PostgREST: a scalar function answers its bare JSON value, one
//! returning a composite answers an object, a set-returning one an array; `void` answers
//! 204 with no body.

use hyper::StatusCode;
use serde_json::{Map, Value};

use super::catalog::{Catalog, Function, Returns, Volatility};
use super::error::ApiError;
use super::parse::{self, ApiRequest, Condition, Target};
use super::sql::{
    json_array_of, limit_clause, order_clause, projection, qualified, quote_ident, where_clause,
    Binds, Kind, Rel, Shape, Statement, SRC,
};

/// The overload the request calls, with its argument values (a JSON object) and the
/// filters that apply to its result.
#[derive(Debug)]
pub struct Call<'a> {
    pub function: &'a Function,
    pub arg_names: Vec<String>,
    pub args_json: String,
    pub filters: Vec<Condition>,
}

pub fn resolve<'a>(catalog: &'a Catalog, req: &ApiRequest) -> Result<Call<'a>, ApiError> {
    let Target::Rpc(name) = &req.target else {
        unreachable!("resolve is called for rpc targets")
    };
    let overloads = catalog.functions(&req.schema, name);
    // POST names its arguments in the body; GET in the query string, where the other
    // parameters filter the result.
    let given: Vec<String> = if req.verb.is_read() {
        req.rpc_params.iter().map(|(k, _)| k.clone()).collect()
    } else {
        req.payload
            .as_ref()
            .map(|p| p.keys.clone())
            .unwrap_or_default()
    };
    let fits = |f: &Function| {
        let is_arg = |k: &String| f.args.iter().any(|a| &a.name == k);
        let args_given = if req.verb.is_read() {
            // In a query string, a parameter that is not an argument is a filter.
            true
        } else {
            given.iter().all(is_arg)
        };
        args_given
            && f.args
                .iter()
                .all(|a| a.has_default || given.iter().any(|k| k == &a.name))
    };
    let matching: Vec<&Function> = overloads.iter().filter(|f| fits(f)).collect();
    let function = match matching.as_slice() {
        [f] => *f,
        [] => return Err(not_found(req, name, &given, overloads)),
        _ => {
            return Err(ApiError::new(
                StatusCode::MULTIPLE_CHOICES,
                "PGRST203",
                format!(
                    "Could not choose the best candidate function between: {}",
                    matching
                        .iter()
                        .map(|f| signature(f))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ))
        }
    };
    if req.verb.is_read() && function.volatility == Volatility::Volatile {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "PGRST101",
            format!(
                "{} is volatile: call it with POST",
                qualified(&function.schema, &function.name)
            ),
        ));
    }

    let (arg_names, args_json, filters) = if req.verb.is_read() {
        let mut args = Map::new();
        // Logic trees (`or=`) were parsed already; the rest are arguments or filters.
        let mut filters = req.filters.clone();
        for (k, v) in &req.rpc_params {
            if function.args.iter().any(|a| &a.name == k) {
                args.insert(k.clone(), Value::String(v.clone()));
            } else {
                filters.push(Condition::Filter(parse::parse_filter(k, v)?));
            }
        }
        let names = args.keys().cloned().collect();
        (names, Value::Object(args).to_string(), filters)
    } else {
        let payload = req.payload.as_ref();
        (
            given,
            payload
                .map(|p| p.json.clone())
                .unwrap_or_else(|| "{}".into()),
            req.filters.clone(),
        )
    };
    Ok(Call {
        function,
        arg_names,
        args_json,
        filters,
    })
}

fn signature(f: &Function) -> String {
    format!(
        "{}({})",
        qualified(&f.schema, &f.name),
        f.args
            .iter()
            .map(|a| format!("{} => {}", a.name, a.type_sql))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Names echoed in a not-found message, at most: a request with thousands of arguments
/// must not get them all back (an amplification).
const ECHOED_NAMES: usize = 10;
const ECHOED_NAME_CHARS: usize = 64;

fn echo(name: &str) -> String {
    if name.chars().count() > ECHOED_NAME_CHARS {
        format!(
            "{}…",
            name.chars().take(ECHOED_NAME_CHARS).collect::<String>()
        )
    } else {
        name.to_string()
    }
}

fn not_found(req: &ApiRequest, name: &str, given: &[String], overloads: &[Function]) -> ApiError {
    let mut args: Vec<String> = given.iter().take(ECHOED_NAMES).map(|g| echo(g)).collect();
    if given.len() > ECHOED_NAMES {
        args.push(format!("… {} more", given.len() - ECHOED_NAMES));
    }
    let mut e = ApiError::new(
        StatusCode::NOT_FOUND,
        "PGRST202",
        format!(
            "Could not find the function {}.{}({}) in the schema cache",
            req.schema,
            echo(name),
            args.join(", ")
        ),
    );
    e = match overloads.first() {
        Some(f) => e.with_hint(format!("Perhaps you meant to call {}", signature(f))),
        None => e.with_hint(
            "If a new function was created in the database with this name and parameters, try again in a moment",
        ),
    };
    e
}

pub fn statement(call: &Call<'_>, req: &ApiRequest) -> Result<Statement, ApiError> {
    let f = call.function;
    let mut binds = Binds::default();
    // The arguments: one json parameter typed by json_to_record, joined laterally so the
    // call reads each as a column (`"a" => _ripple_x."a"`).
    let mut args_from = String::new();
    let mut named = Vec::new();
    if !call.arg_names.is_empty() {
        let args_param = binds.text(call.args_json.clone());
        let defs: Vec<String> = call
            .arg_names
            .iter()
            .map(|n| {
                let a = f
                    .args
                    .iter()
                    .find(|a| &a.name == n)
                    .expect("resolved argument");
                format!("{} {}", quote_ident(&a.name), a.type_sql)
            })
            .collect();
        args_from = format!(
            "json_to_record({args_param}::json) as _ripple_x({}) cross join lateral ",
            defs.join(", ")
        );
        named = call
            .arg_names
            .iter()
            .map(|n| {
                let q = quote_ident(n);
                format!("{q} => _ripple_x.{q}")
            })
            .collect();
    }
    let call_sql = format!("{}({})", qualified(&f.schema, &f.name), named.join(", "));
    let relation = f.name.as_str();

    let needs_rows = !req.select.is_empty() || !call.filters.is_empty() || !req.order.is_empty();
    let (sql, kind, shape) = match &f.returns {
        Returns::Rows(columns) => {
            let rel = Rel::new(columns, relation, SRC);
            let proj = projection(&mut binds, rel, &req.select)?;
            let filter = where_clause(&mut binds, rel, &call.filters)?;
            let order = order_clause(rel, &req.order)?;
            let limit = limit_clause(&mut binds, req);
            let agg = json_array_of("_ripple_r", req.accept);
            let sql = if req.prefer.count {
                // The function runs once; its rows are both counted and paged.
                format!(
                    "with _ripple_all as materialized (select {SRC}.* from {args_from}{call_sql} {SRC}) \
                     select {agg}::text, count(*), (select count(*) from _ripple_all {SRC}{filter}) \
                     from (select {proj} from _ripple_all {SRC}{filter}{order}{limit}) _ripple_r"
                )
            } else {
                format!(
                    "select {agg}::text, count(*), null::bigint \
                     from (select {proj} from {args_from}{call_sql} {SRC}{filter}{order}{limit}) _ripple_r"
                )
            };
            let shape = if f.returns_set {
                Shape::Array
            } else {
                Shape::Object
            };
            (sql, Kind::Rows, shape)
        }
        Returns::Scalar { .. } if needs_rows => {
            return Err(ApiError::bad_query(format!(
                "{} returns a scalar: select=, filters and order= do not apply",
                qualified(&f.schema, &f.name)
            )))
        }
        Returns::Scalar { .. } if f.returns_set => {
            let limit = limit_clause(&mut binds, req);
            let agg = json_array_of("_ripple_r._ripple_v", req.accept);
            let sql = if req.prefer.count {
                format!(
                    "with _ripple_all as materialized (select {SRC}._ripple_v from {args_from}{call_sql} as {SRC}(_ripple_v)) \
                     select {agg}::text, count(*), (select count(*) from _ripple_all) \
                     from (select {SRC}._ripple_v from _ripple_all {SRC}{limit}) _ripple_r"
                )
            } else {
                format!(
                    "select {agg}::text, count(*), null::bigint \
                     from (select {SRC}._ripple_v from {args_from}{call_sql} as {SRC}(_ripple_v){limit}) _ripple_r"
                )
            };
            (sql, Kind::Rows, Shape::Array)
        }
        Returns::Scalar { .. } => {
            let value = if req.accept.strip_nulls() {
                format!("json_strip_nulls(to_json({SRC}._ripple_v))")
            } else {
                format!("to_json({SRC}._ripple_v)")
            };
            let sql = format!(
                "select {value}::text, 1::bigint, null::bigint from {args_from}{call_sql} as {SRC}(_ripple_v)"
            );
            (sql, Kind::Rows, Shape::Scalar)
        }
        Returns::Void => {
            if needs_rows {
                return Err(ApiError::bad_query(format!(
                    "{} returns nothing: select=, filters and order= do not apply",
                    qualified(&f.schema, &f.name)
                )));
            }
            let sql = format!("select {SRC}.* from {args_from}{call_sql} as {SRC}(_ripple_v)");
            (sql, Kind::Execute, Shape::Empty)
        }
    };
    Ok(Statement {
        sql,
        params: binds.params,
        kind,
        shape,
    })
}
