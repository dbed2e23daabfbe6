//! [`AccessStore`] for [`SqliteMeta`]: the tables of schema version 4.
//!
//! Writes go through the writer thread like every other write (one savepoint each, so a
//! change of several rows is atomic); listings read their count and their page in one read
//! transaction, so the total matches the page. A unique index refusing a row is
//! [`MetaError::AlreadyExists`]; a foreign key refusing one is [`MetaError::NotFound`].

use async_trait::async_trait;
use berth_oci::Digest;
use rusqlite::types::{FromSql, Value};
use rusqlite::{params, params_from_iter, Connection, Row};

use super::{backend, in_savepoint, now_ms, SqliteMeta};
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

/// A write refused by a constraint: a unique index (`what` is taken) or a foreign key (what
/// `what` refers to is missing); any other error as [`backend`] maps it.
fn refused(e: rusqlite::Error, what: &str) -> MetaError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        match f.extended_code {
            rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                return MetaError::AlreadyExists(what.to_owned())
            }
            rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => {
                return MetaError::NotFound(format!("a record {what} refers to"))
            }
            _ => {}
        }
    }
    backend(e)
}

fn col<T: FromSql>(r: &Row<'_>, i: usize) -> Result<T, MetaError> {
    r.get(i).map_err(backend)
}

impl Columns for Row<'_> {
    fn int(&self, i: usize) -> Result<i64, MetaError> {
        col(self, i)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, MetaError> {
        col(self, i)
    }
    fn text(&self, i: usize) -> Result<String, MetaError> {
        col(self, i)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, MetaError> {
        col(self, i)
    }
    fn flag(&self, i: usize) -> Result<bool, MetaError> {
        col(self, i)
    }
}

/// Every row `sql` returns, each through `f`.
pub(super) fn rows<T>(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
    mut f: impl FnMut(&Row<'_>) -> Result<T, MetaError>,
) -> Result<Vec<T>, MetaError> {
    let mut stmt = conn.prepare_cached(sql).map_err(backend)?;
    let mut rows = stmt.query(args).map_err(backend)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(backend)? {
        out.push(f(r)?);
    }
    Ok(out)
}

/// The first row `sql` returns, through `f`.
pub(super) fn row<T>(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
    f: impl FnOnce(&Row<'_>) -> Result<T, MetaError>,
) -> Result<Option<T>, MetaError> {
    let mut stmt = conn.prepare_cached(sql).map_err(backend)?;
    let mut rows = stmt.query(args).map_err(backend)?;
    rows.next().map_err(backend)?.map(f).transpose()
}

/// Whether `sql` returns a row.
fn exists(conn: &Connection, sql: &str, args: impl rusqlite::Params) -> Result<bool, MetaError> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.exists(args))
        .map_err(backend)
}

/// Run a statement that changes rows; returns how many.
pub(super) fn change(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql).and_then(|mut s| s.execute(args))
}

/// Run a statement that changes rows; returns whether it changed any.
fn changed(conn: &Connection, sql: &str, args: impl rusqlite::Params) -> Result<bool, MetaError> {
    change(conn, sql, args).map(|n| n > 0).map_err(backend)
}

/// An id for a new row of `table` (`users`, `robots`) that no row of it ever had. SQLite
/// gives a new row the largest id plus one, which is a deleted row's id when the newest row
/// was deleted; tokens name their account by id, so the deleted account's tokens would work
/// for the new one. The last id handed out is kept in `settings` (PostgreSQL's identity
/// columns never reuse an id).
fn unused_id(conn: &Connection, table: &str) -> Result<i64, MetaError> {
    let key = format!("last_id.{table}");
    let last: i64 = row(
        conn,
        "SELECT value FROM settings WHERE key = ?1",
        [&key],
        |r| col::<String>(r, 0),
    )?
    .and_then(|v| v.parse().ok())
    .unwrap_or(0);
    let max: i64 = row(
        conn,
        &format!("SELECT COALESCE(MAX(id), 0) FROM {table}"),
        [],
        |r| col(r, 0),
    )?
    .unwrap_or(0);
    let id = last.max(max) + 1;
    change(
        conn,
        "INSERT INTO settings (key, value) VALUES (?1, ?2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, id.to_string()],
    )
    .map_err(backend)?;
    Ok(id)
}

