//! The sign-in service under `/auth/v1/`: the part of Supabase Auth's (GoTrue's) HTTP API that
//! supabase-js calls for email and password users, answering in its shapes and error codes so
//! `auth.signUp`, `signInWithPassword`, `getSession`, `getUser`, `updateUser`,
//! `refreshSession`, `onAuthStateChange` and `signOut` work unchanged. What it keeps between
//! requests is `crate::auth::AuthService`.
//!
//! Users, sessions and refresh tokens live in `auth.users`, `auth.sessions` and
//! `auth.refresh_tokens` (schema V6), reached through the server's own pool connection as the
//! owner role: these statements never `SET ROLE`.
//!
//! Privacy: nothing here logs an email, a password, a token or a hash. An unknown email and a
//! wrong password get the same answer after the same work.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};
use serde_json::{json, Map, Value};
use tokio_postgres::Row;
use uuid::Uuid;

use super::Body;
use crate::auth::password::{self, Weak};
use crate::auth::tokens::{self, TokenUser};
use crate::auth::ClientAddr;
use crate::http::App;

/// An error in GoTrue's form: `{"code": <status>, "error_code": "...", "msg": "..."}`, which
/// supabase-js turns into an `AuthApiError` with `.code` and `.status`.
#[derive(Debug)]
pub struct AuthApiError {
    status: StatusCode,
    code: &'static str,
    msg: String,
    weak: Option<Weak>,
}

impl AuthApiError {
    fn new(status: StatusCode, code: &'static str, msg: impl Into<String>) -> Self {
        Self {
            status,
            code,
            msg: msg.into(),
            weak: None,
        }
    }
    fn bad(code: &'static str, msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, msg)
    }
    fn unprocessable(code: &'static str, msg: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, msg)
    }
    fn invalid_credentials() -> Self {
        Self::bad("invalid_credentials", "Invalid login credentials")
    }
    fn rate_limited() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "over_request_rate_limit",
            "Request rate limit reached",
        )
    }
    fn weak_password(weak: Weak) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "weak_password",
            msg: weak.message.clone(),
            weak: Some(weak),
        }
    }
    /// A failure of ours (database down, a bug): logged with its cause, answered without it.
    fn internal(what: &'static str, error: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %error, "auth: {what}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unexpected_failure",
            "Unexpected failure, please try again",
        )
    }
    fn db(error: tokio_postgres::Error) -> Self {
        let described = match error.as_db_error() {
            // The code and message only: details can quote values (an email in a key).
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => error.to_string(),
        };
        Self::internal("database error", &described)
    }

    pub fn into_response(self) -> Response<Body> {
        let mut body = json!({
            "code": self.status.as_u16(),
            "error_code": self.code,
            "msg": self.msg,
        });
        if let Some(weak) = self.weak {
            body["weak_password"] = json!({"reasons": weak.reasons, "message": weak.message});
        }
        crate::http::json(self.status, body.to_string())
    }
}

type Answer = Result<Response<Body>, AuthApiError>;

/// Routes one request under `/auth/v1/`.
pub async fn handle(parts: Parts, body: Bytes, app: Arc<App>) -> Response<Body> {
    let path = parts
        .uri
        .path()
        .strip_prefix("/auth/v1")
        .unwrap_or_default()
        .trim_end_matches('/');
    let query = parts.uri.query().unwrap_or_default();
    let addr = client_addr(&parts, app.auth.settings.trust_forwarded_for);
    let ua = user_agent(&parts);
    let client = Client {
        addr,
        user_agent: ua.as_deref(),
    };
    let answer = match (&parts.method, path) {
        (&Method::POST, "/signup") => signup(&app, &client, &body).await,
        (&Method::POST, "/token") => match query_param(query, "grant_type").as_deref() {
            Some("password") => password_grant(&app, &client, &body).await,
            Some("refresh_token") => refresh_grant(&app, &body).await,
            Some(other) => Err(AuthApiError::bad(
                "validation_failed",
                format!("unsupported_grant_type: {other} is not supported by Ripple"),
            )),
            None => Err(AuthApiError::bad(
                "validation_failed",
                "grant_type is required",
            )),
        },
        (&Method::GET, "/user") => get_user(&app, &parts).await,
        (&Method::PUT, "/user") => update_user(&app, &parts, &body).await,
        (&Method::POST, "/logout") => logout(&app, &parts, query).await,
        (&Method::GET, "/settings") => Ok(settings(&app)),
        (&Method::GET, "/health") => Ok(ok_json(json!({
            "name": "Ripple", "description": "Ripple's Supabase Auth compatible service"
        }))),
        (&Method::GET, "/.well-known/jwks.json") => Ok(ok_json(jwks(&app))),
        _ => Err(AuthApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "Not found: Ripple's auth service supports email and password sign-in only",
        )),
    };
    answer.unwrap_or_else(AuthApiError::into_response)
}

