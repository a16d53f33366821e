//! The `ripple` command: run the gateway, migrate a database, run a local development
//! stack, mint tokens, tail the change stream.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ripple::auth::{JwtConfig, JwtVerifier, Secret};
use ripple::config::ServeConfig;
use ripple::embedded::{Cluster, ClusterOptions, PgBinaries};
use ripple::migrate::{self, MigrateOptions};

#[derive(Parser)]
#[command(name = "ripple", version, about = "Realtime gateway for PostgreSQL")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve realtime, REST and RPC against an existing database.
    Serve {
        #[arg(long, env = "RIPPLE_DATABASE_URL", hide_env_values = true)]
        database_url: String,
        #[command(flatten)]
        config: ServeConfig,
    },
    /// Local development: an embedded PostgreSQL (unless --database-url), migrated, with demo
    /// users and their tokens, and the gateway serving it. Ctrl-C stops both.
    Dev {
        #[arg(long, env = "RIPPLE_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// Folder for the embedded cluster and the generated secret; kept between runs.
        #[arg(long, env = "RIPPLE_DATA_DIR", default_value = ".ripple")]
        data_dir: PathBuf,
        /// Loopback port of the embedded PostgreSQL.
        #[arg(long, env = "RIPPLE_PG_PORT", default_value_t = 54329)]
        pg_port: u16,
        #[command(flatten)]
        config: ServeConfig,
    },
    /// Apply schema/, sql/ and policies/ (safe to run again).
    Migrate {
        #[arg(long, env = "RIPPLE_DATABASE_URL", hide_env_values = true)]
        database_url: String,
        #[arg(long, env = "RIPPLE_PUBLICATION", default_value = ripple::DEFAULT_PUBLICATION)]
        publication: String,
    },
    /// Print each change as one JSON line (table, type, commit LSN and time, record,
    /// old_record) from the slot, or from a temporary slot with --temporary.
    Tail {
        #[arg(long, env = "RIPPLE_DATABASE_URL", hide_env_values = true)]
        database_url: String,
        #[command(flatten)]
        options: ripple::tail::TailOptions,
    },
    /// Mint an HS256 token with the configured secret.
    Token {
        /// The user's id (becomes `sub`); omit for an anon key.
        #[arg(long)]
        sub: Option<String>,
        /// Database role the token runs as.
        #[arg(long)]
        role: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
        #[arg(long, env = "RIPPLE_JWT_SECRET", hide_env_values = true)]
        jwt_secret: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RIPPLE_LOG")
                .unwrap_or_else(|_| "ripple=info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in log files or journald.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ripple: {error}");
            let mut source = error.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

type Shutdown = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Ctrl-C or SIGTERM. The handlers are installed now, before any slow start-up step, so a
/// signal that arrives early stops Ripple cleanly (and its embedded PostgreSQL) instead of
/// killing the process.
fn shutdown_signal() -> std::io::Result<Shutdown> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(Box::pin(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    match cli.command {
        Command::Migrate {
            database_url,
            publication,
        } => {
            let report = migrate::run(&database_url, &MigrateOptions { publication }).await?;
            println!(
                "migrated: {} schema version(s) applied, {} function/policy file(s) applied",
                report.schema_versions_applied.len(),
                report.files_applied
            );
            Ok(())
        }
        Command::Tail {
            database_url,
            options,
        } => {
            let stdout = std::io::stdout().lock();
            ripple::tail::run(
                &database_url,
                &options,
                std::io::BufWriter::new(stdout),
                shutdown,
            )
            .await?;
            Ok(())
        }
        Command::Token {
            sub,
            role,
            ttl,
            jwt_secret,
        } => {
            let v = JwtVerifier::new(&JwtConfig {
                secret: Some(Secret::new(jwt_secret)),
                public_keys_pem: vec![],
                ..Default::default()
            })?;
            let role = role.unwrap_or_else(|| {
                if sub.is_some() {
                    "authenticated".into()
                } else {
                    "anon".into()
                }
            });
            let token = v
                .mint_for(&role, sub.as_deref(), ttl)
                .ok_or_else(|| anyhow::anyhow!("could not sign the token"))?;
            println!("{token}");
            Ok(())
        }
        Command::Serve {
            database_url,
            config,
        } => {
            if config.jwt_secret.is_none()
                && config.jwt_public_keys.is_empty()
                && config.jwks.is_empty()
                && config.auth.signing_key.is_none()
            {
                anyhow::bail!(
                    "set --jwt-secret (RIPPLE_JWT_SECRET), --jwt-public-key, --jwks or --auth-signing-key"
                );
            }
            serve(config, &database_url, shutdown).await
        }
        Command::Dev {
            database_url,
            data_dir,
            pg_port,
            config,
        } => dev(database_url, data_dir, pg_port, config, shutdown).await,
    }
}

async fn serve(config: ServeConfig, database_url: &str, shutdown: Shutdown) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, "ripple serving");
    ripple::server::run(listener, config, database_url, shutdown).await?;
    tracing::info!("ripple stopped");
    Ok(())
}

/// Demo users `ripple dev` creates, with fixed ids so tokens stay valid across runs.
const DEMO_USERS: &[(&str, &str)] = &[
    ("00000000-0000-4000-8000-00000000a11c", "Alice"),
    ("00000000-0000-4000-8000-000000000b0b", "Bob"),
    ("00000000-0000-4000-8000-0000000ca201", "Carol"),
];

