//! Refresh tokens (random, shown to the client once, stored as SHA-256) and the claims of the
//! access tokens Ripple issues, shaped as Supabase Auth's so supabase-js and policies written
//! for Supabase read them unchanged.

use base64::Engine;
use ring::rand::SecureRandom;
use serde_json::{json, Value};

/// A new refresh token: 32 random bytes, base64url (43 characters).
pub fn new_refresh_token() -> String {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's random source");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What the database stores instead of the token. The token is 256 random bits, so a fast
/// hash is enough: there is nothing to brute-force.
pub fn hash_refresh_token(token: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

/// The user fields that go into an access token.
pub struct TokenUser<'a> {
    pub id: &'a str,
    pub aud: &'a str,
    pub role: &'a str,
    pub email: &'a str,
    pub app_metadata: &'a Value,
    pub user_metadata: &'a Value,
}

/// Claims of an access token for `user` in `session_id`, as Supabase Auth issues them
/// (`sub`, `role`, `aud`, `email`, the metadata, `session_id`, `aal`, `amr`).
pub fn access_claims(
    user: &TokenUser<'_>,
    session_id: &str,
    issuer: &str,
    now: i64,
    ttl_secs: i64,
    signed_in_at: i64,
) -> Value {
    json!({
        "iss": issuer,
        "sub": user.id,
        "aud": user.aud,
        "exp": now + ttl_secs,
        "iat": now,
        "email": user.email,
        "phone": "",
        "app_metadata": user.app_metadata,
        "user_metadata": user.user_metadata,
        "role": user.role,
        "aal": "aal1",
        "amr": [{"method": "password", "timestamp": signed_in_at}],
        "session_id": session_id,
        "is_anonymous": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_are_distinct_and_their_hashes_fixed_length() {
        let a = new_refresh_token();
        let b = new_refresh_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(hash_refresh_token(&a).len(), 32);
        assert_eq!(hash_refresh_token(&a), hash_refresh_token(&a));
        assert_ne!(hash_refresh_token(&a), hash_refresh_token(&b));
    }
}
