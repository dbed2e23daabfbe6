//! Garbage collection's vocabulary: what the [`MetaStore`](crate::MetaStore) GC methods take
//! and return.
//!
//! Collection is a sweep in batches over keys, never a walk over storage or a global lock:
//!
//! 1. **Untagged manifests** (when asked): a manifest with no tag, no index naming it, no
//!    live `subject` (a signature or SBOM of a manifest still there stays), untouched for the
//!    grace period.
//! 2. **Links**: a repository's link to a blob that no manifest of that repository names,
//!    untouched for the grace period.
//! 3. **Blobs**: a blob no repository links, untouched for the grace period, is *marked*
//!    ([`BlobState::Deleting`]); then its bytes are deleted and then its row. A killed
//!    collection finds the marked rows and finishes them.
//! 4. **Orphans**: bytes in storage with no row at all (a crash between storing a blob and
//!    recording it), older than the grace period, are claimed with a `Deleting` row first.
//!
//! Every use of a link, blob or manifest *touches* it (`touched_ms`) in the transaction that
//! uses it, and every GC step re-checks "unreferenced and untouched since the cutoff" in the
//! transaction that removes, with the rows locked. So whatever a push in flight relies on is
//! either kept, or gone before the push looks (and the push fails cleanly, never half-done).

/// Where a blob's row stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobState {
    /// Stored and usable.
    Live,
    /// An upload is about to store it (bytes may not be there yet); not visible to readers.
    Pending,
    /// Garbage collection is deleting it; not visible to readers, and nobody may link it
    /// until its row is gone.
    Deleting,
}

impl BlobState {
    /// The number stored in the `state` column.
    #[must_use]
    pub fn code(self) -> i64 {
        match self {
            Self::Live => 0,
            Self::Pending => 1,
            Self::Deleting => 2,
        }
    }
}

/// One thing a GC step removed (or, in a dry run, would remove).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcItem {
    /// The repository it was in (manifests and links; `None` for blobs).
    pub repo: Option<String>,
    /// Its digest.
    pub digest: berth_oci::Digest,
    /// Its size in bytes.
    pub size: u64,
}

/// One batch of a GC step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcBatch {
    /// What the batch removed (or would remove).
    pub items: Vec<GcItem>,
    /// Where the next batch starts (pass it as `after`); `None` when the step has looked at
    /// everything.
    pub next: Option<String>,
    /// How many rows the batch looked at.
    pub scanned: u64,
}

/// What a GC step needs to know besides where to start.
#[derive(Debug, Clone, Copy)]
pub struct GcScan<'a> {
    /// Start after this key (from [`GcBatch::next`]); `None` starts at the beginning.
    pub after: Option<&'a str>,
    /// Rows to look at in this batch.
    pub limit: usize,
    /// Only what was last touched before this time (milliseconds since the Unix epoch) may go:
    /// now minus the grace period.
    pub cutoff_ms: i64,
    /// Report only; change nothing.
    pub dry_run: bool,
}

/// A garbage collection run, as its history keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcRun {
    /// Its id.
    pub id: i64,
    /// `manual` or `schedule`.
    pub trigger: String,
    /// Whether it only reports.
    pub dry_run: bool,
    /// Whether it deletes untagged manifests.
    pub delete_untagged: bool,
    /// The grace period it used, in seconds.
    pub grace_seconds: u64,
    /// `pending`, `running`, `success`, `error` or `stopped`.
    pub status: String,
    /// The step it is at: `manifests`, `links`, `blobs`, `sweep`, `orphans` or `done`.
    pub phase: String,
    /// Where that step stopped (a killed run continues from here).
    pub cursor: Option<String>,
    /// Manifests deleted (or that would be).
    pub manifests_deleted: u64,
    /// Repository links removed (or that would be).
    pub links_deleted: u64,
    /// Blobs deleted from storage (or that would be).
    pub blobs_deleted: u64,
    /// Bytes freed in storage (or that would be).
    pub bytes_freed: u64,
    /// Rows and objects looked at so far, for progress.
    pub scanned: u64,
    /// Errors met (each one skipped; the run goes on).
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

impl GcRun {
    /// A run not yet started.
    #[must_use]
    pub fn new(trigger: &str, dry_run: bool, delete_untagged: bool, grace_seconds: u64) -> Self {
        let now = crate::jobs::epoch_ms(std::time::SystemTime::now());
        Self {
            id: 0,
            trigger: trigger.to_owned(),
            dry_run,
            delete_untagged,
            grace_seconds,
            status: "pending".into(),
            phase: if delete_untagged {
                "manifests"
            } else {
                "links"
            }
            .into(),
            cursor: None,
            manifests_deleted: 0,
            links_deleted: 0,
            blobs_deleted: 0,
            bytes_freed: 0,
            scanned: 0,
            errors: 0,
            last_error: None,
            created_ms: now,
            updated_ms: now,
            finished_ms: None,
        }
    }
}

/// The columns of `gc_runs` that [`gc_run_from_row`] reads, in its order.
pub(crate) const GC_RUN_COLUMNS: &str = "id, trigger_kind, dry_run, delete_untagged, \
    grace_seconds, status, phase, cursor, manifests_deleted, links_deleted, blobs_deleted, \
    bytes_freed, scanned, errors, last_error, created_ms, updated_ms, finished_ms";

/// A run from a row of [`GC_RUN_COLUMNS`].
pub(crate) fn gc_run_from_row(
    r: &impl crate::access::columns::Columns,
) -> Result<GcRun, crate::MetaError> {
    let count = |i| r.int(i).map(|n| n.max(0) as u64);
    Ok(GcRun {
        id: r.int(0)?,
        trigger: r.text(1)?,
        dry_run: r.flag(2)?,
        delete_untagged: r.flag(3)?,
        grace_seconds: count(4)?,
        status: r.text(5)?,
        phase: r.text(6)?,
        cursor: r.opt_text(7)?,
        manifests_deleted: count(8)?,
        links_deleted: count(9)?,
        blobs_deleted: count(10)?,
        bytes_freed: count(11)?,
        scanned: count(12)?,
        errors: count(13)?,
        last_error: r.opt_text(14)?,
        created_ms: r.int(15)?,
        updated_ms: r.int(16)?,
        finished_ms: r.opt_int(17)?,
    })
}

/// A cursor over `(repository id, digest)` keys, as `"{id}/{digest}"`.
pub(crate) fn pair_cursor(after: Option<&str>) -> (i64, String) {
    after
        .and_then(|a| a.split_once('/'))
        .and_then(|(id, d)| Some((id.parse().ok()?, d.to_owned())))
        .unwrap_or((i64::MIN, String::new()))
}
