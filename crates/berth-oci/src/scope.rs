//! Scopes of the Docker registry token specification: what a client asks the token service
//! for (`scope=repository:team-a/app:pull,push`) and what a token grants (its `access`
//! claim).
//!
//! Grammar (distribution's `docs/spec/auth/scope.md`): `type[(class)]:name:action[,action]*`.
//! The name may itself hold colons (a `host:port/` prefix), so the type ends at the first
//! colon and the actions start after the last. Anything Berth does not know (another
//! resource type, an unknown action, a malformed repository name) grants nothing and is
//! dropped, never an error: the token service answers with what it can grant.

use crate::RepoName;

/// Actions on a repository, as a small set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RepoActions(u8);

impl RepoActions {
    /// No action.
    pub const NONE: RepoActions = RepoActions(0);
    /// Read manifests and blobs.
    pub const PULL: RepoActions = RepoActions(1);
    /// Upload blobs, put manifests and tags.
    pub const PUSH: RepoActions = RepoActions(2);
    /// Delete manifests, tags and blobs.
    pub const DELETE: RepoActions = RepoActions(4);
    /// Everything (`*`).
    pub const ALL: RepoActions = RepoActions(7);

    /// Whether every action of `other` is in `self`.
    pub fn contains(self, other: RepoActions) -> bool {
        self.0 & other.0 == other.0
    }

    /// Both sets together.
    #[must_use]
    pub fn union(self, other: RepoActions) -> RepoActions {
        RepoActions(self.0 | other.0)
    }

    /// What both sets hold.
    #[must_use]
    pub fn intersect(self, other: RepoActions) -> RepoActions {
        RepoActions(self.0 & other.0)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The action named `s` (`pull`, `push`, `delete`, `*`).
    pub fn parse_one(s: &str) -> Option<RepoActions> {
        match s {
            "pull" => Some(Self::PULL),
            "push" => Some(Self::PUSH),
            "delete" => Some(Self::DELETE),
            "*" => Some(Self::ALL),
            _ => None,
        }
    }

    /// The names of the actions in the set, in a fixed order.
    pub fn names(self) -> Vec<&'static str> {
        [
            (Self::PULL, "pull"),
            (Self::PUSH, "push"),
            (Self::DELETE, "delete"),
        ]
        .into_iter()
        .filter(|(a, _)| self.contains(*a))
        .map(|(_, n)| n)
        .collect()
    }
}

/// One scope a client asks for or a token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Actions on one repository.
    Repository {
        /// The repository.
        name: RepoName,
        /// The actions.
        actions: RepoActions,
    },
    /// Listing the catalog (`registry:catalog:*`).
    Catalog,
}

impl Scope {
    /// Parse one scope; `None` for anything that grants nothing.
    pub fn parse(s: &str) -> Option<Scope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        Self::from_parts(kind, name, actions.split(','))
    }

    /// The scope of resource type `kind` (a class such as `repository(plugin)` names the same
    /// resource), resource `name` and `actions`, as a token's `access` claim lists them;
    /// `None` for anything that grants nothing.
    pub fn from_parts<'a>(
        kind: &str,
        name: &str,
        actions: impl IntoIterator<Item = &'a str>,
    ) -> Option<Scope> {
        let kind = kind.split_once('(').map_or(kind, |(k, _)| k);
        match kind {
            "repository" => {
                let name: RepoName = name.parse().ok()?;
                let actions = actions
                    .into_iter()
                    .filter_map(RepoActions::parse_one)
                    .fold(RepoActions::NONE, RepoActions::union);
                (!actions.is_empty()).then_some(Scope::Repository { name, actions })
            }
            "registry" if name == "catalog" && actions.into_iter().any(|a| a == "*") => {
                Some(Scope::Catalog)
            }
            _ => None,
        }
    }

    /// Parse every scope in `values` (each may hold several, separated by spaces), merging
    /// the actions asked for the same repository.
    pub fn parse_all<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Scope> {
        let mut out: Vec<Scope> = Vec::new();
        for scope in values
            .into_iter()
            .flat_map(str::split_whitespace)
            .filter_map(Scope::parse)
        {
            match scope {
                Scope::Repository { name, actions } => {
                    let existing = out.iter_mut().find_map(|s| match s {
                        Scope::Repository { name: n, actions } if *n == name => Some(actions),
                        _ => None,
                    });
                    match existing {
                        Some(a) => *a = a.union(actions),
                        None => out.push(Scope::Repository { name, actions }),
                    }
                }
                Scope::Catalog if !out.contains(&Scope::Catalog) => out.push(Scope::Catalog),
                Scope::Catalog => {}
            }
        }
        out
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Repository { name, actions } => {
                write!(f, "repository:{}:{}", name, actions.names().join(","))
            }
            Scope::Catalog => f.write_str("registry:catalog:*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(name: &str, actions: RepoActions) -> Scope {
        Scope::Repository {
            name: name.parse().expect("valid"),
            actions,
        }
    }

    #[test]
    fn parses_the_spec_examples() {
        assert_eq!(
            Scope::parse("repository:samalba/my-app:pull,push"),
            Some(repo(
                "samalba/my-app",
                RepoActions::PULL.union(RepoActions::PUSH)
            ))
        );
        assert_eq!(
            Scope::parse("repository(plugin):a/b:pull"),
            Some(repo("a/b", RepoActions::PULL))
        );
        assert_eq!(
            Scope::parse("repository:a/b:*"),
            Some(repo("a/b", RepoActions::ALL))
        );
        assert_eq!(Scope::parse("registry:catalog:*"), Some(Scope::Catalog));
    }

    #[test]
    fn drops_what_grants_nothing() {
        for s in [
            "",
            "repository",
            "repository:a/b",
            "repository:a/b:",
            "repository:a/b:fly",
            "repository:A/B:pull",
            "repository:../etc:pull",
            "registry:catalog:pull",
            "registry:other:*",
            "user:admin:*",
        ] {
            assert_eq!(Scope::parse(s), None, "{s:?}");
        }
        // Unknown actions are dropped, known ones kept.
        assert_eq!(
            Scope::parse("repository:a/b:fly,pull"),
            Some(repo("a/b", RepoActions::PULL))
        );
    }

    #[test]
    fn merges_repeated_repositories() {
        let all = Scope::parse_all([
            "repository:a/b:pull repository:c/d:push",
            "repository:a/b:delete",
        ]);
        assert_eq!(
            all,
            vec![
                repo("a/b", RepoActions::PULL.union(RepoActions::DELETE)),
                repo("c/d", RepoActions::PUSH)
            ]
        );
    }

    #[test]
    fn display_round_trips() {
        let s = repo("a/b", RepoActions::ALL);
        assert_eq!(s.to_string(), "repository:a/b:pull,push,delete");
        assert_eq!(Scope::parse(&s.to_string()), Some(s));
    }
}
