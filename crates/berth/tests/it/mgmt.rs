//! Small helpers for the management API (`/api/v2.0`) as the access tests drive it.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::access::basic;
use crate::harness::{Server, ADMIN_PASSWORD};

/// `method path` on the management API with `authorization`, and a JSON body if given.
pub async fn call(
    s: &Server,
    authorization: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Response {
    // A client of its own: `s.http` may carry a test's bearer token.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut req = http
        .request(method, s.url(path))
        .header("authorization", authorization);
    if let Some(b) = body {
        req = req.json(b);
    }
    req.send().await.unwrap()
}

/// [`call`] as the administrator, which must succeed; returns the body as JSON (`Null` if
/// empty).
pub async fn admin(s: &Server, method: Method, path: &str, body: Option<&Value>) -> Value {
    let what = format!("{method} {path}");
    let r = call(s, &basic("admin", ADMIN_PASSWORD), method, path, body).await;
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "{what}: {status} {text}");
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    }
}

/// Create a project.
pub async fn create_project(s: &Server, name: &str, public: bool) {
    let body = json!({"project_name": name, "metadata": {"public": public.to_string()}});
    admin(s, Method::POST, "/api/v2.0/projects", Some(&body)).await;
}

/// Create a user with `password`; returns its id.
pub async fn create_user(s: &Server, name: &str, password: &str) -> i64 {
    let body = json!({
        "username": name, "email": format!("{name}@example.com"), "realname": name,
        "password": password,
    });
    let r = call(
        s,
        &basic("admin", ADMIN_PASSWORD),
        Method::POST,
        "/api/v2.0/users",
        Some(&body),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    location.rsplit('/').next().unwrap().parse().unwrap()
}

/// Make user `name` a member of `project` with Harbor's role id (1 admin, 2 developer,
/// 3 guest, 4 maintainer).
pub async fn add_member(s: &Server, project: &str, name: &str, role_id: i64) {
    let body = json!({"role_id": role_id, "member_user": {"username": name}});
    let path = format!("/api/v2.0/projects/{project}/members");
    admin(s, Method::POST, &path, Some(&body)).await;
}

/// A robot that may pull and push in `project`; returns the create response (`id`, `name`,
/// `secret`, ...).
pub async fn create_robot(s: &Server, name: &str, project: &str) -> Value {
    let body = json!({
        "name": name, "level": "project", "duration": -1,
        "permissions": [{"kind": "project", "namespace": project, "access": [
            {"resource": "repository", "action": "pull"},
            {"resource": "repository", "action": "push"},
        ]}],
    });
    admin(s, Method::POST, "/api/v2.0/robots", Some(&body)).await
}

/// The audit log's entries matching `q` (Harbor's query), newest first, once at least one
/// is there: events are written in batches, a moment after the request that caused them.
pub async fn audit_events(s: &Server, q: &str) -> Vec<Value> {
    let path = format!("/api/v2.0/audit-logs?page_size=100&q={q}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = admin(s, Method::GET, &path, None).await;
        let events = v.as_array().unwrap().clone();
        if !events.is_empty() || Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `berth admin --output json <args>` against `s` as the administrator: exit success, and
/// what it printed.
pub fn admin_cli(s: &Server, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "admin",
            "--url",
            &s.base,
            "--username",
            "admin",
            "--output",
            "json",
        ])
        .args(args)
        .env("BERTH_PASSWORD", ADMIN_PASSWORD)
        .output()
        .expect("run berth admin");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        eprintln!("berth admin {args:?}: {stderr}");
    }
    (out.status.success(), stdout)
}

/// [`admin_cli`], which must succeed: what it printed, as JSON.
pub fn admin_cli_json(s: &Server, args: &[&str]) -> Value {
    let (ok, printed) = admin_cli(s, args);
    assert!(ok, "berth admin {args:?} failed: {printed}");
    serde_json::from_str(&printed)
        .unwrap_or_else(|e| panic!("berth admin {args:?} printed no JSON ({e}): {printed}"))
}

/// `berth admin <args>` printing for people (no `--output json`), which must succeed: what
/// it printed.
pub fn admin_cli_text(s: &Server, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["admin", "--url", &s.base, "--username", "admin"])
        .args(args)
        .env("BERTH_PASSWORD", ADMIN_PASSWORD)
        .output()
        .expect("run berth admin");
    assert!(
        out.status.success(),
        "berth admin {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
