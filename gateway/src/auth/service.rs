//! What the sign-in service keeps between requests: its settings, the attempt rate limits,
//! Ripple's own signing key and the password-hashing slots. Its HTTP API (`/auth/v1/`) is
//! `crate::http::auth`.

use std::net::IpAddr;
use std::time::Duration;

use super::keys::SigningKey;
use super::password::PasswordRules;
use super::rate_limit::RateLimiter;

/// The client's address, put on each request by the HTTP server (for rate limits).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// Settings of the auth service (from `ServeConfig`).
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Access token lifetime, seconds.
    pub access_ttl_secs: i64,
    /// `iss` of the access tokens.
    pub issuer: String,
    pub signup_disabled: bool,
    /// New users must have `email_confirmed_at` set (by the DBA: Ripple sends no mail) before
    /// they can sign in. Off by default.
    pub confirm_email: bool,
    pub password: PasswordRules,
    /// Sign-in and sign-up attempts per client address, and per email, per window.
    pub rate_per_address: u32,
    pub rate_per_email: u32,
    pub rate_window: Duration,
    /// How long after a rotation the old refresh token may still be used (a retried
    /// refresh), before using it counts as reuse.
    pub refresh_reuse_interval: Duration,
    /// Rate-limit by `X-Forwarded-For` (only behind a reverse proxy that sets it).
    pub trust_forwarded_for: bool,
}

/// What the service keeps between requests.
pub struct AuthService {
    pub(crate) settings: AuthSettings,
    by_address: RateLimiter,
    by_email: RateLimiter,
    /// Ripple's own asymmetric key, when configured; else tokens are HS256 with the secret.
    signing_key: Option<SigningKey>,
    /// Password hashes computed at once (two per core).
    pub(crate) hashing: tokio::sync::Semaphore,
}

impl std::fmt::Debug for AuthService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService")
            .field("settings", &self.settings)
            .field(
                "signing_key",
                &self.signing_key.as_ref().map(SigningKey::kid),
            )
            .finish()
    }
}

impl AuthService {
    pub fn new(settings: AuthSettings, signing_key: Option<SigningKey>) -> Self {
        Self {
            by_address: RateLimiter::new(settings.rate_per_address, settings.rate_window),
            by_email: RateLimiter::new(settings.rate_per_email, settings.rate_window),
            settings,
            signing_key,
            hashing: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get() * 2),
            ),
        }
    }

    pub fn signing_key(&self) -> Option<&SigningKey> {
        self.signing_key.as_ref()
    }

    /// One attempt for this address and this email; both buckets must have room.
    pub(crate) fn allow_attempt(&self, addr: Option<IpAddr>, email: &str) -> bool {
        let addr_ok = match addr {
            Some(a) => self.by_address.try_take(&a.to_string()),
            None => true,
        };
        addr_ok && self.by_email.try_take(&email.to_lowercase())
    }
}
