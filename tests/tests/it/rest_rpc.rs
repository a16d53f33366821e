//! RPC over HTTP against a real gateway and database: result shapes, argument typing,
//! PostgREST's error statuses, and that the caller's token is the only authority.

use hyper::Method;
use ripple_tests::http::{rest, Resp};
use ripple_tests::{fresh_db, spawn_gateway, Gateway, TestDb};
use serde_json::{json, Value};
use uuid::Uuid;

async fn post(gw: &Gateway, f: &str, token: Option<&str>, args: Value) -> Resp {
    rest(
        gw,
        Method::POST,
        &format!("/rest/v1/rpc/{f}"),
        token,
        &[],
        Some(args),
    )
    .await
}

fn assert_error(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let body = r.json();
    assert_eq!(body["code"], code, "{body}");
    for field in ["message", "details", "hint"] {
        assert!(
            body.get(field).is_some(),
            "PostgREST error bodies carry {field}: {body}"
        );
    }
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
}

async fn chat() -> Chat {
    let db = fresh_db().await;
    let alice = db.create_user("Alice").await;
    let bob = db.create_user("Bob").await;
    let eve = db.create_user("Eve").await;
    let gw = spawn_gateway(&db).await;
    let alice_token = gw.token_for(alice, 600);
    let bob_token = gw.token_for(bob, 600);
    let eve_token = gw.token_for(eve, 600);
    let r = post(
        &gw,
        "start_direct_conversation",
        Some(&alice_token),
        json!({"other_user_id": bob}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let conv: Uuid = serde_json::from_value(r.json()).expect("a scalar uuid");
    Chat {
        db,
        gw,
        alice,
        bob,
        eve,
        alice_token,
        bob_token,
        eve_token,
        conv,
    }
}

#[tokio::test]
async fn a_scalar_function_answers_its_bare_json_value() {
    let c = chat().await;
    // The uuid came back as a bare JSON string (see chat()); the other user agrees on it.
    let r = post(
        &c.gw,
        "start_direct_conversation",
        Some(&c.bob_token),
        json!({"other_user_id": c.alice}),
    )
    .await;
    assert_eq!(r.json(), json!(c.conv.to_string()));
    assert_eq!(
        r.header("content-type").unwrap(),
        "application/json; charset=utf-8"
    );
    // A jsonb scalar is the object itself.
    let r = rest(
        &c.gw,
        Method::GET,
        "/rest/v1/rpc/unread_counts",
        Some(&c.bob_token),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"total_unread": 0, "by_conversation": []}));
}

