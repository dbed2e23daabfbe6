//! [`RetentionStore`] for [`SqliteMeta`] ([`crate::retention`]).

use async_trait::async_trait;
use berth_oci::{Digest, RepoName};
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension as _};

use super::access::{change, listing, row, rows};
use super::{backend, insert_job, now_ms, repo_id, SqliteMeta};
use crate::jobs::NewJob;
use crate::retention::{
    artifact_from_row, artifacts_sql, changed_since_plan, execution_from_row, policy_from_row,
    task_columns, task_from_row, EXECUTION_COLUMNS, POLICY_COLUMNS, POLICY_SOURCE,
};
use crate::{
    Listing, MetaError, Paging, ProjectId, RetentionArtifact, RetentionDelete, RetentionExecution,
    RetentionPolicy, RetentionStore, RetentionTask,
};

fn policy_where(
    conn: &Connection,
    cond: &str,
    arg: i64,
) -> Result<Option<RetentionPolicy>, MetaError> {
    row(
        conn,
        &format!("SELECT {POLICY_COLUMNS} FROM {POLICY_SOURCE} WHERE {cond} = ?1"),
        [arg],
        |r| policy_from_row(r),
    )
}

fn create_policy(conn: &Connection, p: &RetentionPolicy) -> Result<i64, MetaError> {
    let exists = row(
        conn,
        "SELECT 1 FROM projects WHERE id = ?1",
        [p.project_id],
        |_| Ok(()),
    )?;
    if exists.is_none() {
        return Err(MetaError::NotFound(format!("project {}", p.project_id)));
    }
    let taken = row(
        conn,
        "SELECT id FROM retention_policies WHERE project_id = ?1",
        [p.project_id],
        |r| r.get::<_, i64>(0).map_err(backend),
    )?;
    if let Some(id) = taken {
        return Err(MetaError::AlreadyExists(format!(
            "retention policy {id} of project {}",
            p.project_id
        )));
    }
    let t = now_ms();
    change(
        conn,
        "INSERT INTO retention_policies (project_id, rules, cron, fired_ms, created_ms, \
         updated_ms) VALUES (?1, ?2, ?3, ?4, ?4, ?4)",
        params![p.project_id, p.rules, p.cron, t],
    )
    .map_err(backend)?;
    Ok(conn.last_insert_rowid())
}

fn update_policy(conn: &Connection, p: &RetentionPolicy) -> Result<bool, MetaError> {
    // A schedule that changes counts from now: it does not fire for times before it was set.
    change(
        conn,
        "UPDATE retention_policies SET rules = ?2, \
         fired_ms = CASE WHEN cron IS ?3 THEN fired_ms ELSE ?4 END, cron = ?3, updated_ms = ?4 \
         WHERE id = ?1",
        params![p.id, p.rules, p.cron, now_ms()],
    )
    .map(|n| n > 0)
    .map_err(backend)
}

fn start_execution(
    conn: &Connection,
    e: &RetentionExecution,
    job: &NewJob,
) -> Result<RetentionExecution, MetaError> {
    let exists = row(
        conn,
        "SELECT 1 FROM retention_policies WHERE id = ?1",
        [e.policy_id],
        |_| Ok(()),
    )?;
    if exists.is_none() {
        return Err(MetaError::NotFound(format!(
            "retention policy {}",
            e.policy_id
        )));
    }
    change(
        conn,
        "INSERT INTO retention_executions (policy_id, project, trigger_kind, dry_run, status, \
         rules, repositories, last_error, created_ms, updated_ms, finished_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, NULL, ?7, ?7, NULL)",
        params![
            e.policy_id,
            e.project,
            e.trigger,
            e.dry_run,
            e.status,
            e.rules,
            e.created_ms
        ],
    )
    .map_err(backend)?;
    let id = conn.last_insert_rowid();
    let mut job = job.clone();
    job.payload = id.to_string();
    if insert_job(conn, &job, now_ms()).map_err(backend)?.is_none() {
        // The caller's savepoint rolls the execution back.
        return Err(MetaError::AlreadyExists(format!(
            "a run of retention policy {}",
            e.policy_id
        )));
    }
    execution(conn, id)?.ok_or_else(|| MetaError::Backend("a new retention run vanished".into()))
}

fn save_execution(conn: &Connection, e: &RetentionExecution) -> Result<(), MetaError> {
    let n = change(
        conn,
        "UPDATE retention_executions SET status = CASE WHEN status = 'stopping' \
         AND ?2 NOT IN ('stopped', 'success', 'error') THEN status ELSE ?2 END, \
         repositories = ?3, last_error = ?4, updated_ms = ?5, finished_ms = ?6 WHERE id = ?1",
        params![
            e.id,
            e.status,
            e.repositories as i64,
            e.last_error,
            now_ms(),
            e.finished_ms
        ],
    )
    .map_err(backend)?;
    if n == 0 {
        return Err(MetaError::NotFound(format!("retention run {}", e.id)));
    }
    Ok(())
}

