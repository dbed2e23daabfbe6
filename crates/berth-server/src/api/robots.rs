//! `/robots`: robot accounts (Harbor's `Robot`, `RobotCreate`, `RobotCreated`, `RobotSec`).
//! A secret appears in a response only when it is new: on creation and on a refresh that
//! generated it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_core::access::manage::{RobotChange, RobotRequest, RobotView};
use berth_core::access::robot::{RobotAccess, RobotPermission};
use berth_meta::{RobotFilter, RobotLevel};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{admin, Authn};
use super::error::{Errors, HarborError};
use super::extract::{JsonBody, P, Q};
use super::paging::{cond, paged_listing, parse_q, Cond, PageQuery};
use super::time;
use super::users::QParam;
use crate::AppState;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// One permission entry.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Access {
    /// Harbor's resource (`repository`, `artifact`, `tag`, ...).
    pub resource: String,
    /// Harbor's action (`pull`, `push`, `delete`, `list`, ...).
    pub action: String,
    /// Only `allow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
}

/// What a robot may do in a project (`namespace`, or `*` for all, system robots only).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RobotPermissionDto {
    /// Always `project`.
    pub kind: String,
    /// The project's name, or `*`.
    pub namespace: String,
    /// The permissions.
    pub access: Vec<Access>,
}

impl From<RobotPermissionDto> for RobotPermission {
    fn from(p: RobotPermissionDto) -> Self {
        Self {
            kind: p.kind,
            namespace: p.namespace,
            access: p
                .access
                .into_iter()
                .map(|a| RobotAccess {
                    resource: a.resource,
                    action: a.action,
                    effect: a.effect,
                })
                .collect(),
        }
    }
}

impl From<RobotPermission> for RobotPermissionDto {
    fn from(p: RobotPermission) -> Self {
        Self {
            kind: p.kind,
            namespace: p.namespace,
            access: p
                .access
                .into_iter()
                .map(|a| Access {
                    resource: a.resource,
                    action: a.action,
                    effect: a.effect,
                })
                .collect(),
        }
    }
}

/// A robot account as the API shows it (never its secret).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RobotResp {
    /// Its id.
    pub id: i64,
    /// Its full name (`robot$name` or `robot$project+name`).
    pub name: String,
    /// Free text.
    pub description: String,
    /// `system` or `project`.
    pub level: String,
    /// Lifetime in days from creation, -1 for never.
    pub duration: i64,
    /// Always true.
    pub editable: bool,
    /// Whether it is disabled.
    pub disable: bool,
    /// When it expires, seconds since the epoch, -1 for never.
    pub expires_at: i64,
    /// What it may do.
    pub permissions: Vec<RobotPermissionDto>,
    /// `local`: created by a user.
    pub creator_type: String,
    /// The creating user's id (0 if unknown).
    pub creator_ref: i64,
    /// When it was created.
    pub creation_time: String,
    /// When it last changed.
    pub update_time: String,
}

impl From<RobotView> for RobotResp {
    fn from(v: RobotView) -> Self {
        let r = v.robot;
        Self {
            id: r.id,
            name: v.full_name,
            description: r.description,
            level: match r.level {
                RobotLevel::System => "system",
                RobotLevel::Project(_) => "project",
            }
            .to_owned(),
            duration: r
                .expires_ms
                .map_or(-1, |e| (e - r.created_ms).div_euclid(DAY_MS)),
            editable: true,
            disable: r.disabled,
            expires_at: r.expires_ms.map_or(-1, |e| e.div_euclid(1000)),
            permissions: v.permissions.into_iter().map(Into::into).collect(),
            creator_type: "local".to_owned(),
            creator_ref: r.creator.unwrap_or(0),
            creation_time: time(r.created_ms),
            update_time: time(r.updated_ms),
        }
    }
}

/// A robot account to create.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct RobotCreate {
    /// Its name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// A secret of your choosing (password rule); generated if absent.
    pub secret: Option<String>,
    /// `system` or `project`.
    pub level: String,
    /// Created disabled.
    pub disable: bool,
    /// Lifetime in days: -1 never, 0 the default (30).
    pub duration: Option<i64>,
    /// What it may do; a project robot names exactly its project.
    pub permissions: Vec<RobotPermissionDto>,
}

/// A robot account just created, with its secret (shown only here).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RobotCreated {
    /// Its id.
    pub id: i64,
    /// Its full name.
    pub name: String,
    /// Its secret.
    pub secret: String,
    /// When it was created.
    pub creation_time: String,
    /// When it expires, seconds since the epoch, -1 for never.
    pub expires_at: i64,
}

/// Changes to a robot account (the fields of Harbor's `Robot` that may change).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct RobotUpdateReq {
    /// New description.
    pub description: Option<String>,
    /// Disable or enable.
    pub disable: Option<bool>,
    /// New lifetime in days from creation (-1 never).
    pub duration: Option<i64>,
    /// New permissions.
    pub permissions: Option<Vec<RobotPermissionDto>>,
}

/// A secret: empty or absent asks for a generated one.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct RobotSec {
    /// The secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

