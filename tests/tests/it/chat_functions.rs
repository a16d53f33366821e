//! The chat RPCs, run as their callers: results, rules, races, and the negative cases.

use std::collections::HashSet;

use ripple_tests::{fresh_db, query_as, TestDb};
use serde_json::Value;
use uuid::Uuid;

async fn users(db: &TestDb, names: &[&str]) -> Vec<Uuid> {
    let mut out = Vec::new();
    for n in names {
        out.push(db.create_user(n).await);
    }
    out
}

async fn start_direct(db: &TestDb, a: Uuid, b: Uuid) -> Uuid {
    db.as_user(a)
        .query_one("select public.start_direct_conversation($1)", &[&b])
        .await
        .get(0)
}

async fn send(db: &TestDb, who: Uuid, conv: Uuid, body: &str) -> Uuid {
    db.as_user(who)
        .query_one("select (public.send_message($1, $2)).id", &[&conv, &body])
        .await
        .get(0)
}

async fn unread(db: &TestDb, who: Uuid) -> Value {
    db.as_user(who)
        .query_one("select public.unread_counts()", &[])
        .await
        .get(0)
}

#[tokio::test]
async fn start_direct_conversation_gets_or_creates_one_per_pair_from_either_side() {
    let db = fresh_db().await;
    let u = users(&db, &["A", "B", "C"]).await;
    let c1 = start_direct(&db, u[0], u[1]).await;
    let c2 = start_direct(&db, u[0], u[1]).await;
    let c3 = start_direct(&db, u[1], u[0]).await;
    assert_eq!(c1, c2);
    assert_eq!(c1, c3);
    let other = start_direct(&db, u[0], u[2]).await;
    assert_ne!(c1, other);
    let (code, _) = db
        .as_user(u[0])
        .query_err("select public.start_direct_conversation($1)", &[&u[0]])
        .await;
    assert_eq!(code, "22023", "no conversation with oneself");
    let (code, _) = db
        .as_user(u[0])
        .query_err(
            "select public.start_direct_conversation($1)",
            &[&Uuid::new_v4()],
        )
        .await;
    assert_eq!(code, "P0002", "the other user must exist");
    let (code, _) = db
        .as_anon()
        .query_err("select public.start_direct_conversation($1)", &[&u[1]])
        .await;
    assert_eq!(code, "42501");
}

#[tokio::test]
async fn concurrent_starts_by_both_users_make_one_conversation() {
    let db = fresh_db().await;
    let u = users(&db, &["A", "B"]).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (me, other) = if i % 2 == 0 {
            (u[0], u[1])
        } else {
            (u[1], u[0])
        };
        let url = db.url.clone();
        tasks.push(tokio::spawn(async move {
            let rows = query_as(
                &url,
                me,
                "select public.start_direct_conversation($1)",
                &[&other],
            )
            .await
            .unwrap();
            rows[0].get::<_, Uuid>(0)
        }));
    }
    let mut ids = HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids.len(), 1, "every caller got the same conversation");
    let n: i64 = db
        .client
        .query_one(
            "select count(*) from public.conversations where kind = 'direct'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let members: i64 = db
        .client
        .query_one("select count(*) from public.conversation_members", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(members, 2);
}

#[tokio::test]
async fn an_initial_message_is_sent_and_becomes_the_preview() {
    let db = fresh_db().await;
    let u = users(&db, &["A", "B"]).await;
    let conv: Uuid = db
        .as_user(u[0])
        .query_one(
            "select public.start_direct_conversation($1, 'hi there')",
            &[&u[1]],
        )
        .await
        .get(0);
    let row = db
        .as_user(u[1])
        .query_one(
            "select last_message_preview, last_message_id is not null from public.conversations where id = $1",
            &[&conv],
        )
        .await;
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("hi there"));
    assert!(row.get::<_, bool>(1));
    let later = send(&db, u[1], conv, "and a reply").await;
    let row = db
        .as_user(u[0])
        .query_one(
            "select last_message_preview, last_message_id from public.conversations where id = $1",
            &[&conv],
        )
        .await;
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("and a reply")
    );
    assert_eq!(row.get::<_, Option<Uuid>>(1), Some(later));
}

