//! Runs `tests/js/realtime.test.mjs` (node's test runner, the real `@supabase/supabase-js`
//! from npm) against a real Ripple and PostgreSQL, and fails with node's output when it
//! fails.

use crate::support;

use ripple_tests::node::run_node_tests;
use ripple_tests::{fresh_db, spawn_gateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_js_realtime_typing_on_a_private_channel_and_presence() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let a = db.create_user("Alice").await;
    let b = db.create_user("Bob").await;
    let c = db.create_user("Carol").await;
    let conversation = support::conversation(&db, &[a, b]).await;
    let env = [
        ("RIPPLE_URL", gw.url.clone()),
        ("RIPPLE_ANON_KEY", gw.anon_key.clone()),
        ("TOKEN_A", gw.token_for(a, 3600)),
        ("TOKEN_B", gw.token_for(b, 3600)),
        ("TOKEN_C", gw.token_for(c, 3600)),
        ("CONVERSATION_ID", conversation.to_string()),
    ];
    run_node_tests("realtime.test.mjs", &env, 3).await;
}
