//! Project quotas on SQLite ([`crate::quota`]): the triggers keep usage; these read it, set
//! limits, and judge a manifest put inside its savepoint.

use rusqlite::{params, types::Value, Connection};

use super::access::{listing, row};
use super::{backend, now_ms};
use crate::quota::{quota_from_row, signed_limit, QUOTA_COLUMNS, QUOTA_SOURCE, USAGE_COLUMNS};
use crate::{Listing, MetaError, Paging, ProjectId, Quota, QuotaLimits};

/// The quota of `project`.
pub(super) fn quota(conn: &Connection, project: &str) -> Result<Quota, MetaError> {
    if let Some(q) = row(
        conn,
        &format!("SELECT {USAGE_COLUMNS} FROM project_usage u WHERE u.project = ?1"),
        [project],
        |r| quota_from_row(r),
    )? {
        return Ok(q);
    }
    let mut q = Quota::empty(project);
    if let Some((id, created)) = row(
        conn,
        "SELECT id, created_ms FROM projects WHERE name = ?1",
        [project],
        |r| Ok((r.get(0).map_err(backend)?, r.get(1).map_err(backend)?)),
    )? {
        q.project_id = Some(id);
        q.created_ms = created;
    }
    Ok(q)
}

/// Refuse (so the caller's savepoint rolls back) if `project` is now past a limit: called
/// after a write that grew its usage.
pub(super) fn check(conn: &Connection, project: &str) -> Result<(), MetaError> {
    let q = quota(conn, project)?;
    match q.exceeded_by(q.used_storage, q.used_count) {
        Some(over) => Err(MetaError::QuotaExceeded(over)),
        None => Ok(()),
    }
}

pub(super) fn set(conn: &Connection, project: &str, limits: QuotaLimits) -> Result<(), MetaError> {
    conn.prepare_cached(
        "INSERT INTO project_usage (project, hard_bytes, hard_count, created_ms, updated_ms) \
         VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT (project) DO UPDATE \
         SET hard_bytes = excluded.hard_bytes, hard_count = excluded.hard_count, \
         updated_ms = excluded.updated_ms",
    )
    .and_then(|mut s| {
        s.execute(params![
            project,
            signed_limit(limits.storage),
            signed_limit(limits.count),
            now_ms()
        ])
    })
    .map_err(backend)?;
    Ok(())
}

pub(super) fn list(
    conn: &Connection,
    project: Option<ProjectId>,
    paging: Paging,
) -> Result<Listing<Quota>, MetaError> {
    let (from, args) = match project {
        Some(id) => (
            format!("{QUOTA_SOURCE} WHERE q.id = ?1"),
            vec![Value::Integer(id)],
        ),
        None => (QUOTA_SOURCE.to_owned(), Vec::new()),
    };
    listing(conn, QUOTA_COLUMNS, &from, "q.id", args, paging, |r| {
        quota_from_row(r)
    })
}