fn robot_filter(q: Option<&str>) -> Result<RobotFilter, HarborError> {
    let conds = parse_q(q)?;
    let level = cond(&conds, "Level").and_then(Cond::value);
    let project = cond(&conds, "ProjectID").and_then(Cond::value);
    match (level, project) {
        (None, None) => Ok(RobotFilter::All),
        (Some("system"), None) => Ok(RobotFilter::System),
        (Some("project") | None, Some(id)) => id
            .parse()
            .map(RobotFilter::Project)
            .map_err(|_| HarborError::bad_request("ProjectID must be a number")),
        _ => Err(HarborError::bad_request(
            "q takes Level=system, or Level=project,ProjectID=N",
        )),
    }
}

/// List robots: `q=Level=system`, `q=Level=project,ProjectID=N`, or all (system
/// administrators).
#[utoipa::path(get, path = "/api/v2.0/robots", operation_id = "ListRobot", tag = "robot", params(PageQuery, QParam),
    responses((status = 200, body = [RobotResp]), (status = 400, body = Errors),
        (status = 403, body = Errors), (status = 404, body = Errors)))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    uri: Uri,
    Q(pq): Q<PageQuery>,
    Q(qp): Q<QParam>,
) -> Result<Response, HarborError> {
    let page = pq.page()?;
    let filter = robot_filter(qp.q.as_deref())?;
    let robots = admin(&s)?.list_robots(&who, filter, page.paging()).await?;
    Ok(paged_listing(&uri, page, robots, RobotResp::from))
}

/// Create a robot account; the response carries its secret, this once.
#[utoipa::path(post, path = "/api/v2.0/robots", operation_id = "CreateRobot", tag = "robot", request_body = RobotCreate,
    responses((status = 201, body = RobotCreated), (status = 400, body = Errors),
        (status = 403, body = Errors), (status = 404, body = Errors), (status = 409, body = Errors)))]
pub async fn create(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    JsonBody(req): JsonBody<RobotCreate>,
) -> Result<Response, HarborError> {
    let system = match req.level.as_str() {
        "system" => true,
        "project" => false,
        other => {
            return Err(HarborError::bad_request(format!(
                "level must be system or project, not {other:?}"
            )))
        }
    };
    let request = RobotRequest {
        name: req.name,
        description: req.description,
        system,
        duration_days: req.duration.unwrap_or(-1),
        disabled: req.disable,
        permissions: req.permissions.into_iter().map(Into::into).collect(),
        secret: req.secret.filter(|s| !s.is_empty()),
    };
    let (view, secret) = admin(&s)?.create_robot(&who, request).await?;
    let r = &view.robot;
    let body = RobotCreated {
        id: r.id,
        name: view.full_name.clone(),
        secret,
        creation_time: time(r.created_ms),
        expires_at: r.expires_ms.map_or(-1, |e| e.div_euclid(1000)),
    };
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(v) = format!("/api/v2.0/robots/{}", r.id).parse() {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// One robot account.
#[utoipa::path(get, path = "/api/v2.0/robots/{robot_id}", operation_id = "GetRobotByID", tag = "robot",
    params(("robot_id" = i64, Path, description = "The robot's id")),
    responses((status = 200, body = RobotResp), (status = 403, body = Errors), (status = 404, body = Errors)))]
pub async fn get(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P(id): P<i64>,
) -> Result<Json<RobotResp>, HarborError> {
    Ok(Json(admin(&s)?.robot(&who, id).await?.into()))
}

/// Change a robot account: description, disable, duration, permissions.
#[utoipa::path(put, path = "/api/v2.0/robots/{robot_id}", operation_id = "UpdateRobot", tag = "robot", request_body = RobotUpdateReq,
    params(("robot_id" = i64, Path, description = "The robot's id")),
    responses((status = 200), (status = 400, body = Errors), (status = 403, body = Errors),
        (status = 404, body = Errors)))]
pub async fn update(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P(id): P<i64>,
    JsonBody(req): JsonBody<RobotUpdateReq>,
) -> Result<StatusCode, HarborError> {
    let change = RobotChange {
        description: req.description,
        disabled: req.disable,
        duration_days: req.duration,
        permissions: req
            .permissions
            .map(|p| p.into_iter().map(Into::into).collect()),
    };
    admin(&s)?.update_robot(&who, id, change).await?;
    Ok(StatusCode::OK)
}

/// Give a robot a new secret: `{"secret": ""}` generates one and returns it, this once; a
/// secret of your choosing is set and not echoed.
#[utoipa::path(patch, path = "/api/v2.0/robots/{robot_id}", operation_id = "RefreshSec", tag = "robot", request_body = RobotSec,
    params(("robot_id" = i64, Path, description = "The robot's id")),
    responses((status = 200, body = RobotSec), (status = 400, body = Errors),
        (status = 403, body = Errors), (status = 404, body = Errors)))]
pub async fn refresh(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P(id): P<i64>,
    JsonBody(req): JsonBody<RobotSec>,
) -> Result<Json<RobotSec>, HarborError> {
    let chosen = req.secret.filter(|s| !s.is_empty());
    let secret = admin(&s)?.refresh_robot_secret(&who, id, chosen).await?;
    Ok(Json(RobotSec { secret }))
}

/// Delete a robot account; its tokens stop working.
#[utoipa::path(delete, path = "/api/v2.0/robots/{robot_id}", operation_id = "DeleteRobot", tag = "robot",
    params(("robot_id" = i64, Path, description = "The robot's id")),
    responses((status = 200), (status = 403, body = Errors), (status = 404, body = Errors)))]
pub async fn delete(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P(id): P<i64>,
) -> Result<StatusCode, HarborError> {
    admin(&s)?.delete_robot(&who, id).await?;
    Ok(StatusCode::OK)
}
