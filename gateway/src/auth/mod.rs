//! Who is asking: JSON Web Tokens, verified the way Supabase issues them, and the sign-in
//! service that issues them (`/auth/v1/`, Supabase Auth's API for email and password users).
//!
//! ```text
//! service (HTTP: sign-up, sign-in, refresh, user, sign-out)
//!   -> password (argon2id, rules)  -> tokens (refresh tokens, access claims)
//!   -> keys (Ripple's own signing key and its JWK)       rate_limit (per address, per email)
//! jwt (verifies every token: HS256 secret, PEM keys, JWKS keys by kid)
//! ```

pub mod jwks;
mod jwt;
pub mod keys;
pub mod password;
pub mod rate_limit;
pub mod service;
pub mod tokens;

pub use jwt::{expired, now_epoch, AuthError, Claims, JwtConfig, JwtVerifier, Secret};
pub use service::{AuthService, AuthSettings, ClientAddr};

pub mod jwt_key_error {
    pub use super::jwt::KeyError;
}
