use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// Longest repository name we accept (Distribution's limit, so names round-trip between them).
pub const MAX_NAME_LEN: usize = 255;
/// Longest tag the spec allows.
pub const MAX_TAG_LEN: usize = 128;

/// Why a name, tag or reference failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseNameError {
    /// The repository name is empty.
    #[error("repository name is empty")]
    Empty,
    /// The repository name is longer than 255 characters.
    #[error("repository name is longer than {MAX_NAME_LEN} characters")]
    TooLong,
    /// The repository name does not match the spec's grammar.
    #[error("repository name must match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*")]
    Grammar,
    /// The tag does not match `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
    #[error("tag must match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    Tag,
}

/// A repository name such as `team/app/api`, validated against the distribution spec's grammar.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first path segment: the project the repository belongs to.
    pub fn project(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(c: &[u8]) -> bool {
    let mut i = 0;
    let n = c.len();
    loop {
        // a run of alphanumerics
        let start = i;
        while i < n && is_alnum(c[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == n {
            return true;
        }
        // a separator: '.', '_', '__' or '-+'
        match c[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < n && c[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < n && c[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

impl FromStr for RepoName {
    type Err = ParseNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ParseNameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(ParseNameError::TooLong);
        }
        if s.split('/').all(|c| valid_component(c.as_bytes())) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseNameError::Grammar)
        }
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tag such as `latest` or `v1.2.3`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    /// The tag as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = ParseNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let first_ok = b
            .first()
            .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_');
        let rest_ok = b[1.min(b.len())..]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if first_ok && rest_ok && b.len() <= MAX_TAG_LEN {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseNameError::Tag)
        }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What follows `/manifests/`: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    /// A mutable tag.
    Tag(Tag),
    /// An immutable content address.
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = ParseNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            s.parse::<Digest>()
                .map(Reference::Digest)
                .map_err(|_| ParseNameError::Tag)
        } else {
            s.parse::<Tag>().map(Reference::Tag)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag(t) => t.fmt(f),
            Self::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_spec_names() {
        for ok in [
            "a",
            "library/alpine",
            "team-a/app/api",
            "a.b_c__d---e/f",
            "0x/1",
        ] {
            assert!(ok.parse::<RepoName>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_hostile_names() {
        let long = "a".repeat(256);
        for bad in [
            "", "..", "a/..", "a/../b", "%2e", "a/%2e%2e", "Upper", "a//b", "/a", "a/", "a___b",
            "a_", "-a", "a.", "a b", &long,
        ] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad:?}");
        }
        assert!("a".repeat(255).parse::<RepoName>().is_ok());
    }

    #[test]
    fn project_is_first_segment() {
        let n: RepoName = "team/app/api".parse().unwrap();
        assert_eq!(n.project(), "team");
    }

    #[test]
    fn tags() {
        assert!("latest".parse::<Tag>().is_ok());
        assert!("_x.Y-1".parse::<Tag>().is_ok());
        assert!("x".repeat(128).parse::<Tag>().is_ok());
        for bad in ["", ".a", "-a", "a/b", "a:b", &"x".repeat(129)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn references() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert!(matches!(d.parse::<Reference>(), Ok(Reference::Digest(_))));
        assert!(matches!("v1".parse::<Reference>(), Ok(Reference::Tag(_))));
        assert!("sha256:zz".parse::<Reference>().is_err());
    }
}
