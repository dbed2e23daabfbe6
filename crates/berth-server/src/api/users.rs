//! `/users`: local users (Harbor's `UserResp`, `UserCreationReq`, `UserProfile`,
//! `PasswordReq`, `UserSysAdminFlag`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_core::access::manage::{NewUserRequest, ProfileChange};
use berth_meta::User;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{admin, Authn};
use super::error::{Errors, HarborError};
use super::extract::{JsonBody, P, Q};
use super::paging::{cond, paged_listing, parse_q, PageQuery};
use super::time;
use crate::AppState;

/// A user as the API shows it (never its password hash).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserResp {
    /// Its id.
    pub user_id: i64,
    /// Its login name.
    pub username: String,
    /// E-mail address.
    pub email: String,
    /// Full name.
    pub realname: String,
    /// Free text.
    pub comment: String,
    /// Whether it is a system administrator.
    pub sysadmin_flag: bool,
    /// Always false (no external authenticator).
    pub admin_role_in_auth: bool,
    /// When it was created.
    pub creation_time: String,
    /// When it last changed.
    pub update_time: String,
}

impl From<User> for UserResp {
    fn from(u: User) -> Self {
        Self {
            user_id: u.id,
            username: u.username,
            email: u.email,
            realname: u.realname,
            comment: u.comment,
            sysadmin_flag: u.sysadmin,
            admin_role_in_auth: false,
            creation_time: time(u.created_ms),
            update_time: time(u.updated_ms),
        }
    }
}

/// A user to create.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct UserCreationReq {
    /// Login name.
    pub username: String,
    /// E-mail address.
    pub email: String,
    /// Full name.
    pub realname: String,
    /// Free text.
    pub comment: String,
    /// Password: 8 to 128 characters with an upper-case letter, a lower-case letter and a
    /// digit.
    pub password: String,
}

/// Profile fields to change.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct UserProfile {
    /// New e-mail address.
    pub email: Option<String>,
    /// New full name.
    pub realname: Option<String>,
    /// New comment.
    pub comment: Option<String>,
}

/// A password change.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct PasswordReq {
    /// The current password (needed when changing one's own).
    pub old_password: Option<String>,
    /// The new password.
    pub new_password: String,
}

/// The administrator flag.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserSysAdminFlag {
    /// true: administrator.
    pub sysadmin_flag: bool,
}

/// A user found by name.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserSearchRespItem {
    /// Its id.
    pub user_id: i64,
    /// Its name.
    pub username: String,
}

/// Harbor's `q` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QParam {
    /// Conditions: `k=v`, `k=~v` (contains), `k=[a~b]`, separated by `,`.
    pub q: Option<String>,
}

/// The `username` query of `/users/search`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsernameParam {
    /// Part of the user name.
    pub username: String,
}

/// `Location` of a created resource.
pub fn created(location: String) -> Response {
    let mut resp = StatusCode::CREATED.into_response();
    if let Ok(v) = location.parse() {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// List users (system administrators). `q=username=~x` filters by name.
#[utoipa::path(get, path = "/api/v2.0/users", operation_id = "listUsers", tag = "user",
    params(PageQuery, QParam),
    responses((status = 200, body = [UserResp], headers(("X-Total-Count" = u64), ("Link" = String))),
        (status = 401, body = Errors), (status = 403, body = Errors)))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    uri: Uri,
    Q(pq): Q<PageQuery>,
    Q(qp): Q<QParam>,
) -> Result<Response, HarborError> {
    let page = pq.page()?;
    let conds = parse_q(qp.q.as_deref())?;
    let name = cond(&conds, "username").and_then(|c| c.value());
    let users = admin(&s)?.list_users(&who, name, page.paging()).await?;
    Ok(paged_listing(&uri, page, users, UserResp::from))
}

/// Search users by name (any signed-in caller; for picking members).
#[utoipa::path(get, path = "/api/v2.0/users/search", operation_id = "searchUsers", tag = "user",
    params(PageQuery, UsernameParam),
    responses((status = 200, body = [UserSearchRespItem]), (status = 401, body = Errors)))]
pub async fn search(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    uri: Uri,
    Q(pq): Q<PageQuery>,
    Q(u): Q<UsernameParam>,
) -> Result<Response, HarborError> {
    let page = pq.page()?;
    let users = admin(&s)?
        .search_users(&who, &u.username, page.paging())
        .await?;
    Ok(paged_listing(&uri, page, users, |u| UserSearchRespItem {
        user_id: u.id,
        username: u.username,
    }))
}

