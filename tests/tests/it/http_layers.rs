//! The layers around every HTTP endpoint that a deployment configures: the CORS origins
//! browsers may call from, and the request timeout.

use std::time::{Duration, Instant};

use hyper::Method;
use ripple_tests::http::{request, rest};
use ripple_tests::{fresh_db, gateway_config, spawn_gateway_with};
use serde_json::json;

#[tokio::test]
async fn only_the_configured_origins_get_cors_answers() {
    let db = fresh_db().await;
    let mut config = gateway_config();
    config.cors_allow_origins = vec!["https://chat.example".into()];
    let gw = spawn_gateway_with(&db, config).await;
    let addr = gw.addr;
    let preflight = |origin: &'static str| async move {
        request(
            addr,
            Method::OPTIONS,
            "/rest/v1/messages",
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "authorization, apikey"),
            ],
            None,
        )
        .await
    };
    let allowed = preflight("https://chat.example").await;
    assert_eq!(allowed.status, 204);
    assert_eq!(
        allowed.header("access-control-allow-origin").as_deref(),
        Some("https://chat.example")
    );
    assert!(allowed
        .header("access-control-allow-headers")
        .unwrap()
        .contains("apikey"));
    // Another origin learns nothing that would let its page read the answer.
    let other = preflight("https://evil.example").await;
    assert_eq!(other.header("access-control-allow-origin"), None);
    let r = rest(
        &gw,
        Method::GET,
        "/rest/v1/nope",
        None,
        &[("origin", "https://evil.example")],
        None,
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn a_request_over_the_timeout_is_answered_504_and_others_are_not_held_up() {
    let db = fresh_db().await;
    db.client
        .batch_execute(
            "create function public.slow_answer(seconds float8) returns int language sql as \
             $$ select pg_sleep(seconds); select 42 $$; \
             grant execute on function public.slow_answer(float8) to authenticated;",
        )
        .await
        .unwrap();
    let user = db.create_user("Tess").await;
    let mut config = gateway_config();
    config.request_timeout_secs = 1;
    let gw = spawn_gateway_with(&db, config).await;
    let token = gw.token_for(user, 600);
    let call = |seconds: f64| {
        rest(
            &gw,
            Method::POST,
            "/rest/v1/rpc/slow_answer",
            Some(&token),
            &[],
            Some(json!({ "seconds": seconds })),
        )
    };
    let started = Instant::now();
    let slow = call(4.0).await;
    assert_eq!(slow.status, 504, "{}", slow.text());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // The abandoned statement is cancelled, not left sleeping on a pooled connection that
    // the next request would be handed.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let running: i64 = db
            .client
            .query_one(
                "select count(*) from pg_stat_activity where datname = current_database() \
                   and query like '%slow_answer%' and state = 'active' \
                   and pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if running == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the timed-out statement still runs in PostgreSQL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let quick = call(0.0).await;
    assert_eq!(quick.status, 200, "{}", quick.text());
    assert_eq!(quick.text(), "42");
}
