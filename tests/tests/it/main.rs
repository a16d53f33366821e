//! Ripple's integration tests, one binary: one link step and one shared PostgreSQL cluster
//! for the whole run (`ripple_tests::cluster`), a fresh database per test. The few tests that
//! change the cluster itself (restarting it, `ALTER SYSTEM`, `pg_hba.conf`) take a cluster of
//! their own (`ripple_tests::own_cluster`).
//!
//! One module per area; run one with `cargo test -p ripple-tests --test it <module>::`.

// Shared helpers: a Phoenix/Supabase Realtime client, and the replication tests' helpers.
mod replication_common;
mod support;

mod auth_service;
mod authorize;
mod browser_app;
mod chat_extras;
mod chat_functions;
mod chat_policies;
mod chat_scale;
mod differential;
mod harness;
mod hostile;
mod http_layers;
mod last_seen;
mod realtime_e2e;
mod realtime_fanout;
mod realtime_protocol;
mod replication_auth;
mod replication_restart;
mod replication_resume;
mod replication_stream;
mod rest_http;
mod rest_rpc;
mod rest_tables;
mod resume;
mod shutdown;
mod socket_loop;
mod supabase_js_auth;
mod supabase_js_changes;
mod supabase_js_realtime;
mod supabase_js_rest;
mod supabase_js_rest_parity;
mod supabase_js_resume;
mod supabase_js_unread;
mod verdict_cache;
mod visibility;
