//! Blob uploads: monolithic, chunked and resumable. Bytes are hashed as they stream into the
//! store; the hash state is saved with the session after every chunk, so an upload resumes on
//! any instance, and after a restart, without re-reading what it already holds.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_meta::{MetaError, Upload, UploadSegment};
use berth_oci::{Digest, DigestAlgorithm, Hasher, RepoName};
use berth_store::{BlobContent, ByteStream, Segment, StoreError};
use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::access::{Actor, RepoActions};
use crate::upload_lease::{lost_error, HeldLease};
use crate::{Error, Registry};

/// Where an upload session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadState {
    /// The session id.
    pub id: String,
    /// How many bytes it holds.
    pub offset: u64,
}

/// What the request says about its body's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// `Content-Length` was given: the body must have exactly this many bytes.
    Exact(u64),
    /// No `Content-Length` (chunked transfer encoding): whatever arrives.
    Unknown,
}

/// A body stream that hashes what passes and enforces the declared length. A length error is
/// raised as a stream error, so the store rolls the chunk back.
struct Hashing {
    inner: ByteStream,
    hasher: Arc<Mutex<Option<Hasher>>>,
    seen: u64,
    expect: BodyLength,
    done: bool,
}

impl Stream for Hashing {
    type Item = Result<Bytes, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.seen += chunk.len() as u64;
                if let BodyLength::Exact(n) = self.expect {
                    if self.seen > n {
                        self.done = true;
                        return Poll::Ready(Some(Err(StoreError::Body(format!(
                            "body is longer than its declared {n} bytes"
                        )))));
                    }
                }
                if let Some(h) = self.hasher.lock().expect("hasher lock").as_mut() {
                    h.update(&chunk);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => {
                self.done = true;
                match self.expect {
                    BodyLength::Exact(n) if self.seen != n => {
                        Poll::Ready(Some(Err(StoreError::Body(format!(
                            "body ended after {} of its declared {n} bytes",
                            self.seen
                        )))))
                    }
                    _ => Poll::Ready(None),
                }
            }
            other => other,
        }
    }
}

/// Run `work` on its own task and wait for it. If the request that started it is dropped (the
/// client hung up), the work still runs to the end, so an upload's lock is never released
/// while its writer thread or metadata update is still in flight, and a failed push still
/// cleans up after itself.
async fn to_completion<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    tokio::spawn(work)
        .await
        .map_err(|e| Error::Internal(format!("upload task failed: {e}")))?
}

/// A fresh token for one append: 12 hex digits (48 random bits) of a v4 uuid. With the
/// offset it names the segment the append writes, so two appends never write the same one.
fn segment_token() -> String {
    let mut token = uuid::Uuid::new_v4().simple().to_string();
    // The first 12 digits are random (the version digit comes after them).
    token.truncate(12);
    token
}

/// The segments of an upload as the blob store takes them.
fn store_segments(segments: &[UploadSegment]) -> Vec<Segment> {
    segments
        .iter()
        .map(|s| Segment::new(s.start, s.token.clone()))
        .collect()
}

/// How long [`Registry::discard_later`] keeps trying.
const DISCARD_FOR: Duration = Duration::from_secs(600);

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// One lock per upload session in flight, so two requests on the same upload never append
/// at once, while requests on different uploads never wait for each other. Entries are
/// removed when their last holder lets go.
#[derive(Clone, Default)]
pub(crate) struct UploadLocks(Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>);

/// Holds one upload's lock; dropping it releases the lock and forgets unused entries.
pub(crate) struct UploadGuard {
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    lock: Arc<tokio::sync::Mutex<()>>,
    id: String,
    locks: UploadLocks,
}

impl UploadLocks {
    pub(crate) async fn lock(&self, id: &str) -> UploadGuard {
        let lock = self
            .0
            .lock()
            .expect("upload lock map")
            .entry(id.to_owned())
            .or_default()
            .clone();
        let guard = lock.clone().lock_owned().await;
        UploadGuard {
            guard: Some(guard),
            lock,
            id: id.to_owned(),
            locks: self.clone(),
        }
    }

