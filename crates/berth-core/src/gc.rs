//! Online garbage collection: a job from the queue that any instance may run, in batches,
//! with its progress saved after each one (a killed run continues where it stopped), and no
//! lock that pushes or pulls wait on. What it may remove, and why a push in flight never loses
//! what it relies on, is in [`berth_meta::gc`].
//!
//! A run goes through its steps in order: `manifests` (only when deleting untagged
//! manifests), `links`, `blobs` (mark a batch, delete its bytes, forget its rows), `orphans`
//! (bytes in storage that metadata does not know), then `done`. A dry run walks the same steps
//! and changes nothing.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use berth_meta::jobs::epoch_ms;
use berth_meta::{
    ClaimedJob, GcItem, GcRun, GcScan, JobFilter, JobKind, JobState, Listing, NewJob, Paging,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::jobs::{Schedule, Worker};
use crate::{Actor, Error, Registry};

/// How garbage collection runs.
#[derive(Debug, Clone)]
pub struct GcSettings {
    /// What was touched (pushed, linked, referenced) more recently than this is kept.
    pub grace: Duration,
    /// Rows (or stored objects) looked at per batch.
    pub batch: usize,
    /// Blob deletions in flight at once.
    pub concurrency: usize,
}

impl Default for GcSettings {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(2 * 3600),
            batch: 1000,
            concurrency: 16,
        }
    }
}

/// What a caller asks of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcOptions {
    /// Report what would go; change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Delete manifests that no tag, index or live subject keeps.
    #[serde(default)]
    pub delete_untagged: bool,
}

/// A run's status while it is being stopped: the worker ends it as `stopped`.
const STOPPING: &str = "stopping";

/// The `gc.run` job's dedupe key: one run queued or running at a time.
const DEDUPE: &str = "gc";

impl Registry {
    /// Queue a garbage collection run (`trigger`: `manual` or `schedule`) with this
    /// registry's grace period.
    ///
    /// # Errors
    /// [`Error::Denied`] unless a system administrator; [`Error::Conflict`] while another
    /// run is queued or running.
    pub async fn start_gc(
        &self,
        actor: &Actor,
        options: GcOptions,
        trigger: &str,
    ) -> Result<GcRun, Error> {
        let settings = &self.gc;
        actor.principal().require_sysadmin()?;
        let kind = GcWorker::job_kind();
        for state in [JobState::Queued, JobState::Running] {
            let busy = self
                .meta
                .list_jobs(JobFilter {
                    kind: Some(&kind),
                    state: Some(state),
                    after: None,
                    limit: 1,
                })
                .await?;
            if !busy.is_empty() {
                return Err(Error::Conflict(
                    "a garbage collection is already queued or running".into(),
                ));
            }
        }
        let run = self
            .meta
            .create_gc_run(&GcRun::new(
                trigger,
                options.dry_run,
                options.delete_untagged,
                settings.grace.as_secs(),
            ))
            .await?;
        let job = NewJob::new(kind, run.id.to_string())
            .with_dedupe_key(DEDUPE)
            .with_max_attempts(20);
        if self.meta.enqueue_job(&job).await?.is_none() {
            // Another caller queued one between the check and here.
            let mut lost = run;
            lost.status = "error".into();
            lost.last_error = Some("another garbage collection was queued first".into());
            lost.finished_ms = Some(epoch_ms(SystemTime::now()));
            self.meta.save_gc_run(&lost).await?;
            return Err(Error::Conflict(
                "a garbage collection is already queued or running".into(),
            ));
        }
        tracing::info!(
            run = run.id,
            dry_run = options.dry_run,
            delete_untagged = options.delete_untagged,
            trigger,
            "garbage collection queued"
        );
        Ok(run)
    }

    /// Past and current runs, newest first.
    ///
    /// # Errors
    /// [`Error::Denied`] unless a system administrator.
    pub async fn gc_history(&self, actor: &Actor, paging: Paging) -> Result<Listing<GcRun>, Error> {
        actor.principal().require_sysadmin()?;
        Ok(self.meta.list_gc_runs(paging).await?)
    }

