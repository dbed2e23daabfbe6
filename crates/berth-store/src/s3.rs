//! The S3 backend: blobs and upload sessions in an S3-compatible object store, shared by any
//! number of Berth instances.
//!
//! # Keys
//!
//! Everything lives under the configured [`S3Config::prefix`]:
//!
//! ```text
//! <prefix>/
//! ├── blobs/
//! │   └── sha256/
//! │       └── ab/
//! │           └── abcdef0123…                     committed blob, immutable, named by its hash
//! ├── quarantine/
//! │   └── sha256/
//! │       └── abcdef0123…-<label>                 damaged bytes a scrub moved aside
//! └── uploads/
//!     └── <upload id>/
//!         ├── _started                            marker: the session was started
//!         ├── 00000000000000000000-3f9a0c2b71de   segment: the chunk appended at offset 0
//!         ├── 00000000000004194304-b2c4e1f09a77   segment: the chunk appended at 4194304
//!         └── …
//! ```
//!
//! # Upload sessions are segments, and metadata names them
//!
//! S3 objects cannot be appended to, so each [`BlobStore::append`] writes its chunk as one new
//! object, a *segment*, named by the offset it starts at (20 decimal digits, so names sort as
//! numbers) and the token the caller made for that append (fresh and random every time). The
//! caller records the segment `(start, token)` in the metadata store in the same fenced step
//! that moves the upload's offset; the bytes of an upload are its recorded segments in order,
//! each running from its start to the next one's start (the last one to the upload's length).
//! A recorded segment holds exactly its share: it was written by the append that the
//! metadata then recorded, with as many bytes as the offset moved.
//!
//! No two appends write the same key, so nothing written late can replace recorded bytes. A
//! writer whose lease lapsed while its PUT was in flight, a chunk whose metadata update never
//! happened (a crash in between), a second client writing the same session at the same time:
//! each leaves a segment that no metadata names, which is never read.
//!
//! An append therefore makes no request but its own write: no LIST, no check of the offset
//! (the caller consulted the metadata store, which is the truth). The body streams into the
//! new segment; if the body fails, or S3 does, the segment is never created (a single PUT and
//! a `CompleteMultipartUpload` are atomic, and a multipart upload that fails is aborted), so a
//! failed chunk leaves nothing the metadata could name.
//!
//! [`BlobStore::start_upload`] writes the empty marker object `_started`; a commit deletes it
//! with the segments. Only the LIST that finds the segments of an upload begun by an older
//! berth (see below) looks at it, to tell an existing upload from an unknown one.
//!
//! # Commit
//!
//! [`BlobStore::commit_upload`] takes the recorded segments and the upload's length from the
//! caller and lists nothing. One segment of exactly `len` bytes (known from metadata, so no
//! HEAD either; at most 5 GiB, the limit of `CopyObject`) is copied to the blob key
//! server-side. Anything else is streamed, segment by segment through ranged GETs, into a
//! multipart upload at the blob key. Either way the blob key only ever receives the verified
//! bytes and appears atomically, so a repeated commit of the same digest is harmless. The
//! marker and the recorded segments are then deleted in one request; a failure there is
//! logged, not returned (the blob is already safe; what is left costs storage but is never
//! read as blob bytes).
//!
//! Unrecorded segments are found only by [`BlobStore::abort_upload`], which lists the
//! upload's prefix (a rare path: cancelled, failed and expired uploads) and deletes everything
//! under it. A segment whose metadata update was refused (the upload moved on, or its lease
//! was taken) is removed by the registry through [`BlobStore::discard_segment`]. What remains
//! after a commit are segments of writes that crashed or failed after reaching S3 without the
//! writer learning so: rare, small, never read. A bucket lifecycle rule that expires objects
//! under `uploads/` after longer than any upload session lives (a week, say) sweeps them.
//!
//! Uploads begun by an older berth, which named segments by their start alone (20 digits, no
//! token) and recorded none, are still read and committed: bytes below the first recorded
//! segment are found by a LIST of the upload's prefix and laid end to end as that version did.
//!
//! # Part sizes
//!
//! A body or blob smaller than one part goes up in a single PUT. Larger ones go up as a
//! multipart upload whose parts grow with the bytes sent so far ([`part_size`]): 8 MiB for the
//! first 1,000 parts, then twice as large for every next 1,000 parts, up to 4 GiB. S3 allows
//! 10,000 parts; this sizing fits 100 GiB in 3,725 parts (of 64 MiB at the end), 1 TiB in
//! 7,032 and the 5 TiB S3 object limit in 9,282. One upload holds at most the part being filled
//! plus [`MAX_PARTS_IN_FLIGHT`] parts on their way: 24 MiB for any blob below 7.8 GiB, which
//! is most layers. Frames of the body are kept as they arrive (frames below 32 KiB are gathered
//! into larger buffers), so large frames are not copied on their way to S3.
//!
//! A failed write aborts its multipart upload in the background, so that the error is not
//! held up by an S3 that is failing anyway. A writer that dies mid-upload (a crash, a killed
//! process), or an abort that fails, leaves an incomplete multipart upload behind, which S3
//! keeps (and bills) until it is aborted: give the bucket a lifecycle rule such as
//! `AbortIncompleteMultipartUpload` after a day.
//!
//! # Errors and timeouts
//!
//! `NotFound` from S3 becomes [`StoreError::NotFound`] (or `Ok(None)` / `Ok(())` where absence
//! is an answer); every other failure becomes [`StoreError::Io`] with a message that names the
//! operation and the key. Failures that mean S3 could not be reached or is overloaded (connect
//! errors, timeouts, dropped connections, 5xx answers after the retries) are marked so that
//! [`StoreError::is_unavailable`] is true: the server can answer 503 instead of 500.
//!
//! [`S3Config::request_timeout`] bounds how long any request may wait on S3: from sending a
//! request until its response starts (which includes sending the request body, so at most one
//! part), and between two reads of a response body. A request that makes progress is never cut
//! off, so a long blob download to a slow client is fine. [`S3Config::connect_timeout`] bounds
//! connecting. Failed requests are retried [`S3Config::max_retries`] times with exponential
//! backoff, and no retry starts later than `request_timeout × (max_retries + 1)` (at most four
//! minutes) after the first attempt: a stalled or failing server gives an error in bounded
//! time, never a hang.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth_oci::Digest;
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::path::Path;
use object_store::signer::{Method, Signer};
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, MultipartUpload, ObjectStore, ObjectStoreExt,
    PutPayload, RetryConfig,
};
use serde::Deserialize;
use tokio::task::JoinSet;

use crate::{
    BackendUnavailable, BlobContent, BlobStore, ByteStream, Segment, StoreError, StoredBlob,
};

/// Where and how to reach the bucket. Fields left unset (`None`, or an empty `bucket` /
/// `prefix`) fall back to the standard `AWS_*` environment variables
/// (`AWS_ENDPOINT_URL`, `AWS_BUCKET`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`, …), then to AWS's own defaults (region `us-east-1`,
/// instance or container credentials).
///
/// In a file, durations are numbers of seconds: `request_timeout = 60`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL of an S3-compatible service (`http://minio:9000`); `None`: AWS S3.
    pub endpoint: Option<String>,
    /// The bucket. Empty: `AWS_BUCKET` from the environment.
    pub bucket: String,
    /// The region; `None`: `AWS_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// Key prefix inside the bucket (`prod` or `prod/`), so several registries can share one.
    pub prefix: String,
    /// Access key id; `None`: from the environment or the instance.
    pub access_key_id: Option<String>,
    /// Secret access key; `None`: from the environment or the instance.
    pub secret_access_key: Option<String>,
    /// Allow plain HTTP. `None`: allowed when the endpoint starts with `http://`.
    pub allow_http: Option<bool>,
    /// Address the bucket as `bucket.host` instead of `host/bucket` (the endpoint must then
    /// name the bucket's host).
    pub virtual_hosted_style: bool,
    /// How long a request may wait on S3 without progress (see the module docs). It must
    /// allow sending one part: 8 MiB for the first 7.8 GiB of a blob, more beyond
    /// (see [`part_size`]). Default 60 s.
    #[serde(deserialize_with = "seconds")]
    pub request_timeout: Duration,
    /// How long connecting may take. Default 5 s.
    #[serde(deserialize_with = "seconds")]
    pub connect_timeout: Duration,
    /// Retries of a failed request (with exponential backoff). Default 3.
    pub max_retries: usize,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: None,
            bucket: String::new(),
            region: None,
            prefix: String::new(),
            access_key_id: None,
            secret_access_key: None,
            allow_http: None,
            virtual_hosted_style: false,
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            max_retries: 3,
        }
    }
}