/// The demo users' password: a local development stack only (`ripple dev`).
const DEMO_PASSWORD: &str = "ripple-demo";

fn demo_email(name: &str) -> String {
    format!("{}@example.com", name.to_lowercase())
}

async fn dev(
    database_url: Option<String>,
    data_dir: PathBuf,
    pg_port: u16,
    mut config: ServeConfig,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&data_dir)?;
    // One `ripple dev` per data folder: a second one would share the first one's
    // PostgreSQL and stop it on its way out. The lock goes with the process, even on kill -9.
    let lock_path = data_dir.join("ripple-dev.lock");
    let lock = std::fs::File::create(&lock_path)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another `ripple dev` is already running with the data folder {} (it holds {}); \
             stop it first, or give this one its own --data-dir and --pg-port",
            data_dir.display(),
            lock_path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
    }
    let mut cluster = None;
    let database_url = match database_url {
        Some(url) => url,
        None => {
            let bin = PgBinaries::find()?;
            let c = Cluster::init(
                bin,
                &data_dir.join("pgdata"),
                &ClusterOptions {
                    port: Some(pg_port),
                    ..ClusterOptions::default()
                },
            )?;
            if !c.is_running() {
                c.start()?;
            }
            let admin = ripple::db::connect(&c.url("postgres")).await?;
            let exists = admin
                .query_opt("select 1 from pg_database where datname = 'ripple'", &[])
                .await?
                .is_some();
            if !exists {
                admin.batch_execute("create database ripple").await?;
            }
            let url = c.url("ripple");
            eprintln!(
                "embedded PostgreSQL running: {url} (data in {})",
                c.data_dir().display()
            );
            cluster = Some(c);
            url
        }
    };
    let result = dev_inner(&database_url, &data_dir, &mut config, shutdown).await;
    if let Some(c) = cluster {
        eprintln!("stopping embedded PostgreSQL");
        c.stop()?;
    }
    result
}

async fn dev_inner(
    database_url: &str,
    data_dir: &std::path::Path,
    config: &mut ServeConfig,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let report = migrate::run(
        database_url,
        &MigrateOptions {
            publication: config.publication.clone(),
        },
    )
    .await?;
    eprintln!(
        "migrated ({} new schema version(s))",
        report.schema_versions_applied.len()
    );
    if config.jwt_secret.is_none() {
        // A generated secret, kept beside the cluster so tokens survive restarts.
        let path = data_dir.join("jwt-secret");
        let secret = match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
            _ => {
                use rand::Rng;
                let s: String = rand::thread_rng()
                    .sample_iter(&rand::distributions::Alphanumeric)
                    .take(48)
                    .map(char::from)
                    .collect();
                std::fs::write(&path, &s)?;
                s
            }
        };
        config.jwt_secret = Some(secret);
    }
    let client = ripple::db::connect(database_url).await?;
    for (id, name) in DEMO_USERS {
        let id: uuid::Uuid = id.parse()?;
        client
            .execute(
                "insert into public.profiles (id, display_name) values ($1, $2) on conflict (id) do nothing",
                &[&id, name],
            )
            .await?;
        // A sign-in for each demo user (kept if it exists: the DBA may have changed it).
        let email = demo_email(name);
        let hash = ripple::auth::password::hash(DEMO_PASSWORD);
        client
            .execute(
                "insert into auth.users (id, email, encrypted_password, email_confirmed_at, raw_user_meta_data) \
                 values ($1, $2, $3, now(), jsonb_build_object('display_name', $4::text)) \
                 on conflict do nothing",
                &[&id, &email, &hash, name],
            )
            .await?;
    }
    if config.web.is_none() {
        config.web = bundled_web_app();
    }
    let v = JwtVerifier::new(&config.jwt_config()?)?;
    let day = 24 * 3600;
    println!("Ripple dev is up.");
    println!("  http + realtime: http://{}", config.listen);
    if config.web.is_some() {
        println!("  chat app:        http://{}/", config.listen);
    }
    println!("  database:        {database_url}");
    println!(
        "  anon key (apikey): {}",
        v.mint_for("anon", None, 365 * day).unwrap_or_default()
    );
    for (id, name) in DEMO_USERS {
        println!(
            "  {name:<6} {id}  token: {}",
            v.mint_for("authenticated", Some(id), day)
                .unwrap_or_default()
        );
    }
    println!(
        "  sign in as a demo user: supabase.auth.signInWithPassword({{ email: '{}', password: '{DEMO_PASSWORD}' }})",
        demo_email(DEMO_USERS[0].1)
    );
    println!(
        "    (also {} and {}; same password; or sign up anyone with supabase.auth.signUp)",
        demo_email(DEMO_USERS[1].1),
        demo_email(DEMO_USERS[2].1)
    );
    println!("Press Ctrl-C to stop.");
    serve(config.clone(), database_url, shutdown).await
}

/// The chat app shipped in the repository's `web/`: `./web` when run from a checkout,
/// else the checkout this binary was built from.
fn bundled_web_app() -> Option<PathBuf> {
    [
        PathBuf::from("web"),
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../web")),
    ]
    .into_iter()
    .find(|dir| dir.join("index.html").is_file())
}
