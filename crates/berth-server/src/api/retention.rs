//! `/retentions`: a project's retention policy, its runs (executions), their tasks (one per
//! repository) and the tasks' logs, in Harbor's shapes (`RetentionPolicy`,
//! `RetentionExecution`, `RetentionExecutionTask`), with Berth's counters added to runs and
//! tasks, and `GET /retentions/{id}/executions/{eid}` (which Harbor lacks) for following one
//! run.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_core::retention::{Policy, Rule, TEMPLATES};
use berth_core::selector::ScopeSelectors;
use berth_meta::{RetentionExecution, RetentionTask};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::auth::{admin, Authn};
use super::error::{Errors, HarborError};
use super::extract::{JsonBody, P, Q};
use super::gc::capitalised;
use super::paging::{paged_listing, PageQuery};
use super::selector::SelectorObj;
use super::time;
use super::users::created;
use crate::AppState;

/// A rule (Harbor's `RetentionRule`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RetentionRule {
    /// Its id within the policy (numbered from 1 when saved; ignored in requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// Its priority.
    #[serde(default)]
    pub priority: i64,
    /// Whether it is off.
    #[serde(default)]
    pub disabled: bool,
    /// Always `retain`.
    #[serde(default = "retain")]
    pub action: String,
    /// `latestPushedK`, `latestPulledN`, `nDaysSinceLastPush`, `nDaysSinceLastPull`,
    /// `always` or `nothing` (see `/retentions/metadatas`).
    pub template: String,
    /// The template's parameter under its name: `{"latestPushedK": 10}`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
    /// Which tags (an artifact is selected if one of its tags matches them all).
    #[serde(default)]
    pub tag_selectors: Vec<SelectorObj>,
    /// Which repositories, under `repository` (all must match; none: every repository).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub scope_selectors: BTreeMap<String, Vec<SelectorObj>>,
}

fn retain() -> String {
    "retain".into()
}

/// When a policy runs by itself (Harbor's `RetentionRuleTrigger`).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct RetentionRuleTrigger {
    /// `Schedule`.
    #[serde(default = "schedule_kind")]
    pub kind: String,
    /// `cron`: six fields, `sec min hour day month weekday`, in UTC; empty or absent: only
    /// when asked. Answers add `next_scheduled_time`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub settings: Map<String, Value>,
    /// Unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub references: Option<Value>,
}

fn schedule_kind() -> String {
    "Schedule".into()
}

/// What a policy applies to (Harbor's `RetentionPolicyScope`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RetentionPolicyScope {
    /// `project`.
    pub level: String,
    /// The project's id.
    #[serde(rename = "ref")]
    pub reference: i64,
}

/// A project's retention policy (Harbor's `RetentionPolicy`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RetentionPolicyObj {
    /// Its id (answers only; ignored in requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// `or`: an artifact is kept if any rule keeps it.
    #[serde(default = "or")]
    pub algorithm: String,
    /// Its rules (at most 15).
    #[serde(default)]
    pub rules: Vec<RetentionRule>,
    /// Its schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<RetentionRuleTrigger>,
    /// Its project (required on creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<RetentionPolicyScope>,
}

fn or() -> String {
    "or".into()
}

impl RetentionPolicyObj {
    /// The project it names, if any.
    fn project(&self) -> Result<Option<i64>, HarborError> {
        match &self.scope {
            None => Ok(None),
            Some(s) if s.level == "project" && s.reference > 0 => Ok(Some(s.reference)),
            Some(s) if s.level != "project" => Err(HarborError::bad_request(format!(
                "scope.level must be \"project\", not {:?}",
                s.level
            ))),
            Some(s) => Err(HarborError::bad_request(format!(
                "scope.ref must be a project id, not {}",
                s.reference
            ))),
        }
    }

