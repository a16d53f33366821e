//! The verdict cache is never stale: a cached "may see" is dropped the moment the stream
//! shows a change to a table it was read from, a policy change applies to the next change,
//! and an answer read from a table outside the publication is never cached.

use crate::support;

use std::time::Duration;

use ripple_tests::{fresh_db, spawn_gateway, Gateway, TestDb};
use serde_json::json;
use support::{changes_payload, Client, Msg};
use uuid::Uuid;

fn body(m: &Msg) -> String {
    m.payload["data"]["record"]["body"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn subscribe(gw: &Gateway, user: Uuid) -> Client {
    let mut c = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    c.join_ok(
        "realtime:room",
        changes_payload(
            &gw.token_for(user, 600),
            json!([{"event": "INSERT", "schema": "public", "table": "messages"}]),
        ),
    )
    .await;
    c
}

async fn send(db: &TestDb, from: Uuid, conv: Uuid, text: &str) {
    db.client
        .execute(
            "insert into public.messages (conversation_id, sender_id, body) values ($1, $2, $3)",
            &[&conv, &from, &text],
        )
        .await
        .unwrap();
}

/// The user messages (not the membership system messages) a client gets until `last`.
async fn bodies_until(c: &mut Client, last: &str) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let m = c.recv_until(|m| m.event == "postgres_changes").await;
        if m.payload["data"]["record"]["kind"] == "system" {
            continue;
        }
        let b = body(&m);
        let done = b == last;
        out.push(b);
        if done {
            return out;
        }
    }
}

async fn metric(gw: &Gateway, name: &str) -> f64 {
    ripple_tests::metric(gw.addr, name).await
}

#[tokio::test]
async fn a_removed_member_gets_nothing_after_the_removal_although_it_was_cached() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let a = db.create_user("Alice").await;
    let b = db.create_user("Bob").await;
    let conv = support::conversation(&db, &[a, b]).await;
    let other = support::conversation(&db, &[a, b]).await;
    let mut bob = subscribe(&gw, b).await;
    for i in 0..5 {
        send(&db, a, conv, &format!("m{i}")).await;
    }
    assert_eq!(bodies_until(&mut bob, "m4").await.len(), 5);
    assert!(
        metric(&gw, "ripple_verdict_cache_hits_total").await >= 3.0,
        "the same question was answered from the cache"
    );
    db.client
        .execute(
            "delete from public.conversation_members where conversation_id = $1 and user_id = $2",
            &[&conv, &b],
        )
        .await
        .unwrap();
    send(&db, a, conv, "after removal").await;
    send(&db, a, other, "marker").await;
    let got = bodies_until(&mut bob, "marker").await;
    assert_eq!(got, ["marker"], "nothing from the conversation Bob left");
}

#[tokio::test]
async fn an_update_of_a_column_the_policy_reads_invalidates_and_one_of_a_counter_does_not() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let a = db.create_user("Alice").await;
    let b = db.create_user("Bob").await;
    let conv = support::conversation(&db, &[a, b]).await;
    let other = support::conversation(&db, &[a, b]).await;
    let third = support::conversation(&db, &[a]).await;
    let mut bob = subscribe(&gw, b).await;
    send(&db, a, conv, "one").await;
    // Every message updates its sender's counters on conversation_members: no policy or
    // function of the messages policy names those columns, so the cache stays warm.
    for i in 0..4 {
        send(&db, a, conv, &format!("m{i}")).await;
    }
    assert_eq!(bodies_until(&mut bob, "m3").await.len(), 5);
    let hits = metric(&gw, "ripple_verdict_cache_hits_total").await;
    assert!(
        hits >= 3.0,
        "counter updates left the answers standing ({hits} hits)"
    );
    // Bob's membership row is moved to another conversation: a column the policy's
    // function reads changed, so the cached "visible" for `conv` must go.
    db.client
        .execute(
            "update public.conversation_members set conversation_id = $3 \
              where conversation_id = $1 and user_id = $2",
            &[&conv, &b, &third],
        )
        .await
        .unwrap();
    send(&db, a, conv, "after the move").await;
    send(&db, a, other, "marker").await;
    assert_eq!(bodies_until(&mut bob, "marker").await, ["marker"]);
}

