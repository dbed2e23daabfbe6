//! Scrub: a job that re-reads every blob and manifest the registry stores, re-verifies their
//! digests and the references between them, and records what is corrupt or missing; a
//! repairing run also takes the damage out of service (into quarantine), so that clients get
//! `BLOB_UNKNOWN` / `MANIFEST_UNKNOWN` instead of bad bytes, and a push of the same content
//! heals the image. It is how an operator proves that the images are whole.
//!
//! A run is a `scrub.run` job from the queue (one queued or running at a time), in batches,
//! with its progress (phase, cursor, counters) saved after each one, so a killed run continues
//! where it stopped. What each phase checks, and how a blob is withdrawn safely while pushes go
//! on, is in [`berth_meta::scrub`]:
//!
//! 1. `blobs`: each live blob row is read back from storage, a few at once, streamed and
//!    hashed (never held whole in memory). Gone: `missing`; wrong size or hash: `corrupt`.
//! 2. `manifests`: each manifest is hashed and parsed again; each blob it names must be linked
//!    into its repository with a live row and have bytes (phase 1's `missing` findings of the
//!    same run say which do not); each child manifest must be in its repository.
//!
//! Repairs: a `corrupt` or `missing` blob is withdrawn (row marked deleting and unlinked
//! everywhere, in one transaction), its bytes moved to `quarantine/<algorithm>/<hex>-scrub-<run>`
//! in the blob store, and its row forgotten. A manifest whose content does not hash to its
//! digest has its content saved under the same kind of key (`-scrub-<run>-manifest`) and is
//! deleted with its tags. A manifest that names a missing blob is only reported: it is whole
//! again once the blob is pushed again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use berth_meta::jobs::epoch_ms;
use berth_meta::{
    ClaimedJob, JobFilter, JobKind, JobState, Listing, NewJob, Paging, ScrubBlob, ScrubFinding,
    ScrubFindingKind, ScrubRun,
};
use berth_oci::{manifest, Digest, Hasher};
use berth_store::{BlobStore, StoreError};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::jobs::Worker;
use crate::{Actor, Error, Registry};

/// How scrub runs.
#[derive(Debug, Clone)]
pub struct ScrubSettings {
    /// Blobs checked per batch (progress is saved after each batch).
    pub batch: usize,
    /// Manifests checked per batch.
    pub manifest_batch: usize,
    /// Blobs read at once.
    pub concurrency: usize,
}

impl Default for ScrubSettings {
    /// 32 blobs or 100 manifests per batch, 4 blobs read at once.
    fn default() -> Self {
        Self {
            batch: 32,
            manifest_batch: 100,
            concurrency: 4,
        }
    }
}

/// What a caller asks of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubOptions {
    /// Quarantine what is corrupt or missing, instead of only reporting it.
    #[serde(default)]
    pub repair: bool,
}

/// A run's status while it is being stopped: the worker ends it as `stopped`.
const STOPPING: &str = "stopping";

/// The `scrub.run` job's dedupe key: one run queued or running at a time.
const DEDUPE: &str = "scrub";

/// Chunks at least this large are hashed on a blocking thread, so that a scrub reading at
/// disk speed does not hold up the request tasks that share the runtime's workers.
const HASH_OFF_RUNTIME: usize = 1 << 20;

/// The label of a run's quarantined bytes.
fn quarantine_label(run_id: i64) -> String {
    format!("scrub-{run_id}")
}

/// Where the blob store keeps what run `run_id` quarantined under `label`, for reports.
fn quarantine_place(digest: &Digest, label: &str) -> String {
    format!(
        "quarantine/{}/{}-{label}",
        digest.algorithm().as_str(),
        digest.hex()
    )
}