/// A duration given as a number of seconds (fractions allowed).
fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let secs = f64::deserialize(d)?;
    Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
}

/// S3's smallest part (except the last one of an upload).
pub const MIN_PART: usize = 5 << 20;
/// The first part size, and the largest body written with a single PUT.
const FIRST_PART: u64 = 8 << 20;
/// How many parts of each size before the size doubles.
const PARTS_PER_TIER: u64 = 1000;
/// The largest part size: below S3's limit of 5 GiB.
const MAX_PART_TIER: u32 = 9; // 8 MiB << 9 = 4 GiB
/// How many parts of one upload may be on their way to S3 at once, besides the one filling.
pub const MAX_PARTS_IN_FLIGHT: usize = 2;
/// The largest object `CopyObject` copies.
const MAX_COPY: u64 = 5 << 30;
/// Reads up to this size come back in memory rather than as a stream.
const SMALL_READ: u64 = 256 << 10;
/// Body frames smaller than this are copied into a gathering buffer.
const GATHER_BELOW: usize = 32 << 10;
/// A gathering buffer is handed on when it holds this much.
const GATHER_SIZE: usize = 1 << 20;
/// S3 refuses presigned URLs valid for longer than a week.
const MAX_PRESIGN: Duration = Duration::from_secs(7 * 24 * 3600);
/// The name of an upload's marker object.
const MARKER: &str = "_started";
/// Segment names start with their offset in this many decimal digits (enough for any u64).
const SEGMENT_DIGITS: usize = 20;

/// The size of the next part of a multipart upload that has sent `bytes_so_far` bytes.
///
/// 8 MiB for the first 1,000 parts, then 16 MiB for the next 1,000, 32 MiB for the 1,000
/// after, and so on up to 4 GiB: tier `t` (parts `1000·t … 1000·t + 999`) starts after
/// `8 MiB × 1000 × (2^t − 1)` bytes. Every size is at least [`MIN_PART`] and at most S3's
/// 5 GiB limit, and S3's largest object (5 TiB) fits in fewer than its 10,000 parts.
#[must_use]
pub fn part_size(bytes_so_far: u64) -> usize {
    let tier = (bytes_so_far / (FIRST_PART * PARTS_PER_TIER) + 1)
        .ilog2()
        .min(MAX_PART_TIER);
    usize::try_from(FIRST_PART << tier).unwrap_or(usize::MAX)
}

/// Blobs and upload sessions in an S3 bucket. Cheap to clone.
#[derive(Debug, Clone)]
pub struct S3Store {
    s3: Arc<AmazonS3>,
    /// Where this store's keys start (the root when no prefix is set).
    root: Path,
}

/// Install rustls' ring provider as the process default if nothing is installed yet:
/// object_store's HTTP client (reqwest with `rustls-no-provider`) panics without one, even for
/// plain-HTTP endpoints. A binary that installs its own provider first keeps it.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: either provider will do.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Client options from the `AWS_*` environment (as `AmazonS3Builder::from_env` reads them), so
/// that replacing the builder's options keeps the environment's proxy, TLS and HTTP settings.
fn client_options_from_env() -> ClientOptions {
    let mut options = ClientOptions::new();
    for (key, value) in std::env::vars() {
        if !key.starts_with("AWS_") {
            continue;
        }
        if let Ok(AmazonS3ConfigKey::Client(key)) = key.to_ascii_lowercase().parse() {
            options = options.with_config(key, value);
        }
    }
    options
}

impl S3Store {
    /// A store for the bucket `cfg` names. Starts from the `AWS_*` environment and overrides it
    /// with every field `cfg` sets. Makes no request: a wrong bucket or key shows up on first
    /// use.
    ///
    /// Over HTTPS, request bodies are sent with `UNSIGNED-PAYLOAD` (TLS protects them, and
    /// signing them would cost a second SHA-256 pass over every byte; the registry already
    /// verifies each blob's digest). Over plain HTTP they are signed.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the configuration is incomplete or invalid (no bucket, a bad
    /// endpoint or prefix, only one half of a key pair).
    pub fn new(cfg: S3Config) -> Result<Self, StoreError> {
        Self::with_builder(cfg, std::convert::identity)
    }

