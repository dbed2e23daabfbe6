//! [`RetentionStore`] for [`PgMeta`] ([`crate::retention`]). Writes of several statements
//! (a run with its job) are one transaction; times are the database's clock, like jobs'.

use async_trait::async_trait;
use berth_oci::{Digest, RepoName};
use sqlx::postgres::{PgArguments, PgConnection, PgRow};
use sqlx::{Arguments, AssertSqlSafe};

use super::{insert_job, job_row, to_meta, PgMeta, Scope, TxError};
use crate::jobs::NewJob;
use crate::retention::{
    artifact_from_row, artifacts_sql, changed_since_plan, execution_from_row, policy_from_row,
    task_columns, task_from_row, EXECUTION_COLUMNS, POLICY_COLUMNS, POLICY_SOURCE,
};
use crate::{
    Listing, MetaError, Paging, ProjectId, RetentionArtifact, RetentionDelete, RetentionExecution,
    RetentionPolicy, RetentionStore, RetentionTask,
};

/// One argument, `$1`.
fn one_arg(v: i64) -> Result<PgArguments, MetaError> {
    let mut args = PgArguments::default();
    args.add(v)
        .map_err(|e| MetaError::Backend(format!("binding a parameter: {e}")))?;
    Ok(args)
}

impl PgMeta {
    async fn retention_row<T>(
        &self,
        sql: String,
        arg: i64,
        f: impl FnOnce(&PgRow) -> Result<T, MetaError>,
    ) -> Result<Option<T>, MetaError> {
        sqlx::query(AssertSqlSafe(sql))
            .bind(arg)
            .fetch_optional(&self.pool)
            .await
            .map_err(to_meta)?
            .as_ref()
            .map(f)
            .transpose()
    }
}

async fn create_policy(conn: &mut PgConnection, p: &RetentionPolicy) -> Result<i64, TxError> {
    // The project's row is locked until commit, so it cannot be deleted in between.
    let project: Option<i64> =
        sqlx::query_scalar("SELECT id FROM projects WHERE id = $1 FOR KEY SHARE")
            .bind(p.project_id)
            .fetch_optional(&mut *conn)
            .await?;
    if project.is_none() {
        return Err(MetaError::NotFound(format!("project {}", p.project_id)).into());
    }
    let id: Option<i64> = sqlx::query_scalar(concat!(
        "INSERT INTO retention_policies (project_id, rules, cron, fired_ms, created_ms, ",
        "updated_ms) VALUES ($1, $2, $3, ",
        now_ms!(),
        ", ",
        now_ms!(),
        ", ",
        now_ms!(),
        ") ON CONFLICT (project_id) DO NOTHING RETURNING id"
    ))
    .bind(p.project_id)
    .bind(&p.rules)
    .bind(&p.cron)
    .fetch_optional(&mut *conn)
    .await?;
    id.ok_or_else(|| {
        MetaError::AlreadyExists(format!("a retention policy of project {}", p.project_id)).into()
    })
}

async fn start_execution(
    conn: &mut PgConnection,
    (e, job): &(RetentionExecution, NewJob),
) -> Result<RetentionExecution, TxError> {
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO retention_executions (policy_id, project, trigger_kind, dry_run, status, \
         rules, repositories, last_error, created_ms, updated_ms, finished_ms) \
         SELECT id, $2, $3, $4, $5, $6, 0, NULL, $7, $7, NULL FROM retention_policies \
         WHERE id = $1 RETURNING id",
    )
    .bind(e.policy_id)
    .bind(&e.project)
    .bind(&e.trigger)
    .bind(e.dry_run)
    .bind(&e.status)
    .bind(&e.rules)
    .bind(e.created_ms)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(id) = id else {
        return Err(MetaError::NotFound(format!("retention policy {}", e.policy_id)).into());
    };
    let mut job = job.clone();
    job.payload = id.to_string();
    if insert_job(&mut *conn, &job_row(&job)).await?.is_none() {
        // The transaction rolls the run back.
        return Err(
            MetaError::AlreadyExists(format!("a run of retention policy {}", e.policy_id)).into(),
        );
    }
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {EXECUTION_COLUMNS} FROM retention_executions e WHERE e.id = $1"
    )))
    .bind(id)
    .fetch_one(conn)
    .await?;
    Ok(execution_from_row(&row)?)
}

async fn save_task(conn: &mut PgConnection, t: &RetentionTask) -> Result<i64, TxError> {
    let id: Option<i64> = sqlx::query_scalar(concat!(
        "INSERT INTO retention_tasks (execution_id, repository, status, total, retained, ",
        "deleted, errors, items, created_ms, updated_ms, finished_ms) ",
        "SELECT id, $2, $3, $4, $5, $6, $7, $8, ",
        now_ms!(),
        ", ",
        now_ms!(),
        ", $9 FROM retention_executions WHERE id = $1 ",
        "ON CONFLICT (execution_id, repository) DO UPDATE SET status = excluded.status, ",
        "total = excluded.total, retained = excluded.retained, deleted = excluded.deleted, ",
        "errors = excluded.errors, items = excluded.items, updated_ms = excluded.updated_ms, ",
        "finished_ms = excluded.finished_ms RETURNING id"
    ))
    .bind(t.execution_id)
    .bind(&t.repository)
    .bind(&t.status)
    .bind(t.total as i64)
    .bind(t.retained as i64)
    .bind(t.deleted as i64)
    .bind(t.errors as i64)
    .bind(&t.items)
    .bind(t.finished_ms)
    .fetch_optional(conn)
    .await?;
    id.ok_or_else(|| MetaError::NotFound(format!("retention run {}", t.execution_id)).into())
}

