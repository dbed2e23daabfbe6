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
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use berth_oci::{Digest, DigestAlgorithm, RepoName, Tag};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::{MetaError, MetaStore, NewManifest, Page, Referrer, StoredManifest, Upload};

/// Schema migrations, applied in order; the database records how many ran.
const MIGRATIONS: &[&str] = &[r#"
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
"#];

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

/// The writer thread: batch what is queued, one transaction and one commit per batch.
fn writer_loop(conn: Connection, ops: std::sync::mpsc::Receiver<WriteOp>) {
    while let Ok(first) = ops.recv() {
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
    conn.prepare_cached("INSERT INTO repositories (name, created_at) VALUES (?1, ?2)")?
        .execute(params![repo.as_str(), now()])?;
    Ok(conn.last_insert_rowid())
}

fn upload_from_row(repo: &RepoName, r: &rusqlite::Row<'_>) -> rusqlite::Result<Upload> {
    let algorithm =
        DigestAlgorithm::from_name(&r.get::<_, String>(2)?).unwrap_or(DigestAlgorithm::Sha256);
    Ok(Upload {
        id: r.get(0)?,
        repo: repo.clone(),
        offset: r.get::<_, i64>(1)? as u64,
        algorithm,
        hash_state: r.get(3)?,
        created_at: r.get(4)?,
    })
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
            let t = now();
            tx.prepare_cached("INSERT OR IGNORE INTO blobs (digest, size, created_at) VALUES (?1, ?2, ?3)")
                .and_then(|mut s| s.execute(params![digest, size as i64, t]))
                .map_err(backend)?;
            tx.prepare_cached(
                "INSERT OR IGNORE INTO repo_blobs (repo_id, digest, created_at) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut s| s.execute(params![id, digest, t]))
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
                 JOIN blobs b ON b.digest = rb.digest WHERE r.name = ?1 AND rb.digest = ?2",
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
            conn.prepare_cached("SELECT size FROM blobs WHERE digest = ?1")
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
            // between the check and the insert.
            {
                let mut has_blob = tx
                    .prepare_cached("SELECT 1 FROM repo_blobs WHERE repo_id = ?1 AND digest = ?2")
                    .map_err(backend)?;
                for b in &m.blobs {
                    if !has_blob.exists(params![id, b.to_string()]).map_err(backend)? {
                        return Err(MetaError::MissingBlob(b.clone()));
                    }
                }
                let mut has_manifest = tx
                    .prepare_cached("SELECT 1 FROM manifests WHERE repo_id = ?1 AND digest = ?2")
                    .map_err(backend)?;
                for c in &m.manifests {
                    if !has_manifest.exists(params![id, c.to_string()]).map_err(backend)? {
                        return Err(MetaError::MissingManifest(c.clone()));
                    }
                }
            }
            let digest = m.digest.to_string();
            let t = now();
            let inserted = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO manifests (repo_id, digest, media_type, artifact_type, \
                     subject, annotations, size, content, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
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
                        t
                    ])
                })
                .map_err(backend)?;
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
            {
                let mut set_tag = tx
                    .prepare_cached(
                        "INSERT INTO tags (repo_id, name, digest, updated_at) VALUES (?1, ?2, ?3, ?4) \
                         ON CONFLICT (repo_id, name) DO UPDATE SET digest = excluded.digest, \
                         updated_at = excluded.updated_at",
                    )
                    .map_err(backend)?;
                for tag in &tags {
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

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError> {
        let (repo, digest) = (repo.clone(), digest.to_string());
        self.write(move |tx| {
            let Some(id) = repo_id(tx, &repo).map_err(backend)? else {
                return Ok(false);
            };
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
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    u.id,
                    u.repo.as_str(),
                    u.offset as i64,
                    u.algorithm.as_str(),
                    u.hash_state,
                    u.created_at
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
            conn.prepare_cached(
                "SELECT id, offset, algorithm, hash_state, created_at FROM uploads \
                 WHERE id = ?1 AND repo = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![id, repo.as_str()], |r| upload_from_row(&repo, r))
                    .optional()
            })
            .map_err(backend)
        })
    }

    async fn advance_upload(&self, u: &Upload, from_offset: u64) -> Result<(), MetaError> {
        let u = u.clone();
        self.write(move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE uploads SET offset = ?2, algorithm = ?3, hash_state = ?4, updated_at = ?5 \
                     WHERE id = ?1 AND offset = ?6",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        u.id,
                        u.offset as i64,
                        u.algorithm.as_str(),
                        u.hash_state,
                        now(),
                        from_offset as i64
                    ])
                })
                .map_err(backend)?;
            if n == 1 {
                Ok(())
            } else {
                Err(MetaError::Conflict)
            }
        })
        .await
    }

    async fn delete_upload(&self, id: &str) -> Result<(), MetaError> {
        let id = id.to_owned();
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM uploads WHERE id = ?1")
                .and_then(|mut s| s.execute([id]))
                .map(drop)
                .map_err(backend)
        })
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
