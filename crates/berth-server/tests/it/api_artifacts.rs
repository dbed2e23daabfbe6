//! Deleting repositories and artifacts and managing tags through the management API.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{env, pw, As, Env, Reply};

const REPO: &str = "/api/v2.0/projects/team-a/repositories/app%252Fapi";

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn tags_of(e: &Env, reference: &str) -> Vec<String> {
    let r = e
        .get(As::Admin, &format!("{REPO}/artifacts/{reference}/tags"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    names(&r.json())
}

async fn add(e: &Env, digest: &str, who: As<'_>, name: &str) -> Reply {
    e.call(
        who,
        Method::POST,
        &format!("{REPO}/artifacts/{digest}/tags"),
        Some(json!({ "name": name })),
    )
    .await
}

async fn del(e: &Env, digest: &str, who: As<'_>, tag: &str) -> Reply {
    e.call(
        who,
        Method::DELETE,
        &format!("{REPO}/artifacts/{digest}/tags/{tag}"),
        None,
    )
    .await
}

async fn v2_status(e: &Env, path: &str) -> StatusCode {
    e.get(As::Admin, path).await.status
}

#[tokio::test]
async fn tags_are_listed_added_and_removed() {
    let e = env().await;
    e.project("team-a", false).await;
    // The same image under two tags is one artifact.
    let digest = e.push("team-a/app/api", "1.0").await;
    assert_eq!(e.push("team-a/app/api", "latest").await, digest);
    for (user, role) in [("dev", 2), ("guest", 3)] {
        e.user(user).await;
        e.member("team-a", user, role).await;
    }
    let (dev, guest) = (pw("dev"), pw("guest"));
    assert_eq!(tags_of(&e, &digest).await, ["1.0", "latest"]);
    assert_eq!(tags_of(&e, "latest").await, ["1.0", "latest"]);

    // A developer may add a tag; it then pulls over /v2.
    let r = add(&e, &digest, As::Basic("dev", &dev), "stable").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        v2_status(&e, "/v2/team-a/app/api/manifests/stable").await,
        StatusCode::OK
    );
    // An existing tag is a conflict, a malformed one a bad request, a guest is refused.
    let r = add(&e, &digest, As::Admin, "latest").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::CONFLICT, "CONFLICT")
    );
    let r = add(&e, &digest, As::Admin, "no spaces").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = add(&e, &digest, As::Basic("guest", &guest), "mine").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(tags_of(&e, &digest).await, ["1.0", "latest", "stable"]);

    // Removing a tag needs tag:delete (maintainer and up) and keeps the artifact.
    let r = del(&e, &digest, As::Basic("dev", &dev), "stable").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = del(&e, &digest, As::Admin, "stable").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = del(&e, &digest, As::Admin, "stable").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    assert_eq!(tags_of(&e, &digest).await, ["1.0", "latest"]);
    assert_eq!(
        v2_status(&e, "/v2/team-a/app/api/manifests/stable").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        v2_status(&e, &format!("/v2/team-a/app/api/manifests/{digest}")).await,
        StatusCode::OK
    );
    // Paging applies to the tag list.
    let r = e
        .get(
            As::Admin,
            &format!("{REPO}/artifacts/{digest}/tags?page=2&page_size=1"),
        )
        .await;
    assert_eq!(names(&r.json()), ["latest"]);
    assert_eq!(r.headers["x-total-count"], "2");
}

#[tokio::test]
async fn artifacts_and_repositories_are_deleted() {
    let e = env().await;
    e.project("team-a", false).await;
    let first = e.push("team-a/app/api", "1.0").await;
    e.push("team-a/app/api", "latest").await;
    e.push("team-a/other", "1.0").await;
    for (user, role) in [("dev", 2), ("keeper", 4)] {
        e.user(user).await;
        e.member("team-a", user, role).await;
    }
    let (dev, keeper) = (pw("dev"), pw("keeper"));

    // A developer may not delete; a maintainer may, by tag (the whole artifact goes).
    let r = e
        .call(
            As::Basic("dev", &dev),
            Method::DELETE,
            &format!("{REPO}/artifacts/latest"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = e
        .call(
            As::Basic("keeper", &keeper),
            Method::DELETE,
            &format!("{REPO}/artifacts/latest"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    for path in [
        "/v2/team-a/app/api/manifests/1.0".to_owned(),
        format!("/v2/team-a/app/api/manifests/{first}"),
    ] {
        assert_eq!(v2_status(&e, &path).await, StatusCode::NOT_FOUND, "{path}");
    }
    let r = e
        .call(
            As::Admin,
            Method::DELETE,
            &format!("{REPO}/artifacts/{first}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);

    // Deleting a repository takes everything in it and nothing next door.
    let r = e
        .call(
            As::Basic("dev", &dev),
            Method::DELETE,
            "/api/v2.0/projects/team-a/repositories/other",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    for repo in ["other", "app%252Fapi"] {
        let r = e
            .call(
                As::Basic("keeper", &keeper),
                Method::DELETE,
                &format!("/api/v2.0/projects/team-a/repositories/{repo}"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{repo}: {}", r.text);
    }
    assert_eq!(
        v2_status(&e, "/v2/team-a/other/tags/list").await,
        StatusCode::NOT_FOUND
    );
    let repos = e
        .get(As::Admin, "/api/v2.0/projects/team-a/repositories")
        .await;
    assert_eq!(repos.json(), json!([]));
    let r = e
        .call(
            As::Admin,
            Method::DELETE,
            "/api/v2.0/projects/team-a/repositories/other",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);

    // Each delete is in the audit log under who did it.
    e.flush_audit().await;
    let log = e
        .get(As::Admin, "/api/v2.0/audit-logs?q=operation=delete")
        .await
        .json();
    let kinds: Vec<(String, String)> = log
        .as_array()
        .expect("array")
        .iter()
        .map(|ev| {
            (
                ev["username"].as_str().unwrap_or_default().to_owned(),
                ev["resource_type"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for kind in ["artifact", "repository"] {
        assert!(
            kinds.contains(&("keeper".to_owned(), kind.to_owned())),
            "{kinds:?}"
        );
    }
    // A repository name can be pushed to again; an emptied project can be deleted.
    e.push("team-a/app/api", "2.0").await;
    assert_eq!(tags_of(&e, "2.0").await, ["2.0"]);
    let r = e
        .call(
            As::Admin,
            Method::DELETE,
            "/api/v2.0/projects/team-a/repositories/app%252Fapi",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = e
        .call(As::Admin, Method::DELETE, "/api/v2.0/projects/team-a", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}
