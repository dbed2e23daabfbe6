//! Crashes: `kill -9` in the middle of pushes never leaves a corrupt blob, a partial manifest
//! or a tag pointing at nothing, and upload sessions survive restarts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;

use crate::harness::*;

#[tokio::test]
async fn kill_9_during_pushes_never_corrupts() {
    let mut s = Server::start().await;
    let acknowledged: Arc<Mutex<HashMap<(String, String), String>>> = Arc::default();
    for round in 0..6u32 {
        let mut tasks = Vec::new();
        for client in 0..6u32 {
            let (http, base, ack) = (s.http.clone(), s.base.clone(), acknowledged.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..50u32 {
                    let repo = format!("crash/c{client}");
                    // Tags are reused across rounds, so tag moves race the kill too.
                    let tag = format!("t{}", i % 4);
                    let seed = round * 1000 + client * 100 + i;
                    match push_one(http.clone(), base.clone(), repo.clone(), tag.clone(), seed)
                        .await
                    {
                        Some(d) => {
                            ack.lock().unwrap().insert((repo, tag), d);
                        }
                        None => return,
                    }
                }
            }));
        }
        // Let a few pushes land, then kill at a point that varies from round to round.
        let before = acknowledged.lock().unwrap().len();
        for _ in 0..600 {
            if acknowledged.lock().unwrap().len() > before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(37 * u64::from(round) + 20)).await;
        s.kill9();
        for t in tasks {
            t.await.unwrap();
        }
        s.restart().await;
        s.storage().verify_blobs().await;
        check_consistent(&s).await;
    }
    // Every manifest the registry acknowledged survived (a later push to the same tag may
    // have moved the tag, but only to another acknowledged or in-flight manifest).
    let ack = acknowledged.lock().unwrap().clone();
    assert!(
        !ack.is_empty(),
        "no push completed before the kills: the test proved nothing"
    );
    for ((repo, _tag), d) in ack {
        let r = s.get(&format!("/v2/{repo}/manifests/{d}")).await;
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "acknowledged manifest {repo}@{d} was lost"
        );
    }
}

#[tokio::test]
async fn chunked_upload_resumes_after_kill_9() {
    let mut s = Server::start().await;
    let whole: Vec<u8> = (0..600_000u32).map(|i| (i % 241) as u8).collect();
    let r = s.post("/v2/resume/blobs/uploads/").await;
    let loc = header(&r, "location").to_owned();
    let r = s
        .patch_chunk(&loc, "0-299999", whole[..300_000].to_vec())
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    s.restart().await;
    let st = s.get(&loc).await;
    assert_eq!(st.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&st, "range"), "0-299999");
    // Bytes written to storage by a chunk whose metadata update never happened (a crash in
    // between) must not end up in the blob.
    s.kill9();
    let id = loc.rsplit('/').next().unwrap();
    s.storage()
        .leave_junk_in_upload(id, 300_000, b"half-written chunk from a crash")
        .await;
    s.restart().await;
    assert_eq!(header(&s.get(&loc).await, "range"), "0-299999");
    let r = s
        .patch_chunk(&loc, "300000-599999", whole[300_000..].to_vec())
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let d = sha256(&whole);
    let r = s.put(&format!("{loc}?digest={d}")).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    assert_eq!(s.get_bytes(&format!("/v2/resume/blobs/{d}")).await, whole);
}

#[tokio::test]
async fn a_damaged_blob_file_is_an_error_not_a_crash() {
    let s = Server::start().await;
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 199) as u8).collect();
    let d = s.push_blob("damaged", &data).await;
    s.storage().truncate_blob(&d, 1000).await;
    let r = s.get(&format!("/v2/damaged/blobs/{d}")).await;
    assert!(r.status().is_server_error(), "{}", r.status());
    // The server is still up.
    assert_eq!(s.get("/v2/").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_chunk_then_retries_gets_a_correct_blob() {
    let s = Server::start().await;
    let whole: Vec<u8> = (0..(8u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    for round in 0..3 {
        let r = s.post("/v2/hangup/blobs/uploads/").await;
        let loc = header(&r, "location").to_owned();
        // Start a chunk, send part of it, then drop the request.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(64);
        let body = reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
        let req = s
            .http
            .patch(s.url(&loc))
            .header("content-range", format!("0-{}", whole.len() - 1))
            .header("content-length", whole.len().to_string())
            .body(body)
            .send();
        let task = tokio::spawn(req);
        for chunk in whole.chunks(1 << 20).take(3 + round) {
            tx.send(Ok(chunk.to_vec())).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        task.abort();
        drop(tx);
        // Resume right away from wherever the registry says the upload stands.
        let st = s.get(&loc).await;
        let range = header(&st, "range").to_owned();
        let done: usize = range.rsplit('-').next().unwrap().parse::<usize>().unwrap() + 1;
        let offset = if done == 1 && range == "0-0" { 0 } else { done };
        let r = s
            .patch_chunk(
                &loc,
                format!("{offset}-{}", whole.len() - 1),
                whole[offset..].to_vec(),
            )
            .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED, "round {round}");
        let d = sha256(&whole);
        let r = s.put(&format!("{loc}?digest={d}")).await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "round {round}: {:?}",
            r.text().await
        );
        assert_eq!(
            sha256(&s.get_bytes(&format!("/v2/hangup/blobs/{d}")).await),
            d
        );
    }
    s.storage().verify_blobs().await;
}
