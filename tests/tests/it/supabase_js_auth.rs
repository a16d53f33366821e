//! Sign-up, sign-in and tokens end to end with the real `@supabase/supabase-js`: runs
//! `tests/js/auth.test.mjs` against a real Ripple (auth service, REST, replication -> RLS ->
//! socket) and PostgreSQL, failing with node's output when it fails.

use ripple::auth::jwks::JwksSource;
use ripple::auth::keys::SigningKey;
use ripple_tests::node::run_node_tests;
use ripple_tests::{fresh_db, gateway_config, spawn_gateway_with};

/// Small enough for the test to trip in a few attempts and wait out in a few seconds.
/// The other issuer's private keys (test keys, generated for Ripple's tests only).
const RSA_PEM: &str = include_str!("../../../gateway/src/auth/testdata/rsa_private.pem");
const ED_PEM: &str = include_str!("../../../gateway/src/auth/testdata/ed25519_private.pem");
const ISSUER: &str = "https://idp.example";

const RATE_PER_EMAIL: u32 = 5;
const RATE_WINDOW_SECS: u64 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_js_signs_up_signs_in_and_uses_its_session_everywhere() {
    let db = fresh_db().await;
    let mut config = gateway_config();
    config.auth.rate_per_email = RATE_PER_EMAIL;
    config.auth.rate_window_secs = RATE_WINDOW_SECS;
    // Every client of the test is on 127.0.0.1: the per-address limit is tested in Rust.
    config.auth.rate_per_address = 0;
    // Any second use of a refresh token is reuse (the retry grace is tested in auth_service).
    config.auth.refresh_reuse_interval_secs = 0;
    // Another issuer's keys, as a JWKS file.
    let dir = tempdir();
    let jwks = dir.join("jwks.json");
    std::fs::write(
        &jwks,
        serde_json::json!({"keys": [
            SigningKey::from_pem(RSA_PEM, Some("idp-rsa".into())).unwrap().public_jwk(),
            SigningKey::from_pem(ED_PEM, Some("idp-ed".into())).unwrap().public_jwk(),
        ]})
        .to_string(),
    )
    .unwrap();
    config.jwks = vec![JwksSource::File(jwks)];
    config.jwt_issuer = Some(ISSUER.into());
    let gw = spawn_gateway_with(&db, config).await;
    let env = [
        ("RIPPLE_URL", gw.url.clone()),
        ("RIPPLE_ANON_KEY", gw.anon_key.clone()),
        ("RATE_PER_EMAIL", RATE_PER_EMAIL.to_string()),
        ("RATE_WINDOW_MS", (RATE_WINDOW_SECS * 1000).to_string()),
        ("JWKS_ISSUER", ISSUER.into()),
        ("JWKS_RSA_PEM", RSA_PEM.into()),
        ("JWKS_RSA_KID", "idp-rsa".into()),
        ("JWKS_ED_PEM", ED_PEM.into()),
        ("JWKS_ED_KID", "idp-ed".into()),
    ];
    run_node_tests("auth.test.mjs", &env, 10).await;
    let _ = std::fs::remove_dir_all(dir);
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ripple-auth-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Access tokens short enough to expire during the test.
const SHORT_TTL_SECS: i64 = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_keeps_a_channel_alive_past_its_first_tokens_expiry() {
    let db = fresh_db().await;
    let mut config = gateway_config();
    config.auth.jwt_exp_secs = SHORT_TTL_SECS;
    config.auth.rate_per_address = 0;
    let gw = spawn_gateway_with(&db, config).await;
    let env = [
        ("RIPPLE_URL", gw.url.clone()),
        ("RIPPLE_ANON_KEY", gw.anon_key.clone()),
        ("ACCESS_TTL_SECS", SHORT_TTL_SECS.to_string()),
    ];
    run_node_tests("auth_expiry.test.mjs", &env, 1).await;
}
