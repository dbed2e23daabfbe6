//! Fuzz the name grammar: `RepoName`, `Tag`, `Digest` and `Reference` parsing.
//!
//! Input: the bytes, if UTF-8, are parsed as every kind of name.
//!
//! Invariants, beyond "never panics":
//! - an accepted repository name is at most 255 bytes and can't escape a path or smuggle
//!   anything: no "..", no uppercase, no '%', no empty segment, no leading or trailing '/',
//!   only `[a-z0-9._/-]`; its project is its first, non-empty segment;
//! - an accepted tag is 1..=128 characters of `[A-Za-z0-9_.-]` and does not start with '.' or '-';
//! - an accepted digest is `sha256:`/`sha512:` plus lowercase hex of the right length;
//! - a reference is a digest exactly when it contains ':';
//! - Display round-trips for all four: printing then parsing gives the same value, and the
//!   printed form is the input.
#![no_main]

use berth_oci::{Digest, Reference, RepoName, Tag};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(name) = s.parse::<RepoName>() {
        let n = name.as_str();
        assert!(n.len() <= 255, "accepted a {}-byte name", n.len());
        assert!(!n.is_empty());
        assert!(!n.contains(".."), "accepted {n:?}");
        assert!(!n.contains('%'), "accepted {n:?}");
        assert!(!n.chars().any(|c| c.is_uppercase()), "accepted {n:?}");
        assert!(
            n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._/-".contains(&b)),
            "accepted {n:?}"
        );
        assert!(n
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != ".."));
        assert!(!name.project().is_empty());
        assert!(n.starts_with(name.project()));
        assert_eq!(name.to_string(), s);
        assert_eq!(name.to_string().parse::<RepoName>(), Ok(name.clone()));
    }

    if let Ok(tag) = s.parse::<Tag>() {
        let t = tag.as_str();
        assert!(
            (1..=128).contains(&t.len()),
            "accepted a {}-byte tag",
            t.len()
        );
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)));
        assert!(!t.starts_with(['.', '-']));
        assert_eq!(tag.to_string(), s);
        assert_eq!(tag.to_string().parse::<Tag>(), Ok(tag.clone()));
    }

    if let Ok(d) = s.parse::<Digest>() {
        let (alg, hex) = s.split_once(':').expect("accepted digest without ':'");
        assert_eq!(alg, d.algorithm().as_str());
        assert_eq!(hex, d.hex());
        assert_eq!(hex.len(), d.algorithm().hex_len());
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(d.to_string(), s);
        assert_eq!(d.to_string().parse::<Digest>(), Ok(d.clone()));
    }

    if let Ok(r) = s.parse::<Reference>() {
        assert_eq!(matches!(r, Reference::Digest(_)), s.contains(':'));
        assert_eq!(r.to_string(), s);
        assert_eq!(r.to_string().parse::<Reference>(), Ok(r.clone()));
    }
});
