//! Who may do what: the records behind multi-tenancy ([`AccessStore`]).
//!
//! Projects (the first segment of a repository name), local users and groups of users,
//! project membership with a role, robot accounts, the audit log, shared settings (the token
//! signing key, which every instance of a fleet must share) and browser sessions. The rules
//! that turn these records into allowed actions live in `berth-core`; this layer only stores
//! them, each change in one transaction.
//!
//! Times are milliseconds since the Unix epoch (`*_ms`). Secrets never appear here in the
//! clear: passwords and robot secrets are stored as argon2 PHC strings, session ids as their
//! SHA-256.

use async_trait::async_trait;
use berth_oci::Digest;

use crate::MetaError;

pub(crate) mod columns;

/// A user's id.
pub type UserId = i64;
/// A project's id.
pub type ProjectId = i64;
/// A group's id.
pub type GroupId = i64;
/// A robot account's id.
pub type RobotId = i64;

/// A project member's role, with Harbor's numeric ids (which its API uses as `role_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProjectRole {
    /// Everything in the project, including members and policies.
    ProjectAdmin,
    /// Push and pull; no deletes, no policies.
    Developer,
    /// Pull and read.
    Guest,
    /// Developer plus deletes and policies; no member management.
    Maintainer,
    /// Pull only: cannot see members or logs.
    LimitedGuest,
}

impl ProjectRole {
    /// Every role, in id order.
    pub const ALL: [ProjectRole; 5] = [
        ProjectRole::ProjectAdmin,
        ProjectRole::Developer,
        ProjectRole::Guest,
        ProjectRole::Maintainer,
        ProjectRole::LimitedGuest,
    ];

    /// Harbor's id of the role.
    pub fn id(self) -> i64 {
        match self {
            ProjectRole::ProjectAdmin => 1,
            ProjectRole::Developer => 2,
            ProjectRole::Guest => 3,
            ProjectRole::Maintainer => 4,
            ProjectRole::LimitedGuest => 5,
        }
    }

    /// The role with Harbor's id `id`.
    pub fn from_id(id: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.id() == id)
    }

    /// Harbor's name of the role (`projectAdmin`, `developer`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ProjectRole::ProjectAdmin => "projectAdmin",
            ProjectRole::Developer => "developer",
            ProjectRole::Guest => "guest",
            ProjectRole::Maintainer => "maintainer",
            ProjectRole::LimitedGuest => "limitedGuest",
        }
    }

    /// The role named `name` (Harbor's names, case-insensitive, `-`/`_` ignored).
    pub fn from_name(name: &str) -> Option<Self> {
        let norm: String = name
            .chars()
            .filter(|c| *c != '-' && *c != '_' && *c != ' ')
            .flat_map(char::to_lowercase)
            .collect();
        Self::ALL
            .into_iter()
            .find(|r| r.name().to_lowercase() == norm)
    }
}

/// A page of a listing by offset, as Harbor's API pages (`page`, `page_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    /// Entries to skip.
    pub offset: u64,
    /// Most entries to return.
    pub limit: u64,
}

impl Paging {
    /// Everything, for internal callers.
    pub const ALL: Paging = Paging {
        offset: 0,
        limit: i64::MAX as u64,
    };
}

/// A page of results with the total count of matching entries (Harbor's `X-Total-Count`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing<T> {
    /// This page.
    pub items: Vec<T>,
    /// How many entries match in all.
    pub total: u64,
}

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// The login name (unique).
    pub username: String,
    /// E-mail address (unique when not empty).
    pub email: String,
    /// Full name.
    pub realname: String,
    /// Free text.
    pub comment: String,
    /// The argon2 PHC string of the password.
    pub password_hash: String,
    /// Whether the user is a system administrator.
    pub sysadmin: bool,
}

