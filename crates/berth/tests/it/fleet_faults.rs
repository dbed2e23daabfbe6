//! Faults in a fleet (PostgreSQL + S3 mode only: elsewhere these tests return at once, and say
//! so): an instance killed with `kill -9` in the middle of pushes and pulls, and PostgreSQL
//! stopped for a few seconds underneath running instances.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::harness::*;

/// Pull `repo:tag` through `base` and check every byte; `Err` when the instance failed (it
/// died, or answered 5xx). A pull that answers must be complete and correct.
async fn pull_verified(
    http: &reqwest::Client,
    base: &str,
    repo: &str,
    tag: &str,
) -> Result<(), String> {
    let r = http
        .get(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status().is_server_error() {
        return Err(r.status().to_string());
    }
    assert_eq!(r.status(), StatusCode::OK, "{repo}:{tag}");
    let digest = header(&r, "docker-content-digest").to_owned();
    let body = r.bytes().await.map_err(|e| e.to_string())?;
    assert_eq!(sha256(&body), digest, "{repo}:{tag} manifest");
    for b in image_blobs(&body) {
        let r = http
            .get(format!("{base}/v2/{repo}/blobs/{b}"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status().is_server_error() {
            return Err(r.status().to_string());
        }
        assert_eq!(r.status(), StatusCode::OK, "{repo}:{tag} blob {b}");
        // A connection cut mid-body is an error here (the length is known), never short bytes.
        let bytes = r.bytes().await.map_err(|e| e.to_string())?;
        assert_eq!(sha256(&bytes), b, "{repo}:{tag} blob {b} pulled corrupt");
    }
    Ok(())
}

#[tokio::test]
async fn kill_9_one_instance_mid_traffic_and_clients_carry_on_through_another() {
    if !fleet() {
        eprintln!("skipped: fleet fault tests need BERTH_TEST_BACKEND=fleet");
        return;
    }
    let backend = FleetBackend::create();
    let mut a = Server::start_on(&backend).await;
    let b = Server::start_on(&backend).await;
    // Something to pull from the start.
    let layer: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    b.push_image("kill/base", "v1", &layer).await;

    let acknowledged: Arc<Mutex<HashMap<(String, String), String>>> = Arc::default();
    let failovers = Arc::new(AtomicUsize::new(0));
    let pulls = Arc::new(AtomicUsize::new(0));
    let (a_base, b_base) = (a.base.clone(), b.base.clone());
    let mut tasks = Vec::new();
    for client in 0..6u32 {
        let http = a.http.clone();
        let (a_base, b_base) = (a_base.clone(), b_base.clone());
        let (ack, failovers, pulls) = (acknowledged.clone(), failovers.clone(), pulls.clone());
        tasks.push(tokio::spawn(async move {
            // Every client starts on instance A and moves to B when A fails it.
            let mut base = a_base;
            for i in 0..12u32 {
                let repo = format!("kill/c{client}");
                let tag = format!("t{}", i % 3);
                let seed = client * 100 + i;
                let mut tries = 0;
                loop {
                    let pushed =
                        push_one(http.clone(), base.clone(), repo.clone(), tag.clone(), seed).await;
                    if let Some(d) = pushed {
                        ack.lock().unwrap().insert((repo.clone(), tag.clone()), d);
                        break;
                    }
                    tries += 1;
                    assert!(
                        tries < 5,
                        "client {client}: push {i} failed on both instances"
                    );
                    if base != b_base {
                        failovers.fetch_add(1, Ordering::Relaxed);
                        base = b_base.clone();
                    }
                }
                loop {
                    match pull_verified(&http, &base, "kill/base", "v1").await {
                        Ok(()) => {
                            pulls.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(e) => {
                            assert_ne!(base, b_base, "client {client}: pull failed on B: {e}");
                            failovers.fetch_add(1, Ordering::Relaxed);
                            base = b_base.clone();
                        }
                    }
                }
            }
        }));
    }
    // Kill A once some pushes have landed, with the rest in flight.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged.lock().unwrap().len() < 6 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.kill9();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        failovers.load(Ordering::Relaxed) > 0,
        "no client was cut off by the kill: the test proved nothing"
    );
    assert_eq!(pulls.load(Ordering::Relaxed), 6 * 12);
    // Every client's every tag is on the last acknowledged manifest, complete, through B and
    // through A restarted; storage holds only blobs that hash to their names.
    let ack = acknowledged.lock().unwrap().clone();
    assert_eq!(ack.len(), 6 * 3, "every client pushed all its tags");
    a.restart().await;
    for s in [&a, &b] {
        for ((repo, tag), d) in &ack {
            let r = s
                .http
                .get(s.url(&format!("/v2/{repo}/manifests/{tag}")))
                .header("accept", OCI_MANIFEST)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{repo}:{tag} lost");
            assert_eq!(header(&r, "docker-content-digest"), d, "{repo}:{tag} moved");
        }
        assert_eq!(check_consistent(s).await, 6 * 3 + 1);
    }
    b.storage().verify_blobs().await;
}

/// A PostgreSQL cluster of this test's own (so that stopping it disturbs no other test),
/// made with `scripts/pg-start.sh` and stopped and started again underneath the registry.
struct OwnPostgres {
    dir: PathBuf,
    admin_url: String,
    bin: Option<PathBuf>,
}

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts")
}

impl OwnPostgres {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("berth-pg-outage-{}", std::process::id()));
        let out = Command::new("bash")
            .arg(scripts().join("pg-start.sh"))
            .env("BERTH_PG_DIR", &dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg-start.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = String::from_utf8(out.stdout).unwrap();
        let admin_url = env
            .lines()
            .find_map(|l| l.strip_prefix("export BERTH_TEST_DATABASE_URL="))
            .expect("pg-start.sh prints the URL")
            .to_owned();
        Self {
            dir,
            admin_url,
            bin: None,
        }
    }

    /// The port pg-start.sh chose (it passes it on the command line, not in the config).
    fn port(&self) -> u16 {
        let host = self.admin_url.rsplit_once('@').unwrap().1;
        host.split(['/', ':']).nth(1).unwrap().parse().unwrap()
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// A fast shutdown (SIGINT to the postmaster), as an operator's `pg_ctl stop` does: open
    /// connections are closed and new ones refused.
    fn stop(&mut self) {
        let pid = self.postmaster_pid().expect("postmaster.pid");
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("postmaster binary");
        self.bin = exe.parent().map(Path::to_path_buf);
        signal(pid, "INT");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "PostgreSQL did not stop"
        );
    }

    /// Start the same cluster again, as its owner (`postgres` when the tests run as root).
    fn start_again(&self) {
        let pg_ctl = self.bin.as_ref().expect("stopped first").join("pg_ctl");
        let log = self.dir.join("restart.log");
        // SAFETY: getuid has no preconditions and cannot fail.
        let root = unsafe { libc::getuid() } == 0;
        let mut cmd = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&pg_ctl);
            c
        } else {
            Command::new(&pg_ctl)
        };
        let status = cmd
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(format!("-p {}", self.port()))
            .args(["-w", "-t", "30", "start"])
            .current_dir("/")
            .status()
            .unwrap();
        assert!(
            status.success(),
            "pg_ctl start failed; see {}",
            log.display()
        );
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(scripts().join("pg-stop.sh"))
            .env("BERTH_PG_DIR", &self.dir)
            .env_remove("BERTH_PG_PIDFILE")
            .output();
    }
}

