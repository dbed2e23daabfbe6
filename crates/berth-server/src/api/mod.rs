//! The management API under `/api/v2.0`, in Harbor's paths and JSON shapes, and the
//! browser sign-in at `/c/login`.
//!
//! Handlers extract the caller ([`auth::Authn`]), call [`berth_core::Admin`] (which checks
//! permissions first) and shape the reply; errors become Harbor's envelope in
//! [`error`] only. The OpenAPI 3 document is generated from the handlers' annotations and
//! served at `/api/v2.0/openapi.json`.
//!
//! When access control is off (`AppState::auth` is `None`) there is nothing to manage:
//! every endpoint that needs users or projects answers 404 saying so; `/systeminfo`,
//! `/health` and the OpenAPI document still answer.

pub mod auth;
pub mod error;
mod extract;
mod gc;
mod groups;
mod immutable;
mod logs;
mod openapi;
mod paging;
mod projects;
mod quotas;
mod repos;
mod retention;
mod robots;
mod scrub;
mod selector;
mod system;
mod tags;
mod users;

use std::sync::Arc;

use axum::routing::{get, post, put};
use axum::Router;

use crate::AppState;

pub use error::HarborError;

/// The management API's routes.
pub fn router() -> Router<Arc<AppState>> {
    let api = Router::new()
        .route("/users", get(users::list).post(users::create))
        .route("/users/current", get(users::current))
        .route("/users/search", get(users::search))
        .route(
            "/users/{user_id}",
            get(users::get).put(users::update).delete(users::delete),
        )
        .route("/users/{user_id}/password", put(users::password))
        .route("/users/{user_id}/sysadmin", put(users::sysadmin))
        .route(
            "/projects",
            get(projects::list)
                .post(projects::create)
                .head(projects::head),
        )
        .route(
            "/projects/{project_name_or_id}",
            get(projects::get)
                .put(projects::update)
                .delete(projects::delete),
        )
        .route(
            "/projects/{project_name_or_id}/immutabletagrules",
            get(immutable::list).post(immutable::create),
        )
        .route(
            "/projects/{project_name_or_id}/immutabletagrules/{immutable_rule_id}",
            axum::routing::put(immutable::update).delete(immutable::delete),
        )
        .route(
            "/projects/{project_name_or_id}/summary",
            get(projects::summary),
        )
        .route(
            "/projects/{project_name_or_id}/members",
            get(projects::list_members).post(projects::add_member),
        )
        .route(
            "/projects/{project_name_or_id}/members/{mid}",
            get(projects::get_member)
                .put(projects::update_member)
                .delete(projects::delete_member),
        )
        .route(
            "/projects/{project_name_or_id}/repositories",
            get(repos::list),
        )
        .route(
            "/projects/{project_name_or_id}/repositories/{repository_name}",
            get(repos::get).delete(repos::delete),
        )
        .route(
            "/projects/{project_name_or_id}/repositories/{repository_name}/artifacts",
            get(repos::artifacts),
        )
        .route(
            "/projects/{project_name_or_id}/repositories/{repository_name}/artifacts/{reference}",
            get(repos::artifact_one).delete(repos::delete_artifact),
        )
        .route(
            "/projects/{project_name_or_id}/repositories/{repository_name}/artifacts/{reference}/tags",
            get(tags::list).post(tags::create),
        )
        .route(
            "/projects/{project_name_or_id}/repositories/{repository_name}/artifacts/{reference}/tags/{tag_name}",
            axum::routing::delete(tags::delete),
        )
        .route("/projects/{project_name_or_id}/logs", get(logs::project))
        .route("/audit-logs", get(logs::list))
        .route("/robots", get(robots::list).post(robots::create))
        .route(
            "/robots/{robot_id}",
            get(robots::get)
                .put(robots::update)
                .patch(robots::refresh)
                .delete(robots::delete),
        )
        .route("/usergroups", get(groups::list).post(groups::create))
        .route(
            "/usergroups/{group_id}",
            get(groups::get).delete(groups::delete),
        )
        .route(
            "/usergroups/{group_id}/members",
            get(groups::members).post(groups::add_member),
        )
        .route(
            "/usergroups/{group_id}/members/{user_id}",
            axum::routing::delete(groups::remove_member),
        )
        .route("/quotas", get(quotas::list))
        .route("/quotas/{id}", get(quotas::get).put(quotas::update))
        .route("/system/gc", get(gc::list))
        .route(
            "/system/gc/schedule",
            get(gc::get_schedule)
                .post(gc::create_schedule)
                .put(gc::update_schedule),
        )
        .route("/system/gc/{gc_id}", get(gc::get).put(gc::stop))
        .route("/system/gc/{gc_id}/log", get(gc::log))
        .route("/system/scrub", get(scrub::list).post(scrub::start))
        .route("/system/scrub/{scrub_id}", get(scrub::get).put(scrub::stop))
        .route("/system/scrub/{scrub_id}/log", get(scrub::log))
        .route("/system/scrub/{scrub_id}/findings", get(scrub::findings))
        .route("/retentions", post(retention::create))
        .route("/retentions/metadatas", get(retention::metadatas))
        .route(
            "/retentions/{id}",
            get(retention::get)
                .put(retention::update)
                .delete(retention::delete),
        )
        .route(
            "/retentions/{id}/executions",
            get(retention::executions).post(retention::run),
        )
        .route(
            "/retentions/{id}/executions/{eid}",
            get(retention::execution).patch(retention::operate),
        )
        .route(
            "/retentions/{id}/executions/{eid}/tasks",
            get(retention::tasks),
        )
        .route(
            "/retentions/{id}/executions/{eid}/tasks/{tid}",
            get(retention::task_log),
        )
        .route("/systeminfo", get(system::info))
        .route("/health", get(system::health))
        .route("/ping", get(system::ping))
        .route("/statistics", get(system::statistics))
        .route("/search", get(system::search))
        .route("/openapi.json", get(openapi::document))
        .fallback(no_such_endpoint)
        .layer(axum::middleware::from_fn(auth::echo_csrf));
    Router::new()
        .nest("/api/v2.0", api)
        .route("/c/login", post(auth::login))
        .route("/c/logout", get(auth::logout))
}

async fn no_such_endpoint() -> HarborError {
    HarborError::not_found("no such endpoint in /api/v2.0")
}

/// A time in milliseconds since the epoch as RFC 3339 (Harbor's `date-time`).
pub(crate) fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
