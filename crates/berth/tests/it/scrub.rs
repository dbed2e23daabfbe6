//! Scrub over HTTP and the CLI against the real binary, on whichever backend the tests run
//! on (the damage is done through the same storage, filesystem or S3, and the same metadata
//! database, SQLite or PostgreSQL, the server uses): what a scrub reports, what a repairing
//! scrub takes out of service, that a push heals it, and the administrator-only API.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::access::{as_bearer, basic, token_value};
use crate::harness::{
    check_consistent, error_code, fleet, header, image_manifest, sha256, Server, ADMIN_PASSWORD,
    OCI_MANIFEST,
};
use crate::mgmt::{admin, admin_cli, admin_cli_text, call, create_user};

const REPO: &str = "scrub/app";

/// A token-mode server, acting as `admin` on [`REPO`].
async fn scrub_server() -> Server {
    let mut s = Server::start_with(&["--auth-mode", "token"]).await;
    let scope = format!("repository:{REPO}:pull,push,delete");
    let token = token_value(
        &s,
        Some(("admin", ADMIN_PASSWORD)),
        &[&scope, "registry:catalog:*"],
    )
    .await;
    as_bearer(&mut s, &token);
    s
}

/// An image: its config, its one layer, and its manifest's bytes and digest.
struct Image {
    config: Vec<u8>,
    layer: Vec<u8>,
    manifest: Vec<u8>,
    digest: String,
}

impl Image {
    fn new(name: &str, layer: Vec<u8>) -> Self {
        let config = format!("{{\"image\":\"{name}\"}}").into_bytes();
        let manifest = image_manifest(
            &sha256(&config),
            config.len(),
            &[(&sha256(&layer), layer.len())],
            None,
        );
        let digest = sha256(&manifest);
        Self {
            config,
            layer,
            manifest,
            digest,
        }
    }

    fn layer_digest(&self) -> String {
        sha256(&self.layer)
    }

    async fn push(&self, s: &Server, tag: &str) {
        s.push_blob(REPO, &self.config).await;
        s.push_blob(REPO, &self.layer).await;
        self.push_manifest(s, tag).await;
    }

    async fn push_manifest(&self, s: &Server, tag: &str) {
        let r = s
            .put_manifest(REPO, tag, OCI_MANIFEST, &self.manifest)
            .await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap()
        );
    }
}

/// Replace the stored content of manifest `digest` (in the server's database), as damage
/// to the database would.
fn mangle_manifest(s: &Server, digest: &str, content: &[u8]) {
    let bytes = if fleet() {
        format!("'\\x{}'::bytea", hex::encode(content))
    } else {
        format!("X'{}'", hex::encode(content))
    };
    s.sql(&format!(
        "UPDATE manifests SET content = {bytes} WHERE digest = '{digest}'"
    ));
}

/// Start a run over the API and wait for it to end; returns it and its findings.
async fn run_scrub(s: &Server, repair: bool) -> (Value, Vec<Value>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let location = loop {
        let r = call(
            s,
            &basic("admin", ADMIN_PASSWORD),
            Method::POST,
            "/api/v2.0/system/scrub",
            Some(&json!({"repair": repair})),
        )
        .await;
        match r.status() {
            StatusCode::CREATED => break header(&r, "location").to_owned(),
            // The previous run's job is still being marked done.
            StatusCode::CONFLICT if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("start scrub: {other} {}", r.text().await.unwrap()),
        }
    };
    let run = wait(s, &location, deadline).await;
    assert_eq!(run["job_status"], "Success", "{run}");
    let findings = admin(
        s,
        Method::GET,
        &format!("{location}/findings?page_size=100"),
        None,
    )
    .await;
    (run, findings.as_array().unwrap().clone())
}

