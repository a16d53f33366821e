//! Running a planned statement the way every request runs: in its own transaction, as the
//! caller's role with the claims in `request.jwt.claims`, under a statement timeout.
//!
//! Three round trips: BEGIN; then the claims, the settings and the statement itself,
//! pipelined (all prepared once per connection and cached); then COMMIT. Pipelining is
//! safe because PostgreSQL runs them in the order sent and they share the transaction: if
//! setting the role fails, the statement fails too ("transaction aborted") and we report
//! the first error.

use tokio_postgres::types::ToSql;

use super::error::ApiError;
use super::sql::{Kind, Param, Statement};

/// Transaction-local settings besides the claims. search_path is the request's schema, as
/// PostgREST sets it, for functions that do not pin their own.
const SETTINGS_SQL: &str =
    "select set_config('statement_timeout', $1, true), set_config('search_path', $2, true)";

pub struct Settings<'a> {
    pub role: &'a str,
    pub claims: &'a serde_json::Value,
    pub read_only: bool,
    pub statement_timeout_ms: u64,
    pub schema: &'a str,
}

/// What a statement produced.
#[derive(Debug)]
pub struct Outcome {
    /// JSON text (an array, an object or a scalar), if the statement returns rows.
    pub body: Option<String>,
    /// Rows in the body, or rows affected.
    pub page: i64,
    /// The full count (`count=exact`), or rows affected by a write.
    pub total: Option<i64>,
}

#[derive(Debug)]
pub enum Error {
    Db(tokio_postgres::Error),
    Api(ApiError),
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::Db(e)
    }
}

/// Runs `stmt`, hands the outcome to `finish` and commits only if `finish` succeeds.
pub async fn run<T>(
    conn: &mut deadpool_postgres::Object,
    settings: &Settings<'_>,
    stmt: &Statement,
    finish: impl FnOnce(Outcome) -> Result<T, ApiError>,
) -> Result<T, Error> {
    let tx = conn
        .build_transaction()
        .read_only(settings.read_only)
        .start()
        .await?;
    let claims_stmt = tx.prepare_cached(crate::db::SET_REQUEST_CLAIMS_SQL).await?;
    let settings_stmt = tx.prepare_cached(SETTINGS_SQL).await?;
    let main = tx
        .prepare_typed_cached(&stmt.sql, &stmt.param_types())
        .await?;

    let claims_text = settings.claims.to_string();
    let timeout = settings.statement_timeout_ms.to_string();
    let search_path = super::sql::quote_ident(settings.schema);
    let params: Vec<&(dyn ToSql + Sync)> = stmt
        .params
        .iter()
        .map(|p| match p {
            Param::Text(t) => t as &(dyn ToSql + Sync),
            Param::TextArray(a) => a as &(dyn ToSql + Sync),
        })
        .collect();

    let claims_params: [&(dyn ToSql + Sync); 2] = [&settings.role, &claims_text];
    let settings_params: [&(dyn ToSql + Sync); 2] = [&timeout, &search_path];
    // `biased`: poll in the order written, so the messages go out in that order.
    let (claims, setup, outcome) = tokio::join!(
        biased;
        tx.execute(&claims_stmt, &claims_params),
        tx.execute(&settings_stmt, &settings_params),
        async {
            match stmt.kind {
                Kind::Rows => {
                    let row = tx.query_one(&main, &params).await?;
                    Ok(Outcome {
                        body: row.get(0),
                        page: row.get(1),
                        total: row.get(2),
                    })
                }
                Kind::Execute => {
                    let n = tx.execute(&main, &params).await? as i64;
                    Ok::<_, tokio_postgres::Error>(Outcome {
                        body: None,
                        page: n,
                        total: Some(n),
                    })
                }
            }
        }
    );
    claims?;
    setup?;
    let result = finish(outcome?).map_err(Error::Api)?;
    tx.commit().await?;
    Ok(result)
}
