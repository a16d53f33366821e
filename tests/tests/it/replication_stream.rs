//! The replication stream against a real PostgreSQL: typed values, transactions in commit
//! order, schema changes, large and many transactions.

use crate::replication_common;

use std::time::Duration;

use replication_common::*;
use ripple::change::ChangeKind;
use ripple_tests::empty_db;
use serde_json::json;

#[tokio::test]
async fn inserts_updates_and_deletes_arrive_as_transactions_in_commit_order() {
    let db = empty_db().await;
    db.client
        .batch_execute("create table t (id bigint primary key, body text)")
        .await
        .unwrap();
    publish(&db, "p", &["t"]).await;
    let mut s = start(&db, "s", "p").await;
    db.client
        .batch_execute("insert into t values (1, 'one'), (2, 'two')")
        .await
        .unwrap();
    db.client
        .batch_execute(
            "begin; update t set body = 'uno' where id = 1; delete from t where id = 2; commit;",
        )
        .await
        .unwrap();
    let ts = collect_changes(&mut s, 4).await;
    assert_eq!(ts.len(), 2);
    assert!(ts[0].commit_lsn < ts[1].commit_lsn);
    assert_eq!(kinds(&ts[0]), vec![ChangeKind::Insert, ChangeKind::Insert]);
    assert_eq!(kinds(&ts[1]), vec![ChangeKind::Update, ChangeKind::Delete]);
    assert_eq!(ts[0].changes[0].relation.name, "t");
    assert_eq!(ts[0].changes[0].relation.schema, "public");
    assert_eq!(
        serde_json::Value::from(record(&ts[0], 1).clone()),
        json!({"id": 2, "body": "two"})
    );
    assert_eq!(
        serde_json::Value::from(record(&ts[1], 0).clone()),
        json!({"id": 1, "body": "uno"})
    );
    let del = &ts[1].changes[1];
    assert!(del.record.is_none());
    assert_eq!(
        serde_json::Value::from(del.old_record.clone().unwrap()),
        json!({"id": 2})
    );
    // Commit times are now-ish, in order.
    let now = chrono::Utc::now().timestamp_micros();
    assert!((now - ts[1].commit_time_micros).abs() < 60_000_000);
    assert!(ts[0].commit_time_micros <= ts[1].commit_time_micros);
    assert_quiet(&mut s, Duration::from_millis(300)).await;
    s.1.shutdown().await;
}

