//! Online garbage collection over HTTP against the real binary, on whichever backend the
//! tests run on: what goes and what stays, dry runs, history, the administrator-only API,
//! and a race of pushes, deletes and re-pushes with collection running over and over.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::access::{as_bearer, basic, token_value};
use crate::harness::{
    check_consistent, header, image_blobs, image_manifest, sha256, Server, ADMIN_PASSWORD,
    OCI_MANIFEST,
};
use crate::mgmt::{admin, admin_cli, admin_cli_json, call, create_user};

/// The grace period the servers here run with.
const GRACE: Duration = Duration::from_secs(2);

/// A token-mode server with a short grace period, acting as `admin` on `repos`.
async fn gc_server(repos: &[&str]) -> Server {
    let mut s = Server::start_with(&["--auth-mode", "token", "--gc-grace-period", "2s"]).await;
    let scopes: Vec<String> = repos
        .iter()
        .map(|r| format!("repository:{r}:pull,push,delete"))
        .chain(["registry:catalog:*".to_owned()])
        .collect();
    let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
    let token = token_value(&s, Some(("admin", ADMIN_PASSWORD)), &scopes).await;
    as_bearer(&mut s, &token);
    s
}

/// Start a run and wait for it to end; returns its history entry.
async fn run_gc(s: &Server, dry_run: bool, delete_untagged: bool) -> Value {
    let body = json!({"schedule": {"type": "Manual"},
        "parameters": {"dry_run": dry_run, "delete_untagged": delete_untagged}});
    let deadline = Instant::now() + Duration::from_secs(60);
    let location = loop {
        let r = call(
            s,
            &basic("admin", ADMIN_PASSWORD),
            Method::POST,
            "/api/v2.0/system/gc/schedule",
            Some(&body),
        )
        .await;
        match r.status() {
            StatusCode::CREATED => break header(&r, "location").to_owned(),
            // The previous run's job is still being marked done.
            StatusCode::CONFLICT if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("start GC: {other} {}", r.text().await.unwrap()),
        }
    };
    loop {
        let run = admin(s, Method::GET, &location, None).await;
        match run["job_status"].as_str().unwrap() {
            "Success" => return run,
            "Error" | "Stopped" => panic!("GC ended badly: {run}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "GC did not finish: {run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Push `blobs` and an image manifest of them (the first is the config) under `reference`.
async fn push(s: &Server, repo: &str, reference: &str, blobs: &[&[u8]]) -> (Vec<u8>, String) {
    let mut digests = Vec::new();
    for b in blobs {
        digests.push(s.push_blob(repo, b).await);
    }
    let layers: Vec<(&str, usize)> = digests[1..]
        .iter()
        .zip(&blobs[1..])
        .map(|(d, b)| (d.as_str(), b.len()))
        .collect();
    let m = image_manifest(&digests[0], blobs[0].len(), &layers, None);
    let r = s.put_manifest(repo, reference, OCI_MANIFEST, &m).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    let d = sha256(&m);
    (m, d)
}

#[tokio::test]
async fn gc_removes_what_nothing_reaches_and_keeps_the_rest() {
    let s = gc_server(&["gc/app"]).await;
    let store = s.storage();
    let shared = vec![7u8; 40_000];
    let (a_config, a_layer) = (b"{\"a\":1}".to_vec(), vec![1u8; 30_000]);
    let (b_config, b_layer) = (b"{\"b\":1}".to_vec(), vec![2u8; 50_000]);
    push(&s, "gc/app", "a", &[&a_config, &shared, &a_layer]).await;
    let (_, b_digest) = push(&s, "gc/app", "b", &[&b_config, &shared, &b_layer]).await;
    // A blob uploaded and never referenced.
    let stray = vec![3u8; 20_000];
    s.push_blob("gc/app", &stray).await;
    assert_eq!(
        s.delete(&format!("/v2/gc/app/manifests/{b_digest}"))
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    let garbage: BTreeSet<String> = [&b_config[..], &b_layer, &stray]
        .iter()
        .map(|b| sha256(b))
        .collect();
    let garbage_bytes = (b_config.len() + b_layer.len() + stray.len()) as u64;
    let before = store.blob_digests().await;
    assert!(garbage.iter().all(|d| before.contains(d)));

    // Inside the grace period nothing goes.
    let run = run_gc(&s, false, false).await;
    assert_eq!(run["blobs_deleted"], 0, "{run}");
    assert_eq!(store.blob_digests().await, before);

    tokio::time::sleep(GRACE + Duration::from_millis(500)).await;
    // A dry run reports exactly the garbage and deletes nothing.
    let dry = run_gc(&s, true, false).await;
    assert_eq!(dry["blobs_deleted"], 3, "{dry}");
    assert_eq!(dry["freed_bytes"], garbage_bytes, "{dry}");
    assert_eq!(dry["dry_run"], true);
    assert_eq!(store.blob_digests().await, before);

    let run = run_gc(&s, false, false).await;
    assert_eq!(run["blobs_deleted"], 3, "{run}");
    assert_eq!(run["freed_bytes"], garbage_bytes, "{run}");
    assert_eq!(run["job_kind"], "MANUAL");
    let after: BTreeSet<String> = store.blob_digests().await.into_iter().collect();
    let expected: BTreeSet<String> = before
        .iter()
        .filter(|d| !garbage.contains(*d))
        .cloned()
        .collect();
    assert_eq!(after, expected);
    let b_layer_d = sha256(&b_layer);
    assert_eq!(
        s.head(&format!("/v2/gc/app/blobs/{b_layer_d}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(check_consistent(&s).await, 1);
    assert_eq!(store.verify_blobs().await, after.len());

    // The deleted image can be pushed again, whole.
    push(&s, "gc/app", "b", &[&b_config, &shared, &b_layer]).await;
    assert_eq!(check_consistent(&s).await, 2);

    // Untagged manifests go only when asked, with what only they reached.
    let only_untagged = vec![9u8; 10_000];
    let (m, untagged) = push(&s, "gc/app", "scratch", &[b"{\"u\":1}", &only_untagged]).await;
    assert_eq!(
        s.delete("/v2/gc/app/manifests/scratch").await.status(),
        StatusCode::ACCEPTED
    );
    tokio::time::sleep(GRACE + Duration::from_millis(500)).await;
    let kept = run_gc(&s, false, false).await;
    assert_eq!(kept["manifests_deleted"], 0, "{kept}");
    assert_eq!(
        s.get(&format!("/v2/gc/app/manifests/{untagged}"))
            .await
            .status(),
        StatusCode::OK
    );
    let run = run_gc(&s, false, true).await;
    assert_eq!(run["manifests_deleted"], 1, "{run}");
    assert_eq!(run["blobs_deleted"], 2, "{run}");
    assert_eq!(
        s.get(&format!("/v2/gc/app/manifests/{untagged}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    for b in image_blobs(&m) {
        assert!(!store.blob_digests().await.contains(&b), "{b} survived");
    }
    assert_eq!(check_consistent(&s).await, 2);

    // History, newest first, and a log per run.
    let history = admin(&s, Method::GET, "/api/v2.0/system/gc?page_size=100", None).await;
    let runs = history.as_array().unwrap();
    assert_eq!(runs.len(), 5);
    assert!(runs[0]["id"].as_i64() > runs[4]["id"].as_i64());
    assert_eq!(runs[0]["job_status"], "Success");
    let log = call(
        &s,
        &basic("admin", ADMIN_PASSWORD),
        Method::GET,
        &format!("/api/v2.0/system/gc/{}/log", runs[0]["id"]),
        None,
    )
    .await;
    assert_eq!(log.status(), StatusCode::OK);
    let text = log.text().await.unwrap();
    assert!(
        text.contains("untagged manifests 1") && text.contains("freed"),
        "{text}"
    );
}

#[tokio::test]
async fn gc_api_is_for_system_administrators_and_schedules_validate() {
    let s = gc_server(&[]).await;
    create_user(&s, "dev", "Dev-Password-1").await;
    let body = json!({"schedule": {"type": "Manual"}, "parameters": {}});
    let dev = basic("dev", "Dev-Password-1");
    for (method, path, body) in [
        (Method::POST, "/api/v2.0/system/gc/schedule", Some(&body)),
        (Method::GET, "/api/v2.0/system/gc", None),
        (Method::GET, "/api/v2.0/system/gc/schedule", None),
    ] {
        let r = call(&s, &dev, method.clone(), path, body).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method} {path}");
        let anonymous = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut req = anonymous.request(method.clone(), s.url(path));
        if let Some(b) = body {
            req = req.json(b);
        }
        assert_eq!(req.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    // A schedule: set, read back with its next time, refused when malformed, turned off.
    let custom = json!({"schedule": {"type": "Custom", "cron": "0 30 2 * * *"},
        "parameters": {"delete_untagged": true}});
    admin(
        &s,
        Method::PUT,
        "/api/v2.0/system/gc/schedule",
        Some(&custom),
    )
    .await;
    let got = admin(&s, Method::GET, "/api/v2.0/system/gc/schedule", None).await;
    assert_eq!(got["schedule"]["type"], "Custom");
    assert_eq!(got["schedule"]["cron"], "0 30 2 * * *");
    assert!(got["schedule"]["next_scheduled_time"]
        .as_str()
        .unwrap()
        .contains("T02:30:00"));
    assert_eq!(got["parameters"]["delete_untagged"], true);
    for bad in [
        json!({"schedule": {"type": "Custom", "cron": "every night"}}),
        json!({"schedule": {"type": "Sometimes"}}),
    ] {
        let r = call(
            &s,
            &basic("admin", ADMIN_PASSWORD),
            Method::PUT,
            "/api/v2.0/system/gc/schedule",
            Some(&bad),
        )
        .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    admin(
        &s,
        Method::PUT,
        "/api/v2.0/system/gc/schedule",
        Some(&json!({"schedule": {"type": "None"}})),
    )
    .await;
    let got = admin(&s, Method::GET, "/api/v2.0/system/gc/schedule", None).await;
    assert_eq!(got["schedule"]["type"], "None");
    assert!(got["schedule"].get("next_scheduled_time").is_none());
    let missing = call(
        &s,
        &basic("admin", ADMIN_PASSWORD),
        Method::GET,
        "/api/v2.0/system/gc/999999",
        None,
    )
    .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

/// The image a client pushes in round `round`: a config and a layer of its own, on top of
/// base layers that every image shares.
fn variant(base: &[Vec<u8>], client: usize, round: usize) -> Vec<Vec<u8>> {
    let v = (client * 7 + round) % 5;
    // The config is the client's own: deleting a manifest by digest must not take another
    // client's tag with it.
    let mut blobs = vec![format!("{{\"variant\":{v},\"client\":{client}}}").into_bytes()];
    blobs.extend(base.iter().cloned());
    blobs.push(vec![v as u8 + 100; 8_000 + v * 1_000]);
    blobs
}

#[tokio::test]
async fn gc_racing_pushes_deletes_and_re_pushes_loses_nothing() {
    const CLIENTS: usize = 6;
    const ROUNDS: usize = 12;
    let repos: Vec<String> = (0..3).map(|i| format!("gc/race{i}")).collect();
    let names: Vec<&str> = repos.iter().map(String::as_str).collect();
    let s = Arc::new(gc_server(&names).await);
    let base: Vec<Vec<u8>> = (0..3).map(|i| vec![i as u8 + 1; 16_000]).collect();
    let done = Arc::new(AtomicBool::new(false));

    // Collection over and over, deleting untagged manifests too, while the clients work.
    let collector = {
        let (s, done) = (Arc::clone(&s), Arc::clone(&done));
        tokio::spawn(async move {
            let mut runs = 0;
            while !done.load(Ordering::Relaxed) {
                run_gc(&s, false, true).await;
                runs += 1;
            }
            runs
        })
    };
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (s, base, repo) = (Arc::clone(&s), base.clone(), repos[c % 3].clone());
        clients.push(tokio::spawn(async move {
            let tag = format!("t{c}");
            let mut last = None;
            for round in 0..ROUNDS {
                let blobs = variant(&base, c, round);
                let refs: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
                let (_, digest) = push(&s, &repo, &tag, &refs).await;
                last = Some(digest.clone());
                if round % 3 == 1 {
                    // Delete it, let it age past the grace period, and push it again.
                    let r = s.delete(&format!("/v2/{repo}/manifests/{digest}")).await;
                    assert_eq!(r.status(), StatusCode::ACCEPTED);
                    tokio::time::sleep(GRACE + Duration::from_millis(300)).await;
                    let (_, again) = push(&s, &repo, &tag, &refs).await;
                    assert_eq!(again, digest);
                    last = Some(again);
                }
            }
            (repo, tag, last)
        }));
    }
    let mut expected = BTreeMap::new();
    for c in clients {
        let (repo, tag, last) = c.await.unwrap();
        expected.insert((repo, tag), last.unwrap());
    }
    done.store(true, Ordering::Relaxed);
    let runs = collector.await.unwrap();
    assert!(runs >= 2, "GC ran only {runs} times during the pushes");

    // Every tag points at the image last pushed under it, and pulls byte-identical.
    for ((repo, tag), digest) in &expected {
        let r = s.get(&format!("/v2/{repo}/manifests/{tag}")).await;
        assert_eq!(r.status(), StatusCode::OK, "{repo}:{tag}");
        assert_eq!(header(&r, "docker-content-digest"), digest);
    }
    assert_eq!(check_consistent(&s).await, CLIENTS);

    // Once everything is older than the grace period, storage holds exactly what the tags
    // reach.
    tokio::time::sleep(GRACE + Duration::from_millis(500)).await;
    run_gc(&s, false, true).await;
    let mut reachable = BTreeSet::new();
    for (repo, tag) in expected.keys() {
        let m = s.get_bytes(&format!("/v2/{repo}/manifests/{tag}")).await;
        reachable.extend(image_blobs(&m));
    }
    let stored: BTreeSet<String> = s.storage().blob_digests().await.into_iter().collect();
    assert_eq!(
        stored, reachable,
        "storage holds unreachable blobs or lost reachable ones"
    );
    assert_eq!(check_consistent(&s).await, CLIENTS);
}

/// `berth admin gc`: a dry run and a real run followed to their end (the JSON of the run
/// printed), the history and a run's log.
#[tokio::test]
async fn the_gc_cli_runs_reports_and_lists() {
    let s = gc_server(&["gccli/app"]).await;
    let store = s.storage();
    let (config, layer) = (b"{\"cli\":1}".to_vec(), vec![4u8; 6_000]);
    let (_, digest) = push(&s, "gccli/app", "v1", &[&config, &layer]).await;
    assert_eq!(
        s.delete(&format!("/v2/gccli/app/manifests/{digest}"))
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    tokio::time::sleep(GRACE + Duration::from_millis(500)).await;
    let before = store.blob_digests().await;
    let garbage = (config.len() + layer.len()) as u64;

    let dry = admin_cli_json(&s, &["gc", "run", "--dry-run"]);
    assert_eq!(dry["job_status"], "Success", "{dry}");
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert_eq!(dry["blobs_deleted"], 2, "{dry}");
    assert_eq!(dry["freed_bytes"], garbage, "{dry}");
    assert_eq!(
        store.blob_digests().await,
        before,
        "a dry run deletes nothing"
    );

    let run = admin_cli_json(&s, &["gc", "run"]);
    assert_eq!(run["blobs_deleted"], 2, "{run}");
    assert_eq!(run["freed_bytes"], garbage, "{run}");
    let layer_digest = sha256(&layer);
    assert_eq!(
        s.head(&format!("/v2/gccli/app/blobs/{layer_digest}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    let history = admin_cli_json(&s, &["gc", "history"]);
    let ids: Vec<&Value> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["id"])
        .collect();
    assert_eq!(ids, [&run["id"], &dry["id"]], "newest first: {history}");
    let id = run["id"].to_string();
    assert_eq!(admin_cli_json(&s, &["gc", "status", &id])["id"], run["id"]);
    let (ok, printed) = admin_cli(&s, &["gc", "status", "999999"]);
    assert!(!ok, "an unknown run is an error: {printed}");
}
