//! The access tables as both backends read them: column lists, the decoding of rows, and the
//! encodings of the model in columns. The SQL here is the same in SQLite and PostgreSQL.

use berth_oci::Digest;

use super::{
    ArtifactInfo, AuditEvent, Group, Member, MemberEntity, Paging, Project, ProjectId, ProjectRole,
    RepositoryInfo, Robot, RobotFilter, RobotLevel, Statistics, User, Visibility,
};
use crate::MetaError;

/// A row of a result, as either backend returns it.
pub(crate) trait Columns {
    /// An integer column.
    fn int(&self, i: usize) -> Result<i64, MetaError>;
    /// An integer column that may be NULL.
    fn opt_int(&self, i: usize) -> Result<Option<i64>, MetaError>;
    /// A text column.
    fn text(&self, i: usize) -> Result<String, MetaError>;
    /// A text column that may be NULL.
    fn opt_text(&self, i: usize) -> Result<Option<String>, MetaError>;
    /// A boolean column (an integer 0 or 1 in SQLite).
    fn flag(&self, i: usize) -> Result<bool, MetaError>;
}

impl Paging {
    /// `(LIMIT, OFFSET)` for SQL, which takes signed 64-bit numbers.
    pub(crate) fn sql(self) -> (i64, i64) {
        (
            i64::try_from(self.limit).unwrap_or(i64::MAX),
            i64::try_from(self.offset).unwrap_or(i64::MAX),
        )
    }
}

/// The bounds of the names of the repositories below project `name`: those from `name/`
/// (inclusive) to `name0` (exclusive), since `0` is the character after `/`. A range, unlike
/// `LIKE 'name/%'`, uses the index on repository names and needs no escaping.
pub(crate) fn project_repo_range(name: &str) -> (String, String) {
    (format!("{name}/"), format!("{name}0"))
}

impl MemberEntity {
    /// Its row encoding: `entity_kind` (`u` or `g`) and `entity_id`.
    pub(crate) fn to_row(self) -> (&'static str, i64) {
        match self {
            MemberEntity::User(id) => ("u", id),
            MemberEntity::Group(id) => ("g", id),
        }
    }

    /// The entity stored as `kind` and `id`.
    pub(crate) fn from_row(kind: &str, id: i64) -> Result<Self, MetaError> {
        match kind {
            "u" => Ok(MemberEntity::User(id)),
            "g" => Ok(MemberEntity::Group(id)),
            other => Err(MetaError::Backend(format!(
                "stored member kind {other:?} is invalid"
            ))),
        }
    }
}

impl RobotLevel {
    /// Its row encoding, `project_id`: `None` for a system robot.
    pub(crate) fn project_id(self) -> Option<ProjectId> {
        match self {
            RobotLevel::System => None,
            RobotLevel::Project(id) => Some(id),
        }
    }

    /// The key of the unique index on robot names: the project id, 0 for system robots
    /// (ids start at 1), so that a NULL project still makes names unique.
    pub(crate) fn name_scope(self) -> i64 {
        self.project_id().unwrap_or(0)
    }
}

/// The role stored as `id`.
pub(crate) fn stored_role(id: i64) -> Result<ProjectRole, MetaError> {
    ProjectRole::from_id(id)
        .ok_or_else(|| MetaError::Backend(format!("stored role id {id} is invalid")))
}

/// A stored digest.
pub(crate) fn stored_digest(s: &str) -> Result<Digest, MetaError> {
    s.parse()
        .map_err(|e| MetaError::Backend(format!("stored digest {s:?} is invalid: {e}")))
}

/// Rows of `(project, role id)` ordered by project name into one entry per project with its
/// distinct roles in id order.
pub(crate) fn group_memberships(
    rows: Vec<(Project, i64)>,
) -> Result<Vec<(Project, Vec<ProjectRole>)>, MetaError> {
    let mut out: Vec<(Project, Vec<ProjectRole>)> = Vec::new();
    for (project, role) in rows {
        let role = stored_role(role)?;
        match out.last_mut() {
            Some((p, roles)) if p.id == project.id => roles.push(role),
            _ => out.push((project, vec![role])),
        }
    }
    for (_, roles) in &mut out {
        roles.sort_by_key(|r| r.id());
        roles.dedup();
    }
    Ok(out)
}

/// Which projects a listing sees, as two SQL parameters: the mode (0: all, 1: public only,
/// 2: public and those of the user) and the user id (0 unless mode 2).
pub(crate) fn visibility_params(v: Option<Visibility>) -> (i64, i64) {
    match v {
        None => (0, 0),
        Some(Visibility::Anonymous) => (1, 0),
        Some(Visibility::User(id)) => (2, id),
    }
}

/// How a refused user is named: by its name, and its e-mail if it has one (either may be the
/// one taken).
pub(crate) fn user_label(username: &str, email: &str) -> String {
    if email.is_empty() {
        format!("user {username}")
    } else {
        format!("user {username} or e-mail {email}")
    }
}

