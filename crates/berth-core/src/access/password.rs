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

/// Run `f` (one argon2 computation) on tokio's blocking pool, at most one per CPU at a time.
///
/// Each computation takes tens of milliseconds, too long for an async worker, and 19 MiB of
/// memory (argon2id's default `m`). Without a bound, a burst of basic-auth requests became a
/// burst of blocking threads each holding that much: 16 concurrent clients took a server to
/// 329 MB. Callers beyond the bound wait their turn instead.
///
/// The slot goes with the computation, not with the caller: a request dropped while argon2
/// runs (a client that disconnects, an HTTP/2 stream reset) leaves the computation running
/// on the blocking pool, and the slot stays taken until it ends.
async fn argon2_slot<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    static SLOTS: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> =
        std::sync::OnceLock::new();
    let slots =
        SLOTS.get_or_init(|| std::sync::Arc::new(tokio::sync::Semaphore::new(argon2_slots())));
    let slot = std::sync::Arc::clone(slots)
        .acquire_owned()
        .await
        .map_err(|e| Error::Internal(format!("{what}: {e}")))?;
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        f()
    })
    .await
    .map_err(|e| Error::Internal(format!("{what}: {e}")))
}

/// How many argon2 computations may run at once: one per CPU.
fn argon2_slots() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

/// [`hash`] on tokio's blocking pool, at most one argon2 computation per CPU at a time.
///
/// # Errors
/// As [`hash`].
pub async fn hash_off_thread(secret: String) -> Result<String, Error> {
    argon2_slot("hashing a secret", move || hash(&secret)).await?
}

/// [`verify`] on tokio's blocking pool, at most one argon2 computation per CPU at a time.
///
/// # Errors
/// If the blocking task fails.
pub async fn verify_off_thread(secret: &str, hash: Option<String>) -> Result<bool, Error> {
    let secret = secret.to_owned();
    argon2_slot("checking a secret", move || {
        verify(&secret, hash.as_deref())
    })
    .await
}

/// How long a secret that verified is taken as verified again without argon2.
pub const VERIFIED_TTL: Duration = Duration::from_secs(5 * 60);

/// Most entries [`VerifiedSecrets`] keeps.
const VERIFIED_MAX: usize = 10_000;

