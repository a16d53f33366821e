//! The features the seeds planned: pinned conversations, delivery receipts and message
//! status, bans, chat export. Each with the caller who may not.

use ripple_tests::{fresh_db, TestDb};
use serde_json::Value;
use uuid::Uuid;

async fn group(db: &TestDb, owner: Uuid, members: &[Uuid]) -> Uuid {
    db.as_user(owner)
        .query_one(
            "select public.create_group_conversation('G', $1)",
            &[&members.to_vec()],
        )
        .await
        .get(0)
}

async fn send(db: &TestDb, who: Uuid, conv: Uuid, body: &str) -> Uuid {
    db.as_user(who)
        .query_one("select (public.send_message($1, $2)).id", &[&conv, &body])
        .await
        .get(0)
}

async fn status(db: &TestDb, who: Uuid, m: Uuid) -> Value {
    db.as_user(who)
        .query_one("select public.message_status($1)", &[&m])
        .await
        .get::<_, Option<Value>>(0)
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn pinned_conversations_list_first_for_their_member_only() {
    let db = fresh_db().await;
    let a = db.create_user("A").await;
    let b = db.create_user("B").await;
    let c = db.create_user("C").await;
    let older = group(&db, a, &[b]).await;
    let newer = group(&db, a, &[c]).await;
    send(&db, a, older, "old").await;
    send(&db, a, newer, "new").await;
    let order = |rows: Vec<tokio_postgres::Row>| -> Vec<Uuid> {
        rows.iter().map(|r| r.get::<_, Uuid>("id")).collect()
    };
    let q = "select id from public.list_conversations()";
    assert_eq!(order(db.as_user(a).query(q, &[]).await), vec![newer, older]);
    db.as_user(a)
        .query("select public.set_pinned($1, true)", &[&older])
        .await;
    assert_eq!(order(db.as_user(a).query(q, &[]).await), vec![older, newer]);
    // B's list is B's own.
    let pinned_for_b: Option<chrono::DateTime<chrono::Utc>> = db
        .as_user(b)
        .query_one("select pinned_at from public.list_conversations()", &[])
        .await
        .get(0);
    assert_eq!(pinned_for_b, None);
    let (code, _) = db
        .as_user(c)
        .query_err("select public.set_pinned($1, true)", &[&older])
        .await;
    assert_eq!(code, "P0002", "C is not in that conversation");
    // Nobody pins for someone else: the owner's row is not B's to update...
    let touched = db
        .as_user(b)
        .query(
            "update public.conversation_members set pinned_at = null where conversation_id = $1 and user_id = $2 returning user_id",
            &[&older, &a],
        )
        .await;
    assert!(touched.is_empty());
    // ...and the owner, who may update members' roles, may not pin for them.
    let (code, _) = db
        .as_user(a)
        .query_err(
            "update public.conversation_members set pinned_at = now() where conversation_id = $1 and user_id = $2",
            &[&older, &b],
        )
        .await;
    assert_eq!(code, "42501");
    db.as_user(a)
        .query("select public.set_pinned($1, false)", &[&older])
        .await;
    assert_eq!(order(db.as_user(a).query(q, &[]).await), vec![newer, older]);
}

#[tokio::test]
async fn a_message_goes_from_sent_to_delivered_to_read() {
    let db = fresh_db().await;
    let a = db.create_user("A").await;
    let b = db.create_user("B").await;
    let c = db.create_user("C").await;
    let outsider = db.create_user("O").await;
    let g = group(&db, a, &[b, c]).await;
    let m = send(&db, a, g, "status?").await;
    assert_eq!(status(&db, a, m).await["status"], "sent");
    assert_eq!(status(&db, a, m).await["recipients"], 2);
    db.as_user(b)
        .query("select public.mark_conversation_delivered($1)", &[&g])
        .await;
    let s = status(&db, a, m).await;
    assert_eq!(
        (s["status"].as_str(), s["delivered"].as_i64()),
        (Some("sent"), Some(1))
    );
    // C reads without a separate delivery ack: reading implies delivery.
    db.as_user(c)
        .query("select public.mark_conversation_read($1)", &[&g])
        .await;
    assert_eq!(status(&db, a, m).await["status"], "delivered");
    db.as_user(b)
        .query("select public.mark_conversation_read($1)", &[&g])
        .await;
    let s = status(&db, a, m).await;
    assert_eq!(
        (s["status"].as_str(), s["read"].as_i64()),
        (Some("read"), Some(2))
    );
    // The outsider learns nothing, not even that the message exists.
    assert_eq!(status(&db, outsider, m).await, Value::Null);
    let (code, _) = db
        .as_user(outsider)
        .query_err("select public.mark_conversation_delivered($1)", &[&g])
        .await;
    assert_eq!(code, "P0002");
}

#[tokio::test]
async fn a_banned_user_is_removed_and_cannot_be_added_back_until_unbanned() {
    let db = fresh_db().await;
    let owner = db.create_user("Owner").await;
    let admin = db.create_user("Admin").await;
    let member = db.create_user("Member").await;
    let troll = db.create_user("Troll").await;
    let g = group(&db, owner, &[admin, member, troll]).await;
    db.as_user(owner)
        .query(
            "update public.conversation_members set role = 'admin' where conversation_id = $1 and user_id = $2",
            &[&g, &admin],
        )
        .await;
    // A plain member cannot ban; nobody bans the owner.
    let (code, _) = db
        .as_user(member)
        .query_err("select public.ban_member($1, $2)", &[&g, &troll])
        .await;
    assert_eq!(code, "42501");
    let (code, _) = db
        .as_user(admin)
        .query_err("select public.ban_member($1, $2)", &[&g, &owner])
        .await;
    assert_eq!(code, "42501");
    db.as_user(admin)
        .query("select public.ban_member($1, $2, 'spam')", &[&g, &troll])
        .await;
    let still_member: bool = db
        .client
        .query_one(
            "select exists (select 1 from public.conversation_members where conversation_id = $1 and user_id = $2)",
            &[&g, &troll],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!still_member);
    let (code, _) = db
        .as_user(owner)
        .query_err(
            "select public.add_conversation_member($1, $2)",
            &[&g, &troll],
        )
        .await;
    assert_eq!(code, "42501", "a banned user is not added back");
    // Who sees the ban: admins and the banned user, not other members.
    let seen = |who: Uuid| {
        let db = &db;
        async move {
            db.as_user(who)
                .query_one("select count(*) from public.conversation_bans", &[])
                .await
                .get::<_, i64>(0)
        }
    };
    assert_eq!(seen(owner).await, 1);
    assert_eq!(seen(troll).await, 1);
    assert_eq!(seen(member).await, 0);
    let (code, _) = db
        .as_user(member)
        .query_err("select public.unban_member($1, $2)", &[&g, &troll])
        .await;
    assert_eq!(
        code, "P0002",
        "a member cannot see, let alone lift, the ban"
    );
    db.as_user(owner)
        .query("select public.unban_member($1, $2)", &[&g, &troll])
        .await;
    db.as_user(owner)
        .query(
            "select public.add_conversation_member($1, $2)",
            &[&g, &troll],
        )
        .await;
}

#[tokio::test]
async fn export_gives_members_the_whole_conversation_and_outsiders_nothing() {
    let db = fresh_db().await;
    let a = db.create_user("Ann").await;
    let b = db.create_user("Ben").await;
    let outsider = db.create_user("Olive").await;
    let g = group(&db, a, &[b]).await;
    let m1 = send(&db, a, g, "first").await;
    send(&db, b, g, "second").await;
    db.as_user(b)
        .query("select public.react($1, '👍')", &[&m1])
        .await;
    let doc: Value = db
        .as_user(b)
        .query_one("select public.export_conversation($1)", &[&g])
        .await
        .get(0);
    assert_eq!(doc["conversation"]["id"], g.to_string());
    assert_eq!(doc["members"].as_array().unwrap().len(), 2);
    let bodies: Vec<&str> = doc["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] != "system")
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["first", "second"], "oldest first");
    let first = doc["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == m1.to_string())
        .unwrap();
    assert_eq!(first["reactions"][0]["emoji"], "👍");
    let (code, _) = db
        .as_user(outsider)
        .query_err("select public.export_conversation($1)", &[&g])
        .await;
    assert_eq!(code, "P0002");
}
