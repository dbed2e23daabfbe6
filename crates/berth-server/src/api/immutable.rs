//! `/projects/{project_name_or_id}/immutabletagrules`: tag immutability rules in Harbor's
//! shape (`ImmutableRule`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use berth_core::access::manage::RuleRequest;
use berth_core::immutable::RuleSelectors;
use berth_core::selector::ScopeSelectors;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::auth::{admin, Authn};
use super::error::{Errors, HarborError};
use super::extract::{JsonBody, P, Q};
use super::paging::{paged, PageQuery};
use super::projects::project_ref;
use super::selector::SelectorObj;
use super::users::created;
use crate::AppState;

/// A rule (Harbor's `ImmutableRule`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImmutableRuleObj {
    /// Its id (answers only; ignored in requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// Its priority.
    #[serde(default)]
    pub priority: i64,
    /// Whether it is off.
    #[serde(default)]
    pub disabled: bool,
    /// Always `immutable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Always `immutable_template`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub params: Option<Value>,
    /// Which tags (all must match; none: every tag).
    #[serde(default)]
    pub tag_selectors: Vec<SelectorObj>,
    /// Which repositories, under `repository` (all must match; none: every repository).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub scope_selectors: std::collections::BTreeMap<String, Vec<SelectorObj>>,
}

impl ImmutableRuleObj {
    fn request(self) -> Result<RuleRequest, HarborError> {
        if let Some(a) = self.action.as_deref().filter(|a| *a != "immutable") {
            return Err(HarborError::bad_request(format!(
                "action must be \"immutable\", not {a:?}"
            )));
        }
        let mut scope = self.scope_selectors;
        let repository = scope.remove("repository").unwrap_or_default();
        if let Some(other) = scope.keys().next() {
            return Err(HarborError::bad_request(format!(
                "scope_selectors may only have \"repository\", not {other:?}"
            )));
        }
        Ok(RuleRequest {
            disabled: self.disabled,
            priority: self.priority,
            selectors: RuleSelectors {
                tag_selectors: self.tag_selectors.into_iter().map(Into::into).collect(),
                scope_selectors: ScopeSelectors {
                    repository: repository.into_iter().map(Into::into).collect(),
                },
            },
        })
    }
}

fn rule_obj(rule: &berth_meta::ImmutableRule, selectors: RuleSelectors) -> ImmutableRuleObj {
    ImmutableRuleObj {
        id: Some(rule.id),
        priority: rule.priority,
        disabled: rule.disabled,
        action: Some("immutable".into()),
        template: Some("immutable_template".into()),
        params: Some(Value::Object(Default::default())),
        tag_selectors: selectors
            .tag_selectors
            .into_iter()
            .map(Into::into)
            .collect(),
        scope_selectors: [(
            "repository".to_owned(),
            selectors
                .scope_selectors
                .repository
                .into_iter()
                .map(Into::into)
                .collect(),
        )]
        .into(),
    }
}

/// A project's rules, by priority then id.
#[utoipa::path(get, path = "/api/v2.0/projects/{project_name_or_id}/immutabletagrules", operation_id = "ListImmuRules",
    tag = "immutable", params(PageQuery,
        ("project_name_or_id" = String, Path, description = "Name or id"),
        ("X-Is-Resource-Name" = Option<bool>, Header, description = "true: the parameter is a name")),
    responses((status = 200, body = [ImmutableRuleObj], headers(("X-Total-Count" = u64), ("Link" = String))),
        (status = 401, body = Errors), (status = 403, body = Errors), (status = 404, body = Errors)))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    headers: HeaderMap,
    uri: Uri,
    P(project): P<String>,
    Q(pq): Q<PageQuery>,
) -> Result<Response, HarborError> {
    let page = pq.page()?;
    let rules = admin(&s)?
        .immutable_rules(&who, &s.registry, &project_ref(&headers, project))
        .await?;
    let total = rules.len() as u64;
    let window = page.paging();
    let items = rules
        .into_iter()
        .skip(usize::try_from(window.offset).unwrap_or(usize::MAX))
        .take(usize::try_from(window.limit).unwrap_or(usize::MAX))
        .map(|(r, sel)| rule_obj(&r, sel))
        .collect();
    Ok(paged(&uri, page, total, items))
}

/// Add a rule (201 with its `Location`).
#[utoipa::path(post, path = "/api/v2.0/projects/{project_name_or_id}/immutabletagrules", operation_id = "CreateImmuRule",
    tag = "immutable", request_body = ImmutableRuleObj,
    params(("project_name_or_id" = String, Path, description = "Name or id"),
        ("X-Is-Resource-Name" = Option<bool>, Header, description = "true: the parameter is a name")),
    responses((status = 201, headers(("Location" = String))), (status = 400, body = Errors),
        (status = 401, body = Errors), (status = 403, body = Errors), (status = 404, body = Errors)))]
pub async fn create(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    headers: HeaderMap,
    P(project): P<String>,
    JsonBody(rule): JsonBody<ImmutableRuleObj>,
) -> Result<Response, HarborError> {
    let r = project_ref(&headers, project.clone());
    let id = admin(&s)?
        .create_immutable_rule(&who, &s.registry, &r, &rule.request()?)
        .await?;
    Ok(created(format!(
        "/api/v2.0/projects/{project}/immutabletagrules/{id}"
    )))
}

/// Change a rule (to turn it off: `{"disabled": true}` with its selectors).
#[utoipa::path(put, path = "/api/v2.0/projects/{project_name_or_id}/immutabletagrules/{immutable_rule_id}", operation_id = "UpdateImmuRule",
    tag = "immutable", request_body = ImmutableRuleObj,
    params(("project_name_or_id" = String, Path, description = "Name or id"),
        ("immutable_rule_id" = i64, Path, description = "The rule's id"),
        ("X-Is-Resource-Name" = Option<bool>, Header, description = "true: the parameter is a name")),
    responses((status = 200), (status = 400, body = Errors), (status = 401, body = Errors),
        (status = 403, body = Errors), (status = 404, body = Errors)))]
pub async fn update(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    headers: HeaderMap,
    P((project, id)): P<(String, i64)>,
    JsonBody(rule): JsonBody<ImmutableRuleObj>,
) -> Result<StatusCode, HarborError> {
    admin(&s)?
        .update_immutable_rule(
            &who,
            &s.registry,
            &project_ref(&headers, project),
            id,
            &rule.request()?,
        )
        .await?;
    Ok(StatusCode::OK)
}

/// Delete a rule.
#[utoipa::path(delete, path = "/api/v2.0/projects/{project_name_or_id}/immutabletagrules/{immutable_rule_id}", operation_id = "DeleteImmuRule",
    tag = "immutable",
    params(("project_name_or_id" = String, Path, description = "Name or id"),
        ("immutable_rule_id" = i64, Path, description = "The rule's id"),
        ("X-Is-Resource-Name" = Option<bool>, Header, description = "true: the parameter is a name")),
    responses((status = 200), (status = 401, body = Errors), (status = 403, body = Errors),
        (status = 404, body = Errors)))]
pub async fn delete(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    headers: HeaderMap,
    P((project, id)): P<(String, i64)>,
) -> Result<StatusCode, HarborError> {
    admin(&s)?
        .delete_immutable_rule(&who, &s.registry, &project_ref(&headers, project), id)
        .await?;
    Ok(StatusCode::OK)
}
