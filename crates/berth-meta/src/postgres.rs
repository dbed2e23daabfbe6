//! The PostgreSQL backend, for a fleet of Berth instances sharing one database.
//!
//! It behaves exactly like [`crate::sqlite::SqliteMeta`] (both pass [`crate::testsuite::run`])
//! and talks to PostgreSQL through a [`sqlx`] connection pool, with plain queries and bound
//! parameters (no compile-time checked macros: building needs no database).
//!
//! # Schema
//!
//! The tables mirror SQLite's, one for one, with PostgreSQL types: `BIGINT` for ids, sizes and
//! times (seconds since the Unix epoch, as in SQLite), `BYTEA` for manifest bytes and hash
//! states, `TEXT` for the rest.
//!
//! - `repositories (id, name, created_at)`: `name` is unique.
//! - `blobs (digest, size, created_at)`: every blob any repository links.
//! - `repo_blobs (repo_id, digest, created_at)`: which blobs each repository may reach.
//! - `manifests (repo_id, digest, media_type, artifact_type, subject, annotations, size,
//!   content, created_at)`, keyed by `(repo_id, digest)`.
//! - `manifest_refs (repo_id, manifest, target, kind)`: the blobs (`kind` 0) and child
//!   manifests (`kind` 1) of each manifest; they go with it (`ON DELETE CASCADE`).
//! - `tags (repo_id, name, digest, updated_at)`: a tag names a manifest of its repository
//!   (a foreign key), and goes with it.
//! - `uploads (id, repo, "offset", algorithm, hash_state, created_at, updated_at,
//!   lease_holder, lease_until_ms)`: `updated_at` is indexed, for expiring idle uploads.
//! - `upload_segments (upload_id, start_offset, token)`: the chunks of each upload as the
//!   blob store keeps them (see [`crate::UploadSegment`]); they go with it (`ON DELETE
//!   CASCADE`). An upload is read with its segments in one statement.
//! - `jobs (id, kind, state, payload, dedupe_key, attempts, max_attempts, run_at_ms, holder,
//!   lease_until_ms, last_error, created_at_ms, updated_at_ms, finished_at_ms)`: the job
//!   queue (see [`crate::jobs`]). `state` is `queued`, `running`, `done` or `dead`. A partial
//!   unique index on `dedupe_key` over the queued and running jobs makes deduplication one
//!   `INSERT ... ON CONFLICT DO NOTHING`; partial indexes on `(kind, run_at_ms)` of the queued
//!   and `(kind, lease_until_ms)` of the running jobs serve claims.
//!
//! Schema version 4 adds the tables of [`crate::AccessStore`] (users, projects, user_groups,
//! group_users, project_members, robots, audit_log, settings, sessions: see
//! `postgres/access.rs`), `manifests.pulled_ms`, `repositories.pull_count`, and a private
//! project for the first segment of every repository name that existed before. Garbage
//! collection's migration adds blob states, touch times and `gc_runs`; then come project
//! usage and its triggers (`postgres/quota.rs`), immutability rules, and scrub's
//! `scrub_runs` and `scrub_findings` (see `postgres/scrub.rs`).
//!
//! Times of jobs and leases are milliseconds (`*_ms`) by PostgreSQL's clock, so instances
//! whose clocks disagree still agree on when a lease expires or a job is due.
//!
//! Every lookup the [`MetaStore`] trait does is served by a primary key or an index. Names,
//! tags and digests are `COLLATE "C"`, so comparisons and `ORDER BY` are bytewise, like
//! SQLite's, whatever locale the database was created with: listings page identically on both
//! backends.
//!
//! # Migrations
//!
//! The schema is an ordered list of SQL scripts in this file; the table `berth_schema`
//! records each version applied. [`PgMeta::migrate`] applies the missing ones in one
//! transaction that first takes a transaction-scoped advisory lock
//! (`pg_advisory_xact_lock`, key [`MIGRATION_LOCK_KEY`]), so instances starting together
//! queue behind each other and the second one finds nothing left to do. A database whose
//! schema is newer than [`SCHEMA_VERSION`] is refused with [`MetaError::SchemaTooNew`]. With
//! [`Migrate::Check`] nothing is written: a schema that is behind is an error telling the
//! operator to run `berth migrate`.
//!
//! # Transactions and retries
//!
//! Each write that touches several rows runs in one transaction, at isolation level
//! `READ COMMITTED` whatever the server's default is (each statement sees what committed
//! before it began; row locks and unique indexes order the writers). A write of one statement
//! (deleting a tag, moving an upload's offset and recording its new segment) is a transaction
//! by itself. A deleted manifest's tags and references go with it (`ON DELETE CASCADE`); a
//! manifest delete first locks the manifest's row (`FOR UPDATE`) and a repository delete the
//! repository's, and judges the tags it would take inside its transaction
//! ([`MetaStore::delete_manifest_keeping`]). Every manifest put and blob link locks its
//! repository's row (`FOR KEY SHARE`, in `ensure_repo`) and every tag write the manifest it
//! names (its foreign key), so such a write either commits before the delete reads the tags or
//! waits for the delete to end.
//!
//! `put_manifest` checks the manifest's references inside its transaction and locks the rows
//! it found (`FOR KEY SHARE`), so a concurrent unlink or delete either waits for it or
//! happens first and makes it fail with [`MetaError::MissingBlob`] /
//! [`MetaError::MissingManifest`], with nothing written; either way nothing half done is
//! ever visible. Tags are upserts (`ON CONFLICT ... DO UPDATE`), taken in sorted order so
//! that two pushes moving the same tags lock them in the same order; the last one to commit
//! wins, and a tag always names a complete manifest.
//!
//! A transaction that PostgreSQL aborts with `serialization_failure` (SQLSTATE 40001) or
//! `deadlock_detected` (40P01) is rolled back and run again, up to [`MAX_ATTEMPTS`] times in
//! all, after a short randomised pause. If it still fails, the caller gets
//! [`MetaError::Unavailable`] (the database is too busy right now; the request may be
//! retried), as SQLite's "database is busy" does.
//!
//! # Job claims and leases
//!
//! A claim is `UPDATE jobs ... FROM (SELECT id ... ORDER BY run_at_ms, id LIMIT n FOR UPDATE
//! SKIP LOCKED)`: concurrent claimers lock disjoint rows and never wait for each other, so
//! every instance polls the queue and no job is handed out twice. Heartbeats, finishing and
//! failing match the row on `(id, holder, attempts)`: a worker whose job was claimed again
//! after its lease expired matches nothing. An upload's lease is a compare-and-set on
//! `(lease_holder, lease_until_ms)` in one statement.
//!
//! # Errors and recovery
//!
//! [`MetaError::Unavailable`] (which the server answers with 503) stands for "the database
//! cannot be reached right now": the pool timed out waiting for a connection (which includes
//! a refused connection: the pool keeps trying until its acquire timeout), the pool is closed,
//! any I/O error (connection reset, broken pipe), and the SQLSTATEs of class 08 (connection
//! exception), class 53 (insufficient resources, such as too many connections), 57P01
//! (admin shutdown), 57P02 (crash shutdown) and 57P03 (cannot connect now). Everything else
//! is [`MetaError::Backend`].
//!
//! No broken connection is kept: the pool pings a connection before lending it and when it
//! comes back, and drops it if that fails, so once PostgreSQL is reachable again the next
//! requests open fresh connections and succeed, with nothing to restart. A commit that fails
//! on a lost connection is reported as unavailable even though PostgreSQL may have committed
//! it: linking blobs and putting manifests and tags are idempotent, and an upload's offset is
//! a compare-and-set, so a client's retry either does the same again or is refused cleanly.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use berth_oci::{Digest, DigestAlgorithm, RepoName, Tag};
use futures::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::Row;

use crate::check_kept;
use crate::jobs::{duration_ms, epoch_ms};
use crate::{
    ClaimedJob, GcBatch, GcItem, GcRun, GcScan, Job, JobFilter, JobId, JobKind, JobLease, JobState,
    LeaseHolder, Listing, MetaError, MetaStore, MissingRefs, NewJob, NewManifest, Page, Paging,
    Referrer, Retry, RunAt, ScrubBlob, ScrubFinding, ScrubManifests, ScrubRun, StoredManifest,
    TagGuard, Upload, UploadLease, UploadSegment,
};

/// Schema migrations, applied in order; `berth_schema` records each version applied.
/// Never edit a released script: add a new one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE repositories (
    id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);
CREATE TABLE blobs (
    digest      TEXT COLLATE "C" PRIMARY KEY,
    size        BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE TABLE repo_blobs (
    repo_id     BIGINT NOT NULL REFERENCES repositories(id),
    digest      TEXT COLLATE "C" NOT NULL REFERENCES blobs(digest),
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (repo_id, digest)
);
CREATE INDEX repo_blobs_digest ON repo_blobs(digest);
CREATE TABLE manifests (
    repo_id       BIGINT NOT NULL REFERENCES repositories(id),
    digest        TEXT COLLATE "C" NOT NULL,
    media_type    TEXT NOT NULL,
    artifact_type TEXT,
    subject       TEXT COLLATE "C",
    annotations   TEXT,
    size          BIGINT NOT NULL,
    content       BYTEA NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (repo_id, digest)
);
CREATE INDEX manifests_subject ON manifests(repo_id, subject) WHERE subject IS NOT NULL;
CREATE TABLE manifest_refs (
    repo_id     BIGINT NOT NULL,
    manifest    TEXT COLLATE "C" NOT NULL,
    target      TEXT COLLATE "C" NOT NULL,
    kind        SMALLINT NOT NULL, -- 0: blob, 1: child manifest
    PRIMARY KEY (repo_id, manifest, target, kind),
    FOREIGN KEY (repo_id, manifest) REFERENCES manifests(repo_id, digest) ON DELETE CASCADE
);
CREATE INDEX manifest_refs_target ON manifest_refs(repo_id, target);
CREATE TABLE tags (
    repo_id     BIGINT NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    digest      TEXT COLLATE "C" NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (repo_id, name),
    FOREIGN KEY (repo_id, digest) REFERENCES manifests(repo_id, digest) ON DELETE CASCADE
);
CREATE INDEX tags_digest ON tags(repo_id, digest);
CREATE TABLE uploads (
    id          TEXT PRIMARY KEY,
    repo        TEXT NOT NULL,
    "offset"    BIGINT NOT NULL,
    algorithm   TEXT NOT NULL,
    hash_state  BYTEA,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
"#,
    r#"
ALTER TABLE uploads ADD COLUMN lease_holder TEXT;
ALTER TABLE uploads ADD COLUMN lease_until_ms BIGINT;
CREATE INDEX uploads_updated ON uploads(updated_at);
CREATE TABLE jobs (
    id             BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    kind           TEXT COLLATE "C" NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'dead')),
    payload        TEXT NOT NULL,
    dedupe_key     TEXT COLLATE "C",
    attempts       INTEGER NOT NULL,
    max_attempts   INTEGER NOT NULL,
    run_at_ms      BIGINT NOT NULL,
    holder         TEXT,
    lease_until_ms BIGINT,
    last_error     TEXT,
    created_at_ms  BIGINT NOT NULL,
    updated_at_ms  BIGINT NOT NULL,
    finished_at_ms BIGINT
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
    start_offset BIGINT NOT NULL,
    token        TEXT NOT NULL,
    PRIMARY KEY (upload_id, start_offset)
);
"#,
    r#"