/// The address rate limits count against: the peer, or behind a trusted reverse proxy the
/// last `X-Forwarded-For` entry (the address that proxy saw; earlier entries are the
/// client's own say and could be anything).
fn client_addr(parts: &Parts, trust_forwarded_for: bool) -> Option<IpAddr> {
    let peer = parts.extensions.get::<ClientAddr>().map(|a| a.0);
    if !trust_forwarded_for {
        return peer;
    }
    parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .next_back()
        .or(peer)
}

fn query_param(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn ok_json(v: Value) -> Response<Body> {
    crate::http::json(StatusCode::OK, v.to_string())
}

fn parse_body(body: &Bytes) -> Result<Map<String, Value>, AuthApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(AuthApiError::bad(
            "bad_json",
            "Could not parse request body as JSON: expected an object",
        )),
        Err(e) => Err(AuthApiError::bad(
            "bad_json",
            format!("Could not parse request body as JSON: {e}"),
        )),
    }
}

fn str_field<'a>(m: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    m.get(name).and_then(Value::as_str)
}

/// A plausible address: one `@` with something on both sides, a dot in the domain, no spaces.
fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && email.len() <= 320
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Runs argon2 on the blocking pool (it takes tens of milliseconds of CPU and 19 MiB), a
/// few at a time: a flood of sign-ins from many addresses queues here instead of taking
/// every thread and gigabytes of memory.
async fn blocking<T: Send + 'static>(
    app: &App,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AuthApiError> {
    let _permit = app
        .auth
        .hashing
        .acquire()
        .await
        .map_err(|e| AuthApiError::internal("password hashing is shut down", &e))?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AuthApiError::internal("password hashing task failed", &e))
}

// `banned_until` is judged in SQL: the DBA's 'infinity' has no chrono equivalent.
const USER_COLUMNS: &str = "id, aud, role, email, encrypted_password, email_confirmed_at, \
     coalesce(banned_until > now(), false), raw_app_meta_data, raw_user_meta_data, last_sign_in_at, created_at, updated_at";

/// A row of `auth.users`.
struct User {
    id: Uuid,
    aud: String,
    role: String,
    email: String,
    encrypted_password: Option<String>,
    email_confirmed_at: Option<DateTime<Utc>>,
    banned: bool,
    app_metadata: Value,
    user_metadata: Value,
    last_sign_in_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl User {
    fn from_row(r: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            id: r.try_get(0)?,
            aud: r.try_get(1)?,
            role: r.try_get(2)?,
            email: r.try_get(3)?,
            encrypted_password: r.try_get(4)?,
            email_confirmed_at: r.try_get(5)?,
            banned: r.try_get(6)?,
            app_metadata: r.try_get(7)?,
            user_metadata: r.try_get(8)?,
            last_sign_in_at: r.try_get(9)?,
            created_at: r.try_get(10)?,
            updated_at: r.try_get(11)?,
        })
    }

    /// The user object of GoTrue's API.
    fn to_json(&self) -> Value {
        let ts = |t: &Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339());
        let mut identity_data = json!({
            "sub": self.id.to_string(),
            "email": self.email,
            "email_verified": self.email_confirmed_at.is_some(),
            "phone_verified": false,
        });
        if let (Some(obj), Value::Object(meta)) =
            (identity_data.as_object_mut(), &self.user_metadata)
        {
            for (k, v) in meta {
                obj.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        json!({
            "id": self.id.to_string(),
            "aud": self.aud,
            "role": self.role,
            "email": self.email,
            "email_confirmed_at": ts(&self.email_confirmed_at),
            "phone": "",
            "confirmed_at": ts(&self.email_confirmed_at),
            "last_sign_in_at": ts(&self.last_sign_in_at),
            "app_metadata": self.app_metadata,
            "user_metadata": self.user_metadata,
            "identities": [{
                "identity_id": self.id.to_string(),
                "id": self.id.to_string(),
                "user_id": self.id.to_string(),
                "identity_data": identity_data,
                "provider": "email",
                "last_sign_in_at": ts(&self.last_sign_in_at),
                "created_at": self.created_at.to_rfc3339(),
                "updated_at": self.updated_at.to_rfc3339(),
                "email": self.email,
            }],
            "created_at": self.created_at.to_rfc3339(),
            "updated_at": self.updated_at.to_rfc3339(),
            "is_anonymous": false,
        })
    }
}

