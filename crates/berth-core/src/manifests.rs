//! Manifests, tags, the catalog and the referrers API.

use std::collections::HashMap;

use berth_meta::{NewManifest, Page, StoredManifest};
use berth_oci::{manifest, media, Digest, Reference, RepoName, Tag};
use bytes::Bytes;

use crate::access::{project_of, Access, Actor, RepoActions};
use crate::{Error, Registry};

/// The outcome of a manifest push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestPut {
    /// The manifest's digest.
    pub digest: Digest,
    /// Its `subject`, if it has one (echoed in the `OCI-Subject` header).
    pub subject: Option<Digest>,
    /// The tags now pointing at it.
    pub tags: Vec<Tag>,
}

/// One page of a tag or repository listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagList {
    /// The names on this page.
    pub names: Vec<String>,
    /// Whether more follow (the server adds a `Link` header).
    pub more: bool,
    /// The page size used, for the `Link` header.
    pub limit: usize,
}

/// Whether a manifest stored as `stored` may be served to a client that sent `accept`.
fn acceptable(stored: &str, accept: &[String]) -> bool {
    if accept.is_empty() {
        return true;
    }
    accept.iter().any(|a| {
        a == stored
            || a == "*/*"
            || a.strip_suffix("/*")
                .is_some_and(|major| stored.split('/').next() == Some(major))
    })
}

