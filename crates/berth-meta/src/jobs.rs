//! The job queue's and the leases' vocabulary: what the [`MetaStore`](crate::MetaStore) job
//! and lease methods take and return.
//!
//! A job is a row in the metadata database that any instance may claim. Its life:
//!
//! ```text
//!   enqueue ──> queued ──claim──> running ──finish──> done
//!                 ^                  │
//!                 └──fail (retry)────┤   lease expired: claimable again, as if queued
//!                                    └──fail (no retry, or last attempt)──> dead
//! ```
//!
//! Every claim counts an attempt and hands out a [`JobLease`] naming the holder and the
//! attempt; heartbeats, finishing and failing only act while that exact lease still stands.
//! So a worker that stalled past its lease, and whose job was claimed again (by another
//! instance or by itself), can neither finish nor fail the job it lost.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a job does, such as `uploads.expire`: workers register for kinds, and a claim names the
/// kinds its worker runs.
///
/// A kind is 1 to 64 characters from lowercase ASCII letters, digits, `.`, `-` and `_`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobKind(Cow<'static, str>);

/// A job kind that is not 1 to 64 of lowercase ASCII letters, digits, `.`, `-` and `_`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("job kind {0:?} is not 1 to 64 of a-z, 0-9, '.', '-' and '_'")]
pub struct ParseJobKindError(String);

fn valid_kind(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

impl JobKind {
    /// A kind named by a constant, for the kinds a program defines.
    ///
    /// # Panics
    /// If `name` is not a valid kind: a programming error, caught by the first test that uses
    /// the constant.
    #[must_use]
    pub fn from_static(name: &'static str) -> Self {
        assert!(valid_kind(name), "invalid job kind {name:?}");
        Self(Cow::Borrowed(name))
    }

    /// The kind's name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for JobKind {
    type Err = ParseJobKindError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if valid_kind(s) {
            Ok(Self(Cow::Owned(s.to_owned())))
        } else {
            Err(ParseJobKindError(s.to_owned()))
        }
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A job's id, unique in its database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub i64);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Who holds a lease: a job worker (one per instance) or one request working on an upload.
/// The store only compares holders; their names are for people reading the database.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseHolder(String);

impl LeaseHolder {
    /// A holder named `name`. Names must be unique among everyone who may hold a lease at
    /// the same time (a uuid in them does it).
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// The holder's name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// When a job becomes due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunAt {
    /// At once.
    #[default]
    Now,
    /// This long from now, by the store's clock (PostgreSQL's, for a fleet: instances whose
    /// clocks disagree still agree on when a job is due).
    After(Duration),
    /// At this time.
    At(SystemTime),
}

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// What it does.
    pub kind: JobKind,
    /// Its arguments, as JSON text (the store keeps it as it is).
    pub payload: String,
    /// When it becomes due.
    pub run_at: RunAt,
    /// If set, the job is not enqueued while another job with the same key is queued or
    /// running: every instance may schedule a periodic job, and only one is pending.
    pub dedupe_key: Option<String>,
    /// How many claims it gets before a failure makes it dead (at least 1).
    pub max_attempts: u32,
}

impl NewJob {
    /// Attempts a job gets unless [`NewJob::with_max_attempts`] says otherwise.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

    /// A job of `kind` with `payload` (JSON), due now, without a dedupe key, with
    /// [`Self::DEFAULT_MAX_ATTEMPTS`].
    #[must_use]
    pub fn new(kind: JobKind, payload: impl Into<String>) -> Self {
        Self {
            kind,
            payload: payload.into(),
            run_at: RunAt::Now,
            dedupe_key: None,
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// The same job, due at `run_at`.
    #[must_use]
    pub fn with_run_at(mut self, run_at: RunAt) -> Self {
        self.run_at = run_at;
        self
    }

    /// The same job, enqueued only if no unfinished job has `key`.
    #[must_use]
    pub fn with_dedupe_key(mut self, key: impl Into<String>) -> Self {
        self.dedupe_key = Some(key.into());
        self
    }

    /// The same job, with `n` attempts (at least 1).
    #[must_use]
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }
}

/// The right to run one attempt of a job: valid until its lease expires, or the job is claimed
/// again, finished or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLease {
    /// The job.
    pub id: JobId,
    /// Who claimed it.
    pub holder: LeaseHolder,
    /// Which attempt this is (1 for the first claim); fences off earlier claims.
    pub attempt: u32,
}

/// A job handed to a worker by a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    /// The lease to heartbeat, finish or fail it with.
    pub lease: JobLease,
    /// What it does.
    pub kind: JobKind,
    /// Its arguments (JSON text).
    pub payload: String,
    /// Its dedupe key, if it has one.
    pub dedupe_key: Option<String>,
    /// How many attempts it gets.
    pub max_attempts: u32,
    /// The error its previous attempt failed with, if any.
    pub last_error: Option<String>,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Waiting to be due and claimed (first, or again after a failure).
    Queued,
    /// Claimed by a worker whose lease has not been given back (it may have expired).
    Running,
    /// Finished.
    Done,
    /// Failed for the last time.
    Dead,
}

