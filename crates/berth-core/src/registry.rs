use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_meta::{MetaStore, NewProject};
use berth_oci::range::ByteRange;
use berth_oci::{Digest, RepoName};
use berth_store::{BlobContent, BlobStore};

use crate::access::{project_of, Access, Actor, Batcher, Principal, RepoActions};
use crate::Error;

/// Limits the registry enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest manifest accepted, in bytes.
    pub manifest_max_bytes: usize,
    /// Smallest chunk the registry asks clients to send (`OCI-Chunk-Min-Length`).
    pub chunk_min_length: u64,
    /// Largest page a tag or catalog listing returns.
    pub max_page: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            manifest_max_bytes: 4 << 20,
            chunk_min_length: 0,
            max_page: 10_000,
        }
    }
}

/// The registry service: every `/v2` operation, over a blob store and a metadata store.
#[derive(Clone)]
pub struct Registry {
    pub(crate) store: Arc<dyn BlobStore>,
    pub(crate) meta: Arc<dyn MetaStore>,
    pub(crate) limits: Limits,
    pub(crate) upload_locks: crate::uploads::UploadLocks,
    /// How long presigned blob URLs stay valid; `None`: blob reads are served, not redirected.
    redirect_expiry: Option<Duration>,
    /// Names this instance in leases: the process id and a random suffix.
    pub(crate) instance: Arc<str>,
    /// Upload leases in the metadata store, when several instances share it.
    pub(crate) leases: Option<crate::UploadLeases>,
    /// Projects, roles and the audit log; `None` in tests of the registry alone.
    pub(crate) access: Option<Arc<Access>>,
    /// Projects known to exist (they are never deleted while they hold a repository).
    known_projects: Arc<Mutex<HashSet<String>>>,
    /// Manifest pulls waiting to be recorded (pull time and count for the management API).
    pulls: Batcher<(String, Digest, i64)>,
    /// How garbage collection runs (its grace period, batch size).
    pub(crate) gc: crate::GcSettings,
    /// How scrub runs (its batch sizes and concurrency).
    pub(crate) scrub: crate::ScrubSettings,
}

/// A blob (or a range of it) ready to send.
pub struct BlobRead {
    /// The blob's digest.
    pub digest: Digest,
    /// The whole blob's size.
    pub size: u64,
    /// The inclusive byte range sent, when the request asked for one.
    pub range: Option<(u64, u64)>,
    /// The bytes.
    pub content: BlobContent,
}

impl Registry {
    /// A registry over `store` and `meta`.
    pub fn new(store: Arc<dyn BlobStore>, meta: Arc<dyn MetaStore>, limits: Limits) -> Self {
        let upload_locks = crate::uploads::UploadLocks::default();
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        Self {
            store,
            meta,
            limits,
            upload_locks,
            redirect_expiry: None,
            instance: format!("{}-{}", std::process::id(), &suffix[..8]).into(),
            leases: None,
            access: None,
            known_projects: Arc::default(),
            pulls: Batcher::discard("pulls"),
            gc: crate::GcSettings::default(),
            scrub: crate::ScrubSettings::default(),
        }
    }

    /// Collect garbage with `settings` (the default grace period is two hours).
    #[must_use]
    pub fn with_gc_settings(mut self, settings: crate::GcSettings) -> Self {
        self.gc = settings;
        self
    }

    /// How garbage collection runs here.
    pub fn gc_settings(&self) -> &crate::GcSettings {
        &self.gc
    }

    /// Scrub with `settings` (batch sizes, how many blobs are read at once).
    #[must_use]
    pub fn with_scrub_settings(mut self, settings: crate::ScrubSettings) -> Self {
        self.scrub = settings;
        self
    }

    /// Keep projects, the audit log and pull records through `access`: pushes need their
    /// project to exist (a system administrator's push creates it), pushes, pulls and
    /// deletes are audited, and the catalog lists only what the caller may see.
    #[must_use]
    pub fn with_access(mut self, access: Arc<Access>) -> Self {
        let store = access.store().clone();
        self.pulls = Batcher::spawn("pulls", move |batch: Arc<Vec<(String, Digest, i64)>>| {
            let store = store.clone();
            async move { store.record_pulls(&batch).await }
        });
        self.access = Some(access);
        self
    }

