//! `ripple tail`, black-box: the binary against a PostgreSQL of its own. One JSON line per
//! change; stopped with Ctrl-C or killed outright and started again, it prints every
//! change once.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use ripple::embedded::{Cluster, ClusterOptions, PgBinaries};
use serde_json::Value;

struct Tail {
    child: Child,
    lines: Receiver<String>,
}

fn tail(url: &str, extra: &[&str]) -> Tail {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ripple"))
        .args([
            "tail",
            "--database-url",
            url,
            "--publication",
            "p",
            "--slot",
            "tail",
        ])
        .args(extra)
        .env_remove("RIPPLE_SLOT")
        .env_remove("RIPPLE_PUBLICATION")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run ripple tail");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    Tail { child, lines }
}

impl Tail {
    fn next(&self) -> Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(30))
            .expect("a line from ripple tail");
        serde_json::from_str(&line).expect("JSON line")
    }

    fn nothing_more(&self) {
        match self.lines.recv_timeout(Duration::from_millis(500)) {
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
            Ok(line) => panic!("unexpected line {line}"),
        }
    }

    fn signal(&mut self, sig: &str) -> std::process::ExitStatus {
        Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }
}

async fn wait_active(client: &tokio_postgres::Client) {
    for _ in 0..300 {
        let n: i64 = client
            .query_one(
                "select count(*) from pg_replication_slots where slot_name = 'tail' and active",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("ripple tail never took the slot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ripple_tail_prints_each_change_once_across_ctrl_c_and_kill() {
    let dir = std::env::temp_dir().join(format!("rtail-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cluster = Cluster::init(
        PgBinaries::find().expect("PostgreSQL binaries"),
        &dir,
        &ClusterOptions {
            ephemeral: true,
            ..ClusterOptions::default()
        },
    )
    .unwrap();
    cluster.reap_after_exit(std::process::id(), &dir).unwrap();
    cluster.start().unwrap();
    let url = cluster.url("postgres");
    let client = ripple::db::connect(&url).await.unwrap();
    client
        .batch_execute(
            "create table notes (id int primary key, body text); \
             create publication p for table notes;",
        )
        .await
        .unwrap();
    let insert = |id: i32| {
        let client = &client;
        async move {
            client
                .execute(
                    "insert into notes values ($1, 'note ' || $1::int4::text)",
                    &[&id],
                )
                .await
                .unwrap();
        }
    };

    // 1. --limit: prints two changes and exits by itself.
    let mut t = tail(&url, &["--limit", "2"]);
    wait_active(&client).await;
    insert(1).await;
    insert(2).await;
    let first = t.next();
    assert_eq!(first["table"], "notes");
    assert_eq!(first["type"], "INSERT");
    assert_eq!(
        first["record"],
        serde_json::json!({"id": 1, "body": "note 1"})
    );
    assert_eq!(first["old_record"], Value::Null);
    assert!(first["commit_lsn"].as_str().unwrap().contains('/'));
    assert_eq!(t.next()["record"]["id"], 2);
    assert!(t.child.wait().unwrap().success());

    // 2. Ctrl-C: it reports what it printed before leaving, so nothing repeats.
    let mut t = tail(&url, &[]);
    wait_active(&client).await;
    insert(3).await;
    assert_eq!(t.next()["record"]["id"], 3);
    assert!(t.signal("-INT").success());

    // 3. Killed outright after printing 4: restarted from the last LSN it printed, it
    //    prints only what came after.
    let mut t = tail(&url, &[]);
    wait_active(&client).await;
    insert(4).await;
    let four = t.next();
    assert_eq!(four["record"]["id"], 4, "3 was not printed again");
    let _ = t.signal("-KILL");
    insert(5).await;
    let lsn = four["commit_lsn"].as_str().unwrap();
    let t = tail(&url, &["--start-after", lsn, "--limit", "1"]);
    assert_eq!(t.next()["record"]["id"], 5);
    t.nothing_more();

    drop(client);
    cluster.stop().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