#[tokio::test]
async fn a_composite_function_answers_an_object_and_a_set_an_array() {
    let c = chat().await;
    let r = post(
        &c.gw,
        "send_message",
        Some(&c.alice_token),
        json!({"conversation_id": c.conv, "body": "hello bob", "client_id": "k1"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let m = r.json();
    assert!(m.is_object(), "{m}");
    assert_eq!(m["body"], "hello bob");
    assert_eq!(m["sender_id"], c.alice.to_string());
    // The idempotency key: a retry returns the first message.
    let again = post(
        &c.gw,
        "send_message",
        Some(&c.alice_token),
        json!({"conversation_id": c.conv, "body": "hello bob", "client_id": "k1"}),
    )
    .await;
    assert_eq!(again.json()["id"], m["id"]);

    let r = rest(
        &c.gw,
        Method::GET,
        "/rest/v1/rpc/list_conversations",
        Some(&c.bob_token),
        &[],
        None,
    )
    .await;
    let rows = r.json();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows[0]["id"], c.conv.to_string());
    assert_eq!(rows[0]["unread_count"], 1);
    assert_eq!(rows[0]["other_member"]["display_name"], "Alice");
}

#[tokio::test]
async fn a_void_function_answers_204_without_a_body() {
    let c = chat().await;
    let r = post(
        &c.gw,
        "set_archived",
        Some(&c.alice_token),
        json!({"conversation_id": c.conv, "archived": true}),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.body.is_empty());
    let archived: Option<chrono::DateTime<chrono::Utc>> = c
        .db
        .client
        .query_one(
            "select archived_at from conversation_members where conversation_id = $1 and user_id = $2",
            &[&c.conv, &c.alice],
        )
        .await
        .unwrap()
        .get(0);
    assert!(archived.is_some(), "the call did its work");
}

#[tokio::test]
async fn get_passes_query_arguments_typed_by_the_signature_and_filters_the_rest() {
    let c = chat().await;
    for i in 0..5 {
        c.db.as_user(c.alice)
            .query(
                "select public.send_message($1, $2)",
                &[&c.conv, &format!("m{i}")],
            )
            .await;
    }
    // lim is an integer argument given as query text; body=eq.m3 filters the rows.
    let path = "/rest/v1/rpc/search_messages?query=m3&lim=10&select=body,conversation_id";
    let r = rest(&c.gw, Method::GET, path, Some(&c.bob_token), &[], None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!([{"body": "m3", "conversation_id": c.conv.to_string()}])
    );

    let r = rest(
        &c.gw,
        Method::GET,
        "/rest/v1/rpc/list_conversations?lim=5&kind=eq.direct&select=id,unread_count&order=id.desc",
        Some(&c.bob_token),
        &[("prefer", "count=exact")],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!([{"id": c.conv.to_string(), "unread_count": 5}])
    );
    assert_eq!(r.header("content-range").unwrap(), "0-0/1");
    let r = rest(
        &c.gw,
        Method::GET,
        "/rest/v1/rpc/list_conversations?kind=eq.group",
        Some(&c.bob_token),
        &[],
        None,
    )
    .await;
    assert_eq!(r.json(), json!([]));
}

#[tokio::test]
async fn history_pages_with_limits_and_before_id() {
    let c = chat().await;
    for i in 0..5 {
        c.db.as_user(c.alice)
            .query(
                "select public.send_message($1, $2)",
                &[&c.conv, &format!("m{i}")],
            )
            .await;
    }
    let page = |before: Option<String>| {
        let mut args = json!({"conversation_id": c.conv, "lim": 2});
        if let Some(b) = before {
            args["before_id"] = json!(b);
        }
        args
    };
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let r = post(
            &c.gw,
            "get_messages",
            Some(&c.bob_token),
            page(before.clone()),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let rows = r.json();
        let rows = rows.as_array().unwrap();
        if rows.is_empty() {
            break;
        }
        assert!(rows.len() <= 2);
        seen.extend(rows.iter().map(|m| m["body"].as_str().unwrap().to_string()));
        before = Some(rows.last().unwrap()["id"].as_str().unwrap().to_string());
    }
    assert_eq!(seen, vec!["m4", "m3", "m2", "m1", "m0"]);
}

#[tokio::test]
async fn volatile_functions_refuse_get_and_unknown_ones_are_404() {
    let c = chat().await;
    let r = rest(
        &c.gw,
        Method::GET,
        &format!(
            "/rest/v1/rpc/send_message?conversation_id={}&body=x",
            c.conv
        ),
        Some(&c.alice_token),
        &[],
        None,
    )
    .await;
    assert_error(&r, 405, "PGRST101");
    let count: i64 =
        c.db.client
            .query_one("select count(*) from messages", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(count, 0, "nothing was sent");

    let r = post(&c.gw, "no_such_function", Some(&c.alice_token), json!({})).await;
    assert_error(&r, 404, "PGRST202");
    // An argument the function does not have.
    let r = post(
        &c.gw,
        "send_message",
        Some(&c.alice_token),
        json!({"conversation_id": c.conv, "body": "x", "as_user": c.bob}),
    )
    .await;
    assert_error(&r, 404, "PGRST202");
    assert!(r.json()["hint"]
        .as_str()
        .unwrap()
        .contains("conversation_id"));
    // Helpers in private and auth are not reachable, even by name.
    for f in ["is_member", "fail", "uid", "jwt", "settings"] {
        let r = post(&c.gw, f, Some(&c.alice_token), json!({})).await;
        assert_error(&r, 404, "PGRST202");
    }
}

#[tokio::test]
async fn chat_errors_keep_their_sqlstate_and_get_postgrest_statuses() {
    let c = chat().await;
    // 42501 from the function: an outsider sending into someone else's conversation.
    let r = post(
        &c.gw,
        "send_message",
        Some(&c.eve_token),
        json!({"conversation_id": c.conv, "body": "let me in"}),
    )
    .await;
    assert_error(&r, 403, "42501");
    // P0002 (not found) -> 404: history of a conversation one is not in.
    let r = post(
        &c.gw,
        "get_messages",
        Some(&c.eve_token),
        json!({"conversation_id": c.conv}),
    )
    .await;
    assert_error(&r, 404, "P0002");
    // 22023 (bad argument) -> 400.
    let r = post(
        &c.gw,
        "start_direct_conversation",
        Some(&c.alice_token),
        json!({"other_user_id": c.alice}),
    )
    .await;
    assert_error(&r, 400, "22023");
    // 22P02: not a uuid -> 400, from the argument's own type.
    let r = post(
        &c.gw,
        "get_messages",
        Some(&c.bob_token),
        json!({"conversation_id": "nope"}),
    )
    .await;
    assert_error(&r, 400, "22P02");
    // P0001 (a chat rule) -> 400: the edit window.
    let m: Uuid =
        c.db.as_user(c.alice)
            .query_one("select (public.send_message($1, 'old')).id", &[&c.conv])
            .await
            .get(0);
    c.db.client
        .execute(
            "update messages set created_at = now() - interval '1 hour' where id = $1",
            &[&m],
        )
        .await
        .unwrap();
    let r = post(
        &c.gw,
        "edit_message",
        Some(&c.alice_token),
        json!({"message_id": m, "body": "new"}),
    )
    .await;
    assert_error(&r, 400, "P0001");
    assert!(
        r.json()["hint"].as_str().unwrap().contains("15"),
        "{}",
        r.text()
    );
    // Nothing was stored by any of them.
    let sent: i64 =
        c.db.client
            .query_one("select count(*) from messages where body <> 'old'", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(sent, 0);
}

#[tokio::test]
async fn the_anon_key_may_call_nothing_and_gets_401() {
    let c = chat().await;
    for (f, args) in [
        (
            "send_message",
            json!({"conversation_id": c.conv, "body": "x"}),
        ),
        ("list_conversations", json!({})),
        ("start_direct_conversation", json!({"other_user_id": c.bob})),
    ] {
        let r = post(&c.gw, f, None, args).await;
        assert_error(&r, 401, "42501");
    }
}

#[tokio::test]
async fn a_single_object_is_served_when_asked_and_refused_when_not_one_row() {
    let c = chat().await;
    let one = [("accept", "application/vnd.pgrst.object+json")];
    let r = rest(
        &c.gw,
        Method::GET,
        "/rest/v1/rpc/list_conversations",
        Some(&c.alice_token),
        &one,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], c.conv.to_string());
    assert_eq!(
        r.header("content-type").unwrap(),
        "application/vnd.pgrst.object+json; charset=utf-8"
    );
    let r = rest(
        &c.gw,
        Method::GET,
        "/rest/v1/rpc/list_conversations",
        Some(&c.eve_token),
        &one,
        None,
    )
    .await;
    assert_error(&r, 406, "PGRST116");
}

#[tokio::test]
async fn arrays_and_enums_in_arguments_take_their_postgres_types() {
    let c = chat().await;
    let r = post(
        &c.gw,
        "create_group_conversation",
        Some(&c.alice_token),
        json!({"title": "team", "member_ids": [c.bob, c.eve]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let group: Uuid = serde_json::from_value(r.json()).unwrap();
    let members: i64 =
        c.db.client
            .query_one(
                "select count(*) from conversation_members where conversation_id = $1",
                &[&group],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(members, 3);
    // An enum argument, and a bad enum value (22P02 -> 400).
    let r = post(
        &c.gw,
        "add_conversation_member",
        Some(&c.alice_token),
        json!({"conversation_id": group, "user_id": c.bob, "role": "admin"}),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = post(
        &c.gw,
        "add_conversation_member",
        Some(&c.alice_token),
        json!({"conversation_id": group, "user_id": c.bob, "role": "emperor"}),
    )
    .await;
    assert_error(&r, 400, "22P02");
}