#[tokio::test]
async fn every_type_round_trips_as_natural_json() {
    let db = empty_db().await;
    db.client
        .batch_execute(
            "create type mood as enum ('happy', 'sad'); \
             create domain positive as int4 check (value > 0); \
             create domain email as text; \
             create table every_type ( \
               id int8 primary key, b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, \
               n numeric, nbig numeric, f8nan float8, ninf numeric, \
               j json, jb jsonb, t text, vc varchar(10), ch char(3), u uuid, \
               ts timestamp, tstz timestamptz, d date, tm time, iv interval, ip inet, \
               ba bytea, m mood, pos positive, em email, nul text, \
               ai int4[], atx text[], ajb jsonb[], a2 int4[][], am mood[], apos positive[], \
               atstz timestamptz[], ab bool[], an numeric[])",
        )
        .await
        .unwrap();
    publish(&db, "p", &["every_type"]).await;
    let mut s = start(&db, "s", "p").await;
    db.client
        .batch_execute(
            r#"insert into every_type values (
               9223372036854775807, true, -32768, 2147483647, -9223372036854775808, 1.5,
               1234.5678, 0.1, 123456789012345678901234567890.123456789012345678901,
               'NaN', 'Infinity',
               '{"a": [1, 2, {"b": null}], "c": "d"}', '{"x": {"y": [true, false]}}',
               'héllo "world"\n', 'varchar', 'ab', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
               '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.123456+02', '2024-02-29',
               '13:14:15', '1 day 2 hours', '192.168.0.1/24',
               '\xdeadbeef', 'sad', 42, 'a@b.c', null,
               '{1,2,null}', '{"a b","c,d","e\"f",NULL,"NULL"}', array['{"k": 1}'::jsonb, '[2]'],
               '{{1,2},{3,4}}', '{happy,sad}', '{1,2}', '{"2024-01-02 03:04:05+00"}',
               '{t,f}', '{1.50,NaN}')"#,
        )
        .await
        .unwrap();
    let ts = collect_changes(&mut s, 1).await;
    let rec = serde_json::Value::from(record(&ts[0], 0).clone());
    let expected = json!({
        "id": 9223372036854775807i64, "b": true, "i2": -32768, "i4": 2147483647,
        "i8": -9223372036854775808i64, "f4": 1.5, "f8": 1234.5678,
        "n": 0.1, "nbig": serde_json::from_str::<serde_json::Value>(
            "123456789012345678901234567890.123456789012345678901").unwrap(),
        "f8nan": "NaN", "ninf": "Infinity",
        "j": {"a": [1, 2, {"b": null}], "c": "d"}, "jb": {"x": {"y": [true, false]}},
        "t": "héllo \"world\"\\n", "vc": "varchar", "ch": "ab ",
        "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "ts": "2024-01-02T03:04:05.123456", "tstz": "2024-01-02T01:04:05.123456+00:00",
        "d": "2024-02-29", "tm": "13:14:15", "iv": "P1DT2H", "ip": "192.168.0.1/24",
        "ba": "\\xdeadbeef", "m": "sad", "pos": 42, "em": "a@b.c", "nul": null,
        "ai": [1, 2, null], "atx": ["a b", "c,d", "e\"f", null, "NULL"],
        "ajb": [{"k": 1}, [2]], "a2": [[1, 2], [3, 4]], "am": ["happy", "sad"],
        "apos": [1, 2], "atstz": ["2024-01-02T03:04:05+00:00"], "ab": [true, false],
        "an": [serde_json::from_str::<serde_json::Value>("1.50").unwrap(), "NaN"],
    });
    assert_eq!(rec, expected);
    // Exact digits, not floating-point approximations.
    let text = rec.to_string();
    assert!(text.contains("\"nbig\":123456789012345678901234567890.123456789012345678901"));
    assert!(text.contains("\"id\":9223372036854775807"));
    assert!(text.contains("\"an\":[1.50,"));
    // Column type names come from the catalog, domains and enums by their own name.
    let rel = &ts[0].changes[0].relation;
    let type_of = |c: &str| {
        rel.columns
            .iter()
            .find(|col| col.name == c)
            .map(|col| col.type_name.clone())
            .unwrap()
    };
    assert_eq!(type_of("m"), "mood");
    assert_eq!(type_of("pos"), "positive");
    assert_eq!(type_of("am"), "_mood");
    assert_eq!(type_of("ai"), "_int4");
    assert_eq!(type_of("i8"), "int8");
    assert!(rel.columns[0].is_key && !rel.columns[1].is_key);
    s.1.shutdown().await;
}

#[tokio::test]
async fn truncate_arrives_once_per_table_in_its_transaction() {
    let db = empty_db().await;
    db.client
        .batch_execute(
            "create table a (id int primary key); create table b (id int primary key); \
             insert into a values (1); insert into b values (1);",
        )
        .await
        .unwrap();
    publish(&db, "p", &["a", "b"]).await;
    let mut s = start(&db, "s", "p").await;
    db.client
        .batch_execute("truncate a, b; insert into a values (2);")
        .await
        .unwrap();
    let ts = collect_changes(&mut s, 3).await;
    assert_eq!(ts.len(), 1, "one transaction");
    let t = &ts[0];
    assert_eq!(
        kinds(t),
        vec![
            ChangeKind::Truncate,
            ChangeKind::Truncate,
            ChangeKind::Insert
        ]
    );
    let mut names: Vec<&str> = t.changes[..2]
        .iter()
        .map(|c| c.relation.name.as_str())
        .collect();
    names.sort();
    assert_eq!(names, vec!["a", "b"]);
    assert!(t.changes[0].record.is_none() && t.changes[0].old_record.is_none());
    s.1.shutdown().await;
}

