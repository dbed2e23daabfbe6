//! `berth serve`: wire the backends chosen in config into the services and run the server
//! until SIGTERM or SIGINT, then let in-flight requests finish.

use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_core::access::PruneAudit;
use berth_core::{
    Access, AccessSettings, AuditLog, ExpireUploads, JobRunner, Limits, PruneJobs, Registry,
    RunnerSettings, UploadLeases,
};
use berth_meta::postgres::{Migrate, PgMeta, PgOptions};
use berth_meta::sqlite::{self, SqliteMeta};
use berth_meta::{AccessStore, LeaseHolder, MetaStore};
use berth_server::{AppState, AuthState};
use berth_store::fs::{FsStore, SyncMode};
use berth_store::s3::{S3Config, S3Store};
use berth_store::BlobStore;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tokio_util::sync::CancellationToken;

use crate::auth_config::AuthMode;
use crate::config::{Config, Durability, LogFormat, Metadata, Storage};

fn init_logging(cfg: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log_level)
        .with_context(|| format!("invalid log level {:?}", cfg.log_level))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match cfg.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

/// How long finished and dead jobs stay listed before they are pruned.
const KEEP_FINISHED_JOBS: Duration = Duration::from_secs(7 * 86_400);
/// How often old jobs are pruned.
const PRUNE_JOBS_EVERY: Duration = Duration::from_secs(6 * 3600);

/// Start this instance's job runner with every worker the registry has.
fn start_jobs(
    cfg: &Config,
    registry: &Registry,
    access: &Access,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let meta = Arc::clone(registry.meta());
    let holder = LeaseHolder::new(format!("jobs/{}", registry.instance()));
    JobRunner::new(Arc::clone(&meta), holder, RunnerSettings::default())
        .with_worker(Arc::new(ExpireUploads::new(
            registry.clone(),
            cfg.uploads.expire_after,
            cfg.uploads.expire_interval,
        )))
        .with_worker(Arc::new(PruneJobs::new(
            meta,
            KEEP_FINISHED_JOBS,
            PRUNE_JOBS_EVERY,
        )))
        .with_worker(Arc::new(PruneAudit::new(
            access.store().clone(),
            cfg.auth.audit_retention,
            PRUNE_JOBS_EVERY,
        )))
        .with_worker(Arc::new(berth_core::GcWorker::new(registry.clone())))
        .with_worker(Arc::new(berth_core::GcScheduler::new(
            registry.clone(),
            cfg.gc.schedule_check_interval,
        )))
        .with_worker(Arc::new(berth_core::ScrubWorker::new(registry.clone())))
        .with_worker(Arc::new(berth_core::RetentionWorker::new(registry.clone())))
        .with_worker(Arc::new(berth_core::RetentionScheduler::new(
            registry.clone(),
            cfg.retention.schedule_check_interval,
        )))
        .spawn(cancel)
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("shutdown requested: finishing in-flight requests");
}

/// Keep glibc from handing large freed buffers back to the kernel.
///
/// Request bodies arrive in buffers of up to a few hundred KiB. By default glibc serves those
/// with fresh `mmap`s (or trims them off the heap top) and returns them on free, so every
/// buffer is page-faulted and zeroed anew: measured here, a 1 GiB push cost 1.4 to 4.0
/// CPU-seconds depending on heap state, against a steady 1.3 with these thresholds.
///
/// The mmap threshold stays below argon2's 19 MiB working memory (one allocation per password
/// check): at 32 MiB those buffers came from the heap and stayed resident once freed, 19 MiB
/// per blocking thread that ever checked a password (the idle server grew from 13 to 33 MB
/// after the first start's admin password). 16 MiB still keeps request buffers, 4 MiB upload
/// buffers and the first 8 MiB S3 parts on the heap.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; called once at start-up, before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 16 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

/// Run the registry with `cfg` until a shutdown signal.
///
/// # Errors
/// If the data directory, database, listener or TLS files cannot be set up.
pub fn run(cfg: Config) -> anyhow::Result<()> {
    tune_allocator();
    init_logging(&cfg)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(cfg))
}