/// A new session for `user` with its first refresh token, inside `tx`.
async fn start_session(
    tx: &tokio_postgres::Transaction<'_>,
    user: Uuid,
    user_agent: Option<&str>,
    addr: Option<IpAddr>,
) -> Result<(Uuid, String), tokio_postgres::Error> {
    let session: Uuid = tx
        .query_one(
            "insert into auth.sessions (user_id, user_agent, ip) values ($1, $2, $3) returning id",
            &[&user, &user_agent, &addr],
        )
        .await?
        .try_get(0)?;
    let token = tokens::new_refresh_token();
    tx.execute(
        "insert into auth.refresh_tokens (token_hash, user_id, session_id) values ($1, $2, $3)",
        &[&tokens::hash_refresh_token(&token), &user, &session],
    )
    .await?;
    Ok((session, token))
}

/// GoTrue's session response: the access token, its lifetime, the refresh token, the user.
fn session_response(
    app: &App,
    user: &User,
    session: Uuid,
    refresh_token: &str,
    signed_in_at: i64,
) -> Answer {
    let s = &app.auth.settings;
    let now = crate::auth::now_epoch();
    let id = user.id.to_string();
    let claims = tokens::access_claims(
        &TokenUser {
            id: &id,
            aud: &user.aud,
            role: &user.role,
            email: &user.email,
            app_metadata: &user.app_metadata,
            user_metadata: &user.user_metadata,
        },
        &session.to_string(),
        &s.issuer,
        now,
        s.access_ttl_secs,
        signed_in_at,
    );
    let access_token = sign(app, &claims)?;
    Ok(ok_json(json!({
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": s.access_ttl_secs,
        "expires_at": now + s.access_ttl_secs,
        "refresh_token": refresh_token,
        "user": user.to_json(),
    })))
}

/// Signs with Ripple's own key when configured, else HS256 with the JWT secret.
fn sign(app: &App, claims: &Value) -> Result<String, AuthApiError> {
    match app.auth.signing_key() {
        Some(key) => key
            .sign(claims)
            .map_err(|e| AuthApiError::internal("could not sign an access token", &e)),
        None => app.jwt.mint(claims).ok_or_else(|| {
            AuthApiError::internal(
                "no key to sign access tokens with",
                &"set --jwt-secret or --auth-signing-key",
            )
        }),
    }
}

/// Where a sign-in comes from, kept on its session for the DBA.
struct Client<'a> {
    addr: Option<IpAddr>,
    user_agent: Option<&'a str>,
}

fn user_agent(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get(hyper::header::USER_AGENT)?
        .to_str()
        .ok()
        .map(|s| s.chars().take(512).collect())
}

