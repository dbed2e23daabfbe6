//! The audit log's writer: events are queued by the request that causes them and written in
//! batches by one task, so a burst of pulls costs one transaction per batch, not one per
//! pull, and a request never waits for its audit row.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_meta::{AccessStore, AuditEvent, MetaError};
use tokio::sync::{mpsc, oneshot};

/// Most items one flush writes.
const MAX_BATCH: usize = 512;
/// Items that may wait; past that, new ones are dropped (and counted) rather than letting a
/// stalled database grow memory without bound.
const QUEUE: usize = 50_000;

enum Msg<T> {
    Item(T),
    Flush(oneshot::Sender<()>),
}

/// Queues items and writes them in batches with `flush` on a task of its own.
pub struct Batcher<T> {
    tx: Option<mpsc::Sender<Msg<T>>>,
    name: &'static str,
}

impl<T> Clone for Batcher<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            name: self.name,
        }
    }
}

impl<T> std::fmt::Debug for Batcher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").field("name", &self.name).finish()
    }
}

impl<T: Send + 'static> Batcher<T> {
    /// Start the writing task (needs a tokio runtime). `flush` is retried three times, a
    /// second apart, before its batch is dropped with an error in the log.
    pub fn spawn<F, Fut>(name: &'static str, flush: F) -> Self
    where
        F: Fn(Arc<Vec<T>>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), MetaError>> + Send,
        T: Sync,
    {
        let (tx, mut rx) = mpsc::channel::<Msg<T>>(QUEUE);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = Vec::new();
                let mut waiters = Vec::new();
                let mut next = Some(first);
                while let Some(msg) = next.take() {
                    match msg {
                        Msg::Item(i) => batch.push(i),
                        Msg::Flush(w) => waiters.push(w),
                    }
                    if batch.len() < MAX_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                if !batch.is_empty() {
                    let batch = Arc::new(batch);
                    for attempt in 1..=3 {
                        match flush(batch.clone()).await {
                            Ok(()) => break,
                            Err(e) if attempt == 3 => {
                                tracing::error!(log = name, error = %e, dropped = batch.len(), "writing a batch failed");
                                metrics::counter!("berth_batch_dropped_total", "log" => name)
                                    .increment(batch.len() as u64);
                            }
                            Err(e) => {
                                tracing::warn!(log = name, error = %e, attempt, "writing a batch failed; retrying");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    }
                }
                for w in waiters {
                    let _ = w.send(());
                }
            }
        });
        Self { tx: Some(tx), name }
    }

    /// A batcher that drops everything (for tests of other parts).
    pub fn discard(name: &'static str) -> Self {
        Self { tx: None, name }
    }

    /// Queue an item.
    pub fn push(&self, item: T) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(Msg::Item(item)).is_err() {
            metrics::counter!("berth_batch_dropped_total", "log" => self.name).increment(1);
        }
    }

    /// Wait until everything queued before this call is written.
    pub async fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let (done, wait) = oneshot::channel();
        if tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// The audit log: who did what, when, from where.
#[derive(Debug, Clone)]
pub struct AuditLog {
    batcher: Batcher<AuditEvent>,
}

impl AuditLog {
    /// An audit log written to `store`.
    pub fn new(store: Arc<dyn AccessStore>) -> Self {
        Self {
            batcher: Batcher::spawn("audit", move |batch: Arc<Vec<AuditEvent>>| {
                let store = store.clone();
                async move { store.append_audit(&batch).await }
            }),
        }
    }

    /// An audit log that keeps nothing (for tests of other parts).
    pub fn discard() -> Self {
        Self {
            batcher: Batcher::discard("audit"),
        }
    }

    /// Record an event.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        username: &str,
        operation: &str,
        resource_type: &str,
        resource: &str,
        project: Option<&str>,
        source: Option<IpAddr>,
        success: bool,
    ) {
        let time_ms = super::unix_ms();
        self.batcher.push(AuditEvent {
            id: 0,
            time_ms,
            username: username.to_owned(),
            operation: operation.to_owned(),
            resource_type: resource_type.to_owned(),
            resource: resource.to_owned(),
            project: project.map(str::to_owned),
            source_ip: source.map(|ip| ip.to_string()),
            success,
        });
    }

    /// Wait until every event recorded so far is stored.
    pub async fn flush(&self) {
        self.batcher.flush().await;
    }
}

/// Deletes audit events older than the retention period, and expired browser sessions, as
/// the periodic job `audit.prune`.
pub struct PruneAudit {
    store: Arc<dyn AccessStore>,
    keep: Duration,
    every: Duration,
}

impl PruneAudit {
    /// The kind of its jobs: `audit.prune`.
    pub fn job_kind() -> berth_meta::JobKind {
        berth_meta::JobKind::from_static("audit.prune")
    }

    /// Prune events older than `keep`, every `every`.
    pub fn new(store: Arc<dyn AccessStore>, keep: Duration, every: Duration) -> Self {
        Self { store, keep, every }
    }
}

#[async_trait::async_trait]
impl crate::Worker for PruneAudit {
    fn kind(&self) -> berth_meta::JobKind {
        Self::job_kind()
    }

    fn schedule(&self) -> crate::Schedule {
        crate::Schedule::Every(self.every)
    }

    async fn run(
        &self,
        _job: &berth_meta::ClaimedJob,
        _cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<(), crate::Error> {
        let now_ms = super::unix_ms();
        let cutoff = now_ms - i64::try_from(self.keep.as_millis()).unwrap_or(i64::MAX);
        let events = self.store.prune_audit(cutoff).await?;
        let sessions = self.store.prune_sessions().await?;
        if events + sessions > 0 {
            tracing::info!(events, sessions, "old audit events and sessions pruned");
        }
        Ok(())
    }
}
