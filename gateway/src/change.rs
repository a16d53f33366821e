//! The typed changes that flow from replication to subscribers: what `decode` produces
//! (through the replication stage that groups them into transactions) and what
//! `authorize` and `realtime` consume.

use std::fmt;
use std::sync::Arc;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

/// Position in the WAL.
pub type Lsn = u64;

/// Formats an LSN the way PostgreSQL prints it (`16/B374D848`).
pub fn format_lsn(lsn: Lsn) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Parses `16/B374D848`.
pub fn parse_lsn(s: &str) -> Option<Lsn> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaIdentity {
    /// Old key columns only (the primary key).
    Default,
    /// No old values at all.
    Nothing,
    /// The whole old row.
    Full,
    /// Old values of a chosen unique index's columns.
    Index,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    pub type_oid: u32,
    /// pg_type.typname (`int8`, `text`, `_int4` for int4[], an enum's name...).
    pub type_name: String,
    /// Part of the replica identity key.
    pub is_key: bool,
}

/// A table as the stream last described it (Relation messages follow schema changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationInfo {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub replica_identity: ReplicaIdentity,
    pub columns: Vec<ColumnInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    Insert,
    Update,
    Delete,
    Truncate,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Insert => "INSERT",
            ChangeKind::Update => "UPDATE",
            ChangeKind::Delete => "DELETE",
            ChangeKind::Truncate => "TRUNCATE",
        }
    }
}

/// One row change, values already converted to natural JSON by column type.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    pub relation: Arc<RelationInfo>,
    pub kind: ChangeKind,
    /// New row (INSERT, UPDATE).
    pub record: Option<Row>,
    /// Old row (UPDATE, DELETE): the full row with REPLICA IDENTITY FULL, else key columns
    /// only, else absent.
    pub old_record: Option<Row>,
    /// Columns of `record` whose value was an unchanged TOASTed value the stream did not
    /// carry; `record` omits them rather than inventing a value.
    pub unchanged_toast: Vec<String>,
}

/// One row's values by column name, in column order: what a JSON object of the row holds,
/// without building one. The column names are shared by every row of a relation (one
/// `Arc` per Relation message), so a row costs one allocation for its values plus the
/// values' own, where a `serde_json::Map` cost a string per column name and a hash index
/// besides (about twenty allocations for an eight-column row).
///
/// Lookups by name scan the names: rows have tens of columns, and comparing a few short
/// strings costs less than hashing one.
#[derive(Clone, Default)]
pub struct Row {
    names: Arc<[String]>,
    /// One slot per name; `None` for a column the row does not carry (an unchanged TOASTed
    /// value, a non-key column of a key-only old row).
    values: Vec<Option<Value>>,
}

