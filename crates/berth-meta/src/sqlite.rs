//! The SQLite backend, the embedded default: one file, WAL mode, one writer thread and a small
//! pool of reader connections.
//!
//! Writes are group-committed: the writer thread takes every write that is waiting, runs each
//! in its own savepoint inside one transaction, and commits once, so many concurrent pushes
//! share one fsync of the WAL. A write that fails rolls back only its own savepoint; a failed
//! commit fails every write of the batch. No caller hears of success before the commit.
//! Reads run on tokio's blocking pool so the async workers never wait on disk.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use berth_oci::{Digest, DigestAlgorithm, RepoName, Tag};
use rusqlite::types::Value;
use rusqlite::{
    params, params_from_iter, Connection, OpenFlags, OptionalExtension, TransactionBehavior,
};

use crate::check_kept;
use crate::jobs::{duration_ms, epoch_ms};
use crate::{
    ClaimedJob, GcBatch, GcItem, GcRun, GcScan, Job, JobFilter, JobId, JobKind, JobLease, JobState,
    LeaseHolder, Listing, MetaError, MetaStore, MissingRefs, NewJob, NewManifest, Page, Paging,
    Referrer, Retry, RunAt, ScrubBlob, ScrubFinding, ScrubManifests, ScrubRun, StoredManifest,
    TagGuard, Upload, UploadLease, UploadSegment,
};

mod access;
mod gc;
mod policy;
mod quota;
mod retention;
mod scrub;

