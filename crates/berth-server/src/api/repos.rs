//! `/projects/{project_name}/repositories` and their artifacts (Harbor's `Repository`,
//! `Artifact`, `Tag`, `Reference`). A repository is named without its project, and a `/`
//! in that name is URL-encoded twice as in Harbor (`a%252Fb` for `a/b`); once works too.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::Json;
use berth_core::access::manage::{ArtifactRef, ProjectRef};
use berth_meta::{ArtifactInfo, Project, RepositoryInfo};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{admin, Authn};
use super::error::{Errors, HarborError};
use super::extract::{P, Q};
use super::paging::{cond, paged_listing, parse_q, PageQuery};
use super::time;
use super::users::QParam;
use crate::AppState;

/// A repository as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RepositoryResp {
    /// The project's id.
    pub project_id: i64,
    /// The full name (`project/...`).
    pub name: String,
    /// Always empty (no descriptions yet).
    pub description: String,
    /// How many artifacts it holds.
    pub artifact_count: u64,
    /// How many times it was pulled.
    pub pull_count: u64,
    /// When it was created.
    pub creation_time: String,
    /// When it last changed.
    pub update_time: String,
}

fn repository(p: &Project, r: RepositoryInfo) -> RepositoryResp {
    RepositoryResp {
        project_id: p.id,
        name: r.name,
        description: String::new(),
        artifact_count: r.artifact_count,
        pull_count: r.pull_count,
        creation_time: time(r.created_ms),
        update_time: time(r.updated_ms),
    }
}

/// A tag of an artifact.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TagResp {
    /// The tag.
    pub name: String,
    /// When it was pointed at the artifact.
    pub push_time: String,
    /// Always false (immutability rules are not implemented yet).
    pub immutable: bool,
}

/// A child manifest of an index.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReferenceResp {
    /// The child's digest.
    pub child_digest: String,
}

/// An artifact (a manifest) as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ArtifactResp {
    /// `IMAGE`, `CHART` or `UNKNOWN`, guessed from the media types.
    #[serde(rename = "type")]
    pub kind: String,
    /// The artifact's type (its `artifactType` or config media type), else the manifest's.
    pub media_type: String,
    /// The manifest's media type.
    pub manifest_media_type: String,
    /// The `artifactType` or config media type, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The project's id.
    pub project_id: i64,
    /// The repository's full name.
    pub repository_name: String,
    /// The manifest's digest.
    pub digest: String,
    /// The manifest plus every blob it references, in bytes.
    pub size: u64,
    /// When it was pushed.
    pub push_time: String,
    /// When it was last pulled, if ever.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_time: Option<String>,
    /// Its tags.
    pub tags: Vec<TagResp>,
    /// The manifests it references (an index's children).
    pub references: Vec<ReferenceResp>,
    /// The manifest it refers to (`subject`), a Berth addition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_digest: Option<String>,
}

fn kind(a: &ArtifactInfo) -> &'static str {
    let t = a.artifact_type.as_deref().unwrap_or_default();
    if t.contains("helm.config") {
        "CHART"
    } else if t.is_empty()
        || t.contains("container.image")
        || t.contains("image.config")
        || a.media_type.contains("manifest")
    {
        "IMAGE"
    } else {
        "UNKNOWN"
    }
}

pub(super) fn tag_resp((name, at): (String, i64)) -> TagResp {
    TagResp {
        name,
        push_time: time(at),
        immutable: false,
    }
}

fn artifact(p: &Project, repo: &str, a: ArtifactInfo) -> ArtifactResp {
    ArtifactResp {
        kind: kind(&a).to_owned(),
        media_type: a
            .artifact_type
            .clone()
            .unwrap_or_else(|| a.media_type.clone()),
        manifest_media_type: a.media_type,
        artifact_type: a.artifact_type,
        project_id: p.id,
        repository_name: repo.to_owned(),
        digest: a.digest.to_string(),
        size: a.size,
        push_time: time(a.push_ms),
        pull_time: a.pull_ms.map(time),
        tags: a.tags.into_iter().map(tag_resp).collect(),
        references: a
            .references
            .iter()
            .map(|d| ReferenceResp {
                child_digest: d.to_string(),
            })
            .collect(),
        subject_digest: a.subject.map(|d| d.to_string()),
    }
}

/// A repository name from the path: decoded once more (Harbor's clients encode twice).
pub(super) fn repo_name(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned()
}

/// The repositories of a project (needs `repository:list`); `q=name=~x` filters.
#[utoipa::path(get, path = "/api/v2.0/projects/{project_name}/repositories", operation_id = "listRepositories", tag = "repository",
    params(("project_name" = String, Path, description = "The project's name"), PageQuery, QParam),
    responses((status = 200, body = [RepositoryResp]), (status = 404, body = Errors)))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    uri: Uri,
    P(project): P<String>,
    Q(pq): Q<PageQuery>,
    Q(qp): Q<QParam>,
) -> Result<Response, HarborError> {
    let page = pq.page()?;
    let conds = parse_q(qp.q.as_deref())?;
    let name = cond(&conds, "name").and_then(|c| c.value());
    let (p, repos) = admin(&s)?
        .list_repositories(&who, &ProjectRef::Name(project), name, page.paging())
        .await?;
    Ok(paged_listing(&uri, page, repos, |r| repository(&p, r)))
}

