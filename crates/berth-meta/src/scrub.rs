//! Scrub's vocabulary: what the [`MetaStore`](crate::MetaStore) scrub methods take and
//! return.
//!
//! A scrub re-reads what the registry stores and checks it against what metadata says, in two
//! phases, each a walk in batches over keys (never a lock):
//!
//! 1. **Blobs**: every live blob row ([`ScrubBlob`], in digest order) is read back from the
//!    blob store and hashed; bytes that are gone are `missing`, bytes of the wrong size or
//!    hash are `corrupt`.
//! 2. **Manifests**: every manifest of every repository ([`ScrubManifest`], in (repository,
//!    digest) order) is hashed and parsed again; then each blob it names must be linked into
//!    its repository with a live row ([`MetaStore::scrub_missing_refs`]) and present in
//!    storage (phase 1's `missing` findings say which are not), and each child manifest must
//!    be in its repository.
//!
//! What it finds is recorded as [`ScrubFinding`]s of its run. A repairing run takes a bad
//! blob out of service with [`MetaStore::scrub_withdraw_blob`] (its row marked
//! [`BlobState::Deleting`] and its links removed in one transaction, so readers get
//! `BLOB_UNKNOWN` and pushes wait for it), moves its bytes to quarantine, then forgets the
//! row with [`MetaStore::gc_forget_blobs`]: a re-push then stores and links the good bytes
//! again.
//!
//! [`MetaStore::scrub_missing_refs`]: crate::MetaStore::scrub_missing_refs
//! [`MetaStore::scrub_withdraw_blob`]: crate::MetaStore::scrub_withdraw_blob
//! [`MetaStore::gc_forget_blobs`]: crate::MetaStore::gc_forget_blobs
//! [`BlobState::Deleting`]: crate::BlobState::Deleting

use berth_oci::{Digest, RepoName};

use crate::access::columns::{stored_digest, Columns};
use crate::MetaError;

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScrubFindingKind {
    /// A live blob row whose bytes are not in storage.
    Missing,
    /// A blob whose stored bytes do not have its size or do not hash to its digest.
    Corrupt,
    /// A manifest whose stored content does not hash to its digest (or no longer parses).
    ManifestCorrupt,
    /// A manifest that names a blob its repository does not hold (no link, no live row, or
    /// no bytes in storage).
    ManifestBlobMissing,
    /// An index that names a child manifest its repository does not hold.
    ManifestChildMissing,
}

impl ScrubFindingKind {
    /// Every kind, in the order reports list them.
    pub const ALL: [Self; 5] = [
        Self::Missing,
        Self::Corrupt,
        Self::ManifestCorrupt,
        Self::ManifestBlobMissing,
        Self::ManifestChildMissing,
    ];

    /// Its name, as stored and reported: `missing`, `corrupt`, `manifest_corrupt`,
    /// `manifest_blob_missing`, `manifest_child_missing`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Corrupt => "corrupt",
            Self::ManifestCorrupt => "manifest_corrupt",
            Self::ManifestBlobMissing => "manifest_blob_missing",
            Self::ManifestChildMissing => "manifest_child_missing",
        }
    }

    /// The kind named `name` ([`Self::as_str`]).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for ScrubFindingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing a scrub found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubFinding {
    /// Its id (0 for one not yet recorded); findings list in id order.
    pub id: i64,
    /// The run that found it.
    pub run_id: i64,
    /// What is wrong.
    pub kind: ScrubFindingKind,
    /// The blob or manifest at fault.
    pub digest: Digest,
    /// The repository of the manifest (manifest findings only).
    pub repo: Option<RepoName>,
    /// The blob or child manifest the manifest names and its repository lacks
    /// (`manifest_blob_missing`, `manifest_child_missing`).
    pub target: Option<Digest>,
    /// What was seen, for people.
    pub detail: String,
    /// Whether the run repaired it (quarantined the blob or manifest).
    pub repaired: bool,
    /// When it was first recorded (milliseconds since the Unix epoch).
    pub created_ms: i64,
}

impl ScrubFinding {
    /// A finding of run `run_id` about `digest`, not repaired.
    #[must_use]
    pub fn new(
        run_id: i64,
        kind: ScrubFindingKind,
        digest: Digest,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            id: 0,
            run_id,
            kind,
            digest,
            repo: None,
            target: None,
            detail: detail.into(),
            repaired: false,
            created_ms: crate::jobs::epoch_ms(std::time::SystemTime::now()),
        }
    }

    /// The same finding, about a manifest of `repo`.
    #[must_use]
    pub fn in_repo(mut self, repo: &RepoName) -> Self {
        self.repo = Some(repo.clone());
        self
    }

    /// The same finding, naming the reference `target` that is missing.
    #[must_use]
    pub fn with_target(mut self, target: &Digest) -> Self {
        self.target = Some(target.clone());
        self
    }
}

/// A live blob row, for phase 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubBlob {
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes, as metadata records it.
    pub size: u64,
}

/// A stored manifest with its repository, for phase 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubManifest {
    /// The repository it is in.
    pub repo: RepoName,
    /// Its digest, as recorded.
    pub digest: Digest,
    /// The media type it is served with.
    pub media_type: String,
    /// Its stored bytes.
    pub content: Vec<u8>,
}

/// One batch of phase 2.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubManifests {
    /// The manifests of the batch.
    pub items: Vec<ScrubManifest>,
    /// Where the next batch starts (pass it as `after`); `None` when there are no more.
    pub next: Option<String>,
}

