//! The RLS authorizer against a real database: rows are judged as the change carried them,
//! by the tables' own policies, once per identity, and it fails closed.

use std::sync::Arc;

use ripple::authorize::{Authorizer, Check, ColumnAccess, Identity, RlsAuthorizer, Verdict};
use ripple::change::{
    ChangeKind, ColumnInfo, RelationInfo, ReplicaIdentity, RowChange, Transaction,
};
use ripple_tests::{fresh_db, TestDb};
use serde_json::{Map, Value};
use uuid::Uuid;

fn pool(db: &TestDb) -> deadpool_postgres::Pool {
    let cfg: tokio_postgres::Config = db.url.parse().unwrap();
    let mgr = deadpool_postgres::Manager::new(cfg, tokio_postgres::NoTls);
    deadpool_postgres::Pool::builder(mgr)
        .max_size(4)
        .build()
        .unwrap()
}

async fn relation(db: &TestDb, table: &str) -> Arc<RelationInfo> {
    let row = db
        .client
        .query_one(
            "select c.oid::int8, n.nspname::text, c.relname::text, c.relreplident::text \
               from pg_class c join pg_namespace n on n.oid = c.relnamespace \
              where c.oid = $1::text::regclass",
            &[&table],
        )
        .await
        .unwrap();
    let oid: i64 = row.get(0);
    let cols = db
        .client
        .query(
            "select attname::text, atttypid::int8, format_type(atttypid, null) from pg_attribute \
              where attrelid = $1::int8::oid and attnum > 0 and not attisdropped order by attnum",
            &[&oid],
        )
        .await
        .unwrap();
    Arc::new(RelationInfo {
        oid: oid as u32,
        schema: row.get(1),
        name: row.get(2),
        replica_identity: match row.get::<_, String>(3).as_str() {
            "f" => ReplicaIdentity::Full,
            "n" => ReplicaIdentity::Nothing,
            "i" => ReplicaIdentity::Index,
            _ => ReplicaIdentity::Default,
        },
        columns: cols
            .iter()
            .map(|c| ColumnInfo {
                name: c.get(0),
                type_oid: c.get::<_, i64>(1) as u32,
                type_name: c.get(2),
                is_key: false,
            })
            .collect(),
    })
}

