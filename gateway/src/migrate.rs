//! `ripple migrate`: the database is the product, and this puts it in place.
//!
//! Three layers, applied in this order:
//! 1. `schema/` — refinery's versioned migrations, append-only (tables, types, indexes).
//! 2. `sql/` — functions (RPCs, helpers, triggers), idempotent `create or replace` files.
//! 3. `policies/` — row-level security, idempotent files a DBA edits in place.
//!
//! Layers 2 and 3 run in one transaction, so a broken file leaves the database as it was.
//! Running again is always safe.

use crate::db;

mod embedded {
    refinery::embed_migrations!("../schema");
}

include!(concat!(env!("OUT_DIR"), "/sql_files.rs"));

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("could not connect to the database")]
    Connect(#[source] tokio_postgres::Error),
    #[error("schema migration failed")]
    Schema(#[source] refinery::Error),
    #[error("applying {file} failed")]
    File {
        file: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("database error while migrating")]
    Db(#[source] tokio_postgres::Error),
}

#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// The publication the chat tables are added to (the one `ripple serve` streams).
    pub publication: String,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        Self {
            publication: crate::DEFAULT_PUBLICATION.into(),
        }
    }
}

/// What a run applied.
#[derive(Debug, Default)]
pub struct MigrateReport {
    pub schema_versions_applied: Vec<String>,
    pub files_applied: usize,
}

pub async fn run(database_url: &str, opts: &MigrateOptions) -> Result<MigrateReport, MigrateError> {
    let mut client = db::connect(database_url)
        .await
        .map_err(MigrateError::Connect)?;
    // Two `ripple migrate` at once (say, two replicas starting) must not interleave.
    client
        .execute("select pg_advisory_lock(7007001)", &[])
        .await
        .map_err(MigrateError::Db)?;
    let report = embedded::migrations::runner()
        .run_async(&mut client)
        .await
        .map_err(MigrateError::Schema)?;
    let mut out = MigrateReport {
        schema_versions_applied: report
            .applied_migrations()
            .iter()
            .map(|m| m.to_string())
            .collect(),
        files_applied: 0,
    };
    let tx = client.transaction().await.map_err(MigrateError::Db)?;
    tx.execute(
        "select set_config('ripple.publication', $1, true)",
        &[&opts.publication],
    )
    .await
    .map_err(MigrateError::Db)?;
    for (file, sql) in SQL_FILES.iter().chain(POLICY_FILES.iter()) {
        tx.batch_execute(sql)
            .await
            .map_err(|source| MigrateError::File { file, source })?;
        out.files_applied += 1;
    }
    tx.commit().await.map_err(MigrateError::Db)?;
    client
        .execute("select pg_advisory_unlock(7007001)", &[])
        .await
        .map_err(MigrateError::Db)?;
    Ok(out)
}

/// Applies the versioned schema (`schema/`) only up to `version`, without the function and
/// policy layers: for tests that seed a database as an older release left it and then check
/// what `run` makes of it.
pub async fn run_schema_to(database_url: &str, version: u32) -> Result<(), MigrateError> {
    let mut client = db::connect(database_url)
        .await
        .map_err(MigrateError::Connect)?;
    embedded::migrations::runner()
        .set_target(refinery::Target::Version(version))
        .run_async(&mut client)
        .await
        .map_err(MigrateError::Schema)?;
    Ok(())
}