CREATE TABLE users (
    id            BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    username      TEXT COLLATE "C" NOT NULL UNIQUE,
    email         TEXT COLLATE "C" NOT NULL,
    realname      TEXT NOT NULL,
    comment       TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    sysadmin      BOOLEAN NOT NULL,
    created_ms    BIGINT NOT NULL,
    updated_ms    BIGINT NOT NULL
);
CREATE UNIQUE INDEX users_email ON users(email) WHERE email <> '';
CREATE TABLE projects (
    id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL UNIQUE,
    public      BOOLEAN NOT NULL,
    owner_id    BIGINT REFERENCES users(id) ON DELETE SET NULL,
    created_ms  BIGINT NOT NULL,
    updated_ms  BIGINT NOT NULL
);
CREATE TABLE user_groups (
    id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL UNIQUE,
    created_ms  BIGINT NOT NULL
);
CREATE TABLE group_users (
    group_id    BIGINT NOT NULL REFERENCES user_groups(id) ON DELETE CASCADE,
    user_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_users_user ON group_users(user_id);
CREATE TABLE project_members (
    id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    project_id  BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    entity_kind TEXT NOT NULL CHECK (entity_kind IN ('u', 'g')),
    entity_id   BIGINT NOT NULL,
    role        BIGINT NOT NULL,
    UNIQUE (project_id, entity_kind, entity_id)
);
CREATE INDEX project_members_entity ON project_members(entity_kind, entity_id);
CREATE TABLE robots (
    id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL,
    description TEXT NOT NULL,
    project_id  BIGINT REFERENCES projects(id) ON DELETE CASCADE,
    secret_hash TEXT NOT NULL,
    expires_ms  BIGINT,
    disabled    BOOLEAN NOT NULL,
    permissions TEXT NOT NULL,
    creator_id  BIGINT REFERENCES users(id) ON DELETE SET NULL,
    created_ms  BIGINT NOT NULL,
    updated_ms  BIGINT NOT NULL
);
CREATE UNIQUE INDEX robots_name ON robots ((COALESCE(project_id, 0)), name);
CREATE INDEX robots_project ON robots(project_id);
CREATE TABLE audit_log (
    id            BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    time_ms       BIGINT NOT NULL,
    username      TEXT COLLATE "C" NOT NULL,
    operation     TEXT COLLATE "C" NOT NULL,
    resource_type TEXT COLLATE "C" NOT NULL,
    resource      TEXT COLLATE "C" NOT NULL,
    project       TEXT COLLATE "C",
    source_ip     TEXT,
    success       BOOLEAN NOT NULL
);
CREATE INDEX audit_log_time ON audit_log(time_ms);
CREATE INDEX audit_log_username ON audit_log(username, time_ms);
CREATE INDEX audit_log_project ON audit_log(project, time_ms);
CREATE TABLE settings (
    key         TEXT COLLATE "C" PRIMARY KEY,
    value       TEXT NOT NULL
);
CREATE TABLE sessions (
    id_hash     TEXT COLLATE "C" PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token  TEXT NOT NULL,
    expires_ms  BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE INDEX sessions_expires ON sessions(expires_ms);
ALTER TABLE manifests ADD COLUMN pulled_ms BIGINT;
ALTER TABLE repositories ADD COLUMN pull_count BIGINT NOT NULL DEFAULT 0;
CREATE INDEX manifests_created ON manifests(repo_id, created_at, digest);
CREATE INDEX tags_updated ON tags(repo_id, updated_at);
INSERT INTO projects (name, public, owner_id, created_ms, updated_ms)
SELECT DISTINCT split_part(name, '/', 1), FALSE, NULL::BIGINT,
    (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT, (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT
FROM repositories
ON CONFLICT (name) DO NOTHING;
"#,
    r#"
ALTER TABLE blobs ADD COLUMN state SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE blobs ADD COLUMN touched_ms BIGINT NOT NULL DEFAULT 0;
UPDATE blobs SET touched_ms = created_at * 1000;
ALTER TABLE repo_blobs ADD COLUMN touched_ms BIGINT NOT NULL DEFAULT 0;
UPDATE repo_blobs SET touched_ms = created_at * 1000;
ALTER TABLE manifests ADD COLUMN touched_ms BIGINT NOT NULL DEFAULT 0;
UPDATE manifests SET touched_ms = created_at * 1000;
CREATE INDEX blobs_deleting ON blobs(digest) WHERE state = 2;
CREATE TABLE gc_runs (
    id                BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    trigger_kind      TEXT NOT NULL,
    dry_run           BOOLEAN NOT NULL,
    delete_untagged   BOOLEAN NOT NULL,
    grace_seconds     BIGINT NOT NULL,
    status            TEXT NOT NULL,
    phase             TEXT NOT NULL,
    cursor            TEXT,
    manifests_deleted BIGINT NOT NULL,
    links_deleted     BIGINT NOT NULL,
    blobs_deleted     BIGINT NOT NULL,
    bytes_freed       BIGINT NOT NULL,
    scanned           BIGINT NOT NULL,
    errors            BIGINT NOT NULL,
    last_error        TEXT,
    created_ms        BIGINT NOT NULL,
    updated_ms        BIGINT NOT NULL,
    finished_ms       BIGINT
);
"#,
    r#"
ALTER TABLE repositories ADD COLUMN project TEXT NOT NULL DEFAULT '';
UPDATE repositories SET project = split_part(name, '/', 1);
CREATE INDEX repositories_project ON repositories(project, name);
CREATE TABLE project_usage (
    project     TEXT PRIMARY KEY,
    bytes       BIGINT NOT NULL DEFAULT 0,
    artifacts   BIGINT NOT NULL DEFAULT 0,
    hard_bytes  BIGINT NOT NULL DEFAULT -1,
    hard_count  BIGINT NOT NULL DEFAULT -1,
    created_ms  BIGINT NOT NULL DEFAULT 0,
    updated_ms  BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE project_blobs (
    project     TEXT NOT NULL,
    digest      TEXT NOT NULL,
    refs        BIGINT NOT NULL,
    size        BIGINT NOT NULL,
    PRIMARY KEY (project, digest)
);
INSERT INTO project_blobs (project, digest, refs, size)
SELECT r.project, mr.target, COUNT(*), COALESCE(MAX(b.size), 0) FROM manifest_refs mr
JOIN repositories r ON r.id = mr.repo_id LEFT JOIN blobs b ON b.digest = mr.target
WHERE mr.kind = 0 GROUP BY r.project, mr.target;
INSERT INTO project_usage (project, bytes, artifacts)
SELECT r.project, SUM(m.size), COUNT(*) FROM manifests m
JOIN repositories r ON r.id = m.repo_id GROUP BY r.project;
UPDATE project_usage u SET bytes = u.bytes + COALESCE((SELECT SUM(pb.size) FROM project_blobs pb
    WHERE pb.project = u.project), 0);
-- Usage changes in the transaction that stores or deletes a manifest. A delete takes the
-- project's usage row (BEFORE, so ahead of the cascade to manifest_refs) and a put takes it
-- with the manifest row: writers of one project queue on that row, always first, instead of
-- deadlocking on the rows of shared blobs.
CREATE FUNCTION berth_manifest_usage() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO project_usage AS u (project, bytes, artifacts)
        SELECT project, NEW.size, 1 FROM repositories WHERE id = NEW.repo_id
        ON CONFLICT (project) DO UPDATE
        SET bytes = u.bytes + excluded.bytes, artifacts = u.artifacts + 1;
        RETURN NULL;
    END IF;
    UPDATE project_usage SET bytes = bytes - OLD.size, artifacts = artifacts - 1
    WHERE project = (SELECT project FROM repositories WHERE id = OLD.repo_id);
    RETURN OLD;
END $$;
CREATE TRIGGER manifests_usage_add AFTER INSERT ON manifests
    FOR EACH ROW EXECUTE FUNCTION berth_manifest_usage();
CREATE TRIGGER manifests_usage_remove BEFORE DELETE ON manifests
    FOR EACH ROW EXECUTE FUNCTION berth_manifest_usage();
CREATE FUNCTION berth_ref_usage() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    p TEXT;
    n BIGINT;
    sz BIGINT;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT project INTO p FROM repositories WHERE id = NEW.repo_id;
        INSERT INTO project_blobs AS pb (project, digest, refs, size)
        VALUES (p, NEW.target, 1,
                COALESCE((SELECT size FROM blobs WHERE digest = NEW.target), 0))
        ON CONFLICT (project, digest) DO UPDATE SET refs = pb.refs + 1
        RETURNING refs, size INTO n, sz;
        IF n = 1 THEN
            UPDATE project_usage SET bytes = bytes + sz WHERE project = p;
        END IF;
    ELSE
        SELECT project INTO p FROM repositories WHERE id = OLD.repo_id;
        UPDATE project_blobs SET refs = refs - 1 WHERE project = p AND digest = OLD.target
        RETURNING refs, size INTO n, sz;
        IF n <= 0 THEN
            DELETE FROM project_blobs WHERE project = p AND digest = OLD.target;
            UPDATE project_usage SET bytes = bytes - sz WHERE project = p;
        END IF;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER refs_usage_add AFTER INSERT ON manifest_refs
    FOR EACH ROW WHEN (NEW.kind = 0) EXECUTE FUNCTION berth_ref_usage();
CREATE TRIGGER refs_usage_remove AFTER DELETE ON manifest_refs
    FOR EACH ROW WHEN (OLD.kind = 0) EXECUTE FUNCTION berth_ref_usage();
CREATE FUNCTION berth_project_forget() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM project_usage WHERE project = OLD.name;
    RETURN NULL;
END $$;
CREATE TRIGGER projects_usage_forget AFTER DELETE ON projects
    FOR EACH ROW EXECUTE FUNCTION berth_project_forget();
"#,
    r#"
CREATE TABLE immutable_rules (
    id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    project_id  BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    disabled    BOOLEAN NOT NULL,
    priority    BIGINT NOT NULL,
    selectors   TEXT NOT NULL,
    created_ms  BIGINT NOT NULL,
    updated_ms  BIGINT NOT NULL
);
CREATE INDEX immutable_rules_project ON immutable_rules(project_id, priority, id);
"#,
    // Scrub ([`crate::scrub`]): the history of runs and what each one found. Self-contained,
    // so it may be renumbered among other migrations added at the same time.
    r#"
CREATE TABLE scrub_runs (
    id                BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    repair            BOOLEAN NOT NULL,
    status            TEXT NOT NULL,
    phase             TEXT NOT NULL,
    cursor            TEXT COLLATE "C",
    blobs_total       BIGINT NOT NULL,
    manifests_total   BIGINT NOT NULL,
    blobs_checked     BIGINT NOT NULL,
    bytes_checked     BIGINT NOT NULL,
    manifests_checked BIGINT NOT NULL,
    errors            BIGINT NOT NULL,
    last_error        TEXT,
    created_ms        BIGINT NOT NULL,
    updated_ms        BIGINT NOT NULL,
    finished_ms       BIGINT
);
CREATE TABLE scrub_findings (
    id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    run_id      BIGINT NOT NULL REFERENCES scrub_runs(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    digest      TEXT COLLATE "C" NOT NULL,
    repo        TEXT COLLATE "C" NOT NULL,
    target      TEXT COLLATE "C" NOT NULL,
    detail      TEXT NOT NULL,
    repaired    BOOLEAN NOT NULL,
    created_ms  BIGINT NOT NULL,
    UNIQUE (run_id, kind, digest, repo, target)
);
"#,
    // Retention ([`crate::retention`]): policies, their executions and one task per
    // repository of an execution.
    r#"
CREATE TABLE retention_policies (
    id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    project_id  BIGINT NOT NULL UNIQUE REFERENCES projects(id) ON DELETE CASCADE,
    rules       TEXT NOT NULL,
    cron        TEXT,
    fired_ms    BIGINT NOT NULL,
    created_ms  BIGINT NOT NULL,
    updated_ms  BIGINT NOT NULL
);
CREATE TABLE retention_executions (
    id           BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    policy_id    BIGINT NOT NULL REFERENCES retention_policies(id) ON DELETE CASCADE,
    project      TEXT NOT NULL,
    trigger_kind TEXT NOT NULL,
    dry_run      BOOLEAN NOT NULL,
    status       TEXT NOT NULL,
    rules        TEXT NOT NULL,
    repositories BIGINT NOT NULL,
    last_error   TEXT,
    created_ms   BIGINT NOT NULL,
    updated_ms   BIGINT NOT NULL,
    finished_ms  BIGINT
);
CREATE INDEX retention_executions_policy ON retention_executions(policy_id, id);
CREATE TABLE retention_tasks (
    id           BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    execution_id BIGINT NOT NULL REFERENCES retention_executions(id) ON DELETE CASCADE,
    repository   TEXT NOT NULL,
    status       TEXT NOT NULL,
    total        BIGINT NOT NULL,
    retained     BIGINT NOT NULL,
    deleted      BIGINT NOT NULL,
    errors       BIGINT NOT NULL,
    items        TEXT NOT NULL,
    created_ms   BIGINT NOT NULL,
    updated_ms   BIGINT NOT NULL,
    finished_ms  BIGINT,
    UNIQUE (execution_id, repository)
);
"#,
    // Quota usage: `project_blobs.digest` bytewise like every other digest column. The
    // reference triggers compare it with `manifest_refs.target` (`COLLATE "C"`), and an
    // index in the default collation cannot serve a comparison in "C": every reference
    // deleted scanned all of a project's blobs (50 ms a manifest delete at 100,000 blobs).
    r#"
ALTER TABLE project_blobs ALTER COLUMN digest TYPE TEXT COLLATE "C";
"#,
];

/// Now by the database's clock, in milliseconds since the Unix epoch: every instance of a
/// fleet reads job and lease times off the same clock. (`now()` is the transaction's start:
/// stable within a statement, so indexes on the times can be used.)
macro_rules! now_ms {
    () => {
        "(EXTRACT(EPOCH FROM now()) * 1000)::BIGINT"
    };
}

mod access;
mod gc;
mod quota;
mod retention;
mod scrub;

/// The newest schema version this program knows (the number of its migrations).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The key of the advisory lock migrations take: the bytes of `"berth_mg"`. Any other program
/// sharing the database should stay away from it.
pub const MIGRATION_LOCK_KEY: i64 = i64::from_be_bytes(*b"berth_mg");

/// How many times in all a write is tried when PostgreSQL aborts it with a serialization
/// failure or a deadlock.
pub const MAX_ATTEMPTS: u32 = 5;

/// What [`PgMeta::connect`] does about the database's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Migrate {
    /// Apply every pending migration (under an advisory lock, so instances starting together
    /// do not race). The default.
    #[default]
    Apply,
    /// Apply nothing; fail if the schema is behind, with a message telling the operator to
    /// run `berth migrate`. For deployments where schema changes are a separate step.
    Check,
}

/// How [`PgMeta::connect`] sets up its pool and treats the schema.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Most connections the pool opens (at least 1).
    pub max_connections: u32,
    /// How long a request waits for a connection (a free one, or a new one to a server that
    /// may be refusing connections) before it fails with [`MetaError::Unavailable`].
    pub acquire_timeout: Duration,
    /// Whether to apply pending migrations or only check that there are none.
    pub migrate: Migrate,
}

impl Default for PgOptions {
    /// 16 connections, a 5 second acquire timeout, [`Migrate::Apply`].
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            migrate: Migrate::Apply,
        }
    }
}

/// Metadata in a PostgreSQL database. Cloning is cheap: clones share one pool.
#[derive(Clone, Debug)]
pub struct PgMeta {
    pool: PgPool,
}

/// Why a step of a write failed.
#[derive(Debug)]
enum TxError {
    /// The contract refused the write (a missing reference, a conflicting upload): final.
    Meta(MetaError),
    /// The database failed; retried if the SQLSTATE says so.
    Sql(sqlx::Error),
    /// What the step read changed before it could lock it: run the step again.
    Again(&'static str),
}

impl From<sqlx::Error> for TxError {
    fn from(e: sqlx::Error) -> Self {
        Self::Sql(e)
    }
}

impl From<MetaError> for TxError {
    fn from(e: MetaError) -> Self {
        Self::Meta(e)
    }
}

impl TxError {
    fn retryable(&self) -> bool {
        match self {
            Self::Meta(_) => false,
            Self::Sql(e) => sqlstate(e).is_some_and(|c| is_retryable_sqlstate(&c)),
            Self::Again(_) => true,
        }
    }

    fn into_meta(self, attempts: u32) -> MetaError {
        match self {
            Self::Meta(e) => e,
            Self::Sql(e) if sqlstate(&e).is_some_and(|c| is_retryable_sqlstate(&c)) => {
                MetaError::Unavailable(format!("gave up after {attempts} attempts: {e}"))
            }
            Self::Sql(e) => to_meta(e),
            Self::Again(why) => {
                MetaError::Unavailable(format!("gave up after {attempts} attempts: {why}"))
            }
        }
    }
}

/// One step of a write: runs on a connection (inside a transaction, or as a statement of its
/// own) with its argument, and may run again if PostgreSQL aborts it.
type Step<A, T> = for<'c> fn(&'c mut PgConnection, &'c A) -> BoxFuture<'c, Result<T, TxError>>;

/// Whether a write's step runs in a transaction of its own making.
#[derive(Clone, Copy)]
enum Scope {
    /// `BEGIN` ... `COMMIT` around the step (several statements).
    Transaction,
    /// The step is one statement, a transaction by itself.
    Statement,
}

/// The SQLSTATE of a database error.
fn sqlstate(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
}

/// `serialization_failure` or `deadlock_detected`: PostgreSQL aborted the transaction and it
/// may succeed if run again.
fn is_retryable_sqlstate(code: &str) -> bool {
    matches!(code, "40001" | "40P01")
}

/// SQLSTATEs that mean the server cannot serve us right now, rather than that the request is
/// wrong: connection exceptions (08), insufficient resources (53), and the server shutting
/// down or starting up (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now).
fn is_unavailable_sqlstate(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("53") || matches!(code, "57P01" | "57P02" | "57P03")
}

/// Map a driver error to the trait's error (see the module docs).
fn to_meta(e: sqlx::Error) -> MetaError {
    let unavailable = match &e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| is_unavailable_sqlstate(&c)),
        _ => false,
    };
    // 22021: a string PostgreSQL cannot store (a NUL character), from the request.
    if sqlstate(&e).as_deref() == Some("22021") {
        return MetaError::Invalid("text must not contain NUL characters".into());
    }
    if unavailable {
        MetaError::Unavailable(e.to_string())
    } else {
        MetaError::Backend(e.to_string())
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn parse_digest(s: &str) -> Result<Digest, MetaError> {
    s.parse()
        .map_err(|e| MetaError::Backend(format!("stored digest {s:?} is invalid: {e}")))
}

/// A page size as SQL `LIMIT` (which must not be negative).
fn sql_limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The pause before attempt `attempt + 1`: 10 ms doubling each time, times a random factor in
/// [0.5, 1.5), so that transactions that collided do not collide again in step.
fn backoff(attempt: u32) -> Duration {
    let base = 10u64 << attempt.saturating_sub(1).min(6);
    let jitter = RandomState::new().build_hasher().finish() % 1000;
    Duration::from_micros(base * (500 + jitter))
}

impl PgMeta {
    /// Connect to the database at `url` (`postgres://user:password@host:port/database`, with
    /// any of the parameters libpq's URLs take, such as `sslmode`), then apply or check
    /// migrations as `opts.migrate` says.
    ///
    /// # Errors
    /// [`MetaError::Unavailable`] if no connection could be made within
    /// `opts.acquire_timeout`; [`MetaError::SchemaTooNew`] if the database was migrated by a
    /// newer berth; with [`Migrate::Check`], [`MetaError::Backend`] if the schema is behind;
    /// [`MetaError::Backend`] for a malformed URL, a refused login and other failures.
    pub async fn connect(url: &str, opts: PgOptions) -> Result<Self, MetaError> {
        let meta = Self::connect_unchecked(url, &opts).await?;
        let checked = match opts.migrate {
            Migrate::Apply => meta.migrate().await.map(drop),
            Migrate::Check => meta.check_schema().await,
        };
        if let Err(e) = checked {
            meta.close().await;
            return Err(e);
        }
        Ok(meta)
    }

    /// Connect to the database at `url` without looking at its schema (`opts.migrate` is not
    /// consulted). For `berth migrate`, which calls [`Self::migrate`] next to learn what it
    /// did; anything else should use [`Self::connect`].
    ///
    /// # Errors
    /// As [`Self::connect`], less the schema errors.
    pub async fn connect_unchecked(url: &str, opts: &PgOptions) -> Result<Self, MetaError> {
        let mut options: PgConnectOptions = url
            .parse()
            .map_err(|e| MetaError::Backend(format!("the PostgreSQL URL is invalid: {e}")))?;
        if options.get_application_name().is_none() {
            options = options.application_name("berth");
        }
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .acquire_timeout(opts.acquire_timeout)
            // Ping each idle connection before lending it: one the server dropped (a restart,
            // a failover) is thrown away and replaced rather than failing a request.
            .test_before_acquire(true)
            .connect_with(options)
            .await
            .map_err(to_meta)?;
        Ok(Self { pool })
    }

    /// The newest schema version this program knows: [`SCHEMA_VERSION`].
    pub fn schema_version_known() -> i64 {
        SCHEMA_VERSION
    }

    /// The schema version recorded in the database (0 if it was never migrated).
    ///
    /// # Errors
    /// Backend errors.
    pub async fn schema_version(&self) -> Result<i64, MetaError> {
        let mut conn = self.pool.acquire().await.map_err(to_meta)?;
        current_version(&mut conn).await.map_err(to_meta)
    }

    /// Apply every pending migration, in one transaction under the migration advisory lock.
    /// Returns the schema version before and after; they are equal if there was nothing to do.
    ///
    /// # Errors
    /// [`MetaError::SchemaTooNew`] if the database was migrated by a newer berth (nothing is
    /// changed then); backend errors, after which nothing is changed either.
    pub async fn migrate(&self) -> Result<(i64, i64), MetaError> {
        // READ COMMITTED, so that the statements after the lock see what the instance that
        // held it before committed (a stricter level would read from a snapshot older than it).
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await
            .map_err(to_meta)?;
        match apply_migrations(&mut tx).await {
            Ok(versions) => {
                tx.commit().await.map_err(to_meta)?;
                if versions.0 != versions.1 {
                    tracing::info!(
                        from = versions.0,
                        to = versions.1,
                        "metadata schema migrated"
                    );
                }
                Ok(versions)
            }
            Err(e) => {
                if let Err(rollback) = tx.rollback().await {
                    tracing::debug!(error = %rollback, "rolling back a failed migration");
                }
                Err(e)
            }
        }
    }

    /// Close the pool: wait for the connections lent out to come back, then close them all.
    /// Every later call fails with [`MetaError::Unavailable`].
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Fail unless the schema is exactly the one this program knows.
    async fn check_schema(&self) -> Result<(), MetaError> {
        let found = self.schema_version().await?;
        if found > SCHEMA_VERSION {
            return Err(MetaError::SchemaTooNew {
                found,
                known: SCHEMA_VERSION,
            });
        }
        if found < SCHEMA_VERSION {
            return Err(MetaError::Backend(format!(
                "schema version {found} is older than this berth needs ({SCHEMA_VERSION}): \
                 run `berth migrate`"
            )));
        }
        Ok(())
    }

    /// Run a write's `step` with `arg`, in the given scope, retrying it (after a pause) when
    /// PostgreSQL aborts it with a serialization failure or a deadlock.
    async fn write<A, T>(&self, scope: Scope, arg: &A, step: Step<A, T>) -> Result<T, MetaError>
    where
        A: Sync + ?Sized,
        T: Send,
    {
        let mut attempt = 1;
        loop {
            let result = match scope {
                Scope::Transaction => self.attempt_in_transaction(arg, step).await,
                Scope::Statement => match self.pool.acquire().await {
                    Ok(mut conn) => step(&mut conn, arg).await,
                    Err(e) => Err(e.into()),
                },
            };
            match result {
                Ok(v) => return Ok(v),
                Err(e) if e.retryable() && attempt < MAX_ATTEMPTS => {
                    tracing::debug!(attempt, error = ?e, "metadata write aborted; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e.into_meta(attempt)),
            }
        }
    }

    async fn attempt_in_transaction<A, T>(&self, arg: &A, step: Step<A, T>) -> Result<T, TxError>
    where
        A: Sync + ?Sized,
        T: Send,
    {
        // Named rather than left to the server's default: the steps are written for it.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await?;
        match step(&mut tx, arg).await {
            Ok(v) => {
                tx.commit().await?;
                Ok(v)
            }
            Err(e) => {
                // Roll back now rather than when the connection is next used; if the
                // connection is broken this fails too, and the pool drops it.
                if let Err(rollback) = tx.rollback().await {
                    tracing::debug!(error = %rollback, "rolling back a failed metadata write");
                }
                Err(e)
            }
        }
    }
}

/// The version `berth_schema` records, 0 if the table does not exist.
async fn current_version(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('berth_schema') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(0);
    }
    sqlx::query_scalar("SELECT COALESCE(MAX(version), 0)::BIGINT FROM berth_schema")
        .fetch_one(&mut *conn)
        .await
}

/// The body of [`PgMeta::migrate`], inside its transaction.
async fn apply_migrations(conn: &mut PgConnection) -> Result<(i64, i64), MetaError> {
    // Held until the transaction ends: a second instance waits here, then finds the work done.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut *conn)
        .await
        .map_err(to_meta)?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS berth_schema (\
             version     BIGINT PRIMARY KEY, \
             applied_at  TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .execute(&mut *conn)
    .await
    .map_err(to_meta)?;
    let from = current_version(conn).await.map_err(to_meta)?;
    if from > SCHEMA_VERSION {
        return Err(MetaError::SchemaTooNew {
            found: from,
            known: SCHEMA_VERSION,
        });
    }
    for (version, sql) in (1i64..).zip(MIGRATIONS).skip(from as usize) {
        sqlx::raw_sql(*sql)
            .execute(&mut *conn)
            .await
            .map_err(|e| match to_meta(e) {
                MetaError::Backend(m) => MetaError::Backend(format!("migration {version}: {m}")),
                other => other,
            })?;
        sqlx::query("INSERT INTO berth_schema (version) VALUES ($1)")
            .bind(version)
            .execute(&mut *conn)
            .await
            .map_err(to_meta)?;
        tracing::info!(version, "applied metadata migration");
    }
    Ok((from, from.max(SCHEMA_VERSION)))
}

/// The id of repository `name`, if it exists.
async fn repo_id(conn: &mut PgConnection, name: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1")
        .bind(name)
        .fetch_optional(conn)
        .await
}

/// The id of repository `name`, creating it if needed.
async fn ensure_repo(conn: &mut PgConnection, name: &str) -> Result<i64, TxError> {
    // One round trip in the common cases (it exists; nobody else is creating it). The row is
    // locked FOR KEY SHARE (writers into one repository do not wait for each other), so a
    // repository delete, which locks it FOR UPDATE, either ends before this write goes on (and
    // the repository is made again) or waits for it, and then sees what it wrote.
    let id: Option<i64> = sqlx::query_scalar(
        "WITH found AS (SELECT id FROM repositories WHERE name = $1 FOR KEY SHARE), \
         made AS (INSERT INTO repositories (name, created_at, project) \
                  SELECT $1, $2, split_part($1, '/', 1) WHERE NOT EXISTS (SELECT 1 FROM found) \
                  ON CONFLICT (name) DO NOTHING RETURNING id) \
         SELECT id FROM found UNION ALL SELECT id FROM made",
    )
    .bind(name)
    .bind(now())
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = id {
        return Ok(id);
    }
    // Another transaction created it after this statement's snapshot was taken; a new
    // statement sees it.
    sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1 FOR KEY SHARE")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(TxError::Again("a new repository was not found"))
}

async fn link_blob_step(
    conn: &mut PgConnection,
    (repo, digest, size): &(&RepoName, String, i64),
) -> Result<(), TxError> {
    let id = ensure_repo(conn, repo.as_str()).await?;
    let t = now();
    // Touch the blob row (an update, which garbage collection's lock of the row re-checks),
    // unless GC is deleting it.
    let live = sqlx::query(concat!(
        "INSERT INTO blobs (digest, size, created_at, state, touched_ms) \
         VALUES ($1, $2, $3, 0, ",
        now_ms!(),
        ") ON CONFLICT (digest) DO UPDATE SET state = 0, touched_ms = excluded.touched_ms \
         WHERE blobs.state <> 2"
    ))
    .bind(digest)
    .bind(size)
    .bind(t)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if live == 0 {
        return Err(MetaError::Conflict.into());
    }
    sqlx::query(concat!(
        "INSERT INTO repo_blobs (repo_id, digest, created_at, touched_ms) VALUES ($1, $2, $3, ",
        now_ms!(),
        ") ON CONFLICT (repo_id, digest) DO UPDATE SET touched_ms = excluded.touched_ms"
    ))
    .bind(id)
    .bind(digest)
    .bind(t)
    .execute(conn)
    .await?;
    Ok(())
}

/// Which of `wanted` the query (bound with `repo_id` and `wanted`) finds, locking what it
/// finds until the transaction ends; the first one missing, in `wanted`'s order.
async fn first_missing<'a>(
    conn: &mut PgConnection,
    sql: &'static str,
    repo_id: i64,
    wanted: &'a [Digest],
) -> Result<Option<&'a Digest>, sqlx::Error> {
    if wanted.is_empty() {
        return Ok(None);
    }
    let texts: Vec<String> = wanted.iter().map(ToString::to_string).collect();
    let found: Vec<String> = sqlx::query_scalar(sql)
        .bind(repo_id)
        .bind(&texts)
        .fetch_all(conn)
        .await?;
    Ok(wanted
        .iter()
        .zip(&texts)
        .find(|(_, t)| !found.contains(t))
        .map(|(d, _)| d))
}

/// Inside a delete's transaction: refuse if a tag of repository `id` (of manifest `digest`
/// only, when given) is one `keep` protects.
async fn refuse_kept_tags(
    conn: &mut PgConnection,
    id: i64,
    digest: Option<&str>,
    keep: Option<&TagGuard>,
) -> Result<(), TxError> {
    let Some(keep) = keep else {
        return Ok(());
    };
    // Two statements rather than one with `$2 IS NULL OR ...`, whose generic plan could not
    // use the (repo_id, digest) index.
    let tags: Vec<String> = match digest {
        Some(digest) => {
            sqlx::query_scalar(
                "SELECT name FROM tags WHERE repo_id = $1 AND digest = $2 ORDER BY name",
            )
            .bind(id)
            .bind(digest)
            .fetch_all(conn)
            .await?
        }
        None => {
            sqlx::query_scalar("SELECT name FROM tags WHERE repo_id = $1 ORDER BY name")
                .bind(id)
                .fetch_all(conn)
                .await?
        }
    };
    Ok(check_kept(keep, tags.iter().map(String::as_str))?)
}

async fn put_manifest_step(
    conn: &mut PgConnection,
    (m, tags): &(NewManifest, Vec<String>),
) -> Result<(), TxError> {
    let id = ensure_repo(conn, m.repo.as_str()).await?;
    // Check references inside the transaction and lock what was found (FOR KEY SHARE), so a
    // concurrent unlink or delete cannot slip between the check and the commit.
    if let Some(missing) = first_missing(
        conn,
        "SELECT digest FROM repo_blobs WHERE repo_id = $1 AND digest = ANY($2) \
         ORDER BY digest FOR KEY SHARE",
        id,
        &m.blobs,
    )
    .await?
    {
        return Err(MetaError::MissingBlob(missing.clone()).into());
    }
    if let Some(missing) = first_missing(
        conn,
        "SELECT digest FROM manifests WHERE repo_id = $1 AND digest = ANY($2) \
         ORDER BY digest FOR KEY SHARE",
        id,
        &m.manifests,
    )
    .await?
    {
        return Err(MetaError::MissingManifest(missing.clone()).into());
    }
    let digest = m.digest.to_string();
    let t = now();
    let inserted = sqlx::query(concat!(
        "INSERT INTO manifests (repo_id, digest, media_type, artifact_type, subject, \
         annotations, size, content, created_at, touched_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, ",
        now_ms!(),
        ") ON CONFLICT (repo_id, digest) DO NOTHING"
    ))
    .bind(id)
    .bind(&digest)
    .bind(&m.media_type)
    .bind(&m.artifact_type)
    .bind(m.subject.as_ref().map(ToString::to_string))
    .bind(&m.annotations)
    .bind(m.content.len() as i64)
    .bind(&m.content)
    .bind(t)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted > 0 {
        let (targets, kinds): (Vec<String>, Vec<i16>) = m
            .blobs
            .iter()
            .map(|b| (b.to_string(), 0))
            .chain(m.manifests.iter().map(|c| (c.to_string(), 1)))
            .unzip();
        if !targets.is_empty() {
            sqlx::query(
                "INSERT INTO manifest_refs (repo_id, manifest, target, kind) \
                 SELECT $1, $2, target, kind FROM UNNEST($3::TEXT[], $4::SMALLINT[]) \
                 AS r(target, kind) ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(&digest)
            .bind(&targets)
            .bind(&kinds)
            .execute(&mut *conn)
            .await?;
        }
        // The triggers counted it (and the blobs new to the project): judge the project's
        // usage now, so that a refusal rolls all of it back.
        quota::check(conn, m.repo.project()).await?;
    } else {
        // It was already there: keep it there until this transaction ends, or notice that a
        // concurrent delete took it since the insert looked, and start again.
        let kept: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM manifests WHERE repo_id = $1 AND digest = $2 FOR KEY SHARE",
        )
        .bind(id)
        .bind(&digest)
        .fetch_optional(&mut *conn)
        .await?;
        if kept.is_none() {
            return Err(TxError::Again("the manifest was deleted while it was put"));
        }
    }
    if !tags.is_empty() {
        // `tags` is sorted and deduplicated: pushes moving the same tags lock them in the
        // same order, so they queue instead of deadlocking.
        // An immutable tag on another manifest is left alone (and locked), then found.
        sqlx::query(
            "INSERT INTO tags (repo_id, name, digest, updated_at) \
             SELECT $1, name, $3, $4 FROM UNNEST($2::TEXT[]) AS t(name) \
             ON CONFLICT (repo_id, name) DO UPDATE \
             SET digest = excluded.digest, updated_at = excluded.updated_at \
             WHERE tags.digest = excluded.digest OR NOT (tags.name = ANY($5::TEXT[]))",
        )
        .bind(id)
        .bind(tags)
        .bind(&digest)
        .bind(t)
        .bind(&m.pinned_tags)
        .execute(&mut *conn)
        .await?;
        if !m.pinned_tags.is_empty() {
            let moved: Option<String> = sqlx::query_scalar(
                "SELECT name FROM tags WHERE repo_id = $1 AND name = ANY($2::TEXT[]) \
                 AND digest <> $3 ORDER BY name LIMIT 1",
            )
            .bind(id)
            .bind(&m.pinned_tags)
            .bind(&digest)
            .fetch_optional(conn)
            .await?;
            if let Some(tag) = moved {
                return Err(MetaError::TagImmutable(tag).into());
            }
        }
    }
    Ok(())
}

fn stored_manifest(row: Option<PgRow>) -> Result<Option<StoredManifest>, MetaError> {
    row.map(|r| {
        let digest: String = r.try_get(0).map_err(to_meta)?;
        Ok(StoredManifest {
            digest: parse_digest(&digest)?,
            media_type: r.try_get(1).map_err(to_meta)?,
            content: r.try_get(2).map_err(to_meta)?,
        })
    })
    .transpose()
}

/// The columns [`upload_from_row`] reads, in its order, of `uploads u`: the segments come as
/// two arrays, starts and tokens, read in the same statement (so they are those of the
/// offset read with them).
macro_rules! upload_columns {
    () => {
        "u.id, u.\"offset\", u.algorithm, u.hash_state, u.created_at, u.updated_at, \
         ARRAY(SELECT s.start_offset FROM upload_segments s WHERE s.upload_id = u.id \
               ORDER BY s.start_offset), \
         ARRAY(SELECT s.token FROM upload_segments s WHERE s.upload_id = u.id \
               ORDER BY s.start_offset), \
         u.repo"
    };
}

fn upload_from_row(repo: &RepoName, r: &PgRow) -> Result<Upload, sqlx::Error> {
    let algorithm =
        DigestAlgorithm::from_name(r.try_get::<&str, _>(2)?).unwrap_or(DigestAlgorithm::Sha256);
    let starts: Vec<i64> = r.try_get(6)?;
    let tokens: Vec<String> = r.try_get(7)?;
    Ok(Upload {
        id: r.try_get(0)?,
        repo: repo.clone(),
        offset: r.try_get::<i64, _>(1)? as u64,
        algorithm,
        hash_state: r.try_get(3)?,
        segments: starts
            .into_iter()
            .zip(tokens)
            .map(|(start, token)| UploadSegment {
                start: start as u64,
                token,
            })
            .collect(),
        created_at: r.try_get(4)?,
        updated_at: r.try_get(5)?,
    })
}

/// A count as PostgreSQL's `INTEGER`, saturating.
fn sql_int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// A stored count (never negative) as `u32`.
fn count(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

/// `job`'s columns for an insert: kind, payload, dedupe key, max attempts, and its run-at
/// time as an absolute time or a delay from the database's now.
type JobRow = (String, String, Option<String>, i32, Option<i64>, i64);

fn job_row(job: &NewJob) -> JobRow {
    let (at, delay) = match job.run_at {
        RunAt::Now => (None, 0),
        RunAt::After(d) => (None, duration_ms(d)),
        RunAt::At(t) => (Some(epoch_ms(t)), 0),
    };
    (
        job.kind.as_str().to_owned(),
        job.payload.clone(),
        job.dedupe_key.clone(),
        sql_int(job.max_attempts.max(1)),
        at,
        delay,
    )
}

async fn insert_job(conn: &mut PgConnection, job: &JobRow) -> Result<Option<JobId>, sqlx::Error> {
    let (kind, payload, dedupe_key, max_attempts, at, delay) = job;
    let id: Option<i64> = sqlx::query_scalar(concat!(
        "INSERT INTO jobs (kind, state, payload, dedupe_key, attempts, max_attempts, run_at_ms, ",
        "created_at_ms, updated_at_ms) VALUES ($1, 'queued', $2, $3, 0, $4, COALESCE($5, ",
        now_ms!(),
        " + $6), ",
        now_ms!(),
        ", ",
        now_ms!(),
        ") ON CONFLICT DO NOTHING RETURNING id"
    ))
    .bind(kind)
    .bind(payload)
    .bind(dedupe_key)
    .bind(max_attempts)
    .bind(at)
    .bind(delay)
    .fetch_optional(conn)
    .await?;
    Ok(id.map(JobId))
}

/// The arguments of a claim: holder, kinds, limit, lease in milliseconds.
type ClaimArgs = (String, Vec<String>, i64, i64);

async fn claim_step(
    conn: &mut PgConnection,
    (holder, kinds, limit, lease_ms): &ClaimArgs,
) -> Result<Vec<ClaimedJob>, TxError> {
    // An expired job that has used all its attempts dies instead of running again.
    sqlx::query(concat!(
        "UPDATE jobs SET state = 'dead', holder = NULL, lease_until_ms = NULL, ",
        "finished_at_ms = ",
        now_ms!(),
        ", updated_at_ms = ",
        now_ms!(),
        ", last_error = 'the lease of its last attempt expired' ",
        "FROM (SELECT id FROM jobs WHERE kind = ANY($1) AND state = 'running' ",
        "AND lease_until_ms < ",
        now_ms!(),
        " AND attempts >= max_attempts FOR UPDATE SKIP LOCKED) AS expired ",
        "WHERE jobs.id = expired.id"
    ))
    .bind(kinds)
    .execute(&mut *conn)
    .await?;
    // Rows another claimer has locked are skipped, not waited for: claimers never block each
    // other and never take the same job.
    let rows = sqlx::query(concat!(
        "UPDATE jobs SET state = 'running', holder = $2, lease_until_ms = ",
        now_ms!(),
        " + $3, attempts = jobs.attempts + 1, updated_at_ms = ",
        now_ms!(),
        " FROM (SELECT id FROM jobs WHERE kind = ANY($1) AND ((state = 'queued' AND run_at_ms <= ",
        now_ms!(),
        ") OR (state = 'running' AND lease_until_ms < ",
        now_ms!(),
        " AND attempts < max_attempts)) ORDER BY run_at_ms, id LIMIT $4 ",
        "FOR UPDATE SKIP LOCKED) AS due WHERE jobs.id = due.id ",
        "RETURNING jobs.id, jobs.kind, jobs.payload, jobs.dedupe_key, jobs.attempts, ",
        "jobs.max_attempts, jobs.last_error"
    ))
    .bind(kinds)
    .bind(holder)
    .bind(lease_ms)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id: i64 = r.try_get(0)?;
        let kind: String = r.try_get(1)?;
        let kind = kind
            .parse::<JobKind>()
            .map_err(|e| MetaError::Backend(format!("job {id}: {e}")))?;
        out.push(ClaimedJob {
            lease: JobLease {
                id: JobId(id),
                holder: LeaseHolder::new(holder.clone()),
                attempt: count(r.try_get(4)?),
            },
            kind,
            payload: r.try_get(2)?,
            dedupe_key: r.try_get(3)?,
            max_attempts: count(r.try_get(5)?),
            last_error: r.try_get(6)?,
        });
    }
    out.sort_by_key(|j| j.lease.id);
    Ok(out)
}

/// A lease's row: id, holder, attempt.
type LeaseArgs = (i64, String, i32);

fn lease_args(lease: &JobLease) -> LeaseArgs {
    (
        lease.id.0,
        lease.holder.as_str().to_owned(),
        sql_int(lease.attempt),
    )
}

async fn finish_step(
    conn: &mut PgConnection,
    (lease, next): &(LeaseArgs, Option<JobRow>),
) -> Result<bool, TxError> {
    let done = sqlx::query(concat!(
        "UPDATE jobs SET state = 'done', holder = NULL, lease_until_ms = NULL, finished_at_ms = ",
        now_ms!(),
        ", updated_at_ms = ",
        now_ms!(),
        " WHERE id = $1 AND holder = $2 AND attempts = $3 AND state = 'running'"
    ))
    .bind(lease.0)
    .bind(&lease.1)
    .bind(lease.2)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if done == 0 {
        return Ok(false);
    }
    // After the update: the finished job no longer holds its dedupe key.
    if let Some(next) = next {
        insert_job(conn, next).await?;
    }
    Ok(true)
}

fn job_from_row(r: &PgRow) -> Result<Job, MetaError> {
    let id: i64 = r.try_get(0).map_err(to_meta)?;
    let kind: String = r.try_get(1).map_err(to_meta)?;
    let state: String = r.try_get(2).map_err(to_meta)?;
    let (Ok(kind), Some(state)) = (kind.parse::<JobKind>(), JobState::from_name(&state)) else {
        return Err(MetaError::Backend(format!(
            "job {id} has kind {kind:?} and state {state:?}"
        )));
    };
    Ok(Job {
        id: JobId(id),
        kind,
        state,
        payload: r.try_get(3).map_err(to_meta)?,
        dedupe_key: r.try_get(4).map_err(to_meta)?,
        attempts: count(r.try_get(5).map_err(to_meta)?),
        max_attempts: count(r.try_get(6).map_err(to_meta)?),
        run_at_ms: r.try_get(7).map_err(to_meta)?,
        holder: r
            .try_get::<Option<String>, _>(8)
            .map_err(to_meta)?
            .map(LeaseHolder::new),
        lease_until_ms: r.try_get(9).map_err(to_meta)?,
        last_error: r.try_get(10).map_err(to_meta)?,
        created_at_ms: r.try_get(11).map_err(to_meta)?,
        finished_at_ms: r.try_get(12).map_err(to_meta)?,
    })
}

#[async_trait]
impl MetaStore for PgMeta {
    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<(), MetaError> {
        let arg = (repo, digest.to_string(), size as i64);
        self.write(Scope::Transaction, &arg, |c, a| {
            Box::pin(link_blob_step(c, a))
        })
        .await
    }

    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, MetaError> {
        let size: Option<i64> = sqlx::query_scalar(
            "SELECT b.size FROM repositories r \
             JOIN repo_blobs rb ON rb.repo_id = r.id \
             JOIN blobs b ON b.digest = rb.digest \
             WHERE r.name = $1 AND rb.digest = $2 AND b.state = 0",
        )
        .bind(repo.as_str())
        .bind(digest.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(to_meta)?;
        Ok(size.map(|n| n as u64))
    }

    async fn blob(&self, digest: &Digest) -> Result<Option<u64>, MetaError> {
        let size: Option<i64> =
            sqlx::query_scalar("SELECT size FROM blobs WHERE digest = $1 AND state = 0")
                .bind(digest.to_string())
                .fetch_optional(&self.pool)
                .await
                .map_err(to_meta)?;
        Ok(size.map(|n| n as u64))
    }

    async fn repos_with_blob(
        &self,
        digest: &Digest,
        limit: usize,
    ) -> Result<Vec<RepoName>, MetaError> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT r.name FROM repo_blobs rb JOIN repositories r ON r.id = rb.repo_id \
             WHERE rb.digest = $1 ORDER BY r.name LIMIT $2",
        )
        .bind(digest.to_string())
        .bind(sql_limit(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(to_meta)?;
        Ok(names.into_iter().filter_map(|n| n.parse().ok()).collect())
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError> {
        let arg = (repo.as_str(), digest.to_string());
        self.write(Scope::Statement, &arg, |c, (repo, digest)| {
            Box::pin(async move {
                let n = sqlx::query(
                    "DELETE FROM repo_blobs WHERE digest = $2 AND repo_id = \
                     (SELECT id FROM repositories WHERE name = $1)",
                )
                .bind(*repo)
                .bind(digest)
                .execute(c)
                .await?
                .rows_affected();
                Ok(n > 0)
            })
        })
        .await
    }

    async fn put_manifest(&self, manifest: NewManifest, tags: &[Tag]) -> Result<(), MetaError> {
        let mut tags: Vec<String> = tags.iter().map(|t| t.as_str().to_owned()).collect();
        tags.sort_unstable();
        tags.dedup();
        let arg = (manifest, tags);
        self.write(Scope::Transaction, &arg, |c, a| {
            Box::pin(put_manifest_step(c, a))
        })
        .await
    }

    async fn manifest_by_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<StoredManifest>, MetaError> {
        let row = sqlx::query(
            "SELECT m.digest, m.media_type, m.content FROM repositories r \
             JOIN tags t ON t.repo_id = r.id \
             JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest \
             WHERE r.name = $1 AND t.name = $2",
        )
        .bind(repo.as_str())
        .bind(tag.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(to_meta)?;
        stored_manifest(row)
    }

    async fn manifest_by_digest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<StoredManifest>, MetaError> {
        let row = sqlx::query(
            "SELECT m.digest, m.media_type, m.content FROM repositories r \
             JOIN manifests m ON m.repo_id = r.id WHERE r.name = $1 AND m.digest = $2",
        )
        .bind(repo.as_str())
        .bind(digest.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(to_meta)?;
        stored_manifest(row)
    }

    async fn delete_manifest_keeping(
        &self,
        repo: &RepoName,
        digest: &Digest,
        keep: Option<TagGuard>,
    ) -> Result<bool, MetaError> {
        let arg = (repo.as_str(), digest.to_string(), keep);
        self.write(Scope::Transaction, &arg, |c, (repo, digest, keep)| {
            Box::pin(async move {
                // The row lock conflicts with the key-share lock a tag insert or move takes on
                // the manifest it names: a push tagging this manifest has either committed
                // (and its tag is read below) or waits until this delete is over.
                let id: Option<i64> = sqlx::query_scalar(
                    "SELECT m.repo_id FROM manifests m JOIN repositories r ON r.id = m.repo_id \
                     WHERE r.name = $1 AND m.digest = $2 FOR UPDATE OF m",
                )
                .bind(*repo)
                .bind(digest)
                .fetch_optional(&mut *c)
                .await?;
                let Some(id) = id else {
                    return Ok(false);
                };
                refuse_kept_tags(c, id, Some(digest), keep.as_ref()).await?;
                // Its tags and references go with it through ON DELETE CASCADE.
                sqlx::query("DELETE FROM manifests WHERE repo_id = $1 AND digest = $2")
                    .bind(id)
                    .bind(digest)
                    .execute(&mut *c)
                    .await?;
                Ok(true)
            })
        })
        .await
    }

    async fn delete_repository_keeping(
        &self,
        repo: &RepoName,
        keep: Option<TagGuard>,
    ) -> Result<bool, MetaError> {
        let arg = (repo.as_str(), keep);
        self.write(Scope::Transaction, &arg, |c, (repo, keep)| {
            Box::pin(async move {
                // Every manifest put and blob link takes a key-share lock on this row
                // (`ensure_repo`), so the tags read below are all it holds until the commit.
                let id: Option<i64> =
                    sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1 FOR UPDATE")
                        .bind(*repo)
                        .fetch_optional(&mut *c)
                        .await?;
                let Some(id) = id else {
                    return Ok(false);
                };
                refuse_kept_tags(c, id, None, keep.as_ref()).await?;
                // Tags and references go with the manifests (ON DELETE CASCADE).
                for sql in [
                    "DELETE FROM manifests WHERE repo_id = $1",
                    "DELETE FROM repo_blobs WHERE repo_id = $1",
                    "DELETE FROM repositories WHERE id = $1",
                ] {
                    sqlx::query(sql).bind(id).execute(&mut *c).await?;
                }
                Ok(true)
            })
        })
        .await
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, MetaError> {
        let arg = (repo.as_str(), tag.as_str());
        self.write(Scope::Statement, &arg, |c, (repo, tag)| {
            Box::pin(async move {
                let n = sqlx::query(
                    "DELETE FROM tags WHERE name = $2 AND repo_id = \
                     (SELECT id FROM repositories WHERE name = $1)",
                )
                .bind(*repo)
                .bind(*tag)
                .execute(c)
                .await?
                .rows_affected();
                Ok(n > 0)
            })
        })
        .await
    }

    async fn list_tags(
        &self,
        repo: &RepoName,
        page: Page<'_>,
    ) -> Result<Option<Vec<String>>, MetaError> {
        // One statement (one snapshot): a row per tag of the page, or a single row with a
        // NULL tag if the repository has none; no row if the repository does not exist.
        let rows: Vec<Option<String>> = sqlx::query_scalar(
            "SELECT t.name FROM repositories r \
             LEFT JOIN LATERAL (SELECT name FROM tags \
                                WHERE repo_id = r.id AND name > $2 \
                                ORDER BY name LIMIT $3) t ON TRUE \
             WHERE r.name = $1 ORDER BY t.name",
        )
        .bind(repo.as_str())
        .bind(page.last.unwrap_or(""))
        .bind(sql_limit(page.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(to_meta)?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(rows.into_iter().flatten().collect()))
    }

    async fn list_repositories(&self, page: Page<'_>) -> Result<Vec<String>, MetaError> {
        sqlx::query_scalar("SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2")
            .bind(page.last.unwrap_or(""))
            .bind(sql_limit(page.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(to_meta)
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<Referrer>, MetaError> {
        let rows = sqlx::query(
            "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations \
             FROM repositories r JOIN manifests m ON m.repo_id = r.id \
             WHERE r.name = $1 AND m.subject = $2 ORDER BY m.digest",
        )
        .bind(repo.as_str())
        .bind(subject.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(to_meta)?;
        rows.iter()
            .map(|r| {
                let digest: String = r.try_get(0).map_err(to_meta)?;
                Ok(Referrer {
                    digest: parse_digest(&digest)?,
                    media_type: r.try_get(1).map_err(to_meta)?,
                    size: r.try_get::<i64, _>(2).map_err(to_meta)? as u64,
                    artifact_type: r.try_get(3).map_err(to_meta)?,
                    annotations: r.try_get(4).map_err(to_meta)?,
                })
            })
            .collect()
    }

    async fn create_upload(&self, upload: &Upload) -> Result<(), MetaError> {
        self.write(Scope::Statement, upload, |c, u| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO uploads (id, repo, \"offset\", algorithm, hash_state, \
                     created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&u.id)
                .bind(u.repo.as_str())
                .bind(u.offset as i64)
                .bind(u.algorithm.as_str())
                .bind(&u.hash_state)
                .bind(u.created_at)
                .bind(u.updated_at)
                .execute(c)
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn upload(&self, repo: &RepoName, id: &str) -> Result<Option<Upload>, MetaError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            upload_columns!(),
            " FROM uploads u WHERE u.id = $1 AND u.repo = $2"
        ))
        .bind(id)
        .bind(repo.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(to_meta)?;
        row.map(|r| upload_from_row(repo, &r))
            .transpose()
            .map_err(to_meta)
    }

    async fn advance_upload(
        &self,
        upload: &Upload,
        segment: &UploadSegment,
        fence: Option<&LeaseHolder>,
    ) -> Result<(), MetaError> {
        let arg = (
            upload,
            segment.start as i64,
            segment.token.as_str(),
            fence.map(LeaseHolder::as_str),
        );
        // A compare-and-set on the offset (and the lease): whoever advanced it first wins.
        // One statement records the segment with it, only if the row moved.
        self.write(Scope::Statement, &arg, |c, (u, from, token, fence)| {
            Box::pin(async move {
                let n = sqlx::query(
                    "WITH moved AS (UPDATE uploads SET \"offset\" = $2, algorithm = $3, \
                     hash_state = $4, updated_at = $5 WHERE id = $1 AND \"offset\" = $6 \
                     AND ($7::TEXT IS NULL OR lease_holder = $7) RETURNING id) \
                     INSERT INTO upload_segments (upload_id, start_offset, token) \
                     SELECT id, $6, $8 FROM moved",
                )
                .bind(&u.id)
                .bind(u.offset as i64)
                .bind(u.algorithm.as_str())
                .bind(&u.hash_state)
                .bind(now())
                .bind(*from)
                .bind(*fence)
                .bind(*token)
                .execute(c)
                .await?
                .rows_affected();
                if n == 1 {
                    Ok(())
                } else {
                    Err(MetaError::Conflict.into())
                }
            })
        })
        .await
    }

    async fn delete_upload(&self, id: &str) -> Result<(), MetaError> {
        self.write(Scope::Statement, id, |c, id| {
            Box::pin(async move {
                // Its segments go with it (ON DELETE CASCADE).
                sqlx::query("DELETE FROM uploads WHERE id = $1")
                    .bind(id)
                    .execute(c)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn stale_uploads(
        &self,
        idle_since: i64,
        page: Page<'_>,
    ) -> Result<Vec<Upload>, MetaError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            upload_columns!(),
            " FROM uploads u WHERE u.updated_at < $1 AND u.id > $2 ORDER BY u.id LIMIT $3"
        ))
        .bind(idle_since)
        .bind(page.last.unwrap_or(""))
        .bind(sql_limit(page.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(to_meta)?;
        rows.iter()
            .map(|r| {
                let repo: &str = r.try_get(8).map_err(to_meta)?;
                let repo: RepoName = repo
                    .parse()
                    .map_err(|e| MetaError::Backend(format!("stored repository {repo:?}: {e}")))?;
                upload_from_row(&repo, r).map_err(to_meta)
            })
            .collect()
    }

    async fn expire_upload(
        &self,
        id: &str,
        idle_since: i64,
        holder: Option<&LeaseHolder>,
    ) -> Result<bool, MetaError> {
        let arg = (id, idle_since, holder.map(LeaseHolder::as_str));
        self.write(Scope::Statement, &arg, |c, (id, idle_since, holder)| {
            Box::pin(async move {
                let n = sqlx::query(concat!(
                    "DELETE FROM uploads WHERE id = $1 AND updated_at < $2 AND ",
                    "(lease_holder IS NULL OR lease_until_ms < ",
                    now_ms!(),
                    " OR lease_holder = $3)"
                ))
                .bind(*id)
                .bind(*idle_since)
                .bind(*holder)
                .execute(c)
                .await?
                .rows_affected();
                Ok(n > 0)
            })
        })
        .await
    }

    async fn lease_upload(
        &self,
        id: &str,
        holder: &LeaseHolder,
        ttl: Duration,
    ) -> Result<UploadLease, MetaError> {
        let arg = (id, holder.as_str(), duration_ms(ttl));
        self.write(Scope::Statement, &arg, |c, (id, holder, ttl)| {
            Box::pin(async move {
                // One statement: both parts see the same snapshot, and the update re-checks
                // its condition if a concurrent one changed the row first.
                let (exists, taken): (bool, bool) = sqlx::query_as(concat!(
                    "WITH taken AS (UPDATE uploads SET lease_holder = $2, lease_until_ms = ",
                    now_ms!(),
                    " + $3 WHERE id = $1 AND (lease_holder IS NULL OR lease_holder = $2 ",
                    "OR lease_until_ms < ",
                    now_ms!(),
                    ") RETURNING 1) SELECT EXISTS (SELECT 1 FROM uploads WHERE id = $1), ",
                    "EXISTS (SELECT 1 FROM taken)"
                ))
                .bind(*id)
                .bind(*holder)
                .bind(*ttl)
                .fetch_one(c)
                .await?;
                Ok(match (taken, exists) {
                    (true, _) => UploadLease::Granted,
                    (false, true) => UploadLease::Held,
                    (false, false) => UploadLease::Unknown,
                })
            })
        })
        .await
    }

    async fn release_upload(&self, id: &str, holder: &LeaseHolder) -> Result<(), MetaError> {
        let arg = (id, holder.as_str());
        self.write(Scope::Statement, &arg, |c, (id, holder)| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE uploads SET lease_holder = NULL, lease_until_ms = NULL \
                     WHERE id = $1 AND lease_holder = $2",
                )
                .bind(*id)
                .bind(*holder)
                .execute(c)
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn enqueue_job(&self, job: &NewJob) -> Result<Option<JobId>, MetaError> {
        let row = job_row(job);
        self.write(Scope::Statement, &row, |c, row| {
            Box::pin(async move { Ok(insert_job(c, row).await?) })
        })
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
        let arg: ClaimArgs = (
            holder.as_str().to_owned(),
            kinds.iter().map(|k| k.as_str().to_owned()).collect(),
            sql_limit(limit),
            duration_ms(lease),
        );
        self.write(Scope::Transaction, &arg, |c, a| Box::pin(claim_step(c, a)))
            .await
    }

    async fn extend_job_lease(&self, lease: &JobLease, ttl: Duration) -> Result<bool, MetaError> {
        let arg = (lease_args(lease), duration_ms(ttl));
        self.write(Scope::Statement, &arg, |c, ((id, holder, attempt), ttl)| {
            Box::pin(async move {
                let n = sqlx::query(concat!(
                    "UPDATE jobs SET lease_until_ms = ",
                    now_ms!(),
                    " + $4, updated_at_ms = ",
                    now_ms!(),
                    " WHERE id = $1 AND holder = $2 AND attempts = $3 AND state = 'running'"
                ))
                .bind(*id)
                .bind(holder)
                .bind(*attempt)
                .bind(*ttl)
                .execute(c)
                .await?
                .rows_affected();
                Ok(n > 0)
            })
        })
        .await
    }

    async fn finish_job(&self, lease: &JobLease, next: Option<&NewJob>) -> Result<bool, MetaError> {
        let arg = (lease_args(lease), next.map(job_row));
        self.write(Scope::Transaction, &arg, |c, a| Box::pin(finish_step(c, a)))
            .await
    }

    async fn fail_job(
        &self,
        lease: &JobLease,
        error: &str,
        retry: Retry,
    ) -> Result<Option<JobState>, MetaError> {
        let (give_up, delay) = match retry {
            Retry::After(d) => (false, duration_ms(d)),
            Retry::Never => (true, 0),
        };
        let arg = (lease_args(lease), error, give_up, delay);
        self.write(
            Scope::Statement,
            &arg,
            |c, ((id, holder, attempt), error, give_up, delay)| {
                Box::pin(async move {
                    let state: Option<String> = sqlx::query_scalar(concat!(
                        "UPDATE jobs SET ",
                        "state = CASE WHEN $5 OR attempts >= max_attempts THEN 'dead' ",
                        "ELSE 'queued' END, ",
                        "run_at_ms = CASE WHEN $5 OR attempts >= max_attempts THEN run_at_ms ",
                        "ELSE ",
                        now_ms!(),
                        " + $6 END, ",
                        "finished_at_ms = CASE WHEN $5 OR attempts >= max_attempts THEN ",
                        now_ms!(),
                        " END, ",
                        "holder = NULL, lease_until_ms = NULL, last_error = $4, updated_at_ms = ",
                        now_ms!(),
                        " WHERE id = $1 AND holder = $2 AND attempts = $3 AND state = 'running' ",
                        "RETURNING state"
                    ))
                    .bind(*id)
                    .bind(holder)
                    .bind(*attempt)
                    .bind(*error)
                    .bind(*give_up)
                    .bind(*delay)
                    .fetch_optional(c)
                    .await?;
                    Ok(state.as_deref().and_then(JobState::from_name))
                })
            },
        )
        .await
    }

    async fn list_jobs(&self, filter: JobFilter<'_>) -> Result<Vec<Job>, MetaError> {
        let rows = sqlx::query(
            "SELECT id, kind, state, payload, dedupe_key, attempts, max_attempts, run_at_ms, \
             holder, lease_until_ms, last_error, created_at_ms, finished_at_ms FROM jobs \
             WHERE ($1::TEXT IS NULL OR kind = $1) AND ($2::TEXT IS NULL OR state = $2) \
             AND id > $3 ORDER BY id LIMIT $4",
        )
        .bind(filter.kind.map(JobKind::as_str))
        .bind(filter.state.map(JobState::as_str))
        .bind(filter.after.map_or(i64::MIN, |j| j.0))
        .bind(sql_limit(filter.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(to_meta)?;
        rows.iter().map(job_from_row).collect()
    }

    async fn prune_jobs(&self, age: Duration) -> Result<u64, MetaError> {
        let age = duration_ms(age);
        self.write(Scope::Statement, &age, |c, age| {
            Box::pin(async move {
                let n = sqlx::query(concat!(
                    "DELETE FROM jobs WHERE state IN ('done', 'dead') AND finished_at_ms < ",
                    now_ms!(),
                    " - $1"
                ))
                .bind(*age)
                .execute(c)
                .await?
                .rows_affected();
                Ok(n)
            })
        })
        .await
    }

    async fn reserve_blob(&self, digest: &Digest, size: u64) -> Result<bool, MetaError> {
        let arg = (digest.to_string(), size as i64);
        self.write(Scope::Statement, &arg, |c, a| Box::pin(gc::reserve(c, a)))
            .await
    }

    async fn gc_manifests(&self, scan: GcScan<'_>) -> Result<GcBatch, MetaError> {
        let arg = gc::OwnedScan::from(scan);
        self.write(Scope::Transaction, &arg, |c, a| {
            Box::pin(gc::manifests(c, a))
        })
        .await
    }

    async fn gc_links(&self, scan: GcScan<'_>) -> Result<GcBatch, MetaError> {
        let arg = gc::OwnedScan::from(scan);
        self.write(Scope::Transaction, &arg, |c, a| Box::pin(gc::links(c, a)))
            .await
    }

    async fn gc_mark_blobs(&self, scan: GcScan<'_>) -> Result<GcBatch, MetaError> {
        let arg = gc::OwnedScan::from(scan);
        self.write(Scope::Transaction, &arg, |c, a| {
            Box::pin(gc::mark_blobs(c, a))
        })
        .await
    }

    async fn gc_marked_blobs(&self, limit: usize) -> Result<Vec<GcItem>, MetaError> {
        gc::marked_blobs(&self.pool, limit).await
    }

    async fn gc_forget_blobs(&self, digests: &[Digest]) -> Result<u64, MetaError> {
        let arg: Vec<String> = digests.iter().map(ToString::to_string).collect();
        self.write(Scope::Statement, &arg, |c, a| {
            Box::pin(gc::forget_blobs(c, a))
        })
        .await
    }

    async fn gc_known_blobs(&self, digests: &[Digest]) -> Result<Vec<Digest>, MetaError> {
        let texts: Vec<String> = digests.iter().map(ToString::to_string).collect();
        gc::known_blobs(&self.pool, &texts)
            .await?
            .iter()
            .map(|d| parse_digest(d))
            .collect()
    }

    async fn gc_claim_orphan(&self, digest: &Digest, size: u64) -> Result<bool, MetaError> {
        let arg = (digest.to_string(), size as i64);
        self.write(Scope::Statement, &arg, |c, a| {
            Box::pin(gc::claim_orphan(c, a))
        })
        .await
    }

    async fn create_gc_run(&self, run: &GcRun) -> Result<GcRun, MetaError> {
        self.write(Scope::Statement, run, |c, r| Box::pin(gc::create_run(c, r)))
            .await
    }

    async fn save_gc_run(&self, run: &GcRun) -> Result<(), MetaError> {
        self.write(Scope::Statement, run, |c, r| Box::pin(gc::save_run(c, r)))
            .await
    }

    async fn gc_run(&self, id: i64) -> Result<Option<GcRun>, MetaError> {
        gc::get_run(&self.pool, id).await
    }

    async fn list_gc_runs(&self, paging: Paging) -> Result<Listing<GcRun>, MetaError> {
        self.listing(
            crate::gc::GC_RUN_COLUMNS,
            "gc_runs g",
            "g.id DESC",
            sqlx::postgres::PgArguments::default(),
            paging,
            crate::gc::gc_run_from_row,
        )
        .await
    }

    async fn quota(&self, project: &str) -> Result<crate::Quota, MetaError> {
        quota::quota(&self.pool, project).await
    }

    async fn set_quota(&self, project: &str, limits: crate::QuotaLimits) -> Result<(), MetaError> {
        let arg = (
            project,
            crate::quota::signed_limit(limits.storage),
            crate::quota::signed_limit(limits.count),
        );
        self.write(Scope::Statement, &arg, |c, (project, bytes, count)| {
            Box::pin(async move {
                sqlx::query(concat!(
                    "INSERT INTO project_usage (project, hard_bytes, hard_count, created_ms, \
                     updated_ms) VALUES ($1, $2, $3, ",
                    now_ms!(),
                    ", ",
                    now_ms!(),
                    ") ON CONFLICT (project) DO UPDATE SET hard_bytes = excluded.hard_bytes, \
                     hard_count = excluded.hard_count, updated_ms = excluded.updated_ms"
                ))
                .bind(*project)
                .bind(*bytes)
                .bind(*count)
                .execute(c)
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn list_quotas(
        &self,
        project: Option<crate::ProjectId>,
        paging: Paging,
    ) -> Result<Listing<crate::Quota>, MetaError> {
        use sqlx::Arguments;
        let mut args = sqlx::postgres::PgArguments::default();
        let from = match project {
            Some(id) => {
                args.add(id)
                    .map_err(|e| MetaError::Backend(format!("binding a parameter: {e}")))?;
                format!("{} WHERE q.id = $1", crate::quota::QUOTA_SOURCE)
            }
            None => crate::quota::QUOTA_SOURCE.to_owned(),
        };
        self.listing(
            crate::quota::QUOTA_COLUMNS,
            &from,
            "q.id",
            args,
            paging,
            crate::quota::quota_from_row,
        )
        .await
    }

    async fn immutable_rules(&self, project: &str) -> Result<Vec<crate::ImmutableRule>, MetaError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM immutable_rules r JOIN projects p ON p.id = r.project_id \
             WHERE p.name = $1 ORDER BY r.priority, r.id",
            crate::policy::RULE_COLUMNS
        )))
        .bind(project)
        .fetch_all(&self.pool)
        .await
        .map_err(to_meta)?;
        rows.iter().map(crate::policy::rule_from_row).collect()
    }

    async fn create_immutable_rule(&self, rule: &crate::ImmutableRule) -> Result<i64, MetaError> {
        self.write(Scope::Statement, rule, |c, r| {
            Box::pin(async move {
                let id: Option<i64> = sqlx::query_scalar(concat!(
                    "INSERT INTO immutable_rules (project_id, disabled, priority, selectors, \
                     created_ms, updated_ms) SELECT id, $2, $3, $4, ",
                    now_ms!(),
                    ", ",
                    now_ms!(),
                    " FROM projects WHERE id = $1 RETURNING id"
                ))
                .bind(r.project_id)
                .bind(r.disabled)
                .bind(r.priority)
                .bind(&r.selectors)
                .fetch_optional(c)
                .await?;
                id.ok_or_else(|| MetaError::NotFound(format!("project {}", r.project_id)).into())
            })
        })
        .await
    }

    async fn update_immutable_rule(&self, rule: &crate::ImmutableRule) -> Result<bool, MetaError> {
        self.write(Scope::Statement, rule, |c, r| {
            Box::pin(async move {
                let n = sqlx::query(concat!(
                    "UPDATE immutable_rules SET disabled = $3, priority = $4, selectors = $5, \
                     updated_ms = ",
                    now_ms!(),
                    " WHERE id = $1 AND project_id = $2"
                ))
                .bind(r.id)
                .bind(r.project_id)
                .bind(r.disabled)
                .bind(r.priority)
                .bind(&r.selectors)
                .execute(c)
                .await?;
                Ok(n.rows_affected() > 0)
            })
        })
        .await
    }

    async fn delete_immutable_rule(
        &self,
        project_id: crate::ProjectId,
        id: i64,
    ) -> Result<bool, MetaError> {
        self.write(
            Scope::Statement,
            &(project_id, id),
            |c, (project_id, id)| {
                Box::pin(async move {
                    let n = sqlx::query(
                        "DELETE FROM immutable_rules WHERE id = $1 AND project_id = $2",
                    )
                    .bind(*id)
                    .bind(*project_id)
                    .execute(c)
                    .await?;
                    Ok(n.rows_affected() > 0)
                })
            },
        )
        .await
    }

    async fn tags_of(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<String>, MetaError> {
        sqlx::query_scalar(
            "SELECT t.name FROM tags t JOIN repositories r ON r.id = t.repo_id \
             WHERE r.name = $1 AND t.digest = $2 ORDER BY t.name",
        )
        .bind(repo.as_str())
        .bind(digest.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(to_meta)
    }

    async fn scrub_blobs(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<ScrubBlob>, MetaError> {
        scrub::blobs(&self.pool, after.map(ToString::to_string), limit).await
    }

    async fn scrub_manifests(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ScrubManifests, MetaError> {
        scrub::manifests(&self.pool, after, limit).await
    }

    async fn scrub_missing_refs(
        &self,
        repo: &RepoName,
        blobs: &[Digest],
        manifests: &[Digest],
    ) -> Result<MissingRefs, MetaError> {
        scrub::missing_refs(&self.pool, repo, blobs, manifests).await
    }

    async fn scrub_withdraw_blob(&self, digest: &Digest) -> Result<bool, MetaError> {
        let arg = digest.to_string();
        self.write(Scope::Transaction, &arg, |c, a| {
            Box::pin(scrub::withdraw_blob(c, a))
        })
        .await
    }

    async fn create_scrub_run(&self, run: &ScrubRun) -> Result<ScrubRun, MetaError> {
        self.write(Scope::Statement, run, |c, r| {
            Box::pin(scrub::create_run(c, r))
        })
        .await
    }

    async fn save_scrub_run(&self, run: &ScrubRun) -> Result<(), MetaError> {
        self.write(Scope::Statement, run, |c, r| {
            Box::pin(scrub::save_run(c, r))
        })
        .await
    }

    async fn scrub_run(&self, id: i64) -> Result<Option<ScrubRun>, MetaError> {
        scrub::get_run(&self.pool, id).await
    }

    async fn list_scrub_runs(&self, paging: Paging) -> Result<Listing<ScrubRun>, MetaError> {
        self.listing(
            crate::scrub::SCRUB_RUN_COLUMNS,
            "scrub_runs s",
            "s.id DESC",
            sqlx::postgres::PgArguments::default(),
            paging,
            crate::scrub::scrub_run_from_row,
        )
        .await
    }

    async fn add_scrub_findings(&self, findings: &[ScrubFinding]) -> Result<(), MetaError> {
        if findings.is_empty() {
            return Ok(());
        }
        self.write(Scope::Transaction, findings, |c, f| {
            Box::pin(scrub::add_findings(c, f))
        })
        .await
    }

    async fn scrub_findings(
        &self,
        run_id: i64,
        paging: Paging,
    ) -> Result<Listing<ScrubFinding>, MetaError> {
        let mut args = sqlx::postgres::PgArguments::default();
        sqlx::Arguments::add(&mut args, run_id)
            .map_err(|e| MetaError::Backend(format!("binding a parameter: {e}")))?;
        self.listing(
            crate::scrub::SCRUB_FINDING_COLUMNS,
            "scrub_findings f WHERE f.run_id = $1",
            "f.id",
            args,
            paging,
            crate::scrub::scrub_finding_from_row,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    //! These run against a real PostgreSQL server named by `BERTH_TEST_DATABASE_URL` (a role
    //! with CREATEDB; `eval "$(scripts/pg-start.sh)"` starts one). Each test makes its own
    //! database and drops it afterwards, so they run in parallel. Without the variable they
    //! are skipped, unless `BERTH_REQUIRE_BACKENDS=1` makes that a failure.

    use std::future::Future;
    use std::panic::AssertUnwindSafe;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    use futures::FutureExt;
    use sqlx::{AssertSqlSafe, Connection};

    use super::*;

    /// The server URL, or `None` (after saying so) if the tests should be skipped.
    fn server_url(test: &str) -> Option<String> {
        match std::env::var("BERTH_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => Some(url),
            _ if std::env::var("BERTH_REQUIRE_BACKENDS").as_deref() == Ok("1") => panic!(
                "BERTH_REQUIRE_BACKENDS=1 but BERTH_TEST_DATABASE_URL is not set: start \
                 PostgreSQL with `eval \"$(scripts/pg-start.sh)\"` (or point the variable at a \
                 role with CREATEDB)"
            ),
            _ => {
                println!("skipped {test}: BERTH_TEST_DATABASE_URL is not set");
                None
            }
        }
    }

    /// A name no other test (in this process or another) is using.
    fn unique_name() -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut h = RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        format!("berth_test_{:016x}", h.finish())
    }

    /// `url` with its database name replaced by `database`.
    fn with_database(url: &str, database: &str) -> String {
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (url, None),
        };
        let authority = base.find("://").map_or(0, |i| i + 3);
        let base = match base[authority..].find('/') {
            Some(i) => &base[..authority + i],
            None => base,
        };
        match query {
            Some(q) => format!("{base}/{database}?{q}"),
            None => format!("{base}/{database}"),
        }
    }

    /// Run `test` with the URL of a fresh, empty database, dropped afterwards even if the
    /// test panics.
    async fn with_fresh_database<F, Fut>(name: &str, test: F)
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = ()>,
    {
        with_fresh_database_made(name, "", test).await;
    }

    /// [`with_fresh_database`], with `create_options` after `CREATE DATABASE name`.
    async fn with_fresh_database_made<F, Fut>(name: &str, create_options: &'static str, test: F)
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = ()>,
    {
        let Some(server) = server_url(name) else {
            return;
        };
        let database = unique_name();
        let mut admin = PgConnection::connect(&server)
            .await
            .expect("connecting to BERTH_TEST_DATABASE_URL");
        // The name is ours (letters, digits, underscores): safe to splice in.
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE DATABASE {database} {create_options}"
        )))
        .execute(&mut admin)
        .await
        .expect("CREATE DATABASE (does the role have CREATEDB?)");
        let outcome = AssertUnwindSafe(test(with_database(&server, &database)))
            .catch_unwind()
            .await;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await
        .expect("DROP DATABASE");
        let _ = admin.close().await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    fn options(migrate: Migrate) -> PgOptions {
        PgOptions {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(30),
            migrate,
        }
    }

    async fn raw(url: &str) -> PgConnection {
        PgConnection::connect(url).await.unwrap()
    }

    async fn versions_recorded(url: &str) -> Vec<i64> {
        let mut conn = raw(url).await;
        let v = sqlx::query_scalar("SELECT version FROM berth_schema ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        v
    }

    fn repo(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    fn tag(s: &str) -> Tag {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn passes_the_backend_testsuite() {
        with_fresh_database("passes_the_backend_testsuite", |url| async move {
            let meta = PgMeta::connect(&url, options(Migrate::Apply))
                .await
                .unwrap();
            crate::testsuite::run(&meta).await;
            meta.close().await;
        })
        .await;
    }

    /// Every column holding a digest is bytewise (`COLLATE "C"`), so that any two compare
    /// through an index: a digest column in the database's collation compared with one in
    /// "C" (as the quota triggers compare `project_blobs.digest` with `manifest_refs.target`)
    /// is a comparison no index serves, a scan of the whole table each time.
    #[tokio::test]
    async fn digest_columns_are_all_bytewise() {
        with_fresh_database("digest_columns_are_all_bytewise", |url| async move {
            let meta = PgMeta::connect(&url, options(Migrate::Apply))
                .await
                .unwrap();
            let mut conn = PgConnection::connect(&url).await.unwrap();
            let other: Vec<(String, String, Option<String>)> = sqlx::query_as(
                "SELECT table_name::TEXT, column_name::TEXT, collation_name::TEXT \
                 FROM information_schema.columns WHERE table_schema = 'public' \
                 AND column_name IN ('digest', 'target', 'manifest', 'subject') \
                 AND data_type = 'text' AND collation_name IS DISTINCT FROM 'C' \
                 ORDER BY 1, 2",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap();
            assert!(other.is_empty(), "digest columns not bytewise: {other:?}");
            meta.close().await;
        })
        .await;
    }

    #[tokio::test]
    async fn passes_the_retention_testsuite() {
        with_fresh_database("passes_the_retention_testsuite", |url| async move {
            let meta = PgMeta::connect(&url, options(Migrate::Apply))
                .await
                .unwrap();
            crate::testsuite::run_retention(&meta).await;
            meta.close().await;
        })
        .await;
    }

    #[tokio::test]
    async fn passes_the_access_testsuite() {
        with_fresh_database("passes_the_access_testsuite", |url| async move {
            let meta = PgMeta::connect(&url, options(Migrate::Apply))
                .await
                .unwrap();
            crate::testsuite::run_access(&meta).await;
            meta.close().await;
        })
        .await;
    }

    #[tokio::test]
    async fn migrating_again_changes_nothing() {
        with_fresh_database("migrating_again_changes_nothing", |url| async move {
            let meta = PgMeta::connect_unchecked(&url, &options(Migrate::Check))
                .await
                .unwrap();
            assert_eq!(meta.schema_version().await.unwrap(), 0);
            assert_eq!(meta.migrate().await.unwrap(), (0, SCHEMA_VERSION));
            assert_eq!(
                meta.migrate().await.unwrap(),
                (SCHEMA_VERSION, SCHEMA_VERSION)
            );
            assert_eq!(meta.schema_version().await.unwrap(), SCHEMA_VERSION);
            meta.close().await;
            let expected: Vec<i64> = (1..=SCHEMA_VERSION).collect();
            assert_eq!(versions_recorded(&url).await, expected);
            // A migrated database passes the check, and connecting again applies nothing.
            let checked = PgMeta::connect(&url, options(Migrate::Check))
                .await
                .unwrap();
            checked.close().await;
            let applied = PgMeta::connect(&url, options(Migrate::Apply))
                .await
                .unwrap();
            applied.close().await;
            assert_eq!(versions_recorded(&url).await, expected);
        })
        .await;
    }

    /// A database made by the first schema keeps its uploads through the migrations that add
    /// leases, the job queue and upload segments, and gets a project for its repositories.
    #[tokio::test]
    async fn upgrades_a_first_version_database() {
        with_fresh_database("upgrades_a_first_version_database", |url| async move {
            let mut conn = raw(&url).await;
            sqlx::raw_sql(MIGRATIONS[0])
                .execute(&mut conn)
                .await
                .unwrap();
            sqlx::raw_sql(
                "CREATE TABLE berth_schema (version BIGINT PRIMARY KEY, \
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()); \
                 INSERT INTO berth_schema (version) VALUES (1); \
                 INSERT INTO uploads (id, repo, \"offset\", algorithm, hash_state, created_at, \
                 updated_at) VALUES ('u-1', 'old/app', 3, 'sha256', NULL, 10, 20); \
                 INSERT INTO repositories (name, created_at) \
                 VALUES ('old/app', 10), ('old/lib/x', 10), ('solo', 10);",
            )
            .execute(&mut conn)
            .await
            .unwrap();
            conn.close().await.unwrap();
            let meta = PgMeta::connect(&url, options(Migrate::Apply))
                .await
                .unwrap();
            assert_eq!(meta.schema_version().await.unwrap(), SCHEMA_VERSION);
            crate::testsuite::check_upgraded_from_v1(&meta).await;
            meta.close().await;
        })
        .await;
    }

    #[tokio::test]
    async fn instances_starting_together_migrate_once() {
        with_fresh_database(
            "instances_starting_together_migrate_once",
            |url| async move {
                let starts = (0..6).map(|_| PgMeta::connect(&url, options(Migrate::Apply)));
                for started in futures::future::join_all(starts).await {
                    started.unwrap().close().await;
                }
                let expected: Vec<i64> = (1..=SCHEMA_VERSION).collect();
                assert_eq!(versions_recorded(&url).await, expected);
            },
        )
        .await;
    }

    #[tokio::test]
    async fn check_refuses_an_unmigrated_database() {
        with_fresh_database("check_refuses_an_unmigrated_database", |url| async move {
            match PgMeta::connect(&url, options(Migrate::Check)).await {
                Err(MetaError::Backend(m)) => assert_eq!(
                    m,
                    format!(
                        "schema version 0 is older than this berth needs ({SCHEMA_VERSION}): \
                         run `berth migrate`"
                    )
                ),
                Err(e) => panic!("wrong error: {e:?}"),
                Ok(_) => panic!("an unmigrated database passed the check"),
            }
            // The check wrote nothing.
            let mut conn = raw(&url).await;
            let tables: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
            assert_eq!(tables, 0);
            conn.close().await.unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn refuses_a_newer_schema() {
        with_fresh_database("refuses_a_newer_schema", |url| async move {
            PgMeta::connect(&url, options(Migrate::Apply))
                .await
                .unwrap()
                .close()
                .await;
            let mut conn = raw(&url).await;
            sqlx::query("INSERT INTO berth_schema (version) VALUES (999)")
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
            for migrate in [Migrate::Apply, Migrate::Check] {
                let result = PgMeta::connect(&url, options(migrate)).await;
                let too_new = matches!(
                    result,
                    Err(MetaError::SchemaTooNew { found: 999, known }) if known == SCHEMA_VERSION
                );
                assert!(too_new, "{migrate:?}: {result:?}");
            }
            let meta = PgMeta::connect_unchecked(&url, &options(Migrate::Apply))
                .await
                .unwrap();
            assert!(matches!(
                meta.migrate().await,
                Err(MetaError::SchemaTooNew { found: 999, .. })
            ));
            meta.close().await;
        })
        .await;
    }

    /// Listings are in bytewise order, page by page, even in a database whose own collation
    /// sorts otherwise (ICU's en-US puts `a` before `B` and ignores most punctuation).
    #[tokio::test]
    async fn listings_are_bytewise_whatever_the_database_locale() {
        with_fresh_database_made(
            "listings_are_bytewise_whatever_the_database_locale",
            "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' TEMPLATE template0",
            |url| async move {
                let meta = PgMeta::connect(&url, options(Migrate::Apply))
                    .await
                    .unwrap();
                let names = ["a", "B", "_x", "a-b", "a.b", "a_b", "A1", "a0", "Z"];
                let r = repo("locale/app");
                let content = b"{\"locale\":1}".to_vec();
                let m = NewManifest {
                    repo: r.clone(),
                    digest: Digest::sha256_of(&content),
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    artifact_type: None,
                    subject: None,
                    annotations: None,
                    content,
                    blobs: vec![],
                    manifests: vec![],
                    pinned_tags: Vec::new(),
                };
                let tags: Vec<Tag> = names.iter().map(|n| tag(n)).collect();
                meta.put_manifest(m, &tags).await.unwrap();
                let mut bytewise: Vec<String> = names.iter().map(|n| n.to_string()).collect();
                bytewise.sort();
                let all = Page {
                    last: None,
                    limit: usize::MAX,
                };
                assert_eq!(meta.list_tags(&r, all).await.unwrap().unwrap(), bytewise);
                // Two at a time, each page starting after the last name of the one before.
                let mut paged = Vec::new();
                let mut last: Option<String> = None;
                loop {
                    let page = Page {
                        last: last.as_deref(),
                        limit: 2,
                    };
                    let got = meta.list_tags(&r, page).await.unwrap().unwrap();
                    if got.is_empty() {
                        break;
                    }
                    last = got.last().cloned();
                    paged.extend(got);
                }
                assert_eq!(paged, bytewise);
                // Repository names: lowercase, but `-`, `.`, `_` and `/` still sort bytewise.
                let repos = ["x/a-b", "x/a.b", "x/a_b", "x/a/b", "x/ab", "x/a0"];
                let d = Digest::sha256_of(b"locale layer");
                for name in repos {
                    meta.link_blob(&repo(name), &d, 1).await.unwrap();
                }
                let mut sorted: Vec<String> = repos.iter().map(|n| n.to_string()).collect();
                sorted.sort();
                let mut everything = sorted.clone();
                everything.push(r.to_string());
                everything.sort();
                assert_eq!(meta.list_repositories(all).await.unwrap(), everything);
                let after = meta
                    .list_repositories(Page {
                        last: Some("x/a.b"),
                        limit: 2,
                    })
                    .await
                    .unwrap();
                let at = everything.iter().position(|n| n == "x/a.b").unwrap();
                assert_eq!(after, everything[at + 1..at + 3]);
                let with_blob: Vec<String> = meta
                    .repos_with_blob(&d, 100)
                    .await
                    .unwrap()
                    .iter()
                    .map(|n| n.to_string())
                    .collect();
                assert_eq!(with_blob, sorted);
                meta.close().await;
            },
        )
        .await;
    }

    /// A manifest may name one layer twice, and a push may name one tag twice.
    #[tokio::test]
    async fn repeated_references_and_tags_are_accepted() {
        with_fresh_database(
            "repeated_references_and_tags_are_accepted",
            |url| async move {
                let meta = PgMeta::connect(&url, options(Migrate::Apply))
                    .await
                    .unwrap();
                let r = repo("twice/app");
                let layer = Digest::sha256_of(b"twice layer");
                meta.link_blob(&r, &layer, 3).await.unwrap();
                let content = b"{\"twice\":1}".to_vec();
                let m = NewManifest {
                    repo: r.clone(),
                    digest: Digest::sha256_of(&content),
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    artifact_type: None,
                    subject: None,
                    annotations: None,
                    content,
                    blobs: vec![layer.clone(), layer.clone()],
                    manifests: vec![],
                    pinned_tags: Vec::new(),
                };
                meta.put_manifest(m.clone(), &[tag("v1"), tag("v1")])
                    .await
                    .unwrap();
                let got = meta.manifest_by_tag(&r, &tag("v1")).await.unwrap().unwrap();
                assert_eq!(got.digest, m.digest);
                meta.close().await;
            },
        )
        .await;
    }

    /// Pushes of different manifests moving the same tags (named in different orders) at the
    /// same time: every push succeeds, and each tag ends on one complete manifest.
    #[tokio::test]
    async fn concurrent_tag_moves_end_on_a_complete_manifest() {
        with_fresh_database(
            "concurrent_tag_moves_end_on_a_complete_manifest",
            |url| async move {
                let meta = PgMeta::connect(&url, options(Migrate::Apply))
                    .await
                    .unwrap();
                let r = repo("race/app");
                let layers: Vec<Digest> = (0..3)
                    .map(|i| Digest::sha256_of(format!("race layer {i}").as_bytes()))
                    .collect();
                for l in &layers {
                    meta.link_blob(&r, l, 10).await.unwrap();
                }
                let names = ["a", "b", "c", "latest"];
                let pushes = (0..24usize).map(|i| {
                    let content = format!("{{\"race\":{i}}}").into_bytes();
                    let m = NewManifest {
                        repo: r.clone(),
                        digest: Digest::sha256_of(&content),
                        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                        artifact_type: None,
                        subject: None,
                        annotations: None,
                        content,
                        blobs: layers.clone(),
                        manifests: vec![],
                        pinned_tags: Vec::new(),
                    };
                    // Every push names all the tags, each in its own rotated order.
                    let tags: Vec<Tag> = (0..names.len())
                        .map(|k| tag(names[(i + k) % names.len()]))
                        .collect();
                    let meta = &meta;
                    async move { meta.put_manifest(m, &tags).await }
                });
                for result in futures::future::join_all(pushes).await {
                    result.unwrap();
                }
                let mut conn = raw(&url).await;
                for name in names {
                    let m = meta
                        .manifest_by_tag(&r, &tag(name))
                        .await
                        .unwrap()
                        .expect("the tag exists");
                    let refs: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM manifest_refs WHERE manifest = $1",
                    )
                    .bind(m.digest.to_string())
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
                    assert_eq!(refs, layers.len() as i64, "tag {name}");
                }
                conn.close().await.unwrap();
                meta.close().await;
            },
        )
        .await;
    }

    /// A delete that keeps protected tags (of a manifest, or of its whole repository), racing
    /// a push that puts such a tag on a manifest the repository already holds: whichever
    /// commits first, the push succeeds and keeps its tag (the delete either sees the tag and
    /// refuses, or goes first and the push puts the manifest back).
    async fn race_retags_against_deletes(test: &'static str, whole_repository: bool) {
        with_fresh_database(test, |url| async move {
            let meta = PgMeta::connect(&url, options(Migrate::Apply))
                .await
                .unwrap();
            let keep: TagGuard = std::sync::Arc::new(|t: &str| t.starts_with("keep"));
            let (mut refused, mut deleted) = (0, 0);
            for i in 0..40 {
                let r = repo(&format!("race/repo{i}"));
                let content = format!("{{\"retag\":{i}}}").into_bytes();
                let m = crate::testsuite::manifest(&r, &content, vec![], vec![]);
                meta.put_manifest(m.clone(), &[tag("rc")]).await.unwrap();
                let name = format!("keep{i}");
                let tags = [tag(&name)];
                let retag = NewManifest {
                    pinned_tags: vec![name.clone()],
                    ..m.clone()
                };
                let push = meta.put_manifest(retag, &tags);
                let delete = async {
                    if whole_repository {
                        meta.delete_repository_keeping(&r, Some(keep.clone())).await
                    } else {
                        meta.delete_manifest_keeping(&r, &m.digest, Some(keep.clone()))
                            .await
                    }
                };
                let (pushed, removed) = futures::future::join(push, delete).await;
                match removed {
                    Err(MetaError::TagImmutable(t)) => {
                        assert_eq!(t, name);
                        refused += 1;
                    }
                    Ok(true) => deleted += 1,
                    other => panic!("round {i}: delete answered {other:?}"),
                }
                pushed.unwrap_or_else(|e| panic!("round {i}: the push failed: {e}"));
                let found = meta.manifest_by_tag(&r, &tag(&name)).await.unwrap();
                assert_eq!(
                    found.map(|f| f.digest),
                    Some(m.digest),
                    "round {i}: a successful push lost its protected tag {name}"
                );
            }
            println!("{test}: 40 rounds, {refused} deletes refused, {deleted} went first");
            meta.close().await;
        })
        .await;
    }

    #[tokio::test]
    async fn a_manifest_delete_racing_a_retag_never_takes_a_protected_tag() {
        race_retags_against_deletes(
            "a_manifest_delete_racing_a_retag_never_takes_a_protected_tag",
            false,
        )
        .await;
    }

    #[tokio::test]
    async fn a_repository_delete_racing_a_retag_never_takes_a_protected_tag() {
        race_retags_against_deletes(
            "a_repository_delete_racing_a_retag_never_takes_a_protected_tag",
            true,
        )
        .await;
    }

    /// Connections the server drops (a restart, a failover, an administrator) are replaced:
    /// the next requests succeed without restarting anything.
    #[tokio::test]
    async fn recovers_when_the_server_drops_its_connections() {
        with_fresh_database(
            "recovers_when_the_server_drops_its_connections",
            |url| async move {
                let meta = PgMeta::connect(&url, options(Migrate::Apply))
                    .await
                    .unwrap();
                let r = repo("drop/app");
                let d = Digest::sha256_of(b"drop layer");
                meta.link_blob(&r, &d, 4).await.unwrap();
                let mut admin = raw(&url).await;
                let killed: Vec<bool> = sqlx::query_scalar(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                )
                .fetch_all(&mut admin)
                .await
                .unwrap();
                assert!(!killed.is_empty(), "the pool had no connection to drop");
                admin.close().await.unwrap();
                assert_eq!(meta.repo_blob(&r, &d).await.unwrap(), Some(4));
                meta.link_blob(&repo("drop/other"), &d, 4).await.unwrap();
                assert_eq!(
                    meta.repos_with_blob(&d, 10).await.unwrap(),
                    vec![repo("drop/app"), repo("drop/other")]
                );
                meta.close().await;
                assert!(matches!(
                    meta.blob(&d).await,
                    Err(MetaError::Unavailable(_))
                ));
            },
        )
        .await;
    }

    /// A write step that fails `failures` times with SQLSTATE `code` (raised by PostgreSQL
    /// itself), after inserting a row that only a committed attempt keeps.
    struct Flaky {
        name: &'static str,
        failures: u32,
        code: &'static str,
        calls: AtomicU64,
    }

    fn flaky_step<'c>(c: &'c mut PgConnection, f: &'c Flaky) -> BoxFuture<'c, Result<(), TxError>> {
        Box::pin(async move {
            let n = f.calls.fetch_add(1, Ordering::SeqCst);
            sqlx::query("INSERT INTO blobs (digest, size, created_at) VALUES ($1, 0, 0)")
                .bind(format!("{}-{n}", f.name))
                .execute(&mut *c)
                .await?;
            if n < u64::from(f.failures) {
                sqlx::query("SELECT berth_test_fail($1)")
                    .bind(f.code)
                    .execute(&mut *c)
                    .await?;
            }
            Ok(())
        })
    }

    #[tokio::test]
    async fn retries_serialization_failures_and_deadlocks_only() {
        with_fresh_database(
            "retries_serialization_failures_and_deadlocks_only",
            |url| async move {
                let meta = PgMeta::connect(&url, options(Migrate::Apply))
                    .await
                    .unwrap();
                let mut conn = raw(&url).await;
                sqlx::raw_sql(
                    "CREATE FUNCTION berth_test_fail(code TEXT) RETURNS VOID LANGUAGE plpgsql \
                     AS $$ BEGIN RAISE EXCEPTION 'forced failure' USING ERRCODE = code; END $$",
                )
                .execute(&mut conn)
                .await
                .unwrap();
                let run = |name, failures, code| {
                    let meta = &meta;
                    async move {
                        let f = Flaky {
                            name,
                            failures,
                            code,
                            calls: AtomicU64::new(0),
                        };
                        let result = meta.write(Scope::Transaction, &f, flaky_step).await;
                        (result, f.calls.into_inner())
                    }
                };
                let kept = |name: &'static str| {
                    let url = url.clone();
                    async move {
                        let mut conn = raw(&url).await;
                        let n: i64 = sqlx::query_scalar(
                            "SELECT count(*) FROM blobs WHERE digest LIKE $1 || '-%'",
                        )
                        .bind(name)
                        .fetch_one(&mut conn)
                        .await
                        .unwrap();
                        conn.close().await.unwrap();
                        n
                    }
                };

                // Aborted attempts are rolled back and run again; the last one commits.
                for code in ["40001", "40P01"] {
                    let (result, calls) = run(code, 2, code).await;
                    assert!(result.is_ok(), "{code}: {result:?}");
                    assert_eq!(calls, 3, "{code}");
                    assert_eq!(kept(code).await, 1, "{code}");
                }
                // Giving up is `Unavailable`, and leaves nothing behind.
                let (result, calls) = run("give-up", u32::MAX, "40001").await;
                let gave_up = format!("after {MAX_ATTEMPTS} attempts");
                assert!(
                    matches!(&result, Err(MetaError::Unavailable(m)) if m.contains(&gave_up)),
                    "{result:?}"
                );
                assert_eq!(calls, u64::from(MAX_ATTEMPTS));
                assert_eq!(kept("give-up").await, 0);
                // Other errors are not retried: unavailable ones and the rest.
                let (result, calls) = run("57P03", 1, "57P03").await;
                assert!(
                    matches!(result, Err(MetaError::Unavailable(_))),
                    "{result:?}"
                );
                assert_eq!(calls, 1);
                let (result, calls) = run("08006", 1, "08006").await;
                assert!(
                    matches!(result, Err(MetaError::Unavailable(_))),
                    "{result:?}"
                );
                assert_eq!(calls, 1);
                let (result, calls) = run("23505", 1, "23505").await;
                assert!(matches!(result, Err(MetaError::Backend(_))), "{result:?}");
                assert_eq!(calls, 1);
                assert_eq!(kept("23505").await, 0);
                conn.close().await.unwrap();
                meta.close().await;
            },
        )
        .await;
    }

    /// Nothing listening: `Unavailable`, once the acquire timeout has passed and not much
    /// later. Needs no PostgreSQL.
    #[tokio::test]
    async fn an_unreachable_server_is_unavailable() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let timeout = Duration::from_secs(1);
        let started = Instant::now();
        let result = PgMeta::connect(
            &format!("postgres://berth:berth@127.0.0.1:{port}/berth"),
            PgOptions {
                max_connections: 2,
                acquire_timeout: timeout,
                migrate: Migrate::Apply,
            },
        )
        .await;
        let took = started.elapsed();
        assert!(
            matches!(result, Err(MetaError::Unavailable(_))),
            "{result:?}"
        );
        assert!(took < timeout + Duration::from_secs(2), "took {took:?}");
    }

    #[test]
    fn maps_errors_to_unavailable_or_backend() {
        use std::io::{Error, ErrorKind};
        let unavailable = |e: sqlx::Error| matches!(to_meta(e), MetaError::Unavailable(_));
        assert!(unavailable(sqlx::Error::PoolTimedOut));
        assert!(unavailable(sqlx::Error::PoolClosed));
        assert!(unavailable(sqlx::Error::Io(Error::from(
            ErrorKind::ConnectionRefused
        ))));
        assert!(unavailable(sqlx::Error::Io(Error::from(
            ErrorKind::ConnectionReset
        ))));
        assert!(!unavailable(sqlx::Error::RowNotFound));
        assert!(!unavailable(sqlx::Error::Protocol("bad".into())));
        for code in [
            "08000", "08006", "08P01", "53300", "53100", "57P01", "57P02", "57P03",
        ] {
            assert!(is_unavailable_sqlstate(code), "{code}");
        }
        for code in ["23505", "23503", "42P01", "40001", "40P01", "57014"] {
            assert!(!is_unavailable_sqlstate(code), "{code}");
        }
        assert!(is_retryable_sqlstate("40001") && is_retryable_sqlstate("40P01"));
        assert!(!is_retryable_sqlstate("23505"));
    }

    #[test]
    fn replaces_the_database_of_a_url() {
        assert_eq!(
            with_database("postgres://u:p@127.0.0.1:5432/berth", "x"),
            "postgres://u:p@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/berth?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
    }

    #[test]
    fn limits_and_backoff_stay_in_range() {
        assert_eq!(sql_limit(usize::MAX), i64::MAX);
        assert_eq!(sql_limit(7), 7);
        for attempt in 1..=MAX_ATTEMPTS + 10 {
            let b = backoff(attempt);
            assert!(
                b >= Duration::from_millis(5) && b < Duration::from_secs(1),
                "{b:?}"
            );
        }
    }
}
