//! The task that owns the replication socket: reads XLogData and keepalives, decodes and
//! assembles transactions, hands them to the consumer in commit order, reports back only
//! what the consumer confirmed, and reconnects (resuming from the slot) when the
//! connection or the server goes away.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::{mpsc, watch};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::assemble::Assembler;
use super::connection::{ConnectParams, ReplicationConnection};
use super::error::ReplicationError;
use super::spool::Spool;
use super::{setup, ReplicationConfig, StreamState};
use crate::backoff::Backoff;
use crate::change::{format_lsn, Lsn, Transaction};
use crate::decode::pgoutput::{Begin, Commit, StreamCommit};
use crate::decode::{self, PgOutput, WalFrame};

/// State shared with [`super::ReplicationHandle`].
pub(crate) struct Shared {
    /// Highest commit LSN the consumer has fully processed.
    pub confirmed: AtomicU64,
    /// The slot's confirmed position when this process first opened it (or the new slot's
    /// consistent point): what the slot streams to us is above it.
    pub floor: AtomicU64,
    pub state: watch::Sender<StreamState>,
    pub shutdown: watch::Sender<bool>,
    /// How many times the slot was found missing (or, temporary, gone) after this process
    /// had streamed from it, and recreated: changes committed in between are lost.
    pub slot_losses: watch::Sender<u64>,
}

/// Why streaming on one connection ended.
enum End {
    /// Shutdown asked for, or the consumer went away: stop for good.
    Stop,
}

/// Committed transactions decoded from one read are handed over together once the read is
/// used up (or this many are waiting): the consumer wakes once per batch instead of once
/// per transaction, which for small transactions costs more than decoding them.
const READY_BATCH: usize = 256;

/// Reads in a row that go without waiting (the data had already arrived) before the
/// stream loop gives its timer and shutdown a turn.
const EAGER_READS: usize = 16;

/// At least this often we tell the server we are alive, even with nothing new to report,
/// well inside the default wal_sender_timeout (60 s).
const HEARTBEAT: Duration = Duration::from_secs(10);

pub(crate) struct Streamer {
    config: ReplicationConfig,
    params: ConnectParams,
    pg_config: tokio_postgres::Config,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Arc<Transaction>>,
    assembler: Assembler,
    /// Streamed transactions in progress, as raw messages, until they commit or abort.
    spool: Spool,
    /// Committed transactions not yet handed to the consumer, in commit order.
    ready: VecDeque<Transaction>,
    catalog: Option<Client>,
    /// Commit LSN of the last transaction handed to the consumer (or skipped as already
    /// delivered): anything at or below it that the server sends again is a duplicate.
    last_delivered: Lsn,
    /// Flush position last reported to the server; only ever grows.
    last_reported: Lsn,
    /// Highest WAL position the server says it has sent (keepalives); reported as flushed
    /// only when the consumer is idle and has confirmed everything.
    server_wal_end: Lsn,
    /// Highest WAL position received.
    received: Lsn,
    last_status_at: Instant,
    /// A session was opened before: a slot missing now was lost, not new.
    streamed_before: bool,
}

impl Streamer {
    pub fn new(
        config: ReplicationConfig,
        params: ConnectParams,
        pg_config: tokio_postgres::Config,
        shared: Arc<Shared>,
        tx: mpsc::Sender<Arc<Transaction>>,
    ) -> Self {
        let start = config.resume_after.unwrap_or(0);
        let spool = Spool::new(config.spill.clone());
        Self {
            config,
            spool,
            params,
            pg_config,
            shared,
            tx,
            assembler: Assembler::new(),
            ready: VecDeque::new(),
            catalog: None,
            last_delivered: start,
            last_reported: 0,
            server_wal_end: 0,
            received: 0,
            last_status_at: Instant::now(),
            streamed_before: false,
        }
    }

    async fn catalog(&mut self) -> Result<&Client, ReplicationError> {
        let stale = self.catalog.as_ref().is_none_or(Client::is_closed);
        if stale {
            self.catalog = Some(setup::catalog_client(&self.pg_config).await?);
        }
        Ok(self.catalog.as_ref().expect("catalog client just set"))
    }