impl Registry {
    /// Queue a scrub run.
    ///
    /// # Errors
    /// [`Error::Denied`] unless a system administrator; [`Error::Conflict`] while another
    /// run is queued or running.
    pub async fn start_scrub(
        &self,
        actor: &Actor,
        options: ScrubOptions,
    ) -> Result<ScrubRun, Error> {
        actor.principal().require_sysadmin()?;
        let kind = ScrubWorker::job_kind();
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
                    "a scrub is already queued or running".into(),
                ));
            }
        }
        let run = self
            .meta
            .create_scrub_run(&ScrubRun::new(options.repair))
            .await?;
        let job = NewJob::new(kind, run.id.to_string())
            .with_dedupe_key(DEDUPE)
            .with_max_attempts(20);
        if self.meta.enqueue_job(&job).await?.is_none() {
            // Another caller queued one between the check and here.
            let mut lost = run;
            lost.status = "error".into();
            lost.last_error = Some("another scrub was queued first".into());
            lost.finished_ms = Some(epoch_ms(SystemTime::now()));
            self.meta.save_scrub_run(&lost).await?;
            return Err(Error::Conflict(
                "a scrub is already queued or running".into(),
            ));
        }
        tracing::info!(
            run = run.id,
            repair = options.repair,
            blobs = run.blobs_total,
            manifests = run.manifests_total,
            "scrub queued"
        );
        Ok(run)
    }

    /// Past and current scrub runs, newest first.
    ///
    /// # Errors
    /// [`Error::Denied`] unless a system administrator.
    pub async fn scrub_history(
        &self,
        actor: &Actor,
        paging: Paging,
    ) -> Result<Listing<ScrubRun>, Error> {
        actor.principal().require_sysadmin()?;
        Ok(self.meta.list_scrub_runs(paging).await?)
    }

    /// One scrub run.
    ///
    /// # Errors
    /// [`Error::Denied`] unless a system administrator; [`Error::NotFound`].
    pub async fn scrub_run(&self, actor: &Actor, id: i64) -> Result<ScrubRun, Error> {
        actor.principal().require_sysadmin()?;
        self.meta
            .scrub_run(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("scrub run {id} does not exist")))
    }

    /// What scrub run `id` found, in the order it found it.
    ///
    /// # Errors
    /// [`Error::Denied`] unless a system administrator; [`Error::NotFound`].
    pub async fn scrub_findings(
        &self,
        actor: &Actor,
        id: i64,
        paging: Paging,
    ) -> Result<Listing<ScrubFinding>, Error> {
        self.scrub_run(actor, id).await?;
        Ok(self.meta.scrub_findings(id, paging).await?)
    }

    /// Ask a queued or running scrub to stop; it stops after its current batch, keeping what
    /// it found.
    ///
    /// # Errors
    /// [`Error::Denied`]; [`Error::NotFound`]; [`Error::Conflict`] if it has ended.
    pub async fn stop_scrub(&self, actor: &Actor, id: i64) -> Result<ScrubRun, Error> {
        let mut run = self.scrub_run(actor, id).await?;
        if run.finished_ms.is_some() {
            return Err(Error::Conflict(format!(
                "scrub run {id} has ended ({})",
                run.status
            )));
        }
        run.status = STOPPING.into();
        self.meta.save_scrub_run(&run).await?;
        Ok(run)
    }

    /// Run scrub run `id` from where it stands to its end (or until `cancel` fires, or
    /// someone stops it). Saves its progress after every batch.
    ///
    /// # Errors
    /// Metadata errors, blob storage being unavailable (the batch is done again on the next
    /// attempt), and [`Error::Unavailable`] when cancelled (the job is retried and the run
    /// continues). Other storage errors on single blobs are counted in the run, not returned.
    pub async fn scrub(&self, id: i64, cancel: &CancellationToken) -> Result<ScrubRun, Error> {
        let settings = self.scrub.clone();
        let mut run = self
            .meta
            .scrub_run(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("scrub run {id} does not exist")))?;
        if run.finished_ms.is_some() {
            return Ok(run);
        }
        let started = std::time::Instant::now();
        if run.status != STOPPING {
            run.status = "running".into();
            self.meta.save_scrub_run(&run).await?;
        }
        tracing::info!(run = id, phase = %run.phase, repair = run.repair, "scrub running");
        // Blobs phase 1 found missing and left in place (loaded once phase 2 starts).
        let mut gone: Option<HashSet<Digest>> = None;
        loop {
            if cancel.is_cancelled() {
                self.meta.save_scrub_run(&run).await?;
                return Err(Error::Unavailable {
                    backend: crate::Backend::Metadata,
                    detail: "scrub interrupted; it continues on the next attempt".into(),
                });
            }
            // Someone asked it to stop (read fresh: another instance may have).
            if let Some(fresh) = self.meta.scrub_run(id).await? {
                if fresh.status == STOPPING {
                    run.status = "stopped".into();
                    run.finished_ms = Some(epoch_ms(SystemTime::now()));
                    self.meta.save_scrub_run(&run).await?;
                    tracing::info!(run = id, "scrub stopped");
                    return Ok(self.meta.scrub_run(id).await?.unwrap_or(run));
                }
            }
            let (next_phase, next) = match run.phase.as_str() {
                "blobs" => ("manifests", self.scrub_blobs(&mut run, &settings).await?),
                "manifests" => {
                    if gone.is_none() {
                        gone = Some(self.left_missing(id).await?);
                    }
                    let gone = gone.as_ref().expect("loaded above");
                    let next = self.scrub_manifests(&mut run, &settings, gone).await?;
                    ("done", next)
                }
                _ => {
                    run.status = "success".into();
                    run.phase = "done".into();
                    run.cursor = None;
                    run.finished_ms = Some(epoch_ms(SystemTime::now()));
                    self.meta.save_scrub_run(&run).await?;
                    let run = self.meta.scrub_run(id).await?.unwrap_or(run);
                    tracing::info!(
                        run = id,
                        repair = run.repair,
                        blobs = run.blobs_checked,
                        bytes = run.bytes_checked,
                        manifests = run.manifests_checked,
                        findings = run.findings,
                        repaired = run.repaired,
                        errors = run.errors,
                        seconds = started.elapsed().as_secs_f64(),
                        "scrub finished"
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
            self.meta.save_scrub_run(&run).await?;
        }
    }

    /// One batch of phase 1. Returns where the next batch starts.
    async fn scrub_blobs(
        &self,
        run: &mut ScrubRun,
        settings: &ScrubSettings,
    ) -> Result<Option<String>, Error> {
        let limit = settings.batch.max(1);
        let after: Option<Digest> = run.cursor.as_deref().and_then(|c| c.parse().ok());
        let blobs = self.meta.scrub_blobs(after.as_ref(), limit).await?;
        let next = if blobs.len() < limit {
            None
        } else {
            blobs.last().map(|b| b.digest.to_string())
        };
        let store = Arc::clone(&self.store);
        let checked: Vec<(ScrubBlob, Result<Verdict, StoreError>)> = futures::stream::iter(blobs)
            .map(|blob| {
                let store = Arc::clone(&store);
                async move {
                    let verdict = verify_blob(store.as_ref(), &blob).await;
                    (blob, verdict)
                }
            })
            .buffer_unordered(settings.concurrency.max(1))
            .collect()
            .await;
        let mut bad = Vec::new();
        for (blob, verdict) in checked {
            match verdict {
                Ok(v) => {
                    run.blobs_checked += 1;
                    run.bytes_checked += v.read;
                    let Some((kind, detail)) = v.problem else {
                        continue;
                    };
                    // Garbage collection may have deleted it since it was listed: only a blob
                    // still live is missing.
                    if kind == ScrubFindingKind::Missing
                        && self.meta.blob(&blob.digest).await?.is_none()
                    {
                        continue;
                    }
                    tracing::warn!(
                        run = run.id,
                        digest = %blob.digest,
                        %kind,
                        %detail,
                        "scrub found a damaged blob"
                    );
                    bad.push(ScrubFinding::new(run.id, kind, blob.digest, detail));
                }
                // Storage cannot be reached: this batch is done again on the next attempt.
                Err(e) if e.is_unavailable() => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(
                        run = run.id,
                        digest = %blob.digest,
                        error = %e,
                        "scrub could not read a blob"
                    );
                    run.errors += 1;
                    run.last_error = Some(format!("reading {}: {e}", blob.digest));
                }
            }
        }
        // Recorded before any repair: a run killed while it repairs still reports what it
        // found (the repair itself is then seen by the next run as a blob no longer there).
        self.meta.add_scrub_findings(&bad).await?;
        if run.repair && !bad.is_empty() {
            let mut updated = Vec::with_capacity(bad.len());
            for mut finding in bad {
                match self.quarantine_blob(run.id, &finding.digest).await {
                    Ok(Some(done)) => {
                        finding.repaired = true;
                        finding.detail = format!("{}; {done}", finding.detail);
                        updated.push(finding);
                    }
                    Ok(None) => {
                        finding.detail = format!(
                            "{}; not repaired: it was no longer live (garbage collection or \
                             another scrub took it)",
                            finding.detail
                        );
                        updated.push(finding);
                    }
                    Err(e) => {
                        tracing::warn!(
                            run = run.id,
                            digest = %finding.digest,
                            error = %e,
                            "scrub could not quarantine a blob"
                        );
                        run.errors += 1;
                        run.last_error = Some(format!("quarantining {}: {e}", finding.digest));
                    }
                }
            }
            self.meta.add_scrub_findings(&updated).await?;
        }
        Ok(next)
    }

    /// Take blob `digest` out of service and move its bytes into quarantine. Returns what
    /// was done (for the finding), or `None` if the blob was no longer live.
    async fn quarantine_blob(&self, run_id: i64, digest: &Digest) -> Result<Option<String>, Error> {
        // First out of service: from here readers get BLOB_UNKNOWN and pushes of the digest
        // wait, so the bytes moved away below are the damaged ones, never a fresh push's.
        if !self.meta.scrub_withdraw_blob(digest).await? {
            return Ok(None);
        }
        let label = quarantine_label(run_id);
        // If this fails, the row stays marked deleting: invisible, and finished by garbage
        // collection like one of its own.
        let moved = self.store.quarantine_blob(digest, &label).await?;
        self.meta
            .gc_forget_blobs(std::slice::from_ref(digest))
            .await?;
        tracing::warn!(run = run_id, %digest, moved, "scrub quarantined a blob");
        Ok(Some(if moved {
            format!(
                "quarantined: bytes moved to {}, blob unlinked",
                quarantine_place(digest, &label)
            )
        } else {
            "quarantined: blob unlinked (it had no bytes to move)".into()
        }))
    }

    /// The blobs run `run_id` found missing and left in place.
    async fn left_missing(&self, run_id: i64) -> Result<HashSet<Digest>, Error> {
        const PAGE: u64 = 1000;
        let mut gone = HashSet::new();
        let mut offset = 0;
        loop {
            let page = self
                .meta
                .scrub_findings(
                    run_id,
                    Paging {
                        offset,
                        limit: PAGE,
                    },
                )
                .await?;
            let n = page.items.len() as u64;
            gone.extend(
                page.items
                    .into_iter()
                    .filter(|f| f.kind == ScrubFindingKind::Missing && !f.repaired)
                    .map(|f| f.digest),
            );
            offset += n;
            if n < PAGE {
                return Ok(gone);
            }
        }
    }

    /// One batch of phase 2. Returns where the next batch starts.
    async fn scrub_manifests(
        &self,
        run: &mut ScrubRun,
        settings: &ScrubSettings,
        gone: &HashSet<Digest>,
    ) -> Result<Option<String>, Error> {
        let batch = self
            .meta
            .scrub_manifests(run.cursor.as_deref(), settings.manifest_batch.max(1))
            .await?;
        let mut found = Vec::new();
        let mut corrupt = Vec::new();
        for m in batch.items {
            run.manifests_checked += 1;
            let actual = m.digest.algorithm().digest_of(&m.content);
            if actual != m.digest {
                let finding = ScrubFinding::new(
                    run.id,
                    ScrubFindingKind::ManifestCorrupt,
                    m.digest.clone(),
                    format!(
                        "stored content ({} bytes) hashes to {actual}",
                        m.content.len()
                    ),
                )
                .in_repo(&m.repo);
                found.push(finding.clone());
                corrupt.push((finding, m));
                continue;
            }
            let parsed = match manifest::parse(Some(&m.media_type), &m.content) {
                Ok(p) => p,
                Err(e) => {
                    // Its bytes are what was pushed: nothing to quarantine, only to report.
                    found.push(
                        ScrubFinding::new(
                            run.id,
                            ScrubFindingKind::ManifestCorrupt,
                            m.digest.clone(),
                            format!(
                                "content matches its digest but no longer parses as {}: {e}",
                                m.media_type
                            ),
                        )
                        .in_repo(&m.repo),
                    );
                    continue;
                }
            };
            let mut blobs: Vec<Digest> = Vec::new();
            for d in parsed.blobs.into_iter().filter(|d| !d.external) {
                if !blobs.contains(&d.digest) {
                    blobs.push(d.digest);
                }
            }
            let children: Vec<Digest> = parsed.manifests.into_iter().map(|d| d.digest).collect();
            let missing = self
                .meta
                .scrub_missing_refs(&m.repo, &blobs, &children)
                .await?;
            for b in &blobs {
                let detail = if missing.blobs.contains(b) {
                    "names a blob its repository does not hold (no link or no live blob row)"
                } else if gone.contains(b) && self.store.stat(b).await?.is_none() {
                    // Phase 1 found it missing, and it has not been pushed again since.
                    "names a blob whose bytes are missing from storage"
                } else {
                    continue;
                };
                found.push(
                    ScrubFinding::new(
                        run.id,
                        ScrubFindingKind::ManifestBlobMissing,
                        m.digest.clone(),
                        detail,
                    )
                    .in_repo(&m.repo)
                    .with_target(b),
                );
            }
            for c in &missing.manifests {
                found.push(
                    ScrubFinding::new(
                        run.id,
                        ScrubFindingKind::ManifestChildMissing,
                        m.digest.clone(),
                        "names a child manifest its repository does not hold",
                    )
                    .in_repo(&m.repo)
                    .with_target(c),
                );
            }
        }
        for f in &found {
            tracing::warn!(
                run = run.id,
                kind = %f.kind,
                repo = ?f.repo.as_ref().map(ToString::to_string),
                digest = %f.digest,
                target = ?f.target.as_ref().map(ToString::to_string),
                detail = %f.detail,
                "scrub found a damaged manifest"
            );
        }
        self.meta.add_scrub_findings(&found).await?;
        if run.repair && !corrupt.is_empty() {
            let label = format!("{}-manifest", quarantine_label(run.id));
            let mut repaired = Vec::with_capacity(corrupt.len());
            for (mut finding, m) in corrupt {
                // Its content first, then the row: a failure in between leaves it in place.
                let result = async {
                    self.store
                        .quarantine_bytes(&m.digest, &label, Bytes::from(m.content))
                        .await?;
                    // Content for a digest never changes once stored (a push of the same
                    // digest keeps the row), so the row deleted is the damaged one.
                    self.meta.delete_manifest(&m.repo, &m.digest).await?;
                    Ok::<_, Error>(())
                }
                .await;
                match result {
                    Ok(()) => {
                        tracing::warn!(
                            run = run.id,
                            repo = %m.repo,
                            digest = %m.digest,
                            "scrub quarantined a manifest"
                        );
                        finding.repaired = true;
                        finding.detail = format!(
                            "{}; quarantined: content saved as {}, manifest and its tags deleted",
                            finding.detail,
                            quarantine_place(&m.digest, &label)
                        );
                        repaired.push(finding);
                    }
                    Err(e) => {
                        run.errors += 1;
                        run.last_error = Some(format!("quarantining manifest {}: {e}", m.digest));
                    }
                }
            }
            self.meta.add_scrub_findings(&repaired).await?;
        }
        Ok(batch.next)
    }
}