/// Schema migrations, applied in order; the database records how many ran. Never edit a
/// released script: add a new one. The second adds upload leases and the job queue, with
/// times in milliseconds since the Unix epoch (`*_ms`); the third records the segments of
/// each upload (they go with it: `ON DELETE CASCADE`). The fourth adds who may do what
/// ([`crate::AccessStore`]: users, projects, groups, members, robots, audit log, settings,
/// sessions), pull times and counts, and a private project for the first segment of each
/// existing repository name, so that a registry from before projects keeps its repositories.
/// The fifth is for garbage collection ([`crate::gc`]): blob states, touch times and the
/// history of runs. The sixth keeps each project's usage and limits ([`crate::quota`]) with
/// triggers, and the project of each repository. The seventh holds tag immutability rules
/// ([`crate::policy`]); the eighth keeps scrub runs and their findings ([`crate::scrub`]);
/// the ninth holds retention policies, their runs and their tasks ([`crate::retention`]).
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE repositories (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);
CREATE TABLE blobs (
    digest      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE repo_blobs (
    repo_id     INTEGER NOT NULL REFERENCES repositories(id),
    digest      TEXT NOT NULL REFERENCES blobs(digest),
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest)
) WITHOUT ROWID;
CREATE INDEX repo_blobs_digest ON repo_blobs(digest);
CREATE TABLE manifests (
    repo_id       INTEGER NOT NULL REFERENCES repositories(id),
    digest        TEXT NOT NULL,
    media_type    TEXT NOT NULL,
    artifact_type TEXT,
    subject       TEXT,
    annotations   TEXT,
    size          INTEGER NOT NULL,
    content       BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest)
);
CREATE INDEX manifests_subject ON manifests(repo_id, subject) WHERE subject IS NOT NULL;
CREATE TABLE manifest_refs (
    repo_id     INTEGER NOT NULL,
    manifest    TEXT NOT NULL,
    target      TEXT NOT NULL,
    kind        INTEGER NOT NULL, -- 0: blob, 1: child manifest
    PRIMARY KEY (repo_id, manifest, target, kind),
    FOREIGN KEY (repo_id, manifest) REFERENCES manifests(repo_id, digest) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX manifest_refs_target ON manifest_refs(repo_id, target);
CREATE TABLE tags (
    repo_id     INTEGER NOT NULL,
    name        TEXT NOT NULL,
    digest      TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (repo_id, name),
    FOREIGN KEY (repo_id, digest) REFERENCES manifests(repo_id, digest) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX tags_digest ON tags(repo_id, digest);
CREATE TABLE uploads (
    id          TEXT PRIMARY KEY,
    repo        TEXT NOT NULL,
    offset      INTEGER NOT NULL,
    algorithm   TEXT NOT NULL,
    hash_state  BLOB,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    r#"
ALTER TABLE uploads ADD COLUMN lease_holder TEXT;
ALTER TABLE uploads ADD COLUMN lease_until_ms INTEGER;
CREATE INDEX uploads_updated ON uploads(updated_at);
CREATE TABLE jobs (
    id             INTEGER PRIMARY KEY,
    kind           TEXT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'dead')),
    payload        TEXT NOT NULL,
    dedupe_key     TEXT,
    attempts       INTEGER NOT NULL,
    max_attempts   INTEGER NOT NULL,
    run_at_ms      INTEGER NOT NULL,
    holder         TEXT,
    lease_until_ms INTEGER,
    last_error     TEXT,
    created_at_ms  INTEGER NOT NULL,
    updated_at_ms  INTEGER NOT NULL,
    finished_at_ms INTEGER
);
CREATE UNIQUE INDEX jobs_dedupe ON jobs(dedupe_key)
    WHERE dedupe_key IS NOT NULL AND state IN ('queued', 'running');
CREATE INDEX jobs_queued ON jobs(kind, run_at_ms) WHERE state = 'queued';
CREATE INDEX jobs_running ON jobs(kind, lease_until_ms) WHERE state = 'running';
CREATE INDEX jobs_finished ON jobs(finished_at_ms) WHERE finished_at_ms IS NOT NULL;
"#,
    r#"
CREATE TABLE upload_segments (
    upload_id    TEXT NOT NULL REFERENCES uploads(id) ON DELETE CASCADE,
    start_offset INTEGER NOT NULL,
    token        TEXT NOT NULL,
    PRIMARY KEY (upload_id, start_offset)
) WITHOUT ROWID;
"#,
    r#"
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    email         TEXT NOT NULL,
    realname      TEXT NOT NULL,
    comment       TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    sysadmin      INTEGER NOT NULL,
    created_ms    INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL
);
CREATE UNIQUE INDEX users_email ON users(email) WHERE email <> '';
CREATE TABLE projects (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    public      INTEGER NOT NULL,
    owner_id    INTEGER REFERENCES users(id) ON DELETE SET NULL,
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL
);
CREATE TABLE user_groups (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_ms  INTEGER NOT NULL
);
CREATE TABLE group_users (
    group_id    INTEGER NOT NULL REFERENCES user_groups(id) ON DELETE CASCADE,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
) WITHOUT ROWID;
CREATE INDEX group_users_user ON group_users(user_id);
CREATE TABLE project_members (
    id          INTEGER PRIMARY KEY,
    project_id  INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    entity_kind TEXT NOT NULL CHECK (entity_kind IN ('u', 'g')),
    entity_id   INTEGER NOT NULL,
    role        INTEGER NOT NULL,
    UNIQUE (project_id, entity_kind, entity_id)
);
CREATE INDEX project_members_entity ON project_members(entity_kind, entity_id);
CREATE TABLE robots (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    description TEXT NOT NULL,
    project_id  INTEGER REFERENCES projects(id) ON DELETE CASCADE,
    secret_hash TEXT NOT NULL,
    expires_ms  INTEGER,
    disabled    INTEGER NOT NULL,
    permissions TEXT NOT NULL,
    creator_id  INTEGER REFERENCES users(id) ON DELETE SET NULL,
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL
);
CREATE UNIQUE INDEX robots_name ON robots(COALESCE(project_id, 0), name);
CREATE INDEX robots_project ON robots(project_id);
CREATE TABLE audit_log (
    id            INTEGER PRIMARY KEY,
    time_ms       INTEGER NOT NULL,
    username      TEXT NOT NULL,
    operation     TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource      TEXT NOT NULL,
    project       TEXT,
    source_ip     TEXT,
    success       INTEGER NOT NULL
);
CREATE INDEX audit_log_time ON audit_log(time_ms);
CREATE INDEX audit_log_username ON audit_log(username, time_ms);
CREATE INDEX audit_log_project ON audit_log(project, time_ms);
CREATE TABLE settings (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE sessions (
    id_hash     TEXT PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token  TEXT NOT NULL,
    expires_ms  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_user ON sessions(user_id);
CREATE INDEX sessions_expires ON sessions(expires_ms);
ALTER TABLE manifests ADD COLUMN pulled_ms INTEGER;
ALTER TABLE repositories ADD COLUMN pull_count INTEGER NOT NULL DEFAULT 0;
CREATE INDEX manifests_created ON manifests(repo_id, created_at, digest);
CREATE INDEX tags_updated ON tags(repo_id, updated_at);
INSERT OR IGNORE INTO projects (name, public, owner_id, created_ms, updated_ms)
SELECT DISTINCT
    CASE WHEN instr(name, '/') > 0 THEN substr(name, 1, instr(name, '/') - 1) ELSE name END,
    0, NULL, CAST(strftime('%s', 'now') AS INTEGER) * 1000,
    CAST(strftime('%s', 'now') AS INTEGER) * 1000
FROM repositories;
"#,
    r#"
ALTER TABLE blobs ADD COLUMN state INTEGER NOT NULL DEFAULT 0;
ALTER TABLE blobs ADD COLUMN touched_ms INTEGER NOT NULL DEFAULT 0;
UPDATE blobs SET touched_ms = created_at * 1000;
ALTER TABLE repo_blobs ADD COLUMN touched_ms INTEGER NOT NULL DEFAULT 0;
UPDATE repo_blobs SET touched_ms = created_at * 1000;
ALTER TABLE manifests ADD COLUMN touched_ms INTEGER NOT NULL DEFAULT 0;
UPDATE manifests SET touched_ms = created_at * 1000;
CREATE INDEX blobs_deleting ON blobs(digest) WHERE state = 2;
CREATE TABLE gc_runs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    trigger_kind      TEXT NOT NULL,
    dry_run           INTEGER NOT NULL,
    delete_untagged   INTEGER NOT NULL,
    grace_seconds     INTEGER NOT NULL,
    status            TEXT NOT NULL,
    phase             TEXT NOT NULL,
    cursor            TEXT,
    manifests_deleted INTEGER NOT NULL,
    links_deleted     INTEGER NOT NULL,
    blobs_deleted     INTEGER NOT NULL,
    bytes_freed       INTEGER NOT NULL,
    scanned           INTEGER NOT NULL,
    errors            INTEGER NOT NULL,
    last_error        TEXT,
    created_ms        INTEGER NOT NULL,
    updated_ms        INTEGER NOT NULL,
    finished_ms       INTEGER
);
"#,
    r#"
ALTER TABLE repositories ADD COLUMN project TEXT NOT NULL DEFAULT '';
UPDATE repositories SET project =
    CASE WHEN instr(name, '/') > 0 THEN substr(name, 1, instr(name, '/') - 1) ELSE name END;
CREATE INDEX repositories_project ON repositories(project, name);
CREATE TABLE project_usage (
    project     TEXT PRIMARY KEY,
    bytes       INTEGER NOT NULL DEFAULT 0,
    artifacts   INTEGER NOT NULL DEFAULT 0,
    hard_bytes  INTEGER NOT NULL DEFAULT -1,
    hard_count  INTEGER NOT NULL DEFAULT -1,
    created_ms  INTEGER NOT NULL DEFAULT 0,
    updated_ms  INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE project_blobs (
    project     TEXT NOT NULL,
    digest      TEXT NOT NULL,
    refs        INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    PRIMARY KEY (project, digest)
) WITHOUT ROWID;
INSERT INTO project_blobs (project, digest, refs, size)
SELECT r.project, mr.target, COUNT(*), COALESCE(MAX(b.size), 0) FROM manifest_refs mr
JOIN repositories r ON r.id = mr.repo_id LEFT JOIN blobs b ON b.digest = mr.target
WHERE mr.kind = 0 GROUP BY r.project, mr.target;
INSERT INTO project_usage (project, bytes, artifacts)
SELECT r.project, SUM(m.size), COUNT(*) FROM manifests m
JOIN repositories r ON r.id = m.repo_id GROUP BY r.project;
UPDATE project_usage SET bytes = bytes + COALESCE((SELECT SUM(pb.size) FROM project_blobs pb
    WHERE pb.project = project_usage.project), 0);
CREATE TRIGGER manifests_usage_add AFTER INSERT ON manifests BEGIN
    INSERT INTO project_usage (project, bytes, artifacts)
    SELECT project, NEW.size, 1 FROM repositories WHERE id = NEW.repo_id
    ON CONFLICT (project) DO UPDATE
    SET bytes = bytes + excluded.bytes, artifacts = artifacts + 1;
END;
CREATE TRIGGER manifests_usage_remove AFTER DELETE ON manifests BEGIN
    UPDATE project_usage SET bytes = bytes - OLD.size, artifacts = artifacts - 1
    WHERE project = (SELECT project FROM repositories WHERE id = OLD.repo_id);
END;
CREATE TRIGGER refs_usage_add AFTER INSERT ON manifest_refs WHEN NEW.kind = 0 BEGIN
    INSERT INTO project_blobs (project, digest, refs, size)
    SELECT project, NEW.target, 1, COALESCE((SELECT size FROM blobs WHERE digest = NEW.target), 0)
    FROM repositories WHERE id = NEW.repo_id
    ON CONFLICT (project, digest) DO UPDATE SET refs = refs + 1;
    UPDATE project_usage
    SET bytes = bytes + (SELECT pb.size FROM project_blobs pb
                         WHERE pb.project = project_usage.project AND pb.digest = NEW.target)
    WHERE project = (SELECT project FROM repositories WHERE id = NEW.repo_id)
      AND (SELECT refs FROM project_blobs pb
           WHERE pb.project = project_usage.project AND pb.digest = NEW.target) = 1;
END;
CREATE TRIGGER refs_usage_remove AFTER DELETE ON manifest_refs WHEN OLD.kind = 0 BEGIN
    UPDATE project_blobs SET refs = refs - 1
    WHERE project = (SELECT project FROM repositories WHERE id = OLD.repo_id)
      AND digest = OLD.target;
    UPDATE project_usage
    SET bytes = bytes - (SELECT pb.size FROM project_blobs pb
                         WHERE pb.project = project_usage.project AND pb.digest = OLD.target)
    WHERE project = (SELECT project FROM repositories WHERE id = OLD.repo_id)
      AND (SELECT refs FROM project_blobs pb
           WHERE pb.project = project_usage.project AND pb.digest = OLD.target) = 0;
    DELETE FROM project_blobs
    WHERE project = (SELECT project FROM repositories WHERE id = OLD.repo_id)
      AND digest = OLD.target AND refs <= 0;
END;
CREATE TRIGGER projects_usage_forget AFTER DELETE ON projects BEGIN
    DELETE FROM project_usage WHERE project = OLD.name;
END;
"#,
    r#"
CREATE TABLE immutable_rules (
    id          INTEGER PRIMARY KEY,
    project_id  INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    disabled    INTEGER NOT NULL,
    priority    INTEGER NOT NULL,
    selectors   TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL
);
CREATE INDEX immutable_rules_project ON immutable_rules(project_id, priority, id);
"#,
    // Scrub ([`crate::scrub`]): the history of runs and what each one found. Self-contained,
    // so it may be renumbered among other migrations added at the same time.
    r#"
CREATE TABLE scrub_runs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    repair            INTEGER NOT NULL,
    status            TEXT NOT NULL,
    phase             TEXT NOT NULL,
    cursor            TEXT,
    blobs_total       INTEGER NOT NULL,
    manifests_total   INTEGER NOT NULL,
    blobs_checked     INTEGER NOT NULL,
    bytes_checked     INTEGER NOT NULL,
    manifests_checked INTEGER NOT NULL,
    errors            INTEGER NOT NULL,
    last_error        TEXT,
    created_ms        INTEGER NOT NULL,
    updated_ms        INTEGER NOT NULL,
    finished_ms       INTEGER
);
CREATE TABLE scrub_findings (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES scrub_runs(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    digest      TEXT NOT NULL,
    repo        TEXT NOT NULL,
    target      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    repaired    INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL,
    UNIQUE (run_id, kind, digest, repo, target)
);
"#,
    // Retention ([`crate::retention`]): policies, their executions and one task per
    // repository of an execution.
    r#"
CREATE TABLE retention_policies (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id  INTEGER NOT NULL UNIQUE REFERENCES projects(id) ON DELETE CASCADE,
    rules       TEXT NOT NULL,
    cron        TEXT,
    fired_ms    INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL
);
CREATE TABLE retention_executions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    policy_id    INTEGER NOT NULL REFERENCES retention_policies(id) ON DELETE CASCADE,
    project      TEXT NOT NULL,
    trigger_kind TEXT NOT NULL,
    dry_run      INTEGER NOT NULL,
    status       TEXT NOT NULL,
    rules        TEXT NOT NULL,
    repositories INTEGER NOT NULL,
    last_error   TEXT,
    created_ms   INTEGER NOT NULL,
    updated_ms   INTEGER NOT NULL,
    finished_ms  INTEGER
);
CREATE INDEX retention_executions_policy ON retention_executions(policy_id, id);
CREATE TABLE retention_tasks (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id INTEGER NOT NULL REFERENCES retention_executions(id) ON DELETE CASCADE,
    repository   TEXT NOT NULL,
    status       TEXT NOT NULL,
    total        INTEGER NOT NULL,
    retained     INTEGER NOT NULL,
    deleted      INTEGER NOT NULL,
    errors       INTEGER NOT NULL,
    items        TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    updated_ms   INTEGER NOT NULL,
    finished_ms  INTEGER,
    UNIQUE (execution_id, repository)
);
"#,
];

