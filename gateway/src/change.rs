//! The typed changes that flow from replication to subscribers: what `decode` produces
//! (through the replication stage that groups them into transactions) and what
//! `authorize` and `realtime` consume.

use std::sync::Arc;

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
    pub record: Option<Map<String, Value>>,
    /// Old row (UPDATE, DELETE): the full row with REPLICA IDENTITY FULL, else key columns
    /// only, else absent.
    pub old_record: Option<Map<String, Value>>,
    /// Columns of `record` whose value was an unchanged TOASTed value the stream did not
    /// carry; `record` omits them rather than inventing a value.
    pub unchanged_toast: Vec<String>,
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
}