fn execution(conn: &Connection, id: i64) -> Result<Option<RetentionExecution>, MetaError> {
    row(
        conn,
        &format!("SELECT {EXECUTION_COLUMNS} FROM retention_executions e WHERE e.id = ?1"),
        [id],
        |r| execution_from_row(r),
    )
}

fn save_task(conn: &Connection, t: &RetentionTask) -> Result<i64, MetaError> {
    let exists = row(
        conn,
        "SELECT 1 FROM retention_executions WHERE id = ?1",
        [t.execution_id],
        |_| Ok(()),
    )?;
    if exists.is_none() {
        return Err(MetaError::NotFound(format!(
            "retention run {}",
            t.execution_id
        )));
    }
    let id = row(
        conn,
        "INSERT INTO retention_tasks (execution_id, repository, status, total, retained, \
         deleted, errors, items, created_ms, updated_ms, finished_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10) \
         ON CONFLICT (execution_id, repository) DO UPDATE SET status = excluded.status, \
         total = excluded.total, retained = excluded.retained, deleted = excluded.deleted, \
         errors = excluded.errors, items = excluded.items, updated_ms = excluded.updated_ms, \
         finished_ms = excluded.finished_ms RETURNING id",
        params![
            t.execution_id,
            t.repository,
            t.status,
            t.total as i64,
            t.retained as i64,
            t.deleted as i64,
            t.errors as i64,
            t.items,
            now_ms(),
            t.finished_ms
        ],
        |r| r.get::<_, i64>(0).map_err(backend),
    )?;
    id.ok_or_else(|| MetaError::Backend("a retention task upsert returned no id".into()))
}

#[async_trait]
impl RetentionStore for SqliteMeta {
    async fn retention_policy(&self, id: i64) -> Result<Option<RetentionPolicy>, MetaError> {
        self.read(move |conn| policy_where(conn, "r.id", id)).await
    }

    async fn project_retention_policy(
        &self,
        project_id: ProjectId,
    ) -> Result<Option<RetentionPolicy>, MetaError> {
        self.read(move |conn| policy_where(conn, "r.project_id", project_id))
            .await
    }

    async fn create_retention_policy(&self, policy: &RetentionPolicy) -> Result<i64, MetaError> {
        let policy = policy.clone();
        self.write(move |tx| create_policy(tx, &policy)).await
    }

    async fn update_retention_policy(&self, policy: &RetentionPolicy) -> Result<bool, MetaError> {
        let policy = policy.clone();
        self.write(move |tx| update_policy(tx, &policy)).await
    }

    async fn delete_retention_policy(&self, id: i64) -> Result<bool, MetaError> {
        // Its runs and their tasks go with it (ON DELETE CASCADE).
        self.write(move |tx| {
            change(tx, "DELETE FROM retention_policies WHERE id = ?1", [id])
                .map(|n| n > 0)
                .map_err(backend)
        })
        .await
    }

    async fn scheduled_retention_policies(&self) -> Result<Vec<RetentionPolicy>, MetaError> {
        self.read(|conn| {
            rows(
                conn,
                &format!(
                    "SELECT {POLICY_COLUMNS} FROM {POLICY_SOURCE} WHERE r.cron IS NOT NULL \
                     ORDER BY r.id"
                ),
                [],
                |r| policy_from_row(r),
            )
        })
        .await
    }

    async fn retention_fired(&self, id: i64, was_ms: i64, now_ms: i64) -> Result<bool, MetaError> {
        self.write(move |tx| {
            change(
                tx,
                "UPDATE retention_policies SET fired_ms = ?3 WHERE id = ?1 AND fired_ms = ?2",
                params![id, was_ms, now_ms],
            )
            .map(|n| n > 0)
            .map_err(backend)
        })
        .await
    }

    async fn start_retention_execution(
        &self,
        execution: &RetentionExecution,
        job: &NewJob,
    ) -> Result<RetentionExecution, MetaError> {
        let (execution, job) = (execution.clone(), job.clone());
        self.write(move |tx| start_execution(tx, &execution, &job))
            .await
    }

    async fn save_retention_execution(
        &self,
        execution: &RetentionExecution,
    ) -> Result<(), MetaError> {
        let execution = execution.clone();
        self.write(move |tx| save_execution(tx, &execution)).await
    }

    async fn retention_execution(&self, id: i64) -> Result<Option<RetentionExecution>, MetaError> {
        self.read(move |conn| execution(conn, id)).await
    }

    async fn list_retention_executions(
        &self,
        policy_id: i64,
        paging: Paging,
    ) -> Result<Listing<RetentionExecution>, MetaError> {
        self.read(move |conn| {
            listing(
                conn,
                EXECUTION_COLUMNS,
                "retention_executions e WHERE e.policy_id = ?1",
                "e.id DESC",
                vec![Value::Integer(policy_id)],
                paging,
                |r| execution_from_row(r),
            )
        })
        .await
    }

