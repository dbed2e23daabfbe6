//! Passwords and secrets: argon2id hashes, the strength rule, and the limiter of failed
//! logins.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::Error;

/// Hash a password (or robot secret) as an argon2id PHC string.
///
/// # Errors
/// If the random source or the hasher fails.
pub fn hash(secret: &str) -> Result<String, Error> {
    let mut salt = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .map_err(|e| Error::Internal(format!("random source: {e}")))?;
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| Error::Internal(format!("password salt: {e}")))?;
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("hashing a password: {e}")))
}

/// A hash of no password, checked against when the user does not exist, so that a wrong
/// user name takes as long to refuse as a wrong password.
const DUMMY: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Yj1rT8n9x3l2cbzPcjqDe3ISRY5/eHwPOZK3s+hAHpA";

/// Whether `secret` matches the PHC string `hash` (in constant time; argon2 compares
/// digests with `subtle`). With `None`, spends the same time and answers false.
pub fn verify(secret: &str, hash: Option<&str>) -> bool {
    let stored = hash.unwrap_or(DUMMY);
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let ok = Argon2::default()
        .verify_password(secret.as_bytes(), &parsed)
        .is_ok();
    ok && hash.is_some()
}

/// [`hash`] on tokio's blocking pool: argon2 takes tens of milliseconds, too long for an
/// async worker.
///
/// # Errors
/// As [`hash`].
pub async fn hash_off_thread(secret: String) -> Result<String, Error> {
    tokio::task::spawn_blocking(move || hash(&secret))
        .await
        .map_err(|e| Error::Internal(format!("hashing a secret: {e}")))?
}

/// [`verify`] on tokio's blocking pool.
///
/// # Errors
/// If the blocking task fails.
pub async fn verify_off_thread(secret: &str, hash: Option<String>) -> Result<bool, Error> {
    let secret = secret.to_owned();
    tokio::task::spawn_blocking(move || verify(&secret, hash.as_deref()))
        .await
        .map_err(|e| Error::Internal(format!("checking a secret: {e}")))
}

/// Check Harbor's password rule: 8 to 128 characters with at least one upper-case letter,
/// one lower-case letter and one digit.
///
/// # Errors
/// [`Error::Invalid`] saying what is missing.
pub fn check_strength(password: &str) -> Result<(), Error> {
    let len = password.chars().count();
    let missing: Vec<&str> = [
        (len >= 8, "at least 8 characters"),
        (len <= 128, "at most 128 characters"),
        (
            password.chars().any(char::is_uppercase),
            "an upper-case letter",
        ),
        (
            password.chars().any(char::is_lowercase),
            "a lower-case letter",
        ),
        (password.chars().any(|c| c.is_ascii_digit()), "a digit"),
    ]
    .into_iter()
    .filter(|(ok, _)| !ok)
    .map(|(_, what)| what)
    .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "the password is too weak: it needs {}",
            missing.join(", ")
        )))
    }
}

/// A password that passes [`check_strength`]: 24 random characters.
///
/// # Errors
/// If the random source fails.
pub fn generate() -> Result<String, Error> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut bytes = [0u8; 24];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|e| Error::Internal(format!("random source: {e}")))?;
    let mut s: String = bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    // Guarantee each class once, whatever the draw.
    s.replace_range(0..3, "Aa2");
    Ok(s)
}

/// Counts failed logins per key (a user name, an address) and refuses further attempts for
/// a while after too many. Kept in memory: it slows guessing on each instance; it is not a
/// correctness rule.
#[derive(Debug)]
pub struct LoginLimiter {
    max_failures: u32,
    window: Duration,
    state: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginLimiter {
    /// Allow `max_failures` failures per key within `window`; after that, refuse until the
    /// window since the first failure has passed.
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures,
            window,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Refuse if any of `keys` is locked out.
    ///
    /// # Errors
    /// [`Error::TooManyRequests`].
    pub fn check(&self, keys: &[&str]) -> Result<(), Error> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        for key in keys {
            if let Some((n, since)) = state.get(*key) {
                if *n >= self.max_failures && now.duration_since(*since) < self.window {
                    return Err(Error::TooManyRequests(
                        "too many failed logins; try again later".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Count a failure against each of `keys`.
    pub fn failed(&self, keys: &[&str]) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if state.len() > 100_000 {
            // Bound the memory an attacker can make us use with made-up names.
            state.retain(|_, (_, since)| now.duration_since(*since) < self.window);
        }
        for key in keys {
            let e = state.entry((*key).to_owned()).or_insert((0, now));
            if now.duration_since(e.1) >= self.window {
                *e = (0, now);
            }
            e.0 += 1;
        }
    }

    /// Forget the failures of `keys` (after a successful login).
    pub fn succeeded(&self, keys: &[&str]) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for key in keys {
            state.remove(*key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ() {
        let a = hash("Secret123").expect("hash");
        let b = hash("Secret123").expect("hash");
        assert_ne!(a, b, "salted");
        assert!(a.starts_with("$argon2id$"));
        assert!(verify("Secret123", Some(&a)));
        assert!(!verify("Secret124", Some(&a)));
        assert!(!verify("Secret123", None));
        assert!(!verify("x", Some("not a hash")));
    }

    #[test]
    fn strength() {
        assert!(check_strength("Harbor12345").is_ok());
        for weak in ["short1A", "alllowercase1", "ALLUPPER1", "NoDigitsHere"] {
            assert!(check_strength(weak).is_err(), "{weak}");
        }
        assert!(check_strength(&generate().expect("gen")).is_ok());
    }

    #[test]
    fn limiter_locks_after_failures_and_resets_on_success() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(l.check(&["u:bob"]).is_ok());
            l.failed(&["u:bob", "ip:1"]);
        }
        assert!(matches!(
            l.check(&["u:bob"]),
            Err(Error::TooManyRequests(_))
        ));
        assert!(matches!(l.check(&["ip:1"]), Err(Error::TooManyRequests(_))));
        assert!(l.check(&["u:alice"]).is_ok());
        l.succeeded(&["u:bob", "ip:1"]);
        assert!(l.check(&["u:bob", "ip:1"]).is_ok());
    }
}
