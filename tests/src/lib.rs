//! Test harness: one throwaway PostgreSQL cluster per test run (initdb in a temporary
//! folder, `wal_level=logical`, a free loopback port, removed when the process exits), and
//! a fresh database per test, cloned from a migrated template and dropped afterwards.
//! Tests that change the whole cluster (restart it, `ALTER SYSTEM`, `pg_hba.conf`) take one
//! of their own with [`own_cluster`], so they cannot disturb the tests running beside them.
//!
//! ```no_run
//! # async fn t() {
//! let db = ripple_tests::fresh_db().await;          // migrated chat database
//! let alice = db.create_user("Alice").await;
//! let rows = db.as_user(alice).query("select * from public.list_conversations()", &[]).await;
//! # }
//! ```

pub mod http;
pub mod node;
pub mod v4_reference;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use ripple::embedded::{Cluster, ClusterOptions, PgBinaries};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};
use uuid::Uuid;

/// HS256 secret used by tests that run the gateway.
pub const JWT_SECRET: &str = "ripple-test-secret-0123456789abcdef0123456789";
const TEMPLATE: &str = "ripple_template";

pub struct TestCluster {
    pub cluster: Cluster,
    pub root: PathBuf,
}

static CLUSTER: OnceLock<TestCluster> = OnceLock::new();
static OWN_CLUSTERS: Mutex<Vec<(&'static str, &'static TestCluster)>> = Mutex::new(Vec::new());
static DB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// The cluster every test shares, started (and the template migrated) on first use.
pub fn cluster() -> &'static TestCluster {
    CLUSTER.get_or_init(|| {
        // Runs on a plain thread: callers are usually inside a tokio runtime already.
        std::thread::spawn(start_cluster)
            .join()
            .expect("starting the test cluster panicked")
    })
}

