//! Blob storage for Berth: the [`BlobStore`] trait and its backends.
//!
//! A blob store holds two kinds of object: committed blobs, immutable and addressed by their
//! digest, and upload sessions, scratch space named by an upload id into which chunks are
//! appended. A blob becomes visible only through [`BlobStore::commit_upload`], an atomic step,
//! so a reader never sees a partial blob. The store does not hash: the registry service hashes
//! bytes as they stream past and tells the store the verified digest to commit under.
//!
//! The metadata store, not the blob store, knows what an upload holds: its offset and the
//! [`Segment`]s its appends wrote, each named by its start and a token that is fresh for every
//! append. Reading and committing an upload take that record, so a backend that keeps each
//! append as an object of its own (S3) never has to list its objects to find them, and a
//! write that was never recorded (a writer that lost its lease while its bytes were in flight,
//! a chunk whose metadata update never happened) is never read as part of the upload.
//!
//! Bytes that a scrub found damaged are moved aside, into quarantine
//! ([`BlobStore::quarantine_blob`]), rather than deleted, so that an operator can look at them.
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

/// Where every backend keeps quarantined bytes below its root, as path segments:
/// `quarantine/<algorithm>/<hex>-<label>`. Nothing reads there: serving, listing and garbage
/// collection look under `blobs/` only.
pub(crate) fn quarantine_key(d: &Digest, label: &str) -> Result<[String; 3], StoreError> {
    if label.is_empty()
        || label.len() > 64
        || !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(StoreError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("invalid quarantine label {label:?}"),
        )));
    }
    Ok([
        "quarantine".into(),
        d.algorithm().as_str().into(),
        format!("{}-{label}", d.hex()),
    ])
}

/// Refuse a segment token that could be anything but a token: a key or path made from it
/// must not reach beyond its upload. Tokens come from the registry (random hex).
pub(crate) fn check_segment_token(token: &str) -> Result<(), StoreError> {
    if token.is_empty() || token.len() > 64 || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(StoreError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("invalid upload segment token {token:?}"),
        )));
    }
    Ok(())
}

/// One append of an upload session as the metadata store recorded it. The recorded segments
/// of an upload, in order of `start`, make up its bytes: each runs from its start to the next
/// one's, the last one to the upload's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The upload offset of its first byte (the offset its [`BlobStore::append`] was given).
    pub start: u64,
    /// The token its [`BlobStore::append`] was given: fresh for every append, ASCII letters
    /// and digits (at most 64).
    pub token: String,
}

impl Segment {
    /// A segment starting at `start`, named `token`.
    pub fn new(start: u64, token: impl Into<String>) -> Self {
        Self {
            start,
            token: token.into(),
        }
    }
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

/// A committed blob as storage lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    /// Its digest (from its key).
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// When its bytes were last written.
    pub modified: std::time::SystemTime,
}

