//! The logical replication connection: our own small client on postgres-protocol (startup,
//! authentication, CopyBoth), the slot and publication, and standby status updates.
//!
//! ```text
//! connection (socket, auth, framing) -> stream (one task: frames, status, reconnect)
//!   -> decode (pgoutput bytes -> messages) -> assemble (messages -> Transactions)
//!      (streamed transactions wait in spool, raw and within a memory budget, until they
//!      commit, then go through assemble)
//!   -> mpsc::Receiver<Arc<Transaction>> (the consumer), which confirms what it processed
//! ```
//!
//! ```no_run
//! # async fn f() -> Result<(), ripple::replication::ReplicationError> {
//! use ripple::replication::{self, ReplicationConfig};
//! let config = ReplicationConfig::new("postgres://ripple@127.0.0.1/chat", "ripple", "ripple");
//! let (mut changes, handle) = replication::start(config).await?;
//! while let Some(txn) = changes.recv().await {
//!     // ... deliver txn.changes ...
//!     handle.confirm(txn.commit_lsn); // only now may the server forget it
//! }
//! # Ok(()) }
//! ```
//!
//! Guarantees: transactions arrive whole, in commit order. The server is told a position
//! is flushed only once the consumer confirmed it, so after a crash or a lost connection
//! the stream resumes from the slot and nothing confirmed-but-unseen exists. Within one
//! process a resume never delivers a transaction twice (duplicates are recognised by
//! commit LSN). Across a hard kill, transactions delivered but not yet reported to the
//! server come again, unless the consumer passes the last LSN it processed as
//! [`ReplicationConfig::resume_after`]; a graceful [`ReplicationHandle::shutdown`] reports
//! the final confirmed position first.
//!
//! PostgreSQL's fast shutdown waits for each logical walsender until its client has
//! confirmed everything sent. Ripple reports the consumer's confirmations within a status
//! interval, and the server's own position whenever nothing is in flight, so a consumer
//! that keeps confirming lets the server stop; one that stops confirming holds it up.

mod assemble;
mod connection;
mod error;
mod setup;
mod spool;
mod stream;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Mutex};
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;

pub use assemble::{AssembleError, Assembler};
pub use connection::{ConnectParams, Target};
pub use error::{ReplicationError, ServerError};
pub use spool::{SpillConfig, SpillMetrics};

use crate::backoff::Backoff;
use crate::change::{Lsn, Transaction};
use stream::{Shared, Streamer};

/// What to stream from where.
#[derive(Clone)]
pub struct ReplicationConfig {
    /// `postgres://user:password@host:port/db` or `host=/socket/dir user=...` (Unix socket).
    pub database_url: String,
    /// Logical slot (pgoutput) to create if absent and consume.
    pub slot: String,
    /// Publication whose tables stream.
    pub publication: String,
    /// A TEMPORARY slot, dropped by the server when the connection ends (`ripple tail
    /// --temporary`). Recreated on reconnect: changes made in between are not replayed.
    pub temporary_slot: bool,
    /// Create the publication (empty) if it does not exist.
    pub create_publication: bool,
    /// Skip transactions with a commit LSN at or below this (the consumer's own record of
    /// what it processed, for exactly-once across a hard restart).
    pub resume_after: Option<Lsn>,
    /// Force the pgoutput protocol version (default: 2 with streaming on PostgreSQL 14+,
    /// else 1).
    pub protocol_version: Option<u32>,
    /// Transactions queued for the consumer before the stream waits for it.
    pub channel_capacity: usize,
    /// Shortest time between two standby status updates.
    pub status_interval: Duration,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Streamed transactions in progress: how much of them memory holds before the rest
    /// goes to a file, and where.
    pub spill: SpillConfig,
}

impl std::fmt::Debug for ReplicationConfig {
    // The URL may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationConfig")
            .field("slot", &self.slot)
            .field("publication", &self.publication)
            .field("temporary_slot", &self.temporary_slot)
            .field("resume_after", &self.resume_after)
            .finish_non_exhaustive()
    }
}

