//! Browser sessions, CSRF, and the endpoints that need no project.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;

use crate::support::{env, As, ADMIN_PW};

#[tokio::test]
async fn sessions_need_the_csrf_token_for_changes() {
    let e = env().await;
    let login = |pw: &str| {
        Request::post("/c/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(format!("principal=admin&password={pw}")))
            .expect("request")
    };
    assert_eq!(
        e.send(login("wrong")).await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = e.send(login(ADMIN_PW)).await;
    assert_eq!(r.status, StatusCode::OK);
    let cookie = r.headers["set-cookie"].to_str().expect("ascii").to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"));
    let sid = cookie.split(';').next().expect("pair").to_owned();
    let csrf = r.headers["x-harbor-csrf-token"]
        .to_str()
        .expect("ascii")
        .to_owned();

    let get = Request::get("/api/v2.0/users/current")
        .header("cookie", &sid)
        .body(Body::empty())
        .expect("request");
    let me = e.send(get).await;
    assert_eq!(me.json()["username"], "admin");
    assert_eq!(
        me.headers["x-harbor-csrf-token"].to_str().expect("ascii"),
        csrf
    );

    let create = |token: Option<&str>| {
        let mut b = Request::post("/api/v2.0/projects")
            .header("cookie", &sid)
            .header("content-type", "application/json");
        if let Some(t) = token {
            b = b.header("x-harbor-csrf-token", t);
        }
        b.body(Body::from(json!({"project_name": "web"}).to_string()))
            .expect("request")
    };
    let refused = e.send(create(None)).await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (StatusCode::FORBIDDEN, "FORBIDDEN")
    );
    assert_eq!(
        e.send(create(Some("forged"))).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        e.send(create(Some(&csrf))).await.status,
        StatusCode::CREATED
    );

    // Basic credentials need no token, but a browser's cross-site request is refused.
    let cross = Request::post("/api/v2.0/projects")
        .header("authorization", crate::support::basic("admin", ADMIN_PW))
        .header("content-type", "application/json")
        .header("host", "registry.example")
        .header("origin", "https://evil.example")
        .body(Body::from(json!({"project_name": "evil"}).to_string()))
        .expect("request");
    assert_eq!(e.send(cross).await.status, StatusCode::FORBIDDEN);

    let out = Request::get("/c/logout")
        .header("cookie", &sid)
        .body(Body::empty())
        .expect("request");
    assert_eq!(e.send(out).await.status, StatusCode::OK);
    let after = Request::get("/api/v2.0/users/current")
        .header("cookie", &sid)
        .body(Body::empty())
        .expect("request");
    assert_eq!(e.send(after).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn system_endpoints_and_the_openapi_document() {
    let e = env().await;
    let info = e.get(As::Nobody, "/api/v2.0/systeminfo").await.json();
    assert_eq!(info["auth_mode"], "db_auth");
    assert!(info["harbor_version"]
        .as_str()
        .unwrap_or_default()
        .starts_with("berth-"));
    let health = e.get(As::Nobody, "/api/v2.0/health").await.json();
    assert_eq!(health["status"], "healthy");
    assert_eq!(
        e.get(As::Nobody, "/api/v2.0/statistics").await.status,
        StatusCode::UNAUTHORIZED
    );
    let doc = e.get(As::Nobody, "/api/v2.0/openapi.json").await.json();
    assert!(doc["openapi"]
        .as_str()
        .unwrap_or_default()
        .starts_with("3."));
    for path in [
        "/api/v2.0/users",
        "/api/v2.0/projects/{project_name_or_id}/members",
        "/api/v2.0/robots/{robot_id}",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not documented");
    }
    let missing = e.get(As::Admin, "/api/v2.0/no-such-thing").await;
    assert_eq!(
        (missing.status, missing.code().as_str()),
        (StatusCode::NOT_FOUND, "NOT_FOUND")
    );
}
