//! Ordinary (non-replication) database connections, and running a statement the way a
//! request runs: as the token's role, with its claims visible to policies.

use tokio_postgres::{Client, NoTls};

/// Connects and drives the connection on its own task; errors end the connection and are
/// logged without the URL (it may hold a password).
pub async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(error = %error, "database connection closed");
        }
    });
    Ok(client)
}

/// A pooled database call that failed: no connection could be had, or the statement
/// failed. Callers that only need to log and retry share this one type.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("no database connection")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("the database call failed")]
    Db(#[from] tokio_postgres::Error),
}

/// The text of [`SET_REQUEST_CLAIMS_SQL`], for statements that extend it with `concat!`
/// (REST adds its statement timeout and search_path to the same round trip).
macro_rules! set_request_claims_sql {
    () => {
        "select set_config('role', $1, true), \
         set_config('request.jwt.claims', $2, true), \
         set_config('request.jwt.claim.sub', coalesce($2::json ->> 'sub', ''), true), \
         set_config('request.jwt.claim.role', coalesce($2::json ->> 'role', ''), true)"
    };
}
pub(crate) use set_request_claims_sql;

/// The statement behind [`set_request_claims`] (`$1` role, `$2` claims as JSON text), for
/// callers that prepare it once per connection and pipeline it ahead of a request's own
/// statement (REST and the authorizer do). Besides `request.jwt.claims` it sets the older
/// per-claim settings `request.jwt.claim.sub` and `request.jwt.claim.role`, so policies
/// written for earlier PostgREST versions work unchanged.
pub const SET_REQUEST_CLAIMS_SQL: &str = set_request_claims_sql!();

/// Makes the rest of the current transaction run as `role` with `claims` in
/// `request.jwt.claims`, the PostgREST/Supabase convention that `auth.uid()` reads.
/// Both settings are transaction-local, so a pooled connection carries nothing over.
pub async fn set_request_claims(
    tx: &impl tokio_postgres::GenericClient,
    role: &str,
    claims_json: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(SET_REQUEST_CLAIMS_SQL, &[&role, &claims_json])
        .await?;
    Ok(())
}