    /// [`Self::new`], with `finish` given the last word on the client's builder (tests use
    /// it to watch the requests).
    fn with_builder(
        cfg: S3Config,
        finish: impl FnOnce(AmazonS3Builder) -> AmazonS3Builder,
    ) -> Result<Self, StoreError> {
        ensure_crypto_provider();
        let invalid = |what: String| {
            StoreError::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, what))
        };

        let mut b = AmazonS3Builder::from_env();
        if let Some(endpoint) = &cfg.endpoint {
            // AWS_ENDPOINT_URL_S3 would win over a plain endpoint: set both, so ours does.
            b = b
                .with_endpoint(endpoint)
                .with_config(AmazonS3ConfigKey::S3Endpoint, endpoint);
        }
        let endpoint = b
            .get_config_value(&AmazonS3ConfigKey::S3Endpoint)
            .or_else(|| b.get_config_value(&AmazonS3ConfigKey::Endpoint));
        let plain_http = endpoint
            .as_deref()
            .is_some_and(|e| e.to_ascii_lowercase().starts_with("http://"));
        if !cfg.bucket.is_empty() {
            b = b.with_bucket_name(&cfg.bucket);
        }
        if let Some(region) = &cfg.region {
            b = b.with_region(region);
        }
        if let Some(key) = &cfg.access_key_id {
            b = b.with_access_key_id(key);
        }
        if let Some(secret) = &cfg.secret_access_key {
            b = b.with_secret_access_key(secret);
        }
        if cfg.virtual_hosted_style {
            b = b.with_virtual_hosted_style_request(true);
        }
        if !plain_http {
            b = b.with_unsigned_payload(true);
        }

        // No overall request timeout (it would cut off long transfers that are progressing);
        // the read timeout bounds every wait instead: see the module docs.
        let options = client_options_from_env()
            .with_timeout_disabled()
            .with_connect_timeout(cfg.connect_timeout)
            .with_read_timeout(cfg.request_timeout);
        b = b.with_client_options(options);
        if let Some(allow) = cfg.allow_http {
            b = b.with_allow_http(allow);
        } else if plain_http {
            b = b.with_allow_http(true);
        }
        let attempts = u32::try_from(cfg.max_retries.saturating_add(1)).unwrap_or(u32::MAX);
        b = b.with_retry(RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: cfg.max_retries,
            retry_timeout: cfg
                .request_timeout
                .saturating_mul(attempts)
                .min(Duration::from_secs(240))
                .max(cfg.request_timeout),
        });

        let s3 = finish(b)
            .build()
            .map_err(|e| invalid(format!("S3 configuration: {e}")))?;
        let prefix = cfg.prefix.trim_matches('/');
        let root = if prefix.is_empty() {
            Path::default()
        } else {
            Path::parse(prefix).map_err(|e| invalid(format!("S3 prefix {prefix:?}: {e}")))?
        };
        Ok(Self {
            s3: Arc::new(s3),
            root,
        })
    }

    /// `<prefix>/blobs/<alg>/<first two hex>/<hex>`
    fn blob_path(&self, d: &Digest) -> Path {
        crate::blob_key(d)
            .into_iter()
            .fold(self.root.clone(), |p, part| p.join(part))
    }

    /// `<prefix>/quarantine/<alg>/<hex>-<label>`
    fn quarantine_path(&self, d: &Digest, label: &str) -> Result<Path, StoreError> {
        Ok(crate::quarantine_key(d, label)?
            .into_iter()
            .fold(self.root.clone(), |p, part| p.join(part)))
    }

    /// `<prefix>/uploads/<id>`
    fn upload_dir(&self, id: &str) -> Result<Path, StoreError> {
        crate::check_upload_id(id)?;
        Ok(self.root.clone().join("uploads").join(id))
    }

    /// `<prefix>/uploads/<id>/<start, 20 digits>-<token>`: the object of one append.
    fn segment_path(dir: &Path, start: u64, token: &str) -> Result<Path, StoreError> {
        crate::check_segment_token(token)?;
        Ok(dir
            .clone()
            .join(format!("{start:0width$}-{token}", width = SEGMENT_DIGITS)))
    }

    /// The pieces that `segments` (as the metadata store recorded them) make of an upload of
    /// `len` bytes, or, with `len` unknown, of everything they hold (the last one whole). Each
    /// recorded segment holds exactly its share (see [`BlobStore::append`]), so every piece is
    /// a whole object.
    fn recorded_pieces(
        dir: &Path,
        segments: &[Segment],
        len: Option<u64>,
    ) -> Result<Vec<Piece>, StoreError> {
        let mut pieces = Vec::with_capacity(segments.len());
        for (i, s) in segments.iter().enumerate() {
            let end = segments.get(i + 1).map(|next| next.start).or(len);
            if let Some(end) = end.filter(|&end| end <= s.start) {
                return Err(StoreError::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "recorded upload segments out of order: one starts at {}, what follows \
                         it at {end}",
                        s.start
                    ),
                )));
            }
            pieces.push(Piece {
                path: Self::segment_path(dir, s.start, &s.token)?,
                len: end.map(|end| end - s.start),
                whole: true,
            });
        }
        Ok(pieces)
    }

    /// The pieces of an upload below offset `below` (`None`: all it has) that an older berth
    /// wrote: it recorded no segments in metadata and named each by its start alone, so they
    /// are found by a LIST and laid end to end as that version did. Only an upload begun
    /// before the upgrade gets here (its recorded segments, if any, start above 0). Returns
    /// the pieces and every such object, to delete after a commit.
    async fn legacy_pieces(
        &self,
        dir: &Path,
        below: Option<u64>,
    ) -> Result<(Vec<Piece>, Vec<Path>), StoreError> {
        let objects: Vec<_> = self
            .s3
            .list(Some(dir))
            .try_collect()
            .await
            .map_err(|e| s3_error("LIST", dir, e))?;
        let mut started = false;
        let mut listed = Vec::new();
        for object in objects {
            match object.location.filename() {
                Some(MARKER) => started = true,
                Some(name)
                    if name.len() == SEGMENT_DIGITS && name.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    if let Ok(start) = name.parse() {
                        listed.push(Listed {
                            start,
                            size: object.size,
                            path: object.location,
                        });
                    }
                }
                // Segments of this version (recorded or not), strays: not legacy bytes.
                _ => {}
            }
        }
        if !started {
            return Err(StoreError::NotFound);
        }
        listed.sort_by_key(|s| s.start);
        let (pieces, covered) = lay_out(&listed);
        let pieces = match below {
            Some(below) if covered < below => {
                return Err(StoreError::OffsetMismatch {
                    expected: below,
                    actual: covered,
                })
            }
            Some(below) => take_prefix(pieces, below),
            None => pieces,
        };
        Ok((pieces, listed.into_iter().map(|s| s.path).collect()))
    }

    /// The pieces of upload `dir` that `segments` and `len` name (see
    /// [`Self::recorded_pieces`]), after the bytes of an older berth below the first recorded
    /// segment, if any; and the objects to delete once they are committed (the marker first).
    async fn upload_pieces(
        &self,
        dir: &Path,
        segments: &[Segment],
        len: Option<u64>,
    ) -> Result<(Vec<Piece>, Vec<Path>), StoreError> {
        let recorded = Self::recorded_pieces(dir, segments, len)?;
        let mut done = vec![dir.clone().join(MARKER)];
        done.extend(recorded.iter().map(|p| p.path.clone()));
        let first = segments.first().map(|s| s.start).or(len);
        if first == Some(0) {
            return Ok((recorded, done));
        }
        let (mut pieces, legacy) = self.legacy_pieces(dir, first).await?;
        pieces.extend(recorded);
        done.extend(legacy);
        Ok((pieces, done))
    }

    /// Delete `paths`; an absent object is not an error.
    async fn delete_all(&self, paths: Vec<Path>) -> Result<(), StoreError> {
        if paths.is_empty() {
            return Ok(());
        }
        let first = paths[0].clone();
        let results: Vec<_> = self
            .s3
            .delete_stream(futures::stream::iter(paths.into_iter().map(Ok)).boxed())
            .collect()
            .await;
        for result in results {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(s3_error("DELETE", &first, e)),
            }
        }
        Ok(())
    }

    /// A GET of `range` of an object (`None`: all of it) as a stream of bytes.
    async fn get_range(
        &self,
        path: &Path,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, StoreError> {
        let wanted = range.clone();
        let result = self
            .s3
            .get_opts(
                path,
                GetOptions {
                    range: range.map(Into::into),
                    ..GetOptions::default()
                },
            )
            .await
            .map_err(|e| s3_error("GET", path, e))?;
        if let Some(wanted) = wanted {
            if result.range != wanted {
                // The object is shorter than the caller believes.
                return Err(StoreError::OffsetMismatch {
                    expected: wanted.end,
                    actual: result.meta.size,
                });
            }
        }
        let key = path.clone();
        Ok(result
            .into_stream()
            .map_err(move |e| s3_error("GET", &key, e))
            .boxed())
    }

    /// The bytes of one piece.
    async fn get_piece(&self, piece: &Piece) -> Result<ByteStream, StoreError> {
        self.get_range(&piece.path, piece.len.map(|len| 0..len))
            .await
    }

    /// The bytes of `pieces`, one GET after another, each started only when the previous one
    /// is drained.
    fn stream_pieces(&self, pieces: Vec<Piece>) -> ByteStream {
        let store = self.clone();
        futures::stream::iter(pieces)
            .then(move |piece| {
                let store = store.clone();
                async move { store.get_piece(&piece).await }
            })
            .try_flatten()
            .boxed()
    }
}

/// A segment object of an older berth's upload, found by a LIST.
#[derive(Debug, Clone)]
struct Listed {
    /// The upload offset of the segment's first byte.
    start: u64,
    /// The object's size.
    size: u64,
    path: Path,
}

/// The part of a segment object that belongs to an upload's bytes: its first `len` bytes.
#[derive(Debug, Clone)]
struct Piece {
    path: Path,
    /// How many bytes; `None`: the whole object, whatever its size.
    len: Option<u64>,
    /// Whether the object holds exactly the piece (so it can be copied as it is).
    whole: bool,
}

/// Lay sorted segments end to end: each runs from its start until the next one starts (or to
/// its end). Stops at the first gap. Returns the pieces (empty ones left out) and how many
/// bytes they cover from offset 0.
fn lay_out(segments: &[Listed]) -> (Vec<Piece>, u64) {
    let mut pieces = Vec::new();
    let mut covered = 0u64;
    for (i, s) in segments.iter().enumerate() {
        if s.start != covered {
            break; // a gap: nothing after it is reachable
        }
        let end = s.start + s.size;
        let cut = segments.get(i + 1).map_or(end, |next| next.start.min(end));
        if cut > s.start {
            pieces.push(Piece {
                path: s.path.clone(),
                len: Some(cut - s.start),
                whole: cut == end,
            });
        }
        covered = cut;
    }
    (pieces, covered)
}

/// The first `len` bytes of `pieces` (whose lengths are all known).
fn take_prefix(pieces: Vec<Piece>, len: u64) -> Vec<Piece> {
    let mut left = len;
    let mut out = Vec::new();
    for mut piece in pieces {
        if left == 0 {
            break;
        }
        let have = piece.len.unwrap_or(u64::MAX);
        if have > left {
            piece.len = Some(left);
            piece.whole = false;
        }
        left -= piece.len.unwrap_or(0);
        out.push(piece);
    }
    out
}

/// Map an object_store error on `op` of `key`.
fn s3_error(op: &str, key: &Path, e: object_store::Error) -> StoreError {
    if let object_store::Error::NotFound { .. } = e {
        return StoreError::NotFound;
    }
    let (kind, unavailable) = classify(&e);
    let message = format!("S3 {op} {key}: {e}");
    StoreError::Io(if unavailable {
        std::io::Error::new(kind, BackendUnavailable(message))
    } else {
        std::io::Error::new(kind, message)
    })
}

