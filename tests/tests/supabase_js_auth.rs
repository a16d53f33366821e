//! Sign-up, sign-in and tokens end to end with the real `@supabase/supabase-js`: runs
//! `tests/js/auth.test.mjs` against a real Ripple (auth service, REST, replication -> RLS ->
//! socket) and PostgreSQL, failing with node's output when it fails.

use ripple_tests::node::run_node_tests;
use ripple_tests::{fresh_db, gateway_config, spawn_gateway_with};

/// Small enough for the test to trip in a few attempts and wait out in a few seconds.
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
    let gw = spawn_gateway_with(&db, config).await;
    let env = [
        ("RIPPLE_URL", gw.url.clone()),
        ("RIPPLE_ANON_KEY", gw.anon_key.clone()),
        ("RATE_PER_EMAIL", RATE_PER_EMAIL.to_string()),
        ("RATE_WINDOW_MS", (RATE_WINDOW_SECS * 1000).to_string()),
    ];
    run_node_tests("auth.test.mjs", &env, 8).await;
}
