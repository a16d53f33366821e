//! REST and RPC under the caller's JWT, PostgREST-compatible (enough for supabase-js's
//! `.from()...` and `.rpc()`).
//!
//! A request flows: authenticate (the token's role and claims) -> `parse` (pure) ->
//! `catalog` (what exists in the exposed schemas) -> `sql` / `rpc` (the statement, values
//! bound) -> `exec` (one transaction as the caller's role, claims in
//! `request.jwt.claims`, a statement timeout) -> the response. The database's privileges and
//! policies are the only authority: Ripple never decides who may see a row.

mod catalog;
mod error;
mod exec;
mod openapi;
mod parse;
mod rpc;
mod sql;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use serde_json::value::RawValue;

pub use error::ApiError;

use self::catalog::{Catalog, CatalogCache};
use self::exec::Outcome;
use self::parse::{Accept, ApiRequest, RawRequest, Settings, Target, Verb};
use self::sql::{Shape, Statement};
use super::Body;
use crate::auth::AuthError;
use crate::http::App;
use crate::metrics::{Counter, Metrics};

/// Statements cached per pooled connection before the cache starts over. Values are bound,
/// so statements differ only by request shape; this bounds what odd shapes can cost.
const MAX_CACHED_STATEMENTS: usize = 256;

/// What REST keeps between requests.
pub struct RestState {
    catalogs: CatalogCache,
    table_requests: Arc<Counter>,
    rpc_requests: Arc<Counter>,
}

impl RestState {
    pub fn new(config: &crate::config::ServeConfig, metrics: &Metrics) -> Self {
        let schemas = catalog::exposed_schemas(&config.schemas);
        let loads = metrics.counter(
            "ripple_rest_catalog_loads_total",
            "Times the catalog of the exposed schemas was read.",
            &[],
        );
        Self {
            catalogs: CatalogCache::new(schemas, loads),
            table_requests: metrics.counter(
                "ripple_rest_requests_total",
                "REST requests parsed, by target.",
                &[("target", "table")],
            ),
            rpc_requests: metrics.counter(
                "ripple_rest_requests_total",
                "REST requests parsed, by target.",
                &[("target", "rpc")],
            ),
        }
    }
}

/// Who is asking, from the verified token.
struct Caller {
    role: String,
    claims: serde_json::Value,
    /// PostgREST answers privilege errors with 401 to anonymous callers, 403 to others.
    anonymous: bool,
}

/// Serves `/rest/v1/...`; `body` is already read and within the size limit.
pub async fn handle(parts: Parts, body: Bytes, app: Arc<App>) -> Response<Body> {
    match serve(&parts, &body, &app).await {
        Ok(resp) => resp,
        Err(e) => {
            if e.status.is_server_error() {
                // The code, not the message: messages can quote row values.
                tracing::warn!(status = e.status.as_u16(), code = %e.code, "rest request failed");
            }
            e.into_response()
        }
    }
}

