//! The role table: which project role may do what, as Harbor defines it.
//!
//! One table ([`ROLE_PERMISSIONS`]) is the only source of truth: the token service, the
//! management API and the RBAC matrix test all read it. A permission is a (resource, action)
//! pair, named as in Harbor (`repository:pull`, `member:create`, ...), so Harbor robot
//! permissions and tooling map onto it one to one.

use berth_meta::ProjectRole;

/// What a permission is about, inside a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// The project itself (Harbor's `project`/self).
    Project,
    /// Its members.
    Member,
    /// Its metadata (public flag and settings).
    Metadata,
    /// Its audit log.
    Log,
    /// Its quota.
    Quota,
    /// Its repositories (pull and push are repository actions).
    Repository,
    /// Its artifacts (manifests).
    Artifact,
    /// Tags of its artifacts.
    Tag,
    /// Its robot accounts.
    Robot,
    /// Its retention policy.
    TagRetention,
    /// Its tag immutability rules.
    ImmutableTag,
    /// Its webhook policies.
    NotificationPolicy,
    /// Vulnerability scans of its artifacts.
    Scan,
}

/// What is done to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Make one.
    Create,
    /// See one.
    Read,
    /// Change one.
    Update,
    /// Remove one.
    Delete,
    /// See the list.
    List,
    /// Download (repositories).
    Pull,
    /// Upload (repositories).
    Push,
    /// Run (a retention policy).
    Operate,
    /// Stop (a scan).
    Stop,
}

impl Resource {
    /// Every resource.
    pub const ALL: [Resource; 13] = [
        Resource::Project,
        Resource::Member,
        Resource::Metadata,
        Resource::Log,
        Resource::Quota,
        Resource::Repository,
        Resource::Artifact,
        Resource::Tag,
        Resource::Robot,
        Resource::TagRetention,
        Resource::ImmutableTag,
        Resource::NotificationPolicy,
        Resource::Scan,
    ];

    /// Harbor's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Project => "project",
            Resource::Member => "member",
            Resource::Metadata => "metadata",
            Resource::Log => "log",
            Resource::Quota => "quota",
            Resource::Repository => "repository",
            Resource::Artifact => "artifact",
            Resource::Tag => "tag",
            Resource::Robot => "robot",
            Resource::TagRetention => "tag-retention",
            Resource::ImmutableTag => "immutable-tag",
            Resource::NotificationPolicy => "notification-policy",
            Resource::Scan => "scan",
        }
    }

    /// The resource Harbor names `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 9] = [
        Action::Create,
        Action::Read,
        Action::Update,
        Action::Delete,
        Action::List,
        Action::Pull,
        Action::Push,
        Action::Operate,
        Action::Stop,
    ];

    /// Harbor's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Read => "read",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::List => "list",
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Operate => "operate",
            Action::Stop => "stop",
        }
    }

    /// The action Harbor names `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// A (resource, action) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Permission {
    /// What it is about.
    pub resource: Resource,
    /// What is done.
    pub action: Action,
}

impl Permission {
    /// `resource:action`.
    pub const fn new(resource: Resource, action: Action) -> Self {
        Self { resource, action }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.resource.as_str(), self.action.as_str())
    }
}

use Action as A;
use Resource as R;

const fn p(resource: Resource, action: Action) -> Permission {
    Permission::new(resource, action)
}

/// What a guest may do; the other roles build on it.
const GUEST: &[Permission] = &[
    p(R::Project, A::Read),
    p(R::Member, A::Read),
    p(R::Member, A::List),
    p(R::Log, A::List),
    p(R::Quota, A::Read),
    p(R::Repository, A::Read),
    p(R::Repository, A::List),
    p(R::Repository, A::Pull),
    p(R::Robot, A::Read),
    p(R::Robot, A::List),
    p(R::Scan, A::Read),
    p(R::Tag, A::List),
    p(R::Artifact, A::Read),
    p(R::Artifact, A::List),
];

/// A limited guest pulls and reads artifacts; it sees neither members nor logs.
const LIMITED_GUEST: &[Permission] = &[
    p(R::Project, A::Read),
    p(R::Quota, A::Read),
    p(R::Repository, A::List),
    p(R::Repository, A::Pull),
    p(R::Scan, A::Read),
    p(R::Tag, A::List),
    p(R::Artifact, A::Read),
    p(R::Artifact, A::List),
];

/// What a developer adds to a guest: push, and retention policies (as in Harbor).
const DEVELOPER_EXTRA: &[Permission] = &[
    p(R::Repository, A::Create),
    p(R::Repository, A::Update),
    p(R::Repository, A::Push),
    p(R::TagRetention, A::Create),
    p(R::TagRetention, A::Read),
    p(R::TagRetention, A::Update),
    p(R::TagRetention, A::Delete),
    p(R::TagRetention, A::List),
    p(R::TagRetention, A::Operate),
    p(R::Artifact, A::Create),
    p(R::Tag, A::Create),
];

