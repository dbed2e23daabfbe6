//! Running a policy: a `retention.run` job per run, one task per repository, each planned in
//! full (one read of the repository) and recorded before anything is deleted; and the
//! periodic job that fires schedules.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use berth_meta::jobs::epoch_ms;
use berth_meta::{
    ClaimedJob, JobKind, MetaError, NewJob, Paging, RetentionDelete, RetentionExecution,
    RetentionPolicy, RetentionTask,
};
use berth_oci::{Digest, RepoName};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::evaluate::{judge, short, Item, Outcome};
use super::{next_run, Policy};
use crate::access::{project_of, RepoActions};
use crate::jobs::{Schedule, Worker};
use crate::selector::name_in_project;
use crate::{Actor, Error, Registry};

/// A run's status while it is being stopped: the worker ends it as `stopped`.
const STOPPING: &str = "stopping";

/// Deletions in flight at once (SQLite commits them in groups; PostgreSQL in parallel).
const CONCURRENCY: usize = 8;

/// Deletions between two looks at whether the run was asked to stop.
const CHUNK: usize = 256;

/// Shortest pause between two looks at whether the run was asked to stop.
const STOP_CHECK: Duration = Duration::from_millis(500);

/// The `retention.run` job's dedupe key: one run of a policy queued or running at a time.
fn dedupe_key(policy_id: i64) -> String {
    format!("retention:{policy_id}")
}

fn now_ms() -> i64 {
    epoch_ms(SystemTime::now())
}

/// Counts of a task's items: `(total, retained, deleted, errors)`.
fn counts(items: &[Item]) -> (u64, u64, u64, u64) {
    let n = |o: Outcome| items.iter().filter(|i| i.outcome == o).count() as u64;
    (
        items.len() as u64,
        n(Outcome::Retain) + n(Outcome::Immutable),
        n(Outcome::Delete),
        n(Outcome::Error),
    )
}

/// A task of `execution` for `repo` with `items`, in `status`.
fn task(
    execution: i64,
    repo: &RepoName,
    items: &[Item],
    status: &str,
    id: i64,
) -> Result<RetentionTask, Error> {
    let (total, retained, deleted, errors) = counts(items);
    let finished = status != "running";
    Ok(RetentionTask {
        id,
        execution_id: execution,
        repository: repo.to_string(),
        status: status.into(),
        total,
        retained,
        deleted,
        errors,
        items: serde_json::to_string(items)
            .map_err(|e| Error::Internal(format!("encoding a retention task: {e}")))?,
        created_ms: 0,
        updated_ms: 0,
        finished_ms: finished.then(now_ms),
    })
}

/// Whether a run was asked to stop, looked up at most every [`STOP_CHECK`].
struct StopWatch {
    id: i64,
    last: Option<Instant>,
}

impl StopWatch {
    async fn stopping(&mut self, registry: &Registry) -> Result<bool, Error> {
        if self.last.is_some_and(|t| t.elapsed() < STOP_CHECK) {
            return Ok(false);
        }
        self.last = Some(Instant::now());
        // Read fresh: another instance may have taken the request.
        Ok(registry
            .meta
            .retention_execution(self.id)
            .await?
            .is_none_or(|e| e.status == STOPPING))
    }
}

fn interrupted() -> Error {
    Error::Unavailable {
        backend: crate::Backend::Metadata,
        detail: "retention run interrupted; it continues on the next attempt".into(),
    }
}

