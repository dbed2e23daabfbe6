//! Background jobs. Every instance runs a [`JobRunner`], which drains the job queue in the
//! metadata store: there is no leader to elect, and no single instance whose loss stops the
//! work. A job is whatever a [`Worker`] of its kind does with its payload.
//!
//! The runner's loop, on each instance:
//!
//! 1. Schedule the periodic workers' jobs: each has a dedupe key, so however many instances
//!    schedule one, one is pending. A periodic job, when it finishes, enqueues its own next
//!    run in the same transaction; scheduling again (every period, on every instance) only
//!    restarts a chain that broke, because its last job died.
//! 2. Claim as many due jobs as it has free slots, each with a lease.
//! 3. Run each on its own task, heartbeating its lease while it runs. A worker whose lease is
//!    lost (the heartbeat found the job claimed by someone else) is told to stop, through its
//!    cancellation token.
//! 4. Finish the job, or fail it: it is retried with exponential backoff until its last
//!    attempt, after which it is dead.
//! 5. Sleep for the poll interval, with jitter so that instances started together do not poll
//!    in step.
//!
//! On shutdown the runner stops claiming, cancels the running workers' tokens, and waits for
//! them to return; what they return is recorded as usual.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use berth_meta::{ClaimedJob, JobKind, LeaseHolder, MetaStore, NewJob, Retry, RunAt};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// When the runner schedules a worker's jobs itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Never: jobs of this kind are enqueued by whoever needs one.
    OnDemand,
    /// Once per period: one job of this kind is always pending, due a period after the last
    /// one finished.
    Every(Duration),
}

/// Runs the jobs of one kind.
///
/// A job may run more than once (its worker may die after doing the work but before the job
/// is marked done, or lose its lease and be run by another instance), so a worker must be
/// idempotent; it should also be resumable, doing its work in units and checking `cancel`
/// between them.
#[async_trait]
pub trait Worker: Send + Sync + 'static {
    /// The kind of job it runs.
    fn kind(&self) -> JobKind;

    /// Whether the runner schedules its jobs. The default is [`Schedule::OnDemand`].
    fn schedule(&self) -> Schedule {
        Schedule::OnDemand
    }

    /// Do the job. `cancel` fires when the instance shuts down or the job's lease was lost:
    /// stop at the next unit of work and return.
    ///
    /// # Errors
    /// Any error fails this attempt; the job is retried with backoff until its last attempt.
    async fn run(&self, job: &ClaimedJob, cancel: &CancellationToken) -> Result<(), Error>;
}

/// How a [`JobRunner`] polls and leases.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// Pause between polls of the queue (each one is 50% to 150% of it).
    pub poll_interval: Duration,
    /// How long a claim leases a job for; a job whose worker died is claimable again after it.
    pub lease: Duration,
    /// How often a running job's lease is extended (well within `lease`).
    pub heartbeat: Duration,
    /// Most jobs this instance runs at once.
    pub concurrency: usize,
    /// Backoff before the second attempt of a failed job; it doubles with every attempt.
    pub retry_base: Duration,
    /// Longest backoff.
    pub retry_max: Duration,
}

impl Default for RunnerSettings {
    /// Poll every second, 30 s leases extended every 10 s, two jobs at once, retries after
    /// 10 s doubling up to an hour.
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            concurrency: 2,
            retry_base: Duration::from_secs(10),
            retry_max: Duration::from_secs(3600),
        }
    }
}

/// Drains the job queue on this instance (see the module docs).
pub struct JobRunner {
    meta: Arc<dyn MetaStore>,
    holder: LeaseHolder,
    workers: Vec<Arc<dyn Worker>>,
    settings: RunnerSettings,
}

/// The dedupe key of a periodic worker's jobs.
fn periodic_key(kind: &JobKind) -> String {
    format!("periodic:{kind}")
}

/// A periodic job of `kind`, due after `delay`.
fn periodic_job(kind: &JobKind, delay: Duration) -> NewJob {
    NewJob::new(kind.clone(), "{}")
        .with_dedupe_key(periodic_key(kind))
        .with_run_at(RunAt::After(delay))
}

/// `d` times a random factor in [1 - spread, 1 + spread).
fn jitter(d: Duration, spread: f64) -> Duration {
    let unit = (RandomState::new().build_hasher().finish() % 10_000) as f64 / 10_000.0;
    d.mul_f64((1.0 - spread + 2.0 * spread * unit).max(0.0))
}

/// The pause before attempt `attempt + 1` of a job: `base` doubling per attempt, at most
/// `max`, with ±25% jitter.
fn retry_delay(attempt: u32, base: Duration, max: Duration) -> Duration {
    let doubled = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    jitter(doubled.min(max), 0.25)
}

