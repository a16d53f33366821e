//! The HTTP edge of REST against a real gateway: tokens, the apikey, body limits, content
//! types, health, metrics, the statement timeout, and that one request's role and claims
//! never reach the next request on the same pooled connection.

use hyper::Method;
use ripple_tests::http::{request, rest, Resp};
use ripple_tests::{fresh_db, gateway_config, spawn_gateway, spawn_gateway_with};
use serde_json::json;

fn assert_error(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let body = r.json();
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].is_string(), "{body}");
}

#[tokio::test]
async fn without_a_key_or_with_a_bad_token_the_answer_is_401() {
    let db = fresh_db().await;
    let alice = db.create_user("Alice").await;
    let gw = spawn_gateway(&db).await;
    let path = "/rest/v1/rpc/unread_counts";

    let r = request(gw.addr, Method::GET, path, &[], None).await;
    assert_error(&r, 401, "PGRST302");

    let expired = gw.token_for(alice, -10);
    let other_secret = {
        let v = ripple::auth::JwtVerifier::new(&ripple::auth::JwtConfig {
            secret: Some(ripple::auth::Secret::new(
                "another-secret-another-secret-0123456789",
            )),
            ..Default::default()
        })
        .unwrap();
        v.mint_for("authenticated", Some(&alice.to_string()), 600)
            .unwrap()
    };
    let none = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.",
            b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(br#"{"role":"service_role","exp":99999999999}"#)
        )
    };
    // Validly signed, but naming the superuser role: never turned into SET ROLE postgres.
    let superuser = gw.sign(&json!({"role": "postgres", "exp": 99999999999i64}));
    for (token, code) in [
        (superuser.as_str(), "PGRST301"),
        (expired.as_str(), "PGRST303"),
        (other_secret.as_str(), "PGRST301"),
        (none.as_str(), "PGRST301"),
        ("garbage", "PGRST301"),
    ] {
        let r = rest(&gw, Method::GET, path, Some(token), &[], None).await;
        assert_error(&r, 401, code);
        let challenge = r.header("www-authenticate").expect("a challenge");
        assert!(
            challenge.starts_with("Bearer error=\"invalid_token\""),
            "{challenge}"
        );
        assert!(!challenge.contains(token), "the token is never echoed");
    }
    let auth = format!("Basic {}", gw.anon_key);
    let r = request(
        gw.addr,
        Method::GET,
        path,
        &[("authorization", auth.as_str())],
        None,
    )
    .await;
    assert_error(&r, 401, "PGRST301");
}

#[tokio::test]
async fn the_apikey_alone_runs_as_its_role_from_header_or_query() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    // Anon may not call the chat's functions: its role is in force.
    let r = request(
        gw.addr,
        Method::GET,
        "/rest/v1/rpc/unread_counts",
        &[("apikey", gw.anon_key.as_str())],
        None,
    )
    .await;
    assert_error(&r, 401, "42501");
    let r = request(
        gw.addr,
        Method::GET,
        &format!("/rest/v1/rpc/unread_counts?apikey={}", gw.anon_key),
        &[],
        None,
    )
    .await;
    assert_error(&r, 401, "42501");
    // A service_role key bypasses RLS, as in Supabase.
    let service = gw.sign(&json!({"role": "service_role", "exp": ripple::auth::now_epoch() + 60}));
    let someone = db.create_user("Someone").await;
    let r = request(
        gw.addr,
        Method::GET,
        "/rest/v1/profiles?select=display_name",
        &[("apikey", service.as_str())],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!([{"display_name": "Someone"}]));
    let _ = someone;
}