/// What reading one blob back showed.
struct Verdict {
    /// Bytes read and hashed.
    read: u64,
    /// What is wrong, if anything.
    problem: Option<(ScrubFindingKind, String)>,
}

impl Verdict {
    fn missing() -> Self {
        Self {
            read: 0,
            problem: Some((ScrubFindingKind::Missing, "no bytes in storage".into())),
        }
    }

    fn corrupt(read: u64, detail: String) -> Self {
        Self {
            read,
            problem: Some((ScrubFindingKind::Corrupt, detail)),
        }
    }
}

/// Read `blob` back from `store`, streaming, and check its size and digest.
async fn verify_blob(store: &dyn BlobStore, blob: &ScrubBlob) -> Result<Verdict, StoreError> {
    match read_and_hash(store, blob).await {
        // Gone between the listing and the read (or mid-read, on S3).
        Err(StoreError::NotFound) => Ok(Verdict::missing()),
        // Shorter than the range asked for.
        Err(StoreError::OffsetMismatch { actual, .. }) => Ok(Verdict::corrupt(
            0,
            format!(
                "storage holds {actual} bytes; metadata records {}",
                blob.size
            ),
        )),
        other => other,
    }
}

async fn read_and_hash(store: &dyn BlobStore, blob: &ScrubBlob) -> Result<Verdict, StoreError> {
    let Some(stored) = store.stat(&blob.digest).await? else {
        return Ok(Verdict::missing());
    };
    if stored != blob.size {
        return Ok(Verdict::corrupt(
            0,
            format!(
                "storage holds {stored} bytes; metadata records {}",
                blob.size
            ),
        ));
    }
    let mut stream = store
        .read(&blob.digest, 0, blob.size)
        .await?
        .into_stream()?;
    let mut hasher = blob.digest.algorithm().hasher();
    let mut read = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        read += chunk.len() as u64;
        hasher = hash(hasher, chunk).await?;
    }
    if read != blob.size {
        return Ok(Verdict::corrupt(
            read,
            format!("storage gave {read} bytes; metadata records {}", blob.size),
        ));
    }
    let actual = hasher.finish();
    if actual != blob.digest {
        return Ok(Verdict::corrupt(read, format!("bytes hash to {actual}")));
    }
    Ok(Verdict {
        read,
        problem: None,
    })
}