impl JobRunner {
    /// A runner claiming jobs as `holder` (unique to this instance) with no workers yet.
    pub fn new(meta: Arc<dyn MetaStore>, holder: LeaseHolder, settings: RunnerSettings) -> Self {
        Self {
            meta,
            holder,
            workers: Vec::new(),
            settings,
        }
    }

    /// The same runner, also running `worker`'s jobs.
    #[must_use]
    pub fn with_worker(mut self, worker: Arc<dyn Worker>) -> Self {
        self.workers.push(worker);
        self
    }

    /// Run the loop on its own task until `cancel` fires; the task ends once the jobs running
    /// then have returned.
    pub fn spawn(self, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run(cancel))
    }

    /// The loop: see the module docs. Returns once `cancel` fired and the running jobs
    /// returned.
    pub async fn run(self, cancel: CancellationToken) {
        let runner = Arc::new(self);
        let kinds: Vec<JobKind> = runner.workers.iter().map(|w| w.kind()).collect();
        let mut next_schedule: Vec<Instant> = vec![Instant::now(); runner.workers.len()];
        let mut running = JoinSet::new();
        let mut failures = 0u32;
        tracing::info!(holder = %runner.holder, kinds = ?kinds, "job runner started");
        while !cancel.is_cancelled() {
            runner.schedule_periodic(&mut next_schedule).await;
            while running.try_join_next().is_some() {}
            let free = runner.settings.concurrency.saturating_sub(running.len());
            if free > 0 {
                match runner
                    .meta
                    .claim_jobs(&runner.holder, &kinds, free, runner.settings.lease)
                    .await
                {
                    Ok(jobs) => {
                        failures = 0;
                        for job in jobs {
                            let (r, c) = (Arc::clone(&runner), cancel.child_token());
                            running.spawn(async move { r.run_one(job, c).await });
                        }
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        tracing::warn!(error = %e, failures, "claiming jobs failed");
                    }
                }
            }
            // Back off while the store fails, up to half a minute between polls.
            let pause = runner
                .settings
                .poll_interval
                .saturating_mul(1u32 << failures.min(5))
                .min(Duration::from_secs(30).max(runner.settings.poll_interval));
            tokio::select! {
                () = cancel.cancelled() => {}
                () = tokio::time::sleep(jitter(pause, 0.5)) => {}
                // A slot came free: look for more work at once.
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
        if !running.is_empty() {
            tracing::info!(
                jobs = running.len(),
                "job runner stopping: waiting for running jobs"
            );
        }
        while running.join_next().await.is_some() {}
        tracing::info!("job runner stopped");
    }

    /// Enqueue the periodic jobs whose time to schedule has come.
    async fn schedule_periodic(&self, next: &mut [Instant]) {
        let now = Instant::now();
        for (worker, at) in self.workers.iter().zip(next.iter_mut()) {
            let Schedule::Every(period) = worker.schedule() else {
                continue;
            };
            if *at > now {
                continue;
            }
            let kind = worker.kind();
            match self
                .meta
                .enqueue_job(&periodic_job(&kind, Duration::ZERO))
                .await
            {
                Ok(Some(id)) => tracing::debug!(%kind, %id, "periodic job scheduled"),
                Ok(None) => {} // one is pending already
                Err(e) => tracing::warn!(%kind, error = %e, "scheduling a periodic job failed"),
            }
            *at = now + period;
        }
    }

    /// Run one claimed job to its end, heartbeating its lease, and record the outcome.
    async fn run_one(self: Arc<Self>, job: ClaimedJob, cancel: CancellationToken) {
        let Some(worker) = self.workers.iter().find(|w| w.kind() == job.kind).cloned() else {
            // Only kinds with a worker are claimed.
            return;
        };
        let kind = job.kind.to_string();
        let lease = job.lease.clone();
        metrics::counter!("berth_jobs_run_total", "kind" => kind.clone()).increment(1);
        let started = Instant::now();
        let work = worker.run(&job, &cancel);
        tokio::pin!(work);
        let heartbeat = async {
            loop {
                tokio::time::sleep(self.settings.heartbeat).await;
                match self
                    .meta
                    .extend_job_lease(&lease, self.settings.lease)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => return,
                    // The lease lasts a while yet; the next beat may get through.
                    Err(e) => tracing::warn!(job = %lease.id, error = %e, "job heartbeat failed"),
                }
            }
        };
        let result = tokio::select! {
            r = &mut work => Some(r),
            () = heartbeat => None,
        };
        let Some(result) = result else {
            tracing::warn!(%kind, job = %lease.id, "job lease lost: stopping it");
            cancel.cancel();
            let _ = work.await;
            return;
        };
        metrics::histogram!("berth_job_duration_seconds", "kind" => kind.clone())
            .record(started.elapsed().as_secs_f64());
        let next = match worker.schedule() {
            Schedule::Every(period) => Some(periodic_job(&job.kind, period)),
            Schedule::OnDemand => None,
        };
        match result {
            Ok(()) => match self.meta.finish_job(&lease, next.as_ref()).await {
                Ok(true) => tracing::debug!(%kind, job = %lease.id, "job done"),
                Ok(false) => {
                    tracing::warn!(%kind, job = %lease.id, "job done, but its lease was lost")
                }
                Err(e) => {
                    tracing::warn!(%kind, job = %lease.id, error = %e, "recording a finished job failed")
                }
            },
            Err(error) => {
                metrics::counter!("berth_jobs_failed_total", "kind" => kind.clone()).increment(1);
                let delay = retry_delay(
                    lease.attempt,
                    self.settings.retry_base,
                    self.settings.retry_max,
                );
                let message = error.to_string();
                match self
                    .meta
                    .fail_job(&lease, &message, Retry::After(delay))
                    .await
                {
                    Ok(Some(berth_meta::JobState::Dead)) => {
                        metrics::counter!("berth_jobs_dead_total", "kind" => kind.clone())
                            .increment(1);
                        tracing::error!(%kind, job = %lease.id, attempt = lease.attempt, error = %message, "job failed for the last time");
                    }
                    Ok(Some(_)) => {
                        tracing::warn!(%kind, job = %lease.id, attempt = lease.attempt, retry_in = ?delay, error = %message, "job failed; will retry");
                    }
                    Ok(None) => {
                        tracing::warn!(%kind, job = %lease.id, error = %message, "job failed, and its lease was lost");
                    }
                    Err(e) => {
                        tracing::warn!(%kind, job = %lease.id, error = %e, "recording a failed job failed");
                    }
                }
            }
        }
    }
}

