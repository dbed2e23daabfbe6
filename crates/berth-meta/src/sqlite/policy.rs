//! Tag immutability rules on SQLite ([`crate::policy`]).

use rusqlite::{params, Connection};

use super::access::{change, rows};
use super::{backend, now_ms};
use crate::policy::{rule_from_row, RULE_COLUMNS};
use crate::{ImmutableRule, MetaError, ProjectId};

pub(super) fn rules(conn: &Connection, project: &str) -> Result<Vec<ImmutableRule>, MetaError> {
    rows(
        conn,
        &format!(
            "SELECT {RULE_COLUMNS} FROM immutable_rules r JOIN projects p ON p.id = r.project_id \
             WHERE p.name = ?1 ORDER BY r.priority, r.id"
        ),
        [project],
        |r| rule_from_row(r),
    )
}

pub(super) fn create(conn: &Connection, rule: &ImmutableRule) -> Result<i64, MetaError> {
    let exists = conn
        .prepare_cached("SELECT 1 FROM projects WHERE id = ?1")
        .and_then(|mut s| s.exists([rule.project_id]))
        .map_err(backend)?;
    if !exists {
        return Err(MetaError::NotFound(format!("project {}", rule.project_id)));
    }
    let t = now_ms();
    conn.prepare_cached(
        "INSERT INTO immutable_rules (project_id, disabled, priority, selectors, created_ms, \
         updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
    )
    .and_then(|mut s| {
        s.execute(params![
            rule.project_id,
            rule.disabled,
            rule.priority,
            rule.selectors,
            t
        ])
    })
    .map_err(backend)?;
    Ok(conn.last_insert_rowid())
}

pub(super) fn update(conn: &Connection, rule: &ImmutableRule) -> Result<bool, MetaError> {
    change(
        conn,
        "UPDATE immutable_rules SET disabled = ?3, priority = ?4, selectors = ?5, updated_ms = ?6 \
         WHERE id = ?1 AND project_id = ?2",
        params![
            rule.id,
            rule.project_id,
            rule.disabled,
            rule.priority,
            rule.selectors,
            now_ms()
        ],
    )
    .map(|n| n > 0)
    .map_err(backend)
}

pub(super) fn delete(conn: &Connection, project_id: ProjectId, id: i64) -> Result<bool, MetaError> {
    change(
        conn,
        "DELETE FROM immutable_rules WHERE id = ?1 AND project_id = ?2",
        params![id, project_id],
    )
    .map(|n| n > 0)
    .map_err(backend)
}
