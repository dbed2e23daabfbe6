//! `/system/gc`: garbage collection runs, their history and their schedule, in Harbor's
//! shapes (`GCHistory`, `Schedule`), with Berth's counters added to each run. System
//! administrators only.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_core::access::manage::Caller;
use berth_core::{Actor, GcOptions, GcSchedule};
use berth_meta::GcRun;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{admin, Authn};
use super::error::{Errors, HarborError};
use super::extract::{JsonBody, P, Q};
use super::paging::{paged, PageQuery};
use super::time;
use super::users::created;
use crate::AppState;

/// The registry's view of a management API caller.
pub(super) fn actor(who: &Caller) -> Actor {
    Actor::with_grants(who.principal.clone(), Vec::new(), who.source)
}

/// A run's parameters (Harbor's `job_parameters`, which it also sends as JSON text).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
pub struct GcParams {
    /// Also delete manifests that no tag, index or live subject keeps.
    #[serde(default)]
    pub delete_untagged: bool,
    /// Report only.
    #[serde(default)]
    pub dry_run: bool,
    /// Accepted for Harbor clients; Berth sizes its own concurrency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,
}

impl From<GcParams> for GcOptions {
    fn from(p: GcParams) -> Self {
        GcOptions {
            dry_run: p.dry_run,
            delete_untagged: p.delete_untagged,
        }
    }
}

/// When (Harbor's `ScheduleObj`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ScheduleObj {
    /// `Manual` (run now, POST only), `None`, `Hourly`, `Daily`, `Weekly` or `Custom`.
    #[serde(rename = "type")]
    pub kind: String,
    /// For `Custom`: six fields, `sec min hour day month weekday`, in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// When it fires next (answers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_scheduled_time: Option<String>,
}

/// A run request or a schedule (Harbor's `Schedule`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleReq {
    /// When.
    pub schedule: ScheduleObj,
    /// What each run does.
    #[serde(default)]
    pub parameters: GcParams,
}

/// The schedule as answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleResp {
    /// When.
    pub schedule: ScheduleObj,
    /// What each run does.
    pub parameters: GcParams,
    /// When it was set.
    pub update_time: Option<String>,
}

/// One run (Harbor's `GCHistory`, plus Berth's counters).
#[derive(Debug, Serialize, ToSchema)]
pub struct GcHistory {
    /// Its id.
    pub id: i64,
    /// Always `GARBAGE_COLLECTION`.
    pub job_name: &'static str,
    /// `MANUAL` or `SCHEDULE`.
    pub job_kind: String,
    /// Its parameters, as JSON text (as Harbor sends them).
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
    /// Berth: the step it is at (`manifests`, `links`, `blobs`, `orphans`, `done`).
    pub phase: String,
    /// Berth: rows and objects looked at so far.
    pub scanned: u64,
    /// Berth: untagged manifests deleted (or that would be, in a dry run).
    pub manifests_deleted: u64,
    /// Berth: repository links to unreferenced blobs removed.
    pub links_deleted: u64,
    /// Berth: blobs deleted from storage (or that would be).
    pub blobs_deleted: u64,
    /// Berth: bytes freed in storage (or that would be).
    pub freed_bytes: u64,
    /// Berth: errors met (each skipped).
    pub errors: u64,
    /// Berth: the last error met.
    pub last_error: Option<String>,
    /// Berth: the grace period it used, in seconds.
    pub grace_seconds: u64,
    /// Berth: whether it was a dry run.
    pub dry_run: bool,
}

/// `s` with its first letter in capitals (`running` -> `Running`, Harbor's statuses).
pub(super) fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