impl ReplicationConfig {
    pub fn new(database_url: &str, slot: &str, publication: &str) -> Self {
        Self {
            database_url: database_url.into(),
            slot: slot.into(),
            publication: publication.into(),
            temporary_slot: false,
            create_publication: true,
            resume_after: None,
            protocol_version: None,
            channel_capacity: 1024,
            status_interval: Duration::from_millis(250),
            max_backoff: Duration::from_secs(5),
            spill: SpillConfig::default(),
        }
    }
}

/// The stream's connection state, for `/health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamState {
    Streaming,
    Reconnecting { attempt: u32, error: String },
    Stopped,
}

/// The consumer's side of the stream: confirm progress, watch the connection, stop.
#[derive(Clone)]
pub struct ReplicationHandle {
    shared: Arc<Shared>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl ReplicationHandle {
    /// Everything up to and including the transaction with this commit LSN is fully
    /// processed: the only position ever reported to the server as flushed.
    pub fn confirm(&self, lsn: Lsn) {
        self.shared.confirmed.fetch_max(lsn, Ordering::AcqRel);
    }

    /// The slot's confirmed position when streaming first started: changes above it are
    /// (or will be) streamed to this process.
    pub fn floor(&self) -> Lsn {
        self.shared.floor.load(Ordering::Acquire)
    }

    /// The highest position confirmed so far.
    pub fn confirmed(&self) -> Lsn {
        self.shared.confirmed.load(Ordering::Acquire)
    }

    pub fn is_up(&self) -> bool {
        *self.shared.state.borrow() == StreamState::Streaming
    }

    /// Follows the connection state. Do not hold a `borrow()` (or the guard `wait_for`
    /// returns) across an await: the stream waits for it to publish the next state.
    pub fn state(&self) -> watch::Receiver<StreamState> {
        self.shared.state.subscribe()
    }

    /// Counts slot losses: moves each time the durable slot had to be recreated after this
    /// process streamed from it (the changes in between are lost).
    pub fn slot_losses(&self) -> watch::Receiver<u64> {
        self.shared.slot_losses.subscribe()
    }

    /// Reports the confirmed position, closes the connection and waits for the task.
    pub async fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

/// Connects, makes sure the publication and slot exist and starts streaming. Errors in
/// this first connection (wrong password, wal_level, permissions) are returned; later
/// losses are retried with backoff, resuming from the slot.
pub async fn start(
    config: ReplicationConfig,
) -> Result<(mpsc::Receiver<Arc<Transaction>>, ReplicationHandle), ReplicationError> {
    setup::check_slot_name(&config.slot)?;
    let pg_config: tokio_postgres::Config =
        config.database_url.parse().map_err(ReplicationError::Url)?;
    let params = ConnectParams::from_config(&pg_config)?;
    let (tx, rx) = mpsc::channel(config.channel_capacity.max(1));
    let (state, _) = watch::channel(StreamState::Streaming);
    let (shutdown, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        // The consumer's own record counts as confirmed: the slot may move past it.
        confirmed: config.resume_after.unwrap_or(0).into(),
        floor: 0.into(),
        state,
        shutdown,
        slot_losses: watch::channel(0).0,
    });
    let mut streamer = Streamer::new(config, params, pg_config, shared.clone(), tx);
    // A slot still held by a connection that is going away (a consumer that was just
    // killed) frees itself within moments; wait for it rather than fail.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    let conn = loop {
        match streamer.open_session().await {
            Ok(c) => break c,
            Err(e)
                if e.code() == Some(SqlState::OBJECT_IN_USE.code())
                    && tokio::time::Instant::now() < deadline =>
            {
                backoff.wait().await;
            }
            Err(e) => return Err(e),
        }
    };
    let task = tokio::spawn(streamer.run(conn));
    Ok((
        rx,
        ReplicationHandle {
            shared,
            task: Arc::new(Mutex::new(Some(task))),
        },
    ))
}
