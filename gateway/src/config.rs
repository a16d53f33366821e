//! Configuration: flags, each with a `RIPPLE_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::auth::{JwtConfig, Secret};

/// Settings shared by `ripple serve` and `ripple dev`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// Address for HTTP (REST/RPC, health, metrics) and the realtime WebSocket.
    #[arg(long, env = "RIPPLE_LISTEN", default_value = "127.0.0.1:4000")]
    pub listen: SocketAddr,

    /// HS256 secret for the `apikey` and user tokens.
    #[arg(long, env = "RIPPLE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM files with RSA/EC public keys accepted for RS256/ES256 tokens.
    #[arg(
        long = "jwt-public-key",
        env = "RIPPLE_JWT_PUBLIC_KEYS",
        value_delimiter = ','
    )]
    pub jwt_public_keys: Vec<PathBuf>,

    /// JSON Web Key Sets of other issuers whose tokens are accepted (RS256, ES256, EdDSA keys,
    /// chosen by the token's `kid`): files, or `http://` URLs fetched again periodically.
    #[arg(long = "jwks", env = "RIPPLE_JWKS", value_delimiter = ',')]
    pub jwks: Vec<crate::auth::jwks::JwksSource>,

    /// Seconds between fetches of JWKS URLs (an unknown `kid` also prompts one).
    #[arg(long, env = "RIPPLE_JWKS_REFRESH_SECS", default_value_t = 300)]
    pub jwks_refresh_secs: u64,

    /// `iss` required of tokens verified with a JWKS or PEM public key.
    #[arg(long, env = "RIPPLE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// `aud` required of tokens verified with a JWKS or PEM public key.
    #[arg(long, env = "RIPPLE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Database roles a token's `role` claim may name.
    #[arg(
        long,
        env = "RIPPLE_DB_ROLES",
        value_delimiter = ',',
        default_value = "anon,authenticated,service_role"
    )]
    pub db_roles: Vec<String>,

    /// Publication whose tables stream (membership is managed in SQL).
    #[arg(long, env = "RIPPLE_PUBLICATION", default_value = crate::DEFAULT_PUBLICATION)]
    pub publication: String,

    /// Durable logical replication slot Ripple consumes.
    #[arg(long, env = "RIPPLE_SLOT", default_value = crate::DEFAULT_SLOT)]
    pub slot: String,

    /// Connections in the pool used for REST/RPC requests and socket joins.
    #[arg(long, env = "RIPPLE_POOL_SIZE", default_value_t = 16)]
    pub pool_size: usize,

    /// Connections of the realtime pipeline's own, for authorization checks and the
    /// re-checks that revoke private channels: whatever REST does, the pipeline keeps these.
    #[arg(long, env = "RIPPLE_AUTHORIZE_POOL_SIZE", default_value_t = 4)]
    pub authorize_pool_size: usize,

    /// Statement timeout for request queries, in milliseconds.
    #[arg(long, env = "RIPPLE_STATEMENT_TIMEOUT_MS", default_value_t = 8000)]
    pub statement_timeout_ms: u64,

    /// Largest accepted request body or WebSocket frame, in bytes.
    #[arg(long, env = "RIPPLE_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Schemas reachable over REST/RPC.
    #[arg(
        long,
        env = "RIPPLE_DB_SCHEMAS",
        value_delimiter = ',',
        default_value = "public"
    )]
    pub schemas: Vec<String>,

    /// Most WebSocket connections open at once; more are refused with 429.
    #[arg(long, env = "RIPPLE_MAX_SOCKETS", default_value_t = 10_000)]
    pub max_sockets: usize,

    /// Most connections (HTTP and WebSocket together) open at once; more are closed at
    /// accept. Lowered to fit the open-files limit if that is smaller.
    #[arg(long, env = "RIPPLE_MAX_CONNECTIONS", default_value_t = 16_384)]
    pub max_connections: usize,

    /// Seconds a client has to send a complete request head, counted from the connection
    /// or from the end of its previous response: this is also the idle timeout of an HTTP
    /// keep-alive connection.
    #[arg(long, env = "RIPPLE_HEADER_READ_TIMEOUT_SECS", default_value_t = 15)]
    pub header_read_timeout_secs: u64,
    /// Seconds an HTTP request may take to be answered (its response head; a WebSocket
    /// is not a request once upgraded) before Ripple answers 504 itself.
    #[arg(long, env = "RIPPLE_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// Origins browsers may call Ripple from (CORS), comma-separated; `*` (the default)
    /// allows any, as Supabase does for its anon-key APIs.
    #[arg(
        long = "cors-allow-origins",
        env = "RIPPLE_CORS_ALLOW_ORIGINS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub cors_allow_origins: Vec<String>,
    /// Seconds a shutdown waits for HTTP requests to finish and sockets to close (they are
    /// told to) before it stops the replication stream anyway.
    #[arg(long, env = "RIPPLE_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
    /// A function without arguments (`name` or `schema.name`) called as the user when their
    /// last socket closes; empty for none. Not called (and not warned about) where the
    /// database has no such function.
    #[arg(
        long,
        env = "RIPPLE_LAST_SEEN_FUNCTION",
        default_value = "public.touch_last_seen"
    )]
    pub last_seen_function: String,

    /// Messages queued per WebSocket client before it is disconnected as too slow.
    #[arg(long, env = "RIPPLE_CLIENT_QUEUE", default_value_t = 1024)]
    pub client_queue: usize,

    /// Bytes queued per WebSocket client (estimated) before it is disconnected as too slow.
    #[arg(long, env = "RIPPLE_CLIENT_QUEUE_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub client_queue_bytes: usize,

    /// Channels one socket may have joined at once.
    #[arg(long, env = "RIPPLE_MAX_CHANNELS_PER_SOCKET", default_value_t = 100)]
    pub max_channels_per_socket: usize,

    /// `postgres_changes` bindings one join may carry.
    #[arg(long, env = "RIPPLE_MAX_BINDINGS_PER_JOIN", default_value_t = 100)]
    pub max_bindings_per_join: usize,

    /// `postgres_changes` bindings one socket may hold over all its channels: each
    /// binding without an `eq`/`in` filter is looked at for every change of its table.
    #[arg(long, env = "RIPPLE_MAX_BINDINGS_PER_SOCKET", default_value_t = 200)]
    pub max_bindings_per_socket: usize,

    /// Largest `phx_join` payload, in bytes (serialized JSON).
    #[arg(long, env = "RIPPLE_MAX_JOIN_BYTES", default_value_t = 64 * 1024)]
    pub max_join_bytes: usize,

    /// Broadcasts one socket may send per second (a token bucket with one second of burst);
    /// more get an error reply.
    #[arg(long, env = "RIPPLE_BROADCASTS_PER_SECOND", default_value_t = 100)]
    pub broadcasts_per_second: u32,

    /// Broadcasts per second on one channel, from all its senders together.
    #[arg(
        long,
        env = "RIPPLE_CHANNEL_BROADCASTS_PER_SECOND",
        default_value_t = 500
    )]
    pub channel_broadcasts_per_second: u32,

    /// Presence updates (track, untrack) one socket may send per second.
    #[arg(long, env = "RIPPLE_PRESENCE_PER_SECOND", default_value_t = 10)]
    pub presence_per_second: u32,

    /// Presence updates per second on one channel, from all its members together.
    #[arg(
        long,
        env = "RIPPLE_CHANNEL_PRESENCE_PER_SECOND",
        default_value_t = 100
    )]
    pub channel_presence_per_second: u32,

    /// Largest presence `track` payload, in bytes (serialized JSON).
    #[arg(long, env = "RIPPLE_MAX_PRESENCE_BYTES", default_value_t = 4 * 1024)]
    pub max_presence_bytes: usize,

    /// Seconds without a frame from a WebSocket client (clients heartbeat every 25 s) after
    /// which its socket is closed.
    #[arg(long, env = "RIPPLE_WS_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub ws_idle_timeout_secs: u64,

    /// Folder of a web app to serve at `/` (GET of paths the API does not own); `ripple dev`
    /// serves the bundled `web/` chat app unless told otherwise.
    #[arg(long, env = "RIPPLE_WEB_DIR")]
    pub web: Option<PathBuf>,

    /// How long delivered changes stay available to clients that resume (seconds). The
    /// slot keeps this much WAL too, so that a restart can replay it. 0 turns resume off.
    #[arg(long, env = "RIPPLE_RESUME_WINDOW_SECS", default_value_t = 300)]
    pub resume_window_secs: u64,

    /// Most memory (estimated bytes of changes) the resume window holds.
    #[arg(long, env = "RIPPLE_RESUME_WINDOW_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub resume_window_bytes: usize,

    /// Memory for streamed transactions in progress (PostgreSQL streams large transactions
    /// before they commit), in bytes of the messages as sent, all of them together; a
    /// transaction that would go beyond it continues in a file until it commits or aborts.
    #[arg(long, env = "RIPPLE_STREAMED_MEMORY_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub streamed_memory_bytes: usize,

    /// Folder in which a private folder for those files is made (the system's temporary
    /// folder by default).
    #[arg(long, env = "RIPPLE_SPILL_DIR")]
    pub spill_dir: Option<PathBuf>,

    #[command(flatten)]
    pub auth: AuthConfig,
}