/// Deletes finished and dead jobs once they are old, so the queue's table stays small.
pub struct PruneJobs {
    meta: Arc<dyn MetaStore>,
    keep: Duration,
    every: Duration,
}

impl PruneJobs {
    /// The kind of its jobs: `jobs.prune`.
    pub fn job_kind() -> JobKind {
        JobKind::from_static("jobs.prune")
    }

    /// Prune jobs finished more than `keep` ago, every `every`.
    pub fn new(meta: Arc<dyn MetaStore>, keep: Duration, every: Duration) -> Self {
        Self { meta, keep, every }
    }
}

#[async_trait]
impl Worker for PruneJobs {
    fn kind(&self) -> JobKind {
        Self::job_kind()
    }

    fn schedule(&self) -> Schedule {
        Schedule::Every(self.every)
    }

    async fn run(&self, _job: &ClaimedJob, _cancel: &CancellationToken) -> Result<(), Error> {
        let pruned = self.meta.prune_jobs(self.keep).await?;
        if pruned > 0 {
            tracing::info!(pruned, "old jobs pruned");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use berth_meta::sqlite::{Durability, SqliteMeta};
    use berth_meta::{JobFilter, JobState};

    use super::*;

    struct Counting {
        kind: JobKind,
        runs: AtomicU32,
        fail_first: u32,
        schedule: Schedule,
        pause: Duration,
    }

    #[async_trait]
    impl Worker for Counting {
        fn kind(&self) -> JobKind {
            self.kind.clone()
        }

        fn schedule(&self) -> Schedule {
            self.schedule
        }

        async fn run(&self, _job: &ClaimedJob, cancel: &CancellationToken) -> Result<(), Error> {
            let n = self.runs.fetch_add(1, Ordering::SeqCst);
            tokio::select! {
                () = tokio::time::sleep(self.pause) => {}
                () = cancel.cancelled() => {}
            }
            if n < self.fail_first {
                return Err(Error::Internal(format!("failure {n}")));
            }
            Ok(())
        }
    }

    fn settings() -> RunnerSettings {
        RunnerSettings {
            poll_interval: Duration::from_millis(20),
            lease: Duration::from_secs(5),
            heartbeat: Duration::from_millis(50),
            concurrency: 2,
            retry_base: Duration::from_millis(30),
            retry_max: Duration::from_millis(100),
        }
    }

    async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done().await {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn counting(kind: &'static str, fail_first: u32, schedule: Schedule) -> Arc<Counting> {
        Arc::new(Counting {
            kind: JobKind::from_static(kind),
            runs: AtomicU32::new(0),
            fail_first,
            schedule,
            pause: Duration::from_millis(1),
        })
    }

    #[tokio::test]
    async fn runs_retries_and_schedules_jobs_until_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let meta: Arc<dyn MetaStore> =
            Arc::new(SqliteMeta::open(&dir.path().join("m.db"), Durability::Normal).unwrap());
        let flaky = counting("test.flaky", 2, Schedule::OnDemand);
        let periodic = counting("test.tick", 0, Schedule::Every(Duration::from_millis(50)));
        let cancel = CancellationToken::new();
        // Two instances, as in a fleet.
        let runners: Vec<_> = (0..2)
            .map(|i| {
                JobRunner::new(
                    Arc::clone(&meta),
                    LeaseHolder::new(format!("runner-{i}")),
                    settings(),
                )
                .with_worker(flaky.clone())
                .with_worker(periodic.clone())
                .spawn(cancel.clone())
            })
            .collect();
        let id = meta
            .enqueue_job(&NewJob::new(flaky.kind.clone(), "{}"))
            .await
            .unwrap()
            .unwrap();
        // Failed twice, then done on the third attempt.
        wait_for("the flaky job", async || {
            let jobs = meta
                .list_jobs(JobFilter {
                    kind: Some(&flaky.kind),
                    ..JobFilter::default()
                })
                .await
                .unwrap();
            jobs[0].state == JobState::Done
        })
        .await;
        let job = &meta
            .list_jobs(JobFilter {
                kind: Some(&flaky.kind),
                ..JobFilter::default()
            })
            .await
            .unwrap()[0];
        assert_eq!((job.id, job.attempts), (id, 3));
        assert_eq!(job.last_error.as_deref(), Some("failure 1"));
        assert_eq!(flaky.runs.load(Ordering::SeqCst), 3);
        // The periodic job keeps running, and only one is ever pending.
        wait_for("periodic runs", async || {
            periodic.runs.load(Ordering::SeqCst) >= 4
        })
        .await;
        let pending = meta
            .list_jobs(JobFilter {
                kind: Some(&periodic.kind),
                ..JobFilter::default()
            })
            .await
            .unwrap()
            .into_iter()
            .filter(|j| matches!(j.state, JobState::Queued | JobState::Running))
            .count();
        assert!(pending <= 1, "{pending} periodic jobs pending");
        cancel.cancel();
        for r in runners {
            tokio::time::timeout(Duration::from_secs(5), r)
                .await
                .expect("the runner stops on shutdown")
                .unwrap();
        }
        // Nothing is claimed after shutdown.
        meta.enqueue_job(&NewJob::new(flaky.kind.clone(), "{}"))
            .await
            .unwrap();
        let before = flaky.runs.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(flaky.runs.load(Ordering::SeqCst), before);
    }

    #[tokio::test]
    async fn a_job_whose_worker_died_runs_again_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let meta: Arc<dyn MetaStore> =
            Arc::new(SqliteMeta::open(&dir.path().join("m.db"), Durability::Normal).unwrap());
        let kind = JobKind::from_static("test.orphan");
        meta.enqueue_job(&NewJob::new(kind.clone(), "{}"))
            .await
            .unwrap();
        // A worker claims it and dies without a word.
        let dead = LeaseHolder::new("dead-instance");
        let claimed = meta
            .claim_jobs(
                &dead,
                std::slice::from_ref(&kind),
                1,
                Duration::from_millis(200),
            )
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        let worker = counting("test.orphan", 0, Schedule::OnDemand);
        let cancel = CancellationToken::new();
        let runner = JobRunner::new(Arc::clone(&meta), LeaseHolder::new("alive"), settings())
            .with_worker(worker.clone())
            .spawn(cancel.clone());
        wait_for("the orphaned job", async || {
            worker.runs.load(Ordering::SeqCst) == 1
        })
        .await;
        wait_for("the job to be done", async || {
            meta.list_jobs(JobFilter::default()).await.unwrap()[0].state == JobState::Done
        })
        .await;
        // The dead worker coming back cannot finish it again.
        assert!(!meta.finish_job(&claimed[0].lease, None).await.unwrap());
        cancel.cancel();
        runner.await.unwrap();
    }

    #[test]
    fn backoff_doubles_up_to_its_maximum() {
        let (base, max) = (Duration::from_secs(10), Duration::from_secs(3600));
        for attempt in 1..40 {
            let d = retry_delay(attempt, base, max);
            let nominal = (base * 2u32.pow((attempt - 1).min(20))).min(max);
            assert!(
                d >= nominal.mul_f64(0.75) && d <= nominal.mul_f64(1.25),
                "{attempt}: {d:?}"
            );
        }
        let j = jitter(Duration::from_secs(1), 0.5);
        assert!(j >= Duration::from_millis(500) && j < Duration::from_millis(1500));
    }
}
