//! Running a planned statement the way every request runs: in its own transaction, as the
//! caller's role with the claims in `request.jwt.claims`, under a statement timeout.
//!
//! Three round trips: BEGIN; then the settings and the statement itself, pipelined (both
//! prepared once per connection and cached); then COMMIT. Pipelining is safe because
//! PostgreSQL runs them in the order sent and they share the transaction: if setting the
//! role fails, the statement fails too ("transaction aborted") and we report the first
//! error.

use tokio_postgres::types::ToSql;

use super::error::ApiError;
use super::sql::{Kind, Param, Statement};

/// Everything set before a request's statement, transaction-locally, in one statement: the
/// role and claims exactly as [`crate::db::set_request_claims`] sets them (`$1`, `$2`), then
/// the statement timeout and search_path (the request's schema, as PostgREST sets it, for
/// functions that do not pin their own).
const SETUP_SQL: &str = concat!(
    crate::db::set_request_claims_sql!(),
    ", set_config('statement_timeout', $3, true), set_config('search_path', $4, true)"
);

pub struct Settings<'a> {
    pub role: &'a str,
    pub claims: &'a serde_json::Value,
    pub read_only: bool,
    pub statement_timeout_ms: u64,
    pub schema: &'a str,
    /// `Prefer: tx=rollback`: run everything, answer as if committed, then roll back.
    pub rollback: bool,
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

/// Runs `stmt`, hands the outcome to `finish` and commits only if `finish` succeeds and the
/// client did not ask for a rollback.
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
    let setup_stmt = tx.prepare_cached(SETUP_SQL).await?;
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

    let setup_params: [&(dyn ToSql + Sync); 4] =
        [&settings.role, &claims_text, &timeout, &search_path];
    // `biased`: poll in the order written, so the messages go out in that order.
    let (setup, outcome) = tokio::join!(
        biased;
        tx.execute(&setup_stmt, &setup_params),
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
    setup?;
    let result = finish(outcome?).map_err(Error::Api)?;
    if settings.rollback {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_setup_sets_claims_the_way_db_does() {
        assert!(super::SETUP_SQL.starts_with(crate::db::SET_REQUEST_CLAIMS_SQL));
    }
}