    /// The lock of `id` if nobody holds it now.
    pub(crate) fn try_lock(&self, id: &str) -> Option<UploadGuard> {
        let mut map = self.0.lock().expect("upload lock map");
        let lock = map.entry(id.to_owned()).or_default().clone();
        match lock.clone().try_lock_owned() {
            Ok(guard) => Some(UploadGuard {
                guard: Some(guard),
                lock,
                id: id.to_owned(),
                locks: self.clone(),
            }),
            // Someone holds it, so the entry stays until they let go (their guard's drop
            // waits for the map lock held here, and then sees our clone gone).
            Err(_) => None,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().expect("upload lock map").len()
    }
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.locks.0.lock().expect("upload lock map");
        // Clones are only made under the map lock, so two holders (the map and us) means
        // nobody else is waiting.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.id);
        }
    }
}

/// Counts request bodies streaming in, for the `berth_uploads_in_progress` gauge.
struct InFlight;

impl InFlight {
    fn new() -> Self {
        metrics::gauge!("berth_uploads_in_progress").increment(1.0);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("berth_uploads_in_progress").decrement(1.0);
    }
}

impl Registry {
    /// Stream `body` into upload `id` at `offset` as the segment named `token`, hashing it
    /// into `hasher`. Returns the bytes appended and the hasher after them. Under a `lease`,
    /// the chunk is dropped if the lease is lost before the store keeps it.
    #[allow(clippy::too_many_arguments)]
    async fn append_hashed(
        &self,
        id: &str,
        offset: u64,
        token: &str,
        hasher: Hasher,
        body: ByteStream,
        expect: BodyLength,
        lease: Option<&HeldLease>,
    ) -> Result<(u64, Hasher), Error> {
        let _in_flight = InFlight::new();
        let shared = Arc::new(Mutex::new(Some(hasher)));
        let stream: ByteStream = Box::pin(Hashing {
            inner: body,
            hasher: shared.clone(),
            seen: 0,
            expect,
            done: false,
        });
        let stream = match lease {
            Some(l) => l.guard(stream),
            None => stream,
        };
        let written = match self.store.append(id, offset, token, stream).await {
            Ok(n) => n,
            Err(_) if lease.is_some_and(HeldLease::is_lost) => return Err(lost_error()),
            Err(e) => return Err(e.into()),
        };
        metrics::counter!("berth_blob_bytes_received_total").increment(written);
        let hasher = shared
            .lock()
            .expect("hasher lock")
            .take()
            .expect("the hasher is only taken here");
        Ok((written, hasher))
    }

