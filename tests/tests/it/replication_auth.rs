//! Authentication and server checks of the replication connection: MD5 and SCRAM-SHA-256
//! both stream, and each way of being refused gets its own clear error.

use crate::replication_common;

use std::time::Duration;

use replication_common::*;
use ripple::replication::{self, ReplicationConfig, ReplicationError};
use ripple_tests::TestDb;
use tokio::sync::OnceCell;

/// These tests rewrite `pg_hba.conf` and reload it, so they have a cluster of their own.
fn cluster() -> &'static ripple_tests::TestCluster {
    ripple_tests::own_cluster("replication_auth")
}

/// Roles and a pg_hba.conf that asks them for passwords (loopback TCP; the rest trusts).
async fn auth_setup() {
    static DONE: OnceCell<()> = OnceCell::const_new();
    DONE.get_or_init(write_roles_and_hba).await;
}

async fn write_roles_and_hba() {
    let c = &cluster().cluster;
    let admin = ripple::db::connect(&c.url("postgres")).await.unwrap();
    admin
        .batch_execute(
            "do $$ begin \
               if not exists (select 1 from pg_roles where rolname = 'repl_md5') then \
                 set password_encryption = 'md5'; \
                 create role repl_md5 login replication password 'md5-secret'; \
                 reset password_encryption; \
                 create role repl_scram login replication password 'scram-secret'; \
                 create role no_repl login password 'plain-secret'; \
               end if; end $$;",
        )
        .await
        .unwrap();
    c.write_hba(
        "local all all trust\n\
         host all repl_md5 127.0.0.1/32 md5\n\
         host all repl_scram 127.0.0.1/32 scram-sha-256\n\
         host all all 127.0.0.1/32 trust\n\
         host replication all 127.0.0.1/32 trust\n",
    )
    .unwrap();
    // pg_ctl reload only signals the server: wait until the new rules are in force.
    let url = format!("postgres://repl_scram@127.0.0.1:{}/postgres", c.port());
    for _ in 0..100 {
        if ripple::db::connect(&url).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn url_as(db: &TestDb, user: &str, password: Option<&str>) -> String {
    let port = cluster().cluster.port();
    match password {
        Some(p) => format!("postgres://{user}:{p}@127.0.0.1:{port}/{}", db.name),
        None => format!("postgres://{user}@127.0.0.1:{port}/{}", db.name),
    }
}

async fn start_as(
    db: &TestDb,
    user: &str,
    password: Option<&str>,
) -> Result<Stream, ReplicationError> {
    let cfg = ReplicationConfig::new(&url_as(db, user, password), &slot_name(db, user), "p");
    replication::start(cfg).await
}

async fn db_with_table() -> TestDb {
    auth_setup().await;
    let db = cluster().empty_db().await;
    db.client
        .batch_execute("create table t (id int primary key)")
        .await
        .unwrap();
    publish(&db, "p", &["t"]).await;
    db
}

#[tokio::test]
async fn md5_authentication_streams_changes() {
    let db = db_with_table().await;
    let mut s = start_as(&db, "repl_md5", Some("md5-secret"))
        .await
        .expect("md5 login");
    db.client
        .batch_execute("insert into t values (1)")
        .await
        .unwrap();
    assert_eq!(inserted_ids(&collect_changes(&mut s, 1).await), vec![1]);
    s.1.shutdown().await;
}

#[tokio::test]
async fn scram_authentication_streams_changes() {
    let db = db_with_table().await;
    let mut s = start_as(&db, "repl_scram", Some("scram-secret"))
        .await
        .expect("scram login");
    db.client
        .batch_execute("insert into t values (2)")
        .await
        .unwrap();
    assert_eq!(inserted_ids(&collect_changes(&mut s, 1).await), vec![2]);
    s.1.shutdown().await;
}

#[tokio::test]
async fn a_wrong_password_is_named_as_such_for_md5_and_scram() {
    let db = db_with_table().await;
    for user in ["repl_md5", "repl_scram"] {
        let err = start_as(&db, user, Some("not-the-password"))
            .await
            .err()
            .expect("refused");
        assert!(
            matches!(&err, ReplicationError::WrongPassword { user: u, .. } if u == user),
            "{user}: {err:?}"
        );
        assert_eq!(err.code(), Some("28P01"));
        assert!(err.to_string().contains("password authentication failed"));
        // The password never appears in the error.
        assert!(!format!("{err:?}").contains("not-the-password"));
    }
}

#[tokio::test]
async fn a_missing_password_is_a_clear_error() {
    let db = db_with_table().await;
    let err = start_as(&db, "repl_scram", None)
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(err, ReplicationError::PasswordRequired { ref user } if user == "repl_scram"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_role_without_replication_is_told_what_it_lacks() {
    let db = db_with_table().await;
    let err = start_as(&db, "no_repl", None).await.err().expect("refused");
    assert!(
        matches!(err, ReplicationError::NotReplicationRole { ref user, .. } if user == "no_repl"),
        "{err:?}"
    );
    assert_eq!(err.code(), Some("42501"));
    assert!(err.to_string().contains("REPLICATION"), "{err}");
}

#[tokio::test]
async fn an_unknown_database_is_rejected_with_the_servers_reason() {
    auth_setup().await;
    let port = cluster().cluster.port();
    let cfg = ReplicationConfig::new(
        &format!("postgres://postgres@127.0.0.1:{port}/no_such_db"),
        "whatever",
        "p",
    );
    let err = replication::start(cfg).await.err().expect("refused");
    assert_eq!(err.code(), Some("3D000"), "{err:?}");
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error_naming_the_target() {
    let port = ripple::embedded::free_port().unwrap();
    let cfg = ReplicationConfig::new(&format!("postgres://x@127.0.0.1:{port}/db"), "s", "p");
    let err = replication::start(cfg).await.err().expect("refused");
    assert!(matches!(err, ReplicationError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")));
}

#[tokio::test]
async fn a_bad_slot_name_is_refused_before_connecting() {
    let cfg = ReplicationConfig::new("postgres://x@127.0.0.1:1/db", "Bad-Name", "p");
    let err = replication::start(cfg).await.err().expect("refused");
    assert!(matches!(err, ReplicationError::Config(_)), "{err:?}");
}

#[tokio::test]
async fn a_server_without_logical_wal_is_refused_with_the_fix() {
    use ripple::embedded::{Cluster, ClusterOptions, PgBinaries};
    // A cluster of its own with wal_level = replica (the shared one is logical). Short
    // path: the server's Unix socket lives in the data folder.
    let dir = std::env::temp_dir().join(format!("rplw-{}", std::process::id()));
    let c = Cluster::init(
        PgBinaries::find().unwrap(),
        &dir,
        &ClusterOptions {
            ephemeral: true,
            ..ClusterOptions::default()
        },
    )
    .unwrap();
    c.reap_after_exit(std::process::id(), &dir).unwrap();
    let conf = c.data_dir().join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("\nwal_level = replica\n");
    std::fs::write(&conf, text).unwrap();
    c.start().unwrap();
    let cfg = ReplicationConfig::new(&c.url("postgres"), "s", "p");
    let result = replication::start(cfg).await;
    c.stop().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = result.err().expect("refused");
    assert!(
        matches!(err, ReplicationError::WalLevel { ref actual } if actual == "replica"),
        "{err:?}"
    );
    assert!(err.to_string().contains("wal_level = logical"), "{err}");
}
