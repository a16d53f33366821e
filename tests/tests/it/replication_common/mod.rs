//! Helpers shared by the replication test modules.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use ripple::change::{ChangeKind, Row, Transaction};
use ripple::replication::{self, ReplicationConfig, ReplicationHandle};
use ripple_tests::TestDb;
use tokio::sync::mpsc::Receiver;

pub type Stream = (Receiver<Arc<Transaction>>, ReplicationHandle);

/// Creates `ddl`'s tables and a publication `pub_name` for all of them... by name.
pub async fn publish(db: &TestDb, pub_name: &str, tables: &[&str]) {
    db.client
        .batch_execute(&format!(
            "create publication {pub_name} for table {}",
            tables.join(", ")
        ))
        .await
        .expect("create publication");
}

/// Slots are cluster-wide: each test's slot name starts with its database's name.
pub fn slot_name(db: &TestDb, slot: &str) -> String {
    format!("{}_{slot}", db.name)
}

pub fn config(db: &TestDb, slot: &str, publication: &str) -> ReplicationConfig {
    ReplicationConfig::new(&db.url, &slot_name(db, slot), publication)
}

pub async fn start(db: &TestDb, slot: &str, publication: &str) -> Stream {
    replication::start(config(db, slot, publication))
        .await
        .expect("start replication")
}

/// Receives transactions, confirming each, until `changes` row changes arrived.
pub async fn collect_changes(stream: &mut Stream, changes: usize) -> Vec<Arc<Transaction>> {
    collect_changes_within(stream, changes, Duration::from_secs(120)).await
}

pub async fn collect_changes_within(
    stream: &mut Stream,
    changes: usize,
    limit: Duration,
) -> Vec<Arc<Transaction>> {
    let mut out = Vec::new();
    let mut n = 0;
    let deadline = tokio::time::Instant::now() + limit;
    while n < changes {
        match tokio::time::timeout_at(deadline, stream.0.recv()).await {
            Ok(Some(t)) => {
                n += t.changes.len();
                stream.1.confirm(t.commit_lsn);
                out.push(t);
            }
            Ok(None) => panic!("stream ended after {n} of {changes} changes"),
            Err(_) => panic!("timed out after {n} of {changes} changes"),
        }
    }
    out
}

/// Asserts nothing more arrives for a moment.
pub async fn assert_quiet(stream: &mut Stream, wait: Duration) {
    if let Ok(Some(t)) = tokio::time::timeout(wait, stream.0.recv()).await {
        panic!("unexpected transaction: {t:?}");
    }
}

pub fn record(t: &Transaction, i: usize) -> &Row {
    t.changes[i].record.as_ref().expect("record")
}

pub fn kinds(t: &Transaction) -> Vec<ChangeKind> {
    t.changes.iter().map(|c| c.kind).collect()
}

/// The `id` of every INSERTed row, in stream order.
pub fn inserted_ids(ts: &[Arc<Transaction>]) -> Vec<i64> {
    ts.iter()
        .flat_map(|t| t.changes.iter())
        .filter(|c| c.kind == ChangeKind::Insert)
        .map(|c| {
            c.record.as_ref().unwrap()["id"]
                .as_i64()
                .expect("integer id")
        })
        .collect()
}
