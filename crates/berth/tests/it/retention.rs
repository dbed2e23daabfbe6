//! Retention policies over HTTP against the real binary, on whichever backend the tests run
//! on: each rule template, tag and repository patterns, untagged artifacts, dry runs that
//! report exactly what the real run then deletes, immutable tags, children and referrers
//! following their parents, schedules, and who may change and run a policy.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::access::{admin_server, admin_server_on, basic};
use crate::harness::{
    header, image_manifest, sha256, Server, ADMIN_PASSWORD, OCI_INDEX, OCI_MANIFEST,
};
use crate::mgmt::{
    add_member, admin, admin_cli, admin_cli_json, admin_cli_text, call, create_project, create_user,
};

/// A token-mode server acting as `admin` on `repos`.
async fn server(repos: &[&str]) -> Server {
    admin_server(&[], repos).await
}

/// Create private project `name`; returns its id.
async fn new_project(s: &Server, name: &str) -> i64 {
    create_project(s, name, false).await;
    let p = admin(s, Method::GET, &format!("/api/v2.0/projects/{name}"), None).await;
    p["project_id"].as_i64().unwrap()
}

/// Push an image with a layer of its own under `reference` (a tag, or its digest for an
/// untagged one: pass `None`); returns its digest.
async fn push(s: &Server, repo: &str, tag: Option<&str>, seed: &str) -> String {
    let config = format!("{{\"seed\":\"{repo}/{seed}\"}}");
    let layer = format!("layer of {repo}/{seed}").into_bytes();
    let cd = s.push_blob(repo, config.as_bytes()).await;
    let ld = s.push_blob(repo, &layer).await;
    let m = image_manifest(&cd, config.len(), &[(&ld, layer.len())], None);
    put(s, repo, tag, OCI_MANIFEST, &m).await
}

/// Put manifest `m` under `tag`, or by its digest; returns its digest.
async fn put(s: &Server, repo: &str, tag: Option<&str>, media_type: &str, m: &[u8]) -> String {
    let d = sha256(m);
    let r = s.put_manifest(repo, tag.unwrap_or(&d), media_type, m).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    d
}

/// Make `digest` look pushed `days` days (and `secs` seconds) ago.
fn pushed_ago(s: &Server, digest: &str, days: i64, secs: i64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    s.sql(&format!(
        "UPDATE manifests SET created_at = {} WHERE digest = '{digest}'",
        now - days * 86_400 - secs
    ));
}

/// Whether manifest `digest` is in `repo`.
async fn exists(s: &Server, repo: &str, digest: &str) -> bool {
    let r = s.get(&format!("/v2/{repo}/manifests/{digest}")).await;
    match r.status() {
        StatusCode::OK => true,
        StatusCode::NOT_FOUND => false,
        other => panic!("GET {repo}@{digest}: {other}"),
    }
}

/// A tag selector matching `pattern`, and untagged artifacts too if `untagged`.
fn tags(pattern: &str, untagged: bool) -> Value {
    json!([{"kind": "doublestar", "decoration": "matches", "pattern": pattern,
        "extras": format!("{{\"untagged\":{untagged}}}")}])
}

/// A rule of `template` with parameter `n`, over `tag_selectors` and repositories.
fn rule(template: &str, n: Option<u32>, tag_selectors: Value, repos: Value) -> Value {
    let params = match n {
        Some(n) => json!({ template: n }),
        None => json!({}),
    };
    json!({"disabled": false, "action": "retain", "template": template, "params": params,
        "tag_selectors": tag_selectors, "scope_selectors": {"repository": repos}})
}

fn all_repos() -> Value {
    json!([{"kind": "doublestar", "decoration": "repoMatches", "pattern": "**"}])
}

fn policy(project: i64, rules: Vec<Value>, cron: &str) -> Value {
    json!({"algorithm": "or", "rules": rules,
        "trigger": {"kind": "Schedule", "settings": {"cron": cron}},
        "scope": {"level": "project", "ref": project}})
}