/// The sign-in service (`/auth/v1/`): Supabase Auth's API for email and password users.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthConfig {
    /// Lifetime of the access tokens it issues, in seconds (supabase-js refreshes them before
    /// they expire).
    #[arg(
        long = "auth-jwt-exp",
        env = "RIPPLE_AUTH_JWT_EXP",
        default_value_t = 3600
    )]
    pub jwt_exp_secs: i64,

    /// `iss` of the access tokens it issues.
    #[arg(
        long = "auth-issuer",
        env = "RIPPLE_AUTH_ISSUER",
        default_value = "ripple"
    )]
    pub issuer: String,

    /// Refuse new sign-ups (users are then created by the DBA in SQL).
    #[arg(long = "auth-disable-signup", env = "RIPPLE_AUTH_DISABLE_SIGNUP")]
    pub disable_signup: bool,

    /// Make new users wait until `auth.users.email_confirmed_at` is set before they can sign
    /// in. Off by default: Ripple sends no mail, so a DBA confirms by hand.
    #[arg(long = "auth-confirm-email", env = "RIPPLE_AUTH_CONFIRM_EMAIL")]
    pub confirm_email: bool,

    /// Fewest characters in a password.
    #[arg(
        long = "auth-password-min-length",
        env = "RIPPLE_AUTH_PASSWORD_MIN_LENGTH",
        default_value_t = 8
    )]
    pub password_min_length: usize,

    /// Character classes a password must contain (any of lower, upper, digit, symbol).
    #[arg(
        long = "auth-password-required-characters",
        env = "RIPPLE_AUTH_PASSWORD_REQUIRED_CHARACTERS",
        value_delimiter = ','
    )]
    pub password_required: Vec<crate::auth::password::CharClass>,

    /// Sign-in and sign-up attempts allowed per client address per window (0: no limit).
    #[arg(
        long = "auth-rate-limit-per-address",
        env = "RIPPLE_AUTH_RATE_LIMIT_PER_ADDRESS",
        default_value_t = 100
    )]
    pub rate_per_address: u32,

    /// Sign-in and sign-up attempts allowed per email address per window (0: no limit).
    #[arg(
        long = "auth-rate-limit-per-email",
        env = "RIPPLE_AUTH_RATE_LIMIT_PER_EMAIL",
        default_value_t = 10
    )]
    pub rate_per_email: u32,

    /// The rate limits' window, in seconds (attempts come back evenly over it).
    #[arg(
        long = "auth-rate-limit-window-secs",
        env = "RIPPLE_AUTH_RATE_LIMIT_WINDOW_SECS",
        default_value_t = 300
    )]
    pub rate_window_secs: u64,

    /// Count rate limits by the last `X-Forwarded-For` address instead of the peer's. Only
    /// when every request comes through a reverse proxy that sets it: otherwise clients
    /// choose their own address.
    #[arg(
        long = "auth-trust-forwarded-for",
        env = "RIPPLE_AUTH_TRUST_FORWARDED_FOR"
    )]
    pub trust_forwarded_for: bool,

    /// Seconds after a refresh during which the refresh token it used still works (a client
    /// retrying a refresh whose answer was lost); after that, using it again ends the
    /// session. 0: any second use ends it.
    #[arg(
        long = "auth-refresh-reuse-interval-secs",
        env = "RIPPLE_AUTH_REFRESH_REUSE_INTERVAL_SECS",
        default_value_t = 10
    )]
    pub refresh_reuse_interval_secs: u64,

    /// A PKCS#8 PEM private key (RSA, P-256 or Ed25519) to sign access tokens with instead of
    /// the HS256 secret; its public key is then served at `/auth/v1/.well-known/jwks.json`.
    #[arg(long = "auth-signing-key", env = "RIPPLE_AUTH_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,

    /// `kid` of the signing key (default: its RFC 7638 thumbprint).
    #[arg(long = "auth-signing-kid", env = "RIPPLE_AUTH_SIGNING_KID")]
    pub signing_kid: Option<String>,
}

