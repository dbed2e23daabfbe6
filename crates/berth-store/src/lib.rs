//! Blob storage for Berth: the [`BlobStore`] trait and its backends.
//!
//! A blob store holds two kinds of object: committed blobs, immutable and addressed by their
//! digest, and upload sessions, append-only scratch objects named by an upload id. A blob
//! becomes visible only through [`BlobStore::commit_upload`], an atomic step, so a reader never
//! sees a partial blob. The store does not hash: the registry service hashes bytes as they
//! stream past and tells the store the verified digest to commit under.
//!
//! Backends: [`fs::FsStore`] (the embedded default) and [`s3::S3Store`] (S3-compatible object
//! storage, for a fleet of instances). Every backend passes [`testsuite::run`].

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use berth_oci::Digest;
use bytes::Bytes;
use futures::Stream;

pub mod fs;
pub mod mapped;
pub mod s3;
pub mod testsuite;

/// Errors a blob store reports.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The blob or upload does not exist.
    #[error("not found")]
    NotFound,
    /// An upload's stored length differs from the offset the caller expected.
    #[error("upload holds {actual} bytes, not the expected {expected}")]
    OffsetMismatch {
        /// What the caller believed.
        expected: u64,
        /// What the store holds.
        actual: u64,
    },
    /// The incoming body failed mid-stream (client went away or sent a broken body).
    #[error("reading the request body failed: {0}")]
    Body(String),
    /// The backend failed.
    #[error("storage i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl StoreError {
    /// Whether the backend could not be reached or is overloaded (connect failure, timeout,
    /// dropped connection, a 5xx answer after the retries), as opposed to refusing or failing
    /// this one request. A server answers such errors with 503 Service Unavailable: the same
    /// request may well succeed later. Always false for the filesystem backend.
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Io(e) if e.get_ref().is_some_and(|inner| inner.is::<BackendUnavailable>()))
    }
}

/// The inner error of a [`StoreError::Io`] that [`StoreError::is_unavailable`] reports.
#[derive(Debug)]
pub(crate) struct BackendUnavailable(pub(crate) String);

impl std::fmt::Display for BackendUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BackendUnavailable {}

/// Where every backend keeps a committed blob below its root, as path segments:
/// `blobs/<algorithm>/<first two hex digits>/<hex>`.
pub(crate) fn blob_key(d: &Digest) -> [String; 4] {
    let hex = d.hex();
    [
        "blobs".into(),
        d.algorithm().as_str().into(),
        hex[..2].to_owned(),
        hex.to_string(),
    ]
}

/// Refuse an upload id that could name anything but an upload. Ids come from the registry
/// (uuids), but a backend never trusts one to build a path or key.
pub(crate) fn check_upload_id(id: &str) -> Result<(), StoreError> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// A stream of bytes going into the store.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, StoreError>> + Send>>;

/// The bytes of a blob (or a range of it) coming out of the store.
pub enum BlobContent {
    /// A region of a local file, which the server can send without copying it through a
    /// user-space buffer.
    File {
        /// The open blob file.
        file: std::fs::File,
        /// Where the region starts.
        offset: u64,
        /// How many bytes it has.
        len: u64,
    },
    /// Small content already in memory.
    Bytes(Bytes),
    /// A stream from a remote backend.
    Stream(ByteStream),
}

impl BlobContent {
    /// The content as a stream of chunks. A file region is memory-mapped and handed out in
    /// slices of the mapping, so the bytes go from the page cache to the socket without a
    /// copy through a user-space buffer.
    ///
    /// # Errors
    /// If the file cannot be mapped.
    pub fn into_stream(self) -> Result<ByteStream, StoreError> {
        match self {
            Self::File { file, offset, len } => mapped::mapped_stream(&file, offset, len),
            Self::Bytes(b) => Ok(Box::pin(futures::stream::once(async move { Ok(b) }))),
            Self::Stream(s) => Ok(s),
        }
    }
}

/// Where a backend keeps blobs and upload sessions.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// The size of a committed blob, or `None` if it is not stored.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the backend fails.
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError>;

    /// Read `len` bytes of a committed blob starting at `offset`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if the blob is not stored.
    async fn read(&self, digest: &Digest, offset: u64, len: u64)
        -> Result<BlobContent, StoreError>;

    /// Remove a committed blob. Removing an absent blob is not an error.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the backend fails.
    async fn delete(&self, digest: &Digest) -> Result<(), StoreError>;

    /// Create an empty upload session object.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the backend fails.
    async fn start_upload(&self, id: &str) -> Result<(), StoreError>;

    /// Append `body` to upload `id` at `offset`. Returns how many bytes were appended.
    ///
    /// The metadata store is the truth about how far an upload got: bytes past `offset` (left
    /// by a chunk whose metadata update never happened, say after a crash) are cut off first.
    /// The bytes are durable when this returns (if the backend is configured to sync). On a
    /// body error the upload is cut back to `offset`, so a failed chunk leaves it as it was.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; [`StoreError::OffsetMismatch`] if the upload holds fewer than
    /// `offset` bytes; [`StoreError::Body`]; I/O.
    async fn append(&self, id: &str, offset: u64, body: ByteStream) -> Result<u64, StoreError>;

    /// The bytes of an upload so far (to rebuild a hash state that was lost).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if the upload does not exist.
    async fn read_upload(&self, id: &str) -> Result<BlobContent, StoreError>;

    /// Make the first `len` bytes of upload `id` the committed blob `digest`, atomically (bytes
    /// past `len` are left over from an interrupted chunk and dropped). The caller has verified
    /// the digest of those `len` bytes. Committing a blob that already exists is harmless.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if the upload does not exist; [`StoreError::OffsetMismatch`]
    /// if it holds fewer than `len` bytes.
    async fn commit_upload(&self, id: &str, digest: &Digest, len: u64) -> Result<(), StoreError>;

    /// Discard an upload session. Discarding an absent upload is not an error.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the backend fails.
    async fn abort_upload(&self, id: &str) -> Result<(), StoreError>;

    /// A URL at which anyone may `GET` the committed blob `digest` for the next `expires`
    /// (a backend may cap it: S3 allows at most seven days), or `None` if this backend has no
    /// such URLs. With `[storage] redirect = true` the server answers a blob GET with a
    /// redirect to this URL instead of streaming the bytes itself. The URL is made without
    /// asking the backend whether the blob exists; the caller knows that from metadata.
    ///
    /// The default implementation returns `Ok(None)` (the filesystem backend: its files have
    /// no URL).
    ///
    /// # Errors
    /// [`StoreError::Io`] if a URL cannot be made (say, credentials cannot be loaded).
    async fn presigned_get(
        &self,
        digest: &Digest,
        expires: Duration,
    ) -> Result<Option<String>, StoreError> {
        let _ = (digest, expires);
        Ok(None)
    }
}
