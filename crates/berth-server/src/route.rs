//! Parsing `/v2` paths into typed endpoints. Repository names have several segments, so one
//! wildcard route takes every `/v2` path and this module finds the endpoint from the end.

use berth_core::Error;
use berth_oci::{Digest, Reference, RepoName};

/// A `/v2` endpoint with its parsed parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OciRoute {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(RepoName),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(RepoName, Reference),
    /// `/v2/<name>/blobs/<digest>`
    Blob(RepoName, Digest),
    /// `/v2/<name>/blobs/uploads/`
    UploadStart(RepoName),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(RepoName, String),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(RepoName, Digest),
}

impl OciRoute {
    /// A short, fixed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Base => "base",
            Self::Catalog => "catalog",
            Self::Tags(_) => "tags",
            Self::Manifest(..) => "manifest",
            Self::Blob(..) => "blob",
            Self::UploadStart(_) | Self::Upload(..) => "upload",
            Self::Referrers(..) => "referrers",
        }
    }
}

impl OciRoute {
    /// The token scope a request on this endpoint with `method` needs, for the
    /// `WWW-Authenticate` challenge (the registry service checks the grant itself). `None`
    /// for the base endpoint, which needs only a valid sign-in.
    pub fn scope(&self, method: &axum::http::Method) -> Option<berth_core::access::Scope> {
        use axum::http::Method;
        use berth_core::access::{RepoActions, Scope};
        let (name, actions) = match (self, method) {
            (Self::Base, _) => return None,
            (Self::Catalog, _) => return Some(Scope::Catalog),
            (Self::Manifest(n, _) | Self::Blob(n, _), &Method::DELETE) => (n, RepoActions::DELETE),
            (Self::Manifest(n, _), &Method::PUT)
            | (Self::UploadStart(n) | Self::Upload(n, _), _) => {
                (n, RepoActions::PULL.union(RepoActions::PUSH))
            }
            (
                Self::Tags(n) | Self::Manifest(n, _) | Self::Blob(n, _) | Self::Referrers(n, _),
                _,
            ) => (n, RepoActions::PULL),
        };
        Some(Scope::Repository {
            name: name.clone(),
            actions,
        })
    }
}

/// Why a path is not a `/v2` endpoint.
#[derive(Debug)]
pub enum RouteError {
    /// No endpoint has this shape.
    NotFound,
    /// The shape is right but a parameter is invalid.
    Invalid(Error),
}

fn name(s: &str) -> Result<RepoName, RouteError> {
    s.parse::<RepoName>().map_err(|e| {
        RouteError::Invalid(Error::NameInvalid(format!(
            "invalid repository name {s:?}: {e}"
        )))
    })
}

fn digest(s: &str) -> Result<Digest, RouteError> {
    s.parse::<Digest>().map_err(|e| {
        RouteError::Invalid(Error::DigestMalformed(format!("invalid digest {s:?}: {e}")))
    })
}

/// Parse the part of the path after `/v2/`.
///
/// # Errors
/// [`RouteError::NotFound`] for unknown shapes; [`RouteError::Invalid`] for bad parameters.
pub fn parse(rest: &str) -> Result<OciRoute, RouteError> {
    if rest.is_empty() {
        return Ok(OciRoute::Base);
    }
    if rest == "_catalog" {
        return Ok(OciRoute::Catalog);
    }
    if let Some(n) = rest.strip_suffix("/tags/list") {
        return Ok(OciRoute::Tags(name(n)?));
    }
    if let Some(n) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return Ok(OciRoute::UploadStart(name(n)?));
    }
    let (head, last) = rest.rsplit_once('/').ok_or(RouteError::NotFound)?;
    let (n, kind) = head.rsplit_once('/').ok_or(RouteError::NotFound)?;
    match kind {
        "manifests" => {
            let repo = name(n)?;
            let reference = last.parse::<Reference>().map_err(|_| {
                RouteError::Invalid(if last.contains(':') {
                    Error::DigestMalformed(format!("invalid digest {last:?}"))
                } else {
                    Error::TagInvalid(format!(
                        "invalid tag {last:?}: tags match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}"
                    ))
                })
            })?;
            Ok(OciRoute::Manifest(repo, reference))
        }
        "blobs" => Ok(OciRoute::Blob(name(n)?, digest(last)?)),
        "referrers" => Ok(OciRoute::Referrers(name(n)?, digest(last)?)),
        "uploads" => {
            let (n, blobs) = n.rsplit_once('/').ok_or(RouteError::NotFound)?;
            if blobs != "blobs" || last.is_empty() {
                return Err(RouteError::NotFound);
            }
            Ok(OciRoute::Upload(name(n)?, last.to_owned()))
        }
        _ => Err(RouteError::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> OciRoute {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e:?}"))
    }

    #[test]
    fn parses_every_endpoint() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(ok(""), OciRoute::Base);
        assert_eq!(ok("_catalog"), OciRoute::Catalog);
        assert!(matches!(ok("a/b/tags/list"), OciRoute::Tags(n) if n.as_str() == "a/b"));
        assert!(
            matches!(ok("a/b/c/manifests/latest"), OciRoute::Manifest(n, Reference::Tag(_)) if n.as_str() == "a/b/c")
        );
        assert!(matches!(
            ok(&format!("a/manifests/{d}")),
            OciRoute::Manifest(_, Reference::Digest(_))
        ));
        assert!(matches!(ok(&format!("a/blobs/{d}")), OciRoute::Blob(..)));
        assert!(
            matches!(ok("a/b/blobs/uploads/"), OciRoute::UploadStart(n) if n.as_str() == "a/b")
        );
        assert!(
            matches!(ok("a/blobs/uploads/1234-abcd"), OciRoute::Upload(_, id) if id == "1234-abcd")
        );
        assert!(matches!(
            ok(&format!("a/referrers/{d}")),
            OciRoute::Referrers(..)
        ));
        // Names may contain the words the endpoints use.
        assert!(
            matches!(ok("blobs/manifests/tags/list"), OciRoute::Tags(n) if n.as_str() == "blobs/manifests")
        );
        assert!(
            matches!(ok(&format!("x/blobs/blobs/{d}")), OciRoute::Blob(n, _) if n.as_str() == "x/blobs")
        );
    }

    #[test]
    fn rejects_bad_parameters() {
        for bad in [
            "../x/tags/list",
            "A/tags/list",
            "%2e%2e/manifests/x",
            "a/manifests/-bad",
            "a/blobs/sha256:zz",
        ] {
            assert!(matches!(parse(bad), Err(RouteError::Invalid(_))), "{bad}");
        }
        for unknown in ["a", "a/b", "a/unknown/x", "a/uploads/x"] {
            assert!(
                matches!(parse(unknown), Err(RouteError::NotFound)),
                "{unknown}"
            );
        }
    }
}
