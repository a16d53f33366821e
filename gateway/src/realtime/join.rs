//! A `phx_join`'s payload: its config read strictly (a wrong type is an error, not a default),
//! and its `postgres_changes` bindings checked against the database catalog before anything
//! is subscribed.

use std::collections::HashMap;

use serde_json::Value;

use super::filter::{self, ColumnType, CompareKind, Condition};
use super::registry::EventFilter;

/// One `postgres_changes` binding as the client sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeSpec {
    /// The client's entry, echoed back with its id: realtime-js compares event, schema,
    /// table and filter position by position.
    pub raw: serde_json::Map<String, Value>,
    pub events: EventFilter,
    pub schema: String,
    /// `None` for every table of the schema (absent or `*`).
    pub table: Option<String>,
    pub filter: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JoinConfig {
    pub broadcast_self: bool,
    pub broadcast_ack: bool,
    pub presence_key: String,
    pub presence_enabled: bool,
    pub private: bool,
    pub postgres_changes: Vec<ChangeSpec>,
    /// The user's token, when the join carries one (else the socket's `apikey` applies).
    pub access_token: Option<String>,
}

fn bool_at(v: Option<&Value>, path: &str, default: bool) -> Result<bool, String> {
    match v {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("`{path}` must be a boolean")),
    }
}

fn obj<'a>(
    v: Option<&'a Value>,
    path: &str,
) -> Result<Option<&'a serde_json::Map<String, Value>>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(format!("`{path}` must be an object")),
    }
}

fn string_at(
    o: &serde_json::Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<String>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("`{path}.{key}` must be a string")),
    }
}

impl JoinConfig {
    /// Reads a join payload; the error is the reason to send back.
    pub fn parse(payload: &Value) -> Result<JoinConfig, String> {
        let payload = payload
            .as_object()
            .ok_or_else(|| "join payload must be an object".to_string())?;
        let access_token = match payload.get("access_token") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err("`access_token` must be a string".into()),
        };
        let config = obj(payload.get("config"), "config")?;
        let empty = serde_json::Map::new();
        let config = config.unwrap_or(&empty);
        let broadcast = obj(config.get("broadcast"), "config.broadcast")?.unwrap_or(&empty);
        let presence = obj(config.get("presence"), "config.presence")?.unwrap_or(&empty);
        let presence_key = match presence.get("key") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            // Presence keys are map keys on the client: a number works as its text.
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err("`config.presence.key` must be a string".into()),
        };
        let postgres_changes = match config.get("postgres_changes") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .filter(|(_, v)| !v.is_null())
                .map(|(i, v)| ChangeSpec::parse(i, v))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("`config.postgres_changes` must be an array".into()),
        };
        Ok(JoinConfig {
            broadcast_self: bool_at(broadcast.get("self"), "config.broadcast.self", false)?,
            broadcast_ack: bool_at(broadcast.get("ack"), "config.broadcast.ack", false)?,
            presence_key,
            // Clients from before `enabled` existed always had presence.
            presence_enabled: bool_at(presence.get("enabled"), "config.presence.enabled", true)?,
            private: bool_at(config.get("private"), "config.private", false)?,
            postgres_changes,
            access_token,
        })
    }
}

impl ChangeSpec {
    fn parse(i: usize, v: &Value) -> Result<ChangeSpec, String> {
        let path = format!("config.postgres_changes[{i}]");
        let o = v
            .as_object()
            .ok_or_else(|| format!("`{path}` must be an object"))?;
        let event = string_at(o, "event", &path)?
            .ok_or_else(|| format!("`{path}.event` is required (INSERT, UPDATE, DELETE or *)"))?;
        let events = EventFilter::parse(&event).ok_or_else(|| {
            format!("`{path}.event` must be INSERT, UPDATE, DELETE or *, not `{event}`")
        })?;
        let schema = string_at(o, "schema", &path)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("`{path}.schema` is required"))?;
        let table = string_at(o, "table", &path)?.filter(|t| !t.is_empty() && t != "*");
        let filter = string_at(o, "filter", &path)?.filter(|f| !f.trim().is_empty());
        if filter.is_some() && table.is_none() {
            return Err(format!("`{path}.filter` needs a `table`"));
        }
        Ok(ChangeSpec {
            raw: o.clone(),
            events,
            schema,
            table,
            filter,
        })
    }
}

/// A binding checked against the catalog, ready to subscribe.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub spec: ChangeSpec,
    pub conditions: Vec<Condition>,
    /// Tables this binding covers whose DELETEs cannot be authorized (old row not full).
    pub unjudgeable_delete_tables: Vec<String>,
    /// Set when the joining role may not SELECT the binding's table (or any table of its
    /// schema): the subscription exists but nothing will arrive, and the client is told why.
    pub unreadable: Option<String>,
}

/// Why a binding will receive nothing: the role lacks SELECT. The anon role gets the
/// likeliest cause spelled out (a client that joined before signing in).
fn unreadable_reason(role: &str, what: &str) -> String {
    let hint = if role == "anon" {
        ": the channel joined with the anon key; sign in first (or pass the user's access token)"
    } else {
        ""
    };
    format!("role {role} has no SELECT privilege on {what}, so no changes from it will be delivered{hint}")
}

