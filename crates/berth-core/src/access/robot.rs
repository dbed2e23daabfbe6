//! Robot accounts' permissions, in Harbor's shape: a list of
//! `{"kind":"project","namespace":"team-a","access":[{"resource":"repository","action":"pull"}]}`.
//! A system robot may name `*` as its namespace: every project.

use std::sync::Arc;

use berth_meta::{Robot, RobotLevel};
use serde::{Deserialize, Serialize};

use super::rbac::{Action, Permission, Resource};
use super::{Principal, ROBOT_PREFIX};
use crate::Error;

/// One entry of an access list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RobotAccess {
    /// Harbor's resource name (`repository`, `artifact`, `tag`...).
    pub resource: String,
    /// Harbor's action name (`pull`, `push`, `delete`, `list`...).
    pub action: String,
    /// Harbor's effect; only `allow` (or none) is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
}

/// What a robot may do in one project (or `*`: all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RobotPermission {
    /// Always `project`.
    pub kind: String,
    /// The project's name, or `*`.
    pub namespace: String,
    /// The permissions.
    pub access: Vec<RobotAccess>,
}

/// Parse and check a robot's permissions as the API receives them. A project robot may only
/// name its own project.
///
/// # Errors
/// [`Error::Invalid`] naming the first entry that is not a known permission.
pub fn validate(perms: &[RobotPermission], project: Option<&str>) -> Result<(), Error> {
    for p in perms {
        if p.kind != "project" {
            return Err(Error::Invalid(format!(
                "robot permission kind {:?} is not supported (only \"project\")",
                p.kind
            )));
        }
        match project {
            Some(own) if p.namespace != own => {
                return Err(Error::Invalid(format!(
                    "a robot of project {own} cannot hold permissions in {:?}",
                    p.namespace
                )))
            }
            _ => {}
        }
        for a in &p.access {
            if Resource::parse(&a.resource).is_none() || Action::parse(&a.action).is_none() {
                return Err(Error::Invalid(format!(
                    "unknown robot permission {}:{}",
                    a.resource, a.action
                )));
            }
            if a.effect.as_deref().is_some_and(|e| e != "allow") {
                return Err(Error::Invalid(
                    "only the effect \"allow\" is supported".into(),
                ));
            }
        }
    }
    Ok(())
}

/// The permissions `perms` give in project `project`.
pub fn permissions_in(perms: &[RobotPermission], project: &str) -> Vec<Permission> {
    perms
        .iter()
        .filter(|p| p.namespace == project || p.namespace == "*")
        .flat_map(|p| p.access.iter())
        .filter_map(|a| {
            Some(Permission::new(
                Resource::parse(&a.resource)?,
                Action::parse(&a.action)?,
            ))
        })
        .collect()
}

/// The full name of a robot: `robot$name` or `robot$project+name`.
pub fn full_name(robot: &Robot, project: Option<&str>) -> String {
    match (robot.level, project) {
        (RobotLevel::Project(_), Some(p)) => format!("{ROBOT_PREFIX}{p}+{}", robot.name),
        _ => format!("{ROBOT_PREFIX}{}", robot.name),
    }
}

/// The principal a robot is, unless it is disabled or expired at `now_ms`.
pub fn principal(robot: &Robot, full_name: String, now_ms: i64) -> Option<Principal> {
    if robot.disabled || robot.expires_ms.is_some_and(|e| e <= now_ms) {
        return None;
    }
    let permissions: Vec<RobotPermission> = serde_json::from_str(&robot.permissions).ok()?;
    Some(Principal::Robot {
        id: robot.id,
        name: full_name,
        level: robot.level,
        permissions: Arc::new(permissions),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(ns: &str, pairs: &[(&str, &str)]) -> RobotPermission {
        RobotPermission {
            kind: "project".into(),
            namespace: ns.into(),
            access: pairs
                .iter()
                .map(|(r, a)| RobotAccess {
                    resource: (*r).into(),
                    action: (*a).into(),
                    effect: None,
                })
                .collect(),
        }
    }

    #[test]
    fn permissions_apply_to_their_namespace() {
        let perms = vec![
            perm("team-a", &[("repository", "pull"), ("repository", "push")]),
            perm("*", &[("artifact", "list")]),
        ];
        let a = permissions_in(&perms, "team-a");
        assert!(a.contains(&Permission::new(Resource::Repository, Action::Push)));
        let b = permissions_in(&perms, "team-b");
        assert_eq!(b, vec![Permission::new(Resource::Artifact, Action::List)]);
    }

    #[test]
    fn validation() {
        assert!(validate(&[perm("team-a", &[("repository", "pull")])], Some("team-a")).is_ok());
        assert!(validate(&[perm("team-b", &[("repository", "pull")])], Some("team-a")).is_err());
        assert!(validate(&[perm("*", &[("repository", "fly")])], None).is_err());
    }
}