/// A cluster for the tests that use this `name` only, started on first use: for tests that
/// stop and start it, change `ALTER SYSTEM` settings or reload `pg_hba.conf`, which would
/// break (or stall, in the case of a paused synchronous standby) every other test on the
/// shared cluster.
pub fn own_cluster(name: &'static str) -> &'static TestCluster {
    let mut clusters = OWN_CLUSTERS.lock().expect("own clusters lock");
    if let Some((_, c)) = clusters.iter().find(|(n, _)| *n == name) {
        return c;
    }
    let started = std::thread::spawn(start_cluster)
        .join()
        .expect("starting a test cluster panicked");
    // Lives until the process exits, like the shared one (the reaper removes its folder).
    let c: &'static TestCluster = Box::leak(Box::new(started));
    clusters.push((name, c));
    c
}

impl TestCluster {
    /// A fresh, migrated chat database in this cluster.
    pub async fn fresh_db(&'static self) -> TestDb {
        new_db(self, Some(TEMPLATE)).await
    }

    /// A fresh empty database (template0) in this cluster.
    pub async fn empty_db(&'static self) -> TestDb {
        new_db(self, None).await
    }
}

fn start_cluster() -> TestCluster {
    let bin = PgBinaries::find().expect("PostgreSQL binaries (initdb, pg_ctl) are required");
    // Short: the server's Unix socket lives in the data folder, and socket paths are
    // limited to 107 bytes.
    let root = std::env::temp_dir().join(format!(
        "rpl-{}-{}",
        std::process::id(),
        &Uuid::new_v4().simple().to_string()[..8]
    ));
    std::fs::create_dir_all(&root).expect("create test cluster folder");
    // The account that may run the cluster when we are root must reach the folder.
    set_mode(&root, 0o755);
    let mut last_err = None;
    for _ in 0..3 {
        let opts = ClusterOptions {
            port: None,
            ephemeral: true,
            ..ClusterOptions::default()
        };
        let data = root.join(format!("d{}", &Uuid::new_v4().simple().to_string()[..6]));
        let cluster = Cluster::init(bin.clone(), &data, &opts).expect("initdb");
        cluster
            .reap_after_exit(std::process::id(), &root)
            .expect("start the cluster reaper");
        match cluster.start() {
            Ok(()) => {
                let rt = tokio::runtime::Runtime::new().expect("runtime");
                rt.block_on(async {
                    let admin = ripple::db::connect(&cluster.url("postgres"))
                        .await
                        .expect("connect to test cluster");
                    admin
                        .batch_execute(&format!("create database {TEMPLATE}"))
                        .await
                        .expect("create template database");
                    ripple::migrate::run(&cluster.url(TEMPLATE), &Default::default())
                        .await
                        .expect("migrate template database");
                });
                return TestCluster { cluster, root };
            }
            // Another process took the free port between our probe and the start.
            Err(e) => last_err = Some(e),
        }
    }
    panic!("could not start the test cluster: {last_err:?}");
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

/// A database of its own for one test; dropped (with its replication slots) on drop.
pub struct TestDb {
    pub name: String,
    pub url: String,
    /// The `postgres` database of its cluster (where it is dropped from).
    admin_url: String,
    /// Superuser connection (the table owner: RLS does not apply).
    pub client: Client,
}

/// A fresh, migrated chat database.
pub async fn fresh_db() -> TestDb {
    cluster().fresh_db().await
}

/// A fresh database with nothing in it (template0): for replication tests of arbitrary
/// tables and types.
pub async fn empty_db() -> TestDb {
    cluster().empty_db().await
}

async fn new_db(c: &'static TestCluster, template: Option<&str>) -> TestDb {
    let name = format!(
        "t_{}_{}",
        DB_COUNTER.fetch_add(1, Ordering::Relaxed),
        &Uuid::new_v4().simple().to_string()[..8]
    );
    let admin = ripple::db::connect(&c.cluster.url("postgres"))
        .await
        .expect("connect admin");
    let sql = match template {
        Some(t) => format!("create database {name} template {t}"),
        None => format!("create database {name} template template0"),
    };
    // Two tests cloning the template at the same instant can collide; retry briefly.
    let mut tries = 0;
    loop {
        match admin.batch_execute(&sql).await {
            Ok(()) => break,
            Err(e) if tries < 20 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("create test database: {e}"),
        }
    }
    let url = c.cluster.url(&name);
    let client = ripple::db::connect(&url).await.expect("connect test db");
    TestDb {
        name,
        url,
        admin_url: c.cluster.url("postgres"),
        client,
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin_url = self.admin_url.clone();
        // Drop runs outside async; use a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async move {
                let Ok(admin) = ripple::db::connect(&admin_url).await else {
                    return;
                };
                let _ = admin
                    .execute(
                        "select pg_terminate_backend(active_pid) from pg_replication_slots \
                         where database = $1 and active_pid is not null",
                        &[&name],
                    )
                    .await;
                for _ in 0..50 {
                    let r = admin
                        .execute(
                            "select pg_drop_replication_slot(slot_name) from pg_replication_slots \
                             where database = $1",
                            &[&name],
                        )
                        .await;
                    if r.is_ok() {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                let _ = admin
                    .batch_execute(&format!("drop database if exists {name} with (force)"))
                    .await;
            });
        })
        .join();
    }
}

impl TestDb {
    /// A new superuser connection to this database.
    pub async fn connect(&self) -> Client {
        ripple::db::connect(&self.url).await.expect("connect")
    }

    /// Creates a user (a profile) and returns its id.
    pub async fn create_user(&self, name: &str) -> Uuid {
        let id = Uuid::new_v4();
        self.client
            .execute(
                "insert into public.profiles (id, display_name) values ($1, $2)",
                &[&id, &name],
            )
            .await
            .expect("create user");
        id
    }

    /// Runs statements as `authenticated` with `sub` = user, each in its own transaction,
    /// exactly as Ripple runs a request.
    pub fn as_user(&self, user: Uuid) -> Session<'_> {
        Session {
            db: self,
            role: "authenticated".into(),
            claims: serde_json::json!({"sub": user.to_string(), "role": "authenticated"}),
        }
    }

    /// Runs statements as `anon` (no user).
    pub fn as_anon(&self) -> Session<'_> {
        Session {
            db: self,
            role: "anon".into(),
            claims: serde_json::json!({"role": "anon"}),
        }
    }
}