    fn policy(self) -> Result<Policy, HarborError> {
        let schedule = match self.trigger {
            None => None,
            Some(t) => {
                if t.kind != "Schedule" {
                    return Err(HarborError::bad_request(format!(
                        "trigger.kind must be \"Schedule\", not {:?}",
                        t.kind
                    )));
                }
                match t.settings.get("cron") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(c)) => Some(c.clone()),
                    Some(other) => {
                        return Err(HarborError::bad_request(format!(
                            "trigger.settings.cron must be text, not {other}"
                        )))
                    }
                }
            }
        };
        let mut rules = Vec::with_capacity(self.rules.len());
        for r in self.rules {
            let mut scope = r.scope_selectors;
            let repository = scope.remove("repository").unwrap_or_default();
            if let Some(other) = scope.keys().next() {
                return Err(HarborError::bad_request(format!(
                    "scope_selectors may only have \"repository\", not {other:?}"
                )));
            }
            rules.push(Rule {
                id: r.id.unwrap_or_default(),
                priority: r.priority,
                disabled: r.disabled,
                action: r.action,
                template: r.template,
                params: r.params,
                tag_selectors: r.tag_selectors.into_iter().map(Into::into).collect(),
                scope_selectors: ScopeSelectors {
                    repository: repository.into_iter().map(Into::into).collect(),
                },
            });
        }
        Ok(Policy {
            algorithm: self.algorithm,
            rules,
            schedule,
        })
    }
}

fn policy_obj(v: berth_core::access::manage::RetentionView) -> RetentionPolicyObj {
    let mut settings = Map::new();
    settings.insert(
        "cron".into(),
        Value::String(v.policy.schedule.clone().unwrap_or_default()),
    );
    if let Some(next) = v.next_run_ms {
        settings.insert("next_scheduled_time".into(), Value::String(time(next)));
    }
    RetentionPolicyObj {
        id: Some(v.id),
        algorithm: v.policy.algorithm,
        rules: v
            .policy
            .rules
            .into_iter()
            .map(|r| RetentionRule {
                id: Some(r.id),
                priority: r.priority,
                disabled: r.disabled,
                action: r.action,
                template: r.template,
                params: r.params,
                tag_selectors: r.tag_selectors.into_iter().map(Into::into).collect(),
                scope_selectors: BTreeMap::from([(
                    "repository".to_owned(),
                    r.scope_selectors
                        .repository
                        .into_iter()
                        .map(Into::into)
                        .collect(),
                )]),
            })
            .collect(),
        trigger: Some(RetentionRuleTrigger {
            kind: schedule_kind(),
            settings,
            references: None,
        }),
        scope: Some(RetentionPolicyScope {
            level: "project".into(),
            reference: v.project_id,
        }),
    }
}

/// A template's parameter (Harbor's `RetentionRuleParamMetadata`).
#[derive(Debug, Serialize, ToSchema)]
pub struct RetentionRuleParamMetadata {
    /// `int`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `COUNT` or `DAYS`.
    pub unit: &'static str,
    /// Always true.
    pub required: bool,
}

/// A template (Harbor's `RetentionRuleMetadata`).
#[derive(Debug, Serialize, ToSchema)]
pub struct RetentionRuleMetadata {
    /// Its name, for a rule's `template` (and its parameter's name).
    pub rule_template: &'static str,
    /// What it keeps, `#` standing for its parameter.
    pub display_text: &'static str,
    /// `retain`.
    pub action: &'static str,
    /// Its parameter, if it takes one.
    pub params: Vec<RetentionRuleParamMetadata>,
}

/// A kind of selector (Harbor's `RetentionSelectorMetadata`).
#[derive(Debug, Serialize, ToSchema)]
pub struct RetentionSelectorMetadata {
    /// What it selects.
    pub display_text: &'static str,
    /// `doublestar`.
    pub kind: &'static str,
    /// Its decorations.
    pub decorations: Vec<&'static str>,
}

/// The templates and selectors known (Harbor's `RetentionMetadata`).
#[derive(Debug, Serialize, ToSchema)]
pub struct RetentionMetadata {
    /// The rule templates.
    pub templates: Vec<RetentionRuleMetadata>,
    /// The repository selectors.
    pub scope_selectors: Vec<RetentionSelectorMetadata>,
    /// The tag selectors.
    pub tag_selectors: Vec<RetentionSelectorMetadata>,
}

