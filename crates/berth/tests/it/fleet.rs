//! Several instances over one PostgreSQL + S3 backend (fleet mode only: elsewhere these tests
//! return at once, and say so).

use reqwest::StatusCode;

use crate::harness::*;

/// Start `n` instances over one fresh backend, or `None` outside fleet mode.
async fn instances(n: usize) -> Option<Vec<Server>> {
    if !fleet() {
        eprintln!("skipped: multi-instance tests need BERTH_TEST_BACKEND=fleet");
        return None;
    }
    let backend = FleetBackend::create();
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Server::start_on(&backend).await);
    }
    Some(out)
}

#[tokio::test]
async fn push_through_one_instance_pull_through_another() {
    let Some(s) = instances(3).await else { return };
    let layer: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
    let (m, md) = s[0].push_image("team/app", "v1", &layer).await;
    for other in &s[1..] {
        let r = other
            .http
            .get(other.url("/v2/team/app/manifests/v1"))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "docker-content-digest"), md);
        assert_eq!(r.bytes().await.unwrap(), m);
        let body = other
            .get_bytes(&format!("/v2/team/app/blobs/{}", sha256(&layer)))
            .await;
        assert!(
            body == layer,
            "layer pulled through another instance differs"
        );
        let tags = other.get_bytes("/v2/team/app/tags/list").await;
        assert!(String::from_utf8_lossy(&tags).contains("\"v1\""));
    }
}

#[tokio::test]
async fn a_chunked_upload_moves_between_instances() {
    let Some(s) = instances(3).await else { return };
    let data: Vec<u8> = (0..(7u32 << 20) + 333)
        .map(|i| (i.wrapping_mul(31) >> 3) as u8)
        .collect();
    let r = s[0].post("/v2/team/chunks/blobs/uploads/").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mut location = header(&r, "location").to_owned();
    let chunks: Vec<&[u8]> = data.chunks(3 << 20).collect();
    let mut at = 0usize;
    for (i, chunk) in chunks.iter().enumerate() {
        let via = &s[i % s.len()];
        let end = at + chunk.len() - 1;
        let r = via
            .patch_chunk(&location, format!("{at}-{end}"), chunk.to_vec())
            .await;
        assert_eq!(
            r.status(),
            StatusCode::ACCEPTED,
            "chunk {i} via instance {}",
            i % 3
        );
        assert_eq!(header(&r, "range"), format!("0-{end}"));
        location = header(&r, "location").to_owned();
        at = end + 1;
        // Another instance sees the same progress.
        let other = &s[(i + 1) % s.len()];
        let r = other.get(&location).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(header(&r, "range"), format!("0-{end}"));
    }
    let d = sha256(&data);
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = s[2].put(&format!("{location}{sep}digest={d}")).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    let body = s[1].get_bytes(&format!("/v2/team/chunks/blobs/{d}")).await;
    assert!(body == data, "blob assembled across instances differs");
}

#[tokio::test]
async fn concurrent_pushes_of_one_tag_through_different_instances_end_consistent() {
    let Some(s) = instances(2).await else { return };
    let mut pushes = Vec::new();
    for round in 0..8u32 {
        let server = &s[round as usize % 2];
        pushes.push(async move {
            let layer = format!("layer {round}").into_bytes();
            server.push_image("team/race", "latest", &layer).await
        });
    }
    let pushed: Vec<(Vec<u8>, String)> = futures::future::join_all(pushes).await;
    // Every instance now serves the same manifest for the tag, and it is one of those pushed,
    // complete: every blob it names pulls and matches its digest.
    let mut seen = None;
    for server in &s {
        let r = server
            .http
            .get(server.url("/v2/team/race/manifests/latest"))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body = r.bytes().await.unwrap().to_vec();
        assert!(
            pushed.iter().any(|(m, _)| *m == body),
            "tag is on an unknown manifest"
        );
        if let Some(prev) = &seen {
            assert_eq!(prev, &body, "instances disagree about the tag");
        }
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        for layer in v["layers"].as_array().unwrap() {
            let d = layer["digest"].as_str().unwrap();
            let blob = server.get_bytes(&format!("/v2/team/race/blobs/{d}")).await;
            assert_eq!(sha256(&blob), d);
        }
        seen = Some(body);
    }
}
