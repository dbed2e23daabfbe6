//! Tag immutability: per-project rules (Harbor's shape: repository and tag selectors) that
//! make matching tags impossible to move or delete, by anyone, system administrators
//! included. A tag a rule matches may be created, and pushed again onto the same manifest;
//! it may not be pointed at another manifest (checked in the manifest's transaction, see
//! [`berth_meta::NewManifest::pinned_tags`]), deleted, or taken away with its manifest or
//! its repository. Rules are managed through [`crate::Admin`].

use std::sync::Arc;

use berth_meta::{ImmutableRule, MetaError, TagGuard};
use berth_oci::{Digest, RepoName, Tag};
use serde::{Deserialize, Serialize};

use crate::selector::{name_in_project, ScopeSelectors, Selection, Selector};
use crate::{Error, Registry};

/// What a rule selects, as stored (JSON) and as the API carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSelectors {
    /// Which tags.
    #[serde(default)]
    pub tag_selectors: Vec<Selector>,
    /// Which repositories.
    #[serde(default)]
    pub scope_selectors: ScopeSelectors,
}

impl RuleSelectors {
    /// Compile them.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad selector.
    pub fn selection(&self) -> Result<Selection, Error> {
        Selection::new(&self.scope_selectors, &self.tag_selectors)
    }

    /// Read the selectors of a stored rule.
    ///
    /// # Errors
    /// [`Error::Internal`] if they are not what Berth stored.
    pub fn of(rule: &ImmutableRule) -> Result<Self, Error> {
        serde_json::from_str(&rule.selectors)
            .map_err(|e| Error::Internal(format!("immutable rule {}: {e}", rule.id)))
    }
}

/// The enabled rules of a project, compiled.
struct Rules(Vec<(i64, Selection)>);

impl Rules {
    /// Whether any rule selects `repo` at all (else none of its tags is immutable).
    fn cover(&self, repo: &RepoName) -> bool {
        let name = name_in_project(repo.as_str());
        self.0.iter().any(|(_, s)| s.selects_repo(name))
    }

    /// The rule that makes `tag` of `repo` immutable, if any.
    fn protecting(&self, repo: &RepoName, tag: &str) -> Option<i64> {
        let name = name_in_project(repo.as_str());
        self.0
            .iter()
            .find(|(_, s)| s.selects_repo(name) && s.selects_tag(tag))
            .map(|(id, _)| *id)
    }
}

/// The immutability rules of one repository, compiled ([`Registry::repo_immutability`]).
pub(crate) struct RepoImmutability {
    repo: RepoName,
    rules: Rules,
}

impl RepoImmutability {
    /// The rule that makes `tag` immutable, if any.
    pub(crate) fn protecting(&self, tag: &str) -> Option<i64> {
        self.rules.protecting(&self.repo, tag)
    }
}

fn refusal(repo: &RepoName, tag: &str, rule: i64) -> Error {
    Error::Denied(format!(
        "tag {repo}:{tag} is immutable (rule {rule} of project {}): it cannot be moved or deleted",
        repo.project()
    ))
}

impl Registry {
    /// The enabled immutability rules of `repo`'s project, if it has any.
    async fn immutability(&self, repo: &RepoName) -> Result<Option<Rules>, Error> {
        let rules = self.meta.immutable_rules(repo.project()).await?;
        let mut compiled = Vec::new();
        for r in rules.iter().filter(|r| !r.disabled) {
            compiled.push((r.id, RuleSelectors::of(r)?.selection()?));
        }
        Ok((!compiled.is_empty()).then_some(Rules(compiled)))
    }

    /// Which of `tags` (about to be put in `repo`) are immutable.
    pub(crate) async fn immutable_among(
        &self,
        repo: &RepoName,
        tags: &[Tag],
    ) -> Result<Vec<String>, Error> {
        if tags.is_empty() {
            return Ok(Vec::new());
        }
        let Some(rules) = self.immutability(repo).await? else {
            return Ok(Vec::new());
        };
        Ok(tags
            .iter()
            .filter(|t| rules.protecting(repo, t.as_str()).is_some())
            .map(|t| t.as_str().to_owned())
            .collect())
    }

