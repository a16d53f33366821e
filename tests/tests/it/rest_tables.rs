//! Table access over HTTP against a real gateway and database: select, filters, order,
//! paging and counts; insert, update, delete; policies and column privileges as the only
//! authority; schemas that are not exposed; hostile input end to end.

use hyper::Method;
use ripple_tests::http::{rest, Resp};
use ripple_tests::{fresh_db, spawn_gateway, Gateway, TestDb};
use serde_json::{json, Value};
use uuid::Uuid;

fn assert_error(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.json()["code"], code, "{}", r.text());
}

struct Chat {
    db: TestDb,
    gw: Gateway,
    alice: Uuid,
    bob: Uuid,
    eve: Uuid,
    alice_token: String,
    bob_token: String,
    eve_token: String,
    conv: Uuid,
    /// Message ids, oldest first, bodies "m0".."m4".
    messages: Vec<Uuid>,
}

async fn chat() -> Chat {
    let db = fresh_db().await;
    let alice = db.create_user("Alice").await;
    let bob = db.create_user("Bob").await;
    let eve = db.create_user("Eve").await;
    let conv: Uuid = db
        .as_user(alice)
        .query_one("select public.start_direct_conversation($1)", &[&bob])
        .await
        .get(0);
    let mut messages = Vec::new();
    for i in 0..5 {
        let id: Uuid = db
            .as_user(alice)
            .query_one(
                "select (public.send_message($1, $2)).id",
                &[&conv, &format!("m{i}")],
            )
            .await
            .get(0);
        messages.push(id);
    }
    let gw = spawn_gateway(&db).await;
    Chat {
        alice_token: gw.token_for(alice, 600),
        bob_token: gw.token_for(bob, 600),
        eve_token: gw.token_for(eve, 600),
        db,
        gw,
        alice,
        bob,
        eve,
        conv,
        messages,
    }
}

