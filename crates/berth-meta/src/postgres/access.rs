//! [`AccessStore`] for [`PgMeta`]: the tables of schema version 4.
//!
//! Writes of several statements run in one `READ COMMITTED` transaction through
//! [`PgMeta::write`], retried like every other write; the rows a write checks before it
//! inserts (the project and the user or group of a membership, the project of a robot) are
//! locked `FOR KEY SHARE` until it commits, so a concurrent delete cannot slip between. A
//! unique violation (SQLSTATE 23505) is [`MetaError::AlreadyExists`]; a foreign key violation
//! (23503) is [`MetaError::NotFound`]. Listings read their count and their page in one
//! `REPEATABLE READ` read-only transaction, so the total matches the page. Names are
//! `COLLATE "C"`: orders and comparisons are bytewise, as in SQLite. Session expiry and
//! pruning go by the database's clock, like job leases.

use std::collections::HashMap;

use async_trait::async_trait;
use berth_oci::Digest;
use sqlx::postgres::{PgArguments, PgConnection, PgRow};
use sqlx::{Arguments, AssertSqlSafe, Row};

use super::{sqlstate, to_meta, PgMeta, Scope, TxError};
use crate::access::columns::{
    artifact_from_row, artifact_page_sql, audit_from_row, group_from_row, group_memberships,
    member_from_row, membership_of_user, page_sql, project_from_row, project_repo_range,
    repository_from_row, robot_filter_params, robot_from_row, secs_to_ms, statistics,
    stored_digest, stored_role, user_from_row, user_label, visibility_params, Columns,
    ARTIFACT_COLUMNS, AUDIT_COLUMNS, MEMBERS, MEMBER_COLUMNS, PROJECT_COLUMNS, ROBOT_COLUMNS,
    USER_COLUMNS,
};
use crate::{
    AccessStore, ArtifactInfo, AuditEvent, AuditFilter, Group, GroupId, Listing, Member,
    MemberEntity, MetaError, NewProject, NewRobot, NewUser, Paging, Project, ProjectFilter,
    ProjectId, ProjectRole, RepositoryInfo, Robot, RobotFilter, RobotId, RobotLevel, RobotUpdate,
    Session, Statistics, User, UserId, UserUpdate,
};

/// Arguments `$1`, `$2`, ... of a statement built at run time, in order.
macro_rules! binds {
    ($($value:expr),* $(,)?) => {{
        let mut args = PgArguments::default();
        $(
            args.add($value)
                .map_err(|e| MetaError::Backend(format!("binding a parameter: {e}")))?;
        )*
        args
    }};
}

