//! Garbage collection on PostgreSQL ([`crate::gc`]).
//!
//! Every step that removes runs in two statements inside one transaction (READ COMMITTED):
//! the first locks the candidates of its window `FOR UPDATE SKIP LOCKED`, so rows that a push
//! in flight holds (`put_manifest` locks what it references `FOR KEY SHARE`) are skipped
//! rather than waited for; the second re-checks "unreferenced and untouched since the cutoff"
//! with a snapshot taken after those locks, so a push that committed in between is seen, and
//! removes. A push that comes after the locks waits for this transaction, then finds the row
//! gone and fails cleanly (`MANIFEST_BLOB_UNKNOWN`), never half-done.

use sqlx::{PgConnection, PgPool, Row};

use super::{now, parse_digest, sql_limit, to_meta, TxError};
use crate::gc::{gc_run_from_row, pair_cursor, GC_RUN_COLUMNS};
use crate::{GcBatch, GcItem, GcRun, GcScan, MetaError};

/// A [`GcScan`] that owns its start key.
pub(super) struct OwnedScan {
    after: Option<String>,
    limit: usize,
    cutoff_ms: i64,
    dry_run: bool,
}

impl From<GcScan<'_>> for OwnedScan {
    fn from(s: GcScan<'_>) -> Self {
        Self {
            after: s.after.map(str::to_owned),
            limit: s.limit.max(1),
            cutoff_ms: s.cutoff_ms,
            dry_run: s.dry_run,
        }
    }
}

/// The key after the last row of a full window; `None` when the window was the last.
fn next_key<T>(window: &[T], limit: usize, key: impl Fn(&T) -> String) -> Option<String> {
    if window.len() < limit {
        None
    } else {
        window.last().map(key)
    }
}

fn pair_items(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<GcItem>, MetaError> {
    rows.iter()
        .map(|r| {
            Ok(GcItem {
                repo: Some(r.try_get(0).map_err(to_meta)?),
                digest: parse_digest(&r.try_get::<String, _>(1).map_err(to_meta)?)?,
                size: r.try_get::<i64, _>(2).map_err(to_meta)?.max(0) as u64,
            })
        })
        .collect()
}

/// One batch over `(repository id, digest)` keys of `table`. `collect` is the condition (on
/// alias `x`, with `$1` the cutoff) under which a row goes; `size` is its size expression.
async fn pair_step(
    conn: &mut PgConnection,
    scan: &OwnedScan,
    table: &str,
    collect: &str,
    size: &str,
) -> Result<GcBatch, TxError> {
    let (id, digest) = pair_cursor(scan.after.as_deref());
    let window: Vec<(i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT repo_id, digest FROM {table} WHERE (repo_id, digest) > ($1, $2) \
         ORDER BY repo_id, digest LIMIT $3"
    )))
    .bind(id)
    .bind(&digest)
    .bind(sql_limit(scan.limit))
    .fetch_all(&mut *conn)
    .await?;
    let next = next_key(&window, scan.limit, |(i, d)| format!("{i}/{d}"));
    let scanned = window.len() as u64;
    let (ids, digests): (Vec<i64>, Vec<String>) = window.into_iter().unzip();
    let chosen = format!(
        "SELECT x.repo_id, r.name, x.digest, {size} AS size FROM {table} x \
         JOIN repositories r ON r.id = x.repo_id \
         WHERE (x.repo_id, x.digest) IN (SELECT * FROM UNNEST($2::BIGINT[], $3::TEXT[])) \
         AND {collect}"
    );
    let rows = if scan.dry_run {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT c.name, c.digest, c.size FROM ({chosen}) c"
        )))
        .bind(scan.cutoff_ms)
        .bind(&ids)
        .bind(&digests)
        .fetch_all(&mut *conn)
        .await?
    } else {
        // Lock first (skipping what pushes hold), then re-check and remove on a snapshot
        // taken after the locks.
        let locked: Vec<(i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT x.repo_id, x.digest FROM {table} x \
             WHERE (x.repo_id, x.digest) IN (SELECT * FROM UNNEST($2::BIGINT[], $3::TEXT[])) \
             AND x.touched_ms < $1 ORDER BY x.repo_id, x.digest FOR UPDATE SKIP LOCKED"
        )))
        .bind(scan.cutoff_ms)
        .bind(&ids)
        .bind(&digests)
        .fetch_all(&mut *conn)
        .await?;
        if locked.is_empty() {
            Vec::new()
        } else {
            let (ids, digests): (Vec<i64>, Vec<String>) = locked.into_iter().unzip();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "WITH gone AS ({chosen}) \
                 DELETE FROM {table} d USING gone \
                 WHERE d.repo_id = gone.repo_id AND d.digest = gone.digest \
                 RETURNING gone.name, gone.digest, gone.size"
            )))
            .bind(scan.cutoff_ms)
            .bind(&ids)
            .bind(&digests)
            .fetch_all(&mut *conn)
            .await?
        }
    };
    Ok(GcBatch {
        items: pair_items(&rows)?,
        next,
        scanned,
    })
}

