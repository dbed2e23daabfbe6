//! Garbage collection on SQLite ([`crate::gc`]). One writer thread runs every write, so each
//! GC batch is one savepoint that no push can interleave with: the checks and the deletes see
//! the same rows.

use berth_oci::Digest;
use rusqlite::{params, Connection, OptionalExtension};

use super::access::{change, listing, row, rows};
use super::{backend, now, now_ms, parse_digest};
use crate::gc::{gc_run_from_row, pair_cursor, GC_RUN_COLUMNS};
use crate::{BlobState, GcBatch, GcItem, GcRun, GcScan, Listing, MetaError, Paging};

/// A window of `(repository id, digest)` rows: each with its repository's name, its size and
/// whether it may go.
struct PairRow {
    repo_id: i64,
    repo: String,
    digest: String,
    size: i64,
    collect: bool,
}

fn pair_window(conn: &Connection, sql: &str, scan: &GcScan<'_>) -> Result<Vec<PairRow>, MetaError> {
    let (id, digest) = pair_cursor(scan.after);
    rows(
        conn,
        sql,
        params![id, digest, scan.limit as i64, scan.cutoff_ms],
        |r| {
            Ok(PairRow {
                repo_id: r.get(0).map_err(backend)?,
                repo: r.get(1).map_err(backend)?,
                digest: r.get(2).map_err(backend)?,
                size: r.get(3).map_err(backend)?,
                collect: r.get(4).map_err(backend)?,
            })
        },
    )
}

/// Turn a window into a batch, deleting (unless a dry run) each collectable row with `delete`
/// (bound with the repository id and the digest).
fn pair_batch(
    conn: &Connection,
    window: Vec<PairRow>,
    scan: &GcScan<'_>,
    delete: &str,
) -> Result<GcBatch, MetaError> {
    let scanned = window.len() as u64;
    let next = if window.len() < scan.limit {
        None
    } else {
        window.last().map(|r| format!("{}/{}", r.repo_id, r.digest))
    };
    let mut items = Vec::new();
    for r in window.into_iter().filter(|r| r.collect) {
        if !scan.dry_run
            && change(conn, delete, params![r.repo_id, r.digest]).map_err(backend)? == 0
        {
            continue;
        }
        items.push(GcItem {
            repo: Some(r.repo),
            digest: parse_digest(r.digest)?,
            size: r.size.max(0) as u64,
        });
    }
    Ok(GcBatch {
        items,
        next,
        scanned,
    })
}

pub(super) fn manifests(conn: &Connection, scan: &GcScan<'_>) -> Result<GcBatch, MetaError> {
    let window = pair_window(
        conn,
        "SELECT m.repo_id, r.name, m.digest, m.size, \
             m.touched_ms < ?4 \
             AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = m.repo_id AND t.digest = m.digest) \
             AND NOT EXISTS (SELECT 1 FROM manifest_refs x WHERE x.repo_id = m.repo_id \
                 AND x.target = m.digest AND x.kind = 1) \
             AND (m.subject IS NULL OR NOT EXISTS (SELECT 1 FROM manifests s \
                 WHERE s.repo_id = m.repo_id AND s.digest = m.subject)) \
         FROM manifests m JOIN repositories r ON r.id = m.repo_id \
         WHERE (m.repo_id, m.digest) > (?1, ?2) ORDER BY m.repo_id, m.digest LIMIT ?3",
        scan,
    )?;
    // Tags and references go with the manifest (ON DELETE CASCADE).
    pair_batch(
        conn,
        window,
        scan,
        "DELETE FROM manifests WHERE repo_id = ?1 AND digest = ?2",
    )
}

pub(super) fn links(conn: &Connection, scan: &GcScan<'_>) -> Result<GcBatch, MetaError> {
    let window = pair_window(
        conn,
        "SELECT l.repo_id, r.name, l.digest, COALESCE(b.size, 0), \
             l.touched_ms < ?4 \
             AND NOT EXISTS (SELECT 1 FROM manifest_refs x WHERE x.repo_id = l.repo_id \
                 AND x.target = l.digest AND x.kind = 0) \
         FROM repo_blobs l JOIN repositories r ON r.id = l.repo_id \
         LEFT JOIN blobs b ON b.digest = l.digest \
         WHERE (l.repo_id, l.digest) > (?1, ?2) ORDER BY l.repo_id, l.digest LIMIT ?3",
        scan,
    )?;
    pair_batch(
        conn,
        window,
        scan,
        "DELETE FROM repo_blobs WHERE repo_id = ?1 AND digest = ?2",
    )
}