/// A run (Harbor's `RetentionExecution`, plus Berth's counters).
#[derive(Debug, Serialize, ToSchema)]
pub struct RetentionExecutionObj {
    /// Its id.
    pub id: i64,
    /// Its policy.
    pub policy_id: i64,
    /// When it was asked for.
    pub start_time: String,
    /// When it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// `Pending`, `Running`, `Stopping`, `Success`, `Error` or `Stopped`.
    pub status: String,
    /// `MANUAL` or `SCHEDULE`.
    pub trigger: String,
    /// Whether it only reports.
    pub dry_run: bool,
    /// Berth: the repositories it processes (0 until it starts).
    pub repositories: u64,
    /// Berth: the repositories it has finished.
    pub repositories_done: u64,
    /// Berth: artifacts (manifests) looked at.
    pub total: u64,
    /// Berth: of those, kept.
    pub retained: u64,
    /// Berth: of those, deleted (or that would be, in a dry run).
    pub deleted: u64,
    /// Berth: deletions that failed.
    pub errors: u64,
    /// Berth: the last error met.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Berth: when it last changed.
    pub update_time: String,
}

fn execution_obj(e: RetentionExecution) -> RetentionExecutionObj {
    RetentionExecutionObj {
        id: e.id,
        policy_id: e.policy_id,
        start_time: time(e.created_ms),
        end_time: e.finished_ms.map(time),
        status: capitalised(&e.status),
        trigger: e.trigger.to_ascii_uppercase(),
        dry_run: e.dry_run,
        repositories: e.repositories,
        repositories_done: e.repositories_done,
        total: e.total,
        retained: e.retained,
        deleted: e.deleted,
        errors: e.errors,
        last_error: e.last_error,
        update_time: time(e.updated_ms),
    }
}

/// A task: one repository of a run (Harbor's `RetentionExecutionTask`, plus Berth's counts).
#[derive(Debug, Serialize, ToSchema)]
pub struct RetentionExecutionTaskObj {
    /// Its id.
    pub id: i64,
    /// Its run.
    pub execution_id: i64,
    /// The repository.
    pub repository: String,
    /// Always empty (Berth runs a whole run as one job).
    pub job_id: String,
    /// `Running`, `Success`, `Error` or `Stopped`.
    pub status: String,
    /// Harbor's code of the status: 1 running, 2 stopped, 3 error or success.
    pub status_code: i64,
    /// When it last changed (milliseconds since the Unix epoch).
    pub status_revision: i64,
    /// When it started.
    pub start_time: String,
    /// When it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// Manifests looked at.
    pub total: u64,
    /// Of those, kept.
    pub retained: u64,
    /// Berth: of those, deleted (or that would be).
    pub deleted: u64,
    /// Berth: deletions that failed.
    pub errors: u64,
}

fn task_obj(t: RetentionTask) -> RetentionExecutionTaskObj {
    let status_code = match t.status.as_str() {
        "running" => 1,
        "stopped" => 2,
        _ => 3,
    };
    RetentionExecutionTaskObj {
        id: t.id,
        execution_id: t.execution_id,
        repository: t.repository,
        job_id: String::new(),
        status: capitalised(&t.status),
        status_code,
        status_revision: t.updated_ms,
        start_time: time(t.created_ms),
        end_time: t.finished_ms.map(time),
        total: t.total,
        retained: t.retained,
        deleted: t.deleted,
        errors: t.errors,
    }
}

/// A run request.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct RetentionRunReq {
    /// Report what would be deleted; delete nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// An operation on a run.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RetentionOperateReq {
    /// `stop`.
    pub action: String,
}

/// The templates and selectors a policy may use.
// `getRentenitionMetadata` is Harbor's operation id, spelling included, so that clients
// generated from Harbor's document find it.
#[utoipa::path(get, path = "/api/v2.0/retentions/metadatas", operation_id = "getRentenitionMetadata", tag = "retention",
    responses((status = 200, body = RetentionMetadata), (status = 401, body = Errors)))]
pub async fn metadatas(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
) -> Result<Json<RetentionMetadata>, HarborError> {
    admin(&s)?;
    who.require_signed_in()?;
    let selector = |display_text, decorations| RetentionSelectorMetadata {
        display_text,
        kind: "doublestar",
        decorations,
    };
    Ok(Json(RetentionMetadata {
        templates: TEMPLATES
            .iter()
            .map(|t| RetentionRuleMetadata {
                rule_template: t.name,
                display_text: t.display,
                action: "retain",
                params: t
                    .unit
                    .map(|unit| RetentionRuleParamMetadata {
                        kind: "int",
                        unit,
                        required: true,
                    })
                    .into_iter()
                    .collect(),
            })
            .collect(),
        scope_selectors: vec![selector(
            "Repositories",
            vec!["repoMatches", "repoExcludes"],
        )],
        tag_selectors: vec![selector("Tags", vec!["matches", "excludes"])],
    }))
}