async fn serve(parts: &Parts, body: &Bytes, app: &App) -> Result<Response<Body>, ApiError> {
    let caller = authenticate(parts, app)?;
    let path = parts.uri.path().strip_prefix("/rest/v1/").unwrap_or("");
    if path.is_empty() && matches!(parts.method, hyper::Method::GET | hyper::Method::HEAD) {
        return describe(parts, app, &caller).await;
    }
    let raw = RawRequest {
        method: &parts.method,
        path,
        query: parts.uri.query(),
        headers: &parts.headers,
        body,
    };
    let state = &app.rest;
    let req = parse::parse(
        &raw,
        &Settings {
            schemas: state.catalogs.schemas(),
        },
    )?;
    match req.target {
        Target::Table(_) => state.table_requests.inc(),
        Target::Rpc(_) => state.rpc_requests.inc(),
    }

    let mut conn = acquire(app).await?;
    let db_err = |e| ApiError::from_db(e, caller.anonymous);
    let mut catalog = state
        .catalogs
        .get(&mut conn, &caller.role)
        .await
        .map_err(db_err)?;
    let statement = match plan(&catalog, &req) {
        Ok(s) => s,
        Err(e) if is_catalog_miss(&e) => {
            // Maybe it was created a moment ago: look again (rate-limited) before saying no.
            match state
                .catalogs
                .reload_after_miss(&mut conn, &caller.role, &catalog)
                .await
                .map_err(db_err)?
            {
                Some(fresh) => {
                    catalog = fresh;
                    plan(&catalog, &req)?
                }
                None => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    drop(catalog);

    let settings = exec::Settings {
        role: &caller.role,
        claims: &caller.claims,
        read_only: req.verb.is_read(),
        statement_timeout_ms: app.config.statement_timeout_ms,
        schema: &req.schema,
        rollback: req.prefer.rollback == Some(true),
    };
    let running = CancelOnDrop(Some(conn.cancel_token()));
    let result = exec::run(&mut conn, &settings, &statement, |outcome| {
        respond(&req, &statement, outcome)
    })
    .await
    .map_err(|e| match e {
        exec::Error::Db(e) => db_err(e),
        exec::Error::Api(e) => e,
    });
    running.finished();
    result
}

/// Cancels the statement a request is running when the request is dropped before it ends
/// (the request timeout answered 504, the client went away). Without it the statement
/// runs on in PostgreSQL, and the next request handed this pooled connection waits behind
/// it: one slow RPC past the timeout made the quick request after it time out too. (The
/// dropped transaction's ROLLBACK is queued by tokio-postgres itself.)
struct CancelOnDrop(Option<tokio_postgres::CancelToken>);

impl CancelOnDrop {
    fn finished(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(token) = self.0.take() {
            tokio::spawn(async move {
                if let Err(error) = token.cancel_query(tokio_postgres::NoTls).await {
                    tracing::debug!(error = %error, "could not cancel an abandoned statement");
                }
            });
        }
    }
}

/// `GET /rest/v1/`: the OpenAPI description of the schema (`Accept-Profile`) for the
/// caller's role.
async fn describe(parts: &Parts, app: &App, caller: &Caller) -> Result<Response<Body>, ApiError> {
    let schemas = app.rest.catalogs.schemas();
    let schema = match parts.headers.get("accept-profile") {
        None => schemas.first().cloned().unwrap_or_else(|| "public".into()),
        Some(v) => {
            let wanted = v.to_str().unwrap_or("").trim();
            schemas
                .iter()
                .find(|s| s.as_str() == wanted)
                .cloned()
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::NOT_ACCEPTABLE,
                        "PGRST106",
                        format!(
                            "The schema must be one of the following: {}",
                            schemas.join(", ")
                        ),
                    )
                })?
        }
    };
    let mut conn = acquire(app).await?;
    let db_err = |e| ApiError::from_db(e, caller.anonymous);
    let catalog = app
        .rest
        .catalogs
        .get(&mut conn, &caller.role)
        .await
        .map_err(db_err)?;
    let rows = conn
        .query(openapi::PRIVILEGES_SQL, &[&caller.role, &schema])
        .await
        .map_err(db_err)?;
    let mut rights = openapi::Rights::default();
    for row in rows {
        let kind: String = row.get(0);
        let name: String = row.get(1);
        if kind == "f" {
            if row.get::<_, bool>(2) {
                rights.functions.insert(name);
            }
        } else {
            rights.tables.insert(
                name,
                openapi::TableRights {
                    select: row.get(2),
                    insert: row.get(3),
                    update: row.get(4),
                    delete: row.get(5),
                },
            );
        }
    }
    let doc = openapi::document(&catalog, &schema, &rights);
    let body = if parts.method == hyper::Method::HEAD {
        Body::default()
    } else {
        Body::new(Bytes::from(doc.to_string()))
    };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/openapi+json; charset=utf-8")
        .body(body)
        .expect("valid response"))
}

fn is_catalog_miss(e: &ApiError) -> bool {
    matches!(
        e.code.as_str(),
        "PGRST200" | "PGRST202" | "PGRST204" | "PGRST205" | "42703"
    )
}

fn plan(catalog: &Catalog, req: &ApiRequest) -> Result<Statement, ApiError> {
    match &req.target {
        Target::Table(name) => {
            let table = catalog.table(&req.schema, name).ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "PGRST205",
                    format!(
                        "Could not find the table '{}.{}' in the schema cache",
                        req.schema, name
                    ),
                )
            })?;
            sql::table_statement(catalog, table, req)
        }
        Target::Rpc(_) => {
            let call = rpc::resolve(catalog, req)?;
            rpc::statement(&call, req)
        }
    }
}

/// The caller's role and claims: from `Authorization: Bearer`, else the `apikey` header or
/// query parameter (supabase-js sends both; a browser WebSocket can only send the query).
fn authenticate(parts: &Parts, app: &App) -> Result<Caller, ApiError> {
    let token = if let Some(value) = parts.headers.get(hyper::header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or("");
        match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                token.trim().to_string()
            }
            _ => {
                return Err(ApiError::unauthorized(
                    "PGRST301",
                    "the Authorization header must be a Bearer token",
                ))
            }
        }
    } else if let Some(value) = parts.headers.get("apikey") {
        value.to_str().unwrap_or("").trim().to_string()
    } else if let Some(key) =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .find(|(k, _)| k == "apikey")
            .map(|(_, v)| v.into_owned())
    {
        key
    } else {
        return Err(ApiError::unauthorized(
            "PGRST302",
            "no apikey or Authorization header: send the anon key as apikey",
        ));
    };
    let claims = app.jwt.verify(&token).map_err(|e| match e {
        AuthError::Expired => ApiError::unauthorized("PGRST303", "JWT expired"),
        other => ApiError::unauthorized("PGRST301", other.to_string()),
    })?;
    Ok(Caller {
        anonymous: claims.role == "anon",
        role: claims.role,
        claims: claims.raw,
    })
}

