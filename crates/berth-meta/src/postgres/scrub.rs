//! Scrub on PostgreSQL ([`crate::scrub`]).
//!
//! Withdrawing a blob is one `READ COMMITTED` transaction: the `UPDATE` of its row (live to
//! deleting) takes the row's lock, so a link or reservation in flight waits for it and then
//! sees the row being deleted (as while garbage collection deletes it); the `DELETE` of its
//! links waits for any push holding a link `FOR KEY SHARE`, then removes the link under it.
//! That push's manifest then names a blob its repository lacks, which the manifest phase
//! reports.

use berth_oci::{Digest, RepoName};
use sqlx::{PgConnection, PgPool, Row};

use super::{parse_digest, sql_limit, to_meta, TxError};
use crate::gc::pair_cursor;
use crate::scrub::{finding_key, scrub_run_from_row, SCRUB_RUN_COLUMNS};
use crate::{
    MetaError, MissingRefs, ScrubBlob, ScrubFinding, ScrubManifest, ScrubManifests, ScrubRun,
};

pub(super) async fn blobs(
    pool: &PgPool,
    after: Option<String>,
    limit: usize,
) -> Result<Vec<ScrubBlob>, MetaError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT digest, size FROM blobs WHERE state = 0 AND digest > $1 \
         ORDER BY digest LIMIT $2",
    )
    .bind(after.unwrap_or_default())
    .bind(sql_limit(limit.max(1)))
    .fetch_all(pool)
    .await
    .map_err(to_meta)?;
    rows.into_iter()
        .map(|(d, size)| {
            Ok(ScrubBlob {
                digest: parse_digest(&d)?,
                size: size.max(0) as u64,
            })
        })
        .collect()
}

pub(super) async fn manifests(
    pool: &PgPool,
    after: Option<&str>,
    limit: usize,
) -> Result<ScrubManifests, MetaError> {
    let limit = limit.max(1);
    let (id, digest) = pair_cursor(after);
    let rows = sqlx::query(
        "SELECT m.repo_id, r.name, m.digest, m.media_type, m.content \
         FROM manifests m JOIN repositories r ON r.id = m.repo_id \
         WHERE (m.repo_id, m.digest) > ($1, $2) ORDER BY m.repo_id, m.digest LIMIT $3",
    )
    .bind(id)
    .bind(digest)
    .bind(sql_limit(limit))
    .fetch_all(pool)
    .await
    .map_err(to_meta)?;
    let mut items = Vec::with_capacity(rows.len());
    let mut last = None;
    for r in &rows {
        let repo_id: i64 = r.try_get(0).map_err(to_meta)?;
        let name: String = r.try_get(1).map_err(to_meta)?;
        let digest: String = r.try_get(2).map_err(to_meta)?;
        items.push(ScrubManifest {
            repo: name.parse().map_err(|e| {
                MetaError::Backend(format!("stored repository {name:?} is invalid: {e}"))
            })?,
            digest: parse_digest(&digest)?,
            media_type: r.try_get(3).map_err(to_meta)?,
            content: r.try_get(4).map_err(to_meta)?,
        });
        last = Some(format!("{repo_id}/{digest}"));
    }
    Ok(ScrubManifests {
        next: if items.len() < limit { None } else { last },
        items,
    })
}

pub(super) async fn missing_refs(
    pool: &PgPool,
    repo: &RepoName,
    blobs: &[Digest],
    manifests: &[Digest],
) -> Result<MissingRefs, MetaError> {
    async fn absent(
        pool: &PgPool,
        sql: &'static str,
        repo: &RepoName,
        wanted: &[Digest],
    ) -> Result<Vec<Digest>, MetaError> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let texts: Vec<String> = wanted.iter().map(ToString::to_string).collect();
        let found: Vec<String> = sqlx::query_scalar(sql)
            .bind(repo.as_str())
            .bind(&texts)
            .fetch_all(pool)
            .await
            .map_err(to_meta)?;
        Ok(wanted
            .iter()
            .zip(&texts)
            .filter(|(_, t)| !found.contains(t))
            .map(|(d, _)| d.clone())
            .collect())
    }
    Ok(MissingRefs {
        blobs: absent(
            pool,
            "SELECT l.digest FROM repo_blobs l JOIN repositories r ON r.id = l.repo_id \
             JOIN blobs b ON b.digest = l.digest \
             WHERE r.name = $1 AND l.digest = ANY($2) AND b.state = 0",
            repo,
            blobs,
        )
        .await?,
        manifests: absent(
            pool,
            "SELECT m.digest FROM manifests m JOIN repositories r ON r.id = m.repo_id \
             WHERE r.name = $1 AND m.digest = ANY($2)",
            repo,
            manifests,
        )
        .await?,
    })
}

