//! Losing the consumer or its connection mid-stream: whatever happens, every change arrives
//! and none arrives twice.

use crate::replication_common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use replication_common::*;
use ripple::change::{parse_lsn, Lsn};
use ripple::replication::{self, ReplicationConfig, StreamState};
use ripple_tests::{empty_db, TestDb};

const ROWS: i64 = 3000;

/// These tests kill and restart consumers against timing (a dying walsender must let go
/// of its slot); run one at a time so they do not starve each other on a small machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn table(db: &TestDb) {
    db.client
        .batch_execute("create table t (id int primary key)")
        .await
        .unwrap();
    publish(db, "p", &["t"]).await;
}

/// Inserts ids 1..=ROWS, one transaction each, spread over a little time so a consumer
/// can be stopped while changes are still being made.
fn insert_in_background(db: &TestDb) -> tokio::task::JoinHandle<()> {
    let url = db.url.clone();
    tokio::spawn(async move {
        let c = ripple::db::connect(&url).await.unwrap();
        c.batch_execute(&format!(
            "do $$ begin for i in 1..{ROWS} loop \
               insert into t values (i); commit; \
               if i % 100 = 0 then perform pg_sleep(0.02); end if; \
             end loop; end $$"
        ))
        .await
        .unwrap();
    })
}

/// (commit LSN, ids) of each transaction a consumer processed.
type Processed = Arc<Mutex<Vec<(Lsn, Vec<i64>)>>>;

/// Runs a consumer on a runtime of its own, processing and confirming each transaction,
/// until told to die; then drops the runtime at once, as a crash would: no final status
/// update, the socket simply closes.
fn crashable_consumer(
    config: ReplicationConfig,
    processed: Processed,
) -> std::sync::mpsc::Sender<()> {
    let (kill, killed) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.spawn(async move {
            let (mut rx, handle) = replication::start(config).await.expect("start A");
            while let Some(t) = rx.recv().await {
                let ids = inserted_ids(std::slice::from_ref(&t));
                processed.lock().unwrap().push((t.commit_lsn, ids));
                handle.confirm(t.commit_lsn);
            }
        });
        let _ = killed.recv();
        rt.shutdown_background();
    });
    kill
}