/// Whether commits wait for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: a committed transaction survives a power loss (the default).
    #[default]
    Full,
    /// `synchronous=NORMAL`: survives a crash of the process, not always a power loss.
    Normal,
}

/// Reports a write's outcome once the batch it ran in has committed (or failed to).
type Finisher = Box<dyn FnOnce(Option<&MetaError>) + Send>;
/// A write: runs inside the batch's transaction and returns how to report its outcome.
type WriteOp = Box<dyn FnOnce(&Connection) -> Finisher + Send>;

/// Most writes one transaction takes.
const MAX_BATCH: usize = 256;

/// Metadata in a SQLite database file.
#[derive(Clone)]
pub struct SqliteMeta {
    writer: std::sync::mpsc::Sender<WriteOp>,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: Arc<Path>,
}

/// Copy an error for each write of a batch whose commit failed.
fn copy_error(e: &MetaError) -> MetaError {
    match e {
        MetaError::Unavailable(m) => MetaError::Unavailable(m.clone()),
        other => MetaError::Backend(other.to_string()),
    }
}

/// Writes between two `PRAGMA optimize` runs of the writer.
const OPTIMIZE_EVERY_WRITES: u64 = 10_000;

/// The longest the writer goes without `PRAGMA optimize` while there are writes.
const OPTIMIZE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Keep the query planner's statistics (`sqlite_stat1`) in step with the data, as SQLite
/// recommends for long-lived connections: `PRAGMA optimize=0x10002` (every table) when the
/// writer starts, plain `PRAGMA optimize` every so often after. Each runs `ANALYZE`, with
/// SQLite's own bounded sampling, only on tables that have none yet or whose size changed
/// a great deal since, so it is a no-op most of the time.
///
/// Without statistics SQLite 3.50 plans the `tags` cascade of a manifest delete (`repo_id =
/// ? AND digest = ?`) on the primary key's `repo_id` prefix rather than on `tags_digest`:
/// a walk over every tag of the repository, 15 ms a delete at 100,000 tags, against 0.2 ms
/// with statistics.
fn optimize(conn: &Connection, sql: &str) {
    let started = std::time::Instant::now();
    match conn.execute_batch(sql) {
        Ok(()) => tracing::debug!(sql, took = ?started.elapsed(), "metadata statistics checked"),
        Err(e) => tracing::warn!(error = %e, sql, "metadata statistics could not be updated"),
    }
}

/// The writer thread: batch what is queued, one transaction and one commit per batch.
fn writer_loop(conn: Connection, ops: std::sync::mpsc::Receiver<WriteOp>) {
    optimize(&conn, "PRAGMA optimize=0x10002");
    let mut writes = 0u64;
    let mut optimized = std::time::Instant::now();
    while let Ok(first) = ops.recv() {
        if writes >= OPTIMIZE_EVERY_WRITES || (writes > 0 && optimized.elapsed() >= OPTIMIZE_EVERY)
        {
            optimize(&conn, "PRAGMA optimize");
            (writes, optimized) = (0, std::time::Instant::now());
        }
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match ops.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            // Dropping the ops drops their reply channels: each caller gets an error.
            tracing::error!(error = %e, "metadata write batch could not begin");
            continue;
        }
        writes += batch.len() as u64;
        let mut finishers: Vec<Finisher> = Vec::with_capacity(batch.len());
        let mut ops = batch.into_iter();
        for op in ops.by_ref() {
            finishers.push(op(&conn));
            if conn.is_autocommit() {
                // An error (disk full, I/O) rolled back the whole transaction: the writes
                // that ran are gone, and the rest must not run outside a transaction.
                break;
            }
        }
        // Ops that never ran are dropped: their callers get an error.
        drop(ops);
        let committed = if conn.is_autocommit() {
            Err(MetaError::Unavailable(
                "the metadata transaction was rolled back".into(),
            ))
        } else {
            conn.execute_batch("COMMIT").map_err(backend)
        };
        if committed.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for finish in finishers {
            finish(committed.as_ref().err());
        }
    }
}

/// A scan whose start key the writer thread can own.
fn owned_scan(scan: GcScan<'_>) -> (Option<String>, GcScan<'static>) {
    (
        scan.after.map(str::to_owned),
        GcScan {
            after: None,
            limit: scan.limit.max(1),
            cutoff_ms: scan.cutoff_ms,
            dry_run: scan.dry_run,
        },
    )
}

/// Run `f` in a savepoint, so its failure undoes only its own changes.
fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, MetaError>,
) -> Result<T, MetaError> {
    conn.execute_batch("SAVEPOINT op").map_err(backend)?;
    let result = f(conn);
    if result.is_ok() {
        conn.execute_batch("RELEASE op").map_err(backend)?;
    } else if !conn.is_autocommit() {
        // Keep the op's own error; a failure to roll back shows in the batch's commit.
        let _ = conn.execute_batch("ROLLBACK TO op; RELEASE op");
    }
    result
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Now in milliseconds since the Unix epoch: the clock of job and lease times. One process
/// owns an SQLite database, so its clock is the only one.
fn now_ms() -> i64 {
    epoch_ms(SystemTime::now())
}

/// When a job enqueued at `now` becomes due, in milliseconds since the Unix epoch.
fn run_at_ms(run_at: RunAt, now: i64) -> i64 {
    match run_at {
        RunAt::Now => now,
        RunAt::After(d) => now.saturating_add(duration_ms(d)),
        RunAt::At(t) => epoch_ms(t),
    }
}

/// `n` numbered placeholders starting at `?first`, comma separated.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether a job of `kinds` is due at `now` (the condition of a claim; `?1` is now, the kinds
/// are `?2`...).
fn due_condition(kinds: usize) -> String {
    format!(
        "kind IN ({}) AND ((state = 'queued' AND run_at_ms <= ?1) \
         OR (state = 'running' AND lease_until_ms < ?1))",
        placeholders(2, kinds)
    )
}

fn insert_job(conn: &Connection, job: &NewJob, now: i64) -> rusqlite::Result<Option<JobId>> {
    conn.prepare_cached(
        "INSERT INTO jobs (kind, state, payload, dedupe_key, attempts, max_attempts, run_at_ms, \
         created_at_ms, updated_at_ms) VALUES (?1, 'queued', ?2, ?3, 0, ?4, ?5, ?6, ?6) \
         ON CONFLICT DO NOTHING RETURNING id",
    )?
    .query_row(
        params![
            job.kind.as_str(),
            job.payload,
            job.dedupe_key,
            job.max_attempts.max(1),
            run_at_ms(job.run_at, now),
            now
        ],
        |r| r.get(0).map(JobId),
    )
    .optional()
}

/// Parameters that pick the job of a lease: `?1` id, `?2` holder, `?3` attempt.
fn lease_params(lease: &JobLease) -> (i64, String, u32) {
    (lease.id.0, lease.holder.as_str().to_owned(), lease.attempt)
}

const JOB_COLUMNS: &str = "id, kind, state, payload, dedupe_key, attempts, max_attempts, \
    run_at_ms, holder, lease_until_ms, last_error, created_at_ms, finished_at_ms";

fn job_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Job, MetaError>> {
    let kind: String = r.get(1)?;
    let state: String = r.get(2)?;
    let (Ok(kind), Some(state)) = (kind.parse::<JobKind>(), JobState::from_name(&state)) else {
        return Ok(Err(MetaError::Backend(format!(
            "job {} has kind {kind:?} and state {state:?}",
            r.get::<_, i64>(0)?
        ))));
    };
    Ok(Ok(Job {
        id: JobId(r.get(0)?),
        kind,
        state,
        payload: r.get(3)?,
        dedupe_key: r.get(4)?,
        attempts: r.get(5)?,
        max_attempts: r.get(6)?,
        run_at_ms: r.get(7)?,
        holder: r.get::<_, Option<String>>(8)?.map(LeaseHolder::new),
        lease_until_ms: r.get(9)?,
        last_error: r.get(10)?,
        created_at_ms: r.get(11)?,
        finished_at_ms: r.get(12)?,
    }))
}

fn backend(e: rusqlite::Error) -> MetaError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            MetaError::Unavailable(e.to_string())
        }
        _ => MetaError::Backend(e.to_string()),
    }
}

