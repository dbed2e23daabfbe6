//! The behaviour every [`MetaStore`] backend must show. Each backend's tests call [`run`],
//! [`run_access`] for the [`crate::AccessStore`] contract and [`run_retention`] for the
//! [`crate::RetentionStore`] one.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use berth_oci::{Digest, DigestAlgorithm, RepoName, Tag};

use crate::{
    GcItem, GcRun, GcScan, JobFilter, JobId, JobKind, JobLease, JobState, LeaseHolder, MetaError,
    MetaStore, NewJob, NewManifest, Page, Paging, Retry, RunAt, Upload, UploadLease, UploadSegment,
};

fn repo(s: &str) -> RepoName {
    s.parse().expect("test names are valid")
}

fn tag(s: &str) -> Tag {
    s.parse().expect("test tags are valid")
}

/// An OCI image manifest for the test suites: `content` (any bytes), addressed by their
/// sha256, referring to `blobs` and to child manifests `children`.
#[must_use]
pub fn manifest(
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
        pinned_tags: Vec::new(),
    }
}

pub mod access;
pub mod retention;
mod scrub;

pub use access::run as run_access;
pub use retention::run as run_retention;

const ALL: Page<'static> = Page {
    last: None,
    limit: 1000,
};

/// Check a database that was written at schema version 1 and then opened (migrated) by this
/// berth: its repositories got projects (version 4), its upload `u-1` of `old/app` (offset 3,
/// created at 10, updated at 20) kept its state, takes a lease (version 2) and records its
/// first segment (version 3), and the job queue works.
///
/// # Panics
/// On the first difference.
pub async fn check_upgraded_from_v1<S: MetaStore + crate::AccessStore>(meta: &S) {
    access::check_upgraded_projects(meta).await;
    let u = meta.upload(&repo("old/app"), "u-1").await.unwrap().unwrap();
    assert_eq!((u.offset, u.created_at, u.updated_at), (3, 10, 20));
    let h = LeaseHolder::new("h");
    assert_eq!(
        meta.lease_upload("u-1", &h, Duration::from_secs(5))
            .await
            .unwrap(),
        UploadLease::Granted
    );
    let job = NewJob::new(JobKind::from_static("test.upgrade"), "{}");
    assert!(meta.enqueue_job(&job).await.unwrap().is_some());
    // Its upload has no recorded segments; the next chunk records the first.
    assert!(u.segments.is_empty());
    let mut next = u.clone();
    next.offset = 5;
    let segment = UploadSegment {
        start: 3,
        token: "t1".into(),
    };
    meta.advance_upload(&next, &segment, Some(&h))
        .await
        .unwrap();
    let u = meta.upload(&repo("old/app"), "u-1").await.unwrap().unwrap();
    assert_eq!((u.offset, u.segments), (5, vec![segment]));
}

