//! Retention's records ([`RetentionStore`]): each project's policy (its rules as JSON text
//! that `berth-core` reads, and its schedule), the runs of a policy (executions), and what a
//! run did in each repository (tasks, with the artifacts it kept and deleted, as JSON text
//! that `berth-core` writes). And the one read a run makes of each repository: every
//! manifest with its tags, the indexes that name it and its subject
//! ([`RetentionStore::retention_artifacts`]), so a run (or a dry run) of a repository of
//! 100,000 artifacts costs one query, not one per artifact.
//!
//! An execution's counters are sums over its tasks, read with it: a task is written once
//! when its repository's plan is made and once when it is carried out, and nothing else has
//! to be kept in step with it.
//!
//! ```text
//! retention_policies      one per project (UNIQUE project_id); its rules, cron, fired_ms
//!  └─ retention_executions   one per run: trigger, dry run, status, the rules it runs
//!      └─ retention_tasks      one per repository: status, counts, items (JSON)
//! ```
//!
//! Deleting a policy deletes its history (`ON DELETE CASCADE`); deleting a project deletes
//! its policy.

use async_trait::async_trait;
use berth_oci::{Digest, RepoName};

use crate::access::ProjectId;
use crate::jobs::NewJob;
use crate::{Listing, MetaError, Paging};

/// A project's retention policy, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Its id.
    pub id: i64,
    /// Its project.
    pub project_id: ProjectId,
    /// Its project's name (filled in on reads; not written).
    pub project: String,
    /// Its rules (and anything else `berth-core` keeps with them), as JSON text.
    pub rules: String,
    /// When it runs by itself: a cron expression with seconds, in UTC; `None`: only when
    /// asked.
    pub cron: Option<String>,
    /// When its schedule last fired, or was set (milliseconds since the Unix epoch): the
    /// next run is the first time of `cron` after this.
    pub fired_ms: i64,
    /// When it was created.
    pub created_ms: i64,
    /// When it last changed.
    pub updated_ms: i64,
}

/// One run of a retention policy (Harbor's execution).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionExecution {
    /// Its id.
    pub id: i64,
    /// The policy it runs.
    pub policy_id: i64,
    /// The project of that policy (its name).
    pub project: String,
    /// `manual` or `schedule`.
    pub trigger: String,
    /// Whether it only reports.
    pub dry_run: bool,
    /// `pending`, `running`, `stopping`, `success`, `error` or `stopped`.
    pub status: String,
    /// The policy's rules as they were when it was asked for (JSON text): a run that is
    /// resumed after a restart applies the same rules.
    pub rules: String,
    /// The repositories it processes (known once it started; 0 before).
    pub repositories: u64,
    /// Repositories it has finished (read from its tasks; not written).
    pub repositories_done: u64,
    /// Artifacts its tasks looked at (read from its tasks).
    pub total: u64,
    /// Of those, kept (read from its tasks).
    pub retained: u64,
    /// Of those, deleted, or that would be in a dry run (read from its tasks).
    pub deleted: u64,
    /// Deletions that failed (read from its tasks).
    pub errors: u64,
    /// The last error met.
    pub last_error: Option<String>,
    /// When it was asked for (milliseconds since the Unix epoch).
    pub created_ms: i64,
    /// When it last changed.
    pub updated_ms: i64,
    /// When it ended.
    pub finished_ms: Option<i64>,
}

impl RetentionExecution {
    /// A run of `policy` not yet started.
    #[must_use]
    pub fn new(policy: &RetentionPolicy, trigger: &str, dry_run: bool) -> Self {
        let now = crate::jobs::epoch_ms(std::time::SystemTime::now());
        Self {
            id: 0,
            policy_id: policy.id,
            project: policy.project.clone(),
            trigger: trigger.to_owned(),
            dry_run,
            status: "pending".into(),
            rules: policy.rules.clone(),
            repositories: 0,
            repositories_done: 0,
            total: 0,
            retained: 0,
            deleted: 0,
            errors: 0,
            last_error: None,
            created_ms: now,
            updated_ms: now,
            finished_ms: None,
        }
    }
}

/// What a run did (or plans to do) in one repository (Harbor's task).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionTask {
    /// Its id.
    pub id: i64,
    /// Its run.
    pub execution_id: i64,
    /// The repository (its full name).
    pub repository: String,
    /// `running` (planned; its deletions under way), `success`, `error` or `stopped`.
    pub status: String,
    /// Artifacts looked at.
    pub total: u64,
    /// Of those, kept.
    pub retained: u64,
    /// Of those, deleted (or that would be).
    pub deleted: u64,
    /// Deletions that failed.
    pub errors: u64,
    /// Each artifact and what became of it, as JSON text (empty in listings).
    pub items: String,
    /// When it started.
    pub created_ms: i64,
    /// When it last changed.
    pub updated_ms: i64,
    /// When it ended.
    pub finished_ms: Option<i64>,
}

