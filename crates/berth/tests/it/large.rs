//! A multi-GiB layer, pushed in chunks and pulled back, on whichever backend the suite runs
//! (on S3 it goes through segment objects and a multipart commit with adaptive part sizes).
//! The bytes are generated and hashed as they stream: no test holds the layer in memory.

use bytes::Bytes;
use futures::StreamExt as _;
use reqwest::StatusCode;
use sha2::{Digest as _, Sha256};

use crate::harness::*;

/// A deterministic byte sequence that no compressor or deduplicator shortcuts: block `i` of
/// 1 MiB (the last may be shorter) of a stream of `len` bytes.
fn block(i: u64, len: u64) -> Bytes {
    const BLOCK: u64 = 1 << 20;
    let start = i * BLOCK;
    let n = BLOCK.min(len - start);
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ i.wrapping_mul(0xD134_2543_DE82_EF95);
    let mut out = Vec::with_capacity(n as usize);
    while (out.len() as u64) < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n as usize);
    Bytes::from(out)
}

/// Bytes `from..to` of the sequence, as a request body (both multiples of 1 MiB, or `to` the end).
fn body(from: u64, to: u64, len: u64) -> reqwest::Body {
    let blocks = (from >> 20)..to.div_ceil(1 << 20);
    reqwest::Body::wrap_stream(
        futures::stream::iter(blocks).map(move |i| Ok::<_, std::io::Error>(block(i, len))),
    )
}

fn size() -> u64 {
    // 2.5 GiB and a bit: past every 32-bit offset, and several S3 parts and segments.
    std::env::var("BERTH_TEST_LARGE_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or((5 << 29) + 12_345)
}

#[tokio::test]
async fn a_multi_gib_layer_pushed_in_chunks_pulls_back_identical() {
    let s = Server::start().await;
    let len = size();
    let digest = {
        let mut h = Sha256::new();
        for i in 0..len.div_ceil(1 << 20) {
            h.update(block(i, len));
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    };

    let r = s.post("/v2/big/layer/blobs/uploads/").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mut loc = header(&r, "location").to_owned();
    let chunk = 768u64 << 20;
    let mut at = 0;
    while at < len {
        let end = (at + chunk).min(len);
        let r = s
            .http
            .patch(s.url(&loc))
            .header("content-range", format!("{at}-{}", end - 1))
            .header("content-length", (end - at).to_string())
            .body(body(at, end, len))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "chunk at {at}");
        assert_eq!(header(&r, "range"), format!("0-{}", end - 1));
        loc = header(&r, "location").to_owned();
        at = end;
    }
    let r = s.put(&with_digest(&loc, &digest)).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);

    let path = format!("/v2/big/layer/blobs/{digest}");
    let r = s.head(&path).await;
    assert_eq!(header(&r, "content-length"), len.to_string());

    // The whole layer, hashed as it arrives.
    let r = s.get(&path).await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut h = Sha256::new();
    let mut got = 0u64;
    let mut stream = r.bytes_stream();
    while let Some(piece) = stream.next().await {
        let piece = piece.unwrap();
        got += piece.len() as u64;
        h.update(&piece);
    }
    assert_eq!(got, len);
    assert_eq!(format!("sha256:{}", hex::encode(h.finalize())), digest);

    // A range past 2^31 and one across the last chunk boundary, compared byte for byte.
    for start in [(1u64 << 31) + 7, 3 * chunk - 100] {
        let end = (start + 300_000).min(len - 1);
        let r = s
            .http
            .get(s.url(&path))
            .header("range", format!("bytes={start}-{end}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        let got = r.bytes().await.unwrap();
        let mut want = Vec::new();
        for i in (start >> 20)..=(end >> 20) {
            want.extend_from_slice(&block(i, len));
        }
        let skip = (start - ((start >> 20) << 20)) as usize;
        assert!(
            got[..] == want[skip..skip + (end - start + 1) as usize],
            "range {start}-{end} differs"
        );
    }
}
