//! Robot accounts through the management API.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::support::{env, pw, As};

fn pull_push(project: &str) -> serde_json::Value {
    json!([{"kind": "project", "namespace": project, "access": [
        {"resource": "repository", "action": "pull"},
        {"resource": "repository", "action": "push"},
        {"resource": "repository", "action": "list"}
    ]}])
}

#[tokio::test]
async fn robots_show_their_secret_once_and_stop_when_disabled_or_deleted() {
    let e = env().await;
    let pid = e.project("team-a", false).await;
    e.user("alice").await;
    e.user("bob").await;
    e.member("team-a", "alice", 1).await;
    e.member("team-a", "bob", 2).await;
    let (apw, bpw) = (pw("alice"), pw("bob"));
    let alice = As::Basic("alice", &apw);

    let body = json!({"name": "ci", "level": "project", "duration": -1, "permissions": pull_push("team-a")});
    let by_dev = e
        .call(
            As::Basic("bob", &bpw),
            Method::POST,
            "/api/v2.0/robots",
            Some(body.clone()),
        )
        .await;
    assert_eq!(by_dev.status, StatusCode::FORBIDDEN);
    let created = e
        .call(alice, Method::POST, "/api/v2.0/robots", Some(body.clone()))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let c = created.json();
    assert_eq!(c["name"], "robot$team-a+ci");
    assert_eq!(c["expires_at"], -1);
    let secret = c["secret"].as_str().expect("secret").to_owned();
    let id = c["id"].as_i64().expect("id");
    let dup = e
        .call(alice, Method::POST, "/api/v2.0/robots", Some(body))
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);

    let bad = json!({"name": "x", "level": "project", "permissions": [{"kind": "project", "namespace": "team-a", "access": [{"resource": "repository", "action": "fly"}]}]});
    assert_eq!(
        e.call(alice, Method::POST, "/api/v2.0/robots", Some(bad))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    let other = json!({"name": "x", "level": "project", "permissions": pull_push("team-b")});
    assert_eq!(
        e.call(alice, Method::POST, "/api/v2.0/robots", Some(other))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let system = json!({"name": "sys", "level": "system", "permissions": pull_push("*")});
    assert_eq!(
        e.call(
            alice,
            Method::POST,
            "/api/v2.0/robots",
            Some(system.clone())
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        e.call(As::Admin, Method::POST, "/api/v2.0/robots", Some(system))
            .await
            .status,
        StatusCode::CREATED
    );

    // Listing and reading never show a secret.
    let list = e
        .get(
            alice,
            &format!("/api/v2.0/robots?q=Level%3Dproject,ProjectID%3D{pid}"),
        )
        .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    assert_eq!(list.headers["x-total-count"], "1");
    assert!(
        !list.text.contains(&secret)
            && !list.text.contains("secret")
            && !list.text.contains("argon2")
    );
    assert_eq!(
        e.get(alice, "/api/v2.0/robots?q=Level%3Dsystem")
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let one = e.get(alice, &format!("/api/v2.0/robots/{id}")).await;
    assert_eq!(one.json()["permissions"][0]["namespace"], "team-a");
    assert!(!one.text.contains(&secret));

    // The robot signs in with its secret.
    let robot = As::Basic("robot$team-a+ci", &secret);
    assert_eq!(
        e.get(robot, "/api/v2.0/projects/team-a/repositories")
            .await
            .status,
        StatusCode::OK
    );
    // Disabled: refused at once.
    let path = format!("/api/v2.0/robots/{id}");
    let off = e
        .call(alice, Method::PUT, &path, Some(json!({"disable": true})))
        .await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.text);
    assert_eq!(
        e.get(robot, "/api/v2.0/projects/team-a/repositories")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        e.call(alice, Method::PUT, &path, Some(json!({"disable": false})))
            .await
            .status,
        StatusCode::OK
    );
    // Refreshed: the new secret works, the old one not.
    let fresh = e
        .call(alice, Method::PATCH, &path, Some(json!({"secret": ""})))
        .await;
    assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.text);
    let new_secret = fresh.json()["secret"].as_str().expect("secret").to_owned();
    assert_ne!(new_secret, secret);
    assert_eq!(
        e.get(robot, "/api/v2.0/projects/team-a/repositories")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let robot = As::Basic("robot$team-a+ci", &new_secret);
    assert_eq!(
        e.get(robot, "/api/v2.0/projects/team-a/repositories")
            .await
            .status,
        StatusCode::OK
    );
    let weak = e
        .call(alice, Method::PATCH, &path, Some(json!({"secret": "weak"})))
        .await;
    assert_eq!(weak.status, StatusCode::BAD_REQUEST);
    // Deleted: refused.
    assert_eq!(
        e.call(alice, Method::DELETE, &path, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        e.get(robot, "/api/v2.0/projects/team-a/repositories")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(e.get(alice, &path).await.status, StatusCode::NOT_FOUND);
}
