//! Scrub on SQLite ([`crate::scrub`]). Withdrawing a blob is one savepoint on the writer
//! thread, so no push can interleave with its two statements.

use berth_oci::{Digest, RepoName};
use rusqlite::{params, Connection};

use super::access::{change, listing, row, rows};
use super::{backend, now_ms, parse_digest};
use crate::gc::pair_cursor;
use crate::scrub::{
    finding_key, scrub_finding_from_row, scrub_run_from_row, SCRUB_FINDING_COLUMNS,
    SCRUB_RUN_COLUMNS,
};
use crate::{
    Listing, MetaError, MissingRefs, Paging, ScrubBlob, ScrubFinding, ScrubManifest,
    ScrubManifests, ScrubRun,
};

pub(super) fn blobs(
    conn: &Connection,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<ScrubBlob>, MetaError> {
    rows(
        conn,
        "SELECT digest, size FROM blobs WHERE state = 0 AND digest > ?1 \
         ORDER BY digest LIMIT ?2",
        params![after.unwrap_or(""), limit.max(1) as i64],
        |r| {
            Ok(ScrubBlob {
                digest: parse_digest(r.get(0).map_err(backend)?)?,
                size: r.get::<_, i64>(1).map_err(backend)?.max(0) as u64,
            })
        },
    )
}

pub(super) fn manifests(
    conn: &Connection,
    after: Option<&str>,
    limit: usize,
) -> Result<ScrubManifests, MetaError> {
    let limit = limit.max(1);
    let (id, digest) = pair_cursor(after);
    let window: Vec<(i64, ScrubManifest)> = rows(
        conn,
        "SELECT m.repo_id, r.name, m.digest, m.media_type, m.content \
         FROM manifests m JOIN repositories r ON r.id = m.repo_id \
         WHERE (m.repo_id, m.digest) > (?1, ?2) ORDER BY m.repo_id, m.digest LIMIT ?3",
        params![id, digest, limit as i64],
        |r| {
            let name: String = r.get(1).map_err(backend)?;
            Ok((
                r.get(0).map_err(backend)?,
                ScrubManifest {
                    repo: name.parse().map_err(|e| {
                        MetaError::Backend(format!("stored repository {name:?} is invalid: {e}"))
                    })?,
                    digest: parse_digest(r.get(2).map_err(backend)?)?,
                    media_type: r.get(3).map_err(backend)?,
                    content: r.get(4).map_err(backend)?,
                },
            ))
        },
    )?;
    let next = if window.len() < limit {
        None
    } else {
        window.last().map(|(id, m)| format!("{id}/{}", m.digest))
    };
    Ok(ScrubManifests {
        items: window.into_iter().map(|(_, m)| m).collect(),
        next,
    })
}

pub(super) fn missing_refs(
    conn: &Connection,
    repo: &RepoName,
    blobs: Vec<Digest>,
    manifests: Vec<Digest>,
) -> Result<MissingRefs, MetaError> {
    let mut linked = conn
        .prepare_cached(
            "SELECT 1 FROM repo_blobs l JOIN repositories r ON r.id = l.repo_id \
             JOIN blobs b ON b.digest = l.digest \
             WHERE r.name = ?1 AND l.digest = ?2 AND b.state = 0",
        )
        .map_err(backend)?;
    let mut missing = MissingRefs::default();
    for b in blobs {
        if !linked
            .exists(params![repo.as_str(), b.to_string()])
            .map_err(backend)?
        {
            missing.blobs.push(b);
        }
    }
    let mut held = conn
        .prepare_cached(
            "SELECT 1 FROM manifests m JOIN repositories r ON r.id = m.repo_id \
             WHERE r.name = ?1 AND m.digest = ?2",
        )
        .map_err(backend)?;
    for m in manifests {
        if !held
            .exists(params![repo.as_str(), m.to_string()])
            .map_err(backend)?
        {
            missing.manifests.push(m);
        }
    }
    Ok(missing)
}

pub(super) fn withdraw_blob(conn: &Connection, digest: &str) -> Result<bool, MetaError> {
    if change(
        conn,
        "UPDATE blobs SET state = 2 WHERE digest = ?1 AND state = 0",
        params![digest],
    )
    .map_err(backend)?
        == 0
    {
        return Ok(false);
    }
    change(
        conn,
        "DELETE FROM repo_blobs WHERE digest = ?1",
        params![digest],
    )
    .map_err(backend)?;
    Ok(true)
}

pub(super) fn create_run(conn: &Connection, run: &ScrubRun) -> Result<ScrubRun, MetaError> {
    change(
        conn,
        "INSERT INTO scrub_runs (repair, status, phase, cursor, blobs_total, manifests_total, \
         blobs_checked, bytes_checked, manifests_checked, errors, last_error, created_ms, \
         updated_ms, finished_ms) \
         VALUES (?1, ?2, ?3, ?4, (SELECT COUNT(*) FROM blobs WHERE state = 0), \
         (SELECT COUNT(*) FROM manifests), 0, 0, 0, 0, NULL, ?5, ?5, NULL)",
        params![
            run.repair,
            run.status,
            run.phase,
            run.cursor,
            run.created_ms
        ],
    )
    .map_err(backend)?;
    let id = conn.last_insert_rowid();
    get_run(conn, id)?.ok_or_else(|| MetaError::Backend("a new scrub run vanished".into()))
}

pub(super) fn save_run(conn: &Connection, run: &ScrubRun) -> Result<(), MetaError> {
    let n = change(
        conn,
        "UPDATE scrub_runs SET status = CASE WHEN status = 'stopping' \
         AND ?2 NOT IN ('stopped', 'success', 'error') THEN status ELSE ?2 END, phase = ?3, \
         cursor = ?4, blobs_checked = ?5, bytes_checked = ?6, manifests_checked = ?7, \
         errors = ?8, last_error = ?9, updated_ms = ?10, finished_ms = ?11 WHERE id = ?1",
        params![
            run.id,
            run.status,
            run.phase,
            run.cursor,
            run.blobs_checked as i64,
            run.bytes_checked as i64,
            run.manifests_checked as i64,
            run.errors as i64,
            run.last_error,
            now_ms(),
            run.finished_ms
        ],
    )
    .map_err(backend)?;
    if n == 0 {
        return Err(MetaError::NotFound(format!("scrub run {}", run.id)));
    }
    Ok(())
}

pub(super) fn get_run(conn: &Connection, id: i64) -> Result<Option<ScrubRun>, MetaError> {
    row(
        conn,
        &format!("SELECT {SCRUB_RUN_COLUMNS} FROM scrub_runs s WHERE s.id = ?1"),
        params![id],
        |r| scrub_run_from_row(r),
    )
}

pub(super) fn list_runs(conn: &Connection, page: Paging) -> Result<Listing<ScrubRun>, MetaError> {
    listing(
        conn,
        SCRUB_RUN_COLUMNS,
        "scrub_runs s",
        "s.id DESC",
        Vec::new(),
        page,
        |r| scrub_run_from_row(r),
    )
}

pub(super) fn add_findings(conn: &Connection, findings: &[ScrubFinding]) -> Result<(), MetaError> {
    let mut runs: Vec<i64> = findings.iter().map(|f| f.run_id).collect();
    runs.sort_unstable();
    runs.dedup();
    for id in runs {
        let exists = conn
            .prepare_cached("SELECT 1 FROM scrub_runs WHERE id = ?1")
            .and_then(|mut s| s.exists([id]))
            .map_err(backend)?;
        if !exists {
            return Err(MetaError::NotFound(format!("scrub run {id}")));
        }
    }
    let mut add = conn
        .prepare_cached(
            "INSERT INTO scrub_findings (run_id, kind, digest, repo, target, detail, repaired, \
             created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (run_id, kind, digest, repo, target) DO UPDATE SET \
             detail = excluded.detail, repaired = MAX(repaired, excluded.repaired)",
        )
        .map_err(backend)?;
    for f in findings {
        let (kind, digest, repo, target) = finding_key(f);
        add.execute(params![
            f.run_id,
            kind,
            digest,
            repo,
            target,
            f.detail,
            f.repaired,
            f.created_ms
        ])
        .map_err(backend)?;
    }
    Ok(())
}

pub(super) fn findings(
    conn: &Connection,
    run_id: i64,
    page: Paging,
) -> Result<Listing<ScrubFinding>, MetaError> {
    listing(
        conn,
        SCRUB_FINDING_COLUMNS,
        "scrub_findings f WHERE f.run_id = ?1",
        "f.id",
        vec![rusqlite::types::Value::Integer(run_id)],
        page,
        |r| scrub_finding_from_row(r),
    )
}
