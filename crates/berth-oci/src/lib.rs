//! Pure OCI types for Berth: no I/O lives here, which is what makes this crate the one we fuzz.
//!
//! - [`Digest`] and [`DigestAlgorithm`]: content addresses and the hashers that verify them.
//! - [`RepoName`], [`Tag`], [`Reference`]: the names of the distribution spec's grammar.
//! - [`manifest`]: parsing and validating image manifests, indexes and artifacts.
//! - [`range`]: the `Range` and `Content-Range` header parsers.
//! - [`ErrorCode`]: the spec's error codes.

mod digest;
mod error;
pub mod manifest;
pub mod media;
mod name;
pub mod range;
pub mod scope;

pub use digest::{Digest, DigestAlgorithm, Hasher, ParseDigestError};
pub use error::ErrorCode;
pub use name::{ParseNameError, Reference, RepoName, Tag};