/// Feed `chunk` to `hasher`, on a blocking thread when it is large.
async fn hash(mut hasher: Hasher, chunk: Bytes) -> Result<Hasher, StoreError> {
    if chunk.len() < HASH_OFF_RUNTIME {
        hasher.update(&chunk);
        return Ok(hasher);
    }
    tokio::task::spawn_blocking(move || {
        hasher.update(&chunk);
        hasher
    })
    .await
    .map_err(|e| StoreError::Io(std::io::Error::other(e)))
}

/// The `scrub.run` job: runs the scrub run its payload names.
pub struct ScrubWorker {
    registry: Registry,
}

impl ScrubWorker {
    /// The kind of its jobs: `scrub.run`.
    pub fn job_kind() -> JobKind {
        JobKind::from_static("scrub.run")
    }

    /// Run scrubs on `registry`, with its settings.
    pub fn new(registry: Registry) -> Self {
        Self { registry }
    }
}

#[async_trait]
impl Worker for ScrubWorker {
    fn kind(&self) -> JobKind {
        Self::job_kind()
    }

    async fn run(&self, job: &ClaimedJob, cancel: &CancellationToken) -> Result<(), Error> {
        let id: i64 = job.payload.parse().map_err(|_| {
            Error::Internal(format!("scrub.run job with payload {:?}", job.payload))
        })?;
        match self.registry.scrub(id, cancel).await {
            Ok(_) => Ok(()),
            Err(e) => {
                if let Ok(Some(mut run)) = self.registry.meta.scrub_run(id).await {
                    run.errors += 1;
                    run.last_error = Some(e.to_string());
                    if job.lease.attempt >= job.max_attempts {
                        run.status = "error".into();
                        run.finished_ms = Some(epoch_ms(SystemTime::now()));
                    }
                    let _ = self.registry.meta.save_scrub_run(&run).await;
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::Duration;

    use berth_meta::sqlite::{Durability, SqliteMeta};
    use berth_oci::{Reference, RepoName};
    use berth_store::fs::{FsStore, SyncMode};

    use super::*;
    use crate::{BodyLength, Limits};

    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

    fn registry(dir: &Path) -> Registry {
        let meta = Arc::new(SqliteMeta::open(&dir.join("meta.db"), Durability::Normal).unwrap());
        let store = Arc::new(FsStore::open(dir, SyncMode::Relaxed).unwrap());
        Registry::new(store, meta, Limits::default()).with_scrub_settings(ScrubSettings {
            batch: 2,
            manifest_batch: 1,
            concurrency: 2,
        })
    }

    async fn push(registry: &Registry, repo: &RepoName, data: &[u8]) -> Digest {
        let digest = Digest::sha256_of(data);
        let body: berth_store::ByteStream =
            Box::pin(futures::stream::iter([Ok(Bytes::copy_from_slice(data))]));
        registry
            .upload_blob(
                &Actor::system(),
                repo,
                &digest,
                body,
                BodyLength::Exact(data.len() as u64),
            )
            .await
            .unwrap();
        digest
    }

    /// Push a config and a layer and an image manifest of them under `tag`; returns the
    /// manifest's digest and the layer's.
    async fn push_image(
        registry: &Registry,
        repo: &RepoName,
        tag: &str,
        layer: &[u8],
    ) -> (Digest, Digest) {
        let config = format!("{{\"tag\":\"{tag}\"}}");
        let c = push(registry, repo, config.as_bytes()).await;
        let l = push(registry, repo, layer).await;
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": c.to_string(), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": l.to_string(), "size": layer.len()}],
        });
        let body = Bytes::from(serde_json::to_vec(&m).unwrap());
        let put = registry
            .put_manifest(
                &Actor::system(),
                repo,
                &Reference::Tag(tag.parse().unwrap()),
                &[],
                Some(OCI_MANIFEST),
                body,
            )
            .await
            .unwrap();
        (put.digest, l)
    }

