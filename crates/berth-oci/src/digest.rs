use std::fmt;
use std::str::FromStr;

use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::Digest as _;

/// A hash algorithm the registry can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DigestAlgorithm {
    /// SHA-256, the default of every client.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl DigestAlgorithm {
    /// The algorithm named `name` (`sha256`, `sha512`), if supported.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(Self::Sha256),
            "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }

    /// The algorithm's name as it appears before the colon.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }

    /// Length of the hex-encoded hash.
    pub fn hex_len(self) -> usize {
        match self {
            Self::Sha256 => 64,
            Self::Sha512 => 128,
        }
    }

    /// A fresh hasher for this algorithm.
    pub fn hasher(self) -> Hasher {
        match self {
            Self::Sha256 => Hasher::Sha256(Box::default()),
            Self::Sha512 => Hasher::Sha512(Box::default()),
        }
    }

    /// The digest of `bytes` under this algorithm.
    pub fn digest_of(self, bytes: &[u8]) -> Digest {
        let mut h = self.hasher();
        h.update(bytes);
        h.finish()
    }
}

/// Why a digest string failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseDigestError {
    /// No `algorithm:` prefix.
    #[error("digest must look like algorithm:hex")]
    Format,
    /// The algorithm is well formed but not one this registry verifies.
    #[error("unsupported digest algorithm {0:?}: use sha256 or sha512")]
    Unsupported(String),
    /// The encoded part has the wrong length or is not lowercase hex.
    #[error("digest hash must be {0} lowercase hex characters")]
    Encoding(usize),
}

/// A content address: `sha256:` followed by 64 lowercase hex characters (or sha512).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: DigestAlgorithm,
    hex: String,
}

impl Digest {
    /// The algorithm.
    pub fn algorithm(&self) -> DigestAlgorithm {
        self.algorithm
    }

    /// The hex-encoded hash, without the algorithm.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        DigestAlgorithm::Sha256.digest_of(bytes)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn valid_algorithm_grammar(a: &str) -> bool {
    // algorithm-component (algorithm-separator algorithm-component)*
    !a.is_empty()
        && a.split(['+', '.', '_', '-']).all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

impl FromStr for Digest {
    type Err = ParseDigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, hex) = s.split_once(':').ok_or(ParseDigestError::Format)?;
        let algorithm = match DigestAlgorithm::from_name(alg) {
            Some(a) => a,
            None if valid_algorithm_grammar(alg) && !hex.is_empty() => {
                return Err(ParseDigestError::Unsupported(alg.to_owned()))
            }
            None => return Err(ParseDigestError::Format),
        };
        let want = algorithm.hex_len();
        if hex.len() != want
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(ParseDigestError::Encoding(want));
        }
        Ok(Self {
            algorithm,
            hex: hex.to_owned(),
        })
    }
}

/// An incremental hasher whose state can be saved and restored, so a chunked upload can
/// continue on another instance or after a restart without re-reading what it already has.
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256 state.
    Sha256(Box<sha2::Sha256>),
    /// SHA-512 state.
    Sha512(Box<sha2::Sha512>),
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hasher({})", self.algorithm().as_str())
    }
}

impl Hasher {
    /// The algorithm this hasher computes.
    pub fn algorithm(&self) -> DigestAlgorithm {
        match self {
            Self::Sha256(_) => DigestAlgorithm::Sha256,
            Self::Sha512(_) => DigestAlgorithm::Sha512,
        }
    }

    /// Feed bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(bytes),
            Self::Sha512(h) => h.update(bytes),
        }
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        let (algorithm, out) = match self {
            Self::Sha256(h) => (DigestAlgorithm::Sha256, hex::encode(h.finalize())),
            Self::Sha512(h) => (DigestAlgorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest {
            algorithm,
            hex: out,
        }
    }

    /// The internal state as bytes, for [`Hasher::restore`].
    pub fn save(&self) -> Vec<u8> {
        match self {
            Self::Sha256(h) => h.serialize().to_vec(),
            Self::Sha512(h) => h.serialize().to_vec(),
        }
    }

    /// Rebuild a hasher from [`Hasher::save`]'s bytes; `None` if they are not a valid state.
    pub fn restore(algorithm: DigestAlgorithm, state: &[u8]) -> Option<Self> {
        match algorithm {
            DigestAlgorithm::Sha256 => {
                let s = SerializedState::<sha2::Sha256>::try_from(state).ok()?;
                sha2::Sha256::deserialize(&s)
                    .ok()
                    .map(|h| Self::Sha256(Box::new(h)))
            }
            DigestAlgorithm::Sha512 => {
                let s = SerializedState::<sha2::Sha512>::try_from(state).ok()?;
                sha2::Sha512::deserialize(&s)
                    .ok()
                    .map(|h| Self::Sha512(Box::new(h)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let s = format!("sha256:{}", "0123456789abcdef".repeat(4));
        let d: Digest = s.parse().unwrap();
        assert_eq!(d.to_string(), s);
        assert_eq!(d.algorithm(), DigestAlgorithm::Sha256);
        let s512 = format!("sha512:{}", "ab".repeat(64));
        assert!(s512.parse::<Digest>().is_ok());
    }

    #[test]
    fn rejects_bad_digests() {
        assert_eq!("sha256".parse::<Digest>(), Err(ParseDigestError::Format));
        assert_eq!(
            format!("sha256:{}", "A".repeat(64)).parse::<Digest>(),
            Err(ParseDigestError::Encoding(64))
        );
        assert_eq!(
            "sha256:abc".parse::<Digest>(),
            Err(ParseDigestError::Encoding(64))
        );
        assert!(matches!(
            "md5:abc".parse::<Digest>(),
            Err(ParseDigestError::Unsupported(_))
        ));
        assert_eq!(
            "SHA256:abc".parse::<Digest>(),
            Err(ParseDigestError::Format)
        );
    }

    #[test]
    fn known_vectors() {
        assert_eq!(
            Digest::sha256_of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn hasher_state_round_trips() {
        for alg in [DigestAlgorithm::Sha256, DigestAlgorithm::Sha512] {
            let mut h = alg.hasher();
            h.update(b"hello ");
            let saved = h.save();
            let mut h2 = Hasher::restore(alg, &saved).unwrap();
            h2.update(b"world");
            assert_eq!(h2.finish(), alg.digest_of(b"hello world"));
            assert!(Hasher::restore(alg, &saved[1..]).is_none());
        }
    }
}