    /// Refuse a push into a project that does not exist, unless `actor` may create projects
    /// (a system administrator, or anyone when access control is off): then create it,
    /// private, owned by the pusher.
    pub(crate) async fn ensure_project(&self, actor: &Actor, repo: &RepoName) -> Result<(), Error> {
        let Some(access) = &self.access else {
            return Ok(());
        };
        let name = project_of(repo);
        if self.project_known(name) {
            return Ok(());
        }
        let store = access.store();
        if store.project_by_name(name).await?.is_none() {
            if !(actor.is_unrestricted() || actor.principal().is_sysadmin()) {
                return Err(Error::NameUnknown(format!(
                    "project {name} does not exist; an administrator must create it first"
                )));
            }
            let owner = match actor.principal() {
                Principal::User { id, .. } => Some(*id),
                _ => None,
            };
            let project = NewProject {
                name: name.to_owned(),
                public: false,
                owner,
            };
            match store.create_project(&project).await {
                Ok(_) => {
                    tracing::info!(project = name, "project created by a push");
                    self.audit(actor, "create", "project", name, name);
                }
                Err(berth_meta::MetaError::AlreadyExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.known_projects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned());
        Ok(())
    }

    fn project_known(&self, name: &str) -> bool {
        self.known_projects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }

    /// Forget that project `name` exists (after it is deleted).
    pub fn forget_project(&self, name: &str) {
        self.known_projects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// Write an audit event for `actor`.
    pub(crate) fn audit(
        &self,
        actor: &Actor,
        operation: &str,
        kind: &str,
        resource: &str,
        project: &str,
    ) {
        if let Some(access) = &self.access {
            access.audit().record(
                actor.principal().name(),
                operation,
                kind,
                resource,
                Some(project),
                actor.source(),
                true,
            );
        }
    }

    /// Note a manifest pull for the management API's pull time and count.
    pub(crate) fn record_pull(&self, repo: &RepoName, digest: &Digest) {
        let now = crate::access::unix_ms();
        self.pulls.push((repo.to_string(), digest.clone(), now));
    }

    /// Whether `actor` may pull from `repo`: by its token's grants, or else (a mount from a
    /// repository the client did not ask a token for) by its roles.
    pub(crate) async fn may_pull(&self, actor: &Actor, repo: &RepoName) -> Result<bool, Error> {
        if actor.repo_actions(repo).contains(RepoActions::PULL) {
            return Ok(true);
        }
        match &self.access {
            Some(access) => Ok(access
                .repo_actions(actor.principal(), repo)
                .await?
                .contains(RepoActions::PULL)),
            None => Ok(false),
        }
    }

    /// Hand out presigned blob URLs valid for `expiry` ([`Registry::blob_url`]), so that
    /// clients fetch blob bytes from the object store instead of through this server.
    ///
    /// Checks first that the store makes such URLs, by making one (which asks nothing of
    /// the object store: S3 URLs are signed locally).
    ///
    /// # Errors
    /// [`Error::Unsupported`] if the store has no presigned URLs (the filesystem store);
    /// a backend error if making one fails (say, credentials cannot be loaded).
    pub async fn with_redirect(mut self, expiry: Duration) -> Result<Self, Error> {
        let probe = Digest::sha256_of(b"berth presign probe");
        if self.store.presigned_get(&probe, expiry).await?.is_none() {
            return Err(Error::Unsupported(
                "this blob store cannot make presigned URLs (only S3 storage can)".into(),
            ));
        }
        self.redirect_expiry = Some(expiry);
        Ok(self)
    }

    /// The same registry, holding a lease in the metadata store on every upload it works on,
    /// as `leases` says: for a fleet of instances sharing metadata, so that two of them never
    /// append to one upload at once. Without it (the default, for a single instance) uploads
    /// are serialised in-process only, and cost no extra metadata writes.
    #[must_use]
    pub fn with_upload_leases(mut self, leases: crate::UploadLeases) -> Self {
        self.leases = Some(leases);
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The metadata store (for the job runner, which shares it).
    pub fn meta(&self) -> &Arc<dyn MetaStore> {
        &self.meta
    }

    /// The name of this registry instance in leases (unique among running instances).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The size of `digest` in `repo` (a blob `HEAD`).
    ///
    /// # Errors
    /// [`Error::BlobUnknown`] if the repository does not hold the blob.
    #[tracing::instrument(skip(self))]
    pub async fn stat_blob(
        &self,
        actor: &Actor,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<u64, Error> {
        actor.require(repo, RepoActions::PULL)?;
        self.meta
            .repo_blob(repo, digest)
            .await?
            .ok_or_else(|| Error::BlobUnknown(digest.clone()))
    }

    /// Open `digest` in `repo` for reading, whole or the given range.
    ///
    /// # Errors
    /// [`Error::BlobUnknown`]; [`Error::RangeNotSatisfiable`] when the range misses the blob.
    #[tracing::instrument(skip(self))]
    pub async fn read_blob(
        &self,
        actor: &Actor,
        repo: &RepoName,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<BlobRead, Error> {
        actor.require(repo, RepoActions::PULL)?;
        let size = self.stat_blob(actor, repo, digest).await?;
        let range = range
            .map(|r| {
                r.resolve(size)
                    .map_err(|_| Error::RangeNotSatisfiable { size })
            })
            .transpose()?;
        let (offset, len) = range.map_or((0, size), |(s, e)| (s, e - s + 1));
        let content = self
            .store
            .read(digest, offset, len)
            .await
            .map_err(|e| match e {
                berth_store::StoreError::NotFound => {
                    tracing::error!(%digest, "blob is in metadata but missing from storage");
                    Error::BlobUnknown(digest.clone())
                }
                e => e.into(),
            })?;
        Ok(BlobRead {
            digest: digest.clone(),
            size,
            range,
            content,
        })
    }

    /// A URL at which anyone may fetch `digest` (from `repo`) straight from the object store
    /// for a while, or `None` when redirects are off or the store has no such URLs; the
    /// caller then reads the blob with [`Registry::read_blob`]. The URL is only handed out
    /// for a blob linked into `repo`, so a redirect never reveals a blob of another
    /// repository. Storage is not asked whether the bytes exist: metadata says so.
    ///
    /// # Errors
    /// [`Error::BlobUnknown`] if the repository does not hold the blob; backend errors.
    #[tracing::instrument(skip(self))]
    pub async fn blob_url(
        &self,
        actor: &Actor,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<String>, Error> {
        actor.require(repo, RepoActions::PULL)?;
        let Some(expiry) = self.redirect_expiry else {
            return Ok(None);
        };
        self.stat_blob(actor, repo, digest).await?;
        Ok(self.store.presigned_get(digest, expiry).await?)
    }

    /// Remove `digest` from `repo`. The bytes stay for other repositories; space is reclaimed
    /// by garbage collection.
    ///
    /// # Errors
    /// [`Error::BlobUnknown`] if the repository does not hold the blob.
    #[tracing::instrument(skip(self))]
    pub async fn delete_blob(
        &self,
        actor: &Actor,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<(), Error> {
        actor.require(repo, RepoActions::DELETE)?;
        if self.meta.unlink_blob(repo, digest).await? {
            tracing::info!(repo = %repo, %digest, "blob unlinked");
            Ok(())
        } else {
            Err(Error::BlobUnknown(digest.clone()))
        }
    }

    /// Make `digest` available in `repo` without uploading it again: from `from` if given,
    /// else from any repository that has it. Returns the size, or `None` when the blob cannot
    /// be mounted (the client then uploads it).
    ///
    /// # Errors
    /// Backend errors.
    #[tracing::instrument(skip(self))]
    pub async fn mount_blob(
        &self,
        actor: &Actor,
        repo: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
    ) -> Result<Option<u64>, Error> {
        actor.require(repo, RepoActions::PUSH)?;
        self.ensure_project(actor, repo).await?;
        // The caller must be allowed to read the blob where it is: a mount must not reveal or
        // copy bytes from a repository the caller cannot pull from.
        let size = match from {
            Some(source) if self.may_pull(actor, source).await? => {
                self.meta.repo_blob(source, digest).await?
            }
            Some(_) => None,
            None if actor.is_unrestricted() => self.meta.blob(digest).await?,
            None => {
                let mut found = None;
                for source in self.meta.repos_with_blob(digest, 20).await? {
                    if self.may_pull(actor, &source).await? {
                        found = self.meta.repo_blob(&source, digest).await?;
                        break;
                    }
                }
                found
            }
        };
        let Some(size) = size else { return Ok(None) };
        // The metadata says the bytes exist; make sure storage agrees before linking.
        if self.store.stat(digest).await?.is_none() {
            tracing::error!(%digest, "blob is in metadata but missing from storage");
            return Ok(None);
        }
        match self.meta.link_blob(repo, digest, size).await {
            Ok(()) => {}
            // Garbage collection is deleting it: not mountable; the client uploads it.
            Err(berth_meta::MetaError::Conflict) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        tracing::info!(repo = %repo, %digest, "blob mounted");
        Ok(Some(size))
    }
}

impl Registry {
    /// Whether both backends answer (for `/readyz`).
    ///
    /// # Errors
    /// The first backend error.
    pub async fn check_ready(&self) -> Result<(), Error> {
        self.meta
            .list_repositories(berth_meta::Page {
                last: None,
                limit: 1,
            })
            .await?;
        self.store
            .stat(&Digest::sha256_of(b"berth readiness probe"))
            .await?;
        Ok(())
    }
}