pub(super) async fn manifests(
    conn: &mut PgConnection,
    scan: &OwnedScan,
) -> Result<GcBatch, TxError> {
    // Tags and references go with the manifest (ON DELETE CASCADE).
    pair_step(
        conn,
        scan,
        "manifests",
        "x.touched_ms < $1 \
         AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = x.repo_id AND t.digest = x.digest) \
         AND NOT EXISTS (SELECT 1 FROM manifest_refs f WHERE f.repo_id = x.repo_id \
             AND f.target = x.digest AND f.kind = 1) \
         AND (x.subject IS NULL OR NOT EXISTS (SELECT 1 FROM manifests s \
             WHERE s.repo_id = x.repo_id AND s.digest = x.subject))",
        "x.size",
    )
    .await
}

pub(super) async fn links(conn: &mut PgConnection, scan: &OwnedScan) -> Result<GcBatch, TxError> {
    pair_step(
        conn,
        scan,
        "repo_blobs",
        "x.touched_ms < $1 \
         AND NOT EXISTS (SELECT 1 FROM manifest_refs f WHERE f.repo_id = x.repo_id \
             AND f.target = x.digest AND f.kind = 0)",
        "COALESCE((SELECT b.size FROM blobs b WHERE b.digest = x.digest), 0)",
    )
    .await
}

fn blob_items(rows: Vec<(String, i64)>) -> Result<Vec<GcItem>, MetaError> {
    rows.into_iter()
        .map(|(d, size)| {
            Ok(GcItem {
                repo: None,
                digest: parse_digest(&d)?,
                size: size.max(0) as u64,
            })
        })
        .collect()
}

pub(super) async fn mark_blobs(
    conn: &mut PgConnection,
    scan: &OwnedScan,
) -> Result<GcBatch, TxError> {
    let window: Vec<String> =
        sqlx::query_scalar("SELECT digest FROM blobs WHERE digest > $1 ORDER BY digest LIMIT $2")
            .bind(scan.after.as_deref().unwrap_or(""))
            .bind(sql_limit(scan.limit))
            .fetch_all(&mut *conn)
            .await?;
    let next = next_key(&window, scan.limit, Clone::clone);
    let scanned = window.len() as u64;
    const COLLECT: &str = "b.state IN (0, 1) AND b.touched_ms < $1 \
        AND NOT EXISTS (SELECT 1 FROM repo_blobs l WHERE l.digest = b.digest)";
    let rows: Vec<(String, i64)> = if scan.dry_run {
        // No link was removed: count a blob whose links would all go as unlinked.
        sqlx::query_as(
            "SELECT b.digest, b.size FROM blobs b WHERE b.digest = ANY($2) \
             AND b.state IN (0, 1) AND b.touched_ms < $1 \
             AND NOT EXISTS (SELECT 1 FROM repo_blobs l WHERE l.digest = b.digest \
                 AND (l.touched_ms >= $1 OR EXISTS (SELECT 1 FROM manifest_refs x \
                     WHERE x.repo_id = l.repo_id AND x.target = l.digest AND x.kind = 0))) \
             ORDER BY b.digest",
        )
        .bind(scan.cutoff_ms)
        .bind(&window)
        .fetch_all(&mut *conn)
        .await?
    } else {
        let locked: Vec<String> = sqlx::query_scalar(
            "SELECT digest FROM blobs WHERE digest = ANY($2) AND state IN (0, 1) \
             AND touched_ms < $1 ORDER BY digest FOR UPDATE SKIP LOCKED",
        )
        .bind(scan.cutoff_ms)
        .bind(&window)
        .fetch_all(&mut *conn)
        .await?;
        if locked.is_empty() {
            Vec::new()
        } else {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE blobs b SET state = 2 WHERE b.digest = ANY($2) AND {COLLECT} \
                 RETURNING b.digest, b.size"
            )))
            .bind(scan.cutoff_ms)
            .bind(&locked)
            .fetch_all(&mut *conn)
            .await?
        }
    };
    Ok(GcBatch {
        items: blob_items(rows)?,
        next,
        scanned,
    })
}