fn bodies(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|m| m["body"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn select_filter_order_limit_as_supabase_js_sends_them() {
    let c = chat().await;
    let path = format!(
        "/rest/v1/messages?select=id%2Cbody&conversation_id=eq.{}&order=created_at.desc&limit=2",
        c.conv
    );
    let r = rest(&c.gw, Method::GET, &path, Some(&c.bob_token), &[], None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(bodies(&r.json()), vec!["m4", "m3"]);
    assert_eq!(
        r.json()[0].as_object().unwrap().len(),
        2,
        "only the selected columns"
    );
    assert_eq!(r.header("content-range").unwrap(), "0-1/*");

    // Aliases, in, not, like, is.
    let path = "/rest/v1/messages?select=text:body&body=in.(m1,m3,zz)&order=body";
    let r = rest(&c.gw, Method::GET, path, Some(&c.bob_token), &[], None).await;
    assert_eq!(r.json(), json!([{"text": "m1"}, {"text": "m3"}]));
    let path = "/rest/v1/messages?select=body&body=not.in.(m1,m3)&body=like.m*&deleted_at=is.null&order=body.desc";
    let r = rest(&c.gw, Method::GET, path, Some(&c.bob_token), &[], None).await;
    assert_eq!(bodies(&r.json()), vec!["m4", "m2", "m0"]);
    let path = "/rest/v1/messages?select=body&body=ilike.M2";
    let r = rest(&c.gw, Method::GET, path, Some(&c.bob_token), &[], None).await;
    assert_eq!(bodies(&r.json()), vec!["m2"]);
    // Comparisons cast to the column's type (timestamptz here).
    let mid: chrono::DateTime<chrono::Utc> =
        c.db.client
            .query_one(
                "select created_at from messages where id = $1",
                &[&c.messages[2]],
            )
            .await
            .unwrap()
            .get(0);
    let at: String = url::form_urlencoded::byte_serialize(mid.to_rfc3339().as_bytes()).collect();
    for (op, want) in [
        ("lt", vec!["m0", "m1"]),
        ("lte", vec!["m0", "m1", "m2"]),
        ("gt", vec!["m3", "m4"]),
        ("gte", vec!["m2", "m3", "m4"]),
        ("eq", vec!["m2"]),
        ("neq", vec!["m0", "m1", "m3", "m4"]),
    ] {
        let path = format!("/rest/v1/messages?select=body&created_at={op}.{at}&order=created_at");
        let r = rest(&c.gw, Method::GET, &path, Some(&c.bob_token), &[], None).await;
        assert_eq!(bodies(&r.json()), want, "{op}");
    }
}

#[tokio::test]
async fn paging_with_range_offset_and_exact_counts() {
    let c = chat().await;
    let r = rest(
        &c.gw,
        Method::GET,
        "/rest/v1/messages?select=body&order=created_at",
        Some(&c.bob_token),
        &[("range", "1-2"), ("prefer", "count=exact")],
        None,
    )
    .await;
    assert_eq!(bodies(&r.json()), vec!["m1", "m2"]);
    assert_eq!(r.header("content-range").unwrap(), "1-2/5");
    let r = rest(
        &c.gw,
        Method::GET,
        "/rest/v1/messages?select=body&order=created_at&offset=3&limit=10",
        Some(&c.bob_token),
        &[("prefer", "count=exact")],
        None,
    )
    .await;
    assert_eq!(bodies(&r.json()), vec!["m3", "m4"]);
    assert_eq!(r.header("content-range").unwrap(), "3-4/5");
    // HEAD: the count without the rows.
    let r = rest(
        &c.gw,
        Method::HEAD,
        "/rest/v1/messages?select=id",
        Some(&c.bob_token),
        &[("prefer", "count=exact")],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-range").unwrap(), "0-4/5");
    // Past the end.
    let r = rest(
        &c.gw,
        Method::GET,
        "/rest/v1/messages?offset=50",
        Some(&c.bob_token),
        &[("prefer", "count=exact")],
        None,
    )
    .await;
    assert_error(&r, 416, "PGRST103");
}

#[tokio::test]
async fn an_outsider_sees_no_rows_and_counts_none() {
    let c = chat().await;
    for table in [
        "messages",
        "conversations",
        "conversation_members",
        "message_reactions",
    ] {
        let r = rest(
            &c.gw,
            Method::GET,
            &format!("/rest/v1/{table}"),
            Some(&c.eve_token),
            &[("prefer", "count=exact")],
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{table}: {}", r.text());
        assert_eq!(r.json(), json!([]), "{table}");
        assert_eq!(r.header("content-range").unwrap(), "*/0", "{table}");
    }
    // Filtering by the id of someone else's row does not find it either.
    let path = format!("/rest/v1/messages?id=eq.{}", c.messages[0]);
    let r = rest(&c.gw, Method::GET, &path, Some(&c.eve_token), &[], None).await;
    assert_eq!(r.json(), json!([]));
}

#[tokio::test]
async fn star_skips_columns_the_role_may_not_read_and_naming_one_is_403() {
    let c = chat().await;
    let r = rest(
        &c.gw,
        Method::GET,
        "/rest/v1/conversations",
        Some(&c.alice_token),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let row = &r.json()[0];
    assert_eq!(row["id"], c.conv.to_string());
    assert!(row.get("direct_key").is_none(), "{row}");
    let r = rest(
        &c.gw,
        Method::GET,
        "/rest/v1/conversations?select=id,direct_key",
        Some(&c.alice_token),
        &[],
        None,
    )
    .await;
    assert_error(&r, 403, "42501");
    // Filtering on it is reading it.
    let r = rest(
        &c.gw,
        Method::GET,
        "/rest/v1/conversations?select=id&direct_key=like.*",
        Some(&c.alice_token),
        &[],
        None,
    )
    .await;
    assert_error(&r, 403, "42501");
}

#[tokio::test]
async fn the_anon_key_reads_nothing_and_gets_401() {
    let c = chat().await;
    for table in ["profiles", "messages", "conversations"] {
        let r = rest(
            &c.gw,
            Method::GET,
            &format!("/rest/v1/{table}"),
            None,
            &[],
            None,
        )
        .await;
        assert_error(&r, 401, "42501");
    }
    let r = rest(
        &c.gw,
        Method::POST,
        "/rest/v1/profiles",
        None,
        &[],
        Some(json!({"id": Uuid::new_v4(), "display_name": "x"})),
    )
    .await;
    assert_error(&r, 401, "42501");
}

#[tokio::test]
async fn insert_returns_rows_only_when_asked() {
    let c = chat().await;
    let msg = json!({"conversation_id": c.conv, "sender_id": c.bob, "body": "from the table"});
    let r = rest(
        &c.gw,
        Method::POST,
        "/rest/v1/messages",
        Some(&c.bob_token),
        &[],
        Some(msg.clone()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(r.body.is_empty());
    let r = rest(
        &c.gw,
        Method::POST,
        "/rest/v1/messages?select=body,sender_id",
        Some(&c.bob_token),
        &[("prefer", "return=representation")],
        Some(
            json!([{"conversation_id": c.conv, "sender_id": c.bob, "body": "a"},
                    {"conversation_id": c.conv, "sender_id": c.bob, "body": "b"}]),
        ),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.json(),
        json!([{"body": "a", "sender_id": c.bob.to_string()}, {"body": "b", "sender_id": c.bob.to_string()}])
    );
    let n: i64 =
        c.db.client
            .query_one(
                "select count(*) from messages where sender_id = $1",
                &[&c.bob],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(n, 3);
}

#[tokio::test]
async fn inserts_the_policies_refuse_change_nothing() {
    let c = chat().await;
    // As someone else.
    let r = rest(
        &c.gw,
        Method::POST,
        "/rest/v1/messages",
        Some(&c.eve_token),
        &[],
        Some(json!({"conversation_id": c.conv, "sender_id": c.alice, "body": "forged"})),
    )
    .await;
    assert_error(&r, 403, "42501");
    // Into a conversation one is not in, as oneself.
    let eve = c.eve;
    let r = rest(
        &c.gw,
        Method::POST,
        "/rest/v1/messages",
        Some(&c.eve_token),
        &[],
        Some(json!({"conversation_id": c.conv, "sender_id": eve, "body": "hi"})),
    )
    .await;
    assert_error(&r, 403, "42501");
    // A column without an insert grant.
    let r = rest(
        &c.gw,
        Method::POST,
        "/rest/v1/messages",
        Some(&c.bob_token),
        &[],
        Some(json!({"conversation_id": c.conv, "sender_id": c.bob, "body": "x", "created_at": "2000-01-01T00:00:00Z"})),
    )
    .await;
    assert_error(&r, 403, "42501");
    // Constraint errors keep PostgREST's statuses: 23505 and 23503 are 409.
    let r = rest(
        &c.gw,
        Method::POST,
        "/rest/v1/profiles",
        Some(&c.bob_token),
        &[],
        Some(json!({"id": c.bob, "display_name": "again"})),
    )
    .await;
    assert_error(&r, 409, "23505");
    let r = rest(
        &c.gw,
        Method::POST,
        "/rest/v1/messages",
        Some(&c.bob_token),
        &[],
        Some(json!({"conversation_id": c.conv, "sender_id": c.bob, "body": "x", "forwarded_from_id": Uuid::new_v4()})),
    )
    .await;
    assert_error(&r, 409, "23503");
    let n: i64 =
        c.db.client
            .query_one("select count(*) from messages", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(n, 5, "no insert went through");
}

#[tokio::test]
async fn update_and_delete_touch_only_what_the_policies_allow() {
    let c = chat().await;
    // Alice edits her own message.
    let path = format!(
        "/rest/v1/messages?id=eq.{}&select=body,edited_at",
        c.messages[4]
    );
    let r = rest(
        &c.gw,
        Method::PATCH,
        &path,
        Some(&c.alice_token),
        &[("prefer", "return=representation")],
        Some(json!({"body": "m4 edited"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()[0]["body"], "m4 edited");
    assert!(!r.json()[0]["edited_at"].is_null());
    // Bob and Eve may not edit Alice's: the update policy leaves them no row to touch.
    let path = format!("/rest/v1/messages?id=eq.{}", c.messages[3]);
    for token in [&c.bob_token, &c.eve_token] {
        let r = rest(
            &c.gw,
            Method::PATCH,
            &path,
            Some(token),
            &[("prefer", "count=exact")],
            Some(json!({"body": "hacked"})),
        )
        .await;
        assert_eq!(r.status, 204, "{}", r.text());
        assert_eq!(r.header("content-range").unwrap(), "*/0");
    }
    // Eve's unfiltered update and delete reach nothing either.
    let r = rest(
        &c.gw,
        Method::PATCH,
        "/rest/v1/messages",
        Some(&c.eve_token),
        &[],
        Some(json!({"body": "all"})),
    )
    .await;
    assert_eq!(r.status, 204);
    let r = rest(
        &c.gw,
        Method::DELETE,
        "/rest/v1/conversation_members",
        Some(&c.eve_token),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    let bodies_now: Vec<String> =
        c.db.client
            .query("select body from messages order by created_at", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    assert_eq!(bodies_now, vec!["m0", "m1", "m2", "m3", "m4 edited"]);
    let members: i64 =
        c.db.client
            .query_one("select count(*) from conversation_members", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(members, 2);

    // Reactions: Bob adds one and deletes his own; he cannot delete Alice's.
    c.db.as_user(c.alice)
        .query("select public.react($1, '👍')", &[&c.messages[0]])
        .await;
    let r = rest(
        &c.gw,
        Method::POST,
        "/rest/v1/message_reactions",
        Some(&c.bob_token),
        &[],
        Some(json!({"message_id": c.messages[0], "conversation_id": c.conv, "user_id": c.bob, "emoji": "🎉"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let path = format!("/rest/v1/message_reactions?message_id=eq.{}", c.messages[0]);
    let r = rest(
        &c.gw,
        Method::DELETE,
        &path,
        Some(&c.bob_token),
        &[("prefer", "return=representation")],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let deleted = r.json();
    assert_eq!(deleted.as_array().unwrap().len(), 1, "{deleted}");
    assert_eq!(deleted[0]["emoji"], "🎉");
    let left: Vec<String> =
        c.db.client
            .query("select emoji from message_reactions", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    assert_eq!(left, vec!["👍"]);
}

#[tokio::test]
async fn a_single_object_write_that_touches_two_rows_is_rolled_back() {
    let c = chat().await;
    let r = rest(
        &c.gw,
        Method::POST,
        "/rest/v1/messages",
        Some(&c.bob_token),
        &[
            ("prefer", "return=representation"),
            ("accept", "application/vnd.pgrst.object+json"),
        ],
        Some(
            json!([{"conversation_id": c.conv, "sender_id": c.bob, "body": "a"},
                    {"conversation_id": c.conv, "sender_id": c.bob, "body": "b"}]),
        ),
    )
    .await;
    assert_error(&r, 406, "PGRST116");
    let n: i64 =
        c.db.client
            .query_one(
                "select count(*) from messages where sender_id = $1",
                &[&c.bob],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(n, 0, "the insert was rolled back");
    let r = rest(
        &c.gw,
        Method::POST,
        "/rest/v1/messages",
        Some(&c.bob_token),
        &[
            ("prefer", "return=representation"),
            ("accept", "application/vnd.pgrst.object+json"),
        ],
        Some(json!({"conversation_id": c.conv, "sender_id": c.bob, "body": "one"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["body"], "one");
}

#[tokio::test]
async fn upsert_merges_on_the_primary_key() {
    let c = chat().await;
    let r = rest(
        &c.gw,
        Method::POST,
        "/rest/v1/profiles?select=display_name",
        Some(&c.bob_token),
        &[(
            "prefer",
            "resolution=merge-duplicates,return=representation",
        )],
        Some(json!({"id": c.bob, "display_name": "Robert"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json(), json!([{"display_name": "Robert"}]));
    // Someone else's profile: the update policy finds nothing to merge into.
    let r = rest(
        &c.gw,
        Method::POST,
        "/rest/v1/profiles",
        Some(&c.bob_token),
        &[("prefer", "resolution=merge-duplicates")],
        Some(json!({"id": c.alice, "display_name": "Mallory"})),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let name: String =
        c.db.client
            .query_one(
                "select display_name from profiles where id = $1",
                &[&c.alice],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(name, "Alice");
}

#[tokio::test]
async fn schemas_that_are_not_exposed_cannot_be_reached() {
    let c = chat().await;
    for schema in [
        "auth",
        "private",
        "realtime",
        "pg_catalog",
        "information_schema",
    ] {
        let r = rest(
            &c.gw,
            Method::GET,
            "/rest/v1/settings",
            Some(&c.alice_token),
            &[("accept-profile", schema)],
            None,
        )
        .await;
        assert_error(&r, 406, "PGRST106");
    }
    for table in ["settings", "pg_roles", "pg_authid", "tables", "users"] {
        let r = rest(
            &c.gw,
            Method::GET,
            &format!("/rest/v1/{table}"),
            Some(&c.alice_token),
            &[],
            None,
        )
        .await;
        assert_error(&r, 404, "PGRST205");
    }
}

#[tokio::test]
async fn hostile_input_changes_no_statement() {
    let c = chat().await;
    let hostile = "'; drop table messages; --";
    let enc: String = url::form_urlencoded::byte_serialize(hostile.as_bytes()).collect();
    for path in [
        format!("/rest/v1/messages?body=eq.{enc}"),
        format!("/rest/v1/messages?body=like.{enc}"),
        format!("/rest/v1/messages?body=in.({enc})"),
        format!("/rest/v1/messages?id=eq.{enc}"),
    ] {
        let r = rest(&c.gw, Method::GET, &path, Some(&c.alice_token), &[], None).await;
        // A uuid column refuses the text as a uuid (22P02); text columns find nothing.
        assert!(r.status == 200 || r.status == 400, "{path}: {}", r.text());
        if r.status == 200 {
            assert_eq!(r.json(), json!([]), "{path}");
        } else {
            assert_eq!(r.json()["code"], "22P02");
        }
    }
    for path in [
        format!("/rest/v1/messages?select={enc}"),
        format!("/rest/v1/messages?order={enc}"),
        format!("/rest/v1/messages?{enc}=eq.1"),
        format!("/rest/v1/{enc}"),
        format!("/rest/v1/rpc/{enc}"),
    ] {
        let r = rest(&c.gw, Method::GET, &path, Some(&c.alice_token), &[], None).await;
        assert!(
            matches!(r.status, 400 | 404),
            "{path}: {} {}",
            r.status,
            r.text()
        );
    }
    let r = rest(
        &c.gw,
        Method::POST,
        "/rest/v1/messages",
        Some(&c.alice_token),
        &[],
        Some(json!({"conversation_id": c.conv, "sender_id": c.alice, "body": hostile, "kind\"; drop table messages; --": "x"})),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = rest(
        &c.gw,
        Method::POST,
        "/rest/v1/messages",
        Some(&c.alice_token),
        &[],
        Some(json!({"conversation_id": c.conv, "sender_id": c.alice, "body": hostile})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let stored: String =
        c.db.client
            .query_one(
                "select body from messages order by created_at desc limit 1",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(stored, hostile, "stored verbatim, as data");
    let messages: i64 =
        c.db.client
            .query_one("select count(*) from public.messages", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(messages, 6, "the table and its rows are all still there");
}

#[tokio::test]
async fn a_table_created_after_start_is_found() {
    let c = chat().await;
    let r = rest(
        &c.gw,
        Method::GET,
        "/rest/v1/notes",
        Some(&c.alice_token),
        &[],
        None,
    )
    .await;
    assert_error(&r, 404, "PGRST205");
    c.db.client
        .batch_execute(
            "create table public.notes (id int primary key, text text);
             insert into public.notes values (1, 'hello');
             grant select on public.notes to authenticated;",
        )
        .await
        .unwrap();
    // The catalog looks again on a miss, at most once a second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = rest(
        &c.gw,
        Method::GET,
        "/rest/v1/notes?select=text",
        Some(&c.alice_token),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!([{"text": "hello"}]));
}