#[tokio::test]
async fn a_member_added_after_being_judged_hidden_gets_the_conversation_from_then_on() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let a = db.create_user("Alice").await;
    let b = db.create_user("Bob").await;
    let c = db.create_user("Carol").await;
    let mut bob = subscribe(&gw, b).await;
    let mut carol = subscribe(&gw, c).await;
    // Several rounds on one socket: the cache is warm with Bob's "hidden" answers.
    for round in 0..4 {
        let group = support::conversation(&db, &[a, c]).await;
        // "before" is judged (Bob not yet a member) before he is added: otherwise the
        // check may already see him as a member, which is the database's answer then.
        // (Carol, a member, receives it in the same fan-out that judges it for Bob.)
        send(&db, a, group, &format!("before {round}")).await;
        bodies_until(&mut carol, &format!("before {round}")).await;
        db.client
            .execute(
                "insert into public.conversation_members (conversation_id, user_id) values ($1, $2)",
                &[&group, &b],
            )
            .await
            .unwrap();
        send(&db, a, group, &format!("after {round}")).await;
        let got = bodies_until(&mut bob, &format!("after {round}")).await;
        assert_eq!(got, [format!("after {round}")], "round {round}");
    }
}

#[tokio::test]
async fn a_replaced_policy_applies_to_the_next_change() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let a = db.create_user("Alice").await;
    let b = db.create_user("Bob").await;
    let conv = support::conversation(&db, &[a, b]).await;
    let mut bob = subscribe(&gw, b).await;
    send(&db, a, conv, "one").await;
    send(&db, a, conv, "two").await;
    assert_eq!(bodies_until(&mut bob, "two").await, ["one", "two"]);
    // The DBA replaces the policy: members see only messages not marked secret.
    db.client
        .batch_execute(
            "drop policy messages_select_members on public.messages;
             create policy messages_select_members on public.messages for select to authenticated
               using (private.is_member(conversation_id) and body not like 'secret%');",
        )
        .await
        .unwrap();
    send(&db, a, conv, "secret three").await;
    send(&db, a, conv, "four").await;
    assert_eq!(bodies_until(&mut bob, "four").await, ["four"]);
}

#[tokio::test]
async fn answers_read_from_an_unpublished_table_are_never_cached() {
    let db = fresh_db().await;
    // A policy reading a table the stream cannot show: a mute list outside the publication.
    db.client
        .batch_execute(
            "create table public.muted (user_id uuid primary key);
             grant select on public.muted to authenticated;
             create policy hide_when_muted on public.messages as restrictive for select
               to authenticated
               using (not exists (select 1 from public.muted m where m.user_id = auth.uid()));",
        )
        .await
        .unwrap();
    let gw = spawn_gateway(&db).await;
    let a = db.create_user("Alice").await;
    let b = db.create_user("Bob").await;
    let conv = support::conversation(&db, &[a, b]).await;
    let other = support::conversation(&db, &[a, b]).await;
    let mut bob = subscribe(&gw, b).await;
    send(&db, a, conv, "one").await;
    send(&db, a, conv, "two").await;
    assert_eq!(bodies_until(&mut bob, "two").await, ["one", "two"]);
    // No stream event can tell Ripple about this; a cached "visible" would now be a leak.
    db.client
        .execute("insert into public.muted values ($1)", &[&b])
        .await
        .unwrap();
    let before = metric(&gw, "ripple_transactions_total").await;
    send(&db, a, conv, "muted").await;
    // Unmute only once Ripple has judged the message (while Bob was muted).
    for _ in 0..100 {
        if metric(&gw, "ripple_transactions_total").await > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    db.client
        .execute("delete from public.muted", &[])
        .await
        .unwrap();
    send(&db, a, other, "marker").await;
    let got = bodies_until(&mut bob, "marker").await;
    assert!(
        !got.contains(&"muted".to_string()),
        "a verdict read from an unpublished table was reused: {got:?}"
    );
    assert_eq!(
        metric(&gw, "ripple_verdict_cache_hits_total").await,
        0.0,
        "nothing is cached for this table"
    );
}

#[tokio::test]
async fn a_dba_can_turn_caching_off_for_a_table() {
    let db = fresh_db().await;
    db.client
        .execute(
            "insert into ripple.verdict_cache_off (table_name, reason) values ('public.messages', 'test')",
            &[],
        )
        .await
        .unwrap();
    let gw = spawn_gateway(&db).await;
    let a = db.create_user("Alice").await;
    let b = db.create_user("Bob").await;
    let conv = support::conversation(&db, &[a, b]).await;
    let mut bob = subscribe(&gw, b).await;
    for i in 0..4 {
        send(&db, a, conv, &format!("m{i}")).await;
    }
    assert_eq!(bodies_until(&mut bob, "m3").await.len(), 4);
    assert_eq!(metric(&gw, "ripple_verdict_cache_hits_total").await, 0.0);
}
