//! S3 failing under a running fleet instance: answering 503, stalling, resetting connections.
//! A [`FaultProxy`] sits between berth and the S3 test server and is switched between faults
//! while berth runs. Fleet mode only: elsewhere these tests return at once, and say so.
//!
//! Every server here runs with short S3 timeouts ([`FAST_S3`]) so a fault costs seconds. What
//! the tests measure is printed (`cargo test ... -- --nocapture`) and recorded in FLEET.md.

use std::time::{Duration, Instant};

use reqwest::{Response, StatusCode};

use crate::fault_proxy::{Fault, FaultProxy};
use crate::harness::*;

/// S3 settings for these tests: a request gives up after 1 s without progress and is tried
/// twice, so one S3 operation fails after about 2 s.
const FAST_S3: &str = "[storage.s3]\nrequest_timeout_seconds = 1\nconnect_timeout_seconds = 1\n\
                       max_retries = 1\n";

/// How long any request may take to fail while S3 is faulty, with [`FAST_S3`]: a request
/// fails at its first failed S3 operation (cleaning up runs in the background), two attempts
/// of 1 s. Measured at most 2.7 s; generous, for a loaded machine.
const FAIL_WITHIN: Duration = Duration::from_secs(8);

/// A server over a fresh fleet backend that reaches S3 through a fault proxy, or `None`
/// outside fleet mode.
async fn server_behind_proxy() -> Option<(Server, FaultProxy, FleetBackend)> {
    if !fleet() {
        eprintln!("skipped: S3 fault tests need BERTH_TEST_BACKEND=fleet");
        return None;
    }
    let backend = FleetBackend::create();
    let proxy = FaultProxy::start(&std::env::var("BERTH_TEST_S3_ENDPOINT").unwrap());
    let via_proxy = backend.with_s3_endpoint(&proxy.url());
    let server = Server::start_on_with(&via_proxy, &[], Some(FAST_S3)).await;
    Some((server, proxy, backend))
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 9) as u8)
        .collect()
}

/// Keys under `<prefix>/<dir>` in the test bucket, listed through the S3 API.
async fn objects_under(backend: &FleetBackend, dir: &str) -> Vec<String> {
    crate::storage::Storage::s3(&backend.s3_prefix)
        .keys(dir)
        .await
}

/// Send a request and time it; the response comes back whole (body read).
async fn timed(req: reqwest::RequestBuilder) -> (StatusCode, String, Duration) {
    let started = Instant::now();
    let r: Response = tokio::time::timeout(Duration::from_secs(60), req.send())
        .await
        .expect("berth did not answer within a minute")
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    (status, body, started.elapsed())
}

/// A 503 with the spec's JSON error body, code UNAVAILABLE, in bounded time.
fn assert_unavailable(what: &str, (status, body, took): &(StatusCode, String, Duration)) {
    assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {body}");
    let v: serde_json::Value = serde_json::from_str(body).expect("error body is JSON");
    assert_eq!(v["errors"][0]["code"], "UNAVAILABLE", "{what}: {body}");
    assert_eq!(
        v["errors"][0]["message"], "blob storage is unavailable; try again later",
        "{what}: {body}"
    );
    assert!(*took < FAIL_WITHIN, "{what} took {took:?}");
}

async fn readyz(s: &Server) -> (StatusCode, Duration) {
    let (status, _, took) = timed(s.http.get(s.url("/readyz"))).await;
    (status, took)
}

