//! Project quotas over HTTP against the real binary, on whichever backend the tests run on:
//! usage that counts shared layers once, pushes refused before their bytes are stored,
//! manifests refused in the transaction that would pass a limit, pushes racing the limit,
//! deletes freeing quota, and who may read and set quotas.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::access::{admin_server, basic};
use crate::harness::{header, image_manifest, sha256, Server, ADMIN_PASSWORD, OCI_MANIFEST};
use crate::mgmt::{
    add_member, admin, admin_cli, admin_cli_json, call, create_project, create_user,
};

/// The project's id.
async fn project_id(s: &Server, name: &str) -> i64 {
    let p = admin(s, Method::GET, &format!("/api/v2.0/projects/{name}"), None).await;
    p["project_id"].as_i64().unwrap()
}

/// `(used storage, used count)` of quota `id`.
async fn used(s: &Server, id: i64) -> (u64, u64) {
    let q = admin(s, Method::GET, &format!("/api/v2.0/quotas/{id}"), None).await;
    (
        q["used"]["storage"].as_u64().unwrap(),
        q["used"]["count"].as_u64().unwrap(),
    )
}

async fn set_limits(s: &Server, id: i64, hard: Value) {
    admin(
        s,
        Method::PUT,
        &format!("/api/v2.0/quotas/{id}"),
        Some(&json!({ "hard": hard })),
    )
    .await;
}

/// An image manifest of `config` and `layers` (pushed already).
fn manifest_of(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    let digests: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let refs: Vec<(&str, usize)> = digests
        .iter()
        .zip(layers)
        .map(|(d, l)| (d.as_str(), l.len()))
        .collect();
    image_manifest(&sha256(config), config.len(), &refs, None)
}

/// Push the blobs and the manifest; returns the manifest put's response and the manifest.
async fn push(
    s: &Server,
    repo: &str,
    tag: &str,
    config: &[u8],
    layers: &[&[u8]],
) -> (reqwest::Response, Vec<u8>) {
    s.push_blob(repo, config).await;
    for l in layers {
        s.push_blob(repo, l).await;
    }
    let m = manifest_of(config, layers);
    (s.put_manifest(repo, tag, OCI_MANIFEST, &m).await, m)
}

