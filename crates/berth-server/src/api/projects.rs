//! `/projects` and `/projects/{project_name_or_id}/members` (Harbor's `Project`,
//! `ProjectReq`, `ProjectMemberEntity`, `ProjectMember`, `RoleRequest`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_core::access::manage::{MemberTarget, ProjectRef, ProjectView};
use berth_meta::{Member, MemberEntity, ProjectFilter, ProjectRole, QuotaLimits};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{admin, Authn};
use super::error::{Errors, HarborError};
use super::extract::{JsonBody, P, Q};
use super::gc::actor;
use super::paging::{cond, paged_listing, parse_q, PageQuery};
use super::quotas::{quota_resource, ResourceList};
use super::time;
use super::users::{created, QParam};
use crate::AppState;

/// A project's metadata: Harbor keeps its flags as the strings `"true"`/`"false"`.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct ProjectMetadata {
    /// `"true"` if anyone may pull from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public: Option<String>,
    /// The id of its retention policy, if it has one (answers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_id: Option<String>,
}

/// A project as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProjectResp {
    /// Its id.
    pub project_id: i64,
    /// The user who created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<i64>,
    /// Its name.
    pub name: String,
    /// When it was created.
    pub creation_time: String,
    /// When it last changed.
    pub update_time: String,
    /// Always false (deleted projects are gone).
    pub deleted: bool,
    /// The caller's most privileged role in it, or 0.
    pub current_user_role_id: i64,
    /// All the caller's roles in it.
    pub current_user_role_ids: Vec<i64>,
    /// How many repositories it holds.
    pub repo_count: u64,
    /// Its metadata (`public`).
    pub metadata: ProjectMetadata,
}

/// Privilege order of Harbor's role ids, most first.
const ROLE_ORDER: [ProjectRole; 5] = [
    ProjectRole::ProjectAdmin,
    ProjectRole::Maintainer,
    ProjectRole::Developer,
    ProjectRole::Guest,
    ProjectRole::LimitedGuest,
];

impl From<ProjectView> for ProjectResp {
    fn from(v: ProjectView) -> Self {
        let p = v.project;
        let top = ROLE_ORDER
            .iter()
            .find(|r| v.roles.contains(r))
            .map_or(0, |r| r.id());
        Self {
            project_id: p.id,
            owner_id: p.owner,
            name: p.name,
            creation_time: time(p.created_ms),
            update_time: time(p.updated_ms),
            deleted: false,
            current_user_role_id: top,
            current_user_role_ids: v.roles.iter().map(|r| r.id()).collect(),
            repo_count: p.repo_count,
            metadata: ProjectMetadata {
                public: Some(p.public.to_string()),
                retention_id: None,
            },
        }
    }
}

/// A project to create or change.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct ProjectReq {
    /// Its name (on creation).
    pub project_name: Option<String>,
    /// Deprecated in Harbor; `metadata.public` wins when both are given.
    pub public: Option<bool>,
    /// `public`: `"true"` or `"false"`.
    pub metadata: Option<ProjectMetadata>,
    /// On creation: the project's storage quota in bytes (`-1`: none, the default). Only a
    /// system administrator may set one.
    pub storage_limit: Option<i64>,
    /// Proxy-cache projects are not supported: must be absent.
    pub registry_id: Option<i64>,
}

impl ProjectReq {
    fn public(&self) -> Result<Option<bool>, HarborError> {
        match self.metadata.as_ref().and_then(|m| m.public.as_deref()) {
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(HarborError::bad_request(format!(
                "metadata.public must be \"true\" or \"false\", not {other:?}"
            ))),
            None => Ok(self.public),
        }
    }
}

/// Filters of the project list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProjectListQuery {
    /// Only projects whose name contains this.
    pub name: Option<String>,
    /// Only public (`true`) or private (`false`) projects.
    pub public: Option<bool>,
}

/// The `project_name` of `HEAD /projects`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProjectNameQuery {
    /// The name to check.
    pub project_name: String,
}

/// How `{project_name_or_id}` is read: a name if `X-Is-Resource-Name: true` or it is not
/// an integer, else an id.
pub fn project_ref(headers: &HeaderMap, s: String) -> ProjectRef {
    let by_name = headers
        .get("x-is-resource-name")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    match s.parse::<i64>() {
        Ok(id) if !by_name => ProjectRef::Id(id),
        _ => ProjectRef::Name(s),
    }
}

