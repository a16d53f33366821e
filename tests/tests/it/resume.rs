//! Nothing is lost across a dropped connection or a gateway restart: a client that joins
//! again with the last position it saw gets, before live changes, exactly the changes it
//! missed that it may see. And a dead connection during a check is never taken for a
//! verdict.

use crate::support;

use std::time::Duration;

use ripple_tests::{fresh_db, gateway_config, spawn_gateway, spawn_gateway_with, TestDb};
use serde_json::{json, Value};
use support::{changes_payload, Client, Msg};
use uuid::Uuid;

fn messages_binding(since: Option<&str>) -> Value {
    json!([{"event": "*", "schema": "public", "table": "messages",
            "resume": {"since": since}}])
}

fn body(m: &Msg) -> String {
    m.payload["data"]["record"]["body"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Reads changes until `n` user messages (not the membership system messages) have
/// arrived; returns their bodies and the position of the last change seen, checking that
/// every change is followed by a `system` message with its position.
async fn take(c: &mut Client, n: usize) -> (Vec<String>, String) {
    let mut bodies = Vec::new();
    let mut last = String::new();
    while bodies.len() < n {
        let m = c.recv_until(|m| m.event == "postgres_changes").await;
        let position = m.payload["data"]["position"].as_str().unwrap().to_string();
        let sys = c.recv().await;
        assert_eq!(
            (sys.event.as_str(), sys.payload["message"].as_str()),
            ("system", Some("position")),
            "the change's position follows it: {sys:?}"
        );
        assert_eq!(sys.payload["position"], position.as_str());
        assert!(position > last, "positions grow in commit order");
        last = position;
        if std::env::var("DEBUG_RESUME").is_ok() {
            eprintln!("{}", m.payload);
        }
        if m.payload["data"]["record"]["kind"] != "system" {
            bodies.push(body(&m));
        }
    }
    (bodies, last)
}

async fn send(db: &TestDb, from: Uuid, conv: Uuid, text: &str) {
    db.as_user(from)
        .query("select public.send_message($1, $2)", &[&conv, &text])
        .await;
}

#[tokio::test]
async fn a_client_that_drops_and_rejoins_with_its_position_gets_exactly_what_it_missed() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let a = db.create_user("Alice").await;
    let b = db.create_user("Bob").await;
    let c = db.create_user("Carol").await;
    let conv = support::conversation(&db, &[a, b]).await;
    let other = support::conversation(&db, &[a, c]).await;
    let token = gw.token_for(b, 600);

    let mut bob = Client::connect(gw.addr, &gw.anon_key, "2.0.0").await;
    bob.join_ok(
        "realtime:room",
        changes_payload(&token, messages_binding(None)),
    )
    .await;
    send(&db, a, conv, "one").await;
    let (got, position) = take(&mut bob, 1).await;
    assert_eq!(got, ["one"]);
    drop(bob); // the network drops

    send(&db, a, conv, "two").await;
    send(&db, a, other, "not for bob").await;
    send(&db, a, conv, "three").await;
    // Everything above is processed before Bob is back (and then some).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut bob = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    bob.join_ok(
        "realtime:room",
        changes_payload(&token, messages_binding(Some(&position))),
    )
    .await;
    let (replayed, _) = take(&mut bob, 2).await;
    assert_eq!(replayed, ["two", "three"], "missed changes, in order, once");
    send(&db, a, conv, "four").await;
    let (live, _) = take(&mut bob, 1).await;
    assert_eq!(live, ["four"]);
    bob.assert_nothing_pending().await;
}