/// Under `fault`: a monolithic push and a blob pull get 503 UNAVAILABLE in bounded time,
/// `/readyz` goes not-ready, a HEAD (metadata only) still works, nothing of the failed push
/// is visible or left in storage. After switching back: ready again, the same push succeeds
/// and the bytes pulled are identical, without restarting berth.
async fn blob_paths_under(fault: Fault) {
    let Some((s, proxy, backend)) = server_behind_proxy().await else {
        return;
    };
    let repo = "faults/app";
    let stored = pattern(1 << 20, 1);
    let stored_digest = s.push_blob(repo, &stored).await;
    let fresh = pattern(300_000, 2);
    let fresh_digest = sha256(&fresh);
    let push = || {
        s.http
            .post(s.url(&format!("/v2/{repo}/blobs/uploads/?digest={fresh_digest}")))
            .body(fresh.clone())
    };
    let pull_path = format!("/v2/{repo}/blobs/{stored_digest}");
    assert_eq!(readyz(&s).await.0, StatusCode::OK);

    proxy.set(fault);
    let (ready, ready_took) = readyz(&s).await;
    assert_eq!(
        ready,
        StatusCode::SERVICE_UNAVAILABLE,
        "readyz under {fault:?}"
    );
    let pushed = timed(push()).await;
    assert_unavailable("push", &pushed);
    let pulled = timed(s.http.get(s.url(&pull_path))).await;
    assert_unavailable("pull", &pulled);
    // Metadata alone answers a HEAD.
    let r = s.head(&pull_path).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = s.head(&format!("/v2/{repo}/blobs/{fresh_digest}")).await;
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "a failed push is not visible"
    );
    eprintln!(
        "S3 {fault:?}: readyz {ready_took:?}, monolithic push 503 after {:?}, pull 503 after \
         {:?}; {} S3 requests failed by the proxy",
        pushed.2,
        pulled.2,
        proxy.faulted()
    );

    proxy.set(Fault::Pass);
    let started = Instant::now();
    assert_eq!(readyz(&s).await.0, StatusCode::OK, "ready again");
    eprintln!(
        "S3 {fault:?}: ready again {:?} after recovery",
        started.elapsed()
    );
    let (status, body, _) = timed(push()).await;
    assert_eq!(status, StatusCode::CREATED, "push after recovery: {body}");
    assert!(
        s.get_bytes(&pull_path).await == stored,
        "stored blob differs"
    );
    let r = s.get(&format!("/v2/{repo}/blobs/{fresh_digest}")).await;
    assert_eq!(header(&r, "docker-content-digest"), fresh_digest);
    assert!(r.bytes().await.unwrap() == fresh, "pushed blob differs");
    // The failed push left no upload objects behind (or removed them when S3 came back).
    assert_eq!(
        objects_under(&backend, "uploads").await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn s3_answering_503_gives_503_and_recovers() {
    blob_paths_under(Fault::Unavailable).await;
}

#[tokio::test]
async fn s3_stalling_gives_503_in_bounded_time_and_recovers() {
    blob_paths_under(Fault::Stall).await;
}

#[tokio::test]
async fn s3_resetting_connections_gives_503_and_recovers() {
    blob_paths_under(Fault::Reset).await;
}

/// A monolithic push that S3 fails in the middle of its body, after the upload's marker and
/// a first multipart part were written: 503, the blob is not visible, and the same push
/// succeeds once S3 is back.
async fn push_failing_mid_body(fault: Fault) {
    let Some((s, proxy, backend)) = server_behind_proxy().await else {
        return;
    };
    let repo = "faults/midway";
    let blob = pattern(12 << 20, 5);
    let d = sha256(&blob);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let url = s.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}"));
    let push = s
        .http
        .post(&url)
        .header("content-length", blob.len())
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let feed = async {
        // 9 MiB: more than one 8 MiB part, so a multipart upload is under way in S3.
        for chunk in blob[..9 << 20].chunks(1 << 20) {
            tx.send(Ok(chunk.to_vec())).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        proxy.set(fault);
        for chunk in blob[9 << 20..].chunks(1 << 20) {
            if tx.send(Ok(chunk.to_vec())).await.is_err() {
                break; // berth gave up on the body
            }
        }
        drop(tx);
    };
    let started = Instant::now();
    let (result, ()) = tokio::join!(push, feed);
    let took = started.elapsed();
    let r = result.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_unavailable("push failing mid-body", &(status, text, took));
    let left = objects_under(&backend, "uploads").await;
    eprintln!(
        "S3 {fault:?} mid-body: push 503 after {took:?}; upload objects left: {}",
        left.len()
    );
    let r = s.head(&format!("/v2/{repo}/blobs/{d}")).await;
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "a failed push is not visible"
    );
    assert_eq!(objects_under(&backend, "blobs").await, Vec::<String>::new());

    // Once S3 is back, berth removes what the failed push left, by itself.
    proxy.set(Fault::Pass);
    let recovered = Instant::now();
    while !objects_under(&backend, "uploads").await.is_empty() {
        assert!(
            recovered.elapsed() < Duration::from_secs(30),
            "the failed push's upload objects stay: {:?}",
            objects_under(&backend, "uploads").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "S3 {fault:?} mid-body: leftovers removed {:?} after recovery",
        recovered.elapsed()
    );
    assert_eq!(s.push_blob(repo, &blob).await, d);
    assert!(s.get_bytes(&format!("/v2/{repo}/blobs/{d}")).await == blob);
}

#[tokio::test]
async fn a_push_meeting_503_mid_body_leaves_no_blob() {
    push_failing_mid_body(Fault::Unavailable).await;
}

#[tokio::test]
async fn a_push_meeting_a_stall_mid_body_leaves_no_blob() {
    push_failing_mid_body(Fault::Stall).await;
}

/// A blob pull whose S3 stream meets `fault` after berth has sent its response headers:
/// too late for a 503, so berth must cut the response off (the client sees a short body and
/// an error) within the timeout, not hang, and serve the blob again once S3 is back.
async fn pull_cut_off_midway(fault: Fault) {
    use futures::StreamExt;
    let Some((s, proxy, _backend)) = server_behind_proxy().await else {
        return;
    };
    let repo = "faults/pull";
    // Large enough that most of it is still in S3 when the fault starts, past what the
    // sockets and buffers between S3 and the client hold.
    let blob = pattern(48 << 20, 4);
    let d = s.push_blob(repo, &blob).await;
    let path = format!("/v2/{repo}/blobs/{d}");
    let r = s.get(&path).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), (48u64 << 20).to_string());
    let mut body = r.bytes_stream();
    let mut got = body.next().await.unwrap().unwrap().len();

    proxy.set(fault);
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => got += c.len(),
                Err(e) => return Some(e),
            }
        }
        None
    })
    .await
    .expect("the pull hung");
    let took = started.elapsed();
    assert!(
        ended.is_some(),
        "the pull ended cleanly after {got} bytes under {fault:?}"
    );
    assert!(got < blob.len(), "all bytes arrived under {fault:?}");
    assert!(took < FAIL_WITHIN, "cut off after {took:?}");
    eprintln!("S3 {fault:?} mid-pull: response cut off after {took:?}, {got} bytes received");

    proxy.set(Fault::Pass);
    assert!(
        s.get_bytes(&path).await == blob,
        "blob differs after recovery"
    );
}

