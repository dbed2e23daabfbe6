//! Tag immutability over HTTP against the real binary, on whichever backend the tests run
//! on: a tag a rule matches can be created but never moved or deleted, by anyone (the
//! administrator pushes here), through /v2 or the management API; rules are scoped by
//! repository and tag patterns, can be turned off, and are checked in the manifest's
//! transaction so racing first pushes cannot move a tag either.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::access::{admin_server, basic};
use crate::harness::{header, sha256, Server, ADMIN_PASSWORD, OCI_MANIFEST};
use crate::mgmt::{add_member, admin, call, create_project, create_user};

pub fn rule(tags: &str, repos: Value) -> Value {
    json!({
        "action": "immutable", "template": "immutable_template", "disabled": false,
        "tag_selectors": [{"kind": "doublestar", "decoration": "matches", "pattern": tags}],
        "scope_selectors": {"repository": repos},
    })
}

/// Add a rule to `project` as the administrator; returns its id.
pub async fn add_rule(s: &Server, project: &str, body: &Value) -> i64 {
    let r = call(
        s,
        &basic("admin", ADMIN_PASSWORD),
        Method::POST,
        &format!("/api/v2.0/projects/{project}/immutabletagrules"),
        Some(body),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    header(&r, "location")
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Push a distinct image (`n` makes it so) under `tag`: returns the response and digest.
async fn push_as(s: &Server, repo: &str, tag: &str, n: u32) -> (reqwest::Response, String) {
    let (m, _) = image(s, repo, n).await;
    (
        s.put_manifest(repo, tag, OCI_MANIFEST, &m).await,
        sha256(&m),
    )
}

/// The blobs of image `n`, pushed, and its manifest.
async fn image(s: &Server, repo: &str, n: u32) -> (Vec<u8>, String) {
    let config = format!("{{\"imm\":{n}}}");
    let cd = s.push_blob(repo, config.as_bytes()).await;
    let m = crate::harness::image_manifest(&cd, config.len(), &[], None);
    let d = sha256(&m);
    (m, d)
}

async fn refused(r: reqwest::Response, what: &str) -> String {
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "{what}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "DENIED", "{what}: {v}");
    let m = v["errors"][0]["message"].as_str().unwrap().to_owned();
    assert!(m.contains("immutable"), "{what}: {m}");
    m
}

async fn points_at(s: &Server, repo: &str, tag: &str) -> String {
    let r = s
        .http
        .get(s.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{repo}:{tag}");
    header(&r, "docker-content-digest").to_owned()
}

#[tokio::test]
async fn immutable_tags_cannot_be_moved_or_deleted_by_anyone() {
    let s = admin_server(&[], &["imm/app", "imm/tmp/x"]).await;
    create_project(&s, "imm", false).await;
    let (r, a) = push_as(&s, "imm/app", "v1", 1).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = add_rule(
        &s,
        "imm",
        &rule(
            "v*",
            json!([
                {"kind": "doublestar", "decoration": "repoExcludes", "pattern": "tmp/**"}
            ]),
        ),
    )
    .await;
    let listed = admin(
        &s,
        Method::GET,
        "/api/v2.0/projects/imm/immutabletagrules",
        None,
    )
    .await;
    assert_eq!(listed[0]["id"], id, "{listed}");
    assert_eq!(listed[0]["tag_selectors"][0]["pattern"], "v*");
    assert_eq!(
        listed[0]["scope_selectors"]["repository"][0]["decoration"],
        "repoExcludes"
    );

    // Moving v1 is refused; pushing the same manifest again is not.
    let (r, _) = push_as(&s, "imm/app", "v1", 2).await;
    let message = refused(r, "move v1").await;
    assert!(message.contains("imm/app:v1"), "{message}");
    assert_eq!(points_at(&s, "imm/app", "v1").await, a);
    let (r, again) = push_as(&s, "imm/app", "v1", 1).await;
    assert_eq!((r.status(), again), (StatusCode::CREATED, a.clone()));
    // A new matching tag may be created, then not moved.
    let (r, b) = push_as(&s, "imm/app", "v2", 2).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let (r, _) = push_as(&s, "imm/app", "v2", 1).await;
    refused(r, "move v2").await;
    // Several tags in one put: nothing is written if one is immutable.
    let (m, c) = image(&s, "imm/app", 3).await;
    let r = s
        .put_manifest(
            "imm/app",
            &format!("{c}?tag=fresh&tag=v1"),
            OCI_MANIFEST,
            &m,
        )
        .await;
    refused(r, "put with tags fresh and v1").await;
    assert_eq!(
        s.get("/v2/imm/app/manifests/fresh").await.status(),
        StatusCode::NOT_FOUND
    );
    // Tags the rule does not match move freely.
    for n in [1, 2] {
        let (r, _) = push_as(&s, "imm/app", "latest", n).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    // Nor does it reach excluded repositories.
    for n in [1, 2] {
        let (r, _) = push_as(&s, "imm/tmp/x", "v1", n).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }

    // No delete takes an immutable tag: the tag, its manifest, its repository; through /v2
    // or the management API.
    refused(s.delete("/v2/imm/app/manifests/v1").await, "delete tag").await;
    refused(
        s.delete(&format!("/v2/imm/app/manifests/{a}")).await,
        "delete manifest",
    )
    .await;
    let adm = basic("admin", ADMIN_PASSWORD);
    for path in [
        format!("/api/v2.0/projects/imm/repositories/app/artifacts/{a}/tags/v1"),
        format!("/api/v2.0/projects/imm/repositories/app/artifacts/{a}"),
        "/api/v2.0/projects/imm/repositories/app".to_owned(),
    ] {
        let r = call(&s, &adm, Method::DELETE, &path, None).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "DELETE {path}");
    }
    assert_eq!(points_at(&s, "imm/app", "v1").await, a);
    assert_eq!(points_at(&s, "imm/app", "v2").await, b);
    // An untagged manifest or an unprotected tag still goes.
    assert_eq!(
        s.delete("/v2/imm/app/manifests/latest").await.status(),
        StatusCode::ACCEPTED
    );

    // Turned off, the rule protects nothing; turned on again, it does.
    let mut off = rule(
        "v*",
        json!([
            {"kind": "doublestar", "decoration": "repoExcludes", "pattern": "tmp/**"}
        ]),
    );
    off["disabled"] = json!(true);
    let path = format!("/api/v2.0/projects/imm/immutabletagrules/{id}");
    admin(&s, Method::PUT, &path, Some(&off)).await;
    let (r, _) = push_as(&s, "imm/app", "v2", 1).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    off["disabled"] = json!(false);
    admin(&s, Method::PUT, &path, Some(&off)).await;
    refused(
        s.delete("/v2/imm/app/manifests/v2").await,
        "delete v2 again",
    )
    .await;
    // Deleted, it is gone for good.
    admin(&s, Method::DELETE, &path, None).await;
    assert_eq!(
        s.delete("/v2/imm/app/manifests/v2").await.status(),
        StatusCode::ACCEPTED
    );
    let r = call(&s, &adm, Method::DELETE, &path, None).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn racing_first_pushes_of_an_immutable_tag_leave_it_on_one_manifest() {
    let s = Arc::new(admin_server(&[], &["race/app"]).await);
    create_project(&s, "race", false).await;
    add_rule(&s, "race", &rule("release-*", json!([]))).await;
    for round in 0..5u32 {
        let tag = format!("release-{round}");
        let mut tasks = Vec::new();
        for n in 0..4u32 {
            let (s, tag) = (s.clone(), tag.clone());
            tasks.push(tokio::spawn(async move {
                let (m, d) = image(&s, "race/app", round * 10 + n).await;
                let r = s.put_manifest("race/app", &tag, OCI_MANIFEST, &m).await;
                (r.status(), d)
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            let (status, d) = t.await.unwrap();
            match status {
                StatusCode::CREATED => winners.push(d),
                StatusCode::FORBIDDEN => {}
                other => panic!("a racing push answered {other}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert_eq!(points_at(&s, "race/app", &tag).await, winners[0]);
    }
}

#[tokio::test]
async fn rules_are_for_maintainers_and_must_be_valid() {
    let s = admin_server(&[], &["team/app"]).await;
    create_project(&s, "team", false).await;
    create_user(&s, "dev", "Dev-password-1").await;
    add_member(&s, "team", "dev", 2).await;
    create_user(&s, "keeper", "Keeper-password-1").await;
    add_member(&s, "team", "keeper", 4).await;
    let path = "/api/v2.0/projects/team/immutabletagrules";
    let dev = basic("dev", "Dev-password-1");
    let r = call(&s, &dev, Method::POST, path, Some(&rule("**", json!([])))).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = call(&s, &dev, Method::GET, path, None).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let keeper = basic("keeper", "Keeper-password-1");
    let r = call(
        &s,
        &keeper,
        Method::POST,
        path,
        Some(&rule("**", json!([]))),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = call(&s, &keeper, Method::GET, path, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "x-total-count"), "1");

    let adm = basic("admin", ADMIN_PASSWORD);
    for bad in [
        json!({"tag_selectors": [{"kind": "doublestar", "decoration": "sometimes", "pattern": "*"}]}),
        json!({"tag_selectors": [{"kind": "regex", "decoration": "matches", "pattern": "*"}]}),
        json!({"tag_selectors": [{"kind": "doublestar", "decoration": "matches", "pattern": "[a-"}]}),
        json!({"tag_selectors": [{"kind": "doublestar", "decoration": "matches", "pattern": ""}]}),
        json!({"action": "retain", "tag_selectors": []}),
        json!({"scope_selectors": {"namespace": []}}),
        json!({"scope_selectors": {"repository": [
            {"kind": "doublestar", "decoration": "matches", "pattern": "*"}]}}),
    ] {
        let r = call(&s, &adm, Method::POST, path, Some(&bad)).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    // At most 15 rules.
    for _ in 1..15 {
        let r = call(&s, &adm, Method::POST, path, Some(&rule("x*", json!([])))).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let r = call(&s, &adm, Method::POST, path, Some(&rule("y*", json!([])))).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = call(
        &s,
        &adm,
        Method::GET,
        "/api/v2.0/projects/nope/immutabletagrules",
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
