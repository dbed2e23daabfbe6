//! `.../artifacts/{reference}/tags`: list, add and remove the tags of an artifact (Harbor's
//! `Tag`). Adding a tag that exists in the repository is a conflict; moving a tag is a
//! manifest push over /v2.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use berth_core::access::manage::{ArtifactRef, ProjectRef};
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::{admin, Authn};
use super::error::{Errors, HarborError};
use super::extract::{JsonBody, P, Q};
use super::paging::{paged, PageQuery};
use super::repos::{repo_name, tag_resp};
use super::users::created;
use crate::AppState;

/// A tag to add.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TagReq {
    /// The tag.
    pub name: String,
}

/// The tags of an artifact, by name (needs `tag:list`).
#[utoipa::path(get, path = "/api/v2.0/projects/{project_name}/repositories/{repository_name}/artifacts/{reference}/tags", operation_id = "listTags",
    tag = "artifact",
    params(("project_name" = String, Path, description = "The project's name"),
        ("repository_name" = String, Path, description = "The name inside the project, `/` encoded twice"),
        ("reference" = String, Path, description = "A digest or a tag"), PageQuery),
    responses((status = 200, body = [super::repos::TagResp]), (status = 404, body = Errors)))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    uri: Uri,
    P((project, repo, reference)): P<(String, String, String)>,
    Q(pq): Q<PageQuery>,
) -> Result<Response, HarborError> {
    let page = pq.page()?;
    let tags = admin(&s)?
        .list_tags(
            &who,
            &ProjectRef::Name(project),
            &repo_name(&repo),
            &ArtifactRef::parse(&reference),
        )
        .await?;
    let total = tags.len() as u64;
    let window = page.paging();
    let items = tags
        .into_iter()
        .skip(usize::try_from(window.offset).unwrap_or(usize::MAX))
        .take(usize::try_from(window.limit).unwrap_or(usize::MAX))
        .map(tag_resp)
        .collect();
    Ok(paged(&uri, page, total, items))
}

/// Add a tag to an artifact (needs `tag:create`).
#[utoipa::path(post, path = "/api/v2.0/projects/{project_name}/repositories/{repository_name}/artifacts/{reference}/tags", operation_id = "createTag",
    tag = "artifact", request_body = TagReq,
    params(("project_name" = String, Path, description = "The project's name"),
        ("repository_name" = String, Path, description = "The name inside the project, `/` encoded twice"),
        ("reference" = String, Path, description = "A digest or a tag")),
    responses((status = 201), (status = 400, body = Errors), (status = 401, body = Errors),
        (status = 403, body = Errors), (status = 404, body = Errors), (status = 409, body = Errors)))]
pub async fn create(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    uri: Uri,
    P((project, repo, reference)): P<(String, String, String)>,
    JsonBody(req): JsonBody<TagReq>,
) -> Result<Response, HarborError> {
    admin(&s)?
        .create_tag(
            &who,
            &s.registry,
            &ProjectRef::Name(project),
            &repo_name(&repo),
            &ArtifactRef::parse(&reference),
            &req.name,
        )
        .await?;
    Ok(created(format!("{}/{}", uri.path(), req.name)))
}

/// Remove a tag from an artifact; the artifact stays (needs `tag:delete`).
#[utoipa::path(delete, path = "/api/v2.0/projects/{project_name}/repositories/{repository_name}/artifacts/{reference}/tags/{tag_name}", operation_id = "deleteTag",
    tag = "artifact",
    params(("project_name" = String, Path, description = "The project's name"),
        ("repository_name" = String, Path, description = "The name inside the project, `/` encoded twice"),
        ("reference" = String, Path, description = "A digest or a tag"),
        ("tag_name" = String, Path, description = "The tag to remove")),
    responses((status = 200), (status = 401, body = Errors), (status = 403, body = Errors),
        (status = 404, body = Errors)))]
pub async fn delete(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P((project, repo, reference, tag)): P<(String, String, String, String)>,
) -> Result<StatusCode, HarborError> {
    admin(&s)?
        .delete_tag(
            &who,
            &s.registry,
            &ProjectRef::Name(project),
            &repo_name(&repo),
            &ArtifactRef::parse(&reference),
            &tag,
        )
        .await?;
    Ok(StatusCode::OK)
}
