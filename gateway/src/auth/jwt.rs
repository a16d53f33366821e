//! Token verification. HS256 with Ripple's secret (the `apikey` and user tokens that
//! `ripple token` mints), plus RS256/ES256 with configured public keys for tokens an
//! external identity provider signs. `alg: none` and every algorithm we were not configured
//! for are refused before any signature work.

use jsonwebtoken::{
    decode, decode_header, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use serde_json::Value;

/// A secret that never shows itself in `Debug` or logs.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[derive(Debug, Clone, Default)]
pub struct JwtConfig {
    /// HS256 shared secret.
    pub secret: Option<Secret>,
    /// PEM-encoded RSA or EC public keys, for RS256/ES256.
    pub public_keys_pem: Vec<String>,
    /// Database roles a token's `role` claim may name (empty: any). A token is a request to
    /// `SET ROLE`; without this list a validly signed `"role": "postgres"` would run as the
    /// superuser.
    pub allowed_roles: Vec<String>,
    /// Keys will come from a JWKS (`set_jwks`), chosen by `kid`.
    pub jwks_configured: bool,
    /// `iss` that tokens of other issuers must carry.
    pub issuer: Option<String>,
    /// `aud` (or one of them) that tokens of other issuers must carry.
    pub audience: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("token is malformed")]
    Malformed,
    #[error("token algorithm is not accepted")]
    AlgorithmNotAllowed,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is missing the `{0}` claim")]
    MissingClaim(&'static str),
    #[error("token claim `{0}` has the wrong type")]
    BadClaim(&'static str),
    #[error("no key is configured to verify this token")]
    NoKey,
    #[error("token role is not allowed")]
    RoleNotAllowed,
    #[error("no key in the JWKS has the token's kid")]
    UnknownKid,
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    #[error("token claim `{0}` is not the one configured")]
    WrongClaim(&'static str),
}

/// The verified claims of a token.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// Every claim, as given; becomes `request.jwt.claims` in SQL.
    pub raw: Value,
    /// The database role the request runs as.
    pub role: String,
    pub sub: Option<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
}

impl Claims {
    pub fn is_expired_at(&self, now_epoch: i64) -> bool {
        expired(self.exp, now_epoch)
    }
}

/// Whether a token expiring at `exp` has expired at `now_epoch` (seconds since the epoch):
/// at its `exp` second it no longer counts.
pub fn expired(exp: i64, now_epoch: i64) -> bool {
    exp <= now_epoch
}

pub struct JwtVerifier {
    allowed_roles: Vec<String>,
    hs: Option<(DecodingKey, EncodingKey)>,
    rsa: Vec<DecodingKey>,
    ec: Vec<DecodingKey>,
    /// Keys chosen by the token's `kid`: Ripple's own signing key, and those of a JWKS
    /// (replaced whole when the JWKS is fetched again).
    by_kid: std::sync::RwLock<KidKeys>,
    /// A JWKS is configured: an unknown `kid` is then its own error and prompts a refetch.
    jwks_configured: bool,
    unknown_kid: tokio::sync::Notify,
    /// `iss` and `aud` required of tokens from other issuers (JWKS or PEM keys).
    issuer: Option<String>,
    audience: Option<String>,
}

/// Who signed a token, by the key that verified it: `iss` and `aud` are checked only for
/// tokens of other issuers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Ripple,
    External,
}

/// Keys by `kid`, with the algorithm each is for.
#[derive(Default)]
pub struct KidKeys {
    pub own: Option<(String, Algorithm, DecodingKey)>,
    pub jwks: std::collections::HashMap<String, (Algorithm, DecodingKey)>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("hs256", &self.hs.is_some())
            .field("rsa_keys", &self.rsa.len())
            .field("ec_keys", &self.ec.len())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("public key {index} is neither an RSA nor an EC public key in PEM form")]
pub struct KeyError {
    pub index: usize,
}

pub fn now_epoch() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl JwtVerifier {
    pub fn new(config: &JwtConfig) -> Result<Self, KeyError> {
        let hs = config.secret.as_ref().map(|s| {
            (
                DecodingKey::from_secret(s.expose().as_bytes()),
                EncodingKey::from_secret(s.expose().as_bytes()),
            )
        });
        let mut rsa = Vec::new();
        let mut ec = Vec::new();
        for (index, pem) in config.public_keys_pem.iter().enumerate() {
            if let Ok(k) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
                rsa.push(k);
            } else if let Ok(k) = DecodingKey::from_ec_pem(pem.as_bytes()) {
                ec.push(k);
            } else {
                return Err(KeyError { index });
            }
        }
        Ok(Self {
            allowed_roles: config.allowed_roles.clone(),
            hs,
            rsa,
            ec,
            by_kid: Default::default(),
            jwks_configured: config.jwks_configured,
            unknown_kid: tokio::sync::Notify::new(),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
        })
    }

    /// Accepts tokens signed by Ripple's own key (chosen by its `kid`).
    pub fn add_own_key(&mut self, key: &super::keys::SigningKey) {
        self.by_kid.get_mut().unwrap_or_else(|p| p.into_inner()).own =
            Some((key.kid().to_string(), key.alg(), key.decoding_key().clone()));
    }

    /// The key a token's `kid` names, if any.
    fn key_for_kid(&self, kid: &str) -> Option<(Algorithm, DecodingKey, Origin)> {
        let keys = self.by_kid.read().unwrap_or_else(|p| p.into_inner());
        if let Some((own, alg, key)) = &keys.own {
            if own == kid {
                return Some((*alg, key.clone(), Origin::Ripple));
            }
        }
        keys.jwks
            .get(kid)
            .map(|(alg, key)| (*alg, key.clone(), Origin::External))
    }

    /// Verifies signature and expiry and extracts the claims Ripple needs.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        // Look at `alg` ourselves first: jsonwebtoken cannot even parse `none`, and a token
        // naming an algorithm we do not accept deserves that answer, not "malformed".
        let alg = Self::header_alg(token)?;
        if !matches!(alg.as_str(), "HS256" | "RS256" | "ES256" | "EdDSA") {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        let header = decode_header(token).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithmName => AuthError::AlgorithmNotAllowed,
            _ => AuthError::Malformed,
        })?;
        // A `kid` we know picks its key, which must be for the token's algorithm (an RSA
        // key's bytes are never tried as an HMAC secret).
        let by_kid = match (&header.alg, header.kid.as_deref()) {
            (Algorithm::HS256, _) | (_, None) => None,
            (_, Some(kid)) => self.key_for_kid(kid),
        };
        let (keys, origin): (Vec<&DecodingKey>, Origin) = match (&by_kid, header.alg) {
            (Some((alg, key, origin)), token_alg) if *alg == token_alg => (vec![key], *origin),
            (Some(_), _) => return Err(AuthError::AlgorithmNotAllowed),
            (None, Algorithm::HS256) => (self.hs.iter().map(|(d, _)| d).collect(), Origin::Ripple),
            (None, Algorithm::RS256) => (self.rsa.iter().collect(), Origin::External),
            (None, Algorithm::ES256) => (self.ec.iter().collect(), Origin::External),
            (None, Algorithm::EdDSA) => (vec![], Origin::External),
            _ => return Err(AuthError::AlgorithmNotAllowed),
        };
        if keys.is_empty() {
            if header.kid.is_some() && self.jwks_configured {
                // Perhaps the issuer rotated its keys: fetch the JWKS again soon.
                self.unknown_kid.notify_one();
                return Err(AuthError::UnknownKid);
            }
            return Err(AuthError::NoKey);
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = 0;
        validation.validate_aud = false;
        // We check `exp`, `nbf`, `iss` and `aud` ourselves below, each with its own error.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        let mut last = AuthError::BadSignature;
        for key in keys {
            match decode::<Value>(token, key, &validation) {
                Ok(data) => {
                    if origin == Origin::External {
                        self.check_issuer_and_audience(&data.claims)?;
                    }
                    let claims = Self::claims(data.claims)?;
                    if !self.allowed_roles.is_empty() && !self.allowed_roles.contains(&claims.role)
                    {
                        return Err(AuthError::RoleNotAllowed);
                    }
                    return Ok(claims);
                }
                Err(e) => {
                    last = match e.kind() {
                        jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                            AuthError::BadSignature
                        }
                        jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                            AuthError::AlgorithmNotAllowed
                        }
                        _ => AuthError::Malformed,
                    }
                }
            }
        }
        Err(last)
    }

    /// `iss` and `aud` of a token from another issuer, when configured (Ripple's own tokens
    /// are known by their key).
    fn check_issuer_and_audience(&self, claims: &Value) -> Result<(), AuthError> {
        if let Some(want) = &self.issuer {
            match claims.get("iss") {
                None | Some(Value::Null) => return Err(AuthError::MissingClaim("iss")),
                Some(Value::String(iss)) if iss == want => {}
                Some(_) => return Err(AuthError::WrongClaim("iss")),
            }
        }
        if let Some(want) = &self.audience {
            let matches = match claims.get("aud") {
                None | Some(Value::Null) => return Err(AuthError::MissingClaim("aud")),
                Some(Value::String(aud)) => aud == want,
                Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(want)),
                Some(_) => false,
            };
            if !matches {
                return Err(AuthError::WrongClaim("aud"));
            }
        }
        Ok(())
    }

    /// Replaces the keys of the JWKS (after a fetch).
    pub fn set_jwks(&self, keys: std::collections::HashMap<String, (Algorithm, DecodingKey)>) {
        self.by_kid.write().unwrap_or_else(|p| p.into_inner()).jwks = keys;
    }

    /// Resolves when a token named a `kid` no key has (the JWKS refresher waits on it).
    pub async fn unknown_kid_seen(&self) {
        self.unknown_kid.notified().await
    }

    fn header_alg(token: &str) -> Result<String, AuthError> {
        use base64::Engine;
        let first = token.split('.').next().unwrap_or_default();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(first.trim_end_matches('='))
            .map_err(|_| AuthError::Malformed)?;
        let header: Value = serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
        header
            .get("alg")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or(AuthError::Malformed)
    }

    fn claims(raw: Value) -> Result<Claims, AuthError> {
        let obj = raw.as_object().ok_or(AuthError::Malformed)?;
        let exp = match obj.get("exp") {
            None | Some(Value::Null) => return Err(AuthError::MissingClaim("exp")),
            Some(v) => v.as_f64().ok_or(AuthError::BadClaim("exp"))? as i64,
        };
        let role = match obj.get("role") {
            None | Some(Value::Null) => return Err(AuthError::MissingClaim("role")),
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => return Err(AuthError::BadClaim("role")),
        };
        let sub = match obj.get("sub") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(AuthError::BadClaim("sub")),
        };
        match obj.get("nbf") {
            None | Some(Value::Null) => {}
            Some(v) => {
                let nbf = v.as_f64().ok_or(AuthError::BadClaim("nbf"))? as i64;
                if nbf > now_epoch() {
                    return Err(AuthError::NotYetValid);
                }
            }
        }
        let claims = Claims {
            raw,
            role,
            sub,
            exp,
        };
        if claims.is_expired_at(now_epoch()) {
            return Err(AuthError::Expired);
        }
        Ok(claims)
    }

    /// Signs `claims` with the HS256 secret (`ripple token`, `ripple dev`, tests).
    pub fn mint(&self, claims: &Value) -> Option<String> {
        let (_, enc) = self.hs.as_ref()?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, enc).ok()
    }

    /// A token for `role` (and `sub`, for a user) valid for `ttl_secs`.
    pub fn mint_for(&self, role: &str, sub: Option<&str>, ttl_secs: i64) -> Option<String> {
        let now = now_epoch();
        let mut claims = serde_json::json!({
            "role": role, "iat": now, "exp": now + ttl_secs, "iss": "ripple",
        });
        if let Some(sub) = sub {
            claims["sub"] = Value::String(sub.to_string());
            claims["aud"] = Value::String("authenticated".into());
        }
        self.mint(&claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier() -> JwtVerifier {
        JwtVerifier::new(&JwtConfig {
            secret: Some(Secret::new("test-secret-at-least-32-bytes-long!!")),
            public_keys_pem: vec![],
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn a_minted_user_token_verifies_with_its_claims() {
        let v = verifier();
        let t = v.mint_for("authenticated", Some("u-1"), 60).unwrap();
        let c = v.verify(&t).unwrap();
        assert_eq!(c.role, "authenticated");
        assert_eq!(c.sub.as_deref(), Some("u-1"));
    }

    #[test]
    fn an_expired_token_is_refused() {
        let v = verifier();
        let t = v.mint_for("authenticated", Some("u"), -5).unwrap();
        assert_eq!(v.verify(&t), Err(AuthError::Expired));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let other = JwtVerifier::new(&JwtConfig {
            secret: Some(Secret::new("another-secret-another-secret-123")),
            public_keys_pem: vec![],
            ..Default::default()
        })
        .unwrap();
        let t = other.mint_for("authenticated", Some("u"), 60).unwrap();
        assert_eq!(verifier().verify(&t), Err(AuthError::BadSignature));
    }

    #[test]
    fn alg_none_is_refused() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64.encode(br#"{"role":"service_role","exp":99999999999}"#);
        let t = format!("{header}.{body}.");
        assert_eq!(verifier().verify(&t), Err(AuthError::AlgorithmNotAllowed));
    }

    #[test]
    fn missing_role_and_missing_exp_are_refused() {
        let v = verifier();
        let no_role = v
            .mint(&serde_json::json!({"sub": "x", "exp": now_epoch() + 60}))
            .unwrap();
        assert_eq!(v.verify(&no_role), Err(AuthError::MissingClaim("role")));
        let no_exp = v.mint(&serde_json::json!({"role": "anon"})).unwrap();
        assert_eq!(v.verify(&no_exp), Err(AuthError::MissingClaim("exp")));
    }

    #[test]
    fn a_role_outside_the_allowed_list_is_refused() {
        let v = JwtVerifier::new(&JwtConfig {
            secret: Some(Secret::new("test-secret-at-least-32-bytes-long!!")),
            allowed_roles: vec!["anon".into(), "authenticated".into()],
            ..Default::default()
        })
        .unwrap();
        let su = v.mint_for("postgres", None, 60).unwrap();
        assert_eq!(v.verify(&su), Err(AuthError::RoleNotAllowed));
        let ok = v.mint_for("authenticated", Some("u"), 60).unwrap();
        assert!(v.verify(&ok).is_ok());
    }

    /// Keys generated for these tests only (`openssl genrsa` / `ecparam -name prime256v1`).
    const RSA_PRIVATE: &str = include_str!("testdata/rsa_private.pem");
    const RSA_PUBLIC: &str = include_str!("testdata/rsa_public.pem");
    const EC_PRIVATE: &str = include_str!("testdata/ec_private.pem");
    const EC_PUBLIC: &str = include_str!("testdata/ec_public.pem");

    fn signed(alg: Algorithm, key: &EncodingKey, role: &str) -> String {
        let claims = serde_json::json!({"sub": "u-9", "role": role, "exp": now_epoch() + 60});
        jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap()
    }

    #[test]
    fn rs256_and_es256_tokens_verify_with_configured_public_keys() {
        let v = JwtVerifier::new(&JwtConfig {
            public_keys_pem: vec![RSA_PUBLIC.into(), EC_PUBLIC.into()],
            ..Default::default()
        })
        .unwrap();
        let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        let ec = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
        let c = v
            .verify(&signed(Algorithm::RS256, &rsa, "authenticated"))
            .unwrap();
        assert_eq!(c.sub.as_deref(), Some("u-9"));
        let c = v
            .verify(&signed(Algorithm::ES256, &ec, "authenticated"))
            .unwrap();
        assert_eq!(c.role, "authenticated");
        // Without an HS256 secret, an HS256 token has no key; with only the RSA key, an
        // ES256 token has none either.
        let hs = EncodingKey::from_secret(b"whatever-secret-whatever-secret!");
        assert_eq!(
            v.verify(&signed(Algorithm::HS256, &hs, "anon")),
            Err(AuthError::NoKey)
        );
        let rsa_only = JwtVerifier::new(&JwtConfig {
            public_keys_pem: vec![RSA_PUBLIC.into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            rsa_only.verify(&signed(Algorithm::ES256, &ec, "anon")),
            Err(AuthError::NoKey)
        );
    }

    #[test]
    fn a_tampered_rs256_signature_is_refused() {
        let v = JwtVerifier::new(&JwtConfig {
            public_keys_pem: vec![RSA_PUBLIC.into()],
            ..Default::default()
        })
        .unwrap();
        let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        let good = signed(Algorithm::RS256, &rsa, "anon");
        assert!(v.verify(&good).is_ok());
        // Change one character in the middle of the signature (whole bits, not padding).
        let (head_body, sig) = good.rsplit_once('.').unwrap();
        let mut sig: Vec<char> = sig.chars().collect();
        let mid = sig.len() / 2;
        sig[mid] = if sig[mid] == 'A' { 'B' } else { 'A' };
        let tampered = format!("{head_body}.{}", sig.into_iter().collect::<String>());
        assert_eq!(v.verify(&tampered), Err(AuthError::BadSignature));
    }

    #[test]
    fn a_non_pem_public_key_is_a_configuration_error() {
        let e = JwtVerifier::new(&JwtConfig {
            public_keys_pem: vec!["not a key".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.index, 0);
    }

    #[test]
    fn garbage_is_malformed() {
        assert_eq!(verifier().verify("not.a.jwt"), Err(AuthError::Malformed));
        assert_eq!(verifier().verify(""), Err(AuthError::Malformed));
    }

    #[test]
    fn the_secret_does_not_show_in_debug() {
        let s = Secret::new("hunter2-hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        let c = JwtConfig {
            secret: Some(s),
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    /// A verifier that takes keys from a JWKS made of the test keys' public halves.
    fn jwks_verifier(issuer: Option<&str>, audience: Option<&str>) -> JwtVerifier {
        use crate::auth::keys::SigningKey;
        let v = JwtVerifier::new(&JwtConfig {
            jwks_configured: true,
            issuer: issuer.map(Into::into),
            audience: audience.map(Into::into),
            ..Default::default()
        })
        .unwrap();
        let doc = serde_json::json!({"keys": [
            SigningKey::from_pem(RSA_PRIVATE, Some("rsa-1".into())).unwrap().public_jwk(),
            SigningKey::from_pem(EC_PRIVATE, Some("ec-1".into())).unwrap().public_jwk(),
            SigningKey::from_pem(ED_PRIVATE, Some("ed-1".into())).unwrap().public_jwk(),
        ]});
        v.set_jwks(crate::auth::jwks::parse(doc.to_string().as_bytes()).unwrap());
        v
    }

    const ED_PRIVATE: &str = include_str!("testdata/ed25519_private.pem");

    fn with_kid(alg: Algorithm, key: &EncodingKey, kid: &str, claims: &Value) -> String {
        let mut h = Header::new(alg);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(&h, claims, key).unwrap()
    }

    fn user_claims() -> Value {
        serde_json::json!({"sub": "u-7", "role": "authenticated", "exp": now_epoch() + 60,
                           "iss": "https://idp.example", "aud": ["authenticated", "other"]})
    }

    #[test]
    fn jwks_keys_verify_rs256_es256_and_eddsa_tokens_by_kid() {
        let v = jwks_verifier(None, None);
        let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        let ec = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
        let ed = EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap();
        for (alg, key, kid) in [
            (Algorithm::RS256, &rsa, "rsa-1"),
            (Algorithm::ES256, &ec, "ec-1"),
            (Algorithm::EdDSA, &ed, "ed-1"),
        ] {
            let c = v.verify(&with_kid(alg, key, kid, &user_claims())).unwrap();
            assert_eq!(c.sub.as_deref(), Some("u-7"), "{kid}");
        }
        // An unknown kid, a kid naming another algorithm's key, a key the kid does not
        // name.
        let t = with_kid(Algorithm::RS256, &rsa, "rsa-2", &user_claims());
        assert_eq!(v.verify(&t), Err(AuthError::UnknownKid));
        let t = with_kid(Algorithm::ES256, &ec, "rsa-1", &user_claims());
        assert_eq!(v.verify(&t), Err(AuthError::AlgorithmNotAllowed));
        let t = with_kid(Algorithm::RS256, &rsa, "ed-1", &user_claims());
        assert_eq!(v.verify(&t), Err(AuthError::AlgorithmNotAllowed));
        // A P-256 key that is not in the JWKS, claiming a kid that is.
        let other_ec =
            EncodingKey::from_ec_pem(include_str!("testdata/ec_other_private.pem").as_bytes())
                .unwrap();
        let t = with_kid(Algorithm::ES256, &other_ec, "ec-1", &user_claims());
        assert_eq!(v.verify(&t), Err(AuthError::BadSignature));
    }

    #[test]
    fn issuer_audience_and_not_before_are_enforced() {
        let ed = EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap();
        let v = jwks_verifier(Some("https://idp.example"), Some("authenticated"));
        assert!(v
            .verify(&with_kid(Algorithm::EdDSA, &ed, "ed-1", &user_claims()))
            .is_ok());
        let mut c = user_claims();
        c["iss"] = "https://evil.example".into();
        let t = with_kid(Algorithm::EdDSA, &ed, "ed-1", &c);
        assert_eq!(v.verify(&t), Err(AuthError::WrongClaim("iss")));
        let mut c = user_claims();
        c["aud"] = "somebody-else".into();
        let t = with_kid(Algorithm::EdDSA, &ed, "ed-1", &c);
        assert_eq!(v.verify(&t), Err(AuthError::WrongClaim("aud")));
        let mut c = user_claims();
        c.as_object_mut().unwrap().remove("iss");
        let t = with_kid(Algorithm::EdDSA, &ed, "ed-1", &c);
        assert_eq!(v.verify(&t), Err(AuthError::MissingClaim("iss")));
        let mut c = user_claims();
        c["nbf"] = (now_epoch() + 120).into();
        let t = with_kid(Algorithm::EdDSA, &ed, "ed-1", &c);
        assert_eq!(v.verify(&t), Err(AuthError::NotYetValid));
        c["nbf"] = (now_epoch() - 1).into();
        assert!(v
            .verify(&with_kid(Algorithm::EdDSA, &ed, "ed-1", &c))
            .is_ok());
        // HS256 tokens (Ripple's own) are not held to another issuer's iss/aud.
        let hs = JwtVerifier::new(&JwtConfig {
            secret: Some(Secret::new("test-secret-at-least-32-bytes-long!!")),
            issuer: Some("https://idp.example".into()),
            audience: Some("x".into()),
            ..Default::default()
        })
        .unwrap();
        assert!(hs.verify(&hs.mint_for("anon", None, 60).unwrap()).is_ok());
    }

    #[test]
    fn ripple_accepts_tokens_of_its_own_signing_key() {
        let key = crate::auth::keys::SigningKey::from_pem(ED_PRIVATE, None).unwrap();
        let mut v = JwtVerifier::new(&JwtConfig::default()).unwrap();
        let t = key.sign(&user_claims()).unwrap();
        assert_eq!(v.verify(&t), Err(AuthError::NoKey));
        v.add_own_key(&key);
        assert!(v.verify(&t).is_ok());
    }
}