impl JobState {
    /// The name stored in the database: `queued`, `running`, `done` or `dead`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Dead => "dead",
        }
    }

    /// The state stored as `s`, if `s` names one.
    #[must_use]
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "done" => Self::Done,
            "dead" => Self::Dead,
            _ => return None,
        })
    }
}

/// What a failed attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Queue the job again, due this long from now, unless that was its last attempt.
    After(Duration),
    /// Give up: the job is dead.
    Never,
}

/// A job as stored, for operators and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// What it does.
    pub kind: JobKind,
    /// Where it is.
    pub state: JobState,
    /// Its arguments (JSON text).
    pub payload: String,
    /// Its dedupe key.
    pub dedupe_key: Option<String>,
    /// Attempts so far (claims).
    pub attempts: u32,
    /// Attempts it gets.
    pub max_attempts: u32,
    /// When it is (or was) due, in milliseconds since the Unix epoch.
    pub run_at_ms: i64,
    /// Who holds it, while running.
    pub holder: Option<LeaseHolder>,
    /// Until when, in milliseconds since the Unix epoch, while running.
    pub lease_until_ms: Option<i64>,
    /// The error of its last failed attempt.
    pub last_error: Option<String>,
    /// When it was enqueued, in milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// When it was finished or died, in milliseconds since the Unix epoch.
    pub finished_at_ms: Option<i64>,
}

/// Which jobs a listing returns, in id order.
#[derive(Debug, Clone, Copy)]
pub struct JobFilter<'a> {
    /// Only jobs of this kind.
    pub kind: Option<&'a JobKind>,
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs after this one.
    pub after: Option<JobId>,
    /// At most this many.
    pub limit: usize,
}

impl Default for JobFilter<'_> {
    /// Every job, the first 100.
    fn default() -> Self {
        Self {
            kind: None,
            state: None,
            after: None,
            limit: 100,
        }
    }
}

/// The outcome of asking for an upload's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadLease {
    /// The caller holds the lease now (taken, or renewed).
    Granted,
    /// Another holder's lease has not expired yet.
    Held,
    /// There is no such upload.
    Unknown,
}

/// Milliseconds since the Unix epoch of `t` (0 before it; saturating far after it).
#[must_use]
pub fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A duration in whole milliseconds, saturating.
#[must_use]
pub fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_checked() {
        assert_eq!(
            "uploads.expire".parse::<JobKind>().unwrap(),
            JobKind::from_static("uploads.expire")
        );
        for bad in ["", "Upper", "sp ace", "a/b", &"x".repeat(65)] {
            assert!(bad.parse::<JobKind>().is_err(), "{bad:?}");
        }
        for state in [
            JobState::Queued,
            JobState::Running,
            JobState::Done,
            JobState::Dead,
        ] {
            assert_eq!(JobState::from_name(state.as_str()), Some(state));
        }
    }
}
