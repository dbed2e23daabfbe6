//! `/systeminfo`, `/health`, `/ping`, `/statistics` and `/search`.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{admin, Authn};
use super::error::{Errors, HarborError};
use super::extract::Q;
use super::projects::ProjectResp;
use crate::AppState;

/// What Harbor's `GeneralInfo` tells of this server.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GeneralInfo {
    /// Berth's version, as `berth-<version>`.
    pub harbor_version: String,
    /// Always `db_auth`: local users.
    pub auth_mode: String,
    /// Always false.
    pub primary_auth_mode: bool,
    /// Who may create projects: `everyone` signed in.
    pub project_creation_restriction: String,
    /// Always false: administrators create users.
    pub self_registration: bool,
    /// Always false.
    pub has_ca_root: bool,
    /// Always false.
    pub read_only: bool,
    /// Always false (no webhooks yet).
    pub notification_enable: bool,
    /// The server's time.
    pub current_time: String,
}

/// General information about the server (no authentication needed).
#[utoipa::path(get, path = "/api/v2.0/systeminfo", operation_id = "getSystemInfo", tag = "systeminfo",
    responses((status = 200, body = GeneralInfo)))]
pub async fn info() -> Json<GeneralInfo> {
    Json(GeneralInfo {
        harbor_version: format!("berth-{}", env!("CARGO_PKG_VERSION")),
        auth_mode: "db_auth".into(),
        primary_auth_mode: false,
        project_creation_restriction: "everyone".into(),
        self_registration: false,
        has_ca_root: false,
        read_only: false,
        notification_enable: false,
        current_time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// One component's health.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ComponentHealthStatus {
    /// `core` (this API) or `registry` (metadata and blob storage).
    pub name: String,
    /// `healthy` or `unhealthy`.
    pub status: String,
    /// Why it is unhealthy (no internal detail).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The server's health.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OverallHealthStatus {
    /// `healthy` when every component is.
    pub status: String,
    /// The components.
    pub components: Vec<ComponentHealthStatus>,
}

/// Health of the server's components (no authentication needed).
#[utoipa::path(get, path = "/api/v2.0/health", operation_id = "getHealth", tag = "health",
    responses((status = 200, body = OverallHealthStatus)))]
pub async fn health(State(s): State<Arc<AppState>>) -> Json<OverallHealthStatus> {
    let registry = match s.registry.check_ready().await {
        Ok(()) => None,
        Err(e) => {
            tracing::warn!(error = %e, "health check failed");
            Some("metadata or blob storage is unavailable".to_owned())
        }
    };
    let status = |bad: bool| if bad { "unhealthy" } else { "healthy" }.to_owned();
    Json(OverallHealthStatus {
        status: status(registry.is_some()),
        components: vec![
            ComponentHealthStatus {
                name: "core".into(),
                status: status(false),
                error: None,
            },
            ComponentHealthStatus {
                name: "registry".into(),
                status: status(registry.is_some()),
                error: registry,
            },
        ],
    })
}

/// `Pong` (no authentication needed).
#[utoipa::path(get, path = "/api/v2.0/ping", operation_id = "getPing", tag = "ping", responses((status = 200, body = String)))]
pub async fn ping() -> &'static str {
    "Pong"
}

/// Counts of projects and repositories (Harbor's `Statistic`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Statistic {
    /// Private projects the caller may see.
    pub private_project_count: u64,
    /// Repositories in them.
    pub private_repo_count: u64,
    /// Public projects.
    pub public_project_count: u64,
    /// Repositories in them.
    pub public_repo_count: u64,
    /// All projects the caller may see.
    pub total_project_count: u64,
    /// All repositories the caller may see.
    pub total_repo_count: u64,
    /// Bytes stored; system administrators only (0 for anyone else).
    pub total_storage_consumption: u64,
}

/// Counts of projects and repositories: everything for a system administrator, what the
/// caller may see for anyone else.
#[utoipa::path(get, path = "/api/v2.0/statistics", operation_id = "getStatistic", tag = "statistic",
    responses((status = 200, body = Statistic), (status = 401, body = Errors)))]
pub async fn statistics(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
) -> Result<Json<Statistic>, HarborError> {
    let st = admin(&s)?.statistics(&who).await?;
    Ok(Json(Statistic {
        private_project_count: st.private_projects,
        private_repo_count: st.private_repos,
        public_project_count: st.public_projects,
        public_repo_count: st.public_repos,
        total_project_count: st.private_projects + st.public_projects,
        total_repo_count: st.private_repos + st.public_repos,
        total_storage_consumption: st.total_storage,
    }))
}

/// A repository found by `/search`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SearchRepository {
    /// Its project's id.
    pub project_id: i64,
    /// Its project's name.
    pub project_name: String,
    /// Whether its project is public.
    pub project_public: bool,
    /// Its full name.
    pub repository_name: String,
    /// How many times it was pulled.
    pub pull_count: u64,
    /// How many artifacts it holds.
    pub artifact_count: u64,
}

/// What `/search` found.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Search {
    /// Projects.
    pub project: Vec<ProjectResp>,
    /// Repositories.
    pub repository: Vec<SearchRepository>,
}

/// The `q` of `/search`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Part of a project or repository name.
    pub q: String,
}

/// Projects and repositories whose names contain `q`, of those the caller may see.
#[utoipa::path(get, path = "/api/v2.0/search", operation_id = "search", tag = "search", params(SearchQuery),
    responses((status = 200, body = Search), (status = 400, body = Errors)))]
pub async fn search(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    Q(q): Q<SearchQuery>,
) -> Result<Json<Search>, HarborError> {
    let found = admin(&s)?.search(&who, &q.q).await?;
    Ok(Json(Search {
        project: found.projects.into_iter().map(Into::into).collect(),
        repository: found
            .repositories
            .into_iter()
            .map(|(r, p)| SearchRepository {
                project_id: p.id,
                project_name: p.name,
                project_public: p.public,
                repository_name: r.name,
                pull_count: r.pull_count,
                artifact_count: r.artifact_count,
            })
            .collect(),
    }))
}