/// Hold the data directory for this process, if anything local lives there.
///
/// The embedded backends are single-process: SQLite's writer and the filesystem store's
/// in-process upload locks. With PostgreSQL and S3 there is nothing local to protect, and
/// any number of instances may run.
fn lock_data_dir(cfg: &Config) -> anyhow::Result<Option<File>> {
    if matches!(cfg.metadata, Metadata::Postgres { .. }) && matches!(cfg.storage, Storage::S3(_)) {
        return Ok(None);
    }
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let lock = File::create(cfg.data_dir.join(".lock"))?;
    lock.try_lock().map_err(|_| {
        anyhow::anyhow!(
            "another berth is already serving {}; stop it or use another --data-dir",
            cfg.data_dir.display()
        )
    })?;
    Ok(Some(lock))
}

/// Open the configured blob store.
async fn open_store(cfg: &Config) -> anyhow::Result<Arc<dyn BlobStore>> {
    Ok(match &cfg.storage {
        Storage::Fs => {
            let sync = match cfg.durability {
                Durability::Durable => SyncMode::Durable,
                Durability::Relaxed => SyncMode::Relaxed,
            };
            Arc::new(FsStore::open(&cfg.data_dir, sync).context("opening blob storage")?)
        }
        Storage::S3(s3) => {
            let store = S3Store::new(S3Config {
                endpoint: s3.endpoint.clone(),
                bucket: s3.bucket.clone(),
                region: s3.region.clone(),
                prefix: s3.prefix.clone(),
                access_key_id: s3.access_key_id.clone(),
                secret_access_key: s3.secret_access_key.clone(),
                allow_http: Some(s3.allow_http),
                virtual_hosted_style: s3.virtual_hosted_style,
                request_timeout: Duration::from_secs(s3.request_timeout_seconds),
                connect_timeout: Duration::from_secs(s3.connect_timeout_seconds),
                max_retries: s3.max_retries,
            })
            .with_context(|| format!("configuring S3 bucket {}", s3.bucket))?;
            Arc::new(store)
        }
    })
}

/// The metadata backend, seen through both of its traits.
pub struct MetaBackends {
    /// Repositories, manifests, uploads, jobs.
    pub meta: Arc<dyn MetaStore>,
    /// Projects, users, robots, audit.
    pub access: Arc<dyn AccessStore>,
}

fn both<T: MetaStore + AccessStore>(backend: T) -> MetaBackends {
    let backend = Arc::new(backend);
    MetaBackends {
        meta: backend.clone(),
        access: backend,
    }
}

/// Open the configured metadata store. `migrate`: apply pending schema migrations.
pub async fn open_meta(cfg: &Config, migrate: bool) -> anyhow::Result<MetaBackends> {
    Ok(match &cfg.metadata {
        Metadata::Sqlite => {
            let durability = match cfg.durability {
                Durability::Durable => sqlite::Durability::Full,
                Durability::Relaxed => sqlite::Durability::Normal,
            };
            std::fs::create_dir_all(&cfg.data_dir)
                .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
            both(
                SqliteMeta::open(&cfg.data_dir.join("meta.db"), durability)
                    .context("opening the metadata database")?,
            )
        }
        Metadata::Postgres {
            url,
            max_connections,
            acquire_timeout_seconds,
            ..
        } => both(
            PgMeta::connect(
                url,
                PgOptions {
                    max_connections: *max_connections,
                    acquire_timeout: Duration::from_secs(*acquire_timeout_seconds),
                    migrate: if migrate {
                        Migrate::Apply
                    } else {
                        Migrate::Check
                    },
                },
            )
            .await
            .context("opening the PostgreSQL metadata database")?,
        ),
    })
}

/// `berth migrate`: apply pending metadata schema migrations and report the versions.
///
/// # Errors
/// If the database cannot be reached, or its schema is newer than this program knows.
pub fn migrate(cfg: &Config) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match &cfg.metadata {
            Metadata::Sqlite => {
                // Opening the embedded database applies its migrations.
                let _lock = lock_data_dir(cfg)?;
                open_meta(cfg, true).await?;
                println!(
                    "SQLite metadata in {} is at the current schema",
                    cfg.data_dir.display()
                );
            }
            Metadata::Postgres {
                url,
                max_connections,
                acquire_timeout_seconds,
                ..
            } => {
                let opts = PgOptions {
                    max_connections: (*max_connections).min(2),
                    acquire_timeout: Duration::from_secs(*acquire_timeout_seconds),
                    migrate: Migrate::Apply,
                };
                let pg = PgMeta::connect_unchecked(url, &opts)
                    .await
                    .context("connecting to PostgreSQL")?;
                let (from, to) = pg.migrate().await.context("migrating the schema")?;
                if from == to {
                    println!("PostgreSQL schema is at version {to}: nothing to do");
                } else {
                    println!("PostgreSQL schema migrated from version {from} to {to}");
                }
            }
        }
        Ok(())
    })
}