    /// Connects, checks the server, makes sure the publication and slot exist, and starts
    /// streaming from the slot (skipping what this process already delivered).
    pub async fn open_session(&mut self) -> Result<ReplicationConnection, ReplicationError> {
        let mut conn = ReplicationConnection::connect(&self.params).await?;
        setup::check_wal_level(&mut conn).await?;
        let ident = conn
            .simple_query("IDENTIFY_SYSTEM", "IDENTIFY_SYSTEM")
            .await?;
        let publication = self.config.publication.clone();
        let slot = self.config.slot.clone();
        let create_publication = self.config.create_publication;
        if create_publication {
            setup::ensure_publication(self.catalog().await?, &publication).await?;
        }
        let first_session = self.last_delivered == 0;
        let shared = self.shared.clone();
        let note_floor = |lsn: Lsn| {
            if first_session {
                shared.floor.store(lsn, Ordering::Release);
            }
        };
        let streamed_before = self.streamed_before;
        let lost = |shared: &Shared| {
            tracing::error!(slot = %slot, "replication slot lost and recreated: changes committed while it was missing are not delivered; joined clients are told to refetch");
            shared.slot_losses.send_modify(|n| *n += 1);
        };
        if self.config.temporary_slot {
            note_floor(setup::create_slot(&mut conn, &slot, true).await?);
            if self.last_delivered > 0 {
                tracing::warn!(slot = %slot, "temporary slot recreated: changes made while disconnected are not replayed");
            }
        } else {
            match setup::slot_state(self.catalog().await?, &slot).await? {
                Some(s) if s.plugin != "pgoutput" => {
                    return Err(ReplicationError::SlotPlugin {
                        slot,
                        plugin: s.plugin,
                    })
                }
                Some(s) => {
                    tracing::debug!(slot = %slot, confirmed = %format_lsn(s.confirmed_flush.unwrap_or(0)), "resuming from slot");
                    note_floor(s.confirmed_flush.unwrap_or(0));
                }
                None => match setup::create_slot(&mut conn, &slot, false).await {
                    Ok(lsn) => {
                        note_floor(lsn);
                        if streamed_before {
                            lost(&self.shared);
                        }
                    }
                    // Created by someone else in the meantime: use it.
                    Err(e) if e.code() == Some(SqlState::DUPLICATE_OBJECT.code()) => {}
                    Err(e) => return Err(e),
                },
            }
        }
        let proto = self
            .config
            .protocol_version
            .unwrap_or(if conn.server_version_num >= 140000 {
                2
            } else {
                1
            });
        let mut options = format!(
            "proto_version '{proto}', publication_names {}",
            setup::quote_literal(&setup::quote_ident(&publication))
        );
        if proto >= 2 {
            options.push_str(", streaming 'on'");
        }
        // The server starts at the slot's confirmed position or here, whichever is later,
        // and skips transactions that committed before it.
        let start = self.last_delivered;
        let cmd = format!(
            "START_REPLICATION SLOT {} LOGICAL {} ({options})",
            setup::quote_ident(&slot),
            format_lsn(start)
        );
        conn.start_replication(&cmd).await?;
        self.streamed_before = true;
        self.assembler.reset_session();
        // Streamed transactions in progress start again from their first block.
        self.spool.clear();
        // Anything decoded but not handed over comes again from the slot.
        self.ready.clear();
        tracing::info!(
            slot = %slot,
            publication = %publication,
            proto,
            start = %format_lsn(start),
            server_lsn = %ident.first().and_then(|r| r.get(2).cloned().flatten()).unwrap_or_default(),
            "replication streaming"
        );
        Ok(conn)
    }

