//! Passwords: argon2id hashes in PHC form (what `auth.users.encrypted_password` holds), and the
//! configurable rules a new password must meet.
//!
//! Hashing is deliberately slow (tens of milliseconds), so callers run it on the blocking pool,
//! never on a runtime worker.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};
use std::sync::OnceLock;

/// argon2id with the crate's defaults (OWASP's recommended m=19 MiB, t=2, p=1).
fn argon2() -> Argon2<'static> {
    Argon2::default()
}

/// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) for `password`.
pub fn hash(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters accepts any password and a generated salt")
        .to_string()
}

/// Does `password` match `phc`? A stored value that is not a valid PHC string matches nothing.
pub fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Spends the same work as [`verify`] for a sign-in whose email matches no user, so an unknown
/// email costs as long as a wrong password and timing does not tell which it was.
pub fn verify_against_nobody(password: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let phc = DUMMY.get_or_init(|| hash("no user has this password"));
    let _ = verify(password, phc);
}

/// What a new password must meet.
#[derive(Debug, Clone)]
pub struct PasswordRules {
    /// Fewest characters (Unicode scalar values).
    pub min_length: usize,
    /// Character classes that must each appear (GoTrue's `password_required_characters`):
    /// any of `lower`, `upper`, `digit`, `symbol`.
    pub required: Vec<CharClass>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CharClass {
    Lower,
    Upper,
    Digit,
    Symbol,
}

impl std::str::FromStr for CharClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "lower" => Ok(Self::Lower),
            "upper" => Ok(Self::Upper),
            "digit" => Ok(Self::Digit),
            "symbol" => Ok(Self::Symbol),
            other => Err(format!(
                "unknown character class `{other}` (lower, upper, digit, symbol)"
            )),
        }
    }
}

impl CharClass {
    fn matches(self, c: char) -> bool {
        match self {
            Self::Lower => c.is_lowercase(),
            Self::Upper => c.is_uppercase(),
            Self::Digit => c.is_ascii_digit(),
            Self::Symbol => !c.is_alphanumeric() && !c.is_whitespace(),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Self::Lower => "a lowercase letter",
            Self::Upper => "an uppercase letter",
            Self::Digit => "a digit",
            Self::Symbol => "a symbol",
        }
    }
}

/// Why a password was refused: GoTrue's `weak_password.reasons` and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Weak {
    pub reasons: Vec<&'static str>,
    pub message: String,
}

/// Longest password accepted: argon2 would take any length, but a megabyte "password" is a
/// way to burn CPU, not a credential.
pub const MAX_LENGTH: usize = 1024;

impl PasswordRules {
    pub fn check(&self, password: &str) -> Result<(), Weak> {
        let len = password.chars().count();
        if len < self.min_length {
            return Err(Weak {
                reasons: vec!["length"],
                message: format!(
                    "Password should be at least {} characters.",
                    self.min_length
                ),
            });
        }
        if len > MAX_LENGTH {
            return Err(Weak {
                reasons: vec!["length"],
                message: format!("Password should be at most {MAX_LENGTH} characters."),
            });
        }
        let missing: Vec<&str> = self
            .required
            .iter()
            .filter(|class| !password.chars().any(|c| class.matches(c)))
            .map(|class| class.name())
            .collect();
        if !missing.is_empty() {
            return Err(Weak {
                reasons: vec!["characters"],
                message: format!("Password should contain {}.", missing.join(", ")),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_and_no_other() {
        let h = hash("correct horse");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(!h.contains("correct horse"));
        assert!(verify("correct horse", &h));
        assert!(!verify("correct horsE", &h));
        // Same password, new salt: a different hash.
        assert_ne!(h, hash("correct horse"));
    }

    #[test]
    fn a_stored_value_that_is_not_a_hash_matches_nothing() {
        assert!(!verify("", ""));
        assert!(!verify("plaintext", "plaintext"));
    }

    #[test]
    fn rules_refuse_short_and_missing_classes() {
        let rules = PasswordRules {
            min_length: 8,
            required: vec![CharClass::Digit, CharClass::Upper],
        };
        assert_eq!(rules.check("Abc1").unwrap_err().reasons, vec!["length"]);
        let e = rules.check("abcdefgh").unwrap_err();
        assert_eq!(e.reasons, vec!["characters"]);
        assert!(e.message.contains("a digit") && e.message.contains("an uppercase"));
        assert!(rules.check("Abcdefg1").is_ok());
        // Characters, not bytes.
        let loose = PasswordRules {
            min_length: 4,
            required: vec![],
        };
        assert!(loose.check("ééé").is_err());
        assert!(loose.check("éééé").is_ok());
        assert!(loose.check(&"x".repeat(MAX_LENGTH + 1)).is_err());
    }
}