/// A manifest of a repository as retention judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionArtifact {
    /// Its digest.
    pub digest: Digest,
    /// When it was pushed (milliseconds since the Unix epoch; the registry keeps seconds).
    pub pushed_ms: i64,
    /// When it was last pulled, if ever.
    pub pulled_ms: Option<i64>,
    /// The manifest it refers to, if any (a signature, an SBOM...).
    pub subject: Option<Digest>,
    /// Its tags, by name.
    pub tags: Vec<String>,
    /// The indexes of its repository that name it, by digest.
    pub parents: Vec<Digest>,
}

/// What [`RetentionStore::retention_delete`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetentionDelete {
    /// The manifest is gone, with its tags and references.
    Deleted,
    /// There is no such manifest (any more).
    Missing,
    /// It changed since the plan, and stays: why.
    Changed(String),
}

/// Where a backend keeps retention policies and their runs. Every [`crate::MetaStore`] is
/// one.
#[async_trait]
pub trait RetentionStore: Send + Sync {
    /// Policy `id`.
    ///
    /// # Errors
    /// Backend errors.
    async fn retention_policy(&self, id: i64) -> Result<Option<RetentionPolicy>, MetaError>;

    /// The policy of project `project_id`, if it has one.
    ///
    /// # Errors
    /// Backend errors.
    async fn project_retention_policy(
        &self,
        project_id: ProjectId,
    ) -> Result<Option<RetentionPolicy>, MetaError>;

    /// Add a policy (its id and times are chosen here; its schedule counts from now);
    /// returns its id.
    ///
    /// # Errors
    /// [`MetaError::AlreadyExists`] if the project has one; [`MetaError::NotFound`] if the
    /// project does not exist; backend errors.
    async fn create_retention_policy(&self, policy: &RetentionPolicy) -> Result<i64, MetaError>;

    /// Change the rules and schedule of policy `policy.id`; a schedule that changes counts
    /// from now. Returns whether it exists.
    ///
    /// # Errors
    /// Backend errors.
    async fn update_retention_policy(&self, policy: &RetentionPolicy) -> Result<bool, MetaError>;

    /// Delete policy `id` with its runs. Returns whether it existed.
    ///
    /// # Errors
    /// Backend errors.
    async fn delete_retention_policy(&self, id: i64) -> Result<bool, MetaError>;

    /// The policies that have a schedule, by id.
    ///
    /// # Errors
    /// Backend errors.
    async fn scheduled_retention_policies(&self) -> Result<Vec<RetentionPolicy>, MetaError>;

    /// Record that the schedule of policy `id` fired at `now_ms`, if it still last fired at
    /// `was_ms` (so a firing is recorded once). Returns whether it was recorded.
    ///
    /// # Errors
    /// Backend errors.
    async fn retention_fired(&self, id: i64, was_ms: i64, now_ms: i64) -> Result<bool, MetaError>;

    /// Record a new run and queue `job` for it, in one transaction: the job's payload is
    /// replaced by the run's id. Returns the run with its id.
    ///
    /// # Errors
    /// [`MetaError::AlreadyExists`], recording nothing, when a job with the job's dedupe key
    /// is queued or running (another run of the policy); [`MetaError::NotFound`] if the
    /// policy is gone; backend errors.
    async fn start_retention_execution(
        &self,
        execution: &RetentionExecution,
        job: &NewJob,
    ) -> Result<RetentionExecution, MetaError>;

    /// Save a run's status, repository count, last error and end. A run someone asked to
    /// stop (`stopping`) keeps that status unless the save ends it (`stopped`, `success`,
    /// `error`).
    ///
    /// # Errors
    /// [`MetaError::NotFound`] if there is no such run; backend errors.
    async fn save_retention_execution(
        &self,
        execution: &RetentionExecution,
    ) -> Result<(), MetaError>;

    /// Run `id`, with the sums of its tasks.
    ///
    /// # Errors
    /// Backend errors.
    async fn retention_execution(&self, id: i64) -> Result<Option<RetentionExecution>, MetaError>;

    /// The runs of policy `policy_id`, newest first.
    ///
    /// # Errors
    /// Backend errors.
    async fn list_retention_executions(
        &self,
        policy_id: i64,
        paging: Paging,
    ) -> Result<Listing<RetentionExecution>, MetaError>;

