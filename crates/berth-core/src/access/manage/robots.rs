//! Robot accounts: system-level (system administrators only) or of one project (its
//! project admins), with Harbor's permission lists, an expiry and a secret shown once.

use berth_meta::{
    Listing, NewRobot, Paging, Project, Robot, RobotFilter, RobotId, RobotLevel, RobotUpdate,
};
use berth_oci::RepoName;

use super::{unix_ms, Admin, Caller};
use crate::access::robot::{self, RobotPermission};
use crate::access::{password, Action, Permission, Resource};
use crate::Error;

/// Harbor's default lifetime of a robot created with `duration: 0`, in days.
const DEFAULT_DURATION_DAYS: i64 = 30;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// A robot account to create, as the API receives it.
#[derive(Debug, Clone)]
pub struct RobotRequest {
    /// Its name (without `robot$` and the project).
    pub name: String,
    /// Free text.
    pub description: String,
    /// `true`: a system robot; `false`: a robot of the one project its permissions name.
    pub system: bool,
    /// Lifetime in days: -1 never expires, 0 Harbor's default (30 days).
    pub duration_days: i64,
    /// Created disabled.
    pub disabled: bool,
    /// What it may do.
    pub permissions: Vec<RobotPermission>,
    /// A secret of the caller's choosing (must pass the password rule); `None`: generated.
    pub secret: Option<String>,
}

/// Changes to a robot; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct RobotChange {
    /// New description.
    pub description: Option<String>,
    /// Disable (`true`) or enable.
    pub disabled: Option<bool>,
    /// New lifetime in days from its creation (-1: never).
    pub duration_days: Option<i64>,
    /// New permissions.
    pub permissions: Option<Vec<RobotPermission>>,
}

/// A robot with what the API shows of it.
#[derive(Debug, Clone)]
pub struct RobotView {
    /// The record (its secret hash stays on the server).
    pub robot: Robot,
    /// Its full name (`robot$name` or `robot$project+name`).
    pub full_name: String,
    /// Its project, for a project robot.
    pub project: Option<String>,
    /// Its permissions, parsed.
    pub permissions: Vec<RobotPermission>,
}

fn expiry(created_ms: i64, days: i64) -> Result<Option<i64>, Error> {
    match days {
        -1 => Ok(None),
        0 => Ok(Some(created_ms + DEFAULT_DURATION_DAYS * DAY_MS)),
        d if d > 0 && d < 100_000 => Ok(Some(created_ms + d * DAY_MS)),
        _ => Err(Error::Invalid(
            "duration must be -1 (never expires) or a number of days".into(),
        )),
    }
}

fn check_robot_name(name: &str) -> Result<(), Error> {
    if !name.contains('/') && name.len() <= 255 && name.parse::<RepoName>().is_ok() {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid robot name {name:?}: lower-case letters, digits and . _ -"
        )))
    }
}

impl Admin {
    /// Refuse unless the caller holds `action` on the robots of the robot's level.
    async fn require_robot(
        &self,
        who: &Caller,
        level: RobotLevel,
        action: Action,
    ) -> Result<Option<Project>, Error> {
        match level {
            RobotLevel::System => who.require_sysadmin().map(|()| None),
            RobotLevel::Project(id) => self
                .project_for(
                    who,
                    &super::ProjectRef::Id(id),
                    Permission::new(Resource::Robot, action),
                )
                .await
                .map(Some),
        }
    }

    /// Refuse permissions the caller does not hold itself: nobody hands a robot more than
    /// it may do.
    async fn check_grantable(&self, who: &Caller, perms: &[RobotPermission]) -> Result<(), Error> {
        if who.principal.is_sysadmin() {
            return Ok(());
        }
        for p in perms {
            let project = self.access.store().project_by_name(&p.namespace).await?;
            let held = self
                .access
                .permissions(&who.principal, &p.namespace, project.as_ref())
                .await?;
            for wanted in robot::permissions_in(std::slice::from_ref(p), &p.namespace) {
                if !held.contains(&wanted) {
                    return Err(Error::Denied(format!(
                        "you may not grant {wanted} in project {}",
                        p.namespace
                    )));
                }
            }
        }
        Ok(())
    }