async fn signup(app: &App, client: &Client<'_>, body: &Bytes) -> Answer {
    let addr = client.addr;
    let s = &app.auth.settings;
    let m = parse_body(body)?;
    if s.signup_disabled {
        return Err(AuthApiError::unprocessable(
            "signup_disabled",
            "Signups not allowed for this instance",
        ));
    }
    let email = str_field(&m, "email").map(str::trim).unwrap_or_default();
    if email.is_empty() {
        return Err(AuthApiError::bad(
            "validation_failed",
            "Ripple's auth service signs users up by email: send an email and a password",
        ));
    }
    if !valid_email(email) {
        return Err(AuthApiError::bad(
            "validation_failed",
            "Unable to validate email address: invalid format",
        ));
    }
    let password = str_field(&m, "password").unwrap_or_default().to_string();
    if password.is_empty() {
        return Err(AuthApiError::unprocessable(
            "validation_failed",
            "Signup requires a valid password",
        ));
    }
    let data = match m.get("data") {
        None | Some(Value::Null) => json!({}),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => {
            return Err(AuthApiError::bad(
                "validation_failed",
                "data (the user's metadata) must be a JSON object",
            ))
        }
    };
    if !app.auth.allow_attempt(addr, email) {
        return Err(AuthApiError::rate_limited());
    }
    s.password
        .check(&password)
        .map_err(AuthApiError::weak_password)?;
    let hash = blocking(app, move || password::hash(&password)).await?;

    let mut conn = app
        .pool
        .get()
        .await
        .map_err(|e| AuthApiError::internal("no database connection", &e))?;
    let tx = conn.transaction().await.map_err(AuthApiError::db)?;
    let confirmed = !s.confirm_email;
    let inserted = tx
        .query_one(
            &format!(
                "insert into auth.users (email, encrypted_password, raw_user_meta_data, \
                 email_confirmed_at, last_sign_in_at) \
                 values ($1, $2, $3, case when $4 then now() end, case when $4 then now() end) \
                 returning {USER_COLUMNS}"
            ),
            &[&email, &hash, &data, &confirmed],
        )
        .await;
    let row = match inserted {
        Ok(row) => row,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            return Err(AuthApiError::unprocessable(
                "user_already_exists",
                "User already registered",
            ));
        }
        Err(e) => return Err(AuthApiError::db(e)),
    };
    let user = User::from_row(&row).map_err(AuthApiError::db)?;
    if !confirmed {
        tx.commit().await.map_err(AuthApiError::db)?;
        tracing::info!(user = %user.id, "auth: user signed up (awaiting confirmation)");
        // No session until the DBA confirms the address: supabase-js returns the user alone.
        return Ok(ok_json(user.to_json()));
    }
    let (session, refresh) = start_session(&tx, user.id, client.user_agent, addr)
        .await
        .map_err(AuthApiError::db)?;
    tx.commit().await.map_err(AuthApiError::db)?;
    tracing::info!(user = %user.id, "auth: user signed up");
    session_response(app, &user, session, &refresh, crate::auth::now_epoch())
}

async fn password_grant(app: &App, client: &Client<'_>, body: &Bytes) -> Answer {
    let addr = client.addr;
    let m = parse_body(body)?;
    let email = str_field(&m, "email").map(str::trim).unwrap_or_default();
    let password = str_field(&m, "password").unwrap_or_default().to_string();
    if email.is_empty() {
        return Err(AuthApiError::bad(
            "validation_failed",
            "missing email: Ripple's auth service signs in by email and password",
        ));
    }
    if !app.auth.allow_attempt(addr, email) {
        return Err(AuthApiError::rate_limited());
    }
    let mut conn = app
        .pool
        .get()
        .await
        .map_err(|e| AuthApiError::internal("no database connection", &e))?;
    let row = conn
        .query_opt(
            &format!("select {USER_COLUMNS} from auth.users where lower(email) = lower($1)"),
            &[&email],
        )
        .await
        .map_err(AuthApiError::db)?;
    let user = row
        .as_ref()
        .map(User::from_row)
        .transpose()
        .map_err(AuthApiError::db)?;
    let stored = user.as_ref().and_then(|u| u.encrypted_password.clone());
    let matches = blocking(app, move || match stored {
        Some(phc) => password::verify(&password, &phc),
        None => {
            password::verify_against_nobody(&password);
            false
        }
    })
    .await?;
    let user = match user {
        Some(u) if matches => u,
        _ => return Err(AuthApiError::invalid_credentials()),
    };
    if user.banned {
        return Err(AuthApiError::bad("user_banned", "User is banned"));
    }
    if user.email_confirmed_at.is_none() {
        return Err(AuthApiError::bad(
            "email_not_confirmed",
            "Email not confirmed",
        ));
    }
    let tx = conn.transaction().await.map_err(AuthApiError::db)?;
    let (session, refresh) = start_session(&tx, user.id, client.user_agent, addr)
        .await
        .map_err(AuthApiError::db)?;
    let row = tx
        .query_one(
            &format!(
                "update auth.users set last_sign_in_at = now() where id = $1 returning {USER_COLUMNS}"
            ),
            &[&user.id],
        )
        .await
        .map_err(AuthApiError::db)?;
    tx.commit().await.map_err(AuthApiError::db)?;
    let user = User::from_row(&row).map_err(AuthApiError::db)?;
    tracing::debug!(user = %user.id, "auth: signed in");
    session_response(app, &user, session, &refresh, crate::auth::now_epoch())
}