/// Show the generated administrator password once: on the console with text logs; with
/// JSON logs (a log pipeline, where a banner would break one-object-per-line and a secret
/// must not land) in a file readable only by this user, which the log points to.
fn show_generated_password(cfg: &Config, password: &str) -> anyhow::Result<()> {
    match cfg.log_format {
        LogFormat::Text => eprintln!(
            "\n  berth: created user \"admin\" with password: {password}\n  (shown once; change \
             it with `berth admin users passwd admin`, or set BERTH_ADMIN_PASSWORD before the \
             first start)\n"
        ),
        LogFormat::Json => {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::create_dir_all(&cfg.data_dir)?;
            let path = cfg.data_dir.join("initial-admin-password");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("writing {}", path.display()))?;
            writeln!(f, "{password}")?;
            tracing::info!(file = %path.display(), "created user admin with a generated password: read it from the file, change it, delete the file");
        }
    }
    Ok(())
}

/// The access service: the token key (from `[auth] token_key`, or generated once and kept
/// in the metadata store), the first administrator (password from `BERTH_ADMIN_PASSWORD`,
/// or generated and printed once), and keyless OIDC logins if configured.
async fn open_access(cfg: &Config, store: Arc<dyn AccessStore>) -> anyhow::Result<Access> {
    let settings = AccessSettings {
        issuer: cfg.auth.issuer.clone(),
        service: cfg.auth.service.clone(),
        token_ttl: cfg.auth.token_ttl,
        max_failed_logins: cfg.auth.max_failed_logins,
        lockout: cfg.auth.lockout,
    };
    let key = cfg.auth.read_key()?;
    let audit = AuditLog::new(store.clone());
    let mut access = Access::new(store, settings, key.as_deref(), audit)
        .await
        .context("loading the token signing key")?;
    if let Some(oidc) = &cfg.auth.oidc {
        access = access.with_oidc(crate::oidc_setup::verifier(oidc)?);
    }
    let password = std::env::var("BERTH_ADMIN_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty());
    if let Some(generated) = access
        .bootstrap(password.as_deref())
        .await
        .context("creating the administrator (BERTH_ADMIN_PASSWORD must have 8+ characters with upper and lower case letters and a digit)")?
    {
        show_generated_password(cfg, &generated)?;
    }
    Ok(access)
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let _lock = lock_data_dir(&cfg)?;
    // HTTPS to S3 and PostgreSQL, and the TLS listener, all use rustls with ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let store = open_store(&cfg).await?;
    let auto_migrate = match &cfg.metadata {
        Metadata::Postgres { auto_migrate, .. } => *auto_migrate,
        Metadata::Sqlite => true,
    };
    let backends = open_meta(&cfg, auto_migrate).await?;
    let limits = Limits {
        manifest_max_bytes: cfg.manifest_max_bytes,
        chunk_min_length: cfg.chunk_min_length,
        ..Limits::default()
    };
    let access = Arc::new(open_access(&cfg, backends.access.clone()).await?);
    let mut registry = Registry::new(store, backends.meta, limits)
        .with_access(access.clone())
        .with_gc_settings(berth_core::GcSettings {
            grace: cfg.gc.grace_period,
            ..berth_core::GcSettings::default()
        });
    if cfg.redirect {
        // Refuse to start rather than quietly serve every blob locally.
        registry = registry
            .with_redirect(Duration::from_secs(cfg.redirect_expiry_seconds))
            .await
            .context("storage.redirect = true, but blob GETs cannot be redirected")?;
        tracing::info!(
            expiry_seconds = cfg.redirect_expiry_seconds,
            "blob GETs redirect to presigned URLs"
        );
    }
    if matches!(cfg.metadata, Metadata::Postgres { .. }) {
        // Other instances may share this metadata: a request working on an upload leases it
        // there, so no two instances append to one upload at once. (SQLite has one instance:
        // its in-process lock is enough, and costs no writes.)
        registry = registry.with_upload_leases(UploadLeases::default());
    }
    let metrics = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("berth_http_request_duration_seconds".into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ],
        )?
        .install_recorder()
        .context("installing the metrics recorder")?;
    // One signal handler; everything that stops on shutdown waits for this token.
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown_signal().await;
            shutdown.cancel();
        }
    });
    let jobs = start_jobs(&cfg, &registry, &access, shutdown.child_token());
    let auth = match cfg.auth.mode {
        AuthMode::Token => Some(AuthState {
            access: access.clone(),
            realm: cfg.auth.realm.clone(),
            tls: cfg.tls.is_some(),
        }),
        AuthMode::Open => {
            tracing::warn!(
                "auth.mode = open: anyone who can reach this registry may push, pull and delete"
            );
            None
        }
    };
    let app = berth_server::router(AppState {
        registry,
        metrics: Some(metrics),
        auth,
    });
    let grace = Duration::from_secs(cfg.shutdown_grace_seconds);
    match &cfg.tls {
        None => {
            let listener = std::net::TcpListener::bind(cfg.listen)
                .with_context(|| format!("listening on {}", cfg.listen))?;
            tracing::info!(addr = %listener.local_addr()?, data_dir = %cfg.data_dir.display(), "berth listening (http)");
            let handle = axum_server::Handle::new();
            let (h, stop) = (handle.clone(), shutdown.clone());
            tokio::spawn(async move {
                stop.cancelled().await;
                h.graceful_shutdown(Some(grace));
            });
            let mut server = axum_server::from_tcp(listener).acceptor(ZeroCopyAcceptor);
            tune_http(server.http_builder());
            server
                .handle(handle)
                .serve(app.into_make_service_with_connect_info::<std::net::SocketAddr>())
                .await?;
        }
        Some(tls) => {
            let tls_config =
                axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                    .await
                    .with_context(|| {
                        format!(
                            "loading TLS certificate {} and key {}",
                            tls.cert.display(),
                            tls.key.display()
                        )
                    })?;
            let handle = axum_server::Handle::new();
            let (h, stop) = (handle.clone(), shutdown.clone());
            tokio::spawn(async move {
                stop.cancelled().await;
                h.graceful_shutdown(Some(grace));
            });
            tracing::info!(addr = %cfg.listen, data_dir = %cfg.data_dir.display(), "berth listening (https)");
            let mut server = axum_server::bind_rustls(cfg.listen, tls_config);
            tune_http(server.http_builder());
            server
                .handle(handle)
                .serve(app.into_make_service_with_connect_info::<std::net::SocketAddr>())
                .await?;
        }
    }
    // The runner stopped claiming when the signal came; give running jobs what is left of
    // the grace period (they stop between units of work).
    if tokio::time::timeout(grace, jobs).await.is_err() {
        tracing::warn!("grace period over: abandoning running jobs (their leases will expire)");
    }
    tracing::info!("berth stopped");
    Ok(())
}

