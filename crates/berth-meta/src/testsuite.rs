//! The behaviour every [`MetaStore`] backend must show. Each backend's tests call [`run`].

use berth_oci::{Digest, DigestAlgorithm, RepoName, Tag};

use crate::{MetaError, MetaStore, NewManifest, Page, Upload};

fn repo(s: &str) -> RepoName {
    s.parse().expect("test names are valid")
}

fn tag(s: &str) -> Tag {
    s.parse().expect("test tags are valid")
}

fn manifest(
    r: &RepoName,
    content: &[u8],
    blobs: Vec<Digest>,
    children: Vec<Digest>,
) -> NewManifest {
    NewManifest {
        repo: r.clone(),
        digest: Digest::sha256_of(content),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        artifact_type: None,
        subject: None,
        annotations: None,
        content: content.to_vec(),
        blobs,
        manifests: children,
    }
}

const ALL: Page<'static> = Page {
    last: None,
    limit: 1000,
};

/// Exercise `meta` through the whole [`MetaStore`] contract.
///
/// # Panics
/// On the first behaviour that differs from the contract.
pub async fn run(meta: &dyn MetaStore) {
    concurrent_writes_are_independent(meta).await;
    blobs_and_links(meta).await;
    manifests_and_tags(meta).await;
    listings(meta).await;
    referrers(meta).await;
    uploads(meta).await;
}

async fn blobs_and_links(meta: &dyn MetaStore) {
    let (a, b) = (repo("links/a"), repo("links/b"));
    let d = Digest::sha256_of(b"layer");
    assert_eq!(meta.blob(&d).await.unwrap(), None);
    meta.link_blob(&a, &d, 5).await.unwrap();
    meta.link_blob(&a, &d, 5).await.unwrap();
    assert_eq!(meta.repo_blob(&a, &d).await.unwrap(), Some(5));
    assert_eq!(meta.repo_blob(&b, &d).await.unwrap(), None);
    assert_eq!(meta.blob(&d).await.unwrap(), Some(5));
    assert_eq!(meta.repos_with_blob(&d, 10).await.unwrap(), vec![a.clone()]);
    assert!(meta.unlink_blob(&a, &d).await.unwrap());
    assert!(!meta.unlink_blob(&a, &d).await.unwrap());
    assert_eq!(meta.repo_blob(&a, &d).await.unwrap(), None);
}

async fn manifests_and_tags(meta: &dyn MetaStore) {
    let r = repo("mf/app");
    let layer = Digest::sha256_of(b"mf-layer");
    let m = manifest(&r, b"{\"m\":1}", vec![layer.clone()], vec![]);
    // A missing blob refuses the manifest and writes nothing.
    assert!(matches!(
        meta.put_manifest(m.clone(), &[tag("v1")]).await,
        Err(MetaError::MissingBlob(d)) if d == layer
    ));
    assert!(meta
        .manifest_by_tag(&r, &tag("v1"))
        .await
        .unwrap()
        .is_none());
    meta.link_blob(&r, &layer, 8).await.unwrap();
    meta.put_manifest(m.clone(), &[tag("v1"), tag("latest")])
        .await
        .unwrap();
    let got = meta
        .manifest_by_tag(&r, &tag("latest"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.digest, m.digest);
    assert_eq!(got.content, m.content);
    assert_eq!(
        meta.manifest_by_digest(&r, &m.digest)
            .await
            .unwrap()
            .unwrap()
            .media_type,
        m.media_type
    );
    // Re-putting the same manifest is idempotent; moving a tag is one step.
    meta.put_manifest(m.clone(), &[]).await.unwrap();
    let m2 = manifest(&r, b"{\"m\":2}", vec![layer.clone()], vec![]);
    meta.put_manifest(m2.clone(), &[tag("latest")])
        .await
        .unwrap();
    assert_eq!(
        meta.manifest_by_tag(&r, &tag("latest"))
            .await
            .unwrap()
            .unwrap()
            .digest,
        m2.digest
    );
    // An index needs its children in the same repository.
    let idx = manifest(&r, b"{\"i\":1}", vec![], vec![m.digest.clone()]);
    meta.put_manifest(idx, &[tag("multi")]).await.unwrap();
    let orphan = manifest(&r, b"{\"i\":2}", vec![], vec![Digest::sha256_of(b"nope")]);
    assert!(matches!(
        meta.put_manifest(orphan, &[]).await,
        Err(MetaError::MissingManifest(_))
    ));
    // Deleting a tag keeps the manifest; deleting the manifest takes its tags.
    assert!(meta.delete_tag(&r, &tag("v1")).await.unwrap());
    assert!(!meta.delete_tag(&r, &tag("v1")).await.unwrap());
    assert!(meta
        .manifest_by_digest(&r, &m.digest)
        .await
        .unwrap()
        .is_some());
    assert!(meta.delete_manifest(&r, &m2.digest).await.unwrap());
    assert!(!meta.delete_manifest(&r, &m2.digest).await.unwrap());
    assert!(meta
        .manifest_by_tag(&r, &tag("latest"))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        meta.list_tags(&r, ALL).await.unwrap().unwrap(),
        vec!["multi".to_owned()]
    );
}

async fn listings(meta: &dyn MetaStore) {
    let r = repo("list/app");
    assert!(meta.list_tags(&r, ALL).await.unwrap().is_none());
    let m = manifest(&r, b"{\"l\":1}", vec![], vec![]);
    let tags: Vec<Tag> = ["b", "a", "c", "a1"].into_iter().map(tag).collect();
    meta.put_manifest(m, &tags).await.unwrap();
    assert_eq!(
        meta.list_tags(&r, ALL).await.unwrap().unwrap(),
        ["a", "a1", "b", "c"]
    );
    let page = Page {
        last: Some("a1"),
        limit: 1,
    };
    assert_eq!(meta.list_tags(&r, page).await.unwrap().unwrap(), ["b"]);
    let repos = meta.list_repositories(ALL).await.unwrap();
    assert!(repos.contains(&"list/app".to_owned()));
    let mut sorted = repos.clone();
    sorted.sort();
    assert_eq!(repos, sorted);
    let after = meta
        .list_repositories(Page {
            last: Some("list/app"),
            limit: 100,
        })
        .await
        .unwrap();
    assert!(after.iter().all(|n| n.as_str() > "list/app"));
}

async fn referrers(meta: &dyn MetaStore) {
    let r = repo("ref/app");
    let subject = manifest(&r, b"{\"s\":1}", vec![], vec![]);
    meta.put_manifest(subject.clone(), &[]).await.unwrap();
    let mut sig = manifest(&r, b"{\"sig\":1}", vec![], vec![]);
    sig.subject = Some(subject.digest.clone());
    sig.artifact_type = Some("application/x-sig".into());
    sig.annotations = Some("{\"k\":\"v\"}".into());
    meta.put_manifest(sig.clone(), &[]).await.unwrap();
    let refs = meta.referrers(&r, &subject.digest).await.unwrap();
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].digest, sig.digest);
    assert_eq!(refs[0].artifact_type.as_deref(), Some("application/x-sig"));
    assert_eq!(refs[0].size, sig.content.len() as u64);
    assert!(meta
        .referrers(&repo("ref/other"), &subject.digest)
        .await
        .unwrap()
        .is_empty());
}