    /// One run.
    ///
    /// # Errors
    /// [`Error::Denied`] unless a system administrator; [`Error::NotFound`].
    pub async fn gc_run(&self, actor: &Actor, id: i64) -> Result<GcRun, Error> {
        actor.principal().require_sysadmin()?;
        self.meta
            .gc_run(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("garbage collection run {id} does not exist")))
    }

    /// Ask a queued or running run to stop; it stops after its current batch, keeping what
    /// it did.
    ///
    /// # Errors
    /// [`Error::Denied`]; [`Error::NotFound`]; [`Error::Conflict`] if it has ended.
    pub async fn stop_gc(&self, actor: &Actor, id: i64) -> Result<GcRun, Error> {
        let mut run = self.gc_run(actor, id).await?;
        if run.finished_ms.is_some() {
            return Err(Error::Conflict(format!(
                "garbage collection run {id} has ended ({})",
                run.status
            )));
        }
        run.status = STOPPING.into();
        self.meta.save_gc_run(&run).await?;
        Ok(run)
    }

    /// Run garbage collection run `id` from where it stands to its end (or until `cancel`
    /// fires, or someone stops it). Saves its progress after every batch.
    ///
    /// # Errors
    /// Metadata errors, and [`Error::Unavailable`] when cancelled (the job is retried and the
    /// run continues). Storage errors on single blobs are counted in the run, not returned.
    pub async fn collect_garbage(
        &self,
        id: i64,
        cancel: &CancellationToken,
    ) -> Result<GcRun, Error> {
        let settings = &self.gc.clone();
        let mut run = self.meta.gc_run(id).await?.ok_or_else(|| {
            Error::NotFound(format!("garbage collection run {id} does not exist"))
        })?;
        if run.finished_ms.is_some() {
            return Ok(run);
        }
        let started = std::time::Instant::now();
        if run.status != STOPPING {
            run.status = "running".into();
            self.meta.save_gc_run(&run).await?;
        }
        tracing::info!(run = id, phase = %run.phase, "garbage collection running");
        let grace = Duration::from_secs(run.grace_seconds);
        let mut leftovers_swept = run.dry_run;
        loop {
            if cancel.is_cancelled() {
                self.meta.save_gc_run(&run).await?;
                return Err(Error::Unavailable {
                    backend: crate::Backend::Metadata,
                    detail: "garbage collection interrupted; it continues on the next attempt"
                        .into(),
                });
            }
            // Someone asked it to stop (read fresh: another instance may have).
            if let Some(fresh) = self.meta.gc_run(id).await? {
                if fresh.status == STOPPING {
                    run.status = "stopped".into();
                    run.finished_ms = Some(epoch_ms(SystemTime::now()));
                    self.meta.save_gc_run(&run).await?;
                    tracing::info!(run = id, "garbage collection stopped");
                    return Ok(run);
                }
            }
            let cutoff_ms = epoch_ms(
                SystemTime::now()
                    .checked_sub(grace)
                    .unwrap_or(SystemTime::UNIX_EPOCH),
            );
            let cursor = run.cursor.clone();
            let scan = GcScan {
                after: cursor.as_deref(),
                limit: settings.batch.max(1),
                cutoff_ms,
                dry_run: run.dry_run,
            };
            let (next_phase, next) = match run.phase.as_str() {
                "manifests" => {
                    let batch = self.meta.gc_manifests(scan).await?;
                    run.scanned += batch.scanned;
                    run.manifests_deleted += batch.items.len() as u64;
                    for m in &batch.items {
                        tracing::debug!(repo = ?m.repo, digest = %m.digest, dry_run = run.dry_run, "untagged manifest collected");
                    }
                    ("links", batch.next)
                }
                "links" => {
                    let batch = self.meta.gc_links(scan).await?;
                    run.scanned += batch.scanned;
                    run.links_deleted += batch.items.len() as u64;
                    ("blobs", batch.next)
                }
                "blobs" => {
                    if !leftovers_swept {
                        // What a killed run (this one, or an earlier one) marked and did not
                        // finish.
                        self.sweep_marked(&mut run, settings).await?;
                        leftovers_swept = true;
                    }
                    let batch = self.meta.gc_mark_blobs(scan).await?;
                    run.scanned += batch.scanned;
                    if run.dry_run {
                        count_freed(&mut run, &batch.items);
                    } else if !batch.items.is_empty() {
                        self.sweep(&mut run, batch.items, settings).await?;
                    }
                    ("orphans", batch.next)
                }
                "orphans" => {
                    let next = self.orphans(&mut run, cutoff_ms, settings).await?;
                    ("done", next)
                }
                _ => {
                    run.status = "success".into();
                    run.phase = "done".into();
                    run.cursor = None;
                    run.finished_ms = Some(epoch_ms(SystemTime::now()));
                    self.meta.save_gc_run(&run).await?;
                    let run = self.meta.gc_run(id).await?.unwrap_or(run);
                    tracing::info!(
                        run = id,
                        dry_run = run.dry_run,
                        manifests = run.manifests_deleted,
                        links = run.links_deleted,
                        blobs = run.blobs_deleted,
                        bytes = run.bytes_freed,
                        errors = run.errors,
                        seconds = started.elapsed().as_secs_f64(),
                        "garbage collection finished"
                    );
                    return Ok(run);
                }
            };
            match next {
                Some(cursor) => run.cursor = Some(cursor),
                None => {
                    run.phase = next_phase.into();
                    run.cursor = None;
                }
            }
            self.meta.save_gc_run(&run).await?;
        }
    }

    /// Delete the bytes of marked blobs, then forget the rows of those whose bytes are gone.
    async fn sweep(
        &self,
        run: &mut GcRun,
        items: Vec<GcItem>,
        settings: &GcSettings,
    ) -> Result<(), Error> {
        let store = Arc::clone(&self.store);
        let results: Vec<(GcItem, Result<(), berth_store::StoreError>)> =
            futures::stream::iter(items)
                .map(|item| {
                    let store = Arc::clone(&store);
                    async move {
                        let r = store.delete(&item.digest).await;
                        (item, r)
                    }
                })
                .buffer_unordered(settings.concurrency.max(1))
                .collect()
                .await;
        let mut gone = Vec::with_capacity(results.len());
        for (item, result) in results {
            match result {
                Ok(()) => {
                    run.blobs_deleted += 1;
                    run.bytes_freed += item.size;
                    gone.push(item.digest);
                }
                Err(e) => {
                    // The row stays marked; the next run tries again.
                    tracing::warn!(digest = %item.digest, error = %e, "could not delete a collected blob");
                    run.errors += 1;
                    run.last_error = Some(format!("deleting {}: {e}", item.digest));
                }
            }
        }
        self.meta.gc_forget_blobs(&gone).await?;
        Ok(())
    }

    /// Finish what an earlier, killed run marked.
    async fn sweep_marked(&self, run: &mut GcRun, settings: &GcSettings) -> Result<(), Error> {
        loop {
            let marked = self.meta.gc_marked_blobs(settings.batch.max(1)).await?;
            let n = marked.len();
            if n == 0 {
                return Ok(());
            }
            let errors = run.errors;
            self.sweep(run, marked, settings).await?;
            // Rows whose bytes could not be deleted stay marked: leave them to the next run.
            if run.errors > errors || n < settings.batch.max(1) {
                return Ok(());
            }
        }
    }

    /// One batch of the orphan step: stored bytes that no blob row names, older than the
    /// cutoff, are claimed and deleted. Returns where the next batch starts.
    async fn orphans(
        &self,
        run: &mut GcRun,
        cutoff_ms: i64,
        settings: &GcSettings,
    ) -> Result<Option<String>, Error> {
        let after: Option<berth_oci::Digest> = run.cursor.as_deref().and_then(|c| c.parse().ok());
        let listed = self
            .store
            .list_blobs(after.as_ref(), settings.batch.max(1))
            .await?;
        run.scanned += listed.len() as u64;
        let next = if listed.len() < settings.batch.max(1) {
            None
        } else {
            listed.last().map(|b| b.digest.to_string())
        };
        let digests: Vec<_> = listed.iter().map(|b| b.digest.clone()).collect();
        let known = self.meta.gc_known_blobs(&digests).await?;
        let mut claimed = Vec::new();
        for blob in listed {
            if known.contains(&blob.digest) || epoch_ms(blob.modified) >= cutoff_ms {
                continue;
            }
            let item = GcItem {
                repo: None,
                digest: blob.digest,
                size: blob.size,
            };
            if run.dry_run {
                count_freed(run, std::slice::from_ref(&item));
            } else if self.meta.gc_claim_orphan(&item.digest, item.size).await? {
                tracing::info!(digest = %item.digest, size = item.size, "collecting bytes that no metadata names");
                claimed.push(item);
            }
        }
        if !claimed.is_empty() {
            self.sweep(run, claimed, settings).await?;
        }
        Ok(next)
    }
}