/// Exchanges a refresh token for a new access token and a new refresh token. The old token is
/// revoked; presenting a revoked token again ends its whole session (every token of the
/// family), since either the client or a thief holds a copy it should not.
async fn refresh_grant(app: &App, body: &Bytes) -> Answer {
    let m = parse_body(body)?;
    let token = str_field(&m, "refresh_token").unwrap_or_default();
    if token.is_empty() {
        return Err(AuthApiError::bad(
            "validation_failed",
            "refresh_token is required",
        ));
    }
    let hash = tokens::hash_refresh_token(token);
    let mut conn = app
        .pool
        .get()
        .await
        .map_err(|e| AuthApiError::internal("no database connection", &e))?;
    let tx = conn.transaction().await.map_err(AuthApiError::db)?;
    // The row lock serializes two refreshes of one token: the second sees it revoked.
    let found = tx
        .query_opt(
            "select id, revoked, session_id, user_id, \
                    revoked and updated_at > now() - make_interval(secs => $2) \
               from auth.refresh_tokens where token_hash = $1 for update",
            &[
                &hash,
                &(app.auth.settings.refresh_reuse_interval.as_secs_f64()),
            ],
        )
        .await
        .map_err(AuthApiError::db)?;
    let Some(found) = found else {
        return Err(AuthApiError::bad(
            "refresh_token_not_found",
            "Invalid Refresh Token: Refresh Token Not Found",
        ));
    };
    let (id, revoked, session, user_id, just_rotated): (i64, bool, Uuid, Uuid, bool) = (
        found.get(0),
        found.get(1),
        found.get(2),
        found.get(3),
        found.get(4),
    );
    // Moments after a rotation, the same token again is most likely the client retrying a
    // refresh whose answer it never got (supabase-js retries on network errors): it gets
    // another child instead of losing the session. Later, it is reuse.
    if revoked && !just_rotated {
        tx.execute("delete from auth.sessions where id = $1", &[&session])
            .await
            .map_err(AuthApiError::db)?;
        tx.commit().await.map_err(AuthApiError::db)?;
        tracing::warn!(user = %user_id, session = %session,
            "auth: a rotated refresh token was used again; its session is ended");
        return Err(AuthApiError::bad(
            "refresh_token_already_used",
            "Invalid Refresh Token: Already Used",
        ));
    }
    let row = tx
        .query_one(
            &format!("select {USER_COLUMNS} from auth.users where id = $1"),
            &[&user_id],
        )
        .await
        .map_err(AuthApiError::db)?;
    let user = User::from_row(&row).map_err(AuthApiError::db)?;
    if user.banned {
        return Err(AuthApiError::bad("user_banned", "User is banned"));
    }
    let next = tokens::new_refresh_token();
    if !revoked {
        tx.execute(
            "update auth.refresh_tokens set revoked = true, updated_at = now() where id = $1",
            &[&id],
        )
        .await
        .map_err(AuthApiError::db)?;
    }
    tx.execute(
        "insert into auth.refresh_tokens (token_hash, user_id, session_id, parent) \
         values ($1, $2, $3, $4)",
        &[&tokens::hash_refresh_token(&next), &user_id, &session, &id],
    )
    .await
    .map_err(AuthApiError::db)?;
    let started: DateTime<Utc> = tx
        .query_one(
            "update auth.sessions set refreshed_at = now(), updated_at = now() where id = $1 \
             returning created_at",
            &[&session],
        )
        .await
        .map_err(AuthApiError::db)?
        .get(0);
    tx.commit().await.map_err(AuthApiError::db)?;
    session_response(app, &user, session, &next, started.timestamp())
}

/// The caller of `/user` and `/logout`: the verified access token's user and session.
struct Bearer {
    user: Uuid,
    session: Option<Uuid>,
}

fn bearer(app: &App, parts: &Parts) -> Result<Bearer, AuthApiError> {
    let token = parts
        .headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            AuthApiError::new(
                StatusCode::UNAUTHORIZED,
                "no_authorization",
                "This endpoint requires a valid Bearer token",
            )
        })?;
    let claims = app.jwt.verify(token).map_err(|e| {
        AuthApiError::new(
            StatusCode::FORBIDDEN,
            "bad_jwt",
            format!("invalid JWT: unable to parse or verify signature, {e}"),
        )
    })?;
    let user = claims
        .sub
        .as_deref()
        .and_then(|s| s.parse::<Uuid>().ok())
        .ok_or_else(|| {
            AuthApiError::new(
                StatusCode::FORBIDDEN,
                "bad_jwt",
                "invalid claim: missing sub claim",
            )
        })?;
    let session = claims
        .raw
        .get("session_id")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<Uuid>().ok());
    Ok(Bearer { user, session })
}

