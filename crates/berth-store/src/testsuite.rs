//! The behaviour every [`BlobStore`] backend must show. Each backend's tests call [`run`].

use std::io::Read;

use berth_oci::Digest;
use bytes::Bytes;
use futures::StreamExt;

use crate::{BlobContent, BlobStore, ByteStream, Segment, StoreError};

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

/// What the metadata store keeps of an upload, kept by a test: its offset and the segments it
/// recorded. Appends through it record their segment when they succeed, as the registry does.
pub struct Recorded {
    id: &'static str,
    offset: u64,
    segments: Vec<Segment>,
    next_token: u32,
}

impl Recorded {
    /// A new, empty upload `id` (the caller starts it in the store).
    #[must_use]
    pub fn new(id: &'static str) -> Self {
        Self {
            id,
            offset: 0,
            segments: Vec::new(),
            next_token: 0,
        }
    }

    /// A token no earlier append of this upload had.
    pub fn token(&mut self) -> String {
        self.next_token += 1;
        format!("t{:08x}{}", self.next_token, self.id.len())
    }

    /// Append `body` at the recorded offset and, if it succeeds with bytes, record it.
    ///
    /// # Errors
    /// What the store's append returns.
    pub async fn append(
        &mut self,
        store: &dyn BlobStore,
        body: ByteStream,
    ) -> Result<u64, StoreError> {
        let token = self.token();
        let n = store.append(self.id, self.offset, &token, body).await?;
        if n > 0 {
            self.segments.push(Segment::new(self.offset, token));
            self.offset += n;
        }
        Ok(n)
    }

    /// Append `body` at the recorded offset as a chunk whose metadata update never happens
    /// (a crash, a lost lease): the store keeps it, the record does not change.
    ///
    /// # Errors
    /// What the store's append returns.
    pub async fn append_unrecorded(
        &mut self,
        store: &dyn BlobStore,
        body: ByteStream,
    ) -> Result<u64, StoreError> {
        let token = self.token();
        store.append(self.id, self.offset, &token, body).await
    }

    /// The upload's recorded length.
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The recorded segments, in order.
    #[must_use]
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The bytes the store reads back for the record, cut at the recorded length.
    ///
    /// # Panics
    /// If reading fails.
    pub async fn read(&self, store: &dyn BlobStore) -> Vec<u8> {
        let mut bytes = collect(store.read_upload(self.id, &self.segments).await.unwrap()).await;
        assert!(bytes.len() as u64 >= self.offset, "the upload lost bytes");
        bytes.truncate(self.offset as usize);
        bytes
    }