fn count_freed(run: &mut GcRun, items: &[GcItem]) {
    run.blobs_deleted += items.len() as u64;
    run.bytes_freed += items.iter().map(|i| i.size).sum::<u64>();
}

/// The `gc.run` job: runs the garbage collection run its payload names.
pub struct GcWorker {
    registry: Registry,
}

impl GcWorker {
    /// The kind of its jobs: `gc.run`.
    pub fn job_kind() -> JobKind {
        JobKind::from_static("gc.run")
    }

    /// Run garbage collection on `registry`, with its settings.
    pub fn new(registry: Registry) -> Self {
        Self { registry }
    }
}

#[async_trait]
impl Worker for GcWorker {
    fn kind(&self) -> JobKind {
        Self::job_kind()
    }

    async fn run(&self, job: &ClaimedJob, cancel: &CancellationToken) -> Result<(), Error> {
        let id: i64 = job
            .payload
            .parse()
            .map_err(|_| Error::Internal(format!("gc.run job with payload {:?}", job.payload)))?;
        match self.registry.collect_garbage(id, cancel).await {
            Ok(_) => Ok(()),
            Err(e) => {
                if let Ok(Some(mut run)) = self.registry.meta.gc_run(id).await {
                    run.errors += 1;
                    run.last_error = Some(e.to_string());
                    if job.lease.attempt >= job.max_attempts {
                        run.status = "error".into();
                        run.finished_ms = Some(epoch_ms(SystemTime::now()));
                    }
                    let _ = self.registry.meta.save_gc_run(&run).await;
                }
                Err(e)
            }
        }
    }
}