fn history(run: GcRun) -> GcHistory {
    let params = GcParams {
        delete_untagged: run.delete_untagged,
        dry_run: run.dry_run,
        workers: None,
    };
    GcHistory {
        id: run.id,
        job_name: "GARBAGE_COLLECTION",
        job_kind: run.trigger.to_ascii_uppercase(),
        job_parameters: serde_json::to_string(&params).unwrap_or_default(),
        job_status: capitalised(&run.status),
        deleted: false,
        creation_time: time(run.created_ms),
        update_time: time(run.updated_ms),
        end_time: run.finished_ms.map(time),
        phase: run.phase,
        scanned: run.scanned,
        manifests_deleted: run.manifests_deleted,
        links_deleted: run.links_deleted,
        blobs_deleted: run.blobs_deleted,
        freed_bytes: run.bytes_freed,
        errors: run.errors,
        last_error: run.last_error,
        grace_seconds: run.grace_seconds,
        dry_run: run.dry_run,
    }
}

/// Refuse in open mode, like the rest of the management API.
pub(super) fn managed(s: &AppState) -> Result<(), HarborError> {
    admin(s).map(drop)
}

/// Garbage collection runs, newest first.
#[utoipa::path(get, path = "/api/v2.0/system/gc", operation_id = "getGCHistory", tag = "gc", params(PageQuery),
    responses((status = 200, body = [GcHistory], headers(("X-Total-Count" = u64), ("Link" = String))),
        (status = 401, body = Errors), (status = 403, body = Errors)))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    uri: Uri,
    Q(pq): Q<PageQuery>,
) -> Result<Response, HarborError> {
    managed(&s)?;
    let page = pq.page()?;
    let runs = s.registry.gc_history(&actor(&who), page.paging()).await?;
    let items = runs.items.into_iter().map(history).collect();
    Ok(paged(&uri, page, runs.total, items))
}

/// One run.
#[utoipa::path(get, path = "/api/v2.0/system/gc/{gc_id}", operation_id = "getGC", tag = "gc",
    params(("gc_id" = i64, Path, description = "The run's id")),
    responses((status = 200, body = GcHistory), (status = 401, body = Errors),
        (status = 403, body = Errors), (status = 404, body = Errors)))]
pub async fn get(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P(id): P<i64>,
) -> Result<Json<GcHistory>, HarborError> {
    managed(&s)?;
    Ok(Json(history(s.registry.gc_run(&actor(&who), id).await?)))
}

/// A run's log, as plain text.
#[utoipa::path(get, path = "/api/v2.0/system/gc/{gc_id}/log", operation_id = "getGCLog", tag = "gc",
    params(("gc_id" = i64, Path, description = "The run's id")),
    responses((status = 200, content_type = "text/plain", body = String),
        (status = 401, body = Errors), (status = 403, body = Errors), (status = 404, body = Errors)))]
pub async fn log(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P(id): P<i64>,
) -> Result<Response, HarborError> {
    managed(&s)?;
    let r = s.registry.gc_run(&actor(&who), id).await?;
    let mut text = format!(
        "garbage collection run {} ({}, {}{})\ncreated {}\nstatus {}, step {}\n",
        r.id,
        r.trigger,
        if r.dry_run { "dry run" } else { "deleting" },
        if r.delete_untagged {
            ", untagged manifests too"
        } else {
            ""
        },
        time(r.created_ms),
        r.status,
        r.phase,
    );
    text.push_str(&format!(
        "grace period {} s\nlooked at {} rows and objects\nuntagged manifests {}\nlinks {}\nblobs {}\nfreed {} bytes\nerrors {}\n",
        r.grace_seconds, r.scanned, r.manifests_deleted, r.links_deleted, r.blobs_deleted, r.bytes_freed, r.errors
    ));
    if let Some(e) = &r.last_error {
        text.push_str(&format!("last error: {e}\n"));
    }
    if let Some(end) = r.finished_ms {
        text.push_str(&format!(
            "ended {} after {:.1} s\n",
            time(end),
            (end - r.created_ms) as f64 / 1000.0
        ));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// Stop a queued or running run after its current batch.
#[utoipa::path(put, path = "/api/v2.0/system/gc/{gc_id}", operation_id = "stopGC", tag = "gc",
    params(("gc_id" = i64, Path, description = "The run's id")),
    responses((status = 200), (status = 401, body = Errors), (status = 403, body = Errors),
        (status = 404, body = Errors), (status = 409, body = Errors)))]