/// The `io::ErrorKind` of an object_store error, and whether it means S3 is unreachable or
/// overloaded (rather than refusing this request).
fn classify(e: &object_store::Error) -> (std::io::ErrorKind, bool) {
    use std::io::ErrorKind;
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(http) = err.downcast_ref::<HttpError>() {
            return match http.kind() {
                HttpErrorKind::Timeout => (ErrorKind::TimedOut, true),
                HttpErrorKind::Connect => (ErrorKind::NotConnected, true),
                HttpErrorKind::Request | HttpErrorKind::Interrupted => {
                    (ErrorKind::ConnectionAborted, true)
                }
                _ => (ErrorKind::Other, false),
            };
        }
        // object_store keeps the HTTP status in a private type; its message reads
        // "Server returned non-2xx status code: 503 Service Unavailable: …".
        if err.to_string().contains("non-2xx status code: 5") {
            return (ErrorKind::Other, true);
        }
        current = err.source();
    }
    (ErrorKind::Other, false)
}

fn join_error(path: &Path, e: tokio::task::JoinError) -> StoreError {
    StoreError::Io(std::io::Error::other(format!(
        "S3 upload part of {path}: task failed: {e}"
    )))
}

/// Writes one object from a sequence of chunks: a single PUT if it stays within one part,
/// else a multipart upload with [`part_size`]d parts, [`MAX_PARTS_IN_FLIGHT`] of them
/// uploading concurrently. On any error the caller must call [`ObjectWriter::abort`].
struct ObjectWriter {
    s3: Arc<AmazonS3>,
    path: Path,
    /// Frames waiting to become the next part.
    pending: Vec<Bytes>,
    /// Bytes in `pending`.
    pending_len: usize,
    /// Small frames, copied together so that a body of tiny frames does not become millions of
    /// `Bytes`.
    gather: BytesMut,
    /// Bytes handed to parts so far.
    sent: u64,
    upload: Option<Box<dyn MultipartUpload>>,
    in_flight: JoinSet<object_store::Result<()>>,
}

impl ObjectWriter {
    fn new(s3: Arc<AmazonS3>, path: Path) -> Self {
        Self {
            s3,
            path,
            pending: Vec::new(),
            pending_len: 0,
            gather: BytesMut::new(),
            sent: 0,
            upload: None,
            in_flight: JoinSet::new(),
        }
    }

    fn buffered(&self) -> usize {
        self.pending_len + self.gather.len()
    }

    fn stash(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        if chunk.len() < GATHER_BELOW {
            self.gather.extend_from_slice(&chunk);
            if self.gather.len() >= GATHER_SIZE {
                self.flush_gather();
            }
        } else {
            self.flush_gather();
            self.pending_len += chunk.len();
            self.pending.push(chunk);
        }
    }

    fn flush_gather(&mut self) {
        if !self.gather.is_empty() {
            let gathered = std::mem::take(&mut self.gather).freeze();
            self.pending_len += gathered.len();
            self.pending.push(gathered);
        }
    }

    fn take_pending(&mut self) -> (PutPayload, usize) {
        self.flush_gather();
        let len = std::mem::take(&mut self.pending_len);
        (self.pending.drain(..).collect(), len)
    }

    /// Add `chunk`. A part is sent only once more bytes than fit in it have arrived, so the
    /// last part is never empty and a body of exactly one part size is still a single PUT.
    async fn write(&mut self, mut chunk: Bytes) -> Result<(), StoreError> {
        loop {
            let room = part_size(self.sent) - self.buffered();
            if chunk.len() <= room {
                self.stash(chunk);
                return Ok(());
            }
            let head = chunk.split_to(room);
            self.stash(head);
            self.send_part().await?;
        }
    }

    async fn send_part(&mut self) -> Result<(), StoreError> {
        let (payload, len) = self.take_pending();
        if self.upload.is_none() {
            let upload = self
                .s3
                .put_multipart(&self.path)
                .await
                .map_err(|e| s3_error("CreateMultipartUpload", &self.path, e))?;
            self.upload = Some(upload);
        }
        while self.in_flight.len() >= MAX_PARTS_IN_FLIGHT {
            self.join_one().await?;
        }
        let upload = self.upload.as_mut().expect("created above");
        self.in_flight.spawn(upload.put_part(payload));
        self.sent += len as u64;
        Ok(())
    }

    async fn join_one(&mut self) -> Result<(), StoreError> {
        match self.in_flight.join_next().await {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(s3_error("UploadPart", &self.path, e)),
            Some(Err(e)) => Err(join_error(&self.path, e)),
        }
    }

    /// Send what is left and make the object appear. `expected`: the exact length the object
    /// must have; anything else is an error and nothing appears. Returns the length.
    async fn finish(&mut self, expected: Option<u64>) -> Result<u64, StoreError> {
        let (payload, len) = self.take_pending();
        let total = self.sent + len as u64;
        if let Some(expected) = expected {
            if total != expected {
                return Err(StoreError::Io(std::io::Error::other(format!(
                    "S3 write of {}: got {total} bytes, expected {expected}",
                    self.path
                ))));
            }
        }
        if self.upload.is_none() {
            self.s3
                .put(&self.path, payload)
                .await
                .map_err(|e| s3_error("PUT", &self.path, e))?;
            return Ok(total);
        }
        if len > 0 {
            let upload = self.upload.as_mut().expect("checked above");
            self.in_flight.spawn(upload.put_part(payload));
        }
        while !self.in_flight.is_empty() {
            self.join_one().await?;
        }
        let upload = self.upload.as_mut().expect("checked above");
        upload
            .complete()
            .await
            .map_err(|e| s3_error("CompleteMultipartUpload", &self.path, e))?;
        self.upload = None;
        Ok(total)
    }

    /// Give up: stop the parts in flight, so nothing appears, and abort the multipart upload
    /// in the background. The abort only frees the parts' storage (an incomplete multipart
    /// upload is never visible), so the caller's error does not wait for it: when S3 is what
    /// failed, the abort would wait out the same timeouts again.
    async fn abort(&mut self) {
        self.in_flight.shutdown().await;
        if let Some(mut upload) = self.upload.take() {
            let key = self.path.clone();
            tokio::spawn(async move {
                if let Err(e) = upload.abort().await {
                    tracing::warn!(%key, error = %e, "aborting an S3 multipart upload failed");
                }
            });
        }
    }
}

