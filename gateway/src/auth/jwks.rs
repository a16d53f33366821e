//! Keys of other issuers from a JSON Web Key Set: a file, or an `http://` URL fetched again
//! every few minutes and whenever a token names a `kid` we do not have (key rotation).
//!
//! RS256 (RSA), ES256 (P-256) and EdDSA (Ed25519) keys are used; others (and keys meant for
//! encryption) are skipped. Supabase's asymmetric signing keys are such a set.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Weak;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Unknown `kid`s prompt a refetch, but not more often than this.
const MIN_REFETCH_GAP: Duration = Duration::from_secs(10);

pub type KeysByKid = HashMap<String, (Algorithm, DecodingKey)>;

/// Where a JWKS comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    Url(url::Url),
}

impl std::str::FromStr for JwksSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.starts_with("https://") {
            return Err(format!(
                "{s}: Ripple fetches JWKS over plain http only (it links no TLS); save the set \
                 to a file (and refresh it with a scheduled curl) or serve it on a local http URL"
            ));
        }
        if s.starts_with("http://") {
            return url::Url::parse(s)
                .map(Self::Url)
                .map_err(|e| format!("{s}: {e}"));
        }
        Ok(Self::File(PathBuf::from(s)))
    }
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "{}", p.display()),
            // Host and path only: a URL's user, password or query may be a credential.
            Self::Url(u) => write!(
                f,
                "{}://{}{}",
                u.scheme(),
                u.host_str().unwrap_or_default(),
                u.path()
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("could not read the JWKS file")]
    Read(#[source] std::io::Error),
    #[error("could not fetch the JWKS")]
    Fetch(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the JWKS URL answered {0}")]
    Status(u16),
    #[error("the JWKS is not a JSON Web Key Set")]
    Parse(#[source] serde_json::Error),
}

/// The usable keys of a JWKS document, by `kid`.
pub fn parse(json: &[u8]) -> Result<KeysByKid, JwksError> {
    // Key by key: one key of a kind jsonwebtoken does not know (an ES512 key, say) must not
    // make the others unusable.
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(json).map_err(JwksError::Parse)?;
    Ok(set
        .keys
        .into_iter()
        .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let alg = algorithm(&jwk)?;
            let key = DecodingKey::from_jwk(&jwk).ok()?;
            Some((kid, (alg, key)))
        })
        .collect())
}

/// The signature algorithm a key is for: its `alg`, else what its type implies.
fn algorithm(jwk: &Jwk) -> Option<Algorithm> {
    if matches!(
        jwk.common.public_key_use,
        Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
    ) {
        return None;
    }
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(implied),
        Some(KeyAlgorithm::RS256) if implied == Algorithm::RS256 => Some(implied),
        Some(KeyAlgorithm::ES256) if implied == Algorithm::ES256 => Some(implied),
        Some(KeyAlgorithm::EdDSA) if implied == Algorithm::EdDSA => Some(implied),
        Some(_) => None,
    }
}

/// Reads or fetches one source.
pub async fn load(source: &JwksSource) -> Result<KeysByKid, JwksError> {
    let bytes = match source {
        JwksSource::File(path) => tokio::fs::read(path).await.map_err(JwksError::Read)?,
        JwksSource::Url(url) => fetch(url).await?,
    };
    parse(&bytes)
}

/// Reads every file source now (a bad file stops start-up); URLs come later, from the
/// refresher.
pub fn load_files(sources: &[JwksSource]) -> Result<KeysByKid, JwksError> {
    let mut keys = KeysByKid::new();
    for source in sources {
        if let JwksSource::File(path) = source {
            keys.extend(parse(&std::fs::read(path).map_err(JwksError::Read)?)?);
        }
    }
    Ok(keys)
}

async fn fetch(url: &url::Url) -> Result<Vec<u8>, JwksError> {
    use http_body_util::{BodyExt, Empty, Limited};
    let boxed = |e: Box<dyn std::error::Error + Send + Sync>| JwksError::Fetch(e);
    let host = url.host_str().unwrap_or_default().to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    let work = async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| boxed(e.into()))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| boxed(e.into()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, host.as_str())
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| boxed(e.into()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| boxed(e.into()))?;
        if !resp.status().is_success() {
            return Err(JwksError::Status(resp.status().as_u16()));
        }
        let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(boxed)?;
        Ok(body.to_bytes().to_vec())
    };
    tokio::time::timeout(FETCH_TIMEOUT, work)
        .await
        .map_err(|e| boxed(e.into()))?
}