#[tokio::test]
async fn a_retry_with_the_same_client_id_returns_the_first_message() {
    let db = fresh_db().await;
    let u = users(&db, &["A", "B"]).await;
    let conv = start_direct(&db, u[0], u[1]).await;
    let sql =
        "select (m).id, (m).body from (select public.send_message($1, $2, client_id => 'c-1') m) s";
    let first = db.as_user(u[0]).query_one(sql, &[&conv, &"first"]).await;
    let retry = db.as_user(u[0]).query_one(sql, &[&conv, &"retry"]).await;
    assert_eq!(first.get::<_, Uuid>(0), retry.get::<_, Uuid>(0));
    assert_eq!(retry.get::<_, String>(1), "first");
    // Concurrent retries too.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let url = db.url.clone();
        let me = u[0];
        tasks.push(tokio::spawn(async move {
            let rows = query_as(
                &url,
                me,
                "select (public.send_message($1, 'x', client_id => 'c-2')).id",
                &[&conv],
            )
            .await
            .unwrap();
            rows[0].get::<_, Uuid>(0)
        }));
    }
    let mut ids = HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids.len(), 1);
    let n: i64 = db
        .client
        .query_one("select count(*) from public.messages", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "one message per client id");
    // The same client id from another user is another message.
    let other: Uuid = db
        .as_user(u[1])
        .query_one(
            "select (public.send_message($1, 'b', client_id => 'c-1')).id",
            &[&conv],
        )
        .await
        .get(0);
    assert_ne!(other, first.get::<_, Uuid>(0));
}

#[tokio::test]
async fn send_message_validates_its_arguments() {
    let db = fresh_db().await;
    let u = users(&db, &["A", "B", "C"]).await;
    let conv = start_direct(&db, u[0], u[1]).await;
    let other = start_direct(&db, u[0], u[2]).await;
    let elsewhere = send(&db, u[0], other, "elsewhere").await;
    let a = db.as_user(u[0]);
    let (code, _) = a
        .query_err("select public.send_message($1, '  ')", &[&conv])
        .await;
    assert_eq!(code, "22023", "empty text");
    let (code, _) = a
        .query_err("select public.send_message($1, 'pic', 'image')", &[&conv])
        .await;
    assert_eq!(code, "22023", "an image needs an attachment");
    let (code, _) = a
        .query_err("select public.send_message($1, 'x', 'sticker')", &[&conv])
        .await;
    assert_eq!(code, "22P02", "unknown kind");
    let (code, _) = a
        .query_err(
            "select public.send_message($1, 'x', reply_to_id => $2)",
            &[&conv, &elsewhere],
        )
        .await;
    assert_eq!(code, "22023", "a reply stays in its conversation");
    let long = "x".repeat(10_001);
    let (code, _) = a
        .query_err("select public.send_message($1, $2)", &[&conv, &long])
        .await;
    assert_eq!(code, "22023");
    let n: i64 = db
        .client
        .query_one(
            "select count(*) from public.messages where conversation_id = $1",
            &[&conv],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "nothing half-written");
    // And the good cases: an attachment message and a reply.
    let row = a
        .query_one(
            "select (m).kind::text, (m).attachment_filename, (m).attachment_size from \
             (select public.send_message($1, 'look', 'image', null, \
               '{\"url\":\"https://cdn.example/p.png\",\"filename\":\"p.png\",\"size\":1234,\"mime_type\":\"image/png\"}'::jsonb) m) s",
            &[&conv],
        )
        .await;
    assert_eq!(row.get::<_, String>(0), "image");
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("p.png"));
    assert_eq!(row.get::<_, Option<i64>>(2), Some(1234));
    let first = send(&db, u[1], conv, "question?").await;
    let reply: Option<Uuid> = a
        .query_one(
            "select (public.send_message($1, 'answer', reply_to_id => $2)).reply_to_id",
            &[&conv, &first],
        )
        .await
        .get(0);
    assert_eq!(reply, Some(first));
}

#[tokio::test]
async fn edits_are_allowed_to_the_sender_within_the_window_only() {
    let db = fresh_db().await;
    let u = users(&db, &["A", "B"]).await;
    let conv = start_direct(&db, u[0], u[1]).await;
    let m = send(&db, u[0], conv, "helo").await;
    let row = db
        .as_user(u[0])
        .query_one(
            "select (e).body, (e).edited_at is not null from (select public.edit_message($1, 'hello') e) s",
            &[&m],
        )
        .await;
    assert_eq!(row.get::<_, String>(0), "hello");
    assert!(row.get::<_, bool>(1), "edited_at is set");
    // Sixteen minutes later the window (15 minutes by default) has closed.
    db.client
        .execute(
            "update public.messages set created_at = now() - interval '16 minutes' where id = $1",
            &[&m],
        )
        .await
        .unwrap();
    let (code, msg) = db
        .as_user(u[0])
        .query_err("select public.edit_message($1, 'too late')", &[&m])
        .await;
    assert_eq!(code, "P0001", "{msg}");
    assert!(msg.contains("edit window"), "{msg}");
    // The window is a setting a DBA can change.
    db.client
        .execute(
            "update private.settings set message_edit_window = interval '1 hour'",
            &[],
        )
        .await
        .unwrap();
    db.as_user(u[0])
        .query("select public.edit_message($1, 'in time again')", &[&m])
        .await;
    let body: String = db
        .client
        .query_one("select body from public.messages where id = $1", &[&m])
        .await
        .unwrap()
        .get(0);
    assert_eq!(body, "in time again");
}