/// The references of a manifest that its repository lacks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MissingRefs {
    /// Blobs not linked into the repository with a live row.
    pub blobs: Vec<Digest>,
    /// Child manifests not in the repository.
    pub manifests: Vec<Digest>,
}

/// A scrub run, as its history keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubRun {
    /// Its id.
    pub id: i64,
    /// Whether it quarantines what it finds corrupt or missing.
    pub repair: bool,
    /// `pending`, `running`, `stopping`, `success`, `error` or `stopped`.
    pub status: String,
    /// The phase it is at: `blobs`, `manifests` or `done`.
    pub phase: String,
    /// Where that phase stopped (a killed run continues from here).
    pub cursor: Option<String>,
    /// Live blobs when the run was created: phase 1's total, for progress.
    pub blobs_total: u64,
    /// Manifests when the run was created: phase 2's total, for progress.
    pub manifests_total: u64,
    /// Blobs checked so far.
    pub blobs_checked: u64,
    /// Bytes read and hashed so far.
    pub bytes_checked: u64,
    /// Manifests checked so far.
    pub manifests_checked: u64,
    /// Findings recorded (counted from them: never saved).
    pub findings: u64,
    /// Findings repaired (counted from them: never saved).
    pub repaired: u64,
    /// Errors met (a blob that could not be read, a repair that failed; each skipped).
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

impl ScrubRun {
    /// A run not yet started (its totals are counted when it is recorded).
    #[must_use]
    pub fn new(repair: bool) -> Self {
        let now = crate::jobs::epoch_ms(std::time::SystemTime::now());
        Self {
            id: 0,
            repair,
            status: "pending".into(),
            phase: "blobs".into(),
            cursor: None,
            blobs_total: 0,
            manifests_total: 0,
            blobs_checked: 0,
            bytes_checked: 0,
            manifests_checked: 0,
            findings: 0,
            repaired: 0,
            errors: 0,
            last_error: None,
            created_ms: now,
            updated_ms: now,
            finished_ms: None,
        }
    }
}

/// The columns (of `scrub_runs s`) that [`scrub_run_from_row`] reads, in its order. The
/// counts of findings come from `scrub_findings`, so a save never loses one.
pub(crate) const SCRUB_RUN_COLUMNS: &str = "s.id, s.repair, s.status, s.phase, s.cursor, \
    s.blobs_total, s.manifests_total, s.blobs_checked, s.bytes_checked, s.manifests_checked, \
    (SELECT COUNT(*) FROM scrub_findings f WHERE f.run_id = s.id), \
    (SELECT COUNT(*) FROM scrub_findings f WHERE f.run_id = s.id AND f.repaired), \
    s.errors, s.last_error, s.created_ms, s.updated_ms, s.finished_ms";

/// A run from a row of [`SCRUB_RUN_COLUMNS`].
pub(crate) fn scrub_run_from_row(r: &impl Columns) -> Result<ScrubRun, MetaError> {
    let count = |i| r.int(i).map(|n| n.max(0) as u64);
    Ok(ScrubRun {
        id: r.int(0)?,
        repair: r.flag(1)?,
        status: r.text(2)?,
        phase: r.text(3)?,
        cursor: r.opt_text(4)?,
        blobs_total: count(5)?,
        manifests_total: count(6)?,
        blobs_checked: count(7)?,
        bytes_checked: count(8)?,
        manifests_checked: count(9)?,
        findings: count(10)?,
        repaired: count(11)?,
        errors: count(12)?,
        last_error: r.opt_text(13)?,
        created_ms: r.int(14)?,
        updated_ms: r.int(15)?,
        finished_ms: r.opt_int(16)?,
    })
}

/// The columns (of `scrub_findings f`) that [`scrub_finding_from_row`] reads, in its order.
/// `repo` and `target` are stored as `''` when absent, so that the unique key that makes
/// recording a finding twice harmless covers them.
pub(crate) const SCRUB_FINDING_COLUMNS: &str =
    "f.id, f.run_id, f.kind, f.digest, f.repo, f.target, f.detail, f.repaired, f.created_ms";

/// A finding from a row of [`SCRUB_FINDING_COLUMNS`].
pub(crate) fn scrub_finding_from_row(r: &impl Columns) -> Result<ScrubFinding, MetaError> {
    let kind = r.text(2)?;
    let repo = r.text(4)?;
    let target = r.text(5)?;
    Ok(ScrubFinding {
        id: r.int(0)?,
        run_id: r.int(1)?,
        kind: ScrubFindingKind::from_name(&kind).ok_or_else(|| {
            MetaError::Backend(format!("stored scrub finding kind {kind:?} is invalid"))
        })?,
        digest: stored_digest(&r.text(3)?)?,
        repo: if repo.is_empty() {
            None
        } else {
            Some(repo.parse().map_err(|e| {
                MetaError::Backend(format!("stored repository {repo:?} is invalid: {e}"))
            })?)
        },
        target: if target.is_empty() {
            None
        } else {
            Some(stored_digest(&target)?)
        },
        detail: r.text(6)?,
        repaired: r.flag(7)?,
        created_ms: r.int(8)?,
    })
}

/// A finding's key columns as stored: `(kind, digest, repo or '', target or '')`.
pub(crate) fn finding_key(f: &ScrubFinding) -> (&'static str, String, String, String) {
    (
        f.kind.as_str(),
        f.digest.to_string(),
        f.repo.as_ref().map(ToString::to_string).unwrap_or_default(),
        f.target
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    )
}
