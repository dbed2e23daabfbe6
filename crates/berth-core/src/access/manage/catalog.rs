//! What projects hold (repositories, artifacts), search, statistics and the audit log.

use berth_meta::{
    ArtifactInfo, AuditEvent, AuditFilter, Listing, Paging, Project, ProjectFilter, RepositoryInfo,
    Statistics,
};
use berth_oci::Digest;

use super::{Admin, Caller, ProjectRef, ProjectView, SearchResult};
use crate::access::{Action, Permission, Resource};
use crate::Error;

/// How a request names an artifact: by digest or by tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactRef {
    /// By digest.
    Digest(Digest),
    /// By tag.
    Tag(String),
}

impl ArtifactRef {
    /// A digest if `s` parses as one, else a tag.
    pub fn parse(s: &str) -> Self {
        s.parse::<Digest>()
            .map_or_else(|_| Self::Tag(s.to_owned()), Self::Digest)
    }
}

/// Most repositories a search returns.
const SEARCH_LIMIT: u64 = 100;

impl Admin {
    /// The repositories of a project whose name (after the project's) contains
    /// `name_contains` (needs `repository:list`).
    ///
    /// # Errors
    /// As [`Access::require`](crate::Access::require).
    pub async fn list_repositories(
        &self,
        who: &Caller,
        project: &ProjectRef,
        name_contains: Option<&str>,
        page: Paging,
    ) -> Result<(Project, Listing<RepositoryInfo>), Error> {
        let p = self
            .project_for(
                who,
                project,
                Permission::new(Resource::Repository, Action::List),
            )
            .await?;
        let repos = self
            .access
            .store()
            .list_project_repositories(&p.name, name_contains, page)
            .await?;
        Ok((p, repos))
    }

    /// One repository, `repo` being its name inside the project (needs `repository:read`).
    ///
    /// # Errors
    /// As [`Access::require`](crate::Access::require); [`Error::NotFound`].
    pub async fn repository(
        &self,
        who: &Caller,
        project: &ProjectRef,
        repo: &str,
    ) -> Result<(Project, RepositoryInfo), Error> {
        let p = self
            .project_for(
                who,
                project,
                Permission::new(Resource::Repository, Action::Read),
            )
            .await?;
        let full = format!("{}/{repo}", p.name);
        let found = self
            .access
            .store()
            .list_project_repositories(&p.name, Some(repo), Paging::ALL)
            .await?
            .items
            .into_iter()
            .find(|r| r.name == full)
            .ok_or_else(|| Error::NotFound(format!("repository {full} does not exist")))?;
        Ok((p, found))
    }

    /// The artifacts of a repository, newest first (needs `artifact:list`).
    ///
    /// # Errors
    /// As [`Access::require`](crate::Access::require); [`Error::NotFound`].
    pub async fn list_artifacts(
        &self,
        who: &Caller,
        project: &ProjectRef,
        repo: &str,
        page: Paging,
    ) -> Result<(Project, Listing<ArtifactInfo>), Error> {
        let p = self
            .project_for(
                who,
                project,
                Permission::new(Resource::Artifact, Action::List),
            )
            .await?;
        let full = format!("{}/{repo}", p.name);
        let listing = self
            .access
            .store()
            .list_artifacts(&full, page)
            .await?
            .ok_or_else(|| Error::NotFound(format!("repository {full} does not exist")))?;
        Ok((p, listing))
    }

    /// One artifact, by digest or tag (needs `artifact:read`).
    ///
    /// # Errors
    /// As [`Access::require`](crate::Access::require); [`Error::NotFound`].
    pub async fn artifact(
        &self,
        who: &Caller,
        project: &ProjectRef,
        repo: &str,
        reference: &ArtifactRef,
    ) -> Result<(Project, ArtifactInfo), Error> {
        let p = self
            .project_for(
                who,
                project,
                Permission::new(Resource::Artifact, Action::Read),
            )
            .await?;
        let art = self.find_artifact(&p, repo, reference).await?;
        Ok((p, art))
    }

    /// The artifact `reference` names in repository `repo` of project `p`.
    ///
    /// # Errors
    /// [`Error::NotFound`]; store errors.
    pub(super) async fn find_artifact(
        &self,
        p: &Project,
        repo: &str,
        reference: &ArtifactRef,
    ) -> Result<ArtifactInfo, Error> {
        let full = format!("{}/{repo}", p.name);
        let store = self.access.store();
        let found = match reference {
            ArtifactRef::Digest(d) => store.artifact(&full, d).await?,
            ArtifactRef::Tag(t) => store.artifact_by_tag(&full, t).await?,
        };
        found.ok_or_else(|| {
            Error::NotFound(format!(
                "artifact {full}:{} does not exist",
                display(reference)
            ))
        })
    }

