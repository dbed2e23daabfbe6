//! Upload leases: in a fleet, the request working on an upload holds a lease on it in the
//! metadata store, so that two instances never append to one upload at once.
//!
//! The in-process lock ([`crate::uploads`]) serialises the requests one instance gets for an
//! upload; the lease does the same across instances. It is short ([`UploadLeases::ttl`]) and
//! renewed while the request works, so when an instance dies mid-chunk the client's retry, on
//! another instance, goes on soon after. A request that finds the lease held polls for it
//! (backing off) up to [`UploadLeases::max_wait`], then answers 503 and the client retries.
//!
//! A request that cannot renew its lease, or finds it taken, must not make its chunk part of
//! the upload: the body it streams into the store turns into an error (so the store drops the
//! chunk instead of completing the segment), the lease is confirmed once more after the last
//! byte and before the store completes the segment, and the metadata update, which also
//! records the segment, is fenced by the lease holder. A segment the store completes after
//! the lease lapsed anyway (its instance stalled between that last confirmation and the end of
//! the write) is named by a token of its own, which metadata never records: it cannot replace
//! the bytes of the request that took the lease over.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_meta::{LeaseHolder, MetaStore, UploadLease};
use berth_store::{ByteStream, StoreError};
use futures::StreamExt;

use crate::Error;

/// How upload leases behave. Used when metadata is shared by several instances
/// ([`crate::Registry::with_upload_leases`]); a single instance needs only its in-process lock.
#[derive(Debug, Clone)]
pub struct UploadLeases {
    /// How long a lease lasts unless renewed: how soon a client can go on through another
    /// instance after the one holding its upload died.
    pub ttl: Duration,
    /// How often a request renews its lease while it works (well within `ttl`).
    pub renew_every: Duration,
    /// How long a request waits for a lease another request holds before answering
    /// "unavailable, retry" (503). Longer than `ttl`, so that a dead holder's lease expires
    /// within the wait.
    pub max_wait: Duration,
}

impl Default for UploadLeases {
    /// A 15 second lease renewed every 5 seconds; requests wait up to 20 seconds for one.
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            max_wait: Duration::from_secs(20),
        }
    }
}

/// The error a leased body stream turns into when the lease is lost.
fn lease_lost() -> StoreError {
    StoreError::Io(std::io::Error::other("the upload's lease was lost"))
}

/// The answer to a request whose lease was lost while it worked.
pub(crate) fn lost_error() -> Error {
    Error::UploadBusy(
        "lost this upload's lease to another request (this instance stalled or could not \
         reach the database); check the upload's status and retry"
            .into(),
    )
}

/// A lease a request holds on one upload, renewed in the background until it is released or
/// dropped.
pub(crate) struct HeldLease {
    meta: Arc<dyn MetaStore>,
    id: String,
    holder: LeaseHolder,
    ttl: Duration,
    lost: Arc<AtomicBool>,
    renewer: tokio::task::JoinHandle<()>,
}