#[tokio::test]
async fn delete_is_soft_and_final() {
    let db = fresh_db().await;
    let u = users(&db, &["A", "B"]).await;
    let conv = start_direct(&db, u[0], u[1]).await;
    let m: Uuid = db
        .as_user(u[0])
        .query_one(
            "select (public.send_message($1, 'oops', 'file', null, '{\"url\":\"https://x/y.pdf\",\"filename\":\"y.pdf\"}'::jsonb)).id",
            &[&conv],
        )
        .await
        .get(0);
    db.as_user(u[0])
        .query("select public.delete_message($1)", &[&m])
        .await;
    let row = db
        .as_user(u[1])
        .query_one(
            "select body, attachment_url, attachment_filename, deleted_at is not null from public.messages where id = $1",
            &[&m],
        )
        .await;
    assert_eq!(row.get::<_, Option<String>>(0), None);
    assert_eq!(row.get::<_, Option<String>>(1), None);
    assert_eq!(row.get::<_, Option<String>>(2), None);
    assert!(row.get::<_, bool>(3), "the row stays, marked deleted");
    let preview: Option<String> = db
        .as_user(u[1])
        .query_one(
            "select last_message_preview from public.conversations where id = $1",
            &[&conv],
        )
        .await
        .get(0);
    assert_eq!(preview.as_deref(), Some("Message deleted"));
    let (code, _) = db
        .as_user(u[0])
        .query_err("select public.edit_message($1, 'resurrect')", &[&m])
        .await;
    assert_eq!(code, "P0001", "a deleted message never changes again");
    let (code, _) = db
        .as_user(u[1])
        .query_err("select public.react($1, 'x')", &[&m])
        .await;
    assert_eq!(code, "P0001");
    let (code, _) = db
        .as_user(u[0])
        .query_err("select public.delete_message($1)", &[&Uuid::new_v4()])
        .await;
    assert_eq!(code, "P0002");
}

