//! Bad input gets the spec's error and leaves nothing behind.

use std::io::{Read, Write};
use std::net::TcpStream;

use reqwest::StatusCode;

use crate::harness::*;

/// Nothing is left in the upload area and no blob is visible.
async fn assert_nothing_stored(s: &Server) {
    let storage = s.storage();
    assert_eq!(
        storage.upload_ids().await,
        Vec::<String>::new(),
        "an upload object was left behind"
    );
    assert_eq!(storage.verify_blobs().await, 0, "a blob was stored");
}

#[tokio::test]
async fn wrong_digest_is_refused_and_nothing_is_kept() {
    let s = Server::start().await;
    let wrong = sha256(b"something else");
    let r = s
        .http
        .post(s.url(&format!("/v2/bad/blobs/uploads/?digest={wrong}")))
        .body(b"actual bytes".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    assert_eq!(
        s.get(&format!("/v2/bad/blobs/{wrong}")).await.status(),
        StatusCode::NOT_FOUND
    );

    // Through a session: the session is discarded too.
    let r = s.post("/v2/bad/blobs/uploads/").await;
    let loc = header(&r, "location").to_owned();
    let r = s
        .http
        .put(s.url(&format!("{loc}?digest={wrong}")))
        .body(b"other".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    assert_eq!(s.get(&loc).await.status(), StatusCode::NOT_FOUND);
    assert_nothing_stored(&s).await;
}

#[tokio::test]
async fn malformed_and_unsupported_digests() {
    let s = Server::start().await;
    for (d, want) in [
        ("sha256:short", "DIGEST_INVALID"),
        ("sha256:ZZZZ", "DIGEST_INVALID"),
        ("md5:d41d8cd98f00b204e9800998ecf8427e", "DIGEST_INVALID"),
        ("nocolon", "DIGEST_INVALID"),
    ] {
        let r = s
            .http
            .post(s.url(&format!("/v2/bad/blobs/uploads/?digest={d}")))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{d}");
        assert_eq!(error_code(r).await, want, "{d}");
        let r = s.get(&format!("/v2/bad/blobs/{d}")).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{d}");
    }
    // PUT without a digest.
    let r = s.post("/v2/bad/blobs/uploads/").await;
    let loc = header(&r, "location").to_owned();
    let r = s.http.put(s.url(&loc)).body("x").send().await.unwrap();
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    assert_eq!(s.storage().verify_blobs().await, 0);
}

#[tokio::test]
async fn hostile_names_are_name_invalid() {
    let s = Server::start().await;
    let long = "a".repeat(256);
    // Dot segments are sent raw below: HTTP clients normalise them away before sending.
    for name in [
        "Upper",
        "a//b",
        "a_",
        "-a",
        long.as_str(),
        "a/.hidden",
        "a%2fb",
        "a%00b",
        "caf%C3%A9",
    ] {
        for path in [
            format!("/v2/{name}/tags/list"),
            format!("/v2/{name}/manifests/latest"),
            format!("/v2/{name}/blobs/uploads/"),
        ] {
            let r = if path.ends_with("uploads/") {
                s.post(&path).await
            } else {
                s.get(&path).await
            };
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
            assert_eq!(error_code(r).await, "NAME_INVALID", "{path}");
        }
    }
    // Sent raw, without any client normalising the path.
    for raw in [
        "/v2/../etc/tags/list",
        "/v2/a/../b/manifests/x",
        "/v2/%2e%2e/blobs/uploads/",
        "/v2/a/%2e%2e/b/tags/list",
        "/v2/a/./b/tags/list",
    ] {
        let reply = raw_request(
            s.port,
            &format!("GET {raw} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        assert!(reply.starts_with("HTTP/1.1 400"), "{raw}: {reply}");
        assert!(reply.contains("NAME_INVALID"), "{raw}: {reply}");
    }
    assert_nothing_stored(&s).await;
    let v: serde_json::Value = s.get("/v2/_catalog").await.json().await.unwrap();
    assert_eq!(v["repositories"], serde_json::json!([]));
}

fn raw_request(port: u16, req: &str) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test]
async fn truncated_body_changes_nothing() {
    let s = Server::start().await;
    let r = s.post("/v2/trunc/blobs/uploads/").await;
    let loc = header(&r, "location").to_owned();
    let r = s
        .http
        .patch(s.url(&loc))
        .body(vec![1u8; 100])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // Declare 1000 bytes, send 10, hang up.
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    write!(
        c,
        "PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
    )
    .unwrap();
    c.write_all(&[2u8; 10]).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut sink = Vec::new();
    let _ = c.read_to_end(&mut sink);
    drop(c);
    let st = s.get(&loc).await;
    assert_eq!(header(&st, "range"), "0-99");
    // And the upload still completes with the right bytes.
    let d = sha256(&[1u8; 100]);
    let r = s.put(&format!("{loc}?digest={d}")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // A monolithic push that is cut short stores nothing.
    let d = sha256(&[3u8; 1000]);
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    write!(c, "POST /v2/trunc2/blobs/uploads/?digest={d} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n").unwrap();
    c.write_all(&[3u8; 500]).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let _ = c.read_to_end(&mut sink);
    assert_eq!(
        s.get(&format!("/v2/trunc2/blobs/{d}")).await.status(),
        StatusCode::NOT_FOUND
    );
    // The server cleans up as it notices the broken body; give a loaded machine a moment.
    let storage = s.storage();
    for _ in 0..100 {
        if storage.upload_ids().await.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        storage.upload_ids().await,
        Vec::<String>::new(),
        "the cut-short upload was left behind"
    );
}

#[tokio::test]
async fn wrong_content_range_is_refused() {
    let s = Server::start().await;
    let r = s.post("/v2/cr/blobs/uploads/").await;
    let loc = header(&r, "location").to_owned();
    // Not starting at 0.
    let r = s.patch_chunk(&loc, "10-19", vec![0u8; 10]).await;
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_INVALID");
    // Range length disagrees with the body.
    let r = s.patch_chunk(&loc, "0-99", vec![0u8; 10]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "SIZE_INVALID");
    // A range whose length does not fit in 64 bits.
    let r = s
        .patch_chunk(&loc, format!("0-{}", u64::MAX), vec![0u8; 10])
        .await;
    assert_eq!(error_code(r).await, "SIZE_INVALID");
    // Malformed.
    let r = s.patch_chunk(&loc, "bytes=abc", vec![0u8; 10]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_INVALID");
    assert_eq!(header(&s.get(&loc).await, "range"), "0-0");
    assert_eq!(
        s.storage()
            .upload_len(loc.rsplit('/').next().unwrap())
            .await,
        0
    );
    // Unknown session ids.
    for id in ["not-a-session", "..%2f..%2fmeta.db"] {
        let r = s
            .http
            .patch(s.url(&format!("/v2/cr/blobs/uploads/{id}")))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{id}");
    }
}

#[tokio::test]
async fn bad_manifests_are_refused_without_side_effects() {
    let s = Server::start().await;
    let cfg = s.push_blob("mf", b"{}").await;
    let layer = s.push_blob("mf", b"layer").await;
    let good = image_manifest(&cfg, 2, &[(&layer, 5)], None);
    let missing = image_manifest(&cfg, 2, &[(&sha256(b"absent"), 6)], None);
    let cases: Vec<(&str, Vec<u8>, &str, StatusCode)> = vec![
        (
            "malformed json",
            b"{not json".to_vec(),
            "MANIFEST_INVALID",
            StatusCode::BAD_REQUEST,
        ),
        (
            "empty",
            Vec::new(),
            "MANIFEST_INVALID",
            StatusCode::BAD_REQUEST,
        ),
        (
            "schema 1",
            br#"{"schemaVersion":1,"name":"mf","tag":"x","fsLayers":[]}"#.to_vec(),
            "MANIFEST_INVALID",
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown media type",
            br#"{"schemaVersion":2,"mediaType":"application/x-unknown"}"#.to_vec(),
            "MANIFEST_INVALID",
            StatusCode::BAD_REQUEST,
        ),
        (
            "missing blob",
            missing,
            "MANIFEST_BLOB_UNKNOWN",
            StatusCode::BAD_REQUEST,
        ),
        (
            "oversized",
            vec![b' '; (4 << 20) + 1],
            "SIZE_INVALID",
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (what, body, code, status) in cases {
        let r = s.put_manifest("mf", "t", OCI_MANIFEST, &body).await;
        assert_eq!(r.status(), status, "{what}");
        assert_eq!(error_code(r).await, code, "{what}");
    }
    // Schema 1 by content type has a message that says what to do.
    let r = s
        .put_manifest(
            "mf",
            "t",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            b"{}",
        )
        .await;
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("schema 1"));
    // A digest reference that does not match the body.
    let r = s
        .put_manifest("mf", &sha256(b"other"), OCI_MANIFEST, &good)
        .await;
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    // A bad tag.
    let r = s.put_manifest("mf", "-bad-tag", OCI_MANIFEST, &good).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = s
        .put_manifest(
            "mf",
            &format!("{}?tag=.bad", sha256(&good)),
            OCI_MANIFEST,
            &good,
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // None of that left a tag or manifest behind.
    let v: serde_json::Value = s.get("/v2/mf/tags/list").await.json().await.unwrap();
    assert_eq!(v["tags"], serde_json::json!([]));
    assert_eq!(
        s.get(&format!("/v2/mf/manifests/{}", sha256(&good)))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    // And the good one goes through.
    assert_eq!(
        s.put_manifest("mf", "t", OCI_MANIFEST, &good)
            .await
            .status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn unknown_endpoints_and_methods() {
    let s = Server::start().await;
    let r = s.get("/v2/a/unknown/thing").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = s.post("/v2/a/tags/list").await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(r).await, "UNSUPPORTED");
    // A tag that cannot exist is simply not found when read (the spec allows only 404 there).
    let r = s.get("/v2/a/manifests/.INVALID_TAG").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    let r = s.get("/v2/a/tags/list?n=abc").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}