    /// Commit the recorded bytes as `digest`.
    ///
    /// # Errors
    /// What the store's commit returns.
    pub async fn commit(&self, store: &dyn BlobStore, digest: &Digest) -> Result<(), StoreError> {
        store
            .commit_upload(self.id, digest, self.offset, &self.segments)
            .await
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

    store.start_upload(id).await.unwrap();
    let mut up = Recorded::new(id);
    assert_eq!(up.append(store, body(&[b"hello"])).await.unwrap(), 5);
    // A chunk that reached the store but whose metadata update never happened is not part of
    // the upload; the next append at the recorded offset replaces it.
    assert_eq!(
        up.append_unrecorded(store, body(&[b"LOST CHUNK"]))
            .await
            .unwrap(),
        10
    );
    assert_eq!(up.append(store, body(&[b", "])).await.unwrap(), 2);
    // A body that breaks mid-way leaves the upload as it was.
    let broken: ByteStream = Box::pin(futures::stream::iter(vec![
        Ok(Bytes::from_static(b"garbage")),
        Err(StoreError::Body("client went away".into())),
    ]));
    assert!(matches!(
        up.append(store, broken).await,
        Err(StoreError::Body(_))
    ));
    // An empty body appends nothing.
    assert_eq!(up.append(store, body(&[])).await.unwrap(), 0);
    assert_eq!(
        up.append(store, body(&[b"blob ", b"store"])).await.unwrap(),
        10
    );
    assert_eq!(up.segments().len(), 3);
    assert_eq!(up.read(store).await, data);

    // Not visible before commit.
    assert!(store.stat(&digest).await.unwrap().is_none());
    up.commit(store, &digest).await.unwrap();
    assert_eq!(store.stat(&digest).await.unwrap(), Some(data.len() as u64));
    assert!(matches!(
        store.read_upload(id, up.segments()).await,
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

    // Committing the same content again, from one segment, is harmless.
    let id2 = "1b9c3c4e-5b2c-4a57-9c1b-0f3f0c2a7e11";
    store.start_upload(id2).await.unwrap();
    let mut up2 = Recorded::new(id2);
    up2.append(store, body(&[data])).await.unwrap();
    up2.commit(store, &digest).await.unwrap();
    assert_eq!(store.stat(&digest).await.unwrap(), Some(data.len() as u64));
    assert_eq!(
        collect(store.read(&digest, 0, data.len() as u64).await.unwrap()).await,
        data
    );

    // An empty blob, from an upload that got no bytes.
    let empty = Digest::sha256_of(b"");
    let id4 = "4b9c3c4e-5b2c-4a57-9c1b-0f3f0c2a7e11";
    store.start_upload(id4).await.unwrap();
    Recorded::new(id4).commit(store, &empty).await.unwrap();
    assert_eq!(store.stat(&empty).await.unwrap(), Some(0));
    assert!(collect(store.read(&empty, 0, 0).await.unwrap())
        .await
        .is_empty());
    store.delete(&empty).await.unwrap();

    // Abort removes, recorded or not, and is idempotent.
    let id3 = "2b9c3c4e-5b2c-4a57-9c1b-0f3f0c2a7e11";
    store.start_upload(id3).await.unwrap();
    let mut up3 = Recorded::new(id3);
    up3.append(store, body(&[b"abc"])).await.unwrap();
    up3.append_unrecorded(store, body(&[b"def"])).await.unwrap();
    store.abort_upload(id3).await.unwrap();
    store.abort_upload(id3).await.unwrap();
    assert!(matches!(
        store.read_upload(id3, up3.segments()).await,
        Err(StoreError::NotFound)
    ));
    // Discarding a segment that is gone is not an error either.
    store.discard_segment(id3, 3, "t1").await.unwrap();

    store.delete(&digest).await.unwrap();
    store.delete(&digest).await.unwrap();
    assert!(store.stat(&digest).await.unwrap().is_none());

    odd_sized_appends(store).await;
    listing(store).await;
    quarantine(store).await;
}

/// Commit `data` as a blob through a one-segment upload.
async fn put_blob(store: &dyn BlobStore, id: &'static str, data: &'static [u8]) -> Digest {
    let digest = Digest::sha256_of(data);
    store.start_upload(id).await.unwrap();
    let mut up = Recorded::new(id);
    up.append(store, body(&[data])).await.unwrap();
    up.commit(store, &digest).await.unwrap();
    digest
}

/// Blobs list in digest order, page by page, with their sizes and times; uploads are not
/// blobs.
async fn listing(store: &dyn BlobStore) {
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    let blobs = [
        put_blob(store, "5b9c3c4e-5b2c-4a57-9c1b-0f3f0c2a7e11", b"list one").await,
        put_blob(store, "6b9c3c4e-5b2c-4a57-9c1b-0f3f0c2a7e11", b"list two!").await,
        put_blob(store, "7b9c3c4e-5b2c-4a57-9c1b-0f3f0c2a7e11", b"list three").await,
    ];
    store
        .start_upload("8b9c3c4e-5b2c-4a57-9c1b-0f3f0c2a7e11")
        .await
        .unwrap();
    let mut all = Vec::new();
    let mut after: Option<Digest> = None;
    loop {
        let page = store.list_blobs(after.as_ref(), 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.digest.clone());
        all.extend(page);
    }
    let digests: Vec<_> = all.iter().map(|b| b.digest.to_string()).collect();
    let mut sorted = digests.clone();
    sorted.sort();
    assert_eq!(digests, sorted, "listed in digest order");
    for (d, size) in blobs.iter().zip([8u64, 9, 10]) {
        let listed = all
            .iter()
            .find(|b| &b.digest == d)
            .unwrap_or_else(|| panic!("{d} not listed"));
        assert_eq!(listed.size, size);
        assert!(listed.modified > before);
    }
    let from_second = store.list_blobs(Some(&blobs[0]), 1000).await.unwrap();
    assert!(from_second
        .iter()
        .all(|b| b.digest.to_string() > blobs[0].to_string()));
    store
        .abort_upload("8b9c3c4e-5b2c-4a57-9c1b-0f3f0c2a7e11")
        .await
        .unwrap();
    for d in &blobs {
        store.delete(d).await.unwrap();
    }
    let left = store.list_blobs(None, 1000).await.unwrap();
    assert!(!left.iter().any(|b| blobs.contains(&b.digest)));
}

/// A quarantined blob is no longer stored, listed or readable; quarantining what is not
/// stored says so; labels that could name anything but a label are refused.
async fn quarantine(store: &dyn BlobStore) {
    let bad = put_blob(
        store,
        "9b9c3c4e-5b2c-4a57-9c1b-0f3f0c2a7e11",
        b"damaged bytes",
    )
    .await;
    assert!(store.quarantine_blob(&bad, "scrub-7").await.unwrap());
    assert_eq!(store.stat(&bad).await.unwrap(), None);
    assert!(matches!(
        store.read(&bad, 0, 1).await,
        Err(StoreError::NotFound)
    ));
    let listed = store.list_blobs(None, 1000).await.unwrap();
    assert!(!listed.iter().any(|b| b.digest == bad), "{listed:?}");
    assert!(!store.quarantine_blob(&bad, "scrub-8").await.unwrap());
    // The same digest stored and quarantined again, by another run, is kept apart.
    let again = put_blob(
        store,
        "ab9c3c4e-5b2c-4a57-9c1b-0f3f0c2a7e11",
        b"damaged bytes",
    )
    .await;
    assert_eq!(again, bad);
    assert!(store.quarantine_blob(&bad, "scrub-8").await.unwrap());
    assert_eq!(store.stat(&bad).await.unwrap(), None);
    // Bytes from elsewhere (a damaged manifest), twice under one key.
    let manifest = Digest::sha256_of(b"{\"what\":\"it should be\"}");
    for content in [&b"{\"what\":\"it is\"}"[..], b"{}"] {
        store
            .quarantine_bytes(
                &manifest,
                "scrub-7-manifest",
                Bytes::copy_from_slice(content),
            )
            .await
            .unwrap();
    }
    assert_eq!(store.stat(&manifest).await.unwrap(), None);
    for label in ["", "../x", "a/b", "a.b", &"x".repeat(65)] {
        assert!(
            store.quarantine_blob(&bad, label).await.is_err(),
            "label {label:?}"
        );
        assert!(
            store
                .quarantine_bytes(&bad, label, Bytes::new())
                .await
                .is_err(),
            "label {label:?}"
        );
    }
}

/// Appends of every awkward size: chunks that start and end mid-block, bodies whose frames
/// straddle buffer boundaries, a chunk that fails halfway, and unrecorded chunks that the
/// next append replaces.
async fn odd_sized_appends(store: &dyn BlobStore) {
    let data: Vec<u8> = (0..(9u32 << 20) + 4099)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let digest = Digest::sha256_of(&data);
    let id = "3b9c3c4e-5b2c-4a57-9c1b-0f3f0c2a7e11";
    store.start_upload(id).await.unwrap();
    let mut up = Recorded::new(id);
    let frames = |bytes: &[u8], frame: usize| -> ByteStream {
        let part = Bytes::copy_from_slice(bytes);
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
        if i % 3 == 1 {
            // Junk from a chunk that never got recorded, at the offset the next one takes.
            let junk = vec![0xEEu8; 5000 + i * 999];
            up.append_unrecorded(store, frames(&junk, 4096))
                .await
                .unwrap();
        }
        let n = up.append(store, frames(&data[w[0]..w[1]], frame)).await;
        assert_eq!(n.unwrap(), (w[1] - w[0]) as u64, "chunk {i}");
        if i == 3 {
            // A chunk that breaks off halfway leaves the upload as it was.
            let mut half: Vec<Result<Bytes, StoreError>> =
                vec![Ok(Bytes::copy_from_slice(&data[w[1]..w[1] + 10_000]))];
            half.push(Err(StoreError::Body("client went away".into())));
            let broken: ByteStream = Box::pin(futures::stream::iter(half));
            assert!(up.append(store, broken).await.is_err());
        }
        let so_far = up.read(store).await;
        assert_eq!(so_far.len(), w[1], "upload length after chunk {i}");
        assert!(so_far == data[..w[1]], "upload bytes after chunk {i}");
    }
    up.commit(store, &digest).await.unwrap();
    let whole = collect(store.read(&digest, 0, data.len() as u64).await.unwrap()).await;
    assert!(whole == data, "committed bytes differ");
    let tail = collect(store.read(&digest, 4097, 1 << 20).await.unwrap()).await;
    assert!(tail == data[4097..4097 + (1 << 20)]);
    store.delete(&digest).await.unwrap();
}
