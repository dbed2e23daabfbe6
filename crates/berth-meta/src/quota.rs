//! Project quotas: how much each project stores, and how much it may.
//!
//! Usage is kept by the database itself: triggers on `manifests` and `manifest_refs` add and
//! subtract in the transaction that stores or deletes a manifest, whichever path deletes it
//! (a tag delete, a repository delete, garbage collection, retention), so no write path can
//! forget it. A project's usage is:
//! - **storage**: the size of every distinct blob its manifests reference (a layer shared by
//!   many images or repositories of the project counts once, in `project_blobs` with a
//!   reference count and the size it was counted with, so it is taken off by the same
//!   amount even if the blob's row is gone by then), plus the size of each manifest;
//! - **count**: its manifests (Harbor's artifacts), one per repository holding it.
//!
//! Blobs uploaded but not yet referenced by a manifest are not counted: a push is judged when
//! its manifest arrives, in the transaction that stores it ([`QuotaExceeded`]). Uploads are
//! checked against the storage limit before their bytes are stored, as far as their length
//! is known then (see `berth-core`).

use crate::access::ProjectId;
use crate::MetaError;

/// A project's limits; `None` is unlimited (Harbor's `-1`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaLimits {
    /// Most bytes of storage.
    pub storage: Option<u64>,
    /// Most artifacts (manifests).
    pub count: Option<u64>,
}

/// A project's quota: its limits and usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    /// The project.
    pub project: String,
    /// Its id, when the project is registered (repositories pushed in open mode have none).
    pub project_id: Option<ProjectId>,
    /// Its limits.
    pub hard: QuotaLimits,
    /// Bytes used.
    pub used_storage: u64,
    /// Artifacts stored.
    pub used_count: u64,
    /// When the project was created (or the quota row, without a project).
    pub created_ms: i64,
    /// When its limits last changed (0: never).
    pub updated_ms: i64,
}

/// Which limit a push would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaKind {
    /// Bytes of storage.
    Storage,
    /// Number of artifacts.
    Count,
}

/// A write refused because it would take a project past one of its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaExceeded {
    /// The project.
    pub project: String,
    /// The limit it would pass.
    pub kind: QuotaKind,
    /// The limit.
    pub limit: u64,
    /// What usage would be after the write.
    pub would_be: u64,
}

impl std::fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            QuotaKind::Storage => write!(
                f,
                "storage quota of project {:?} exceeded: {} bytes allowed, this push would \
                 make it {} bytes",
                self.project, self.limit, self.would_be
            ),
            QuotaKind::Count => write!(
                f,
                "artifact count quota of project {:?} exceeded: {} artifacts allowed, this \
                 push would make it {}",
                self.project, self.limit, self.would_be
            ),
        }
    }
}

impl Quota {
    /// The first limit that `storage` bytes and `count` artifacts would pass.
    pub fn exceeded_by(&self, storage: u64, count: u64) -> Option<QuotaExceeded> {
        let over = |kind, limit: Option<u64>, would_be: u64| {
            limit.filter(|&l| would_be > l).map(|limit| QuotaExceeded {
                project: self.project.clone(),
                kind,
                limit,
                would_be,
            })
        };
        over(QuotaKind::Count, self.hard.count, count)
            .or_else(|| over(QuotaKind::Storage, self.hard.storage, storage))
    }
}

/// A stored limit (`-1`: none) as [`QuotaLimits`] reads it.
pub(crate) fn limit_from_db(v: i64) -> Option<u64> {
    u64::try_from(v).ok()
}

/// A limit as the database stores it and Harbor's API shows it: `-1` for none.
pub fn signed_limit(v: Option<u64>) -> i64 {
    v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// The columns [`quota_from_row`] reads, of [`QUOTA_SOURCE`] (`q`).
pub(crate) const QUOTA_COLUMNS: &str = "q.name, q.id, COALESCE(q.hard_bytes, -1), \
    COALESCE(q.hard_count, -1), COALESCE(q.bytes, 0), COALESCE(q.artifacts, 0), q.created_ms, \
    COALESCE(q.updated_ms, 0)";

/// Registered projects with their usage rows, as `q` (ordered by `q.id`).
pub(crate) const QUOTA_SOURCE: &str = "(SELECT p.id, p.name, p.created_ms, u.hard_bytes, \
    u.hard_count, u.bytes, u.artifacts, u.updated_ms FROM projects p \
    LEFT JOIN project_usage u ON u.project = p.name) q";

/// The columns [`quota_from_row`] reads, of `project_usage u` alone.
pub(crate) const USAGE_COLUMNS: &str = "u.project, \
    (SELECT id FROM projects WHERE name = u.project), u.hard_bytes, u.hard_count, u.bytes, \
    u.artifacts, COALESCE((SELECT created_ms FROM projects WHERE name = u.project), \
    u.created_ms), u.updated_ms";

/// A quota from a row of [`QUOTA_COLUMNS`] or [`USAGE_COLUMNS`].
pub(crate) fn quota_from_row(r: &impl crate::access::columns::Columns) -> Result<Quota, MetaError> {
    Ok(Quota {
        project: r.text(0)?,
        project_id: r.opt_int(1)?,
        hard: QuotaLimits {
            storage: limit_from_db(r.int(2)?),
            count: limit_from_db(r.int(3)?),
        },
        used_storage: r.int(4)?.max(0) as u64,
        used_count: r.int(5)?.max(0) as u64,
        created_ms: r.int(6)?,
        updated_ms: r.int(7)?,
    })
}

impl Quota {
    /// The quota of a project that has no row yet: nothing used, no limits.
    pub fn empty(project: &str) -> Self {
        Self {
            project: project.to_owned(),
            project_id: None,
            hard: QuotaLimits::default(),
            used_storage: 0,
            used_count: 0,
            created_ms: 0,
            updated_ms: 0,
        }
    }
}
