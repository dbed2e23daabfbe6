//! The OpenAPI 3 document of the management API, generated from the handlers'
//! `#[utoipa::path]` annotations and the JSON types' `ToSchema`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    gc, groups, immutable, logs, projects, quotas, repos, retention, robots, scrub, system, tags,
    users,
};

struct BasicAuth;

impl Modify for BasicAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

/// The management API's description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Berth management API",
        description = "Harbor's /api/v2.0 paths and JSON shapes, for what Berth implements. \
            Authenticate with HTTP Basic (users, or robots as robot$...) or a session cookie \
            from POST /c/login (then unsafe methods need X-Harbor-CSRF-Token)."
    ),
    modifiers(&BasicAuth),
    security(("basic" = [])),
    paths(
        users::list, users::search, users::create, users::current, users::get, users::update,
        users::delete, users::password, users::sysadmin,
        projects::list, projects::head, projects::create, projects::get, projects::update,
        projects::delete, projects::list_members, projects::add_member, projects::get_member,
        projects::update_member, projects::delete_member, projects::summary,
        repos::list, repos::get, repos::delete, repos::artifacts, repos::artifact_one,
        repos::delete_artifact, tags::list, tags::create, tags::delete,
        logs::list, logs::project,
        robots::list, robots::create, robots::get, robots::update, robots::refresh,
        robots::delete,
        groups::list, groups::create, groups::get, groups::delete, groups::members,
        groups::add_member, groups::remove_member,
        system::info, system::health, system::ping, system::statistics, system::search,
        gc::list, gc::get, gc::log, gc::stop, gc::get_schedule, gc::create_schedule,
        gc::update_schedule,
        quotas::list, quotas::get, quotas::update,
        immutable::list, immutable::create, immutable::update, immutable::delete,
        scrub::start, scrub::list, scrub::get, scrub::stop, scrub::findings, scrub::log,
        retention::metadatas, retention::create, retention::get, retention::update,
        retention::delete, retention::run, retention::executions, retention::execution,
        retention::operate, retention::tasks, retention::task_log,
    )
)]
pub struct ApiDoc;

/// `GET /api/v2.0/openapi.json`.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OpenAPI requires every operation to have an id unique in the document; client
    /// generators name their methods after them and fail on duplicates.
    #[test]
    fn every_operation_has_a_unique_id() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("serialise");
        let mut seen = std::collections::HashMap::new();
        let mut operations = 0;
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                let Some(op) = op.as_object().filter(|o| o.contains_key("responses")) else {
                    continue;
                };
                operations += 1;
                let id = op
                    .get("operationId")
                    .and_then(|v| v.as_str())
                    .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
                if let Some(other) = seen.insert(id.to_owned(), format!("{method} {path}")) {
                    panic!("operationId {id} on both {other} and {method} {path}");
                }
            }
        }
        assert!(operations >= 80, "only {operations} operations found");
    }

    /// Operations Harbor also has keep Harbor's ids, so that clients generated from Harbor's
    /// document work unchanged (a sample across the API).
    #[test]
    fn harbor_operations_keep_harbors_ids() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("serialise");
        for (method, path, id) in [
            ("get", "/api/v2.0/projects", "listProjects"),
            ("post", "/api/v2.0/robots", "CreateRobot"),
            ("get", "/api/v2.0/system/gc", "getGCHistory"),
            ("put", "/api/v2.0/users/{user_id}", "updateUserProfile"),
            (
                "delete",
                "/api/v2.0/projects/{project_name}/repositories/{repository_name}/artifacts/{reference}/tags/{tag_name}",
                "deleteTag",
            ),
        ] {
            assert_eq!(doc["paths"][path][method]["operationId"], id, "{method} {path}");
        }
    }
}