/// Runs `sql` as `user` (role `authenticated`) in its own transaction on a new connection
/// to `url`: for spawned tasks, which cannot borrow a `TestDb`.
pub async fn query_as(
    url: &str,
    user: Uuid,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let mut client = ripple::db::connect(url).await?;
    let tx = client.transaction().await?;
    ripple::db::set_request_claims(
        &tx,
        "authenticated",
        &serde_json::json!({"sub": user.to_string(), "role": "authenticated"}).to_string(),
    )
    .await?;
    let rows = tx.query(sql, params).await?;
    tx.commit().await?;
    Ok(rows)
}

/// Statements run as a request would run them: role and claims set for the transaction.
pub struct Session<'a> {
    db: &'a TestDb,
    role: String,
    claims: serde_json::Value,
}

impl Session<'_> {
    /// Runs `sql` and returns its rows, or the database error.
    pub async fn try_query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let mut client = self.db.connect().await;
        let tx = client.transaction().await?;
        ripple::db::set_request_claims(&tx, &self.role, &self.claims.to_string()).await?;
        let rows = tx.query(sql, params).await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Runs `sql`, panicking with the database's message on error.
    pub async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Vec<Row> {
        match self.try_query(sql, params).await {
            Ok(rows) => rows,
            Err(e) => panic!("{sql}: {}", describe(&e)),
        }
    }

    pub async fn query_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Row {
        let mut rows = self.query(sql, params).await;
        assert_eq!(rows.len(), 1, "{sql}: expected one row, got {}", rows.len());
        rows.remove(0)
    }

    /// Runs `sql` expecting an error; returns its SQLSTATE and message.
    pub async fn query_err(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> (String, String) {
        match self.try_query(sql, params).await {
            Ok(rows) => panic!("{sql}: expected an error, got {} row(s)", rows.len()),
            Err(e) => {
                let db = e
                    .as_db_error()
                    .unwrap_or_else(|| panic!("{sql}: not a database error: {e}"));
                (db.code().code().to_string(), db.message().to_string())
            }
        }
    }
}

/// The database's message for an error (tokio-postgres' Display says only "db error").
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// A running gateway (HTTP, REST/RPC, realtime) serving a test database on a free
/// loopback port. Stops when dropped.
pub struct Gateway {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub addr: std::net::SocketAddr,
    /// An `apikey` (role anon), as Supabase's anon key.
    pub anon_key: String,
    verifier: ripple::auth::JwtVerifier,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Default settings for a test gateway; tests tweak fields before `spawn_gateway_with`.
pub fn gateway_config() -> ripple::config::ServeConfig {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        c: ripple::config::ServeConfig,
    }
    let mut c = Wrap::parse_from(["ripple-test"]).c;
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.jwt_secret = Some(JWT_SECRET.into());
    c
}

/// Starts a gateway for `db` with default test settings.
pub async fn spawn_gateway(db: &TestDb) -> Gateway {
    spawn_gateway_with(db, gateway_config()).await
}

pub async fn spawn_gateway_with(db: &TestDb, config: ripple::config::ServeConfig) -> Gateway {
    spawn_gateway_using(db, config, Box::new(ripple::server::default_authorizer)).await
}

