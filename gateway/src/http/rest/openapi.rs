//! `GET /rest/v1/`: an OpenAPI 3 description of what the caller's role may use in the
//! requested schema: its tables and views (with the verbs its privileges allow) and its
//! functions (those it may execute), for type generators and API explorers.
//!
//! The shapes come from the cached catalog; the privileges are asked of PostgreSQL for the
//! caller's role on each request (`has_any_column_privilege`, `has_function_privilege`),
//! so a new grant shows at once. Descriptions are rare requests; nothing is cached.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{json, Map, Value};

use super::catalog::{Catalog, Column, Function, Returns, Volatility};

/// What the role may do with each relation and function of the schema. Joined through
/// pg_roles so an unknown role yields nothing instead of an error.
pub const PRIVILEGES_SQL: &str = "
select 'r'::text, c.relname::text,
       has_any_column_privilege(r.oid, c.oid, 'SELECT'),
       has_any_column_privilege(r.oid, c.oid, 'INSERT'),
       has_any_column_privilege(r.oid, c.oid, 'UPDATE'),
       has_table_privilege(r.oid, c.oid, 'DELETE')
  from pg_roles r
  cross join pg_class c
  join pg_namespace n on n.oid = c.relnamespace
 where r.rolname = $1 and n.nspname = $2
   and c.relkind in ('r', 'v', 'm', 'f', 'p')
   and has_schema_privilege(r.oid, n.oid, 'USAGE')
union all
select 'f'::text, p.proname::text, bool_or(has_function_privilege(r.oid, p.oid, 'EXECUTE')),
       false, false, false
  from pg_roles r
  cross join pg_proc p
  join pg_namespace n on n.oid = p.pronamespace
 where r.rolname = $1 and n.nspname = $2 and p.prokind = 'f'
   and has_schema_privilege(r.oid, n.oid, 'USAGE')
 group by p.proname";

/// Per relation: may the role select, insert, update, delete?
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableRights {
    pub select: bool,
    pub insert: bool,
    pub update: bool,
    pub delete: bool,
}

#[derive(Debug, Default)]
pub struct Rights {
    pub tables: HashMap<String, TableRights>,
    pub functions: HashSet<String>,
}

/// A JSON Schema for a PostgreSQL type, with the type's name as `format` (as PostgREST
/// does), so generators can map it precisely.
fn type_schema(type_sql: &str) -> Value {
    if let Some(item) = type_sql.strip_suffix("[]") {
        return json!({"type": "array", "items": type_schema(item), "format": type_sql});
    }
    match type_sql {
        "smallint" | "integer" => json!({"type": "integer", "format": type_sql}),
        "bigint" => json!({"type": "integer", "format": "bigint"}),
        "numeric" | "real" | "double precision" => json!({"type": "number", "format": type_sql}),
        "boolean" => json!({"type": "boolean", "format": "boolean"}),
        "json" | "jsonb" => json!({"format": type_sql}),
        _ => json!({"type": "string", "format": type_sql}),
    }
}

fn object_schema(columns: &[Column]) -> Value {
    let properties: Map<String, Value> = columns
        .iter()
        .map(|c| (c.name.clone(), type_schema(&c.type_sql)))
        .collect();
    json!({"type": "object", "properties": properties})
}

fn rows_response(schema_ref: Value) -> Value {
    json!({
        "200": {
            "description": "OK",
            "content": {"application/json": {"schema": {"type": "array", "items": schema_ref}}}
        },
        "206": {"description": "Partial Content"}
    })
}

fn common_parameters() -> Value {
    json!([
        {"$ref": "#/components/parameters/select"},
        {"$ref": "#/components/parameters/order"},
        {"$ref": "#/components/parameters/limit"},
        {"$ref": "#/components/parameters/offset"},
        {"$ref": "#/components/parameters/range"},
        {"$ref": "#/components/parameters/prefer"}
    ])
}

/// Filter parameters, one per readable column (`col=eq.value` and the other operators).
fn filter_parameters(columns: &[Column]) -> Vec<Value> {
    columns
        .iter()
        .filter(|c| c.readable)
        .map(|c| {
            json!({
                "name": c.name,
                "in": "query",
                "required": false,
                "schema": {"type": "string", "format": c.type_sql},
                "description": "A filter: operator.value, e.g. eq.42"
            })
        })
        .collect()
}