/// Accepts plain TCP connections as [`berth_server::sendfile::ZeroCopyStream`]s (blob bodies
/// leave with `sendfile`), with `TCP_NODELAY` set.
#[derive(Debug, Clone, Copy)]
struct ZeroCopyAcceptor;

impl<S> axum_server::accept::Accept<tokio::net::TcpStream, S> for ZeroCopyAcceptor {
    type Stream = berth_server::sendfile::ZeroCopyStream;
    type Service = S;
    type Future = std::future::Ready<std::io::Result<(Self::Stream, S)>>;

    fn accept(&self, tcp: tokio::net::TcpStream, service: S) -> Self::Future {
        let _ = tcp.set_nodelay(true);
        std::future::ready(Ok((
            berth_server::sendfile::ZeroCopyStream::new(tcp),
            service,
        )))
    }
}

/// Largest read buffer hyper grows a connection's buffer to (its default is 408 KiB).
///
/// hyper starts every connection at 8 KiB and doubles the buffer only while reads fill it,
/// so requests without a large body never get near this. An upload body does: each
/// `recvfrom` then takes up to this much, so a GiB costs fewer system calls and task
/// wake-ups. Measured on 1 GiB pushes, monolithic then in 64 MiB chunks (BENCHMARKS.md,
/// "hyper read buffer"): server CPU per GiB 1.11 to 1.17 s at 408 KiB, 1.0 to 1.1 at 1 MiB,
/// 0.9 to 1.0 at 2 MiB; peak RSS 42, 48 and 51 to 60 MB. 1 MiB keeps peak RSS well under the
/// 64 MB budget for a 1 GiB push.
const HTTP1_MAX_READ_BUFFER: usize = 1 << 20;

/// HTTP settings shared by the plain and TLS listeners.
fn tune_http(builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>) {
    builder.http1().max_buf_size(HTTP1_MAX_READ_BUFFER);
}