pub(super) async fn withdraw_blob(conn: &mut PgConnection, digest: &str) -> Result<bool, TxError> {
    let n = sqlx::query("UPDATE blobs SET state = 2 WHERE digest = $1 AND state = 0")
        .bind(digest)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if n == 0 {
        return Ok(false);
    }
    sqlx::query("DELETE FROM repo_blobs WHERE digest = $1")
        .bind(digest)
        .execute(conn)
        .await?;
    Ok(true)
}

pub(super) async fn create_run(
    conn: &mut PgConnection,
    run: &ScrubRun,
) -> Result<ScrubRun, TxError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH s AS (INSERT INTO scrub_runs (repair, status, phase, cursor, blobs_total, \
         manifests_total, blobs_checked, bytes_checked, manifests_checked, errors, last_error, \
         created_ms, updated_ms, finished_ms) \
         VALUES ($1, $2, $3, $4, (SELECT COUNT(*) FROM blobs WHERE state = 0), \
         (SELECT COUNT(*) FROM manifests), 0, 0, 0, 0, NULL, $5, $5, NULL) RETURNING *) \
         SELECT {SCRUB_RUN_COLUMNS} FROM s"
    )))
    .bind(run.repair)
    .bind(&run.status)
    .bind(&run.phase)
    .bind(&run.cursor)
    .bind(run.created_ms)
    .fetch_one(conn)
    .await?;
    Ok(scrub_run_from_row(&row)?)
}

pub(super) async fn save_run(conn: &mut PgConnection, run: &ScrubRun) -> Result<(), TxError> {
    let n = sqlx::query(concat!(
        "UPDATE scrub_runs SET status = CASE WHEN status = 'stopping' \
         AND $2 NOT IN ('stopped', 'success', 'error') THEN status ELSE $2 END, phase = $3, \
         cursor = $4, blobs_checked = $5, bytes_checked = $6, manifests_checked = $7, \
         errors = $8, last_error = $9, updated_ms = ",
        now_ms!(),
        ", finished_ms = $10 WHERE id = $1"
    ))
    .bind(run.id)
    .bind(&run.status)
    .bind(&run.phase)
    .bind(&run.cursor)
    .bind(run.blobs_checked as i64)
    .bind(run.bytes_checked as i64)
    .bind(run.manifests_checked as i64)
    .bind(run.errors as i64)
    .bind(&run.last_error)
    .bind(run.finished_ms)
    .execute(conn)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(MetaError::NotFound(format!("scrub run {}", run.id)).into());
    }
    Ok(())
}

pub(super) async fn get_run(pool: &PgPool, id: i64) -> Result<Option<ScrubRun>, MetaError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SCRUB_RUN_COLUMNS} FROM scrub_runs s WHERE s.id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(to_meta)?;
    row.as_ref().map(scrub_run_from_row).transpose()
}

pub(super) async fn add_findings(
    conn: &mut PgConnection,
    findings: &[ScrubFinding],
) -> Result<(), TxError> {
    for f in findings {
        let (kind, digest, repo, target) = finding_key(f);
        let added = sqlx::query(
            "INSERT INTO scrub_findings (run_id, kind, digest, repo, target, detail, repaired, \
             created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (run_id, kind, digest, repo, target) DO UPDATE SET \
             detail = excluded.detail, repaired = scrub_findings.repaired OR excluded.repaired",
        )
        .bind(f.run_id)
        .bind(kind)
        .bind(digest)
        .bind(repo)
        .bind(target)
        .bind(&f.detail)
        .bind(f.repaired)
        .bind(f.created_ms)
        .execute(&mut *conn)
        .await;
        if let Err(e) = added {
            // 23503: the run does not exist (a foreign key violation).
            if super::sqlstate(&e).as_deref() == Some("23503") {
                return Err(MetaError::NotFound(format!("scrub run {}", f.run_id)).into());
            }
            return Err(e.into());
        }
    }
    Ok(())
}