impl Registry {
    /// Push a manifest under `reference` (a tag or its digest) and any `extra_tags`, in one
    /// transaction. Every blob and child manifest it references must be in the repository.
    ///
    /// # Errors
    /// [`Error::TooLarge`], [`Error::DigestMismatch`], [`Error::ManifestInvalid`],
    /// [`Error::ManifestBlobUnknown`].
    #[tracing::instrument(skip(self, body), fields(len = body.len()))]
    pub async fn put_manifest(
        &self,
        actor: &Actor,
        repo: &RepoName,
        reference: &Reference,
        extra_tags: &[Tag],
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<ManifestPut, Error> {
        actor.require(repo, RepoActions::PUSH)?;
        self.ensure_project(actor, repo).await?;
        if body.len() > self.limits.manifest_max_bytes {
            return Err(Error::TooLarge(format!(
                "manifest is larger than the {} byte limit",
                self.limits.manifest_max_bytes
            )));
        }
        let digest = match reference {
            Reference::Digest(expected) => {
                let actual = expected.algorithm().digest_of(&body);
                if &actual != expected {
                    return Err(Error::DigestMismatch {
                        expected: expected.clone(),
                        actual,
                    });
                }
                actual
            }
            Reference::Tag(_) => Digest::sha256_of(&body),
        };
        let parsed = manifest::parse(content_type, &body)
            .map_err(|e| Error::ManifestInvalid(e.to_string()))?;
        let mut tags: Vec<Tag> = extra_tags.to_vec();
        if let Reference::Tag(t) = reference {
            tags.insert(0, t.clone());
        }
        tags.dedup();
        let subject = parsed.subject.as_ref().map(|s| s.digest.clone());
        let annotations = (!parsed.annotations.is_empty())
            .then(|| serde_json::to_string(&parsed.annotations))
            .transpose()
            .map_err(|e| Error::Internal(e.to_string()))?;
        let new = NewManifest {
            repo: repo.clone(),
            digest: digest.clone(),
            media_type: parsed.media_type,
            artifact_type: parsed.artifact_type,
            subject: subject.clone(),
            annotations,
            content: body.to_vec(),
            blobs: parsed
                .blobs
                .into_iter()
                .filter(|d| !d.external)
                .map(|d| d.digest)
                .collect(),
            manifests: parsed.manifests.into_iter().map(|d| d.digest).collect(),
            pinned_tags: self.immutable_among(repo, &tags).await?,
        };
        self.meta
            .put_manifest(new, &tags)
            .await
            .map_err(|e| match e {
                berth_meta::MetaError::TagImmutable(t) => Error::Denied(format!(
                    "tag {repo}:{t} is immutable (project {}): it cannot be moved or deleted",
                    repo.project()
                )),
                e => e.into(),
            })?;
        tracing::info!(repo = %repo, %digest, tags = tags.len(), "manifest pushed");
        let name = match tags.first() {
            Some(t) => format!("{repo}:{t}"),
            None => format!("{repo}@{digest}"),
        };
        self.audit(actor, "push", "artifact", &name, project_of(repo));
        Ok(ManifestPut {
            digest,
            subject,
            tags,
        })
    }

    /// The manifest under `reference`, if the client accepts its media type.
    ///
    /// # Errors
    /// [`Error::ManifestUnknown`], [`Error::ManifestNotAcceptable`].
    pub async fn get_manifest(
        &self,
        actor: &Actor,
        repo: &RepoName,
        reference: &Reference,
        accept: &[String],
        fetch: Fetch,
    ) -> Result<StoredManifest, Error> {
        actor.require(repo, RepoActions::PULL)?;
        let found = match reference {
            Reference::Tag(t) => self.meta.manifest_by_tag(repo, t).await?,
            Reference::Digest(d) => self.meta.manifest_by_digest(repo, d).await?,
        };
        let m = found.ok_or(Error::ManifestUnknown)?;
        if !acceptable(&m.media_type, accept) {
            return Err(Error::ManifestNotAcceptable(m.media_type));
        }
        if fetch == Fetch::Get {
            self.record_pull(repo, &m.digest);
            self.audit(
                actor,
                "pull",
                "artifact",
                &resource(repo, reference),
                project_of(repo),
            );
        }
        Ok(m)
    }

    /// Delete by digest (the manifest and every tag on it) or by tag (only the tag).
    ///
    /// # Errors
    /// [`Error::ManifestUnknown`].
    #[tracing::instrument(skip(self))]
    pub async fn delete_manifest(
        &self,
        actor: &Actor,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<(), Error> {
        actor.require(repo, RepoActions::DELETE)?;
        let deleted = match reference {
            // Whether a tag is immutable depends on its name alone.
            Reference::Tag(t) => {
                self.refuse_immutable_tag(repo, t).await?;
                self.meta.delete_tag(repo, t).await?
            }
            Reference::Digest(d) => self.delete_manifest_unless_immutable(repo, d).await?,
        };
        if !deleted {
            return Err(Error::ManifestUnknown);
        }
        tracing::info!(repo = %repo, reference = %reference, "manifest deleted");
        let kind = match reference {
            Reference::Tag(_) => "tag",
            Reference::Digest(_) => "artifact",
        };
        self.audit(
            actor,
            "delete",
            kind,
            &resource(repo, reference),
            project_of(repo),
        );
        Ok(())
    }

    /// Delete repository `repo` with every manifest and tag in it, in one transaction (the
    /// management API's repository delete). Its blobs stay for garbage collection.
    ///
    /// # Errors
    /// [`Error::NameUnknown`] if it does not exist.
    #[tracing::instrument(skip(self))]
    pub async fn delete_repository(&self, actor: &Actor, repo: &RepoName) -> Result<(), Error> {
        actor.require(repo, RepoActions::DELETE)?;
        if !self.delete_repository_unless_immutable(repo).await? {
            return Err(Error::NameUnknown(repo.to_string()));
        }
        tracing::info!(repo = %repo, "repository deleted");
        self.audit(
            actor,
            "delete",
            "repository",
            repo.as_str(),
            project_of(repo),
        );
        Ok(())
    }

    /// Point the new tag `tag` at manifest `digest` (the management API's tag create).
    ///
    /// # Errors
    /// [`Error::Conflict`] if `tag` exists (moving a tag is a manifest push);
    /// [`Error::ManifestUnknown`].
    pub async fn add_tag(
        &self,
        actor: &Actor,
        repo: &RepoName,
        digest: &Digest,
        tag: &Tag,
    ) -> Result<ManifestPut, Error> {
        actor.require(repo, RepoActions::PUSH)?;
        if self.meta.manifest_by_tag(repo, tag).await?.is_some() {
            return Err(Error::Conflict(format!("tag {tag} exists in {repo}")));
        }
        let m = self
            .meta
            .manifest_by_digest(repo, digest)
            .await?
            .ok_or(Error::ManifestUnknown)?;
        // The same bytes pushed again under the tag: one transaction, every check rerun.
        self.put_manifest(
            actor,
            repo,
            &Reference::Digest(m.digest),
            std::slice::from_ref(tag),
            Some(&m.media_type),
            Bytes::from(m.content),
        )
        .await
    }

    fn page_limit(&self, n: Option<usize>) -> usize {
        n.unwrap_or(self.limits.max_page).min(self.limits.max_page)
    }

    /// One page of `repo`'s tags, in lexical order, after `last`.
    ///
    /// # Errors
    /// [`Error::NameUnknown`] if the repository does not exist.
    pub async fn list_tags(
        &self,
        actor: &Actor,
        repo: &RepoName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<TagList, Error> {
        actor.require(repo, RepoActions::PULL)?;
        let limit = self.page_limit(n);
        let mut names = self
            .meta
            .list_tags(
                repo,
                Page {
                    last,
                    limit: limit + 1,
                },
            )
            .await?
            .ok_or_else(|| Error::NameUnknown(repo.to_string()))?;
        let more = names.len() > limit;
        names.truncate(limit);
        Ok(TagList { names, more, limit })
    }

    /// One page of repository names, in lexical order, after `last`.
    ///
    /// # Errors
    /// Backend errors.
    pub async fn catalog(
        &self,
        actor: &Actor,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<TagList, Error> {
        if !actor.may_list_catalog() {
            return Err(Error::Unauthorized(
                "listing the catalog is not granted".into(),
            ));
        }
        let limit = self.page_limit(n);
        let mut names = match &self.access {
            Some(access) if !(actor.is_unrestricted() || actor.principal().is_sysadmin()) => {
                self.visible_repositories(access, actor, last, limit + 1)
                    .await?
            }
            _ => {
                self.meta
                    .list_repositories(Page {
                        last,
                        limit: limit + 1,
                    })
                    .await?
            }
        };
        let more = names.len() > limit;
        names.truncate(limit);
        Ok(TagList { names, more, limit })
    }

    /// Up to `want` repository names after `last` that `actor` may see, reading the catalog
    /// a page at a time and asking once per project.
    async fn visible_repositories(
        &self,
        access: &Access,
        actor: &Actor,
        mut last: Option<&str>,
        want: usize,
    ) -> Result<Vec<String>, Error> {
        let mut seen: HashMap<String, bool> = HashMap::new();
        let mut out = Vec::new();
        let mut cursor: String;
        loop {
            let page = self
                .meta
                .list_repositories(Page { last, limit: 1000 })
                .await?;
            let done = page.len() < 1000;
            for name in &page {
                let project = name.split('/').next().unwrap_or(name).to_owned();
                let visible = match seen.get(&project) {
                    Some(v) => *v,
                    None => {
                        let v = access.sees_project(actor.principal(), &project).await?;
                        seen.insert(project, v);
                        v
                    }
                };
                if visible {
                    out.push(name.clone());
                    if out.len() == want {
                        return Ok(out);
                    }
                }
            }
            match page.last() {
                Some(l) if !done => {
                    cursor = l.clone();
                    last = Some(&cursor);
                }
                _ => return Ok(out),
            }
        }
    }

    /// The referrers of `subject` as an OCI image index, filtered by `artifact_type` if given.
    ///
    /// # Errors
    /// Backend errors.
    pub async fn referrers(
        &self,
        actor: &Actor,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Bytes, Error> {
        actor.require(repo, RepoActions::PULL)?;
        let referrers = self.meta.referrers(repo, subject).await?;
        let manifests: Vec<serde_json::Value> = referrers
            .into_iter()
            .filter(|r| artifact_type.is_none() || r.artifact_type.as_deref() == artifact_type)
            .map(|r| {
                let mut d = serde_json::json!({
                    "mediaType": r.media_type,
                    "digest": r.digest.to_string(),
                    "size": r.size,
                });
                if let Some(t) = r.artifact_type {
                    d["artifactType"] = t.into();
                }
                if let Some(a) = r
                    .annotations
                    .and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok())
                {
                    d["annotations"] = a;
                }
                d
            })
            .collect();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_INDEX,
            "manifests": manifests,
        });
        serde_json::to_vec(&index)
            .map(Bytes::from)
            .map_err(|e| Error::Internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::acceptable;

    #[test]
    fn accept_matching() {
        let oci = "application/vnd.oci.image.manifest.v1+json";
        assert!(acceptable(oci, &[]));
        assert!(acceptable(oci, &[oci.to_owned()]));
        assert!(acceptable(oci, &["*/*".to_owned()]));
        assert!(acceptable(oci, &["application/*".to_owned()]));
        assert!(!acceptable(
            oci,
            &["application/vnd.docker.distribution.manifest.v2+json".to_owned()]
        ));
    }
}

/// Whether a manifest read sends the body (a pull, audited and counted) or only headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// `HEAD`: an existence check.
    Head,
    /// `GET`: a pull.
    Get,
}

fn resource(repo: &RepoName, reference: &Reference) -> String {
    match reference {
        Reference::Tag(t) => format!("{repo}:{t}"),
        Reference::Digest(d) => format!("{repo}@{d}"),
    }
}