#[async_trait]
impl RetentionStore for PgMeta {
    async fn retention_policy(&self, id: i64) -> Result<Option<RetentionPolicy>, MetaError> {
        let sql = format!("SELECT {POLICY_COLUMNS} FROM {POLICY_SOURCE} WHERE r.id = $1");
        self.retention_row(sql, id, policy_from_row).await
    }

    async fn project_retention_policy(
        &self,
        project_id: ProjectId,
    ) -> Result<Option<RetentionPolicy>, MetaError> {
        let sql = format!("SELECT {POLICY_COLUMNS} FROM {POLICY_SOURCE} WHERE r.project_id = $1");
        self.retention_row(sql, project_id, policy_from_row).await
    }

    async fn create_retention_policy(&self, policy: &RetentionPolicy) -> Result<i64, MetaError> {
        self.write(Scope::Transaction, policy, |c, p| {
            Box::pin(create_policy(c, p))
        })
        .await
    }

    async fn update_retention_policy(&self, policy: &RetentionPolicy) -> Result<bool, MetaError> {
        self.write(Scope::Statement, policy, |c, p| {
            Box::pin(async move {
                // A schedule that changes counts from now.
                let n = sqlx::query(concat!(
                    "UPDATE retention_policies SET rules = $2, fired_ms = CASE WHEN ",
                    "cron IS NOT DISTINCT FROM $3 THEN fired_ms ELSE ",
                    now_ms!(),
                    " END, cron = $3, updated_ms = ",
                    now_ms!(),
                    " WHERE id = $1"
                ))
                .bind(p.id)
                .bind(&p.rules)
                .bind(&p.cron)
                .execute(c)
                .await?;
                Ok(n.rows_affected() > 0)
            })
        })
        .await
    }

    async fn delete_retention_policy(&self, id: i64) -> Result<bool, MetaError> {
        // Its runs and their tasks go with it (ON DELETE CASCADE).
        self.change_one("DELETE FROM retention_policies WHERE id = $1", id)
            .await
    }

