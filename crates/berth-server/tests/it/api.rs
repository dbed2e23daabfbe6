//! The management API: users, projects, members, repositories, audit log, sessions.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::json;

use crate::support::{env, pw, As, ADMIN_PW};

#[tokio::test]
async fn users_need_an_administrator_and_never_show_a_hash() {
    let e = env().await;
    assert_eq!(
        e.get(As::Nobody, "/api/v2.0/users").await.status,
        StatusCode::UNAUTHORIZED
    );
    let bad = e.get(As::Basic("admin", "wrong"), "/api/v2.0/users").await;
    assert_eq!(
        (bad.status, bad.code().as_str()),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );
    let alice = e.user("alice").await;
    e.user("bob").await;
    e.user("carol").await;
    let apw = pw("alice");
    let denied = e.get(As::Basic("alice", &apw), "/api/v2.0/users").await;
    assert_eq!(
        (denied.status, denied.code().as_str()),
        (StatusCode::FORBIDDEN, "FORBIDDEN")
    );

    // Paging: 4 users (admin too), 2 a page.
    let p1 = e.get(As::Admin, "/api/v2.0/users?page=1&page_size=2").await;
    assert_eq!(p1.status, StatusCode::OK);
    assert_eq!(p1.headers["x-total-count"], "4");
    assert_eq!(p1.json().as_array().map(Vec::len), Some(2));
    let link = p1.headers["link"].to_str().expect("ascii");
    assert!(link.contains("page=2&page_size=2>; rel=\"next\""), "{link}");
    assert!(!link.contains("prev"));
    let p2 = e.get(As::Admin, "/api/v2.0/users?page=2&page_size=2").await;
    assert!(p2.headers["link"]
        .to_str()
        .expect("ascii")
        .contains("rel=\"prev\""));
    assert!(!p2.headers["link"].to_str().expect("ascii").contains("next"));
    assert_eq!(
        e.get(As::Admin, "/api/v2.0/users?page_size=101")
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    let q = e.get(As::Admin, "/api/v2.0/users?q=username%3D~ali").await;
    assert_eq!(q.json()[0]["username"], "alice");
    assert_eq!(q.headers["x-total-count"], "1");
    for r in [&p1, &p2, &q] {
        assert!(
            !r.text.contains("argon2") && !r.text.contains("password"),
            "{}",
            r.text
        );
    }

    // Duplicates, weak passwords, bad names.
    let dup = e
        .call(
            As::Admin,
            Method::POST,
            "/api/v2.0/users",
            Some(json!({"username": "alice", "password": "Another1x"})),
        )
        .await;
    assert_eq!(
        (dup.status, dup.code().as_str()),
        (StatusCode::CONFLICT, "CONFLICT")
    );
    let weak = e
        .call(
            As::Admin,
            Method::POST,
            "/api/v2.0/users",
            Some(json!({"username": "dave", "password": "short"})),
        )
        .await;
    assert_eq!(
        (weak.status, weak.code().as_str()),
        (StatusCode::BAD_REQUEST, "BAD_REQUEST")
    );
    let robotish = e
        .call(
            As::Admin,
            Method::POST,
            "/api/v2.0/users",
            Some(json!({"username": "robot$x", "password": "Another1x"})),
        )
        .await;
    assert_eq!(robotish.status, StatusCode::BAD_REQUEST);

    // Self service: current user, profile, password.
    let me = e
        .get(As::Basic("alice", &apw), "/api/v2.0/users/current")
        .await;
    assert_eq!(me.json()["user_id"], alice);
    assert_eq!(me.json()["sysadmin_flag"], false);
    assert!(!me.text.contains("argon2"));
    let other = e.get(As::Basic("alice", &apw), "/api/v2.0/users/1").await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    let upd = e
        .call(
            As::Basic("alice", &apw),
            Method::PUT,
            &format!("/api/v2.0/users/{alice}"),
            Some(json!({"realname": "Alice A."})),
        )
        .await;
    assert_eq!(upd.status, StatusCode::OK, "{}", upd.text);
    assert_eq!(
        e.get(As::Admin, &format!("/api/v2.0/users/{alice}"))
            .await
            .json()["realname"],
        "Alice A."
    );
    let path = format!("/api/v2.0/users/{alice}/password");
    let wrong_old = e
        .call(
            As::Basic("alice", &apw),
            Method::PUT,
            &path,
            Some(json!({"old_password": "nope", "new_password": "NewPassw0rd"})),
        )
        .await;
    assert_eq!(wrong_old.status, StatusCode::BAD_REQUEST);
    let ok = e
        .call(
            As::Basic("alice", &apw),
            Method::PUT,
            &path,
            Some(json!({"old_password": apw, "new_password": "NewPassw0rd"})),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(
        e.get(As::Basic("alice", "NewPassw0rd"), "/api/v2.0/users/current")
            .await
            .status,
        StatusCode::OK
    );

    // Promotion, then deletion: the deleted user's credentials stop working.
    let promote = e
        .call(
            As::Admin,
            Method::PUT,
            &format!("/api/v2.0/users/{alice}/sysadmin"),
            Some(json!({"sysadmin_flag": true})),
        )
        .await;
    assert_eq!(promote.status, StatusCode::OK);
    assert_eq!(
        e.get(As::Basic("alice", "NewPassw0rd"), "/api/v2.0/users")
            .await
            .status,
        StatusCode::OK
    );
    let self_delete = e
        .call(
            As::Basic("alice", "NewPassw0rd"),
            Method::DELETE,
            &format!("/api/v2.0/users/{alice}"),
            None,
        )
        .await;
    assert_eq!(self_delete.status, StatusCode::BAD_REQUEST);
    let del = e
        .call(
            As::Admin,
            Method::DELETE,
            &format!("/api/v2.0/users/{alice}"),
            None,
        )
        .await;
    assert_eq!(del.status, StatusCode::OK);
    assert_eq!(
        e.get(As::Basic("alice", "NewPassw0rd"), "/api/v2.0/users/current")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        e.get(As::Admin, &format!("/api/v2.0/users/{alice}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn projects_members_and_visibility() {
    let e = env().await;
    e.user("alice").await;
    e.user("bob").await;
    let (apw, bpw) = (pw("alice"), pw("bob"));
    let alice = As::Basic("alice", &apw);
    let bob = As::Basic("bob", &bpw);

    // Any user may create a project and becomes its admin.
    let r = e
        .call(
            alice,
            Method::POST,
            "/api/v2.0/projects",
            Some(json!({"project_name": "team-a", "metadata": {"public": "false"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let dup = e
        .call(
            alice,
            Method::POST,
            "/api/v2.0/projects",
            Some(json!({"project_name": "team-a"})),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    let bad = e
        .call(
            alice,
            Method::POST,
            "/api/v2.0/projects",
            Some(json!({"project_name": "Team A"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let anon = e
        .call(
            As::Nobody,
            Method::POST,
            "/api/v2.0/projects",
            Some(json!({"project_name": "x"})),
        )
        .await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED);
    let head = |name: &str| {
        Request::head(format!("/api/v2.0/projects?project_name={name}"))
            .header("authorization", crate::support::basic("bob", &bpw))
            .body(Body::empty())
            .expect("request")
    };
    assert_eq!(e.send(head("team-a")).await.status, StatusCode::OK);
    assert_eq!(e.send(head("nope")).await.status, StatusCode::NOT_FOUND);

    let mine = e.get(alice, "/api/v2.0/projects/team-a").await;
    assert_eq!(mine.status, StatusCode::OK);
    assert_eq!(mine.json()["metadata"]["public"], "false");
    assert_eq!(mine.json()["current_user_role_id"], 1);
    let id = mine.json()["project_id"].as_i64().expect("id");
    assert_eq!(
        e.get(alice, &format!("/api/v2.0/projects/{id}"))
            .await
            .status,
        StatusCode::OK
    );

    // Invisible to bob: 404, not 403, and not listed.
    let hidden = e.get(bob, "/api/v2.0/projects/team-a").await;
    assert_eq!(
        (hidden.status, hidden.code().as_str()),
        (StatusCode::NOT_FOUND, "NOT_FOUND")
    );
    let listed = e.get(bob, "/api/v2.0/projects").await;
    let names: Vec<_> = listed
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("library")]);
    assert_eq!(
        e.get(As::Nobody, "/api/v2.0/projects?public=true")
            .await
            .headers["x-total-count"],
        "1"
    );
    assert_eq!(
        e.get(As::Admin, "/api/v2.0/projects").await.headers["x-total-count"],
        "2"
    );

    // Members.
    let members = "/api/v2.0/projects/team-a/members";
    let bad_role = e
        .call(
            alice,
            Method::POST,
            members,
            Some(json!({"role_id": 9, "member_user": {"username": "bob"}})),
        )
        .await;
    assert_eq!(bad_role.status, StatusCode::BAD_REQUEST);
    let no_user = e
        .call(
            alice,
            Method::POST,
            members,
            Some(json!({"role_id": 2, "member_user": {"username": "zed"}})),
        )
        .await;
    assert_eq!(no_user.status, StatusCode::NOT_FOUND);
    let add = e
        .call(
            alice,
            Method::POST,
            members,
            Some(json!({"role_id": 2, "member_user": {"username": "bob"}})),
        )
        .await;
    assert_eq!(add.status, StatusCode::CREATED, "{}", add.text);
    let mid = add.headers["location"]
        .to_str()
        .expect("ascii")
        .rsplit('/')
        .next()
        .expect("mid")
        .to_owned();
    let again = e
        .call(
            alice,
            Method::POST,
            members,
            Some(json!({"role_id": 3, "member_user": {"username": "bob"}})),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let list = e.get(bob, members).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.headers["x-total-count"], "2");
    let m = e.get(bob, &format!("{members}/{mid}")).await.json();
    assert_eq!(
        (
            m["entity_name"].clone(),
            m["role_id"].clone(),
            m["entity_type"].clone()
        ),
        (json!("bob"), json!(2), json!("u"))
    );
    // A developer may neither manage members nor delete the project.
    let denied = e
        .call(
            bob,
            Method::PUT,
            &format!("{members}/{mid}"),
            Some(json!({"role_id": 1})),
        )
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(
        e.call(bob, Method::DELETE, "/api/v2.0/projects/team-a", None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let promote = e
        .call(
            alice,
            Method::PUT,
            &format!("{members}/{mid}"),
            Some(json!({"role_id": 4})),
        )
        .await;
    assert_eq!(promote.status, StatusCode::OK);
    assert_eq!(
        e.get(bob, "/api/v2.0/projects/team-a").await.json()["current_user_role_id"],
        4
    );
    // Making it public.
    let public = e
        .call(
            alice,
            Method::PUT,
            "/api/v2.0/projects/team-a",
            Some(json!({"metadata": {"public": "true"}})),
        )
        .await;
    assert_eq!(public.status, StatusCode::OK);
    assert_eq!(
        e.get(As::Nobody, "/api/v2.0/projects/team-a").await.json()["metadata"]["public"],
        "true"
    );
    let remove = e
        .call(alice, Method::DELETE, &format!("{members}/{mid}"), None)
        .await;
    assert_eq!(remove.status, StatusCode::OK);
    assert_eq!(
        e.get(alice, &format!("{members}/{mid}")).await.status,
        StatusCode::NOT_FOUND
    );
    let gone = e
        .call(alice, Method::DELETE, "/api/v2.0/projects/team-a", None)
        .await;
    assert_eq!(gone.status, StatusCode::OK, "{}", gone.text);
}

#[tokio::test]
async fn repositories_and_artifacts() {
    let e = env().await;
    e.project("team-a", false).await;
    let digest = e.push("team-a/app/api", "1.0").await;
    e.user("bob").await;
    let bpw = pw("bob");

    let repos = e
        .get(As::Admin, "/api/v2.0/projects/team-a/repositories")
        .await;
    assert_eq!(repos.status, StatusCode::OK, "{}", repos.text);
    assert_eq!(repos.json()[0]["name"], "team-a/app/api");
    assert_eq!(repos.json()[0]["artifact_count"], 1);
    // Harbor's clients encode the `/` in a repository name twice.
    let one = e
        .get(
            As::Admin,
            "/api/v2.0/projects/team-a/repositories/app%252Fapi",
        )
        .await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.text);
    let arts = e
        .get(
            As::Admin,
            "/api/v2.0/projects/team-a/repositories/app%252Fapi/artifacts",
        )
        .await;
    assert_eq!(arts.status, StatusCode::OK, "{}", arts.text);
    let a = &arts.json()[0];
    assert_eq!(a["digest"], digest.as_str());
    assert_eq!(a["tags"][0]["name"], "1.0");
    assert_eq!(
        a["manifest_media_type"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert!(a["size"].as_u64().unwrap_or(0) > 0);
    let by_tag = e
        .get(
            As::Admin,
            "/api/v2.0/projects/team-a/repositories/app%252Fapi/artifacts/1.0",
        )
        .await;
    assert_eq!(by_tag.json()["digest"], digest.as_str());
    let by_digest = e
        .get(
            As::Admin,
            &format!("/api/v2.0/projects/team-a/repositories/app%252Fapi/artifacts/{digest}"),
        )
        .await;
    assert_eq!(by_digest.status, StatusCode::OK);
    assert_eq!(
        e.get(
            As::Admin,
            "/api/v2.0/projects/team-a/repositories/app%252Fapi/artifacts/2.0"
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    // Invisible to a non-member.
    assert_eq!(
        e.get(
            As::Basic("bob", &bpw),
            "/api/v2.0/projects/team-a/repositories"
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    // A project that holds repositories cannot be deleted.
    let del = e
        .call(As::Admin, Method::DELETE, "/api/v2.0/projects/team-a", None)
        .await;
    assert_eq!(
        (del.status, del.code().as_str()),
        (StatusCode::PRECONDITION_FAILED, "PRECONDITION")
    );

    // Search and statistics see only what the caller may see.
    let s = e.get(As::Admin, "/api/v2.0/search?q=app").await.json();
    assert_eq!(s["repository"][0]["repository_name"], "team-a/app/api");
    let s = e
        .get(As::Basic("bob", &bpw), "/api/v2.0/search?q=team")
        .await
        .json();
    assert_eq!(s["project"], json!([]));
    assert_eq!(s["repository"], json!([]));
    let st = e.get(As::Admin, "/api/v2.0/statistics").await.json();
    assert_eq!(
        (
            st["private_project_count"].clone(),
            st["private_repo_count"].clone()
        ),
        (json!(1), json!(1))
    );
    let st = e
        .get(As::Basic("bob", &bpw), "/api/v2.0/statistics")
        .await
        .json();
    assert_eq!(
        (
            st["private_project_count"].clone(),
            st["public_project_count"].clone()
        ),
        (json!(0), json!(1))
    );
    assert_eq!(st["total_storage_consumption"], 0);
}

#[tokio::test]
async fn audit_log_records_changes_newest_first() {
    let e = env().await;
    e.user("alice").await;
    e.project("team-a", false).await;
    e.project("team-b", false).await;
    e.member("team-a", "alice", 3).await;
    e.flush_audit().await;
    let all = e
        .get(As::Admin, "/api/v2.0/audit-logs?q=operation%3Dcreate")
        .await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text);
    let kinds: Vec<_> = all
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["resource_type"].clone())
        .collect();
    assert_eq!(
        kinds,
        vec![
            json!("member"),
            json!("project"),
            json!("project"),
            json!("user")
        ]
    );
    let users = e
        .get(
            As::Admin,
            "/api/v2.0/audit-logs?q=resource_type%3Duser,username%3Dadmin,operation%3Dcreate",
        )
        .await;
    assert_eq!(users.headers["x-total-count"], "1");
    let future = e
        .get(
            As::Admin,
            "/api/v2.0/audit-logs?q=op_time%3D%5B2999-01-01%2000%3A00%3A00~%5D",
        )
        .await;
    assert_eq!(future.headers["x-total-count"], "0");
    // A guest of team-a sees team-a's events only.
    let apw = pw("alice");
    let mine = e
        .get(As::Basic("alice", &apw), "/api/v2.0/audit-logs")
        .await
        .json();
    let mine = mine.as_array().expect("array");
    assert!(!mine.is_empty());
    assert!(mine.iter().all(|e| e["project"] == "team-a"), "{mine:?}");
    let proj = e
        .get(As::Basic("alice", &apw), "/api/v2.0/projects/team-a/logs")
        .await;
    assert_eq!(proj.status, StatusCode::OK);
    assert_eq!(
        e.get(As::Basic("alice", &apw), "/api/v2.0/projects/team-b/logs")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        e.get(As::Nobody, "/api/v2.0/audit-logs").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_deleted_admin_is_not_recreated_by_the_next_start() {
    let e = env().await;
    let store = e.access.store();
    let admin = store.user_by_name("admin").await.unwrap().expect("admin");
    assert!(store.delete_user(admin.id).await.unwrap());
    // What the next `berth serve` on this store does first.
    assert_eq!(e.access.bootstrap(Some(ADMIN_PW)).await.unwrap(), None);
    assert!(store.user_by_name("admin").await.unwrap().is_none());
}