pub(super) fn mark_blobs(conn: &Connection, scan: &GcScan<'_>) -> Result<GcBatch, MetaError> {
    // A dry run removed no link: count a blob whose links would all go as unlinked.
    let sql = if scan.dry_run {
        "SELECT b.digest, b.size, \
             b.state IN (0, 1) AND b.touched_ms < ?3 \
             AND NOT EXISTS (SELECT 1 FROM repo_blobs l WHERE l.digest = b.digest \
                 AND (l.touched_ms >= ?3 OR EXISTS (SELECT 1 FROM manifest_refs x \
                     WHERE x.repo_id = l.repo_id AND x.target = l.digest AND x.kind = 0))) \
         FROM blobs b WHERE b.digest > ?1 ORDER BY b.digest LIMIT ?2"
    } else {
        "SELECT b.digest, b.size, \
             b.state IN (0, 1) AND b.touched_ms < ?3 \
             AND NOT EXISTS (SELECT 1 FROM repo_blobs l WHERE l.digest = b.digest) \
         FROM blobs b WHERE b.digest > ?1 ORDER BY b.digest LIMIT ?2"
    };
    let window: Vec<(String, i64, bool)> = rows(
        conn,
        sql,
        params![scan.after.unwrap_or(""), scan.limit as i64, scan.cutoff_ms],
        |r| {
            Ok((
                r.get(0).map_err(backend)?,
                r.get(1).map_err(backend)?,
                r.get(2).map_err(backend)?,
            ))
        },
    )?;
    let scanned = window.len() as u64;
    let next = if window.len() < scan.limit {
        None
    } else {
        window.last().map(|(d, _, _)| d.clone())
    };
    let mut items = Vec::new();
    for (digest, size, collect) in window {
        if !collect {
            continue;
        }
        if !scan.dry_run
            && change(
                conn,
                "UPDATE blobs SET state = 2 WHERE digest = ?1",
                params![digest],
            )
            .map_err(backend)?
                == 0
        {
            continue;
        }
        items.push(GcItem {
            repo: None,
            digest: parse_digest(digest)?,
            size: size.max(0) as u64,
        });
    }
    Ok(GcBatch {
        items,
        next,
        scanned,
    })
}

pub(super) fn marked_blobs(conn: &Connection, limit: usize) -> Result<Vec<GcItem>, MetaError> {
    rows(
        conn,
        "SELECT digest, size FROM blobs WHERE state = 2 ORDER BY digest LIMIT ?1",
        params![limit as i64],
        |r| {
            Ok(GcItem {
                repo: None,
                digest: parse_digest(r.get(0).map_err(backend)?)?,
                size: r.get::<_, i64>(1).map_err(backend)?.max(0) as u64,
            })
        },
    )
}

pub(super) fn forget_blobs(conn: &Connection, digests: &[String]) -> Result<u64, MetaError> {
    let mut n = 0;
    for d in digests {
        n += change(
            conn,
            "DELETE FROM blobs WHERE digest = ?1 AND state = 2",
            params![d],
        )
        .map_err(backend)? as u64;
    }
    Ok(n)
}

pub(super) fn known_blobs(conn: &Connection, digests: &[String]) -> Result<Vec<Digest>, MetaError> {
    let mut stmt = conn
        .prepare_cached("SELECT 1 FROM blobs WHERE digest = ?1")
        .map_err(backend)?;
    let mut known = Vec::new();
    for d in digests {
        if stmt.exists([d]).map_err(backend)? {
            known.push(parse_digest(d.clone())?);
        }
    }
    Ok(known)
}

pub(super) fn claim_orphan(conn: &Connection, digest: &str, size: u64) -> Result<bool, MetaError> {
    let t = now_ms();
    change(
        conn,
        "INSERT OR IGNORE INTO blobs (digest, size, created_at, state, touched_ms) \
         VALUES (?1, ?2, ?3, 2, ?4)",
        params![digest, size as i64, now(), t],
    )
    .map(|n| n > 0)
    .map_err(backend)
}

fn blob_state(conn: &Connection, digest: &str) -> Result<Option<i64>, MetaError> {
    conn.prepare_cached("SELECT state FROM blobs WHERE digest = ?1")
        .and_then(|mut s| s.query_row([digest], |r| r.get(0)).optional())
        .map_err(backend)
}