impl HeldLease {
    /// Take the lease on upload `id` for a new holder named after `instance`, waiting for
    /// another holder's lease as `cfg` says.
    ///
    /// # Errors
    /// [`Error::UploadUnknown`]; [`Error::Unavailable`] if another holder kept it for all of
    /// `cfg.max_wait`; backend errors.
    pub(crate) async fn acquire(
        meta: &Arc<dyn MetaStore>,
        id: &str,
        instance: &str,
        cfg: &UploadLeases,
    ) -> Result<Self, Error> {
        let holder = new_holder(instance);
        let deadline = Instant::now() + cfg.max_wait;
        let mut pause = Duration::from_millis(20);
        loop {
            match meta.lease_upload(id, &holder, cfg.ttl).await? {
                UploadLease::Granted => return Ok(Self::start(meta, id, holder, cfg)),
                UploadLease::Unknown => return Err(Error::UploadUnknown),
                UploadLease::Held => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        metrics::counter!("berth_upload_lease_busy_total").increment(1);
                        return Err(Error::UploadBusy(
                            "another request is writing to this upload; retry shortly".into(),
                        ));
                    }
                    tokio::time::sleep(pause.min(left)).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Take the lease on upload `id` if it is free now; `None` if someone holds it or the
    /// upload is gone.
    ///
    /// # Errors
    /// Backend errors.
    pub(crate) async fn try_acquire(
        meta: &Arc<dyn MetaStore>,
        id: &str,
        instance: &str,
        cfg: &UploadLeases,
    ) -> Result<Option<Self>, Error> {
        let holder = new_holder(instance);
        Ok(match meta.lease_upload(id, &holder, cfg.ttl).await? {
            UploadLease::Granted => Some(Self::start(meta, id, holder, cfg)),
            UploadLease::Held | UploadLease::Unknown => None,
        })
    }

    fn start(meta: &Arc<dyn MetaStore>, id: &str, holder: LeaseHolder, cfg: &UploadLeases) -> Self {
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = tokio::spawn(renew(
            Arc::clone(meta),
            id.to_owned(),
            holder.clone(),
            cfg.clone(),
            Arc::clone(&lost),
        ));
        Self {
            meta: Arc::clone(meta),
            id: id.to_owned(),
            holder,
            ttl: cfg.ttl,
            lost,
            renewer,
        }
    }

    /// Who holds it (to fence metadata updates with).
    pub(crate) fn holder(&self) -> &LeaseHolder {
        &self.holder
    }

    /// Whether the lease was lost (found taken, or not renewed in time).
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// `body`, failing as soon as the lease is known to be lost, and once more after its last
    /// byte unless renewing the lease then succeeds: the store completes a segment only after
    /// the body ends without an error.
    pub(crate) fn guard(&self, body: ByteStream) -> ByteStream {
        let lost = Arc::clone(&self.lost);
        let checked = body.map(move |item| {
            if lost.load(Ordering::SeqCst) {
                Err(lease_lost())
            } else {
                item
            }
        });
        let (meta, id, holder, ttl, lost) = (
            Arc::clone(&self.meta),
            self.id.clone(),
            self.holder.clone(),
            self.ttl,
            Arc::clone(&self.lost),
        );
        let confirm = futures::stream::once(async move {
            if !lost.load(Ordering::SeqCst) {
                match meta.lease_upload(&id, &holder, ttl).await {
                    Ok(UploadLease::Granted) => return None,
                    Ok(_) => tracing::warn!(upload = %id, "upload lease lost before the chunk was kept"),
                    Err(e) => tracing::warn!(upload = %id, error = %e, "could not confirm the upload lease"),
                }
                metrics::counter!("berth_upload_leases_lost_total").increment(1);
                lost.store(true, Ordering::SeqCst);
            }
            Some(Err(lease_lost()))
        })
        .filter_map(futures::future::ready);
        Box::pin(checked.chain(confirm))
    }

    /// Stop renewing and give the lease back (if that fails, it expires by itself).
    pub(crate) async fn release(self) {
        self.renewer.abort();
        if let Err(e) = self.meta.release_upload(&self.id, &self.holder).await {
            tracing::debug!(upload = %self.id, error = %e, "releasing an upload lease failed");
        }
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

fn new_holder(instance: &str) -> LeaseHolder {
    let token = uuid::Uuid::new_v4().simple().to_string();
    LeaseHolder::new(format!("upload/{instance}/{}", &token[..12]))
}

/// Renew the lease every `cfg.renew_every` until it is found lost, or could not be renewed
/// for so long that it may have expired before the next try.
async fn renew(
    meta: Arc<dyn MetaStore>,
    id: String,
    holder: LeaseHolder,
    cfg: UploadLeases,
    lost: Arc<AtomicBool>,
) {
    let mut confirmed = Instant::now();
    loop {
        tokio::time::sleep(cfg.renew_every).await;
        let asked = Instant::now();
        match meta.lease_upload(&id, &holder, cfg.ttl).await {
            Ok(UploadLease::Granted) => {
                confirmed = asked;
                continue;
            }
            Ok(outcome) => {
                tracing::warn!(upload = %id, ?outcome, "upload lease lost");
            }
            Err(e) if confirmed.elapsed() + cfg.renew_every < cfg.ttl => {
                tracing::warn!(upload = %id, error = %e, "renewing an upload lease failed; will retry");
                continue;
            }
            Err(e) => {
                tracing::warn!(upload = %id, error = %e, "upload lease could not be renewed in time");
            }
        }
        metrics::counter!("berth_upload_leases_lost_total").increment(1);
        lost.store(true, Ordering::SeqCst);
        return;
    }
}

#[cfg(test)]
mod tests {
    use crate::Actor;
    use berth_meta::sqlite::{Durability, SqliteMeta};
    use berth_oci::RepoName;
    use berth_store::fs::{FsStore, SyncMode};
    use bytes::Bytes;

    use super::*;
    use crate::{BodyLength, Limits, Registry};

    struct Fixture {
        registry: Registry,
        meta: Arc<dyn MetaStore>,
        dir: tempfile::TempDir,
        repo: RepoName,
    }

    fn fixture(ttl_ms: u64, renew_ms: u64, wait_ms: u64) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let meta: Arc<dyn MetaStore> =
            Arc::new(SqliteMeta::open(&dir.path().join("meta.db"), Durability::Normal).unwrap());
        let store = FsStore::open(dir.path(), SyncMode::Relaxed).unwrap();
        let registry = Registry::new(Arc::new(store), Arc::clone(&meta), Limits::default())
            .with_upload_leases(UploadLeases {
                ttl: Duration::from_millis(ttl_ms),
                renew_every: Duration::from_millis(renew_ms),
                max_wait: Duration::from_millis(wait_ms),
            });
        Fixture {
            registry,
            meta,
            dir,
            repo: "lease/app".parse().unwrap(),
        }
    }

    /// `pieces` pieces of `size` bytes, one every `pause`.
    fn slow_body(pieces: usize, size: usize, pause: Duration) -> ByteStream {
        Box::pin(futures::stream::iter(0..pieces).then(move |i| async move {
            tokio::time::sleep(pause).await;
            Ok(Bytes::from(vec![i as u8; size]))
        }))
    }

    fn body(bytes: &'static [u8]) -> ByteStream {
        Box::pin(futures::stream::once(async move {
            Ok(Bytes::from_static(bytes))
        }))
    }

    fn thief() -> LeaseHolder {
        LeaseHolder::new("another-instance")
    }

    #[tokio::test]
    async fn a_held_upload_waits_then_answers_unavailable() {
        let f = fixture(60_000, 20_000, 300);
        let up = f
            .registry
            .start_upload(&Actor::system(), &f.repo)
            .await
            .unwrap();
        let long = Duration::from_secs(60);
        assert_eq!(
            f.meta.lease_upload(&up.id, &thief(), long).await.unwrap(),
            UploadLease::Granted
        );
        let started = Instant::now();
        let r = f
            .registry
            .append_chunk(
                &Actor::system(),
                &f.repo,
                &up.id,
                None,
                body(b"abc"),
                BodyLength::Exact(3),
            )
            .await;
        assert!(matches!(r, Err(Error::UploadBusy(_))), "{r:?}");
        assert!(started.elapsed() >= Duration::from_millis(250));
        // Cancelling and finishing wait for it too.
        assert!(matches!(
            f.registry
                .cancel_upload(&Actor::system(), &f.repo, &up.id)
                .await,
            Err(Error::UploadBusy(_))
        ));
        // Once it is given back, the request goes through, and gives its own lease back.
        f.meta.release_upload(&up.id, &thief()).await.unwrap();
        let state = f
            .registry
            .append_chunk(
                &Actor::system(),
                &f.repo,
                &up.id,
                None,
                body(b"abc"),
                BodyLength::Exact(3),
            )
            .await
            .unwrap();
        assert_eq!(state.offset, 3);
        assert_eq!(
            f.meta.lease_upload(&up.id, &thief(), long).await.unwrap(),
            UploadLease::Granted
        );
        // An unknown upload is unknown at once, not after a wait.
        let r = f
            .registry
            .append_chunk(
                &Actor::system(),
                &f.repo,
                "no-such-upload",
                None,
                body(b"x"),
                BodyLength::Exact(1),
            )
            .await;
        assert!(matches!(r, Err(Error::UploadUnknown)), "{r:?}");
    }

    #[tokio::test]
    async fn a_dead_holders_lease_is_taken_over_when_it_expires() {
        let f = fixture(60_000, 20_000, 5_000);
        let up = f
            .registry
            .start_upload(&Actor::system(), &f.repo)
            .await
            .unwrap();
        assert_eq!(
            f.meta
                .lease_upload(&up.id, &thief(), Duration::from_millis(300))
                .await
                .unwrap(),
            UploadLease::Granted
        );
        let started = Instant::now();
        let state = f
            .registry
            .append_chunk(
                &Actor::system(),
                &f.repo,
                &up.id,
                None,
                body(b"abc"),
                BodyLength::Exact(3),
            )
            .await
            .unwrap();
        assert_eq!(state.offset, 3);
        assert!(started.elapsed() >= Duration::from_millis(250));
    }

    #[tokio::test]
    async fn renewing_keeps_a_slow_chunk_leased() {
        let f = fixture(300, 100, 1_000);
        let up = f
            .registry
            .start_upload(&Actor::system(), &f.repo)
            .await
            .unwrap();
        let (registry, repo, id) = (f.registry.clone(), f.repo.clone(), up.id.clone());
        let push = tokio::spawn(async move {
            let body = slow_body(8, 1000, Duration::from_millis(100));
            registry
                .append_chunk(
                    &Actor::system(),
                    &repo,
                    &id,
                    None,
                    body,
                    BodyLength::Unknown,
                )
                .await
        });
        // Probes take the lease for no time at all if it is free: first wait until the push
        // has it; then nobody else gets it while the chunk streams, for longer than one lease
        // lasts.
        let probe = async || {
            f.meta
                .lease_upload(&up.id, &thief(), Duration::ZERO)
                .await
                .unwrap()
        };
        while probe().await == UploadLease::Granted {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut probes = 0;
        while !push.is_finished() {
            assert_eq!(probe().await, UploadLease::Held);
            probes += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(probes > 10, "{probes}");
        assert_eq!(push.await.unwrap().unwrap().offset, 8000);
    }

    #[tokio::test]
    async fn a_chunk_is_dropped_when_its_lease_is_lost_before_it_is_kept() {
        // Renewals far apart: the lease runs out while the body streams.
        let f = fixture(300, 60_000, 1_000);
        let up = f
            .registry
            .start_upload(&Actor::system(), &f.repo)
            .await
            .unwrap();
        let (meta, id) = (Arc::clone(&f.meta), up.id.clone());
        let steal = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            meta.lease_upload(&id, &thief(), Duration::from_secs(60))
                .await
                .unwrap()
        });
        let slow = slow_body(4, 1000, Duration::from_millis(250));
        let r = f
            .registry
            .append_chunk(
                &Actor::system(),
                &f.repo,
                &up.id,
                None,
                slow,
                BodyLength::Unknown,
            )
            .await;
        assert_eq!(steal.await.unwrap(), UploadLease::Granted);
        assert!(matches!(r, Err(Error::UploadBusy(_))), "{r:?}");
        // Nothing of the chunk was kept: not in metadata, not in storage.
        assert_eq!(
            f.registry
                .upload_status(&Actor::system(), &f.repo, &up.id)
                .await
                .unwrap()
                .offset,
            0
        );
        let file = f.dir.path().join("uploads").join(&up.id);
        assert_eq!(std::fs::metadata(file).unwrap().len(), 0);
        // The new holder carries on; the blob holds its bytes only.
        f.meta.release_upload(&up.id, &thief()).await.unwrap();
        let d = berth_oci::Digest::sha256_of(b"fresh");
        f.registry
            .finish_upload(
                &Actor::system(),
                &f.repo,
                &up.id,
                &d,
                None,
                Some(body(b"fresh")),
                BodyLength::Exact(5),
            )
            .await
            .unwrap();
        assert_eq!(
            f.registry
                .stat_blob(&Actor::system(), &f.repo, &d)
                .await
                .unwrap(),
            5
        );
    }

    #[tokio::test]
    async fn a_lease_lost_mid_chunk_stops_it_early() {
        let f = fixture(300, 100, 1_000);
        let up = f
            .registry
            .start_upload(&Actor::system(), &f.repo)
            .await
            .unwrap();
        let (meta, id) = (Arc::clone(&f.meta), up.id.clone());
        // The upload's row vanishes (as if cancelled elsewhere): the next renewal fails.
        let vanish = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            meta.delete_upload(&id).await.unwrap();
        });
        let started = Instant::now();
        let body = slow_body(20, 100, Duration::from_millis(100));
        let r = f
            .registry
            .append_chunk(
                &Actor::system(),
                &f.repo,
                &up.id,
                None,
                body,
                BodyLength::Unknown,
            )
            .await;
        vanish.await.unwrap();
        assert!(matches!(r, Err(Error::UploadBusy(_))), "{r:?}");
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "stopped after {:?} of a 2 s body",
            started.elapsed()
        );
    }
}