/// Statistics from counts of projects and of their repositories by `public`, and the bytes
/// stored.
pub(crate) fn statistics(
    projects: &[(bool, i64)],
    repos: &[(bool, i64)],
    total_storage: i64,
) -> Statistics {
    let pick = |counts: &[(bool, i64)], public: bool| {
        counts
            .iter()
            .find(|(p, _)| *p == public)
            .map_or(0, |(_, n)| *n as u64)
    };
    Statistics {
        public_projects: pick(projects, true),
        private_projects: pick(projects, false),
        public_repos: pick(repos, true),
        private_repos: pick(repos, false),
        total_storage: total_storage as u64,
    }
}

/// Which robots a listing returns, as two SQL parameters: the mode (0: all, 1: system robots,
/// 2: those of the project) and the project id (0 unless mode 2).
pub(crate) fn robot_filter_params(filter: RobotFilter) -> (i64, i64) {
    match filter {
        RobotFilter::All => (0, 0),
        RobotFilter::System => (1, 0),
        RobotFilter::Project(p) => (2, p),
    }
}

/// The statement of a page of `SELECT {columns} FROM {from} ORDER BY {order}`, with the
/// placeholders `limit` and `offset`. The rows are chosen first, in a subquery, and only the
/// rows of the page are projected: the columns' subqueries (counts, sizes) run for them alone,
/// not for every row an offset skips. `from` is a table or subquery with its alias (the
/// alias is its last word before ` WHERE`, or the table's name), which `columns` and `order`
/// use.
pub(crate) fn page_sql(
    columns: &str,
    from: &str,
    order: &str,
    limit: &str,
    offset: &str,
) -> String {
    let source = from.split(" WHERE ").next().unwrap_or(from);
    let alias = source.rsplit(' ').next().unwrap_or(source);
    format!(
        "SELECT {columns} FROM (SELECT {alias}.* FROM {from} ORDER BY {order} \
         LIMIT {limit} OFFSET {offset}) {alias} ORDER BY {order}"
    )
}

/// The statement of a page of the manifests of repository `repo` (a placeholder, as `limit`
/// and `offset` are), newest push first, as [`artifact_from_row`] reads them. The page's
/// digests come off the index on `(repo_id, created_at, digest)` alone; only the page's rows
/// are read and sized.
pub(crate) fn artifact_page_sql(repo: &str, limit: &str, offset: &str) -> String {
    format!(
        "SELECT {ARTIFACT_COLUMNS} FROM (SELECT digest FROM manifests WHERE repo_id = {repo} \
         ORDER BY created_at DESC, digest DESC LIMIT {limit} OFFSET {offset}) page \
         JOIN manifests m ON m.repo_id = {repo} AND m.digest = page.digest \
         ORDER BY m.created_at DESC, m.digest DESC"
    )
}

/// Milliseconds from a stored time in seconds (the times of the registry tables).
pub(crate) fn secs_to_ms(secs: i64) -> i64 {
    secs.saturating_mul(1000)
}

/// The condition that a membership (a row of `project_members`, unqualified) is the user's
/// bound as `param`, directly or through a group.
pub(crate) fn membership_of_user(param: &str) -> String {
    format!(
        "((entity_kind = 'u' AND entity_id = {param}) OR (entity_kind = 'g' \
         AND entity_id IN (SELECT group_id FROM group_users WHERE user_id = {param})))"
    )
}

/// The columns [`user_from_row`] reads, of `users`.
pub(crate) const USER_COLUMNS: &str =
    "id, username, email, realname, comment, password_hash, sysadmin, \
    created_ms, updated_ms";

pub(crate) fn user_from_row(r: &impl Columns) -> Result<User, MetaError> {
    Ok(User {
        id: r.int(0)?,
        username: r.text(1)?,
        email: r.text(2)?,
        realname: r.text(3)?,
        comment: r.text(4)?,
        password_hash: r.text(5)?,
        sysadmin: r.flag(6)?,
        created_ms: r.int(7)?,
        updated_ms: r.int(8)?,
    })
}

/// A group from `id, name, created_ms`.
pub(crate) fn group_from_row(r: &impl Columns) -> Result<Group, MetaError> {
    Ok(Group {
        id: r.int(0)?,
        name: r.text(1)?,
        created_ms: r.int(2)?,
    })
}

/// The columns [`project_from_row`] reads, of `projects p`: its repositories are those named
/// `p.name` or in the range below `p.name/`.
pub(crate) const PROJECT_COLUMNS: &str =
    "p.id, p.name, p.public, p.owner_id, p.created_ms, p.updated_ms, \
    (SELECT COUNT(*) FROM repositories r WHERE r.name = p.name \
     OR (r.name >= p.name || '/' AND r.name < p.name || '0'))";

