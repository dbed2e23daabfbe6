//! `/usergroups`: groups of local users (Harbor's `UserGroup`), and Berth's own extension
//! `/usergroups/{group_id}/members` to put local users in a group (Harbor takes group
//! membership from LDAP or OIDC; Berth keeps it itself).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::Json;
use berth_meta::Group;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{admin, Authn};
use super::error::{Errors, HarborError};
use super::extract::{JsonBody, P, Q};
use super::paging::{paged_listing, PageQuery};
use super::users::{created, UserSearchRespItem};
use crate::AppState;

/// A group.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct UserGroup {
    /// Its id (ignored on creation).
    pub id: i64,
    /// Its name.
    pub group_name: String,
    /// Harbor's group type; Berth's groups are local and answer 0. Ignored on creation.
    pub group_type: i64,
}

impl From<Group> for UserGroup {
    fn from(g: Group) -> Self {
        Self {
            id: g.id,
            group_name: g.name,
            group_type: 0,
        }
    }
}

/// A user to put in a group: by name or id (Berth extension).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct GroupMemberReq {
    /// The user's id.
    pub user_id: Option<i64>,
    /// The user's name.
    pub username: Option<String>,
}

/// List groups (any signed-in caller).
#[utoipa::path(get, path = "/api/v2.0/usergroups", operation_id = "listUserGroups", tag = "usergroup", params(PageQuery),
    responses((status = 200, body = [UserGroup]), (status = 401, body = Errors)))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    uri: Uri,
    Q(pq): Q<PageQuery>,
) -> Result<Response, HarborError> {
    let page = pq.page()?;
    let groups = admin(&s)?.list_groups(&who, page.paging()).await?;
    Ok(paged_listing(&uri, page, groups, UserGroup::from))
}

/// Create a group (system administrators).
#[utoipa::path(post, path = "/api/v2.0/usergroups", operation_id = "createUserGroup", tag = "usergroup", request_body = UserGroup,
    responses((status = 201), (status = 400, body = Errors), (status = 403, body = Errors),
        (status = 409, body = Errors)))]
pub async fn create(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    JsonBody(g): JsonBody<UserGroup>,
) -> Result<Response, HarborError> {
    let group = admin(&s)?.create_group(&who, &g.group_name).await?;
    Ok(created(format!("/api/v2.0/usergroups/{}", group.id)))
}

/// One group.
#[utoipa::path(get, path = "/api/v2.0/usergroups/{group_id}", operation_id = "getUserGroup", tag = "usergroup",
    params(("group_id" = i64, Path, description = "The group's id")),
    responses((status = 200, body = UserGroup), (status = 404, body = Errors)))]
pub async fn get(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P(id): P<i64>,
) -> Result<Json<UserGroup>, HarborError> {
    Ok(Json(admin(&s)?.group(&who, id).await?.into()))
}

/// Delete a group with its project memberships (system administrators).
#[utoipa::path(delete, path = "/api/v2.0/usergroups/{group_id}", operation_id = "deleteUserGroup", tag = "usergroup",
    params(("group_id" = i64, Path, description = "The group's id")),
    responses((status = 200), (status = 403, body = Errors), (status = 404, body = Errors)))]
pub async fn delete(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P(id): P<i64>,
) -> Result<StatusCode, HarborError> {
    admin(&s)?.delete_group(&who, id).await?;
    Ok(StatusCode::OK)
}

/// The users in a group (Berth extension).
#[utoipa::path(get, path = "/api/v2.0/usergroups/{group_id}/members", operation_id = "listUserGroupMembers", tag = "usergroup",
    params(("group_id" = i64, Path, description = "The group's id")),
    responses((status = 200, body = [UserSearchRespItem]), (status = 404, body = Errors)))]
pub async fn members(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P(id): P<i64>,
) -> Result<Json<Vec<UserSearchRespItem>>, HarborError> {
    let users = admin(&s)?.group_users(&who, id).await?;
    Ok(Json(
        users
            .into_iter()
            .map(|u| UserSearchRespItem {
                user_id: u.id,
                username: u.username,
            })
            .collect(),
    ))
}

/// Put a local user in a group (Berth extension; system administrators).
#[utoipa::path(post, path = "/api/v2.0/usergroups/{group_id}/members", operation_id = "addUserGroupMember", tag = "usergroup",
    request_body = GroupMemberReq,
    params(("group_id" = i64, Path, description = "The group's id")),
    responses((status = 201), (status = 400, body = Errors), (status = 403, body = Errors),
        (status = 404, body = Errors)))]
pub async fn add_member(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P(id): P<i64>,
    JsonBody(req): JsonBody<GroupMemberReq>,
) -> Result<Response, HarborError> {
    let admin = admin(&s)?;
    let user = match (req.user_id, req.username) {
        (Some(uid), _) => uid,
        (None, Some(name)) => {
            let found = admin
                .search_users(&who, &name, berth_meta::Paging::ALL)
                .await?;
            found
                .items
                .into_iter()
                .find(|u| u.username == name)
                .map(|u| u.id)
                .ok_or_else(|| HarborError::not_found(format!("user {name} does not exist")))?
        }
        (None, None) => return Err(HarborError::bad_request("give user_id or username")),
    };
    admin.set_group_member(&who, id, user, true).await?;
    Ok(created(format!("/api/v2.0/usergroups/{id}/members/{user}")))
}

/// Take a user out of a group (Berth extension; system administrators).
#[utoipa::path(delete, path = "/api/v2.0/usergroups/{group_id}/members/{user_id}", operation_id = "removeUserGroupMember", tag = "usergroup",
    params(("group_id" = i64, Path, description = "The group's id"),
        ("user_id" = i64, Path, description = "The user's id")),
    responses((status = 200), (status = 403, body = Errors), (status = 404, body = Errors)))]
pub async fn remove_member(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P((id, user)): P<(i64, i64)>,
) -> Result<StatusCode, HarborError> {
    admin(&s)?.set_group_member(&who, id, user, false).await?;
    Ok(StatusCode::OK)
}