impl Columns for PgRow {
    fn int(&self, i: usize) -> Result<i64, MetaError> {
        self.try_get(i).map_err(to_meta)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, MetaError> {
        self.try_get(i).map_err(to_meta)
    }
    fn text(&self, i: usize) -> Result<String, MetaError> {
        self.try_get(i).map_err(to_meta)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, MetaError> {
        self.try_get(i).map_err(to_meta)
    }
    fn flag(&self, i: usize) -> Result<bool, MetaError> {
        self.try_get(i).map_err(to_meta)
    }
}

/// A write refused by a constraint: a unique index (`what` is taken) or a foreign key (what
/// `what` refers to is missing); anything else stays a database error (and may be retried).
fn refused(e: sqlx::Error, what: &str) -> TxError {
    match sqlstate(&e).as_deref() {
        Some("23505") => TxError::Meta(MetaError::AlreadyExists(what.to_owned())),
        Some("23503") => TxError::Meta(MetaError::NotFound(format!("a record {what} refers to"))),
        _ => TxError::Sql(e),
    }
}

/// The columns [`repository_from_row`] reads, of `repositories r`. Its last change is the
/// newest of its creation, its manifests' pushes and its tags' moves (times in seconds).
const REPOSITORY_COLUMNS: &str =
    "r.name, (SELECT COUNT(*) FROM manifests m WHERE m.repo_id = r.id), \
    r.pull_count, r.created_at, GREATEST(r.created_at, \
    (SELECT MAX(created_at) FROM manifests m WHERE m.repo_id = r.id), \
    (SELECT MAX(updated_at) FROM tags t WHERE t.repo_id = r.id))";

/// A page of `SELECT {columns} FROM {from} ORDER BY {order}` with the count of all its rows, on
/// `conn`. `from` (with its conditions) uses every one of `args` (`$1`...).
async fn listing_on<T>(
    conn: &mut PgConnection,
    columns: &str,
    from: &str,
    order: &str,
    mut args: PgArguments,
    page: Paging,
    f: impl Fn(&PgRow) -> Result<T, MetaError>,
) -> Result<Listing<T>, MetaError> {
    let total: i64 = sqlx::query_scalar_with(
        AssertSqlSafe(format!("SELECT COUNT(*) FROM {from}")),
        args.clone(),
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(to_meta)?;
    let n = args.len();
    let (limit, offset) = page.sql();
    args.add(limit)
        .and_then(|()| args.add(offset))
        .map_err(|e| MetaError::Backend(format!("binding a parameter: {e}")))?;
    let sql = page_sql(
        columns,
        from,
        order,
        &format!("${}", n + 1),
        &format!("${}", n + 2),
    );
    let rows = sqlx::query_with(AssertSqlSafe(sql), args)
        .fetch_all(&mut *conn)
        .await
        .map_err(to_meta)?;
    Ok(Listing {
        items: rows.iter().map(f).collect::<Result<_, _>>()?,
        total: total as u64,
    })
}

/// The repository, tags and child manifests of the artifacts `found` (of repository
/// `repo_id`), two statements for them all.
async fn complete_artifacts(
    conn: &mut PgConnection,
    repo_id: i64,
    found: &mut [ArtifactInfo],
) -> Result<(), MetaError> {
    if found.is_empty() {
        return Ok(());
    }
    let digests: Vec<String> = found.iter().map(|a| a.digest.to_string()).collect();
    let tags = sqlx::query(
        "SELECT digest, name, updated_at FROM tags WHERE repo_id = $1 AND digest = ANY($2) \
         ORDER BY name",
    )
    .bind(repo_id)
    .bind(&digests)
    .fetch_all(&mut *conn)
    .await
    .map_err(to_meta)?;
    let children = sqlx::query(
        "SELECT manifest, target FROM manifest_refs \
         WHERE repo_id = $1 AND manifest = ANY($2) AND kind = 1 ORDER BY target",
    )
    .bind(repo_id)
    .bind(&digests)
    .fetch_all(&mut *conn)
    .await
    .map_err(to_meta)?;
    let index: HashMap<String, usize> = digests.into_iter().zip(0..).collect();
    for r in &tags {
        if let Some(&i) = index.get(&r.text(0)?) {
            found[i].tags.push((r.text(1)?, secs_to_ms(r.int(2)?)));
        }
    }
    for r in &children {
        if let Some(&i) = index.get(&r.text(0)?) {
            found[i].references.push(stored_digest(&r.text(1)?)?);
        }
    }
    Ok(())
}

/// The id of repository `name`, if it exists.
async fn repo_id(conn: &mut PgConnection, name: &str) -> Result<Option<i64>, MetaError> {
    super::repo_id(conn, name).await.map_err(to_meta)
}

/// Whether `sql` (bound with `id`) finds a row, which stays locked `FOR KEY SHARE` until the
/// transaction ends when `sql` says so.
async fn found(conn: &mut PgConnection, sql: &'static str, id: i64) -> Result<bool, TxError> {
    Ok(sqlx::query(sql)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .is_some())
}

/// Delete the user or group `entity` with its project memberships, which name it without a
/// foreign key (an entity is a user or a group). What refers to it by a foreign key goes
/// with it (ON DELETE CASCADE): group memberships, sessions.
async fn delete_entity(conn: &mut PgConnection, entity: &MemberEntity) -> Result<bool, TxError> {
    let (kind, id) = entity.to_row();
    let table = match entity {
        MemberEntity::User(_) => "DELETE FROM users WHERE id = $1",
        MemberEntity::Group(_) => "DELETE FROM user_groups WHERE id = $1",
    };
    sqlx::query("DELETE FROM project_members WHERE entity_kind = $1 AND entity_id = $2")
        .bind(kind)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let n = sqlx::query(table).bind(id).execute(conn).await?;
    Ok(n.rows_affected() > 0)
}

impl PgMeta {
    /// The first row of `sql` with `args`, through `f`.
    async fn one<T>(
        &self,
        sql: String,
        args: PgArguments,
        f: impl FnOnce(&PgRow) -> Result<T, MetaError>,
    ) -> Result<Option<T>, MetaError> {
        sqlx::query_with(AssertSqlSafe(sql), args)
            .fetch_optional(&self.pool)
            .await
            .map_err(to_meta)?
            .as_ref()
            .map(f)
            .transpose()
    }

    /// Every row of `sql` with `args`, each through `f`.
    async fn all<T>(
        &self,
        sql: String,
        args: PgArguments,
        f: impl Fn(&PgRow) -> Result<T, MetaError>,
    ) -> Result<Vec<T>, MetaError> {
        sqlx::query_with(AssertSqlSafe(sql), args)
            .fetch_all(&self.pool)
            .await
            .map_err(to_meta)?
            .iter()
            .map(f)
            .collect()
    }

    /// [`listing_on`] in a read-only transaction of its own.
    pub(super) async fn listing<T>(
        &self,
        columns: &str,
        from: &str,
        order: &str,
        args: PgArguments,
        page: Paging,
        f: impl Fn(&PgRow) -> Result<T, MetaError>,
    ) -> Result<Listing<T>, MetaError> {
        let mut tx = self.snapshot().await?;
        let out = listing_on(&mut tx, columns, from, order, args, page, f).await?;
        tx.commit().await.map_err(to_meta)?;
        Ok(out)
    }

    /// A read-only transaction that sees one snapshot throughout.
    async fn snapshot(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, MetaError> {
        self.pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(to_meta)
    }

    /// Run `sql`, one statement bound with `id`, as a write; returns whether it changed a row.
    pub(super) async fn change_one(&self, sql: &'static str, id: i64) -> Result<bool, MetaError> {
        self.write(Scope::Statement, &(sql, id), |c, (sql, id)| {
            Box::pin(async move {
                let n = sqlx::query(*sql).bind(*id).execute(c).await?;
                Ok(n.rows_affected() > 0)
            })
        })
        .await
    }
}

#[async_trait]
impl AccessStore for PgMeta {
    async fn create_user(&self, user: &NewUser) -> Result<UserId, MetaError> {
        self.write(Scope::Statement, user, |c, u| {
            Box::pin(async move {
                sqlx::query_scalar(concat!(
                    "INSERT INTO users (username, email, realname, comment, password_hash, ",
                    "sysadmin, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, ",
                    now_ms!(),
                    ", ",
                    now_ms!(),
                    ") RETURNING id"
                ))
                .bind(&u.username)
                .bind(&u.email)
                .bind(&u.realname)
                .bind(&u.comment)
                .bind(&u.password_hash)
                .bind(u.sysadmin)
                .fetch_one(c)
                .await
                .map_err(|e| refused(e, &user_label(&u.username, &u.email)))
            })
        })
        .await
    }

    async fn user(&self, id: UserId) -> Result<Option<User>, MetaError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        self.one(sql, binds!(id), user_from_row).await
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<User>, MetaError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1");
        self.one(sql, binds!(username), user_from_row).await
    }

    async fn list_users(
        &self,
        name_contains: Option<&str>,
        page: Paging,
    ) -> Result<Listing<User>, MetaError> {
        self.listing(
            USER_COLUMNS,
            "users WHERE ($1::TEXT IS NULL OR strpos(username, $1) > 0)",
            "username",
            binds!(name_contains),
            page,
            user_from_row,
        )
        .await
    }

    async fn update_user(&self, id: UserId, update: &UserUpdate) -> Result<bool, MetaError> {
        self.write(Scope::Statement, &(id, update), |c, (id, u)| {
            Box::pin(async move {
                let n = sqlx::query(concat!(
                    "UPDATE users SET email = COALESCE($2, email), ",
                    "realname = COALESCE($3, realname), comment = COALESCE($4, comment), ",
                    "password_hash = COALESCE($5, password_hash), ",
                    "sysadmin = COALESCE($6, sysadmin), updated_ms = ",
                    now_ms!(),
                    " WHERE id = $1"
                ))
                .bind(*id)
                .bind(&u.email)
                .bind(&u.realname)
                .bind(&u.comment)
                .bind(&u.password_hash)
                .bind(u.sysadmin)
                .execute(c)
                .await
                .map_err(|e| {
                    refused(
                        e,
                        &format!("e-mail {}", u.email.as_deref().unwrap_or_default()),
                    )
                })?;
                Ok(n.rows_affected() > 0)
            })
        })
        .await
    }

    async fn delete_user(&self, id: UserId) -> Result<bool, MetaError> {
        self.write(Scope::Transaction, &MemberEntity::User(id), |c, e| {
            Box::pin(delete_entity(c, e))
        })
        .await
    }

    async fn create_group(&self, name: &str) -> Result<GroupId, MetaError> {
        self.write(Scope::Statement, name, |c, name| {
            Box::pin(async move {
                sqlx::query_scalar(concat!(
                    "INSERT INTO user_groups (name, created_ms) VALUES ($1, ",
                    now_ms!(),
                    ") RETURNING id"
                ))
                .bind(name)
                .fetch_one(c)
                .await
                .map_err(|e| refused(e, &format!("group {name}")))
            })
        })
        .await
    }

    async fn group_by_name(&self, name: &str) -> Result<Option<Group>, MetaError> {
        let sql = "SELECT id, name, created_ms FROM user_groups WHERE name = $1".to_owned();
        self.one(sql, binds!(name), group_from_row).await
    }

    async fn group(&self, id: GroupId) -> Result<Option<Group>, MetaError> {
        let sql = "SELECT id, name, created_ms FROM user_groups WHERE id = $1".to_owned();
        self.one(sql, binds!(id), group_from_row).await
    }

    async fn list_groups(&self, page: Paging) -> Result<Listing<Group>, MetaError> {
        self.listing(
            "id, name, created_ms",
            "user_groups",
            "name",
            PgArguments::default(),
            page,
            group_from_row,
        )
        .await
    }

    async fn delete_group(&self, id: GroupId) -> Result<bool, MetaError> {
        self.write(Scope::Transaction, &MemberEntity::Group(id), |c, e| {
            Box::pin(delete_entity(c, e))
        })
        .await
    }

    async fn add_to_group(&self, group: GroupId, user: UserId) -> Result<bool, MetaError> {
        self.write(Scope::Transaction, &(group, user), |c, (group, user)| {
            Box::pin(async move {
                let both = found(
                    c,
                    "SELECT 1 FROM user_groups WHERE id = $1 FOR KEY SHARE",
                    *group,
                )
                .await?
                    && found(c, "SELECT 1 FROM users WHERE id = $1 FOR KEY SHARE", *user).await?;
                if both {
                    sqlx::query(
                        "INSERT INTO group_users (group_id, user_id) VALUES ($1, $2) \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(*group)
                    .bind(*user)
                    .execute(c)
                    .await?;
                }
                Ok(both)
            })
        })
        .await
    }

    async fn remove_from_group(&self, group: GroupId, user: UserId) -> Result<bool, MetaError> {
        self.write(Scope::Statement, &(group, user), |c, (group, user)| {
            Box::pin(async move {
                let n = sqlx::query("DELETE FROM group_users WHERE group_id = $1 AND user_id = $2")
                    .bind(*group)
                    .bind(*user)
                    .execute(c)
                    .await?;
                Ok(n.rows_affected() > 0)
            })
        })
        .await
    }

    async fn group_users(&self, group: GroupId) -> Result<Vec<User>, MetaError> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id IN \
             (SELECT user_id FROM group_users WHERE group_id = $1) ORDER BY username"
        );
        self.all(sql, binds!(group), user_from_row).await
    }

    async fn create_project(&self, project: &NewProject) -> Result<ProjectId, MetaError> {
        self.write(Scope::Transaction, project, |c, p| {
            Box::pin(async move {
                let id: i64 = sqlx::query_scalar(concat!(
                    "INSERT INTO projects (name, public, owner_id, created_ms, updated_ms) ",
                    "VALUES ($1, $2, $3, ",
                    now_ms!(),
                    ", ",
                    now_ms!(),
                    ") RETURNING id"
                ))
                .bind(&p.name)
                .bind(p.public)
                .bind(p.owner)
                .fetch_one(&mut *c)
                .await
                .map_err(|e| refused(e, &format!("project {}", p.name)))?;
                if let Some(owner) = p.owner {
                    sqlx::query(
                        "INSERT INTO project_members (project_id, entity_kind, entity_id, role) \
                         VALUES ($1, 'u', $2, $3)",
                    )
                    .bind(id)
                    .bind(owner)
                    .bind(ProjectRole::ProjectAdmin.id())
                    .execute(c)
                    .await?;
                }
                Ok(id)
            })
        })
        .await
    }

    async fn project_by_name(&self, name: &str) -> Result<Option<Project>, MetaError> {
        let sql = format!("SELECT {PROJECT_COLUMNS} FROM projects p WHERE p.name = $1");
        self.one(sql, binds!(name), project_from_row).await
    }

    async fn project(&self, id: ProjectId) -> Result<Option<Project>, MetaError> {
        let sql = format!("SELECT {PROJECT_COLUMNS} FROM projects p WHERE p.id = $1");
        self.one(sql, binds!(id), project_from_row).await
    }

    async fn list_projects(
        &self,
        filter: &ProjectFilter,
        page: Paging,
    ) -> Result<Listing<Project>, MetaError> {
        let (mode, user) = visibility_params(filter.visible_to);
        let from = format!(
            "projects p WHERE ($2::TEXT IS NULL OR strpos(p.name, $2) > 0) \
             AND ($3::BOOLEAN IS NULL OR p.public = $3) \
             AND ($4 = 0 OR p.public OR ($4 = 2 AND p.id IN \
                  (SELECT project_id FROM project_members WHERE {})))",
            membership_of_user("$1")
        );
        let args = binds!(user, filter.name_contains.as_deref(), filter.public, mode);
        self.listing(PROJECT_COLUMNS, &from, "p.name", args, page, |r| {
            project_from_row(r)
        })
        .await
    }

    async fn set_project_public(&self, id: ProjectId, public: bool) -> Result<bool, MetaError> {
        self.write(Scope::Statement, &(id, public), |c, (id, public)| {
            Box::pin(async move {
                let n = sqlx::query(concat!(
                    "UPDATE projects SET public = $2, updated_ms = ",
                    now_ms!(),
                    " WHERE id = $1"
                ))
                .bind(*id)
                .bind(*public)
                .execute(c)
                .await?;
                Ok(n.rows_affected() > 0)
            })
        })
        .await
    }

    async fn delete_project(&self, id: ProjectId) -> Result<bool, MetaError> {
        self.write(Scope::Transaction, &id, |c, id| {
            Box::pin(async move {
                let name: Option<String> =
                    sqlx::query_scalar("SELECT name FROM projects WHERE id = $1 FOR UPDATE")
                        .bind(*id)
                        .fetch_optional(&mut *c)
                        .await?;
                let Some(name) = name else {
                    return Ok(false);
                };
                let (from, to) = project_repo_range(&name);
                let held: Option<i32> = sqlx::query_scalar(
                    "SELECT 1 FROM repositories WHERE name = $1 OR (name >= $2 AND name < $3) \
                     LIMIT 1",
                )
                .bind(&name)
                .bind(&from)
                .bind(&to)
                .fetch_optional(&mut *c)
                .await?;
                if held.is_some() {
                    return Err(MetaError::NotEmpty(format!(
                        "project {name} still holds repositories"
                    ))
                    .into());
                }
                // Its memberships and robots go with it (ON DELETE CASCADE).
                let n = sqlx::query("DELETE FROM projects WHERE id = $1")
                    .bind(*id)
                    .execute(c)
                    .await?;
                Ok(n.rows_affected() > 0)
            })
        })
        .await
    }

    async fn add_member(
        &self,
        project: ProjectId,
        entity: MemberEntity,
        role: ProjectRole,
    ) -> Result<i64, MetaError> {
        let arg = (project, entity, role);
        self.write(Scope::Transaction, &arg, |c, (project, entity, role)| {
            Box::pin(async move {
                let project = *project;
                if !found(
                    c,
                    "SELECT 1 FROM projects WHERE id = $1 FOR KEY SHARE",
                    project,
                )
                .await?
                {
                    return Err(MetaError::NotFound(format!("project {project}")).into());
                }
                let (kind, entity_id) = entity.to_row();
                let (sql, what) = match entity {
                    MemberEntity::User(_) => {
                        ("SELECT 1 FROM users WHERE id = $1 FOR KEY SHARE", "user")
                    }
                    MemberEntity::Group(_) => (
                        "SELECT 1 FROM user_groups WHERE id = $1 FOR KEY SHARE",
                        "group",
                    ),
                };
                if !found(c, sql, entity_id).await? {
                    return Err(MetaError::NotFound(format!("{what} {entity_id}")).into());
                }
                sqlx::query_scalar(
                    "INSERT INTO project_members (project_id, entity_kind, entity_id, role) \
                     VALUES ($1, $2, $3, $4) RETURNING id",
                )
                .bind(project)
                .bind(kind)
                .bind(entity_id)
                .bind(role.id())
                .fetch_one(c)
                .await
                .map_err(|e| {
                    refused(
                        e,
                        &format!("membership of {what} {entity_id} in project {project}"),
                    )
                })
            })
        })
        .await
    }

    async fn member(
        &self,
        project: ProjectId,
        member_id: i64,
    ) -> Result<Option<Member>, MetaError> {
        let sql = format!(
            "SELECT {MEMBER_COLUMNS} FROM {MEMBERS} WHERE pm.project_id = $1 AND pm.id = $2"
        );
        self.one(sql, binds!(project, member_id), member_from_row)
            .await
    }

    async fn set_member_role(
        &self,
        project: ProjectId,
        member_id: i64,
        role: ProjectRole,
    ) -> Result<bool, MetaError> {
        let arg = (project, member_id, role.id());
        self.write(Scope::Statement, &arg, |c, (project, member, role)| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE project_members SET role = $3 WHERE project_id = $1 AND id = $2",
                )
                .bind(*project)
                .bind(*member)
                .bind(*role)
                .execute(c)
                .await?;
                Ok(n.rows_affected() > 0)
            })
        })
        .await
    }

    async fn remove_member(&self, project: ProjectId, member_id: i64) -> Result<bool, MetaError> {
        self.write(
            Scope::Statement,
            &(project, member_id),
            |c, (project, member)| {
                Box::pin(async move {
                    let n = sqlx::query(
                        "DELETE FROM project_members WHERE project_id = $1 AND id = $2",
                    )
                    .bind(*project)
                    .bind(*member)
                    .execute(c)
                    .await?;
                    Ok(n.rows_affected() > 0)
                })
            },
        )
        .await
    }

    async fn list_members(
        &self,
        project: ProjectId,
        name_contains: Option<&str>,
        page: Paging,
    ) -> Result<Listing<Member>, MetaError> {
        self.listing(
            MEMBER_COLUMNS,
            &format!(
                "{MEMBERS} WHERE pm.project_id = $1 \
                 AND ($2::TEXT IS NULL OR strpos(pm.entity_name, $2) > 0)"
            ),
            "pm.entity_name, pm.id",
            binds!(project, name_contains),
            page,
            member_from_row,
        )
        .await
    }

    async fn roles_of(
        &self,
        project: ProjectId,
        user: UserId,
    ) -> Result<Vec<ProjectRole>, MetaError> {
        let sql = format!(
            "SELECT DISTINCT role FROM project_members WHERE project_id = $2 AND {} ORDER BY role",
            membership_of_user("$1")
        );
        self.all(sql, binds!(user, project), |r| stored_role(r.int(0)?))
            .await
    }

    async fn memberships_of(
        &self,
        user: UserId,
    ) -> Result<Vec<(Project, Vec<ProjectRole>)>, MetaError> {
        let sql = format!(
            "SELECT {PROJECT_COLUMNS}, pm.role FROM projects p \
             JOIN (SELECT project_id, role FROM project_members WHERE {}) pm \
             ON pm.project_id = p.id ORDER BY p.name, pm.role",
            membership_of_user("$1")
        );
        let found = self
            .all(sql, binds!(user), |r| Ok((project_from_row(r)?, r.int(7)?)))
            .await?;
        group_memberships(found)
    }

    async fn create_robot(&self, robot: &NewRobot) -> Result<RobotId, MetaError> {
        self.write(Scope::Transaction, robot, |c, b| {
            Box::pin(async move {
                if let RobotLevel::Project(p) = b.level {
                    if !found(c, "SELECT 1 FROM projects WHERE id = $1 FOR KEY SHARE", p).await? {
                        return Err(MetaError::NotFound(format!("project {p}")).into());
                    }
                }
                sqlx::query_scalar(concat!(
                    "INSERT INTO robots (name, description, project_id, secret_hash, ",
                    "expires_ms, disabled, permissions, creator_id, created_ms, updated_ms) ",
                    "VALUES ($1, $2, $3, $4, $5, FALSE, $6, $7, ",
                    now_ms!(),
                    ", ",
                    now_ms!(),
                    ") RETURNING id"
                ))
                .bind(&b.name)
                .bind(&b.description)
                .bind(b.level.project_id())
                .bind(&b.secret_hash)
                .bind(b.expires_ms)
                .bind(&b.permissions)
                .bind(b.creator)
                .fetch_one(c)
                .await
                .map_err(|e| refused(e, &format!("robot {}", b.name)))
            })
        })
        .await
    }

    async fn robot(&self, id: RobotId) -> Result<Option<Robot>, MetaError> {
        let sql = format!("SELECT {ROBOT_COLUMNS} FROM robots WHERE id = $1");
        self.one(sql, binds!(id), robot_from_row).await
    }

    async fn robot_by_name(
        &self,
        level: RobotLevel,
        name: &str,
    ) -> Result<Option<Robot>, MetaError> {
        // The expression of the unique index, so that it serves the lookup.
        let sql = format!(
            "SELECT {ROBOT_COLUMNS} FROM robots WHERE COALESCE(project_id, 0) = $1 AND name = $2"
        );
        self.one(sql, binds!(level.name_scope(), name), robot_from_row)
            .await
    }

    async fn list_robots(
        &self,
        filter: RobotFilter,
        page: Paging,
    ) -> Result<Listing<Robot>, MetaError> {
        let (mode, project) = robot_filter_params(filter);
        self.listing(
            ROBOT_COLUMNS,
            "robots WHERE $1 = 0 OR ($1 = 1 AND project_id IS NULL) \
             OR ($1 = 2 AND project_id = $2)",
            "id",
            binds!(mode, project),
            page,
            robot_from_row,
        )
        .await
    }

    async fn update_robot(&self, id: RobotId, update: &RobotUpdate) -> Result<bool, MetaError> {
        self.write(Scope::Statement, &(id, update), |c, (id, u)| {
            Box::pin(async move {
                let n = sqlx::query(concat!(
                    "UPDATE robots SET description = COALESCE($2, description), ",
                    "expires_ms = CASE WHEN $3 THEN $4 ELSE expires_ms END, ",
                    "disabled = COALESCE($5, disabled), permissions = COALESCE($6, permissions), ",
                    "secret_hash = COALESCE($7, secret_hash), updated_ms = ",
                    now_ms!(),
                    " WHERE id = $1"
                ))
                .bind(*id)
                .bind(&u.description)
                .bind(u.expires_ms.is_some())
                .bind(u.expires_ms.flatten())
                .bind(u.disabled)
                .bind(&u.permissions)
                .bind(&u.secret_hash)
                .execute(c)
                .await?;
                Ok(n.rows_affected() > 0)
            })
        })
        .await
    }

    async fn delete_robot(&self, id: RobotId) -> Result<bool, MetaError> {
        self.change_one("DELETE FROM robots WHERE id = $1", id)
            .await
    }

    async fn append_audit(&self, events: &[AuditEvent]) -> Result<(), MetaError> {
        if events.is_empty() {
            return Ok(());
        }
        self.write(Scope::Statement, events, |c, events| {
            Box::pin(async move {
                // One statement for the batch: a column of each field.
                let time: Vec<i64> = events.iter().map(|e| e.time_ms).collect();
                let text = |f: fn(&AuditEvent) -> &str| -> Vec<String> {
                    events.iter().map(|e| f(e).to_owned()).collect()
                };
                let opt = |f: fn(&AuditEvent) -> &Option<String>| -> Vec<Option<String>> {
                    events.iter().map(|e| f(e).clone()).collect()
                };
                let success: Vec<bool> = events.iter().map(|e| e.success).collect();
                sqlx::query(
                    "INSERT INTO audit_log (time_ms, username, operation, resource_type, \
                     resource, project, source_ip, success) \
                     SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], \
                     $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::BOOLEAN[])",
                )
                .bind(time)
                .bind(text(|e| &e.username))
                .bind(text(|e| &e.operation))
                .bind(text(|e| &e.resource_type))
                .bind(text(|e| &e.resource))
                .bind(opt(|e| &e.project))
                .bind(opt(|e| &e.source_ip))
                .bind(success)
                .execute(c)
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: Paging,
    ) -> Result<Listing<AuditEvent>, MetaError> {
        let args = binds!(
            filter.username.as_deref(),
            filter.operation.as_deref(),
            filter.resource_type.as_deref(),
            filter.resource_contains.as_deref(),
            filter.from_ms,
            filter.to_ms,
            filter.projects.as_deref(),
        );
        self.listing(
            AUDIT_COLUMNS,
            "audit_log WHERE ($1::TEXT IS NULL OR username = $1) \
             AND ($2::TEXT IS NULL OR operation = $2) \
             AND ($3::TEXT IS NULL OR resource_type = $3) \
             AND ($4::TEXT IS NULL OR strpos(resource, $4) > 0) \
             AND ($5::BIGINT IS NULL OR time_ms >= $5) AND ($6::BIGINT IS NULL OR time_ms <= $6) \
             AND ($7::TEXT[] IS NULL OR project = ANY($7))",
            "time_ms DESC, id DESC",
            args,
            page,
            audit_from_row,
        )
        .await
    }

    async fn prune_audit(&self, before_ms: i64) -> Result<u64, MetaError> {
        self.write(Scope::Statement, &before_ms, |c, before| {
            Box::pin(async move {
                let n = sqlx::query("DELETE FROM audit_log WHERE time_ms < $1")
                    .bind(*before)
                    .execute(c)
                    .await?;
                Ok(n.rows_affected())
            })
        })
        .await
    }

    async fn setting(&self, key: &str) -> Result<Option<String>, MetaError> {
        sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(to_meta)
    }

    async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String, MetaError> {
        self.write(Scope::Statement, &(key, value), |c, (key, value)| {
            Box::pin(async move {
                // An insert that meets a concurrent one waits for it to commit, then does
                // nothing; the select after it, a statement of its own, sees the winner's.
                sqlx::query(
                    "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .bind(*key)
                .bind(*value)
                .execute(&mut *c)
                .await?;
                let stored: Option<String> =
                    sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                        .bind(*key)
                        .fetch_optional(c)
                        .await?;
                stored.ok_or(TxError::Again("a setting vanished after its insert"))
            })
        })
        .await
    }

    async fn set_setting(&self, key: &str, value: &str) -> Result<(), MetaError> {
        self.write(Scope::Statement, &(key, value), |c, (key, value)| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO settings (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .bind(*key)
                .bind(*value)
                .execute(c)
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn create_session(&self, session: &Session) -> Result<(), MetaError> {
        self.write(Scope::Statement, session, |c, s| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO sessions (id_hash, user_id, csrf_token, expires_ms) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&s.id_hash)
                .bind(s.user_id)
                .bind(&s.csrf_token)
                .bind(s.expires_ms)
                .execute(c)
                .await
                .map_err(|e| refused(e, "session"))?;
                Ok(())
            })
        })
        .await
    }

    async fn session(&self, id_hash: &str) -> Result<Option<Session>, MetaError> {
        let row = sqlx::query(concat!(
            "SELECT id_hash, user_id, csrf_token, expires_ms FROM sessions ",
            "WHERE id_hash = $1 AND expires_ms > ",
            now_ms!()
        ))
        .bind(id_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(to_meta)?;
        row.map(|r| {
            Ok(Session {
                id_hash: r.text(0)?,
                user_id: r.int(1)?,
                csrf_token: r.text(2)?,
                expires_ms: r.int(3)?,
            })
        })
        .transpose()
    }

    async fn delete_session(&self, id_hash: &str) -> Result<bool, MetaError> {
        self.write(Scope::Statement, id_hash, |c, id_hash| {
            Box::pin(async move {
                let n = sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
                    .bind(id_hash)
                    .execute(c)
                    .await?;
                Ok(n.rows_affected() > 0)
            })
        })
        .await
    }

    async fn prune_sessions(&self) -> Result<u64, MetaError> {
        self.write(Scope::Statement, &(), |c, ()| {
            Box::pin(async move {
                let n = sqlx::query(concat!(
                    "DELETE FROM sessions WHERE expires_ms <= ",
                    now_ms!()
                ))
                .execute(c)
                .await?;
                Ok(n.rows_affected())
            })
        })
        .await
    }

    async fn list_project_repositories(
        &self,
        project: &str,
        name_contains: Option<&str>,
        page: Paging,
    ) -> Result<Listing<RepositoryInfo>, MetaError> {
        let (from, to) = project_repo_range(project);
        self.listing(
            REPOSITORY_COLUMNS,
            "repositories r WHERE (r.name = $1 OR (r.name >= $2 AND r.name < $3)) \
             AND ($4::TEXT IS NULL OR strpos(r.name, $4) > 0)",
            "r.name",
            binds!(project, from, to, name_contains),
            page,
            repository_from_row,
        )
        .await
    }

    async fn search_repositories(
        &self,
        needle: &str,
        page: Paging,
    ) -> Result<Listing<RepositoryInfo>, MetaError> {
        self.listing(
            REPOSITORY_COLUMNS,
            "repositories r WHERE strpos(r.name, $1) > 0",
            "r.name",
            binds!(needle),
            page,
            repository_from_row,
        )
        .await
    }

    async fn list_artifacts(
        &self,
        repo: &str,
        page: Paging,
    ) -> Result<Option<Listing<ArtifactInfo>>, MetaError> {
        let mut tx = self.snapshot().await?;
        let Some(id) = repo_id(&mut tx, repo).await? else {
            return Ok(None);
        };
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM manifests WHERE repo_id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .map_err(to_meta)?;
        let (limit, offset) = page.sql();
        let rows = sqlx::query_with(
            AssertSqlSafe(artifact_page_sql("$1", "$2", "$3")),
            binds!(id, limit, offset),
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(to_meta)?;
        let mut found = Listing {
            items: rows
                .iter()
                .map(artifact_from_row)
                .collect::<Result<_, _>>()?,
            total: total as u64,
        };
        complete_artifacts(&mut tx, id, &mut found.items).await?;
        tx.commit().await.map_err(to_meta)?;
        Ok(Some(found))
    }

    async fn artifact(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<ArtifactInfo>, MetaError> {
        self.artifact_where(repo, "m.digest = $2", digest.to_string())
            .await
    }

    async fn artifact_by_tag(
        &self,
        repo: &str,
        tag: &str,
    ) -> Result<Option<ArtifactInfo>, MetaError> {
        self.artifact_where(
            repo,
            "m.digest = (SELECT digest FROM tags WHERE repo_id = $1 AND name = $2)",
            tag.to_owned(),
        )
        .await
    }

    async fn record_pulls(&self, pulls: &[(String, Digest, i64)]) -> Result<(), MetaError> {
        if pulls.is_empty() {
            return Ok(());
        }
        let mut repos = Vec::with_capacity(pulls.len());
        let mut digests = Vec::with_capacity(pulls.len());
        let mut times = Vec::with_capacity(pulls.len());
        for (r, d, t) in pulls {
            repos.push(r.clone());
            digests.push(d.to_string());
            times.push(*t);
        }
        let arg = (repos, digests, times);
        // One statement, so one transaction: each manifest's latest pull, and a count per
        // pull on its repository. Rows are updated in the order of their keys, and a
        // deadlock with a concurrent batch is retried.
        self.write(Scope::Statement, &arg, |c, (repos, digests, times)| {
            Box::pin(async move {
                sqlx::query(
                    "WITH pulls AS (SELECT m.repo_id, m.digest, p.t \
                         FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[]) AS p(repo, digest, t) \
                         JOIN repositories r ON r.name = p.repo \
                         JOIN manifests m ON m.repo_id = r.id AND m.digest = p.digest), \
                     latest AS (UPDATE manifests m SET pulled_ms = GREATEST(m.pulled_ms, l.t) \
                         FROM (SELECT repo_id, digest, MAX(t) AS t FROM pulls \
                               GROUP BY repo_id, digest ORDER BY repo_id, digest) l \
                         WHERE m.repo_id = l.repo_id AND m.digest = l.digest) \
                     UPDATE repositories r SET pull_count = r.pull_count + c.n \
                     FROM (SELECT repo_id, COUNT(*) AS n FROM pulls GROUP BY repo_id) c \
                     WHERE r.id = c.repo_id",
                )
                .bind(repos)
                .bind(digests)
                .bind(times)
                .execute(c)
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn statistics(&self) -> Result<Statistics, MetaError> {
        let mut tx = self.snapshot().await?;
        let counts = |sql: &'static str| sqlx::query_as::<_, (bool, i64)>(sql);
        let projects = counts("SELECT public, COUNT(*) FROM projects GROUP BY public")
            .fetch_all(&mut *tx)
            .await
            .map_err(to_meta)?;
        // A repository belongs to the project named by its first segment.
        let repos = counts(
            "SELECT p.public, COUNT(*) FROM repositories r \
             JOIN projects p ON p.name = split_part(r.name, '/', 1) GROUP BY p.public",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(to_meta)?;
        let total_storage: i64 = sqlx::query_scalar(
            "SELECT (SELECT COALESCE(SUM(size), 0) FROM blobs)::BIGINT \
             + (SELECT COALESCE(SUM(size), 0) FROM manifests)::BIGINT",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(to_meta)?;
        tx.commit().await.map_err(to_meta)?;
        Ok(statistics(&projects, &repos, total_storage))
    }
}

impl PgMeta {
    /// The manifest of repository `repo` that `condition` picks (`$1` is the repository's id,
    /// `$2` is `arg`), as [`AccessStore::artifact`] describes it.
    async fn artifact_where(
        &self,
        repo: &str,
        condition: &str,
        arg: String,
    ) -> Result<Option<ArtifactInfo>, MetaError> {
        let mut tx = self.snapshot().await?;
        let Some(id) = repo_id(&mut tx, repo).await? else {
            return Ok(None);
        };
        let row = sqlx::query_with(
            AssertSqlSafe(format!(
                "SELECT {ARTIFACT_COLUMNS} FROM manifests m WHERE m.repo_id = $1 AND {condition}"
            )),
            binds!(id, arg),
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(to_meta)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut found = [artifact_from_row(&row)?];
        complete_artifacts(&mut tx, id, &mut found).await?;
        tx.commit().await.map_err(to_meta)?;
        let [a] = found;
        Ok(Some(a))
    }
}