#[tokio::test]
async fn a_gap_longer_than_the_client_queue_is_replayed_in_pieces_without_a_disconnect() {
    let db = fresh_db().await;
    let mut config = gateway_config();
    config.client_queue = 32;
    let gw = spawn_gateway_with(&db, config).await;
    let a = db.create_user("Alice").await;
    let b = db.create_user("Bob").await;
    let conv = support::conversation(&db, &[a, b]).await;
    let token = gw.token_for(b, 600);
    let mut bob = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    bob.join_ok(
        "realtime:room",
        changes_payload(&token, messages_binding(None)),
    )
    .await;
    send(&db, a, conv, "first").await;
    let (_, position) = take(&mut bob, 1).await;
    drop(bob);
    // 120 messages, each followed by its position: far more than a 32-message queue.
    db.as_user(a)
        .query(
            "select public.send_message($1, 'm' || i) from generate_series(1, 120) i",
            &[&conv],
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut bob = Client::connect(gw.addr, &gw.anon_key, "2.0.0").await;
    bob.join_ok(
        "realtime:room",
        changes_payload(&token, messages_binding(Some(&position))),
    )
    .await;
    let (replayed, _) = take(&mut bob, 120).await;
    let want: Vec<String> = (1..=120).map(|i| format!("m{i}")).collect();
    assert_eq!(replayed, want, "all of it, in order, once");
    send(&db, a, conv, "live").await;
    let (live, _) = take(&mut bob, 1).await;
    assert_eq!(live, ["live"], "still connected, and live after the replay");
}

#[tokio::test]
async fn a_position_older_than_the_window_is_told_so_and_live_changes_follow() {
    let db = fresh_db().await;
    let mut config = gateway_config();
    config.resume_window_secs = 1;
    let gw = spawn_gateway_with(&db, config).await;
    let a = db.create_user("Alice").await;
    let b = db.create_user("Bob").await;
    let conv = support::conversation(&db, &[a, b]).await;
    let token = gw.token_for(b, 600);

    let mut bob = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    bob.join_ok(
        "realtime:room",
        changes_payload(&token, messages_binding(None)),
    )
    .await;
    send(&db, a, conv, "one").await;
    let (_, position) = take(&mut bob, 1).await;
    drop(bob);
    send(&db, a, conv, "two").await;
    // Past the one-second window: "two" is no longer retained.
    tokio::time::sleep(Duration::from_millis(3500)).await;

    let mut bob = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    bob.join_ok(
        "realtime:room",
        changes_payload(&token, messages_binding(Some(&position))),
    )
    .await;
    let told = bob
        .recv_until(|m| m.event == "system" || m.event == "postgres_changes")
        .await;
    assert_eq!(told.event, "system", "{told:?}");
    assert_eq!(told.payload["resume"], "too_old", "{}", told.payload);
    assert_eq!(told.payload["extension"], "postgres_changes");
    send(&db, a, conv, "three").await;
    let (live, _) = take(&mut bob, 1).await;
    assert_eq!(live, ["three"]);

    // A position Ripple never sent is refused at the join, in the protocol's own form.
    let mut eve = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    let reply = eve
        .join(
            "realtime:x",
            changes_payload(&token, messages_binding(Some("not-a-position"))),
        )
        .await;
    assert_eq!(reply.payload["status"], "error");
    assert!(reply.payload["response"]["reason"]
        .as_str()
        .unwrap()
        .contains("resume.since"));
}

#[tokio::test]
async fn changes_committed_while_the_gateway_was_killed_reach_clients_that_resume() {
    let db = fresh_db().await;
    let a = db.create_user("Alice").await;
    let b = db.create_user("Bob").await;
    let c = db.create_user("Carol").await;
    let conv = support::conversation(&db, &[a, b]).await;
    let port = ripple_tests::free_low_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let keys =
        ripple::auth::JwtVerifier::new(&ripple_tests::gateway_config().jwt_config().unwrap())
            .unwrap();
    let anon = keys.mint_for("anon", None, 3600).unwrap();
    let bob_token = keys
        .mint_for("authenticated", Some(&b.to_string()), 600)
        .unwrap();
    let carol_token = keys
        .mint_for("authenticated", Some(&c.to_string()), 600)
        .unwrap();

    let mut ripple = ripple_tests::spawn_ripple_serve(&db, port, None);
    assert!(
        ripple_tests::wait_healthy(addr, Duration::from_secs(20)).await,
        "ripple never became healthy"
    );
    let mut bob = Client::connect(addr, &anon, "1.0.0").await;
    bob.join_ok(
        "realtime:room",
        changes_payload(&bob_token, messages_binding(None)),
    )
    .await;
    send(&db, a, conv, "one").await;
    send(&db, a, conv, "two").await;
    let (got, position) = take(&mut bob, 2).await;
    assert_eq!(got, ["one", "two"]);

    // kill -9: no goodbye, nothing flushed, the slot's last report is whatever it was.
    ripple.kill();
    drop(bob);
    send(&db, a, conv, "three").await;
    send(&db, a, conv, "four").await;

    let mut ripple = ripple_tests::spawn_ripple_serve(&db, port, None);
    assert!(
        ripple_tests::wait_healthy(addr, Duration::from_secs(20)).await,
        "ripple never became healthy"
    );
    let mut bob = Client::connect(addr, &anon, "2.0.0").await;
    bob.join_ok(
        "realtime:room",
        changes_payload(&bob_token, messages_binding(Some(&position))),
    )
    .await;
    let mut carol = Client::connect(addr, &anon, "1.0.0").await;
    carol
        .join_ok(
            "realtime:room",
            changes_payload(&carol_token, messages_binding(None)),
        )
        .await;
    let (replayed, _) = take(&mut bob, 2).await;
    assert_eq!(replayed, ["three", "four"], "exactly what was missed, once");
    send(&db, a, conv, "five").await;
    let (live, _) = take(&mut bob, 1).await;
    assert_eq!(live, ["five"]);
    bob.assert_nothing_pending().await;
    // Carol, no member, got none of it, replayed or live.
    carol.assert_nothing_pending().await;
    ripple.kill();
}

#[tokio::test]
async fn a_connection_dying_during_a_check_is_retried_not_taken_for_a_verdict() {
    let db = fresh_db().await;
    // A restrictive policy that is true for everyone but can be made slow, so the test can
    // terminate the backend in the middle of a check.
    db.client
        .batch_execute(
            "create table public.test_gate (slow boolean not null);
             insert into public.test_gate values (false);
             create function public.test_gate_open() returns boolean
               language sql volatile security definer set search_path = public as
               $$ select true from pg_sleep(case when (select slow from public.test_gate) then 3 else 0 end) $$;
             grant execute on function public.test_gate_open() to authenticated;
             create policy test_gate on public.messages as restrictive for select
               to authenticated using (public.test_gate_open());",
        )
        .await
        .unwrap();
    let gw = spawn_gateway(&db).await;
    let a = db.create_user("Alice").await;
    let b = db.create_user("Bob").await;
    let conv = support::conversation(&db, &[a, b]).await;
    let mut bob = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    bob.join_ok(
        "realtime:room",
        changes_payload(&gw.token_for(b, 600), messages_binding(None)),
    )
    .await;

    db.client
        .execute("update public.test_gate set slow = true", &[])
        .await
        .unwrap();
    send(&db, a, conv, "survives").await;
    // Find the check in flight and terminate its backend.
    let mut killed = false;
    for _ in 0..100 {
        let n: i64 = db
            .client
            .query_one(
                "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity
                  where datname = current_database() and pid <> pg_backend_pid()
                    and query like '%__ripple_row%' and state = 'active') t",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            killed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(killed, "a check was in flight");
    db.client
        .execute("update public.test_gate set slow = false", &[])
        .await
        .unwrap();
    let (got, _) = take(&mut bob, 1).await;
    assert_eq!(
        got,
        ["survives"],
        "retried on a fresh connection, not hidden"
    );
    let metrics = ripple_tests::http::request(gw.addr, hyper::Method::GET, "/metrics", &[], None)
        .await
        .text();
    let failures: f64 = metrics
        .lines()
        .find(|l| l.starts_with("ripple_authorization_failures_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(failures >= 1.0, "the failure is counted:\n{metrics}");
}
