//! Several instances over one PostgreSQL + S3 backend (fleet mode only: elsewhere these tests
//! return at once, and say so).

use std::time::Duration;

use futures::StreamExt as _;
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
    let r = s[2].put(&with_digest(&location, &d)).await;
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

/// `PATCH` `data` to an upload through `server`, streamed slowly in 64 KiB pieces (so that
/// requests through two instances overlap), with a `Content-Range` if given.
async fn patch_slowly(
    server: &Server,
    location: &str,
    range: Option<String>,
    data: Vec<u8>,
) -> reqwest::Response {
    let pieces: Vec<Vec<u8>> = data.chunks(64 << 10).map(<[u8]>::to_vec).collect();
    let body = futures::stream::iter(pieces).then(|p| async move {
        tokio::time::sleep(Duration::from_millis(15)).await;
        Ok::<_, std::io::Error>(p)
    });
    let mut req = server
        .http
        .patch(server.url(location))
        .body(reqwest::Body::wrap_stream(body));
    if let Some(range) = range {
        req = req.header("content-range", range);
    }
    req.send().await.unwrap()
}

/// Two instances get a chunk for the same upload at the same moment. One appends while the
/// other waits for the upload's lease, then appends after it (or, with a `Content-Range` that
/// no longer fits, is refused): the upload stays one consistent sequence of bytes, its digest
/// verifies, and the blob pulls back byte for byte.
#[tokio::test]
async fn concurrent_chunks_for_one_upload_through_two_instances_stay_consistent() {
    let Some(s) = instances(2).await else { return };
    for round in 0..4usize {
        let repo = format!("team/lease{round}");
        let r = s[0].post(&format!("/v2/{repo}/blobs/uploads/")).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let location = header(&r, "location").to_owned();
        let n = 3 << 20;
        let a: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        let b: Vec<u8> = (0..n).map(|i| (i % 239) as u8 ^ 0x5a).collect();
        // Odd rounds say where their chunk goes: only one of the two can be right.
        let range = (round % 2 == 1).then(|| format!("0-{}", n - 1));
        let (ra, rb) = tokio::join!(
            patch_slowly(&s[0], &location, range.clone(), a.clone()),
            patch_slowly(&s[1], &location, range.clone(), b.clone()),
        );
        let mut kept: Vec<(u64, &[u8])> = Vec::new();
        for (r, data, via) in [(ra, &a, 0), (rb, &b, 1)] {
            let status = r.status();
            match status {
                StatusCode::ACCEPTED => {
                    let end: u64 = header(&r, "range")
                        .strip_prefix("0-")
                        .unwrap()
                        .parse()
                        .unwrap();
                    kept.push((end, data));
                }
                // Refused cleanly: the chunk no longer fits, or the lease stayed busy.
                StatusCode::RANGE_NOT_SATISFIABLE | StatusCode::SERVICE_UNAVAILABLE => {
                    assert!(range.is_some() || status == StatusCode::SERVICE_UNAVAILABLE);
                }
                other => panic!(
                    "round {round}, via instance {via}: {other} {}",
                    r.text().await.unwrap()
                ),
            }
        }
        assert!(!kept.is_empty(), "round {round}: neither chunk was kept");
        if range.is_none() {
            assert_eq!(kept.len(), 2, "round {round}: both appends are kept");
        }
        // The one whose range ended first went first.
        kept.sort_by_key(|(end, _)| *end);
        let expected: Vec<u8> = kept.iter().flat_map(|(_, d)| d.iter().copied()).collect();
        assert_eq!(kept.last().unwrap().0 + 1, expected.len() as u64);
        for server in &s {
            let r = server.get(&location).await;
            assert_eq!(r.status(), StatusCode::NO_CONTENT);
            assert_eq!(header(&r, "range"), format!("0-{}", expected.len() - 1));
        }
        let d = sha256(&expected);
        let r = s[round % 2].put(&with_digest(&location, &d)).await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "round {round}: {}",
            r.text().await.unwrap()
        );
        let pulled = s[(round + 1) % 2]
            .get_bytes(&format!("/v2/{repo}/blobs/{d}"))
            .await;
        assert!(pulled == expected, "round {round}: pulled bytes differ");
    }
}