#[tokio::test]
async fn claims_never_leak_between_requests_on_one_connection() {
    let db = fresh_db().await;
    let alice = db.create_user("Alice").await;
    let bob = db.create_user("Bob").await;
    db.client
        .batch_execute(
            "create function public.whoami() returns jsonb language sql stable as
               $$ select jsonb_build_object('uid', auth.uid(), 'role', current_user,
                                            'timeout', current_setting('statement_timeout')) $$;
             grant execute on function public.whoami() to anon, authenticated;",
        )
        .await
        .unwrap();
    let mut config = gateway_config();
    config.pool_size = 1; // every request shares one connection
    let gw = spawn_gateway_with(&db, config).await;
    let ta = gw.token_for(alice, 600);
    let tb = gw.token_for(bob, 600);
    for round in 0..3 {
        for (token, uid, role) in [
            (Some(ta.as_str()), json!(alice.to_string()), "authenticated"),
            (None, json!(null), "anon"),
            (Some(tb.as_str()), json!(bob.to_string()), "authenticated"),
        ] {
            let r = rest(&gw, Method::GET, "/rest/v1/rpc/whoami", token, &[], None).await;
            assert_eq!(r.status, 200, "{}", r.text());
            let v = r.json();
            assert_eq!(v["uid"], uid, "round {round}");
            assert_eq!(v["role"], role, "round {round}");
            assert_eq!(v["timeout"], "8s");
        }
        // A failing request in between leaves nothing behind either.
        let r = rest(
            &gw,
            Method::GET,
            "/rest/v1/profiles?id=eq.nope",
            Some(&ta),
            &[],
            None,
        )
        .await;
        assert_eq!(r.status, 400);
    }
}

#[tokio::test]
async fn a_slow_statement_is_cancelled_by_the_statement_timeout() {
    let db = fresh_db().await;
    let alice = db.create_user("Alice").await;
    db.client
        .batch_execute(
            "create function public.slow() returns int language sql volatile as
               $$ select pg_sleep(5); select 1 $$;
             grant execute on function public.slow() to authenticated;",
        )
        .await
        .unwrap();
    let mut config = gateway_config();
    config.statement_timeout_ms = 300;
    let gw = spawn_gateway_with(&db, config).await;
    let started = std::time::Instant::now();
    let r = rest(
        &gw,
        Method::POST,
        "/rest/v1/rpc/slow",
        Some(&gw.token_for(alice, 60)),
        &[],
        Some(json!({})),
    )
    .await;
    assert_error(&r, 500, "57014");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "cancelled, not waited out"
    );
}

#[tokio::test]
async fn oversized_bodies_are_413_announced_or_not() {
    let db = fresh_db().await;
    let alice = db.create_user("Alice").await;
    let mut config = gateway_config();
    config.max_body_bytes = 1024;
    let gw = spawn_gateway_with(&db, config).await;
    let token = gw.token_for(alice, 60);
    let auth = format!("Bearer {token}");
    let big = json!({"display_name": "x".repeat(2000)})
        .to_string()
        .into_bytes();
    let r = request(
        gw.addr,
        Method::POST,
        "/rest/v1/profiles",
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ],
        Some(big.clone()),
    )
    .await;
    assert_error(&r, 413, "RPL413");

    // Chunked, with no Content-Length: refused once the limit is passed.
    let mut conn = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let head = format!(
        "POST /rest/v1/profiles HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    for chunk in big.chunks(500) {
        let _ = conn
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await;
        let _ = conn.write_all(chunk).await;
        let _ = conn.write_all(b"\r\n").await;
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"code\":\"RPL413\""), "{answer}");

    // Under the limit is fine.
    let r = rest(
        &gw,
        Method::PATCH,
        &format!("/rest/v1/profiles?id=eq.{alice}"),
        Some(&token),
        &[],
        Some(json!({"display_name": "Al"})),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
}

#[tokio::test]
async fn wrong_content_type_and_bad_json_are_refused_in_postgrest_form() {
    let db = fresh_db().await;
    let alice = db.create_user("Alice").await;
    let gw = spawn_gateway(&db).await;
    let auth = format!("Bearer {}", gw.token_for(alice, 60));
    let send = |ct: &'static str, body: &'static str| {
        let auth = auth.clone();
        let addr = gw.addr;
        async move {
            request(
                addr,
                Method::POST,
                "/rest/v1/rpc/unread_counts",
                &[("authorization", auth.as_str()), ("content-type", ct)],
                Some(body.as_bytes().to_vec()),
            )
            .await
        }
    };
    assert_error(&send("text/plain", "{}").await, 415, "PGRST107");
    assert_error(
        &send("application/x-www-form-urlencoded", "a=1").await,
        415,
        "PGRST107",
    );
    assert_error(&send("application/json", "{\"a\":").await, 400, "PGRST102");
    assert_error(&send("application/json", "[1]").await, 400, "PGRST102");
    let ok = send("application/json", "{}").await;
    assert_eq!(ok.status, 200, "{}", ok.text());
}