/// Give a project its retention policy (`scope.ref`: the project's id). A project has one.
#[utoipa::path(post, path = "/api/v2.0/retentions", operation_id = "createRetention", tag = "retention",
    request_body = RetentionPolicyObj,
    responses((status = 201, headers(("Location" = String))), (status = 400, body = Errors),
        (status = 401, body = Errors), (status = 403, body = Errors), (status = 404, body = Errors),
        (status = 409, body = Errors)))]
pub async fn create(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    JsonBody(req): JsonBody<RetentionPolicyObj>,
) -> Result<Response, HarborError> {
    let admin = admin(&s)?;
    let project = req.project()?.ok_or_else(|| {
        HarborError::bad_request("scope must name the project: {\"level\":\"project\",\"ref\":ID}")
    })?;
    let id = admin
        .create_retention_policy(&who, &s.registry, project, req.policy()?)
        .await?;
    Ok(created(format!("/api/v2.0/retentions/{id}")))
}

/// A retention policy.
#[utoipa::path(get, path = "/api/v2.0/retentions/{id}", operation_id = "getRetention", tag = "retention",
    params(("id" = i64, Path, description = "The policy's id")),
    responses((status = 200, body = RetentionPolicyObj), (status = 401, body = Errors),
        (status = 403, body = Errors), (status = 404, body = Errors)))]
pub async fn get(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P(id): P<i64>,
) -> Result<Json<RetentionPolicyObj>, HarborError> {
    let view = admin(&s)?.retention_policy(&who, &s.registry, id).await?;
    Ok(Json(policy_obj(view)))
}

/// Replace a policy's rules and schedule.
#[utoipa::path(put, path = "/api/v2.0/retentions/{id}", operation_id = "updateRetention", tag = "retention",
    request_body = RetentionPolicyObj,
    params(("id" = i64, Path, description = "The policy's id")),
    responses((status = 200), (status = 400, body = Errors), (status = 401, body = Errors),
        (status = 403, body = Errors), (status = 404, body = Errors)))]
pub async fn update(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P(id): P<i64>,
    JsonBody(req): JsonBody<RetentionPolicyObj>,
) -> Result<StatusCode, HarborError> {
    let project = req.project()?;
    admin(&s)?
        .update_retention_policy(&who, &s.registry, id, project, req.policy()?)
        .await?;
    Ok(StatusCode::OK)
}

/// Delete a policy and its history.
#[utoipa::path(delete, path = "/api/v2.0/retentions/{id}", operation_id = "deleteRetention", tag = "retention",
    params(("id" = i64, Path, description = "The policy's id")),
    responses((status = 200), (status = 401, body = Errors), (status = 403, body = Errors),
        (status = 404, body = Errors)))]
pub async fn delete(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P(id): P<i64>,
) -> Result<StatusCode, HarborError> {
    admin(&s)?
        .delete_retention_policy(&who, &s.registry, id)
        .await?;
    Ok(StatusCode::OK)
}

/// Run a policy now (`dry_run`: report only). Answers 201 with the run's `Location`.
#[utoipa::path(post, path = "/api/v2.0/retentions/{id}/executions", operation_id = "triggerRetentionExecution", tag = "retention",
    request_body = RetentionRunReq,
    params(("id" = i64, Path, description = "The policy's id")),
    responses((status = 201, headers(("Location" = String))), (status = 400, body = Errors),
        (status = 401, body = Errors), (status = 403, body = Errors), (status = 404, body = Errors),
        (status = 409, body = Errors)))]
pub async fn run(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P(id): P<i64>,
    JsonBody(req): JsonBody<RetentionRunReq>,
) -> Result<Response, HarborError> {
    let e = admin(&s)?
        .run_retention(&who, &s.registry, id, req.dry_run)
        .await?;
    Ok(created(format!(
        "/api/v2.0/retentions/{id}/executions/{}",
        e.id
    )))
}

/// A policy's runs, newest first.
#[utoipa::path(get, path = "/api/v2.0/retentions/{id}/executions", operation_id = "listRetentionExecutions", tag = "retention",
    params(("id" = i64, Path, description = "The policy's id"), PageQuery),
    responses((status = 200, body = [RetentionExecutionObj],
            headers(("X-Total-Count" = u64), ("Link" = String))),
        (status = 400, body = Errors), (status = 401, body = Errors), (status = 403, body = Errors),
        (status = 404, body = Errors)))]