/// The row as JSON, the way the replication stream delivers it.
async fn row_json(db: &TestDb, table: &str, id: Uuid) -> Map<String, Value> {
    let v: Value = db
        .client
        .query_one(
            &format!("select to_jsonb(t) from {table} t where id = $1"),
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    v.as_object().unwrap().clone()
}

fn user(id: Uuid) -> Identity {
    Identity::new(
        "authenticated",
        &serde_json::json!({"sub": id.to_string(), "role": "authenticated"}),
    )
}

/// Asks `az`, through the `Authorizer` contract, each (change index, identity index) of
/// `asks`, the changes being one (already visible) transaction; one verdict per ask.
async fn ask(
    az: &RlsAuthorizer,
    changes: &[&RowChange],
    identities: &[Identity],
    asks: &[(usize, usize)],
) -> Vec<Verdict> {
    let tx = Transaction {
        xid: 0,
        commit_lsn: 1,
        commit_time_micros: 0,
        changes: changes.iter().map(|&c| c.clone()).collect(),
    };
    let identities: Vec<Arc<Identity>> = identities.iter().cloned().map(Arc::new).collect();
    let checks: Vec<Check> = (0..changes.len())
        .map(|change| Check {
            tx: 0,
            change,
            identities: asks
                .iter()
                .filter(|a| a.0 == change)
                .map(|a| identities[a.1].clone())
                .collect(),
        })
        .collect();
    let verdicts = az.authorize(&[&tx], &checks).await.unwrap();
    asks.iter()
        .map(|&(change, who)| {
            let j = checks[change]
                .identities
                .iter()
                .position(|i| *i == identities[who])
                .unwrap();
            verdicts[change].get(j).cloned().unwrap_or(Verdict::Hidden)
        })
        .collect()
}

/// The columns a verdict lets through (none when hidden).
fn columns(v: &Verdict) -> Vec<String> {
    match v {
        Verdict::Hidden => vec![],
        Verdict::Visible(ColumnAccess::All) => vec!["*".into()],
        Verdict::Visible(ColumnAccess::Only(set)) => set.iter().cloned().collect(),
    }
}

fn change(rel: &Arc<RelationInfo>, kind: ChangeKind, row: Map<String, Value>) -> RowChange {
    let (record, old_record) = match kind {
        ChangeKind::Delete => (None, Some(row)),
        _ => (Some(row), None),
    };
    RowChange {
        relation: rel.clone(),
        kind,
        record: record.map(Into::into),
        old_record: old_record.map(Into::into),
        unchanged_toast: vec![],
    }
}

struct Chat {
    db: TestDb,
    alice: Uuid,
    bob: Uuid,
    carol: Uuid,
    conv: Uuid,
    msg: Uuid,
}

async fn chat() -> Chat {
    let db = fresh_db().await;
    let alice = db.create_user("Alice").await;
    let bob = db.create_user("Bob").await;
    let carol = db.create_user("Carol").await;
    let conv: Uuid = db
        .as_user(alice)
        .query_one("select public.start_direct_conversation($1)", &[&bob])
        .await
        .get(0);
    let msg: Uuid = db
        .as_user(alice)
        .query_one(
            "select (public.send_message($1, 'secret plans')).id",
            &[&conv],
        )
        .await
        .get(0);
    Chat {
        db,
        alice,
        bob,
        carol,
        conv,
        msg,
    }
}

#[tokio::test]
async fn members_see_a_new_message_and_an_outsider_does_not() {
    let c = chat().await;
    let rel = relation(&c.db, "public.messages").await;
    let ins = change(
        &rel,
        ChangeKind::Insert,
        row_json(&c.db, "public.messages", c.msg).await,
    );
    let az = RlsAuthorizer::new(pool(&c.db));
    let ids = [user(c.alice), user(c.bob), user(c.carol)];
    let v = ask(&az, &[&ins], &ids, &[(0, 0), (0, 1), (0, 2)]).await;
    assert!(v[0].is_visible() && v[1].is_visible());
    assert!(!v[2].is_visible(), "Carol is not a member");
    assert!(columns(&v[0]).iter().any(|c| c == "body"));
}

#[tokio::test]
async fn a_row_is_judged_as_the_change_carried_it_not_as_it_is_now() {
    let c = chat().await;
    let rel = relation(&c.db, "public.messages").await;
    let as_inserted = row_json(&c.db, "public.messages", c.msg).await;
    // The row is gone by the time the change is authorized...
    c.db.client
        .execute("delete from public.messages where id = $1", &[&c.msg])
        .await
        .unwrap();
    let ins = change(&rel, ChangeKind::Insert, as_inserted.clone());
    let az = RlsAuthorizer::new(pool(&c.db));
    let v = ask(
        &az,
        &[&ins],
        &[user(c.bob), user(c.carol)],
        &[(0, 0), (0, 1)],
    )
    .await;
    assert!(v[0].is_visible(), "Bob could see the insert, so he gets it");
    assert!(!v[1].is_visible());
    // ...and a row that never was in the table (moved to another conversation) is judged by
    // its carried values: Carol's own conversation makes it visible to her alone.
    let dave = c.db.create_user("Dave").await;
    let cd: Uuid =
        c.db.as_user(c.carol)
            .query_one("select public.start_direct_conversation($1)", &[&dave])
            .await
            .get(0);
    let mut moved = as_inserted;
    moved.insert("conversation_id".into(), Value::String(cd.to_string()));
    let upd = change(&rel, ChangeKind::Update, moved);
    let v = ask(
        &az,
        &[&upd],
        &[user(c.bob), user(c.carol)],
        &[(0, 0), (0, 1)],
    )
    .await;
    assert!(!v[0].is_visible());
    assert!(v[1].is_visible());
}

#[tokio::test]
async fn deletes_are_judged_on_the_old_row_and_need_a_full_one() {
    let c = chat().await;
    let rel = relation(&c.db, "public.messages").await;
    let old = row_json(&c.db, "public.messages", c.msg).await;
    let del = change(&rel, ChangeKind::Delete, old.clone());
    let az = RlsAuthorizer::new(pool(&c.db));
    let v = ask(
        &az,
        &[&del],
        &[user(c.bob), user(c.carol)],
        &[(0, 0), (0, 1)],
    )
    .await;
    assert!(v[0].is_visible(), "a member sees the delete");
    assert!(!v[1].is_visible(), "an outsider does not, not even its key");
    // Without REPLICA IDENTITY FULL the old row is only a key: nobody gets the delete.
    let mut key_only = Map::new();
    key_only.insert("id".into(), old["id"].clone());
    let mut rel_default = (*rel).clone();
    rel_default.replica_identity = ReplicaIdentity::Default;
    let del = change(&Arc::new(rel_default), ChangeKind::Delete, key_only);
    let v = ask(&az, &[&del], &[user(c.bob)], &[(0, 0)]).await;
    assert!(!v[0].is_visible());
}

#[tokio::test]
async fn columns_the_role_cannot_select_are_not_in_the_verdict() {
    let c = chat().await;
    let rel = relation(&c.db, "public.conversations").await;
    let row = row_json(&c.db, "public.conversations", c.conv).await;
    assert!(row.contains_key("direct_key"));
    let upd = change(&rel, ChangeKind::Update, row);
    let az = RlsAuthorizer::new(pool(&c.db));
    let v = ask(&az, &[&upd], &[user(c.alice)], &[(0, 0)]).await;
    assert!(v[0].is_visible());
    assert!(columns(&v[0]).iter().any(|c| c == "last_message_preview"));
    assert!(!columns(&v[0]).iter().any(|c| c == "direct_key"));
}

#[tokio::test]
async fn roles_without_rights_see_nothing_and_service_role_sees_all() {
    let c = chat().await;
    let rel = relation(&c.db, "public.messages").await;
    let ins = change(
        &rel,
        ChangeKind::Insert,
        row_json(&c.db, "public.messages", c.msg).await,
    );
    let ids = [
        Identity::new("anon", &serde_json::json!({"role": "anon"})),
        Identity::new("postgres", &serde_json::json!({"role": "postgres"})),
        Identity::new("no_such_role", &serde_json::json!({"role": "no_such_role"})),
        Identity::new("service_role", &serde_json::json!({"role": "service_role"})),
    ];
    let az = RlsAuthorizer::new(pool(&c.db));
    let v = ask(&az, &[&ins], &ids, &[(0, 0), (0, 1), (0, 2), (0, 3)]).await;
    assert!(!v[0].is_visible(), "anon has no privilege on messages");
    assert!(
        !v[1].is_visible(),
        "a token naming a superuser role is never honoured"
    );
    assert!(!v[2].is_visible(), "an unknown role sees nothing");
    assert!(v[3].is_visible(), "service_role bypasses RLS");
}

#[tokio::test]
async fn a_check_that_errors_for_one_identity_hides_only_its_rows() {
    let c = chat().await;
    let rel = relation(&c.db, "public.messages").await;
    let ins = change(
        &rel,
        ChangeKind::Insert,
        row_json(&c.db, "public.messages", c.msg).await,
    );
    // A `sub` that is not a uuid makes auth.uid() raise inside the policy.
    let broken = Identity::new(
        "authenticated",
        &serde_json::json!({"sub": "not-a-uuid","role": "authenticated"}),
    );
    let az = RlsAuthorizer::new(pool(&c.db));
    let v = ask(
        &az,
        &[&ins],
        &[broken, user(c.bob), user(c.carol)],
        &[(0, 0), (0, 1), (0, 2)],
    )
    .await;
    assert!(!v[0].is_visible());
    assert!(v[1].is_visible(), "the others are still answered");
    assert!(!v[2].is_visible());
}

#[tokio::test]
async fn a_whole_transaction_is_checked_per_identity_in_one_batch() {
    let c = chat().await;
    let rel = relation(&c.db, "public.messages").await;
    let carol_dave: Uuid = {
        let dave = c.db.create_user("Dave").await;
        c.db.as_user(c.carol)
            .query_one("select public.start_direct_conversation($1)", &[&dave])
            .await
            .get(0)
    };
    let mut changes = Vec::new();
    for i in 0..20 {
        let (who, conv) = if i % 2 == 0 {
            (c.alice, c.conv)
        } else {
            (c.carol, carol_dave)
        };
        let id: Uuid =
            c.db.as_user(who)
                .query_one(
                    "select (public.send_message($1, $2)).id",
                    &[&conv, &format!("m{i}")],
                )
                .await
                .get(0);
        changes.push(change(
            &rel,
            ChangeKind::Insert,
            row_json(&c.db, "public.messages", id).await,
        ));
    }
    let refs: Vec<&RowChange> = changes.iter().collect();
    let ids = [user(c.bob), user(c.carol)];
    let asks: Vec<(usize, usize)> = (0..20).flat_map(|i| [(i, 0), (i, 1)]).collect();
    let az = RlsAuthorizer::new(pool(&c.db));
    let v = ask(&az, &refs, &ids, &asks).await;
    for (k, &(i, who)) in asks.iter().enumerate() {
        let in_bobs = i % 2 == 0;
        let expected = if who == 0 { in_bobs } else { !in_bobs };
        assert_eq!(v[k].is_visible(), expected, "change {i} for identity {who}");
    }
}

#[tokio::test]
async fn a_changed_policy_applies_once_the_stream_signals_it() {
    let c = chat().await;
    let rel = relation(&c.db, "public.messages").await;
    let ins = change(
        &rel,
        ChangeKind::Insert,
        row_json(&c.db, "public.messages", c.msg).await,
    );
    let az = RlsAuthorizer::new(pool(&c.db));
    let before = ask(&az, &[&ins], &[user(c.carol)], &[(0, 0)]).await;
    assert!(!before[0].is_visible());
    // The feed keeps its newest 100 rows (the migrations' function changes fill it), so the
    // newest id tells that a row was written, where the count may not.
    let feed_before: i64 =
        c.db.client
            .query_one(
                "select coalesce(max(id), 0)::int8 from ripple.security_changes",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    // A DBA lets everyone signed in read messages containing 'plans'.
    c.db.client
        .batch_execute(
            "create policy messages_public_plans on public.messages for select to authenticated \
             using (body like '%plans%')",
        )
        .await
        .unwrap();
    let feed_after: i64 =
        c.db.client
            .query_one(
                "select coalesce(max(id), 0)::int8 from ripple.security_changes",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    assert!(
        feed_after > feed_before,
        "the event trigger wrote to the feed"
    );
    // The stream carries that row; observing its transaction drops the cached plans.
    let feed_rel = relation(&c.db, "ripple.security_changes").await;
    let signal = ripple::change::Transaction {
        xid: 1,
        commit_lsn: 1,
        commit_time_micros: 0,
        changes: vec![change(&feed_rel, ChangeKind::Insert, Map::new())],
    };
    az.observe(&signal);
    let after = ask(&az, &[&ins], &[user(c.carol)], &[(0, 0)]).await;
    assert!(after[0].is_visible(), "the new policy is in force");
}

#[tokio::test]
async fn policies_written_for_per_claim_settings_work_too() {
    // Older PostgREST policies read `request.jwt.claim.sub` rather than the claims JSON.
    let db = fresh_db().await;
    let owner = db.create_user("Owner").await;
    let other = db.create_user("Other").await;
    db.client
        .batch_execute(
            "create table public.notes (id int primary key, owner uuid not null); \
             alter table public.notes enable row level security; \
             grant select on public.notes to authenticated; \
             create policy notes_owner on public.notes for select to authenticated \
               using (owner::text = current_setting('request.jwt.claim.sub', true))",
        )
        .await
        .unwrap();
    db.client
        .execute("insert into public.notes values (1, $1)", &[&owner])
        .await
        .unwrap();
    let seen: i64 = db
        .as_user(owner)
        .query_one("select count(*) from public.notes", &[])
        .await
        .get(0);
    assert_eq!(seen, 1, "a request sets the per-claim settings");
    let rel = relation(&db, "public.notes").await;
    let mut row = Map::new();
    row.insert("id".into(), Value::from(1));
    row.insert("owner".into(), Value::String(owner.to_string()));
    let ins = change(&rel, ChangeKind::Insert, row);
    let az = RlsAuthorizer::new(pool(&db));
    let v = ask(&az, &[&ins], &[user(owner), user(other)], &[(0, 0), (0, 1)]).await;
    assert!(v[0].is_visible());
    assert!(!v[1].is_visible());
}