#[tokio::test]
async fn replica_identity_default_sends_the_key_and_full_sends_the_old_row() {
    let db = empty_db().await;
    db.client
        .batch_execute(
            "create table d (id int primary key, v text, w int); \
             create table f (id int primary key, v text, w int); \
             alter table f replica identity full; \
             insert into d values (1, 'a', 10), (2, 'b', 20); \
             insert into f values (1, 'a', 10), (2, 'b', 20);",
        )
        .await
        .unwrap();
    publish(&db, "p", &["d", "f"]).await;
    let mut s = start(&db, "s", "p").await;
    for sql in [
        "update d set v = 'x' where id = 1",
        "update d set id = 3 where id = 2",
        "delete from d where id = 1",
        "update f set v = 'x' where id = 1",
        "delete from f where id = 2",
    ] {
        db.client.batch_execute(sql).await.unwrap();
    }
    let ts = collect_changes(&mut s, 5).await;
    let old = |i: usize| serde_json::Value::from(ts[i].changes[0].old_record.clone().unwrap());
    let new = |i: usize| serde_json::Value::from(record(&ts[i], 0).clone());
    // Default: the key only (for an update that kept its key, the key it kept).
    assert_eq!(old(0), json!({"id": 1}));
    assert_eq!(new(0), json!({"id": 1, "v": "x", "w": 10}));
    assert_eq!(old(1), json!({"id": 2}));
    assert_eq!(new(1), json!({"id": 3, "v": "b", "w": 20}));
    assert_eq!(old(2), json!({"id": 1}));
    // Full: the whole old row.
    assert_eq!(old(3), json!({"id": 1, "v": "a", "w": 10}));
    assert_eq!(new(3), json!({"id": 1, "v": "x", "w": 10}));
    assert_eq!(old(4), json!({"id": 2, "v": "b", "w": 20}));
    use ripple::change::ReplicaIdentity;
    assert_eq!(
        ts[0].changes[0].relation.replica_identity,
        ReplicaIdentity::Default
    );
    assert_eq!(
        ts[3].changes[0].relation.replica_identity,
        ReplicaIdentity::Full
    );
    s.1.shutdown().await;
}

#[tokio::test]
async fn unchanged_toasted_values_are_marked_not_invented() {
    let db = empty_db().await;
    db.client
        .batch_execute(
            "create table doc (id int primary key, title text, body text); \
             alter table doc alter column body set storage external; \
             insert into doc select 1, 'first', string_agg(md5(i::text), '') \
               from generate_series(1, 400) i;",
        )
        .await
        .unwrap();
    publish(&db, "p", &["doc"]).await;
    let mut s = start(&db, "s", "p").await;
    db.client
        .batch_execute("update doc set title = 'second' where id = 1")
        .await
        .unwrap();
    let ts = collect_changes(&mut s, 1).await;
    let c = &ts[0].changes[0];
    assert_eq!(c.unchanged_toast, vec!["body".to_string()]);
    let rec = c.record.as_ref().unwrap();
    assert_eq!(rec["title"], json!("second"));
    assert!(!rec.contains_key("body"), "no value invented for body");
    s.1.shutdown().await;
}

