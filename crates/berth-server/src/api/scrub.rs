//! `/system/scrub`: scrub runs (re-read and re-verify every blob and manifest), their history,
//! findings and logs, in the shapes of Harbor's `/system/gc` (Harbor has no scrub). System
//! administrators only.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_core::access::manage::Caller;
use berth_core::{Actor, ScrubOptions};
use berth_meta::{Paging, ScrubFinding, ScrubRun};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{admin, Authn};
use super::error::{Errors, HarborError};
use super::extract::{JsonBody, P, Q};
use super::paging::{paged, paged_listing, PageQuery};
use super::time;
use super::users::created;
use crate::AppState;

fn actor(who: &Caller) -> Actor {
    Actor::with_grants(who.principal.clone(), Vec::new(), who.source)
}

/// What a run does.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
pub struct ScrubParams {
    /// Quarantine what is corrupt or missing (blobs: moved aside and unlinked; manifests
    /// whose content does not match their digest: saved aside and deleted), instead of only
    /// reporting it.
    #[serde(default)]
    pub repair: bool,
}

/// One run (in the shape of Harbor's `GCHistory`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ScrubHistory {
    /// Its id.
    pub id: i64,
    /// Always `SCRUB`.
    pub job_name: &'static str,
    /// Always `MANUAL`.
    pub job_kind: &'static str,
    /// Its parameters, as JSON text (as Harbor sends a job's).
    pub job_parameters: String,
    /// `Pending`, `Running`, `Stopping`, `Success`, `Error` or `Stopped`.
    pub job_status: String,
    /// Always false (Harbor's flag for removed records).
    pub deleted: bool,
    /// When it was asked for.
    pub creation_time: String,
    /// When it last changed.
    pub update_time: String,
    /// When it ended.
    pub end_time: Option<String>,
    /// Whether it repairs what it finds.
    pub repair: bool,
    /// The phase it is at: `blobs`, `manifests` or `done`.
    pub phase: String,
    /// Live blobs when it was created (the first phase's total).
    pub blobs_total: u64,
    /// Manifests when it was created (the second phase's total).
    pub manifests_total: u64,
    /// Blobs checked so far.
    pub blobs_checked: u64,
    /// Bytes read and hashed so far.
    pub bytes_checked: u64,
    /// Manifests checked so far.
    pub manifests_checked: u64,
    /// Problems found so far.
    pub findings: u64,
    /// Problems repaired so far.
    pub repaired: u64,
    /// Errors met (each skipped).
    pub errors: u64,
    /// The last error met.
    pub last_error: Option<String>,
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

fn history(run: ScrubRun) -> ScrubHistory {
    let params = ScrubParams { repair: run.repair };
    ScrubHistory {
        id: run.id,
        job_name: "SCRUB",
        job_kind: "MANUAL",
        job_parameters: serde_json::to_string(&params).unwrap_or_default(),
        job_status: capitalised(&run.status),
        deleted: false,
        creation_time: time(run.created_ms),
        update_time: time(run.updated_ms),
        end_time: run.finished_ms.map(time),
        repair: run.repair,
        phase: run.phase,
        blobs_total: run.blobs_total,
        manifests_total: run.manifests_total,
        blobs_checked: run.blobs_checked,
        bytes_checked: run.bytes_checked,
        manifests_checked: run.manifests_checked,
        findings: run.findings,
        repaired: run.repaired,
        errors: run.errors,
        last_error: run.last_error,
    }
}

/// One problem a run found.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScrubFindingView {
    /// Its id (findings list in the order found).
    pub id: i64,
    /// `missing`, `corrupt`, `manifest_corrupt`, `manifest_blob_missing` or
    /// `manifest_child_missing`.
    pub kind: String,
    /// The blob or manifest at fault.
    pub digest: String,
    /// The repository of the manifest (manifest findings only).
    pub repository: Option<String>,
    /// The blob or child manifest the manifest names and its repository lacks.
    pub target: Option<String>,
    /// What was seen.
    pub detail: String,
    /// Whether the run repaired it.
    pub repaired: bool,
    /// When it was found.
    pub creation_time: String,
}

fn finding(f: ScrubFinding) -> ScrubFindingView {
    ScrubFindingView {
        id: f.id,
        kind: f.kind.as_str().to_owned(),
        digest: f.digest.to_string(),
        repository: f.repo.map(|r| r.to_string()),
        target: f.target.map(|t| t.to_string()),
        detail: f.detail,
        repaired: f.repaired,
        creation_time: time(f.created_ms),
    }
}

/// Refuse in open mode, like the rest of the management API.
fn managed(s: &AppState) -> Result<(), HarborError> {
    admin(s).map(drop)
}

/// Start a scrub run (answers 201 with the run's `Location`).
#[utoipa::path(post, path = "/api/v2.0/system/scrub", operation_id = "startScrub", tag = "scrub", request_body = ScrubParams,
    responses((status = 201, headers(("Location" = String))), (status = 400, body = Errors),
        (status = 401, body = Errors), (status = 403, body = Errors), (status = 409, body = Errors)))]
pub async fn start(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    JsonBody(params): JsonBody<ScrubParams>,
) -> Result<Response, HarborError> {
    managed(&s)?;
    let run = s
        .registry
        .start_scrub(
            &actor(&who),
            ScrubOptions {
                repair: params.repair,
            },
        )
        .await?;
    Ok(created(format!("/api/v2.0/system/scrub/{}", run.id)))
}