    fn blob_file(dir: &Path, d: &Digest) -> PathBuf {
        dir.join("blobs/sha256").join(&d.hex()[..2]).join(d.hex())
    }

    /// Flip one byte of a stored blob, keeping its size.
    fn corrupt(dir: &Path, d: &Digest) {
        let path = blob_file(dir, d);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }

    /// Mark the queued `scrub.run` job done, so the next run may be queued.
    async fn finish_queued(registry: &Registry) {
        let holder = berth_meta::LeaseHolder::new("test");
        let claimed = registry
            .meta
            .claim_jobs(
                &holder,
                &[ScrubWorker::job_kind()],
                10,
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        for job in claimed {
            registry.meta.finish_job(&job.lease, None).await.unwrap();
        }
    }

    /// Start a run and do it to its end, as the job would.
    async fn run_scrub(registry: &Registry, repair: bool) -> (ScrubRun, Vec<ScrubFinding>) {
        let run = registry
            .start_scrub(&Actor::system(), ScrubOptions { repair })
            .await
            .unwrap();
        let done = registry
            .scrub(run.id, &CancellationToken::new())
            .await
            .unwrap();
        finish_queued(registry).await;
        let findings = registry
            .meta
            .scrub_findings(run.id, Paging::ALL)
            .await
            .unwrap()
            .items;
        (done, findings)
    }

    type Key = (ScrubFindingKind, Digest, Option<Digest>, bool);

    fn keys(findings: &[ScrubFinding]) -> std::collections::BTreeSet<String> {
        findings
            .iter()
            .map(|f| {
                let k: Key = (f.kind, f.digest.clone(), f.target.clone(), f.repaired);
                format!("{k:?}")
            })
            .collect()
    }

    fn key(kind: ScrubFindingKind, d: &Digest, target: Option<&Digest>, repaired: bool) -> String {
        let k: Key = (kind, d.clone(), target.cloned(), repaired);
        format!("{k:?}")
    }

    /// A run cancelled part-way (an instance shutting down, or killed: its job is retried)
    /// keeps its progress, and the next attempt finishes from there with exact totals and
    /// each problem reported once.
    #[tokio::test]
    async fn an_interrupted_run_continues_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let registry = registry(dir.path());
        let repo: RepoName = "scrub/app".parse().unwrap();
        let (good, good_layer) = push_image(&registry, &repo, "good", &[1u8; 3000]).await;
        let (broken, lost_layer) = push_image(&registry, &repo, "broken", &[2u8; 2000]).await;
        // An index whose second child is deleted afterwards (the registry allows that).
        let (gone_child, _) = push_image(&registry, &repo, "gone", &[]).await;
        let children: Vec<_> = [&good, &gone_child]
            .iter()
            .map(|d| {
                serde_json::json!({"mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": 1})
            })
            .collect();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": children,
        });
        let index = registry
            .put_manifest(
                &Actor::system(),
                &repo,
                &Reference::Tag("multi".parse().unwrap()),
                &[],
                Some("application/vnd.oci.image.index.v1+json"),
                Bytes::from(serde_json::to_vec(&index).unwrap()),
            )
            .await
            .unwrap()
            .digest;
        registry
            .delete_manifest(
                &Actor::system(),
                &repo,
                &Reference::Digest(gone_child.clone()),
            )
            .await
            .unwrap();
        let mut sizes = "{\"tag\":\"gone\"}".len() as u64;
        for i in 0..5u8 {
            let data = vec![i + 10; 500 + usize::from(i)];
            sizes += data.len() as u64;
            push(&registry, &repo, &data).await;
        }
        corrupt(dir.path(), &good_layer);
        std::fs::remove_file(blob_file(dir.path(), &lost_layer)).unwrap();

        let run = registry
            .start_scrub(&Actor::system(), ScrubOptions::default())
            .await
            .unwrap();
        assert_eq!((run.blobs_total, run.manifests_total), (11, 3));
        // A second request while one is queued is refused.
        assert!(matches!(
            registry
                .start_scrub(&Actor::system(), ScrubOptions::default())
                .await,
            Err(Error::Conflict(_))
        ));
        let cancel = CancellationToken::new();
        let stopper = {
            let (meta, cancel, id) = (Arc::clone(&registry.meta), cancel.clone(), run.id);
            tokio::spawn(async move {
                // Cancel as soon as the first batch is saved.
                loop {
                    let r = meta.scrub_run(id).await.unwrap().unwrap();
                    if r.blobs_checked > 0 {
                        cancel.cancel();
                        return;
                    }
                    tokio::task::yield_now().await;
                }
            })
        };
        let first = registry.scrub(run.id, &cancel).await;
        stopper.await.unwrap();
        assert!(matches!(first, Err(Error::Unavailable { .. })), "{first:?}");
        let saved = registry.meta.scrub_run(run.id).await.unwrap().unwrap();
        assert_eq!(
            (saved.status.as_str(), saved.phase.as_str()),
            ("running", "blobs")
        );
        assert!(saved.finished_ms.is_none());
        assert!(
            saved.blobs_checked > 0 && saved.blobs_checked < 11,
            "{saved:?}"
        );
        assert!(saved.cursor.is_some());

        let done = registry
            .scrub(run.id, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(done.status, "success");
        assert_eq!(
            (done.blobs_checked, done.manifests_checked),
            (11, 3),
            "{done:?}"
        );
        let configs = ["{\"tag\":\"good\"}".len(), "{\"tag\":\"broken\"}".len()];
        // Everything was read but the missing layer.
        assert_eq!(
            done.bytes_checked,
            sizes + 3000 + (configs[0] + configs[1]) as u64
        );
        let findings = registry
            .meta
            .scrub_findings(run.id, Paging::ALL)
            .await
            .unwrap()
            .items;
        assert_eq!(
            keys(&findings),
            [
                key(ScrubFindingKind::Corrupt, &good_layer, None, false),
                key(ScrubFindingKind::Missing, &lost_layer, None, false),
                key(
                    ScrubFindingKind::ManifestBlobMissing,
                    &broken,
                    Some(&lost_layer),
                    false
                ),
                key(
                    ScrubFindingKind::ManifestChildMissing,
                    &index,
                    Some(&gone_child),
                    false
                ),
            ]
            .into_iter()
            .collect(),
            "{findings:#?}"
        );
        assert_eq!((done.findings, done.repaired), (4, 0));
        let dangling = findings
            .iter()
            .find(|f| f.kind == ScrubFindingKind::ManifestBlobMissing)
            .unwrap();
        assert_eq!(dangling.repo.as_ref(), Some(&repo));
        assert!(
            dangling.detail.contains("missing from storage"),
            "{dangling:?}"
        );
        // Reported, not repaired: the damage is still served.
        assert!(registry
            .stat_blob(&Actor::system(), &repo, &good_layer)
            .await
            .is_ok());
        // Finished: running it again changes nothing.
        let again = registry
            .scrub(run.id, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(again, done);
    }

    /// A repairing run quarantines a corrupt blob and withdraws a missing one: both are
    /// unknown from then on, the corrupt bytes are kept aside, and pushing the layers again
    /// makes the images whole (the next run finds nothing).
    #[tokio::test]
    async fn repair_quarantines_and_a_push_heals() {
        let dir = tempfile::tempdir().unwrap();
        let registry = registry(dir.path());
        let repo: RepoName = "scrub/fix".parse().unwrap();
        let (good, bad_layer) = push_image(&registry, &repo, "a", &[3u8; 5000]).await;
        let (broken, lost_layer) = push_image(&registry, &repo, "b", &[4u8; 4000]).await;
        let other: RepoName = "scrub/other".parse().unwrap();
        push(&registry, &other, &[3u8; 5000]).await;
        corrupt(dir.path(), &bad_layer);
        let damaged = std::fs::read(blob_file(dir.path(), &bad_layer)).unwrap();
        std::fs::remove_file(blob_file(dir.path(), &lost_layer)).unwrap();

        let (run, findings) = run_scrub(&registry, true).await;
        assert_eq!((run.findings, run.repaired), (4, 2), "{findings:#?}");
        assert_eq!(
            keys(&findings),
            [
                key(ScrubFindingKind::Corrupt, &bad_layer, None, true),
                key(ScrubFindingKind::Missing, &lost_layer, None, true),
                // Withdrawn in phase 1, so both images now lack a layer.
                key(
                    ScrubFindingKind::ManifestBlobMissing,
                    &good,
                    Some(&bad_layer),
                    false
                ),
                key(
                    ScrubFindingKind::ManifestBlobMissing,
                    &broken,
                    Some(&lost_layer),
                    false
                ),
            ]
            .into_iter()
            .collect(),
            "{findings:#?}"
        );
        for d in [&bad_layer, &lost_layer] {
            for r in [&repo, &other] {
                assert!(matches!(
                    registry.stat_blob(&Actor::system(), r, d).await,
                    Err(Error::BlobUnknown(_))
                ));
            }
            assert_eq!(registry.meta.blob(d).await.unwrap(), None);
        }
        assert!(!blob_file(dir.path(), &bad_layer).exists());
        let kept = dir.path().join("quarantine/sha256").join(format!(
            "{}-scrub-{}",
            bad_layer.hex(),
            run.id
        ));
        assert_eq!(std::fs::read(&kept).unwrap(), damaged);
        let corrupt_finding = findings
            .iter()
            .find(|f| f.kind == ScrubFindingKind::Corrupt)
            .unwrap();
        assert!(
            corrupt_finding.detail.contains("quarantine/sha256/"),
            "{corrupt_finding:?}"
        );
        // The manifests stay.
        assert!(registry
            .meta
            .manifest_by_digest(&repo, &good)
            .await
            .unwrap()
            .is_some());

        // A push of the same layers heals both images.
        push(&registry, &repo, &[3u8; 5000]).await;
        push(&registry, &repo, &[4u8; 4000]).await;
        let (clean, findings) = run_scrub(&registry, false).await;
        assert!(findings.is_empty(), "{findings:#?}");
        assert_eq!((clean.findings, clean.errors), (0, 0));
        assert_eq!(clean.blobs_checked, clean.blobs_total);
    }
}