fn function_args_schema(f: &Function) -> Value {
    let properties: Map<String, Value> = f
        .args
        .iter()
        .map(|a| (a.name.clone(), type_schema(&a.type_sql)))
        .collect();
    let required: Vec<&str> = f
        .args
        .iter()
        .filter(|a| !a.has_default)
        .map(|a| a.name.as_str())
        .collect();
    json!({"type": "object", "properties": properties, "required": required})
}

fn function_result_schema(f: &Function) -> Value {
    let one = match &f.returns {
        Returns::Void => return json!({}),
        Returns::Scalar { type_sql } => type_schema(type_sql),
        Returns::Rows(cols) => object_schema(cols),
    };
    if f.returns_set {
        json!({"type": "array", "items": one})
    } else {
        one
    }
}

/// The document for `schema`, limited to what `rights` allows.
pub fn document(catalog: &Catalog, schema: &str, rights: &Rights) -> Value {
    let mut paths: BTreeMap<String, Value> = BTreeMap::new();
    let mut schemas: BTreeMap<String, Value> = BTreeMap::new();
    paths.insert(
        "/".into(),
        json!({"get": {"summary": "This description", "tags": ["Introspection"],
                       "responses": {"200": {"description": "OK"}}}}),
    );

    let mut tables: Vec<_> = catalog.tables().filter(|t| t.schema == schema).collect();
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    for t in tables {
        let Some(r) = rights.tables.get(&t.name).copied() else {
            continue;
        };
        if r == TableRights::default() {
            continue;
        }
        // Only the columns the role may read are described.
        let visible: Vec<Column> = t.columns.iter().filter(|c| c.readable).cloned().collect();
        let described = if visible.is_empty() {
            &t.columns[..]
        } else {
            &visible[..]
        };
        schemas.insert(t.name.clone(), object_schema(described));
        let schema_ref = json!({"$ref": format!("#/components/schemas/{}", t.name)});
        let body = json!({
            "content": {"application/json": {"schema": {"oneOf": [
                schema_ref.clone(),
                {"type": "array", "items": schema_ref.clone()}
            ]}}}
        });
        let mut filters = common_parameters().as_array().cloned().unwrap_or_default();
        filters.extend(filter_parameters(&t.columns));
        let mut item = Map::new();
        let tag = json!([t.name]);
        if r.select {
            item.insert(
                "get".into(),
                json!({"tags": tag, "parameters": filters, "responses": rows_response(schema_ref.clone())}),
            );
        }
        if r.insert {
            item.insert(
                "post".into(),
                json!({"tags": tag, "requestBody": body,
                       "parameters": [{"$ref": "#/components/parameters/prefer"},
                                      {"$ref": "#/components/parameters/columns"},
                                      {"$ref": "#/components/parameters/on_conflict"}],
                       "responses": {"201": {"description": "Created"}}}),
            );
        }
        if r.insert && r.update && !t.primary_key.is_empty() {
            item.insert(
                "put".into(),
                json!({"tags": tag, "requestBody": {"content": {"application/json": {"schema": schema_ref}}},
                       "parameters": filters,
                       "responses": {"200": {"description": "OK"}, "204": {"description": "No Content"}}}),
            );
        }
        if r.update {
            item.insert(
                "patch".into(),
                json!({"tags": tag, "requestBody": body, "parameters": filters,
                       "responses": {"200": {"description": "OK"}, "204": {"description": "No Content"}}}),
            );
        }
        if r.delete {
            item.insert(
                "delete".into(),
                json!({"tags": tag, "parameters": filters,
                       "responses": {"200": {"description": "OK"}, "204": {"description": "No Content"}}}),
            );
        }
        paths.insert(format!("/{}", t.name), Value::Object(item));
    }

    let mut functions: Vec<&Function> = catalog
        .all_functions()
        .filter(|f| f.schema == schema && rights.functions.contains(&f.name))
        .collect();
    functions.sort_by(|a, b| a.name.cmp(&b.name));
    for f in functions {
        let path = format!("/rpc/{}", f.name);
        let result = json!({"200": {"description": "OK",
            "content": {"application/json": {"schema": function_result_schema(f)}}}});
        let mut item = paths
            .remove(&path)
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        if item.contains_key("post") {
            // Overloads share a path; the first one describes it.
            paths.insert(path, Value::Object(item));
            continue;
        }
        item.insert(
            "post".into(),
            json!({"tags": ["(rpc) ".to_string() + &f.name],
                   "requestBody": {"content": {"application/json": {"schema": function_args_schema(f)}}},
                   "responses": result}),
        );
        if f.volatility != Volatility::Volatile {
            let params: Vec<Value> = f
                .args
                .iter()
                .map(|a| {
                    json!({"name": a.name, "in": "query", "required": !a.has_default,
                                "schema": type_schema(&a.type_sql)})
                })
                .collect();
            item.insert(
                "get".into(),
                json!({"tags": ["(rpc) ".to_string() + &f.name], "parameters": params,
                       "responses": result}),
            );
        }
        paths.insert(path, Value::Object(item));
    }

    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Ripple REST",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "Tables, views and functions of the schema \"{schema}\" that this role may use, \
                 served PostgREST-style"
            )
        },
        "servers": [{"url": "/rest/v1"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "parameters": {
                "select": {"name": "select", "in": "query", "schema": {"type": "string"},
                           "description": "Columns and embedded resources, e.g. *,sender:profiles(display_name)"},
                "order": {"name": "order", "in": "query", "schema": {"type": "string"}},
                "limit": {"name": "limit", "in": "query", "schema": {"type": "integer"}},
                "offset": {"name": "offset", "in": "query", "schema": {"type": "integer"}},
                "range": {"name": "Range", "in": "header", "schema": {"type": "string"}},
                "columns": {"name": "columns", "in": "query", "schema": {"type": "string"}},
                "on_conflict": {"name": "on_conflict", "in": "query", "schema": {"type": "string"}},
                "prefer": {"name": "Prefer", "in": "header", "schema": {"type": "string"},
                           "description": "return=, count=, resolution=, missing=, tx=, handling="}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::rest::catalog::{Arg, Table};

    fn col(name: &str, type_sql: &str, readable: bool) -> Column {
        Column {
            name: name.into(),
            type_sql: type_sql.into(),
            readable,
            default_sql: None,
        }
    }

    #[test]
    fn the_document_shows_only_what_the_role_may_use() {
        let t = |name: &str| Table {
            schema: "public".into(),
            name: name.into(),
            columns: vec![
                col("id", "uuid", true),
                col("tags", "text[]", true),
                col("secret", "text", false),
            ],
            primary_key: vec!["id".into()],
        };
        let f = |name: &str, vol| Function {
            schema: "public".into(),
            name: name.into(),
            args: vec![Arg {
                name: "n".into(),
                type_sql: "integer".into(),
                has_default: false,
            }],
            volatility: vol,
            returns_set: false,
            returns: Returns::Scalar {
                type_sql: "bigint".into(),
            },
        };
        let catalog = Catalog::from_parts(
            vec![t("readable"), t("hidden"), t("writeonly")],
            vec![
                f("callable", Volatility::Stable),
                f("forbidden", Volatility::Volatile),
            ],
        );
        let mut rights = Rights::default();
        rights.tables.insert(
            "readable".into(),
            TableRights {
                select: true,
                ..Default::default()
            },
        );
        rights
            .tables
            .insert("hidden".into(), TableRights::default());
        rights.tables.insert(
            "writeonly".into(),
            TableRights {
                insert: true,
                ..Default::default()
            },
        );
        rights.functions.insert("callable".into());
        let doc = document(&catalog, "public", &rights);
        let paths = doc["paths"].as_object().unwrap();
        let mut names: Vec<&str> = paths.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(names, vec!["/", "/readable", "/rpc/callable", "/writeonly"]);
        assert!(paths["/readable"].get("get").is_some());
        assert!(paths["/readable"].get("post").is_none());
        assert!(paths["/writeonly"].get("get").is_none());
        assert!(paths["/writeonly"].get("post").is_some());
        assert!(
            paths["/rpc/callable"].get("get").is_some(),
            "stable: GET allowed"
        );
        let props = doc["components"]["schemas"]["readable"]["properties"]
            .as_object()
            .unwrap();
        assert!(props.contains_key("id") && !props.contains_key("secret"));
        assert_eq!(props["tags"]["type"], "array");
        assert_eq!(props["id"]["format"], "uuid");
    }
}