/// A garbage collection schedule, as the `gc.schedule` setting keeps it (Harbor's shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcSchedule {
    /// `None`, `Hourly`, `Daily`, `Weekly` or `Custom`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When, as a cron expression with seconds: `sec min hour day-of-month month
    /// day-of-week` (Harbor's form), in UTC.
    pub cron: String,
    /// What each scheduled run does.
    pub parameters: GcOptions,
    /// When it was last set (milliseconds since the Unix epoch).
    pub updated_ms: i64,
}

/// The setting that holds the schedule.
const SCHEDULE_KEY: &str = "gc.schedule";
/// The setting that holds when the schedule last fired.
const FIRED_KEY: &str = "gc.schedule.fired_ms";

impl GcSchedule {
    /// A schedule of `kind` (`None`, `Hourly`, `Daily`, `Weekly`, `Custom`); `cron` is used
    /// for `Custom` only.
    ///
    /// # Errors
    /// [`Error::Invalid`] for another kind or a cron expression that does not parse.
    pub fn new(kind: &str, cron: Option<&str>, parameters: GcOptions) -> Result<Self, Error> {
        let cron = match kind {
            "None" => String::new(),
            "Hourly" => "0 0 * * * *".into(),
            "Daily" => "0 0 0 * * *".into(),
            "Weekly" => "0 0 0 * * Sun".into(),
            "Custom" => cron.unwrap_or_default().trim().to_owned(),
            other => {
                return Err(Error::Invalid(format!(
                    "schedule type {other:?} is not one of None, Hourly, Daily, Weekly, Custom \
                     (Manual runs once: POST it)"
                )))
            }
        };
        let schedule = Self {
            kind: kind.to_owned(),
            cron,
            parameters,
            updated_ms: epoch_ms(SystemTime::now()),
        };
        if kind != "None" {
            schedule.parsed()?;
        }
        Ok(schedule)
    }

    fn parsed(&self) -> Result<cron::Schedule, Error> {
        use std::str::FromStr;
        cron::Schedule::from_str(&self.cron).map_err(|e| {
            Error::Invalid(format!(
                "cron {:?} does not parse ({e}); use six fields: sec min hour day month weekday",
                self.cron
            ))
        })
    }

    /// When it fires next after `after_ms` (milliseconds since the Unix epoch); `None` for
    /// no schedule.
    #[must_use]
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        if self.kind == "None" {
            return None;
        }
        let after = chrono::DateTime::from_timestamp_millis(after_ms)?;
        self.parsed()
            .ok()?
            .after(&after)
            .next()
            .map(|t| t.timestamp_millis())
    }
}

impl Registry {
    fn settings_store(&self) -> Result<&Arc<dyn berth_meta::AccessStore>, Error> {
        self.access
            .as_ref()
            .map(|a| a.store())
            .ok_or_else(|| Error::Unsupported("schedules need access control's settings".into()))
    }

    /// The garbage collection schedule (`None` when none was ever set).
    ///
    /// # Errors
    /// [`Error::Denied`] unless a system administrator.
    pub async fn gc_schedule(&self, actor: &Actor) -> Result<Option<GcSchedule>, Error> {
        actor.principal().require_sysadmin()?;
        self.stored_schedule().await
    }

