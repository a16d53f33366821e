//! `ripple tail`: the change stream as JSON lines, one per row change, like
//! `pg_recvlogical` but typed. Each transaction is confirmed to the server only after its
//! lines are written and flushed, so a tail on a durable slot that stops (or is killed)
//! resumes where its output ends.

use std::io::Write;
use std::sync::Arc;

use crate::change::{format_lsn, Lsn, Row, Transaction};
use crate::replication::{self, ReplicationConfig, ReplicationError};
use serde::Serialize;

#[derive(Debug, Clone, clap::Args)]
pub struct TailOptions {
    /// Publication whose tables stream.
    #[arg(long, env = "RIPPLE_PUBLICATION", default_value = crate::DEFAULT_PUBLICATION)]
    pub publication: String,
    /// Durable slot to consume (created if absent), so a later run resumes where this one
    /// stopped. Without it, tail uses a temporary slot of its own: changes from now on,
    /// never the gateway's slot (two consumers cannot share one).
    #[arg(long)]
    pub slot: Option<String>,
    /// Use a temporary slot even when --slot is given.
    #[arg(long)]
    pub temporary: bool,
    /// Skip transactions committed at or before this LSN (e.g. the last `commit_lsn` a
    /// previous run printed).
    #[arg(long, value_parser = parse_lsn_arg)]
    pub start_after: Option<Lsn>,
    /// Stop after this many changes.
    #[arg(long)]
    pub limit: Option<u64>,
}

fn parse_lsn_arg(s: &str) -> Result<Lsn, String> {
    crate::change::parse_lsn(s).ok_or_else(|| format!("{s:?} is not an LSN like 16/B374D848"))
}

/// One row change as one JSON line. Borrows the transaction: rows are written straight
/// from the typed change, never copied into an intermediate JSON value first.
#[derive(Debug, Serialize)]
pub struct ChangeLine<'a> {
    pub schema: &'a str,
    pub table: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub commit_lsn: &'a str,
    pub commit_time: &'a str,
    pub xid: u32,
    pub record: Option<&'a Row>,
    pub old_record: Option<&'a Row>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub unchanged_toast: &'a [String],
}

/// Writes the transaction's changes as JSON lines (not flushed); returns how many.
pub fn write_lines(t: &Transaction, out: &mut impl Write) -> std::io::Result<u64> {
    let lsn = format_lsn(t.commit_lsn);
    let time = t.commit_timestamp();
    for c in &t.changes {
        let line = ChangeLine {
            schema: &c.relation.schema,
            table: &c.relation.name,
            kind: c.kind.as_str(),
            commit_lsn: &lsn,
            commit_time: &time,
            xid: t.xid,
            record: c.record.as_ref(),
            old_record: c.old_record.as_ref(),
            unchanged_toast: &c.unchanged_toast,
        };
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
    }
    Ok(t.changes.len() as u64)
}

/// Transactions written between two flushes (and confirmations) at most.
const FLUSH_BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    #[error("could not write to the output")]
    Output(#[source] std::io::Error),
}

/// Streams until `stop` resolves, the limit is reached, or output fails.
pub async fn run(
    database_url: &str,
    opts: &TailOptions,
    mut out: impl Write,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), TailError> {
    let temporary_name = format!("ripple_tail_{}", std::process::id());
    let slot = match (&opts.slot, opts.temporary) {
        (Some(slot), false) => slot.as_str(),
        _ => temporary_name.as_str(),
    };
    let mut config = ReplicationConfig::new(database_url, slot, &opts.publication);
    config.temporary_slot = slot == temporary_name;
    config.resume_after = opts.start_after;
    let (mut rx, handle) = replication::start(config).await?;
    let mut printed = 0u64;
    tokio::pin!(stop);
    let result = loop {
        let mut t: Arc<Transaction> = tokio::select! {
            t = rx.recv() => match t {
                Some(t) => t,
                None => break Ok(()),
            },
            _ = &mut stop => break Ok(()),
        };
        // What is already queued is written with one flush and confirmed once: a write
        // system call per transaction would cost more than a small transaction itself.
        let mut batch = 1;
        let mut write = || -> std::io::Result<(Lsn, bool)> {
            loop {
                printed += write_lines(&t, &mut out)?;
                let done = opts.limit.is_some_and(|l| printed >= l);
                if done || batch >= FLUSH_BATCH {
                    break;
                }
                match rx.try_recv() {
                    Ok(next) => t = next,
                    Err(_) => break,
                }
                batch += 1;
            }
            out.flush()?;
            Ok((t.commit_lsn, opts.limit.is_some_and(|l| printed >= l)))
        };
        match write() {
            Ok((lsn, done)) => {
                handle.confirm(lsn);
                if done {
                    break Ok(());
                }
            }
            Err(e) => break Err(TailError::Output(e)),
        }
    };
    handle.shutdown().await;
    result
}