pub(super) async fn marked_blobs(pool: &PgPool, limit: usize) -> Result<Vec<GcItem>, MetaError> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT digest, size FROM blobs WHERE state = 2 ORDER BY digest LIMIT $1")
            .bind(sql_limit(limit))
            .fetch_all(pool)
            .await
            .map_err(to_meta)?;
    blob_items(rows)
}

pub(super) async fn forget_blobs(
    conn: &mut PgConnection,
    digests: &Vec<String>,
) -> Result<u64, TxError> {
    Ok(
        sqlx::query("DELETE FROM blobs WHERE digest = ANY($1) AND state = 2")
            .bind(digests)
            .execute(conn)
            .await?
            .rows_affected(),
    )
}

pub(super) async fn known_blobs(
    pool: &PgPool,
    digests: &[String],
) -> Result<Vec<String>, MetaError> {
    sqlx::query_scalar("SELECT digest FROM blobs WHERE digest = ANY($1)")
        .bind(digests)
        .fetch_all(pool)
        .await
        .map_err(to_meta)
}

pub(super) async fn claim_orphan(
    conn: &mut PgConnection,
    (digest, size): &(String, i64),
) -> Result<bool, TxError> {
    let n = sqlx::query(concat!(
        "INSERT INTO blobs (digest, size, created_at, state, touched_ms) VALUES ($1, $2, $3, 2, ",
        now_ms!(),
        ") ON CONFLICT (digest) DO NOTHING"
    ))
    .bind(digest)
    .bind(size)
    .bind(now())
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n > 0)
}

pub(super) async fn reserve(
    conn: &mut PgConnection,
    (digest, size): &(String, i64),
) -> Result<bool, TxError> {
    // A new row is pending; a live or pending one is touched; a row GC is deleting is left
    // alone (the conflict update's WHERE fails, so nothing is returned).
    let n = sqlx::query(concat!(
        "INSERT INTO blobs (digest, size, created_at, state, touched_ms) VALUES ($1, $2, $3, 1, ",
        now_ms!(),
        ") ON CONFLICT (digest) DO UPDATE SET touched_ms = excluded.touched_ms \
         WHERE blobs.state <> 2"
    ))
    .bind(digest)
    .bind(size)
    .bind(now())
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n > 0)
}

pub(super) async fn create_run(conn: &mut PgConnection, run: &GcRun) -> Result<GcRun, TxError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO gc_runs (trigger_kind, dry_run, delete_untagged, grace_seconds, status, \
         phase, cursor, manifests_deleted, links_deleted, blobs_deleted, bytes_freed, scanned, \
         errors, last_error, created_ms, updated_ms, finished_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 0, 0, 0, 0, 0, NULL, $8, $8, NULL) \
         RETURNING {GC_RUN_COLUMNS}"
    )))
    .bind(&run.trigger)
    .bind(run.dry_run)
    .bind(run.delete_untagged)
    .bind(run.grace_seconds as i64)
    .bind(&run.status)
    .bind(&run.phase)
    .bind(&run.cursor)
    .bind(run.created_ms)
    .fetch_one(conn)
    .await?;
    Ok(gc_run_from_row(&row)?)
}

pub(super) async fn save_run(conn: &mut PgConnection, run: &GcRun) -> Result<(), TxError> {
    let n = sqlx::query(concat!(
        "UPDATE gc_runs SET status = CASE WHEN status = 'stopping' \
         AND $2 NOT IN ('stopped', 'success', 'error') THEN status ELSE $2 END, phase = $3, cursor = $4, manifests_deleted = $5, \
         links_deleted = $6, blobs_deleted = $7, bytes_freed = $8, scanned = $9, errors = $10, \
         last_error = $11, updated_ms = ",
        now_ms!(),
        ", finished_ms = $12 WHERE id = $1"
    ))
    .bind(run.id)
    .bind(&run.status)
    .bind(&run.phase)
    .bind(&run.cursor)
    .bind(run.manifests_deleted as i64)
    .bind(run.links_deleted as i64)
    .bind(run.blobs_deleted as i64)
    .bind(run.bytes_freed as i64)
    .bind(run.scanned as i64)
    .bind(run.errors as i64)
    .bind(&run.last_error)
    .bind(run.finished_ms)
    .execute(conn)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(MetaError::NotFound(format!("GC run {}", run.id)).into());
    }
    Ok(())
}

pub(super) async fn get_run(pool: &PgPool, id: i64) -> Result<Option<GcRun>, MetaError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {GC_RUN_COLUMNS} FROM gc_runs WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(to_meta)?;
    row.as_ref().map(gc_run_from_row).transpose()
}
