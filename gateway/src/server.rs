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

use crate::app::App;
use crate::authorize::RlsAuthorizer;
use crate::change::Transaction;
use crate::config::ServeConfig;
use crate::realtime::fanout::{self, Authorizer};
use crate::replication::{self, ReplicationConfig, ReplicationHandle, StreamState};

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
        Box::new(|app| Arc::new(RlsAuthorizer::new(app.pool.clone()))),
    )
    .await
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
    let handle: Arc<tokio::sync::Mutex<Option<ReplicationHandle>>> = Default::default();
    let consumer = {
        let (app, handle) = (app.clone(), handle.clone());
        tokio::spawn(async move {
            let (changes, repl) = match stream {
                Some(s) => s,
                None => retry_start(repl_config).await,
            };
            watch_stream_state(&app, &repl);
            *handle.lock().await = Some(repl.clone());
            pump(app, changes, repl, authorizer).await;
        })
    };
    let served = crate::http::serve(listener, app.clone(), shutdown).await;
    if let Some(repl) = handle.lock().await.take() {
        repl.shutdown().await;
    }
    consumer.abort();
    app.status.set_replication_up(false);
    served?;
    Ok(())
}

async fn retry_start(
    config: ReplicationConfig,
) -> (mpsc::Receiver<Arc<Transaction>>, ReplicationHandle) {
    let mut backoff = Duration::from_millis(200);
    loop {
        tokio::time::sleep(backoff).await;
        match replication::start(config.clone()).await {
            Ok(started) => {
                tracing::info!("replication stream started");
                return started;
            }
            Err(error) => {
                tracing::warn!(error = %error, "replication stream still not available; retrying");
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Mirrors the stream's connection state into `/health`.
fn watch_stream_state(app: &Arc<App>, repl: &ReplicationHandle) {
    let mut state = repl.state();
    let app = app.clone();
    app.status
        .set_replication_up(*state.borrow() == StreamState::Streaming);
    tokio::spawn(async move {
        while state.changed().await.is_ok() {
            let s = state.borrow_and_update().clone();
            if let StreamState::Reconnecting { attempt, .. } = &s {
                tracing::warn!(attempt, "replication stream lost; reconnecting");
            }
            app.status.set_replication_up(s == StreamState::Streaming);
        }
    });
}

/// Takes each committed transaction in commit order, has it authorized and delivered, and
/// only then confirms it to the stream. If authorization cannot run (the database is
/// unreachable), it retries the same transaction: nothing is skipped, nothing confirmed
/// early, so a restart resumes from the slot with no change lost.
async fn pump(
    app: Arc<App>,
    mut changes: mpsc::Receiver<Arc<Transaction>>,
    repl: ReplicationHandle,
    authorizer: Arc<dyn Authorizer>,
) {
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
    let latency = m.histogram(
        "ripple_fanout_seconds",
        "Time to authorize and deliver one transaction.",
        &[],
        &[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ],
    );
    while let Some(tx) = changes.recv().await {
        // Policy or grant changes committed before this transaction apply to it.
        authorizer.observe(&tx);
        let started = std::time::Instant::now();
        let mut backoff = Duration::from_millis(50);
        loop {
            match fanout::deliver(&app.realtime, &tx, authorizer.as_ref()).await {
                Ok(report) => {
                    // Broadcasts the database sent (realtime.send), after the row changes.
                    crate::realtime::db_broadcast::deliver(&app.realtime, &tx);
                    delivered.add(report.delivered as u64);
                    hidden.add(report.hidden as u64);
                    checks.add(report.checks as u64);
                    break;
                }
                Err(error) => {
                    failures.inc();
                    tracing::warn!(error = %error, "authorization failed; retrying the transaction");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        latency.observe_since(started);
        txs.inc();
        repl.confirm(tx.commit_lsn);
    }
}