/// Delete the user or group `id` (of `table`) with its project memberships, which name it
/// without a foreign key (an entity is a user or a group). Whatever refers to it by a
/// foreign key goes with it (ON DELETE CASCADE): group memberships, sessions.
fn delete_entity(conn: &Connection, entity: MemberEntity) -> Result<bool, MetaError> {
    let (kind, id) = entity.to_row();
    let table = match entity {
        MemberEntity::User(_) => "users",
        MemberEntity::Group(_) => "user_groups",
    };
    change(
        conn,
        "DELETE FROM project_members WHERE entity_kind = ?1 AND entity_id = ?2",
        params![kind, id],
    )
    .map_err(backend)?;
    changed(conn, &format!("DELETE FROM {table} WHERE id = ?1"), [id])
}

/// A page of `SELECT {columns} FROM {from} ORDER BY {order}` with the count of all its rows,
/// read in one transaction. `from` (with its conditions) uses every one of `args` (`?1`...).
pub(super) fn listing<T>(
    conn: &Connection,
    columns: &str,
    from: &str,
    order: &str,
    mut args: Vec<Value>,
    page: Paging,
    f: impl FnMut(&Row<'_>) -> Result<T, MetaError>,
) -> Result<Listing<T>, MetaError> {
    // One savepoint, so that the count and the page see the same snapshot (nested in the
    // caller's, if it has one).
    in_savepoint(conn, |conn| {
        let total: i64 = conn
            .prepare_cached(&format!("SELECT COUNT(*) FROM {from}"))
            .and_then(|mut s| s.query_row(params_from_iter(args.iter()), |r| r.get(0)))
            .map_err(backend)?;
        let (limit, offset) = page.sql();
        let n = args.len();
        args.push(Value::Integer(limit));
        args.push(Value::Integer(offset));
        let sql = page_sql(
            columns,
            from,
            order,
            &format!("?{}", n + 1),
            &format!("?{}", n + 2),
        );
        let items = rows(conn, &sql, params_from_iter(args), f)?;
        Ok(Listing {
            items,
            total: total as u64,
        })
    })
}

fn text(s: Option<&str>) -> Value {
    s.map_or(Value::Null, |s| Value::Text(s.to_owned()))
}

/// The columns [`repository_from_row`] reads, of `repositories r`. Its last change is the
/// newest of its creation, its manifests' pushes and its tags' moves (times in seconds).
const REPOSITORY_COLUMNS: &str =
    "r.name, (SELECT COUNT(*) FROM manifests m WHERE m.repo_id = r.id), \
    r.pull_count, r.created_at, MAX(r.created_at, \
    COALESCE((SELECT MAX(created_at) FROM manifests m WHERE m.repo_id = r.id), 0), \
    COALESCE((SELECT MAX(updated_at) FROM tags t WHERE t.repo_id = r.id), 0))";

/// Fill in the tags and child manifests of `a`, of repository `repo_id`: point lookups by
/// index, cheap in an embedded database, so a page costs two per artifact whatever the
/// repository's size.
fn complete_artifact(
    conn: &Connection,
    repo_id: i64,
    a: &mut ArtifactInfo,
) -> Result<(), MetaError> {
    let digest = a.digest.to_string();
    a.tags = rows(
        conn,
        // Without the index named, SQLite walks the repository's tags in name order to skip a
        // sort: every tag of the repository per artifact (12 ms each at 100,000 tags).
        "SELECT name, updated_at FROM tags INDEXED BY tags_digest \
         WHERE repo_id = ?1 AND digest = ?2 ORDER BY name",
        params![repo_id, digest],
        |r| Ok((col(r, 0)?, secs_to_ms(col(r, 1)?))),
    )?;
    a.references = rows(
        conn,
        "SELECT target FROM manifest_refs WHERE repo_id = ?1 AND manifest = ?2 AND kind = 1 \
         ORDER BY target",
        params![repo_id, digest],
        |r| stored_digest(&col::<String>(r, 0)?),
    )?;
    Ok(())
}

fn repo_id_by_name(conn: &Connection, name: &str) -> Result<Option<i64>, MetaError> {
    row(
        conn,
        "SELECT id FROM repositories WHERE name = ?1",
        [name],
        |r| col(r, 0),
    )
}

#[async_trait]
impl AccessStore for SqliteMeta {
    async fn create_user(&self, user: &NewUser) -> Result<UserId, MetaError> {
        let u = user.clone();
        self.write(move |conn| {
            let id = unused_id(conn, "users")?;
            change(
                conn,
                "INSERT INTO users (username, email, realname, comment, password_hash, sysadmin, \
                 created_ms, updated_ms, id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
                params![
                    u.username,
                    u.email,
                    u.realname,
                    u.comment,
                    u.password_hash,
                    u.sysadmin,
                    now_ms(),
                    id
                ],
            )
            .map_err(|e| refused(e, &user_label(&u.username, &u.email)))?;
            Ok(id)
        })
        .await
    }

    async fn user(&self, id: UserId) -> Result<Option<User>, MetaError> {
        self.lookup(|conn| {
            row(
                conn,
                &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"),
                [id],
                |r| user_from_row(r),
            )
        })
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<User>, MetaError> {
        self.lookup(|conn| {
            row(
                conn,
                &format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?1"),
                [username],
                |r| user_from_row(r),
            )
        })
    }

    async fn list_users(
        &self,
        name_contains: Option<&str>,
        page: Paging,
    ) -> Result<Listing<User>, MetaError> {
        let args = vec![text(name_contains)];
        self.read(move |conn| {
            listing(
                conn,
                USER_COLUMNS,
                "users WHERE (?1 IS NULL OR instr(username, ?1) > 0)",
                "username",
                args,
                page,
                |r| user_from_row(r),
            )
        })
        .await
    }

    async fn update_user(&self, id: UserId, update: &UserUpdate) -> Result<bool, MetaError> {
        let u = update.clone();
        self.write(move |conn| {
            change(
                conn,
                "UPDATE users SET email = COALESCE(?2, email), realname = COALESCE(?3, realname), \
                 comment = COALESCE(?4, comment), password_hash = COALESCE(?5, password_hash), \
                 sysadmin = COALESCE(?6, sysadmin), updated_ms = ?7 WHERE id = ?1",
                params![
                    id,
                    u.email,
                    u.realname,
                    u.comment,
                    u.password_hash,
                    u.sysadmin,
                    now_ms()
                ],
            )
            .map(|n| n > 0)
            .map_err(|e| refused(e, &format!("e-mail {}", u.email.unwrap_or_default())))
        })
        .await
    }

    async fn delete_user(&self, id: UserId) -> Result<bool, MetaError> {
        self.write(move |conn| delete_entity(conn, MemberEntity::User(id)))
            .await
    }

    async fn create_group(&self, name: &str) -> Result<GroupId, MetaError> {
        let name = name.to_owned();
        self.write(move |conn| {
            change(
                conn,
                "INSERT INTO user_groups (name, created_ms) VALUES (?1, ?2)",
                params![name, now_ms()],
            )
            .map_err(|e| refused(e, &format!("group {name}")))?;
            Ok(conn.last_insert_rowid())
        })
        .await
    }

    async fn group_by_name(&self, name: &str) -> Result<Option<Group>, MetaError> {
        self.lookup(|conn| {
            row(
                conn,
                "SELECT id, name, created_ms FROM user_groups WHERE name = ?1",
                [name],
                |r| group_from_row(r),
            )
        })
    }

    async fn group(&self, id: GroupId) -> Result<Option<Group>, MetaError> {
        self.lookup(|conn| {
            row(
                conn,
                "SELECT id, name, created_ms FROM user_groups WHERE id = ?1",
                [id],
                |r| group_from_row(r),
            )
        })
    }

    async fn list_groups(&self, page: Paging) -> Result<Listing<Group>, MetaError> {
        self.read(move |conn| {
            listing(
                conn,
                "id, name, created_ms",
                "user_groups",
                "name",
                Vec::new(),
                page,
                |r| group_from_row(r),
            )
        })
        .await
    }

    async fn delete_group(&self, id: GroupId) -> Result<bool, MetaError> {
        self.write(move |conn| delete_entity(conn, MemberEntity::Group(id)))
            .await
    }

    async fn add_to_group(&self, group: GroupId, user: UserId) -> Result<bool, MetaError> {
        self.write(move |conn| {
            let found = exists(
                conn,
                "SELECT 1 FROM user_groups g, users u WHERE g.id = ?1 AND u.id = ?2",
                [group, user],
            )?;
            if found {
                change(
                    conn,
                    "INSERT OR IGNORE INTO group_users (group_id, user_id) VALUES (?1, ?2)",
                    [group, user],
                )
                .map_err(backend)?;
            }
            Ok(found)
        })
        .await
    }

    async fn remove_from_group(&self, group: GroupId, user: UserId) -> Result<bool, MetaError> {
        self.write(move |conn| {
            changed(
                conn,
                "DELETE FROM group_users WHERE group_id = ?1 AND user_id = ?2",
                [group, user],
            )
        })
        .await
    }

    async fn group_users(&self, group: GroupId) -> Result<Vec<User>, MetaError> {
        self.read(move |conn| {
            rows(
                conn,
                &format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE id IN \
                     (SELECT user_id FROM group_users WHERE group_id = ?1) ORDER BY username"
                ),
                [group],
                |r| user_from_row(r),
            )
        })
        .await
    }

    async fn create_project(&self, project: &NewProject) -> Result<ProjectId, MetaError> {
        let p = project.clone();
        self.write(move |conn| {
            let now = now_ms();
            change(
                conn,
                "INSERT INTO projects (name, public, owner_id, created_ms, updated_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?4)",
                params![p.name, p.public, p.owner, now],
            )
            .map_err(|e| refused(e, &format!("project {}", p.name)))?;
            let id = conn.last_insert_rowid();
            if let Some(owner) = p.owner {
                change(
                    conn,
                    "INSERT INTO project_members (project_id, entity_kind, entity_id, role) \
                     VALUES (?1, 'u', ?2, ?3)",
                    params![id, owner, ProjectRole::ProjectAdmin.id()],
                )
                .map_err(backend)?;
            }
            Ok(id)
        })
        .await
    }

    async fn project_by_name(&self, name: &str) -> Result<Option<Project>, MetaError> {
        self.lookup(|conn| {
            row(
                conn,
                &format!("SELECT {PROJECT_COLUMNS} FROM projects p WHERE p.name = ?1"),
                [name],
                |r| project_from_row(r),
            )
        })
    }

    async fn project(&self, id: ProjectId) -> Result<Option<Project>, MetaError> {
        self.lookup(|conn| {
            row(
                conn,
                &format!("SELECT {PROJECT_COLUMNS} FROM projects p WHERE p.id = ?1"),
                [id],
                |r| project_from_row(r),
            )
        })
    }

    async fn list_projects(
        &self,
        filter: &ProjectFilter,
        page: Paging,
    ) -> Result<Listing<Project>, MetaError> {
        let (mode, user) = visibility_params(filter.visible_to);
        let args = vec![
            Value::Integer(user),
            text(filter.name_contains.as_deref()),
            filter
                .public
                .map_or(Value::Null, |p| Value::Integer(p.into())),
            Value::Integer(mode),
        ];
        self.read(move |conn| {
            listing(
                conn,
                PROJECT_COLUMNS,
                &format!(
                    "projects p WHERE (?2 IS NULL OR instr(p.name, ?2) > 0) \
                     AND (?3 IS NULL OR p.public = ?3) \
                     AND (?4 = 0 OR p.public OR (?4 = 2 AND p.id IN \
                          (SELECT project_id FROM project_members WHERE {})))",
                    membership_of_user("?1")
                ),
                "p.name",
                args,
                page,
                |r| project_from_row(r),
            )
        })
        .await
    }

    async fn set_project_public(&self, id: ProjectId, public: bool) -> Result<bool, MetaError> {
        self.write(move |conn| {
            changed(
                conn,
                "UPDATE projects SET public = ?2, updated_ms = ?3 WHERE id = ?1",
                params![id, public, now_ms()],
            )
        })
        .await
    }

    async fn delete_project(&self, id: ProjectId) -> Result<bool, MetaError> {
        self.write(move |conn| {
            let Some(name) = row(conn, "SELECT name FROM projects WHERE id = ?1", [id], |r| {
                col::<String>(r, 0)
            })?
            else {
                return Ok(false);
            };
            let (from, to) = project_repo_range(&name);
            if exists(
                conn,
                "SELECT 1 FROM repositories WHERE name = ?1 OR (name >= ?2 AND name < ?3)",
                [&name, &from, &to],
            )? {
                return Err(MetaError::NotEmpty(format!(
                    "project {name} still holds repositories"
                )));
            }
            // Its memberships and robots go with it (ON DELETE CASCADE).
            changed(conn, "DELETE FROM projects WHERE id = ?1", [id])
        })
        .await
    }

    async fn add_member(
        &self,
        project: ProjectId,
        entity: MemberEntity,
        role: ProjectRole,
    ) -> Result<i64, MetaError> {
        self.write(move |conn| {
            if !exists(conn, "SELECT 1 FROM projects WHERE id = ?1", [project])? {
                return Err(MetaError::NotFound(format!("project {project}")));
            }
            let (kind, entity_id) = entity.to_row();
            let (sql, what) = match entity {
                MemberEntity::User(_) => ("SELECT 1 FROM users WHERE id = ?1", "user"),
                MemberEntity::Group(_) => ("SELECT 1 FROM user_groups WHERE id = ?1", "group"),
            };
            if !exists(conn, sql, [entity_id])? {
                return Err(MetaError::NotFound(format!("{what} {entity_id}")));
            }
            change(
                conn,
                "INSERT INTO project_members (project_id, entity_kind, entity_id, role) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![project, kind, entity_id, role.id()],
            )
            .map_err(|e| {
                refused(
                    e,
                    &format!("membership of {what} {entity_id} in project {project}"),
                )
            })?;
            Ok(conn.last_insert_rowid())
        })
        .await
    }

    async fn member(
        &self,
        project: ProjectId,
        member_id: i64,
    ) -> Result<Option<Member>, MetaError> {
        self.lookup(|conn| {
            row(
                conn,
                &format!(
                    "SELECT {MEMBER_COLUMNS} FROM {MEMBERS} \
                     WHERE pm.project_id = ?1 AND pm.id = ?2"
                ),
                [project, member_id],
                |r| member_from_row(r),
            )
        })
    }

    async fn set_member_role(
        &self,
        project: ProjectId,
        member_id: i64,
        role: ProjectRole,
    ) -> Result<bool, MetaError> {
        self.write(move |conn| {
            changed(
                conn,
                "UPDATE project_members SET role = ?3 WHERE project_id = ?1 AND id = ?2",
                [project, member_id, role.id()],
            )
        })
        .await
    }

    async fn remove_member(&self, project: ProjectId, member_id: i64) -> Result<bool, MetaError> {
        self.write(move |conn| {
            changed(
                conn,
                "DELETE FROM project_members WHERE project_id = ?1 AND id = ?2",
                [project, member_id],
            )
        })
        .await
    }

    async fn list_members(
        &self,
        project: ProjectId,
        name_contains: Option<&str>,
        page: Paging,
    ) -> Result<Listing<Member>, MetaError> {
        let args = vec![Value::Integer(project), text(name_contains)];
        self.read(move |conn| {
            listing(
                conn,
                MEMBER_COLUMNS,
                &format!(
                    "{MEMBERS} WHERE pm.project_id = ?1 \
                     AND (?2 IS NULL OR instr(pm.entity_name, ?2) > 0)"
                ),
                "pm.entity_name, pm.id",
                args,
                page,
                |r| member_from_row(r),
            )
        })
        .await
    }

    async fn roles_of(
        &self,
        project: ProjectId,
        user: UserId,
    ) -> Result<Vec<ProjectRole>, MetaError> {
        let ids = self.lookup(|conn| {
            rows(
                conn,
                &format!(
                    "SELECT DISTINCT role FROM project_members \
                     WHERE project_id = ?2 AND {} ORDER BY role",
                    membership_of_user("?1")
                ),
                [user, project],
                |r| col::<i64>(r, 0),
            )
        })?;
        ids.into_iter().map(stored_role).collect()
    }

    async fn memberships_of(
        &self,
        user: UserId,
    ) -> Result<Vec<(Project, Vec<ProjectRole>)>, MetaError> {
        let found = self
            .read(move |conn| {
                rows(
                    conn,
                    &format!(
                        "SELECT {PROJECT_COLUMNS}, pm.role FROM projects p \
                         JOIN (SELECT project_id, role FROM project_members \
                               WHERE {}) pm ON pm.project_id = p.id \
                         ORDER BY p.name, pm.role",
                        membership_of_user("?1")
                    ),
                    [user],
                    |r| Ok((project_from_row(r)?, col::<i64>(r, 7)?)),
                )
            })
            .await?;
        group_memberships(found)
    }

    async fn create_robot(&self, robot: &NewRobot) -> Result<RobotId, MetaError> {
        let b = robot.clone();
        self.write(move |conn| {
            if let RobotLevel::Project(p) = b.level {
                if !exists(conn, "SELECT 1 FROM projects WHERE id = ?1", [p])? {
                    return Err(MetaError::NotFound(format!("project {p}")));
                }
            }
            let now = now_ms();
            let id = unused_id(conn, "robots")?;
            change(
                conn,
                "INSERT INTO robots (name, description, project_id, secret_hash, expires_ms, \
                 disabled, permissions, creator_id, created_ms, updated_ms, id) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?8, ?8, ?9)",
                params![
                    b.name,
                    b.description,
                    b.level.project_id(),
                    b.secret_hash,
                    b.expires_ms,
                    b.permissions,
                    b.creator,
                    now,
                    id
                ],
            )
            .map_err(|e| refused(e, &format!("robot {}", b.name)))?;
            Ok(id)
        })
        .await
    }

    async fn robot(&self, id: RobotId) -> Result<Option<Robot>, MetaError> {
        self.lookup(|conn| {
            row(
                conn,
                &format!("SELECT {ROBOT_COLUMNS} FROM robots WHERE id = ?1"),
                [id],
                |r| robot_from_row(r),
            )
        })
    }

    async fn robot_by_name(
        &self,
        level: RobotLevel,
        name: &str,
    ) -> Result<Option<Robot>, MetaError> {
        self.lookup(|conn| {
            // The expression of the unique index, so that it serves the lookup.
            row(
                conn,
                &format!(
                    "SELECT {ROBOT_COLUMNS} FROM robots \
                     WHERE COALESCE(project_id, 0) = ?1 AND name = ?2"
                ),
                params![level.name_scope(), name],
                |r| robot_from_row(r),
            )
        })
    }

    async fn list_robots(
        &self,
        filter: RobotFilter,
        page: Paging,
    ) -> Result<Listing<Robot>, MetaError> {
        let (mode, project) = robot_filter_params(filter);
        let args = vec![Value::Integer(mode), Value::Integer(project)];
        self.read(move |conn| {
            listing(
                conn,
                ROBOT_COLUMNS,
                "robots WHERE ?1 = 0 OR (?1 = 1 AND project_id IS NULL) \
                 OR (?1 = 2 AND project_id = ?2)",
                "id",
                args,
                page,
                |r| robot_from_row(r),
            )
        })
        .await
    }

    async fn update_robot(&self, id: RobotId, update: &RobotUpdate) -> Result<bool, MetaError> {
        let u = update.clone();
        self.write(move |conn| {
            changed(
                conn,
                "UPDATE robots SET description = COALESCE(?2, description), \
                 expires_ms = CASE WHEN ?3 THEN ?4 ELSE expires_ms END, \
                 disabled = COALESCE(?5, disabled), permissions = COALESCE(?6, permissions), \
                 secret_hash = COALESCE(?7, secret_hash), updated_ms = ?8 WHERE id = ?1",
                params![
                    id,
                    u.description,
                    u.expires_ms.is_some(),
                    u.expires_ms.flatten(),
                    u.disabled,
                    u.permissions,
                    u.secret_hash,
                    now_ms()
                ],
            )
        })
        .await
    }

    async fn delete_robot(&self, id: RobotId) -> Result<bool, MetaError> {
        self.write(move |conn| changed(conn, "DELETE FROM robots WHERE id = ?1", [id]))
            .await
    }

    async fn append_audit(&self, events: &[AuditEvent]) -> Result<(), MetaError> {
        if events.is_empty() {
            return Ok(());
        }
        let events = events.to_vec();
        self.write(move |conn| {
            let mut insert = conn
                .prepare_cached(
                    "INSERT INTO audit_log (time_ms, username, operation, resource_type, \
                     resource, project, source_ip, success) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(backend)?;
            for e in &events {
                insert
                    .execute(params![
                        e.time_ms,
                        e.username,
                        e.operation,
                        e.resource_type,
                        e.resource,
                        e.project,
                        e.source_ip,
                        e.success
                    ])
                    .map_err(backend)?;
            }
            Ok(())
        })
        .await
    }

    async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: Paging,
    ) -> Result<Listing<AuditEvent>, MetaError> {
        let mut args = vec![
            text(filter.username.as_deref()),
            text(filter.operation.as_deref()),
            text(filter.resource_type.as_deref()),
            text(filter.resource_contains.as_deref()),
            filter.from_ms.map_or(Value::Null, Value::Integer),
            filter.to_ms.map_or(Value::Null, Value::Integer),
        ];
        // Every parameter must appear in the statement: ?7 says whether projects filter.
        args.push(Value::Integer(filter.projects.is_some().into()));
        let projects = filter.projects.clone().unwrap_or_default();
        let first = args.len() + 1;
        let list = (first..first + projects.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        args.extend(projects.into_iter().map(Value::Text));
        let from = format!(
            "audit_log WHERE (?1 IS NULL OR username = ?1) AND (?2 IS NULL OR operation = ?2) \
             AND (?3 IS NULL OR resource_type = ?3) AND (?4 IS NULL OR instr(resource, ?4) > 0) \
             AND (?5 IS NULL OR time_ms >= ?5) AND (?6 IS NULL OR time_ms <= ?6) \
             AND (NOT ?7 OR project IN ({list}))"
        );
        self.read(move |conn| {
            listing(
                conn,
                AUDIT_COLUMNS,
                &from,
                "time_ms DESC, id DESC",
                args,
                page,
                |r| audit_from_row(r),
            )
        })
        .await
    }

    async fn prune_audit(&self, before_ms: i64) -> Result<u64, MetaError> {
        self.write(move |conn| {
            change(
                conn,
                "DELETE FROM audit_log WHERE time_ms < ?1",
                [before_ms],
            )
            .map(|n| n as u64)
            .map_err(backend)
        })
        .await
    }

    async fn setting(&self, key: &str) -> Result<Option<String>, MetaError> {
        self.lookup(|conn| {
            row(
                conn,
                "SELECT value FROM settings WHERE key = ?1",
                [key],
                |r| col(r, 0),
            )
        })
    }

    async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String, MetaError> {
        let (key, value) = (key.to_owned(), value.to_owned());
        // One writer: nothing runs between the insert and the read.
        self.write(move |conn| {
            change(
                conn,
                "INSERT OR IGNORE INTO settings (key, value) VALUES (?1, ?2)",
                [&key, &value],
            )
            .map_err(backend)?;
            row(
                conn,
                "SELECT value FROM settings WHERE key = ?1",
                [&key],
                |r| col(r, 0),
            )?
            .ok_or_else(|| MetaError::Backend(format!("setting {key} vanished")))
        })
        .await
    }

    async fn set_setting(&self, key: &str, value: &str) -> Result<(), MetaError> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.write(move |conn| {
            change(
                conn,
                "INSERT INTO settings (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [&key, &value],
            )
            .map(drop)
            .map_err(backend)
        })
        .await
    }

    async fn create_session(&self, session: &Session) -> Result<(), MetaError> {
        let s = session.clone();
        self.write(move |conn| {
            change(
                conn,
                "INSERT INTO sessions (id_hash, user_id, csrf_token, expires_ms) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![s.id_hash, s.user_id, s.csrf_token, s.expires_ms],
            )
            .map(drop)
            .map_err(|e| refused(e, "session"))
        })
        .await
    }

    async fn session(&self, id_hash: &str) -> Result<Option<Session>, MetaError> {
        self.lookup(|conn| {
            row(
                conn,
                "SELECT id_hash, user_id, csrf_token, expires_ms FROM sessions \
                 WHERE id_hash = ?1 AND expires_ms > ?2",
                params![id_hash, now_ms()],
                |r| {
                    Ok(Session {
                        id_hash: col(r, 0)?,
                        user_id: col(r, 1)?,
                        csrf_token: col(r, 2)?,
                        expires_ms: col(r, 3)?,
                    })
                },
            )
        })
    }

    async fn delete_session(&self, id_hash: &str) -> Result<bool, MetaError> {
        let id_hash = id_hash.to_owned();
        self.write(move |conn| changed(conn, "DELETE FROM sessions WHERE id_hash = ?1", [id_hash]))
            .await
    }

    async fn prune_sessions(&self) -> Result<u64, MetaError> {
        self.write(move |conn| {
            change(
                conn,
                "DELETE FROM sessions WHERE expires_ms <= ?1",
                [now_ms()],
            )
            .map(|n| n as u64)
            .map_err(backend)
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
        let args = vec![
            Value::Text(project.to_owned()),
            Value::Text(from),
            Value::Text(to),
            text(name_contains),
        ];
        self.read(move |conn| {
            listing(
                conn,
                REPOSITORY_COLUMNS,
                "repositories r WHERE (r.name = ?1 OR (r.name >= ?2 AND r.name < ?3)) \
                 AND (?4 IS NULL OR instr(r.name, ?4) > 0)",
                "r.name",
                args,
                page,
                |r| repository_from_row(r),
            )
        })
        .await
    }

    async fn search_repositories(
        &self,
        needle: &str,
        page: Paging,
    ) -> Result<Listing<RepositoryInfo>, MetaError> {
        let args = vec![Value::Text(needle.to_owned())];
        self.read(move |conn| {
            listing(
                conn,
                REPOSITORY_COLUMNS,
                "repositories r WHERE instr(r.name, ?1) > 0",
                "r.name",
                args,
                page,
                |r| repository_from_row(r),
            )
        })
        .await
    }

    async fn list_artifacts(
        &self,
        repo: &str,
        page: Paging,
    ) -> Result<Option<Listing<ArtifactInfo>>, MetaError> {
        let repo = repo.to_owned();
        self.read(move |conn| {
            in_savepoint(conn, |tx| {
                let Some(id) = repo_id_by_name(tx, &repo)? else {
                    return Ok(None);
                };
                let total: i64 = row(
                    tx,
                    "SELECT COUNT(*) FROM manifests WHERE repo_id = ?1",
                    [id],
                    |r| col(r, 0),
                )?
                .unwrap_or(0);
                let (limit, offset) = page.sql();
                let mut found = Listing {
                    items: rows(
                        tx,
                        &artifact_page_sql("?1", "?2", "?3"),
                        [id, limit, offset],
                        |r| artifact_from_row(r),
                    )?,
                    total: total as u64,
                };
                for a in &mut found.items {
                    complete_artifact(tx, id, a)?;
                }
                Ok(Some(found))
            })
        })
        .await
    }

    async fn artifact(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<ArtifactInfo>, MetaError> {
        self.artifact_where(repo, "m.digest = ?2", digest.to_string())
            .await
    }

    async fn artifact_by_tag(
        &self,
        repo: &str,
        tag: &str,
    ) -> Result<Option<ArtifactInfo>, MetaError> {
        self.artifact_where(
            repo,
            "m.digest = (SELECT digest FROM tags WHERE repo_id = ?1 AND name = ?2)",
            tag.to_owned(),
        )
        .await
    }

    async fn record_pulls(&self, pulls: &[(String, Digest, i64)]) -> Result<(), MetaError> {
        if pulls.is_empty() {
            return Ok(());
        }
        let pulls: Vec<(String, String, i64)> = pulls
            .iter()
            .map(|(r, d, t)| (r.clone(), d.to_string(), *t))
            .collect();
        self.write(move |conn| {
            for (repo, digest, time_ms) in &pulls {
                let Some(id) = repo_id_by_name(conn, repo)? else {
                    continue;
                };
                let n = change(
                    conn,
                    "UPDATE manifests SET pulled_ms = MAX(COALESCE(pulled_ms, ?3), ?3) \
                     WHERE repo_id = ?1 AND digest = ?2",
                    params![id, digest, time_ms],
                )
                .map_err(backend)?;
                if n > 0 {
                    change(
                        conn,
                        "UPDATE repositories SET pull_count = pull_count + 1 WHERE id = ?1",
                        [id],
                    )
                    .map_err(backend)?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn statistics(&self) -> Result<Statistics, MetaError> {
        self.read(move |conn| {
            in_savepoint(conn, |tx| {
                let projects = rows(
                    tx,
                    "SELECT public, COUNT(*) FROM projects GROUP BY public",
                    [],
                    |r| Ok((col::<bool>(r, 0)?, col::<i64>(r, 1)?)),
                )?;
                // A repository belongs to the project named by its first segment.
                let repos = rows(
                    tx,
                    "SELECT p.public, COUNT(*) FROM repositories r JOIN projects p ON p.name = \
                 CASE WHEN instr(r.name, '/') > 0 THEN substr(r.name, 1, instr(r.name, '/') - 1) \
                 ELSE r.name END GROUP BY p.public",
                    [],
                    |r| Ok((col::<bool>(r, 0)?, col::<i64>(r, 1)?)),
                )?;
                let total_storage = row(
                    tx,
                    "SELECT (SELECT COALESCE(SUM(size), 0) FROM blobs) \
                 + (SELECT COALESCE(SUM(size), 0) FROM manifests)",
                    [],
                    |r| col::<i64>(r, 0),
                )?
                .unwrap_or(0);
                Ok(statistics(&projects, &repos, total_storage))
            })
        })
        .await
    }
}

impl SqliteMeta {
    /// The manifest of repository `repo` that `condition` picks (`?1` is the repository's id,
    /// `?2` is `arg`), as [`AccessStore::artifact`] describes it.
    async fn artifact_where(
        &self,
        repo: &str,
        condition: &'static str,
        arg: String,
    ) -> Result<Option<ArtifactInfo>, MetaError> {
        let repo = repo.to_owned();
        self.read(move |conn| {
            in_savepoint(conn, |tx| {
                let Some(id) = repo_id_by_name(tx, &repo)? else {
                    return Ok(None);
                };
                let found = row(
                    tx,
                    &format!("SELECT {ARTIFACT_COLUMNS} FROM manifests m WHERE m.repo_id = ?1 AND {condition}"),
                    params![id, arg],
                    |r| artifact_from_row(r),
                )?;
                let Some(mut a) = found else {
                    return Ok(None);
                };
                complete_artifact(tx, id, &mut a)?;
                Ok(Some(a))
            })
        })
        .await
    }
}