async fn acquire(app: &App) -> Result<deadpool_postgres::Object, ApiError> {
    // Waiting longer for a connection than a statement may run helps nobody.
    let wait = Duration::from_millis(app.config.statement_timeout_ms.max(1000));
    let conn = match tokio::time::timeout(wait, app.pool.get()).await {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "PGRST003",
                "Timed out acquiring connection from connection pool.",
            ))
        }
        Ok(Err(e)) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "PGRST000",
                "Could not connect to the database",
            )
            .with_source(e))
        }
        Ok(Ok(c)) => c,
    };
    if conn.statement_cache.size() > MAX_CACHED_STATEMENTS {
        conn.statement_cache.clear();
    }
    Ok(conn)
}

/// The HTTP response for a statement's outcome. Runs before the transaction commits, so a
/// refusal here (e.g. a single object asked for and two rows written) rolls the work back,
/// as PostgREST does.
fn respond(
    req: &ApiRequest,
    stmt: &Statement,
    outcome: Outcome,
) -> Result<Response<Body>, ApiError> {
    let is_rpc = matches!(req.target, Target::Rpc(_));
    let content_range = content_range(req, &outcome)?;
    let mut body = match stmt.shape {
        Shape::Empty => None,
        Shape::Scalar => Some(outcome.body.unwrap_or_else(|| "null".into())),
        Shape::Object => {
            let rows = split_array(outcome.body.as_deref())?;
            Some(rows.into_iter().next().unwrap_or_else(|| "null".into()))
        }
        Shape::Array => Some(outcome.body.unwrap_or_else(|| "[]".into())),
    };
    let single = matches!(req.accept, Accept::Object { .. });
    if single {
        if let (Shape::Array, Some(text)) = (stmt.shape, &body) {
            let rows = split_array(Some(text))?;
            if rows.len() != 1 {
                return Err(ApiError::new(
                    StatusCode::NOT_ACCEPTABLE,
                    "PGRST116",
                    "JSON object requested, multiple (or no) rows returned",
                )
                .with_details(format!("The result contains {} rows", rows.len())));
            }
            body = rows.into_iter().next();
        }
    }
    let status = match (req.verb, &body) {
        (Verb::Post, _) if !is_rpc => StatusCode::CREATED,
        (_, None) => StatusCode::NO_CONTENT,
        _ => StatusCode::OK,
    };
    let mut builder = Response::builder().status(status);
    if let Some(range) = content_range {
        builder = builder.header("content-range", range);
    }
    if let Some(applied) = req.prefer.applied() {
        builder = builder.header("preference-applied", applied);
    }
    let content_type = if single {
        "application/vnd.pgrst.object+json; charset=utf-8"
    } else {
        "application/json; charset=utf-8"
    };
    let body = match (req.verb, body) {
        (Verb::Head, _) | (_, None) => Body::default(),
        (_, Some(text)) => {
            builder = builder.header("content-type", content_type);
            Body::new(Bytes::from(text))
        }
    };
    Ok(builder.body(body).expect("valid response"))
}

/// `Content-Range: 0-24/100` (or `*/100` when the page is empty, `/*` when not counted).
fn content_range(req: &ApiRequest, outcome: &Outcome) -> Result<Option<String>, ApiError> {
    if stmt_is_write(req) {
        return Ok(Some(match outcome.total {
            Some(n) if req.prefer.count => format!("*/{n}"),
            _ => "*/*".into(),
        }));
    }
    if matches!(req.target, Target::Rpc(_)) && !req.prefer.count && outcome.body.is_none() {
        return Ok(None); // void
    }
    let total = match outcome.total {
        Some(t) if req.prefer.count => t.to_string(),
        _ => "*".into(),
    };
    if let Some(t) = outcome.total {
        if outcome.page == 0 && req.offset > 0 && req.offset >= t.max(0) as u64 {
            return Err(ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "PGRST103",
                "Requested range not satisfiable",
            )
            .with_details(format!(
                "An offset of {} was requested, but there are only {t} rows.",
                req.offset
            )));
        }
    }
    Ok(Some(if outcome.page <= 0 {
        format!("*/{total}")
    } else {
        format!(
            "{}-{}/{total}",
            req.offset,
            req.offset + outcome.page as u64 - 1
        )
    }))
}

fn stmt_is_write(req: &ApiRequest) -> bool {
    matches!(req.target, Target::Table(_)) && !req.verb.is_read()
}

/// The elements of a JSON array, as their own text.
fn split_array(text: Option<&str>) -> Result<Vec<String>, ApiError> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    let rows: Vec<Box<RawValue>> = serde_json::from_str(text).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "PGRSTX00",
            "the database returned JSON Ripple could not read",
        )
        .with_source(e)
    })?;
    Ok(rows.into_iter().map(|r| r.get().to_string()).collect())
}
