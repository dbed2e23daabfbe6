//! The [`crate::RetentionStore`] contract: policies (one per project, schedules that fire
//! once), runs started with their job in one transaction, tasks whose sums are the run's
//! counters, and the one read per repository a run makes.

use berth_oci::{Digest, RepoName};

use super::access::{project, push};
use crate::{
    AccessStore, JobFilter, JobKind, JobState, MetaError, MetaStore, NewJob, Paging,
    RetentionDelete, RetentionExecution, RetentionPolicy, RetentionTask,
};

/// Exercise `store` through the whole retention contract.
///
/// # Panics
/// On the first behaviour that differs from the contract.
pub async fn run<S: MetaStore + AccessStore>(store: &S) {
    policies(store, store).await;
    executions_and_tasks(store, store).await;
    artifacts(store, store).await;
    deletes_as_planned(store, store).await;
}

fn policy(project_id: i64, rules: &str, cron: Option<&str>) -> RetentionPolicy {
    RetentionPolicy {
        id: 0,
        project_id,
        project: String::new(),
        rules: rules.into(),
        cron: cron.map(str::to_owned),
        fired_ms: 0,
        created_ms: 0,
        updated_ms: 0,
    }
}

async fn policies(meta: &dyn MetaStore, s: &dyn AccessStore) {
    let p = project(s, "keep", false).await;
    let other = project(s, "keep-other", false).await;
    assert!(meta.project_retention_policy(p).await.unwrap().is_none());
    let id = meta
        .create_retention_policy(&policy(p, "{\"rules\":[]}", None))
        .await
        .unwrap();
    // One per project.
    assert!(matches!(
        meta.create_retention_policy(&policy(p, "{}", None)).await,
        Err(MetaError::AlreadyExists(_))
    ));
    assert!(matches!(
        meta.create_retention_policy(&policy(999_999, "{}", None))
            .await,
        Err(MetaError::NotFound(_))
    ));
    let got = meta.retention_policy(id).await.unwrap().unwrap();
    assert_eq!(
        (got.project_id, got.project.as_str(), got.rules.as_str()),
        (p, "keep", "{\"rules\":[]}")
    );
    assert_eq!(got.cron, None);
    assert!(got.fired_ms > 0 && got.created_ms > 0);
    assert_eq!(
        meta.project_retention_policy(p).await.unwrap(),
        Some(got.clone())
    );
    assert!(meta
        .scheduled_retention_policies()
        .await
        .unwrap()
        .is_empty());

    // A schedule: listed, counted from when it was set, fired once per time.
    let mut changed = got.clone();
    changed.rules = "{\"rules\":[1]}".into();
    changed.cron = Some("0 0 0 * * *".into());
    assert!(meta.update_retention_policy(&changed).await.unwrap());
    let scheduled = meta.scheduled_retention_policies().await.unwrap();
    assert_eq!(scheduled.len(), 1);
    let s1 = &scheduled[0];
    assert_eq!((s1.id, s1.rules.as_str()), (id, "{\"rules\":[1]}"));
    assert_eq!(s1.cron.as_deref(), Some("0 0 0 * * *"));
    assert!(s1.fired_ms >= got.fired_ms);
    assert!(meta
        .retention_fired(id, s1.fired_ms, s1.fired_ms + 5)
        .await
        .unwrap());
    assert!(!meta
        .retention_fired(id, s1.fired_ms, s1.fired_ms + 9)
        .await
        .unwrap());
    let fired = meta.retention_policy(id).await.unwrap().unwrap();
    assert_eq!(fired.fired_ms, s1.fired_ms + 5);
    // The same schedule saved again keeps when it last fired.
    assert!(meta.update_retention_policy(&fired).await.unwrap());
    assert_eq!(
        meta.retention_policy(id).await.unwrap().unwrap().fired_ms,
        fired.fired_ms
    );
    let mut off = fired.clone();
    off.cron = None;
    assert!(meta.update_retention_policy(&off).await.unwrap());
    assert!(meta
        .scheduled_retention_policies()
        .await
        .unwrap()
        .is_empty());
    let mut missing = off.clone();
    missing.id = 999_999;
    assert!(!meta.update_retention_policy(&missing).await.unwrap());

    assert!(meta.delete_retention_policy(id).await.unwrap());
    assert!(!meta.delete_retention_policy(id).await.unwrap());
    assert!(meta.retention_policy(id).await.unwrap().is_none());

    // A project's policy goes with the project.
    let id = meta
        .create_retention_policy(&policy(other, "{}", Some("0 * * * * *")))
        .await
        .unwrap();
    assert!(s.delete_project(other).await.unwrap());
    assert!(meta.retention_policy(id).await.unwrap().is_none());
    assert!(meta
        .scheduled_retention_policies()
        .await
        .unwrap()
        .is_empty());
}

