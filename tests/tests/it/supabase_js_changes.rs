//! postgres_changes end to end with the real `@supabase/supabase-js`: runs
//! `tests/js/changes.test.mjs` against a real Ripple (replication -> RLS -> socket) and
//! PostgreSQL, failing with node's output when it fails.

use crate::support;

use ripple_tests::node::run_node_tests;
use ripple_tests::{fresh_db, spawn_gateway, JWT_SECRET};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_js_receives_exactly_the_changes_rls_allows() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let a = db.create_user("Alice").await;
    let b = db.create_user("Bob").await;
    let c = db.create_user("Carol").await;
    let d = db.create_user("Dan").await;
    let conversation = support::conversation(&db, &[a, b]).await;
    let other = support::conversation(&db, &[c, d]).await;
    let env = [
        ("RIPPLE_URL", gw.url.clone()),
        ("RIPPLE_ANON_KEY", gw.anon_key.clone()),
        ("RIPPLE_JWT_SECRET", JWT_SECRET.to_string()),
        ("TOKEN_A", gw.token_for(a, 3600)),
        ("TOKEN_B", gw.token_for(b, 3600)),
        ("TOKEN_C", gw.token_for(c, 3600)),
        ("USER_B", b.to_string()),
        ("CONVERSATION_ID", conversation.to_string()),
        ("OTHER_CONVERSATION_ID", other.to_string()),
    ];
    run_node_tests("changes.test.mjs", &env, 3).await;
}