/// What a maintainer adds to a developer: deletes, metadata, immutability, scans.
const MAINTAINER_EXTRA: &[Permission] = &[
    p(R::Metadata, A::Create),
    p(R::Metadata, A::Read),
    p(R::Metadata, A::Update),
    p(R::Metadata, A::Delete),
    p(R::Repository, A::Delete),
    p(R::ImmutableTag, A::Create),
    p(R::ImmutableTag, A::Update),
    p(R::ImmutableTag, A::Delete),
    p(R::ImmutableTag, A::List),
    p(R::NotificationPolicy, A::List),
    p(R::Scan, A::Create),
    p(R::Scan, A::Stop),
    p(R::Artifact, A::Delete),
    p(R::Tag, A::Delete),
];

/// What a project admin adds to a maintainer: the project itself, members, robots, webhooks.
const PROJECT_ADMIN_EXTRA: &[Permission] = &[
    p(R::Project, A::Update),
    p(R::Project, A::Delete),
    p(R::Member, A::Create),
    p(R::Member, A::Update),
    p(R::Member, A::Delete),
    p(R::Robot, A::Create),
    p(R::Robot, A::Update),
    p(R::Robot, A::Delete),
    p(R::NotificationPolicy, A::Create),
    p(R::NotificationPolicy, A::Read),
    p(R::NotificationPolicy, A::Update),
    p(R::NotificationPolicy, A::Delete),
];

/// The role table: each role with the layers of permissions it holds.
pub const ROLE_PERMISSIONS: &[(ProjectRole, &[&[Permission]])] = &[
    (
        ProjectRole::ProjectAdmin,
        &[
            GUEST,
            DEVELOPER_EXTRA,
            MAINTAINER_EXTRA,
            PROJECT_ADMIN_EXTRA,
        ],
    ),
    (
        ProjectRole::Maintainer,
        &[GUEST, DEVELOPER_EXTRA, MAINTAINER_EXTRA],
    ),
    (ProjectRole::Developer, &[GUEST, DEVELOPER_EXTRA]),
    (ProjectRole::Guest, &[GUEST]),
    (ProjectRole::LimitedGuest, &[LIMITED_GUEST]),
];

/// What anyone, signed in or not, may do in a public project: pull and read.
pub const PUBLIC_PERMISSIONS: &[Permission] = &[
    p(R::Project, A::Read),
    p(R::Repository, A::Read),
    p(R::Repository, A::List),
    p(R::Repository, A::Pull),
    p(R::Tag, A::List),
    p(R::Artifact, A::Read),
    p(R::Artifact, A::List),
];

/// Whether `role` allows `perm`.
pub fn role_allows(role: ProjectRole, perm: Permission) -> bool {
    ROLE_PERMISSIONS
        .iter()
        .filter(|(r, _)| *r == role)
        .flat_map(|(_, layers)| layers.iter())
        .any(|layer| layer.contains(&perm))
}

/// Whether any of `roles`, or the project being public, allows `perm`.
pub fn allows(roles: &[ProjectRole], public: bool, perm: Permission) -> bool {
    (public && PUBLIC_PERMISSIONS.contains(&perm)) || roles.iter().any(|r| role_allows(*r, perm))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_has_a_row() {
        for role in ProjectRole::ALL {
            assert!(
                ROLE_PERMISSIONS.iter().any(|(r, _)| *r == role),
                "{role:?} has no row"
            );
        }
    }

    #[test]
    fn roles_are_ordered_by_privilege() {
        // Each role in this chain may do everything the next one may.
        let chain = [
            ProjectRole::ProjectAdmin,
            ProjectRole::Maintainer,
            ProjectRole::Developer,
            ProjectRole::Guest,
            ProjectRole::LimitedGuest,
        ];
        for pair in chain.windows(2) {
            for res in Resource::ALL {
                for act in Action::ALL {
                    let perm = Permission::new(res, act);
                    if role_allows(pair[1], perm) {
                        assert!(role_allows(pair[0], perm), "{:?} lacks {perm}", pair[0]);
                    }
                }
            }
        }
    }

    #[test]
    fn harbor_landmarks() {
        use ProjectRole::*;
        let push = Permission::new(R::Repository, A::Push);
        let pull = Permission::new(R::Repository, A::Pull);
        let delete = Permission::new(R::Artifact, A::Delete);
        let add_member = Permission::new(R::Member, A::Create);
        let logs = Permission::new(R::Log, A::List);
        assert!(role_allows(Developer, push) && !role_allows(Guest, push));
        assert!(role_allows(LimitedGuest, pull));
        assert!(role_allows(Maintainer, delete) && !role_allows(Developer, delete));
        assert!(role_allows(ProjectAdmin, add_member) && !role_allows(Maintainer, add_member));
        assert!(role_allows(Guest, logs) && !role_allows(LimitedGuest, logs));
        assert!(allows(&[], true, pull) && !allows(&[], true, push) && !allows(&[], false, pull));
    }
}