fn task(execution_id: i64, repo: &str, status: &str, counts: [u64; 4]) -> RetentionTask {
    RetentionTask {
        id: 0,
        execution_id,
        repository: repo.into(),
        status: status.into(),
        total: counts[0],
        retained: counts[1],
        deleted: counts[2],
        errors: counts[3],
        items: format!("[\"{repo} {status}\"]"),
        created_ms: 0,
        updated_ms: 0,
        finished_ms: (status != "running").then_some(1),
    }
}

async fn executions_and_tasks(meta: &dyn MetaStore, s: &dyn AccessStore) {
    let p = project(s, "runs", false).await;
    let id = meta
        .create_retention_policy(&policy(p, "{\"v\":1}", None))
        .await
        .unwrap();
    let stored = meta.retention_policy(id).await.unwrap().unwrap();
    let kind = JobKind::from_static("test.retention");
    let job = NewJob::new(kind.clone(), "replaced").with_dedupe_key("test-retention:1");

    let first = meta
        .start_retention_execution(&RetentionExecution::new(&stored, "manual", true), &job)
        .await
        .unwrap();
    assert!(first.id > 0);
    assert_eq!(
        (
            first.policy_id,
            first.project.as_str(),
            first.rules.as_str()
        ),
        (id, "runs", "{\"v\":1}")
    );
    assert_eq!((first.trigger.as_str(), first.dry_run), ("manual", true));
    assert_eq!((first.status.as_str(), first.repositories), ("pending", 0));
    assert_eq!((first.total, first.finished_ms), (0, None));
    let queued = meta
        .list_jobs(JobFilter {
            kind: Some(&kind),
            state: Some(JobState::Queued),
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].payload, first.id.to_string());

    // While its job waits, another run of the policy is refused and leaves no trace.
    assert!(matches!(
        meta.start_retention_execution(&RetentionExecution::new(&stored, "schedule", false), &job)
            .await,
        Err(MetaError::AlreadyExists(_))
    ));
    let listed = meta
        .list_retention_executions(id, Paging::ALL)
        .await
        .unwrap();
    assert_eq!(listed.total, 1);

    // Progress: the run's counters are the sums of its tasks.
    let mut e = first.clone();
    e.status = "running".into();
    e.repositories = 3;
    meta.save_retention_execution(&e).await.unwrap();
    let t1 = meta
        .save_retention_task(&task(e.id, "runs/a", "running", [5, 2, 3, 0]))
        .await
        .unwrap();
    let again = meta
        .save_retention_task(&task(e.id, "runs/a", "success", [5, 2, 3, 0]))
        .await
        .unwrap();
    assert_eq!(
        t1, again,
        "the task of a run and repository is updated in place"
    );
    let t2 = meta
        .save_retention_task(&task(e.id, "runs/b", "running", [4, 1, 2, 1]))
        .await
        .unwrap();
    assert!(t2 > t1);
    let got = meta.retention_execution(e.id).await.unwrap().unwrap();
    assert_eq!(
        (got.repositories, got.repositories_done, got.total),
        (3, 1, 9)
    );
    assert_eq!((got.retained, got.deleted, got.errors), (3, 5, 1));
    assert_eq!(got.status, "running");
    let tasks = meta.retention_tasks(e.id, Paging::ALL).await.unwrap();
    assert_eq!(tasks.total, 2);
    assert_eq!(tasks.items[0].id, t1);
    assert_eq!(tasks.items[0].repository, "runs/a");
    assert_eq!(tasks.items[0].status, "success");
    assert!(tasks.items[0].finished_ms.is_some());
    assert_eq!(tasks.items[1].items, "", "listings leave the items out");
    let full = meta.retention_task(t2).await.unwrap().unwrap();
    assert_eq!(full.items, "[\"runs/b running\"]");
    assert_eq!((full.total, full.errors, full.finished_ms), (4, 1, None));
    assert!(meta.retention_task(999_999).await.unwrap().is_none());
    assert!(matches!(
        meta.save_retention_task(&task(999_999, "runs/a", "running", [0; 4]))
            .await,
        Err(MetaError::NotFound(_))
    ));

    // A stop request survives progress saves; an end replaces it.
    assert!(meta.stop_retention_execution(e.id).await.unwrap());
    meta.save_retention_execution(&got).await.unwrap();
    assert_eq!(
        meta.retention_execution(e.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        "stopping"
    );
    let mut ended = got.clone();
    ended.status = "stopped".into();
    ended.last_error = Some("asked to stop".into());
    ended.finished_ms = Some(42);
    meta.save_retention_execution(&ended).await.unwrap();
    let got = meta.retention_execution(e.id).await.unwrap().unwrap();
    assert_eq!(
        (got.status.as_str(), got.finished_ms),
        ("stopped", Some(42))
    );
    assert_eq!(got.last_error.as_deref(), Some("asked to stop"));
    // A stop request after the end changes nothing.
    assert!(!meta.stop_retention_execution(e.id).await.unwrap());
    assert!(!meta.stop_retention_execution(999_999).await.unwrap());
    let again = meta.retention_execution(e.id).await.unwrap().unwrap();
    assert_eq!(
        (again.status.as_str(), again.finished_ms),
        ("stopped", Some(42))
    );
    let mut gone = ended.clone();
    gone.id = 999_999;
    assert!(matches!(
        meta.save_retention_execution(&gone).await,
        Err(MetaError::NotFound(_))
    ));

    // Once its job is done, the policy may run again; runs list newest first.
    let holder = crate::LeaseHolder::new("t");
    let claimed = meta
        .claim_jobs(
            &holder,
            std::slice::from_ref(&kind),
            10,
            std::time::Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(meta.finish_job(&claimed[0].lease, None).await.unwrap());
    let second = meta
        .start_retention_execution(&RetentionExecution::new(&stored, "schedule", false), &job)
        .await
        .unwrap();
    let listed = meta
        .list_retention_executions(
            id,
            Paging {
                offset: 0,
                limit: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!(listed.total, 2);
    assert_eq!(listed.items[0].id, second.id);
    assert_eq!(listed.items[0].trigger, "schedule");
    assert!(!listed.items[0].dry_run);

    // A run of a policy that is gone is refused.
    let mut orphan = RetentionExecution::new(&stored, "manual", true);
    orphan.policy_id = 999_999;
    let other_job = NewJob::new(kind.clone(), "x").with_dedupe_key("test-retention:orphan");
    assert!(matches!(
        meta.start_retention_execution(&orphan, &other_job).await,
        Err(MetaError::NotFound(_))
    ));

    // Deleting the policy deletes its history.
    assert!(meta.delete_retention_policy(id).await.unwrap());
    assert!(meta.retention_execution(first.id).await.unwrap().is_none());
    assert!(meta.retention_task(t1).await.unwrap().is_none());
    assert_eq!(
        meta.list_retention_executions(id, Paging::ALL)
            .await
            .unwrap()
            .total,
        0
    );
}

fn repo(s: &str) -> RepoName {
    s.parse().expect("test names are valid")
}

async fn artifacts(meta: &dyn MetaStore, s: &dyn AccessStore) {
    project(s, "arts", false).await;
    let layer: &[(&[u8], u64)] = &[(b"arts-layer", 10)];
    let a = push(
        meta,
        "arts/app",
        b"{\"arts\":\"a\"}",
        layer,
        vec![],
        None,
        &["v1", "latest"],
    )
    .await;
    let b = push(
        meta,
        "arts/app",
        b"{\"arts\":\"b\"}",
        layer,
        vec![],
        None,
        &[],
    )
    .await;
    let c = push(
        meta,
        "arts/app",
        b"{\"arts\":\"c\"}",
        layer,
        vec![],
        None,
        &[],
    )
    .await;
    let i1 = push(
        meta,
        "arts/app",
        b"{\"index\":1}",
        &[],
        vec![a.clone(), c.clone()],
        None,
        &["multi"],
    )
    .await;
    let i2 = push(
        meta,
        "arts/app",
        b"{\"index\":2}",
        &[],
        vec![c.clone()],
        None,
        &[],
    )
    .await;
    let sig = push(
        meta,
        "arts/app",
        b"{\"sig\":1}",
        layer,
        vec![],
        Some(a.clone()),
        &[],
    )
    .await;
    push(
        meta,
        "arts/zzz",
        b"{\"arts\":\"z\"}",
        layer,
        vec![],
        None,
        &["z"],
    )
    .await;
    push(
        meta,
        "artsy/x",
        b"{\"artsy\":1}",
        layer,
        vec![],
        None,
        &["x"],
    )
    .await;
    s.record_pulls(&[("arts/app".into(), b.clone(), 1_234)])
        .await
        .unwrap();

    assert_eq!(
        meta.retention_repositories("arts").await.unwrap(),
        vec!["arts/app".to_owned(), "arts/zzz".to_owned()]
    );
    assert!(meta
        .retention_repositories("none")
        .await
        .unwrap()
        .is_empty());

    let mut got = meta.retention_artifacts(&repo("arts/app")).await.unwrap();
    got.sort_by_key(|x| x.digest.to_string());
    assert_eq!(got.len(), 6);
    let find = |d: &Digest| got.iter().find(|x| &x.digest == d).unwrap();
    let mut parents = vec![i1.clone(), i2.clone()];
    parents.sort_by_key(ToString::to_string);
    assert_eq!(find(&a).tags, vec!["latest".to_owned(), "v1".to_owned()]);
    assert_eq!(find(&a).parents, vec![i1.clone()]);
    assert_eq!(find(&a).subject, None);
    assert_eq!(find(&a).pulled_ms, None);
    assert!(find(&a).pushed_ms > 1_600_000_000_000 && find(&a).pushed_ms % 1000 == 0);
    assert!(find(&b).tags.is_empty() && find(&b).parents.is_empty());
    assert_eq!(find(&b).pulled_ms, Some(1_234));
    assert_eq!(find(&c).parents, parents);
    assert_eq!(find(&i1).tags, vec!["multi".to_owned()]);
    assert!(find(&i2).tags.is_empty() && find(&i2).parents.is_empty());
    assert_eq!(find(&sig).subject, Some(a.clone()));
    assert!(meta
        .retention_artifacts(&repo("arts/none"))
        .await
        .unwrap()
        .is_empty());
}

/// `retention_delete` deletes only what is as the plan saw it.
async fn deletes_as_planned(meta: &dyn MetaStore, s: &dyn AccessStore) {
    project(s, "plan", false).await;
    let layer: &[(&[u8], u64)] = &[(b"plan-layer", 10)];
    let r = repo("plan/app");
    let tags_of = |d: &Digest| {
        let d = d.clone();
        let r = r.clone();
        async move {
            let mut t: Vec<String> = meta.tags_of(&r, &d).await.unwrap();
            t.sort();
            t
        }
    };
    let planned = |t: &[&str]| t.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let changed = |d: RetentionDelete| matches!(d, RetentionDelete::Changed(_));

    // Tagged again since the plan: it stays, with its tags.
    let a = push(
        meta,
        "plan/app",
        b"{\"plan\":\"a\"}",
        layer,
        vec![],
        None,
        &["dev-1"],
    )
    .await;
    push(
        meta,
        "plan/app",
        b"{\"plan\":\"a\"}",
        layer,
        vec![],
        None,
        &["release-1"],
    )
    .await;
    let got = meta
        .retention_delete(&r, &a, &planned(&["dev-1"]))
        .await
        .unwrap();
    assert!(changed(got.clone()), "{got:?}");
    assert_eq!(tags_of(&a).await, ["dev-1", "release-1"]);
    // As planned (tag order does not matter): gone, with its tags.
    let got = meta
        .retention_delete(&r, &a, &planned(&["release-1", "dev-1"]))
        .await
        .unwrap();
    assert_eq!(got, RetentionDelete::Deleted);
    assert!(tags_of(&a).await.is_empty());
    assert_eq!(
        meta.retention_delete(&r, &a, &[]).await.unwrap(),
        RetentionDelete::Missing
    );
    assert_eq!(
        meta.retention_delete(&repo("plan/none"), &a, &[])
            .await
            .unwrap(),
        RetentionDelete::Missing
    );

    // A child an index still names stays; once the index is gone it may go.
    let child = push(
        meta,
        "plan/app",
        b"{\"plan\":\"child\"}",
        layer,
        vec![],
        None,
        &[],
    )
    .await;
    let index = push(
        meta,
        "plan/app",
        b"{\"plan\":\"index\"}",
        &[],
        vec![child.clone()],
        None,
        &[],
    )
    .await;
    assert!(changed(
        meta.retention_delete(&r, &child, &[]).await.unwrap()
    ));
    assert_eq!(
        meta.retention_delete(&r, &index, &[]).await.unwrap(),
        RetentionDelete::Deleted
    );
    assert_eq!(
        meta.retention_delete(&r, &child, &[]).await.unwrap(),
        RetentionDelete::Deleted
    );

    // A referrer whose subject is here stays; once the subject is gone it may go.
    let subject = push(
        meta,
        "plan/app",
        b"{\"plan\":\"subject\"}",
        layer,
        vec![],
        None,
        &[],
    )
    .await;
    let sig = push(
        meta,
        "plan/app",
        b"{\"plan\":\"sig\"}",
        layer,
        vec![],
        Some(subject.clone()),
        &[],
    )
    .await;
    assert!(changed(meta.retention_delete(&r, &sig, &[]).await.unwrap()));
    assert_eq!(
        meta.retention_delete(&r, &subject, &[]).await.unwrap(),
        RetentionDelete::Deleted
    );
    assert_eq!(
        meta.retention_delete(&r, &sig, &[]).await.unwrap(),
        RetentionDelete::Deleted
    );
}