impl AuthConfig {
    pub fn settings(&self) -> crate::auth::AuthSettings {
        crate::auth::AuthSettings {
            access_ttl_secs: self.jwt_exp_secs,
            issuer: self.issuer.clone(),
            signup_disabled: self.disable_signup,
            confirm_email: self.confirm_email,
            password: crate::auth::password::PasswordRules {
                min_length: self.password_min_length,
                required: self.password_required.clone(),
            },
            rate_per_address: self.rate_per_address,
            rate_per_email: self.rate_per_email,
            rate_window: std::time::Duration::from_secs(self.rate_window_secs.max(1)),
            trust_forwarded_for: self.trust_forwarded_for,
            refresh_reuse_interval: std::time::Duration::from_secs(
                self.refresh_reuse_interval_secs,
            ),
        }
    }
}

impl ServeConfig {
    pub fn jwt_config(&self) -> std::io::Result<JwtConfig> {
        let public_keys_pem = self
            .jwt_public_keys
            .iter()
            .map(std::fs::read_to_string)
            .collect::<Result<_, _>>()?;
        Ok(JwtConfig {
            secret: self.jwt_secret.clone().map(Secret::new),
            public_keys_pem,
            allowed_roles: self.db_roles.clone(),
            jwks_configured: !self.jwks.is_empty(),
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
        })
    }
}