/// A stored user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Its id.
    pub id: UserId,
    /// The login name.
    pub username: String,
    /// E-mail address.
    pub email: String,
    /// Full name.
    pub realname: String,
    /// Free text.
    pub comment: String,
    /// The argon2 PHC string of the password. Never leaves the server.
    pub password_hash: String,
    /// Whether the user is a system administrator.
    pub sysadmin: bool,
    /// When it was created.
    pub created_ms: i64,
    /// When it last changed.
    pub updated_ms: i64,
}

/// Changes to a user; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    /// New e-mail address.
    pub email: Option<String>,
    /// New full name.
    pub realname: Option<String>,
    /// New comment.
    pub comment: Option<String>,
    /// New password hash.
    pub password_hash: Option<String>,
    /// New administrator flag.
    pub sysadmin: Option<bool>,
}

/// A group of users (members of a project may be groups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Its id.
    pub id: GroupId,
    /// Its name (unique).
    pub name: String,
    /// When it was created.
    pub created_ms: i64,
}

/// A project to create.
#[derive(Debug, Clone)]
pub struct NewProject {
    /// Its name: a valid first segment of a repository name (unique).
    pub name: String,
    /// Whether anyone, signed in or not, may pull from it.
    pub public: bool,
    /// The user who created it (made its project admin by the caller, in the same
    /// transaction: see [`AccessStore::create_project`]).
    pub owner: Option<UserId>,
}

/// A stored project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// Its id.
    pub id: ProjectId,
    /// Its name.
    pub name: String,
    /// Whether anyone may pull from it.
    pub public: bool,
    /// The user who created it, if known.
    pub owner: Option<UserId>,
    /// How many repositories it holds.
    pub repo_count: u64,
    /// When it was created.
    pub created_ms: i64,
    /// When it last changed.
    pub updated_ms: i64,
}

/// Which projects a listing returns.
#[derive(Debug, Clone, Default)]
pub struct ProjectFilter {
    /// Only names containing this.
    pub name_contains: Option<String>,
    /// Only public (`Some(true)`) or private (`Some(false)`) ones.
    pub public: Option<bool>,
    /// Only public ones and those `user` is a member of (directly or through a group).
    /// `None`: all (a system administrator's view).
    pub visible_to: Option<Visibility>,
}

/// Whose view of the projects a listing takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Anonymous: public projects only.
    Anonymous,
    /// A user: public projects and those the user is a member of.
    User(UserId),
}

/// A project member: a user or a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberEntity {
    /// A user.
    User(UserId),
    /// A group of users.
    Group(GroupId),
}

/// A stored membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its id (Harbor's `mid`).
    pub id: i64,
    /// The project.
    pub project_id: ProjectId,
    /// Who.
    pub entity: MemberEntity,
    /// The user's or group's name.
    pub entity_name: String,
    /// The role.
    pub role: ProjectRole,
}

/// Whether a robot account spans projects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RobotLevel {
    /// Created by a system administrator; its permissions may name any project.
    System,
    /// Belongs to one project; its permissions name only that project.
    Project(ProjectId),
}

/// A robot account to create.
#[derive(Debug, Clone)]
pub struct NewRobot {
    /// Its name (unique per level: per project, or among system robots).
    pub name: String,
    /// Free text.
    pub description: String,
    /// System or project level.
    pub level: RobotLevel,
    /// The argon2 PHC string of its secret.
    pub secret_hash: String,
    /// When it expires, or `None` for never.
    pub expires_ms: Option<i64>,
    /// Its permissions as JSON (interpreted by `berth-core`).
    pub permissions: String,
    /// The user who created it.
    pub creator: Option<UserId>,
}

/// A stored robot account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Robot {
    /// Its id.
    pub id: RobotId,
    /// Its name as created (without the `robot$` prefix).
    pub name: String,
    /// Free text.
    pub description: String,
    /// System or project level.
    pub level: RobotLevel,
    /// The argon2 PHC string of its secret. Never leaves the server.
    pub secret_hash: String,
    /// When it expires, or `None` for never.
    pub expires_ms: Option<i64>,
    /// Whether it is disabled.
    pub disabled: bool,
    /// Its permissions as JSON.
    pub permissions: String,
    /// The user who created it.
    pub creator: Option<UserId>,
    /// When it was created.
    pub created_ms: i64,
    /// When it last changed.
    pub updated_ms: i64,
}