#[async_trait]
impl BlobStore for S3Store {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        let path = self.blob_path(digest);
        match self.s3.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(s3_error("HEAD", &path, e)),
        }
    }

    async fn read(
        &self,
        digest: &Digest,
        offset: u64,
        len: u64,
    ) -> Result<BlobContent, StoreError> {
        let path = self.blob_path(digest);
        if len == 0 {
            // S3 has no empty ranges; still answer NotFound for a missing blob.
            return match self.s3.head(&path).await {
                Ok(meta) if meta.size >= offset => Ok(BlobContent::Bytes(Bytes::new())),
                Ok(meta) => Err(StoreError::OffsetMismatch {
                    expected: offset,
                    actual: meta.size,
                }),
                Err(e) => Err(s3_error("HEAD", &path, e)),
            };
        }
        let stream = self.get_range(&path, Some(offset..offset + len)).await?;
        if len <= SMALL_READ {
            let chunks: Vec<Bytes> = stream.try_collect().await?;
            return Ok(BlobContent::Bytes(chunks.concat().into()));
        }
        Ok(BlobContent::Stream(stream))
    }

    async fn delete(&self, digest: &Digest) -> Result<(), StoreError> {
        let path = self.blob_path(digest);
        match self.s3.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(s3_error("DELETE", &path, e)),
        }
    }

    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<StoredBlob>, StoreError> {
        // Keys sort as digests do (`blobs/<algorithm>/<xx>/<hex>`), so S3's own listing order
        // and its `start-after` give the pages.
        let prefix = self.root.clone().join("blobs");
        let listing = match after {
            Some(d) => self.s3.list_with_offset(Some(&prefix), &self.blob_path(d)),
            None => self.s3.list(Some(&prefix)),
        };
        let mut out = Vec::new();
        let mut listing = listing;
        while let Some(object) = listing.next().await {
            let object = object.map_err(|e| s3_error("LIST", &prefix, e))?;
            let parts: Vec<_> = object.location.parts().collect();
            let n = parts.len();
            if n < 3 {
                continue;
            }
            let Some(digest) = crate::digest_of_key(
                parts[n - 3].as_ref(),
                parts[n - 2].as_ref(),
                parts[n - 1].as_ref(),
            ) else {
                continue;
            };
            out.push(StoredBlob {
                digest,
                size: object.size,
                modified: object.last_modified.into(),
            });
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    async fn quarantine_blob(&self, digest: &Digest, label: &str) -> Result<bool, StoreError> {
        let from = self.blob_path(digest);
        let to = self.quarantine_path(digest, label)?;
        let size = match self.s3.head(&from).await {
            Ok(meta) => meta.size,
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(s3_error("HEAD", &from, e)),
        };
        // A copy first (server-side up to the limit of CopyObject, else streamed), then the
        // delete: a failure in between leaves the blob where it was, and the caller may try
        // again.
        if size <= MAX_COPY {
            match self.s3.copy(&from, &to).await {
                Ok(()) => {}
                Err(object_store::Error::NotFound { .. }) => return Ok(false),
                Err(e) => return Err(s3_error("COPY", &from, e)),
            }
        } else {
            let mut source = self.get_range(&from, None).await?;
            let mut writer = ObjectWriter::new(Arc::clone(&self.s3), to.clone());
            let result = async {
                while let Some(chunk) = source.next().await {
                    writer.write(chunk?).await?;
                }
                writer.finish(Some(size)).await
            }
            .await;
            if let Err(e) = result {
                writer.abort().await;
                return Err(e);
            }
        }
        self.delete(digest).await?;
        Ok(true)
    }

    async fn quarantine_bytes(
        &self,
        digest: &Digest,
        label: &str,
        content: Bytes,
    ) -> Result<(), StoreError> {
        let path = self.quarantine_path(digest, label)?;
        self.s3
            .put(&path, PutPayload::from(content))
            .await
            .map_err(|e| s3_error("PUT", &path, e))?;
        Ok(())
    }

    async fn start_upload(&self, id: &str) -> Result<(), StoreError> {
        let marker = self.upload_dir(id)?.join(MARKER);
        self.s3
            .put(&marker, PutPayload::new())
            .await
            .map_err(|e| s3_error("PUT", &marker, e))?;
        Ok(())
    }

    async fn append(
        &self,
        id: &str,
        offset: u64,
        token: &str,
        mut body: ByteStream,
    ) -> Result<u64, StoreError> {
        // No LIST, no check of what the upload holds: the object is this append's alone, and
        // the metadata store (which the caller consulted) is the truth about the upload.
        let dir = self.upload_dir(id)?;
        let path = Self::segment_path(&dir, offset, token)?;
        let mut writer = ObjectWriter::new(Arc::clone(&self.s3), path);
        let mut written = 0u64;
        let result = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                written += chunk.len() as u64;
                writer.write(chunk).await?;
            }
            if written == 0 {
                return Ok(0); // nothing to keep: no empty segment
            }
            writer.finish(Some(written)).await
        }
        .await;
        if result.is_err() {
            writer.abort().await;
        }
        result
    }

    async fn read_upload(&self, id: &str, segments: &[Segment]) -> Result<BlobContent, StoreError> {
        let dir = self.upload_dir(id)?;
        let (pieces, _) = self.upload_pieces(&dir, segments, None).await?;
        let mut pieces = pieces.into_iter();
        let Some(first) = pieces.next() else {
            return Ok(BlobContent::Bytes(Bytes::new()));
        };
        // The first GET now, so that a missing upload is an error here, not mid-stream.
        let head = self.get_piece(&first).await?;
        Ok(BlobContent::Stream(
            head.chain(self.stream_pieces(pieces.collect())).boxed(),
        ))
    }

    async fn commit_upload(
        &self,
        id: &str,
        digest: &Digest,
        len: u64,
        segments: &[Segment],
    ) -> Result<(), StoreError> {
        let dir = self.upload_dir(id)?;
        // The recorded segments name every object to read: no LIST (unless the upload was
        // begun by an older berth that recorded none).
        let (pieces, done) = self.upload_pieces(&dir, segments, Some(len)).await?;
        let blob = self.blob_path(digest);
        match pieces.as_slice() {
            // One whole object of `len` bytes (metadata says so): copied server-side.
            [one] if one.whole && len <= MAX_COPY => {
                self.s3
                    .copy(&one.path, &blob)
                    .await
                    .map_err(|e| s3_error("COPY", &one.path, e))?;
            }
            _ => {
                let mut writer = ObjectWriter::new(Arc::clone(&self.s3), blob.clone());
                let mut source = self.stream_pieces(pieces);
                let result = async {
                    while let Some(chunk) = source.next().await {
                        writer.write(chunk?).await?;
                    }
                    writer.finish(Some(len)).await
                }
                .await;
                if let Err(e) = result {
                    writer.abort().await;
                    return Err(e);
                }
            }
        }
        // The marker and the recorded segments, in one request. Unrecorded segments of this
        // upload (see the module docs) are not looked for: that would take a LIST.
        if let Err(e) = self.delete_all(done).await {
            tracing::warn!(upload = id, error = %e, "committed, but deleting the upload's objects failed");
        }
        Ok(())
    }

    async fn abort_upload(&self, id: &str) -> Result<(), StoreError> {
        let dir = self.upload_dir(id)?;
        // List without requiring the marker: also sweeps segments that no metadata recorded
        // (late or failed writes) and what a half-done abort left.
        let objects: Vec<_> = self
            .s3
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| s3_error("LIST", &dir, e))?;
        // The marker first, so the session is gone even if deleting its segments fails.
        let marker = dir.clone().join(MARKER);
        match self.s3.delete(&marker).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(s3_error("DELETE", &marker, e)),
        }
        self.delete_all(
            objects
                .into_iter()
                .map(|o| o.location)
                .filter(|p| p.filename() != Some(MARKER))
                .collect(),
        )
        .await
    }

    async fn discard_segment(&self, id: &str, offset: u64, token: &str) -> Result<(), StoreError> {
        let path = Self::segment_path(&self.upload_dir(id)?, offset, token)?;
        self.delete_all(vec![path]).await
    }

    async fn presigned_get(
        &self,
        digest: &Digest,
        expires: Duration,
    ) -> Result<Option<String>, StoreError> {
        let path = self.blob_path(digest);
        let url = self
            .s3
            .signed_url(Method::GET, &path, expires.min(MAX_PRESIGN))
            .await
            .map_err(|e| s3_error("presign GET", &path, e))?;
        Ok(Some(url.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, Hasher};
    use std::time::Instant;

    use super::*;
    use crate::testsuite::collect;

    /// A store on the test S3 server under a fresh random prefix, or `None` (test skipped) if
    /// the environment names no server. With `BERTH_REQUIRE_BACKENDS=1` a missing server fails
    /// the test instead.
    fn test_store(test: &str) -> Option<S3Store> {
        test_store_with(test, std::convert::identity)
    }

    /// [`test_store`], with `finish` given the last word on the client's builder.
    fn test_store_with(
        test: &str,
        finish: impl FnOnce(AmazonS3Builder) -> AmazonS3Builder,
    ) -> Option<S3Store> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let required = [
            "BERTH_TEST_S3_ENDPOINT",
            "BERTH_TEST_S3_BUCKET",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        ];
        let missing: Vec<_> = required.iter().filter(|n| var(n).is_none()).collect();
        if !missing.is_empty() {
            assert!(
                var("BERTH_REQUIRE_BACKENDS").as_deref() != Some("1"),
                "{test}: BERTH_REQUIRE_BACKENDS=1 but {missing:?} unset; start a server with \
                 `eval \"$(scripts/s3-start.sh)\"`"
            );
            eprintln!("{test}: skipped, no S3 server ({missing:?} unset; see scripts/s3-start.sh)");
            return None;
        }
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        );
        h.write_u32(std::process::id());
        let store = S3Store::with_builder(
            S3Config {
                endpoint: var("BERTH_TEST_S3_ENDPOINT"),
                bucket: var("BERTH_TEST_S3_BUCKET").unwrap(),
                region: var("AWS_REGION"),
                prefix: format!("berth-test/{test}-{:016x}", h.finish()),
                request_timeout: Duration::from_secs(30),
                max_retries: 2,
                ..S3Config::default()
            },
            finish,
        )
        .unwrap();
        Some(store)
    }

    /// Every request a store sends, as `METHOD uri`, with ` (copy)` after a `CopyObject`.
    #[derive(Debug, Clone, Default)]
    struct RequestLog(Arc<std::sync::Mutex<Vec<String>>>);

    impl RequestLog {
        /// The requests logged since the last call.
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    /// The HTTP client of a store whose requests go into a [`RequestLog`].
    #[derive(Debug)]
    struct Logged {
        inner: object_store::client::HttpClient,
        log: RequestLog,
    }

    #[async_trait]
    impl object_store::client::HttpService for Logged {
        async fn call(
            &self,
            req: object_store::client::HttpRequest,
        ) -> Result<object_store::client::HttpResponse, HttpError> {
            let copy = if req.headers().contains_key("x-amz-copy-source") {
                " (copy)"
            } else {
                ""
            };
            let line = format!("{} {}{copy}", req.method(), req.uri());
            self.log.0.lock().unwrap().push(line);
            self.inner.execute(req).await
        }
    }

    #[derive(Debug)]
    struct LoggingConnector(RequestLog);

    impl object_store::client::HttpConnector for LoggingConnector {
        fn connect(
            &self,
            options: &ClientOptions,
        ) -> object_store::Result<object_store::client::HttpClient> {
            let inner = object_store::client::ReqwestConnector::default().connect(options)?;
            Ok(object_store::client::HttpClient::new(Logged {
                inner,
                log: self.0.clone(),
            }))
        }
    }

    fn is_list(request: &str) -> bool {
        request.starts_with("GET ") && request.contains("list-type=")
    }

    /// Every key under the store's prefix (relative to it).
    async fn keys(store: &S3Store) -> Vec<String> {
        let root = store.root.to_string();
        let mut keys: Vec<String> = store
            .s3
            .list(Some(&store.root))
            .map_ok(|o| o.location.to_string()[root.len() + 1..].to_string())
            .try_collect()
            .await
            .unwrap();
        keys.sort();
        keys
    }

    /// Remove everything under the store's prefix.
    async fn clean(store: &S3Store) {
        let paths: Vec<Path> = store
            .s3
            .list(Some(&store.root))
            .map_ok(|o| o.location)
            .try_collect()
            .await
            .unwrap();
        store.delete_all(paths).await.unwrap();
    }

    fn body_of(frames: Vec<Bytes>) -> ByteStream {
        Box::pin(futures::stream::iter(frames.into_iter().map(Ok)))
    }

    /// `data` cut into frames of `frame` bytes.
    fn framed(data: &[u8], frame: usize) -> ByteStream {
        let all = Bytes::copy_from_slice(data);
        body_of(
            (0..all.len())
                .step_by(frame)
                .map(|at| all.slice(at..(at + frame).min(all.len())))
                .collect(),
        )
    }

    fn pattern(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    #[test]
    fn part_sizes_fit_s3_limits() {
        const MIB: u64 = 1 << 20;
        const GIB: u64 = 1 << 30;
        assert_eq!(part_size(0), 8 << 20);
        let parts_for = |total: u64| {
            let (mut sent, mut parts) = (0u64, 0u32);
            while sent < total {
                let size = part_size(sent) as u64;
                assert!(size >= MIN_PART as u64, "part below S3's minimum");
                assert!(size <= 5 * GIB, "part above S3's maximum");
                let this = size.min(total - sent);
                sent += this;
                parts += 1;
                // Part sizes never shrink: each part is at least as big as the one before.
                assert!(part_size(sent) as u64 >= size);
            }
            parts
        };
        let p100g = parts_for(100 * GIB);
        let p1t = parts_for(1024 * GIB);
        let p5t = parts_for(5 * 1024 * GIB);
        assert!(p100g < 5_000, "100 GiB: {p100g} parts");
        assert!(p1t < 10_000, "1 TiB: {p1t} parts");
        assert!(p5t < 10_000, "5 TiB (S3's largest object): {p5t} parts");
        assert_eq!(parts_for(8 * MIB), 1);
        assert_eq!(parts_for(8 * MIB + 1), 2);
        // A typical layer uses the smallest parts only.
        assert_eq!(part_size(7 * GIB), 8 << 20);
    }

    #[test]
    fn recorded_segments_make_whole_pieces() {
        let dir = Path::from("uploads/u");
        let segs = [
            Segment::new(0, "a1"),
            Segment::new(5, "b2"),
            Segment::new(7, "c3"),
        ];
        let pieces = S3Store::recorded_pieces(&dir, &segs, Some(17)).unwrap();
        let got: Vec<_> = pieces
            .iter()
            .map(|p| (p.path.filename().unwrap().to_owned(), p.len, p.whole))
            .collect();
        assert_eq!(
            got,
            [
                ("00000000000000000000-a1".to_owned(), Some(5), true),
                ("00000000000000000005-b2".to_owned(), Some(2), true),
                ("00000000000000000007-c3".to_owned(), Some(10), true),
            ]
        );
        // Length unknown (reading back): the last one whole.
        let pieces = S3Store::recorded_pieces(&dir, &segs, None).unwrap();
        assert_eq!(pieces[2].len, None);
        // A length that ends before the last segment starts, starts out of order, and tokens
        // that could leave the upload's prefix are refused.
        assert!(S3Store::recorded_pieces(&dir, &segs, Some(7)).is_err());
        let unordered = [Segment::new(0, "a1"), Segment::new(0, "b2")];
        assert!(S3Store::recorded_pieces(&dir, &unordered, Some(9)).is_err());
        for token in ["", "../x", "a/b", "a-b"] {
            assert!(
                S3Store::recorded_pieces(&dir, &[Segment::new(0, token)], Some(1)).is_err(),
                "{token:?}"
            );
        }
    }

    #[test]
    fn legacy_segments_lay_out_end_to_end() {
        let seg = |start: u64, size: u64| Listed {
            start,
            size,
            path: Path::from(format!("{start:020}")),
        };
        // A later segment cuts the one before it short.
        let (pieces, covered) = lay_out(&[seg(0, 7), seg(5, 2), seg(7, 10)]);
        assert_eq!(covered, 17);
        let lens: Vec<_> = pieces.iter().map(|p| (p.len, p.whole)).collect();
        assert_eq!(lens, [(Some(5), false), (Some(2), true), (Some(10), true)]);
        // A gap ends the upload.
        let (pieces, covered) = lay_out(&[seg(0, 4), seg(6, 3)]);
        assert_eq!((pieces.len(), covered), (1, 4));
        // No segment at 0: nothing.
        assert_eq!(lay_out(&[seg(3, 3)]).1, 0);
        let lens: Vec<_> = take_prefix(lay_out(&[seg(0, 4), seg(4, 4)]).0, 6)
            .iter()
            .map(|p| (p.len, p.whole))
            .collect();
        assert_eq!(lens, [(Some(4), true), (Some(2), false)]);
    }

    #[test]
    fn config_reads_seconds_and_defaults() {
        let cfg: S3Config =
            toml::from_str("bucket = \"b\"\nendpoint = \"http://h:9000\"\nrequest_timeout = 1.5\nconnect_timeout = 2\n")
                .unwrap();
        assert_eq!(cfg.request_timeout, Duration::from_millis(1500));
        assert_eq!(cfg.connect_timeout, Duration::from_secs(2));
        assert_eq!(cfg.max_retries, 3);
        assert!(toml::from_str::<S3Config>("bucket = \"b\"\nnope = 1\n").is_err());
        assert_eq!(toml::from_str::<S3Config>("").unwrap(), S3Config::default());
    }

    #[tokio::test]
    async fn passes_the_backend_testsuite() {
        let Some(store) = test_store("testsuite") else {
            return;
        };
        crate::testsuite::run(&store).await;
        // What committed uploads leave are the segments their metadata never recorded (the
        // testsuite writes some): nothing else, and an abort sweeps those too.
        let left: Vec<String> = keys(&store)
            .await
            .into_iter()
            .filter(|k| k.starts_with("uploads/"))
            .collect();
        assert!(!left.is_empty());
        let mut ids = Vec::new();
        for key in &left {
            let mut parts = key.split('/');
            let (_, id, name) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
            assert_ne!(name, MARKER, "{left:?}");
            assert_eq!(name.as_bytes()[SEGMENT_DIGITS], b'-', "{left:?}");
            ids.push(id.to_owned());
        }
        ids.dedup();
        for id in ids {
            store.abort_upload(&id).await.unwrap();
        }
        assert!(
            keys(&store)
                .await
                .iter()
                .all(|k| !k.starts_with("uploads/")),
            "{:?}",
            keys(&store).await
        );
        clean(&store).await;
    }

    /// The window the old offset-named segments left open: a writer whose lease lapsed while
    /// its PUT was in flight writes at an offset that a newer writer already filled and
    /// recorded. Its write lands on a key of its own, so what commit copies is what metadata
    /// recorded (and hashed).
    #[tokio::test]
    async fn a_late_write_at_a_recorded_offset_changes_nothing() {
        let Some(store) = test_store("late-write") else {
            return;
        };
        // One segment: the commit is a server-side copy.
        store.start_upload("one").await.unwrap();
        store
            .append("one", 0, "a1", framed(b"recorded", 3))
            .await
            .unwrap();
        // The stale writer's PUT completes after the real one: same offset, same length.
        store
            .append("one", 0, "stale1", framed(b"REPLACED", 8))
            .await
            .unwrap();
        let digest = Digest::sha256_of(b"recorded");
        store
            .commit_upload("one", &digest, 8, &[Segment::new(0, "a1")])
            .await
            .unwrap();
        assert_eq!(
            collect(store.read(&digest, 0, 8).await.unwrap()).await,
            b"recorded"
        );

        // Several segments: the commit streams them.
        store.start_upload("many").await.unwrap();
        store
            .append("many", 0, "a1", framed(b"aaaa", 3))
            .await
            .unwrap();
        store
            .append("many", 4, "b2", framed(b"bbbbbb", 1))
            .await
            .unwrap();
        store
            .append("many", 4, "stale2", framed(b"XXXXXXXXXXXX", 5))
            .await
            .unwrap();
        // An offset-named object, as an older berth would have written it: not read either,
        // since the recorded segments start at 0.
        let dir = store.upload_dir("many").unwrap();
        store
            .s3
            .put(
                &dir.clone().join(format!("{:020}", 4)),
                PutPayload::from_static(b"YYYYYY"),
            )
            .await
            .unwrap();
        let recorded = [Segment::new(0, "a1"), Segment::new(4, "b2")];
        assert_eq!(
            collect(store.read_upload("many", &recorded).await.unwrap()).await,
            b"aaaabbbbbb"
        );
        let digest = Digest::sha256_of(b"aaaabbbbbb");
        store
            .commit_upload("many", &digest, 10, &recorded)
            .await
            .unwrap();
        assert_eq!(
            collect(store.read(&digest, 0, 10).await.unwrap()).await,
            b"aaaabbbbbb"
        );
        // The commit removed what it read and the markers, not what no metadata names...
        let mut left = keys(&store).await;
        left.retain(|k| k.starts_with("uploads/"));
        assert_eq!(
            left,
            [
                "uploads/many/00000000000000000004",
                "uploads/many/00000000000000000004-stale2",
                "uploads/one/00000000000000000000-stale1",
            ]
        );
        // ... which an abort sweeps; discarding one segment removes just that one.
        store.discard_segment("one", 0, "stale1").await.unwrap();
        store.abort_upload("many").await.unwrap();
        assert_eq!(keys(&store).await.len(), 2, "{:?}", keys(&store).await);
        clean(&store).await;
    }

    /// Appends and commits take what metadata recorded and never LIST: on S3, a LIST is the
    /// expensive, rate-limited request, and on a small server it walks the bucket.
    #[tokio::test]
    async fn appends_and_commits_make_no_list_request() {
        let log = RequestLog::default();
        let connector = LoggingConnector(log.clone());
        let Some(store) = test_store_with("no-list", |b| b.with_http_connector(connector)) else {
            return;
        };
        let data = pattern(300_000, 9);
        store.start_upload("u").await.unwrap();
        store
            .append("u", 0, "a1", framed(&data[..100_000], 65_536))
            .await
            .unwrap();
        store
            .append("u", 100_000, "b2", framed(&data[100_000..], 65_536))
            .await
            .unwrap();
        let appends = log.take();
        assert!(appends.iter().all(|r| r.starts_with("PUT ")), "{appends:?}");
        assert_eq!(appends.len(), 3, "{appends:?}");

        let recorded = [Segment::new(0, "a1"), Segment::new(100_000, "b2")];
        let digest = Digest::sha256_of(&data);
        store
            .commit_upload("u", &digest, data.len() as u64, &recorded)
            .await
            .unwrap();
        let commit = log.take();
        assert!(!commit.iter().any(|r| is_list(r)), "{commit:?}");
        assert!(!commit.iter().any(|r| r.starts_with("HEAD ")), "{commit:?}");

        // One segment: a copy, and a delete of what the upload kept; nothing else.
        let small = pattern(70_000, 3);
        let small_digest = Digest::sha256_of(&small);
        store.start_upload("single").await.unwrap();
        store
            .append("single", 0, "c3", framed(&small, 4096))
            .await
            .unwrap();
        log.take();
        store
            .commit_upload(
                "single",
                &small_digest,
                small.len() as u64,
                &[Segment::new(0, "c3")],
            )
            .await
            .unwrap();
        let commit = log.take();
        assert_eq!(commit.len(), 2, "{commit:?}");
        assert!(
            commit[0].starts_with("PUT ") && commit[0].ends_with(" (copy)"),
            "{commit:?}"
        );
        assert!(
            commit[1].starts_with("POST ") && commit[1].contains("delete"),
            "{commit:?}"
        );

        assert!(collect(store.read(&digest, 0, data.len() as u64).await.unwrap()).await == data);
        let mut left = keys(&store).await;
        left.retain(|k| k.starts_with("uploads/"));
        assert!(left.is_empty(), "{left:?}");
        // The log sees LISTs: the check above would catch one.
        store.abort_upload("gone").await.unwrap();
        assert!(log.take().iter().any(|r| is_list(r)));
        clean(&store).await;
    }

    /// An upload begun by an older berth has offset-named segments that metadata never
    /// recorded: they are found by a LIST and come before the recorded ones.
    #[tokio::test]
    async fn uploads_begun_before_the_upgrade_still_commit() {
        let Some(store) = test_store("legacy") else {
            return;
        };
        store.start_upload("old").await.unwrap();
        let dir = store.upload_dir("old").unwrap();
        for (start, bytes) in [(0u64, &b"aaaa"[..]), (4, b"bbbbXX"), (10, b"junk")] {
            store
                .s3
                .put(
                    &dir.clone().join(format!("{start:020}")),
                    PutPayload::from(bytes.to_vec()),
                )
                .await
                .unwrap();
        }
        // The older berth recorded offset 8; this one appends the rest.
        store
            .append("old", 8, "n1", framed(b"cc", 1))
            .await
            .unwrap();
        let recorded = [Segment::new(8, "n1")];
        assert_eq!(
            collect(store.read_upload("old", &recorded).await.unwrap()).await,
            b"aaaabbbbcc"
        );
        let digest = Digest::sha256_of(b"aaaabbbbcc");
        store
            .commit_upload("old", &digest, 10, &recorded)
            .await
            .unwrap();
        assert_eq!(
            collect(store.read(&digest, 0, 10).await.unwrap()).await,
            b"aaaabbbbcc"
        );
        assert_eq!(keys(&store).await.len(), 1, "{:?}", keys(&store).await);

        // Nothing recorded yet: the old segments alone.
        store.start_upload("older").await.unwrap();
        let dir = store.upload_dir("older").unwrap();
        store
            .s3
            .put(
                &dir.clone().join(format!("{:020}", 0)),
                PutPayload::from_static(b"abc"),
            )
            .await
            .unwrap();
        assert_eq!(
            collect(store.read_upload("older", &[]).await.unwrap()).await,
            b"abc"
        );
        // Fewer bytes than the older berth recorded: refused.
        assert!(matches!(
            store
                .commit_upload("older", &Digest::sha256_of(b"abcd"), 4, &[])
                .await,
            Err(StoreError::OffsetMismatch {
                expected: 4,
                actual: 3
            })
        ));
        let digest = Digest::sha256_of(b"abc");
        store.commit_upload("older", &digest, 3, &[]).await.unwrap();
        assert_eq!(store.stat(&digest).await.unwrap(), Some(3));
        clean(&store).await;
    }

    #[tokio::test]
    async fn large_appends_and_multi_segment_commits() {
        let Some(store) = test_store("multipart") else {
            return;
        };
        let id = "multipart";
        // 19 MiB + 5: three parts of a multipart append (8 + 8 + 3 MiB + 5).
        let data = pattern((19 << 20) + 5, 7);
        let digest = Digest::sha256_of(&data);
        store.start_upload(id).await.unwrap();
        let head = 300_001;
        assert_eq!(
            store
                .append(id, 0, "h1", framed(&data[..head], 4096))
                .await
                .unwrap(),
            head as u64
        );
        // A multipart append whose body breaks after two parts went up leaves nothing.
        let mut frames: Vec<Result<Bytes, StoreError>> = (head..head + (17 << 20))
            .step_by(1 << 20)
            .map(|at| Ok(Bytes::copy_from_slice(&data[at..at + (1 << 20)])))
            .collect();
        frames.push(Err(StoreError::Body("client went away".into())));
        let broken: ByteStream = Box::pin(futures::stream::iter(frames));
        assert!(matches!(
            store.append(id, head as u64, "broken", broken).await,
            Err(StoreError::Body(_))
        ));
        assert_eq!(keys(&store).await.len(), 2, "{:?}", keys(&store).await);
        let n = store
            .append(id, head as u64, "t2", framed(&data[head..], 65_536 + 3))
            .await
            .unwrap();
        assert_eq!(n, (data.len() - head) as u64);
        let recorded = [Segment::new(0, "h1"), Segment::new(head as u64, "t2")];
        let got = collect(store.read_upload(id, &recorded).await.unwrap()).await;
        assert!(got == data, "upload bytes differ");
        // S3 names a multipart object's ETag "<md5 of the part md5s>-<parts>": the second
        // segment went up in three parts (8 + 8 + 2.7 MiB), the first in one PUT.
        let etag = |key: Path| {
            let s3 = Arc::clone(&store.s3);
            async move { s3.head(&key).await.unwrap().e_tag.unwrap_or_default() }
        };
        let dir = store.upload_dir(id).unwrap();
        assert!(etag(dir.clone().join(format!("{head:020}-t2")))
            .await
            .ends_with("-3\""));
        assert!(!etag(dir.join(format!("{:020}-h1", 0))).await.contains('-'));
        // Two segments: the commit streams them into a multipart upload at the blob key.
        store
            .commit_upload(id, &digest, data.len() as u64, &recorded)
            .await
            .unwrap();
        assert_eq!(store.stat(&digest).await.unwrap(), Some(data.len() as u64));
        assert!(etag(store.blob_path(&digest)).await.ends_with("-3\""));
        let content = store.read(&digest, 0, data.len() as u64).await.unwrap();
        assert!(matches!(content, BlobContent::Stream(_)));
        assert!(collect(content).await == data, "blob bytes differ");
        let mid = collect(store.read(&digest, (8 << 20) - 10, 1000).await.unwrap()).await;
        assert!(mid == data[(8 << 20) - 10..(8 << 20) + 990]);
        // A range past the end is refused, not cut short.
        assert!(matches!(
            store.read(&digest, data.len() as u64 - 10, 20).await,
            Err(StoreError::OffsetMismatch { .. })
        ));
        // A recorded segment shorter than metadata claims fails a streamed commit, and
        // nothing appears at the blob key.
        store.start_upload("short").await.unwrap();
        store
            .append("short", 0, "s1", framed(b"0123", 4))
            .await
            .unwrap();
        store
            .append("short", 4, "s2", framed(b"4567", 4))
            .await
            .unwrap();
        let wrong = Digest::sha256_of(b"0123456789");
        assert!(matches!(
            store
                .commit_upload(
                    "short",
                    &wrong,
                    10,
                    &[Segment::new(0, "s1"), Segment::new(4, "s2")]
                )
                .await,
            Err(StoreError::OffsetMismatch { .. })
        ));
        assert!(store.stat(&wrong).await.unwrap().is_none());
        store.abort_upload("short").await.unwrap();

        let mut left = keys(&store).await;
        left.retain(|k| k.starts_with("uploads/"));
        assert!(left.is_empty(), "{left:?}");
        clean(&store).await;
    }

    #[tokio::test]
    async fn presigned_urls_serve_the_blob() {
        let Some(store) = test_store("presign") else {
            return;
        };
        let data = pattern(100_000, 11);
        let digest = Digest::sha256_of(&data);
        store.start_upload("p").await.unwrap();
        store
            .append("p", 0, "p1", framed(&data, 8192))
            .await
            .unwrap();
        store
            .commit_upload("p", &digest, data.len() as u64, &[Segment::new(0, "p1")])
            .await
            .unwrap();
        let url = store
            .presigned_get(&digest, Duration::from_secs(60))
            .await
            .unwrap()
            .expect("S3 makes presigned URLs");
        let response = reqwest::get(&url).await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        assert!(response.bytes().await.unwrap() == data);
        // The signature covers the key: another key with the same query fails.
        let other = url.replace(digest.hex(), &"0".repeat(64));
        assert!(!reqwest::get(&other).await.unwrap().status().is_success());
        clean(&store).await;
    }

    #[tokio::test]
    async fn the_default_backend_has_no_urls() {
        let dir = tempfile::tempdir().unwrap();
        let fs = crate::fs::FsStore::open(dir.path(), crate::fs::SyncMode::Relaxed).unwrap();
        let digest = Digest::sha256_of(b"x");
        assert!(fs
            .presigned_get(&digest, Duration::from_secs(1))
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn a_stalled_server_fails_in_bounded_time() {
        // Accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut sockets = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                sockets.push(socket);
            }
        });
        let store = S3Store::new(S3Config {
            endpoint: Some(format!("http://{addr}")),
            bucket: "stalled".into(),
            region: Some("us-east-1".into()),
            access_key_id: Some("key".into()),
            secret_access_key: Some("secret".into()),
            request_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(500),
            max_retries: 1,
            ..S3Config::default()
        })
        .unwrap();
        let digest = Digest::sha256_of(b"x");
        let started = Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(20), store.stat(&digest))
            .await
            .expect("stat hung on a stalled server");
        let took = started.elapsed();
        let err = result.expect_err("a stalled server cannot answer");
        assert!(err.is_unavailable(), "{err}");
        assert!(err.to_string().contains("HEAD"), "{err}");
        // Two attempts of 0.5 s plus backoff; generous for a loaded machine.
        assert!(took < Duration::from_secs(8), "took {took:?}");
        assert!(
            took >= Duration::from_millis(900),
            "took {took:?}: did it retry?"
        );

        // Nothing listening at all: a connect error, also "unavailable".
        drop(held);
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let store = S3Store::new(S3Config {
            endpoint: Some(format!("http://{addr}")),
            bucket: "gone".into(),
            access_key_id: Some("key".into()),
            secret_access_key: Some("secret".into()),
            request_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(500),
            max_retries: 0,
            ..S3Config::default()
        })
        .unwrap();
        let err = store.read(&digest, 0, 1).await.err().unwrap();
        assert!(err.is_unavailable(), "{err}");
    }

    /// A store whose server answers every request with `status` (and closes the connection).
    async fn store_answering(status: &'static str) -> S3Store {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let reply = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = socket.write_all(reply.as_bytes()).await;
                });
            }
        });
        S3Store::new(S3Config {
            endpoint: Some(format!("http://{addr}")),
            bucket: "b".into(),
            access_key_id: Some("key".into()),
            secret_access_key: Some("secret".into()),
            request_timeout: Duration::from_secs(5),
            max_retries: 1,
            ..S3Config::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn server_errors_are_unavailable_and_refusals_are_not() {
        let digest = Digest::sha256_of(b"x");
        let err = store_answering("503 Service Unavailable")
            .await
            .stat(&digest)
            .await
            .unwrap_err();
        assert!(err.is_unavailable(), "{err}");
        let err = store_answering("403 Forbidden")
            .await
            .stat(&digest)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Io(_)) && !err.is_unavailable(),
            "{err}"
        );
        assert!(err.to_string().contains("HEAD"), "{err}");
        assert!(matches!(
            store_answering("404 Not Found")
                .await
                .read(&digest, 0, 1)
                .await,
            Err(StoreError::NotFound)
        ));
    }

    #[test]
    fn bad_configuration_is_an_error() {
        let cfg = |prefix: &str| S3Config {
            endpoint: Some("http://127.0.0.1:1".into()),
            bucket: "b".into(),
            prefix: prefix.into(),
            access_key_id: Some("k".into()),
            secret_access_key: Some("s".into()),
            ..S3Config::default()
        };
        assert!(S3Store::new(cfg("ok/prefix/")).is_ok());
        assert!(S3Store::new(cfg("a//b")).is_err());
        assert!(S3Store::new(cfg("a/../b")).is_err());
        let store = S3Store::new(cfg("/p/")).unwrap();
        assert!(matches!(
            store.upload_dir("../x"),
            Err(StoreError::NotFound)
        ));
        assert_eq!(
            store.blob_path(&Digest::sha256_of(b"")).to_string(),
            "p/blobs/sha256/e3/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
