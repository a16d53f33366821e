//! What every request handler and socket task shares.

use std::sync::Arc;

use crate::auth::JwtVerifier;
use crate::config::ServeConfig;

pub struct App {
    pub config: ServeConfig,
    pub jwt: JwtVerifier,
    /// Connections for REST/RPC requests and authorization checks; each use runs in its own
    /// transaction with the caller's role and claims set locally.
    pub pool: deadpool_postgres::Pool,
    /// The realtime pipeline's own connections (authorization checks), apart from `pool` so
    /// that REST load cannot starve deliveries.
    pub authorize_pool: deadpool_postgres::Pool,
    pub database_url: String,
    /// Realtime's shared state: live subscriptions, topics; the fan-out delivers through it.
    pub realtime: Arc<crate::realtime::Realtime>,
    /// Readiness flags for `GET /health` (the replication stream sets its own).
    pub status: crate::status::Status,
    /// Counters, gauges and histograms served at `GET /metrics`.
    pub metrics: crate::metrics::Metrics,
    /// REST/RPC state shared by requests (the catalog cache).
    pub rest: crate::http::rest::RestState,
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
}

impl App {
    pub fn new(config: ServeConfig, database_url: &str) -> Result<Arc<Self>, AppError> {
        let jwt = JwtVerifier::new(&config.jwt_config().map_err(AppError::KeyFile)?)?;
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
        Ok(Arc::new(Self {
            config,
            jwt,
            pool,
            authorize_pool,
            database_url: database_url.to_string(),
            realtime: Arc::new(crate::realtime::Realtime::new()),
            status: crate::status::Status::default(),
            metrics,
            rest,
        }))
    }
}