#[tokio::test]
async fn health_is_ready_only_with_database_and_replication() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    // Ready once the database answers and the replication stream runs.
    let mut r = request(gw.addr, Method::GET, "/health", &[], None).await;
    for _ in 0..100 {
        if r.status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        r = request(gw.addr, Method::GET, "/health", &[], None).await;
    }
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["database"], "up");
    assert_eq!(v["replication"], "up");
    // Cut the stream: until it reconnects, health says replication is down.
    db.client
        .execute(
            "select pg_terminate_backend(active_pid) from pg_replication_slots \
             where database = current_database() and active_pid is not null",
            &[],
        )
        .await
        .unwrap();
    let mut saw_down = false;
    for _ in 0..200 {
        let r = request(gw.addr, Method::GET, "/health", &[], None).await;
        if r.status == 503 {
            assert_eq!(r.json()["down"], json!(["replication"]));
            saw_down = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(saw_down, "health reported the lost stream");

    // A gateway whose database is unreachable says so too.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!(
        "postgres://nobody@127.0.0.1:{}/nothing?connect_timeout=1",
        closed.local_addr().unwrap().port()
    );
    drop(closed);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = ripple::server::run(listener, gateway_config(), &dead_url, async {
            let _ = stopped.await;
        })
        .await;
    });
    let r = request(addr, Method::GET, "/health", &[], None).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["down"], json!(["database", "replication"]));
    let _ = stop.send(());
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_class_in_prometheus_text() {
    let db = fresh_db().await;
    let alice = db.create_user("Alice").await;
    let gw = spawn_gateway(&db).await;
    let token = gw.token_for(alice, 60);
    for _ in 0..3 {
        let r = rest(
            &gw,
            Method::GET,
            "/rest/v1/rpc/unread_counts",
            Some(&token),
            &[],
            None,
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let r = rest(&gw, Method::GET, "/rest/v1/nope", Some(&token), &[], None).await;
    assert_eq!(r.status, 404);
    let r = request(gw.addr, Method::GET, "/metrics", &[], None).await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = r.text();
    assert!(
        text.contains("ripple_http_requests_total{route=\"rest\",class=\"2xx\"} 3\n"),
        "{text}"
    );
    assert!(
        text.contains("ripple_http_requests_total{route=\"rest\",class=\"4xx\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("ripple_http_request_duration_seconds_count{route=\"rest\"} 4\n"),
        "{text}"
    );
    assert!(
        text.contains("ripple_rest_requests_total{target=\"rpc\"} 3\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE ripple_db_pool_connections gauge"),
        "{text}"
    );
    assert!(text.contains("ripple_db_pool_max 16\n"), "{text}");
    // Every sample line is `name{labels} number`.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
}

#[tokio::test]
async fn browsers_get_cors_answers() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let r = request(
        gw.addr,
        Method::OPTIONS,
        "/rest/v1/messages",
        &[
            ("origin", "http://localhost:5173"),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization, apikey, content-type, prefer",
            ),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin").unwrap(), "*");
    let allowed = r.header("access-control-allow-headers").unwrap();
    for h in [
        "authorization",
        "apikey",
        "content-type",
        "prefer",
        "range",
        "x-client-info",
    ] {
        assert!(allowed.contains(h), "{h}: {allowed}");
    }
    let r = rest(&gw, Method::GET, "/rest/v1/nope", None, &[], None).await;
    assert!(r
        .header("access-control-expose-headers")
        .unwrap()
        .contains("content-range"));
}