fn parse_digest(s: String) -> Result<Digest, MetaError> {
    s.parse()
        .map_err(|e| MetaError::Backend(format!("stored digest {s:?} is invalid: {e}")))
}

fn open_conn(path: &Path, durability: Durability) -> Result<Connection, MetaError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(backend)?;
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA foreign_keys=ON; \
         PRAGMA busy_timeout=5000; PRAGMA cache_size=-16000;"
    ))
    .map_err(backend)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), MetaError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS berth_schema (version INTEGER NOT NULL)")
        .map_err(backend)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend)?;
    let version: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM berth_schema",
            [],
            |r| r.get(0),
        )
        .map_err(backend)?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(MetaError::SchemaTooNew {
            found: version,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql).map_err(backend)?;
        tx.execute(
            "INSERT INTO berth_schema (version) VALUES (?1)",
            [i as i64 + 1],
        )
        .map_err(backend)?;
        tracing::info!(version = i + 1, "applied metadata migration");
    }
    tx.commit().map_err(backend)
}

fn repo_id(conn: &Connection, repo: &RepoName) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT id FROM repositories WHERE name = ?1")?
        .query_row([repo.as_str()], |r| r.get(0))
        .optional()
}

fn ensure_repo(conn: &Connection, repo: &RepoName) -> rusqlite::Result<i64> {
    if let Some(id) = repo_id(conn, repo)? {
        return Ok(id);
    }
    conn.prepare_cached(
        "INSERT INTO repositories (name, created_at, project) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![repo.as_str(), now(), repo.project()])?;
    Ok(conn.last_insert_rowid())
}

/// The columns [`uploads_from_rows`] reads, in its order, of `uploads u LEFT JOIN
/// upload_segments s`.
const UPLOAD_COLUMNS: &str = "u.id, u.offset, u.algorithm, u.hash_state, u.created_at, \
    u.updated_at, s.start_offset, s.token, u.repo";

/// Uploads from rows of [`UPLOAD_COLUMNS`] ordered by upload, then segment start: one upload
/// per id, with its segments gathered. `repo`: the repository of them all, if known.
fn uploads_from_rows(
    rows: &mut rusqlite::Rows<'_>,
    repo: Option<&RepoName>,
) -> Result<Vec<Upload>, MetaError> {
    let mut out: Vec<Upload> = Vec::new();
    while let Some(r) = rows.next().map_err(backend)? {
        let id: String = r.get(0).map_err(backend)?;
        if out.last().is_none_or(|u| u.id != id) {
            let repo = match repo {
                Some(repo) => repo.clone(),
                None => {
                    let name: String = r.get(8).map_err(backend)?;
                    name.parse().map_err(|e| {
                        MetaError::Backend(format!("stored repository {name:?}: {e}"))
                    })?
                }
            };
            let algorithm = DigestAlgorithm::from_name(&r.get::<_, String>(2).map_err(backend)?)
                .unwrap_or(DigestAlgorithm::Sha256);
            out.push(Upload {
                id,
                repo,
                offset: r.get::<_, i64>(1).map_err(backend)? as u64,
                algorithm,
                hash_state: r.get(3).map_err(backend)?,
                segments: Vec::new(),
                created_at: r.get(4).map_err(backend)?,
                updated_at: r.get(5).map_err(backend)?,
            });
        }
        if let Some(start) = r.get::<_, Option<i64>>(6).map_err(backend)? {
            let upload = out.last_mut().expect("pushed above");
            upload.segments.push(UploadSegment {
                start: start as u64,
                token: r.get(7).map_err(backend)?,
            });
        }
    }
    Ok(out)
}

impl SqliteMeta {
    /// Open (creating and migrating if needed) the database at `path`.
    ///
    /// # Errors
    /// [`MetaError::SchemaTooNew`] if the file was written by a newer berth; backend errors.
    pub fn open(path: &Path, durability: Durability) -> Result<Self, MetaError> {
        let mut writer = open_conn(path, durability)?;
        migrate(&mut writer)?;
        let (tx, rx) = std::sync::mpsc::channel::<WriteOp>();
        std::thread::Builder::new()
            .name("berth-sqlite-writer".into())
            .spawn(move || writer_loop(writer, rx))
            .map_err(|e| MetaError::Backend(format!("starting the writer thread: {e}")))?;
        Ok(Self {
            writer: tx,
            readers: Arc::new(Mutex::new(Vec::new())),
            path: path.into(),
        })
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, MetaError> + Send + 'static,
    ) -> Result<T, MetaError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let op: WriteOp = Box::new(move |conn: &Connection| {
            let result = in_savepoint(conn, f);
            Box::new(move |commit_error: Option<&MetaError>| {
                let _ = tx.send(match (result, commit_error) {
                    (Ok(v), None) => Ok(v),
                    (Ok(_), Some(e)) => Err(copy_error(e)),
                    (Err(e), _) => Err(e),
                });
            })
        });
        self.writer
            .send(op)
            .map_err(|_| MetaError::Backend("the writer thread has stopped".into()))?;
        rx.await
            .map_err(|_| MetaError::Backend("a write was dropped before it committed".into()))?
    }

    /// A point lookup by key, run right here on the calling thread: it takes microseconds
    /// from SQLite's page cache, far less than handing it to another thread and back (which
    /// also made tail latency worse under load).
    fn lookup<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, MetaError>,
    ) -> Result<T, MetaError> {
        let pooled = self.readers.lock().ok().and_then(|mut r| r.pop());
        let conn = match pooled {
            Some(c) => c,
            None => open_conn(&self.path, Durability::Normal)?,
        };
        let out = f(&conn);
        if let Ok(mut pool) = self.readers.lock() {
            if pool.len() < 16 {
                pool.push(conn);
            }
        }
        out
    }

    /// A query that may take a while (listings): the same as [`Self::lookup`], on tokio's
    /// blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, MetaError> + Send + 'static,
    ) -> Result<T, MetaError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.lookup(f))
            .await
            .map_err(|e| MetaError::Backend(e.to_string()))?
    }
}

