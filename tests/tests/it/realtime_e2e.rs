//! The whole pipeline: a commit in PostgreSQL -> the replication stream -> RLS -> the
//! subscribers' sockets. Real database, real gateway, real WebSocket clients.

use crate::support;

use std::time::Duration;

use ripple_tests::{fresh_db, spawn_gateway};
use serde_json::json;
use support::{changes_payload, Client, Msg};

/// A change that is not one of the `system` messages the membership triggers wrote while
/// the test set up its conversation (those may still be streaming when a test subscribes).
fn user_change(m: &Msg) -> bool {
    m.event == "postgres_changes" && m.payload["data"]["record"]["kind"] != "system"
}

#[tokio::test]
async fn changes_reach_members_only_insert_update_and_delete() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let a = db.create_user("Alice").await;
    let b = db.create_user("Bob").await;
    let c = db.create_user("Carol").await;
    let conv = support::conversation(&db, &[a, b]).await;
    let mut bob = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    let mut carol = Client::connect(gw.addr, &gw.anon_key, "2.0.0").await;
    let all = json!([
        {"event": "*", "schema": "public", "table": "messages"},
        {"event": "*", "schema": "public", "table": "message_reactions"}
    ]);
    bob.join_ok(
        "realtime:b",
        changes_payload(&gw.token_for(b, 600), all.clone()),
    )
    .await;
    carol
        .join_ok("realtime:c", changes_payload(&gw.token_for(c, 600), all))
        .await;

    let m: uuid::Uuid = db
        .as_user(a)
        .query_one("select (public.send_message($1, 'hi bob')).id", &[&conv])
        .await
        .get(0);
    db.as_user(a)
        .query("select public.react($1, '🎉')", &[&m])
        .await;
    db.as_user(a)
        .query("select public.unreact($1, '🎉')", &[&m])
        .await;
    db.as_user(a)
        .query("select public.edit_message($1, 'hi bob!')", &[&m])
        .await;

    let mut seen = Vec::new();
    while let Some(msg) = bob.try_recv(Duration::from_secs(3)).await {
        if !user_change(&msg) {
            continue;
        }
        let d = &msg.payload["data"];
        seen.push(format!(
            "{} {}",
            d["table"].as_str().unwrap(),
            d["type"].as_str().unwrap()
        ));
        if seen.len() == 4 {
            break;
        }
    }
    assert_eq!(
        seen,
        [
            "messages INSERT",
            "message_reactions INSERT",
            "message_reactions DELETE",
            "messages UPDATE"
        ]
    );
    assert!(
        carol.try_recv(Duration::from_millis(500)).await.is_none(),
        "the outsider receives nothing"
    );
}

