//! `/audit-logs` and `/projects/{project_name}/logs` (Harbor's `AuditLog`), newest first.
//! `q` filters: `username`, `operation`, `resource_type` (exact), `resource` (contains),
//! `op_time=[from~to]` (`2006-01-02 15:04:05` or RFC 3339, UTC).

use std::sync::Arc;

use axum::extract::State;
use axum::http::Uri;
use axum::response::Response;
use berth_core::access::manage::ProjectRef;
use berth_meta::{AuditEvent, AuditFilter};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{admin, Authn};
use super::error::{Errors, HarborError};
use super::extract::{P, Q};
use super::paging::{cond, paged_listing, parse_q, Cond, PageQuery};
use super::time;
use super::users::QParam;
use crate::AppState;

/// An audit log entry.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditLogResp {
    /// Its id.
    pub id: i64,
    /// Who did it.
    pub username: String,
    /// What it was done to.
    pub resource: String,
    /// The kind of thing.
    pub resource_type: String,
    /// What was done.
    pub operation: String,
    /// When.
    pub op_time: String,
    /// The project, a Berth addition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The client's address, a Berth addition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    /// Whether it succeeded, a Berth addition (failed logins are logged too).
    pub success: bool,
}

impl From<AuditEvent> for AuditLogResp {
    fn from(e: AuditEvent) -> Self {
        Self {
            id: e.id,
            username: e.username,
            resource: e.resource,
            resource_type: e.resource_type,
            operation: e.operation,
            op_time: time(e.time_ms),
            project: e.project,
            source_ip: e.source_ip,
            success: e.success,
        }
    }
}

fn parse_time(s: &str) -> Result<i64, HarborError> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .map(|t| t.and_utc().timestamp_millis())
        .map_err(|_| {
            HarborError::bad_request(format!(
                "bad time {s:?}: use 2006-01-02 15:04:05 or RFC 3339"
            ))
        })
}

fn filter(q: Option<&str>) -> Result<AuditFilter, HarborError> {
    let conds = parse_q(q)?;
    let text = |k: &str| cond(&conds, k).and_then(Cond::value).map(str::to_owned);
    let mut f = AuditFilter {
        username: text("username"),
        operation: text("operation"),
        resource_type: text("resource_type"),
        resource_contains: text("resource"),
        ..AuditFilter::default()
    };
    match cond(&conds, "op_time") {
        Some(Cond::Range(from, to)) => {
            f.from_ms = from.as_deref().map(parse_time).transpose()?;
            f.to_ms = to.as_deref().map(parse_time).transpose()?;
        }
        Some(_) => return Err(HarborError::bad_request("op_time takes a range [from~to]")),
        None => {}
    }
    Ok(f)
}

/// The audit log: all of it for a system administrator, else the projects whose logs the
/// caller may list.
#[utoipa::path(get, path = "/api/v2.0/audit-logs", operation_id = "listAuditLogs", tag = "auditlog", params(PageQuery, QParam),
    responses((status = 200, body = [AuditLogResp]), (status = 400, body = Errors),
        (status = 401, body = Errors)))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    uri: Uri,
    Q(pq): Q<PageQuery>,
    Q(qp): Q<QParam>,
) -> Result<Response, HarborError> {
    let page = pq.page()?;
    let events = admin(&s)?
        .audit_log(&who, filter(qp.q.as_deref())?, page.paging())
        .await?;
    Ok(paged_listing(&uri, page, events, AuditLogResp::from))
}

/// A project's audit log (needs `log:list`).
#[utoipa::path(get, path = "/api/v2.0/projects/{project_name}/logs", operation_id = "getLogs", tag = "auditlog",
    params(("project_name" = String, Path, description = "The project's name"), PageQuery, QParam),
    responses((status = 200, body = [AuditLogResp]), (status = 404, body = Errors)))]
pub async fn project(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    uri: Uri,
    P(project): P<String>,
    Q(pq): Q<PageQuery>,
    Q(qp): Q<QParam>,
) -> Result<Response, HarborError> {
    let page = pq.page()?;
    let events = admin(&s)?
        .project_audit_log(
            &who,
            &ProjectRef::Name(project),
            filter(qp.q.as_deref())?,
            page.paging(),
        )
        .await?;
    Ok(paged_listing(&uri, page, events, AuditLogResp::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        let f = filter(Some("username=alice,op_time=[2020-01-01 00:00:00~]")).expect("valid");
        assert_eq!(f.username.as_deref(), Some("alice"));
        assert_eq!(f.from_ms, Some(1_577_836_800_000));
        assert_eq!(f.to_ms, None);
        assert!(filter(Some("op_time=[yesterday~]")).is_err());
    }
}