/// Scrub runs, newest first.
#[utoipa::path(get, path = "/api/v2.0/system/scrub", operation_id = "getScrubHistory", tag = "scrub", params(PageQuery),
    responses((status = 200, body = [ScrubHistory], headers(("X-Total-Count" = u64), ("Link" = String))),
        (status = 400, body = Errors), (status = 401, body = Errors), (status = 403, body = Errors)))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    uri: Uri,
    Q(pq): Q<PageQuery>,
) -> Result<Response, HarborError> {
    managed(&s)?;
    let page = pq.page()?;
    let runs = s
        .registry
        .scrub_history(&actor(&who), page.paging())
        .await?;
    let items = runs.items.into_iter().map(history).collect();
    Ok(paged(&uri, page, runs.total, items))
}

/// One run.
#[utoipa::path(get, path = "/api/v2.0/system/scrub/{scrub_id}", operation_id = "getScrub", tag = "scrub",
    params(("scrub_id" = i64, Path, description = "The run's id")),
    responses((status = 200, body = ScrubHistory), (status = 400, body = Errors),
        (status = 401, body = Errors), (status = 403, body = Errors), (status = 404, body = Errors)))]
pub async fn get(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P(id): P<i64>,
) -> Result<Json<ScrubHistory>, HarborError> {
    managed(&s)?;
    Ok(Json(history(s.registry.scrub_run(&actor(&who), id).await?)))
}

/// Stop a queued or running run after its current batch.
#[utoipa::path(put, path = "/api/v2.0/system/scrub/{scrub_id}", operation_id = "stopScrub", tag = "scrub",
    params(("scrub_id" = i64, Path, description = "The run's id")),
    responses((status = 200), (status = 400, body = Errors), (status = 401, body = Errors),
        (status = 403, body = Errors), (status = 404, body = Errors), (status = 409, body = Errors)))]
pub async fn stop(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P(id): P<i64>,
) -> Result<StatusCode, HarborError> {
    managed(&s)?;
    s.registry.stop_scrub(&actor(&who), id).await?;
    Ok(StatusCode::OK)
}

/// What a run found, in the order found.
#[utoipa::path(get, path = "/api/v2.0/system/scrub/{scrub_id}/findings", operation_id = "getScrubFindings", tag = "scrub",
    params(("scrub_id" = i64, Path, description = "The run's id"), PageQuery),
    responses((status = 200, body = [ScrubFindingView], headers(("X-Total-Count" = u64), ("Link" = String))),
        (status = 400, body = Errors), (status = 401, body = Errors), (status = 403, body = Errors),
        (status = 404, body = Errors)))]
pub async fn findings(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    uri: Uri,
    P(id): P<i64>,
    Q(pq): Q<PageQuery>,
) -> Result<Response, HarborError> {
    managed(&s)?;
    let page = pq.page()?;
    let found = s
        .registry
        .scrub_findings(&actor(&who), id, page.paging())
        .await?;
    Ok(paged_listing(&uri, page, found, finding))
}

/// Most findings a log lists; the rest are in `/findings`.
const LOG_FINDINGS: u64 = 10_000;

/// A run's log, as plain text: its counters, then one line per finding.
#[utoipa::path(get, path = "/api/v2.0/system/scrub/{scrub_id}/log", operation_id = "getScrubLog", tag = "scrub",
    params(("scrub_id" = i64, Path, description = "The run's id")),
    responses((status = 200, content_type = "text/plain", body = String),
        (status = 400, body = Errors), (status = 401, body = Errors), (status = 403, body = Errors),
        (status = 404, body = Errors)))]
pub async fn log(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P(id): P<i64>,
) -> Result<Response, HarborError> {
    managed(&s)?;
    let who = actor(&who);
    let r = s.registry.scrub_run(&who, id).await?;
    let found = s
        .registry
        .scrub_findings(
            &who,
            id,
            Paging {
                offset: 0,
                limit: LOG_FINDINGS,
            },
        )
        .await?;
    let mut text = format!(
        "scrub run {} ({})\ncreated {}\nstatus {}, phase {}\n\
         blobs checked {} of {} ({} bytes read)\nmanifests checked {} of {}\n\
         findings {} ({} repaired)\nerrors {}\n",
        r.id,
        if r.repair { "repairing" } else { "report only" },
        time(r.created_ms),
        r.status,
        r.phase,
        r.blobs_checked,
        r.blobs_total,
        r.bytes_checked,
        r.manifests_checked,
        r.manifests_total,
        r.findings,
        r.repaired,
        r.errors,
    );
    if let Some(e) = &r.last_error {
        let _ = writeln!(text, "last error: {e}");
    }
    if let Some(end) = r.finished_ms {
        let _ = writeln!(
            text,
            "ended {} after {:.1} s",
            time(end),
            (end - r.created_ms) as f64 / 1000.0
        );
    }
    for f in &found.items {
        let _ = write!(text, "{} {}", f.kind, f.digest);
        if let Some(repo) = &f.repo {
            let _ = write!(text, " in {repo}");
        }
        if let Some(target) = &f.target {
            let _ = write!(text, " -> {target}");
        }
        let _ = writeln!(
            text,
            "{}: {}",
            if f.repaired { " [repaired]" } else { "" },
            f.detail
        );
    }
    if found.total > found.items.len() as u64 {
        let _ = writeln!(
            text,
            "... and {} more: GET /api/v2.0/system/scrub/{id}/findings",
            found.total - found.items.len() as u64
        );
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}
