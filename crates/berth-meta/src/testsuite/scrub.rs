//! The scrub part of the [`MetaStore`] contract ([`crate::scrub`]): runs, findings, the
//! listings each phase walks, the reference check and withdrawing a blob.

use berth_oci::Digest;

use super::{manifest, repo, tag};
use crate::{MetaError, MetaStore, Paging, ScrubFinding, ScrubFindingKind, ScrubRun};

/// Run every scrub case. The store may hold rows of other cases: each looks at its own.
pub(super) async fn run(meta: &dyn MetaStore) {
    listings(meta).await;
    missing_refs(meta).await;
    withdraw(meta).await;
    runs(meta).await;
    findings(meta).await;
}

/// Every live blob, in digest order, `limit` at a time.
async fn all_blobs(meta: &dyn MetaStore, limit: usize) -> Vec<(Digest, u64)> {
    let mut out = Vec::new();
    let mut after: Option<Digest> = None;
    loop {
        let page = meta.scrub_blobs(after.as_ref(), limit).await.unwrap();
        assert!(page.len() <= limit);
        let done = page.len() < limit;
        after = page.last().map(|b| b.digest.clone());
        out.extend(page.into_iter().map(|b| (b.digest, b.size)));
        if done {
            return out;
        }
    }
}

async fn listings(meta: &dyn MetaStore) {
    let r = repo("scrub/list");
    let layers: Vec<Digest> = (0..5)
        .map(|i| Digest::sha256_of(format!("scrub-list-{i}").as_bytes()))
        .collect();
    for (i, d) in layers.iter().enumerate() {
        meta.link_blob(&r, d, 100 + i as u64).await.unwrap();
    }
    // A pending row (an upload about to store it) is not checked: it has no bytes yet.
    let pending = Digest::sha256_of(b"scrub-list-pending");
    assert!(meta.reserve_blob(&pending, 9).await.unwrap());
    let listed = all_blobs(meta, 2).await;
    let mut sorted = listed.clone();
    sorted.sort_by_key(|a| a.0.to_string());
    assert_eq!(listed, sorted, "digest order");
    for (i, d) in layers.iter().enumerate() {
        assert!(listed.contains(&(d.clone(), 100 + i as u64)), "{d} missing");
    }
    assert!(!listed.iter().any(|(d, _)| d == &pending));
    assert_eq!(all_blobs(meta, 1000).await, listed, "pages make the whole");

    // Manifests of every repository with their content, two at a time.
    let other = repo("scrub/list2");
    meta.link_blob(&other, &layers[0], 100).await.unwrap();
    let mut ours = Vec::new();
    for (r, n) in [(&r, 1), (&r, 2), (&other, 3)] {
        let m = manifest(
            r,
            format!("{{\"scrub\":{n}}}").as_bytes(),
            vec![layers[0].clone()],
            vec![],
        );
        meta.put_manifest(m.clone(), &[tag("t")]).await.unwrap();
        ours.push(m);
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let batch = meta.scrub_manifests(after.as_deref(), 2).await.unwrap();
        assert!(batch.items.len() <= 2);
        seen.extend(batch.items);
        match batch.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    for m in &ours {
        let got = seen
            .iter()
            .filter(|s| s.digest == m.digest && s.repo == m.repo)
            .collect::<Vec<_>>();
        assert_eq!(got.len(), 1, "{} in {}: {got:?}", m.digest, m.repo);
        assert_eq!(got[0].content, m.content);
        assert_eq!(got[0].media_type, m.media_type);
    }
}

async fn missing_refs(meta: &dyn MetaStore) {
    let r = repo("scrub/refs");
    let (linked, unlinked, unknown) = (
        Digest::sha256_of(b"scrub-refs-linked"),
        Digest::sha256_of(b"scrub-refs-unlinked"),
        Digest::sha256_of(b"scrub-refs-unknown"),
    );
    meta.link_blob(&r, &linked, 1).await.unwrap();
    // Linked into another repository only.
    meta.link_blob(&repo("scrub/elsewhere"), &unlinked, 1)
        .await
        .unwrap();
    let child = manifest(&r, b"{\"scrub\":\"child\"}", vec![linked.clone()], vec![]);
    meta.put_manifest(child.clone(), &[]).await.unwrap();
    let absent_child = Digest::sha256_of(b"scrub-refs-no-child");
    let missing = meta
        .scrub_missing_refs(
            &r,
            &[linked.clone(), unlinked.clone(), unknown.clone()],
            &[child.digest.clone(), absent_child.clone()],
        )
        .await
        .unwrap();
    assert_eq!(missing.blobs, vec![unlinked, unknown]);
    assert_eq!(missing.manifests, vec![absent_child]);
    let none = meta
        .scrub_missing_refs(&repo("scrub/no-such-repo"), &[], &[])
        .await
        .unwrap();
    assert!(none.blobs.is_empty() && none.manifests.is_empty());
    let all = meta
        .scrub_missing_refs(
            &repo("scrub/no-such-repo"),
            std::slice::from_ref(&linked),
            std::slice::from_ref(&child.digest),
        )
        .await
        .unwrap();
    assert_eq!(
        (all.blobs, all.manifests),
        (vec![linked], vec![child.digest])
    );
}

async fn withdraw(meta: &dyn MetaStore) {
    let (a, b) = (repo("scrub/wd-a"), repo("scrub/wd-b"));
    let bad = Digest::sha256_of(b"scrub-withdrawn");
    meta.link_blob(&a, &bad, 15).await.unwrap();
    meta.link_blob(&b, &bad, 15).await.unwrap();
    let m = manifest(&a, b"{\"scrub\":\"wd\"}", vec![bad.clone()], vec![]);
    meta.put_manifest(m.clone(), &[tag("v1")]).await.unwrap();

    assert!(meta.scrub_withdraw_blob(&bad).await.unwrap());
    // Invisible at once, in every repository; its links are gone; nothing may link or
    // reserve it until its row is forgotten.
    assert_eq!(meta.blob(&bad).await.unwrap(), None);
    assert_eq!(meta.repo_blob(&a, &bad).await.unwrap(), None);
    assert_eq!(meta.repo_blob(&b, &bad).await.unwrap(), None);
    assert!(meta.repos_with_blob(&bad, 10).await.unwrap().is_empty());
    assert!(!all_blobs(meta, 1000).await.iter().any(|(d, _)| d == &bad));
    assert!(matches!(
        meta.link_blob(&a, &bad, 15).await,
        Err(MetaError::Conflict)
    ));
    assert!(!meta.reserve_blob(&bad, 15).await.unwrap());
    assert!(!meta.scrub_withdraw_blob(&bad).await.unwrap(), "not live");
    assert!(!meta
        .scrub_withdraw_blob(&Digest::sha256_of(b"scrub-never"))
        .await
        .unwrap());
    // The manifest stays, now naming a blob its repository lacks.
    assert!(meta
        .manifest_by_digest(&a, &m.digest)
        .await
        .unwrap()
        .is_some());
    let missing = meta
        .scrub_missing_refs(&a, std::slice::from_ref(&bad), &[])
        .await
        .unwrap();
    assert_eq!(missing.blobs, vec![bad.clone()]);

    // Forgotten (its bytes moved away), it comes back like any new blob: a re-push heals.
    assert_eq!(
        meta.gc_forget_blobs(std::slice::from_ref(&bad))
            .await
            .unwrap(),
        1
    );
    assert!(meta.reserve_blob(&bad, 15).await.unwrap());
    meta.link_blob(&a, &bad, 15).await.unwrap();
    assert_eq!(meta.repo_blob(&a, &bad).await.unwrap(), Some(15));
    assert!(meta
        .scrub_missing_refs(&a, std::slice::from_ref(&bad), &[])
        .await
        .unwrap()
        .blobs
        .is_empty());
}

async fn runs(meta: &dyn MetaStore) {
    let first = meta.create_scrub_run(&ScrubRun::new(false)).await.unwrap();
    assert!(first.id > 0);
    assert_eq!(
        (first.status.as_str(), first.phase.as_str(), first.repair),
        ("pending", "blobs", false)
    );
    assert_eq!((first.findings, first.repaired, first.errors), (0, 0, 0));
    // Its totals are what there is now.
    let live = all_blobs(meta, 1000).await.len() as u64;
    assert_eq!(first.blobs_total, live);
    let mut manifests = 0;
    let mut after: Option<String> = None;
    loop {
        let batch = meta.scrub_manifests(after.as_deref(), 100).await.unwrap();
        manifests += batch.items.len() as u64;
        match batch.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(first.manifests_total, manifests);
    let r = repo("scrub/runs");
    meta.link_blob(&r, &Digest::sha256_of(b"scrub-runs-1"), 1)
        .await
        .unwrap();
    let mut second = meta.create_scrub_run(&ScrubRun::new(true)).await.unwrap();
    assert!(second.id > first.id);
    assert!(second.repair);
    assert_eq!(second.blobs_total, live + 1);

    second.status = "success".into();
    second.phase = "done".into();
    second.cursor = Some("7/sha256:ab".into());
    second.blobs_checked = 12;
    second.bytes_checked = 1 << 40;
    second.manifests_checked = 34;
    second.errors = 2;
    second.last_error = Some("disk on fire".into());
    second.finished_ms = Some(second.created_ms + 1500);
    // Totals and counts of findings are not the saver's to change.
    second.blobs_total = 999;
    second.findings = 999;
    meta.save_scrub_run(&second).await.unwrap();
    let got = meta.scrub_run(second.id).await.unwrap().unwrap();
    assert_eq!(
        (
            got.status.as_str(),
            got.phase.as_str(),
            got.cursor.as_deref()
        ),
        ("success", "done", Some("7/sha256:ab"))
    );
    assert_eq!(
        (got.blobs_checked, got.bytes_checked, got.manifests_checked),
        (12, 1 << 40, 34)
    );
    assert_eq!(
        (got.errors, got.last_error.as_deref()),
        (2, Some("disk on fire"))
    );
    assert_eq!(got.finished_ms, second.finished_ms);
    assert_eq!((got.blobs_total, got.findings), (live + 1, 0));
    assert!(got.updated_ms >= got.created_ms);

    // A stop request survives the worker's next progress save, until the run ends.
    let mut third = meta.create_scrub_run(&ScrubRun::new(false)).await.unwrap();
    let mut asked = third.clone();
    asked.status = "stopping".into();
    meta.save_scrub_run(&asked).await.unwrap();
    third.status = "running".into();
    third.blobs_checked = 10;
    meta.save_scrub_run(&third).await.unwrap();
    let got = meta.scrub_run(third.id).await.unwrap().unwrap();
    assert_eq!((got.status.as_str(), got.blobs_checked), ("stopping", 10));
    third.status = "stopped".into();
    meta.save_scrub_run(&third).await.unwrap();
    assert_eq!(
        meta.scrub_run(third.id).await.unwrap().unwrap().status,
        "stopped"
    );

    assert!(meta.scrub_run(third.id + 1000).await.unwrap().is_none());
    let mut missing = third.clone();
    missing.id += 1000;
    assert!(matches!(
        meta.save_scrub_run(&missing).await,
        Err(MetaError::NotFound(_))
    ));
    let page = meta
        .list_scrub_runs(Paging {
            offset: 0,
            limit: 2,
        })
        .await
        .unwrap();
    assert!(page.total >= 3);
    assert_eq!(page.items.len(), 2);
    assert_eq!(page.items[0].id, third.id, "newest first");
    assert_eq!(page.items[1].id, second.id);
    assert_eq!(page.items[1].blobs_checked, 12);
}

async fn findings(meta: &dyn MetaStore) {
    let run = meta.create_scrub_run(&ScrubRun::new(true)).await.unwrap();
    let r = repo("scrub/findings");
    let (blob, gone, m) = (
        Digest::sha256_of(b"scrub-f-blob"),
        Digest::sha256_of(b"scrub-f-gone"),
        Digest::sha256_of(b"scrub-f-manifest"),
    );
    let corrupt = ScrubFinding::new(
        run.id,
        ScrubFindingKind::Corrupt,
        blob.clone(),
        "hashes to x",
    );
    let missing = ScrubFinding::new(run.id, ScrubFindingKind::Missing, gone.clone(), "no bytes");
    let dangling = ScrubFinding::new(
        run.id,
        ScrubFindingKind::ManifestBlobMissing,
        m.clone(),
        "names a missing blob",
    )
    .in_repo(&r)
    .with_target(&gone);
    meta.add_scrub_findings(&[corrupt.clone(), missing.clone(), dangling.clone()])
        .await
        .unwrap();
    // The same manifest naming a second missing blob is a finding of its own.
    let dangling2 = dangling.clone().with_target(&blob);
    // Recorded again (a batch done twice after a crash), now repaired: one finding, repaired.
    let mut repaired = corrupt.clone();
    repaired.repaired = true;
    repaired.detail = "hashes to x; quarantined".into();
    meta.add_scrub_findings(&[repaired, dangling2.clone()])
        .await
        .unwrap();
    // And once more unrepaired (a late duplicate): it stays repaired.
    meta.add_scrub_findings(std::slice::from_ref(&corrupt))
        .await
        .unwrap();
    meta.add_scrub_findings(&[]).await.unwrap();

    let all = meta.scrub_findings(run.id, Paging::ALL).await.unwrap();
    assert_eq!(all.total, 4);
    let got: Vec<_> = all
        .items
        .iter()
        .map(|f| {
            (
                f.kind,
                f.digest.clone(),
                f.repo.clone(),
                f.target.clone(),
                f.repaired,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (ScrubFindingKind::Corrupt, blob.clone(), None, None, true),
            (ScrubFindingKind::Missing, gone.clone(), None, None, false),
            (
                ScrubFindingKind::ManifestBlobMissing,
                m.clone(),
                Some(r.clone()),
                Some(gone.clone()),
                false
            ),
            (
                ScrubFindingKind::ManifestBlobMissing,
                m.clone(),
                Some(r.clone()),
                Some(blob.clone()),
                false
            ),
        ],
        "in the order first recorded"
    );
    assert_eq!(all.items[0].detail, "hashes to x");
    assert!(all.items.iter().all(|f| f.run_id == run.id && f.id > 0));
    assert!(all.items.windows(2).all(|w| w[0].id < w[1].id));
    let page = meta
        .scrub_findings(
            run.id,
            Paging {
                offset: 1,
                limit: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.total, 4);
    assert_eq!(
        page.items.iter().map(|f| f.id).collect::<Vec<_>>(),
        vec![all.items[1].id, all.items[2].id]
    );
    // The run counts them.
    let counted = meta.scrub_run(run.id).await.unwrap().unwrap();
    assert_eq!((counted.findings, counted.repaired), (4, 1));
    // Another run's findings are its own.
    let other = meta.create_scrub_run(&ScrubRun::new(false)).await.unwrap();
    assert_eq!(
        meta.scrub_findings(other.id, Paging::ALL)
            .await
            .unwrap()
            .total,
        0
    );
    let mut stray = missing.clone();
    stray.run_id = other.id + 1000;
    assert!(matches!(
        meta.add_scrub_findings(&[stray]).await,
        Err(MetaError::NotFound(_))
    ));
}