/// One repository (needs `repository:read`).
#[utoipa::path(get, path = "/api/v2.0/projects/{project_name}/repositories/{repository_name}", operation_id = "getRepository",
    tag = "repository",
    params(("project_name" = String, Path, description = "The project's name"),
        ("repository_name" = String, Path, description = "The name inside the project, `/` encoded twice")),
    responses((status = 200, body = RepositoryResp), (status = 404, body = Errors)))]
pub async fn get(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P((project, repo)): P<(String, String)>,
) -> Result<Json<RepositoryResp>, HarborError> {
    let (p, r) = admin(&s)?
        .repository(&who, &ProjectRef::Name(project), &repo_name(&repo))
        .await?;
    Ok(Json(repository(&p, r)))
}

/// The artifacts of a repository, newest first (needs `artifact:list`).
#[utoipa::path(get, path = "/api/v2.0/projects/{project_name}/repositories/{repository_name}/artifacts", operation_id = "listArtifacts",
    tag = "artifact",
    params(("project_name" = String, Path, description = "The project's name"),
        ("repository_name" = String, Path, description = "The name inside the project, `/` encoded twice"),
        PageQuery),
    responses((status = 200, body = [ArtifactResp]), (status = 404, body = Errors)))]
pub async fn artifacts(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    uri: Uri,
    P((project, repo)): P<(String, String)>,
    Q(pq): Q<PageQuery>,
) -> Result<Response, HarborError> {
    let page = pq.page()?;
    let repo = repo_name(&repo);
    let (p, arts) = admin(&s)?
        .list_artifacts(&who, &ProjectRef::Name(project), &repo, page.paging())
        .await?;
    let full = format!("{}/{repo}", p.name);
    Ok(paged_listing(&uri, page, arts, |a| artifact(&p, &full, a)))
}

/// One artifact, by digest or tag (needs `artifact:read`).
#[utoipa::path(get, path = "/api/v2.0/projects/{project_name}/repositories/{repository_name}/artifacts/{reference}", operation_id = "getArtifact",
    tag = "artifact",
    params(("project_name" = String, Path, description = "The project's name"),
        ("repository_name" = String, Path, description = "The name inside the project, `/` encoded twice"),
        ("reference" = String, Path, description = "A digest or a tag")),
    responses((status = 200, body = ArtifactResp), (status = 404, body = Errors)))]
pub async fn artifact_one(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P((project, repo, reference)): P<(String, String, String)>,
) -> Result<Json<ArtifactResp>, HarborError> {
    let repo = repo_name(&repo);
    let (p, a) = admin(&s)?
        .artifact(
            &who,
            &ProjectRef::Name(project),
            &repo,
            &ArtifactRef::parse(&reference),
        )
        .await?;
    let full = format!("{}/{repo}", p.name);
    Ok(Json(artifact(&p, &full, a)))
}

/// Delete a repository with all its artifacts and tags (needs `repository:delete`). Its
/// blobs stay until garbage collection.
#[utoipa::path(delete, path = "/api/v2.0/projects/{project_name}/repositories/{repository_name}", operation_id = "deleteRepository",
    tag = "repository",
    params(("project_name" = String, Path, description = "The project's name"),
        ("repository_name" = String, Path, description = "The name inside the project, `/` encoded twice")),
    responses((status = 200), (status = 401, body = Errors), (status = 403, body = Errors),
        (status = 404, body = Errors)))]
pub async fn delete(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P((project, repo)): P<(String, String)>,
) -> Result<StatusCode, HarborError> {
    admin(&s)?
        .delete_repository(
            &who,
            &s.registry,
            &ProjectRef::Name(project),
            &repo_name(&repo),
        )
        .await?;
    Ok(StatusCode::OK)
}

/// Delete an artifact, by digest or by a tag on it, with all its tags (needs
/// `artifact:delete`).
#[utoipa::path(delete, path = "/api/v2.0/projects/{project_name}/repositories/{repository_name}/artifacts/{reference}", operation_id = "deleteArtifact",
    tag = "artifact",
    params(("project_name" = String, Path, description = "The project's name"),
        ("repository_name" = String, Path, description = "The name inside the project, `/` encoded twice"),
        ("reference" = String, Path, description = "A digest or a tag")),
    responses((status = 200), (status = 401, body = Errors), (status = 403, body = Errors),
        (status = 404, body = Errors)))]
pub async fn delete_artifact(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P((project, repo, reference)): P<(String, String, String)>,
) -> Result<StatusCode, HarborError> {
    admin(&s)?
        .delete_artifact(
            &who,
            &s.registry,
            &ProjectRef::Name(project),
            &repo_name(&repo),
            &ArtifactRef::parse(&reference),
        )
        .await?;
    Ok(StatusCode::OK)
}