    /// Projects and repositories whose name contains `query` that the caller may see.
    ///
    /// # Errors
    /// Store errors.
    pub async fn search(&self, who: &Caller, query: &str) -> Result<SearchResult, Error> {
        let filter = ProjectFilter {
            name_contains: Some(query.to_owned()),
            ..ProjectFilter::default()
        };
        let projects = self
            .list_projects(
                who,
                filter,
                Paging {
                    offset: 0,
                    limit: SEARCH_LIMIT,
                },
            )
            .await?
            .items;
        let found = self
            .access
            .store()
            .search_repositories(query, Paging::ALL)
            .await?;
        let mut repositories = Vec::new();
        let mut cache: Vec<Project> = Vec::new();
        for repo in found.items {
            if repositories.len() as u64 >= SEARCH_LIMIT {
                break;
            }
            let name = repo.name.split('/').next().unwrap_or_default().to_owned();
            let project = match cache.iter().find(|p| p.name == name) {
                Some(p) => p.clone(),
                None => match self.access.store().project_by_name(&name).await? {
                    Some(p) => {
                        cache.push(p.clone());
                        p
                    }
                    None => continue,
                },
            };
            if self
                .access
                .sees_project(&who.principal, &project.name)
                .await?
            {
                repositories.push((repo, project));
            }
        }
        Ok(SearchResult {
            projects,
            repositories,
        })
    }

    /// Counts of projects and repositories. A system administrator sees every count and the
    /// storage used; anyone else counts the public projects and those it may see, as Harbor
    /// does, and sees no storage figure. Signed-in callers only.
    ///
    /// # Errors
    /// [`Error::Unauthorized`] for an anonymous caller; store errors.
    pub async fn statistics(&self, who: &Caller) -> Result<Statistics, Error> {
        who.require_signed_in()?;
        if who.principal.is_sysadmin() {
            return Ok(self.access.store().statistics().await?);
        }
        let visible = self
            .list_projects(who, ProjectFilter::default(), Paging::ALL)
            .await?;
        let mut s = Statistics::default();
        for v in visible.items {
            if v.project.public {
                s.public_projects += 1;
                s.public_repos += v.project.repo_count;
            } else {
                s.private_projects += 1;
                s.private_repos += v.project.repo_count;
            }
        }
        Ok(s)
    }

    /// Audit events matching `filter`, newest first. A system administrator sees all; anyone
    /// else only events of the projects whose logs it may list.
    ///
    /// # Errors
    /// [`Error::Unauthorized`] for an anonymous caller; store errors.
    pub async fn audit_log(
        &self,
        who: &Caller,
        mut filter: AuditFilter,
        page: Paging,
    ) -> Result<Listing<AuditEvent>, Error> {
        who.require_signed_in()?;
        if !who.principal.is_sysadmin() {
            let mut allowed = Vec::new();
            let visible = self
                .list_projects(who, ProjectFilter::default(), Paging::ALL)
                .await?;
            for ProjectView { project, .. } in visible.items {
                let perms = self
                    .access
                    .permissions(&who.principal, &project.name, Some(&project))
                    .await?;
                if perms.contains(&Permission::new(Resource::Log, Action::List)) {
                    allowed.push(project.name);
                }
            }
            filter.projects = Some(match filter.projects.take() {
                Some(asked) => asked.into_iter().filter(|p| allowed.contains(p)).collect(),
                None => allowed,
            });
        }
        Ok(self.access.store().list_audit(&filter, page).await?)
    }

    /// The audit events of one project (needs `log:list`).
    ///
    /// # Errors
    /// As [`Access::require`](crate::Access::require).
    pub async fn project_audit_log(
        &self,
        who: &Caller,
        project: &ProjectRef,
        mut filter: AuditFilter,
        page: Paging,
    ) -> Result<Listing<AuditEvent>, Error> {
        let p = self
            .project_for(who, project, Permission::new(Resource::Log, Action::List))
            .await?;
        filter.projects = Some(vec![p.name]);
        Ok(self.access.store().list_audit(&filter, page).await?)
    }
}

fn display(r: &ArtifactRef) -> String {
    match r {
        ArtifactRef::Digest(d) => d.to_string(),
        ArtifactRef::Tag(t) => t.clone(),
    }
}
