//! Ripple's own asymmetric signing key (RS256, ES256 or EdDSA), read from a PKCS#8 PEM file.
//! Its public half is served as a JWK at `/auth/v1/.well-known/jwks.json`, so other services
//! verify Ripple's tokens without sharing a secret, and Ripple's verifier accepts its own
//! tokens by their `kid`.

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use ring::signature::KeyPair;
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("the signing key is not a PEM file")]
    NotPem,
    #[error(
        "the signing key is not a PKCS#8 RSA, P-256 (ES256) or Ed25519 private key \
         (`openssl genpkey -algorithm ed25519` makes one)"
    )]
    Unsupported,
}

#[derive(Debug, thiserror::Error)]
#[error("could not sign a token")]
pub struct SignError(#[source] jsonwebtoken::errors::Error);

pub struct SigningKey {
    alg: Algorithm,
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    public_jwk: Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl SigningKey {
    /// Reads a PKCS#8 private key (`-----BEGIN PRIVATE KEY-----`); the algorithm follows from
    /// the key. `kid` defaults to the RFC 7638 thumbprint of the public key.
    pub fn from_pem(pem: &str, kid: Option<String>) -> Result<Self, SigningKeyError> {
        let der = pem_body(pem).ok_or(SigningKeyError::NotPem)?;
        let (alg, mut jwk) = public_jwk(&der).ok_or(SigningKeyError::Unsupported)?;
        let encoding = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()),
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
            _ => EncodingKey::from_ed_pem(pem.as_bytes()),
        }
        .map_err(|_| SigningKeyError::Unsupported)?;
        let kid = kid.unwrap_or_else(|| thumbprint(&jwk));
        jwk["kid"] = Value::String(kid.clone());
        jwk["alg"] = Value::String(alg_name(alg).into());
        jwk["use"] = Value::String("sig".into());
        let parsed: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(jwk.clone()).map_err(|_| SigningKeyError::Unsupported)?;
        let decoding = DecodingKey::from_jwk(&parsed).map_err(|_| SigningKeyError::Unsupported)?;
        Ok(Self {
            alg,
            kid,
            encoding,
            decoding,
            public_jwk: jwk,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    pub fn public_jwk(&self) -> &Value {
        &self.public_jwk
    }

    /// The public key, for verifying Ripple's own tokens.
    pub fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    pub fn sign(&self, claims: &Value) -> Result<String, SignError> {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(SignError)
    }
}

pub fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        Algorithm::EdDSA => "EdDSA",
        _ => "unsupported",
    }
}

/// The DER inside a PEM file's first block.
fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let mut inside = false;
    let mut b64 = String::new();
    for line in pem.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN") {
            inside = true;
        } else if line.starts_with("-----END") {
            break;
        } else if inside {
            b64.push_str(line);
        }
    }
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// The algorithm and public JWK (without `kid`) of a PKCS#8 private key.
fn public_jwk(pkcs8: &[u8]) -> Option<(Algorithm, Value)> {
    if let Ok(kp) = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8) {
        let x = b64(kp.public_key().as_ref());
        return Some((
            Algorithm::EdDSA,
            json!({"kty": "OKP", "crv": "Ed25519", "x": x}),
        ));
    }
    let rng = ring::rand::SystemRandom::new();
    if let Ok(kp) = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8,
        &rng,
    ) {
        // Uncompressed point: 0x04 || x || y.
        let point = kp.public_key().as_ref();
        if point.len() != 65 || point[0] != 4 {
            return None;
        }
        return Some((
            Algorithm::ES256,
            json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])}),
        ));
    }
    if let Ok(kp) = ring::rsa::KeyPair::from_pkcs8(pkcs8) {
        // ring gives the public key as DER `RSAPublicKey ::= SEQUENCE { n INTEGER, e INTEGER }`.
        let (n, e) = rsa_public_numbers(kp.public_key().as_ref())?;
        return Some((
            Algorithm::RS256,
            json!({"kty": "RSA", "n": b64(n), "e": b64(e)}),
        ));
    }
    None
}