    /// Record a task, or update the task of its run and repository (its status, counts,
    /// items and end). Returns its id.
    ///
    /// # Errors
    /// [`MetaError::NotFound`] if its run is gone; backend errors.
    async fn save_retention_task(&self, task: &RetentionTask) -> Result<i64, MetaError>;

    /// The tasks of run `execution_id`, by id, without their items.
    ///
    /// # Errors
    /// Backend errors.
    async fn retention_tasks(
        &self,
        execution_id: i64,
        paging: Paging,
    ) -> Result<Listing<RetentionTask>, MetaError>;

    /// Task `id`, with its items.
    ///
    /// # Errors
    /// Backend errors.
    async fn retention_task(&self, id: i64) -> Result<Option<RetentionTask>, MetaError>;

    /// The names of the repositories of project `project`, in name order.
    ///
    /// # Errors
    /// Backend errors.
    async fn retention_repositories(&self, project: &str) -> Result<Vec<String>, MetaError>;

    /// Every manifest of `repo` (in no particular order) with its tags, parents and subject,
    /// in one query. Empty if the repository does not exist.
    ///
    /// # Errors
    /// Backend errors.
    async fn retention_artifacts(
        &self,
        repo: &RepoName,
    ) -> Result<Vec<RetentionArtifact>, MetaError>;

    /// Delete manifest `digest` of `repo` (its tags and references with it) as a retention
    /// plan saw it, checking in the same transaction that it has not changed since: its tags
    /// are exactly `tags`, no manifest of the repository names it as a child, and its
    /// subject, if it has one, is not in the repository (a plan deletes indexes and subjects
    /// before what follows them). Otherwise it was tagged again, taken into a new index or
    /// its subject was pushed again meanwhile, and it stays.
    ///
    /// # Errors
    /// Backend errors.
    async fn retention_delete(
        &self,
        repo: &RepoName,
        digest: &Digest,
        tags: &[String],
    ) -> Result<RetentionDelete, MetaError>;

    /// Mark run `id` `stopping` unless it has ended; whether it was marked.
    ///
    /// # Errors
    /// Backend errors.
    async fn stop_retention_execution(&self, id: i64) -> Result<bool, MetaError>;
}

/// Why a manifest a plan would delete stays, given what it is now: `tags` (sorted), the
/// first index naming it and whether its subject is back. `None`: it is as planned.
pub(crate) fn changed_since_plan(
    planned: &[String],
    tags: &[String],
    parent: Option<&str>,
    subject_back: Option<&str>,
) -> Option<String> {
    let mut planned = planned.to_vec();
    planned.sort();
    if planned != tags {
        let now = if tags.is_empty() {
            "no tag".to_owned()
        } else {
            tags.join(",")
        };
        return Some(format!(
            "kept: changed since the plan (its tags are now {now})"
        ));
    }
    if let Some(p) = parent {
        return Some(format!("kept: changed since the plan (index {p} names it)"));
    }
    subject_back.map(|s| format!("kept: changed since the plan (its subject {s} is here)"))
}

/// The columns [`policy_from_row`] reads, of `retention_policies r JOIN projects p`.
pub(crate) const POLICY_COLUMNS: &str =
    "r.id, r.project_id, p.name, r.rules, r.cron, r.fired_ms, r.created_ms, r.updated_ms";

/// The source of [`POLICY_COLUMNS`].
pub(crate) const POLICY_SOURCE: &str =
    "retention_policies r JOIN projects p ON p.id = r.project_id";

/// A policy from a row of [`POLICY_COLUMNS`].
pub(crate) fn policy_from_row(
    r: &impl crate::access::columns::Columns,
) -> Result<RetentionPolicy, MetaError> {
    Ok(RetentionPolicy {
        id: r.int(0)?,
        project_id: r.int(1)?,
        project: r.text(2)?,
        rules: r.text(3)?,
        cron: r.opt_text(4)?,
        fired_ms: r.int(5)?,
        created_ms: r.int(6)?,
        updated_ms: r.int(7)?,
    })
}

/// A sum over the tasks of execution `e`, as a `BIGINT` (0 without tasks).
macro_rules! task_sum {
    ($expr:literal) => {
        concat!(
            "(SELECT CAST(COALESCE(SUM(",
            $expr,
            "), 0) AS BIGINT) FROM retention_tasks t WHERE t.execution_id = e.id)"
        )
    };
}