async fn uploads(meta: &dyn MetaStore) {
    let r = repo("up/app");
    let mut u = Upload {
        id: "7f0b4e7e-1111-4c4c-9c9c-000000000001".into(),
        repo: r.clone(),
        offset: 0,
        algorithm: DigestAlgorithm::Sha256,
        hash_state: None,
        created_at: 1,
    };
    meta.create_upload(&u).await.unwrap();
    assert_eq!(meta.upload(&r, &u.id).await.unwrap().unwrap(), u);
    assert!(meta
        .upload(&repo("up/other"), &u.id)
        .await
        .unwrap()
        .is_none());
    u.offset = 10;
    u.hash_state = Some(vec![1, 2, 3]);
    meta.advance_upload(&u, 0).await.unwrap();
    assert_eq!(meta.upload(&r, &u.id).await.unwrap().unwrap(), u);
    // A second writer that still believes offset 0 loses.
    assert!(matches!(
        meta.advance_upload(&u, 0).await,
        Err(MetaError::Conflict)
    ));
    meta.delete_upload(&u.id).await.unwrap();
    assert!(meta.upload(&r, &u.id).await.unwrap().is_none());
}

/// Many writes at once (a backend may batch them): each one that fails leaves no trace, each
/// one that succeeds is there.
async fn concurrent_writes_are_independent(meta: &dyn MetaStore) {
    let r = repo("batch/app");
    let layer = Digest::sha256_of(b"batch-layer");
    meta.link_blob(&r, &layer, 11).await.unwrap();
    let writes = (0..64u32).map(|i| {
        let blobs = if i % 2 == 0 {
            vec![layer.clone()]
        } else {
            vec![Digest::sha256_of(format!("missing {i}").as_bytes())]
        };
        let m = manifest(&r, format!("{{\"b\":{i}}}").as_bytes(), blobs, vec![]);
        async move { (i, meta.put_manifest(m, &[tag(&format!("t{i}"))]).await) }
    });
    for (i, result) in futures::future::join_all(writes).await {
        assert_eq!(result.is_ok(), i % 2 == 0, "write {i}: {result:?}");
    }
    let tags = meta.list_tags(&r, ALL).await.unwrap().unwrap();
    assert_eq!(tags.len(), 32);
    assert!(tags.iter().all(|t| t[1..].parse::<u32>().unwrap() % 2 == 0));
}
