//! The fan-out, end to end but without the replication stream (which drives it in
//! production): real rows are written, read back as the change would carry them, and handed
//! to `realtime::deliver` with the reference live-row authorizer, which asks the database's
//! own policies. Subscribers are real WebSocket clients.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use ripple::authorize::LiveRowAuthorizer;
use ripple::change::{
    ChangeKind, ColumnInfo, RelationInfo, ReplicaIdentity, RowChange, Transaction,
};
use ripple_tests::{fresh_db, gateway_config, TestDb};
use serde_json::{json, Map, Value};
use support::{changes_payload, conversation, spawn_app, Client};
use uuid::Uuid;

/// The table as the replication stream would describe it.
async fn relation(db: &TestDb, schema: &str, table: &str) -> Arc<RelationInfo> {
    let rows = db
        .client
        .query(
            "select c.oid::int8, c.relreplident::text, a.attname::text, t.typname::text,
                    a.atttypid::int8,
                    coalesce(a.attnum = any(i.indkey), false)
               from pg_class c
               join pg_namespace n on n.oid = c.relnamespace
               join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
               join pg_type t on t.oid = a.atttypid
               left join pg_index i on i.indrelid = c.oid and i.indisprimary
              where n.nspname = $1 and c.relname = $2
              order by a.attnum",
            &[&schema, &table],
        )
        .await
        .unwrap();
    let ident: String = rows[0].get(1);
    Arc::new(RelationInfo {
        oid: rows[0].get::<_, i64>(0) as u32,
        schema: schema.into(),
        name: table.into(),
        replica_identity: match ident.as_str() {
            "f" => ReplicaIdentity::Full,
            "n" => ReplicaIdentity::Nothing,
            "i" => ReplicaIdentity::Index,
            _ => ReplicaIdentity::Default,
        },
        columns: rows
            .iter()
            .map(|r| ColumnInfo {
                name: r.get(2),
                type_name: r.get(3),
                type_oid: r.get::<_, i64>(4) as u32,
                is_key: r.get(5),
            })
            .collect(),
    })
}

/// A row as JSON, read as the table owner (what the stream carries: every column).
async fn row(
    db: &TestDb,
    sql: &str,
    id: &(dyn tokio_postgres::types::ToSql + Sync),
) -> Map<String, Value> {
    let v: Value = db.client.query_one(sql, &[id]).await.unwrap().get(0);
    v.as_object().unwrap().clone()
}

fn tx(changes: Vec<RowChange>) -> Transaction {
    Transaction {
        xid: 1,
        commit_lsn: 0,
        commit_time_micros: chrono::Utc::now().timestamp_micros(),
        changes,
    }
}

fn change(
    rel: &Arc<RelationInfo>,
    kind: ChangeKind,
    record: Option<Map<String, Value>>,
    old: Option<Map<String, Value>>,
) -> RowChange {
    RowChange {
        relation: rel.clone(),
        kind,
        record: record.map(Into::into),
        old_record: old.map(Into::into),
        unchanged_toast: vec![],
    }
}

struct Chat {
    db: TestDb,
    gw: support::AppGateway,
    alice: Uuid,
    bob: Uuid,
    carol: Uuid,
    conv: Uuid,
}

async fn chat() -> Chat {
    let db = fresh_db().await;
    let gw = spawn_app(&db, gateway_config()).await;
    let alice = db.create_user("Alice").await;
    let bob = db.create_user("Bob").await;
    let carol = db.create_user("Carol").await;
    let conv = conversation(&db, &[alice, bob]).await;
    Chat {
        db,
        gw,
        alice,
        bob,
        carol,
        conv,
    }
}

