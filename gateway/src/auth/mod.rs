//! Who is asking: JSON Web Tokens, verified the way Supabase issues them.

mod jwt;

pub use jwt::{now_epoch, AuthError, Claims, JwtConfig, JwtVerifier, Secret};

pub mod jwt_key_error {
    pub use super::jwt::KeyError;
}