impl Row {
    /// A row of `names[i] = values[i]`. Panics if the lengths differ (a bug of the caller:
    /// the assembler checks tuples against their relation first).
    pub fn new(names: Arc<[String]>, values: Vec<Option<Value>>) -> Self {
        assert_eq!(names.len(), values.len(), "one value slot per column name");
        Self { names, values }
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values[self.position(name)?].as_ref()
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Columns present, in column order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> + '_ {
        self.names
            .iter()
            .zip(&self.values)
            .filter_map(|(n, v)| Some((n, v.as_ref()?)))
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// Columns present.
    pub fn len(&self) -> usize {
        self.values.iter().filter(|v| v.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.values.iter().all(Option::is_none)
    }

    /// Sets a column's value, returning the one it replaces. A name the row's relation
    /// does not have is appended (the shared names are copied for this row only).
    pub fn insert(&mut self, name: String, value: Value) -> Option<Value> {
        match self.position(&name) {
            Some(i) => self.values[i].replace(value),
            None => {
                let mut names = self.names.to_vec();
                names.push(name);
                self.names = names.into();
                self.values.push(Some(value));
                None
            }
        }
    }

    /// The row as a JSON object's map, for a consumer that truly needs one (it copies every
    /// name and value).
    pub fn to_map(&self) -> Map<String, Value> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

impl From<Map<String, Value>> for Row {
    fn from(map: Map<String, Value>) -> Self {
        let (names, values): (Vec<String>, Vec<Option<Value>>) =
            map.into_iter().map(|(k, v)| (k, Some(v))).unzip();
        Self {
            names: names.into(),
            values,
        }
    }
}

impl From<Row> for Value {
    fn from(row: Row) -> Self {
        let Row { names, values } = row;
        Value::Object(
            names
                .iter()
                .zip(values)
                .filter_map(|(n, v)| Some((n.clone(), v?)))
                .collect(),
        )
    }
}

impl std::ops::Index<&str> for Row {
    type Output = Value;

    /// The column's value; panics when the row does not carry it, as `Map` does.
    fn index(&self, name: &str) -> &Value {
        self.get(name)
            .unwrap_or_else(|| panic!("row has no column {name:?}"))
    }
}

/// Rows are equal when they carry the same columns with the same values in the same order
/// (as their JSON objects would compare with `preserve_order`).
impl PartialEq for Row {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

/// Written as the JSON object of the row, in column order.
impl Serialize for Row {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl fmt::Debug for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// A committed transaction's changes, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    pub xid: u32,
    /// End LSN of the commit: the position to confirm once this is fully delivered.
    pub commit_lsn: Lsn,
    /// Commit time, microseconds since the Unix epoch.
    pub commit_time_micros: i64,
    pub changes: Vec<RowChange>,
}

impl Transaction {
    /// Commit time as ISO-8601 UTC with milliseconds, as Supabase sends `commit_timestamp`.
    pub fn commit_timestamp(&self) -> String {
        let secs = self.commit_time_micros.div_euclid(1_000_000);
        let micros = self.commit_time_micros.rem_euclid(1_000_000);
        chrono::DateTime::from_timestamp(secs, (micros * 1000) as u32)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_through_postgres_notation() {
        let lsn = 0x16_B374_D848;
        assert_eq!(format_lsn(lsn), "16/B374D848");
        assert_eq!(parse_lsn("16/B374D848"), Some(lsn));
        assert_eq!(parse_lsn("nope"), None);
    }

    #[test]
    fn commit_timestamp_is_iso8601_utc_with_millis() {
        let t = Transaction {
            xid: 1,
            commit_lsn: 0,
            commit_time_micros: 1_767_225_600_123_456,
            changes: vec![],
        };
        assert_eq!(t.commit_timestamp(), "2026-01-01T00:00:00.123Z");
    }

    fn names(n: &[&str]) -> Arc<[String]> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_row_is_its_present_columns_in_column_order() {
        let row = Row::new(
            names(&["id", "body", "meta"]),
            vec![
                Some(Value::from(7)),
                None,
                Some(serde_json::json!({"b": 1, "a": [2]})),
            ],
        );
        assert_eq!(row.len(), 2);
        assert!(!row.is_empty());
        assert_eq!(row.get("id"), Some(&Value::from(7)));
        assert_eq!(
            row.get("body"),
            None,
            "a column not carried is absent, not null"
        );
        assert!(!row.contains_key("body") && !row.contains_key("nope"));
        assert_eq!(row.keys().collect::<Vec<_>>(), ["id", "meta"]);
        assert_eq!(
            serde_json::to_string(&row).unwrap(),
            r#"{"id":7,"meta":{"b":1,"a":[2]}}"#
        );
        assert_eq!(
            Value::Object(row.to_map()).to_string(),
            r#"{"id":7,"meta":{"b":1,"a":[2]}}"#
        );
        assert_eq!(Value::from(row.clone()), Value::Object(row.to_map()));
        assert_eq!(row["meta"]["a"][0], 2);
    }

    #[test]
    fn rows_compare_and_convert_like_maps() {
        let map = serde_json::json!({"id": 1, "body": "hi"})
            .as_object()
            .unwrap()
            .clone();
        let from_map = Row::from(map.clone());
        let shared = Row::new(
            names(&["id", "body", "gone"]),
            vec![Some(Value::from(1)), Some(Value::from("hi")), None],
        );
        assert_eq!(from_map, shared, "absent columns do not count");
        assert_eq!(shared.to_map(), map);
        let mut other = shared.clone();
        assert_eq!(
            other.insert("body".into(), Value::from("yo")),
            Some(Value::from("hi"))
        );
        assert_ne!(other, shared);
        // Filling a column the row did not carry, and one its relation never had.
        assert_eq!(other.insert("gone".into(), Value::Null), None);
        assert_eq!(other.insert("extra".into(), Value::Bool(true)), None);
        assert_eq!(
            serde_json::to_string(&other).unwrap(),
            r#"{"id":1,"body":"yo","gone":null,"extra":true}"#
        );
        // The shared names are untouched by one row's insert.
        assert_eq!(shared.keys().collect::<Vec<_>>(), ["id", "body"]);
        assert!(Row::default().is_empty());
        assert_eq!(serde_json::to_string(&Row::default()).unwrap(), "{}");
    }

    #[test]
    #[should_panic(expected = "no column")]
    fn indexing_a_missing_column_panics_as_a_map_does() {
        let _ = &Row::default()["id"];
    }
}
