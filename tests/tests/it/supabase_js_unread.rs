//! Live unread badges end to end with the real `@supabase/supabase-js`: runs
//! `tests/js/unread.test.mjs` (the README recipe: counters on `conversations` and on the
//! member's own `conversation_members` row, streamed through Ripple under RLS) against a
//! real Ripple and PostgreSQL, failing with node's output when it fails.

use crate::support;

use ripple_tests::node::run_node_tests;
use ripple_tests::{fresh_db, spawn_gateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_js_keeps_unread_badges_from_the_change_stream() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let a = db.create_user("Alice").await;
    let b = db.create_user("Bob").await;
    let c = db.create_user("Carol").await;
    let d = db.create_user("Dan").await;
    let e = db.create_user("Erin").await;
    let group = support::conversation(&db, &[a, b]).await;
    let other = support::conversation(&db, &[c, d]).await;
    let env = [
        ("RIPPLE_URL", gw.url.clone()),
        ("RIPPLE_ANON_KEY", gw.anon_key.clone()),
        ("TOKEN_A", gw.token_for(a, 3600)),
        ("TOKEN_B", gw.token_for(b, 3600)),
        ("TOKEN_C", gw.token_for(c, 3600)),
        ("USER_B", b.to_string()),
        ("USER_E", e.to_string()),
        ("GROUP_ID", group.to_string()),
        ("OTHER_CONVERSATION_ID", other.to_string()),
    ];
    run_node_tests("unread.test.mjs", &env, 2).await;
}
