//! Project quotas ([`berth_meta::quota`]): reading and setting them (system administrators
//! only, as in Harbor), and the check an upload makes before it stores bytes.
//!
//! The decisive check is the metadata store's, in the transaction that stores a manifest:
//! only then is it known which blobs the push adds to the project. Uploads are checked
//! earlier, so that a push that cannot fit is refused before its bytes are written: a blob
//! whose length is known (a `Content-Length`, a `Content-Range`) is refused if the project's
//! usage plus the upload so far plus the chunk would pass the storage limit. A blob stored
//! already (by any project) is not checked at upload: its bytes are not stored again.

use berth_meta::{Listing, Paging, ProjectId, Quota, QuotaLimits};
use berth_oci::{Digest, RepoName};

use crate::uploads::BodyLength;
use crate::{Actor, Error, Registry};

impl Registry {
    /// The quotas of registered projects (of one, with `project`), by project id.
    ///
    /// # Errors
    /// [`Error::Denied`] unless a system administrator.
    pub async fn quotas(
        &self,
        actor: &Actor,
        project: Option<ProjectId>,
        paging: Paging,
    ) -> Result<Listing<Quota>, Error> {
        actor.principal().require_sysadmin()?;
        Ok(self.meta.list_quotas(project, paging).await?)
    }

    /// The quota of project `id` (a quota's id is its project's).
    ///
    /// # Errors
    /// [`Error::Denied`] unless a system administrator; [`Error::NotFound`].
    pub async fn quota(&self, actor: &Actor, id: ProjectId) -> Result<Quota, Error> {
        self.quotas(
            actor,
            Some(id),
            Paging {
                offset: 0,
                limit: 1,
            },
        )
        .await?
        .items
        .into_iter()
        .next()
        .ok_or_else(|| Error::NotFound(format!("quota {id} does not exist")))
    }

    /// The quota of project `name`, unchecked: the caller has checked that the caller may
    /// see the project (its summary shows the quota to its members).
    ///
    /// # Errors
    /// Metadata errors.
    pub async fn project_quota(&self, name: &str) -> Result<Quota, Error> {
        Ok(self.meta.quota(name).await?)
    }

    /// Set the limits of project `id`. Lowering a limit below the usage refuses further
    /// growth; it deletes nothing.
    ///
    /// # Errors
    /// [`Error::Denied`] unless a system administrator; [`Error::NotFound`].
    pub async fn set_quota(
        &self,
        actor: &Actor,
        id: ProjectId,
        limits: QuotaLimits,
    ) -> Result<Quota, Error> {
        let before = self.quota(actor, id).await?;
        self.meta.set_quota(&before.project, limits).await?;
        if let Some(access) = &self.access {
            access.audit().record(
                actor.principal().name(),
                "update",
                "quota",
                &before.project,
                Some(&before.project),
                actor.source(),
                true,
            );
        }
        tracing::info!(project = %before.project, storage = ?limits.storage, count = ?limits.count, "quota set");
        self.quota(actor, id).await
    }

    /// Refuse an upload to `repo` that holds `stored` bytes and would take `adding` more,
    /// if that would pass its project's storage limit. `digest`: the blob's, when the client
    /// named it up front (a blob stored already is let through: its bytes are not stored
    /// again, and the manifest's check judges it).
    pub(crate) async fn check_upload_quota(
        &self,
        repo: &RepoName,
        digest: Option<&Digest>,
        stored: u64,
        adding: BodyLength,
    ) -> Result<(), Error> {
        let q = self.meta.quota(repo.project()).await?;
        if q.hard.storage.is_none() {
            return Ok(());
        }
        if let Some(d) = digest {
            if self.meta.blob(d).await?.is_some() {
                return Ok(());
            }
        }
        let adding = match adding {
            BodyLength::Exact(n) => n,
            BodyLength::Unknown => 0,
        };
        let would_be = q.used_storage.saturating_add(stored).saturating_add(adding);
        match q.exceeded_by(would_be, 0) {
            Some(over) => Err(Error::Denied(over.to_string())),
            None => Ok(()),
        }
    }
}
