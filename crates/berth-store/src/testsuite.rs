//! The behaviour every [`BlobStore`] backend must show. Each backend's tests call [`run`].

use std::io::Read;

use berth_oci::Digest;
use bytes::Bytes;
use futures::StreamExt;

use crate::{BlobContent, BlobStore, ByteStream, StoreError};

fn body(parts: &[&'static [u8]]) -> ByteStream {
    let items: Vec<Result<Bytes, StoreError>> =
        parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
    Box::pin(futures::stream::iter(items))
}

/// Collect a [`BlobContent`] into memory (tests only: real readers stream).
///
/// # Panics
/// If reading fails.
pub async fn collect(content: BlobContent) -> Vec<u8> {
    match content {
        BlobContent::File {
            mut file,
            offset,
            len,
        } => {
            use std::io::Seek;
            file.seek(std::io::SeekFrom::Start(offset)).unwrap();
            let mut out = Vec::new();
            file.take(len).read_to_end(&mut out).unwrap();
            out
        }
        BlobContent::Bytes(b) => b.to_vec(),
        BlobContent::Stream(mut s) => {
            let mut out = Vec::new();
            while let Some(chunk) = s.next().await {
                out.extend_from_slice(&chunk.unwrap());
            }
            out
        }
    }
}

/// Exercise `store` through the whole [`BlobStore`] contract.
///
/// # Panics
/// On the first behaviour that differs from the contract.
pub async fn run(store: &dyn BlobStore) {
    let data = b"hello, blob store";
    let digest = Digest::sha256_of(data);
    let id = "0b9c3c4e-5b2c-4a57-9c1b-0f3f0c2a7e11";

    assert!(store.stat(&digest).await.unwrap().is_none());
    assert!(matches!(
        store.read(&digest, 0, 1).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.append("missing-upload", 0, body(&[b"x"])).await,
        Err(StoreError::NotFound)
    ));

    store.start_upload(id).await.unwrap();
    assert_eq!(store.append(id, 0, body(&[b"hello, "])).await.unwrap(), 7);
    assert!(matches!(
        store.append(id, 99, body(&[b"x"])).await,
        Err(StoreError::OffsetMismatch {
            expected: 99,
            actual: 7
        })
    ));
    // Bytes past the offset the caller knows (an interrupted chunk) are dropped.
    assert_eq!(store.append(id, 5, body(&[b", "])).await.unwrap(), 2);
    // A body that breaks mid-way leaves the upload as it was.
    let broken: ByteStream = Box::pin(futures::stream::iter(vec![
        Ok(Bytes::from_static(b"garbage")),
        Err(StoreError::Body("client went away".into())),
    ]));
    assert!(matches!(
        store.append(id, 7, broken).await,
        Err(StoreError::Body(_))
    ));
    assert_eq!(
        store
            .append(id, 7, body(&[b"blob ", b"store"]))
            .await
            .unwrap(),
        10
    );
    assert_eq!(collect(store.read_upload(id).await.unwrap()).await, data);

    // Not visible before commit.
    assert!(store.stat(&digest).await.unwrap().is_none());
    assert!(matches!(
        store.commit_upload(id, &digest, 100).await,
        Err(StoreError::OffsetMismatch { .. })
    ));
    store
        .commit_upload(id, &digest, data.len() as u64)
        .await
        .unwrap();
    assert_eq!(store.stat(&digest).await.unwrap(), Some(data.len() as u64));
    assert!(matches!(
        store.read_upload(id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        collect(store.read(&digest, 0, data.len() as u64).await.unwrap()).await,
        data
    );
    assert_eq!(
        collect(store.read(&digest, 7, 4).await.unwrap()).await,
        b"blob"
    );
    let mut streamed = Vec::new();
    let mut s = store
        .read(&digest, 7, 4)
        .await
        .unwrap()
        .into_stream()
        .unwrap();
    while let Some(chunk) = s.next().await {
        streamed.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(streamed, b"blob");

    // Committing the same content again is harmless.
    let id2 = "1b9c3c4e-5b2c-4a57-9c1b-0f3f0c2a7e11";
    store.start_upload(id2).await.unwrap();
    store.append(id2, 0, body(&[data, b"extra"])).await.unwrap();
    store
        .commit_upload(id2, &digest, data.len() as u64)
        .await
        .unwrap();
    assert_eq!(store.stat(&digest).await.unwrap(), Some(data.len() as u64));

    // Abort removes, and is idempotent.
    let id3 = "2b9c3c4e-5b2c-4a57-9c1b-0f3f0c2a7e11";
    store.start_upload(id3).await.unwrap();
    store.abort_upload(id3).await.unwrap();
    store.abort_upload(id3).await.unwrap();
    assert!(matches!(
        store.commit_upload(id3, &digest, 0).await,
        Err(StoreError::NotFound)
    ));

    store.delete(&digest).await.unwrap();
    store.delete(&digest).await.unwrap();
    assert!(store.stat(&digest).await.unwrap().is_none());

    odd_sized_appends(store).await;
}

/// Appends of every awkward size: chunks that start and end mid-block, bodies whose frames
/// straddle buffer boundaries, a chunk that fails halfway, and a retry over cut-off bytes.
async fn odd_sized_appends(store: &dyn BlobStore) {
    let data: Vec<u8> = (0..(9u32 << 20) + 4099)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let digest = Digest::sha256_of(&data);
    let id = "3b9c3c4e-5b2c-4a57-9c1b-0f3f0c2a7e11";
    store.start_upload(id).await.unwrap();
    let frames = |range: std::ops::Range<usize>, frame: usize| -> ByteStream {
        let part = Bytes::copy_from_slice(&data[range]);
        let items: Vec<Result<Bytes, StoreError>> = (0..part.len())
            .step_by(frame)
            .map(|at| Ok(part.slice(at..(at + frame).min(part.len()))))
            .collect();
        Box::pin(futures::stream::iter(items))
    };
    // Chunk boundaries (offsets) chosen to be unaligned, aligned, one byte, and multi-MiB.
    let cuts = [
        0usize,
        1,
        4096,
        4097,
        70_001,
        1 << 20,
        (5 << 20) + 3,
        data.len(),
    ];
    for (i, w) in cuts.windows(2).enumerate() {
        let frame = [1, 7, 4096, 65_537, 1 << 20][i % 5];
        let n = store
            .append(id, w[0] as u64, frames(w[0]..w[1], frame))
            .await;
        assert_eq!(n.unwrap(), (w[1] - w[0]) as u64, "chunk {i}");
        if i == 3 {
            // A chunk that breaks off halfway leaves the upload as it was.
            let mut half: Vec<Result<Bytes, StoreError>> =
                vec![Ok(Bytes::copy_from_slice(&data[w[1]..w[1] + 10_000]))];
            half.push(Err(StoreError::Body("client went away".into())));
            let broken: ByteStream = Box::pin(futures::stream::iter(half));
            assert!(store.append(id, w[1] as u64, broken).await.is_err());
        }
        let so_far = collect(store.read_upload(id).await.unwrap()).await;
        assert_eq!(so_far.len(), w[1], "upload length after chunk {i}");
        assert!(so_far == data[..w[1]], "upload bytes after chunk {i}");
    }
    store
        .commit_upload(id, &digest, data.len() as u64)
        .await
        .unwrap();
    let whole = collect(store.read(&digest, 0, data.len() as u64).await.unwrap()).await;
    assert!(whole == data, "committed bytes differ");
    let tail = collect(store.read(&digest, 4097, 1 << 20).await.unwrap()).await;
    assert!(tail == data[4097..4097 + (1 << 20)]);
    store.delete(&digest).await.unwrap();
}
