//! Projects and their members.

use berth_meta::{
    Listing, Member, MemberEntity, NewProject, Paging, Project, ProjectFilter, ProjectRole,
    Visibility,
};
use berth_oci::RepoName;

use super::{Admin, Caller};
use crate::access::{Action, Permission, Principal, Resource};
use crate::Error;

/// How a request names a project: Harbor's `{project_name_or_id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectRef {
    /// By name.
    Name(String),
    /// By id.
    Id(i64),
}

/// A project with the roles the caller holds in it.
#[derive(Debug, Clone)]
pub struct ProjectView {
    /// The project.
    pub project: Project,
    /// The caller's roles in it (directly and through groups).
    pub roles: Vec<ProjectRole>,
}

/// Who a new member is, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberTarget {
    /// A user.
    User(String),
    /// A group.
    Group(String),
    /// A user by id.
    UserId(i64),
    /// A group by id.
    GroupId(i64),
}

/// What `/search` finds.
#[derive(Debug, Clone, Default)]
pub struct SearchResult {
    /// Projects whose name contains the query.
    pub projects: Vec<ProjectView>,
    /// Repositories whose name contains the query, each with its project.
    pub repositories: Vec<(berth_meta::RepositoryInfo, Project)>,
}

const fn perm(resource: Resource, action: Action) -> Permission {
    Permission::new(resource, action)
}

/// Check a new project's name: a single component of a repository name.
fn check_project_name(name: &str) -> Result<(), Error> {
    let ok = !name.contains('/') && name.len() <= 255 && name.parse::<RepoName>().is_ok();
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid project name {name:?}: lower-case letters, digits and . _ - (not at the ends)"
        )))
    }
}

impl Admin {
    /// Projects the caller may see that match `filter` (its `visible_to` is set here).
    ///
    /// # Errors
    /// Store errors.
    pub async fn list_projects(
        &self,
        who: &Caller,
        mut filter: ProjectFilter,
        page: Paging,
    ) -> Result<Listing<ProjectView>, Error> {
        let store = self.access.store();
        let listing = match &who.principal {
            p if p.is_sysadmin() => {
                filter.visible_to = None;
                store.list_projects(&filter, page).await?
            }
            Principal::Anonymous => {
                filter.visible_to = Some(Visibility::Anonymous);
                store.list_projects(&filter, page).await?
            }
            Principal::User { id, .. } => {
                filter.visible_to = Some(Visibility::User(*id));
                store.list_projects(&filter, page).await?
            }
            // Robots and keyless logins see what their permissions name: filtered here, so
            // the page is cut after filtering.
            _ => {
                filter.visible_to = None;
                let all = store.list_projects(&filter, Paging::ALL).await?;
                let mut seen = Vec::new();
                for p in all.items {
                    let perms = self
                        .access
                        .permissions(&who.principal, &p.name, Some(&p))
                        .await?;
                    if perms.contains(&perm(Resource::Project, Action::Read)) {
                        seen.push(p);
                    }
                }
                let total = seen.len() as u64;
                let items = seen
                    .into_iter()
                    .skip(usize::try_from(page.offset).unwrap_or(usize::MAX))
                    .take(usize::try_from(page.limit).unwrap_or(usize::MAX))
                    .collect();
                Listing { items, total }
            }
        };
        let mut items = Vec::with_capacity(listing.items.len());
        for project in listing.items {
            let roles = self.roles_in(who, project.id).await?;
            items.push(ProjectView { project, roles });
        }
        Ok(Listing {
            items,
            total: listing.total,
        })
    }

    /// Whether a project named `name` exists (Harbor's `HEAD /projects`, to check a name
    /// before creating it). Any signed-in caller: it tells a private project's existence,
    /// which the name being taken tells anyway.
    ///
    /// # Errors
    /// [`Error::Unauthorized`] for an anonymous caller; store errors.
    pub async fn project_exists(&self, who: &Caller, name: &str) -> Result<bool, Error> {
        who.require_signed_in()?;
        Ok(self.access.store().project_by_name(name).await?.is_some())
    }