/// List the projects the caller may see. Filters: `name` (contains), `public`, and
/// `q=name=~x,public=true`.
#[utoipa::path(get, path = "/api/v2.0/projects", operation_id = "listProjects", tag = "project",
    params(PageQuery, QParam, ProjectListQuery),
    responses((status = 200, body = [ProjectResp], headers(("X-Total-Count" = u64), ("Link" = String))),
        (status = 400, body = Errors)))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    uri: Uri,
    Q(pq): Q<PageQuery>,
    Q(qp): Q<QParam>,
    Q(lq): Q<ProjectListQuery>,
) -> Result<Response, HarborError> {
    let page = pq.page()?;
    let conds = parse_q(qp.q.as_deref())?;
    let public = match cond(&conds, "public").and_then(|c| c.value()) {
        Some(v) => Some(
            v.parse::<bool>()
                .map_err(|_| HarborError::bad_request("public must be true or false"))?,
        ),
        None => lq.public,
    };
    let name = cond(&conds, "name")
        .and_then(|c| c.value())
        .map(str::to_owned)
        .or(lq.name);
    let filter = ProjectFilter {
        name_contains: name,
        public,
        visible_to: None,
    };
    let projects = admin(&s)?
        .list_projects(&who, filter, page.paging())
        .await?;
    Ok(paged_listing(&uri, page, projects, ProjectResp::from))
}

/// Whether a project name is taken: 200 if so, 404 if not.
#[utoipa::path(head, path = "/api/v2.0/projects", operation_id = "headProject", tag = "project", params(ProjectNameQuery),
    responses((status = 200), (status = 404), (status = 401)))]
pub async fn head(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    Q(q): Q<ProjectNameQuery>,
) -> Result<StatusCode, HarborError> {
    if admin(&s)?.project_exists(&who, &q.project_name).await? {
        Ok(StatusCode::OK)
    } else {
        Err(HarborError::not_found(format!(
            "project {} does not exist",
            q.project_name
        )))
    }
}

/// Create a project (any signed-in user, who becomes its project admin).
#[utoipa::path(post, path = "/api/v2.0/projects", operation_id = "createProject", tag = "project", request_body = ProjectReq,
    responses((status = 201), (status = 400, body = Errors), (status = 401, body = Errors),
        (status = 409, body = Errors)))]
pub async fn create(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    JsonBody(req): JsonBody<ProjectReq>,
) -> Result<Response, HarborError> {
    if req.registry_id.is_some() {
        return Err(HarborError::bad_request(
            "proxy-cache projects (registry_id) are not supported",
        ));
    }
    let public = req.public()?.unwrap_or(false);
    let name = req
        .project_name
        .ok_or_else(|| HarborError::bad_request("project_name is required"))?;
    let storage = match req.storage_limit {
        None | Some(-1) => None,
        Some(v) => Some(u64::try_from(v).map_err(|_| {
            HarborError::bad_request("storage_limit must be -1 (unlimited) or at least 0")
        })?),
    };
    if storage.is_some() {
        who.require_sysadmin()?;
    }
    let p = admin(&s)?.create_project(&who, &name, public).await?;
    if storage.is_some() {
        let limits = QuotaLimits {
            storage,
            count: None,
        };
        s.registry.set_quota(&actor(&who), p.id, limits).await?;
    }
    Ok(created(format!("/api/v2.0/projects/{}", p.id)))
}

/// A project.
#[utoipa::path(get, path = "/api/v2.0/projects/{project_name_or_id}", operation_id = "getProject", tag = "project",
    params(("project_name_or_id" = String, Path, description = "Name or id"),
        ("X-Is-Resource-Name" = Option<bool>, Header, description = "true: the parameter is a name")),
    responses((status = 200, body = ProjectResp), (status = 401, body = Errors),
        (status = 404, body = Errors)))]
pub async fn get(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    headers: HeaderMap,
    P(project): P<String>,
) -> Result<Json<ProjectResp>, HarborError> {
    let admin = admin(&s)?;
    let r = project_ref(&headers, project);
    let view = admin.project(&who, &r).await?;
    let retention = admin
        .project_retention_id(&who, &s.registry, &ProjectRef::Id(view.project.id))
        .await?;
    let mut resp = ProjectResp::from(view);
    resp.metadata.retention_id = retention.map(|id| id.to_string());
    Ok(Json(resp))
}

/// Change a project: `metadata.public`.
#[utoipa::path(put, path = "/api/v2.0/projects/{project_name_or_id}", operation_id = "updateProject", tag = "project",
    request_body = ProjectReq,
    params(("project_name_or_id" = String, Path, description = "Name or id"),
        ("X-Is-Resource-Name" = Option<bool>, Header, description = "true: the parameter is a name")),
    responses((status = 200), (status = 400, body = Errors), (status = 403, body = Errors),
        (status = 404, body = Errors)))]
pub async fn update(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    headers: HeaderMap,
    P(project): P<String>,
    JsonBody(req): JsonBody<ProjectReq>,
) -> Result<StatusCode, HarborError> {
    let r = project_ref(&headers, project);
    let admin = admin(&s)?;
    match req.public()? {
        Some(public) => admin.set_project_public(&who, &r, public).await?,
        // Nothing to change; still answer as the caller's rights say.
        None => {
            admin.project(&who, &r).await?;
        }
    }
    Ok(StatusCode::OK)
}