    fn view(robot: Robot, project: Option<String>) -> RobotView {
        let full_name = robot::full_name(&robot, project.as_deref());
        let permissions = serde_json::from_str(&robot.permissions).unwrap_or_default();
        RobotView {
            robot,
            full_name,
            project,
            permissions,
        }
    }

    async fn robot_record(&self, id: RobotId) -> Result<Robot, Error> {
        self.access
            .store()
            .robot(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("robot {id} does not exist")))
    }

    /// Robots as `filter` selects them: all or system ones for system administrators, a
    /// project's for those who may list its robots.
    ///
    /// # Errors
    /// As [`Access::require`](crate::Access::require).
    pub async fn list_robots(
        &self,
        who: &Caller,
        filter: RobotFilter,
        page: Paging,
    ) -> Result<Listing<RobotView>, Error> {
        let project = match filter {
            RobotFilter::All | RobotFilter::System => {
                who.require_sysadmin()?;
                None
            }
            RobotFilter::Project(id) => {
                self.require_robot(who, RobotLevel::Project(id), Action::List)
                    .await?
            }
        };
        let store = self.access.store();
        let listing = store.list_robots(filter, page).await?;
        let mut items = Vec::with_capacity(listing.items.len());
        for r in listing.items {
            let name = match (&project, r.level) {
                (Some(p), _) => Some(p.name.clone()),
                (None, RobotLevel::Project(id)) => store.project(id).await?.map(|p| p.name),
                (None, RobotLevel::System) => None,
            };
            items.push(Self::view(r, name));
        }
        Ok(Listing {
            items,
            total: listing.total,
        })
    }

    /// Create a robot account. Returns it with its secret, which is shown this once.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad name, duration, secret or permission list;
    /// [`Error::Denied`] for permissions the caller lacks; [`Error::Conflict`] if the name
    /// is taken; as [`Access::require`](crate::Access::require).
    pub async fn create_robot(
        &self,
        who: &Caller,
        req: RobotRequest,
    ) -> Result<(RobotView, String), Error> {
        let level = if req.system {
            who.require_sysadmin()?;
            RobotLevel::System
        } else {
            let [only] = req.permissions.as_slice() else {
                return Err(Error::Invalid(
                    "a project robot's permissions name exactly one project".into(),
                ));
            };
            let p = self
                .project_for(
                    who,
                    &super::ProjectRef::Name(only.namespace.clone()),
                    Permission::new(Resource::Robot, Action::Create),
                )
                .await?;
            RobotLevel::Project(p.id)
        };
        check_robot_name(&req.name)?;
        let project = match level {
            RobotLevel::Project(_) => req.permissions.first().map(|p| p.namespace.clone()),
            RobotLevel::System => None,
        };
        robot::validate(&req.permissions, project.as_deref())?;
        self.check_grantable(who, &req.permissions).await?;
        let secret = match req.secret {
            Some(s) => {
                password::check_strength(&s)?;
                s
            }
            None => password::generate()?,
        };
        let now = unix_ms();
        let creator = match &who.principal {
            crate::Principal::User { id, .. } => Some(*id),
            _ => None,
        };
        let new = NewRobot {
            name: req.name,
            description: req.description,
            level,
            secret_hash: password::hash_off_thread(secret.clone()).await?,
            expires_ms: expiry(now, req.duration_days)?,
            permissions: serde_json::to_string(&req.permissions)
                .map_err(|e| Error::Internal(format!("robot permissions: {e}")))?,
            creator,
        };
        let id = self.access.store().create_robot(&new).await?;
        if req.disabled {
            let update = RobotUpdate {
                disabled: Some(true),
                ..RobotUpdate::default()
            };
            self.access.store().update_robot(id, &update).await?;
        }
        let view = Self::view(self.robot_record(id).await?, project.clone());
        self.audit(who, "create", "robot", &view.full_name, project.as_deref());
        Ok((view, secret))
    }

    /// One robot account.
    ///
    /// # Errors
    /// As [`Access::require`](crate::Access::require) (`robot:read` in its project, or a
    /// system administrator for a system robot); [`Error::NotFound`].
    pub async fn robot(&self, who: &Caller, id: RobotId) -> Result<RobotView, Error> {
        let r = self.robot_record(id).await?;
        let project = self.require_robot(who, r.level, Action::Read).await?;
        Ok(Self::view(r, project.map(|p| p.name)))
    }

    /// Change a robot account; disabling it stops its tokens at once.
    ///
    /// # Errors
    /// As [`Admin::create_robot`] and [`Admin::robot`] (`robot:update`).
    pub async fn update_robot(
        &self,
        who: &Caller,
        id: RobotId,
        change: RobotChange,
    ) -> Result<RobotView, Error> {
        let r = self.robot_record(id).await?;
        let project = self.require_robot(who, r.level, Action::Update).await?;
        let pname = project.map(|p| p.name);
        if let Some(perms) = &change.permissions {
            robot::validate(perms, pname.as_deref())?;
            self.check_grantable(who, perms).await?;
        }
        let update = RobotUpdate {
            description: change.description,
            expires_ms: change
                .duration_days
                .map(|d| expiry(r.created_ms, d))
                .transpose()?,
            disabled: change.disabled,
            permissions: change
                .permissions
                .map(|p| serde_json::to_string(&p))
                .transpose()
                .map_err(|e| Error::Internal(format!("robot permissions: {e}")))?,
            secret_hash: None,
        };
        if !self.access.store().update_robot(id, &update).await? {
            return Err(Error::NotFound(format!("robot {id} does not exist")));
        }
        self.access.forget(&format!("robot:{id}"));
        let view = Self::view(self.robot_record(id).await?, pname);
        self.audit(
            who,
            "update",
            "robot",
            &view.full_name,
            view.project.as_deref(),
        );
        Ok(view)
    }

    /// Give a robot a new secret: `secret` if given (it must pass the password rule), else
    /// a generated one, which is returned (shown this once). Tokens issued before keep
    /// working until they expire.
    ///
    /// # Errors
    /// As [`Admin::update_robot`]; [`Error::Invalid`] for a weak secret.
    pub async fn refresh_robot_secret(
        &self,
        who: &Caller,
        id: RobotId,
        secret: Option<String>,
    ) -> Result<Option<String>, Error> {
        let r = self.robot_record(id).await?;
        let project = self.require_robot(who, r.level, Action::Update).await?;
        let (secret, generated) = match secret {
            Some(s) => {
                password::check_strength(&s)?;
                (s, false)
            }
            None => (password::generate()?, true),
        };
        let update = RobotUpdate {
            secret_hash: Some(password::hash_off_thread(secret.clone()).await?),
            ..RobotUpdate::default()
        };
        if !self.access.store().update_robot(id, &update).await? {
            return Err(Error::NotFound(format!("robot {id} does not exist")));
        }
        self.access.forget(&format!("robot:{id}"));
        let pname = project.map(|p| p.name);
        let full = robot::full_name(&r, pname.as_deref());
        self.audit(who, "update", "robot", &full, pname.as_deref());
        Ok(generated.then_some(secret))
    }

    /// Delete a robot account; its tokens stop working at once.
    ///
    /// # Errors
    /// As [`Admin::robot`] (`robot:delete`).
    pub async fn delete_robot(&self, who: &Caller, id: RobotId) -> Result<(), Error> {
        let r = self.robot_record(id).await?;
        let project = self.require_robot(who, r.level, Action::Delete).await?;
        if !self.access.store().delete_robot(id).await? {
            return Err(Error::NotFound(format!("robot {id} does not exist")));
        }
        self.access.forget(&format!("robot:{id}"));
        let pname = project.map(|p| p.name);
        let full = robot::full_name(&r, pname.as_deref());
        self.audit(who, "delete", "robot", &full, pname.as_deref());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(expiry(0, -1).ok(), Some(None));
        assert_eq!(expiry(0, 1).ok(), Some(Some(DAY_MS)));
        assert_eq!(expiry(0, 0).ok(), Some(Some(30 * DAY_MS)));
        assert!(expiry(0, -2).is_err());
        assert!(check_robot_name("ci").is_ok());
        assert!(check_robot_name("CI").is_err());
    }
}