fn stored_manifest(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Option<StoredManifest>, MetaError> {
    let row = conn
        .prepare_cached(sql)
        .and_then(|mut s| {
            s.query_row(args, |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .map_err(backend)?;
    row.map(|(d, media_type, content)| {
        Ok(StoredManifest {
            digest: parse_digest(d)?,
            media_type,
            content,
        })
    })
    .transpose()
}

/// Inside a delete's write: refuse if a tag of repository `id` (of manifest `digest` only,
/// when given) is one `keep` protects.
fn refuse_kept_tags(
    conn: &Connection,
    id: i64,
    digest: Option<&str>,
    keep: Option<&TagGuard>,
) -> Result<(), MetaError> {
    let Some(keep) = keep else {
        return Ok(());
    };
    let tags = match digest {
        Some(digest) => list_names(
            conn,
            "SELECT name FROM tags WHERE repo_id = ?1 AND digest = ?2 ORDER BY name",
            params![id, digest],
        )?,
        None => list_names(
            conn,
            "SELECT name FROM tags WHERE repo_id = ?1 ORDER BY name",
            params![id],
        )?,
    };
    check_kept(keep, tags.iter().map(String::as_str))
}

fn list_names(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<String>, MetaError> {
    let mut stmt = conn.prepare_cached(sql).map_err(backend)?;
    let rows = stmt
        .query_map(args, |r| r.get::<_, String>(0))
        .map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

#[async_trait]
impl MetaStore for SqliteMeta {
    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<(), MetaError> {
        let (repo, digest) = (repo.clone(), digest.to_string());
        self.write(move |tx| {
            let id = ensure_repo(tx, &repo).map_err(backend)?;
            gc::live_blob(tx, &digest, size)?;
            tx.prepare_cached(
                "INSERT INTO repo_blobs (repo_id, digest, created_at, touched_ms) \
                 VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (repo_id, digest) DO UPDATE SET touched_ms = excluded.touched_ms",
            )
            .and_then(|mut s| s.execute(params![id, digest, now(), now_ms()]))
            .map(drop)
            .map_err(backend)
        })
        .await
    }

    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, MetaError> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.lookup(|conn| {
            conn.prepare_cached(
                "SELECT b.size FROM repo_blobs rb JOIN repositories r ON r.id = rb.repo_id \
                 JOIN blobs b ON b.digest = rb.digest \
                 WHERE r.name = ?1 AND rb.digest = ?2 AND b.state = 0",
            )
            .and_then(|mut s| {
                s.query_row([repo, digest], |r| r.get::<_, i64>(0))
                    .optional()
            })
            .map(|o| o.map(|n| n as u64))
            .map_err(backend)
        })
    }

    async fn blob(&self, digest: &Digest) -> Result<Option<u64>, MetaError> {
        let digest = digest.to_string();
        self.lookup(|conn| {
            conn.prepare_cached("SELECT size FROM blobs WHERE digest = ?1 AND state = 0")
                .and_then(|mut s| s.query_row([digest], |r| r.get::<_, i64>(0)).optional())
                .map(|o| o.map(|n| n as u64))
                .map_err(backend)
        })
    }

    async fn repos_with_blob(
        &self,
        digest: &Digest,
        limit: usize,
    ) -> Result<Vec<RepoName>, MetaError> {
        let digest = digest.to_string();
        let names = self
            .read(move |conn| {
                list_names(
                    conn,
                    "SELECT r.name FROM repo_blobs rb JOIN repositories r ON r.id = rb.repo_id \
                     WHERE rb.digest = ?1 ORDER BY r.name LIMIT ?2",
                    params![digest, limit as i64],
                )
            })
            .await?;
        Ok(names.into_iter().filter_map(|n| n.parse().ok()).collect())
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.write(move |conn| {
            conn.prepare_cached(
                "DELETE FROM repo_blobs WHERE digest = ?2 AND repo_id = \
                 (SELECT id FROM repositories WHERE name = ?1)",
            )
            .and_then(|mut s| s.execute([repo, digest]))
            .map(|n| n > 0)
            .map_err(backend)
        })
        .await
    }

    async fn put_manifest(&self, m: NewManifest, tags: &[Tag]) -> Result<(), MetaError> {
        let tags: Vec<String> = tags.iter().map(|t| t.as_str().to_owned()).collect();
        self.write(move |tx| {
            let id = ensure_repo(tx, &m.repo).map_err(backend)?;
            // Check references inside the transaction, so a concurrent delete cannot slip
            // between the check and the insert; touching them keeps garbage collection off
            // them for its grace period.
            let t_ms = now_ms();
            {
                let mut touch_blob = tx
                    .prepare_cached(
                        "UPDATE repo_blobs SET touched_ms = ?3 WHERE repo_id = ?1 AND digest = ?2",
                    )
                    .map_err(backend)?;
                for b in &m.blobs {
                    if touch_blob.execute(params![id, b.to_string(), t_ms]).map_err(backend)? == 0 {
                        return Err(MetaError::MissingBlob(b.clone()));
                    }
                }
                let mut touch_manifest = tx
                    .prepare_cached(
                        "UPDATE manifests SET touched_ms = ?3 WHERE repo_id = ?1 AND digest = ?2",
                    )
                    .map_err(backend)?;
                for c in &m.manifests {
                    if touch_manifest.execute(params![id, c.to_string(), t_ms]).map_err(backend)? == 0 {
                        return Err(MetaError::MissingManifest(c.clone()));
                    }
                }
            }
            let digest = m.digest.to_string();
            let t = now();
            let inserted = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO manifests (repo_id, digest, media_type, artifact_type, \
                     subject, annotations, size, content, created_at, touched_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        id,
                        digest,
                        m.media_type,
                        m.artifact_type,
                        m.subject.as_ref().map(ToString::to_string),
                        m.annotations,
                        m.content.len() as i64,
                        m.content,
                        t,
                        t_ms
                    ])
                })
                .map_err(backend)?;
            if inserted == 0 {
                tx.prepare_cached(
                    "UPDATE manifests SET touched_ms = ?3 WHERE repo_id = ?1 AND digest = ?2",
                )
                .and_then(|mut s| s.execute(params![id, digest, t_ms]))
                .map_err(backend)?;
            }
            if inserted > 0 {
                let mut add_ref = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO manifest_refs (repo_id, manifest, target, kind) \
                         VALUES (?1, ?2, ?3, ?4)",
                    )
                    .map_err(backend)?;
                for b in &m.blobs {
                    add_ref.execute(params![id, digest, b.to_string(), 0]).map_err(backend)?;
                }
                for c in &m.manifests {
                    add_ref.execute(params![id, digest, c.to_string(), 1]).map_err(backend)?;
                }
            }
            if inserted > 0 {
                // The triggers counted it (and the blobs new to the project): judge the
                // project's usage now, so that a refusal rolls all of it back.
                quota::check(tx, m.repo.project())?;
            }
            {
                let mut set_tag = tx
                    .prepare_cached(
                        "INSERT INTO tags (repo_id, name, digest, updated_at) VALUES (?1, ?2, ?3, ?4) \
                         ON CONFLICT (repo_id, name) DO UPDATE SET digest = excluded.digest, \
                         updated_at = excluded.updated_at",
                    )
                    .map_err(backend)?;
                let mut current = tx
                    .prepare_cached("SELECT digest FROM tags WHERE repo_id = ?1 AND name = ?2")
                    .map_err(backend)?;
                for tag in &tags {
                    if m.pinned_tags.contains(tag) {
                        let on: Option<String> = current
                            .query_row(params![id, tag], |r| r.get(0))
                            .optional()
                            .map_err(backend)?;
                        if on.is_some_and(|d| d != digest) {
                            return Err(MetaError::TagImmutable(tag.clone()));
                        }
                    }
                    set_tag.execute(params![id, tag, digest, t]).map_err(backend)?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn manifest_by_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<StoredManifest>, MetaError> {
        let (repo, tag) = (repo.to_string(), tag.to_string());
        self.lookup(|conn| {
            stored_manifest(
                conn,
                "SELECT m.digest, m.media_type, m.content FROM repositories r \
                 JOIN tags t ON t.repo_id = r.id \
                 JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest \
                 WHERE r.name = ?1 AND t.name = ?2",
                [repo, tag],
            )
        })
    }

    async fn manifest_by_digest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<StoredManifest>, MetaError> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.lookup(|conn| {
            stored_manifest(
                conn,
                "SELECT m.digest, m.media_type, m.content FROM repositories r \
                 JOIN manifests m ON m.repo_id = r.id WHERE r.name = ?1 AND m.digest = ?2",
                [repo, digest],
            )
        })
    }

    async fn delete_manifest_keeping(
        &self,
        repo: &RepoName,
        digest: &Digest,
        keep: Option<TagGuard>,
    ) -> Result<bool, MetaError> {
        let (repo, digest) = (repo.clone(), digest.to_string());
        self.write(move |tx| {
            let Some(id) = repo_id(tx, &repo).map_err(backend)? else {
                return Ok(false);
            };
            // One writer at a time: the tags read here are the ones the delete takes.
            refuse_kept_tags(tx, id, Some(&digest), keep.as_ref())?;
            // Tags and references go with it (ON DELETE CASCADE), in this one transaction.
            let n = tx
                .execute(
                    "DELETE FROM manifests WHERE repo_id = ?1 AND digest = ?2",
                    params![id, digest],
                )
                .map_err(backend)?;
            Ok(n > 0)
        })
        .await
    }

    async fn delete_repository_keeping(
        &self,
        repo: &RepoName,
        keep: Option<TagGuard>,
    ) -> Result<bool, MetaError> {
        let repo = repo.clone();
        self.write(move |tx| {
            let Some(id) = repo_id(tx, &repo).map_err(backend)? else {
                return Ok(false);
            };
            refuse_kept_tags(tx, id, None, keep.as_ref())?;
            // Tags and references go with the manifests (ON DELETE CASCADE).
            for sql in [
                "DELETE FROM manifests WHERE repo_id = ?1",
                "DELETE FROM repo_blobs WHERE repo_id = ?1",
                "DELETE FROM repositories WHERE id = ?1",
            ] {
                tx.execute(sql, params![id]).map_err(backend)?;
            }
            Ok(true)
        })
        .await
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, MetaError> {
        let (repo, tag) = (repo.to_string(), tag.to_string());
        self.write(move |conn| {
            conn.execute(
                "DELETE FROM tags WHERE name = ?2 AND repo_id = \
                 (SELECT id FROM repositories WHERE name = ?1)",
                [repo, tag],
            )
            .map(|n| n > 0)
            .map_err(backend)
        })
        .await
    }

    async fn list_tags(
        &self,
        repo: &RepoName,
        page: Page<'_>,
    ) -> Result<Option<Vec<String>>, MetaError> {
        let repo = repo.clone();
        let last = page.last.unwrap_or("").to_owned();
        let limit = page.limit as i64;
        self.read(move |conn| {
            let Some(id) = repo_id(conn, &repo).map_err(backend)? else {
                return Ok(None);
            };
            list_names(
                conn,
                "SELECT name FROM tags WHERE repo_id = ?1 AND name > ?2 ORDER BY name LIMIT ?3",
                params![id, last, limit],
            )
            .map(Some)
        })
        .await
    }

    async fn list_repositories(&self, page: Page<'_>) -> Result<Vec<String>, MetaError> {
        let last = page.last.unwrap_or("").to_owned();
        let limit = page.limit as i64;
        self.read(move |conn| {
            list_names(
                conn,
                "SELECT name FROM repositories WHERE name > ?1 ORDER BY name LIMIT ?2",
                params![last, limit],
            )
        })
        .await
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<Referrer>, MetaError> {
        let (repo, subject) = (repo.to_string(), subject.to_string());
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations \
                     FROM repositories r JOIN manifests m ON m.repo_id = r.id \
                     WHERE r.name = ?1 AND m.subject = ?2 ORDER BY m.digest",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map([repo, subject], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<String>>(4)?,
                    ))
                })
                .map_err(backend)?;
            let mut out = Vec::new();
            for row in rows {
                let (d, media_type, size, artifact_type, annotations) = row.map_err(backend)?;
                out.push(Referrer {
                    digest: parse_digest(d)?,
                    media_type,
                    size: size as u64,
                    artifact_type,
                    annotations,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn create_upload(&self, u: &Upload) -> Result<(), MetaError> {
        let u = u.clone();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO uploads (id, repo, offset, algorithm, hash_state, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    u.id,
                    u.repo.as_str(),
                    u.offset as i64,
                    u.algorithm.as_str(),
                    u.hash_state,
                    u.created_at,
                    u.updated_at
                ])
            })
            .map(drop)
            .map_err(backend)
        })
        .await
    }

    async fn upload(&self, repo: &RepoName, id: &str) -> Result<Option<Upload>, MetaError> {
        let (repo, id) = (repo.clone(), id.to_owned());
        self.lookup(|conn| {
            // One statement, so the segments are those of the offset read with them.
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {UPLOAD_COLUMNS} FROM uploads u \
                     LEFT JOIN upload_segments s ON s.upload_id = u.id \
                     WHERE u.id = ?1 AND u.repo = ?2 ORDER BY s.start_offset"
                ))
                .map_err(backend)?;
            let mut rows = stmt.query(params![id, repo.as_str()]).map_err(backend)?;
            Ok(uploads_from_rows(&mut rows, Some(&repo))?.pop())
        })
    }

    async fn advance_upload(
        &self,
        u: &Upload,
        segment: &UploadSegment,
        fence: Option<&LeaseHolder>,
    ) -> Result<(), MetaError> {
        let u = u.clone();
        let segment = segment.clone();
        let fence = fence.map(|h| h.as_str().to_owned());
        self.write(move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE uploads SET offset = ?2, algorithm = ?3, hash_state = ?4, updated_at = ?5 \
                     WHERE id = ?1 AND offset = ?6 AND (?7 IS NULL OR lease_holder = ?7)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        u.id,
                        u.offset as i64,
                        u.algorithm.as_str(),
                        u.hash_state,
                        now(),
                        segment.start as i64,
                        fence
                    ])
                })
                .map_err(backend)?;
            if n != 1 {
                return Err(MetaError::Conflict);
            }
            // In the same savepoint as the offset: the segment counts exactly when the
            // advance does.
            conn.prepare_cached(
                "INSERT INTO upload_segments (upload_id, start_offset, token) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut s| s.execute(params![u.id, segment.start as i64, segment.token]))
            .map(drop)
            .map_err(backend)
        })
        .await
    }

    async fn delete_upload(&self, id: &str) -> Result<(), MetaError> {
        let id = id.to_owned();
        self.write(move |conn| {
            // Its segments go with it (ON DELETE CASCADE).
            conn.prepare_cached("DELETE FROM uploads WHERE id = ?1")
                .and_then(|mut s| s.execute([id]))
                .map(drop)
                .map_err(backend)
        })
        .await
    }

    async fn stale_uploads(
        &self,
        idle_since: i64,
        page: Page<'_>,
    ) -> Result<Vec<Upload>, MetaError> {
        let last = page.last.unwrap_or("").to_owned();
        let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {UPLOAD_COLUMNS} FROM (SELECT * FROM uploads \
                     WHERE updated_at < ?1 AND id > ?2 ORDER BY id LIMIT ?3) u \
                     LEFT JOIN upload_segments s ON s.upload_id = u.id \
                     ORDER BY u.id, s.start_offset"
                ))
                .map_err(backend)?;
            let mut rows = stmt
                .query(params![idle_since, last, limit])
                .map_err(backend)?;
            uploads_from_rows(&mut rows, None)
        })
        .await
    }

    async fn expire_upload(
        &self,
        id: &str,
        idle_since: i64,
        holder: Option<&LeaseHolder>,
    ) -> Result<bool, MetaError> {
        let id = id.to_owned();
        let holder = holder.map(|h| h.as_str().to_owned());
        self.write(move |conn| {
            conn.prepare_cached(
                "DELETE FROM uploads WHERE id = ?1 AND updated_at < ?2 AND (lease_holder IS NULL \
                 OR lease_until_ms < ?3 OR lease_holder = ?4)",
            )
            .and_then(|mut s| s.execute(params![id, idle_since, now_ms(), holder]))
            .map(|n| n > 0)
            .map_err(backend)
        })
        .await
    }

    async fn lease_upload(
        &self,
        id: &str,
        holder: &LeaseHolder,
        ttl: Duration,
    ) -> Result<UploadLease, MetaError> {
        let (id, holder) = (id.to_owned(), holder.as_str().to_owned());
        self.write(move |conn| {
            let now = now_ms();
            let taken = conn
                .prepare_cached(
                    "UPDATE uploads SET lease_holder = ?2, lease_until_ms = ?3 WHERE id = ?1 \
                     AND (lease_holder IS NULL OR lease_holder = ?2 OR lease_until_ms < ?4)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        id,
                        holder,
                        now.saturating_add(duration_ms(ttl)),
                        now
                    ])
                })
                .map_err(backend)?;
            if taken > 0 {
                return Ok(UploadLease::Granted);
            }
            let exists = conn
                .prepare_cached("SELECT 1 FROM uploads WHERE id = ?1")
                .and_then(|mut s| s.exists([&id]))
                .map_err(backend)?;
            Ok(if exists {
                UploadLease::Held
            } else {
                UploadLease::Unknown
            })
        })
        .await
    }

    async fn release_upload(&self, id: &str, holder: &LeaseHolder) -> Result<(), MetaError> {
        let (id, holder) = (id.to_owned(), holder.as_str().to_owned());
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE uploads SET lease_holder = NULL, lease_until_ms = NULL \
                 WHERE id = ?1 AND lease_holder = ?2",
            )
            .and_then(|mut s| s.execute([id, holder]))
            .map(drop)
            .map_err(backend)
        })
        .await
    }

    async fn enqueue_job(&self, job: &NewJob) -> Result<Option<JobId>, MetaError> {
        let job = job.clone();
        self.write(move |conn| insert_job(conn, &job, now_ms()).map_err(backend))
            .await
    }

    async fn claim_jobs(
        &self,
        holder: &LeaseHolder,
        kinds: &[JobKind],
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ClaimedJob>, MetaError> {
        if kinds.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let kind_values: Vec<Value> = kinds
            .iter()
            .map(|k| Value::Text(k.as_str().to_owned()))
            .collect();
        // Most polls find nothing: ask a reader first, so an idle queue costs no write
        // transaction.
        let probe = kind_values.clone();
        let due = self
            .read(move |conn| {
                let sql = format!(
                    "SELECT 1 FROM jobs WHERE {} LIMIT 1",
                    due_condition(probe.len())
                );
                let mut args = vec![Value::Integer(now_ms())];
                args.extend(probe);
                conn.prepare_cached(&sql)
                    .and_then(|mut s| s.exists(params_from_iter(args)))
                    .map_err(backend)
            })
            .await?;
        if !due {
            return Ok(Vec::new());
        }
        let holder = holder.as_str().to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write(move |conn| {
            // One write transaction (the writer thread runs one at a time): no other claim can
            // see these rows between the select and the update.
            let now = now_ms();
            let n = kind_values.len();
            let mut args = vec![Value::Integer(now)];
            args.extend(kind_values);
            // An expired job that has used all its attempts dies instead of running again.
            conn.prepare_cached(&format!(
                "UPDATE jobs SET state = 'dead', holder = NULL, lease_until_ms = NULL, \
                 finished_at_ms = ?1, updated_at_ms = ?1, \
                 last_error = 'the lease of its last attempt expired' \
                 WHERE state = 'running' AND lease_until_ms < ?1 AND attempts >= max_attempts \
                 AND kind IN ({})",
                placeholders(2, n)
            ))
            .and_then(|mut s| s.execute(params_from_iter(args.iter())))
            .map_err(backend)?;
            let (h, l, t) = (n + 2, n + 3, n + 4);
            args.push(Value::Text(holder.clone()));
            args.push(Value::Integer(now.saturating_add(duration_ms(lease))));
            args.push(Value::Integer(limit));
            let mut stmt = conn
                .prepare_cached(&format!(
                    "UPDATE jobs SET state = 'running', holder = ?{h}, lease_until_ms = ?{l}, \
                     attempts = attempts + 1, updated_at_ms = ?1 \
                     WHERE id IN (SELECT id FROM jobs WHERE {} ORDER BY run_at_ms, id LIMIT ?{t}) \
                     RETURNING id, kind, payload, dedupe_key, attempts, max_attempts, last_error",
                    due_condition(n)
                ))
                .map_err(backend)?;
            let rows = stmt
                .query_map(params_from_iter(args.iter()), |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, u32>(4)?,
                        r.get::<_, u32>(5)?,
                        r.get::<_, Option<String>>(6)?,
                    ))
                })
                .map_err(backend)?;
            let mut out = Vec::new();
            for row in rows {
                let (id, kind, payload, dedupe_key, attempt, max_attempts, last_error) =
                    row.map_err(backend)?;
                let kind = kind
                    .parse()
                    .map_err(|e| MetaError::Backend(format!("job {id}: {e}")))?;
                out.push(ClaimedJob {
                    lease: JobLease {
                        id: JobId(id),
                        holder: LeaseHolder::new(holder.clone()),
                        attempt,
                    },
                    kind,
                    payload,
                    dedupe_key,
                    max_attempts,
                    last_error,
                });
            }
            out.sort_by_key(|j| j.lease.id);
            Ok(out)
        })
        .await
    }

    async fn extend_job_lease(&self, lease: &JobLease, ttl: Duration) -> Result<bool, MetaError> {
        let (id, holder, attempt) = lease_params(lease);
        self.write(move |conn| {
            let now = now_ms();
            conn.prepare_cached(
                "UPDATE jobs SET lease_until_ms = ?4, updated_at_ms = ?5 \
                 WHERE id = ?1 AND holder = ?2 AND attempts = ?3 AND state = 'running'",
            )
            .and_then(|mut s| {
                s.execute(params![
                    id,
                    holder,
                    attempt,
                    now.saturating_add(duration_ms(ttl)),
                    now
                ])
            })
            .map(|n| n > 0)
            .map_err(backend)
        })
        .await
    }

    async fn finish_job(&self, lease: &JobLease, next: Option<&NewJob>) -> Result<bool, MetaError> {
        let (id, holder, attempt) = lease_params(lease);
        let next = next.cloned();
        self.write(move |conn| {
            let now = now_ms();
            let done = conn
                .prepare_cached(
                    "UPDATE jobs SET state = 'done', holder = NULL, lease_until_ms = NULL, \
                     finished_at_ms = ?4, updated_at_ms = ?4 \
                     WHERE id = ?1 AND holder = ?2 AND attempts = ?3 AND state = 'running'",
                )
                .and_then(|mut s| s.execute(params![id, holder, attempt, now]))
                .map_err(backend)?;
            if done == 0 {
                return Ok(false);
            }
            // After the update: the finished job no longer holds its dedupe key.
            if let Some(next) = &next {
                insert_job(conn, next, now).map_err(backend)?;
            }
            Ok(true)
        })
        .await
    }

    async fn fail_job(
        &self,
        lease: &JobLease,
        error: &str,
        retry: Retry,
    ) -> Result<Option<JobState>, MetaError> {
        let (id, holder, attempt) = lease_params(lease);
        let error = error.to_owned();
        let (give_up, delay) = match retry {
            Retry::After(d) => (false, duration_ms(d)),
            Retry::Never => (true, 0),
        };
        self.write(move |conn| {
            let now = now_ms();
            let state: Option<String> = conn
                .prepare_cached(
                    "UPDATE jobs SET \
                     state = CASE WHEN ?5 OR attempts >= max_attempts THEN 'dead' ELSE 'queued' END, \
                     run_at_ms = CASE WHEN ?5 OR attempts >= max_attempts THEN run_at_ms ELSE ?6 END, \
                     finished_at_ms = CASE WHEN ?5 OR attempts >= max_attempts THEN ?7 END, \
                     holder = NULL, lease_until_ms = NULL, last_error = ?4, updated_at_ms = ?7 \
                     WHERE id = ?1 AND holder = ?2 AND attempts = ?3 AND state = 'running' \
                     RETURNING state",
                )
                .and_then(|mut s| {
                    s.query_row(
                        params![
                            id,
                            holder,
                            attempt,
                            error,
                            give_up,
                            now.saturating_add(delay),
                            now
                        ],
                        |r| r.get(0),
                    )
                    .optional()
                })
                .map_err(backend)?;
            Ok(state.as_deref().and_then(JobState::from_name))
        })
        .await
    }

    async fn list_jobs(&self, filter: JobFilter<'_>) -> Result<Vec<Job>, MetaError> {
        let kind = filter.kind.map(|k| k.as_str().to_owned());
        let state = filter.state.map(JobState::as_str);
        let after = filter.after.map_or(i64::MIN, |j| j.0);
        let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE (?1 IS NULL OR kind = ?1) \
                     AND (?2 IS NULL OR state = ?2) AND id > ?3 ORDER BY id LIMIT ?4"
                ))
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![kind, state, after, limit], job_from_row)
                .map_err(backend)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row.map_err(backend)??);
            }
            Ok(out)
        })
        .await
    }

    async fn prune_jobs(&self, age: Duration) -> Result<u64, MetaError> {
        self.write(move |conn| {
            conn.prepare_cached(
                "DELETE FROM jobs WHERE state IN ('done', 'dead') AND finished_at_ms < ?1",
            )
            .and_then(|mut s| s.execute([now_ms().saturating_sub(duration_ms(age))]))
            .map(|n| n as u64)
            .map_err(backend)
        })
        .await
    }

    async fn reserve_blob(&self, digest: &Digest, size: u64) -> Result<bool, MetaError> {
        let digest = digest.to_string();
        self.write(move |tx| gc::reserve(tx, &digest, size)).await
    }

    async fn gc_manifests(&self, scan: GcScan<'_>) -> Result<GcBatch, MetaError> {
        let (after, scan) = owned_scan(scan);
        self.write(move |tx| {
            gc::manifests(
                tx,
                &GcScan {
                    after: after.as_deref(),
                    ..scan
                },
            )
        })
        .await
    }

    async fn gc_links(&self, scan: GcScan<'_>) -> Result<GcBatch, MetaError> {
        let (after, scan) = owned_scan(scan);
        self.write(move |tx| {
            gc::links(
                tx,
                &GcScan {
                    after: after.as_deref(),
                    ..scan
                },
            )
        })
        .await
    }

    async fn gc_mark_blobs(&self, scan: GcScan<'_>) -> Result<GcBatch, MetaError> {
        let (after, scan) = owned_scan(scan);
        self.write(move |tx| {
            gc::mark_blobs(
                tx,
                &GcScan {
                    after: after.as_deref(),
                    ..scan
                },
            )
        })
        .await
    }

    async fn gc_marked_blobs(&self, limit: usize) -> Result<Vec<GcItem>, MetaError> {
        self.read(move |conn| gc::marked_blobs(conn, limit)).await
    }

    async fn gc_forget_blobs(&self, digests: &[Digest]) -> Result<u64, MetaError> {
        let digests = gc::texts(digests);
        self.write(move |tx| gc::forget_blobs(tx, &digests)).await
    }

    async fn gc_known_blobs(&self, digests: &[Digest]) -> Result<Vec<Digest>, MetaError> {
        let digests = gc::texts(digests);
        self.read(move |conn| gc::known_blobs(conn, &digests)).await
    }

    async fn gc_claim_orphan(&self, digest: &Digest, size: u64) -> Result<bool, MetaError> {
        let digest = digest.to_string();
        self.write(move |tx| gc::claim_orphan(tx, &digest, size))
            .await
    }

    async fn create_gc_run(&self, run: &GcRun) -> Result<GcRun, MetaError> {
        let run = run.clone();
        self.write(move |tx| gc::create_run(tx, &run)).await
    }

    async fn save_gc_run(&self, run: &GcRun) -> Result<(), MetaError> {
        let run = run.clone();
        self.write(move |tx| gc::save_run(tx, &run)).await
    }

    async fn gc_run(&self, id: i64) -> Result<Option<GcRun>, MetaError> {
        self.read(move |conn| gc::get_run(conn, id)).await
    }

    async fn list_gc_runs(&self, paging: Paging) -> Result<Listing<GcRun>, MetaError> {
        self.read(move |conn| gc::list_runs(conn, paging)).await
    }

    async fn quota(&self, project: &str) -> Result<crate::Quota, MetaError> {
        let project = project.to_owned();
        self.read(move |conn| quota::quota(conn, &project)).await
    }

    async fn set_quota(&self, project: &str, limits: crate::QuotaLimits) -> Result<(), MetaError> {
        let project = project.to_owned();
        self.write(move |tx| quota::set(tx, &project, limits)).await
    }

    async fn list_quotas(
        &self,
        project: Option<crate::ProjectId>,
        paging: Paging,
    ) -> Result<Listing<crate::Quota>, MetaError> {
        self.read(move |conn| quota::list(conn, project, paging))
            .await
    }

    async fn immutable_rules(&self, project: &str) -> Result<Vec<crate::ImmutableRule>, MetaError> {
        let project = project.to_owned();
        self.read(move |conn| policy::rules(conn, &project)).await
    }

    async fn create_immutable_rule(&self, rule: &crate::ImmutableRule) -> Result<i64, MetaError> {
        let rule = rule.clone();
        self.write(move |tx| policy::create(tx, &rule)).await
    }

    async fn update_immutable_rule(&self, rule: &crate::ImmutableRule) -> Result<bool, MetaError> {
        let rule = rule.clone();
        self.write(move |tx| policy::update(tx, &rule)).await
    }

    async fn delete_immutable_rule(
        &self,
        project_id: crate::ProjectId,
        id: i64,
    ) -> Result<bool, MetaError> {
        self.write(move |tx| policy::delete(tx, project_id, id))
            .await
    }

    async fn tags_of(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<String>, MetaError> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.read(move |conn| {
            list_names(
                conn,
                "SELECT t.name FROM tags t JOIN repositories r ON r.id = t.repo_id \
                 WHERE r.name = ?1 AND t.digest = ?2 ORDER BY t.name",
                params![repo, digest],
            )
        })
        .await
    }

    async fn scrub_blobs(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<ScrubBlob>, MetaError> {
        let after = after.map(ToString::to_string);
        self.read(move |conn| scrub::blobs(conn, after.as_deref(), limit))
            .await
    }

    async fn scrub_manifests(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ScrubManifests, MetaError> {
        let after = after.map(str::to_owned);
        self.read(move |conn| scrub::manifests(conn, after.as_deref(), limit))
            .await
    }

    async fn scrub_missing_refs(
        &self,
        repo: &RepoName,
        blobs: &[Digest],
        manifests: &[Digest],
    ) -> Result<MissingRefs, MetaError> {
        let (repo, blobs, manifests) = (repo.clone(), blobs.to_vec(), manifests.to_vec());
        self.read(move |conn| scrub::missing_refs(conn, &repo, blobs, manifests))
            .await
    }

    async fn scrub_withdraw_blob(&self, digest: &Digest) -> Result<bool, MetaError> {
        let digest = digest.to_string();
        self.write(move |tx| scrub::withdraw_blob(tx, &digest))
            .await
    }

    async fn create_scrub_run(&self, run: &ScrubRun) -> Result<ScrubRun, MetaError> {
        let run = run.clone();
        self.write(move |tx| scrub::create_run(tx, &run)).await
    }

    async fn save_scrub_run(&self, run: &ScrubRun) -> Result<(), MetaError> {
        let run = run.clone();
        self.write(move |tx| scrub::save_run(tx, &run)).await
    }

    async fn scrub_run(&self, id: i64) -> Result<Option<ScrubRun>, MetaError> {
        self.read(move |conn| scrub::get_run(conn, id)).await
    }

    async fn list_scrub_runs(&self, paging: Paging) -> Result<Listing<ScrubRun>, MetaError> {
        self.read(move |conn| scrub::list_runs(conn, paging)).await
    }

    async fn add_scrub_findings(&self, findings: &[ScrubFinding]) -> Result<(), MetaError> {
        if findings.is_empty() {
            return Ok(());
        }
        let findings = findings.to_vec();
        self.write(move |tx| scrub::add_findings(tx, &findings))
            .await
    }

    async fn scrub_findings(
        &self,
        run_id: i64,
        paging: Paging,
    ) -> Result<Listing<ScrubFinding>, MetaError> {
        self.read(move |conn| scrub::findings(conn, run_id, paging))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_backend_testsuite() {
        let dir = tempfile::tempdir().unwrap();
        let meta = SqliteMeta::open(&dir.path().join("meta.db"), Durability::Normal).unwrap();
        crate::testsuite::run(&meta).await;
    }

    #[tokio::test]
    async fn passes_the_access_testsuite() {
        let dir = tempfile::tempdir().unwrap();
        let meta = SqliteMeta::open(&dir.path().join("meta.db"), Durability::Normal).unwrap();
        crate::testsuite::run_access(&meta).await;
    }

    #[tokio::test]
    async fn passes_the_retention_testsuite() {
        let dir = tempfile::tempdir().unwrap();
        let meta = SqliteMeta::open(&dir.path().join("meta.db"), Durability::Normal).unwrap();
        crate::testsuite::run_retention(&meta).await;
    }

    /// The writer gathers planner statistics when it starts, so that deleting a manifest
    /// finds its tags through `tags_digest` instead of walking all the repository's tags
    /// (which SQLite 3.50 does without statistics).
    #[tokio::test]
    async fn manifest_deletes_find_their_tags_by_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let repo: RepoName = "stats/app".parse().unwrap();
        let meta = SqliteMeta::open(&path, Durability::Normal).unwrap();
        let puts = (0..2000).map(|i| {
            let (meta, repo) = (meta.clone(), repo.clone());
            async move {
                let content = format!("{{\"n\":{i}}}").into_bytes();
                let manifest = crate::testsuite::manifest(&repo, &content, vec![], vec![]);
                let tag: Tag = format!("t{i}").parse().unwrap();
                meta.put_manifest(manifest, &[tag]).await.unwrap();
            }
        });
        futures::future::join_all(puts).await;
        let plan = |conn: &Connection| -> String {
            let mut stmt = conn
                .prepare(
                    "EXPLAIN QUERY PLAN DELETE FROM manifests WHERE repo_id = 1 AND digest = 'x'",
                )
                .unwrap();
            let rows = stmt.query_map([], |r| r.get::<_, String>(3)).unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        drop(meta);
        let meta = SqliteMeta::open(&path, Durability::Normal).unwrap();
        // A write is done once the writer has started, its statistics gathered.
        let gone = Digest::sha256_of(b"{\"n\":0}");
        assert!(meta.delete_manifest(&repo, &gone).await.unwrap());
        let conn = open_conn(&path, Durability::Normal).unwrap();
        let plan = plan(&conn);
        assert!(
            plan.contains("tags USING INDEX tags_digest (repo_id=? AND digest=?)"),
            "{plan}"
        );
    }

    /// A database made by the first schema keeps its uploads through the migrations that add
    /// leases, the job queue and upload segments, and gets a project for its repositories.
    #[tokio::test]
    async fn upgrades_a_first_version_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(
            "CREATE TABLE berth_schema (version INTEGER NOT NULL); \
             INSERT INTO berth_schema (version) VALUES (1); \
             INSERT INTO uploads (id, repo, offset, algorithm, hash_state, created_at, updated_at) \
             VALUES ('u-1', 'old/app', 3, 'sha256', NULL, 10, 20); \
             INSERT INTO repositories (name, created_at) \
             VALUES ('old/app', 10), ('old/lib/x', 10), ('solo', 10);",
        )
        .unwrap();
        drop(conn);
        let meta = SqliteMeta::open(&path, Durability::Normal).unwrap();
        crate::testsuite::check_upgraded_from_v1(&meta).await;
    }

    #[tokio::test]
    async fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        drop(SqliteMeta::open(&path, Durability::Normal).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute("INSERT INTO berth_schema (version) VALUES (999)", [])
            .unwrap();
        drop(conn);
        assert!(matches!(
            SqliteMeta::open(&path, Durability::Normal),
            Err(MetaError::SchemaTooNew { found: 999, .. })
        ));
    }
}