async fn subscriber(c: &Chat, user: Uuid, specs: Value) -> (Client, Vec<u64>) {
    let mut client = Client::connect(c.gw.addr, &c.gw.anon_key, "2.0.0").await;
    let reply = client
        .join_ok(
            "realtime:db",
            changes_payload(&c.gw.token_for(user, 600), specs),
        )
        .await;
    let ids = reply.payload["response"]["postgres_changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_u64().unwrap())
        .collect();
    (client, ids)
}

async fn send_message(c: &Chat, body: &str) -> Uuid {
    c.db.as_user(c.alice)
        .query_one(
            "insert into public.messages (conversation_id, sender_id, body) values ($1, $2, $3) returning id",
            &[&c.conv, &c.alice, &body],
        )
        .await
        .get(0)
}

const MESSAGE_JSON: &str = "select to_jsonb(m) from public.messages m where id = $1";

#[tokio::test]
async fn a_message_reaches_the_member_and_never_the_outsider_insert_update_and_delete() {
    let c = chat().await;
    let all = json!([{"event": "*", "schema": "public", "table": "messages"}]);
    let (mut bob, bob_ids) = subscriber(&c, c.bob, all.clone()).await;
    // Carol listens to the whole table and, for good measure, filters on the conversation.
    let (mut carol, _) = subscriber(
        &c,
        c.carol,
        json!([{"event": "*", "schema": "public", "table": "messages"},
               {"event": "*", "schema": "public", "table": "messages",
                "filter": format!("conversation_id=eq.{}", c.conv)}]),
    )
    .await;
    let auth = LiveRowAuthorizer::new(c.gw.app.pool.clone());
    let rel = relation(&c.db, "public", "messages").await;

    let id = send_message(&c, "hello bob").await;
    let inserted = row(&c.db, MESSAGE_JSON, &id).await;
    let report = ripple::realtime::deliver(
        &c.gw.app.realtime,
        &[&tx(vec![change(
            &rel,
            ChangeKind::Insert,
            Some(inserted.clone()),
            None,
        )])],
        &auth,
    )
    .await
    .unwrap();
    assert_eq!(
        (report.candidates, report.delivered, report.hidden),
        (2, 1, 1)
    );
    let m = bob.recv().await;
    assert_eq!(
        (m.topic.as_str(), m.event.as_str()),
        ("realtime:db", "postgres_changes")
    );
    assert_eq!(m.join_ref, None);
    assert_eq!(m.payload["ids"], json!(bob_ids));
    let data = &m.payload["data"];
    assert_eq!(data["type"], "INSERT");
    assert_eq!(
        (data["schema"].as_str(), data["table"].as_str()),
        (Some("public"), Some("messages"))
    );
    assert_eq!(data["record"]["body"], "hello bob");
    assert_eq!(data["record"]["id"], json!(id));
    assert!(data.get("old_record").is_none(), "INSERT has no old_record");
    assert_eq!(data["errors"], Value::Null);
    assert!(data["commit_timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(data["columns"]
        .as_array()
        .unwrap()
        .contains(&json!({"name": "body", "type": "text"})));

    c.db.as_user(c.alice)
        .query(
            "update public.messages set body = 'edited' where id = $1",
            &[&id],
        )
        .await;
    let updated = row(&c.db, MESSAGE_JSON, &id).await;
    ripple::realtime::deliver(
        &c.gw.app.realtime,
        &[&tx(vec![change(
            &rel,
            ChangeKind::Update,
            Some(updated),
            Some(inserted.clone()),
        )])],
        &auth,
    )
    .await
    .unwrap();
    let m = bob.recv().await;
    assert_eq!(m.payload["data"]["type"], "UPDATE");
    assert_eq!(m.payload["data"]["record"]["body"], "edited");
    assert_eq!(m.payload["data"]["old_record"]["body"], "hello bob");

    let before = row(&c.db, MESSAGE_JSON, &id).await;
    c.db.client
        .execute("delete from public.messages where id = $1", &[&id])
        .await
        .unwrap();
    let report = ripple::realtime::deliver(
        &c.gw.app.realtime,
        &[&tx(vec![change(
            &rel,
            ChangeKind::Delete,
            None,
            Some(before),
        )])],
        &auth,
    )
    .await
    .unwrap();
    assert_eq!(
        report.delivered, 1,
        "the deleted row is judged as it was: bob could see it"
    );
    let m = bob.recv().await;
    assert_eq!(m.payload["data"]["type"], "DELETE");
    assert!(
        m.payload["data"].get("record").is_none(),
        "DELETE has no record"
    );
    assert_eq!(m.payload["data"]["old_record"]["body"], "edited");
    let still_gone: i64 =
        c.db.client
            .query_one("select count(*) from public.messages where id = $1", &[&id])
            .await
            .unwrap()
            .get(0);
    assert_eq!(still_gone, 0, "judging the delete left no row behind");

    // Carol: not the insert, not the edit, not the delete.
    carol.assert_nothing_pending().await;
}

#[tokio::test]
async fn each_change_carries_only_the_ids_of_the_bindings_it_matches() {
    let c = chat().await;
    let other = conversation(&c.db, &[c.bob, c.alice]).await;
    let (mut bob, ids) = subscriber(
        &c,
        c.bob,
        json!([
            {"event": "INSERT", "schema": "public", "table": "messages", "filter": format!("conversation_id=eq.{}", c.conv)},
            {"event": "INSERT", "schema": "public", "table": "messages", "filter": format!("conversation_id=eq.{other}")},
            {"event": "UPDATE", "schema": "public", "table": "messages"},
            {"event": "INSERT", "schema": "public", "table": "messages", "filter": "body=in.(hi,hello)"}
        ]),
    )
    .await;
    let auth = LiveRowAuthorizer::new(c.gw.app.pool.clone());
    let rel = relation(&c.db, "public", "messages").await;
    let id = send_message(&c, "hello").await;
    let r = row(&c.db, MESSAGE_JSON, &id).await;
    ripple::realtime::deliver(
        &c.gw.app.realtime,
        &[&tx(vec![change(&rel, ChangeKind::Insert, Some(r), None)])],
        &auth,
    )
    .await
    .unwrap();
    let m = bob.recv().await;
    assert_eq!(m.payload["ids"], json!([ids[0], ids[3]]));
    bob.assert_nothing_pending().await;
}

#[tokio::test]
async fn columns_the_role_cannot_select_are_removed_from_records_and_columns() {
    let c = chat().await;
    let (mut bob, _) = subscriber(
        &c,
        c.bob,
        json!([{"event": "*", "schema": "public", "table": "conversations"}]),
    )
    .await;
    let rel = relation(&c.db, "public", "conversations").await;
    let old = row(
        &c.db,
        "select to_jsonb(c) from public.conversations c where id = $1",
        &c.conv,
    )
    .await;
    assert!(
        old.contains_key("direct_key"),
        "the stream carries every column"
    );
    c.db.client
        .execute(
            "update public.conversations set title = 'renamed' where id = $1",
            &[&c.conv],
        )
        .await
        .unwrap();
    let new = row(
        &c.db,
        "select to_jsonb(c) from public.conversations c where id = $1",
        &c.conv,
    )
    .await;
    let auth = LiveRowAuthorizer::new(c.gw.app.pool.clone());
    ripple::realtime::deliver(
        &c.gw.app.realtime,
        &[&tx(vec![change(
            &rel,
            ChangeKind::Update,
            Some(new),
            Some(old),
        )])],
        &auth,
    )
    .await
    .unwrap();
    let m = bob.recv().await;
    let data = &m.payload["data"];
    assert_eq!(data["record"]["title"], "renamed");
    assert!(data["record"].get("direct_key").is_none());
    assert!(data["old_record"].get("direct_key").is_none());
    assert!(!data["columns"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "direct_key"));
}

#[tokio::test]
async fn deletes_of_a_table_without_full_old_rows_reach_no_one_and_the_join_says_so() {
    let c = chat().await;
    c.db.client
        .batch_execute(
            "create table public.notes (id int primary key, owner uuid not null, body text);
             alter table public.notes enable row level security;
             create policy notes_own on public.notes for select to authenticated using (owner = auth.uid());
             grant select on public.notes to authenticated;
             alter publication ripple add table public.notes;",
        )
        .await
        .unwrap();
    let mut bob = Client::connect(c.gw.addr, &c.gw.anon_key, "1.0.0").await;
    let reply = bob
        .join(
            "realtime:notes",
            changes_payload(
                &c.gw.token_for(c.bob, 600),
                json!([{"event": "*", "schema": "public", "table": "notes"}]),
            ),
        )
        .await;
    assert_eq!(reply.payload["status"], "ok");
    let sys = bob.recv().await;
    assert_eq!(sys.payload["message"], "Subscribed to PostgreSQL");
    let warning = sys.payload["warnings"][0].as_str().unwrap();
    assert!(
        warning.contains("public.notes") && warning.contains("REPLICA IDENTITY"),
        "{warning}"
    );

    c.db.client
        .execute("insert into public.notes values (1, $1, 'mine')", &[&c.bob])
        .await
        .unwrap();
    let rel = relation(&c.db, "public", "notes").await;
    assert_eq!(rel.replica_identity, ReplicaIdentity::Default);
    let auth = LiveRowAuthorizer::new(c.gw.app.pool.clone());
    let inserted = row(
        &c.db,
        "select to_jsonb(n) from public.notes n where id = $1",
        &1i32,
    )
    .await;
    ripple::realtime::deliver(
        &c.gw.app.realtime,
        &[&tx(vec![change(
            &rel,
            ChangeKind::Insert,
            Some(inserted),
            None,
        )])],
        &auth,
    )
    .await
    .unwrap();
    assert_eq!(bob.recv().await.payload["data"]["record"]["body"], "mine");
    c.db.client
        .execute("delete from public.notes where id = 1", &[])
        .await
        .unwrap();
    let key_only: Map<String, Value> = json!({"id": 1}).as_object().unwrap().clone();
    let report = ripple::realtime::deliver(
        &c.gw.app.realtime,
        &[&tx(vec![change(
            &rel,
            ChangeKind::Delete,
            None,
            Some(key_only),
        )])],
        &auth,
    )
    .await
    .unwrap();
    assert_eq!(
        (report.unjudgeable_deletes, report.delivered, report.checks),
        (1, 0, 0)
    );
    bob.assert_nothing_pending().await;
}

#[tokio::test]
async fn a_closed_socket_takes_its_subscriptions_along_and_its_user_is_marked_last_seen() {
    let c = chat().await;
    let (bob, _) = subscriber(
        &c,
        c.bob,
        json!([{"event": "*", "schema": "public", "table": "messages"}]),
    )
    .await;
    let (carol, _) = subscriber(
        &c,
        c.carol,
        json!([{"event": "*", "schema": "public", "table": "messages"}]),
    )
    .await;
    assert_eq!(c.gw.app.realtime.registry.len(), 2);
    assert_eq!(c.gw.app.realtime.sockets_of(&c.bob.to_string()), 1);
    drop(bob);
    let mut seen = None;
    for _ in 0..100 {
        seen =
            c.db.client
                .query_one(
                    "select last_seen_at from public.profiles where id = $1",
                    &[&c.bob],
                )
                .await
                .unwrap()
                .get::<_, Option<chrono::DateTime<chrono::Utc>>>(0);
        if seen.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen.is_some(), "bob's last disconnect records last_seen_at");
    assert_eq!(c.gw.app.realtime.registry.len(), 1);
    let carol_seen: Option<chrono::DateTime<chrono::Utc>> =
        c.db.client
            .query_one(
                "select last_seen_at from public.profiles where id = $1",
                &[&c.carol],
            )
            .await
            .unwrap()
            .get(0);
    assert!(carol_seen.is_none(), "carol is still connected");
    drop(carol);
}

#[tokio::test]
async fn a_transaction_arrives_in_commit_order_and_each_claim_set_is_checked_once() {
    let c = chat().await;
    let spec = json!([{"event": "INSERT", "schema": "public", "table": "messages"}]);
    // Two tabs of Bob with the same token share one claim set; Carol has her own.
    let bob_token = c.gw.token_for(c.bob, 600);
    let mut tabs = Vec::new();
    for _ in 0..2 {
        let mut tab = Client::connect(c.gw.addr, &c.gw.anon_key, "1.0.0").await;
        tab.join_ok("realtime:db", changes_payload(&bob_token, spec.clone()))
            .await;
        tabs.push(tab);
    }
    let (mut carol, _) = subscriber(&c, c.carol, spec).await;
    let rel = relation(&c.db, "public", "messages").await;
    let mut changes = Vec::new();
    for body in ["one", "two", "three"] {
        let id = send_message(&c, body).await;
        changes.push(change(
            &rel,
            ChangeKind::Insert,
            Some(row(&c.db, MESSAGE_JSON, &id).await),
            None,
        ));
    }
    let auth = LiveRowAuthorizer::new(c.gw.app.pool.clone());
    let report = ripple::realtime::deliver(&c.gw.app.realtime, &[&tx(changes)], &auth)
        .await
        .unwrap();
    assert_eq!(report.candidates, 9, "3 changes x 3 channels");
    assert_eq!(report.checks, 6, "3 changes x 2 distinct claim sets");
    assert_eq!((report.delivered, report.hidden), (6, 3));
    for tab in &mut tabs {
        for body in ["one", "two", "three"] {
            assert_eq!(tab.recv().await.payload["data"]["record"]["body"], body);
        }
    }
    carol.assert_nothing_pending().await;
}

/// The RLS authorizer, counting the calls the fan-out makes to it.
struct Counted {
    inner: ripple::authorize::RlsAuthorizer,
    calls: std::sync::atomic::AtomicUsize,
}

impl ripple::authorize::Authorizer for Counted {
    fn authorize<'a>(
        &'a self,
        txs: &'a [&'a Transaction],
        checks: &'a [ripple::authorize::Check],
    ) -> ripple::authorize::AuthorizeFuture<'a> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.authorize(txs, checks)
    }
}