/// Exercise `meta` through the whole [`MetaStore`] contract.
///
/// # Panics
/// On the first behaviour that differs from the contract.
pub async fn run(meta: &dyn MetaStore) {
    concurrent_writes_are_independent(meta).await;
    blobs_and_links(meta).await;
    manifests_and_tags(meta).await;
    repository_delete(meta).await;
    listings(meta).await;
    referrers(meta).await;
    uploads(meta).await;
    upload_segments(meta).await;
    upload_leases(meta).await;
    stale_uploads_expire(meta).await;
    jobs_dedupe(meta).await;
    jobs_due_and_kinds(meta).await;
    jobs_claims_are_exclusive(meta).await;
    jobs_expired_leases_are_claimable_again(meta).await;
    jobs_fail_retry_and_die(meta).await;
    jobs_finish_schedules_the_next_run(meta).await;
    jobs_listing_and_pruning(meta).await;
    // Last: it collects what the cases above left behind.
    garbage_collection(meta).await;
    gc_runs(meta).await;
    scrub::run(meta).await;
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

async fn repository_delete(meta: &dyn MetaStore) {
    let (r, other) = (repo("rmrepo/app"), repo("rmrepo/app-other"));
    let layer = Digest::sha256_of(b"rmrepo-layer");
    for name in [&r, &other] {
        meta.link_blob(name, &layer, 4).await.unwrap();
        let m = manifest(name, b"{\"rm\":1}", vec![layer.clone()], vec![]);
        let idx = manifest(name, b"{\"rm\":2}", vec![], vec![m.digest.clone()]);
        meta.put_manifest(m, &[tag("v1")]).await.unwrap();
        meta.put_manifest(idx, &[tag("multi")]).await.unwrap();
    }
    assert!(meta.delete_repository(&r).await.unwrap());
    assert!(!meta.delete_repository(&r).await.unwrap());
    assert_eq!(meta.list_tags(&r, ALL).await.unwrap(), None);
    assert_eq!(meta.repo_blob(&r, &layer).await.unwrap(), None);
    assert!(meta
        .manifest_by_tag(&r, &tag("v1"))
        .await
        .unwrap()
        .is_none());
    let names = meta.list_repositories(ALL).await.unwrap();
    assert!(!names.contains(&r.to_string()), "{names:?}");
    // The blob and the repository next door are untouched.
    assert_eq!(meta.blob(&layer).await.unwrap(), Some(4));
    assert_eq!(
        meta.list_tags(&other, ALL).await.unwrap().unwrap(),
        vec!["multi".to_owned(), "v1".to_owned()]
    );
    // The name can be pushed to again.
    meta.link_blob(&r, &layer, 4).await.unwrap();
    let m = manifest(&r, b"{\"rm\":3}", vec![layer.clone()], vec![]);
    meta.put_manifest(m, &[tag("again")]).await.unwrap();
    assert_eq!(
        meta.list_tags(&r, ALL).await.unwrap().unwrap(),
        vec!["again".to_owned()]
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
        segments: Vec::new(),
        created_at: 1,
        updated_at: 2,
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
    let first = segment(0, "a1");
    meta.advance_upload(&u, &first, None).await.unwrap();
    let got = meta.upload(&r, &u.id).await.unwrap().unwrap();
    // Advancing is activity: it moves `updated_at` to now.
    assert!(got.updated_at >= unix_now() - 5, "{got:?}");
    u.updated_at = got.updated_at;
    u.segments = vec![first];
    assert_eq!(got, u);
    // A second writer that still believes offset 0 loses, and records nothing.
    assert!(matches!(
        meta.advance_upload(&u, &segment(0, "b2"), None).await,
        Err(MetaError::Conflict)
    ));
    assert_eq!(meta.upload(&r, &u.id).await.unwrap().unwrap(), u);
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

fn unix_now() -> i64 {
    crate::jobs::epoch_ms(SystemTime::now()) / 1000
}

fn new_upload(id: &str, r: &RepoName, updated_at: i64) -> Upload {
    Upload {
        id: id.into(),
        repo: r.clone(),
        offset: 0,
        algorithm: DigestAlgorithm::Sha256,
        hash_state: None,
        segments: Vec::new(),
        created_at: updated_at,
        updated_at,
    }
}

fn segment(start: u64, token: &str) -> UploadSegment {
    UploadSegment {
        start,
        token: token.into(),
    }
}

/// Each advance records the one segment that filled it, in the same step: the segments come
/// back in order of start, a refused advance (stale offset, or a fence that lost the lease)
/// records nothing, and deleting or expiring the upload removes them.
async fn upload_segments(meta: &dyn MetaStore) {
    let r = repo("segments/app");
    let id = "7f0b4e7e-4444-4c4c-9c9c-000000000001";
    let (a, b) = (holder("segments-a"), holder("segments-b"));
    let mut u = new_upload(id, &r, unix_now());
    meta.create_upload(&u).await.unwrap();
    assert!(meta
        .upload(&r, id)
        .await
        .unwrap()
        .unwrap()
        .segments
        .is_empty());
    let long = Duration::from_secs(60);
    assert_eq!(
        meta.lease_upload(id, &a, long).await.unwrap(),
        UploadLease::Granted
    );
    // Chunks of 5, 12 and 3 bytes (starts chosen to sort differently as text and number).
    let mut recorded = Vec::new();
    for (start, end, token) in [(0u64, 5u64, "first"), (5, 17, "second"), (17, 20, "third")] {
        u.offset = end;
        let seg = segment(start, token);
        // A writer without the lease, or behind the offset, is refused and records nothing.
        assert!(matches!(
            meta.advance_upload(&u, &seg, Some(&b)).await,
            Err(MetaError::Conflict)
        ));
        if start > 0 {
            assert!(matches!(
                meta.advance_upload(&u, &segment(start - 1, "behind"), Some(&a))
                    .await,
                Err(MetaError::Conflict)
            ));
        }
        meta.advance_upload(&u, &seg, Some(&a)).await.unwrap();
        recorded.push(seg);
        let got = meta.upload(&r, id).await.unwrap().unwrap();
        assert_eq!((got.offset, &got.segments), (end, &recorded));
    }
    // Listings carry them too.
    let stale = meta
        .stale_uploads(
            unix_now() + 10,
            Page {
                last: Some("7f0b4e7e-4444-"),
                limit: 10,
            },
        )
        .await
        .unwrap();
    let listed = stale.iter().find(|s| s.id == id).expect("listed");
    assert_eq!(listed.segments, recorded);

    // Deleting the upload removes its segments: a new session with the same id has none.
    meta.delete_upload(id).await.unwrap();
    meta.create_upload(&new_upload(id, &r, unix_now()))
        .await
        .unwrap();
    assert!(meta
        .upload(&r, id)
        .await
        .unwrap()
        .unwrap()
        .segments
        .is_empty());
    // And so does expiring it.
    let mut again = new_upload(id, &r, unix_now());
    again.offset = 2;
    meta.advance_upload(&again, &segment(0, "x"), None)
        .await
        .unwrap();
    assert!(meta.expire_upload(id, unix_now() + 10, None).await.unwrap());
    meta.create_upload(&new_upload(id, &r, unix_now()))
        .await
        .unwrap();
    assert!(meta
        .upload(&r, id)
        .await
        .unwrap()
        .unwrap()
        .segments
        .is_empty());
    meta.delete_upload(id).await.unwrap();
}

fn holder(name: &str) -> LeaseHolder {
    LeaseHolder::new(name)
}

/// A lease is granted when free, expired or already the caller's; only its holder releases it
/// or advances the upload under it.
async fn upload_leases(meta: &dyn MetaStore) {
    let r = repo("lease/app");
    let mut u = new_upload("7f0b4e7e-2222-4c4c-9c9c-000000000001", &r, unix_now());
    let (a, b) = (holder("lease-a"), holder("lease-b"));
    let long = Duration::from_secs(60);
    assert_eq!(
        meta.lease_upload(&u.id, &a, long).await.unwrap(),
        UploadLease::Unknown
    );
    meta.create_upload(&u).await.unwrap();
    assert_eq!(
        meta.lease_upload(&u.id, &a, long).await.unwrap(),
        UploadLease::Granted
    );
    // Renewing is granting again; another holder waits.
    assert_eq!(
        meta.lease_upload(&u.id, &a, long).await.unwrap(),
        UploadLease::Granted
    );
    assert_eq!(
        meta.lease_upload(&u.id, &b, long).await.unwrap(),
        UploadLease::Held
    );
    // Only the holder advances the upload under its lease, and only the holder releases it.
    u.offset = 4;
    assert!(matches!(
        meta.advance_upload(&u, &segment(0, "b"), Some(&b)).await,
        Err(MetaError::Conflict)
    ));
    meta.advance_upload(&u, &segment(0, "a"), Some(&a))
        .await
        .unwrap();
    meta.release_upload(&u.id, &b).await.unwrap();
    assert_eq!(
        meta.lease_upload(&u.id, &b, long).await.unwrap(),
        UploadLease::Held
    );
    meta.release_upload(&u.id, &a).await.unwrap();
    // Released: b takes it, briefly.
    assert_eq!(
        meta.lease_upload(&u.id, &b, Duration::from_millis(200))
            .await
            .unwrap(),
        UploadLease::Granted
    );
    assert_eq!(
        meta.lease_upload(&u.id, &a, long).await.unwrap(),
        UploadLease::Held
    );
    // Expired: a takes it over, and b (which stalled) can no longer advance the upload.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        meta.lease_upload(&u.id, &a, long).await.unwrap(),
        UploadLease::Granted
    );
    let mut stalled = u.clone();
    stalled.offset = 9;
    assert!(matches!(
        meta.advance_upload(&stalled, &segment(4, "b"), Some(&b))
            .await,
        Err(MetaError::Conflict)
    ));
    meta.delete_upload(&u.id).await.unwrap();
    assert_eq!(
        meta.lease_upload(&u.id, &a, long).await.unwrap(),
        UploadLease::Unknown
    );
}

/// Idle uploads are listed page by page; expiring one spares it while it is active again or
/// leased by someone else.
async fn stale_uploads_expire(meta: &dyn MetaStore) {
    let r = repo("stale/app");
    let now = unix_now();
    let ids: Vec<String> = (0..5)
        .map(|i| format!("7f0b4e7e-3333-4c4c-9c9c-00000000000{i}"))
        .collect();
    for id in &ids {
        meta.create_upload(&new_upload(id, &r, now - 1000))
            .await
            .unwrap();
    }
    let fresh = "7f0b4e7e-3333-4c4c-9c9c-0000000000ff";
    meta.create_upload(&new_upload(fresh, &r, now))
        .await
        .unwrap();
    let ours = |list: Vec<Upload>| -> Vec<String> {
        list.into_iter()
            .filter(|u| u.id.starts_with("7f0b4e7e-3333-"))
            .map(|u| {
                assert_eq!(u.repo, r);
                u.id
            })
            .collect()
    };
    // Paged by id, two at a time.
    let mut seen = Vec::new();
    let mut last: Option<String> = None;
    loop {
        let page = Page {
            last: last.as_deref(),
            limit: 2,
        };
        let got = meta.stale_uploads(now - 10, page).await.unwrap();
        if got.is_empty() {
            break;
        }
        assert!(got.len() <= 2);
        last = got.last().map(|u| u.id.clone());
        seen.extend(ours(got));
    }
    assert_eq!(seen, ids);
    // Not idle since before the cutoff: kept.
    assert!(!meta.expire_upload(fresh, now - 10, None).await.unwrap());
    // Leased by someone else: kept; leased by the caller: expired.
    let (a, b) = (holder("expire-a"), holder("expire-b"));
    assert_eq!(
        meta.lease_upload(&ids[0], &a, Duration::from_secs(60))
            .await
            .unwrap(),
        UploadLease::Granted
    );
    assert!(!meta.expire_upload(&ids[0], now - 10, None).await.unwrap());
    assert!(!meta
        .expire_upload(&ids[0], now - 10, Some(&b))
        .await
        .unwrap());
    assert!(meta
        .expire_upload(&ids[0], now - 10, Some(&a))
        .await
        .unwrap());
    // Active again since it was listed: kept.
    let mut active = new_upload(&ids[1], &r, now - 1000);
    active.offset = 1;
    meta.advance_upload(&active, &segment(0, "a"), None)
        .await
        .unwrap();
    assert!(!meta.expire_upload(&ids[1], now - 10, None).await.unwrap());
    for id in &ids[2..] {
        assert!(meta.expire_upload(id, now - 10, None).await.unwrap());
        assert!(!meta.expire_upload(id, now - 10, None).await.unwrap());
    }
    let left = ours(
        meta.stale_uploads(
            now - 10,
            Page {
                last: None,
                limit: 1000,
            },
        )
        .await
        .unwrap(),
    );
    assert!(left.is_empty(), "{left:?}");
    assert!(meta.upload(&r, &ids[1]).await.unwrap().is_some());
    assert!(meta.upload(&r, fresh).await.unwrap().is_some());
    meta.delete_upload(&ids[1]).await.unwrap();
    meta.delete_upload(fresh).await.unwrap();
}

fn kind(s: &str) -> JobKind {
    s.parse().expect("test kinds are valid")
}

const LEASE: Duration = Duration::from_secs(60);

async fn claim_one(meta: &dyn MetaStore, who: &LeaseHolder, k: &JobKind) -> Option<JobLease> {
    let mut got = meta
        .claim_jobs(who, std::slice::from_ref(k), 10, LEASE)
        .await
        .unwrap();
    assert!(got.len() <= 1, "{got:?}");
    got.pop().map(|j| j.lease)
}

async fn job_state(meta: &dyn MetaStore, id: JobId) -> JobState {
    let after = JobId(id.0 - 1);
    let jobs = meta
        .list_jobs(JobFilter {
            after: Some(after),
            limit: 1,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs[0].id, id);
    jobs[0].state
}

/// At most one unfinished job per dedupe key; finished jobs free the key.
async fn jobs_dedupe(meta: &dyn MetaStore) {
    let k = kind("test.dedupe");
    let w = holder("dedupe-worker");
    let job = NewJob::new(k.clone(), "{}").with_dedupe_key("test.dedupe/periodic");
    let first = meta
        .enqueue_job(&job)
        .await
        .unwrap()
        .expect("first is added");
    assert_eq!(meta.enqueue_job(&job).await.unwrap(), None);
    // Jobs without a key are never deduplicated.
    let plain = NewJob::new(k.clone(), "{\"n\":1}");
    let p1 = meta.enqueue_job(&plain).await.unwrap().unwrap();
    let p2 = meta.enqueue_job(&plain).await.unwrap().unwrap();
    assert_ne!(p1, p2);
    // Many instances scheduling the same job at once: one is added.
    let racers = (0..16).map(|_| meta.enqueue_job(&job));
    let added: Vec<_> = futures::future::join_all(racers)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert!(added.iter().all(Option::is_none), "{added:?}");
    // The same race on a key nobody holds yet: exactly one wins (a check-then-insert without
    // the unique index would let several through).
    let fresh = NewJob::new(kind("test.dedupe.race"), "{}").with_dedupe_key("test.dedupe/race");
    let racers = (0..16).map(|_| meta.enqueue_job(&fresh));
    let won = futures::future::join_all(racers)
        .await
        .into_iter()
        .filter(|r| r.as_ref().unwrap().is_some())
        .count();
    assert_eq!(won, 1, "one of the racers adds the job");
    // Still held while running.
    let mut claimed = meta
        .claim_jobs(&w, std::slice::from_ref(&k), 10, LEASE)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    claimed.retain(|j| j.lease.id == first);
    let lease = claimed.pop().unwrap().lease;
    assert_eq!(meta.enqueue_job(&job).await.unwrap(), None);
    assert!(meta.finish_job(&lease, None).await.unwrap());
    let again = meta.enqueue_job(&job).await.unwrap().expect("key is free");
    // A dead job frees its key too.
    let lease = claim_one(meta, &w, &k).await.unwrap();
    assert_eq!(lease.id, again);
    assert_eq!(
        meta.fail_job(&lease, "broken", Retry::Never).await.unwrap(),
        Some(JobState::Dead)
    );
    let third = meta.enqueue_job(&job).await.unwrap().expect("key is free");
    let lease = claim_one(meta, &w, &k).await.unwrap();
    assert_eq!(lease.id, third);
    assert!(meta.finish_job(&lease, None).await.unwrap());
    for id in [p1, p2] {
        assert_eq!(job_state(meta, id).await, JobState::Running);
    }
}

/// Only due jobs of the asked kinds are claimed.
async fn jobs_due_and_kinds(meta: &dyn MetaStore) {
    let (k, other) = (kind("test.due"), kind("test.due-other"));
    let w = holder("due-worker");
    let later = NewJob::new(k.clone(), "{}").with_run_at(RunAt::After(Duration::from_secs(3600)));
    let later = meta.enqueue_job(&later).await.unwrap().unwrap();
    let at_future = NewJob::new(k.clone(), "{}")
        .with_run_at(RunAt::At(SystemTime::now() + Duration::from_secs(3600)));
    meta.enqueue_job(&at_future).await.unwrap().unwrap();
    meta.enqueue_job(&NewJob::new(other.clone(), "{}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claim_one(meta, &w, &k).await, None);
    assert!(meta
        .claim_jobs(&w, &[], 10, LEASE)
        .await
        .unwrap()
        .is_empty());
    let past = NewJob::new(k.clone(), "{\"past\":true}")
        .with_run_at(RunAt::At(SystemTime::now() - Duration::from_secs(60)));
    let past = meta.enqueue_job(&past).await.unwrap().unwrap();
    let soon = NewJob::new(k.clone(), "{}").with_run_at(RunAt::After(Duration::from_millis(300)));
    let soon = meta.enqueue_job(&soon).await.unwrap().unwrap();
    let claimed = meta
        .claim_jobs(&w, std::slice::from_ref(&k), 10, LEASE)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].lease.id, past);
    assert_eq!(claimed[0].payload, "{\"past\":true}");
    assert_eq!(claimed[0].lease.attempt, 1);
    assert_eq!(claimed[0].kind, k);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(claim_one(meta, &w, &k).await.map(|l| l.id), Some(soon));
    assert_eq!(job_state(meta, later).await, JobState::Queued);
    // Both kinds in one claim.
    let both = meta
        .claim_jobs(&w, &[k.clone(), other.clone()], 10, LEASE)
        .await
        .unwrap();
    assert_eq!(both.len(), 1);
    assert_eq!(both[0].kind, other);
}

/// Many workers claiming at once: every job is claimed exactly once.
async fn jobs_claims_are_exclusive(meta: &dyn MetaStore) {
    let k = kind("test.exclusive");
    let mut ids = Vec::new();
    for i in 0..60 {
        let job = NewJob::new(k.clone(), format!("{{\"i\":{i}}}"));
        ids.push(meta.enqueue_job(&job).await.unwrap().unwrap());
    }
    let claimers = (0..8).map(|w| {
        let k = k.clone();
        async move {
            let who = holder(&format!("exclusive-{w}"));
            let mut mine = Vec::new();
            loop {
                let got = meta
                    .claim_jobs(&who, std::slice::from_ref(&k), 3, LEASE)
                    .await
                    .unwrap();
                if got.is_empty() {
                    return mine;
                }
                for j in got {
                    assert_eq!(j.lease.holder, who);
                    mine.push(j.lease);
                }
                tokio::task::yield_now().await;
            }
        }
    });
    let mut counts: HashMap<JobId, usize> = HashMap::new();
    for lease in futures::future::join_all(claimers)
        .await
        .into_iter()
        .flatten()
    {
        *counts.entry(lease.id).or_default() += 1;
        assert!(meta.finish_job(&lease, None).await.unwrap());
    }
    assert_eq!(counts.len(), ids.len(), "every job was claimed");
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    for id in ids {
        assert!(counts.contains_key(&id));
    }
}

/// A worker that stops heartbeating loses its job to the next claim, and can then neither
/// heartbeat, finish nor fail it.
async fn jobs_expired_leases_are_claimable_again(meta: &dyn MetaStore) {
    let k = kind("test.expiry");
    let (a, b) = (holder("expiry-a"), holder("expiry-b"));
    let id = meta
        .enqueue_job(&NewJob::new(k.clone(), "{}"))
        .await
        .unwrap()
        .unwrap();
    let short = Duration::from_millis(300);
    let first = meta
        .claim_jobs(&a, std::slice::from_ref(&k), 1, short)
        .await
        .unwrap()
        .pop()
        .unwrap()
        .lease;
    assert_eq!((first.id, first.attempt), (id, 1));
    // Heartbeats keep it.
    assert!(meta.extend_job_lease(&first, short).await.unwrap());
    assert_eq!(claim_one(meta, &b, &k).await, None);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = claim_one(meta, &b, &k).await.expect("claimable again");
    assert_eq!((second.id, second.attempt), (id, 2));
    assert!(!meta.extend_job_lease(&first, LEASE).await.unwrap());
    assert!(!meta.finish_job(&first, None).await.unwrap());
    assert_eq!(
        meta.fail_job(&first, "late", Retry::Never).await.unwrap(),
        None
    );
    // An earlier attempt under the same holder name is fenced off by its number.
    let stale_self = JobLease {
        attempt: 1,
        ..second.clone()
    };
    assert!(!meta.finish_job(&stale_self, None).await.unwrap());
    assert!(meta.extend_job_lease(&second, LEASE).await.unwrap());
    assert!(meta.finish_job(&second, None).await.unwrap());
    assert_eq!(job_state(meta, id).await, JobState::Done);
    assert!(!meta.finish_job(&second, None).await.unwrap());

    // A job whose last attempt's lease expired dies instead of running again.
    let once = NewJob::new(k.clone(), "{}").with_max_attempts(1);
    let once = meta.enqueue_job(&once).await.unwrap().unwrap();
    let lease = meta
        .claim_jobs(&a, std::slice::from_ref(&k), 1, Duration::from_millis(100))
        .await
        .unwrap()
        .pop()
        .unwrap()
        .lease;
    assert_eq!(lease.id, once);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(claim_one(meta, &b, &k).await, None);
    assert_eq!(job_state(meta, once).await, JobState::Dead);
}

/// A failed attempt is retried after its backoff, until the last one, which makes it dead.
async fn jobs_fail_retry_and_die(meta: &dyn MetaStore) {
    let k = kind("test.retry");
    let w = holder("retry-worker");
    let id = meta
        .enqueue_job(&NewJob::new(k.clone(), "{}").with_max_attempts(2))
        .await
        .unwrap()
        .unwrap();
    let first = claim_one(meta, &w, &k).await.unwrap();
    assert_eq!(
        meta.fail_job(
            &first,
            "try again",
            Retry::After(Duration::from_millis(300))
        )
        .await
        .unwrap(),
        Some(JobState::Queued)
    );
    // Not before its backoff.
    assert_eq!(claim_one(meta, &w, &k).await, None);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let claimed = meta
        .claim_jobs(&w, std::slice::from_ref(&k), 1, LEASE)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(claimed.lease.attempt, 2);
    assert_eq!(claimed.last_error.as_deref(), Some("try again"));
    // The last attempt failing makes it dead, whatever the retry says.
    assert_eq!(
        meta.fail_job(&claimed.lease, "still broken", Retry::After(Duration::ZERO))
            .await
            .unwrap(),
        Some(JobState::Dead)
    );
    assert_eq!(claim_one(meta, &w, &k).await, None);
    let jobs = meta
        .list_jobs(JobFilter {
            kind: Some(&k),
            state: Some(JobState::Dead),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].id, id);
    assert_eq!(jobs[0].attempts, 2);
    assert_eq!(jobs[0].last_error.as_deref(), Some("still broken"));
    assert!(jobs[0].finished_at_ms.is_some());
    assert_eq!(jobs[0].holder, None);
}

/// Finishing a periodic job enqueues its next run under the same key, atomically.
async fn jobs_finish_schedules_the_next_run(meta: &dyn MetaStore) {
    let k = kind("test.periodic");
    let w = holder("periodic-worker");
    let job = NewJob::new(k.clone(), "{}").with_dedupe_key("test.periodic");
    let first = meta.enqueue_job(&job).await.unwrap().unwrap();
    let lease = claim_one(meta, &w, &k).await.unwrap();
    let next = job
        .clone()
        .with_run_at(RunAt::After(Duration::from_millis(300)));
    assert!(meta.finish_job(&lease, Some(&next)).await.unwrap());
    // The successor holds the key and is not due yet.
    assert_eq!(meta.enqueue_job(&job).await.unwrap(), None);
    assert_eq!(claim_one(meta, &w, &k).await, None);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lease = claim_one(meta, &w, &k).await.unwrap();
    assert_ne!(lease.id, first);
    // A lost lease schedules nothing.
    let lost = JobLease {
        attempt: lease.attempt + 1,
        ..lease.clone()
    };
    assert!(!meta.finish_job(&lost, Some(&job)).await.unwrap());
    assert!(meta.finish_job(&lease, None).await.unwrap());
    assert_eq!(claim_one(meta, &w, &k).await, None);
}

/// Listings filter and page by id; pruning removes only old finished jobs.
async fn jobs_listing_and_pruning(meta: &dyn MetaStore) {
    let k = kind("test.list");
    let w = holder("list-worker");
    let mut ids = Vec::new();
    for i in 0..5 {
        let job = NewJob::new(k.clone(), format!("{{\"i\":{i}}}")).with_max_attempts(3);
        ids.push(meta.enqueue_job(&job).await.unwrap().unwrap());
    }
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = meta
            .list_jobs(JobFilter {
                kind: Some(&k),
                after,
                limit: 2,
                ..JobFilter::default()
            })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        paged.extend(page.into_iter().map(|j| {
            assert_eq!((j.kind.clone(), j.state), (k.clone(), JobState::Queued));
            assert_eq!((j.attempts, j.max_attempts), (0, 3));
            j.id
        }));
    }
    assert_eq!(paged, ids);
    // The oldest due first.
    let lease = meta
        .claim_jobs(&w, std::slice::from_ref(&k), 1, LEASE)
        .await
        .unwrap()
        .pop()
        .unwrap()
        .lease;
    assert_eq!(lease.id, ids[0]);
    let running = meta
        .list_jobs(JobFilter {
            kind: Some(&k),
            state: Some(JobState::Running),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].holder.as_ref(), Some(&w));
    assert!(running[0].lease_until_ms.is_some());
    assert!(meta.finish_job(&lease, None).await.unwrap());
    // Finished just now: younger than an hour, so kept.
    meta.prune_jobs(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(job_state(meta, ids[0]).await, JobState::Done);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(meta.prune_jobs(Duration::from_millis(1)).await.unwrap() >= 1);
    let left = meta
        .list_jobs(JobFilter {
            kind: Some(&k),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        left.iter().map(|j| j.id).collect::<Vec<_>>(),
        ids[1..].to_vec()
    );
}

#[derive(Clone, Copy)]
enum Step {
    Manifests,
    Links,
    Blobs,
}

/// Run one GC step over everything, in windows of 2 (so the cursor is exercised).
async fn gc_step(meta: &dyn MetaStore, step: Step, cutoff_ms: i64, dry_run: bool) -> Vec<GcItem> {
    let mut after: Option<String> = None;
    let mut items = Vec::new();
    loop {
        let scan = GcScan {
            after: after.as_deref(),
            limit: 2,
            cutoff_ms,
            dry_run,
        };
        let batch = match step {
            Step::Manifests => meta.gc_manifests(scan).await,
            Step::Links => meta.gc_links(scan).await,
            Step::Blobs => meta.gc_mark_blobs(scan).await,
        }
        .unwrap();
        assert!(batch.scanned <= 2);
        items.extend(batch.items);
        match batch.next {
            Some(n) => after = Some(n),
            None => return items,
        }
    }
}

fn digests(items: &[GcItem]) -> Vec<Digest> {
    items.iter().map(|i| i.digest.clone()).collect()
}

async fn garbage_collection(meta: &dyn MetaStore) {
    let r = repo("gc/app");
    let layer = |n: &str| Digest::sha256_of(format!("gc-layer-{n}").as_bytes());
    let (l1, l2, l3, l4) = (layer("1"), layer("2"), layer("3"), layer("4"));
    for (d, size) in [(&l1, 10), (&l2, 20), (&l3, 30), (&l4, 40)] {
        meta.link_blob(&r, d, size).await.unwrap();
    }
    // l4: a blob no repository links any more.
    assert!(meta.unlink_blob(&r, &l4).await.unwrap());
    let m1 = manifest(&r, b"{\"gc\":1}", vec![l1.clone()], vec![]);
    let m2 = manifest(&r, b"{\"gc\":2}", vec![l2.clone()], vec![]);
    let m3 = manifest(&r, b"{\"gc\":3}", vec![l1.clone()], vec![]);
    meta.put_manifest(m1.clone(), &[tag("kept")]).await.unwrap();
    meta.put_manifest(m2.clone(), &[]).await.unwrap();
    meta.put_manifest(m3.clone(), &[]).await.unwrap();
    // An index keeps its untagged child m3; a referrer keeps itself while its subject lives.
    let idx = manifest(&r, b"{\"gc\":\"idx\"}", vec![], vec![m3.digest.clone()]);
    meta.put_manifest(idx.clone(), &[tag("multi")])
        .await
        .unwrap();
    let mut sig = manifest(&r, b"{\"gc\":\"sig\"}", vec![], vec![]);
    sig.subject = Some(m1.digest.clone());
    meta.put_manifest(sig.clone(), &[]).await.unwrap();

    let now = crate::jobs::epoch_ms(SystemTime::now());
    let (recent, everything) = (now - 3_600_000, now + 3_600_000);
    // Everything was touched within the grace period: nothing may go.
    for step in [Step::Manifests, Step::Links, Step::Blobs] {
        let items = gc_step(meta, step, recent, false).await;
        assert!(
            !items
                .iter()
                .any(|i| [&l1, &l2, &l3, &l4, &m1.digest, &m2.digest].contains(&&i.digest)),
            "collected inside the grace period: {items:?}"
        );
    }

    // A dry run reports and changes nothing; it counts blobs whose links would all go.
    let would = digests(&gc_step(meta, Step::Manifests, everything, true).await);
    assert!(would.contains(&m2.digest), "{would:?}");
    for kept in [&m1.digest, &m3.digest, &idx.digest, &sig.digest] {
        assert!(!would.contains(kept), "{kept} would go: {would:?}");
    }
    assert!(meta
        .manifest_by_digest(&r, &m2.digest)
        .await
        .unwrap()
        .is_some());
    let would = digests(&gc_step(meta, Step::Blobs, everything, true).await);
    assert!(would.contains(&l3) && would.contains(&l4), "{would:?}");
    assert!(!would.contains(&l1), "{would:?}");
    assert_eq!(meta.repo_blob(&r, &l3).await.unwrap(), Some(30));

    // Untagged m2 goes (its tags and references with it); the rest stays.
    let gone = gc_step(meta, Step::Manifests, everything, false).await;
    assert!(digests(&gone).contains(&m2.digest));
    let item = gone.iter().find(|i| i.digest == m2.digest).unwrap();
    assert_eq!(item.repo.as_deref(), Some("gc/app"));
    assert_eq!(item.size, m2.content.len() as u64);
    assert!(meta
        .manifest_by_digest(&r, &m2.digest)
        .await
        .unwrap()
        .is_none());
    for kept in [&m1.digest, &m3.digest, &idx.digest, &sig.digest] {
        assert!(
            meta.manifest_by_digest(&r, kept).await.unwrap().is_some(),
            "{kept}"
        );
    }

    // Links no manifest names go: l2 (m2 is gone) and l3; l1 stays.
    let unlinked = digests(&gc_step(meta, Step::Links, everything, false).await);
    assert!(
        unlinked.contains(&l2) && unlinked.contains(&l3),
        "{unlinked:?}"
    );
    assert!(!unlinked.contains(&l1));
    assert_eq!(meta.repo_blob(&r, &l1).await.unwrap(), Some(10));
    assert_eq!(meta.repo_blob(&r, &l2).await.unwrap(), None);

    // Unlinked blobs are marked: invisible, not linkable, not reservable.
    let marked = gc_step(meta, Step::Blobs, everything, false).await;
    let marked_digests = digests(&marked);
    for d in [&l2, &l3, &l4] {
        assert!(
            marked_digests.contains(d),
            "{d} not marked: {marked_digests:?}"
        );
    }
    assert!(!marked_digests.contains(&l1));
    assert_eq!(marked.iter().find(|i| i.digest == l3).unwrap().size, 30);
    assert_eq!(meta.blob(&l3).await.unwrap(), None);
    assert!(matches!(
        meta.link_blob(&r, &l3, 30).await,
        Err(MetaError::Conflict)
    ));
    assert!(!meta.reserve_blob(&l3, 30).await.unwrap());
    let listed = digests(&meta.gc_marked_blobs(1000).await.unwrap());
    assert!(
        [&l2, &l3, &l4].iter().all(|d| listed.contains(d)),
        "{listed:?}"
    );
    assert_eq!(
        meta.gc_known_blobs(&[l1.clone(), l3.clone(), Digest::sha256_of(b"never")])
            .await
            .unwrap()
            .len(),
        2
    );

    // Forgotten (their bytes deleted), they may come back: reserved first (still invisible),
    // then linked.
    assert_eq!(
        meta.gc_forget_blobs(&[l2.clone(), l3.clone(), l4.clone()])
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        meta.gc_forget_blobs(std::slice::from_ref(&l2))
            .await
            .unwrap(),
        0
    );
    assert!(meta
        .gc_known_blobs(std::slice::from_ref(&l3))
        .await
        .unwrap()
        .is_empty());
    assert!(meta.reserve_blob(&l3, 30).await.unwrap());
    assert_eq!(meta.blob(&l3).await.unwrap(), None);
    assert!(
        !meta.gc_claim_orphan(&l3, 30).await.unwrap(),
        "a pending row is not an orphan"
    );
    meta.link_blob(&r, &l3, 30).await.unwrap();
    assert_eq!(meta.repo_blob(&r, &l3).await.unwrap(), Some(30));
    assert!(meta.reserve_blob(&l1, 10).await.unwrap());

    // Bytes nobody recorded are claimed once, then forgotten like any marked blob.
    let orphan = Digest::sha256_of(b"gc-orphan");
    assert!(meta.gc_claim_orphan(&orphan, 7).await.unwrap());
    assert!(!meta.gc_claim_orphan(&orphan, 7).await.unwrap());
    assert_eq!(meta.blob(&orphan).await.unwrap(), None);
    assert!(digests(&meta.gc_marked_blobs(1000).await.unwrap()).contains(&orphan));
    assert_eq!(meta.gc_forget_blobs(&[orphan]).await.unwrap(), 1);

    // A referrer whose subject is gone goes in a later run; so does an index's child once
    // the index is gone.
    assert!(meta.delete_manifest(&r, &m1.digest).await.unwrap());
    assert!(meta.delete_manifest(&r, &idx.digest).await.unwrap());
    let gone = digests(&gc_step(meta, Step::Manifests, everything, false).await);
    assert!(
        gone.contains(&sig.digest) && gone.contains(&m3.digest),
        "{gone:?}"
    );
}

async fn gc_runs(meta: &dyn MetaStore) {
    let first = meta
        .create_gc_run(&GcRun::new("manual", true, false, 60))
        .await
        .unwrap();
    assert_eq!(first.status, "pending");
    assert_eq!(first.phase, "links");
    assert!(first.dry_run && !first.delete_untagged);
    let mut second = meta
        .create_gc_run(&GcRun::new("schedule", false, true, 7200))
        .await
        .unwrap();
    assert!(second.id > first.id);
    assert_eq!(second.phase, "manifests");
    second.status = "success".into();
    second.phase = "done".into();
    second.cursor = Some("3/sha256:ab".into());
    second.manifests_deleted = 4;
    second.links_deleted = 5;
    second.blobs_deleted = 6;
    second.bytes_freed = 1 << 40;
    second.scanned = 123_456;
    second.errors = 1;
    second.last_error = Some("disk on fire".into());
    second.finished_ms = Some(second.created_ms + 1500);
    meta.save_gc_run(&second).await.unwrap();
    let got = meta.gc_run(second.id).await.unwrap().unwrap();
    assert_eq!(
        (
            got.status.as_str(),
            got.cursor.as_deref(),
            got.bytes_freed,
            got.grace_seconds
        ),
        ("success", Some("3/sha256:ab"), 1 << 40, 7200)
    );
    assert_eq!(
        (got.manifests_deleted, got.links_deleted, got.blobs_deleted),
        (4, 5, 6)
    );
    assert_eq!((got.scanned, got.errors), (123_456, 1));
    assert_eq!(got.last_error.as_deref(), Some("disk on fire"));
    assert_eq!(got.finished_ms, second.finished_ms);
    // A stop request survives the worker's next progress save, until the run ends.
    let mut third = meta
        .create_gc_run(&GcRun::new("manual", false, false, 60))
        .await
        .unwrap();
    let mut asked = third.clone();
    asked.status = "stopping".into();
    meta.save_gc_run(&asked).await.unwrap();
    third.status = "running".into();
    third.scanned = 10;
    meta.save_gc_run(&third).await.unwrap();
    let got = meta.gc_run(third.id).await.unwrap().unwrap();
    assert_eq!((got.status.as_str(), got.scanned), ("stopping", 10));
    third.status = "stopped".into();
    meta.save_gc_run(&third).await.unwrap();
    assert_eq!(
        meta.gc_run(third.id).await.unwrap().unwrap().status,
        "stopped"
    );
    assert!(meta.gc_run(second.id + 1000).await.unwrap().is_none());
    let mut missing = second.clone();
    missing.id += 1000;
    assert!(matches!(
        meta.save_gc_run(&missing).await,
        Err(MetaError::NotFound(_))
    ));
    let page = meta
        .list_gc_runs(Paging {
            offset: 0,
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(page.total, 3);
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].id, third.id, "newest first");
}

/// A database made for one test on a PostgreSQL cluster, dropped when this value is dropped
/// (also while a failing test unwinds), so that a long-lived development cluster does not
/// collect one database per test run; `scripts/test.sh` checks that none is left.
/// `BERTH_TEST_KEEP_DATABASES` (set to anything) keeps them, to look into a failure. Runs
/// `psql`.
#[derive(Debug)]
pub struct ScratchDatabase {
    admin: String,
    name: String,
    url: String,
}

impl ScratchDatabase {
    /// Create database `name` (letters, digits and underscores only) on the cluster `admin`
    /// names (a URL whose role may create databases), replacing one of that name.
    ///
    /// # Panics
    /// If `name` is not such a name, or `psql` fails.
    #[must_use]
    pub fn create(admin: &str, name: &str) -> Self {
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "database name {name:?}"
        );
        let out = std::process::Command::new("psql")
            .arg(admin)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!("DROP DATABASE IF EXISTS {name}"))
            .arg("-c")
            .arg(format!("CREATE DATABASE {name}"))
            .output()
            .expect("run psql (postgresql-client)");
        assert!(
            out.status.success(),
            "create database {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let base = admin.rsplit_once('/').expect("database URL has a path").0;
        Self {
            admin: admin.to_owned(),
            name: name.to_owned(),
            url: format!("{base}/{name}"),
        }
    }

    /// The database's URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        if std::env::var_os("BERTH_TEST_KEEP_DATABASES").is_some() {
            return;
        }
        // Best effort: the cluster may be gone already (a fault test stops its own). FORCE
        // ends the connections a pool or a killed server's backend still holds.
        let dropped = std::process::Command::new("psql")
            .arg(&self.admin)
            .args(["-X", "-q", "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
        match dropped {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "could not drop test database {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("could not drop test database {}: {e}", self.name),
        }
    }
}
