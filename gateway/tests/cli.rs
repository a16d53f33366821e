//! The `ripple` binary, black-box: `ripple dev` brings up a migrated embedded PostgreSQL
//! with demo users and tokens and stops it on Ctrl-C; `ripple token` mints verifiable tokens.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn ripple_dev_runs_a_migrated_postgres_prints_tokens_and_stops_it_on_ctrl_c() {
    let dir = std::env::temp_dir().join(format!("rdev-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pg_port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ripple"))
        .args(["dev", "--data-dir"])
        .arg(&dir)
        .args(["--pg-port", &pg_port.to_string(), "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .env_remove("RIPPLE_DATABASE_URL")
        .env_remove("RIPPLE_JWT_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run ripple dev");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !lines.iter().any(|l: &String| l.contains("Press Ctrl-C")) {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("ripple dev did not come up; printed {lines:?}"));
        lines.push(line);
    }
    let alice = lines
        .iter()
        .find(|l| l.contains("Alice"))
        .expect("a token for Alice");
    let token = alice.rsplit("token: ").next().unwrap().trim().to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT");

    // A second `ripple dev` on the same folder refuses instead of sharing (and, on its way
    // out, stopping) the first one's PostgreSQL; the checks below prove the first still runs.
    let second = Command::new(env!("CARGO_BIN_EXE_ripple"))
        .args(["dev", "--data-dir"])
        .arg(&dir)
        .args(["--pg-port", &pg_port.to_string(), "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .env_remove("RIPPLE_DATABASE_URL")
        .env_remove("RIPPLE_JWT_SECRET")
        .output()
        .expect("run a second ripple dev");
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success(),
        "the second ripple dev must refuse"
    );
    assert!(
        said.contains("already running") && said.contains(&dir.display().to_string()),
        "says why, naming the folder: {said}"
    );

    // The database is there, migrated, with the demo users.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = format!("postgres://postgres@127.0.0.1:{pg_port}/ripple");
    let (profiles, wal_level) = rt.block_on(async {
        let c = ripple::db::connect(&url)
            .await
            .expect("connect to dev postgres");
        let n: i64 = c
            .query_one("select count(*) from public.profiles", &[])
            .await
            .unwrap()
            .get(0);
        let w: String = c
            .query_one("select current_setting('wal_level')", &[])
            .await
            .unwrap()
            .get(0);
        (n, w)
    });
    assert_eq!(profiles, 3);
    assert_eq!(wal_level, "logical");
    // The printed token is signed with the secret kept in the data folder.
    let secret = std::fs::read_to_string(dir.join("jwt-secret")).unwrap();
    let v = ripple::auth::JwtVerifier::new(&ripple::auth::JwtConfig {
        secret: Some(ripple::auth::Secret::new(secret.trim())),
        public_keys_pem: vec![],
        ..Default::default()
    })
    .unwrap();
    let claims = v.verify(&token).expect("the printed token verifies");
    assert_eq!(claims.role, "authenticated");

    // Ctrl-C stops Ripple and its PostgreSQL.
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "ripple dev exits cleanly: {status}");
    assert!(
        !dir.join("pgdata/postmaster.pid").exists(),
        "the embedded PostgreSQL is stopped"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ripple_token_mints_a_token_for_a_user_and_an_anon_key() {
    let secret = "cli-test-secret-0123456789abcdef-xyz";
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ripple"))
            .arg("token")
            .args(args)
            .env("RIPPLE_JWT_SECRET", secret)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let v = ripple::auth::JwtVerifier::new(&ripple::auth::JwtConfig {
        secret: Some(ripple::auth::Secret::new(secret)),
        public_keys_pem: vec![],
        ..Default::default()
    })
    .unwrap();
    let user = v
        .verify(&run(&["--sub", "7d0f3f0e-8f38-4f4e-9a55-2b0c1a0b7c11"]))
        .unwrap();
    assert_eq!(user.role, "authenticated");
    assert_eq!(
        user.sub.as_deref(),
        Some("7d0f3f0e-8f38-4f4e-9a55-2b0c1a0b7c11")
    );
    let anon = v.verify(&run(&[])).unwrap();
    assert_eq!(anon.role, "anon");
    assert_eq!(anon.sub, None);
}

#[test]
fn ripple_serve_without_a_secret_or_key_refuses_to_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_ripple"))
        .args(["serve", "--database-url", "postgres://127.0.0.1:1/none"])
        .env_remove("RIPPLE_JWT_SECRET")
        .env_remove("RIPPLE_JWT_PUBLIC_KEYS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--jwt-secret"), "{err}");
}

#[test]
fn ripple_dev_without_postgres_binaries_says_how_to_install_them_and_fails() {
    let dir = std::env::temp_dir().join(format!("rdev-missing-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_ripple"))
        .args(["dev", "--data-dir"])
        .arg(&dir)
        .env("RIPPLE_PG_BINDIR", "/nonexistent/postgresql/bin")
        .env_remove("RIPPLE_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("apt-get install postgresql"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ripple_dev_names_a_data_folder_the_postgres_account_cannot_enter() {
    let as_root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if !as_root {
        // Only root hands the cluster to another account; as anyone else the folder is ours.
        eprintln!("not root: the embedded cluster runs as this user, nothing to check");
        return;
    }
    let locked = std::env::temp_dir().join(format!("rdev-locked-{}", std::process::id()));
    std::fs::create_dir_all(&locked).unwrap();
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ripple"))
        .args(["dev", "--data-dir"])
        .arg(locked.join("data"))
        .args(["--pg-port", &free_port().to_string(), "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .env_remove("RIPPLE_DATABASE_URL")
        .output()
        .expect("run ripple dev");
    let said = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&locked);
    assert!(!out.status.success());
    assert!(
        said.contains("cannot enter") && said.contains(&locked.display().to_string()),
        "names the folder it cannot enter: {said}"
    );
}
