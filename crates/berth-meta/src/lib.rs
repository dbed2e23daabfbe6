//! Registry metadata for Berth: the [`MetaStore`] trait and its backends.
//!
//! Metadata is everything that is not blob bytes: repositories, which blobs each repository
//! may reach (links), manifests (their bytes too: they are small and read often), tags, the
//! references of each manifest, upload sessions (with their leases and segments), and the job
//! queue ([`jobs`]) that every instance drains, and the history of garbage collection
//! ([`gc`]) and scrub ([`scrub`]) runs. Every change that touches several rows is one
//! transaction, so a tag always points at a complete manifest and a manifest is never stored
//! without its references.
//!
//! Backends: [`sqlite::SqliteMeta`] (the embedded default) and [`postgres::PgMeta`] (for a
//! fleet of instances sharing one database). Every backend passes [`testsuite::run`].

use std::time::Duration;

use async_trait::async_trait;
use berth_oci::{Digest, DigestAlgorithm, RepoName, Tag};

pub use access::{
    AccessStore, ArtifactInfo, AuditEvent, AuditFilter, Group, GroupId, Listing, Member,
    MemberEntity, NewProject, NewRobot, NewUser, Paging, Project, ProjectFilter, ProjectId,
    ProjectRole, RepositoryInfo, Robot, RobotFilter, RobotId, RobotLevel, RobotUpdate, Session,
    Statistics, User, UserId, UserUpdate, Visibility,
};
pub use gc::{BlobState, GcBatch, GcItem, GcRun, GcScan};
pub use jobs::{
    ClaimedJob, Job, JobFilter, JobId, JobKind, JobLease, JobState, LeaseHolder, NewJob,
    ParseJobKindError, Retry, RunAt, UploadLease,
};
pub use policy::ImmutableRule;
pub use quota::{Quota, QuotaExceeded, QuotaKind, QuotaLimits};
pub use retention::{
    RetentionArtifact, RetentionDelete, RetentionExecution, RetentionPolicy, RetentionStore,
    RetentionTask,
};
pub use scrub::{
    MissingRefs, ScrubBlob, ScrubFinding, ScrubFindingKind, ScrubManifest, ScrubManifests, ScrubRun,
};

/// Which tag names a delete must not take (immutable tags): asked of each tag the delete
/// would remove, inside its transaction ([`MetaStore::delete_manifest_keeping`]).
pub type TagGuard = std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Refuse with the first of `tags` that `keep` protects (for the backends' deletes).
fn check_kept<'a>(
    keep: &TagGuard,
    tags: impl IntoIterator<Item = &'a str>,
) -> Result<(), MetaError> {
    match tags.into_iter().find(|t| keep(t)) {
        Some(t) => Err(MetaError::TagImmutable(t.to_owned())),
        None => Ok(()),
    }
}

pub mod access;
pub mod gc;
pub mod jobs;
pub mod policy;
pub mod postgres;
pub mod quota;
pub mod retention;
pub mod scrub;
pub mod sqlite;
pub mod testsuite;

/// Errors a metadata backend reports.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// A manifest names a blob that is not linked into its repository.
    #[error("blob {0} is not in the repository")]
    MissingBlob(Digest),
    /// A manifest names a child manifest that is not in its repository.
    #[error("manifest {0} is not in the repository")]
    MissingManifest(Digest),
    /// An upload changed underneath the caller (another request appended to it, or took its
    /// lease).
    #[error("upload was changed by a concurrent request")]
    Conflict,
    /// The database's schema is newer than this program understands.
    #[error(
        "database schema version {found} is newer than this berth knows ({known}): upgrade berth"
    )]
    SchemaTooNew {
        /// The version recorded in the database.
        found: i64,
        /// The newest version this program has.
        known: i64,
    },
    /// A record with that name (or key) exists already.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// A record the change names does not exist.
    #[error("{0} does not exist")]
    NotFound(String),
    /// A record cannot be deleted while others depend on it.
    #[error("{0}")]
    NotEmpty(String),
    /// The database refuses a value the caller gave (PostgreSQL: text holding a NUL
    /// character); the request is at fault, not the store.
    #[error("{0}")]
    Invalid(String),
    /// The write would move (or delete) an immutable tag; nothing is written.
    #[error("tag {0} is immutable: it cannot be moved or deleted")]
    TagImmutable(String),
    /// The write would take a project past its quota; nothing is written.
    #[error("{0}")]
    QuotaExceeded(QuotaExceeded),
    /// The database cannot be reached or is busy; the request may be retried.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// The backend failed.
    #[error("metadata store: {0}")]
    Backend(String),
}