    /// Refuse to delete `tag` of `repo` if it is immutable.
    pub(crate) async fn refuse_immutable_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<(), Error> {
        if let Some(rules) = self.immutability(repo).await? {
            if let Some(rule) = rules.protecting(repo, tag.as_str()) {
                return Err(refusal(repo, tag.as_str(), rule));
            }
        }
        Ok(())
    }

    /// Refuse to delete manifest `digest` of `repo` if an immutable tag points at it.
    pub(crate) async fn refuse_immutable_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<(), Error> {
        let Some(rules) = self.immutability(repo).await? else {
            return Ok(());
        };
        for tag in self.meta.tags_of(repo, digest).await? {
            if let Some(rule) = rules.protecting(repo, &tag) {
                return Err(refusal(repo, &tag, rule));
            }
        }
        Ok(())
    }

    /// The immutability of `repo`'s tags, read once to ask of many tags (retention judges
    /// a whole repository at a time); `None` when its project has no enabled rule.
    pub(crate) async fn repo_immutability(
        &self,
        repo: &RepoName,
    ) -> Result<Option<RepoImmutability>, Error> {
        Ok(self
            .immutability(repo)
            .await?
            .map(|rules| RepoImmutability {
                repo: repo.clone(),
                rules,
            }))
    }

    /// The enabled rules of `repo`'s project, if any of them selects `repo` (a delete then
    /// needs its tags judged; otherwise it need not read them).
    async fn covering_rules(&self, repo: &RepoName) -> Result<Option<Arc<Rules>>, Error> {
        Ok(self
            .immutability(repo)
            .await?
            .filter(|r| r.cover(repo))
            .map(Arc::new))
    }

    /// Delete manifest `digest` of `repo` with its tags, unless one of them is immutable.
    /// The tags are judged inside the delete's transaction, so a push that tags the manifest
    /// at the same moment cannot have its immutable tag taken away with it. Returns whether
    /// the manifest existed.
    pub(crate) async fn delete_manifest_unless_immutable(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<bool, Error> {
        let rules = self.covering_rules(repo).await?;
        let keep = rules.as_ref().map(|r| guard(repo, r));
        match self.meta.delete_manifest_keeping(repo, digest, keep).await {
            Err(MetaError::TagImmutable(tag)) => Err(refused(repo, &tag, rules.as_deref())),
            other => Ok(other?),
        }
    }

    /// Delete `repo` with all it holds, unless it holds an immutable tag (judged inside the
    /// delete's transaction, as in [`Registry::delete_manifest_unless_immutable`]). Returns
    /// whether the repository existed.
    pub(crate) async fn delete_repository_unless_immutable(
        &self,
        repo: &RepoName,
    ) -> Result<bool, Error> {
        let rules = self.covering_rules(repo).await?;
        let keep = rules.as_ref().map(|r| guard(repo, r));
        match self.meta.delete_repository_keeping(repo, keep).await {
            Err(MetaError::TagImmutable(tag)) => Err(refused(repo, &tag, rules.as_deref())),
            other => Ok(other?),
        }
    }
}

/// The tags of `repo` that `rules` make immutable, as a metadata delete asks.
fn guard(repo: &RepoName, rules: &Arc<Rules>) -> TagGuard {
    let (repo, rules) = (repo.clone(), Arc::clone(rules));
    Arc::new(move |tag: &str| rules.protecting(&repo, tag).is_some())
}

/// The refusal of a delete that would have taken immutable `tag`.
fn refused(repo: &RepoName, tag: &str, rules: Option<&Rules>) -> Error {
    match rules.and_then(|r| r.protecting(repo, tag)) {
        Some(rule) => refusal(repo, tag, rule),
        None => MetaError::TagImmutable(tag.to_owned()).into(),
    }
}