/// The bearer's user, refusing a token whose session has ended (signed out, or ended by
/// refresh token reuse), as GoTrue does.
async fn current_user(
    client: &impl deadpool_postgres::GenericClient,
    who: &Bearer,
) -> Result<User, AuthApiError> {
    if let Some(session) = who.session {
        let alive = client
            .query_opt("select 1 from auth.sessions where id = $1", &[&session])
            .await
            .map_err(AuthApiError::db)?
            .is_some();
        if !alive {
            return Err(AuthApiError::new(
                StatusCode::FORBIDDEN,
                "session_not_found",
                "Session from session_id claim in JWT does not exist",
            ));
        }
    }
    let row = client
        .query_opt(
            &format!("select {USER_COLUMNS} from auth.users where id = $1"),
            &[&who.user],
        )
        .await
        .map_err(AuthApiError::db)?
        .ok_or_else(|| {
            AuthApiError::new(
                StatusCode::NOT_FOUND,
                "user_not_found",
                "User from sub claim in JWT does not exist",
            )
        })?;
    User::from_row(&row).map_err(AuthApiError::db)
}

async fn get_user(app: &App, parts: &Parts) -> Answer {
    let who = bearer(app, parts)?;
    let conn = app
        .pool
        .get()
        .await
        .map_err(|e| AuthApiError::internal("no database connection", &e))?;
    let user = current_user(&conn, &who).await?;
    Ok(ok_json(user.to_json()))
}

/// `updateUser`: a new password, metadata (merged key by key; a null value removes its key, as
/// in GoTrue), or a new email (taken at once: there is no mail to confirm it with).
async fn update_user(app: &App, parts: &Parts, body: &Bytes) -> Answer {
    let who = bearer(app, parts)?;
    let m = parse_body(body)?;
    let mut conn = app
        .pool
        .get()
        .await
        .map_err(|e| AuthApiError::internal("no database connection", &e))?;
    let tx = conn.transaction().await.map_err(AuthApiError::db)?;
    let user = current_user(&tx, &who).await?;
    if let Some(pw) = m.get("password").filter(|v| !v.is_null()) {
        let pw = pw.as_str().unwrap_or_default().to_string();
        app.auth
            .settings
            .password
            .check(&pw)
            .map_err(AuthApiError::weak_password)?;
        let old = user.encrypted_password.clone();
        let (same, hash) = blocking(app, move || {
            let same = old.is_some_and(|phc| password::verify(&pw, &phc));
            (same, password::hash(&pw))
        })
        .await?;
        if same {
            return Err(AuthApiError::unprocessable(
                "same_password",
                "New password should be different from the old password.",
            ));
        }
        tx.execute(
            "update auth.users set encrypted_password = $2, updated_at = now() where id = $1",
            &[&user.id, &hash],
        )
        .await
        .map_err(AuthApiError::db)?;
    }
    match m.get("data") {
        None | Some(Value::Null) => {}
        Some(Value::Object(changes)) => {
            let mut meta = match &user.user_metadata {
                Value::Object(o) => o.clone(),
                _ => Map::new(),
            };
            for (k, v) in changes {
                if v.is_null() {
                    meta.remove(k);
                } else {
                    meta.insert(k.clone(), v.clone());
                }
            }
            tx.execute(
                "update auth.users set raw_user_meta_data = $2, updated_at = now() where id = $1",
                &[&user.id, &Value::Object(meta)],
            )
            .await
            .map_err(AuthApiError::db)?;
        }
        Some(_) => {
            return Err(AuthApiError::bad(
                "validation_failed",
                "data (the user's metadata) must be a JSON object",
            ))
        }
    }
    if let Some(email) = str_field(&m, "email").map(str::trim) {
        if !email.eq_ignore_ascii_case(&user.email) {
            if !valid_email(email) {
                return Err(AuthApiError::bad(
                    "validation_failed",
                    "Unable to validate email address: invalid format",
                ));
            }
            let r = tx
                .execute(
                    "update auth.users set email = $2, updated_at = now() where id = $1",
                    &[&user.id, &email],
                )
                .await;
            match r {
                Ok(_) => {}
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                    return Err(AuthApiError::unprocessable(
                        "email_exists",
                        "A user with this email address has already been registered",
                    ))
                }
                Err(e) => return Err(AuthApiError::db(e)),
            }
        }
    }
    let row = tx
        .query_one(
            &format!("select {USER_COLUMNS} from auth.users where id = $1"),
            &[&user.id],
        )
        .await
        .map_err(AuthApiError::db)?;
    tx.commit().await.map_err(AuthApiError::db)?;
    let user = User::from_row(&row).map_err(AuthApiError::db)?;
    Ok(ok_json(user.to_json()))
}