#[tokio::test]
async fn schema_changes_mid_stream_are_followed_without_a_restart() {
    let db = empty_db().await;
    db.client
        .batch_execute("create table t (id int primary key, body text)")
        .await
        .unwrap();
    publish(&db, "p", &["t"]).await;
    let mut s = start(&db, "s", "p").await;
    for sql in [
        "insert into t values (1, 'a')",
        "alter table t add column score int default 5",
        "insert into t values (2, 'b', 7)",
        "alter table t drop column body",
        "insert into t values (3, 9)",
        "alter table t alter column score type numeric",
        "insert into t values (4, 1.25)",
        "create table later (id int primary key, note text)",
        "alter publication p add table later",
        "insert into later values (10, 'new table')",
        "insert into t values (5, 2)",
    ] {
        db.client.batch_execute(sql).await.unwrap();
    }
    let ts = collect_changes(&mut s, 6).await;
    let rows: Vec<serde_json::Value> = ts
        .iter()
        .flat_map(|t| t.changes.iter())
        .map(|c| json!({"table": c.relation.name, "record": c.record.clone().unwrap()}))
        .collect();
    assert_eq!(
        rows,
        vec![
            json!({"table": "t", "record": {"id": 1, "body": "a"}}),
            json!({"table": "t", "record": {"id": 2, "body": "b", "score": 7}}),
            json!({"table": "t", "record": {"id": 3, "score": 9}}),
            json!({"table": "t", "record": {"id": 4, "score": 1.25}}),
            json!({"table": "later", "record": {"id": 10, "note": "new table"}}),
            json!({"table": "t", "record": {"id": 5, "score": 2}}),
        ]
    );
    let score = |i: usize| {
        ts[i].changes[0]
            .relation
            .columns
            .iter()
            .find(|c| c.name == "score")
            .unwrap()
            .type_name
            .clone()
    };
    assert_eq!(score(1), "int4");
    assert_eq!(score(3), "numeric");
    s.1.shutdown().await;
}

/// Transactions the server streamed in progress on this database's slot `s`.
async fn stream_txns(db: &ripple_tests::TestDb) -> i64 {
    db.client
        .query_one(
            "select coalesce(sum(stream_txns), 0)::int8 from pg_stat_replication_slots \
             where slot_name = $1",
            &[&slot_name(db, "s")],
        )
        .await
        .unwrap()
        .get(0)
}