pub async fn stop(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    P(id): P<i64>,
) -> Result<StatusCode, HarborError> {
    managed(&s)?;
    s.registry.stop_gc(&actor(&who), id).await?;
    Ok(StatusCode::OK)
}

/// The schedule.
#[utoipa::path(get, path = "/api/v2.0/system/gc/schedule", operation_id = "getGCSchedule", tag = "gc",
    responses((status = 200, body = ScheduleResp), (status = 401, body = Errors),
        (status = 403, body = Errors)))]
pub async fn get_schedule(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
) -> Result<Json<ScheduleResp>, HarborError> {
    managed(&s)?;
    let schedule = s.registry.gc_schedule(&actor(&who)).await?;
    Ok(Json(match schedule {
        None => ScheduleResp {
            schedule: ScheduleObj {
                kind: "None".into(),
                cron: None,
                next_scheduled_time: None,
            },
            parameters: GcParams::default(),
            update_time: None,
        },
        Some(sc) => {
            let now = chrono::Utc::now().timestamp_millis();
            ScheduleResp {
                schedule: ScheduleObj {
                    kind: sc.kind.clone(),
                    cron: (!sc.cron.is_empty()).then(|| sc.cron.clone()),
                    next_scheduled_time: sc.next_after(now).map(time),
                },
                parameters: GcParams {
                    delete_untagged: sc.parameters.delete_untagged,
                    dry_run: sc.parameters.dry_run,
                    workers: None,
                },
                update_time: Some(time(sc.updated_ms)),
            }
        }
    }))
}

/// Run garbage collection now (`schedule.type = Manual`: answers 201 with the run's
/// `Location`), or set the schedule (any other type).
#[utoipa::path(post, path = "/api/v2.0/system/gc/schedule", operation_id = "createGCSchedule", tag = "gc", request_body = ScheduleReq,
    responses((status = 201, headers(("Location" = String))), (status = 400, body = Errors),
        (status = 401, body = Errors), (status = 403, body = Errors), (status = 409, body = Errors)))]
pub async fn create_schedule(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    JsonBody(req): JsonBody<ScheduleReq>,
) -> Result<Response, HarborError> {
    managed(&s)?;
    let who = actor(&who);
    if req.schedule.kind == "Manual" {
        let run = s
            .registry
            .start_gc(&who, req.parameters.into(), "manual")
            .await?;
        return Ok(created(format!("/api/v2.0/system/gc/{}", run.id)));
    }
    set_schedule(&s, &who, &req).await?;
    Ok(StatusCode::CREATED.into_response())
}

/// Set the schedule (`schedule.type = None` turns it off).
#[utoipa::path(put, path = "/api/v2.0/system/gc/schedule", operation_id = "updateGCSchedule", tag = "gc", request_body = ScheduleReq,
    responses((status = 200), (status = 400, body = Errors), (status = 401, body = Errors),
        (status = 403, body = Errors)))]
pub async fn update_schedule(
    State(s): State<Arc<AppState>>,
    Authn(who): Authn,
    JsonBody(req): JsonBody<ScheduleReq>,
) -> Result<StatusCode, HarborError> {
    managed(&s)?;
    set_schedule(&s, &actor(&who), &req).await?;
    Ok(StatusCode::OK)
}

async fn set_schedule(s: &AppState, who: &Actor, req: &ScheduleReq) -> Result<(), HarborError> {
    let schedule = GcSchedule::new(
        &req.schedule.kind,
        req.schedule.cron.as_deref(),
        req.parameters.into(),
    )?;
    s.registry.set_gc_schedule(who, &schedule).await?;
    Ok(())
}