    /// Streams, reconnecting with backoff, until shutdown or the consumer goes away.
    pub async fn run(mut self, mut conn: ReplicationConnection) {
        let mut shutdown = self.shared.shutdown.subscribe();
        loop {
            self.shared.state.send_replace(StreamState::Streaming);
            let error = match self.stream(&mut conn, &mut shutdown).await {
                Ok(End::Stop) => {
                    let _ = self.send_status(&mut conn, false).await;
                    conn.close().await;
                    break;
                }
                Err(e) => e,
            };
            drop(conn);
            tracing::warn!(error = %error_chain(&error), "replication connection lost; reconnecting");
            let mut backoff = reconnect_backoff(self.config.max_backoff);
            let mut last_error = error;
            conn = loop {
                let delay = backoff.next_delay();
                let attempt = backoff.attempt();
                self.shared.state.send_replace(StreamState::Reconnecting {
                    attempt,
                    error: error_chain(&last_error),
                });
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stopped(&mut shutdown) => {
                        self.shared.state.send_replace(StreamState::Stopped);
                        return;
                    }
                }
                match self.open_session().await {
                    Ok(c) => break c,
                    Err(e) => {
                        tracing::debug!(attempt, error = %error_chain(&e), "reconnect failed");
                        last_error = e;
                    }
                }
            };
            tracing::info!(attempt = backoff.attempt(), "replication reconnected");
        }
        self.shared.state.send_replace(StreamState::Stopped);
    }

    async fn stream(
        &mut self,
        conn: &mut ReplicationConnection,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<End, ReplicationError> {
        let mut tick = tokio::time::interval(self.config.status_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut eager_reads = 0;
        loop {
            while let Some(m) = conn.try_next_message()? {
                match m.tag {
                    b'd' => {
                        self.on_copy_data(conn, &m.body).await?;
                        if self.ready.len() >= READY_BATCH {
                            if let Some(end) = self.deliver_ready(conn, shutdown).await? {
                                return Ok(end);
                            }
                        }
                    }
                    b'E' => {
                        return Err(ReplicationError::Server {
                            during: "streaming",
                            source: Box::new(super::connection::parse_error(&m.body)),
                        })
                    }
                    b'c' => return Err(ReplicationError::Closed),
                    _ => {}
                }
            }
            // Bytes that arrived while we decoded are decoded too before the consumer is
            // woken, so one wake-up covers them all: when we fall behind the server, a
            // wake-up per transaction is what would keep us behind. Bounded, so that in a
            // long burst the status timer below still gets its turn.
            if eager_reads < EAGER_READS && self.ready.len() < READY_BATCH {
                if let Some(r) = conn.fill().now_or_never() {
                    r?;
                    eager_reads += 1;
                    continue;
                }
            }
            eager_reads = 0;
            if let Some(end) = self.deliver_ready(conn, shutdown).await? {
                return Ok(end);
            }
            if *shutdown.borrow() {
                return Ok(End::Stop);
            }
            tokio::select! {
                r = conn.fill() => r?,
                _ = tick.tick() => self.maybe_send_status(conn).await?,
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Decodes one CopyData message; a transaction it commits joins `ready`.
    async fn on_copy_data(
        &mut self,
        conn: &mut ReplicationConnection,
        body: &[u8],
    ) -> Result<(), ReplicationError> {
        match decode::parse_frame(body).map_err(ReplicationError::Decode)? {
            WalFrame::Keepalive {
                wal_end,
                reply_requested,
                ..
            } => {
                self.server_wal_end = self.server_wal_end.max(wal_end);
                self.received = self.received.max(wal_end);
                if reply_requested {
                    self.send_status(conn, false).await?;
                }
            }
            WalFrame::XLogData {
                wal_start,
                wal_end,
                data,
                ..
            } => {
                self.received = self.received.max(wal_end).max(wal_start);
                let in_stream = self.assembler.stream_xid();
                let msg =
                    decode::parse(data, in_stream.is_some()).map_err(ReplicationError::Decode)?;
                match (&msg, in_stream) {
                    (PgOutput::StreamStart(s), _) => self.spool.begin(s.xid),
                    (PgOutput::StreamAbort(a), _) => {
                        self.spool.abort(a.xid, a.subxid);
                        return Ok(());
                    }
                    (PgOutput::StreamCommit(c), _) => {
                        let c = *c;
                        return self.replay_streamed(&c).await;
                    }
                    (PgOutput::StreamStop, _) => {}
                    // Inside a streamed block: kept as sent, read back at the commit.
                    (_, Some(top)) => {
                        let subxid = change_xid(&msg).unwrap_or(top);
                        return self
                            .spool
                            .append(top, subxid, data)
                            .map_err(ReplicationError::Spill);
                    }
                    (_, None) => {}
                }
                self.apply(msg).await?;
            }
        }
        Ok(())
    }

    /// Applies one message to the assembler (first resolving the types a Relation message
    /// names that we do not know); a transaction it commits joins `ready`.
    async fn apply(&mut self, msg: PgOutput<'_>) -> Result<(), ReplicationError> {
        if let PgOutput::Relation(r) = &msg {
            let missing = self.assembler.missing_types(r);
            if !missing.is_empty() {
                let rows = {
                    let catalog = self.catalog().await?;
                    setup::catalog_types(catalog, &missing).await?
                };
                self.assembler.add_catalog_rows(rows);
            }
        }
        let committed = self
            .assembler
            .apply(msg)
            .map_err(ReplicationError::Assemble)?;
        if let Some(t) = committed {
            self.ready.push_back(t);
        }
        Ok(())
    }

    /// A streamed transaction committed: its kept messages go through the assembler in
    /// the order they came (its Relation messages too, which take effect now, as they
    /// would have at a regular commit), without those of aborted subtransactions.
    async fn replay_streamed(&mut self, c: &StreamCommit) -> Result<(), ReplicationError> {
        // A commit whose blocks never came (none are sent for a transaction without
        // published changes) commits nothing, as an empty transaction.
        let kept = self.spool.take(c.xid);
        self.apply(PgOutput::Begin(Begin {
            final_lsn: c.commit_lsn,
            commit_time_micros: c.commit_time_micros,
            xid: c.xid,
        }))
        .await?;
        if let Some(kept) = kept {
            let mut reader = kept.into_reader().map_err(ReplicationError::Spill)?;
            let mut buf = Vec::new();
            while reader
                .next_message(&mut buf)
                .map_err(ReplicationError::Spill)?
            {
                let msg = decode::parse(&buf, true).map_err(ReplicationError::Decode)?;
                self.apply(msg).await?;
            }
        }
        self.apply(PgOutput::Commit(Commit {
            flags: c.flags,
            commit_lsn: c.commit_lsn,
            end_lsn: c.end_lsn,
            commit_time_micros: c.commit_time_micros,
        }))
        .await
    }

    /// Hands the ready transactions to the consumer, skipping those delivered before (a
    /// resume re-sends what was not yet confirmed). While the consumer's queue is full we
    /// keep answering the server so it does not time us out. A transaction leaves `ready`
    /// only once it is in the queue, so status updates meanwhile never report past it.
    async fn deliver_ready(
        &mut self,
        conn: &mut ReplicationConnection,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<End>, ReplicationError> {
        while let Some(lsn) = self.ready.front().map(|t| t.commit_lsn) {
            if lsn <= self.last_delivered {
                tracing::debug!(lsn = %format_lsn(lsn), "skipping transaction delivered before");
                self.ready.pop_front();
                continue;
            }
            // The common case: room in the queue, no timer needed.
            match self.tx.try_reserve() {
                Ok(permit) => {
                    let t = self.ready.pop_front().expect("front exists");
                    permit.send(Arc::new(t));
                    self.last_delivered = lsn;
                    continue;
                }
                Err(mpsc::error::TrySendError::Closed(())) => return Ok(Some(End::Stop)),
                Err(mpsc::error::TrySendError::Full(())) => {}
            }
            let mut tick = tokio::time::interval(self.config.status_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let tx = self.tx.clone();
            let permit = loop {
                tokio::select! {
                    biased;
                    p = tx.reserve() => match p {
                        Ok(p) => break p,
                        // The consumer is gone: nothing more to do.
                        Err(_) => return Ok(Some(End::Stop)),
                    },
                    _ = stopped(shutdown) => return Ok(Some(End::Stop)),
                    _ = tick.tick() => self.maybe_send_status(conn).await?,
                }
            };
            let t = self.ready.pop_front().expect("front exists");
            permit.send(Arc::new(t));
            self.last_delivered = lsn;
        }
        Ok(None)
    }

    /// The position the server may forget everything before: what the consumer confirmed,
    /// or, when nothing is in flight and everything delivered is confirmed, the server's
    /// own position (so an idle slot does not hold WAL back).
    fn flush_position(&self) -> Lsn {
        let confirmed = self.shared.confirmed.load(Ordering::Acquire);
        let mut flush = confirmed.min(self.last_delivered);
        if confirmed >= self.last_delivered
            && self.assembler.idle()
            && self.spool.is_empty()
            && self.ready.is_empty()
        {
            flush = flush.max(self.server_wal_end);
        }
        flush.max(self.last_reported)
    }

    /// Sends a status update if the flush position moved (at most once per status
    /// interval, as the caller's timer fires) or the heartbeat is due.
    async fn maybe_send_status(
        &mut self,
        conn: &mut ReplicationConnection,
    ) -> Result<(), ReplicationError> {
        if self.flush_position() > self.last_reported || self.last_status_at.elapsed() >= HEARTBEAT
        {
            self.send_status(conn, false).await?;
        }
        Ok(())
    }

    async fn send_status(
        &mut self,
        conn: &mut ReplicationConnection,
        reply: bool,
    ) -> Result<(), ReplicationError> {
        let flush = self.flush_position();
        let now = chrono::Utc::now().timestamp_micros();
        let msg = decode::standby_status_update(self.received.max(flush), flush, flush, now, reply);
        conn.queue_copy_data(&msg)?;
        conn.send().await?;
        if flush > self.last_reported {
            tracing::trace!(flush = %format_lsn(flush), "reported position");
        }
        self.last_reported = flush;
        self.last_status_at = Instant::now();
        Ok(())
    }
}

/// The (sub)transaction a row change inside a streamed block belongs to.
fn change_xid(msg: &PgOutput<'_>) -> Option<u32> {
    match msg {
        PgOutput::Insert(m) => m.xid,
        PgOutput::Update(m) => m.xid,
        PgOutput::Delete(m) => m.xid,
        PgOutput::Truncate(m) => m.xid,
        _ => None,
    }
}

/// Resolves once shutdown is asked for (the watch's guard never crosses an await).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

fn reconnect_backoff(max: Duration) -> Backoff {
    Backoff::new(Duration::from_millis(100), max)
}

/// An error and its causes on one line, for logs and the health state.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let max = Duration::from_secs(5);
        let mut b = reconnect_backoff(max);
        let waits: Vec<Duration> = (0..30).map(|_| b.next_delay()).collect();
        assert_eq!(waits[0], Duration::from_millis(100));
        assert_eq!(waits[1], Duration::from_millis(200));
        assert_eq!(waits[3], Duration::from_millis(800));
        assert_eq!(waits[29], max);
    }
}