impl Registry {
    /// Queue a run of `policy` (`trigger`: `manual` or `schedule`). Callers check who may.
    ///
    /// # Errors
    /// [`Error::Conflict`] while another run of the policy is queued or running;
    /// [`Error::NotFound`] if the policy is gone.
    pub(crate) async fn start_retention(
        &self,
        policy: &RetentionPolicy,
        trigger: &str,
        dry_run: bool,
    ) -> Result<RetentionExecution, Error> {
        let job = NewJob::new(RetentionWorker::job_kind(), "")
            .with_dedupe_key(dedupe_key(policy.id))
            .with_max_attempts(20);
        let execution = RetentionExecution::new(policy, trigger, dry_run);
        match self.meta.start_retention_execution(&execution, &job).await {
            Ok(e) => {
                tracing::info!(
                    run = e.id,
                    policy = policy.id,
                    project = %policy.project,
                    dry_run,
                    trigger,
                    "retention run queued"
                );
                Ok(e)
            }
            Err(MetaError::AlreadyExists(_)) => Err(Error::Conflict(format!(
                "a run of retention policy {} is already queued or running",
                policy.id
            ))),
            Err(MetaError::NotFound(_)) => Err(Error::NotFound(format!(
                "retention policy {} does not exist",
                policy.id
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Ask run `execution` to stop; it stops at its next look (within a second or so),
    /// keeping what it did.
    ///
    /// # Errors
    /// [`Error::Conflict`] if it has ended.
    pub(crate) async fn stop_retention(
        &self,
        mut execution: RetentionExecution,
    ) -> Result<RetentionExecution, Error> {
        if execution.finished_ms.is_some() {
            return Err(Error::Conflict(format!(
                "retention run {} has ended ({})",
                execution.id, execution.status
            )));
        }
        // Only a run that has not ended: one that ended since it was read stays ended.
        if !self.meta.stop_retention_execution(execution.id).await? {
            return Err(Error::Conflict(format!(
                "retention run {} has ended",
                execution.id
            )));
        }
        execution.status = STOPPING.into();
        Ok(execution)
    }

    /// Delete manifest `digest` of `repo` as a plan saw it (tagged `tags`), unless it changed
    /// since ([`berth_meta::RetentionStore::retention_delete`]): `Some(why)` if it stays.
    /// Immutability and the actor's permission are checked as for any delete.
    async fn delete_planned(
        &self,
        actor: &Actor,
        repo: &RepoName,
        digest: &Digest,
        tags: &[String],
    ) -> Result<Option<String>, Error> {
        actor.require(repo, RepoActions::DELETE)?;
        self.refuse_immutable_manifest(repo, digest).await?;
        match self.meta.retention_delete(repo, digest, tags).await? {
            RetentionDelete::Deleted => {
                tracing::info!(repo = %repo, %digest, "manifest deleted by retention");
                self.audit(
                    actor,
                    "delete",
                    "artifact",
                    &format!("{repo}@{digest}"),
                    project_of(repo),
                );
                Ok(None)
            }
            RetentionDelete::Missing => Err(Error::ManifestUnknown),
            RetentionDelete::Changed(why) => Ok(Some(why)),
        }
    }

    /// Save the task of run `execution` for `repo`; `None` if the run is gone (its policy
    /// was deleted).
    async fn save_task(
        &self,
        execution: i64,
        repo: &RepoName,
        items: &[Item],
        status: &str,
        id: i64,
    ) -> Result<Option<i64>, Error> {
        match self
            .meta
            .save_retention_task(&task(execution, repo, items, status, id)?)
            .await
        {
            Ok(id) => Ok(Some(id)),
            Err(MetaError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// End run `e` with `status`. `None` if the run is gone (its policy was deleted).
    async fn end_retention(
        &self,
        mut e: RetentionExecution,
        status: &str,
        error: Option<String>,
    ) -> Result<Option<RetentionExecution>, Error> {
        e.status = status.into();
        if error.is_some() {
            e.last_error = error;
        }
        e.finished_ms = Some(now_ms());
        match self.meta.save_retention_execution(&e).await {
            Ok(()) => {}
            Err(MetaError::NotFound(_)) => return Ok(None),
            Err(err) => return Err(err.into()),
        }
        let Some(e) = self.meta.retention_execution(e.id).await? else {
            return Ok(None);
        };
        tracing::info!(
            run = e.id,
            policy = e.policy_id,
            status = %e.status,
            dry_run = e.dry_run,
            repositories = e.repositories_done,
            total = e.total,
            retained = e.retained,
            deleted = e.deleted,
            errors = e.errors,
            "retention run ended"
        );
        Ok(Some(e))
    }

    /// Carry out retention run `id` from where it stands to its end (or until `cancel`
    /// fires, or someone stops it). Returns `None` if the run is gone (its policy was
    /// deleted).
    ///
    /// # Errors
    /// Metadata errors, and [`Error::Unavailable`] when cancelled or a backend is down (the
    /// job is retried and the run continues). A deletion that fails otherwise is counted in
    /// its task, not returned.
    pub(crate) async fn run_retention(
        &self,
        id: i64,
        cancel: &CancellationToken,
    ) -> Result<Option<RetentionExecution>, Error> {
        let Some(mut e) = self.meta.retention_execution(id).await? else {
            return Ok(None);
        };
        if e.finished_ms.is_some() {
            return Ok(Some(e));
        }
        let rules = match Policy::from_stored(&e.rules, None).and_then(|p| p.compiled()) {
            Ok(rules) => rules,
            Err(err) => return self.end_retention(e, "error", Some(err.to_string())).await,
        };
        if e.status != STOPPING {
            e.status = "running".into();
        }
        let repos: Vec<RepoName> = self
            .meta
            .retention_repositories(&e.project)
            .await?
            .into_iter()
            .filter(|name| {
                let name = name_in_project(name);
                rules.iter().any(|r| r.selection.selects_repo(name))
            })
            .filter_map(|name| name.parse().ok())
            .collect();
        e.repositories = repos.len() as u64;
        self.meta.save_retention_execution(&e).await?;
        tracing::info!(
            run = id,
            repositories = repos.len(),
            dry_run = e.dry_run,
            "retention run started"
        );
        let done: HashMap<String, RetentionTask> = self
            .meta
            .retention_tasks(id, Paging::ALL)
            .await?
            .items
            .into_iter()
            .map(|t| (t.repository.clone(), t))
            .collect();
        let mut watch = StopWatch { id, last: None };
        let mut errors = 0;
        for repo in &repos {
            if cancel.is_cancelled() {
                return Err(interrupted());
            }
            if watch.stopping(self).await? {
                return self.end_retention(e, "stopped", None).await;
            }
            let earlier = done.get(repo.as_str());
            if earlier.is_some_and(|t| t.finished_ms.is_some()) {
                continue;
            }
            let (items, task_id) = match earlier {
                // Killed while deleting: carry out the plan it recorded.
                Some(t) => {
                    let full = self.meta.retention_task(t.id).await?;
                    let items = full
                        .and_then(|t| serde_json::from_str::<Vec<Item>>(&t.items).ok())
                        .ok_or_else(|| {
                            Error::Internal(format!("retention task {} has no plan", t.id))
                        })?;
                    (items, t.id)
                }
                None => {
                    let arts = self.meta.retention_artifacts(repo).await?;
                    let immutable = self.repo_immutability(repo).await?;
                    let items = judge(
                        &rules,
                        name_in_project(repo.as_str()),
                        arts,
                        e.created_ms,
                        |tag| immutable.as_ref().and_then(|i| i.protecting(tag)),
                    );
                    let status = if e.dry_run { "success" } else { "running" };
                    // The plan first: a run killed while deleting resumes with it.
                    let Some(task_id) = self.save_task(id, repo, &items, status, 0).await? else {
                        return Ok(None);
                    };
                    if e.dry_run {
                        continue;
                    }
                    (items, task_id)
                }
            };
            let (items, stopped) = self.carry_out(repo, items, &mut watch, cancel).await?;
            let failed = counts(&items).3;
            errors += failed;
            let status = if stopped {
                "stopped"
            } else if failed > 0 {
                "error"
            } else {
                "success"
            };
            if self
                .save_task(id, repo, &items, status, task_id)
                .await?
                .is_none()
            {
                return Ok(None);
            }
            if stopped {
                return self.end_retention(e, "stopped", None).await;
            }
        }
        let (status, error) = if errors > 0 {
            (
                "error",
                Some(format!("{errors} deletions failed; see the tasks' logs")),
            )
        } else {
            ("success", None)
        };
        self.end_retention(e, status, error).await
    }

    /// Delete what `items` plan for `repo`, parents before what follows them. Returns the
    /// items with what became of them, and whether the run was asked to stop (what was not
    /// deleted by then is kept).
    async fn carry_out(
        &self,
        repo: &RepoName,
        mut items: Vec<Item>,
        watch: &mut StopWatch,
        cancel: &CancellationToken,
    ) -> Result<(Vec<Item>, bool), Error> {
        let index: HashMap<String, usize> = items
            .iter()
            .enumerate()
            .map(|(k, i)| (i.digest.clone(), k))
            .collect();
        let deepest = items.iter().map(|i| i.depth).max().unwrap_or(0);
        let actor = Actor::system();
        let mut gone = vec![false; items.len()];
        for depth in 0..=deepest {
            // What follows a manifest that stayed (its deletion failed, or an immutable tag
            // appeared) stays too.
            for k in 0..items.len() {
                if items[k].depth != depth || items[k].outcome != Outcome::Delete || depth == 0 {
                    continue;
                }
                let staying = items[k].follows.iter().find(|d| {
                    index
                        .get(*d)
                        .is_some_and(|p| items[*p].outcome != Outcome::Delete)
                });
                if let Some(d) = staying.cloned() {
                    items[k].outcome = Outcome::Retain;
                    items[k].why = format!("{} stays", short(&d));
                }
            }
            let due: Vec<usize> = (0..items.len())
                .filter(|k| items[*k].depth == depth && items[*k].outcome == Outcome::Delete)
                .collect();
            for chunk in due.chunks(CHUNK) {
                if cancel.is_cancelled() {
                    return Err(interrupted());
                }
                if watch.stopping(self).await? {
                    // Those deleted before the stop are reported deleted; the rest stay.
                    for (item, _) in items
                        .iter_mut()
                        .zip(&gone)
                        .filter(|(i, gone)| i.outcome == Outcome::Delete && !**gone)
                    {
                        item.outcome = Outcome::Retain;
                        item.why = "kept: the run was stopped".into();
                    }
                    return Ok((items, true));
                }
                // Owned futures: each holds what it needs, so the stream is `Send` for any
                // lifetime the job runner asks of it.
                let deletes: Vec<_> = chunk
                    .iter()
                    .map(|&k| {
                        let digest = items[k].digest.parse::<Digest>();
                        let tags = items[k].tags.clone();
                        let (registry, actor, repo) = (self.clone(), actor.clone(), repo.clone());
                        async move {
                            let result = match digest {
                                Ok(d) => registry.delete_planned(&actor, &repo, &d, &tags).await,
                                Err(e) => Err(Error::Internal(format!("planned digest: {e}"))),
                            };
                            (k, result)
                        }
                    })
                    .collect();
                let results: Vec<(usize, Result<Option<String>, Error>)> =
                    futures::stream::iter(deletes)
                        .buffer_unordered(CONCURRENCY)
                        .collect()
                        .await;
                for (k, result) in results {
                    match result {
                        // Gone already: deleted by an earlier attempt of this run, or by
                        // someone else.
                        Ok(None) | Err(Error::ManifestUnknown) => gone[k] = true,
                        // Tagged again, taken into an index, its subject back: it stays, and
                        // so does what follows it.
                        Ok(Some(why)) => {
                            items[k].outcome = Outcome::Retain;
                            items[k].why = why;
                        }
                        Err(Error::Denied(why)) => {
                            items[k].outcome = Outcome::Immutable;
                            items[k].why = why;
                        }
                        Err(e @ Error::Unavailable { .. }) => return Err(e),
                        Err(e) => {
                            tracing::warn!(repo = %repo, digest = %items[k].digest, error = %e, "retention could not delete an artifact");
                            items[k].outcome = Outcome::Error;
                            items[k].why = e.to_string();
                        }
                    }
                }
            }
        }
        Ok((items, false))
    }
}

/// The `retention.run` job: carries out the retention run its payload names.
pub struct RetentionWorker {
    registry: Registry,
}

impl RetentionWorker {
    /// The kind of its jobs: `retention.run`.
    pub fn job_kind() -> JobKind {
        JobKind::from_static("retention.run")
    }

    /// Run retention on `registry`.
    pub fn new(registry: Registry) -> Self {
        Self { registry }
    }
}

#[async_trait]
impl Worker for RetentionWorker {
    fn kind(&self) -> JobKind {
        Self::job_kind()
    }

    async fn run(&self, job: &ClaimedJob, cancel: &CancellationToken) -> Result<(), Error> {
        let id: i64 = job.payload.parse().map_err(|_| {
            Error::Internal(format!("retention.run job with payload {:?}", job.payload))
        })?;
        match self.registry.run_retention(id, cancel).await {
            Ok(_) => Ok(()),
            Err(e) => {
                if let Ok(Some(mut run)) = self.registry.meta.retention_execution(id).await {
                    run.last_error = Some(e.to_string());
                    if job.lease.attempt >= job.max_attempts {
                        run.status = "error".into();
                        run.finished_ms = Some(now_ms());
                    }
                    let _ = self.registry.meta.save_retention_execution(&run).await;
                }
                Err(e)
            }
        }
    }
}

/// The `retention.schedule` job: every `every`, queue a run of each policy whose schedule is
/// due. One periodic job for the whole fleet, and each firing is recorded with a
/// compare-and-set, so a due time fires once.
pub struct RetentionScheduler {
    registry: Registry,
    every: Duration,
}

impl RetentionScheduler {
    /// The kind of its jobs: `retention.schedule`.
    pub fn job_kind() -> JobKind {
        JobKind::from_static("retention.schedule")
    }

    /// Check the schedules of `registry`'s policies every `every`.
    pub fn new(registry: Registry, every: Duration) -> Self {
        Self { registry, every }
    }
}

#[async_trait]
impl Worker for RetentionScheduler {
    fn kind(&self) -> JobKind {
        Self::job_kind()
    }

    fn schedule(&self) -> Schedule {
        Schedule::Every(self.every)
    }

    async fn run(&self, _job: &ClaimedJob, _cancel: &CancellationToken) -> Result<(), Error> {
        let now = now_ms();
        for policy in self.registry.meta.scheduled_retention_policies().await? {
            let Some(due) = policy
                .cron
                .as_deref()
                .and_then(|c| next_run(c, policy.fired_ms))
            else {
                continue;
            };
            if due > now {
                continue;
            }
            // Record the firing first: a crash after it skips one run rather than repeating
            // it.
            if !self
                .registry
                .meta
                .retention_fired(policy.id, policy.fired_ms, now)
                .await?
            {
                continue;
            }
            match self
                .registry
                .start_retention(&policy, "schedule", false)
                .await
            {
                Ok(run) => {
                    tracing::info!(
                        policy = policy.id,
                        run = run.id,
                        "scheduled retention run queued"
                    );
                }
                Err(Error::Conflict(_)) => {
                    tracing::info!(
                        policy = policy.id,
                        "scheduled retention run skipped: one is already running"
                    );
                }
                Err(e) => {
                    tracing::warn!(policy = policy.id, error = %e, "scheduled retention run could not be queued");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use berth_meta::sqlite::{Durability, SqliteMeta};
    use berth_meta::{AccessStore, MetaStore, NewManifest, NewProject, RetentionStore};
    use berth_oci::Tag;
    use berth_store::fs::{FsStore, SyncMode};

    use super::*;
    use crate::Limits;

    async fn setup(dir: &std::path::Path) -> (Registry, Arc<SqliteMeta>, RetentionPolicy) {
        let meta = Arc::new(SqliteMeta::open(&dir.join("meta.db"), Durability::Normal).unwrap());
        let store = Arc::new(FsStore::open(dir, SyncMode::Relaxed).unwrap());
        let registry = Registry::new(store, meta.clone(), Limits::default());
        let project = meta
            .create_project(&NewProject {
                name: "keep".into(),
                public: false,
                owner: None,
            })
            .await
            .unwrap();
        let rules = Policy {
            rules: vec![serde_json::from_value(serde_json::json!({
                "template": "latestPushedK", "params": {"latestPushedK": 2},
                "tag_selectors": [{"decoration": "matches", "pattern": "**"}]}))
            .unwrap()],
            ..Policy::default()
        }
        .normalized()
        .unwrap();
        let id = meta
            .create_retention_policy(&RetentionPolicy {
                id: 0,
                project_id: project,
                project: String::new(),
                rules: rules.to_stored().unwrap(),
                cron: None,
                fired_ms: 0,
                created_ms: 0,
                updated_ms: 0,
            })
            .await
            .unwrap();
        let policy = meta.retention_policy(id).await.unwrap().unwrap();
        (registry, meta, policy)
    }

    /// A manifest without blobs, tagged `tag`.
    async fn put(meta: &SqliteMeta, repo: &RepoName, tag: &str) -> Digest {
        let content = format!("{{\"tag\":\"{tag}\"}}").into_bytes();
        let digest = Digest::sha256_of(&content);
        let m = NewManifest {
            repo: repo.clone(),
            digest: digest.clone(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            artifact_type: None,
            subject: None,
            annotations: None,
            content,
            blobs: Vec::new(),
            manifests: Vec::new(),
            pinned_tags: Vec::new(),
        };
        let tag: Tag = tag.parse().unwrap();
        meta.put_manifest(m, &[tag]).await.unwrap();
        digest
    }

    /// Mark the queued `retention.run` job done, as the runner would once a run ends.
    async fn finish_queued(meta: &SqliteMeta) {
        let holder = berth_meta::LeaseHolder::new("test");
        for job in meta
            .claim_jobs(
                &holder,
                &[RetentionWorker::job_kind()],
                10,
                Duration::from_secs(60),
            )
            .await
            .unwrap()
        {
            meta.finish_job(&job.lease, None).await.unwrap();
        }
    }

    async fn plan_of(meta: &SqliteMeta, run: i64) -> Vec<Item> {
        let tasks = meta.retention_tasks(run, Paging::ALL).await.unwrap();
        assert_eq!(tasks.total, 1);
        let task = meta
            .retention_task(tasks.items[0].id)
            .await
            .unwrap()
            .unwrap();
        serde_json::from_str(&task.items).unwrap()
    }

    fn deleted(items: &[Item]) -> BTreeSet<String> {
        items
            .iter()
            .filter(|i| i.outcome == Outcome::Delete)
            .map(|i| i.digest.clone())
            .collect()
    }

    /// A run killed while deleting resumes with the plan it recorded: what the first attempt
    /// deleted counts as deleted, what was pushed since is not judged, and the totals are
    /// those of the dry run.
    #[tokio::test]
    async fn a_killed_run_resumes_its_plan_and_matches_the_dry_run() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, meta, policy) = setup(dir.path()).await;
        let repo: RepoName = "keep/app".parse().unwrap();
        let mut digests = Vec::new();
        for i in 0..6 {
            digests.push(put(&meta, &repo, &format!("t{i}")).await);
        }
        let cancel = CancellationToken::new();

        let dry = registry
            .start_retention(&policy, "manual", true)
            .await
            .unwrap();
        assert!(matches!(
            registry.start_retention(&policy, "manual", false).await,
            Err(Error::Conflict(_))
        ));
        let dry = registry
            .run_retention(dry.id, &cancel)
            .await
            .unwrap()
            .unwrap();
        finish_queued(&meta).await;
        assert_eq!(
            (dry.status.as_str(), dry.total, dry.retained, dry.deleted),
            ("success", 6, 2, 4)
        );
        let planned = deleted(&plan_of(&meta, dry.id).await);
        assert_eq!(planned.len(), 4);
        for d in &digests {
            assert!(meta.manifest_by_digest(&repo, d).await.unwrap().is_some());
        }

        // The first attempt recorded its plan and deleted one artifact, then died.
        let run = registry
            .start_retention(&policy, "manual", false)
            .await
            .unwrap();
        let mut items = plan_of(&meta, dry.id).await;
        meta.save_retention_task(&task(run.id, &repo, &items, "running", 0).unwrap())
            .await
            .unwrap();
        let first = planned.iter().next().unwrap().parse::<Digest>().unwrap();
        assert!(meta.delete_manifest(&repo, &first).await.unwrap());
        // Pushed after the plan: not the resumed task's business.
        let late = put(&meta, &repo, "late").await;

        let done = registry
            .run_retention(run.id, &cancel)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                done.status.as_str(),
                done.total,
                done.retained,
                done.deleted
            ),
            ("success", 6, 2, 4)
        );
        items = plan_of(&meta, run.id).await;
        assert_eq!(deleted(&items), planned);
        for d in &digests {
            let there = meta.manifest_by_digest(&repo, d).await.unwrap().is_some();
            assert_eq!(there, !planned.contains(&d.to_string()), "{d}");
        }
        assert!(meta
            .manifest_by_digest(&repo, &late)
            .await
            .unwrap()
            .is_some());
        // Ended: running it again changes nothing.
        let again = registry
            .run_retention(run.id, &cancel)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again, done);
    }

    /// A stop request ends a run at its next look, keeping what it has not deleted; a run
    /// whose policy was deleted is gone, and its job ends quietly.
    #[tokio::test]
    async fn stopped_and_orphaned_runs_end() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, meta, policy) = setup(dir.path()).await;
        let repo: RepoName = "keep/app".parse().unwrap();
        for i in 0..4 {
            put(&meta, &repo, &format!("t{i}")).await;
        }
        let run = registry
            .start_retention(&policy, "manual", false)
            .await
            .unwrap();
        let stopping = registry.stop_retention(run.clone()).await.unwrap();
        assert_eq!(stopping.status, STOPPING);
        let done = registry
            .run_retention(run.id, &CancellationToken::new())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((done.status.as_str(), done.deleted), ("stopped", 0));
        assert!(done.finished_ms.is_some());
        assert!(matches!(
            registry.stop_retention(done).await,
            Err(Error::Conflict(_))
        ));
        finish_queued(&meta).await;

        let cancelled = CancellationToken::new();
        cancelled.cancel();
        let run = registry
            .start_retention(&policy, "schedule", false)
            .await
            .unwrap();
        assert!(matches!(
            registry.run_retention(run.id, &cancelled).await,
            Err(Error::Unavailable { .. })
        ));
        assert!(meta.delete_retention_policy(policy.id).await.unwrap());
        assert!(registry
            .run_retention(run.id, &CancellationToken::new())
            .await
            .unwrap()
            .is_none());
    }
}
