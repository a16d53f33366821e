//! What every request handler and socket task shares.

use std::sync::Arc;

use crate::auth::JwtVerifier;
use crate::config::ServeConfig;

pub struct App {
    pub config: Arc<ServeConfig>,
    pub jwt: Arc<JwtVerifier>,
    /// Connections for REST/RPC requests and socket joins; each use runs in its own
    /// transaction with the caller's role and claims set locally.
    pub pool: deadpool_postgres::Pool,
    /// The realtime pipeline's own connections, apart from `pool` so that REST load can
    /// starve neither deliveries (row authorization) nor revocation (the re-checks of
    /// joined private channels and filter columns, and private broadcast permission).
    pub authorize_pool: deadpool_postgres::Pool,
    pub database_url: String,
    /// Realtime's shared state: live subscriptions, topics; the fan-out delivers through it.
    pub realtime: Arc<crate::realtime::Realtime>,
    /// What the socket tasks use (the hub, the verifier, the pools, the settings): handed
    /// to realtime instead of the whole `App`.
    pub sockets: Arc<crate::realtime::SocketContext>,
    /// What `GET /health` reports beside the stream's own state: authorization trouble, a
    /// lost slot, a replication setting that blocks commits.
    pub status: crate::status::Status,
    /// The replication stream, once it has started (it may start late, when the database
    /// was unreachable at first); `/health` reads its connection state.
    pub replication: std::sync::OnceLock<crate::replication::ReplicationHandle>,
    /// Counters, gauges and histograms served at `GET /metrics`.
    pub metrics: crate::metrics::Metrics,
    /// REST/RPC state shared by requests (the catalog cache).
    pub rest: crate::http::rest::RestState,
    /// The sign-in service under `/auth/v1/` (rate limits, Ripple's own signing key).
    pub auth: crate::auth::AuthService,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("invalid database URL")]
    DatabaseUrl(#[source] tokio_postgres::Error),
    #[error("could not build the connection pool")]
    Pool(#[source] deadpool_postgres::BuildError),
    #[error("could not read a JWT public key file")]
    KeyFile(#[source] std::io::Error),
    #[error(transparent)]
    Key(#[from] crate::auth::jwt_key_error::KeyError),
    #[error(transparent)]
    Jwks(#[from] crate::auth::jwks::JwksError),
    #[error("could not read the auth signing key file")]
    SigningKeyFile(#[source] std::io::Error),
    #[error(transparent)]
    SigningKey(#[from] crate::auth::keys::SigningKeyError),
}

impl App {
    pub fn new(config: ServeConfig, database_url: &str) -> Result<Arc<Self>, AppError> {
        let signing_key = match &config.auth.signing_key {
            Some(path) => Some(crate::auth::keys::SigningKey::from_pem(
                &std::fs::read_to_string(path).map_err(AppError::SigningKeyFile)?,
                config.auth.signing_kid.clone(),
            )?),
            None => None,
        };
        let mut jwt = JwtVerifier::new(&config.jwt_config().map_err(AppError::KeyFile)?)?;
        if let Some(key) = &signing_key {
            // Ripple accepts the tokens it signs itself.
            jwt.add_own_key(key);
        }
        jwt.set_jwks(crate::auth::jwks::load_files(&config.jwks)?);
        let auth = crate::auth::AuthService::new(config.auth.settings(), signing_key);
        let pg: tokio_postgres::Config = database_url.parse().map_err(AppError::DatabaseUrl)?;
        let make_pool = |size: usize| {
            let manager = deadpool_postgres::Manager::from_config(
                pg.clone(),
                tokio_postgres::NoTls,
                deadpool_postgres::ManagerConfig {
                    recycling_method: deadpool_postgres::RecyclingMethod::Fast,
                },
            );
            deadpool_postgres::Pool::builder(manager)
                .max_size(size)
                .build()
                .map_err(AppError::Pool)
        };
        let pool = make_pool(config.pool_size)?;
        let authorize_pool = make_pool(config.authorize_pool_size.max(1))?;
        let metrics = crate::metrics::Metrics::default();
        metrics.register_pool(&pool);
        let rest = crate::http::rest::RestState::new(&config, &metrics);
        let config = Arc::new(config);
        let jwt = Arc::new(jwt);
        let realtime = Arc::new(crate::realtime::Realtime::new());
        let sockets = Arc::new(crate::realtime::SocketContext {
            hub: realtime.clone(),
            jwt: jwt.clone(),
            pool: pool.clone(),
            authorize_pool: authorize_pool.clone(),
            config: config.clone(),
        });
        let app = Arc::new(Self {
            config,
            jwt,
            pool,
            authorize_pool,
            database_url: database_url.to_string(),
            realtime,
            sockets,
            status: crate::status::Status::default(),
            replication: std::sync::OnceLock::new(),
            metrics,
            rest,
            auth,
        });
        let urls: Vec<_> = app
            .config
            .jwks
            .iter()
            .filter(|s| matches!(s, crate::auth::jwks::JwksSource::Url(_)))
            .cloned()
            .collect();
        if !urls.is_empty() {
            // Files too, so an edited file is picked up on the same schedule.
            crate::auth::jwks::spawn_refresh(
                Arc::downgrade(&app.jwt),
                app.config.jwks.clone(),
                std::time::Duration::from_secs(app.config.jwks_refresh_secs.max(1)),
            );
        }
        Ok(app)
    }
}
