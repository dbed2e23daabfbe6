//! The management service behind `/api/v2.0` and `berth admin`: users, groups, projects,
//! members, robot accounts, the audit log, search and statistics.
//!
//! Every method takes the [`Caller`] and checks what it may do on its first line (with
//! [`Access::require`] or [`Principal::is_sysadmin`]), so the HTTP API and any other caller
//! share one rule. Every change is written to the audit log; an account that is deleted or
//! disabled is dropped from the token service's cache at once ([`Access::forget`]).
//!
//! Secrets never leave this module in records: the types it returns carry the stored
//! hashes only because they are the store's records, and the HTTP layer shapes them into
//! replies without those fields. The only secrets returned are new robot secrets
//! ([`Admin::create_robot`], [`Admin::refresh_robot_secret`]) and new session ids.

mod artifacts;
mod catalog;
mod immutable;
mod projects;
mod retention;
mod robots;
mod sessions;
mod users;

use std::net::IpAddr;
use std::sync::Arc;

use berth_meta::{Project, ProjectId, ProjectRole};

pub use catalog::ArtifactRef;
pub use immutable::{RuleRequest, MAX_IMMUTABLE_RULES};
pub use projects::{MemberTarget, ProjectRef, ProjectView, SearchResult};
pub use retention::RetentionView;
pub use robots::{RobotChange, RobotRequest, RobotView};
pub use sessions::{NewSession, SESSION_TTL};
pub use users::{NewUserRequest, ProfileChange};

use super::{unix_ms, Access, Principal};
use crate::Error;

/// Who calls a management operation, and from where (for the audit log).
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who.
    pub principal: Principal,
    /// The client's address, if known.
    pub source: Option<IpAddr>,
}

impl Caller {
    /// `principal` calling from `source`.
    pub fn new(principal: Principal, source: Option<IpAddr>) -> Self {
        Self { principal, source }
    }

    /// Refuse unless the caller is a system administrator.
    ///
    /// # Errors
    /// [`Error::Unauthorized`] for an anonymous caller, [`Error::Denied`] for anyone else.
    pub fn require_sysadmin(&self) -> Result<(), Error> {
        self.principal.require_sysadmin()
    }

    /// Refuse an anonymous caller.
    ///
    /// # Errors
    /// [`Error::Unauthorized`] for an anonymous caller.
    pub fn require_signed_in(&self) -> Result<(), Error> {
        match self.principal {
            Principal::Anonymous => Err(Error::Unauthorized("sign in first".into())),
            _ => Ok(()),
        }
    }
}

/// The management service.
#[derive(Debug, Clone)]
pub struct Admin {
    access: Arc<Access>,
}

impl Admin {
    /// The management service over the access service `access`.
    pub fn new(access: Arc<Access>) -> Self {
        Self { access }
    }

    /// The access service behind it.
    pub fn access(&self) -> &Arc<Access> {
        &self.access
    }

    fn audit(
        &self,
        who: &Caller,
        operation: &str,
        kind: &str,
        resource: &str,
        project: Option<&str>,
    ) {
        self.access.audit().record(
            who.principal.name(),
            operation,
            kind,
            resource,
            project,
            who.source,
            true,
        );
    }

    /// The project a reference names, if the caller holds `perm` in it (else the error of
    /// [`Access::require`]: not found when the caller may not see it).
    async fn project_for(
        &self,
        who: &Caller,
        project: &ProjectRef,
        perm: super::Permission,
    ) -> Result<Project, Error> {
        let name = match project {
            ProjectRef::Name(n) => n.clone(),
            ProjectRef::Id(id) => match self.access.store().project(*id).await? {
                Some(p) => p.name,
                None => return Err(Error::NotFound(format!("project {id} does not exist"))),
            },
        };
        self.access.require(&who.principal, &name, perm).await
    }

    /// The roles the caller holds in project `id` (for Harbor's `current_user_role_ids`).
    async fn roles_in(&self, who: &Caller, id: ProjectId) -> Result<Vec<ProjectRole>, Error> {
        match &who.principal {
            Principal::User { id: user, .. } => Ok(self.access.store().roles_of(id, *user).await?),
            _ => Ok(Vec::new()),
        }
    }
}
