//! `[storage] redirect = true`: blob GETs answered with `307` to presigned S3 URLs. Fleet mode
//! only (elsewhere these tests return at once, and say so), except the start-up refusal on
//! filesystem storage, which needs no backend.

use std::process::Command;

use reqwest::redirect::Policy;
use reqwest::{Client, StatusCode};

use crate::harness::*;

/// A client that neither follows redirects nor sends anything a registry would want: what
/// any HTTP client fetching a presigned URL looks like.
fn plain_client() -> Client {
    Client::builder()
        .no_proxy()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// A server with redirects on over a fresh backend, or `None` outside fleet mode.
async fn redirecting_server() -> Option<Server> {
    if !fleet() {
        eprintln!("skipped: redirect tests need BERTH_TEST_BACKEND=fleet (S3 storage)");
        return None;
    }
    let backend = FleetBackend::create();
    Some(Server::start_on_with(&backend, &["--redirect", "true"], None).await)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect()
}

/// The value of a counter on `/metrics`, 0 if it is not there yet.
async fn counter(s: &Server, name: &str) -> u64 {
    let text = s.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn blob_gets_redirect_to_presigned_urls_that_serve_the_bytes() {
    let Some(s) = redirecting_server().await else {
        return;
    };
    let layer = pattern(300_000);
    s.push_image("team/redirect", "v1", &layer).await;
    let d = sha256(&layer);
    let path = format!("/v2/team/redirect/blobs/{d}");
    let no_follow = plain_client();

    let r = no_follow.get(s.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(header(&r, "content-length"), "0");
    let location = header(&r, "location").to_owned();
    assert!(
        location.starts_with(&std::env::var("BERTH_TEST_S3_ENDPOINT").unwrap()),
        "{location}"
    );
    assert!(location.contains("X-Amz-Signature="), "{location}");

    // The URL alone is enough: no registry credentials, no registry headers.
    let r = plain_client().get(&location).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.unwrap() == layer, "redirected bytes differ");

    // A ranged GET is redirected too; the client sends its Range again to the new location.
    let r = no_follow
        .get(s.url(&path))
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    let ranged = header(&r, "location").to_owned();
    let r = plain_client()
        .get(&ranged)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&r, "content-range"), "bytes 1000-1999/300000");
    assert!(r.bytes().await.unwrap() == layer[1000..2000]);
    // A client that follows redirects by itself (as registry clients do) gets the range.
    let r = s
        .http
        .get(s.url(&path))
        .header("range", "bytes=299990-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert!(r.bytes().await.unwrap() == layer[299_990..]);

    // HEAD stays local.
    let r = no_follow.head(s.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), "300000");
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert!(r.headers().get("location").is_none());

    // Manifests are never redirected: they live in the database.
    let r = no_follow
        .get(s.url("/v2/team/redirect/manifests/v1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    assert_eq!(counter(&s, "berth_blob_redirects_total").await, 3);
}

#[tokio::test]
async fn unknown_and_unlinked_blobs_are_not_redirected() {
    let Some(s) = redirecting_server().await else {
        return;
    };
    let no_follow = plain_client();
    let missing = sha256(b"never pushed");
    let r = no_follow
        .get(s.url(&format!("/v2/team/a/blobs/{missing}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.headers().get("location").is_none());
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");

    // In storage, and linked into team/a only: team/b must not hand out a URL for it.
    let d = s.push_blob("team/a", b"only in team/a").await;
    let r = no_follow
        .get(s.url(&format!("/v2/team/b/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.headers().get("location").is_none());
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
    let r = no_follow
        .get(s.url(&format!("/v2/team/a/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(counter(&s, "berth_blob_redirects_total").await, 1);
}

#[test]
fn redirect_on_filesystem_storage_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--redirect",
            "true",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "berth started with redirect on files"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("redirect") && stderr.contains("S3"),
        "{stderr}"
    );
}

/// A real client through the redirects, when skopeo is installed.
#[tokio::test]
async fn skopeo_pulls_through_redirects() {
    if Command::new("skopeo").arg("--version").output().is_err() {
        eprintln!("skipped: skopeo is not installed");
        return;
    }
    let Some(s) = redirecting_server().await else {
        return;
    };
    let layer = pattern(2_000_000);
    let (_, md) = s.push_image("team/skopeo", "v1", &layer).await;
    let out_dir = tempfile::tempdir().unwrap();
    let target = out_dir.path().join("image");
    // Blocking is fine: the server is another process.
    let out = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://127.0.0.1:{}/team/skopeo:v1", s.port))
        .arg(format!("dir:{}", target.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pulled = std::fs::read(target.join(sha256(&layer).trim_start_matches("sha256:"))).unwrap();
    assert!(pulled == layer, "layer pulled by skopeo differs");
    let manifest = std::fs::read(target.join("manifest.json")).unwrap();
    assert_eq!(sha256(&manifest), md);
    // The config and the layer both went through redirects.
    assert_eq!(counter(&s, "berth_blob_redirects_total").await, 2);
}