/// Changes to a robot account; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct RobotUpdate {
    /// New description.
    pub description: Option<String>,
    /// New expiry (`Some(None)`: never).
    pub expires_ms: Option<Option<i64>>,
    /// Disable or enable.
    pub disabled: Option<bool>,
    /// New permissions (JSON).
    pub permissions: Option<String>,
    /// New secret hash (a rotation).
    pub secret_hash: Option<String>,
}

/// Which robots a listing returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RobotFilter {
    /// All of them.
    All,
    /// System-level ones.
    System,
    /// Those of one project.
    Project(ProjectId),
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Its id (0 for an event not yet stored).
    pub id: i64,
    /// When it happened.
    pub time_ms: i64,
    /// Who did it: a user name, `robot$...`, an OIDC subject, or `anonymous`.
    pub username: String,
    /// What was done: `create`, `delete`, `pull`, `push`, `login`, `update`, ...
    pub operation: String,
    /// The kind of thing it was done to: `artifact`, `tag`, `project`, `member`, `user`,
    /// `robot`, `policy`, ...
    pub resource_type: String,
    /// The thing: `team-a/app:1.0`, `team-a/app@sha256:...`, a user name, ...
    pub resource: String,
    /// The project it happened in, if any.
    pub project: Option<String>,
    /// The client's address.
    pub source_ip: Option<String>,
    /// Whether it succeeded (a failed login is recorded too).
    pub success: bool,
}

/// Which audit events a listing returns (all given conditions must hold).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this user.
    pub username: Option<String>,
    /// Only this operation.
    pub operation: Option<String>,
    /// Only this resource type.
    pub resource_type: Option<String>,
    /// Only resources containing this.
    pub resource_contains: Option<String>,
    /// Only events in these projects (`None`: any, including none).
    pub projects: Option<Vec<String>>,
    /// Only events at or after this time.
    pub from_ms: Option<i64>,
    /// Only events at or before this time.
    pub to_ms: Option<i64>,
}

/// A browser session (signed in through `/c/login`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// SHA-256 (hex) of the session id the cookie carries.
    pub id_hash: String,
    /// Who is signed in.
    pub user_id: UserId,
    /// The CSRF token unsafe requests must echo.
    pub csrf_token: String,
    /// When it expires.
    pub expires_ms: i64,
}

/// A repository as the management API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryInfo {
    /// Its full name (`project/...`).
    pub name: String,
    /// How many manifests it holds.
    pub artifact_count: u64,
    /// How many times a manifest of it was pulled (recorded by [`AccessStore::record_pulls`]).
    pub pull_count: u64,
    /// When it was created.
    pub created_ms: i64,
    /// When a manifest or tag of it last changed.
    pub updated_ms: i64,
}

/// A manifest as the management API lists it (Harbor's "artifact").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactInfo {
    /// Its digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its artifact type, if it declares one.
    pub artifact_type: Option<String>,
    /// The size of the manifest plus every blob it references.
    pub size: u64,
    /// When it was pushed.
    pub push_ms: i64,
    /// When it was last pulled, if ever.
    pub pull_ms: Option<i64>,
    /// Its tags with the time each was pointed at it.
    pub tags: Vec<(String, i64)>,
    /// The child manifests it references (an index's manifests).
    pub references: Vec<Digest>,
    /// The manifest it refers to (`subject`).
    pub subject: Option<Digest>,
}

/// Counts for `/api/v2.0/statistics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Statistics {
    /// Public projects.
    pub public_projects: u64,
    /// Private projects.
    pub private_projects: u64,
    /// Repositories in public projects.
    pub public_repos: u64,
    /// Repositories in private projects.
    pub private_repos: u64,
    /// Bytes of all distinct blobs plus manifests.
    pub total_storage: u64,
}

