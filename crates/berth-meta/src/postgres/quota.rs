//! Project quotas on PostgreSQL ([`crate::quota`]): the triggers keep usage (and take the
//! project's usage row first, so writers of one project queue there); these read it, set
//! limits, and judge a manifest put inside its transaction.

use sqlx::{PgConnection, PgExecutor};

use super::{to_meta, TxError};
use crate::quota::{quota_from_row, USAGE_COLUMNS};
use crate::{MetaError, Quota};

/// The quota of `project`.
pub(super) async fn quota<'c>(
    conn: impl PgExecutor<'c>,
    project: &str,
) -> Result<Quota, MetaError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {USAGE_COLUMNS} FROM project_usage u WHERE u.project = $1 \
         UNION ALL SELECT p.name, p.id, -1, -1, 0, 0, p.created_ms, 0 FROM projects p \
         WHERE p.name = $1 AND NOT EXISTS (SELECT 1 FROM project_usage WHERE project = $1)"
    )))
    .bind(project)
    .fetch_optional(conn)
    .await
    .map_err(to_meta)?;
    match row {
        Some(r) => quota_from_row(&r),
        None => Ok(Quota::empty(project)),
    }
}

/// Refuse (so the transaction rolls back) if `project` is now past a limit: called after a
/// write that grew its usage.
pub(super) async fn check(conn: &mut PgConnection, project: &str) -> Result<(), TxError> {
    let q = quota(conn, project).await?;
    match q.exceeded_by(q.used_storage, q.used_count) {
        Some(over) => Err(MetaError::QuotaExceeded(over).into()),
        None => Ok(()),
    }
}
