//! `/quotas`: each project's storage and artifact count limits and usage, in Harbor's shapes
//! (`Quota`, `QuotaUpdateReq`), with the artifact count Harbor dropped put back. A quota's id
//! is its project's. System administrators only.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::Json;
use berth_meta::quota::signed_limit;
use berth_meta::{Quota, QuotaLimits};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Authn;
use super::error::{Errors, HarborError};
use super::extract::{JsonBody, P, Q};
use super::gc::{actor, managed};
use super::paging::{paged, PageQuery};
use super::time;
use crate::AppState;

/// Limits or usage: `-1` is unlimited (in `hard`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
pub struct ResourceList {
    /// Bytes of storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<i64>,
    /// Artifacts (manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
}

/// What a quota belongs to.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaRef {
    /// The project's id.
    pub id: i64,
    /// The project's name.
    pub name: String,
}

/// A project's quota (Harbor's `Quota`).
#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaResp {
    /// Its id: the project's.
    pub id: i64,
    /// The project.
    #[serde(rename = "ref")]
    pub reference: QuotaRef,
    /// The limits (`-1`: none).
    pub hard: ResourceList,
    /// The usage: each blob its manifests reference counted once, plus the manifests.
    pub used: ResourceList,
    /// When the project was created.
    pub creation_time: String,
    /// When the limits last changed (the creation time if never).
    pub update_time: String,
}

/// A quota's limits and usage.
pub fn quota_resource(q: &Quota) -> (ResourceList, ResourceList) {
    (
        ResourceList {
            storage: Some(signed_limit(q.hard.storage)),
            count: Some(signed_limit(q.hard.count)),
        },
        ResourceList {
            storage: Some(signed_limit(Some(q.used_storage))),
            count: Some(signed_limit(Some(q.used_count))),
        },
    )
}

fn quota_resp(q: Quota) -> QuotaResp {
    let id = q.project_id.unwrap_or_default();
    let (hard, used) = quota_resource(&q);
    QuotaResp {
        id,
        reference: QuotaRef {
            id,
            name: q.project,
        },
        hard,
        used,
        creation_time: time(q.created_ms),
        update_time: time(if q.updated_ms > 0 {
            q.updated_ms
        } else {
            q.created_ms
        }),
    }
}

/// Filters of the quota list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QuotaListQuery {
    /// Only `project` is known.
    pub reference: Option<String>,
    /// The project's id.
    pub reference_id: Option<String>,
}

/// New limits (Harbor's `QuotaUpdateReq`); a limit left out keeps its value.
#[derive(Debug, Deserialize, ToSchema)]
pub struct QuotaUpdateReq {
    /// The limits: `-1` for none, else at least 0.
    pub hard: ResourceList,
}

/// A limit as given: `-1` is none; other negatives are refused.
fn limit(name: &str, v: i64) -> Result<Option<u64>, HarborError> {
    match v {
        -1 => Ok(None),
        v => u64::try_from(v).map(Some).map_err(|_| {
            HarborError::bad_request(format!("hard.{name} must be -1 (unlimited) or at least 0"))
        }),
    }
}

/// The limits a request sets, over the `current` ones.
pub fn limits(hard: ResourceList, current: QuotaLimits) -> Result<QuotaLimits, HarborError> {
    Ok(QuotaLimits {
        storage: match hard.storage {
            Some(v) => limit("storage", v)?,
            None => current.storage,
        },
        count: match hard.count {
            Some(v) => limit("count", v)?,
            None => current.count,
        },
    })
}

/// Project quotas, by project id.
#[utoipa::path(get, path = "/api/v2.0/quotas", operation_id = "listQuotas", tag = "quota", params(PageQuery, QuotaListQuery),
    responses((status = 200, body = [QuotaResp], headers(("X-Total-Count" = u64), ("Link" = String))),
        (status = 400, body = Errors), (status = 401, body = Errors), (status = 403, body = Errors)))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    uri: Uri,
    Q(pq): Q<PageQuery>,
    Q(lq): Q<QuotaListQuery>,
) -> Result<Response, HarborError> {
    managed(&s)?;
    let page = pq.page()?;
    if lq.reference.as_deref().is_some_and(|r| r != "project") {
        return Err(HarborError::bad_request(
            "reference must be \"project\": quotas belong to projects",
        ));
    }
    let project = match lq.reference_id.as_deref() {
        None => None,
        Some(id) => Some(
            id.parse::<i64>()
                .map_err(|_| HarborError::bad_request("reference_id must be a project id"))?,
        ),
    };
    let quotas = s
        .registry
        .quotas(&actor(&who), project, page.paging())
        .await?;
    let items = quotas.items.into_iter().map(quota_resp).collect();
    Ok(paged(&uri, page, quotas.total, items))
}

/// One project's quota.
#[utoipa::path(get, path = "/api/v2.0/quotas/{id}", operation_id = "getQuota", tag = "quota",
    params(("id" = i64, Path, description = "The quota's (its project's) id")),
    responses((status = 200, body = QuotaResp), (status = 401, body = Errors),
        (status = 403, body = Errors), (status = 404, body = Errors)))]
pub async fn get(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P(id): P<i64>,
) -> Result<Json<QuotaResp>, HarborError> {
    managed(&s)?;
    Ok(Json(quota_resp(s.registry.quota(&actor(&who), id).await?)))
}

/// Set a project's limits.
#[utoipa::path(put, path = "/api/v2.0/quotas/{id}", operation_id = "updateQuota", tag = "quota", request_body = QuotaUpdateReq,
    params(("id" = i64, Path, description = "The quota's (its project's) id")),
    responses((status = 200), (status = 400, body = Errors), (status = 401, body = Errors),
        (status = 403, body = Errors), (status = 404, body = Errors)))]
pub async fn update(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P(id): P<i64>,
    JsonBody(req): JsonBody<QuotaUpdateReq>,
) -> Result<StatusCode, HarborError> {
    managed(&s)?;
    let who = actor(&who);
    let current = s.registry.quota(&who, id).await?;
    s.registry
        .set_quota(&who, id, limits(req.hard, current.hard)?)
        .await?;
    Ok(StatusCode::OK)
}