    /// Create a project; a user creating one becomes its project admin. Any signed-in user
    /// may (Harbor's default `project_creation_restriction = everyone`); robots may not.
    ///
    /// # Errors
    /// [`Error::Unauthorized`]/[`Error::Denied`]; [`Error::Invalid`] for a bad name;
    /// [`Error::Conflict`] if it exists.
    pub async fn create_project(
        &self,
        who: &Caller,
        name: &str,
        public: bool,
    ) -> Result<Project, Error> {
        let owner = match &who.principal {
            Principal::User { id, .. } => Some(*id),
            Principal::System => None,
            Principal::Anonymous => return Err(Error::Unauthorized("sign in first".into())),
            _ => {
                return Err(Error::Denied(
                    "robot accounts may not create projects".into(),
                ))
            }
        };
        check_project_name(name)?;
        let new = NewProject {
            name: name.to_owned(),
            public,
            owner,
        };
        let id = self.access.store().create_project(&new).await?;
        self.audit(who, "create", "project", name, Some(name));
        self.access
            .store()
            .project(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("project {name} does not exist")))
    }

    /// The project `project`, if the caller may see it.
    ///
    /// # Errors
    /// [`Error::NotFound`] if it does not exist or the caller may not see it.
    pub async fn project(&self, who: &Caller, project: &ProjectRef) -> Result<ProjectView, Error> {
        let project = self
            .project_for(who, project, perm(Resource::Project, Action::Read))
            .await?;
        let roles = self.roles_in(who, project.id).await?;
        Ok(ProjectView { project, roles })
    }

    /// Make a project public or private (needs `project:update`).
    ///
    /// # Errors
    /// As [`Access::require`](crate::Access::require).
    pub async fn set_project_public(
        &self,
        who: &Caller,
        project: &ProjectRef,
        public: bool,
    ) -> Result<(), Error> {
        let p = self
            .project_for(who, project, perm(Resource::Project, Action::Update))
            .await?;
        if !self.access.store().set_project_public(p.id, public).await? {
            return Err(Error::NotFound(format!(
                "project {} does not exist",
                p.name
            )));
        }
        self.audit(who, "update", "project", &p.name, Some(&p.name));
        Ok(())
    }

    /// Delete an empty project with its members and robots (needs `project:delete`).
    /// Returns the project deleted.
    ///
    /// # Errors
    /// As [`Access::require`](crate::Access::require); [`Error::NotEmpty`] if it holds a
    /// repository.
    pub async fn delete_project(
        &self,
        who: &Caller,
        project: &ProjectRef,
    ) -> Result<Project, Error> {
        let p = self
            .project_for(who, project, perm(Resource::Project, Action::Delete))
            .await?;
        let store = self.access.store();
        let robots = store
            .list_robots(berth_meta::RobotFilter::Project(p.id), Paging::ALL)
            .await?;
        match store.delete_project(p.id).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(Error::NotFound(format!(
                    "project {} does not exist",
                    p.name
                )))
            }
            Err(berth_meta::MetaError::NotEmpty(_)) => {
                return Err(Error::NotEmpty(format!(
                    "project {} still holds repositories; delete them first",
                    p.name
                )))
            }
            Err(e) => return Err(e.into()),
        }
        for r in robots.items {
            self.access.forget(&format!("robot:{}", r.id));
        }
        self.audit(who, "delete", "project", &p.name, Some(&p.name));
        Ok(p)
    }

    /// Members of a project whose name contains `name_contains` (needs `member:list`).
    ///
    /// # Errors
    /// As [`Access::require`](crate::Access::require).
    pub async fn list_members(
        &self,
        who: &Caller,
        project: &ProjectRef,
        name_contains: Option<&str>,
        page: Paging,
    ) -> Result<(Project, Listing<Member>), Error> {
        let p = self
            .project_for(who, project, perm(Resource::Member, Action::List))
            .await?;
        let members = self
            .access
            .store()
            .list_members(p.id, name_contains, page)
            .await?;
        Ok((p, members))
    }

    /// One membership (needs `member:read`).
    ///
    /// # Errors
    /// As [`Access::require`](crate::Access::require); [`Error::NotFound`].
    pub async fn member(
        &self,
        who: &Caller,
        project: &ProjectRef,
        member_id: i64,
    ) -> Result<Member, Error> {
        let p = self
            .project_for(who, project, perm(Resource::Member, Action::Read))
            .await?;
        self.member_record(&p, member_id).await
    }

    async fn member_record(&self, p: &Project, member_id: i64) -> Result<Member, Error> {
        self.access
            .store()
            .member(p.id, member_id)
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "member {member_id} of project {} does not exist",
                    p.name
                ))
            })
    }

    /// Add a user or group to a project with `role` (needs `member:create`).
    ///
    /// # Errors
    /// As [`Access::require`](crate::Access::require); [`Error::NotFound`] for an unknown
    /// user or group; [`Error::Conflict`] if it is a member already.
    pub async fn add_member(
        &self,
        who: &Caller,
        project: &ProjectRef,
        target: &MemberTarget,
        role: ProjectRole,
    ) -> Result<i64, Error> {
        let p = self
            .project_for(who, project, perm(Resource::Member, Action::Create))
            .await?;
        let store = self.access.store();
        let no_user =
            |n: &dyn std::fmt::Display| Error::NotFound(format!("user {n} does not exist"));
        let no_group =
            |n: &dyn std::fmt::Display| Error::NotFound(format!("group {n} does not exist"));
        let (entity, name) = match target {
            MemberTarget::User(name) => {
                let u = store
                    .user_by_name(name)
                    .await?
                    .ok_or_else(|| no_user(name))?;
                (MemberEntity::User(u.id), u.username)
            }
            MemberTarget::UserId(id) => {
                let u = store.user(*id).await?.ok_or_else(|| no_user(id))?;
                (MemberEntity::User(u.id), u.username)
            }
            MemberTarget::Group(name) => {
                let g = store
                    .group_by_name(name)
                    .await?
                    .ok_or_else(|| no_group(name))?;
                (MemberEntity::Group(g.id), g.name)
            }
            MemberTarget::GroupId(id) => {
                let g = store.group(*id).await?.ok_or_else(|| no_group(id))?;
                (MemberEntity::Group(g.id), g.name)
            }
        };
        let id = store.add_member(p.id, entity, role).await?;
        self.audit(
            who,
            "create",
            "member",
            &format!("{name} ({})", role.name()),
            Some(&p.name),
        );
        Ok(id)
    }

    /// Change a member's role (needs `member:update`). Tokens issued before keep what they
    /// grant until they expire.
    ///
    /// # Errors
    /// As [`Access::require`](crate::Access::require); [`Error::NotFound`].
    pub async fn set_member_role(
        &self,
        who: &Caller,
        project: &ProjectRef,
        member_id: i64,
        role: ProjectRole,
    ) -> Result<(), Error> {
        let p = self
            .project_for(who, project, perm(Resource::Member, Action::Update))
            .await?;
        let m = self.member_record(&p, member_id).await?;
        if !self
            .access
            .store()
            .set_member_role(p.id, member_id, role)
            .await?
        {
            return Err(Error::NotFound(format!(
                "member {member_id} does not exist"
            )));
        }
        self.audit(
            who,
            "update",
            "member",
            &format!("{} ({})", m.entity_name, role.name()),
            Some(&p.name),
        );
        Ok(())
    }

    /// Remove a member (needs `member:delete`).
    ///
    /// # Errors
    /// As [`Access::require`](crate::Access::require); [`Error::NotFound`].
    pub async fn remove_member(
        &self,
        who: &Caller,
        project: &ProjectRef,
        member_id: i64,
    ) -> Result<(), Error> {
        let p = self
            .project_for(who, project, perm(Resource::Member, Action::Delete))
            .await?;
        let m = self.member_record(&p, member_id).await?;
        if !self.access.store().remove_member(p.id, member_id).await? {
            return Err(Error::NotFound(format!(
                "member {member_id} does not exist"
            )));
        }
        self.audit(who, "delete", "member", &m.entity_name, Some(&p.name));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names() {
        assert!(check_project_name("team-a").is_ok());
        assert!(check_project_name("a.b_c").is_ok());
        assert!(check_project_name("Team").is_err());
        assert!(check_project_name("a/b").is_err());
        assert!(check_project_name("").is_err());
        assert!(check_project_name("-a").is_err());
    }
}