/// A gateway whose fan-out asks `make_authorizer`'s authorizer (the benchmark runs the
/// per-subscriber live-row reference through the same pipeline this way).
pub async fn spawn_gateway_using(
    db: &TestDb,
    mut config: ripple::config::ServeConfig,
    make_authorizer: ripple::server::MakeAuthorizer,
) -> Gateway {
    // Slots are cluster-wide: one per test database, dropped with it.
    if config.slot == ripple::DEFAULT_SLOT {
        config.slot = db.name.clone();
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .expect("bind gateway");
    let addr = listener.local_addr().expect("addr");
    let verifier = ripple::auth::JwtVerifier::new(&config.jwt_config().expect("jwt config"))
        .expect("jwt verifier");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let url = db.url.clone();
    tokio::spawn(async move {
        if let Err(e) = ripple::server::run_with(
            listener,
            config,
            &url,
            async {
                let _ = rx.await;
            },
            make_authorizer,
        )
        .await
        {
            eprintln!("test gateway stopped with an error: {e:#}");
        }
    });
    let anon_key = verifier.mint_for("anon", None, 3600).expect("anon key");
    Gateway {
        url: format!("http://{addr}"),
        addr,
        anon_key,
        verifier,
        stop: Some(tx),
    }
}

impl Gateway {
    /// A handle on a `ripple serve` process at `addr` (see [`spawn_ripple_serve_with`]),
    /// signing with the test secret as the in-process gateway does.
    pub fn external(addr: std::net::SocketAddr) -> Gateway {
        let verifier =
            ripple::auth::JwtVerifier::new(&gateway_config().jwt_config().expect("jwt config"))
                .expect("jwt verifier");
        let anon_key = verifier.mint_for("anon", None, 3600).expect("anon key");
        Gateway {
            url: format!("http://{addr}"),
            addr,
            anon_key,
            verifier,
            stop: None,
        }
    }

    /// A user token (role authenticated) valid for `ttl_secs`.
    pub fn token_for(&self, user: Uuid, ttl_secs: i64) -> String {
        self.verifier
            .mint_for("authenticated", Some(&user.to_string()), ttl_secs)
            .expect("mint")
    }

    /// Signs arbitrary claims with the test secret.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        self.verifier.mint(claims).expect("mint")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The `ripple` binary of this build, for tests that run Ripple as its own process (to kill
/// it with -9). Built (or found up to date) once per test process, in the same profile.
pub fn ripple_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable");
        // target/<profile>/deps/<test> -> target/<profile>/ripple
        let dir = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("target folder")
            .to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "ripple", "--bin", "ripple"]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let ok = cmd.status().map(|s| s.success()).unwrap_or(false);
        let bin = dir.join("ripple");
        assert!(ok && bin.is_file(), "building {}", bin.display());
        bin
    })
    .clone()
}