    async fn scheduled_retention_policies(&self) -> Result<Vec<RetentionPolicy>, MetaError> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {POLICY_COLUMNS} FROM {POLICY_SOURCE} WHERE r.cron IS NOT NULL ORDER BY r.id"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(to_meta)?
        .iter()
        .map(policy_from_row)
        .collect()
    }

    async fn retention_fired(&self, id: i64, was_ms: i64, now_ms: i64) -> Result<bool, MetaError> {
        let arg = (id, was_ms, now_ms);
        self.write(Scope::Statement, &arg, |c, (id, was, now)| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE retention_policies SET fired_ms = $3 \
                     WHERE id = $1 AND fired_ms = $2",
                )
                .bind(*id)
                .bind(*was)
                .bind(*now)
                .execute(c)
                .await?;
                Ok(n.rows_affected() > 0)
            })
        })
        .await
    }

    async fn start_retention_execution(
        &self,
        execution: &RetentionExecution,
        job: &NewJob,
    ) -> Result<RetentionExecution, MetaError> {
        let arg = (execution.clone(), job.clone());
        self.write(Scope::Transaction, &arg, |c, a| {
            Box::pin(start_execution(c, a))
        })
        .await
    }

    async fn save_retention_execution(
        &self,
        execution: &RetentionExecution,
    ) -> Result<(), MetaError> {
        self.write(Scope::Statement, execution, |c, e| {
            Box::pin(async move {
                let n = sqlx::query(concat!(
                    "UPDATE retention_executions SET status = CASE WHEN status = 'stopping' ",
                    "AND $2 NOT IN ('stopped', 'success', 'error') THEN status ELSE $2 END, ",
                    "repositories = $3, last_error = $4, updated_ms = ",
                    now_ms!(),
                    ", finished_ms = $5 WHERE id = $1"
                ))
                .bind(e.id)
                .bind(&e.status)
                .bind(e.repositories as i64)
                .bind(&e.last_error)
                .bind(e.finished_ms)
                .execute(c)
                .await?;
                if n.rows_affected() == 0 {
                    return Err(MetaError::NotFound(format!("retention run {}", e.id)).into());
                }
                Ok(())
            })
        })
        .await
    }

    async fn retention_execution(&self, id: i64) -> Result<Option<RetentionExecution>, MetaError> {
        let sql = format!("SELECT {EXECUTION_COLUMNS} FROM retention_executions e WHERE e.id = $1");
        self.retention_row(sql, id, execution_from_row).await
    }

    async fn list_retention_executions(
        &self,
        policy_id: i64,
        paging: Paging,
    ) -> Result<Listing<RetentionExecution>, MetaError> {
        self.listing(
            EXECUTION_COLUMNS,
            "retention_executions e WHERE e.policy_id = $1",
            "e.id DESC",
            one_arg(policy_id)?,
            paging,
            execution_from_row,
        )
        .await
    }

    async fn save_retention_task(&self, task: &RetentionTask) -> Result<i64, MetaError> {
        self.write(Scope::Statement, task, |c, t| Box::pin(save_task(c, t)))
            .await
    }

    async fn retention_tasks(
        &self,
        execution_id: i64,
        paging: Paging,
    ) -> Result<Listing<RetentionTask>, MetaError> {
        self.listing(
            &task_columns(false),
            "retention_tasks t WHERE t.execution_id = $1",
            "t.id",
            one_arg(execution_id)?,
            paging,
            task_from_row,
        )
        .await
    }

    async fn retention_task(&self, id: i64) -> Result<Option<RetentionTask>, MetaError> {
        let sql = format!(
            "SELECT {} FROM retention_tasks t WHERE t.id = $1",
            task_columns(true)
        );
        self.retention_row(sql, id, task_from_row).await
    }

    async fn retention_repositories(&self, project: &str) -> Result<Vec<String>, MetaError> {
        sqlx::query_scalar("SELECT name FROM repositories WHERE project = $1 ORDER BY name")
            .bind(project)
            .fetch_all(&self.pool)
            .await
            .map_err(to_meta)
    }

    async fn retention_artifacts(
        &self,
        repo: &RepoName,
    ) -> Result<Vec<RetentionArtifact>, MetaError> {
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1")
            .bind(repo.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(to_meta)?;
        let Some(id) = id else {
            return Ok(Vec::new());
        };
        sqlx::query(AssertSqlSafe(artifacts_sql("$1", "string_agg({}, E'\\n')")))
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(to_meta)?
            .iter()
            .map(artifact_from_row)
            .collect()
    }

    async fn retention_delete(
        &self,
        repo: &RepoName,
        digest: &Digest,
        tags: &[String],
    ) -> Result<RetentionDelete, MetaError> {
        let arg = (repo.to_string(), digest.to_string(), tags.to_vec());
        self.write(Scope::Transaction, &arg, |c, a| {
            Box::pin(async move {
                let (repo, digest, planned) = a;
                // The manifest's row first, FOR UPDATE: a push that tags it or takes it into
                // an index locks it (FOR KEY SHARE) too, so it either finished before this
                // reads, and is seen, or waits and then finds it gone.
                let row: Option<(i64, Option<String>)> = sqlx::query_as(
                    "SELECT m.repo_id, m.subject FROM manifests m \
                     JOIN repositories r ON r.id = m.repo_id \
                     WHERE r.name = $1 AND m.digest = $2 FOR UPDATE OF m",
                )
                .bind(repo)
                .bind(digest)
                .fetch_optional(&mut *c)
                .await?;
                let Some((id, subject)) = row else {
                    return Ok(RetentionDelete::Missing);
                };
                let now: Vec<String> = sqlx::query_scalar(
                    "SELECT name FROM tags WHERE repo_id = $1 AND digest = $2 ORDER BY name",
                )
                .bind(id)
                .bind(digest)
                .fetch_all(&mut *c)
                .await?;
                let parent: Option<String> = sqlx::query_scalar(
                    "SELECT manifest FROM manifest_refs WHERE repo_id = $1 AND target = $2 \
                     AND kind = 1 LIMIT 1",
                )
                .bind(id)
                .bind(digest)
                .fetch_optional(&mut *c)
                .await?;
                let subject_back: Option<String> = match subject {
                    Some(s) => {
                        sqlx::query_scalar(
                            "SELECT digest FROM manifests WHERE repo_id = $1 AND digest = $2",
                        )
                        .bind(id)
                        .bind(s)
                        .fetch_optional(&mut *c)
                        .await?
                    }
                    None => None,
                };
                if let Some(why) =
                    changed_since_plan(planned, &now, parent.as_deref(), subject_back.as_deref())
                {
                    return Ok(RetentionDelete::Changed(why));
                }
                sqlx::query("DELETE FROM manifests WHERE repo_id = $1 AND digest = $2")
                    .bind(id)
                    .bind(digest)
                    .execute(&mut *c)
                    .await?;
                Ok(RetentionDelete::Deleted)
            })
        })
        .await
    }

    async fn stop_retention_execution(&self, id: i64) -> Result<bool, MetaError> {
        self.write(Scope::Statement, &id, |c, id| {
            Box::pin(async move {
                let n = sqlx::query(concat!(
                    "UPDATE retention_executions SET status = 'stopping', updated_ms = ",
                    now_ms!(),
                    " WHERE id = $1 AND finished_ms IS NULL"
                ))
                .bind(*id)
                .execute(c)
                .await?;
                Ok(n.rows_affected() > 0)
            })
        })
        .await
    }
}
