//! The last-seen hook: the function `RIPPLE_LAST_SEEN_FUNCTION` names is called as the user
//! when their last socket closes (the chat schema's `public.touch_last_seen` by default, any
//! other function when named); an empty setting calls nothing.

use std::time::Duration;

use crate::support::{changes_payload, Client};
use ripple_tests::{fresh_db, gateway_config, spawn_gateway_with, TestDb};
use serde_json::json;
use uuid::Uuid;

/// `public.gone` gets a row (the caller's id) each time `public.note_gone()` is called.
async fn note_gone_function(db: &TestDb) {
    db.client
        .batch_execute(
            "create table public.gone (uid uuid not null, at timestamptz not null default now()); \
             create function public.note_gone() returns void language sql security definer \
             set search_path = '' as $$ insert into public.gone (uid) values (auth.uid()) $$; \
             grant execute on function public.note_gone() to authenticated;",
        )
        .await
        .unwrap();
}

/// Opens a socket as `user` (a joined channel makes the socket count for them), closes it.
async fn visit(gw: &ripple_tests::Gateway, user: Uuid) {
    let mut socket = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    socket
        .join_ok(
            "realtime:visit",
            changes_payload(
                &gw.token_for(user, 3600),
                json!([{"event": "*", "schema": "public", "table": "messages"}]),
            ),
        )
        .await;
    drop(socket);
}

async fn gone_rows(db: &TestDb, user: Uuid) -> i64 {
    db.client
        .query_one("select count(*) from public.gone where uid = $1", &[&user])
        .await
        .unwrap()
        .get(0)
}

async fn last_seen(db: &TestDb, user: Uuid) -> Option<chrono::DateTime<chrono::Utc>> {
    db.client
        .query_one(
            "select last_seen_at from public.profiles where id = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn the_named_function_is_called_as_the_user_on_their_last_disconnect() {
    let db = fresh_db().await;
    note_gone_function(&db).await;
    let (dana, erin) = (db.create_user("Dana").await, db.create_user("Erin").await);
    let mut config = gateway_config();
    config.last_seen_function = "public.note_gone".into();
    let gw = spawn_gateway_with(&db, config).await;
    visit(&gw, dana).await;
    let mut called = 0;
    for _ in 0..100 {
        called = gone_rows(&db, dana).await;
        if called > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        called, 1,
        "dana's disconnect calls the named function, as dana"
    );
    // Only the named function: the default one was not called, and erin never came.
    assert_eq!(last_seen(&db, dana).await, None);
    assert_eq!(gone_rows(&db, erin).await, 0);
}

#[tokio::test]
async fn an_empty_setting_calls_nothing() {
    let db = fresh_db().await;
    note_gone_function(&db).await;
    let dana = db.create_user("Dana").await;
    let mut config = gateway_config();
    config.last_seen_function = String::new();
    let gw = spawn_gateway_with(&db, config).await;
    visit(&gw, dana).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(last_seen(&db, dana).await, None);
    assert_eq!(gone_rows(&db, dana).await, 0);
}

/// `ripple serve` as its own process with `RIPPLE_LAST_SEEN_FUNCTION=function`, logging to
/// a file: the server, its gateway and the log's path.
async fn serve_logging(
    db: &TestDb,
    function: &str,
) -> (
    ripple_tests::RippleServe,
    ripple_tests::Gateway,
    std::path::PathBuf,
) {
    ripple_tests::serve_logging_to_file(db, "last-seen", &[("RIPPLE_LAST_SEEN_FUNCTION", function)])
        .await
}

#[tokio::test]
async fn a_function_the_database_lacks_is_not_called_and_sockets_carry_on() {
    let db = fresh_db().await;
    let (dana, erin) = (db.create_user("Dana").await, db.create_user("Erin").await);
    // A function that exists and fails: the failure is logged (what the next case must
    // not show).
    db.client
        .batch_execute(
            "create function public.always_fails() returns void language plpgsql \
               as $$ begin raise exception 'no'; end $$; \
             grant execute on function public.always_fails() to authenticated;",
        )
        .await
        .unwrap();
    let (serve, gw, log) = serve_logging(&db, "public.always_fails").await;
    visit(&gw, dana).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("the last-seen function failed")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "a failing function is logged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(serve);

    // A function the database lacks: nothing is called, nothing is logged, and the next
    // user's socket works as before.
    let (_serve, gw, log) = serve_logging(&db, "public.not_in_this_schema").await;
    visit(&gw, dana).await;
    visit(&gw, erin).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(last_seen(&db, dana).await, None);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("last-seen function"),
        "a missing function is skipped without a warning: {text}"
    );
}