/// A free loopback port below the ephemeral range (32768-60999), so that a process that is
/// killed and started again can listen on it again without an outgoing connection taking it
/// in between.
pub fn free_low_port() -> u16 {
    for _ in 0..500 {
        let port = 20000 + (Uuid::new_v4().as_u128() % 12000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000");
}

/// `ripple serve` as its own process, as an operator runs it, on `port` with the test secret
/// and the database's own slot; `application_name` names its connections (so a test can
/// find and terminate them).
pub fn spawn_ripple_serve(db: &TestDb, port: u16, application_name: Option<&str>) -> RippleServe {
    let url = match application_name {
        Some(name) => {
            let sep = if db.url.contains('?') { '&' } else { '?' };
            format!("{}{sep}application_name={name}", db.url)
        }
        None => db.url.clone(),
    };
    spawn_ripple_serve_with(
        &url,
        &db.name,
        port,
        &[("RIPPLE_LOG", "ripple=error")],
        std::process::Stdio::inherit(),
    )
}

/// `ripple serve` of `database_url` on slot `slot`, with more settings in `env` (after the
/// test secret), its log (stderr) going to `log`.
pub fn spawn_ripple_serve_with(
    database_url: &str,
    slot: &str,
    port: u16,
    env: &[(&str, &str)],
    log: std::process::Stdio,
) -> RippleServe {
    spawn_ripple_serve_limited(database_url, slot, port, env, log, None)
}

/// `ripple serve` for `db` on a free port with `env`, logging to a file of the test
/// cluster's named after the database and `tag`, healthy before this returns: the server, a
/// `Gateway` for it, and the log's path. For tests that read what an operator's log shows
/// (an in-process capture would also see the other tests running beside it).
pub async fn serve_logging_to_file(
    db: &TestDb,
    tag: &str,
    env: &[(&str, &str)],
) -> (RippleServe, Gateway, std::path::PathBuf) {
    let port = free_low_port();
    let log_path = cluster().root.join(format!("{}-{tag}.log", db.name));
    let log = std::fs::File::create(&log_path).expect("log file");
    let serve = spawn_ripple_serve_with(&db.url, &db.name, port, env, log.into());
    let gw = Gateway::external(format!("127.0.0.1:{port}").parse().expect("address"));
    assert!(
        wait_healthy(gw.addr, std::time::Duration::from_secs(30)).await,
        "ripple serve became healthy"
    );
    (serve, gw, log_path)
}

/// As [`spawn_ripple_serve_with`], with the process's open-files limit (soft and hard) set
/// to `nofile` when given (through the shell's `ulimit`, then `exec`), so a test can run out
/// of descriptors without taking the test process with it.
pub fn spawn_ripple_serve_limited(
    database_url: &str,
    slot: &str,
    port: u16,
    env: &[(&str, &str)],
    log: std::process::Stdio,
    nofile: Option<u32>,
) -> RippleServe {
    let mut command = match nofile {
        Some(n) => {
            let mut sh = std::process::Command::new("sh");
            sh.arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(ripple_bin());
            sh
        }
        None => std::process::Command::new(ripple_bin()),
    };
    command
        .args(["serve", "--database-url", database_url, "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--slot", slot])
        .env("RIPPLE_JWT_SECRET", JWT_SECRET)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .map(RippleServe)
        .expect("start ripple serve")
}

/// The value of the metric `name` on the gateway at `addr`'s `/metrics` (summed over its
/// label sets; 0 when absent).
pub async fn metric(addr: std::net::SocketAddr, name: &str) -> f64 {
    let text = http::request(addr, hyper::Method::GET, "/metrics", &[], None)
        .await
        .text();
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The status `/health` at `addr` answers (None when no answer came within 3 s).
pub async fn health_status(addr: std::net::SocketAddr) -> Option<u16> {
    let attempt = async {
        let mut conn = http::Conn::connect(addr).await.ok()?;
        conn.send(hyper::Method::GET, "/health", &[], None)
            .await
            .ok()
            .map(|r| r.status)
    };
    tokio::time::timeout(std::time::Duration::from_secs(3), attempt)
        .await
        .ok()
        .flatten()
}

/// Waits up to `within` for `/health` at `addr` to answer 200 (a gateway just started, or
/// one recovering); false if it never did.
pub async fn wait_healthy(addr: std::net::SocketAddr, within: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if health_status(addr).await == Some(200) {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

/// Raises this process's open-files soft limit to hold `sockets` sockets plus headroom
/// (the benchmarks' thousands of clients), as far as the hard limit allows when raising
/// that needs a privilege the process lacks. Returns the soft limit now in force.
pub fn raise_open_files(sockets: usize) -> u64 {
    let want = (sockets as u64 + 4096).max(8192);
    let (soft, hard) = rlimit::Resource::NOFILE.get().expect("getrlimit");
    if soft >= want {
        return soft;
    }
    if rlimit::Resource::NOFILE.set(want, want.max(hard)).is_ok() {
        return want;
    }
    let _ = rlimit::Resource::NOFILE.set(hard, hard);
    rlimit::Resource::NOFILE
        .get()
        .map(|(s, _)| s)
        .unwrap_or(soft)
}

/// A `ripple serve` process, killed (-9) when dropped, so a failing test leaves none behind.
pub struct RippleServe(std::process::Child);

impl RippleServe {
    /// The server's process id (for `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Whether the process is still running (it has not exited).
    pub fn is_running(&mut self) -> bool {
        self.0.try_wait().expect("poll ripple serve").is_none()
    }

    /// `kill -9`, and waits for it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for RippleServe {
    fn drop(&mut self) {
        self.kill();
    }
}