#[tokio::test]
async fn unread_counts_follow_sends_reads_and_deletes() {
    let db = fresh_db().await;
    let u = users(&db, &["A", "B", "C"]).await;
    let ab = start_direct(&db, u[0], u[1]).await;
    let cb = start_direct(&db, u[2], u[1]).await;
    assert_eq!(
        unread(&db, u[1]).await,
        serde_json::json!({"total_unread": 0, "by_conversation": []})
    );
    let m1 = send(&db, u[0], ab, "one").await;
    let _m2 = send(&db, u[0], ab, "two").await;
    let m3 = send(&db, u[2], cb, "three").await;
    send(&db, u[1], ab, "bob's own message does not count").await;
    let counts = unread(&db, u[1]).await;
    assert_eq!(counts["total_unread"], 3);
    let by: Vec<(String, i64)> = counts["by_conversation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["conversation_id"].as_str().unwrap().to_string(),
                e["unread_count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(by.contains(&(ab.to_string(), 2)), "{by:?}");
    assert!(by.contains(&(cb.to_string(), 1)), "{by:?}");
    // Alice has nothing unread: Bob's message came after hers, and she has not read it.
    assert_eq!(unread(&db, u[0]).await["total_unread"], 1);
    // Reading up to the first message leaves one unread in ab.
    db.as_user(u[1])
        .query("select public.mark_conversation_read($1, $2)", &[&ab, &m1])
        .await;
    assert_eq!(unread(&db, u[1]).await["total_unread"], 2);
    // A deleted message stops counting.
    db.as_user(u[2])
        .query("select public.delete_message($1)", &[&m3])
        .await;
    assert_eq!(unread(&db, u[1]).await["total_unread"], 1);
    // Reading everything clears it; reading never moves backwards.
    db.as_user(u[1])
        .query("select public.mark_conversation_read($1)", &[&ab])
        .await;
    db.as_user(u[1])
        .query("select public.mark_conversation_read($1, $2)", &[&ab, &m1])
        .await;
    assert_eq!(unread(&db, u[1]).await["total_unread"], 0);
    // An outsider cannot mark someone else's conversation.
    let (code, _) = db
        .as_user(u[2])
        .query_err("select public.mark_conversation_read($1)", &[&ab])
        .await;
    assert_eq!(code, "P0002");
}

#[tokio::test]
async fn pages_return_each_message_exactly_once_while_others_are_sending() {
    let db = fresh_db().await;
    let u = users(&db, &["A", "B"]).await;
    let conv = start_direct(&db, u[0], u[1]).await;
    // 120 messages, several per transaction so created_at ties are exercised.
    for batch in 0..30 {
        let mut c = db.connect().await;
        let tx = c.transaction().await.unwrap();
        ripple::db::set_request_claims(
            &tx,
            "authenticated",
            &serde_json::json!({"sub": u[0].to_string(), "role": "authenticated"}).to_string(),
        )
        .await
        .unwrap();
        for i in 0..4 {
            tx.execute(
                "select public.send_message($1, $2)",
                &[&conv, &format!("m{}", batch * 4 + i)],
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }
    // Bob keeps sending while Alice pages back through history.
    let url = db.url.clone();
    let bob = u[1];
    let writer = tokio::spawn(async move {
        for i in 0..60 {
            query_as(
                &url,
                bob,
                "select public.send_message($1, $2)",
                &[&conv, &format!("live{i}")],
            )
            .await
            .unwrap();
        }
    });
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<Uuid> = None;
    let mut first_page = true;
    loop {
        let rows = db
            .as_user(u[0])
            .query("select public.get_messages($1, 7, $2)", &[&conv, &cursor])
            .await;
        if rows.is_empty() {
            break;
        }
        for r in &rows {
            let v: Value = r.get(0);
            seen.push(v["body"].as_str().unwrap().to_string());
            cursor = Some(v["id"].as_str().unwrap().parse().unwrap());
        }
        if first_page {
            first_page = false;
        }
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    let older: Vec<&String> = seen.iter().filter(|b| b.starts_with('m')).collect();
    let unique: HashSet<&String> = older.iter().copied().collect();
    assert_eq!(older.len(), 120, "every pre-existing message once");
    assert_eq!(unique.len(), 120, "no duplicates across pages");
    let all_unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(
        all_unique.len(),
        seen.len(),
        "no message twice, live ones included"
    );
    // Newest first within the historical messages.
    let positions: Vec<usize> = older
        .iter()
        .map(|b| b[1..].parse::<usize>().unwrap())
        .collect();
    let mut sorted = positions.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(positions, sorted);
    // Cursor validation and the outsider.
    let carol = db.create_user("C").await;
    let (code, _) = db
        .as_user(carol)
        .query_err("select public.get_messages($1)", &[&conv])
        .await;
    assert_eq!(code, "P0002");
    let (code, _) = db
        .as_user(u[0])
        .query_err(
            "select public.get_messages($1, 10, $2)",
            &[&conv, &Uuid::new_v4()],
        )
        .await;
    assert_eq!(code, "22023");
}

#[tokio::test]
async fn get_messages_carries_sender_and_reactions_and_hides_others_client_ids() {
    let db = fresh_db().await;
    let u = users(&db, &["Ann", "Ben"]).await;
    let conv = start_direct(&db, u[0], u[1]).await;
    let m: Uuid = db
        .as_user(u[0])
        .query_one(
            "select (public.send_message($1, 'hey', client_id => 'secret-key')).id",
            &[&conv],
        )
        .await
        .get(0);
    db.as_user(u[1])
        .query("select public.react($1, '❤')", &[&m])
        .await;
    db.as_user(u[0])
        .query("select public.react($1, '❤')", &[&m])
        .await;
    let as_ben: Value = db
        .as_user(u[1])
        .query_one("select public.get_messages($1)", &[&conv])
        .await
        .get(0);
    assert_eq!(as_ben["sender_display_name"], "Ann");
    assert_eq!(as_ben["client_id"], Value::Null);
    assert_eq!(
        as_ben["reactions"],
        serde_json::json!([{"emoji": "❤", "count": 2, "mine": true}])
    );
    let as_ann: Value = db
        .as_user(u[0])
        .query_one("select public.get_messages($1)", &[&conv])
        .await
        .get(0);
    assert_eq!(as_ann["client_id"], "secret-key");
}

#[tokio::test]
async fn forwarding_needs_membership_on_both_sides() {
    let db = fresh_db().await;
    let u = users(&db, &["A", "B", "C"]).await;
    let ab = start_direct(&db, u[0], u[1]).await;
    let ac = start_direct(&db, u[0], u[2]).await;
    let m = send(&db, u[1], ab, "worth sharing").await;
    let fwd = db
        .as_user(u[0])
        .query_one(
            "select (f).conversation_id, (f).forwarded_from_id, (f).body, (f).sender_id \
             from (select public.forward_message($1, $2) f) s",
            &[&m, &ac],
        )
        .await;
    assert_eq!(fwd.get::<_, Uuid>(0), ac);
    assert_eq!(fwd.get::<_, Option<Uuid>>(1), Some(m));
    assert_eq!(fwd.get::<_, String>(2), "worth sharing");
    assert_eq!(
        fwd.get::<_, Uuid>(3),
        u[0],
        "forwarded in the forwarder's name"
    );
    // B cannot forward into A and C's conversation; C cannot forward what C cannot see.
    let (code, _) = db
        .as_user(u[1])
        .query_err("select public.forward_message($1, $2)", &[&m, &ac])
        .await;
    assert_eq!(code, "42501");
    let (code, _) = db
        .as_user(u[2])
        .query_err("select public.forward_message($1, $2)", &[&m, &ac])
        .await;
    assert_eq!(code, "P0002");
}

#[tokio::test]
async fn search_finds_only_messages_in_the_callers_conversations() {
    let db = fresh_db().await;
    let u = users(&db, &["A", "B", "C"]).await;
    let ab = start_direct(&db, u[0], u[1]).await;
    let bc = start_direct(&db, u[1], u[2]).await;
    send(&db, u[0], ab, "the quarterly budget is ready").await;
    send(&db, u[2], bc, "budgets for next year").await;
    send(&db, u[0], ab, "lunch?").await;
    let bodies = |rows: Vec<tokio_postgres::Row>| -> Vec<String> {
        rows.iter().map(|r| r.get::<_, String>("body")).collect()
    };
    let a = bodies(
        db.as_user(u[0])
            .query("select * from public.search_messages('budget')", &[])
            .await,
    );
    assert_eq!(a, vec!["the quarterly budget is ready"]);
    let b = bodies(
        db.as_user(u[1])
            .query("select * from public.search_messages('budget')", &[])
            .await,
    );
    assert_eq!(b.len(), 2, "stemming matches budget and budgets: {b:?}");
    let c = bodies(
        db.as_user(u[2])
            .query("select * from public.search_messages('quarterly')", &[])
            .await,
    );
    assert!(c.is_empty(), "C is not in A and B's conversation");
    // Junk queries are not errors.
    let junk = db
        .as_user(u[0])
        .query("select * from public.search_messages('&&|!(')", &[])
        .await;
    assert!(junk.is_empty());
}

#[tokio::test]
async fn list_conversations_shows_previews_unread_counts_and_the_other_member() {
    let db = fresh_db().await;
    let u = users(&db, &["Amy", "Bo", "Cy"]).await;
    let ab = start_direct(&db, u[0], u[1]).await;
    let group: Uuid = db
        .as_user(u[2])
        .query_one(
            "select public.create_group_conversation('Trip', $1)",
            &[&vec![u[0]]],
        )
        .await
        .get(0);
    send(&db, u[1], ab, "first").await;
    send(&db, u[2], group, "newest").await;
    let rows = db
        .as_user(u[0])
        .query("select * from public.list_conversations()", &[])
        .await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get::<_, Uuid>("id"), group, "most recent first");
    assert_eq!(rows[0].get::<_, i64>("unread_count"), 1);
    assert_eq!(rows[0].get::<_, i64>("member_count"), 2);
    assert_eq!(rows[1].get::<_, Uuid>("id"), ab);
    let other: Value = rows[1].get("other_member");
    assert_eq!(other["display_name"], "Bo");
    assert_eq!(
        rows[1]
            .get::<_, Option<String>>("last_message_preview")
            .as_deref(),
        Some("first")
    );
    // Archiving moves it to the archived list, for Amy only.
    db.as_user(u[0])
        .query("select public.set_archived($1, true)", &[&ab])
        .await;
    let active = db
        .as_user(u[0])
        .query("select id from public.list_conversations()", &[])
        .await;
    assert_eq!(active.len(), 1);
    let archived = db
        .as_user(u[0])
        .query(
            "select id from public.list_conversations(archived => true)",
            &[],
        )
        .await;
    assert_eq!(archived.len(), 1);
    assert_eq!(archived[0].get::<_, Uuid>(0), ab);
    let bo = db
        .as_user(u[1])
        .query("select id from public.list_conversations()", &[])
        .await;
    assert_eq!(bo.len(), 1, "Bo did not archive it");
    // Paging with `before`.
    let page2 = db
        .as_user(u[2])
        .query(
            "select id from public.list_conversations(lim => 1, before => now() + interval '1 day')",
            &[],
        )
        .await;
    assert_eq!(page2.len(), 1);
    // Cy, not in the direct chat, sees only the group.
    let cy = db
        .as_user(u[2])
        .query("select id from public.list_conversations()", &[])
        .await;
    assert_eq!(cy.len(), 1);
    assert_eq!(cy[0].get::<_, Uuid>(0), group);
    let (code, _) = db
        .as_user(u[2])
        .query_err("select public.set_archived($1, true)", &[&ab])
        .await;
    assert_eq!(code, "P0002");
}

#[tokio::test]
async fn message_read_by_lists_group_members_who_have_read_it() {
    let db = fresh_db().await;
    let u = users(&db, &["Ada", "Bea", "Cal", "Dee"]).await;
    let g: Uuid = db
        .as_user(u[0])
        .query_one(
            "select public.create_group_conversation('G', $1)",
            &[&vec![u[1], u[2]]],
        )
        .await
        .get(0);
    let m = send(&db, u[0], g, "read me").await;
    db.as_user(u[1])
        .query("select public.mark_conversation_read($1)", &[&g])
        .await;
    let readers: Vec<Uuid> = db
        .as_user(u[0])
        .query("select user_id from public.message_read_by($1)", &[&m])
        .await
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(readers, vec![u[1]]);
    let outsider = db
        .as_user(u[3])
        .query("select user_id from public.message_read_by($1)", &[&m])
        .await;
    assert!(outsider.is_empty(), "Dee is not in the group");
}

#[tokio::test]
async fn group_membership_changes_write_system_messages() {
    let db = fresh_db().await;
    let u = users(&db, &["Ada", "Bea", "Cal"]).await;
    let g: Uuid = db
        .as_user(u[0])
        .query_one(
            "select public.create_group_conversation('Book club', $1)",
            &[&vec![u[1]]],
        )
        .await
        .get(0);
    db.as_user(u[0])
        .query(
            "select public.add_conversation_member($1, $2)",
            &[&g, &u[2]],
        )
        .await;
    db.as_user(u[0])
        .query(
            "select public.remove_conversation_member($1, $2)",
            &[&g, &u[1]],
        )
        .await;
    let bodies: Vec<String> = db
        .as_user(u[0])
        .query(
            "select body from public.messages where conversation_id = $1 and kind = 'system' order by created_at, id",
            &[&g],
        )
        .await
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        bodies.contains(&"Ada created the group \"Book club\"".to_string()),
        "{bodies:?}"
    );
    assert!(bodies.contains(&"Ada added Cal".to_string()), "{bodies:?}");
    assert!(
        bodies.contains(&"Ada removed Bea".to_string()),
        "{bodies:?}"
    );
    // System messages count as nobody's unread and cannot be edited.
    assert_eq!(unread(&db, u[2]).await["total_unread"], 0);
    let sys: Uuid = db
        .client
        .query_one(
            "select id from public.messages where conversation_id = $1 and kind = 'system' limit 1",
            &[&g],
        )
        .await
        .unwrap()
        .get(0);
    let (code, _) = db
        .as_user(u[0])
        .query_err("select public.edit_message($1, 'rewrite history')", &[&sys])
        .await;
    assert!(code == "42501" || code == "P0002", "{code}");
}

#[tokio::test]
async fn updated_at_is_maintained() {
    let db = fresh_db().await;
    let u = users(&db, &["A"]).await;
    db.client
        .execute(
            "update public.profiles set updated_at = now() - interval '1 day' where id = $1",
            &[&u[0]],
        )
        .await
        .unwrap();
    db.as_user(u[0])
        .query(
            "update public.profiles set display_name = 'Renamed' where id = $1",
            &[&u[0]],
        )
        .await;
    let fresh: bool = db
        .client
        .query_one(
            "select updated_at > now() - interval '1 minute' from public.profiles where id = $1",
            &[&u[0]],
        )
        .await
        .unwrap()
        .get(0);
    assert!(fresh);
}
