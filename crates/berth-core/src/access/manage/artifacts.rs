//! Changes to what projects hold: deleting repositories and artifacts, adding and removing
//! tags. Each checks Harbor's permission for it, then goes through the [`Registry`], so a
//! change made here is the same transaction and audit event as the same change over /v2.

use berth_meta::Project;
use berth_oci::scope::Scope;
use berth_oci::{Digest, Reference, RepoName, Tag};

use super::{Admin, ArtifactRef, Caller, ProjectRef};
use crate::access::{Action, Actor, Permission, RepoActions, Resource};
use crate::{Error, Registry};

/// `who` as a registry actor granted `actions` on `repo` alone: the management permission
/// was checked first, the registry checks the grant again.
fn actor(who: &Caller, repo: &RepoName, actions: RepoActions) -> Actor {
    let scope = Scope::Repository {
        name: repo.clone(),
        actions,
    };
    Actor::with_grants(who.principal.clone(), vec![scope], who.source)
}

fn tag(name: &str) -> Result<Tag, Error> {
    name.parse()
        .map_err(|e| Error::Invalid(format!("tag {name:?}: {e}")))
}

impl Admin {
    /// Project `project` if the caller holds `resource:action` in it, and repository `repo`
    /// (named inside it) as a full repository name.
    async fn repo_for(
        &self,
        who: &Caller,
        project: &ProjectRef,
        repo: &str,
        resource: Resource,
        action: Action,
    ) -> Result<(Project, RepoName), Error> {
        let p = self
            .project_for(who, project, Permission::new(resource, action))
            .await?;
        let name = format!("{}/{repo}", p.name)
            .parse()
            .map_err(|e| Error::Invalid(format!("repository name: {e}")))?;
        Ok((p, name))
    }

    /// Delete a repository with all its artifacts and tags (needs `repository:delete`).
    ///
    /// # Errors
    /// As [`Access::require`](crate::Access::require); [`Error::NotFound`].
    pub async fn delete_repository(
        &self,
        who: &Caller,
        registry: &Registry,
        project: &ProjectRef,
        repo: &str,
    ) -> Result<(), Error> {
        let (_, name) = self
            .repo_for(who, project, repo, Resource::Repository, Action::Delete)
            .await?;
        registry
            .delete_repository(&actor(who, &name, RepoActions::DELETE), &name)
            .await
            .map_err(|e| match e {
                Error::NameUnknown(_) => {
                    Error::NotFound(format!("repository {name} does not exist"))
                }
                e => e,
            })
    }

    /// Delete an artifact, named by digest or by one of its tags, with all its tags (needs
    /// `artifact:delete`).
    ///
    /// # Errors
    /// As [`Access::require`](crate::Access::require); [`Error::NotFound`].
    pub async fn delete_artifact(
        &self,
        who: &Caller,
        registry: &Registry,
        project: &ProjectRef,
        repo: &str,
        reference: &ArtifactRef,
    ) -> Result<(), Error> {
        let (p, name) = self
            .repo_for(who, project, repo, Resource::Artifact, Action::Delete)
            .await?;
        let art = self.find_artifact(&p, repo, reference).await?;
        registry
            .delete_manifest(
                &actor(who, &name, RepoActions::DELETE),
                &name,
                &Reference::Digest(art.digest),
            )
            .await
    }

    /// The tags of an artifact, by name (needs `tag:list`).
    ///
    /// # Errors
    /// As [`Access::require`](crate::Access::require); [`Error::NotFound`].
    pub async fn list_tags(
        &self,
        who: &Caller,
        project: &ProjectRef,
        repo: &str,
        reference: &ArtifactRef,
    ) -> Result<Vec<(String, i64)>, Error> {
        let p = self
            .project_for(who, project, Permission::new(Resource::Tag, Action::List))
            .await?;
        let mut tags = self.find_artifact(&p, repo, reference).await?.tags;
        tags.sort();
        Ok(tags)
    }

    /// Add tag `name` to an artifact (needs `tag:create`); returns the artifact's digest.
    ///
    /// # Errors
    /// As [`Access::require`](crate::Access::require); [`Error::NotFound`];
    /// [`Error::Conflict`] if the tag exists in the repository; [`Error::Invalid`] for a
    /// malformed tag.
    pub async fn create_tag(
        &self,
        who: &Caller,
        registry: &Registry,
        project: &ProjectRef,
        repo: &str,
        reference: &ArtifactRef,
        name: &str,
    ) -> Result<Digest, Error> {
        let (p, repo_name) = self
            .repo_for(who, project, repo, Resource::Tag, Action::Create)
            .await?;
        let new = tag(name)?;
        let art = self.find_artifact(&p, repo, reference).await?;
        registry
            .add_tag(
                &actor(who, &repo_name, RepoActions::PUSH),
                &repo_name,
                &art.digest,
                &new,
            )
            .await?;
        Ok(art.digest)
    }

    /// Remove tag `name` from an artifact; the artifact stays (needs `tag:delete`).
    ///
    /// # Errors
    /// As [`Access::require`](crate::Access::require); [`Error::NotFound`] if the artifact
    /// does not carry that tag.
    pub async fn delete_tag(
        &self,
        who: &Caller,
        registry: &Registry,
        project: &ProjectRef,
        repo: &str,
        reference: &ArtifactRef,
        name: &str,
    ) -> Result<(), Error> {
        let (p, repo_name) = self
            .repo_for(who, project, repo, Resource::Tag, Action::Delete)
            .await?;
        let art = self.find_artifact(&p, repo, reference).await?;
        if !art.tags.iter().any(|(t, _)| t == name) {
            return Err(Error::NotFound(format!(
                "artifact {} has no tag {name}",
                art.digest
            )));
        }
        registry
            .delete_manifest(
                &actor(who, &repo_name, RepoActions::DELETE),
                &repo_name,
                &Reference::Tag(tag(name)?),
            )
            .await
    }
}
