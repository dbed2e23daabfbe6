//! Harbor's selectors: which repositories and tags a tag immutability rule or a retention
//! rule applies to.
//!
//! A selector is a `doublestar` pattern with a decoration: `repoMatches` or `repoExcludes`
//! for repositories, `matches` or `excludes` for tags. Patterns are globs: `*` is any run of
//! characters but `/`, `**` any run of path segments, `?` one character, `[a-z]` a class and
//! `{a,b}` alternatives. Repository patterns match the repository's name within its project
//! (`app/web` for `library/app/web`), as Harbor's do. Several selectors of one kind must all
//! match; none matches everything. A tag selector's `extras` may be `{"untagged":true}`: the
//! rule then also selects artifacts without tags (retention only).

use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};

use crate::Error;

/// One selector, as Harbor's API carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    /// Always `doublestar`.
    #[serde(default = "doublestar")]
    pub kind: String,
    /// `repoMatches`, `repoExcludes` (repositories), `matches` or `excludes` (tags).
    pub decoration: String,
    /// The glob.
    pub pattern: String,
    /// For tag selectors: JSON text, `{"untagged":true}` to also select untagged artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extras: Option<String>,
}

fn doublestar() -> String {
    "doublestar".into()
}

/// The scope of a rule (Harbor's `scope_selectors`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeSelectors {
    /// Repository selectors.
    #[serde(default)]
    pub repository: Vec<Selector>,
}

/// Longest pattern accepted.
const MAX_PATTERN: usize = 256;

/// A compiled selector.
#[derive(Debug, Clone)]
struct Matcher {
    glob: GlobMatcher,
    exclude: bool,
}

impl Matcher {
    fn new(s: &Selector, include: &str, exclude: &str) -> Result<Self, Error> {
        if s.kind != "doublestar" {
            return Err(Error::Invalid(format!(
                "selector kind {:?} is not supported: use \"doublestar\"",
                s.kind
            )));
        }
        let exclude = match s.decoration.as_str() {
            d if d == include => false,
            d if d == exclude => true,
            d => {
                return Err(Error::Invalid(format!(
                    "selector decoration {d:?} must be {include:?} or {exclude:?}"
                )))
            }
        };
        if s.pattern.is_empty() || s.pattern.len() > MAX_PATTERN {
            return Err(Error::Invalid(format!(
                "a selector pattern must have 1 to {MAX_PATTERN} characters"
            )));
        }
        let glob = GlobBuilder::new(&s.pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| Error::Invalid(format!("selector pattern {:?}: {e}", s.pattern)))?
            .compile_matcher();
        Ok(Self { glob, exclude })
    }

    fn matches(&self, name: &str) -> bool {
        self.glob.is_match(name) != self.exclude
    }
}

/// The repositories and tags a rule selects.
#[derive(Debug, Clone)]
pub struct Selection {
    repos: Vec<Matcher>,
    tags: Vec<Matcher>,
    untagged: bool,
}

impl Selection {
    /// Compile a rule's selectors.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an unknown kind or decoration, a bad glob, or bad extras.
    pub fn new(scope: &ScopeSelectors, tags: &[Selector]) -> Result<Self, Error> {
        let repos = scope
            .repository
            .iter()
            .map(|s| Matcher::new(s, "repoMatches", "repoExcludes"))
            .collect::<Result<_, _>>()?;
        let mut untagged = false;
        for s in tags {
            if let Some(extras) = s.extras.as_deref().filter(|e| !e.trim().is_empty()) {
                let v: serde_json::Value = serde_json::from_str(extras).map_err(|e| {
                    Error::Invalid(format!("selector extras must be JSON text: {e}"))
                })?;
                untagged |= v.get("untagged").and_then(serde_json::Value::as_bool) == Some(true);
            }
        }
        let tags = tags
            .iter()
            .map(|s| Matcher::new(s, "matches", "excludes"))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            repos,
            tags,
            untagged,
        })
    }

    /// Whether it selects repository `name` (within its project: no project segment).
    pub fn selects_repo(&self, name: &str) -> bool {
        self.repos.iter().all(|m| m.matches(name))
    }

    /// Whether it selects tag `tag`.
    pub fn selects_tag(&self, tag: &str) -> bool {
        self.tags.iter().all(|m| m.matches(tag))
    }

    /// Whether it selects untagged artifacts too.
    pub fn untagged(&self) -> bool {
        self.untagged
    }
}

/// The name of `repo` within its project: what repository selectors match.
pub fn name_in_project(repo: &str) -> &str {
    repo.split_once('/').map_or(repo, |(_, rest)| rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(decoration: &str, pattern: &str) -> Selector {
        Selector {
            kind: "doublestar".into(),
            decoration: decoration.into(),
            pattern: pattern.into(),
            extras: None,
        }
    }

    fn selection(repos: &[Selector], tags: &[Selector]) -> Selection {
        Selection::new(
            &ScopeSelectors {
                repository: repos.to_vec(),
            },
            tags,
        )
        .unwrap()
    }

    #[test]
    fn globs_follow_doublestar() {
        let s = selection(&[sel("repoMatches", "app/*")], &[sel("matches", "v1.*")]);
        assert!(s.selects_repo("app/web"));
        assert!(!s.selects_repo("app/web/x"), "* stops at /");
        assert!(!s.selects_repo("lib"));
        assert!(s.selects_tag("v1.2"));
        assert!(!s.selects_tag("v2.0"));
        let s = selection(
            &[sel("repoMatches", "**")],
            &[sel("matches", "{latest,stable}")],
        );
        assert!(s.selects_repo("a/b/c") && s.selects_repo("a"));
        assert!(s.selects_tag("latest") && s.selects_tag("stable") && !s.selects_tag("dev"));
        let s = selection(
            &[sel("repoMatches", "**/web")],
            &[sel("matches", "release-?")],
        );
        assert!(s.selects_repo("a/b/web") && s.selects_repo("web"));
        assert!(s.selects_tag("release-1") && !s.selects_tag("release-10"));
    }

    #[test]
    fn excludes_invert_and_selectors_combine() {
        let s = selection(
            &[sel("repoExcludes", "tmp/**")],
            &[sel("excludes", "*-dev"), sel("matches", "v*")],
        );
        assert!(s.selects_repo("app") && !s.selects_repo("tmp/x"));
        assert!(s.selects_tag("v1") && !s.selects_tag("v1-dev") && !s.selects_tag("latest"));
        let all = selection(&[], &[]);
        assert!(all.selects_repo("x/y") && all.selects_tag("anything") && !all.untagged());
        assert_eq!(name_in_project("library/app/web"), "app/web");
    }

    #[test]
    fn bad_selectors_are_refused() {
        let scope = ScopeSelectors::default();
        for bad in [
            sel("sometimes", "*"),
            sel("matches", ""),
            sel("matches", "[a-"),
            sel("matches", &"x".repeat(300)),
            Selector {
                kind: "regex".into(),
                ..sel("matches", "*")
            },
            Selector {
                extras: Some("{untagged".into()),
                ..sel("matches", "*")
            },
        ] {
            assert!(
                matches!(
                    Selection::new(&scope, std::slice::from_ref(&bad)),
                    Err(Error::Invalid(_))
                ),
                "{bad:?}"
            );
        }
        let repo_decoration_on_tags = sel("repoMatches", "*");
        assert!(Selection::new(&scope, &[repo_decoration_on_tags]).is_err());
        let untagged = Selector {
            extras: Some(r#"{"untagged":true}"#.into()),
            ..sel("matches", "**")
        };
        assert!(Selection::new(&scope, &[untagged]).unwrap().untagged());
    }
}
