//! Wires the stages together for `ripple serve` and `ripple dev` (and the tests and
//! benchmarks, which pass their own listener, shutdown signal and, for the reference
//! comparison, their own authorizer):
//!
//! ```text
//! replication::start ──Transaction──▶ pump: authorize (RLS) ──▶ realtime::fanout ──▶ sockets
//!        ▲                                                                │
//!        └──────────── confirm(commit_lsn) once delivered ◀───────────────┘
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::authorize::{Authorizer, RlsAuthorizer};
use crate::backoff::Backoff;
use crate::change::Transaction;
use crate::config::ServeConfig;
use crate::http::App;
use crate::realtime::fanout;
use crate::realtime::resume::{ReplayRequest, Window, WindowLimits};
use crate::replication::{self, ReplicationConfig, ReplicationHandle};

/// Builds the authorizer the fan-out asks; the default is [`RlsAuthorizer`].
pub type MakeAuthorizer = Box<dyn FnOnce(&Arc<App>) -> Arc<dyn Authorizer> + Send>;

/// Serves HTTP and realtime on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: ServeConfig,
    database_url: &str,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    run_with(
        listener,
        config,
        database_url,
        shutdown,
        Box::new(default_authorizer),
    )
    .await
}

/// The production authorizer: RLS checks on the pipeline's own connections, with the
/// verdict cache invalidated by the streamed publication.
pub fn default_authorizer(app: &Arc<App>) -> Arc<dyn Authorizer> {
    Arc::new(
        RlsAuthorizer::new(app.authorize_pool.clone())
            .with_verdict_cache(&app.config.publication)
            .with_metrics(&app.metrics),
    )
}

/// [`run`] with a chosen authorizer (the benchmark runs the per-subscriber live-row
/// reference through the same pipeline).
pub async fn run_with(
    listener: TcpListener,
    config: ServeConfig,
    database_url: &str,
    shutdown: impl Future<Output = ()>,
    make_authorizer: MakeAuthorizer,
) -> anyhow::Result<()> {
    let app = App::new(config, database_url)?;
    let mut repl_config =
        ReplicationConfig::new(database_url, &app.config.slot, &app.config.publication);
    // The migrations create the publication with the chat tables; a missing one is a
    // misconfiguration we create empty rather than refuse to start over.
    repl_config.create_publication = true;
    repl_config.spill = replication::SpillConfig {
        memory_budget: app.config.streamed_memory_bytes,
        dir: app.config.spill_dir.clone(),
        metrics: replication::SpillMetrics {
            bytes: app.metrics.counter(
                "ripple_replication_spilled_bytes_total",
                "Bytes of streamed transactions written to spill files (beyond the memory budget).",
                &[],
            ),
            transactions: app.metrics.counter(
                "ripple_replication_spilled_transactions_total",
                "Streamed transactions that went beyond the memory budget into a spill file.",
                &[],
            ),
        },
    };
    let authorizer = make_authorizer(&app);
    // Configuration errors (a wrong password, wal_level, a role without REPLICATION) stop
    // start-up with their message. A database that is merely unreachable is retried in the
    // background while HTTP serves, and /health says what is down.
    let stream = match replication::start(repl_config.clone()).await {
        Ok(started) => Some(started),
        Err(e) if e.is_transient() => {
            tracing::warn!(error = %e, "replication stream not available yet; retrying");
            None
        }
        Err(e) => return Err(e.into()),
    };
    let consumer = {
        let app = app.clone();
        tokio::spawn(async move {
            let (changes, repl) = match stream {
                Some(s) => s,
                None => retry_start(repl_config).await,
            };
            watch_slot_losses(&app, &repl);
            let _ = app.replication.set(repl.clone());
            pump(app, changes, repl, authorizer).await;
        })
    };
    // Returns once requests in flight are answered and sockets closed (or the grace period
    // is over): only then is the stream stopped, its confirmed position reported.
    let served = crate::http::serve(listener, app.clone(), shutdown).await;
    if let Some(repl) = app.replication.get() {
        repl.shutdown().await;
    }
    consumer.abort();
    served?;
    Ok(())
}