/// What the catalog says about a table.
#[derive(Debug, Clone)]
struct TableInfo {
    replica_full: bool,
    published: bool,
    /// The joining role may SELECT the table (some column of it, at least).
    readable: bool,
    columns: HashMap<String, ColumnType>,
    /// Columns the subscriber's role may SELECT: the only ones a filter may name, or
    /// whether a change arrives would reveal a value the role cannot read.
    readable_columns: std::collections::HashSet<String>,
    /// The role may use the schema; if not, the table is reported as missing, so a join
    /// cannot tell which tables exist where the caller has no access.
    schema_usable: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Something the client asked for is wrong; the text is for the client.
    #[error("{0}")]
    Invalid(String),
    #[error("could not read the catalog")]
    Db(#[source] Box<dyn std::error::Error + Send + Sync>),
}

async fn table_info(
    client: &tokio_postgres::Client,
    publication: &str,
    schema: &str,
    table: &str,
    role: &str,
) -> Result<Option<TableInfo>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "select c.relreplident = 'f',
                    (exists (select 1 from pg_roles where rolname = $4)
                     and (has_table_privilege($4, c.oid, 'SELECT')
                          or has_any_column_privilege($4, c.oid, 'SELECT'))),
                    exists (select 1 from pg_publication_tables p
                             where p.pubname = $3 and p.schemaname = $1 and p.tablename = $2),
                    coalesce(json_agg(json_build_array(a.attname, t.typname, t.typtype,
                                                       has_column_privilege($4, c.oid, a.attnum, 'SELECT'))
                                      order by a.attnum) filter (where a.attnum is not null),
                             '[]'::json),
                    has_schema_privilege($4, n.oid, 'USAGE')
               from pg_class c
               join pg_namespace n on n.oid = c.relnamespace
               left join pg_attribute a on a.attrelid = c.oid and a.attnum > 0
                                        and not a.attisdropped
               left join pg_type t on t.oid = a.atttypid
              where n.nspname = $1 and c.relname = $2 and c.relkind in ('r', 'p')
              group by c.oid, c.relreplident, n.oid",
            &[&schema, &table, &publication, &role],
        )
        .await?;
    Ok(row.map(|row| {
        let cols: Value = row.get(3);
        let readable_columns = cols
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c.get(3).and_then(Value::as_bool) == Some(true))
            .filter_map(|c| Some(c.get(0)?.as_str()?.to_string()))
            .collect();
        let columns = cols
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| {
                let name = c.get(0)?.as_str()?.to_string();
                let type_name = c.get(1)?.as_str()?.to_string();
                let typtype = c.get(2)?.as_str().unwrap_or("b");
                let kind = CompareKind::from_pg(&type_name, typtype);
                Some((name, ColumnType { type_name, kind }))
            })
            .collect();
        TableInfo {
            replica_full: row.get(0),
            readable: row.get(1),
            published: row.get(2),
            columns,
            readable_columns,
            schema_usable: row.get(4),
        }
    }))
}