    async fn stored_schedule(&self) -> Result<Option<GcSchedule>, Error> {
        let Some(json) = self.settings_store()?.setting(SCHEDULE_KEY).await? else {
            return Ok(None);
        };
        serde_json::from_str(&json)
            .map(Some)
            .map_err(|e| Error::Internal(format!("stored GC schedule does not parse: {e}")))
    }

    /// Set the garbage collection schedule (kind `None` turns it off).
    ///
    /// # Errors
    /// [`Error::Denied`] unless a system administrator.
    pub async fn set_gc_schedule(&self, actor: &Actor, schedule: &GcSchedule) -> Result<(), Error> {
        actor.principal().require_sysadmin()?;
        let json = serde_json::to_string(schedule)
            .map_err(|e| Error::Internal(format!("encoding a GC schedule: {e}")))?;
        let store = self.settings_store()?;
        store.set_setting(SCHEDULE_KEY, &json).await?;
        // Count from now: a new schedule does not fire for times before it was set.
        store
            .set_setting(FIRED_KEY, &schedule.updated_ms.to_string())
            .await?;
        tracing::info!(kind = %schedule.kind, cron = %schedule.cron, "garbage collection schedule set");
        Ok(())
    }
}

/// The `gc.schedule` job: every `every`, queue a garbage collection run if the schedule is
/// due. It is one periodic job for the whole fleet, so a due time fires once.
pub struct GcScheduler {
    registry: Registry,
    every: Duration,
}

impl GcScheduler {
    /// The kind of its jobs: `gc.schedule`.
    pub fn job_kind() -> JobKind {
        JobKind::from_static("gc.schedule")
    }

    /// Check `registry`'s schedule every `every`.
    pub fn new(registry: Registry, every: Duration) -> Self {
        Self { registry, every }
    }
}

#[async_trait]
impl Worker for GcScheduler {
    fn kind(&self) -> JobKind {
        Self::job_kind()
    }

    fn schedule(&self) -> Schedule {
        Schedule::Every(self.every)
    }