/// Delete an empty project (412 while it holds repositories).
#[utoipa::path(delete, path = "/api/v2.0/projects/{project_name_or_id}", operation_id = "deleteProject", tag = "project",
    params(("project_name_or_id" = String, Path, description = "Name or id"),
        ("X-Is-Resource-Name" = Option<bool>, Header, description = "true: the parameter is a name")),
    responses((status = 200), (status = 403, body = Errors), (status = 404, body = Errors),
        (status = 412, body = Errors)))]
pub async fn delete(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    headers: HeaderMap,
    P(project): P<String>,
) -> Result<StatusCode, HarborError> {
    let gone = admin(&s)?
        .delete_project(&who, &project_ref(&headers, project))
        .await?;
    s.registry.forget_project(&gone.name);
    Ok(StatusCode::OK)
}

/// A membership as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProjectMemberEntity {
    /// The membership's id.
    pub id: i64,
    /// The project's id.
    pub project_id: i64,
    /// The user's or group's name.
    pub entity_name: String,
    /// The role's name.
    pub role_name: String,
    /// The role's id (1 project admin, 2 developer, 3 guest, 4 maintainer, 5 limited guest).
    pub role_id: i64,
    /// The user's or group's id.
    pub entity_id: i64,
    /// `u` for a user, `g` for a group.
    pub entity_type: String,
}

impl From<Member> for ProjectMemberEntity {
    fn from(m: Member) -> Self {
        let (entity_id, entity_type) = match m.entity {
            MemberEntity::User(id) => (id, "u"),
            MemberEntity::Group(id) => (id, "g"),
        };
        Self {
            id: m.id,
            project_id: m.project_id,
            entity_name: m.entity_name,
            role_name: m.role.name().to_owned(),
            role_id: m.role.id(),
            entity_id,
            entity_type: entity_type.to_owned(),
        }
    }
}

/// A user named in a membership request.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct UserEntity {
    /// Its id.
    pub user_id: Option<i64>,
    /// Its name.
    pub username: Option<String>,
}

/// A group named in a membership request.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct UserGroupEntity {
    /// Its id.
    pub id: Option<i64>,
    /// Its name.
    pub group_name: Option<String>,
}

/// A member to add.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct ProjectMember {
    /// The role's id.
    pub role_id: i64,
    /// A user (by name or id).
    pub member_user: Option<UserEntity>,
    /// A group (by name or id).
    pub member_group: Option<UserGroupEntity>,
}

/// A new role.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RoleRequest {
    /// The role's id.
    pub role_id: i64,
}

/// The `entityname` filter of the member list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MemberQuery {
    /// Only members whose name contains this.
    pub entityname: Option<String>,
}

fn role(id: i64) -> Result<ProjectRole, HarborError> {
    ProjectRole::from_id(id)
        .ok_or_else(|| HarborError::bad_request(format!("unknown role_id {id} (1 to 5)")))
}

fn target(m: &ProjectMember) -> Result<MemberTarget, HarborError> {
    match (&m.member_user, &m.member_group) {
        (Some(u), None) => match (&u.username, u.user_id) {
            (Some(name), _) => Ok(MemberTarget::User(name.clone())),
            (None, Some(id)) => Ok(MemberTarget::UserId(id)),
            (None, None) => Err(HarborError::bad_request(
                "member_user needs username or user_id",
            )),
        },
        (None, Some(g)) => match (&g.group_name, g.id) {
            (Some(name), _) => Ok(MemberTarget::Group(name.clone())),
            (None, Some(id)) => Ok(MemberTarget::GroupId(id)),
            (None, None) => Err(HarborError::bad_request(
                "member_group needs group_name or id",
            )),
        },
        _ => Err(HarborError::bad_request(
            "give exactly one of member_user and member_group",
        )),
    }
}

/// The members of a project (needs `member:list`).
#[utoipa::path(get, path = "/api/v2.0/projects/{project_name_or_id}/members", operation_id = "listProjectMembers", tag = "member",
    params(("project_name_or_id" = String, Path, description = "Name or id"), PageQuery, MemberQuery),
    responses((status = 200, body = [ProjectMemberEntity]), (status = 404, body = Errors)))]
pub async fn list_members(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    headers: HeaderMap,
    uri: Uri,
    P(project): P<String>,
    Q(pq): Q<PageQuery>,
    Q(mq): Q<MemberQuery>,
) -> Result<Response, HarborError> {
    let page = pq.page()?;
    let (_, members) = admin(&s)?
        .list_members(
            &who,
            &project_ref(&headers, project),
            mq.entityname.as_deref(),
            page.paging(),
        )
        .await?;
    Ok(paged_listing(
        &uri,
        page,
        members,
        ProjectMemberEntity::from,
    ))
}

