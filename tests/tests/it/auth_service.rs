//! The auth service (`/auth/v1/`) over HTTP against a real gateway and PostgreSQL, for what the
//! supabase-js test (`supabase_js_auth`) cannot show from one client address: the
//! per-address rate limit, what reaches the logs, Ripple's own signing key and JWKS, a JWKS
//! URL fetched again when keys rotate, and users managed by the DBA in SQL.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::Method;
use ripple::auth::jwks::JwksSource;
use ripple::auth::keys::SigningKey;
use ripple_tests::http::{request, rest, Resp};
use ripple_tests::{fresh_db, gateway_config, spawn_gateway_with, Gateway};
use serde_json::{json, Value};

const PASSWORD: &str = "a-long-enough-password";

async fn post(gw: &Gateway, path: &str, body: Value) -> Resp {
    request(
        gw.addr,
        Method::POST,
        path,
        &[
            ("apikey", gw.anon_key.as_str()),
            ("content-type", "application/json"),
        ],
        Some(body.to_string().into_bytes()),
    )
    .await
}

async fn sign_up(gw: &Gateway, email: &str) -> Resp {
    post(
        gw,
        "/auth/v1/signup",
        json!({"email": email, "password": PASSWORD, "data": {"display_name": "T"}}),
    )
    .await
}

async fn sign_in(gw: &Gateway, email: &str, password: &str) -> Resp {
    post(
        gw,
        "/auth/v1/token?grant_type=password",
        json!({"email": email, "password": password}),
    )
    .await
}

async fn refresh(gw: &Gateway, token: &str) -> Resp {
    post(
        gw,
        "/auth/v1/token?grant_type=refresh_token",
        json!({ "refresh_token": token }),
    )
    .await
}

