//! The chat database at scale (schema V5): unread counts from counters stay exactly the V4
//! answers (messages after the read point, not one's own, not system, not deleted) through
//! edits, soft and hard deletes, retries, members joining late, leaving and coming back, in
//! a 1,000-member group; outsiders see and change nothing; a message writes one member row;
//! RLS reads use indexes and a hashed membership set; and a database seeded at schema V4
//! migrates to V5 with every count unchanged.

use ripple_tests::{fresh_db, TestDb};
use serde_json::Value;
use uuid::Uuid;

/// Installs the V4 implementation (schema `v4ref`) beside the current one.
async fn with_reference(db: &TestDb) {
    db.client
        .batch_execute(ripple_tests::v4_reference::SQL)
        .await
        .expect("create the V4 reference functions");
}

async fn new_users(db: &TestDb, n: i64) -> Vec<Uuid> {
    db.client
        .query(
            "insert into public.profiles (id, display_name)
             select gen_random_uuid(), 'user ' || g from generate_series(1, $1::int8) g returning id",
            &[&n],
        )
        .await
        .expect("users")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn send(db: &TestDb, who: Uuid, conv: Uuid, body: &str) -> Uuid {
    db.as_user(who)
        .query_one("select (public.send_message($1, $2)).id", &[&conv, &body])
        .await
        .get(0)
}

/// Asserts that every user's unread counts (unread_counts() and list_conversations()) equal
/// the V4 implementation's, and returns the users' totals.
async fn assert_exact(db: &TestDb, users: &[Uuid], step: &str) -> Vec<i64> {
    let mut totals = Vec::new();
    for u in users {
        let row = db
            .as_user(*u)
            .query_one(
                "select public.unread_counts(), v4ref.unread_counts(),
                        (select coalesce(jsonb_object_agg(id, unread_count), '{}')
                           from public.list_conversations(false, 200)),
                        (select coalesce(jsonb_object_agg(id, unread_count), '{}')
                           from v4ref.list_conversations(false, 200))",
                &[],
            )
            .await;
        let (new, old): (Value, Value) = (row.get(0), row.get(1));
        assert_eq!(new, old, "{step}: unread_counts() of {u}");
        let (new_list, old_list): (Value, Value) = (row.get(2), row.get(3));
        assert_eq!(new_list, old_list, "{step}: list_conversations() of {u}");
        totals.push(new["total_unread"].as_i64().unwrap());
    }
    totals
}

fn unread_in(counts: &Value, conv: Uuid) -> i64 {
    counts["by_conversation"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["conversation_id"] == conv.to_string())
        .map(|e| e["unread_count"].as_i64().unwrap())
        .unwrap_or(0)
}

async fn unread_counts(db: &TestDb, who: Uuid) -> Value {
    db.as_user(who)
        .query_one("select public.unread_counts()", &[])
        .await
        .get(0)
}

/// A group of `size` members (the first is the owner) made by create_group_conversation.
async fn big_group(db: &TestDb, size: i64) -> (Uuid, Vec<Uuid>) {
    let users = new_users(db, size).await;
    let members: Vec<Uuid> = users[1..].to_vec();
    let conv: Uuid = db
        .as_user(users[0])
        .query_one(
            "select public.create_group_conversation('Everyone', $1)",
            &[&members],
        )
        .await
        .get(0);
    (conv, users)
}

#[tokio::test]
async fn unread_stays_exact_in_a_large_group_through_edits_deletes_joins_and_leaves() {
    let db = fresh_db().await;
    with_reference(&db).await;
    let (conv, users) = big_group(&db, 1000).await;
    let (owner, a, b, returning, quiet) = (users[0], users[1], users[2], users[3], users[4]);
    let late = new_users(&db, 1).await[0];
    let direct: Uuid = db
        .as_user(a)
        .query_one("select public.start_direct_conversation($1, 'hi b')", &[&b])
        .await
        .get(0);
    let watched = [owner, a, b, returning, quiet, late];
    assert_eq!(
        assert_exact(&db, &watched, "created").await,
        vec![0, 0, 1, 0, 0, 0]
    );

    // Messages from several members, and a's read point in the middle of them.
    let a1 = send(&db, a, conv, "a one").await;
    let b1 = send(&db, b, conv, "b one").await;
    let b2 = send(&db, b, conv, "b two").await;
    send(&db, owner, conv, "owner one").await;
    let a2 = send(&db, a, conv, "a two").await;
    let b3 = send(&db, b, conv, "b three").await;
    send(&db, b, direct, "hi a").await;
    db.as_user(a)
        .query(
            "select public.mark_conversation_read($1, $2)",
            &[&conv, &b1],
        )
        .await;
    let t = assert_exact(&db, &watched, "sends and a read point").await;
    // a: b2, owner one, b3 in the group (a2 is a's own) + "hi a" in the direct chat.
    assert_eq!(t[1], 4);
    assert_eq!(unread_in(&unread_counts(&db, quiet).await, conv), 6);

    // Edits change nothing.
    db.as_user(b)
        .query("select public.edit_message($1, 'b two, edited')", &[&b2])
        .await;
    assert_exact(&db, &watched, "an edit").await;

    // Soft deletes: b deletes a message after a's read point, the owner deletes a's own
    // message, b deletes one before a's read point.
    db.as_user(b)
        .query("select public.delete_message($1)", &[&b3])
        .await;
    db.as_user(owner)
        .query("select public.delete_message($1)", &[&a2])
        .await;
    db.as_user(b)
        .query("select public.delete_message($1)", &[&b1])
        .await;
    let t = assert_exact(&db, &watched, "soft deletes").await;
    assert_eq!(t[1], 3, "a: b2 and owner one in the group, hi a");

    // Hard deletes (service_role, a DBA): before a's read point, after it, and a message
    // already soft-deleted.
    let b4 = send(&db, b, conv, "b four").await;
    send(&db, b, conv, "b five").await;
    for id in [a1, b4, b3] {
        db.client
            .execute("delete from public.messages where id = $1", &[&id])
            .await
            .unwrap();
    }
    let t = assert_exact(&db, &watched, "hard deletes").await;
    assert_eq!(t[1], 4, "a: b2, owner one, b5, hi a");

    // A retry with the same client_id is one message, for the counts too.
    for _ in 0..2 {
        db.as_user(a)
            .query(
                "select public.send_message($1, 'once', client_id => 'retry-1')",
                &[&conv],
            )
            .await;
    }
    assert_exact(&db, &watched, "a retried send").await;
    assert_eq!(
        unread_in(&unread_counts(&db, quiet).await, conv),
        4,
        "b two, owner one, b five, once: the rest were deleted"
    );

    // A member sends, leaves (a system message) and is added back: their earlier messages
    // stay their own; with no read point, everything else is unread, as in V4.
    send(&db, returning, conv, "r one").await;
    send(&db, returning, conv, "r two").await;
    db.as_user(returning)
        .query("select public.leave_conversation($1)", &[&conv])
        .await;
    assert_exact(&db, &watched, "a member left").await;
    db.as_user(owner)
        .query(
            "select public.add_conversation_member($1, $2)",
            &[&conv, &returning],
        )
        .await;
    // And a member joins late.
    db.as_user(owner)
        .query(
            "select public.add_conversation_member($1, $2)",
            &[&conv, &late],
        )
        .await;
    let t = assert_exact(&db, &watched, "a member came back, another joined late").await;
    assert_eq!(t[5], t[4], "late and quiet have read nothing");
    assert!(
        t[3] < t[4],
        "the returning member's own messages are not unread"
    );

    // A read point set by a client's own UPDATE (REST) rather than the RPC.
    db.as_user(a)
        .query(
            "update public.conversation_members set last_read_at = (select created_at from public.messages where id = $2)
              where conversation_id = $1 and user_id = (select auth.uid())",
            &[&conv, &b2],
        )
        .await;
    assert_exact(&db, &watched, "a read point written directly").await;

    // Own messages after the read point, then reading to the newest.
    send(&db, a, conv, "a three").await;
    send(&db, b, conv, "b six").await;
    assert_exact(&db, &watched, "more sends").await;
    db.as_user(a)
        .query("select public.mark_conversation_read($1)", &[&conv])
        .await;
    db.as_user(a)
        .query("select public.mark_conversation_read($1)", &[&direct])
        .await;
    let t = assert_exact(&db, &watched, "a read everything").await;
    assert_eq!(t[1], 0);
    // A member removed by the owner has no counts for the group any more.
    db.as_user(owner)
        .query(
            "select public.remove_conversation_member($1, $2)",
            &[&conv, &quiet],
        )
        .await;
    let t = assert_exact(&db, &watched, "a member was removed").await;
    assert_eq!(t[4], 0);
}

#[tokio::test]
async fn a_message_writes_the_conversation_and_the_senders_member_row_only() {
    let db = fresh_db().await;
    let (conv, users) = big_group(&db, 1000).await;
    // A fresh connection: a backend's transaction statistics also hold its earlier
    // transactions' until they are flushed.
    let mut client = db.connect().await;
    let tx = client.transaction().await.unwrap();
    ripple::db::set_request_claims(
        &tx,
        "authenticated",
        &serde_json::json!({"sub": users[1].to_string(), "role": "authenticated"}).to_string(),
    )
    .await
    .unwrap();
    tx.query("select public.send_message($1, 'to everyone')", &[&conv])
        .await
        .unwrap();
    tx.batch_execute("reset role").await.unwrap();
    let written: Vec<(String, i64, i64, i64)> = tx
        .query(
            "select relname::text, n_tup_ins, n_tup_upd, n_tup_del from pg_stat_xact_user_tables
              where n_tup_ins + n_tup_upd + n_tup_del > 0 order by relname",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    tx.commit().await.unwrap();
    assert_eq!(
        written,
        vec![
            ("conversation_members".into(), 0, 1, 0),
            ("conversations".into(), 0, 1, 0),
            ("messages".into(), 1, 0, 0),
        ],
        "one message into a 1,000-member group: its row, the conversation's, the sender's"
    );
}

#[tokio::test]
async fn outsiders_see_no_counters_and_no_one_writes_them() {
    let db = fresh_db().await;
    let (conv, users) = big_group(&db, 50).await;
    let (owner, member) = (users[0], users[1]);
    let outsider = new_users(&db, 1).await[0];
    send(&db, member, conv, "secret plans number 42").await;
    send(&db, owner, conv, "more secret plans").await;

    let o = db.as_user(outsider);
    assert_eq!(
        o.query_one("select public.unread_counts()", &[])
            .await
            .get::<_, Value>(0),
        serde_json::json!({"total_unread": 0, "by_conversation": []})
    );
    assert!(o
        .query("select * from public.list_conversations()", &[])
        .await
        .is_empty());
    assert!(o
        .query("select * from public.search_messages('secret plans')", &[])
        .await
        .is_empty());
    assert_eq!(
        o.query_err("select public.get_messages($1)", &[&conv])
            .await
            .0,
        "P0002"
    );
    assert_eq!(
        o.query_err("select public.mark_conversation_read($1)", &[&conv])
            .await
            .0,
        "P0002"
    );
    for sql in [
        "select id from public.messages where conversation_id = $1",
        "select id from public.conversations where id = $1",
        "select user_id from public.conversation_members where conversation_id = $1",
    ] {
        assert!(o.query(sql, &[&conv]).await.is_empty(), "{sql}");
    }
    // The members themselves find it (the search is restricted, not broken).
    assert_eq!(
        db.as_user(owner)
            .query("select * from public.search_messages('secret plans')", &[])
            .await
            .len(),
        2
    );

    // Counters are the database's: no client writes them, not even on its own row.
    let m = db.as_user(member);
    for sql in [
        "update public.conversations set counted_seq = 0 where id = $1",
        "update public.conversations set last_seq = 0 where id = $1",
        "update public.conversation_members set sent_since_read = 1000 where conversation_id = $1",
        "update public.conversation_members set read_counted_seq = 1000 where conversation_id = $1",
        "update public.messages set seq = 1 where conversation_id = $1",
    ] {
        assert_eq!(m.query_err(sql, &[&conv]).await.0, "42501", "{sql}");
    }
    // Nor does a member move another member's read point (the row is not theirs to update).
    assert!(m
        .query(
            "update public.conversation_members set last_read_at = now() where conversation_id = $1 and user_id = $2 returning user_id",
            &[&conv, &owner],
        )
        .await
        .is_empty());
    assert_eq!(
        unread_in(&unread_counts(&db, owner).await, conv),
        1,
        "the owner still has the member's message unread"
    );
}

#[tokio::test]
async fn reading_messages_under_rls_uses_an_index_and_no_function_per_row() {
    let db = fresh_db().await;
    let (conv, users) = big_group(&db, 20).await;
    for i in 0..30 {
        send(&db, users[1 + i % 5], conv, &format!("message {i}")).await;
    }
    db.client.batch_execute("analyze").await.unwrap();
    let mut client = db.connect().await;
    let tx = client.transaction().await.unwrap();
    ripple::db::set_request_claims(
        &tx,
        "authenticated",
        &serde_json::json!({"sub": users[2].to_string(), "role": "authenticated"}).to_string(),
    )
    .await
    .unwrap();
    // (A small table: without this the planner rightly prefers reading it whole.)
    tx.batch_execute("set local enable_seqscan = off")
        .await
        .unwrap();
    let plan: Vec<String> = tx
        .query(
            &format!(
                "explain (analyze, costs off, timing off, summary off)
                 select * from public.messages where conversation_id = '{conv}'"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    tx.commit().await.unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("Index Scan"), "{plan}");
    assert!(
        plan.contains("hashed SubPlan"),
        "membership is one hashed set: {plan}"
    );
    assert!(
        !plan.contains("is_member"),
        "no per-row membership call: {plan}"
    );
    // The membership set is computed once, not once per row.
    assert!(!plan.contains("loops=31"), "{plan}");
}

/// Seeds a database at schema V4 with plain SQL (V4 had no triggers on these paths that
/// matter here), records the V4 answers, migrates to V5 and compares.
#[tokio::test]
async fn a_database_at_v4_migrates_to_v5_with_every_unread_count_unchanged() {
    let db = ripple_tests::empty_db().await;
    ripple::migrate::run_schema_to(&db.url, 4)
        .await
        .expect("migrate to V4");
    let users: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    let (group, direct) = (Uuid::new_v4(), Uuid::new_v4());
    db.client
        .execute(
            "insert into public.profiles (id, display_name) select u, 'user' from unnest($1::uuid[]) u",
            &[&users],
        )
        .await
        .unwrap();
    let key = format!("{}:{}", users[0].min(users[1]), users[0].max(users[1]));
    db.client
        .execute(
            "insert into public.conversations (id, kind, title, created_by, direct_key)
             values ($1, 'group', 'G', $3, null), ($2, 'direct', null, $3, $4)",
            &[&group, &direct, &users[0], &key],
        )
        .await
        .unwrap();
    // Read points: none, inside a run of equal timestamps, past everything, before
    // everything, between two messages.
    db.client
        .batch_execute(&format!(
            "insert into public.conversation_members (conversation_id, user_id, role, last_read_at)
             select '{group}', u, case when i = 1 then 'owner' else 'member' end::public.member_role,
                    case i when 1 then null
                           when 2 then timestamptz '2026-01-01' + interval '5 seconds'
                           when 3 then timestamptz '2026-01-01' + interval '100 seconds'
                           when 4 then timestamptz '2026-01-01' - interval '1 second'
                           when 5 then timestamptz '2026-01-01' + interval '10.5 seconds'
                           else null end
               from unnest(array['{u0}','{u1}','{u2}','{u3}','{u4}','{u5}']::uuid[]) with ordinality t(u, i);
             insert into public.conversation_members (conversation_id, user_id, last_read_at)
             values ('{direct}', '{u0}', timestamptz '2026-01-01' + interval '3 seconds'),
                    ('{direct}', '{u1}', null);
             -- 40 group messages, two per second (equal timestamps), every 7th a system
             -- message, every 5th deleted; 10 direct messages.
             insert into public.messages (conversation_id, sender_id, kind, body, created_at, deleted_at)
             select '{group}',
                    case when g % 7 = 0 then null
                         else (array['{u0}','{u1}','{u2}','{u3}','{u4}','{u5}']::uuid[])[1 + g % 6] end,
                    case when g % 7 = 0 then 'system' else 'text' end::public.message_kind,
                    case when g % 5 = 0 then null else 'm' || g end,
                    timestamptz '2026-01-01' + (g / 2) * interval '1 second',
                    case when g % 5 = 0 then timestamptz '2026-02-01' end
               from generate_series(1, 40) g;
             insert into public.messages (conversation_id, sender_id, body, created_at)
             select '{direct}', case when g % 3 = 0 then '{u0}'::uuid else '{u1}'::uuid end,
                    'd' || g, timestamptz '2026-01-01' + g * interval '1 second'
               from generate_series(1, 10) g;",
            u0 = users[0],
            u1 = users[1],
            u2 = users[2],
            u3 = users[3],
            u4 = users[4],
            u5 = users[5],
        ))
        .await
        .unwrap();
    // The V4 answer, exactly as V4's unread_counts counted.
    let v4_answer = "select m.user_id, m.conversation_id,
                            (select count(*) from public.messages x
                              where x.conversation_id = m.conversation_id
                                and x.created_at > coalesce(m.last_read_at, '-infinity')
                                and x.sender_id is distinct from m.user_id
                                and x.kind <> 'system'
                                and x.deleted_at is null)
                       from public.conversation_members m order by 1, 2";
    let before: Vec<(Uuid, Uuid, i64)> = db
        .client
        .query(v4_answer, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(before.iter().any(|(_, _, n)| *n > 0) && before.iter().any(|(_, _, n)| *n == 0));

    ripple::migrate::run(&db.url, &Default::default())
        .await
        .expect("migrate to V5");

    let mut after = Vec::new();
    for u in &users {
        for r in db
            .as_user(*u)
            .query(
                "select conversation_id, unread_count from private.my_unread()",
                &[],
            )
            .await
        {
            after.push((*u, r.get::<_, Uuid>(0), r.get::<_, i64>(1)));
        }
    }
    after.sort();
    assert_eq!(after, before, "V5's counts equal V4's on the migrated data");

    // The counters the backfill wrote.
    let row = db
        .client
        .query_one(
            "select c.last_seq, c.counted_seq, c.member_count, c.deleted_count,
                    (select count(*) from public.messages x where x.conversation_id = c.id),
                    (select array_agg(x.seq order by x.created_at, x.id) = array_agg(x.seq order by x.seq)
                       from public.messages x where x.conversation_id = c.id)
               from public.conversations c where c.id = $1",
            &[&group],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 40);
    assert_eq!(row.get::<_, i64>(1), 40 - 5, "five system messages");
    assert_eq!(row.get::<_, i32>(2), 6);
    assert_eq!(
        row.get::<_, i64>(3),
        8 - 1,
        "deleted, not counting a deleted system one"
    );
    assert_eq!(row.get::<_, i64>(4), 40);
    assert!(row.get::<_, bool>(5), "positions follow (created_at, id)");

    // And the migrated database keeps counting: new sends, a read, a deletion.
    with_reference(&db).await;
    send(&db, users[1], group, "after the migration").await;
    let m = send(&db, users[2], group, "and another").await;
    db.as_user(users[4])
        .query(
            "select public.mark_conversation_read($1, $2)",
            &[&group, &m],
        )
        .await;
    db.as_user(users[2])
        .query("select public.delete_message($1)", &[&m])
        .await;
    assert_exact(&db, &users, "after the migration").await;
}