    async fn save_retention_task(&self, task: &RetentionTask) -> Result<i64, MetaError> {
        let task = task.clone();
        self.write(move |tx| save_task(tx, &task)).await
    }

    async fn retention_tasks(
        &self,
        execution_id: i64,
        paging: Paging,
    ) -> Result<Listing<RetentionTask>, MetaError> {
        self.read(move |conn| {
            listing(
                conn,
                &task_columns(false),
                "retention_tasks t WHERE t.execution_id = ?1",
                "t.id",
                vec![Value::Integer(execution_id)],
                paging,
                |r| task_from_row(r),
            )
        })
        .await
    }

    async fn retention_task(&self, id: i64) -> Result<Option<RetentionTask>, MetaError> {
        self.read(move |conn| {
            row(
                conn,
                &format!(
                    "SELECT {} FROM retention_tasks t WHERE t.id = ?1",
                    task_columns(true)
                ),
                [id],
                |r| task_from_row(r),
            )
        })
        .await
    }

    async fn retention_repositories(&self, project: &str) -> Result<Vec<String>, MetaError> {
        let project = project.to_owned();
        self.read(move |conn| {
            rows(
                conn,
                "SELECT name FROM repositories WHERE project = ?1 ORDER BY name",
                [project],
                |r| r.get::<_, String>(0).map_err(backend),
            )
        })
        .await
    }

    async fn retention_artifacts(
        &self,
        repo: &RepoName,
    ) -> Result<Vec<RetentionArtifact>, MetaError> {
        let repo = repo.clone();
        self.read(move |conn| {
            let Some(id) = repo_id(conn, &repo).map_err(backend)? else {
                return Ok(Vec::new());
            };
            rows(
                conn,
                &artifacts_sql("?1", "group_concat({}, char(10))"),
                [id],
                |r| artifact_from_row(r),
            )
        })
        .await
    }

    async fn retention_delete(
        &self,
        repo: &RepoName,
        digest: &Digest,
        tags: &[String],
    ) -> Result<RetentionDelete, MetaError> {
        let (repo, digest, planned) = (repo.clone(), digest.to_string(), tags.to_vec());
        // The one writer runs this whole: nothing changes between the checks and the delete.
        self.write(move |tx| {
            let Some(id) = repo_id(tx, &repo).map_err(backend)? else {
                return Ok(RetentionDelete::Missing);
            };
            let subject: Option<Option<String>> = tx
                .prepare_cached("SELECT subject FROM manifests WHERE repo_id = ?1 AND digest = ?2")
                .and_then(|mut st| st.query_row(params![id, digest], |r| r.get(0)).optional())
                .map_err(backend)?;
            let Some(subject) = subject else {
                return Ok(RetentionDelete::Missing);
            };
            let mut now: Vec<String> = tx
                .prepare_cached(
                    "SELECT name FROM tags INDEXED BY tags_digest WHERE repo_id = ?1 AND digest = ?2",
                )
                .and_then(|mut st| {
                    st.query_map(params![id, digest], |r| r.get(0))?
                        .collect::<Result<_, _>>()
                })
                .map_err(backend)?;
            now.sort();
            let parent: Option<String> = tx
                .prepare_cached(
                    "SELECT manifest FROM manifest_refs WHERE repo_id = ?1 AND target = ?2 \
                     AND kind = 1 LIMIT 1",
                )
                .and_then(|mut st| st.query_row(params![id, digest], |r| r.get(0)).optional())
                .map_err(backend)?;
            let subject_back = match subject {
                Some(s) => tx
                    .prepare_cached("SELECT digest FROM manifests WHERE repo_id = ?1 AND digest = ?2")
                    .and_then(|mut st| st.query_row(params![id, s], |r| r.get::<_, String>(0)).optional())
                    .map_err(backend)?,
                None => None,
            };
            let changed: Option<String> = changed_since_plan(
                &planned,
                &now,
                parent.as_deref(),
                subject_back.as_deref(),
            );
            if let Some(why) = changed {
                return Ok(RetentionDelete::Changed(why));
            }
            tx.execute(
                "DELETE FROM manifests WHERE repo_id = ?1 AND digest = ?2",
                params![id, digest],
            )
            .map_err(backend)?;
            Ok(RetentionDelete::Deleted)
        })
        .await
    }

    async fn stop_retention_execution(&self, id: i64) -> Result<bool, MetaError> {
        self.write(move |tx| {
            change(
                tx,
                "UPDATE retention_executions SET status = 'stopping', updated_ms = ?2 \
                 WHERE id = ?1 AND finished_ms IS NULL",
                params![id, now_ms()],
            )
            .map(|n| n > 0)
            .map_err(backend)
        })
        .await
    }
}