/// The columns [`execution_from_row`] reads, of `retention_executions e`.
pub(crate) const EXECUTION_COLUMNS: &str = concat!(
    "e.id, e.policy_id, e.project, e.trigger_kind, e.dry_run, e.status, e.rules, ",
    "e.repositories, ",
    task_sum!("CASE WHEN t.finished_ms IS NULL THEN 0 ELSE 1 END"),
    ", ",
    task_sum!("t.total"),
    ", ",
    task_sum!("t.retained"),
    ", ",
    task_sum!("t.deleted"),
    ", ",
    task_sum!("t.errors"),
    ", e.last_error, e.created_ms, e.updated_ms, e.finished_ms"
);

/// A run from a row of [`EXECUTION_COLUMNS`].
pub(crate) fn execution_from_row(
    r: &impl crate::access::columns::Columns,
) -> Result<RetentionExecution, MetaError> {
    let count = |i| r.int(i).map(|n| n.max(0) as u64);
    Ok(RetentionExecution {
        id: r.int(0)?,
        policy_id: r.int(1)?,
        project: r.text(2)?,
        trigger: r.text(3)?,
        dry_run: r.flag(4)?,
        status: r.text(5)?,
        rules: r.text(6)?,
        repositories: count(7)?,
        repositories_done: count(8)?,
        total: count(9)?,
        retained: count(10)?,
        deleted: count(11)?,
        errors: count(12)?,
        last_error: r.opt_text(13)?,
        created_ms: r.int(14)?,
        updated_ms: r.int(15)?,
        finished_ms: r.opt_int(16)?,
    })
}

/// The columns [`task_from_row`] reads, of `retention_tasks t`, with its items (`true`) or
/// an empty text in their place.
pub(crate) fn task_columns(items: bool) -> String {
    format!(
        "t.id, t.execution_id, t.repository, t.status, t.total, t.retained, t.deleted, \
         t.errors, {}, t.created_ms, t.updated_ms, t.finished_ms",
        if items { "t.items" } else { "''" }
    )
}

/// A task from a row of [`task_columns`].
pub(crate) fn task_from_row(
    r: &impl crate::access::columns::Columns,
) -> Result<RetentionTask, MetaError> {
    let count = |i| r.int(i).map(|n| n.max(0) as u64);
    Ok(RetentionTask {
        id: r.int(0)?,
        execution_id: r.int(1)?,
        repository: r.text(2)?,
        status: r.text(3)?,
        total: count(4)?,
        retained: count(5)?,
        deleted: count(6)?,
        errors: count(7)?,
        items: r.text(8)?,
        created_ms: r.int(9)?,
        updated_ms: r.int(10)?,
        finished_ms: r.opt_int(11)?,
    })
}

/// The statement of [`RetentionStore::retention_artifacts`] for repository id `repo` (a
/// placeholder), with `concat` the backend's aggregate that joins a column's texts with
/// newlines (`{}` stands for the column). Tags and parents are aggregated per digest first,
/// so a large repository is three scans joined by hash, not a lookup per manifest.
pub(crate) fn artifacts_sql(repo: &str, concat: &str) -> String {
    let tags = concat.replace("{}", "name");
    let parents = concat.replace("{}", "manifest");
    format!(
        "SELECT m.digest, m.created_at, m.pulled_ms, m.subject, t.names, f.parents \
         FROM manifests m \
         LEFT JOIN (SELECT digest, {tags} AS names FROM tags WHERE repo_id = {repo} \
             GROUP BY digest) t ON t.digest = m.digest \
         LEFT JOIN (SELECT target, {parents} AS parents FROM manifest_refs \
             WHERE repo_id = {repo} AND kind = 1 GROUP BY target) f ON f.target = m.digest \
         WHERE m.repo_id = {repo}"
    )
}

/// An artifact from a row of [`artifacts_sql`].
pub(crate) fn artifact_from_row(
    r: &impl crate::access::columns::Columns,
) -> Result<RetentionArtifact, MetaError> {
    use crate::access::columns::stored_digest;
    let lines = |s: Option<String>| -> Vec<String> {
        let mut v: Vec<String> = s
            .map(|s| s.split('\n').map(str::to_owned).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    Ok(RetentionArtifact {
        digest: stored_digest(&r.text(0)?)?,
        pushed_ms: crate::access::columns::secs_to_ms(r.int(1)?),
        pulled_ms: r.opt_int(2)?,
        subject: r.opt_text(3)?.map(|s| stored_digest(&s)).transpose()?,
        tags: lines(r.opt_text(4)?),
        parents: lines(r.opt_text(5)?)
            .iter()
            .map(|d| stored_digest(d))
            .collect::<Result<_, _>>()?,
    })
}
