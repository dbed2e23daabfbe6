//! Expiring abandoned upload sessions: a periodic job that forgets every upload nobody has
//! touched for a while, and discards its bytes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use berth_meta::{ClaimedJob, JobKind, Page};
use tokio_util::sync::CancellationToken;

use crate::jobs::{Schedule, Worker};
use crate::{Error, Registry};

/// How many idle uploads one query lists.
const BATCH: usize = 100;

/// The `uploads.expire` job: every `every`, forget the upload sessions idle (not started or
/// advanced) for longer than `expire_after`, and abort their objects in the blob store.
///
/// An upload a request is working on right now is left alone (it holds the upload's lock on
/// this instance, or its lease in the metadata store), and so is one that advanced after it
/// was listed.
pub struct ExpireUploads {
    registry: Registry,
    expire_after: Duration,
    every: Duration,
}

impl ExpireUploads {
    /// The kind of its jobs: `uploads.expire`.
    pub fn job_kind() -> JobKind {
        JobKind::from_static("uploads.expire")
    }

    /// Expire the uploads of `registry` idle for `expire_after`, checking every `every`.
    pub fn new(registry: Registry, expire_after: Duration, every: Duration) -> Self {
        Self {
            registry,
            expire_after,
            every,
        }
    }
}

#[async_trait]
impl Worker for ExpireUploads {
    fn kind(&self) -> JobKind {
        Self::job_kind()
    }

    fn schedule(&self) -> Schedule {
        Schedule::Every(self.every)
    }

    async fn run(&self, _job: &ClaimedJob, cancel: &CancellationToken) -> Result<(), Error> {
        let cutoff = SystemTime::now()
            .checked_sub(self.expire_after)
            .unwrap_or(UNIX_EPOCH);
        let idle_since = berth_meta::jobs::epoch_ms(cutoff) / 1000;
        let (mut expired, mut failed, mut last) = (0u64, 0u64, None::<String>);
        while !cancel.is_cancelled() {
            let page = Page {
                last: last.as_deref(),
                limit: BATCH,
            };
            let batch = self.registry.meta.stale_uploads(idle_since, page).await?;
            let Some(tail) = batch.last() else { break };
            last = Some(tail.id.clone());
            for upload in &batch {
                if cancel.is_cancelled() {
                    break;
                }
                // One upload that cannot be expired (its bytes cannot be discarded, say) must
                // not stop the others: log it and go on; the next run tries it again.
                match self.registry.expire_upload(upload, idle_since).await {
                    Ok(true) => expired += 1,
                    Ok(false) => {}
                    Err(e) => {
                        failed += 1;
                        tracing::warn!(upload = %upload.id, error = %e, "expiring an idle upload failed");
                    }
                }
            }
        }
        if expired > 0 {
            tracing::info!(expired, "idle uploads expired");
        }
        if failed > 0 {
            tracing::warn!(failed, "idle uploads left for the next run");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Actor;
    use std::sync::Arc;

    use berth_meta::sqlite::{Durability, SqliteMeta};
    use berth_meta::{JobId, JobLease, LeaseHolder, MetaStore, Upload, UploadLease};
    use berth_oci::DigestAlgorithm;
    use berth_store::fs::{FsStore, SyncMode};
    use berth_store::BlobStore;

    use super::*;
    use crate::{Limits, UploadLeases};

    fn job() -> ClaimedJob {
        ClaimedJob {
            lease: JobLease {
                id: JobId(1),
                holder: LeaseHolder::new("test"),
                attempt: 1,
            },
            kind: ExpireUploads::job_kind(),
            payload: "{}".into(),
            dedupe_key: None,
            max_attempts: 1,
            last_error: None,
        }
    }

    #[tokio::test]
    async fn expires_idle_uploads_but_not_busy_or_fresh_ones() {
        let dir = tempfile::tempdir().unwrap();
        let meta = SqliteMeta::open(&dir.path().join("meta.db"), Durability::Normal).unwrap();
        let store = FsStore::open(dir.path(), SyncMode::Relaxed).unwrap();
        let registry = Registry::new(Arc::new(store), Arc::new(meta), Limits::default());
        let repo = "idle/app".parse().unwrap();
        let idle = registry
            .start_upload(&Actor::system(), &repo)
            .await
            .unwrap();
        let busy = registry
            .start_upload(&Actor::system(), &repo)
            .await
            .unwrap();
        // Idle for more than a second, by the seconds that `updated_at` counts.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let fresh = registry
            .start_upload(&Actor::system(), &repo)
            .await
            .unwrap();
        let _working = registry.upload_locks.lock(&busy.id).await;
        let worker = ExpireUploads::new(
            registry.clone(),
            Duration::from_secs(1),
            Duration::from_secs(60),
        );
        worker.run(&job(), &CancellationToken::new()).await.unwrap();
        assert!(matches!(
            registry
                .upload_status(&Actor::system(), &repo, &idle.id)
                .await,
            Err(Error::UploadUnknown)
        ));
        assert!(!dir.path().join("uploads").join(&idle.id).exists());
        for kept in [&busy, &fresh] {
            registry
                .upload_status(&Actor::system(), &repo, &kept.id)
                .await
                .unwrap();
            assert!(dir.path().join("uploads").join(&kept.id).exists());
        }
    }

    /// In a fleet, an upload that a request on another instance holds the lease of is left
    /// alone, however idle its row looks.
    #[tokio::test]
    async fn leaves_uploads_leased_elsewhere_alone() {
        let dir = tempfile::tempdir().unwrap();
        let meta: Arc<dyn MetaStore> =
            Arc::new(SqliteMeta::open(&dir.path().join("meta.db"), Durability::Normal).unwrap());
        let store = Arc::new(FsStore::open(dir.path(), SyncMode::Relaxed).unwrap());
        let registry = Registry::new(store.clone(), Arc::clone(&meta), Limits::default())
            .with_upload_leases(UploadLeases::default());
        let repo: berth_oci::RepoName = "idle/app".parse().unwrap();
        let long_ago = berth_meta::jobs::epoch_ms(SystemTime::now()) / 1000 - 3600;
        for id in ["idle-free", "idle-leased"] {
            store.start_upload(id).await.unwrap();
            meta.create_upload(&Upload {
                id: id.into(),
                repo: repo.clone(),
                offset: 0,
                algorithm: DigestAlgorithm::Sha256,
                hash_state: None,
                segments: Vec::new(),
                created_at: long_ago,
                updated_at: long_ago,
            })
            .await
            .unwrap();
        }
        let elsewhere = LeaseHolder::new("upload/other-instance/1");
        assert_eq!(
            meta.lease_upload("idle-leased", &elsewhere, Duration::from_secs(60))
                .await
                .unwrap(),
            UploadLease::Granted
        );
        let worker = ExpireUploads::new(
            registry.clone(),
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
        worker.run(&job(), &CancellationToken::new()).await.unwrap();
        assert!(meta.upload(&repo, "idle-free").await.unwrap().is_none());
        assert!(!dir.path().join("uploads").join("idle-free").exists());
        assert!(meta.upload(&repo, "idle-leased").await.unwrap().is_some());
        assert!(dir.path().join("uploads").join("idle-leased").exists());
        // Once its holder is gone (the lease given back or expired), it goes too.
        meta.release_upload("idle-leased", &elsewhere)
            .await
            .unwrap();
        worker.run(&job(), &CancellationToken::new()).await.unwrap();
        assert!(meta.upload(&repo, "idle-leased").await.unwrap().is_none());
    }
}