/// Keeps the verifier's JWKS keys current: every `every`, and soon after a token names an
/// unknown `kid`. Stops when the verifier is gone. A failed fetch keeps the keys it had.
pub fn spawn_refresh(
    verifier: Weak<super::JwtVerifier>,
    sources: Vec<JwksSource>,
    every: Duration,
) {
    tokio::spawn(async move {
        loop {
            let Some(jwt) = verifier.upgrade() else {
                return;
            };
            let mut keys = KeysByKid::new();
            let mut complete = true;
            for source in &sources {
                match load(source).await {
                    Ok(k) => keys.extend(k),
                    Err(error) => {
                        complete = false;
                        tracing::warn!(source = %source, error = %error, "jwks: could not load");
                    }
                }
            }
            if complete || !keys.is_empty() {
                tracing::debug!(keys = keys.len(), "jwks: loaded");
                jwt.set_jwks(keys);
            }
            let fetched_at = tokio::time::Instant::now();
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = jwt.unknown_kid_seen() => {
                    // At once, unless the last fetch was moments ago.
                    tokio::time::sleep_until(fetched_at + MIN_REFETCH_GAP.min(every)).await;
                }
            }
            drop(jwt);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_taken_by_kid_and_type() {
        let doc = br#"{"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "ec1", "alg": "ES256",
             "x": "_mpVyf7YxMlkOvmfG9lEc_O5F1Fg6h9jml0iy1vL-Xk",
             "y": "mpqOe-uv2aJ_IzHoOFMf-zxqFd4mw2DfH9my0AAz7dr5"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed1", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "EC", "crv": "P-256", "alg": "ES256",
             "x": "_mpVyf7YxMlkOvmfG9lEc_O5F1Fg6h9jml0iy1vL-Xk",
             "y": "mpqOe-uv2aJ_IzHoOFMf-zxqFd4mw2DfH9my0AAz7dr5"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc",
             "x": "_mpVyf7YxMlkOvmfG9lEc_O5F1Fg6h9jml0iy1vL-Xk",
             "y": "mpqOe-uv2aJ_IzHoOFMf-zxqFd4mw2DfH9my0AAz7dr5"}
        ]}"#;
        let keys = parse(doc).unwrap();
        let mut kids: Vec<&str> = keys.keys().map(String::as_str).collect();
        kids.sort();
        // No kid, a symmetric key and an encryption key are all skipped.
        assert_eq!(kids, vec!["ec1", "ed1"]);
        assert_eq!(keys["ec1"].0, Algorithm::ES256);
        assert_eq!(keys["ed1"].0, Algorithm::EdDSA);
        assert!(matches!(parse(b"[]"), Err(JwksError::Parse(_))));
    }

    #[test]
    fn a_supabase_shaped_set_with_a_key_of_an_unknown_kind_still_loads() {
        // As a Supabase project publishes its asymmetric keys (`ext`, `key_ops`), beside a
        // key jsonwebtoken cannot represent.
        let doc = br#"{"keys": [
            {"alg": "ES256", "crv": "P-256", "ext": true, "key_ops": ["verify"],
             "kid": "b81269f1-21d8-4f2e-b719-c2240a840d90", "kty": "EC", "use": "sig",
             "x": "_mpVyf7YxMlkOvmfG9lEc_O5F1Fg6h9jml0iy1vL-Xk",
             "y": "mpqOe-uv2aJ_IzHoOFMf-zxqFd4mw2DfH9my0AAz7dr5"},
            {"alg": "ES512", "crv": "P-521", "kid": "big", "kty": "EC", "x": "AA", "y": "AA"},
            {"kty": "future-kind", "kid": "x"}
        ]}"#;
        let keys = parse(doc).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(
            keys["b81269f1-21d8-4f2e-b719-c2240a840d90"].0,
            Algorithm::ES256
        );
    }

    #[test]
    fn sources_are_files_or_plain_http_urls() {
        assert_eq!(
            "keys/jwks.json".parse::<JwksSource>().unwrap(),
            JwksSource::File("keys/jwks.json".into())
        );
        assert!(matches!(
            "http://127.0.0.1:9/jwks.json"
                .parse::<JwksSource>()
                .unwrap(),
            JwksSource::Url(_)
        ));
        let shown = "http://user:hunter2@127.0.0.1:9/jwks.json?key=abc"
            .parse::<JwksSource>()
            .unwrap()
            .to_string();
        assert_eq!(shown, "http://127.0.0.1/jwks.json");
        let e = "https://x.supabase.co/auth/v1/.well-known/jwks.json"
            .parse::<JwksSource>()
            .unwrap_err();
        assert!(e.contains("file"), "{e}");
    }
}