/// A streamed transaction with a savepoint rolled back, a column of a type created inside
/// it, then an aborted streamed transaction: held in memory (`budget` large) or spilled to
/// a file (`budget` small), the outcome is the same. Returns the spill counters.
async fn streamed_savepoints_and_aborts(budget: usize) -> (u64, u64) {
    let db = empty_db().await;
    // A tiny decoding memory makes the server stream the transaction in progress
    // (protocol 2) instead of sending it whole at commit.
    db.client
        .batch_execute(&format!(
            "alter database {} set logical_decoding_work_mem = '64kB'; \
             create table t (id int primary key, pad text);",
            db.name
        ))
        .await
        .unwrap();
    publish(&db, "p", &["t"]).await;
    let spill_dir = std::env::temp_dir().join(format!("ripple-spill-test-{}", db.name));
    let mut config = config(&db, "s", "p");
    config.spill = ripple::replication::SpillConfig {
        memory_budget: budget,
        dir: Some(spill_dir.clone()),
        metrics: Default::default(),
    };
    let metrics = config.spill.metrics.clone();
    let mut s = ripple::replication::start(config).await.unwrap();
    db.client
        .batch_execute(
            "begin; \
             insert into t select g, repeat('x', 100) from generate_series(1, 3000) g; \
             savepoint a; \
             insert into t select g, repeat('y', 100) from generate_series(3001, 6000) g; \
             rollback to savepoint a; \
             create type level as enum ('low', 'high'); \
             alter table t add column level level; \
             insert into t select g, repeat('z', 100), 'high' from generate_series(6001, 9000) g; \
             commit;",
        )
        .await
        .unwrap();
    // Aborted only once the server has streamed it (a transaction already aborted when
    // the server decodes it is not streamed at all).
    let other = db.connect().await;
    other
        .batch_execute(
            "begin; \
             insert into t select g, repeat('g', 100) from generate_series(20001, 25000) g;",
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while stream_txns(&db).await < 2 {
        assert!(std::time::Instant::now() < deadline, "never streamed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    other.batch_execute("rollback").await.unwrap();
    db.client
        .batch_execute("insert into t values (99999, 'after', 'low')")
        .await
        .unwrap();
    let ts = collect_changes(&mut s, 6001).await;
    let ids = inserted_ids(&ts);
    let expected: Vec<i64> = (1..=3000).chain(6001..=9000).chain([99999]).collect();
    assert_eq!(ids, expected);
    assert_eq!(ts.len(), 2);
    // Rows after the ALTER carry the new column, typed by the catalog as it is at commit
    // (the enum was created inside the transaction).
    let last = ts[0].changes.last().unwrap();
    assert_eq!(last.record.as_ref().unwrap()["level"], json!("high"));
    let level = last
        .relation
        .columns
        .iter()
        .find(|c| c.name == "level")
        .unwrap();
    assert_eq!(level.type_name, "level");
    assert_eq!(record(&ts[1], 0)["level"], json!("low"));
    assert_quiet(&mut s, Duration::from_millis(300)).await;
    // Spill files are never visible by name: nothing is left in the folder.
    if let Ok(dirs) = std::fs::read_dir(&spill_dir) {
        for d in dirs.flatten() {
            let files = std::fs::read_dir(d.path()).map(|f| f.count()).unwrap_or(0);
            assert_eq!(files, 0, "no file left in {}", d.path().display());
        }
    }
    s.1.shutdown().await;
    drop(s);
    let _ = std::fs::remove_dir_all(&spill_dir);
    (metrics.transactions.get(), metrics.bytes.get())
}

#[tokio::test]
async fn a_streamed_transaction_keeps_committed_savepoints_and_drops_rolled_back_ones() {
    let (spilled, bytes) = streamed_savepoints_and_aborts(64 << 20).await;
    assert_eq!(
        (spilled, bytes),
        (0, 0),
        "within the budget, nothing is spilled"
    );
}

#[tokio::test]
async fn a_streamed_transaction_beyond_the_memory_budget_is_spilled_and_replayed_the_same() {
    // What the server streams of the aborted transaction before its abort is about
    // 64 kB of its decoding memory: a few KiB as sent.
    let (spilled, bytes) = streamed_savepoints_and_aborts(2048).await;
    // The committed and the aborted transaction both outgrew 2 KiB.
    assert!(spilled >= 2, "{spilled} transactions spilled");
    assert!(bytes > 500_000, "{bytes} bytes spilled");
}

#[tokio::test]
async fn a_200000_row_transaction_arrives_whole_and_in_order() {
    let db = empty_db().await;
    db.client
        .batch_execute("create table big (id int primary key, body text)")
        .await
        .unwrap();
    publish(&db, "p", &["big"]).await;
    let mut s = start(&db, "s", "p").await;
    db.client
        .batch_execute(
            "insert into big select g, 'row ' || g from generate_series(1, 200000) g; \
             insert into big values (200001, 'next transaction')",
        )
        .await
        .unwrap();
    // Both statements ran in one implicit transaction; add a separate one after it.
    db.client
        .batch_execute("insert into big values (200002, 'after')")
        .await
        .unwrap();
    let ts = collect_changes(&mut s, 200_002).await;
    assert_eq!(ts.len(), 2, "the big transaction arrives as one");
    assert_eq!(ts[0].changes.len(), 200_001);
    let ids = inserted_ids(&ts);
    assert_eq!(ids, (1..=200_002).collect::<Vec<i64>>());
    assert_eq!(record(&ts[0], 199_999)["body"], json!("row 200000"));
    assert_quiet(&mut s, Duration::from_millis(300)).await;
    s.1.shutdown().await;
}

#[tokio::test]
async fn a_burst_of_100000_single_row_transactions_arrives_complete_and_in_order() {
    let db = empty_db().await;
    db.client
        .batch_execute("create table burst (id int primary key)")
        .await
        .unwrap();
    publish(&db, "p", &["burst"]).await;
    let mut s = start(&db, "s", "p").await;
    // One COMMIT per row, from a procedure loop: 100,000 transactions with no client
    // round trips in between.
    db.client
        .batch_execute(
            "do $$ begin for i in 1..100000 loop \
               insert into burst values (i); commit; \
             end loop; end $$",
        )
        .await
        .unwrap();
    let ts = collect_changes(&mut s, 100_000).await;
    assert_eq!(ts.len(), 100_000);
    assert!(ts.windows(2).all(|w| w[0].commit_lsn < w[1].commit_lsn));
    assert_eq!(inserted_ids(&ts), (1..=100_000).collect::<Vec<i64>>());
    assert_quiet(&mut s, Duration::from_millis(300)).await;
    s.1.shutdown().await;
}

#[tokio::test]
async fn a_unix_socket_connection_streams_too() {
    let db = empty_db().await;
    db.client
        .batch_execute("create table t (id int primary key)")
        .await
        .unwrap();
    publish(&db, "p", &["t"]).await;
    let c = &ripple_tests::cluster().cluster;
    let url = format!(
        "host={} port={} user={} dbname={}",
        c.socket_dir().display(),
        c.port(),
        c.superuser(),
        db.name
    );
    let cfg = ripple::replication::ReplicationConfig::new(&url, &slot_name(&db, "s"), "p");
    let mut s = ripple::replication::start(cfg).await.expect("unix socket");
    db.client
        .batch_execute("insert into t values (1)")
        .await
        .unwrap();
    let ts = collect_changes(&mut s, 1).await;
    assert_eq!(inserted_ids(&ts), vec![1]);
    s.1.shutdown().await;
}

#[tokio::test]
async fn the_publication_is_created_if_absent_and_the_slot_is_durable() {
    let db = empty_db().await;
    let s = start(&db, "durable", "fresh_pub").await;
    assert!(s.1.is_up());
    s.1.shutdown().await;
    assert!(!s.1.is_up());
    let row = db
        .client
        .query_one(
            "select (select count(*) from pg_publication where pubname = 'fresh_pub'), \
                    (select count(*) from pg_replication_slots \
                      where slot_name = $1 and plugin = 'pgoutput' and not temporary)",
            &[&slot_name(&db, "durable")],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (1, 1));
}

#[tokio::test]
async fn tail_prints_one_json_line_per_change() {
    let db = empty_db().await;
    db.client
        .batch_execute("create table t (id int primary key, v text)")
        .await
        .unwrap();
    let slot = slot_name(&db, "tail");
    db.client
        .execute(
            "select pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&slot],
        )
        .await
        .unwrap();
    publish(&db, "p", &["t"]).await;
    db.client
        .batch_execute(
            "insert into t values (1, 'a'); update t set v = 'b' where id = 1; \
             delete from t where id = 1;",
        )
        .await
        .unwrap();
    let opts = ripple::tail::TailOptions {
        publication: "p".into(),
        slot: Some(slot),
        temporary: false,
        start_after: None,
        limit: Some(3),
    };
    let mut out = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        ripple::tail::run(&db.url, &opts, &mut out, std::future::pending()),
    )
    .await
    .expect("tail finished")
    .expect("tail ok");
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["table"], "t");
    assert_eq!(lines[0]["schema"], "public");
    assert_eq!(lines[0]["type"], "INSERT");
    assert_eq!(lines[0]["record"], json!({"id": 1, "v": "a"}));
    assert_eq!(lines[0]["old_record"], json!(null));
    assert_eq!(lines[1]["type"], "UPDATE");
    assert_eq!(lines[1]["old_record"], json!({"id": 1}));
    assert_eq!(lines[2]["type"], "DELETE");
    assert_eq!(lines[2]["record"], json!(null));
    // All three ran in one transaction: same commit position and time.
    assert_eq!(lines[0]["commit_lsn"], lines[2]["commit_lsn"]);
    let lsn = lines[0]["commit_lsn"].as_str().unwrap();
    assert!(ripple::change::parse_lsn(lsn).is_some(), "{lsn}");
    let time = lines[0]["commit_time"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{time}");
}

#[tokio::test]
async fn tail_on_a_temporary_slot_sees_changes_from_its_start_and_leaves_no_slot() {
    let db = empty_db().await;
    db.client
        .batch_execute("create table t (id int primary key); insert into t values (1);")
        .await
        .unwrap();
    publish(&db, "p", &["t"]).await;
    let opts = ripple::tail::TailOptions {
        publication: "p".into(),
        slot: None,
        temporary: false,
        start_after: None,
        limit: Some(1),
    };
    let url = db.url.clone();
    let tail = tokio::spawn(async move {
        let mut out = Vec::new();
        ripple::tail::run(&url, &opts, &mut out, std::future::pending())
            .await
            .map(|_| out)
    });
    // Wait for the temporary slot to be in use, then change something.
    let mut found = false;
    for _ in 0..100 {
        let n: i64 = db
            .client
            .query_one(
                "select count(*) from pg_replication_slots where temporary and active \
                 and database = current_database()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n == 1 {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(found, "temporary slot in use");
    db.client
        .batch_execute("insert into t values (2)")
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), tail)
        .await
        .expect("tail finished")
        .unwrap()
        .expect("tail ok");
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8(out).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(
        line["record"],
        json!({"id": 2}),
        "the row from before is not replayed"
    );
    // The server drops a temporary slot as its walsender exits, a moment after our
    // connection closed: give it that moment (a busy machine makes it longer).
    let mut left: i64 = -1;
    for _ in 0..100 {
        left = db
            .client
            .query_one(
                "select count(*) from pg_replication_slots where database = current_database()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0, "the temporary slot went away with the connection");
}

async fn slot_confirmed(db: &ripple_tests::TestDb, slot: &str) -> u64 {
    let s: String = db
        .client
        .query_one(
            "select confirmed_flush_lsn::text from pg_replication_slots where slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0);
    ripple::change::parse_lsn(&s).unwrap()
}

#[tokio::test]
async fn the_server_is_told_only_what_the_consumer_confirmed() {
    let db = empty_db().await;
    db.client
        .batch_execute("create table t (id int primary key)")
        .await
        .unwrap();
    publish(&db, "p", &["t"]).await;
    let mut s = start(&db, "s", "p").await;
    let slot = slot_name(&db, "s");
    let before = slot_confirmed(&db, &slot).await;
    db.client
        .batch_execute("insert into t values (1)")
        .await
        .unwrap();
    db.client
        .batch_execute("insert into t values (2)")
        .await
        .unwrap();
    let first = s.0.recv().await.unwrap();
    let second = s.0.recv().await.unwrap();
    // Nothing confirmed: the slot stays where it was, however long we wait.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(slot_confirmed(&db, &slot).await, before);
    s.1.confirm(first.commit_lsn);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(slot_confirmed(&db, &slot).await, first.commit_lsn);
    s.1.confirm(second.commit_lsn);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(slot_confirmed(&db, &slot).await >= second.commit_lsn);
    s.1.shutdown().await;
}

#[tokio::test]
async fn an_idle_stream_answers_keepalives_and_keeps_its_connection() {
    let db = empty_db().await;
    // The server drops a walsender that does not answer within this.
    db.client
        .batch_execute(&format!(
            "alter database {} set wal_sender_timeout = '1s'; \
             create table t (id int primary key);",
            db.name
        ))
        .await
        .unwrap();
    publish(&db, "p", &["t"]).await;
    let mut s = start(&db, "s", "p").await;
    let pid = || async {
        db.client
            .query_one(
                "select active_pid from pg_replication_slots where slot_name = $1",
                &[&slot_name(&db, "s")],
            )
            .await
            .unwrap()
            .get::<_, Option<i32>>(0)
    };
    let before = pid().await.expect("slot in use");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(pid().await, Some(before), "same walsender: never timed out");
    assert!(s.1.is_up());
    db.client
        .batch_execute("insert into t values (1)")
        .await
        .unwrap();
    assert_eq!(inserted_ids(&collect_changes(&mut s, 1).await), vec![1]);
    s.1.shutdown().await;
}
