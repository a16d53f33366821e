//! Decoded pgoutput messages -> committed [`Transaction`]s with JSON rows. Keeps the
//! relations the stream has described (and follows them as they change) and buffers a
//! transaction until its commit. Streamed (protocol 2) transactions are the caller's to
//! keep until they commit (see `spool`: raw, within a memory budget) and to replay here
//! then, between a Begin and a Commit. No I/O: type names the server did not describe are
//! asked of the catalog by the caller, between messages.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::change::{
    ChangeKind, ColumnInfo, RelationInfo, ReplicaIdentity, Row, RowChange, Transaction,
};
use crate::decode::pgoutput::{Relation, Tuple};
use crate::decode::{
    binary_to_json, text_to_json, types, CatalogType, Cell, OldTuple, PgOutput, TypeInfo, ValueKind,
};

/// A relation as last described, with each column's conversion ready.
struct RelationState {
    info: Arc<RelationInfo>,
    kinds: Vec<ValueKind>,
    /// The column names, shared by every row of the relation.
    names: Arc<[String]>,
}

struct Pending {
    xid: u32,
    changes: Vec<RowChange>,
}

/// The stream contradicted itself (a change for a relation never described, a commit
/// without a begin). The connection is restarted from the slot when this happens.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("change for relation {0} before its Relation message")]
    UnknownRelation(u32),
    #[error("{0} outside a transaction")]
    OutsideTransaction(&'static str),
    #[error("{0} of a streamed transaction given to the assembler before its commit")]
    Streamed(&'static str),
    #[error("tuple has {got} column(s), relation {relation} has {want}")]
    ColumnCount {
        relation: u32,
        got: usize,
        want: usize,
    },
}

#[derive(Default)]
pub struct Assembler {
    relations: HashMap<u32, RelationState>,
    catalog: HashMap<u32, CatalogType>,
    types: HashMap<u32, TypeInfo>,
    current: Option<Pending>,
    /// The transaction whose streamed block is open.
    stream_block: Option<u32>,
}

impl Assembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// True between Stream Start and Stream Stop (the parser needs to know).
    pub fn in_stream_block(&self) -> bool {
        self.stream_block.is_some()
    }

    /// The transaction whose streamed block is open.
    pub fn stream_xid(&self) -> Option<u32> {
        self.stream_block
    }

    /// No transaction has begun and not yet ended (streamed ones are the caller's).
    pub fn idle(&self) -> bool {
        self.current.is_none()
    }

    /// A new session re-sends relations and restarts open transactions; forget them.
    /// Resolved types are kept (an OID never changes meaning while the type exists).
    pub fn reset_session(&mut self) {
        self.relations.clear();
        self.current = None;
        self.stream_block = None;
    }

    /// Column type OIDs of `rel` we can resolve neither as built-ins nor from catalog
    /// rows already known.
    pub fn missing_types(&self, rel: &Relation) -> Vec<u32> {
        let mut out: Vec<u32> = rel
            .columns
            .iter()
            .map(|c| c.type_oid)
            .filter(|oid| {
                !self.types.contains_key(oid)
                    && !self.catalog.contains_key(oid)
                    && types::builtin(*oid).is_none()
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Adds pg_type rows (the caller's answer to [`Self::missing_types`]).
    pub fn add_catalog_rows(&mut self, rows: impl IntoIterator<Item = CatalogType>) {
        for row in rows {
            self.types.remove(&row.oid);
            self.catalog.insert(row.oid, row);
        }
    }

    fn type_info(&mut self, oid: u32) -> TypeInfo {
        if let Some(t) = self.types.get(&oid) {
            return t.clone();
        }
        let t = types::resolve(oid, &self.catalog);
        // A type missing from the catalog answer stays unresolved, so a later Relation
        // message (after the type is created) asks again.
        if t.name != "unknown" {
            self.types.insert(oid, t.clone());
        }
        t
    }

    fn relation(&mut self, r: Relation) {
        let mut columns = Vec::with_capacity(r.columns.len());
        let mut kinds = Vec::with_capacity(r.columns.len());
        for c in r.columns {
            let t = self.type_info(c.type_oid);
            kinds.push(t.kind);
            columns.push(ColumnInfo {
                name: c.name,
                type_oid: c.type_oid,
                type_name: t.name,
                is_key: c.is_key,
            });
        }
        let replica_identity = match r.replica_identity {
            b'f' => ReplicaIdentity::Full,
            b'n' => ReplicaIdentity::Nothing,
            b'i' => ReplicaIdentity::Index,
            _ => ReplicaIdentity::Default,
        };
        let info = Arc::new(RelationInfo {
            oid: r.oid,
            schema: r.namespace,
            name: r.name,
            replica_identity,
            columns,
        });
        let names = info.columns.iter().map(|c| c.name.clone()).collect();
        self.relations
            .insert(r.oid, RelationState { info, kinds, names });
    }

    /// Applies one message; returns the transaction it committed, if any.
    pub fn apply(&mut self, msg: PgOutput<'_>) -> Result<Option<Transaction>, AssembleError> {
        match msg {
            PgOutput::Begin(b) => {
                self.current = Some(Pending {
                    xid: b.xid,
                    changes: Vec::new(),
                });
            }
            PgOutput::Commit(c) => {
                let p = self
                    .current
                    .take()
                    .ok_or(AssembleError::OutsideTransaction("Commit"))?;
                return Ok(Some(Transaction {
                    xid: p.xid,
                    commit_lsn: c.end_lsn,
                    commit_time_micros: c.commit_time_micros,
                    changes: p.changes,
                }));
            }
            PgOutput::Relation(r) => self.relation(r),
            PgOutput::Insert(m) => {
                let change = self.row_change(m.relation, ChangeKind::Insert, Some(&m.new), None)?;
                self.push(m.xid, change)?;
            }
            PgOutput::Update(m) => {
                let change =
                    self.row_change(m.relation, ChangeKind::Update, Some(&m.new), m.old.as_ref())?;
                self.push(m.xid, change)?;
            }
            PgOutput::Delete(m) => {
                let change = self.row_change(m.relation, ChangeKind::Delete, None, Some(&m.old))?;
                self.push(m.xid, change)?;
            }
            PgOutput::Truncate(t) => {
                for oid in &t.relations {
                    let rel = self
                        .relations
                        .get(oid)
                        .ok_or(AssembleError::UnknownRelation(*oid))?;
                    let change = RowChange {
                        relation: rel.info.clone(),
                        kind: ChangeKind::Truncate,
                        record: None,
                        old_record: None,
                        unchanged_toast: Vec::new(),
                    };
                    self.push(t.xid, change)?;
                }
            }
            PgOutput::StreamStart(s) => self.stream_block = Some(s.xid),
            PgOutput::StreamStop => self.stream_block = None,
            PgOutput::StreamCommit(_) => return Err(AssembleError::Streamed("Stream Commit")),
            PgOutput::StreamAbort(_) => return Err(AssembleError::Streamed("Stream Abort")),
            // Type names come from the catalog; origins and logical messages carry no rows.
            PgOutput::Type(_) | PgOutput::Origin(_) | PgOutput::Message(_) => {}
        }
        Ok(None)
    }

    /// `_xid` is the (sub)transaction a streamed change belongs to: by the time it gets
    /// here its transaction committed and is replayed whole.
    fn push(&mut self, _xid: Option<u32>, change: RowChange) -> Result<(), AssembleError> {
        if self.stream_block.is_some() {
            return Err(AssembleError::Streamed("row change"));
        }
        let p = self
            .current
            .as_mut()
            .ok_or(AssembleError::OutsideTransaction("row change"))?;
        p.changes.push(change);
        Ok(())
    }

    fn row_change(
        &self,
        relation: u32,
        kind: ChangeKind,
        new: Option<&Tuple<'_>>,
        old: Option<&OldTuple<'_>>,
    ) -> Result<RowChange, AssembleError> {
        let rel = self
            .relations
            .get(&relation)
            .ok_or(AssembleError::UnknownRelation(relation))?;
        let mut unchanged_toast = Vec::new();
        let record = match new {
            Some(t) => Some(to_row(rel, relation, t, false, Some(&mut unchanged_toast))?),
            None => None,
        };
        let old_record = match old {
            Some(OldTuple::Full(t)) => Some(to_row(rel, relation, t, false, None)?),
            Some(OldTuple::Key(t)) => Some(to_row(rel, relation, t, true, None)?),
            // An UPDATE that kept its key sends no old tuple: the old key is the new one.
            None => match (&record, rel.info.replica_identity) {
                (Some(rec), ReplicaIdentity::Default | ReplicaIdentity::Index)
                    if kind == ChangeKind::Update =>
                {
                    let values: Vec<Option<Value>> = rel
                        .info
                        .columns
                        .iter()
                        .map(|c| {
                            if c.is_key {
                                rec.get(&c.name).cloned()
                            } else {
                                None
                            }
                        })
                        .collect();
                    let key = Row::new(rel.names.clone(), values);
                    (!key.is_empty()).then_some(key)
                }
                _ => None,
            },
        };
        Ok(RowChange {
            relation: rel.info.clone(),
            kind,
            record,
            old_record,
            unchanged_toast,
        })
    }
}

/// A tuple as a row of its relation. Key-only tuples carry the key columns (the others
/// are null in the tuple but not part of the row); unchanged TOASTed values are left out
/// and named in `unchanged`.
fn to_row(
    rel: &RelationState,
    relation: u32,
    tuple: &Tuple<'_>,
    key_only: bool,
    mut unchanged: Option<&mut Vec<String>>,
) -> Result<Row, AssembleError> {
    let cols = &rel.info.columns;
    if tuple.len() != cols.len() {
        return Err(AssembleError::ColumnCount {
            relation,
            got: tuple.len(),
            want: cols.len(),
        });
    }
    let values = tuple
        .iter()
        .zip(cols)
        .zip(&rel.kinds)
        .map(|((cell, col), kind)| {
            if key_only && !col.is_key {
                return None;
            }
            match cell {
                Cell::Text(t) => Some(text_to_json(kind, t)),
                Cell::Binary(b) => Some(binary_to_json(b)),
                Cell::Null => Some(Value::Null),
                Cell::UnchangedToast => {
                    if let Some(u) = unchanged.as_deref_mut() {
                        u.push(col.name.clone());
                    }
                    None
                }
            }
        })
        .collect();
    Ok(Row::new(rel.names.clone(), values))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::pgoutput::*;
    use serde_json::json;

    fn rel(identity: u8) -> PgOutput<'static> {
        PgOutput::Relation(Relation {
            xid: None,
            oid: 10,
            namespace: "public".into(),
            name: "t".into(),
            replica_identity: identity,
            columns: vec![
                RelationColumn {
                    is_key: true,
                    name: "id".into(),
                    type_oid: 20,
                    type_modifier: -1,
                },
                RelationColumn {
                    is_key: false,
                    name: "body".into(),
                    type_oid: 25,
                    type_modifier: -1,
                },
            ],
        })
    }

    fn begin(xid: u32) -> PgOutput<'static> {
        PgOutput::Begin(Begin {
            final_lsn: 90,
            commit_time_micros: 5,
            xid,
        })
    }

    fn commit(end: u64) -> PgOutput<'static> {
        PgOutput::Commit(Commit {
            flags: 0,
            commit_lsn: end - 8,
            end_lsn: end,
            commit_time_micros: 5,
        })
    }

    #[test]
    fn a_transaction_collects_typed_rows_until_commit() {
        let mut a = Assembler::new();
        a.apply(rel(b'd')).unwrap();
        a.apply(begin(7)).unwrap();
        assert!(!a.idle());
        let ins = PgOutput::Insert(Insert {
            xid: None,
            relation: 10,
            new: vec![Cell::Text(b"9007199254740993"), Cell::Text(b"hi")],
        });
        assert!(a.apply(ins).unwrap().is_none());
        let upd = PgOutput::Update(Update {
            xid: None,
            relation: 10,
            old: None,
            new: vec![Cell::Text(b"9007199254740993"), Cell::UnchangedToast],
        });
        a.apply(upd).unwrap();
        let del = PgOutput::Delete(Delete {
            xid: None,
            relation: 10,
            old: OldTuple::Key(vec![Cell::Text(b"3"), Cell::Null]),
        });
        a.apply(del).unwrap();
        let t = a.apply(commit(100)).unwrap().expect("committed");
        assert!(a.idle());
        assert_eq!((t.xid, t.commit_lsn), (7, 100));
        assert_eq!(t.changes.len(), 3);
        let rec = t.changes[0].record.as_ref().unwrap();
        assert_eq!(rec["id"].to_string(), "9007199254740993");
        assert!(
            t.changes[0].old_record.is_none(),
            "an INSERT has no old row"
        );
        assert_eq!(rec["body"], json!("hi"));
        // Unchanged TOAST: left out of the record and named, not invented.
        let u = &t.changes[1];
        assert_eq!(u.unchanged_toast, vec!["body".to_string()]);
        assert!(!u.record.as_ref().unwrap().contains_key("body"));
        assert_eq!(
            Value::from(u.old_record.clone().unwrap()).to_string(),
            r#"{"id":9007199254740993}"#
        );
        let d = &t.changes[2];
        assert_eq!(d.kind, ChangeKind::Delete);
        assert_eq!(Value::from(d.old_record.clone().unwrap()), json!({"id": 3}));
    }

    /// A relation with one column of each kind the stream types specially.
    fn wide_rel() -> PgOutput<'static> {
        let col = |name: &str, type_oid: u32| RelationColumn {
            is_key: name == "id",
            name: name.into(),
            type_oid,
            type_modifier: -1,
        };
        PgOutput::Relation(Relation {
            xid: None,
            oid: 20,
            namespace: "public".into(),
            name: "wide".into(),
            replica_identity: b'f',
            columns: vec![
                col("id", 20),
                col("amount", 1700),
                col("meta", 3802),
                col("tags", 1009),
                col("at", 1184),
                col("ok", 16),
                col("note", 25),
            ],
        })
    }

    #[test]
    fn full_rows_keep_column_order_and_exact_values() {
        let mut a = Assembler::new();
        a.apply(wide_rel()).unwrap();
        a.apply(begin(1)).unwrap();
        let row = vec![
            Cell::Text(b"-9223372036854775808"),
            Cell::Text(b"123456789012345678901234567890.000000000001"),
            Cell::Text(br#"{"a": {"b": [1, 2.50, "x"]}, "big": 18446744073709551616}"#),
            Cell::Text(br#"{a,"b c",NULL,"d\"e"}"#),
            Cell::Text(b"2024-01-02 03:04:05.5+00"),
            Cell::Text(b"t"),
            Cell::Null,
        ];
        a.apply(PgOutput::Insert(Insert {
            xid: None,
            relation: 20,
            new: row.clone(),
        }))
        .unwrap();
        // Same row with one unchanged TOAST column, and as a full old row: the paths
        // that build the map column by column.
        let mut toasted = row.clone();
        toasted[6] = Cell::UnchangedToast;
        a.apply(PgOutput::Update(Update {
            xid: None,
            relation: 20,
            old: Some(OldTuple::Full(row.clone())),
            new: toasted,
        }))
        .unwrap();
        let t = a.apply(commit(50)).unwrap().unwrap();
        let want = r#"{"id":-9223372036854775808,"amount":123456789012345678901234567890.000000000001,"meta":{"a":{"b":[1,2.50,"x"]},"big":18446744073709551616},"tags":["a","b c",null,"d\"e"],"at":"2024-01-02T03:04:05.5+00:00","ok":true,"note":null}"#;
        let ins = Value::from(t.changes[0].record.clone().unwrap());
        assert_eq!(ins.to_string(), want);
        let old = Value::from(t.changes[1].old_record.clone().unwrap());
        assert_eq!(old.to_string(), want);
        let upd = &t.changes[1];
        assert_eq!(upd.unchanged_toast, vec!["note".to_string()]);
        let rec = upd.record.as_ref().unwrap();
        let keys: Vec<&str> = rec.keys().map(String::as_str).collect();
        assert_eq!(keys, ["id", "amount", "meta", "tags", "at", "ok"]);
        assert_eq!(Value::from(rec.clone())["meta"], ins["meta"]);
    }

    #[test]
    fn a_new_relation_message_changes_the_columns_of_later_rows() {
        let mut a = Assembler::new();
        a.apply(rel(b'f')).unwrap();
        a.apply(begin(1)).unwrap();
        a.apply(PgOutput::Relation(Relation {
            xid: None,
            oid: 10,
            namespace: "public".into(),
            name: "t".into(),
            replica_identity: b'f',
            columns: vec![RelationColumn {
                is_key: true,
                name: "id".into(),
                type_oid: 20,
                type_modifier: -1,
            }],
        }))
        .unwrap();
        a.apply(PgOutput::Insert(Insert {
            xid: None,
            relation: 10,
            new: vec![Cell::Text(b"1")],
        }))
        .unwrap();
        let t = a.apply(commit(50)).unwrap().unwrap();
        assert_eq!(t.changes[0].relation.columns.len(), 1);
        assert_eq!(
            Value::from(t.changes[0].record.clone().unwrap()),
            json!({"id": 1})
        );
    }

    #[test]
    fn a_streamed_transaction_is_replayed_at_its_commit_and_refused_before() {
        let mut a = Assembler::new();
        a.apply(rel(b'd')).unwrap();
        let ins = |xid, id: &'static [u8]| {
            PgOutput::Insert(Insert {
                xid: Some(xid),
                relation: 10,
                new: vec![Cell::Text(id), Cell::Null],
            })
        };
        a.apply(PgOutput::StreamStart(StreamStart {
            xid: 500,
            first_segment: true,
        }))
        .unwrap();
        assert_eq!(a.stream_xid(), Some(500));
        // Inside the block, changes are the caller's to keep until the commit.
        assert!(matches!(
            a.apply(ins(500, b"1")),
            Err(AssembleError::Streamed(_))
        ));
        a.apply(PgOutput::StreamStop).unwrap();
        assert!(!a.in_stream_block());
        assert!(a.idle(), "nothing is held here");
        // A regular transaction may commit between stream blocks.
        a.apply(begin(600)).unwrap();
        assert_eq!(a.apply(commit(70)).unwrap().unwrap().xid, 600);
        let stream_commit = PgOutput::StreamCommit(StreamCommit {
            xid: 500,
            flags: 0,
            commit_lsn: 90,
            end_lsn: 99,
            commit_time_micros: 1,
        });
        assert!(matches!(
            a.apply(stream_commit),
            Err(AssembleError::Streamed(_))
        ));
        // The caller's replay: the kept changes between a Begin and a Commit, as parsed
        // inside the block (with their subtransaction xids).
        a.apply(begin(500)).unwrap();
        a.apply(ins(500, b"1")).unwrap();
        a.apply(ins(502, b"3")).unwrap();
        let t = a.apply(commit(99)).unwrap().unwrap();
        let ids: Vec<String> = t
            .changes
            .iter()
            .map(|c| c.record.as_ref().unwrap()["id"].to_string())
            .collect();
        assert_eq!(ids, vec!["1", "3"]);
        assert_eq!((t.xid, t.commit_lsn), (500, 99));
        assert!(a.idle());
    }

    #[test]
    fn truncate_names_each_relation() {
        let mut a = Assembler::new();
        a.apply(rel(b'd')).unwrap();
        a.apply(begin(1)).unwrap();
        a.apply(PgOutput::Truncate(Truncate {
            xid: None,
            options: 0,
            relations: vec![10],
        }))
        .unwrap();
        let t = a.apply(commit(20)).unwrap().unwrap();
        assert_eq!(t.changes[0].kind, ChangeKind::Truncate);
        assert_eq!(t.changes[0].relation.name, "t");
    }

    #[test]
    fn contradictions_are_errors() {
        let mut a = Assembler::new();
        assert!(a.apply(commit(20)).is_err());
        a.apply(begin(1)).unwrap();
        let ins = PgOutput::Insert(Insert {
            xid: None,
            relation: 99,
            new: vec![],
        });
        assert!(matches!(
            a.apply(ins),
            Err(AssembleError::UnknownRelation(99))
        ));
        a.apply(rel(b'd')).unwrap();
        let short = PgOutput::Insert(Insert {
            xid: None,
            relation: 10,
            new: vec![Cell::Null],
        });
        assert!(matches!(
            a.apply(short),
            Err(AssembleError::ColumnCount { .. })
        ));
    }
}