/// Create a local user (system administrators).
#[utoipa::path(post, path = "/api/v2.0/users", operation_id = "createUser", tag = "user", request_body = UserCreationReq,
    responses((status = 201), (status = 400, body = Errors), (status = 401, body = Errors),
        (status = 403, body = Errors), (status = 409, body = Errors)))]
pub async fn create(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    JsonBody(req): JsonBody<UserCreationReq>,
) -> Result<Response, HarborError> {
    let req = NewUserRequest {
        username: req.username,
        email: req.email,
        realname: req.realname,
        comment: req.comment,
        password: req.password,
    };
    let user = admin(&s)?.create_user(&who, req).await?;
    Ok(created(format!("/api/v2.0/users/{}", user.id)))
}

/// The signed-in user.
#[utoipa::path(get, path = "/api/v2.0/users/current", operation_id = "getCurrentUserInfo", tag = "user",
    responses((status = 200, body = UserResp), (status = 401, body = Errors), (status = 412, body = Errors)))]
pub async fn current(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
) -> Result<Json<UserResp>, HarborError> {
    Ok(Json(admin(&s)?.current_user(&who).await?.into()))
}

/// A user (itself or a system administrator).
#[utoipa::path(get, path = "/api/v2.0/users/{user_id}", operation_id = "getUser", tag = "user",
    params(("user_id" = i64, Path, description = "The user's id")),
    responses((status = 200, body = UserResp), (status = 401, body = Errors),
        (status = 403, body = Errors), (status = 404, body = Errors)))]
pub async fn get(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P(id): P<i64>,
) -> Result<Json<UserResp>, HarborError> {
    Ok(Json(admin(&s)?.user(&who, id).await?.into()))
}

/// Change a user's e-mail, full name or comment (itself or a system administrator).
#[utoipa::path(put, path = "/api/v2.0/users/{user_id}", operation_id = "updateUserProfile", tag = "user", request_body = UserProfile,
    params(("user_id" = i64, Path, description = "The user's id")),
    responses((status = 200), (status = 400, body = Errors), (status = 401, body = Errors),
        (status = 403, body = Errors), (status = 404, body = Errors)))]
pub async fn update(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P(id): P<i64>,
    JsonBody(p): JsonBody<UserProfile>,
) -> Result<StatusCode, HarborError> {
    let change = ProfileChange {
        email: p.email,
        realname: p.realname,
        comment: p.comment,
    };
    admin(&s)?.update_profile(&who, id, change).await?;
    Ok(StatusCode::OK)
}

/// Delete a user (system administrators; not oneself). Its tokens stop working.
#[utoipa::path(delete, path = "/api/v2.0/users/{user_id}", operation_id = "deleteUser", tag = "user",
    params(("user_id" = i64, Path, description = "The user's id")),
    responses((status = 200), (status = 401, body = Errors), (status = 403, body = Errors),
        (status = 404, body = Errors)))]
pub async fn delete(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P(id): P<i64>,
) -> Result<StatusCode, HarborError> {
    admin(&s)?.delete_user(&who, id).await?;
    Ok(StatusCode::OK)
}

/// Change a user's password: one's own with the old one, or anyone's as a system
/// administrator.
#[utoipa::path(put, path = "/api/v2.0/users/{user_id}/password", operation_id = "updateUserPassword", tag = "user",
    request_body = PasswordReq,
    params(("user_id" = i64, Path, description = "The user's id")),
    responses((status = 200), (status = 400, body = Errors), (status = 401, body = Errors),
        (status = 403, body = Errors), (status = 404, body = Errors)))]
pub async fn password(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P(id): P<i64>,
    JsonBody(p): JsonBody<PasswordReq>,
) -> Result<StatusCode, HarborError> {
    admin(&s)?
        .change_password(&who, id, p.old_password.as_deref(), &p.new_password)
        .await?;
    Ok(StatusCode::OK)
}

/// Make a user a system administrator or not (system administrators).
#[utoipa::path(put, path = "/api/v2.0/users/{user_id}/sysadmin", operation_id = "setUserSysAdmin", tag = "user",
    request_body = UserSysAdminFlag,
    params(("user_id" = i64, Path, description = "The user's id")),
    responses((status = 200), (status = 401, body = Errors), (status = 403, body = Errors),
        (status = 404, body = Errors)))]
pub async fn sysadmin(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P(id): P<i64>,
    JsonBody(f): JsonBody<UserSysAdminFlag>,
) -> Result<StatusCode, HarborError> {
    admin(&s)?.set_sysadmin(&who, id, f.sysadmin_flag).await?;
    Ok(StatusCode::OK)
}
