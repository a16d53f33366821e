//! PostgreSQL restarted mid-stream: the stream reconnects with backoff, resumes from the
//! slot, and delivers every change exactly once. On a cluster of its own, because it stops
//! it.
//!
//! A fast shutdown waits for each logical walsender until its client has confirmed all
//! WAL sent, so the consumer keeps processing (and confirming) while the server stops,
//! as Ripple's own consumer does.

use crate::replication_common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use replication_common::*;
use ripple::replication::{self, StreamState};

/// This test stops and starts PostgreSQL, so it has a cluster of its own.
fn cluster() -> &'static ripple_tests::TestCluster {
    ripple_tests::own_cluster("replication_restart")
}

async fn insert_range(url: &str, from: i64, to: i64) {
    let c = ripple::db::connect(url).await.expect("connect");
    c.batch_execute(&format!(
        "do $$ begin for i in {from}..{to} loop insert into t values (i); commit; end loop; end $$"
    ))
    .await
    .expect("insert");
}

async fn wait_until(ids: &Mutex<Vec<i64>>, n: usize) {
    for _ in 0..1200 {
        if ids.lock().unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("only {} of {n} changes arrived", ids.lock().unwrap().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_stream_loses_and_repeats_nothing() {
    let db = cluster().empty_db().await;
    db.client
        .batch_execute("create table t (id int primary key)")
        .await
        .unwrap();
    publish(&db, "p", &["t"]).await;
    let mut cfg = config(&db, "s", "p");
    cfg.max_backoff = Duration::from_millis(500);
    let (mut rx, handle) = replication::start(cfg).await.unwrap();
    let mut state = handle.state();
    let ids: Arc<Mutex<Vec<i64>>> = Default::default();
    let consumer = {
        let ids = ids.clone();
        let handle = handle.clone();
        tokio::spawn(async move {
            while let Some(t) = rx.recv().await {
                // A consumer with real work to do: the stream runs ahead of it.
                tokio::time::sleep(Duration::from_millis(1)).await;
                ids.lock()
                    .unwrap()
                    .extend(inserted_ids(std::slice::from_ref(&t)));
                handle.confirm(t.commit_lsn);
            }
        })
    };
    let writer = {
        let url = db.url.clone();
        tokio::spawn(async move { insert_range(&url, 1, 3000).await })
    };
    wait_until(&ids, 1000).await;
    writer.await.unwrap();
    // Stop while changes are still streaming to us.
    let before_stop = ids.lock().unwrap().len();
    assert!(before_stop < 3000, "the restart happens mid-stream");
    tokio::task::spawn_blocking(|| cluster().cluster.stop())
        .await
        .unwrap()
        .expect("stop postgres");
    let down = tokio::time::timeout(
        Duration::from_secs(10),
        state.wait_for(|st| matches!(st, StreamState::Reconnecting { .. })),
    )
    .await
    .is_ok();
    assert!(down, "the stream noticed");
    assert!(!handle.is_up());
    tokio::time::sleep(Duration::from_millis(700)).await;
    tokio::task::spawn_blocking(|| cluster().cluster.start())
        .await
        .unwrap()
        .expect("start postgres");
    insert_range(&db.url, 3001, 4000).await;
    wait_until(&ids, 4000).await;
    let up = tokio::time::timeout(
        Duration::from_secs(10),
        state.wait_for(|st| *st == StreamState::Streaming),
    )
    .await
    .is_ok();
    assert!(up && handle.is_up());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        *ids.lock().unwrap(),
        (1..=4000).collect::<Vec<i64>>(),
        "in order, none lost, none twice"
    );
    handle.shutdown().await;
    consumer.await.unwrap();
}