/// The message of a spec error body, checked to be `DENIED`.
async fn denied(r: reqwest::Response) -> String {
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "DENIED", "{v}");
    v["errors"][0]["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn quota_counts_shared_layers_once_and_refuses_what_would_pass_it() {
    let s = admin_server(&[], &["quota/app", "quota/tool", "other/app"]).await;
    let r = call(
        &s,
        &basic("admin", ADMIN_PASSWORD),
        Method::POST,
        "/api/v2.0/projects",
        Some(&json!({"project_name": "quota", "storage_limit": -1})),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = project_id(&s, "quota").await;
    assert_eq!(used(&s, id).await, (0, 0));
    let q = admin(&s, Method::GET, &format!("/api/v2.0/quotas/{id}"), None).await;
    assert_eq!(q["hard"], json!({"storage": -1, "count": -1}));
    assert_eq!(q["ref"]["name"], "quota");

    let shared = vec![7u8; 40_000];
    let (a_config, a_layer) = (b"{\"a\":1}".to_vec(), vec![1u8; 30_000]);
    let (r, a) = push(&s, "quota/app", "a", &a_config, &[&shared, &a_layer]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let a_size = (a_config.len() + shared.len() + a_layer.len() + a.len()) as u64;
    assert_eq!(used(&s, id).await, (a_size, 1));
    // Another repository of the project shares a layer: it is counted once.
    let (b_config, b_layer) = (b"{\"b\":1}".to_vec(), vec![2u8; 20_000]);
    let (r, b) = push(&s, "quota/tool", "b", &b_config, &[&shared, &b_layer]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let b_own = (b_config.len() + b_layer.len() + b.len()) as u64;
    assert_eq!(used(&s, id).await, (a_size + b_own, 2));
    // Moving a tag or adding one costs nothing.
    let r = s.put_manifest("quota/app", "again", OCI_MANIFEST, &a).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(used(&s, id).await, (a_size + b_own, 2));
    // The listing by project shows the same.
    let listed = admin(
        &s,
        Method::GET,
        &format!("/api/v2.0/quotas?reference=project&reference_id={id}"),
        None,
    )
    .await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["used"]["storage"], a_size + b_own);

    // 10 kB of headroom.
    let usage = a_size + b_own;
    set_limits(&s, id, json!({"storage": usage + 10_000})).await;
    // A 50 kB blob is refused before its bytes are stored: monolithic...
    let big = vec![9u8; 50_000];
    let big_digest = sha256(&big);
    let r = s
        .http
        .post(s.url(&format!("/v2/quota/app/blobs/uploads/?digest={big_digest}")))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    let message = denied(r).await;
    assert!(
        message.contains("storage quota") && message.contains("\"quota\""),
        "{message}"
    );
    assert!(message.contains(&(usage + 10_000).to_string()), "{message}");
    // ...and in chunks: the chunk that would pass it is refused, the upload keeps its offset.
    let r = s.post("/v2/quota/app/blobs/uploads/").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = header(&r, "location").to_owned();
    let r = s
        .patch_chunk(&location, "0-7999", big[..8_000].to_vec())
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = header(&r, "location").to_owned();
    let r = s
        .patch_chunk(&location, "8000-49999", big[8_000..].to_vec())
        .await;
    denied(r).await;
    let status = s.get(&location).await;
    assert_eq!(header(&status, "range"), "0-7999");
    assert!(!s.storage().blob_digests().await.contains(&big_digest));
    assert_eq!(
        s.head(&format!("/v2/quota/app/blobs/{big_digest}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    // Bytes stored already (here by another project) are not stored again, so the upload is
    // let through; the manifest that would pass the quota is refused, and nothing of it is
    // kept.
    let other = vec![5u8; 60_000];
    s.push_blob("other/app", &other).await;
    let (r, c) = push(&s, "quota/app", "c", b"{\"c\":1}", &[&other]).await;
    let message = denied(r).await;
    assert!(message.contains("storage quota"), "{message}");
    assert_eq!(
        s.get("/v2/quota/app/manifests/c").await.status(),
        StatusCode::NOT_FOUND
    );
    let c_digest = sha256(&c);
    assert_eq!(
        s.get(&format!("/v2/quota/app/manifests/{c_digest}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    // Its blobs are linked but referenced by nothing: they count for nothing.
    assert_eq!(used(&s, id).await, (usage, 2));

    // A count limit.
    set_limits(&s, id, json!({"storage": -1, "count": 2})).await;
    let (r, _) = push(&s, "quota/app", "d", b"{\"d\":1}", &[&shared]).await;
    let message = denied(r).await;
    assert!(message.contains("artifact count quota"), "{message}");
    // Lowering a limit under the usage deletes nothing; what is there still pulls.
    set_limits(&s, id, json!({"count": 1})).await;
    assert_eq!(
        s.get("/v2/quota/app/manifests/a").await.status(),
        StatusCode::OK
    );

    // Deleting frees quota at once: b's own blobs and manifest go; the shared layer stays.
    let r = s
        .delete(&format!("/v2/quota/tool/manifests/{}", sha256(&b)))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(used(&s, id).await, (a_size, 1));
    set_limits(&s, id, json!({"count": 2})).await;
    let (r, _) = push(&s, "quota/app", "d", b"{\"d\":1}", &[&shared]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn pushes_racing_the_limit_never_pass_it() {
    let s = Arc::new(admin_server(&[], &["race/app"]).await);
    admin(
        &s,
        Method::POST,
        "/api/v2.0/projects",
        Some(&json!({"project_name": "race", "storage_limit": 150_000})),
    )
    .await;
    let id = project_id(&s, "race").await;
    // Eight images of about 60 kB each; at most two fit.
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let config = format!("{{\"race\":{i}}}").into_bytes();
            let layer = vec![i; 60_000];
            // Once two images are in, the layer itself may be refused before it is stored.
            for blob in [&config, &layer] {
                let r = s
                    .http
                    .post(s.url(&format!(
                        "/v2/race/app/blobs/uploads/?digest={}",
                        sha256(blob)
                    )))
                    .body(blob.clone())
                    .send()
                    .await
                    .unwrap();
                if r.status() != StatusCode::CREATED {
                    denied(r).await;
                    return (StatusCode::FORBIDDEN, 0);
                }
            }
            let m = manifest_of(&config, &[&layer]);
            let r = s
                .put_manifest("race/app", &format!("t{i}"), OCI_MANIFEST, &m)
                .await;
            let status = r.status();
            if status == StatusCode::FORBIDDEN {
                denied(r).await;
            }
            (status, (config.len() + layer.len() + m.len()) as u64)
        }));
    }
    let mut accepted = 0u64;
    let mut n = 0;
    for t in tasks {
        let (status, size) = t.await.unwrap();
        match status {
            StatusCode::CREATED => {
                accepted += size;
                n += 1;
            }
            StatusCode::FORBIDDEN => {}
            other => panic!("a racing push answered {other}"),
        }
    }
    assert_eq!(n, 2, "two images fit in 150 kB");
    assert_eq!(used(&s, id).await, (accepted, 2));
    assert!(accepted <= 150_000);
}

#[tokio::test]
async fn only_system_administrators_read_and_set_quotas() {
    let s = admin_server(&[], &["team/app"]).await;
    admin(
        &s,
        Method::POST,
        "/api/v2.0/projects",
        Some(&json!({"project_name": "team"})),
    )
    .await;
    let id = project_id(&s, "team").await;
    create_user(&s, "dev", "Dev-password-1").await;
    add_member(&s, "team", "dev", 2).await;
    let dev = basic("dev", "Dev-password-1");
    for (method, path, body) in [
        (Method::GET, "/api/v2.0/quotas".to_owned(), None),
        (Method::GET, format!("/api/v2.0/quotas/{id}"), None),
        (
            Method::PUT,
            format!("/api/v2.0/quotas/{id}"),
            Some(json!({"hard": {"storage": 1}})),
        ),
    ] {
        let r = call(&s, &dev, method.clone(), &path, body.as_ref()).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method} {path}");
        let anonymous = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut req = anonymous.request(method.clone(), s.url(&path));
        if let Some(b) = &body {
            req = req.json(b);
        }
        let r = req.send().await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "anonymous {method} {path}"
        );
    }
    // A member sees the project's quota in its summary.
    let r = call(
        &s,
        &dev,
        Method::GET,
        "/api/v2.0/projects/team/summary",
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let summary: Value = r.json().await.unwrap();
    assert_eq!(summary["quota"]["hard"]["storage"], -1, "{summary}");
    assert_eq!(summary["quota"]["used"]["count"], 0, "{summary}");
    // Only an administrator may give a new project a storage limit.
    let r = call(
        &s,
        &dev,
        Method::POST,
        "/api/v2.0/projects",
        Some(&json!({"project_name": "mine", "storage_limit": 10})),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Bad limits are refused.
    for hard in [json!({"storage": -2}), json!({"count": "x"})] {
        let r = call(
            &s,
            &basic("admin", ADMIN_PASSWORD),
            Method::PUT,
            &format!("/api/v2.0/quotas/{id}"),
            Some(&json!({ "hard": hard })),
        )
        .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{hard}");
    }
    let r = call(
        &s,
        &basic("admin", ADMIN_PASSWORD),
        Method::GET,
        "/api/v2.0/quotas/999999",
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// `(storage, count)` limits of quota `id`, as the API has them.
async fn hard(s: &Server, id: i64) -> (i64, i64) {
    let q = admin(s, Method::GET, &format!("/api/v2.0/quotas/{id}"), None).await;
    (
        q["hard"]["storage"].as_i64().unwrap(),
        q["hard"]["count"].as_i64().unwrap(),
    )
}

/// `berth admin quota`: limits set with units and `unlimited`, shown and listed as the API
/// has them; bad limits and unknown projects are errors that change nothing.
#[tokio::test]
async fn the_quota_cli_sets_shows_and_lists() {
    let s = admin_server(&[], &[]).await;
    create_project(&s, "cliq", false).await;
    let id = project_id(&s, "cliq").await;
    let (ok, printed) = admin_cli(
        &s,
        &["quota", "set", "cliq", "--storage", "2KiB", "--count", "3"],
    );
    assert!(ok, "{printed}");
    let shown: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(shown["hard"]["storage"], 2048, "{shown}");
    assert_eq!(shown["hard"]["count"], 3, "{shown}");
    assert_eq!(hard(&s, id).await, (2048, 3));

    // A limit left out keeps its value.
    admin_cli_json(&s, &["quota", "set", "cliq", "--storage", "unlimited"]);
    assert_eq!(hard(&s, id).await, (-1, 3));

    let shown = admin_cli_json(&s, &["quota", "show", "cliq"]);
    assert_eq!(
        (
            shown["hard"]["storage"].as_i64(),
            shown["hard"]["count"].as_i64()
        ),
        (Some(-1), Some(3))
    );
    let listed = admin_cli_json(&s, &["quota", "list"]);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["ref"]["name"] == "cliq"),
        "{listed}"
    );

    for bad in [
        &["quota", "set", "cliq"][..],
        &["quota", "set", "cliq", "--storage", "lots"],
        &["quota", "set", "cliq", "--count", "-5"],
        &["quota", "show", "no-such-project"],
    ] {
        let (ok, printed) = admin_cli(&s, bad);
        assert!(!ok, "{bad:?} must fail: {printed}");
    }
    assert_eq!(
        hard(&s, id).await,
        (-1, 3),
        "a refused change changes nothing"
    );
}