#[tokio::test]
async fn queued_transactions_are_authorized_in_one_call_and_delivered_in_commit_order() {
    let c = chat().await;
    let spec = json!([{"event": "INSERT", "schema": "public", "table": "messages"}]);
    let (mut bob, _) = subscriber(&c, c.bob, spec.clone()).await;
    let (mut carol, _) = subscriber(&c, c.carol, spec).await;
    let dave = c.db.create_user("Dave").await;
    let carols = conversation(&c.db, &[c.carol, dave]).await;
    let rel = relation(&c.db, "public", "messages").await;
    // Five transactions, alternating between Alice and Bob's conversation and Carol's.
    let mut txs = Vec::new();
    for i in 0..5 {
        let (who, conv) = if i % 2 == 0 {
            (c.alice, c.conv)
        } else {
            (c.carol, carols)
        };
        let id: Uuid =
            c.db.as_user(who)
                .query_one(
                    "insert into public.messages (conversation_id, sender_id, body) values ($1, $2, $3) returning id",
                    &[&conv, &who, &format!("m{i}")],
                )
                .await
                .get(0);
        txs.push(tx(vec![change(
            &rel,
            ChangeKind::Insert,
            Some(row(&c.db, MESSAGE_JSON, &id).await),
            None,
        )]));
    }
    let auth = Counted {
        inner: ripple::authorize::RlsAuthorizer::new(c.gw.app.pool.clone()),
        calls: Default::default(),
    };
    let refs: Vec<&Transaction> = txs.iter().collect();
    let report = ripple::realtime::deliver(&c.gw.app.realtime, &refs, &auth)
        .await
        .unwrap();
    assert_eq!(auth.calls.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(report.candidates, 10, "5 changes x 2 channels");
    assert_eq!((report.delivered, report.hidden), (5, 5));
    for body in ["m0", "m2", "m4"] {
        assert_eq!(bob.recv().await.payload["data"]["record"]["body"], body);
    }
    for body in ["m1", "m3"] {
        assert_eq!(carol.recv().await.payload["data"]["record"]["body"], body);
    }
    bob.assert_nothing_pending().await;
    carol.assert_nothing_pending().await;
}