/// The digest a blob key's last two segments name (`<first two hex digits>/<hex>` under the
/// algorithm's folder), if they name one.
pub(crate) fn digest_of_key(algorithm: &str, prefix: &str, hex: &str) -> Option<Digest> {
    if !hex.starts_with(prefix) || prefix.len() != 2 {
        return None;
    }
    format!("{algorithm}:{hex}").parse().ok()
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

    /// Committed blobs in digest order, after `after` (all of them from the start when
    /// `None`), at most `limit`: for garbage collection's sweep of bytes that metadata does not
    /// know, and for scrub. Anything below the blob root that is not a blob is skipped.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the backend fails.
    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<StoredBlob>, StoreError>;

    /// Move the committed blob `digest` into quarantine, under
    /// `quarantine/<algorithm>/<hex>-<label>`, where nothing reads it (serving, listing and
    /// garbage collection look under `blobs/` only) and an operator can examine it; the blob
    /// is then no longer stored. Returns whether there were bytes to move. Scrub quarantines
    /// blobs whose bytes do not match their digest; `label` (ASCII letters, digits and `-`, at
    /// most 64) names the run, so that the bytes each run took stay apart.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the backend fails or `label` is invalid.
    async fn quarantine_blob(&self, digest: &Digest, label: &str) -> Result<bool, StoreError>;

    /// Keep `content`, bytes that should hash to `digest` and do not (a manifest whose stored
    /// content is damaged), in quarantine under the key [`Self::quarantine_blob`] uses. A
    /// second call with the same key replaces the first.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the backend fails or `label` is invalid.
    async fn quarantine_bytes(
        &self,
        digest: &Digest,
        label: &str,
        content: Bytes,
    ) -> Result<(), StoreError>;

    /// Create an empty upload session.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the backend fails.
    async fn start_upload(&self, id: &str) -> Result<(), StoreError>;

    /// Append `body` to upload `id` at `offset`, as the segment named `token`. Returns how
    /// many bytes were appended.
    ///
    /// The caller makes `token` fresh for every append (random) and, once the append has
    /// succeeded, records the segment `(offset, token)` in the metadata store in the same
    /// step that moves the upload's offset. A backend that keeps each append as an object of
    /// its own (S3) names that object by both, so no two appends ever write the same object:
    /// a write that lands late (its writer lost its lease while the bytes were in flight) or
    /// that was never recorded is an object that no recorded segment names, and cannot change
    /// the bytes of the upload. A backend that keeps one file per upload (the filesystem, in
    /// one process that serialises appends) ignores `token`.
    ///
    /// Bytes at or past `offset` that are not recorded (left by a chunk whose metadata update
    /// never happened, say after a crash) are not part of the upload: the filesystem cuts them
    /// off first; S3 never reads them. The bytes are durable when this returns (if the backend
    /// is configured to sync). On a body error nothing is kept: the upload is as it was.
    ///
    /// # Errors
    /// [`StoreError::Body`]; I/O. A backend may also check the upload against `offset` (the
    /// filesystem does: [`StoreError::NotFound`], or [`StoreError::OffsetMismatch`] if it
    /// holds fewer than `offset` bytes); S3 does not, sparing a request: the metadata store
    /// is the truth about the upload and the caller has consulted it.
    async fn append(
        &self,
        id: &str,
        offset: u64,
        token: &str,
        body: ByteStream,
    ) -> Result<u64, StoreError>;

    /// The bytes of upload `id` as `segments` (what the metadata store recorded, in order of
    /// start) lay them out, to rebuild a hash state that was lost. The content may run on past
    /// the upload's recorded length (the filesystem returns its file whole, which may hold the
    /// bytes of an unrecorded chunk at its end): the caller reads only as far as it knows.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if the upload (or a segment) does not exist.
    async fn read_upload(&self, id: &str, segments: &[Segment]) -> Result<BlobContent, StoreError>;

    /// Make the first `len` bytes of upload `id` the committed blob `digest`, atomically, and
    /// then discard the session's stored bytes. The caller has verified the digest of those
    /// bytes. Committing a blob that already exists is harmless.
    ///
    /// `len` and `segments` must be what the metadata store recorded for the upload (its
    /// offset and its segments in order of start): a backend may trust that each segment holds
    /// exactly its share. S3 copies a single segment of `len` bytes server-side without asking
    /// its size, and reads no object that `segments` does not name; the filesystem ignores
    /// `segments` (its file holds the upload's bytes in place) and drops what lies past `len`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if the upload (or a segment) does not exist;
    /// [`StoreError::OffsetMismatch`] if it holds fewer than `len` bytes (where the backend
    /// can tell).
    async fn commit_upload(
        &self,
        id: &str,
        digest: &Digest,
        len: u64,
        segments: &[Segment],
    ) -> Result<(), StoreError>;

    /// Discard an upload session with everything stored for it, recorded or not. Discarding
    /// an absent upload is not an error.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the backend fails.
    async fn abort_upload(&self, id: &str) -> Result<(), StoreError>;

    /// Remove what `append(id, offset, token, ..)` stored, because the metadata store refused
    /// to record that segment (another request moved the upload on first, or took its lease):
    /// no reader will ever look for it. Removing an absent segment is not an error.
    ///
    /// The default does nothing, which suits a backend that keeps one file per upload (the
    /// next append, or the commit, cuts unrecorded bytes off).
    ///
    /// # Errors
    /// [`StoreError::Io`] if the backend fails.
    async fn discard_segment(&self, id: &str, offset: u64, token: &str) -> Result<(), StoreError> {
        let _ = (id, offset, token);
        Ok(())
    }

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