/// `n` and `e` (big-endian, no sign byte) from a DER `RSAPublicKey`.
fn rsa_public_numbers(der: &[u8]) -> Option<(&[u8], &[u8])> {
    fn tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (&t, rest) = input.split_first()?;
        if t != tag {
            return None;
        }
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (first as usize, rest)
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | *b as usize);
            (len, &rest[n..])
        };
        (rest.len() >= len).then(|| rest.split_at(len))
    }
    let (seq, _) = tlv(der, 0x30)?;
    let (n, rest) = tlv(seq, 0x02)?;
    let (e, _) = tlv(rest, 0x02)?;
    let trim = |x: &'_ [u8]| -> usize { x.iter().take_while(|b| **b == 0).count() };
    Some((&n[trim(n)..], &e[trim(e)..]))
}

/// RFC 7638: SHA-256 over the required members in lexicographic order, base64url.
fn thumbprint(jwk: &Value) -> String {
    let members: &[&str] = match jwk["kty"].as_str() {
        Some("RSA") => &["e", "kty", "n"],
        Some("EC") => &["crv", "kty", "x", "y"],
        _ => &["crv", "kty", "x"],
    };
    let canonical = members
        .iter()
        .map(|m| format!("\"{m}\":{}", jwk[*m]))
        .collect::<Vec<_>>()
        .join(",");
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("{{{canonical}}}").as_bytes());
    b64(digest.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_PRIVATE: &str = include_str!("testdata/rsa_private.pem");
    const EC_PRIVATE: &str = include_str!("testdata/ec_private.pem");
    const ED_PRIVATE: &str = include_str!("testdata/ed25519_private.pem");

    fn round_trip(pem: &str, alg: Algorithm, kty: &str) {
        let key = SigningKey::from_pem(pem, None).unwrap();
        assert_eq!(key.alg(), alg);
        assert_eq!(key.public_jwk()["kty"], kty);
        assert!(key.public_jwk().get("d").is_none(), "no private part");
        let claims =
            json!({"sub": "u", "role": "authenticated", "exp": crate::auth::now_epoch() + 60});
        let token = key.sign(&claims).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(key.kid()));
        // The served JWK verifies the token: what a third party would do with our JWKS.
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.public_jwk().clone()).unwrap();
        let mut v = jsonwebtoken::Validation::new(alg);
        v.validate_aud = false;
        jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_jwk(&jwk).unwrap(), &v).unwrap();
    }

    #[test]
    fn rsa_ec_and_ed25519_keys_sign_tokens_their_jwk_verifies() {
        round_trip(RSA_PRIVATE, Algorithm::RS256, "RSA");
        round_trip(EC_PRIVATE, Algorithm::ES256, "EC");
        round_trip(ED_PRIVATE, Algorithm::EdDSA, "OKP");
    }

    #[test]
    fn the_kid_is_the_thumbprint_unless_given() {
        let a = SigningKey::from_pem(EC_PRIVATE, None).unwrap();
        let b = SigningKey::from_pem(EC_PRIVATE, None).unwrap();
        assert_eq!(a.kid(), b.kid());
        assert_eq!(a.kid().len(), 43);
        let named = SigningKey::from_pem(EC_PRIVATE, Some("k1".into())).unwrap();
        assert_eq!(named.kid(), "k1");
        assert_eq!(named.public_jwk()["kid"], "k1");
    }

    #[test]
    fn a_public_key_or_garbage_is_refused() {
        assert!(matches!(
            SigningKey::from_pem("nothing", None),
            Err(SigningKeyError::NotPem) | Err(SigningKeyError::Unsupported)
        ));
        let public = include_str!("testdata/ec_public.pem");
        assert!(SigningKey::from_pem(public, None).is_err());
    }
}