/// Add a user or group to a project (needs `member:create`).
#[utoipa::path(post, path = "/api/v2.0/projects/{project_name_or_id}/members", operation_id = "createProjectMember", tag = "member",
    request_body = ProjectMember,
    params(("project_name_or_id" = String, Path, description = "Name or id")),
    responses((status = 201), (status = 400, body = Errors), (status = 403, body = Errors),
        (status = 404, body = Errors), (status = 409, body = Errors)))]
pub async fn add_member(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    headers: HeaderMap,
    P(project): P<String>,
    JsonBody(m): JsonBody<ProjectMember>,
) -> Result<Response, HarborError> {
    let role = role(m.role_id)?;
    let target = target(&m)?;
    let r = project_ref(&headers, project.clone());
    let id = admin(&s)?.add_member(&who, &r, &target, role).await?;
    Ok(created(format!(
        "/api/v2.0/projects/{project}/members/{id}"
    )))
}

/// One membership (needs `member:read`).
#[utoipa::path(get, path = "/api/v2.0/projects/{project_name_or_id}/members/{mid}", operation_id = "getProjectMember", tag = "member",
    params(("project_name_or_id" = String, Path, description = "Name or id"),
        ("mid" = i64, Path, description = "The membership's id")),
    responses((status = 200, body = ProjectMemberEntity), (status = 404, body = Errors)))]
pub async fn get_member(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    headers: HeaderMap,
    P((project, mid)): P<(String, i64)>,
) -> Result<impl IntoResponse, HarborError> {
    let m = admin(&s)?
        .member(&who, &project_ref(&headers, project), mid)
        .await?;
    Ok(Json(ProjectMemberEntity::from(m)))
}

/// Change a member's role (needs `member:update`).
#[utoipa::path(put, path = "/api/v2.0/projects/{project_name_or_id}/members/{mid}", operation_id = "updateProjectMember", tag = "member",
    request_body = RoleRequest,
    params(("project_name_or_id" = String, Path, description = "Name or id"),
        ("mid" = i64, Path, description = "The membership's id")),
    responses((status = 200), (status = 400, body = Errors), (status = 403, body = Errors),
        (status = 404, body = Errors)))]
pub async fn update_member(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    headers: HeaderMap,
    P((project, mid)): P<(String, i64)>,
    JsonBody(r): JsonBody<RoleRequest>,
) -> Result<StatusCode, HarborError> {
    let role = role(r.role_id)?;
    admin(&s)?
        .set_member_role(&who, &project_ref(&headers, project), mid, role)
        .await?;
    Ok(StatusCode::OK)
}

/// Remove a member (needs `member:delete`).
#[utoipa::path(delete, path = "/api/v2.0/projects/{project_name_or_id}/members/{mid}", operation_id = "deleteProjectMember", tag = "member",
    params(("project_name_or_id" = String, Path, description = "Name or id"),
        ("mid" = i64, Path, description = "The membership's id")),
    responses((status = 200), (status = 403, body = Errors), (status = 404, body = Errors)))]
pub async fn delete_member(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    headers: HeaderMap,
    P((project, mid)): P<(String, i64)>,
) -> Result<StatusCode, HarborError> {
    admin(&s)?
        .remove_member(&who, &project_ref(&headers, project), mid)
        .await?;
    Ok(StatusCode::OK)
}

/// A project's quota as its summary shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SummaryQuota {
    /// The limits (`-1`: none).
    pub hard: ResourceList,
    /// The usage.
    pub used: ResourceList,
}

/// A project at a glance (Harbor's `ProjectSummary`, the counts Berth keeps).
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectSummary {
    /// Its repositories.
    pub repo_count: u64,
    /// Its quota and usage.
    pub quota: SummaryQuota,
}

/// A project's repository count and quota, for anyone who may see the project.
#[utoipa::path(get, path = "/api/v2.0/projects/{project_name_or_id}/summary", operation_id = "getProjectSummary", tag = "project",
    params(("project_name_or_id" = String, Path, description = "Name or id"),
        ("X-Is-Resource-Name" = Option<bool>, Header, description = "true: the parameter is a name")),
    responses((status = 200, body = ProjectSummary), (status = 401, body = Errors),
        (status = 404, body = Errors)))]
pub async fn summary(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    headers: HeaderMap,
    P(project): P<String>,
) -> Result<Json<ProjectSummary>, HarborError> {
    let view = admin(&s)?
        .project(&who, &project_ref(&headers, project))
        .await?;
    let q = s.registry.project_quota(&view.project.name).await?;
    let (hard, used) = quota_resource(&q);
    Ok(Json(ProjectSummary {
        repo_count: view.project.repo_count,
        quota: SummaryQuota { hard, used },
    }))
}