async fn retry_start(
    config: ReplicationConfig,
) -> (mpsc::Receiver<Arc<Transaction>>, ReplicationHandle) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        backoff.wait().await;
        match replication::start(config.clone()).await {
            Ok(started) => {
                tracing::info!("replication stream started");
                return started;
            }
            Err(error) => {
                tracing::warn!(error = %error, "replication stream still not available; retrying");
            }
        }
    }
}

/// A lost slot is an incident: `/health` reports it and every joined channel is told that
/// changes may have been missed (the stream logs the ERROR).
fn watch_slot_losses(app: &Arc<App>, repl: &ReplicationHandle) {
    let mut losses = repl.slot_losses();
    let app = app.clone();
    tokio::spawn(async move {
        while losses.changed().await.is_ok() {
            let count = *losses.borrow_and_update();
            app.status.set_slot_lost(
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                count,
            );
            app.realtime.slot_lost();
        }
    });
}

/// Takes each committed transaction in commit order (several at once when they queued up),
/// has it authorized and delivered, and keeps it in the resume window. If authorization cannot run (the database is unreachable,
/// a connection died, the transaction is not visible yet), it retries the same transaction:
/// nothing is skipped and nothing confirmed early. The slot is confirmed only up to what
/// leaves the window, so a restart replays the window and clients can resume across it.
/// Between two transactions it serves the replays that resuming joins asked for.
async fn pump(
    app: Arc<App>,
    mut changes: mpsc::Receiver<Arc<Transaction>>,
    repl: ReplicationHandle,
    authorizer: Arc<dyn Authorizer>,
) {
    let mut revocation = crate::realtime::RevocationWatch::load(&app.authorize_pool).await;
    let m = &app.metrics;
    let txs = m.counter(
        "ripple_transactions_total",
        "Committed transactions taken from the replication stream.",
        &[],
    );
    let delivered = m.counter(
        "ripple_deliveries_total",
        "Change messages queued to subscribers after authorization.",
        &[],
    );
    let hidden = m.counter(
        "ripple_hidden_total",
        "Candidate (change, subscriber) pairs withheld by row-level security.",
        &[],
    );
    let checks = m.counter(
        "ripple_authorization_checks_total",
        "(change, distinct claims) pairs asked of the database.",
        &[],
    );
    let failures = m.counter(
        "ripple_authorization_failures_total",
        "Batches whose authorization failed and was retried.",
        &[],
    );
    let batch_size = m.histogram(
        "ripple_fanout_batch_transactions",
        "Transactions authorized and delivered together (more than one when the pump was behind).",
        &[],
        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
    );
    let latency = m.histogram(
        "ripple_fanout_seconds",
        "Time to authorize and deliver one batch of transactions.",
        &[],
        &[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ],
    );
    let replayed = m.counter(
        "ripple_replayed_total",
        "Change messages re-sent to clients that resumed from a position.",
        &[],
    );
    let too_old = m.counter(
        "ripple_resume_too_old_total",
        "Resumes refused because the position had left the window.",
        &[],
    );
    let window_txs = m.gauge(
        "ripple_resume_window_transactions",
        "Transactions held for clients that resume.",
        &[],
    );
    let window_bytes = m.gauge(
        "ripple_resume_window_bytes",
        "Estimated memory of the resume window.",
        &[],
    );
    let retained_wal = m.gauge(
        "ripple_resume_retained_wal_bytes",
        "WAL the slot retains for the resume window (newest commit minus confirmed position).",
        &[],
    );
    let limits = WindowLimits {
        max_age: Duration::from_secs(app.config.resume_window_secs),
        max_bytes: if app.config.resume_window_secs == 0 {
            0
        } else {
            app.config.resume_window_bytes
        },
    };
    let mut window = Window::new(repl.floor(), limits);
    let mut replays = app.realtime.replays.take_receiver();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let standby_name = standby_application_name(&app.database_url);
    let mut ticks: u64 = 0;

    let mut pending: Vec<ReplayRequest> = Vec::new();
    // Replays waiting for their client to drain its queue before the next piece.
    let mut unfinished: Vec<ReplayRequest> = Vec::new();
    let mut next_piece_at = tokio::time::Instant::now();
    loop {
        // Replays first: they cover exactly what has been processed so far. (Checked here,
        // not only in the select, so a busy stream cannot starve a long replay.)
        if !unfinished.is_empty() && tokio::time::Instant::now() >= next_piece_at {
            pending.append(&mut unfinished);
        }
        pending.extend(std::iter::from_fn(|| {
            replays.as_mut().and_then(|r| r.try_recv().ok())
        }));
        for mut req in pending.drain(..) {
            let mut backoff = authorization_backoff();
            loop {
                match fanout::replay(&window, &req, authorizer.as_ref()).await {
                    Ok(report) => {
                        replayed.add(report.delivered as u64);
                        if report.too_old {
                            too_old.inc();
                        }
                        if let Some(after) = report.continue_after {
                            if !req.channel.socket.is_closed() {
                                if unfinished.is_empty() {
                                    next_piece_at = tokio::time::Instant::now() + REPLAY_PACING;
                                }
                                req.after = after;
                                unfinished.push(req);
                            }
                        }
                        break;
                    }
                    Err(error) => {
                        failures.inc();
                        tracing::warn!(error = %error, "replay authorization failed; retrying");
                        backoff.wait().await;
                    }
                }
            }
        }
        let tx = tokio::select! {
            biased;
            // Wakes the loop to serve a replay (it is taken above).
            Some(req) = next_replay(&mut replays) => {
                pending.push(req);
                continue;
            }
            () = tokio::time::sleep_until(next_piece_at), if !unfinished.is_empty() => continue,
            tx = changes.recv() => match tx {
                Some(tx) => tx,
                None => break,
            },
            _ = tick.tick() => {
                ticks += 1;
                if ticks % STANDBY_CHECK_TICKS == 1 {
                    check_standby(&app, &standby_name).await;
                }
                if let Some(floor) = window.evict(std::time::Instant::now()) {
                    repl.confirm(floor);
                }
                window_txs.set(window.len() as i64);
                window_bytes.set(window.bytes() as i64);
                retained_wal.set(window.newest().map_or(0, |n| n.saturating_sub(repl.confirmed())) as i64);
                continue;
            }
        };
        // Behind? Take what else has queued up and authorize it in the same round trip
        // (delivered in commit order). Nothing is waited for: at low rates a batch is one
        // transaction and latency is unchanged.
        let mut batch = vec![tx];
        let mut batch_changes = batch[0].changes.len();
        while batch.len() < MAX_BATCH_TRANSACTIONS && batch_changes < MAX_BATCH_CHANGES {
            match changes.try_recv() {
                Ok(tx) => {
                    batch_changes += tx.changes.len();
                    batch.push(tx);
                }
                Err(_) => break,
            }
        }
        // Policy or grant changes committed before a transaction apply to it.
        for tx in &batch {
            authorizer.observe(tx);
        }
        // Open channels are checked again (revocation), after the batch's delivery is
        // queued: a socket handles its queue and the notice in turn.
        let access_changed =
            batch
                .iter()
                .fold(crate::realtime::AccessChange::default(), |acc, tx| {
                    let c = revocation.access_change(tx);
                    crate::realtime::AccessChange {
                        members: acc.members || c.members,
                        grants: acc.grants || c.grants,
                    }
                });
        // The policies (or the functions they call) may have changed what they read.
        revocation
            .refresh(&app.authorize_pool, access_changed.grants)
            .await;
        let started = std::time::Instant::now();
        let mut backoff = authorization_backoff();
        let refs: Vec<&Transaction> = batch.iter().map(AsRef::as_ref).collect();
        loop {
            match fanout::deliver(&app.realtime, &refs, authorizer.as_ref()).await {
                Ok(report) => {
                    delivered.add(report.delivered as u64);
                    hidden.add(report.hidden as u64);
                    checks.add(report.checks as u64);
                    app.status.set_authorization_problem(None);
                    break;
                }
                Err(error) => {
                    failures.inc();
                    tracing::warn!(error = %error, transactions = refs.len(), "authorization failed; retrying the batch");
                    // (Not the database's words: /health is public.)
                    app.status.set_authorization_problem(Some(
                        "transactions cannot be authorized right now and are being retried; see the log"
                            .into(),
                    ));
                    if error.is_not_visible() {
                        check_standby(&app, &standby_name).await;
                    }
                    backoff.wait().await;
                }
            }
        }
        drop(refs);
        app.realtime.access_may_have_changed(access_changed);
        latency.observe_since(started);
        batch_size.observe(batch.len() as f64);
        txs.add(batch.len() as u64);
        let now = std::time::Instant::now();
        for tx in batch {
            window.push(tx, now);
        }
        if let Some(floor) = window.evict(now) {
            repl.confirm(floor);
        }
        window_txs.set(window.len() as i64);
        window_bytes.set(window.bytes() as i64);
    }
}