async fn with_bearer(
    gw: &Gateway,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Resp {
    let auth = format!("Bearer {token}");
    let mut headers = vec![
        ("apikey", gw.anon_key.as_str()),
        ("authorization", auth.as_str()),
    ];
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    request(
        gw.addr,
        method,
        path,
        &headers,
        body.map(|b| b.to_string().into_bytes()),
    )
    .await
}

/// `ripple serve` runs as its own process logging everything at every level to a file, as an
/// operator's would (an in-process capture would also see the other tests running beside it).
#[tokio::test]
async fn no_password_token_hash_or_email_reaches_the_logs() {
    let db = fresh_db().await;
    let (_serve, gw, log_path) = ripple_tests::serve_logging_to_file(
        &db,
        "auth",
        &[
            ("RIPPLE_LOG", "ripple=trace"),
            ("RIPPLE_AUTH_REFRESH_REUSE_INTERVAL_SECS", "0"),
        ],
    )
    .await;
    let email = "Logged.Person@example.com";
    let up = sign_up(&gw, email).await;
    assert_eq!(up.status, 200, "{}", up.text());
    let first = up.json();
    let wrong = sign_in(&gw, email, "wrong-password-1").await;
    assert_eq!(wrong.status, 400);
    let inn = sign_in(&gw, email, PASSWORD).await.json();
    let next = refresh(&gw, inn["refresh_token"].as_str().unwrap())
        .await
        .json();
    // Reuse: logged as a warning, which must name no token.
    let reused = refresh(&gw, inn["refresh_token"].as_str().unwrap()).await;
    assert_eq!(reused.json()["error_code"], "refresh_token_already_used");
    let access = first["access_token"].as_str().unwrap();
    let changed = with_bearer(
        &gw,
        Method::PUT,
        "/auth/v1/user",
        access,
        Some(json!({"password": "the-second-password"})),
    )
    .await;
    assert_eq!(changed.status, 200, "{}", changed.text());
    let out = with_bearer(
        &gw,
        Method::POST,
        "/auth/v1/logout?scope=global",
        access,
        None,
    )
    .await;
    assert_eq!(out.status, 204);
    let hash: String = db
        .client
        .query_one(
            "select encrypted_password from auth.users where lower(email) = lower($1)",
            &[&email],
        )
        .await
        .unwrap()
        .get(0);

    let text = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    assert!(
        text.contains("auth: user signed up"),
        "the capture works: {text}"
    );
    assert!(text.contains("used again"), "the reuse was logged: {text}");
    let secrets = [
        PASSWORD,
        "wrong-password-1",
        "the-second-password",
        &hash,
        &hash[hash.len() - 20..],
        first["refresh_token"].as_str().unwrap(),
        inn["refresh_token"].as_str().unwrap(),
        next["refresh_token"].as_str().unwrap(),
        access,
        // The signature alone (the part that makes a token usable).
        access.rsplit('.').next().unwrap(),
        email,
        &email.to_lowercase(),
    ];
    for s in secrets {
        assert!(
            !text.contains(s),
            "the logs contain a secret or an email: {s}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_address_limit_trips_and_recovers() {
    let db = fresh_db().await;
    let mut config = gateway_config();
    config.auth.rate_per_address = 3;
    config.auth.rate_per_email = 0;
    config.auth.rate_window_secs = 2;
    let gw = spawn_gateway_with(&db, config).await;
    // Different emails from one address: the address's bucket empties.
    let mut statuses = Vec::new();
    for i in 0..5 {
        let r = sign_in(&gw, &format!("nobody{i}@example.com"), "whatever-password").await;
        statuses.push(r.status);
        if r.status == 429 {
            let body = r.json();
            assert_eq!(body["error_code"], "over_request_rate_limit");
            assert_eq!(body["code"], 429);
        }
    }
    assert_eq!(&statuses[..3], &[400, 400, 400], "{statuses:?}");
    assert_eq!(statuses[4], 429, "{statuses:?}");
    // Sign-ups count too, and a made-up X-Forwarded-For changes nothing (not trusted by
    // default).
    assert_eq!(sign_up(&gw, "new@example.com").await.status, 429);
    let spoofed = request(
        gw.addr,
        Method::POST,
        "/auth/v1/token?grant_type=password",
        &[
            ("content-type", "application/json"),
            ("x-forwarded-for", "203.0.113.9"),
        ],
        Some(
            json!({"email": "spoof@example.com", "password": "whatever-password"})
                .to_string()
                .into_bytes(),
        ),
    )
    .await;
    assert_eq!(spoofed.status, 429);
    // One attempt comes back every window / capacity (0.67 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = sign_up(&gw, "new@example.com").await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// The payload of a JWT, decoded (no verification: the gateway's answers test that).
fn jwt_part(token: &str, i: usize) -> Value {
    use base64::Engine;
    let part = token.split('.').nth(i).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ripple_signs_with_its_own_key_and_serves_its_jwks() {
    let db = fresh_db().await;
    let dir = std::env::temp_dir().join(format!("ripple-key-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_path = dir.join("signing.pem");
    std::fs::write(
        &key_path,
        include_str!("../../../gateway/src/auth/testdata/ed25519_private.pem"),
    )
    .unwrap();
    let mut config = gateway_config();
    config.auth.signing_key = Some(key_path);
    config.auth.signing_kid = Some("ripple-ed-1".into());
    let gw = spawn_gateway_with(&db, config).await;

    let jwks = request(
        gw.addr,
        Method::GET,
        "/auth/v1/.well-known/jwks.json",
        &[],
        None,
    )
    .await;
    assert_eq!(jwks.status, 200);
    let jwks = jwks.json();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    let jwk = &jwks["keys"][0];
    assert_eq!(jwk["kid"], "ripple-ed-1");
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["alg"], "EdDSA");
    assert!(jwk.get("d").is_none(), "the private key is not published");

    let session = sign_up(&gw, "ed@example.com").await.json();
    let access = session["access_token"].as_str().unwrap();
    let header = jwt_part(access, 0);
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], "ripple-ed-1");
    // Ripple accepts its own token for REST and /user (that the published JWK verifies it is
    // shown in gateway/src/auth/keys.rs).
    let made = rest(
        &gw,
        Method::POST,
        "/rest/v1/rpc/create_group_conversation",
        Some(access),
        &[],
        Some(json!({"title": "signed by Ripple's key"})),
    )
    .await;
    assert_eq!(made.status, 200, "{}", made.text());
    assert_eq!(
        with_bearer(&gw, Method::GET, "/auth/v1/user", access, None)
            .await
            .json()["email"],
        "ed@example.com"
    );
    // A token claiming Ripple's kid but signed by another key is refused.
    let other = SigningKey::from_pem(
        include_str!("../../../gateway/src/auth/testdata/ec_other_private.pem"),
        Some("ripple-ed-1".into()),
    )
    .unwrap();
    let forged = other
        .sign(
            &json!({"sub": session["user"]["id"], "role": "authenticated",
                       "exp": ripple::auth::now_epoch() + 60}),
        )
        .unwrap();
    let refused = rest(
        &gw,
        Method::GET,
        "/rest/v1/conversations",
        Some(&forged),
        &[],
        None,
    )
    .await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    let _ = std::fs::remove_dir_all(dir);
}

/// Serves `doc` at any path on a loopback port: the JWKS endpoint of "another issuer".
async fn serve_jwks(doc: Arc<Mutex<String>>) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let body = doc.lock().unwrap().clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_url_is_fetched_and_fetched_again_when_keys_rotate() {
    let db = fresh_db().await;
    let user = db.create_user("Rotating").await;
    let old_key = SigningKey::from_pem(
        include_str!("../../../gateway/src/auth/testdata/ec_private.pem"),
        Some("old".into()),
    )
    .unwrap();
    let new_key = SigningKey::from_pem(
        include_str!("../../../gateway/src/auth/testdata/rsa_private.pem"),
        Some("new".into()),
    )
    .unwrap();
    let doc = Arc::new(Mutex::new(
        json!({"keys": [old_key.public_jwk()]}).to_string(),
    ));
    let addr = serve_jwks(doc.clone()).await;
    let mut config = gateway_config();
    config.jwks = vec![JwksSource::Url(
        format!("http://{addr}/.well-known/jwks.json")
            .parse()
            .unwrap(),
    )];
    config.jwks_refresh_secs = 2;
    let gw = spawn_gateway_with(&db, config).await;
    let claims = json!({"sub": user.to_string(), "role": "authenticated",
                        "exp": ripple::auth::now_epoch() + 600});
    let old_token = old_key.sign(&claims).unwrap();
    let new_token = new_key.sign(&claims).unwrap();
    let status = |token: String| {
        let gw = &gw;
        async move {
            rest(
                gw,
                Method::GET,
                "/rest/v1/conversations?select=id",
                Some(&token),
                &[],
                None,
            )
            .await
            .status
        }
    };
    let wait_for = |token: String, want: u16| {
        let status = &status;
        async move {
            for _ in 0..100 {
                if status(token.clone()).await == want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("the token never answered {want}");
        }
    };
    // The first fetch happens at start.
    wait_for(old_token.clone(), 200).await;
    let first = rest(
        &gw,
        Method::GET,
        "/rest/v1/conversations",
        Some(&new_token),
        &[],
        None,
    )
    .await;
    assert_eq!(first.status, 401);
    assert!(first.text().contains("kid"), "{}", first.text());
    // The issuer rotates: the new key is fetched (prompted by the unknown kid), the old one
    // is gone.
    *doc.lock().unwrap() = json!({"keys": [new_key.public_jwk()]}).to_string();
    wait_for(new_token.clone(), 200).await;
    wait_for(old_token, 401).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dba_sees_bans_confirms_and_deletes_users_in_sql() {
    let db = fresh_db().await;
    let mut config = gateway_config();
    config.auth.confirm_email = true;
    let gw = spawn_gateway_with(&db, config).await;

    // With confirmation on, sign-up gives a user but no session, and sign-in waits.
    let up = sign_up(&gw, "wait@example.com").await;
    assert_eq!(up.status, 200, "{}", up.text());
    let user = up.json();
    assert!(user.get("access_token").is_none());
    assert!(user["email_confirmed_at"].is_null());
    let id: uuid::Uuid = user["id"].as_str().unwrap().parse().unwrap();
    let r = sign_in(&gw, "wait@example.com", PASSWORD).await;
    assert_eq!(r.json()["error_code"], "email_not_confirmed");
    // The profile exists already, named from the metadata.
    let name: String = db
        .client
        .query_one(
            "select display_name from public.profiles where id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "T");

    // The DBA confirms in SQL; the hash is argon2id, never the password.
    let hash: String = db
        .client
        .query_one(
            "update auth.users set email_confirmed_at = now() where email = 'wait@example.com' \
             returning encrypted_password",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(hash.starts_with("$argon2id$") && !hash.contains(PASSWORD));
    let session = sign_in(&gw, "WAIT@example.com", PASSWORD).await.json();
    let rt = session["refresh_token"].as_str().unwrap().to_string();

    // Requests never see the auth tables.
    let (code, _) = db
        .as_user(id)
        .query_err("select email from auth.users", &[])
        .await;
    assert_eq!(code, "42501");
    let (code, _) = db
        .as_anon()
        .query_err("select token_hash from auth.refresh_tokens", &[])
        .await;
    assert_eq!(code, "42501");
    let exposed = rest(
        &gw,
        Method::GET,
        "/rest/v1/users",
        Some(session["access_token"].as_str().unwrap()),
        &[("accept-profile", "auth")],
        None,
    )
    .await;
    assert!(
        exposed.status >= 400,
        "auth is not a REST schema: {}",
        exposed.text()
    );

    // A ban stops sign-in and refresh.
    db.client
        .execute(
            "update auth.users set banned_until = 'infinity' where id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(
        sign_in(&gw, "wait@example.com", PASSWORD).await.json()["error_code"],
        "user_banned"
    );
    assert_eq!(refresh(&gw, &rt).await.json()["error_code"], "user_banned");
    // Deleting the user ends their sessions; the profile stays.
    db.client
        .execute("delete from auth.users where id = $1", &[&id])
        .await
        .unwrap();
    assert_eq!(
        refresh(&gw, &rt).await.json()["error_code"],
        "refresh_token_not_found"
    );
    let sessions: i64 = db
        .client
        .query_one("select count(*) from auth.sessions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sessions, 0);
    let profiles: i64 = db
        .client
        .query_one("select count(*) from public.profiles where id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(profiles, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_gotrue_errors_and_change_nothing() {
    let db = fresh_db().await;
    let mut config = gateway_config();
    config.auth.disable_signup = true;
    let gw = spawn_gateway_with(&db, config).await;
    let r = sign_up(&gw, "x@example.com").await;
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error_code"], "signup_disabled");

    let garbage = request(
        gw.addr,
        Method::POST,
        "/auth/v1/token?grant_type=password",
        &[("content-type", "application/json")],
        Some(b"{not json".to_vec()),
    )
    .await;
    assert_eq!(garbage.status, 400);
    assert_eq!(garbage.json()["error_code"], "bad_json");
    let grant = post(&gw, "/auth/v1/token?grant_type=magic", json!({})).await;
    assert_eq!(grant.status, 400);
    let no_bearer = request(gw.addr, Method::GET, "/auth/v1/user", &[], None).await;
    assert_eq!(no_bearer.status, 401);
    assert_eq!(no_bearer.json()["error_code"], "no_authorization");
    // The anon key is a valid token but no user.
    let anon = with_bearer(
        &gw,
        Method::GET,
        "/auth/v1/user",
        &gw.anon_key.clone(),
        None,
    )
    .await;
    assert_eq!(anon.status, 403);
    let scope = with_bearer(
        &gw,
        Method::POST,
        "/auth/v1/logout?scope=everyone",
        &gw.anon_key.clone(),
        None,
    )
    .await;
    assert_eq!(scope.status, 400);
    let unknown = request(
        gw.addr,
        Method::GET,
        "/auth/v1/authorize?provider=github",
        &[],
        None,
    )
    .await;
    assert_eq!(unknown.status, 404);
    let settings = request(gw.addr, Method::GET, "/auth/v1/settings", &[], None)
        .await
        .json();
    assert_eq!(settings["disable_signup"], true);
    assert_eq!(settings["mailer_autoconfirm"], true);
    let users: i64 = db
        .client
        .query_one("select count(*) from auth.users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(users, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_refresh_works_within_the_interval_and_is_reuse_after_it() {
    let db = fresh_db().await;
    let mut config = gateway_config();
    config.auth.refresh_reuse_interval_secs = 2;
    let gw = spawn_gateway_with(&db, config).await;
    let session = sign_up(&gw, "retry@example.com").await.json();
    let first = session["refresh_token"].as_str().unwrap().to_string();
    let a = refresh(&gw, &first).await.json();
    // The answer was "lost": the client sends the same token again at once.
    let b = refresh(&gw, &first).await;
    assert_eq!(b.status, 200, "{}", b.text());
    let b = b.json();
    assert_ne!(a["refresh_token"], b["refresh_token"]);
    // Both children work (one of them the client never saw).
    let b_next = refresh(&gw, b["refresh_token"].as_str().unwrap()).await;
    assert_eq!(b_next.status, 200, "{}", b_next.text());
    // Past the interval, the first token again is reuse: the session ends, children too.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let reused = refresh(&gw, &first).await;
    assert_eq!(reused.json()["error_code"], "refresh_token_already_used");
    let after = refresh(&gw, b_next.json()["refresh_token"].as_str().unwrap()).await;
    assert_eq!(after.json()["error_code"], "refresh_token_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_forwarded_address_is_limited() {
    let db = fresh_db().await;
    let mut config = gateway_config();
    config.auth.rate_per_address = 2;
    config.auth.rate_per_email = 0;
    config.auth.rate_window_secs = 60;
    config.auth.trust_forwarded_for = true;
    let gw = spawn_gateway_with(&db, config).await;
    let attempt = |forwarded: &'static str| {
        let gw = &gw;
        async move {
            request(
                gw.addr,
                Method::POST,
                "/auth/v1/token?grant_type=password",
                &[
                    ("content-type", "application/json"),
                    ("x-forwarded-for", forwarded),
                ],
                Some(
                    json!({"email": "p@example.com", "password": "whatever-password"})
                        .to_string()
                        .into_bytes(),
                ),
            )
            .await
            .status
        }
    };
    // The proxy appends the address it saw; the client's own entries before it do not count.
    assert_eq!(attempt("10.0.0.1, 198.51.100.1").await, 400);
    assert_eq!(attempt("10.0.0.2, 198.51.100.1").await, 400);
    assert_eq!(attempt("10.0.0.3, 198.51.100.1").await, 429);
    // Another client behind the same proxy has its own bucket.
    assert_eq!(attempt("198.51.100.2").await, 400);
}
