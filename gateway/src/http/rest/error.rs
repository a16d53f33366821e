//! Errors in PostgREST's form: a JSON body `{"code","message","details","hint"}` and an HTTP
//! status chosen from the SQLSTATE by PostgREST's table, so supabase-js and other PostgREST
//! clients read them unchanged.
//!
//! Ripple's own codes follow PostgREST's where one fits (`PGRST1xx` request, `PGRST2xx`
//! schema cache, `PGRST3xx` JWT). Extensions over PostgREST's table: `P0002` (no_data_found,
//! which the chat functions raise for "not found") maps to 404, and a body over the size
//! limit is `RPL413` with status 413.

use bytes::Bytes;
use hyper::{Response, StatusCode};
use tokio_postgres::error::SqlState;

use crate::http::Body;

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub details: Option<String>,
    pub hint: Option<String>,
    /// 401s about the token carry a `WWW-Authenticate` challenge, as PostgREST's do.
    pub challenge: bool,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_string(),
            message: message.into(),
            details: None,
            hint: None,
            challenge: false,
            source: None,
        }
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    pub fn with_code(mut self, code: &str) -> Self {
        self.code = code.to_string();
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// PGRST100: the query string could not be parsed.
    pub fn bad_query(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "PGRST100", message)
    }

    /// PGRST102: the body is not the JSON we need.
    pub fn bad_body(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "PGRST102", message)
    }

    /// A request body over the configured limit.
    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RPL413",
            format!("the request body is larger than {limit} bytes"),
        )
    }

    /// A token that could not be used: 401 with a challenge.
    pub fn unauthorized(code: &str, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, code, message);
        e.challenge = true;
        e
    }

    /// An error from the database (or the connection to it). `anonymous` decides 401 over
    /// 403 for privilege errors, as in PostgREST: an anonymous caller may still sign in.
    pub fn from_db(error: tokio_postgres::Error, anonymous: bool) -> Self {
        let Some(db) = error.as_db_error() else {
            // Not a statement error: the connection broke or the server went away.
            let mut e = Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "PGRST001",
                "the database connection failed",
            );
            e.source = Some(Box::new(error));
            return e;
        };
        let code = db.code().code().to_string();
        let mut e = Self::new(status_for_sqlstate(&code, anonymous), &code, db.message());
        e.details = db.detail().filter(|s| !s.is_empty()).map(str::to_string);
        e.hint = db.hint().filter(|s| !s.is_empty()).map(str::to_string);
        e.source = Some(Box::new(error));
        e
    }

    pub fn body(&self) -> String {
        serde_json::json!({
            "code": self.code,
            "message": self.message,
            "details": self.details,
            "hint": self.hint,
        })
        .to_string()
    }

    pub fn into_response(self) -> Response<Body> {
        let mut builder = Response::builder()
            .status(self.status)
            .header("content-type", "application/json; charset=utf-8");
        if self.challenge {
            // The description is our own fixed wording, never the token.
            let value = format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                self.message.replace(['"', '\\'], "")
            );
            builder = builder.header("www-authenticate", value);
        }
        builder
            .body(Body::new(Bytes::from(self.body())))
            .expect("valid error response")
    }
}

/// PostgREST's mapping of SQLSTATE to HTTP status, plus `P0002` -> 404.
pub fn status_for_sqlstate(code: &str, anonymous: bool) -> StatusCode {
    let class = code.get(..2).unwrap_or("");
    let state = SqlState::from_code(code);
    let named = [
        (SqlState::INSUFFICIENT_PRIVILEGE, StatusCode::FORBIDDEN),
        (SqlState::FOREIGN_KEY_VIOLATION, StatusCode::CONFLICT),
        (SqlState::UNIQUE_VIOLATION, StatusCode::CONFLICT),
        (
            SqlState::READ_ONLY_SQL_TRANSACTION,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (SqlState::RAISE_EXCEPTION, StatusCode::BAD_REQUEST),
        (SqlState::NO_DATA_FOUND, StatusCode::NOT_FOUND),
        (SqlState::UNDEFINED_FUNCTION, StatusCode::NOT_FOUND),
        (SqlState::UNDEFINED_TABLE, StatusCode::NOT_FOUND),
        // Infinite recursion in a policy: the schema's fault, not the caller's.
        (
            SqlState::INVALID_OBJECT_DEFINITION,
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
        (
            SqlState::CONFIGURATION_LIMIT_EXCEEDED,
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
    ];
    if let Some((_, status)) = named.iter().find(|(s, _)| *s == state) {
        // Not allowed without a token means: sign in.
        if *status == StatusCode::FORBIDDEN && anonymous {
            return StatusCode::UNAUTHORIZED;
        }
        return *status;
    }
    // PTxyz: a function chose the HTTP status itself.
    if let Some(digits) = code.strip_prefix("PT") {
        if let Ok(n) = digits.parse::<u16>() {
            if let Ok(status) = StatusCode::from_u16(n) {
                return status;
            }
        }
    }
    match class {
        "08" | "53" => StatusCode::SERVICE_UNAVAILABLE,
        "0L" | "0P" | "28" => StatusCode::FORBIDDEN,
        "09" | "25" | "2D" | "38" | "39" | "3B" | "40" | "54" | "55" | "57" | "58" | "F0"
        | "HV" | "P0" | "XX" => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_map_to_postgrest_statuses() {
        let cases = [
            ("42501", false, 403),
            ("42501", true, 401),
            ("23505", false, 409),
            ("23503", false, 409),
            ("P0001", false, 400),
            ("P0002", false, 404),
            ("22P02", false, 400),
            ("22023", false, 400),
            ("42883", false, 404),
            ("42P01", false, 404),
            ("08006", false, 503),
            ("53300", false, 503),
            ("53400", false, 500),
            ("25006", false, 405),
            ("40001", false, 500),
            ("57014", false, 500),
            ("PT418", false, 418),
            ("XX000", false, 500),
            ("23514", false, 400),
        ];
        for (code, anon, status) in cases {
            assert_eq!(
                status_for_sqlstate(code, anon).as_u16(),
                status,
                "{code} anonymous={anon}"
            );
        }
    }

    #[test]
    fn the_body_has_exactly_postgrest_fields() {
        let e = ApiError::bad_query("nope").with_hint("try again");
        let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"code": "PGRST100", "message": "nope", "details": null, "hint": "try again"})
        );
    }

    #[test]
    fn a_challenge_never_carries_quotes_from_the_message() {
        let r = ApiError::unauthorized("PGRST301", "bad \"token\"").into_response();
        let h = r.headers()["www-authenticate"].to_str().unwrap();
        assert_eq!(
            h,
            "Bearer error=\"invalid_token\", error_description=\"bad token\""
        );
    }
}