/// Poll run `location` until it ends.
async fn wait(s: &Server, location: &str, deadline: Instant) -> Value {
    loop {
        let run = admin(s, Method::GET, location, None).await;
        if matches!(
            run["job_status"].as_str().unwrap(),
            "Success" | "Error" | "Stopped"
        ) {
            return run;
        }
        assert!(Instant::now() < deadline, "scrub did not finish: {run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A finding as `kind digest [repo -> target] repaired`, for comparing sets.
fn key(f: &Value) -> String {
    let mut k = format!(
        "{} {}",
        f["kind"].as_str().unwrap(),
        f["digest"].as_str().unwrap()
    );
    if let Some(repo) = f["repository"].as_str() {
        k.push_str(&format!(" {repo}"));
    }
    if let Some(target) = f["target"].as_str() {
        k.push_str(&format!(" -> {target}"));
    }
    if f["repaired"] == true {
        k.push_str(" repaired");
    }
    k
}

fn keys(findings: &[Value]) -> BTreeSet<String> {
    findings.iter().map(key).collect()
}

/// The issue's test: a blob corrupted in storage, a blob whose bytes are gone and a manifest
/// damaged in the database are reported, exactly, with the manifest that names the lost
/// blob; a repairing run takes them out of service (`BLOB_UNKNOWN`, `MANIFEST_UNKNOWN`, the
/// damaged bytes kept in quarantine); pushing them again heals every image, and the next run
/// is clean.
#[tokio::test]
async fn scrub_reports_damage_and_repair_then_a_push_heals() {
    let s = scrub_server().await;
    let store = s.storage();
    let good = Image::new("good", vec![1u8; 40_000]);
    let lost = Image::new("lost", vec![2u8; 30_000]);
    let fine = Image::new("fine", vec![3u8; 20_000]);
    let mangled = Image::new("mangled", vec![4u8; 10_000]);
    for (image, tag) in [
        (&good, "good"),
        (&lost, "lost"),
        (&fine, "fine"),
        (&mangled, "mangled"),
    ] {
        image.push(&s, tag).await;
    }
    // A clean registry scrubs clean, every blob and manifest looked at.
    let (clean, findings) = run_scrub(&s, false).await;
    assert!(findings.is_empty(), "{findings:?}");
    for (field, n) in [
        ("blobs_total", 8),
        ("blobs_checked", 8),
        ("manifests_total", 4),
        ("manifests_checked", 4),
    ] {
        assert_eq!(clean[field], n, "{field}: {clean}");
    }
    let all_bytes: usize = [&good, &lost, &fine, &mangled]
        .iter()
        .map(|i| i.config.len() + i.layer.len())
        .sum();
    assert_eq!(clean["bytes_checked"], all_bytes);

    // The damage: bit rot in one layer, another layer's bytes lost, a manifest's stored
    // content changed.
    let damaged = store.corrupt_blob(&good.layer_digest()).await;
    store.lose_blob(&lost.layer_digest()).await;
    let wrong = br#"{"schemaVersion":2,"damaged":true}"#;
    mangle_manifest(&s, &mangled.digest, wrong);

    // Reported through the CLI, which fails when anything is found.
    let (ok, printed) = admin_cli(&s, &["scrub", "run", "--wait"]);
    assert!(!ok, "a scrub that found damage must fail: {printed}");
    let report: Value = serde_json::from_str(&printed).unwrap();
    let run = &report["run"];
    assert_eq!(run["job_status"], "Success", "{run}");
    assert_eq!(run["findings"], 4, "{run}");
    assert_eq!(run["repaired"], 0, "{run}");
    let expected: BTreeSet<String> = [
        format!("corrupt {}", good.layer_digest()),
        format!("missing {}", lost.layer_digest()),
        format!(
            "manifest_blob_missing {} {REPO} -> {}",
            lost.digest,
            lost.layer_digest()
        ),
        format!("manifest_corrupt {} {REPO}", mangled.digest),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        keys(report["findings"].as_array().unwrap()),
        expected,
        "{report:#}"
    );
    let id = run["id"].as_i64().unwrap();
    let log = admin_cli_text(&s, &["scrub", "log", &id.to_string()]);
    assert!(
        log.contains(&format!("corrupt {}: bytes hash to", good.layer_digest())),
        "{log}"
    );
    assert!(log.contains("findings 4 (0 repaired)"), "{log}");
    let (ok, history) = admin_cli(&s, &["scrub", "history"]);
    assert!(ok);
    let history: Value = serde_json::from_str(&history).unwrap();
    assert_eq!(history[0]["id"], id);
    assert_eq!(history.as_array().unwrap().len(), 2);
    // Reported only: the bad bytes are still served.
    let r = s
        .get(&format!("/v2/{REPO}/blobs/{}", good.layer_digest()))
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    // Repaired: out of service, kept aside.
    let (run, findings) = run_scrub(&s, true).await;
    let id = run["id"].as_i64().unwrap();
    assert_eq!(run["findings"], 5, "{findings:#?}");
    assert_eq!(run["repaired"], 3, "{findings:#?}");
    let expected: BTreeSet<String> = [
        format!("corrupt {} repaired", good.layer_digest()),
        format!("missing {} repaired", lost.layer_digest()),
        format!("manifest_corrupt {} {REPO} repaired", mangled.digest),
        // Both images now lack a layer, until it is pushed again.
        format!(
            "manifest_blob_missing {} {REPO} -> {}",
            good.digest,
            good.layer_digest()
        ),
        format!(
            "manifest_blob_missing {} {REPO} -> {}",
            lost.digest,
            lost.layer_digest()
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(keys(&findings), expected, "{findings:#?}");
    for image in [&good, &lost] {
        let path = format!("/v2/{REPO}/blobs/{}", image.layer_digest());
        let r = s.get(&path).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
        assert_eq!(s.head(&path).await.status(), StatusCode::NOT_FOUND);
    }
    for reference in [mangled.digest.as_str(), "mangled"] {
        let r = s.get(&format!("/v2/{REPO}/manifests/{reference}")).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{reference}");
        assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    }
    assert!(!store.blob_digests().await.contains(&good.layer_digest()));
    assert_eq!(
        store
            .quarantined(&good.layer_digest(), &format!("scrub-{id}"))
            .await,
        Some(damaged)
    );
    assert_eq!(
        store
            .quarantined(&mangled.digest, &format!("scrub-{id}-manifest"))
            .await
            .as_deref(),
        Some(&wrong[..])
    );
    // What was fine stays.
    assert_eq!(
        s.get(&format!("/v2/{REPO}/manifests/fine")).await.status(),
        StatusCode::OK
    );

    // A push of the same content heals every image.
    for image in [&good, &lost] {
        s.push_blob(REPO, &image.layer).await;
    }
    mangled.push_manifest(&s, "mangled").await;
    assert_eq!(check_consistent(&s).await, 4);
    let (clean, findings) = run_scrub(&s, false).await;
    assert!(findings.is_empty(), "{findings:#?}");
    assert_eq!(clean["findings"], 0);
    assert_eq!(clean["blobs_checked"], 8);
    assert_eq!(clean["manifests_checked"], 4);
    assert_eq!(store.verify_blobs().await, 8);
}

#[tokio::test]
async fn scrub_api_is_for_system_administrators() {
    let s = scrub_server().await;
    create_user(&s, "dev", "Dev-Password-1").await;
    let dev = basic("dev", "Dev-Password-1");
    let body = json!({"repair": true});
    let anonymous = reqwest::Client::builder().no_proxy().build().unwrap();
    for (method, path, body) in [
        (Method::POST, "/api/v2.0/system/scrub", Some(&body)),
        (Method::GET, "/api/v2.0/system/scrub", None),
        (Method::GET, "/api/v2.0/system/scrub/1", None),
        (Method::PUT, "/api/v2.0/system/scrub/1", None),
        (Method::GET, "/api/v2.0/system/scrub/1/log", None),
        (Method::GET, "/api/v2.0/system/scrub/1/findings", None),
    ] {
        let r = call(&s, &dev, method.clone(), path, body).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method} {path}");
        let mut req = anonymous.request(method.clone(), s.url(path));
        if let Some(b) = body {
            req = req.json(b);
        }
        assert_eq!(
            req.send().await.unwrap().status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
    }
    let root = basic("admin", ADMIN_PASSWORD);
    for (method, path) in [
        (Method::GET, "/api/v2.0/system/scrub/999999"),
        (Method::PUT, "/api/v2.0/system/scrub/999999"),
        (Method::GET, "/api/v2.0/system/scrub/999999/log"),
        (Method::GET, "/api/v2.0/system/scrub/999999/findings"),
    ] {
        let r = call(&s, &root, method.clone(), path, None).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{method} {path}");
    }
    let r = call(
        &s,
        &root,
        Method::POST,
        "/api/v2.0/system/scrub",
        Some(&json!({"repair": "yes"})),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // A stop request ends a run that has not finished (or is refused once it has).
    s.push_image(REPO, "v1", &[5u8; 1000]).await;
    let r = call(
        &s,
        &root,
        Method::POST,
        "/api/v2.0/system/scrub",
        Some(&json!({})),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = header(&r, "location").to_owned();
    let stop = call(&s, &root, Method::PUT, &location, None).await;
    let run = wait(&s, &location, Instant::now() + Duration::from_secs(60)).await;
    match stop.status() {
        StatusCode::OK => assert_eq!(run["job_status"], "Stopped", "{run}"),
        StatusCode::CONFLICT => assert_eq!(run["job_status"], "Success", "{run}"),
        other => panic!("stop: {other}"),
    }
    assert_eq!(run["job_name"], "SCRUB");
    assert_eq!(run["job_parameters"], "{\"repair\":false}");
    let again = call(&s, &root, Method::PUT, &location, None).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let listed = call(&s, &root, Method::GET, "/api/v2.0/system/scrub", None).await;
    assert_eq!(listed.status(), StatusCode::OK);
    assert_eq!(header(&listed, "x-total-count"), "1");
}