#[tokio::test]
async fn a_pull_whose_s3_stream_stalls_is_cut_off_in_bounded_time() {
    pull_cut_off_midway(Fault::Stall).await;
}

#[tokio::test]
async fn a_pull_whose_s3_stream_is_reset_is_cut_off() {
    pull_cut_off_midway(Fault::Reset).await;
}

/// A chunked upload whose middle chunk meets `fault`: the chunk fails with 503, the upload
/// stays at its previous offset, nothing becomes visible; after recovery the same chunk is
/// sent again and the upload completes with the right digest.
async fn chunked_upload_under(fault: Fault) {
    let Some((s, proxy, backend)) = server_behind_proxy().await else {
        return;
    };
    let repo = "faults/chunked";
    let data = pattern(700_000, 3);
    let digest = sha256(&data);
    let (first, rest) = data.split_at(300_000);
    let (second, last) = rest.split_at(300_000);

    let r = s.post(&format!("/v2/{repo}/blobs/uploads/")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = header(&r, "location").to_owned();
    let r = s.patch_chunk(&location, "0-299999", first.to_vec()).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), "0-299999");
    let location = header(&r, "location").to_owned();

    proxy.set(fault);
    let failed = timed(
        s.http
            .patch(s.url(&location))
            .header("content-range", "300000-599999")
            .body(second.to_vec()),
    )
    .await;
    assert_unavailable("middle chunk", &failed);
    eprintln!("S3 {fault:?}: middle PATCH 503 after {:?}", failed.2);
    // The upload stays where it was, as seen from metadata, during the fault and after.
    assert_eq!(upload_range(&s, &location).await, "0-299999");
    proxy.set(Fault::Pass);
    assert_eq!(upload_range(&s, &location).await, "0-299999");
    let r = s.head(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "visible before the final PUT"
    );

    // The same chunk again, then the last one with the final PUT.
    let r = s
        .patch_chunk(&location, "300000-599999", second.to_vec())
        .await;
    assert_eq!(
        r.status(),
        StatusCode::ACCEPTED,
        "{}",
        r.text().await.unwrap()
    );
    assert_eq!(header(&r, "range"), "0-599999");
    let location = header(&r, "location").to_owned();
    let r = s.head(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "visible before the final PUT"
    );
    assert_eq!(objects_under(&backend, "blobs").await, Vec::<String>::new());
    let r = s
        .http
        .put(s.url(&with_digest(&location, &digest)))
        .header("content-range", "600000-699999")
        .body(last.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    assert_eq!(header(&r, "docker-content-digest"), digest);
    let body = s.get_bytes(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert!(body == data, "blob assembled after the fault differs");
    assert_eq!(
        objects_under(&backend, "uploads").await,
        Vec::<String>::new()
    );
}

/// The `Range` an upload's status reports.
async fn upload_range(s: &Server, location: &str) -> String {
    let r = s.get(location).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    header(&r, "range").to_owned()
}

#[tokio::test]
async fn chunked_upload_survives_a_503_on_its_middle_chunk() {
    chunked_upload_under(Fault::Unavailable).await;
}

#[tokio::test]
async fn chunked_upload_survives_a_stall_on_its_middle_chunk() {
    chunked_upload_under(Fault::Stall).await;
}

#[tokio::test]
async fn chunked_upload_survives_a_reset_on_its_middle_chunk() {
    chunked_upload_under(Fault::Reset).await;
}