    /// Hash the first `u.offset` bytes of upload `u` again (when no usable hash state was
    /// saved, or the client's digest uses another algorithm than the session hashed with).
    async fn rehash(&self, u: &Upload, algorithm: DigestAlgorithm) -> Result<Hasher, Error> {
        let (id, len) = (u.id.as_str(), u.offset);
        if len == 0 {
            return Ok(algorithm.hasher());
        }
        let segments = store_segments(&u.segments);
        let content = match self.store.read_upload(id, &segments).await? {
            // Never map past the end of the file: a shorter file than recorded is an error,
            // not a SIGBUS.
            BlobContent::File { len: actual, .. } if actual < len => {
                return Err(Error::Internal(format!(
                    "upload {id} holds {actual} bytes, fewer than the {len} recorded"
                )))
            }
            BlobContent::File { file, offset, .. } => BlobContent::File { file, offset, len },
            other => other,
        };
        let mut hasher = algorithm.hasher();
        let mut stream = content.into_stream()?;
        let mut left = len;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            let take = (chunk.len() as u64).min(left) as usize;
            hasher.update(&chunk[..take]);
            left -= take as u64;
            if left == 0 {
                break;
            }
        }
        if left > 0 {
            return Err(Error::Internal(format!(
                "upload {id} holds fewer bytes than recorded"
            )));
        }
        Ok(hasher)
    }

    /// Open an upload session in `repo`.
    ///
    /// # Errors
    /// Backend errors.
    #[tracing::instrument(skip(self))]
    pub async fn start_upload(&self, actor: &Actor, repo: &RepoName) -> Result<UploadState, Error> {
        actor.require(repo, RepoActions::PUSH)?;
        self.ensure_project(actor, repo).await?;
        let id = uuid::Uuid::new_v4().to_string();
        self.store.start_upload(&id).await?;
        let algorithm = DigestAlgorithm::Sha256;
        let upload = Upload {
            id: id.clone(),
            repo: repo.clone(),
            offset: 0,
            algorithm,
            hash_state: Some(algorithm.hasher().save()),
            segments: Vec::new(),
            created_at: now(),
            updated_at: now(),
        };
        if let Err(e) = self.meta.create_upload(&upload).await {
            let _ = self.store.abort_upload(&id).await;
            return Err(e.into());
        }
        Ok(UploadState { id, offset: 0 })
    }

    /// Upload a whole blob in one request (`POST ?digest=`, or `PUT` on a fresh session).
    /// Returns its size. Nothing is kept unless the bytes match `digest`.
    ///
    /// # Errors
    /// [`Error::DigestMismatch`], [`Error::SizeInvalid`], backend errors.
    #[tracing::instrument(skip(self, body))]
    pub async fn upload_blob(
        &self,
        actor: &Actor,
        repo: &RepoName,
        digest: &Digest,
        body: ByteStream,
        len: BodyLength,
    ) -> Result<u64, Error> {
        actor.require(repo, RepoActions::PUSH)?;
        self.ensure_project(actor, repo).await?;
        self.check_upload_quota(repo, Some(digest), 0, len).await?;
        // One request: no session row needed. A crash leaves only an orphan upload object.
        let (this, repo, digest) = (self.clone(), repo.clone(), digest.clone());
        to_completion(async move {
            let id = uuid::Uuid::new_v4().to_string();
            this.store.start_upload(&id).await?;
            let result = async {
                // The id is this request's alone (no session row exists): no lease needed,
                // and the one segment it writes is known right here.
                let token = segment_token();
                let (size, hasher) = this
                    .append_hashed(&id, 0, &token, digest.algorithm().hasher(), body, len, None)
                    .await?;
                let segments = if size > 0 {
                    vec![Segment::new(0, token)]
                } else {
                    Vec::new()
                };
                this.commit(&repo, &id, &digest, hasher.finish(), size, &segments)
                    .await?;
                Ok(size)
            }
            .await;
            match &result {
                Ok(_) => {}
                Err(Error::Unavailable { .. }) => this.discard_later(id),
                Err(_) => {
                    let _ = this.store.abort_upload(&id).await;
                }
            }
            result
        })
        .await
    }

    /// Remove the objects of a push that failed because blob storage is unavailable, in the
    /// background: trying now would hold the client's 503 up by the same timeouts that
    /// failed the push. Tries again with growing pauses for about ten minutes, so a brief
    /// outage leaves nothing behind; what a longer one leaves is never read as blob bytes.
    fn discard_later(&self, id: String) {
        let store = Arc::clone(&self.store);
        tokio::spawn(async move {
            let mut pause = Duration::from_secs(1);
            let mut waited = Duration::ZERO;
            loop {
                tokio::time::sleep(pause).await;
                waited += pause;
                match store.abort_upload(&id).await {
                    Ok(()) => {
                        tracing::debug!(upload = %id, "removed the objects of a failed push");
                        return;
                    }
                    Err(e) if e.is_unavailable() && waited < DISCARD_FOR => {
                        tracing::debug!(upload = %id, error = %e, "blob storage still unavailable");
                        pause = (pause * 2).min(Duration::from_secs(60));
                    }
                    Err(e) => {
                        tracing::warn!(upload = %id, error = %e, "could not remove the objects of a failed push; they stay in storage");
                        return;
                    }
                }
            }
        });
    }

    /// Remove the segment of an append that metadata refused to record, in the background
    /// (best effort: what stays is never read, and an abort or expiry of the upload sweeps
    /// it).
    fn discard_segment_later(&self, id: &str, segment: UploadSegment) {
        let store = Arc::clone(&self.store);
        let id = id.to_owned();
        tokio::spawn(async move {
            if let Err(e) = store
                .discard_segment(&id, segment.start, &segment.token)
                .await
            {
                tracing::debug!(upload = %id, error = %e, "could not remove an unrecorded segment");
            }
        });
    }

    /// Verify `actual` against `expected`, then make the blob visible (from the upload's
    /// recorded `segments`) and link it into `repo`.
    async fn commit(
        &self,
        repo: &RepoName,
        id: &str,
        expected: &Digest,
        actual: Digest,
        size: u64,
        segments: &[Segment],
    ) -> Result<(), Error> {
        if &actual != expected {
            return Err(Error::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        // Keep garbage collection off this digest until it is linked (and wait if GC is
        // deleting an old copy of it right now).
        self.reserve_blob(expected, size).await?;
        // Bytes first, then metadata: the metadata never names a blob storage lacks.
        match self.store.commit_upload(id, expected, size, segments).await {
            Ok(()) => {}
            // A retry after the rename succeeded but the link failed: the blob is there.
            Err(berth_store::StoreError::NotFound)
                if self.store.stat(expected).await? == Some(size) => {}
            Err(e) => return Err(e.into()),
        }
        match self.meta.link_blob(repo, expected, size).await {
            Ok(()) => {}
            // Reserved a moment ago, so only a grace period shorter than this push could let
            // garbage collection take it; the bytes may be gone, so the client must push again.
            Err(MetaError::Conflict) => {
                return Err(Error::UploadBusy(
                    "garbage collection removed this blob while it was pushed; push it again"
                        .into(),
                ))
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(repo = %repo, digest = %expected, size, "blob pushed");
        Ok(())
    }

    /// [`berth_meta::MetaStore::reserve_blob`], waiting (up to 30 s) while garbage collection
    /// deletes an old copy of the digest.
    async fn reserve_blob(&self, digest: &Digest, size: u64) -> Result<(), Error> {
        let mut pause = Duration::from_millis(20);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if self.meta.reserve_blob(digest, size).await? {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::UploadBusy(
                    "garbage collection is deleting this blob; retry the push shortly".into(),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    async fn session(&self, repo: &RepoName, id: &str) -> Result<Upload, Error> {
        self.meta
            .upload(repo, id)
            .await?
            .ok_or(Error::UploadUnknown)
    }

    /// Where upload `id` stands.
    ///
    /// # Errors
    /// [`Error::UploadUnknown`].
    pub async fn upload_status(
        &self,
        actor: &Actor,
        repo: &RepoName,
        id: &str,
    ) -> Result<UploadState, Error> {
        actor.require(repo, RepoActions::PUSH)?;
        let u = self.session(repo, id).await?;
        Ok(UploadState {
            id: u.id,
            offset: u.offset,
        })
    }

    /// Take upload `id`'s lease when leases are on (the caller holds its in-process lock).
    async fn lease(&self, id: &str) -> Result<Option<HeldLease>, Error> {
        match &self.leases {
            Some(cfg) => Ok(Some(
                HeldLease::acquire(&self.meta, id, &self.instance, cfg).await?,
            )),
            None => Ok(None),
        }
    }

    /// Run `work` on upload `id` holding its in-process lock and, when leases are on, its
    /// lease, which is given back afterwards.
    async fn with_upload<T>(
        &self,
        id: &str,
        work: impl AsyncFnOnce(Option<&HeldLease>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let _guard = self.upload_locks.lock(id).await;
        let lease = self.lease(id).await?;
        let result = work(lease.as_ref()).await;
        if let Some(lease) = lease {
            lease.release().await;
        }
        result
    }

    /// Append a chunk to `u`, which the caller holds the lock (and lease) of; returns the new
    /// session.
    async fn append_to(
        &self,
        mut u: Upload,
        range: Option<(u64, u64)>,
        body: ByteStream,
        len: BodyLength,
        lease: Option<&HeldLease>,
    ) -> Result<Upload, Error> {
        let expect = match (range, len) {
            (Some((start, _)), _) if start != u.offset => {
                return Err(Error::ChunkOutOfOrder { offset: u.offset })
            }
            (Some((start, end)), len) => {
                // end >= start is guaranteed by the parser; the +1 can still overflow.
                let span = (end - start).checked_add(1).ok_or_else(|| {
                    Error::SizeInvalid(format!("Content-Range {start}-{end} is too large"))
                })?;
                if matches!(len, BodyLength::Exact(n) if n != span) {
                    return Err(Error::SizeInvalid(format!(
                        "Content-Length does not match Content-Range {start}-{end}"
                    )));
                }
                BodyLength::Exact(span)
            }
            (None, len) => len,
        };
        self.check_upload_quota(&u.repo, None, u.offset, expect)
            .await?;
        let hasher = match u
            .hash_state
            .as_deref()
            .and_then(|s| Hasher::restore(u.algorithm, s))
        {
            Some(h) => h,
            None => self.rehash(&u, u.algorithm).await?,
        };
        let from = u.offset;
        let segment = UploadSegment {
            start: from,
            token: segment_token(),
        };
        let (written, hasher) = self
            .append_hashed(&u.id, from, &segment.token, hasher, body, expect, lease)
            .await?;
        if written > 0 {
            u.offset += written;
            u.hash_state = Some(hasher.save());
            // Fenced by the lease: a request that lost it cannot record its chunk. The
            // segment is recorded in the same step, so the store reads exactly this append's
            // object for these bytes, whatever another writer stored at the same offset.
            match self
                .meta
                .advance_upload(&u, &segment, lease.map(HeldLease::holder))
                .await
            {
                Ok(()) => u.segments.push(segment),
                Err(e) => {
                    if matches!(e, MetaError::Conflict) {
                        // Refused for certain: nothing will ever read this segment.
                        self.discard_segment_later(&u.id, segment);
                    }
                    if lease.is_some_and(HeldLease::is_lost) {
                        return Err(lost_error());
                    }
                    return Err(e.into());
                }
            }
        }
        Ok(u)
    }

    /// Append a chunk (`PATCH`). With a `Content-Range`, the chunk must start where the
    /// upload ends.
    ///
    /// # Errors
    /// [`Error::UploadUnknown`], [`Error::ChunkOutOfOrder`], [`Error::SizeInvalid`].
    #[tracing::instrument(skip(self, body))]
    pub async fn append_chunk(
        &self,
        actor: &Actor,
        repo: &RepoName,
        id: &str,
        range: Option<(u64, u64)>,
        body: ByteStream,
        len: BodyLength,
    ) -> Result<UploadState, Error> {
        actor.require(repo, RepoActions::PUSH)?;
        let (this, repo, id) = (self.clone(), repo.clone(), id.to_owned());
        to_completion(async move {
            this.with_upload(&id, async |lease| {
                let u = this.session(&repo, &id).await?;
                let u = this.append_to(u, range, body, len, lease).await?;
                Ok(UploadState {
                    id: u.id,
                    offset: u.offset,
                })
            })
            .await
        })
        .await
    }

    /// Finish an upload (`PUT ?digest=`), with an optional last chunk. Returns the blob's
    /// size. On a digest mismatch the session is discarded: nothing is kept.
    ///
    /// # Errors
    /// [`Error::UploadUnknown`], [`Error::DigestMismatch`], [`Error::SizeInvalid`].
    #[tracing::instrument(skip(self, body))]
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_upload(
        &self,
        actor: &Actor,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        range: Option<(u64, u64)>,
        body: Option<ByteStream>,
        len: BodyLength,
    ) -> Result<u64, Error> {
        actor.require(repo, RepoActions::PUSH)?;
        let (this, repo, id, digest) = (self.clone(), repo.clone(), id.to_owned(), digest.clone());
        to_completion(async move {
            this.with_upload(&id, async |lease| {
                this.finish_leased(&repo, &id, &digest, range, body, len, lease)
                    .await
            })
            .await
        })
        .await
    }

    /// [`Self::finish_upload`], holding the upload's lock (and lease).
    #[allow(clippy::too_many_arguments)]
    async fn finish_leased(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        range: Option<(u64, u64)>,
        body: Option<ByteStream>,
        len: BodyLength,
        lease: Option<&HeldLease>,
    ) -> Result<u64, Error> {
        let mut u = self.session(repo, id).await?;
        if let Some(body) = body {
            u = self.append_to(u, range, body, len, lease).await?;
        }
        let restored = u
            .hash_state
            .as_deref()
            .filter(|_| u.algorithm == digest.algorithm())
            .and_then(|s| Hasher::restore(u.algorithm, s));
        let hasher = match restored {
            Some(h) => h,
            None => self.rehash(&u, digest.algorithm()).await?,
        };
        // Never commit under a lease that is gone: another request may be changing the
        // upload.
        if lease.is_some_and(HeldLease::is_lost) {
            return Err(lost_error());
        }
        let segments = store_segments(&u.segments);
        let result = self
            .commit(repo, &u.id, digest, hasher.finish(), u.offset, &segments)
            .await;
        match &result {
            Ok(()) => {
                // The blob is in; a stale session row is harmless, so don't fail the push.
                if let Err(e) = self.meta.delete_upload(&u.id).await {
                    tracing::warn!(upload = %u.id, error = %e, "could not forget a finished upload");
                }
            }
            Err(Error::DigestMismatch { .. }) => {
                let _ = self.store.abort_upload(&u.id).await;
                self.meta.delete_upload(&u.id).await?;
            }
            Err(_) => {}
        }
        result.map(|()| u.offset)
    }

    /// Forget upload `u`, listed as idle since before `idle_since` (seconds since the Unix
    /// epoch), and discard its bytes, unless a request is working on it or it advanced since.
    /// Returns whether it was expired.
    pub(crate) async fn expire_upload(&self, u: &Upload, idle_since: i64) -> Result<bool, Error> {
        let Some(_guard) = self.upload_locks.try_lock(&u.id) else {
            return Ok(false);
        };
        // In a fleet, a request on another instance holds the lease of an upload it works on.
        let lease = match &self.leases {
            Some(cfg) => {
                match HeldLease::try_acquire(&self.meta, &u.id, &self.instance, cfg).await? {
                    Some(lease) => Some(lease),
                    None => return Ok(false),
                }
            }
            None => None,
        };
        let result = self.expire_locked(u, idle_since, lease.as_ref()).await;
        if let Some(lease) = lease {
            lease.release().await;
        }
        result
    }

    /// [`Self::expire_upload`], holding the upload's lock (and lease).
    async fn expire_locked(
        &self,
        u: &Upload,
        idle_since: i64,
        lease: Option<&HeldLease>,
    ) -> Result<bool, Error> {
        // Read it again under the lock: it may have advanced since it was listed.
        match self.meta.upload(&u.repo, &u.id).await? {
            Some(current) if current.updated_at < idle_since => {}
            _ => return Ok(false),
        }
        // Bytes first: if discarding them fails, the session stays and the next run retries.
        self.store.abort_upload(&u.id).await?;
        let expired = self
            .meta
            .expire_upload(&u.id, idle_since, lease.map(HeldLease::holder))
            .await?;
        if expired {
            metrics::counter!("berth_uploads_expired_total").increment(1);
            tracing::info!(upload = %u.id, repo = %u.repo, "idle upload expired");
        }
        Ok(expired)
    }

    /// Cancel an upload session (`DELETE`).
    ///
    /// # Errors
    /// [`Error::UploadUnknown`].
    #[tracing::instrument(skip(self))]
    pub async fn cancel_upload(
        &self,
        actor: &Actor,
        repo: &RepoName,
        id: &str,
    ) -> Result<(), Error> {
        actor.require(repo, RepoActions::PUSH)?;
        let (this, repo, id) = (self.clone(), repo.clone(), id.to_owned());
        to_completion(async move {
            this.with_upload(&id, async |_lease| {
                let u = this.session(&repo, &id).await?;
                this.meta.delete_upload(&u.id).await?;
                this.store.abort_upload(&u.id).await?;
                Ok(())
            })
            .await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::UploadLocks;

    #[tokio::test]
    async fn upload_locks_serialise_one_id_and_clean_up() {
        let locks = UploadLocks::default();
        let a = locks.lock("a").await;
        // Another id is not blocked by "a".
        let b = locks.lock("b").await;
        assert_eq!(locks.len(), 2);
        drop(b);
        assert_eq!(locks.len(), 1);
        // A second holder of "a" waits until the first lets go.
        let l2 = locks.clone();
        let waiter = tokio::spawn(async move {
            let _g = l2.lock("a").await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(a);
        waiter.await.unwrap();
        assert_eq!(locks.len(), 0);
    }

    #[tokio::test]
    async fn try_lock_skips_a_held_upload() {
        let locks = UploadLocks::default();
        let a = locks.lock("a").await;
        assert!(locks.try_lock("a").is_none());
        assert_eq!(locks.len(), 1);
        drop(a);
        assert_eq!(locks.len(), 0);
        let b = locks.try_lock("a").expect("free now");
        assert_eq!(locks.len(), 1);
        drop(b);
        assert_eq!(locks.len(), 0);
    }
}
