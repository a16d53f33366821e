//! A transaction is judged only once other sessions can see it.
//!
//! PostgreSQL writes (and streams) a commit before it makes the transaction visible; the
//! gap is tiny, except when the commit waits for a synchronous standby. These tests make the
//! gap as long as they like with a real physical standby (`pg_receivewal --synchronous`,
//! named in `synchronous_standby_names`) that they pause with SIGSTOP: while it is stopped,
//! every commit is streamed to Ripple but stays invisible. A policy that reads membership
//! (the chat's `messages` policy) must then be judged on the state the transaction left,
//! not the state before it.
//!
//! The tests change `synchronous_standby_names` for their cluster, so they take
//! turns.

use crate::support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ripple_tests::{spawn_gateway, TestDb};
use serde_json::json;
use support::{changes_payload, Client, Msg};
use uuid::Uuid;

/// These tests set `synchronous_standby_names` and pause the standby: every commit of the
/// cluster waits meanwhile, so they have a cluster of their own.
fn cluster() -> &'static ripple_tests::TestCluster {
    ripple_tests::own_cluster("visibility")
}

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A synchronous standby the test can pause.
struct Witness {
    child: Child,
}

impl Witness {
    async fn start(db: &TestDb, name: &str) -> Witness {
        let c = &cluster().cluster;
        let dir = cluster()
            .root
            .join(format!("wal-{}", &Uuid::new_v4().simple().to_string()[..8]));
        std::fs::create_dir_all(&dir).unwrap();
        // The folder initdb really lives in (PATH may hold only a symlink to it).
        let initdb = ripple::embedded::PgBinaries::find().unwrap().tool("initdb");
        let bin = std::fs::canonicalize(&initdb)
            .unwrap_or(initdb)
            .with_file_name("pg_receivewal");
        let child = Command::new(bin)
            .arg("-d")
            .arg(format!(
                "host=127.0.0.1 port={} user={} application_name={name}",
                c.port(),
                c.superuser()
            ))
            .arg("-D")
            .arg(&dir)
            .args(["--synchronous", "--no-loop", "--no-password"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start pg_receivewal");
        // Held from here, so that it is stopped and reaped whatever happens below.
        let witness = Witness { child };
        set_sync_standbys(db, name).await;
        // Wait until the server counts it as the synchronous standby.
        for _ in 0..100 {
            let row = db
                .client
                .query_opt(
                    "select 1 from pg_stat_replication where application_name = $1 and sync_state = 'sync'",
                    &[&name],
                )
                .await
                .unwrap();
            if row.is_some() {
                return witness;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("pg_receivewal never became the synchronous standby");
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    fn pause(&self) {
        self.signal("-STOP");
    }

    fn resume(&self) {
        self.signal("-CONT");
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn set_sync_standbys(db: &TestDb, names: &str) {
    // ALTER SYSTEM refuses to run in a (multi-statement, so implicit) transaction.
    db.client
        .batch_execute(&format!(
            "alter system set synchronous_standby_names = '{names}'"
        ))
        .await
        .unwrap();
    db.client
        .batch_execute("select pg_reload_conf()")
        .await
        .unwrap();
}

/// Puts the cluster back as the other test binaries expect it, even when a test fails.
struct ResetSyncStandbys(String);

impl Drop for ResetSyncStandbys {
    fn drop(&mut self) {
        let url = self.0.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                if let Ok(c) = ripple::db::connect(&url).await {
                    let _ = c
                        .batch_execute("alter system reset synchronous_standby_names")
                        .await;
                    let _ = c.batch_execute("select pg_reload_conf()").await;
                }
            })
        })
        .join();
    }
}

async fn subscribe(gw: &ripple_tests::Gateway, user: Uuid, topic: &str) -> Client {
    let mut c = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    c.join_ok(
        topic,
        changes_payload(
            &gw.token_for(user, 600),
            json!([{"event": "INSERT", "schema": "public", "table": "messages"}]),
        ),
    )
    .await;
    c
}

fn body(m: &Msg) -> String {
    m.payload["data"]["record"]["body"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn conversation_of(m: &Msg) -> String {
    m.payload["data"]["record"]["conversation_id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Runs `sql` in a transaction of its own whose commit is held back by the paused standby,
/// waits long enough for Ripple to have streamed it, then lets the commit finish.
async fn commit_while_invisible(db: &TestDb, witness: &Witness, sql: String) {
    witness.pause();
    let conn = db.connect().await;
    let commit = tokio::spawn(async move { conn.batch_execute(&sql).await });
    // The commit record is streamed at once; the commit itself waits for the standby.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !commit.is_finished(),
        "the commit should be waiting for the paused standby"
    );
    witness.resume();
    commit.await.unwrap().expect("the transaction commits");
}

#[tokio::test]
async fn a_member_removed_by_a_transaction_never_gets_its_changes_and_one_added_does() {
    let _turn = TURN.lock().await;
    let db = cluster().fresh_db().await;
    let _reset = ResetSyncStandbys(db.url.clone());
    let gw = spawn_gateway(&db).await;
    let alice = db.create_user("Alice").await;
    let bob = db.create_user("Bob").await;
    let carol = db.create_user("Carol").await;
    let group = support::conversation(&db, &[alice, bob]).await;
    // Bob stays a member here: its marker proves his stream went past the removal.
    let marker_room = support::conversation(&db, &[alice, bob, carol]).await;
    let mut bob_ws = subscribe(&gw, bob, "realtime:bob").await;
    let mut carol_ws = subscribe(&gw, carol, "realtime:carol").await;
    // The setup's own system messages may still be streaming: let them pass first.
    db.client
        .execute(
            "insert into public.messages (conversation_id, sender_id, body) values ($1, $2, 'ready')",
            &[&marker_room, &alice],
        )
        .await
        .unwrap();
    for ws in [&mut bob_ws, &mut carol_ws] {
        ws.recv_until(|m| m.event == "postgres_changes" && body(m) == "ready")
            .await;
    }
    let witness = Witness::start(&db, "witness").await;

    // Bob is removed and a message sent, in one transaction.
    commit_while_invisible(
        &db,
        &witness,
        format!(
            "begin;
             set local synchronous_commit = on;
             delete from public.conversation_members where conversation_id = '{group}' and user_id = '{bob}';
             insert into public.messages (conversation_id, sender_id, body) values ('{group}', '{alice}', 'after bob left');
             commit;"
        ),
    )
    .await;
    // Carol is added and welcomed, in one transaction.
    commit_while_invisible(
        &db,
        &witness,
        format!(
            "begin;
             set local synchronous_commit = on;
             insert into public.conversation_members (conversation_id, user_id) values ('{group}', '{carol}');
             insert into public.messages (conversation_id, sender_id, body) values ('{group}', '{alice}', 'welcome carol');
             commit;"
        ),
    )
    .await;
    db.client
        .execute(
            "insert into public.messages (conversation_id, sender_id, body) values ($1, $2, 'marker')",
            &[&marker_room, &alice],
        )
        .await
        .unwrap();

    // Bob: nothing from the group after his removal, up to the marker.
    let group_s = group.to_string();
    loop {
        let m = bob_ws.recv_until(|m| m.event == "postgres_changes").await;
        if body(&m) == "marker" {
            break;
        }
        assert_ne!(
            conversation_of(&m),
            group_s,
            "Bob was removed in the same transaction, yet received {}",
            m.payload
        );
    }
    // Carol: the welcome from the transaction that added her, before the marker.
    let mut got_welcome = false;
    loop {
        let m = carol_ws.recv_until(|m| m.event == "postgres_changes").await;
        match body(&m).as_str() {
            "welcome carol" => got_welcome = true,
            "marker" => break,
            _ => {}
        }
    }
    assert!(
        got_welcome,
        "Carol was added in the same transaction as the welcome, yet did not receive it"
    );
    drop(witness);
}

#[tokio::test]
async fn ripple_as_its_own_synchronous_standby_is_reported_and_recovers() {
    let _turn = TURN.lock().await;
    let db = cluster().fresh_db().await;
    let reset = ResetSyncStandbys(db.url.clone());
    let gw = spawn_gateway(&db).await;
    let alice = db.create_user("Alice").await;
    let bob = db.create_user("Bob").await;
    let group = support::conversation(&db, &[alice, bob]).await;
    let mut bob_ws = subscribe(&gw, bob, "realtime:bob").await;

    // Only this test's gateway may be called "ripple" when the setting names it (a gateway
    // of the previous test may still be disconnecting, and would be picked instead).
    for _ in 0..200 {
        let n: i64 = db
            .client
            .query_one(
                "select count(*) from pg_stat_replication where application_name = 'ripple'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Ripple's walsender (application_name "ripple") becomes the synchronous standby:
    // commits now wait for Ripple, and Ripple waits for them to become visible.
    set_sync_standbys(&db, "ripple").await;
    let conn = db.connect().await;
    // (The test cluster turns synchronous_commit off for speed; a real one has it on.)
    let sql = format!(
        "set synchronous_commit = on;
         insert into public.messages (conversation_id, sender_id, body) values ('{group}', '{alice}', 'stuck')"
    );
    let commit = tokio::spawn(async move { conn.batch_execute(&sql).await });

    let mut reported = None;
    for _ in 0..120 {
        let r =
            ripple_tests::http::request(gw.addr, hyper::Method::GET, "/health", &[], None).await;
        let h = r.json();
        if h["replication"] == "down" {
            reported = Some(h);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let health = reported.expect("/health reports the deadlock");
    let problem = health["replication_problem"].as_str().unwrap_or_default();
    assert!(
        problem.contains("synchronous_standby_names") && problem.contains("ripple"),
        "the problem names the setting and the standby: {health}"
    );
    assert!(!commit.is_finished());

    // The DBA removes Ripple from the list: the commit finishes, Ripple delivers it.
    drop(reset);
    commit.await.unwrap().expect("commit");
    // (Skipping the setup's own system messages, which may still be streaming.)
    let m = bob_ws
        .recv_until(|m| {
            m.event == "postgres_changes" && m.payload["data"]["record"]["kind"] != "system"
        })
        .await;
    assert_eq!(body(&m), "stuck");
    let mut ok = false;
    for _ in 0..40 {
        let r =
            ripple_tests::http::request(gw.addr, hyper::Method::GET, "/health", &[], None).await;
        if r.json()["status"] == "ok" {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(ok, "/health recovers once transactions are visible again");
}