/// Most transactions authorized in one round trip when they queue up (bounds the batch's
/// statement and the delay of the first transaction's delivery).
const MAX_BATCH_TRANSACTIONS: usize = 64;
/// A batch stops growing once it holds this many changes.
const MAX_BATCH_CHANGES: usize = 2048;

/// Retrying a transaction (or a replay) whose authorization could not run.
fn authorization_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(50), Duration::from_secs(5))
}

/// How long a client gets to drain its queue between two pieces of a long replay.
const REPLAY_PACING: Duration = Duration::from_millis(20);

async fn next_replay(
    replays: &mut Option<mpsc::UnboundedReceiver<ReplayRequest>>,
) -> Option<ReplayRequest> {
    match replays {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// The `application_name` Ripple's walsender shows in `pg_stat_replication`.
fn standby_application_name(database_url: &str) -> String {
    database_url
        .parse::<tokio_postgres::Config>()
        .ok()
        .and_then(|c| c.get_application_name().map(str::to_string))
        .unwrap_or_else(|| "ripple".into())
}

/// How often (in pump ticks of one second) the pump checks that Ripple is not a
/// synchronous standby.
const STANDBY_CHECK_TICKS: u64 = 2;

/// Ripple must not be a synchronous standby: a commit would wait for Ripple to confirm it,
/// and Ripple confirms a transaction only after judging it visible, and then only as far
/// as its resume window allows; commits would hang. Says so on /health and in the log
/// (ERROR) while it lasts.
async fn check_standby(app: &App, standby_name: &str) {
    // On the pipeline's own connections: the pump awaits this, and REST load (which can
    // hold every connection of its pool for seconds) must not hold deliveries back.
    let Ok(conn) = app.authorize_pool.get().await else {
        return;
    };
    // Named in the setting is enough: a walsender that is catching up is not counted as a
    // candidate in pg_stat_replication, yet commits still wait for it.
    let Ok(row) = conn
        .query_one(
            "select current_setting('synchronous_standby_names'), \
                    (select sync_state from pg_stat_replication \
                      where application_name = $1 and sync_state <> 'async' limit 1)",
            &[&standby_name],
        )
        .await
    else {
        return;
    };
    let (setting, state): (String, Option<String>) = (row.get(0), row.get(1));
    let problem = (state.is_some() || names_standby(&setting, standby_name)).then(|| {
        format!(
            "Ripple's replication connection (application_name '{standby_name}') is a \
             synchronous standby (synchronous_standby_names = '{setting}'): commits wait for \
             Ripple to confirm them, and Ripple confirms only what it has judged visible and \
             delivered, so they never finish. Remove '{standby_name}' from \
             synchronous_standby_names (ALTER SYSTEM SET synchronous_standby_names = ...; \
             SELECT pg_reload_conf())."
        )
    });
    if let Some(p) = &problem {
        tracing::error!("{p}");
    }
    app.status.set_replication_problem(problem);
}

/// Does `synchronous_standby_names` (`FIRST 1 (a, "b")`, `ANY 2 (*)`, `a, b`) name this
/// standby, or every standby?
fn names_standby(setting: &str, name: &str) -> bool {
    setting
        .split(|c: char| c == ',' || c == '(' || c == ')' || c.is_whitespace())
        .map(|t| t.trim_matches('"'))
        .any(|t| t == "*" || t.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::names_standby;

    #[test]
    fn synchronous_standby_names_are_read_in_every_form() {
        assert!(names_standby("ripple", "ripple"));
        assert!(names_standby("FIRST 1 (witness, \"ripple\")", "ripple"));
        assert!(names_standby("ANY 2 (*)", "ripple"));
        assert!(!names_standby("", "ripple"));
        assert!(!names_standby("witness, ripple_other", "ripple"));
    }
}