/// Checks every binding: the schema and table exist and stream (are in the publication),
/// filters name real columns with values of their types. Also notes tables whose DELETEs
/// cannot be authorized, and bindings the joining `role` cannot read at all.
pub async fn resolve(
    client: &tokio_postgres::Client,
    publication: &str,
    specs: &[ChangeSpec],
    role: &str,
) -> Result<Vec<Resolved>, ResolveError> {
    let db = |e: tokio_postgres::Error| ResolveError::Db(Box::new(e));
    let mut cache: HashMap<(String, String), Option<TableInfo>> = HashMap::new();
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        let wants_deletes = spec.events.accepts(crate::change::ChangeKind::Delete);
        match &spec.table {
            Some(table) => {
                let key = (spec.schema.clone(), table.clone());
                if !cache.contains_key(&key) {
                    let info = table_info(client, publication, &spec.schema, table, role)
                        .await
                        .map_err(db)?;
                    cache.insert(key.clone(), info);
                }
                // A schema the role cannot use answers as a missing table: no oracle.
                let Some(info) = cache
                    .get(&key)
                    .and_then(Option::as_ref)
                    .filter(|i| i.schema_usable)
                else {
                    return Err(ResolveError::Invalid(format!(
                        "table {}.{} does not exist",
                        spec.schema, table
                    )));
                };
                if !info.published {
                    return Err(ResolveError::Invalid(format!(
                        "table {}.{} is not in publication {publication}, so its changes do not stream",
                        spec.schema, table
                    )));
                }
                let conditions = match &spec.filter {
                    None => Vec::new(),
                    Some(f) => filter::parse(f)
                        .and_then(|raw| filter::bind(&raw, &info.columns))
                        .map_err(|e| {
                            ResolveError::Invalid(format!(
                                "invalid filter `{f}` for {}.{}: {e}",
                                spec.schema, table
                            ))
                        })?,
                };
                if let Some(c) = conditions
                    .iter()
                    .find(|c| !info.readable_columns.contains(&c.column))
                {
                    return Err(ResolveError::Invalid(format!(
                        "invalid filter for {}.{}: permission denied for column {} (role {role} may not select it)",
                        spec.schema, table, c.column
                    )));
                }
                let unjudgeable_delete_tables = if wants_deletes && !info.replica_full {
                    vec![format!("{}.{}", spec.schema, table)]
                } else {
                    Vec::new()
                };
                let unreadable = (!info.readable)
                    .then(|| unreadable_reason(role, &format!("{}.{}", spec.schema, table)));
                out.push(Resolved {
                    spec: spec.clone(),
                    conditions,
                    unjudgeable_delete_tables,
                    unreadable,
                });
            }
            None => {
                let rows = client
                    .query(
                        "select p.tablename::text, c.relreplident = 'f',
                            exists (select 1 from pg_roles where rolname = $3)
                            and (has_table_privilege($3, c.oid, 'SELECT')
                                 or has_any_column_privilege($3, c.oid, 'SELECT'))
                           from pg_publication_tables p
                           join pg_namespace n on n.nspname = p.schemaname
                           join pg_class c on c.relnamespace = n.oid and c.relname = p.tablename
                          where p.pubname = $1 and p.schemaname = $2
                          order by 1",
                        &[&publication, &spec.schema, &role],
                    )
                    .await
                    .map_err(db)?;
                let exists: bool = client
                    .query_one(
                        "select exists (select 1 from pg_namespace where nspname = $1
                                           and has_schema_privilege($2, oid, 'USAGE'))",
                        &[&spec.schema, &role],
                    )
                    .await
                    .map_err(db)?
                    .get(0);
                if !exists {
                    return Err(ResolveError::Invalid(format!(
                        "schema {} does not exist",
                        spec.schema
                    )));
                }
                let unjudgeable_delete_tables = if wants_deletes {
                    rows.iter()
                        .filter(|r| !r.get::<_, bool>(1))
                        .map(|r| format!("{}.{}", spec.schema, r.get::<_, String>(0)))
                        .collect()
                } else {
                    Vec::new()
                };
                let unreadable = (!rows.is_empty() && rows.iter().all(|r| !r.get::<_, bool>(2)))
                    .then(|| {
                        unreadable_reason(
                            role,
                            &format!("any streamed table of schema {}", spec.schema),
                        )
                    });
                out.push(Resolved {
                    spec: spec.clone(),
                    conditions: Vec::new(),
                    unjudgeable_delete_tables,
                    unreadable,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_realtime_js_join_payload_parses() {
        let c = JoinConfig::parse(&json!({
            "config": {
                "broadcast": {"ack": true, "self": false},
                "presence": {"key": "alice", "enabled": true},
                "postgres_changes": [
                    {"event": "INSERT", "schema": "public", "table": "messages",
                     "filter": "conversation_id=eq.1"},
                    {"event": "*", "schema": "public"}
                ],
                "private": true
            },
            "access_token": "tok",
            "version": "realtime-js/2.0.0"
        }))
        .unwrap();
        assert!(c.broadcast_ack && !c.broadcast_self && c.private && c.presence_enabled);
        assert_eq!(c.presence_key, "alice");
        assert_eq!(c.access_token.as_deref(), Some("tok"));
        assert_eq!(c.postgres_changes.len(), 2);
        assert_eq!(c.postgres_changes[0].table.as_deref(), Some("messages"));
        assert_eq!(c.postgres_changes[1].table, None);
        assert_eq!(
            c.postgres_changes[1].raw,
            *json!({"event": "*", "schema": "public"})
                .as_object()
                .unwrap()
        );
    }

    #[test]
    fn an_empty_join_payload_means_defaults() {
        let c = JoinConfig::parse(&json!({})).unwrap();
        assert!(!c.private && !c.broadcast_self && c.postgres_changes.is_empty());
    }

    #[test]
    fn wrong_types_and_missing_fields_are_reasons_not_defaults() {
        let err = |v: Value| JoinConfig::parse(&v).unwrap_err();
        assert!(err(json!({"config": {"private": "yes"}})).contains("config.private"));
        assert!(err(json!({"config": {"broadcast": []}})).contains("config.broadcast"));
        assert!(err(json!({"config": {"postgres_changes": {}}})).contains("array"));
        assert!(
            err(json!({"config": {"postgres_changes": [{"schema": "public"}]}})).contains("event")
        );
        assert!(err(
            json!({"config": {"postgres_changes": [{"event": "UPSERT", "schema": "public"}]}})
        )
        .contains("UPSERT"));
        assert!(err(json!({"config": {"postgres_changes": [{"event": "*"}]}})).contains("schema"));
        assert!(err(json!({"config": {"postgres_changes": [
            {"event": "*", "schema": "public", "filter": "id=eq.1"}]}}))
        .contains("needs a `table`"));
        assert!(err(json!({"access_token": 5})).contains("access_token"));
    }
}
