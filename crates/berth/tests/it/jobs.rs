//! Background jobs seen from outside: abandoned uploads expire; uploads in use do not.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::harness::*;

/// A server that expires uploads idle for 3 seconds, looking every second.
async fn expiring_server() -> Server {
    Server::start_with(&[
        "--uploads-expire-after",
        "3s",
        "--uploads-expire-interval",
        "1",
    ])
    .await
}

#[tokio::test]
async fn idle_uploads_expire_and_active_ones_do_not() {
    let s = expiring_server().await;
    let r = s.post("/v2/jobs/idle/blobs/uploads/").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let idle = header(&r, "location").to_owned();
    // Some bytes in the idle one, so that its storage holds something to discard.
    let r = s.patch_chunk(&idle, "0-3", b"idle".to_vec()).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = s.post("/v2/jobs/active/blobs/uploads/").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mut active = header(&r, "location").to_owned();
    let active_id = upload_id(&active).to_owned();
    let mut sent = Vec::new();
    // Keep one upload busy while waiting for the other to expire.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "the idle upload never expired");
        let byte = sent.len() as u8;
        let at = sent.len();
        let r = s
            .patch_chunk(&active, format!("{at}-{at}"), vec![byte])
            .await;
        assert_eq!(
            r.status(),
            StatusCode::ACCEPTED,
            "the active upload expired"
        );
        active = header(&r, "location").to_owned();
        sent.push(byte);
        let r = s.get(&idle).await;
        if r.status() == StatusCode::NOT_FOUND {
            assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
            break;
        }
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    // Gone for good: appending to it is refused too.
    let r = s.patch_chunk(&idle, "4-4", b"x".to_vec()).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    // Its bytes are discarded; the active one's are not.
    let ids = s.storage().upload_ids().await;
    assert!(!ids.iter().any(|i| i == upload_id(&idle)), "{ids:?}");
    assert!(ids.contains(&active_id), "{ids:?}");
    // The active upload is intact: it finishes and its blob matches.
    let d = sha256(&sent);
    let r = s.put(&with_digest(&active, &d)).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    assert_eq!(
        s.get_bytes(&format!("/v2/jobs/active/blobs/{d}")).await,
        sent
    );
}
