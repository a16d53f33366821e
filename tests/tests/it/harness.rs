//! The harness itself: a cluster with logical WAL, databases that come and go.

use ripple_tests::{cluster, fresh_db};

#[tokio::test]
async fn the_test_cluster_runs_with_logical_wal_on_loopback() {
    let db = fresh_db().await;
    let row = db
        .client
        .query_one(
            "select current_setting('wal_level'), current_setting('listen_addresses')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "logical");
    assert_eq!(row.get::<_, String>(1), "127.0.0.1");
    assert!(cluster().cluster.is_running());
}

#[tokio::test]
async fn a_fresh_database_is_migrated_and_dropped_after_use() {
    let db = fresh_db().await;
    let name = db.name.clone();
    let tables: i64 = db
        .client
        .query_one(
            "select count(*) from pg_publication_tables where pubname = 'ripple'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        tables, 9,
        "the chat tables, the two cache-invalidation signals and realtime.messages \
         (broadcast from the database) are in the publication"
    );
    drop(db);
    let admin = ripple::db::connect(&cluster().cluster.url("postgres"))
        .await
        .unwrap();
    let left: i64 = admin
        .query_one(
            "select count(*) from pg_database where datname = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[tokio::test]
async fn migrate_can_run_again_on_a_migrated_database() {
    let db = fresh_db().await;
    let report = ripple::migrate::run(&db.url, &Default::default())
        .await
        .unwrap();
    assert!(report.schema_versions_applied.is_empty());
    assert!(report.files_applied > 0);
}