pub async fn executions(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    uri: Uri,
    P(id): P<i64>,
    Q(pq): Q<PageQuery>,
) -> Result<Response, HarborError> {
    let page = pq.page()?;
    let runs = admin(&s)?
        .retention_executions(&who, &s.registry, id, page.paging())
        .await?;
    Ok(paged_listing(&uri, page, runs, execution_obj))
}

/// One run, with its progress (Berth; Harbor has no such endpoint).
#[utoipa::path(get, path = "/api/v2.0/retentions/{id}/executions/{eid}", operation_id = "getRetentionExecution", tag = "retention",
    params(("id" = i64, Path, description = "The policy's id"),
        ("eid" = i64, Path, description = "The run's id")),
    responses((status = 200, body = RetentionExecutionObj), (status = 401, body = Errors),
        (status = 403, body = Errors), (status = 404, body = Errors)))]
pub async fn execution(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P((id, eid)): P<(i64, i64)>,
) -> Result<Json<RetentionExecutionObj>, HarborError> {
    let e = admin(&s)?
        .retention_execution(&who, &s.registry, id, eid)
        .await?;
    Ok(Json(execution_obj(e)))
}

/// Stop a run (`{"action":"stop"}`): it stops at its next look, within about a second,
/// keeping what it deleted.
#[utoipa::path(patch, path = "/api/v2.0/retentions/{id}/executions/{eid}", operation_id = "operateRetentionExecution", tag = "retention",
    request_body = RetentionOperateReq,
    params(("id" = i64, Path, description = "The policy's id"),
        ("eid" = i64, Path, description = "The run's id")),
    responses((status = 200), (status = 400, body = Errors), (status = 401, body = Errors),
        (status = 403, body = Errors), (status = 404, body = Errors), (status = 409, body = Errors)))]
pub async fn operate(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P((id, eid)): P<(i64, i64)>,
    JsonBody(req): JsonBody<RetentionOperateReq>,
) -> Result<StatusCode, HarborError> {
    let admin = admin(&s)?;
    if req.action != "stop" {
        return Err(HarborError::bad_request(format!(
            "action must be \"stop\", not {:?}",
            req.action
        )));
    }
    admin.stop_retention(&who, &s.registry, id, eid).await?;
    Ok(StatusCode::OK)
}

/// A run's tasks: one per repository.
#[utoipa::path(get, path = "/api/v2.0/retentions/{id}/executions/{eid}/tasks", operation_id = "listRetentionTasks", tag = "retention",
    params(("id" = i64, Path, description = "The policy's id"),
        ("eid" = i64, Path, description = "The run's id"), PageQuery),
    responses((status = 200, body = [RetentionExecutionTaskObj],
            headers(("X-Total-Count" = u64), ("Link" = String))),
        (status = 400, body = Errors), (status = 401, body = Errors), (status = 403, body = Errors),
        (status = 404, body = Errors)))]
pub async fn tasks(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    uri: Uri,
    P((id, eid)): P<(i64, i64)>,
    Q(pq): Q<PageQuery>,
) -> Result<Response, HarborError> {
    let page = pq.page()?;
    let tasks = admin(&s)?
        .retention_tasks(&who, &s.registry, id, eid, page.paging())
        .await?;
    Ok(paged_listing(&uri, page, tasks, task_obj))
}

/// A task's log: each manifest of its repository, what became of it and why, as text.
#[utoipa::path(get, path = "/api/v2.0/retentions/{id}/executions/{eid}/tasks/{tid}", operation_id = "getRetentionTaskLog",
    tag = "retention",
    params(("id" = i64, Path, description = "The policy's id"),
        ("eid" = i64, Path, description = "The run's id"),
        ("tid" = i64, Path, description = "The task's id")),
    responses((status = 200, content_type = "text/plain", body = String),
        (status = 401, body = Errors), (status = 403, body = Errors), (status = 404, body = Errors)))]
pub async fn task_log(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P((id, eid, tid)): P<(i64, i64, i64)>,
) -> Result<Response, HarborError> {
    let text = admin(&s)?
        .retention_task_log(&who, &s.registry, id, eid, tid)
        .await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}