/// Create the policy; returns its id.
async fn create_policy(s: &Server, body: &Value) -> i64 {
    let r = call(
        s,
        &basic("admin", ADMIN_PASSWORD),
        Method::POST,
        "/api/v2.0/retentions",
        Some(body),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    header(&r, "location")
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Run policy `id` and wait for the run to end; returns the run.
async fn run(s: &Server, id: i64, dry_run: bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let location = loop {
        let r = call(
            s,
            &basic("admin", ADMIN_PASSWORD),
            Method::POST,
            &format!("/api/v2.0/retentions/{id}/executions"),
            Some(&json!({ "dry_run": dry_run })),
        )
        .await;
        match r.status() {
            StatusCode::CREATED => break header(&r, "location").to_owned(),
            // The previous run's job is still being marked done.
            StatusCode::CONFLICT if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("run retention: {other} {}", r.text().await.unwrap()),
        }
    };
    wait_for(s, &location, deadline).await
}

async fn wait_for(s: &Server, location: &str, deadline: Instant) -> Value {
    loop {
        let e = admin(s, Method::GET, location, None).await;
        match e["status"].as_str().unwrap() {
            "Success" | "Error" | "Stopped" => return e,
            _ => {}
        }
        assert!(Instant::now() < deadline, "retention did not finish: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The tasks of run `e` of policy `id`, with each task's log.
async fn tasks(s: &Server, id: i64, e: &Value) -> Vec<(Value, String)> {
    let path = format!("/api/v2.0/retentions/{id}/executions/{}/tasks", e["id"]);
    let listed = admin(s, Method::GET, &format!("{path}?page_size=100"), None).await;
    let mut out = Vec::new();
    for t in listed.as_array().unwrap() {
        let r = call(
            s,
            &basic("admin", ADMIN_PASSWORD),
            Method::GET,
            &format!("{path}/{}", t["id"]),
            None,
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(header(&r, "content-type").starts_with("text/plain"));
        out.push((t.clone(), r.text().await.unwrap()));
    }
    out
}

/// The digests (shortened as logs show them) that a task's log marks `result`.
fn marked(log: &str, result: &str) -> BTreeSet<String> {
    log.lines()
        .skip(3)
        .filter(|l| l.contains(&format!("  {result}  ")))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn short(d: &str) -> String {
    d[..19].to_owned()
}

fn counts(e: &Value) -> (u64, u64, u64, u64) {
    let n = |k: &str| e[k].as_u64().unwrap();
    (n("total"), n("retained"), n("deleted"), n("errors"))
}

#[tokio::test]
async fn latest_pushed_and_a_dry_run_that_reports_exactly_what_goes() {
    let s = server(&["ret/app", "ret/lib"]).await;
    let pid = new_project(&s, "ret").await;
    let mut app = Vec::new();
    for i in 0..5 {
        let d = push(&s, "ret/app", Some(&format!("t{i}")), &i.to_string()).await;
        pushed_ago(&s, &d, 0, 100 - i);
        app.push(d);
    }
    let untagged = push(&s, "ret/app", None, "untagged").await;
    pushed_ago(&s, &untagged, 0, 1);
    let lib = push(&s, "ret/lib", Some("only"), "lib").await;
    let id = create_policy(
        &s,
        &policy(
            pid,
            vec![rule(
                "latestPushedK",
                Some(2),
                tags("**", false),
                all_repos(),
            )],
            "",
        ),
    )
    .await;
    // The project shows its policy.
    let p = admin(&s, Method::GET, "/api/v2.0/projects/ret", None).await;
    assert_eq!(p["metadata"]["retention_id"], id.to_string(), "{p}");
    let got = admin(&s, Method::GET, &format!("/api/v2.0/retentions/{id}"), None).await;
    assert_eq!(got["rules"][0]["template"], "latestPushedK");
    assert_eq!(got["rules"][0]["id"], 1);
    assert_eq!(got["scope"], json!({"level": "project", "ref": pid}));
    let quota = format!("/api/v2.0/quotas/{pid}");
    let used = admin(&s, Method::GET, &quota, None).await["used"]["count"].clone();
    assert_eq!(used, 7);

    let dry = run(&s, id, true).await;
    assert_eq!(dry["status"], "Success", "{dry}");
    assert_eq!(
        (dry["dry_run"].clone(), dry["trigger"].clone()),
        (json!(true), json!("MANUAL"))
    );
    // ret/app: the two newest tagged stay; three older and the untagged one would go.
    // ret/lib: its one tagged image stays.
    assert_eq!(counts(&dry), (7, 3, 4, 0), "{dry}");
    assert_eq!(
        (
            dry["repositories"].clone(),
            dry["repositories_done"].clone()
        ),
        (json!(2), json!(2))
    );
    for d in app.iter().chain([&untagged, &lib]) {
        assert!(exists(&s, if d == &lib { "ret/lib" } else { "ret/app" }, d).await);
    }
    let dry_tasks = tasks(&s, id, &dry).await;
    assert_eq!(dry_tasks.len(), 2);
    let (task, log) = dry_tasks
        .iter()
        .find(|(t, _)| t["repository"] == "ret/app")
        .unwrap();
    assert_eq!(
        (task["total"].clone(), task["retained"].clone()),
        (json!(6), json!(2))
    );
    assert_eq!(task["status"], "Success");
    let would: BTreeSet<String> = marked(log, "WOULD DELETE");
    let expected: BTreeSet<String> = app[..3]
        .iter()
        .chain([&untagged])
        .map(|d| short(d))
        .collect();
    assert_eq!(would, expected, "{log}");
    assert!(log.contains("rule 1: the 2 most recently pushed"), "{log}");
    assert!(log.contains("no rule selects it"), "{log}");

    // The real run deletes exactly what the dry run reported.
    let real = run(&s, id, false).await;
    assert_eq!(real["status"], "Success", "{real}");
    assert_eq!(counts(&real), counts(&dry));
    let real_tasks = tasks(&s, id, &real).await;
    let (_, log) = real_tasks
        .iter()
        .find(|(t, _)| t["repository"] == "ret/app")
        .unwrap();
    assert_eq!(marked(log, "DELETED"), would, "{log}");
    let mut gone = BTreeSet::new();
    for d in app.iter().chain([&untagged]) {
        if !exists(&s, "ret/app", d).await {
            gone.insert(short(d));
        }
    }
    assert_eq!(gone, would);
    assert!(exists(&s, "ret/lib", &lib).await);
    // Deleting freed the quota at once.
    let used = admin(&s, Method::GET, &quota, None).await["used"]["count"].clone();
    assert_eq!(used, 3);
    // History, newest first.
    let history = admin(
        &s,
        Method::GET,
        &format!("/api/v2.0/retentions/{id}/executions"),
        None,
    )
    .await;
    let runs = history.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["id"], real["id"]);
    assert_eq!(runs[1]["dry_run"], true);
    // A second real run finds nothing more to delete.
    let again = run(&s, id, false).await;
    assert_eq!(counts(&again), (3, 3, 0, 0), "{again}");
}

#[tokio::test]
async fn latest_pulled_keeps_what_was_pulled_last() {
    let s = server(&["pull/app"]).await;
    let pid = new_project(&s, "pull").await;
    let mut d = Vec::new();
    for i in 0..4 {
        d.push(push(&s, "pull/app", Some(&format!("p{i}")), &i.to_string()).await);
    }
    // Pull p2, then p0: p0 was pulled last.
    for tag in ["p2", "p0"] {
        assert_eq!(
            s.get(&format!("/v2/pull/app/manifests/{tag}"))
                .await
                .status(),
            StatusCode::OK
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Pull times are written in batches: wait for both.
    let deadline = Instant::now() + Duration::from_secs(20);
    for digest in [&d[2], &d[0]] {
        loop {
            let a = admin(
                &s,
                Method::GET,
                &format!("/api/v2.0/projects/pull/repositories/app/artifacts/{digest}"),
                None,
            )
            .await;
            if a["pull_time"].is_string() {
                break;
            }
            assert!(Instant::now() < deadline, "pull time never recorded: {a}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let id = create_policy(
        &s,
        &policy(
            pid,
            vec![rule(
                "latestPulledN",
                Some(1),
                tags("**", true),
                all_repos(),
            )],
            "",
        ),
    )
    .await;
    let e = run(&s, id, false).await;
    assert_eq!(counts(&e), (4, 1, 3, 0), "{e}");
    assert!(exists(&s, "pull/app", &d[0]).await);
    for gone in [&d[1], &d[2], &d[3]] {
        assert!(!exists(&s, "pull/app", gone).await);
    }
    let (_, log) = tasks(&s, id, &e).await.pop().unwrap();
    assert!(log.contains("rule 1: the 1 most recently pulled"), "{log}");
}

#[tokio::test]
async fn days_since_push_and_pull_scoped_to_their_repositories() {
    let s = server(&["days/pushed", "days/pulled"]).await;
    let pid = new_project(&s, "days").await;
    let fresh = push(&s, "days/pushed", Some("fresh"), "fresh").await;
    let stale = push(&s, "days/pushed", Some("stale"), "stale").await;
    pushed_ago(&s, &fresh, 2, 0);
    pushed_ago(&s, &stale, 10, 0);
    let recent = push(&s, "days/pulled", Some("recent"), "recent").await;
    let old = push(&s, "days/pulled", Some("old"), "old").await;
    let never = push(&s, "days/pulled", Some("never"), "never").await;
    let ms = |days: i64| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
            - days * 86_400_000
    };
    s.sql(&format!(
        "UPDATE manifests SET pulled_ms = {} WHERE digest = '{recent}'",
        ms(2)
    ));
    s.sql(&format!(
        "UPDATE manifests SET pulled_ms = {} WHERE digest = '{old}'",
        ms(20)
    ));
    let repo = |p: &str| json!([{"kind": "doublestar", "decoration": "repoMatches", "pattern": p}]);
    let id = create_policy(
        &s,
        &policy(
            pid,
            vec![
                rule(
                    "nDaysSinceLastPush",
                    Some(5),
                    tags("**", false),
                    repo("pushed"),
                ),
                rule(
                    "nDaysSinceLastPull",
                    Some(7),
                    tags("**", false),
                    repo("pulled"),
                ),
            ],
            "",
        ),
    )
    .await;
    let e = run(&s, id, false).await;
    assert_eq!(counts(&e), (5, 2, 3, 0), "{e}");
    assert!(exists(&s, "days/pushed", &fresh).await);
    assert!(!exists(&s, "days/pushed", &stale).await);
    assert!(exists(&s, "days/pulled", &recent).await);
    assert!(!exists(&s, "days/pulled", &old).await);
    assert!(!exists(&s, "days/pulled", &never).await);
    let logs = tasks(&s, id, &e).await;
    let (_, pulled_log) = logs
        .iter()
        .find(|(t, _)| t["repository"] == "days/pulled")
        .unwrap();
    assert!(
        pulled_log.contains("rule 2: pulled within the last 7 days"),
        "{pulled_log}"
    );
    assert!(pulled_log.contains("never"), "{pulled_log}");
}

#[tokio::test]
async fn always_by_pattern_with_excluded_repositories_and_untagged_artifacts() {
    let s = server(&["pat/app", "pat/tmp/x"]).await;
    let pid = new_project(&s, "pat").await;
    let r1 = push(&s, "pat/app", Some("release-1"), "r1").await;
    let r2 = push(&s, "pat/app", Some("release-2"), "r2").await;
    let dev = push(&s, "pat/app", Some("dev-1"), "dev").await;
    let latest = push(&s, "pat/app", Some("latest"), "latest").await;
    let untagged = push(&s, "pat/app", None, "u").await;
    for (i, d) in [&r1, &r2, &dev, &latest, &untagged].iter().enumerate() {
        pushed_ago(&s, d, 0, 100 - i as i64);
    }
    let tmp = push(&s, "pat/tmp/x", Some("dev-9"), "tmp").await;
    let not_tmp =
        json!([{"kind": "doublestar", "decoration": "repoExcludes", "pattern": "tmp/**"}]);
    let keep_releases = rule("always", None, tags("release-*", false), not_tmp.clone());
    // The newest of everything, untagged included: the untagged one.
    let keep_newest = rule("latestPushedK", Some(1), tags("**", true), not_tmp.clone());
    let body = policy(pid, vec![keep_releases.clone(), keep_newest], "");
    let id = create_policy(&s, &body).await;
    let e = run(&s, id, false).await;
    assert_eq!(
        e["repositories"], 1,
        "pat/tmp/x is selected by no rule: {e}"
    );
    assert_eq!(counts(&e), (5, 3, 2, 0), "{e}");
    for (d, kept) in [
        (&r1, true),
        (&r2, true),
        (&dev, false),
        (&latest, false),
        (&untagged, true),
    ] {
        assert_eq!(exists(&s, "pat/app", d).await, kept, "{d}");
    }
    assert!(
        exists(&s, "pat/tmp/x", &tmp).await,
        "an excluded repository is left alone"
    );
    let (_, log) = tasks(&s, id, &e).await.pop().unwrap();
    assert!(log.contains("rule 1: always"), "{log}");
    assert!(log.contains("selected by rule 2, kept by none"), "{log}");

    // Without the second rule nothing selects untagged artifacts: the untagged one goes.
    admin(
        &s,
        Method::PUT,
        &format!("/api/v2.0/retentions/{id}"),
        Some(&policy(pid, vec![keep_releases], "")),
    )
    .await;
    let e = run(&s, id, false).await;
    assert_eq!(counts(&e), (3, 2, 1, 0), "{e}");
    assert!(!exists(&s, "pat/app", &untagged).await);
    assert!(exists(&s, "pat/app", &r1).await && exists(&s, "pat/app", &r2).await);
}

#[tokio::test]
async fn immutable_tags_children_and_referrers() {
    let s = server(&["imm/app"]).await;
    let pid = new_project(&s, "imm").await;
    let pinned = push(&s, "imm/app", Some("v1"), "pinned").await;
    let loose = push(&s, "imm/app", Some("v2"), "loose").await;
    // An image that stays, with a signature (a referrer: untagged, subject = the image).
    let kept = push(&s, "imm/app", Some("keep"), "kept").await;
    let kept_bytes = s.get_bytes(&format!("/v2/imm/app/manifests/{kept}")).await;
    let cd = s.push_blob("imm/app", b"{\"sig\":1}").await;
    let sig = image_manifest(&cd, 9, &[], Some((&kept, kept_bytes.len())));
    let sig = put(&s, "imm/app", None, OCI_MANIFEST, &sig).await;
    // An index that goes, with two untagged children that go with it, and a signature of it.
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let d = push(&s, "imm/app", None, arch).await;
        let bytes = s.get_bytes(&format!("/v2/imm/app/manifests/{d}")).await;
        children.push(
            json!({"mediaType": OCI_MANIFEST, "digest": d, "size": bytes.len(),
            "platform": {"architecture": arch, "os": "linux"}}),
        );
    }
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": children}))
    .unwrap();
    let index = put(&s, "imm/app", Some("multi"), OCI_INDEX, &index).await;
    let index_len = s
        .get_bytes(&format!("/v2/imm/app/manifests/{index}"))
        .await
        .len();
    let cd2 = s.push_blob("imm/app", b"{\"sig\":2}").await;
    let index_sig = image_manifest(&cd2, 9, &[], Some((&index, index_len)));
    let index_sig = put(&s, "imm/app", None, OCI_MANIFEST, &index_sig).await;
    // Tag v1 is immutable (an immutability rule of the project).
    crate::immutable::add_rule(&s, "imm", &crate::immutable::rule("v1", json!([]))).await;
    // Keep `keep`; `nothing` selects v1, v2 and multi and keeps none of them.
    let id = create_policy(
        &s,
        &policy(
            pid,
            vec![
                rule("always", None, tags("keep", false), all_repos()),
                rule("nothing", None, tags("v*", false), all_repos()),
            ],
            "",
        ),
    )
    .await;
    let dry = run(&s, id, true).await;
    let e = run(&s, id, false).await;
    assert_eq!(e["status"], "Success", "{e}");
    // 8 manifests: kept + its signature + v1 (immutable) stay; v2, the index, its two
    // children and its signature go.
    assert_eq!(counts(&e), (8, 3, 5, 0), "{e}");
    assert_eq!(counts(&dry), counts(&e));
    assert!(
        exists(&s, "imm/app", &pinned).await,
        "an immutable tag keeps its artifact"
    );
    assert!(exists(&s, "imm/app", &kept).await && exists(&s, "imm/app", &sig).await);
    assert!(!exists(&s, "imm/app", &loose).await);
    assert!(!exists(&s, "imm/app", &index).await);
    assert!(!exists(&s, "imm/app", &index_sig).await);
    for c in &children {
        assert!(!exists(&s, "imm/app", c["digest"].as_str().unwrap()).await);
    }
    let (_, log) = tasks(&s, id, &e).await.pop().unwrap();
    assert_eq!(
        marked(&log, "IMMUTABLE"),
        BTreeSet::from([short(&pinned)]),
        "{log}"
    );
    assert!(log.contains("tag v1 is immutable"), "{log}");
    assert!(log.contains(&format!("follows {}", short(&index))), "{log}");
    assert!(log.contains(&format!("{} stays", short(&kept))), "{log}");
}

#[tokio::test]
async fn schedules_fire_runs() {
    let s = admin_server_on(
        &[],
        &["sched/app"],
        Some("[retention]\nschedule_check_interval = \"1s\"\n"),
    )
    .await;
    let pid = new_project(&s, "sched").await;
    let old = push(&s, "sched/app", Some("old"), "old").await;
    pushed_ago(&s, &old, 0, 60);
    let new = push(&s, "sched/app", Some("new"), "new").await;
    let id = create_policy(
        &s,
        &policy(
            pid,
            vec![rule(
                "latestPushedK",
                Some(1),
                tags("**", false),
                all_repos(),
            )],
            "* * * * * *",
        ),
    )
    .await;
    let got = admin(&s, Method::GET, &format!("/api/v2.0/retentions/{id}"), None).await;
    assert_eq!(got["trigger"]["settings"]["cron"], "* * * * * *");
    assert!(
        got["trigger"]["settings"]["next_scheduled_time"].is_string(),
        "{got}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let run = loop {
        let runs = admin(
            &s,
            Method::GET,
            &format!("/api/v2.0/retentions/{id}/executions"),
            None,
        )
        .await;
        if let Some(r) = runs.as_array().unwrap().last() {
            break r.clone();
        }
        assert!(Instant::now() < deadline, "no scheduled run appeared");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(run["trigger"], "SCHEDULE");
    assert_eq!(run["dry_run"], false);
    let location = format!("/api/v2.0/retentions/{id}/executions/{}", run["id"]);
    let done = wait_for(&s, &location, deadline).await;
    assert_eq!(done["status"], "Success", "{done}");
    assert!(exists(&s, "sched/app", &new).await);
    assert!(!exists(&s, "sched/app", &old).await);
    // Turned off, it fires no more.
    admin(
        &s,
        Method::PUT,
        &format!("/api/v2.0/retentions/{id}"),
        Some(&policy(
            pid,
            vec![rule("always", None, tags("**", true), all_repos())],
            "",
        )),
    )
    .await;
    let got = admin(&s, Method::GET, &format!("/api/v2.0/retentions/{id}"), None).await;
    assert_eq!(got["trigger"]["settings"]["cron"], "");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = admin(
        &s,
        Method::GET,
        &format!("/api/v2.0/retentions/{id}/executions"),
        None,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = admin(
        &s,
        Method::GET,
        &format!("/api/v2.0/retentions/{id}/executions"),
        None,
    )
    .await;
    assert_eq!(
        before.as_array().unwrap().len(),
        after.as_array().unwrap().len()
    );
}

#[tokio::test]
async fn who_may_change_and_run_a_policy_and_what_is_refused() {
    let s = server(&["team/app"]).await;
    let pid = new_project(&s, "team").await;
    for (user, role) in [("padmin", 1), ("dev", 2), ("guest", 3)] {
        create_user(&s, user, "Retention-Pass-1").await;
        add_member(&s, "team", user, role).await;
    }
    create_user(&s, "outsider", "Retention-Pass-1").await;
    let who = |u: &str| basic(u, "Retention-Pass-1");
    let keep = policy(
        pid,
        vec![rule("always", None, tags("**", true), all_repos())],
        "",
    );

    // A guest may not create one; a project administrator may.
    let r = call(
        &s,
        &who("guest"),
        Method::POST,
        "/api/v2.0/retentions",
        Some(&keep),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = call(
        &s,
        &who("padmin"),
        Method::POST,
        "/api/v2.0/retentions",
        Some(&keep),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    let id: i64 = header(&r, "location")
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let path = format!("/api/v2.0/retentions/{id}");
    let runs = format!("{path}/executions");
    let dry = json!({"dry_run": true});

    // A guest may neither read, change nor run it; someone outside the project does not see
    // it; nobody anonymous gets in.
    for (method, p, body) in [
        (Method::GET, &path, None),
        (Method::PUT, &path, Some(&keep)),
        (Method::DELETE, &path, None),
        (Method::POST, &runs, Some(&dry)),
        (Method::GET, &runs, None),
    ] {
        let r = call(&s, &who("guest"), method.clone(), p, body).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "guest {method} {p}");
        let r = call(&s, &who("outsider"), method.clone(), p, body).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "outsider {method} {p}");
        let anonymous = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut req = anonymous.request(method.clone(), s.url(p));
        if let Some(b) = body {
            req = req.json(b);
        }
        assert_eq!(
            req.send().await.unwrap().status(),
            StatusCode::UNAUTHORIZED,
            "{method} {p}"
        );
    }
    // A developer may change and run it (Harbor's role table); so may its administrator.
    for user in ["dev", "padmin"] {
        let r = call(&s, &who(user), Method::PUT, &path, Some(&keep)).await;
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "{user}: {}",
            r.text().await.unwrap()
        );
        let r = call(&s, &who(user), Method::GET, &path, None).await;
        assert_eq!(r.status(), StatusCode::OK, "{user}");
    }
    let r = call(&s, &who("dev"), Method::POST, &runs, Some(&dry)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = header(&r, "location").to_owned();
    let done = wait_for(&s, &location, Instant::now() + Duration::from_secs(30)).await;
    assert_eq!(done["status"], "Success");

    // Metadata is for anyone signed in.
    let r = call(
        &s,
        &who("outsider"),
        Method::GET,
        "/api/v2.0/retentions/metadatas",
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let meta: Value = r.json().await.unwrap();
    let templates: Vec<&str> = meta["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["rule_template"].as_str().unwrap())
        .collect();
    assert_eq!(
        templates,
        [
            "latestPushedK",
            "latestPulledN",
            "nDaysSinceLastPush",
            "nDaysSinceLastPull",
            "always",
            "nothing"
        ]
    );
    let anonymous = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = anonymous
        .get(s.url("/api/v2.0/retentions/metadatas"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Refusals: a second policy, bad templates, parameters, selectors, schedules, scopes.
    let sysadmin = basic("admin", ADMIN_PASSWORD);
    let r = call(
        &s,
        &sysadmin,
        Method::POST,
        "/api/v2.0/retentions",
        Some(&keep),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let bad_rule = |r: Value| policy(pid, vec![r], "");
    for (body, says) in [
        (
            bad_rule(rule("sometimes", None, tags("**", false), all_repos())),
            "template",
        ),
        (
            bad_rule(rule("latestPushedK", None, tags("**", false), all_repos())),
            "latestPushedK",
        ),
        (
            bad_rule(rule(
                "latestPulledN",
                Some(99_999),
                tags("**", false),
                all_repos(),
            )),
            "latestPulledN",
        ),
        (
            bad_rule(rule("always", None, tags("[a-", false), all_repos())),
            "pattern",
        ),
        (policy(pid, vec![], "every night"), "cron"),
        (
            json!({"rules": [], "scope": {"level": "system", "ref": 0}}),
            "scope.level",
        ),
        (json!({"algorithm": "and", "rules": []}), "algorithm"),
    ] {
        let r = call(&s, &sysadmin, Method::PUT, &path, Some(&body)).await;
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
        assert!(text.contains(says), "{body}: {text}");
    }
    // No scope on creation, another project, an unknown action, stopping a run that ended,
    // unknown runs and policies.
    let no_scope = json!({"rules": []});
    let moved = policy(pid + 1000, vec![], "");
    let start = json!({"action": "start"});
    let stop = json!({"action": "stop"});
    let retentions = "/api/v2.0/retentions".to_owned();
    for (method, p, body, expected) in [
        (
            Method::POST,
            &retentions,
            Some(&no_scope),
            StatusCode::BAD_REQUEST,
        ),
        (Method::PUT, &path, Some(&moved), StatusCode::BAD_REQUEST),
        (
            Method::PATCH,
            &location,
            Some(&start),
            StatusCode::BAD_REQUEST,
        ),
        (Method::PATCH, &location, Some(&stop), StatusCode::CONFLICT),
        (
            Method::GET,
            &format!("{runs}/999999"),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            &format!("{runs}/999999/tasks"),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            &format!("{retentions}/999999"),
            None,
            StatusCode::NOT_FOUND,
        ),
    ] {
        let r = call(&s, &sysadmin, method.clone(), p, body).await;
        assert_eq!(r.status(), expected, "{method} {p}");
    }
    // Deleting the policy takes its history; the project no longer names it.
    let r = call(&s, &who("padmin"), Method::DELETE, &path, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = call(&s, &sysadmin, Method::GET, &location, None).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let p = admin(&s, Method::GET, "/api/v2.0/projects/team", None).await;
    assert!(p["metadata"].get("retention_id").is_none(), "{p}");
}

/// `berth admin retention`: a policy set from a file (its scope filled in), shown, dry-run
/// and run with `--wait` (the run's JSON printed), its history and its log; a bad file and
/// an unknown project are errors.
#[tokio::test]
async fn the_retention_cli_sets_runs_and_reports() {
    let s = server(&["rcli/app"]).await;
    new_project(&s, "rcli").await;
    let old = push(&s, "rcli/app", Some("old"), "old").await;
    pushed_ago(&s, &old, 0, 120);
    let older = push(&s, "rcli/app", Some("older"), "older").await;
    pushed_ago(&s, &older, 0, 240);
    let new = push(&s, "rcli/app", Some("new"), "new").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.json");
    let body = json!({"algorithm": "or", "rules": [rule("latestPushedK", Some(1),
        tags("**", false), all_repos())]});
    std::fs::write(&file, body.to_string()).unwrap();
    let file = file.to_str().unwrap();

    admin_cli_json(&s, &["retention", "set", "rcli", "--file", file]);
    let shown = admin_cli_json(&s, &["retention", "show", "rcli"]);
    assert_eq!(shown["rules"][0]["template"], "latestPushedK", "{shown}");
    assert_eq!(shown["scope"]["level"], "project", "{shown}");

    let dry = admin_cli_json(&s, &["retention", "run", "rcli", "--dry-run", "--wait"]);
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert_eq!(counts(&dry), (3, 1, 2, 0), "{dry}");
    assert!(exists(&s, "rcli/app", &old).await && exists(&s, "rcli/app", &older).await);

    let run = admin_cli_json(&s, &["retention", "run", "rcli", "--wait"]);
    assert_eq!(counts(&run), (3, 1, 2, 0), "{run}");
    assert!(!exists(&s, "rcli/app", &old).await);
    assert!(!exists(&s, "rcli/app", &older).await);
    assert!(exists(&s, "rcli/app", &new).await);

    let history = admin_cli_json(&s, &["retention", "history", "rcli"]);
    let ids: Vec<&Value> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["id"])
        .collect();
    assert_eq!(ids, [&run["id"], &dry["id"]], "newest first: {history}");
    let log = admin_cli_text(&s, &["retention", "log", "rcli", &run["id"].to_string()]);
    for d in [&old, &older] {
        assert!(log.contains(&short(d)), "{d} missing from the log:\n{log}");
    }
    assert_eq!(marked(&log, "DELETED").len(), 2, "{log}");

    std::fs::write(dir.path().join("bad.json"), "[1, 2]").unwrap();
    let bad = dir.path().join("bad.json");
    for args in [
        &["retention", "set", "rcli", "--file", bad.to_str().unwrap()][..],
        &["retention", "set", "rcli", "--file", "/no/such/file.json"],
        &["retention", "show", "no-such-project"],
    ] {
        let (ok, printed) = admin_cli(&s, args);
        assert!(!ok, "{args:?} must fail: {printed}");
    }
}