pub(crate) fn project_from_row(r: &impl Columns) -> Result<Project, MetaError> {
    Ok(Project {
        id: r.int(0)?,
        name: r.text(1)?,
        public: r.flag(2)?,
        owner: r.opt_int(3)?,
        repo_count: r.int(6)? as u64,
        created_ms: r.int(4)?,
        updated_ms: r.int(5)?,
    })
}

/// Memberships with the name of the user or group, as `pm`.
pub(crate) const MEMBERS: &str = "(SELECT m.id, m.project_id, m.entity_kind, m.entity_id, m.role, \
    COALESCE(u.username, g.name, '') AS entity_name FROM project_members m \
    LEFT JOIN users u ON m.entity_kind = 'u' AND u.id = m.entity_id \
    LEFT JOIN user_groups g ON m.entity_kind = 'g' AND g.id = m.entity_id) pm";

/// The columns [`member_from_row`] reads, of [`MEMBERS`].
pub(crate) const MEMBER_COLUMNS: &str =
    "pm.id, pm.project_id, pm.entity_kind, pm.entity_id, pm.role, \
    pm.entity_name";

pub(crate) fn member_from_row(r: &impl Columns) -> Result<Member, MetaError> {
    Ok(Member {
        id: r.int(0)?,
        project_id: r.int(1)?,
        entity: MemberEntity::from_row(&r.text(2)?, r.int(3)?)?,
        role: stored_role(r.int(4)?)?,
        entity_name: r.text(5)?,
    })
}

/// The columns [`robot_from_row`] reads, of `robots`.
pub(crate) const ROBOT_COLUMNS: &str =
    "id, name, description, project_id, secret_hash, expires_ms, \
    disabled, permissions, creator_id, created_ms, updated_ms";

pub(crate) fn robot_from_row(r: &impl Columns) -> Result<Robot, MetaError> {
    Ok(Robot {
        id: r.int(0)?,
        name: r.text(1)?,
        description: r.text(2)?,
        level: r
            .opt_int(3)?
            .map_or(RobotLevel::System, RobotLevel::Project),
        secret_hash: r.text(4)?,
        expires_ms: r.opt_int(5)?,
        disabled: r.flag(6)?,
        permissions: r.text(7)?,
        creator: r.opt_int(8)?,
        created_ms: r.int(9)?,
        updated_ms: r.int(10)?,
    })
}

/// The columns [`audit_from_row`] reads, of `audit_log`.
pub(crate) const AUDIT_COLUMNS: &str =
    "id, time_ms, username, operation, resource_type, resource, project, \
    source_ip, success";

pub(crate) fn audit_from_row(r: &impl Columns) -> Result<AuditEvent, MetaError> {
    Ok(AuditEvent {
        id: r.int(0)?,
        time_ms: r.int(1)?,
        username: r.text(2)?,
        operation: r.text(3)?,
        resource_type: r.text(4)?,
        resource: r.text(5)?,
        project: r.opt_text(6)?,
        source_ip: r.opt_text(7)?,
        success: r.flag(8)?,
    })
}

/// A repository from its name, manifest count, pull count, creation time and last change
/// (times in seconds, as the registry tables keep them).
pub(crate) fn repository_from_row(r: &impl Columns) -> Result<RepositoryInfo, MetaError> {
    Ok(RepositoryInfo {
        name: r.text(0)?,
        artifact_count: r.int(1)? as u64,
        pull_count: r.int(2)? as u64,
        created_ms: secs_to_ms(r.int(3)?),
        updated_ms: secs_to_ms(r.int(4)?),
    })
}

/// The columns [`artifact_from_row`] reads, of `manifests m`: the size is the manifest's plus
/// that of each blob it references (each once: they are the keys of its references).
pub(crate) const ARTIFACT_COLUMNS: &str = "m.digest, m.media_type, m.artifact_type, m.subject, \
    m.size + COALESCE((SELECT CAST(SUM(b.size) AS BIGINT) FROM manifest_refs f JOIN blobs b ON b.digest = f.target \
    WHERE f.repo_id = m.repo_id AND f.manifest = m.digest AND f.kind = 0), 0), \
    m.created_at, m.pulled_ms";

/// An artifact without its tags and references (each backend fills those in).
pub(crate) fn artifact_from_row(r: &impl Columns) -> Result<ArtifactInfo, MetaError> {
    Ok(ArtifactInfo {
        digest: stored_digest(&r.text(0)?)?,
        media_type: r.text(1)?,
        artifact_type: r.opt_text(2)?,
        subject: r.opt_text(3)?.map(|s| stored_digest(&s)).transpose()?,
        size: r.int(4)? as u64,
        push_ms: secs_to_ms(r.int(5)?),
        pull_ms: r.opt_int(6)?,
        tags: Vec::new(),
        references: Vec::new(),
    })
}