/// Where a backend keeps who may do what.
///
/// Names (of users, groups, projects) are compared exactly; `berth-core` validates and
/// normalises them first. Create methods report a taken name as [`MetaError::AlreadyExists`].
#[async_trait]
pub trait AccessStore: Send + Sync + 'static {
    /// Create a user. Returns its id.
    ///
    /// # Errors
    /// [`MetaError::AlreadyExists`] if the name (or a non-empty e-mail) is taken.
    async fn create_user(&self, user: &NewUser) -> Result<UserId, MetaError>;

    /// The user with `id`.
    ///
    /// # Errors
    /// Backend errors.
    async fn user(&self, id: UserId) -> Result<Option<User>, MetaError>;

    /// The user named `username`.
    ///
    /// # Errors
    /// Backend errors.
    async fn user_by_name(&self, username: &str) -> Result<Option<User>, MetaError>;

    /// Users whose name contains `name_contains` (all if `None`), by name.
    ///
    /// # Errors
    /// Backend errors.
    async fn list_users(
        &self,
        name_contains: Option<&str>,
        page: Paging,
    ) -> Result<Listing<User>, MetaError>;

    /// Change a user. Returns false if there is no such user.
    ///
    /// # Errors
    /// [`MetaError::AlreadyExists`] if the new e-mail is taken.
    async fn update_user(&self, id: UserId, update: &UserUpdate) -> Result<bool, MetaError>;

    /// Delete a user with its memberships (direct and in groups) and sessions. Robots it
    /// created stay. Returns false if there was no such user.
    ///
    /// # Errors
    /// Backend errors.
    async fn delete_user(&self, id: UserId) -> Result<bool, MetaError>;

    /// Create a group. Returns its id.
    ///
    /// # Errors
    /// [`MetaError::AlreadyExists`] if the name is taken.
    async fn create_group(&self, name: &str) -> Result<GroupId, MetaError>;

    /// The group named `name`.
    ///
    /// # Errors
    /// Backend errors.
    async fn group_by_name(&self, name: &str) -> Result<Option<Group>, MetaError>;

    /// The group with `id`.
    ///
    /// # Errors
    /// Backend errors.
    async fn group(&self, id: GroupId) -> Result<Option<Group>, MetaError>;

    /// Groups by name.
    ///
    /// # Errors
    /// Backend errors.
    async fn list_groups(&self, page: Paging) -> Result<Listing<Group>, MetaError>;

    /// Delete a group with its project memberships. Returns false if there was none.
    ///
    /// # Errors
    /// Backend errors.
    async fn delete_group(&self, id: GroupId) -> Result<bool, MetaError>;

    /// Put `user` in `group` (idempotent). Returns false if either does not exist.
    ///
    /// # Errors
    /// Backend errors.
    async fn add_to_group(&self, group: GroupId, user: UserId) -> Result<bool, MetaError>;

    /// Take `user` out of `group`. Returns whether it was in.
    ///
    /// # Errors
    /// Backend errors.
    async fn remove_from_group(&self, group: GroupId, user: UserId) -> Result<bool, MetaError>;

    /// The users in `group`, by name.
    ///
    /// # Errors
    /// Backend errors.
    async fn group_users(&self, group: GroupId) -> Result<Vec<User>, MetaError>;

    /// Create a project and, when it has an owner, make the owner its project admin, in one
    /// transaction. Returns its id.
    ///
    /// # Errors
    /// [`MetaError::AlreadyExists`] if the name is taken.
    async fn create_project(&self, project: &NewProject) -> Result<ProjectId, MetaError>;

    /// The project named `name`.
    ///
    /// # Errors
    /// Backend errors.
    async fn project_by_name(&self, name: &str) -> Result<Option<Project>, MetaError>;

    /// The project with `id`.
    ///
    /// # Errors
    /// Backend errors.
    async fn project(&self, id: ProjectId) -> Result<Option<Project>, MetaError>;

    /// Projects as `filter` selects them, by name.
    ///
    /// # Errors
    /// Backend errors.
    async fn list_projects(
        &self,
        filter: &ProjectFilter,
        page: Paging,
    ) -> Result<Listing<Project>, MetaError>;

    /// Make a project public or private. Returns false if there is no such project.
    ///
    /// # Errors
    /// Backend errors.
    async fn set_project_public(&self, id: ProjectId, public: bool) -> Result<bool, MetaError>;

    /// Delete a project with its memberships and project robots, if it holds no repository.
    /// Returns false if there was no such project.
    ///
    /// # Errors
    /// [`MetaError::NotEmpty`] if a repository is still in it; nothing changes then.
    async fn delete_project(&self, id: ProjectId) -> Result<bool, MetaError>;

    /// Add a member to a project with `role`. Returns the membership's id.
    ///
    /// # Errors
    /// [`MetaError::AlreadyExists`] if it is a member already; [`MetaError::NotFound`] if
    /// the project, user or group does not exist.
    async fn add_member(
        &self,
        project: ProjectId,
        entity: MemberEntity,
        role: ProjectRole,
    ) -> Result<i64, MetaError>;

    /// The membership `member_id` of `project`.
    ///
    /// # Errors
    /// Backend errors.
    async fn member(&self, project: ProjectId, member_id: i64)
        -> Result<Option<Member>, MetaError>;

    /// Change a member's role. Returns false if there is no such membership in `project`.
    ///
    /// # Errors
    /// Backend errors.
    async fn set_member_role(
        &self,
        project: ProjectId,
        member_id: i64,
        role: ProjectRole,
    ) -> Result<bool, MetaError>;

    /// Remove a membership. Returns false if there is no such membership in `project`.
    ///
    /// # Errors
    /// Backend errors.
    async fn remove_member(&self, project: ProjectId, member_id: i64) -> Result<bool, MetaError>;

    /// Members of `project` whose name contains `name_contains`, users and groups, by name.
    ///
    /// # Errors
    /// Backend errors.
    async fn list_members(
        &self,
        project: ProjectId,
        name_contains: Option<&str>,
        page: Paging,
    ) -> Result<Listing<Member>, MetaError>;

    /// Every role `user` holds in `project`: directly, and through each group it is in.
    ///
    /// # Errors
    /// Backend errors.
    async fn roles_of(
        &self,
        project: ProjectId,
        user: UserId,
    ) -> Result<Vec<ProjectRole>, MetaError>;

    /// Every project `user` holds a role in (directly or through a group), with the roles,
    /// by project name.
    ///
    /// # Errors
    /// Backend errors.
    async fn memberships_of(
        &self,
        user: UserId,
    ) -> Result<Vec<(Project, Vec<ProjectRole>)>, MetaError>;

    /// Create a robot account. Returns its id.
    ///
    /// # Errors
    /// [`MetaError::AlreadyExists`] if the name is taken at its level;
    /// [`MetaError::NotFound`] if its project does not exist.
    async fn create_robot(&self, robot: &NewRobot) -> Result<RobotId, MetaError>;

    /// The robot with `id`.
    ///
    /// # Errors
    /// Backend errors.
    async fn robot(&self, id: RobotId) -> Result<Option<Robot>, MetaError>;

    /// The robot named `name` at `level`.
    ///
    /// # Errors
    /// Backend errors.
    async fn robot_by_name(
        &self,
        level: RobotLevel,
        name: &str,
    ) -> Result<Option<Robot>, MetaError>;

    /// Robots as `filter` selects them, by id.
    ///
    /// # Errors
    /// Backend errors.
    async fn list_robots(
        &self,
        filter: RobotFilter,
        page: Paging,
    ) -> Result<Listing<Robot>, MetaError>;

    /// Change a robot. Returns false if there is no such robot.
    ///
    /// # Errors
    /// Backend errors.
    async fn update_robot(&self, id: RobotId, update: &RobotUpdate) -> Result<bool, MetaError>;

    /// Delete a robot. Returns false if there was none.
    ///
    /// # Errors
    /// Backend errors.
    async fn delete_robot(&self, id: RobotId) -> Result<bool, MetaError>;

    /// Append audit events (one transaction for the batch).
    ///
    /// # Errors
    /// Backend errors.
    async fn append_audit(&self, events: &[AuditEvent]) -> Result<(), MetaError>;

    /// Audit events as `filter` selects them, newest first.
    ///
    /// # Errors
    /// Backend errors.
    async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: Paging,
    ) -> Result<Listing<AuditEvent>, MetaError>;

    /// Delete audit events older than `before_ms`. Returns how many.
    ///
    /// # Errors
    /// Backend errors.
    async fn prune_audit(&self, before_ms: i64) -> Result<u64, MetaError>;

    /// The value of setting `key`.
    ///
    /// # Errors
    /// Backend errors.
    async fn setting(&self, key: &str) -> Result<Option<String>, MetaError>;

    /// Store `value` under `key` unless the key has a value already, and return the value the
    /// key has afterwards: when instances race to create a shared secret (the token signing
    /// key), all of them end with the same one.
    ///
    /// # Errors
    /// Backend errors.
    async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String, MetaError>;

    /// Store `value` under `key`, replacing any value it had.
    ///
    /// # Errors
    /// Backend errors.
    async fn set_setting(&self, key: &str, value: &str) -> Result<(), MetaError>;

    /// Record a browser session.
    ///
    /// # Errors
    /// Backend errors.
    async fn create_session(&self, session: &Session) -> Result<(), MetaError>;

    /// The unexpired session whose id hashes to `id_hash`.
    ///
    /// # Errors
    /// Backend errors.
    async fn session(&self, id_hash: &str) -> Result<Option<Session>, MetaError>;

    /// End a session (sign out). Returns whether it existed.
    ///
    /// # Errors
    /// Backend errors.
    async fn delete_session(&self, id_hash: &str) -> Result<bool, MetaError>;

    /// Delete sessions that expired. Returns how many.
    ///
    /// # Errors
    /// Backend errors.
    async fn prune_sessions(&self) -> Result<u64, MetaError>;

    /// Repositories in `project` whose name contains `name_contains`, by name.
    ///
    /// # Errors
    /// Backend errors.
    async fn list_project_repositories(
        &self,
        project: &str,
        name_contains: Option<&str>,
        page: Paging,
    ) -> Result<Listing<RepositoryInfo>, MetaError>;

    /// Repositories, of any project, whose name contains `needle`, by name (for search; the
    /// caller filters by visibility).
    ///
    /// # Errors
    /// Backend errors.
    async fn search_repositories(
        &self,
        needle: &str,
        page: Paging,
    ) -> Result<Listing<RepositoryInfo>, MetaError>;

    /// The manifests of repository `repo`, newest push first, with their tags, or `None` if
    /// there is no such repository.
    ///
    /// # Errors
    /// Backend errors.
    async fn list_artifacts(
        &self,
        repo: &str,
        page: Paging,
    ) -> Result<Option<Listing<ArtifactInfo>>, MetaError>;

    /// One manifest of `repo` as [`AccessStore::list_artifacts`] describes it.
    ///
    /// # Errors
    /// Backend errors.
    async fn artifact(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<ArtifactInfo>, MetaError>;

    /// The manifest tag `tag` of `repo` points at, as [`AccessStore::list_artifacts`]
    /// describes it.
    ///
    /// # Errors
    /// Backend errors.
    async fn artifact_by_tag(
        &self,
        repo: &str,
        tag: &str,
    ) -> Result<Option<ArtifactInfo>, MetaError>;

    /// Record pulls of manifests: for each `(repo, digest, time_ms)` set the manifest's last
    /// pull time and count one pull on the repository, in one transaction. Unknown
    /// repositories or manifests are skipped.
    ///
    /// # Errors
    /// Backend errors.
    async fn record_pulls(&self, pulls: &[(String, Digest, i64)]) -> Result<(), MetaError>;

    /// Counts for the statistics endpoint.
    ///
    /// # Errors
    /// Backend errors.
    async fn statistics(&self) -> Result<Statistics, MetaError>;
}