async fn wait_for(processed: &Processed, n: usize) {
    for _ in 0..600 {
        if processed.lock().unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("consumer processed too little");
}

async fn slot_confirmed(db: &TestDb, slot: &str) -> Lsn {
    let s: String = db
        .client
        .query_one(
            "select confirmed_flush_lsn::text from pg_replication_slots where slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0);
    parse_lsn(&s).unwrap()
}

/// Collects ids until `want` distinct ids are seen, returning every id received.
async fn collect_until(s: &mut Stream, seen_before: &HashSet<i64>, want: usize) -> Vec<i64> {
    let mut got = Vec::new();
    let mut distinct: HashSet<i64> = seen_before.clone();
    while distinct.len() < want {
        let t = tokio::time::timeout(Duration::from_secs(60), s.0.recv())
            .await
            .expect("changes keep coming")
            .expect("stream open");
        for id in inserted_ids(std::slice::from_ref(&t)) {
            distinct.insert(id);
            got.push(id);
        }
        s.1.confirm(t.commit_lsn);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_consumer_restarted_from_its_last_processed_lsn_loses_and_repeats_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let db = empty_db().await;
    table(&db).await;
    let processed: Processed = Default::default();
    let kill = crashable_consumer(config(&db, "s", "p"), processed.clone());
    // Wait for A's slot to exist before writing, so A sees everything.
    wait_for_active_slot(&db, &slot_name(&db, "s")).await;
    let writer = insert_in_background(&db);
    wait_for(&processed, 500).await;
    kill.send(()).unwrap();
    let (a_ids, a_last) = {
        // Give the dying runtime a moment; nothing is processed after the kill.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let p = processed.lock().unwrap();
        let ids: Vec<i64> = p.iter().flat_map(|(_, ids)| ids.clone()).collect();
        (ids, p.last().unwrap().0)
    };
    // The server may have been told more than A's last commit only when A was idle with
    // everything confirmed (then it is the server's own sent position, and later commits
    // come again): whether anything was lost is what the assertions below check.
    let mut cfg = config(&db, "s", "p");
    // What a consumer that records its position passes on restart.
    cfg.resume_after = Some(a_last);
    let mut b = replication::start(cfg).await.expect("start B");
    let seen: HashSet<i64> = a_ids.iter().copied().collect();
    let b_ids = collect_until(&mut b, &seen, ROWS as usize).await;
    writer.await.unwrap();
    let mut all = a_ids.clone();
    all.extend(&b_ids);
    assert_eq!(
        all,
        (1..=ROWS).collect::<Vec<_>>(),
        "in order, none lost, none twice"
    );
    assert_quiet(&mut b, Duration::from_millis(300)).await;
    b.1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_consumer_restarted_from_the_slot_gets_again_only_what_it_had_not_reported() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let db = empty_db().await;
    table(&db).await;
    let processed: Processed = Default::default();
    let kill = crashable_consumer(config(&db, "s", "p"), processed.clone());
    wait_for_active_slot(&db, &slot_name(&db, "s")).await;
    let writer = insert_in_background(&db);
    wait_for(&processed, 500).await;
    kill.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a: Vec<(Lsn, Vec<i64>)> = processed.lock().unwrap().clone();
    // Ahead of A's last commit only if A was idle with everything confirmed (see above).
    let reported = slot_confirmed(&db, &slot_name(&db, "s")).await;
    let mut b = start(&db, "s", "p").await;
    let a_ids: HashSet<i64> = a.iter().flat_map(|(_, ids)| ids.clone()).collect();
    let b_ids = collect_until(&mut b, &a_ids, ROWS as usize).await;
    writer.await.unwrap();
    // Nothing lost; B's stream has no gaps or repeats of its own.
    let mut union: Vec<i64> = a_ids.iter().copied().chain(b_ids.iter().copied()).collect();
    union.sort();
    union.dedup();
    assert_eq!(union, (1..=ROWS).collect::<Vec<_>>());
    let b_set: HashSet<i64> = b_ids.iter().copied().collect();
    assert_eq!(b_set.len(), b_ids.len(), "B itself repeats nothing");
    // The only repeats are transactions A processed after the last position reported
    // to the server: at-least-once across a hard kill, bounded by the status interval.
    for (lsn, ids) in &a {
        if ids.iter().any(|id| b_set.contains(id)) {
            assert!(*lsn > reported, "a repeat at {lsn} was already reported");
        }
    }
    b.1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_reports_the_confirmed_position_so_a_restart_repeats_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let db = empty_db().await;
    table(&db).await;
    let mut a = start(&db, "s", "p").await;
    let writer = insert_in_background(&db);
    let first = collect_changes(&mut a, 800).await;
    a.1.shutdown().await;
    let a_ids = inserted_ids(&first);
    let last = first.last().unwrap().commit_lsn;
    // At least what was confirmed; possibly the server's own position, when the stream was
    // idle with everything confirmed (transactions committing later are sent again). That
    // nothing is lost or repeated either way is what the rest of the test checks.
    assert!(slot_confirmed(&db, &slot_name(&db, "s")).await >= last);
    let mut b = start(&db, "s", "p").await;
    let seen: HashSet<i64> = a_ids.iter().copied().collect();
    let b_ids = collect_until(&mut b, &seen, ROWS as usize).await;
    writer.await.unwrap();
    let mut all = a_ids;
    all.extend(b_ids);
    assert_eq!(all, (1..=ROWS).collect::<Vec<_>>());
    b.1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_walsender_is_reconnected_without_loss_or_duplicates() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let db = empty_db().await;
    table(&db).await;
    let mut cfg = config(&db, "s", "p");
    cfg.max_backoff = Duration::from_millis(500);
    let mut s = replication::start(cfg).await.unwrap();
    let mut state = s.1.state();
    let writer = insert_in_background(&db);
    // Read some, without confirming, so the server must re-send after the reconnect.
    let mut ids = Vec::new();
    while ids.len() < 300 {
        let t = tokio::time::timeout(Duration::from_secs(30), s.0.recv())
            .await
            .expect("first changes")
            .unwrap();
        ids.extend(inserted_ids(std::slice::from_ref(&t)));
    }
    let killed: i64 = db
        .client
        .query_one(
            "select count(pg_terminate_backend(active_pid)) from pg_replication_slots \
             where slot_name = $1 and active_pid is not null",
            &[&slot_name(&db, "s")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    // (The guard wait_for returns must not be held: it would block the stream's updates.)
    let went_down = tokio::time::timeout(
        Duration::from_secs(10),
        state.wait_for(|st| matches!(st, StreamState::Reconnecting { .. })),
    )
    .await
    .is_ok();
    assert!(went_down, "state showed the reconnect");
    let seen: HashSet<i64> = ids.iter().copied().collect();
    ids.extend(collect_until(&mut s, &seen, ROWS as usize).await);
    writer.await.unwrap();
    assert_eq!(ids, (1..=ROWS).collect::<Vec<_>>());
    assert!(s.1.is_up());
    assert_quiet(&mut s, Duration::from_millis(300)).await;
    s.1.shutdown().await;
}

async fn wait_for_active_slot(db: &TestDb, slot: &str) {
    for _ in 0..200 {
        let n: i64 = db
            .client
            .query_one(
                "select count(*) from pg_replication_slots where slot_name = $1 and active",
                &[&slot],
            )
            .await
            .unwrap()
            .get(0);
        if n == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("slot {slot} never became active");
}