    async fn run(&self, _job: &ClaimedJob, _cancel: &CancellationToken) -> Result<(), Error> {
        let Some(schedule) = self.registry.stored_schedule().await? else {
            return Ok(());
        };
        let store = self.registry.settings_store()?;
        let fired = store
            .setting(FIRED_KEY)
            .await?
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(schedule.updated_ms);
        let now = epoch_ms(SystemTime::now());
        let Some(due) = schedule.next_after(fired) else {
            return Ok(());
        };
        if due > now {
            return Ok(());
        }
        // Record the firing first: a crash after it skips one run rather than repeating it.
        store.set_setting(FIRED_KEY, &now.to_string()).await?;
        match self
            .registry
            .start_gc(&Actor::system(), schedule.parameters, "schedule")
            .await
        {
            Ok(run) => tracing::info!(run = run.id, "scheduled garbage collection queued"),
            Err(Error::Conflict(_)) => {
                tracing::info!("scheduled garbage collection skipped: one is already running");
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use berth_meta::sqlite::{Durability, SqliteMeta};
    use berth_oci::{Digest, RepoName};
    use berth_store::fs::{FsStore, SyncMode};
    use berth_store::BlobStore;
    use bytes::Bytes;

    use super::*;
    use crate::{BodyLength, Limits};

    async fn registry(dir: &std::path::Path) -> (Registry, Arc<FsStore>) {
        let meta = Arc::new(SqliteMeta::open(&dir.join("meta.db"), Durability::Normal).unwrap());
        let store = Arc::new(FsStore::open(dir, SyncMode::Relaxed).unwrap());
        let registry =
            Registry::new(store.clone(), meta, Limits::default()).with_gc_settings(GcSettings {
                grace: Duration::ZERO,
                batch: 2,
                concurrency: 2,
            });
        (registry, store)
    }

    async fn push(registry: &Registry, repo: &RepoName, data: Vec<u8>) -> Digest {
        let digest = Digest::sha256_of(&data);
        let len = data.len() as u64;
        let body: berth_store::ByteStream =
            Box::pin(futures::stream::iter([Ok(Bytes::from(data))]));
        registry
            .upload_blob(
                &Actor::system(),
                repo,
                &digest,
                body,
                BodyLength::Exact(len),
            )
            .await
            .unwrap();
        digest
    }

    /// A run cancelled part-way (an instance shutting down, or killed: its job is retried)
    /// keeps its progress, and the next attempt finishes from there with the right totals.
    #[tokio::test]
    async fn an_interrupted_run_continues_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, store) = registry(dir.path()).await;
        let repo: RepoName = "gc/app".parse().unwrap();
        let mut garbage = Vec::new();
        for i in 0..9u8 {
            let d = push(&registry, &repo, vec![i; 100 + usize::from(i)]).await;
            assert!(registry.meta.unlink_blob(&repo, &d).await.unwrap());
            garbage.push(d);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        let run = registry
            .start_gc(&Actor::system(), GcOptions::default(), "manual")
            .await
            .unwrap();
        // A second request while one is queued is refused.
        assert!(matches!(
            registry
                .start_gc(&Actor::system(), GcOptions::default(), "manual")
                .await,
            Err(Error::Conflict(_))
        ));
        // Cancel as soon as the blob step has saved a deletion. The run is polled by hand,
        // one step at a time, with the check between steps: a stopper task of its own could
        // be scheduled too late on a busy machine and find the run already finished.
        let cancel = CancellationToken::new();
        let first = {
            let mut gc = std::pin::pin!(registry.collect_garbage(run.id, &cancel));
            loop {
                let step = std::future::poll_fn(|cx| {
                    std::task::Poll::Ready(std::future::Future::poll(gc.as_mut(), cx))
                })
                .await;
                if let std::task::Poll::Ready(r) = step {
                    break r;
                }
                let saved = registry.meta.gc_run(run.id).await.unwrap().unwrap();
                if saved.blobs_deleted > 0 {
                    cancel.cancel();
                }
            }
        };
        assert!(matches!(first, Err(Error::Unavailable { .. })), "{first:?}");
        let saved = registry.meta.gc_run(run.id).await.unwrap().unwrap();
        assert_eq!(saved.status, "running");
        assert!(saved.finished_ms.is_none());
        assert!(
            saved.blobs_deleted > 0 && saved.blobs_deleted < 9,
            "{saved:?}"
        );

        let done = registry
            .collect_garbage(run.id, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(done.status, "success");
        assert_eq!(done.blobs_deleted, 9, "{done:?}");
        let sizes: u64 = (0..9u64).map(|i| 100 + i).sum();
        assert_eq!(done.bytes_freed, sizes);
        for d in &garbage {
            assert_eq!(store.stat(d).await.unwrap(), None, "{d} survived");
        }
        assert!(registry.meta.gc_marked_blobs(10).await.unwrap().is_empty());
        // Finished: running it again changes nothing.
        let again = registry
            .collect_garbage(run.id, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(again, done);
    }

    /// Bytes that reached storage without a row (a crash between the two) are collected once
    /// older than the grace period; a dry run only counts them.
    #[tokio::test]
    async fn bytes_without_metadata_are_collected() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, store) = registry(dir.path()).await;
        // Bytes stored with no row at all, as a crash between the two would leave them.
        let lost = Digest::sha256_of(b"orphaned bytes");
        store.start_upload("orphan-upload").await.unwrap();
        let body: berth_store::ByteStream = Box::pin(futures::stream::iter([Ok(
            Bytes::from_static(b"orphaned bytes"),
        )]));
        store.append("orphan-upload", 0, "t1", body).await.unwrap();
        store
            .commit_upload(
                "orphan-upload",
                &lost,
                14,
                &[berth_store::Segment::new(0, "t1")],
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        for dry_run in [true, false] {
            let run = registry
                .start_gc(
                    &Actor::system(),
                    GcOptions {
                        dry_run,
                        delete_untagged: false,
                    },
                    "manual",
                )
                .await
                .unwrap();
            // Queued jobs are not run here: drain the queue by hand, as the runner would.
            let done = registry
                .collect_garbage(run.id, &CancellationToken::new())
                .await
                .unwrap();
            finish_queued(&registry).await;
            assert_eq!(done.blobs_deleted, 1, "{done:?}");
            assert_eq!(done.bytes_freed, 14);
            assert_eq!(store.stat(&lost).await.unwrap().is_some(), dry_run);
        }
    }

    /// Mark the queued `gc.run` job done, so the next run may be queued.
    async fn finish_queued(registry: &Registry) {
        let holder = berth_meta::LeaseHolder::new("test");
        let claimed = registry
            .meta
            .claim_jobs(
                &holder,
                &[GcWorker::job_kind()],
                10,
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        for job in claimed {
            registry.meta.finish_job(&job.lease, None).await.unwrap();
        }
    }
}
