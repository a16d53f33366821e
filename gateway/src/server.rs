//! Wires the stages together for `ripple serve` and `ripple dev` (and the tests, which pass
//! their own listener and shutdown signal).

use std::future::Future;

use tokio::net::TcpListener;

use crate::app::App;
use crate::config::ServeConfig;

/// Serves HTTP and realtime on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: ServeConfig,
    database_url: &str,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let app = App::new(config, database_url)?;
    crate::http::serve(listener, app, shutdown).await?;
    Ok(())
}