pub(super) fn reserve(conn: &Connection, digest: &str, size: u64) -> Result<bool, MetaError> {
    let t = now_ms();
    match blob_state(conn, digest)? {
        Some(s) if s == BlobState::Deleting.code() => Ok(false),
        Some(_) => change(
            conn,
            "UPDATE blobs SET touched_ms = ?2 WHERE digest = ?1",
            params![digest, t],
        )
        .map(|_| true)
        .map_err(backend),
        None => change(
            conn,
            "INSERT INTO blobs (digest, size, created_at, state, touched_ms) \
             VALUES (?1, ?2, ?3, 1, ?4)",
            params![digest, size as i64, now(), t],
        )
        .map(|_| true)
        .map_err(backend),
    }
}

/// The blob half of `link_blob`: make the row live and touched, unless GC is deleting it.
pub(super) fn live_blob(conn: &Connection, digest: &str, size: u64) -> Result<(), MetaError> {
    if blob_state(conn, digest)? == Some(BlobState::Deleting.code()) {
        return Err(MetaError::Conflict);
    }
    change(
        conn,
        "INSERT INTO blobs (digest, size, created_at, state, touched_ms) VALUES (?1, ?2, ?3, 0, ?4) \
         ON CONFLICT (digest) DO UPDATE SET state = 0, touched_ms = excluded.touched_ms",
        params![digest, size as i64, now(), now_ms()],
    )
    .map(drop)
    .map_err(backend)
}

pub(super) fn create_run(conn: &Connection, run: &GcRun) -> Result<GcRun, MetaError> {
    change(
        conn,
        "INSERT INTO gc_runs (trigger_kind, dry_run, delete_untagged, grace_seconds, status, \
         phase, cursor, manifests_deleted, links_deleted, blobs_deleted, bytes_freed, scanned, \
         errors, last_error, created_ms, updated_ms, finished_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, 0, 0, 0, 0, 0, NULL, ?8, ?8, NULL)",
        params![
            run.trigger,
            run.dry_run,
            run.delete_untagged,
            run.grace_seconds as i64,
            run.status,
            run.phase,
            run.cursor,
            run.created_ms
        ],
    )
    .map_err(backend)?;
    let id = conn.last_insert_rowid();
    get_run(conn, id)?.ok_or_else(|| MetaError::Backend("a new GC run vanished".into()))
}

pub(super) fn save_run(conn: &Connection, run: &GcRun) -> Result<(), MetaError> {
    let n = change(
        conn,
        "UPDATE gc_runs SET status = CASE WHEN status = 'stopping' \
         AND ?2 NOT IN ('stopped', 'success', 'error') THEN status ELSE ?2 END, phase = ?3, cursor = ?4, manifests_deleted = ?5, \
         links_deleted = ?6, blobs_deleted = ?7, bytes_freed = ?8, scanned = ?9, errors = ?10, \
         last_error = ?11, updated_ms = ?12, finished_ms = ?13 WHERE id = ?1",
        params![
            run.id,
            run.status,
            run.phase,
            run.cursor,
            run.manifests_deleted as i64,
            run.links_deleted as i64,
            run.blobs_deleted as i64,
            run.bytes_freed as i64,
            run.scanned as i64,
            run.errors as i64,
            run.last_error,
            now_ms(),
            run.finished_ms
        ],
    )
    .map_err(backend)?;
    if n == 0 {
        return Err(MetaError::NotFound(format!("GC run {}", run.id)));
    }
    Ok(())
}

pub(super) fn get_run(conn: &Connection, id: i64) -> Result<Option<GcRun>, MetaError> {
    row(
        conn,
        &format!("SELECT {GC_RUN_COLUMNS} FROM gc_runs WHERE id = ?1"),
        params![id],
        |r| gc_run_from_row(r),
    )
}

pub(super) fn list_runs(conn: &Connection, page: Paging) -> Result<Listing<GcRun>, MetaError> {
    listing(
        conn,
        GC_RUN_COLUMNS,
        "gc_runs g",
        "g.id DESC",
        Vec::new(),
        page,
        |r| gc_run_from_row(r),
    )
}

/// Digests as the database stores them.
pub(super) fn texts(digests: &[Digest]) -> Vec<String> {
    digests.iter().map(ToString::to_string).collect()
}