/// A manifest to store, with the references it was validated to have.
#[derive(Debug, Clone)]
pub struct NewManifest {
    /// The repository it goes in.
    pub repo: RepoName,
    /// The digest of `content`.
    pub digest: Digest,
    /// The media type it is served with.
    pub media_type: String,
    /// Its artifact type, for referrer listings.
    pub artifact_type: Option<String>,
    /// The manifest it refers to (`subject`).
    pub subject: Option<Digest>,
    /// Its annotations as a JSON object, for referrer listings (`None` if it has none).
    pub annotations: Option<String>,
    /// The exact bytes pushed.
    pub content: Vec<u8>,
    /// Blobs (config and layers) that must be linked in the repository.
    pub blobs: Vec<Digest>,
    /// Child manifests that must be in the repository.
    pub manifests: Vec<Digest>,
    /// Tags (among those put) that must not move: immutable ones. If one points at another
    /// manifest, nothing is written ([`MetaError::TagImmutable`]); it may be created.
    pub pinned_tags: Vec<String>,
}

/// A stored manifest, as served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredManifest {
    /// Its digest.
    pub digest: Digest,
    /// The media type it is served with.
    pub media_type: String,
    /// The exact bytes pushed.
    pub content: Vec<u8>,
}

/// A manifest whose `subject` is a given manifest, for the referrers API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    /// The referrer's digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its artifact type.
    pub artifact_type: Option<String>,
    /// Its annotations as a JSON object.
    pub annotations: Option<String>,
}

/// One chunk of an upload as the blob store keeps it: where it starts, and the token its
/// append was given (which, with the start, names the object it wrote). Recorded by
/// [`MetaStore::advance_upload`]; the blob store reads and commits exactly the recorded
/// segments, so a write nobody recorded is never part of the upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSegment {
    /// The upload offset of its first byte.
    pub start: u64,
    /// The token of its append.
    pub token: String,
}

/// An upload session's durable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The session id (a uuid).
    pub id: String,
    /// The repository it uploads into.
    pub repo: RepoName,
    /// How many bytes it holds.
    pub offset: u64,
    /// The algorithm of `hash_state`.
    pub algorithm: DigestAlgorithm,
    /// The hasher's state after `offset` bytes, if saved.
    pub hash_state: Option<Vec<u8>>,
    /// Its chunks, in order of start: each runs from its start to the next one's, the last
    /// one to `offset`. Filled in when an upload is read; [`MetaStore::create_upload`]
    /// records none (a new session holds no bytes) and [`MetaStore::advance_upload`] adds one.
    pub segments: Vec<UploadSegment>,
    /// When it started, in seconds since the Unix epoch.
    pub created_at: i64,
    /// When it last advanced (or started), in seconds since the Unix epoch: uploads idle for
    /// long are expired.
    pub updated_at: i64,
}

/// One page of a listing.
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    /// Return only entries after this one (lexically).
    pub last: Option<&'a str>,
    /// Return at most this many.
    pub limit: usize,
}