/// Secrets that verified recently, so that a client sending the same basic-auth credentials
/// with every request pays for argon2 once per [`VERIFIED_TTL`], not once per request.
///
/// An entry is an HMAC, under a key made at start and never stored, of the stored hash and
/// the secret: it holds neither, and it names the stored hash, so a changed password or
/// secret (a new hash) never matches an old entry. The caller still reads the account each
/// time, so a deleted user or a disabled robot is refused at once. Only successes are kept:
/// a wrong secret always costs a full argon2 check, and the login limiter counts it.
pub struct VerifiedSecrets {
    key: ring::hmac::Key,
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], Instant>>,
    argon2_runs: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for VerifiedSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedSecrets")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl VerifiedSecrets {
    /// An empty cache whose entries last `ttl`.
    ///
    /// # Errors
    /// If the random source fails.
    pub fn new(ttl: Duration) -> Result<Self, Error> {
        let key =
            ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
                .map_err(|e| Error::Internal(format!("random source: {e}")))?;
        Ok(Self {
            key,
            ttl,
            entries: Mutex::new(HashMap::new()),
            argon2_runs: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Whether `secret` matches `hash` (`None`: no such account; spends an argon2 check and
    /// answers false), from the cache when it verified within the TTL.
    ///
    /// # Errors
    /// If the blocking task fails.
    pub async fn verify(&self, secret: &str, hash: Option<String>) -> Result<bool, Error> {
        let Some(hash) = hash else {
            self.count_run();
            return verify_off_thread(secret, None).await;
        };
        let tag = self.tag(secret, &hash);
        let now = Instant::now();
        {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if entries
                .get(&tag)
                .is_some_and(|at| now.duration_since(*at) < self.ttl)
            {
                return Ok(true);
            }
        }
        self.count_run();
        let ok = verify_off_thread(secret, Some(hash)).await?;
        if ok {
            // Stamped now, not when the check was asked for: it may have waited for a slot.
            let now = Instant::now();
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if entries.len() >= VERIFIED_MAX {
                entries.retain(|_, at| now.duration_since(*at) < self.ttl);
            }
            if entries.len() >= VERIFIED_MAX {
                // Still full of live entries: the oldest makes room. Each insert here follows
                // an argon2 check, so this scan is never the expensive part.
                if let Some(oldest) = entries.iter().min_by_key(|(_, at)| **at).map(|(k, _)| *k) {
                    entries.remove(&oldest);
                }
            }
            entries.insert(tag, now);
        }
        Ok(ok)
    }

    /// How many argon2 checks [`VerifiedSecrets::verify`] has run.
    pub fn argon2_runs(&self) -> u64 {
        self.argon2_runs.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count_run(&self) {
        self.argon2_runs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn tag(&self, secret: &str, hash: &str) -> [u8; 32] {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        // Length-prefixed, so no (hash, secret) pair runs into another.
        ctx.update(&(hash.len() as u64).to_be_bytes());
        ctx.update(hash.as_bytes());
        ctx.update(secret.as_bytes());
        let mut tag = [0u8; 32];
        tag.copy_from_slice(ctx.sign().as_ref());
        tag
    }
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

    #[tokio::test]
    async fn a_verified_secret_is_not_hashed_again_until_its_hash_changes_or_it_expires() {
        let cache = VerifiedSecrets::new(Duration::from_secs(60)).expect("cache");
        let first = hash("Secret123").expect("hash");
        assert!(cache
            .verify("Secret123", Some(first.clone()))
            .await
            .unwrap());
        assert_eq!(cache.argon2_runs(), 1);
        for _ in 0..3 {
            assert!(cache
                .verify("Secret123", Some(first.clone()))
                .await
                .unwrap());
        }
        assert_eq!(cache.argon2_runs(), 1, "answered from the cache");

        // A wrong secret is checked in full every time, and never cached.
        for _ in 0..2 {
            assert!(!cache
                .verify("Secret124", Some(first.clone()))
                .await
                .unwrap());
        }
        assert_eq!(cache.argon2_runs(), 3);

        // A changed password is a new hash: the old entry does not match it, for either the
        // old or the new secret.
        let second = hash("Other4567").expect("hash");
        assert!(!cache
            .verify("Secret123", Some(second.clone()))
            .await
            .unwrap());
        assert!(cache
            .verify("Other4567", Some(second.clone()))
            .await
            .unwrap());
        assert_eq!(cache.argon2_runs(), 5);

        // No account: an argon2 check against the dummy hash, and false.
        assert!(!cache.verify("Secret123", None).await.unwrap());
        assert_eq!(cache.argon2_runs(), 6);
    }

    /// Callers that give up while argon2 runs (a dropped request) do not free its slot: at
    /// most one computation per CPU runs, however many callers come and go.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_argon2_checks_keep_their_slot_until_they_end() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let callers = (0..16).map(|_| {
            let (running, most) = (running.clone(), most.clone());
            tokio::time::timeout(
                Duration::from_millis(20),
                argon2_slot("test", move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(300));
                    running.fetch_sub(1, Ordering::SeqCst);
                }),
            )
        });
        let outcomes = futures::future::join_all(callers).await;
        assert!(outcomes.iter().all(Result::is_err), "every caller gave up");
        // Wait for the computations that did start to end.
        let deadline = Instant::now() + Duration::from_secs(10);
        while running.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let most = most.load(Ordering::SeqCst);
        assert!(most >= 1, "some computation ran");
        assert!(
            most <= argon2_slots(),
            "{most} argon2 computations ran at once, more than {}",
            argon2_slots()
        );
    }

    #[tokio::test]
    async fn a_full_cache_makes_room_by_dropping_its_oldest_entry() {
        let cache = VerifiedSecrets::new(Duration::from_secs(600)).expect("cache");
        let h = hash("Secret123").expect("hash");
        assert!(cache.verify("Secret123", Some(h.clone())).await.unwrap());
        // Fill the rest with made-up entries, all newer than the real one.
        {
            let mut entries = cache.entries.lock().unwrap();
            let now = Instant::now();
            for i in 0..VERIFIED_MAX - 1 {
                let mut tag = [0u8; 32];
                tag[..8].copy_from_slice(&(i as u64).to_be_bytes());
                tag[31] = 1;
                entries.insert(tag, now + Duration::from_millis(1));
            }
            assert_eq!(entries.len(), VERIFIED_MAX);
        }
        let other = hash("Other4567").expect("hash");
        assert!(cache
            .verify("Other4567", Some(other.clone()))
            .await
            .unwrap());
        assert_eq!(cache.entries.lock().unwrap().len(), VERIFIED_MAX);
        // The newcomer stays cached; the oldest (Secret123's) went and is checked again.
        let runs = cache.argon2_runs();
        assert!(cache.verify("Other4567", Some(other)).await.unwrap());
        assert_eq!(cache.argon2_runs(), runs);
        assert!(cache.verify("Secret123", Some(h)).await.unwrap());
        assert_eq!(cache.argon2_runs(), runs + 1);
    }

    #[tokio::test]
    async fn verified_secrets_expire() {
        let cache = VerifiedSecrets::new(Duration::from_millis(50)).expect("cache");
        let h = hash("Secret123").expect("hash");
        assert!(cache.verify("Secret123", Some(h.clone())).await.unwrap());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(cache.verify("Secret123", Some(h)).await.unwrap());
        assert_eq!(cache.argon2_runs(), 2, "checked again after the TTL");
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