#[tokio::test]
async fn postgres_stopped_for_seconds_gives_503_then_recovers_without_a_restart() {
    if !fleet() {
        eprintln!("skipped: fleet fault tests need BERTH_TEST_BACKEND=fleet");
        return;
    }
    let mut pg = OwnPostgres::start();
    let backend = FleetBackend::create_on(&pg.admin_url);
    let s = Server::start_on(&backend).await;
    let layer: Vec<u8> = (0..500_000u32).map(|i| (i % 13) as u8).collect();
    let (_, before) = s.push_image("outage/app", "v1", &layer).await;

    pg.stop();
    let started = Instant::now();
    // Reads and writes fail fast and say why; the server itself stays up.
    let r = s.get("/v2/outage/app/manifests/v1").await;
    let first_answer = started.elapsed();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("metadata"), "unclear message: {message}");
    let r = s
        .http
        .post(s.url(&format!(
            "/v2/outage/app/blobs/uploads/?digest={}",
            sha256(b"x")
        )))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        s.get("/readyz").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        s.get("/healthz").await.status(),
        StatusCode::OK,
        "liveness must not flap"
    );
    assert!(
        first_answer < Duration::from_secs(10),
        "a request waited {first_answer:?} for the database"
    );
    eprintln!("first 503 after {first_answer:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;

    pg.start_again();
    let restarted = Instant::now();
    let deadline = restarted + Duration::from_secs(30);
    loop {
        let r = s.get("/v2/outage/app/manifests/v1").await;
        if r.status() == StatusCode::OK {
            assert_eq!(header(&r, "docker-content-digest"), before);
            break;
        }
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            Instant::now() < deadline,
            "no recovery 30 s after PostgreSQL came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "recovered {:?} after PostgreSQL came back",
        restarted.elapsed()
    );
    assert_eq!(s.get("/readyz").await.status(), StatusCode::OK);
    // Writes work again, and nothing from before the outage was lost.
    let layer2: Vec<u8> = (0..300_000u32).map(|i| (i % 17) as u8).collect();
    s.push_image("outage/app", "v2", &layer2).await;
    assert_eq!(check_consistent(&s).await, 2);
}