#[tokio::test]
async fn a_delete_binding_gets_only_deletes_with_the_old_row_and_its_own_id() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let a = db.create_user("Alice").await;
    let b = db.create_user("Bob").await;
    let conv = support::conversation(&db, &[a, b]).await;
    let mut bob = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    let reply = bob
        .join_ok(
            "realtime:b",
            changes_payload(
                &gw.token_for(b, 600),
                json!([{"event": "DELETE", "schema": "public", "table": "message_reactions"}]),
            ),
        )
        .await;
    let id = reply.payload["response"]["postgres_changes"][0]["id"].clone();
    let m: uuid::Uuid = db
        .as_user(a)
        .query_one("select (public.send_message($1, 'hi bob')).id", &[&conv])
        .await
        .get(0);
    db.as_user(a)
        .query("select public.react($1, '🎉')", &[&m])
        .await;
    db.as_user(a)
        .query("select public.unreact($1, '🎉')", &[&m])
        .await;
    let msg = bob.recv_until(|m| m.event == "postgres_changes").await;
    assert_eq!(msg.payload["ids"], json!([id]));
    let data = &msg.payload["data"];
    assert_eq!(data["type"], "DELETE");
    assert_eq!(data["old_record"]["emoji"], "🎉");
    assert_eq!(data["old_record"]["message_id"], m.to_string());
    assert!(data.get("record").is_none(), "a DELETE carries no record");
    assert!(bob.try_recv(Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn an_insert_is_delivered_even_if_the_row_is_gone_by_the_time_it_streams() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let a = db.create_user("Alice").await;
    let b = db.create_user("Bob").await;
    let conv = support::conversation(&db, &[a, b]).await;
    let mut bob = Client::connect(gw.addr, &gw.anon_key, "2.0.0").await;
    bob.join_ok(
        "realtime:b",
        changes_payload(
            &gw.token_for(b, 600),
            json!([{"event": "INSERT", "schema": "public", "table": "messages"}]),
        ),
    )
    .await;
    // Insert and hard-delete in quick succession: by the time the insert is authorized the
    // live row no longer exists, so a live-row re-read would drop it.
    let m: uuid::Uuid = db
        .as_user(a)
        .query_one("select (public.send_message($1, 'blink')).id", &[&conv])
        .await
        .get(0);
    db.client
        .execute("delete from public.messages where id = $1", &[&m])
        .await
        .unwrap();
    let msg = bob.recv_until(user_change).await;
    assert_eq!(msg.payload["data"]["record"]["id"], m.to_string());
    assert_eq!(msg.payload["data"]["record"]["body"], "blink");
}

#[tokio::test]
async fn a_policy_created_in_sql_applies_to_the_next_change_without_a_restart() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let a = db.create_user("Alice").await;
    let b = db.create_user("Bob").await;
    let c = db.create_user("Carol").await;
    let conv = support::conversation(&db, &[a, b]).await;
    let mut carol = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    carol
        .join_ok(
            "realtime:c",
            changes_payload(
                &gw.token_for(c, 600),
                json!([{"event": "INSERT", "schema": "public", "table": "messages"}]),
            ),
        )
        .await;
    let send = |body: &'static str| {
        let db = &db;
        async move {
            db.as_user(a)
                .query("select public.send_message($1, $2)", &[&conv, &body])
                .await;
        }
    };
    send("before: private").await;
    assert!(
        carol.try_recv(Duration::from_millis(700)).await.is_none(),
        "Carol may not see it yet"
    );
    // A DBA publishes announcements to every signed-in user, in plain SQL.
    db.client
        .batch_execute(
            "create policy messages_announcements on public.messages for select \
             to authenticated using (body like 'ANNOUNCE:%')",
        )
        .await
        .unwrap();
    send("ANNOUNCE: hello world").await;
    send("after: still private").await;
    let msg = carol.recv_until(|m| m.event == "postgres_changes").await;
    assert_eq!(
        msg.payload["data"]["record"]["body"],
        "ANNOUNCE: hello world"
    );
    assert!(
        carol.try_recv(Duration::from_millis(700)).await.is_none(),
        "only the announcement"
    );
}

#[tokio::test]
async fn many_transactions_arrive_complete_and_in_commit_order() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let a = db.create_user("Alice").await;
    let b = db.create_user("Bob").await;
    let conv = support::conversation(&db, &[a, b]).await;
    let mut bob = Client::connect(gw.addr, &gw.anon_key, "2.0.0").await;
    bob.join_ok(
        "realtime:b",
        changes_payload(
            &gw.token_for(b, 600),
            json!([{"event": "INSERT", "schema": "public", "table": "messages",
                    "filter": format!("conversation_id=eq.{conv}")}]),
        ),
    )
    .await;
    for i in 0..200 {
        db.client
            .execute(
                "insert into public.messages (conversation_id, sender_id, body) values ($1, $2, $3)",
                &[&conv, &a, &format!("{i}")],
            )
            .await
            .unwrap();
    }
    for i in 0..200 {
        let msg = bob.recv_until(user_change).await;
        assert_eq!(msg.payload["data"]["record"]["body"], i.to_string());
    }
}

#[tokio::test]
async fn columns_the_subscriber_may_not_select_never_leave_the_gateway() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let a = db.create_user("Alice").await;
    let b = db.create_user("Bob").await;
    let mut bob = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    bob.join_ok(
        "realtime:b",
        changes_payload(
            &gw.token_for(b, 600),
            json!([{"event": "*", "schema": "public", "table": "conversations"}]),
        ),
    )
    .await;
    db.as_user(a)
        .query("select public.start_direct_conversation($1, 'hi')", &[&b])
        .await;
    let msg = bob.recv_until(|m| m.event == "postgres_changes").await;
    let text = msg.payload.to_string();
    assert!(!text.contains("direct_key"), "{text}");
    assert!(msg.payload["data"]["record"].get("kind").is_some());
}