/// Where a backend keeps metadata. Retention's records are behind [`RetentionStore`], which
/// every `MetaStore` is too.
#[async_trait]
pub trait MetaStore: RetentionStore + Send + Sync + 'static {
    /// Record that `digest` (of `size` bytes) is stored and linked into `repo`, creating the
    /// repository if needed, and touch both (garbage collection spares what was touched within
    /// its grace period). Idempotent.
    ///
    /// # Errors
    /// [`MetaError::Conflict`] while garbage collection is deleting the blob (its bytes may be
    /// gone: store them again); [`MetaError::Unavailable`] or [`MetaError::Backend`].
    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64)
        -> Result<(), MetaError>;

    /// The size of `digest` if it is linked into `repo`.
    ///
    /// # Errors
    /// Backend errors.
    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, MetaError>;

    /// The size of `digest` if any repository holds it.
    ///
    /// # Errors
    /// Backend errors.
    async fn blob(&self, digest: &Digest) -> Result<Option<u64>, MetaError>;

    /// Repositories that link `digest` (to choose a source for an unnamed mount), at most `limit`.
    ///
    /// # Errors
    /// Backend errors.
    async fn repos_with_blob(
        &self,
        digest: &Digest,
        limit: usize,
    ) -> Result<Vec<RepoName>, MetaError>;

    /// Remove the link of `digest` from `repo`. Returns whether there was one.
    ///
    /// # Errors
    /// Backend errors.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError>;

    /// Store a manifest and point `tags` at it, in one transaction, after checking that every
    /// blob and child manifest it references is in the repository.
    ///
    /// A manifest new to the repository counts in its project's usage ([`quota`]); if that
    /// takes the project past a limit, nothing is written.
    ///
    /// # Errors
    /// [`MetaError::MissingBlob`] or [`MetaError::MissingManifest`] if a reference is absent,
    /// [`MetaError::QuotaExceeded`]; nothing is written then.
    async fn put_manifest(&self, manifest: NewManifest, tags: &[Tag]) -> Result<(), MetaError>;

    /// The manifest `tag` points at in `repo`.
    ///
    /// # Errors
    /// Backend errors.
    async fn manifest_by_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<StoredManifest>, MetaError>;

    /// The manifest `digest` in `repo`.
    ///
    /// # Errors
    /// Backend errors.
    async fn manifest_by_digest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<StoredManifest>, MetaError>;

    /// Delete manifest `digest` from `repo` with every tag pointing at it. Returns whether it
    /// existed.
    ///
    /// # Errors
    /// Backend errors.
    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError> {
        self.delete_manifest_keeping(repo, digest, None).await
    }

    /// [`MetaStore::delete_manifest`], unless a tag it would take is one `keep` protects:
    /// the tags are read and judged inside the delete's transaction, so a push that tags the
    /// manifest meanwhile is either seen here or waits for the delete (and then fails, the
    /// manifest being gone). Nothing is deleted when it refuses.
    ///
    /// # Errors
    /// [`MetaError::TagImmutable`] with the first protected tag; backend errors.
    async fn delete_manifest_keeping(
        &self,
        repo: &RepoName,
        digest: &Digest,
        keep: Option<TagGuard>,
    ) -> Result<bool, MetaError>;

    /// Delete repository `repo` with all it holds (manifests, tags, references, blob links)
    /// in one transaction. Returns whether it existed. Blobs themselves stay, for garbage
    /// collection to find.
    ///
    /// # Errors
    /// Backend errors.
    async fn delete_repository(&self, repo: &RepoName) -> Result<bool, MetaError> {
        self.delete_repository_keeping(repo, None).await
    }

    /// [`MetaStore::delete_repository`], unless the repository holds a tag `keep` protects
    /// (judged inside the transaction, as in [`MetaStore::delete_manifest_keeping`]).
    ///
    /// # Errors
    /// [`MetaError::TagImmutable`] with the first protected tag; backend errors.
    async fn delete_repository_keeping(
        &self,
        repo: &RepoName,
        keep: Option<TagGuard>,
    ) -> Result<bool, MetaError>;

    /// Delete one tag (not the manifest). Returns whether it existed.
    ///
    /// # Errors
    /// Backend errors.
    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, MetaError>;

    /// Tags of `repo` in lexical order, or `None` if the repository is unknown.
    ///
    /// # Errors
    /// Backend errors.
    async fn list_tags(
        &self,
        repo: &RepoName,
        page: Page<'_>,
    ) -> Result<Option<Vec<String>>, MetaError>;

    /// Repository names in lexical order.
    ///
    /// # Errors
    /// Backend errors.
    async fn list_repositories(&self, page: Page<'_>) -> Result<Vec<String>, MetaError>;

    /// Manifests in `repo` whose subject is `subject`, ordered by digest.
    ///
    /// # Errors
    /// Backend errors.
    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<Referrer>, MetaError>;

    /// Record a new upload session (its `segments` are not looked at: it has none yet).
    ///
    /// # Errors
    /// Backend errors.
    async fn create_upload(&self, upload: &Upload) -> Result<(), MetaError>;

    /// An upload session of `repo`, with its segments.
    ///
    /// # Errors
    /// Backend errors.
    async fn upload(&self, repo: &RepoName, id: &str) -> Result<Option<Upload>, MetaError>;

    /// Advance an upload from `segment.start` to `upload.offset` with its new hash state,
    /// record `segment` (the chunk that filled the gap) among its segments, and set its
    /// `updated_at` to now, in one transaction. With `fence`, only while that holder has the
    /// upload's lease (see [`MetaStore::lease_upload`]; an expired lease nobody took since
    /// still counts). `upload.segments` is not looked at.
    ///
    /// # Errors
    /// [`MetaError::Conflict`] if the stored offset is no longer `segment.start`, the upload
    /// is gone, or `fence` does not hold its lease; nothing is recorded then.
    async fn advance_upload(
        &self,
        upload: &Upload,
        segment: &UploadSegment,
        fence: Option<&LeaseHolder>,
    ) -> Result<(), MetaError>;

    /// Forget an upload session with its segments.
    ///
    /// # Errors
    /// Backend errors.
    async fn delete_upload(&self, id: &str) -> Result<(), MetaError>;

    /// Upload sessions of any repository whose `updated_at` is before `idle_since` (seconds
    /// since the Unix epoch), with their segments, in id order, a page at a time (`page.last`
    /// is an upload id).
    ///
    /// # Errors
    /// Backend errors.
    async fn stale_uploads(
        &self,
        idle_since: i64,
        page: Page<'_>,
    ) -> Result<Vec<Upload>, MetaError>;

    /// Forget upload `id` (with its segments) if it is still idle since before `idle_since`
    /// and nobody but `holder` has a live lease on it. Returns whether it was forgotten. The caller discards
    /// its stored bytes.
    ///
    /// # Errors
    /// Backend errors.
    async fn expire_upload(
        &self,
        id: &str,
        idle_since: i64,
        holder: Option<&LeaseHolder>,
    ) -> Result<bool, MetaError>;

    /// Take or renew the lease on upload `id` for `holder`, to last `ttl` from now by the
    /// store's clock. Granted when the lease is free, expired, or already `holder`'s.
    ///
    /// # Errors
    /// Backend errors.
    async fn lease_upload(
        &self,
        id: &str,
        holder: &LeaseHolder,
        ttl: Duration,
    ) -> Result<UploadLease, MetaError>;

    /// Give back `holder`'s lease on upload `id` (nothing happens if it is not `holder`'s).
    ///
    /// # Errors
    /// Backend errors.
    async fn release_upload(&self, id: &str, holder: &LeaseHolder) -> Result<(), MetaError>;

    /// Add a job to the queue. Returns its id, or `None` when it has a dedupe key and a job
    /// with that key is already queued or running (nothing is added then).
    ///
    /// # Errors
    /// Backend errors.
    async fn enqueue_job(&self, job: &NewJob) -> Result<Option<JobId>, MetaError>;

    /// Claim up to `limit` due jobs of `kinds` for `holder`, each leased for `lease` from now
    /// by the store's clock, oldest due first. Due: queued with its run-at time passed, or
    /// running with its lease expired (its worker stopped heartbeating). A claim counts an
    /// attempt; an expired job that has used all its attempts becomes dead instead. Concurrent
    /// claims never hand out the same job.
    ///
    /// # Errors
    /// Backend errors.
    async fn claim_jobs(
        &self,
        holder: &LeaseHolder,
        kinds: &[JobKind],
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ClaimedJob>, MetaError>;

    /// Heartbeat: make `lease` last `ttl` from now. Returns false when the lease is no longer
    /// held (the job was claimed again, finished or failed): the worker should stop.
    ///
    /// # Errors
    /// Backend errors.
    async fn extend_job_lease(&self, lease: &JobLease, ttl: Duration) -> Result<bool, MetaError>;

    /// Mark the job of `lease` done and, in the same transaction, enqueue `next` (a periodic
    /// job's next run, which may share its dedupe key). Returns false, changing nothing, when
    /// the lease is no longer held.
    ///
    /// # Errors
    /// Backend errors.
    async fn finish_job(&self, lease: &JobLease, next: Option<&NewJob>) -> Result<bool, MetaError>;

    /// Record that the attempt of `lease` failed with `error`: the job is queued again as
    /// `retry` says, or dead if it says never or that was its last attempt. Returns the job's
    /// new state, or `None`, changing nothing, when the lease is no longer held.
    ///
    /// # Errors
    /// Backend errors.
    async fn fail_job(
        &self,
        lease: &JobLease,
        error: &str,
        retry: Retry,
    ) -> Result<Option<JobState>, MetaError>;

    /// Jobs as `filter` selects them, in id order.
    ///
    /// # Errors
    /// Backend errors.
    async fn list_jobs(&self, filter: JobFilter<'_>) -> Result<Vec<Job>, MetaError>;

    /// Delete done and dead jobs that finished more than `age` ago. Returns how many.
    ///
    /// # Errors
    /// Backend errors.
    async fn prune_jobs(&self, age: Duration) -> Result<u64, MetaError>;

    /// Announce that an upload is about to store `digest` (of `size` bytes): a live blob is
    /// touched, an unknown one gets a [`BlobState::Pending`] row. Either way garbage
    /// collection leaves it alone for its grace period, so the bytes about to be stored are
    /// not deleted before [`Self::link_blob`] records them. Returns `false`, changing
    /// nothing, while garbage collection is deleting the blob: wait, and ask again.
    ///
    /// # Errors
    /// Backend errors.
    async fn reserve_blob(&self, digest: &Digest, size: u64) -> Result<bool, MetaError>;

    /// GC step 1: delete untagged manifests that no index names and whose `subject` (if any)
    /// is gone, untouched since `scan.cutoff_ms`, among the next `scan.limit` manifests.
    ///
    /// # Errors
    /// Backend errors.
    async fn gc_manifests(&self, scan: GcScan<'_>) -> Result<GcBatch, MetaError>;

    /// GC step 2: remove repository links to blobs that no manifest of the repository names,
    /// untouched since `scan.cutoff_ms`, among the next `scan.limit` links.
    ///
    /// # Errors
    /// Backend errors.
    async fn gc_links(&self, scan: GcScan<'_>) -> Result<GcBatch, MetaError>;

    /// GC step 3: mark [`BlobState::Deleting`] the blobs that no repository links, untouched
    /// since `scan.cutoff_ms` (and pending rows older than that: uploads that died), among
    /// the next `scan.limit` blobs. A dry run reports them without marking, and counts a
    /// blob whose every link step 2 would remove as unlinked.
    ///
    /// # Errors
    /// Backend errors.
    async fn gc_mark_blobs(&self, scan: GcScan<'_>) -> Result<GcBatch, MetaError>;

    /// Blobs marked [`BlobState::Deleting`], at most `limit`, in digest order.
    ///
    /// # Errors
    /// Backend errors.
    async fn gc_marked_blobs(&self, limit: usize) -> Result<Vec<GcItem>, MetaError>;

    /// Remove the rows of marked blobs whose bytes are gone. Returns how many.
    ///
    /// # Errors
    /// Backend errors.
    async fn gc_forget_blobs(&self, digests: &[Digest]) -> Result<u64, MetaError>;

    /// Which of `digests` have a blob row, in any state (GC step 4 looks for bytes without).
    ///
    /// # Errors
    /// Backend errors.
    async fn gc_known_blobs(&self, digests: &[Digest]) -> Result<Vec<Digest>, MetaError>;

    /// GC step 4: claim bytes found in storage with no row, by giving them a
    /// [`BlobState::Deleting`] row. Returns `false` (changing nothing) if the digest has a row.
    ///
    /// # Errors
    /// Backend errors.
    async fn gc_claim_orphan(&self, digest: &Digest, size: u64) -> Result<bool, MetaError>;

    /// Record a new garbage collection run; returns it with its id.
    ///
    /// # Errors
    /// Backend errors.
    async fn create_gc_run(&self, run: &GcRun) -> Result<GcRun, MetaError>;

    /// Save a run's progress (every field but its id and creation time). A run someone asked
    /// to stop (`stopping`) keeps that status unless the save ends it (`stopped`, `success`,
    /// `error`), so a worker saving its progress never loses a stop request.
    ///
    /// # Errors
    /// [`MetaError::NotFound`] if there is no such run; backend errors.
    async fn save_gc_run(&self, run: &GcRun) -> Result<(), MetaError>;

    /// One run.
    ///
    /// # Errors
    /// Backend errors.
    async fn gc_run(&self, id: i64) -> Result<Option<GcRun>, MetaError>;

    /// Runs, newest first: `paging` as for the other listings.
    ///
    /// # Errors
    /// Backend errors.
    async fn list_gc_runs(&self, paging: Paging) -> Result<Listing<GcRun>, MetaError>;

    /// The quota of `project`: its usage and limits (none set: unlimited, and no usage if it
    /// holds nothing).
    ///
    /// # Errors
    /// Backend errors.
    async fn quota(&self, project: &str) -> Result<Quota, MetaError>;

    /// Set the limits of `project`.
    ///
    /// # Errors
    /// Backend errors.
    async fn set_quota(&self, project: &str, limits: QuotaLimits) -> Result<(), MetaError>;

    /// The quotas of registered projects (one, with `project`), by project id.
    ///
    /// # Errors
    /// Backend errors.
    async fn list_quotas(
        &self,
        project: Option<ProjectId>,
        paging: Paging,
    ) -> Result<Listing<Quota>, MetaError>;

    /// The tag immutability rules of project `project` (by name), by priority then id.
    ///
    /// # Errors
    /// Backend errors.
    async fn immutable_rules(&self, project: &str) -> Result<Vec<ImmutableRule>, MetaError>;

    /// Add a rule (its id and times are chosen here); returns its id.
    ///
    /// # Errors
    /// [`MetaError::NotFound`] if the project does not exist; backend errors.
    async fn create_immutable_rule(&self, rule: &ImmutableRule) -> Result<i64, MetaError>;

    /// Change rule `rule.id` of project `rule.project_id`: whether it is off, its priority
    /// and selectors. Returns whether it exists.
    ///
    /// # Errors
    /// Backend errors.
    async fn update_immutable_rule(&self, rule: &ImmutableRule) -> Result<bool, MetaError>;

    /// Delete rule `id` of project `project_id`. Returns whether it existed.
    ///
    /// # Errors
    /// Backend errors.
    async fn delete_immutable_rule(
        &self,
        project_id: ProjectId,
        id: i64,
    ) -> Result<bool, MetaError>;

    /// The tags of `repo` that point at `digest`, by name.
    ///
    /// # Errors
    /// Backend errors.
    async fn tags_of(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<String>, MetaError>;

    /// Scrub phase 1: live blob rows ([`BlobState::Live`]) in digest order, after `after`
    /// (from the start when `None`), at most `limit`.
    ///
    /// # Errors
    /// Backend errors.
    async fn scrub_blobs(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<ScrubBlob>, MetaError>;

    /// Scrub phase 2: manifests of every repository with their content, in (repository,
    /// digest) order, after the cursor `after` (from [`ScrubManifests::next`]; from the start
    /// when `None`), at most `limit`.
    ///
    /// # Errors
    /// Backend errors.
    async fn scrub_manifests(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ScrubManifests, MetaError>;

    /// Which of `blobs` are not linked into `repo` with a live row, and which of `manifests`
    /// are not in `repo` (each in the order given).
    ///
    /// # Errors
    /// Backend errors.
    async fn scrub_missing_refs(
        &self,
        repo: &RepoName,
        blobs: &[Digest],
        manifests: &[Digest],
    ) -> Result<MissingRefs, MetaError>;

    /// Take a live blob out of service in one transaction: its row becomes
    /// [`BlobState::Deleting`] (invisible to readers; links and reservations wait or fail, as
    /// while garbage collection deletes it) and every repository link to it is removed.
    /// Returns `false`, changing nothing, unless the row was live. The caller moves the bytes
    /// away, then forgets the row with [`Self::gc_forget_blobs`]; if it dies in between,
    /// garbage collection finishes the row as one of its own.
    ///
    /// # Errors
    /// Backend errors.
    async fn scrub_withdraw_blob(&self, digest: &Digest) -> Result<bool, MetaError>;

    /// Record a new scrub run, with the number of live blobs and of manifests there are now
    /// as its totals; returns it with its id and totals.
    ///
    /// # Errors
    /// Backend errors.
    async fn create_scrub_run(&self, run: &ScrubRun) -> Result<ScrubRun, MetaError>;

    /// Save a run's progress (every field but its id, totals, finding counts and creation
    /// time). A run someone asked to stop (`stopping`) keeps that status unless the save ends
    /// it (`stopped`, `success`, `error`), as for [`Self::save_gc_run`].
    ///
    /// # Errors
    /// [`MetaError::NotFound`] if there is no such run; backend errors.
    async fn save_scrub_run(&self, run: &ScrubRun) -> Result<(), MetaError>;

    /// One scrub run.
    ///
    /// # Errors
    /// Backend errors.
    async fn scrub_run(&self, id: i64) -> Result<Option<ScrubRun>, MetaError>;

    /// Scrub runs, newest first: `paging` as for the other listings.
    ///
    /// # Errors
    /// Backend errors.
    async fn list_scrub_runs(&self, paging: Paging) -> Result<Listing<ScrubRun>, MetaError>;

    /// Record findings of their runs, in one transaction. A finding already recorded (same
    /// run, kind, digest, repository and target: a batch done again after a crash) is not
    /// added twice; it takes the new detail, and stays repaired once it was.
    ///
    /// # Errors
    /// [`MetaError::NotFound`] if a run does not exist; backend errors.
    async fn add_scrub_findings(&self, findings: &[ScrubFinding]) -> Result<(), MetaError>;

    /// The findings of run `run_id`, in the order they were first recorded.
    ///
    /// # Errors
    /// Backend errors.
    async fn scrub_findings(
        &self,
        run_id: i64,
        paging: Paging,
    ) -> Result<Listing<ScrubFinding>, MetaError>;
}