/// Ends sessions: `local` this one, `global` all of the user's, `others` all but this one.
/// Their refresh tokens go with them (the rows cascade); access tokens already issued stay
/// valid until they expire, as with Supabase.
async fn logout(app: &App, parts: &Parts, query: &str) -> Answer {
    let scope = query_param(query, "scope").unwrap_or_else(|| "global".into());
    if !matches!(scope.as_str(), "local" | "global" | "others") {
        return Err(AuthApiError::bad(
            "validation_failed",
            "scope must be one of local, global, others",
        ));
    }
    let who = bearer(app, parts)?;
    let conn = app
        .pool
        .get()
        .await
        .map_err(|e| AuthApiError::internal("no database connection", &e))?;
    let ended = match (scope.as_str(), who.session) {
        ("local", Some(s)) => {
            conn.execute(
                "delete from auth.sessions where id = $1 and user_id = $2",
                &[&s, &who.user],
            )
            .await
        }
        ("others", Some(s)) => {
            conn.execute(
                "delete from auth.sessions where user_id = $1 and id <> $2",
                &[&who.user, &s],
            )
            .await
        }
        // A token without a session (minted elsewhere) can only end them all.
        ("others", None) => Ok(0),
        _ => {
            conn.execute("delete from auth.sessions where user_id = $1", &[&who.user])
                .await
        }
    }
    .map_err(AuthApiError::db)?;
    tracing::debug!(user = %who.user, scope = %scope, sessions = ended, "auth: signed out");
    Ok(Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::default())
        .expect("static response"))
}

fn settings(app: &App) -> Response<Body> {
    let s = &app.auth.settings;
    ok_json(json!({
        "external": {"email": true, "phone": false, "anonymous_users": false},
        "disable_signup": s.signup_disabled,
        "mailer_autoconfirm": !s.confirm_email,
        "phone_autoconfirm": false,
        "sms_provider": "",
        "saml_enabled": false,
    }))
}

/// Ripple's own public key, when it signs with one (else no keys: HS256 secrets are never
/// published).
fn jwks(app: &App) -> Value {
    let keys: Vec<Value> = app
        .auth
        .signing_key()
        .iter()
        .map(|k| k.public_jwk().clone())
        .collect();
    json!({ "keys": keys })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked_for_shape_only() {
        assert!(valid_email("a@b.co"));
        assert!(valid_email("first.last+tag@example.org"));
        for bad in [
            "", "a", "a@", "@b.co", "a@b", "a@@b.co", "a b@c.de", "a@b.co.", "a@.b",
        ] {
            assert!(!valid_email(bad), "{bad}");
        }
    }

    #[test]
    fn errors_have_gotrues_shape() {
        let r = AuthApiError::invalid_credentials().into_response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let weak = AuthApiError::weak_password(Weak {
            reasons: vec!["length"],
            message: "Password should be at least 8 characters.".into(),
        });
        assert_eq!(weak.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(weak.code, "weak_password");
    }

    #[test]
    fn metadata_shows_in_the_identity_and_the_user() {
        let now = Utc::now();
        let u = User {
            id: Uuid::nil(),
            aud: "authenticated".into(),
            role: "authenticated".into(),
            email: "a@b.co".into(),
            encrypted_password: Some("$argon2id$secret".into()),
            email_confirmed_at: Some(now),
            banned: false,
            app_metadata: json!({"provider": "email"}),
            user_metadata: json!({"display_name": "A"}),
            last_sign_in_at: None,
            created_at: now,
            updated_at: now,
        };
        let j = u.to_json();
        assert_eq!(j["user_metadata"]["display_name"], "A");
        assert_eq!(j["identities"][0]["identity_data"]["display_name"], "A");
        // The hash never leaves the server.
        assert!(!j.to_string().contains("argon2"));
    }
}
