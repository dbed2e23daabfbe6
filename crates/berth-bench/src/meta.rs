//! The metadata-at-scale benchmark: one project holding 100,000 artifacts, and how long the
//! management API takes to list a page of them, to delete a tag, to delete an artifact, and
//! to dry-run retention over them (and, if asked, to run it for real).
//!
//! `meta-fill` writes the artifacts straight through the metadata layer (SQLite in a data
//! directory `berth serve` opens, or PostgreSQL at a URL): each has a config of its own and
//! two layers every artifact shares, and a tag. `meta-run` then measures a running server.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _};
use berth_meta::postgres::{PgMeta, PgOptions};
use berth_meta::sqlite::{Durability, SqliteMeta};
use berth_meta::{AccessStore, MetaStore, NewManifest, NewProject};
use berth_oci::{Digest, RepoName, Tag};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::json;

use crate::out::{quantile, r3, Out};

/// Where `meta-fill` writes.
pub enum Target {
    /// SQLite in this data directory.
    Sqlite(PathBuf),
    /// PostgreSQL at this URL.
    Postgres(String),
}

/// What `meta-fill` makes.
pub struct FillOpts {
    pub target: Target,
    pub project: String,
    pub repo: String,
    pub artifacts: usize,
}

fn manifest_json(config: &Digest, layers: &[&Digest]) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|d| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": 1000}))
        .collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config.to_string(), "size": 100},
        "layers": layers,
    }))
    .expect("JSON")
}

async fn fill_with<S: MetaStore + AccessStore>(
    out: &Out,
    meta: Arc<S>,
    o: &FillOpts,
) -> anyhow::Result<()> {
    let started = Instant::now();
    if meta.project_by_name(&o.project).await?.is_none() {
        meta.create_project(&NewProject {
            name: o.project.clone(),
            public: false,
            owner: None,
        })
        .await?;
    }
    let repo: RepoName = format!("{}/{}", o.project, o.repo).parse()?;
    let shared: Vec<Digest> = (0..2)
        .map(|j| Digest::sha256_of(format!("meta-bench shared {j}").as_bytes()))
        .collect();
    for d in &shared {
        meta.link_blob(&repo, d, 1000).await?;
    }
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..o.artifacts)
        .map(|i| {
            let (meta, repo, shared) = (Arc::clone(&meta), repo.clone(), shared.clone());
            async move {
                let config = Digest::sha256_of(format!("meta-bench config {i}").as_bytes());
                meta.link_blob(&repo, &config, 100).await?;
                let body = manifest_json(&config, &[&shared[0], &shared[1]]);
                let tag: Tag = format!("t{i}").parse()?;
                meta.put_manifest(
                    NewManifest {
                        repo,
                        digest: Digest::sha256_of(&body),
                        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                        artifact_type: None,
                        subject: None,
                        annotations: None,
                        content: body,
                        blobs: vec![config, shared[0].clone(), shared[1].clone()],
                        manifests: Vec::new(),
                        pinned_tags: Vec::new(),
                    },
                    &[tag],
                )
                .await?;
                Ok(())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    for r in results {
        r?;
    }
    out.emit(
        "meta-fill",
        json!({"fill_s": r3(started.elapsed().as_secs_f64())}),
        json!({"artifacts": o.artifacts, "repository": repo.to_string()}),
    );
    Ok(())
}

/// Fill the project.
///
/// # Errors
/// On any metadata error.
pub async fn fill(out: &Out, o: &FillOpts) -> anyhow::Result<()> {
    match &o.target {
        Target::Sqlite(dir) => {
            std::fs::create_dir_all(dir)?;
            let meta = SqliteMeta::open(&dir.join("meta.db"), Durability::Normal)?;
            fill_with(out, Arc::new(meta), o).await
        }
        Target::Postgres(url) => {
            let meta = PgMeta::connect(url, PgOptions::default()).await?;
            fill_with(out, Arc::new(meta), o).await
        }
    }
}

/// What `meta-run` measures.
pub struct RunOpts {
    pub url: String,
    pub username: String,
    pub password: String,
    pub project: String,
    pub repo: String,
    /// Requests per measurement.
    pub samples: usize,
    /// Artifacts in the repository (to pick the deepest page).
    pub artifacts: usize,
    /// Retention dry runs to time.
    pub retention_dry_runs: usize,
    /// Then run retention for real (deleting all but 10 artifacts) and time it.
    pub retention_run: bool,
}

/// A signed-in management API client: the session cookie and its CSRF token (so each
/// request is not a password check).
struct Session {
    http: reqwest::Client,
    base: String,
    cookie: String,
    csrf: String,
}

impl Session {
    async fn open(o: &RunOpts) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().no_proxy().build()?;
        let base = o.url.trim_end_matches('/').to_owned();
        let r = http
            .post(format!("{base}/c/login"))
            .form(&[("principal", &o.username), ("password", &o.password)])
            .send()
            .await?;
        if r.status() != StatusCode::OK {
            bail!("sign in: {} {}", r.status(), r.text().await?);
        }
        let csrf = r
            .headers()
            .get("x-harbor-csrf-token")
            .and_then(|v| v.to_str().ok())
            .context("no CSRF token from the sign-in")?
            .to_owned();
        let cookie = r
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .context("no session cookie from the sign-in")?
            .to_owned();
        Ok(Self {
            http,
            base,
            cookie,
            csrf,
        })
    }

    /// `method path` with an optional JSON body: the status, the path of the `Location`
    /// header if any, and the body.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<(StatusCode, Option<String>, bytes::Bytes)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .header("x-harbor-csrf-token", &self.csrf);
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().await?;
        let status = r.status();
        // The path of the Location (the server may answer with an absolute URL).
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(|l| l[l.find("/api/").unwrap_or(0)..].to_owned());
        Ok((status, location, r.bytes().await?))
    }

    /// `method path`; returns the latency in ms, failing unless the status is `want`.
    async fn timed(
        &self,
        method: reqwest::Method,
        path: &str,
        want: StatusCode,
    ) -> anyhow::Result<f64> {
        let started = Instant::now();
        let (status, _, _) = self.send(method.clone(), path, None).await?;
        if status != want {
            bail!("{method} {path}: {status}, want {want}");
        }
        Ok(started.elapsed().as_secs_f64() * 1000.0)
    }

    /// `method path` with `body`, failing unless the status is `want`: the path of the
    /// `Location` header and the body as JSON (null when empty).
    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
        want: StatusCode,
    ) -> anyhow::Result<(Option<String>, serde_json::Value)> {
        let (status, location, bytes) = self.send(method.clone(), path, body).await?;
        if status != want {
            bail!(
                "{method} {path}: {status}, want {want}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        let v = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes)?
        };
        Ok((location, v))
    }
}

/// Create a retention policy for `project` keeping its 10 most recently pushed artifacts
/// (untagged ones included) in every repository; returns its path.
async fn retention_policy(s: &Session, project: &str) -> anyhow::Result<String> {
    let (_, p) = s
        .json(
            reqwest::Method::GET,
            &format!("/api/v2.0/projects/{project}"),
            None,
            StatusCode::OK,
        )
        .await?;
    let id = p["project_id"].as_i64().context("no project_id")?;
    let policy = json!({
        "algorithm": "or",
        "rules": [{"template": "latestPushedK", "params": {"latestPushedK": 10},
            "tag_selectors": [{"kind": "doublestar", "decoration": "matches", "pattern": "**",
                "extras": "{\"untagged\":true}"}],
            "scope_selectors": {"repository": [{"kind": "doublestar",
                "decoration": "repoMatches", "pattern": "**"}]}}],
        "trigger": {"kind": "Schedule", "settings": {"cron": ""}},
        "scope": {"level": "project", "ref": id},
    });
    let (location, _) = s
        .json(
            reqwest::Method::POST,
            "/api/v2.0/retentions",
            Some(&policy),
            StatusCode::CREATED,
        )
        .await?;
    location.context("no Location for the policy")
}

/// Run retention policy `policy` (a dry run or not) and wait for it to end: the seconds it
/// took, from the request to the end the server recorded being seen, and the run.
async fn retention_run(
    s: &Session,
    policy: &str,
    dry_run: bool,
) -> anyhow::Result<(f64, serde_json::Value)> {
    let started = Instant::now();
    let (location, _) = s
        .json(
            reqwest::Method::POST,
            &format!("{policy}/executions"),
            Some(&json!({ "dry_run": dry_run })),
            StatusCode::CREATED,
        )
        .await?;
    let location = location.context("no Location for the run")?;
    loop {
        let (_, e) = s
            .json(reqwest::Method::GET, &location, None, StatusCode::OK)
            .await?;
        match e["status"].as_str() {
            Some("Success") => return Ok((started.elapsed().as_secs_f64(), e)),
            Some("Error" | "Stopped") => bail!("retention run ended badly: {e}"),
            _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
}

fn stats(v: &[f64]) -> serde_json::Value {
    json!({
        "count": v.len(),
        "p50_ms": r3(quantile(v, 0.5).unwrap_or(0.0)),
        "p99_ms": r3(quantile(v, 0.99).unwrap_or(0.0)),
        "max_ms": r3(quantile(v, 1.0).unwrap_or(0.0)),
    })
}

/// Measure listing pages, deleting tags and artifacts, and retention on a running server.
///
/// # Errors
/// On a request that fails or answers unexpectedly.
pub async fn run(out: &Out, o: &RunOpts) -> anyhow::Result<()> {
    let s = Session::open(o).await?;
    let artifacts = format!(
        "/api/v2.0/projects/{}/repositories/{}/artifacts",
        o.project,
        o.repo.replace('/', "%252F")
    );
    let mut first = Vec::new();
    let mut deep = Vec::new();
    let last_page = (o.artifacts / 10).max(1);
    for i in 0..o.samples {
        first.push(
            s.timed(
                reqwest::Method::GET,
                &format!("{artifacts}?page=1&page_size=10&with_tag=true"),
                StatusCode::OK,
            )
            .await?,
        );
        let page = 1 + (i * 7919) % last_page;
        deep.push(
            s.timed(
                reqwest::Method::GET,
                &format!("{artifacts}?page={page}&page_size=10&with_tag=true"),
                StatusCode::OK,
            )
            .await?,
        );
    }
    let samples = o.samples.min(o.artifacts / 2);
    let mut deletes = Vec::new();
    for i in 0..samples {
        // Tag t{i} is on the artifact filled i-th; delete it by name through the artifact
        // reference (Harbor's tag delete).
        let path = format!("{artifacts}/t{i}/tags/t{i}");
        deletes.push(
            s.timed(reqwest::Method::DELETE, &path, StatusCode::OK)
                .await?,
        );
    }
    // Artifacts (manifests) deleted by a tag of theirs: the delete takes the manifest, its
    // tags and its references (and the quota usage they count) in one transaction.
    let mut artifact_deletes = Vec::new();
    for i in samples..2 * samples {
        let path = format!("{artifacts}/t{i}");
        artifact_deletes.push(
            s.timed(reqwest::Method::DELETE, &path, StatusCode::OK)
                .await?,
        );
    }
    // Retention: dry runs over every artifact of the project (what a run would delete,
    // judged and recorded, nothing deleted), then, if asked, the real run.
    let policy = retention_policy(&s, &o.project).await?;
    let mut dry_runs = Vec::new();
    let mut dry = serde_json::Value::Null;
    for _ in 0..o.retention_dry_runs {
        let (secs, e) = retention_run(&s, &policy, true).await?;
        dry_runs.push(secs * 1000.0);
        dry = e;
    }
    let mut real = json!(null);
    if o.retention_run {
        let (secs, e) = retention_run(&s, &policy, false).await?;
        let deleted = e["deleted"].as_u64().unwrap_or(0);
        real = json!({
            "seconds": r3(secs),
            "deleted": deleted,
            "ms_per_delete": r3(secs * 1000.0 / deleted.max(1) as f64),
            "errors": e["errors"],
        });
    }
    let dry_s = |q| r3(quantile(&dry_runs, q).unwrap_or(0.0) / 1000.0);
    out.emit(
        "meta-run",
        json!({
            "list_first_page_p99_ms": r3(quantile(&first, 0.99).unwrap_or(0.0)),
            "list_any_page_p99_ms": r3(quantile(&deep, 0.99).unwrap_or(0.0)),
            "tag_delete_p99_ms": r3(quantile(&deletes, 0.99).unwrap_or(0.0)),
            "artifact_delete_p99_ms": r3(quantile(&artifact_deletes, 0.99).unwrap_or(0.0)),
            "retention_dry_run_max_s": dry_s(1.0),
        }),
        json!({
            "artifacts": o.artifacts,
            "list_first_page": stats(&first),
            "list_any_page": stats(&deep),
            "tag_delete": stats(&deletes),
            "artifact_delete": stats(&artifact_deletes),
            "retention_dry_run": {
                "runs": dry_runs.len(),
                "p50_s": dry_s(0.5),
                "max_s": dry_s(1.0),
                "total": dry["total"],
                "retained": dry["retained"],
                "would_delete": dry["deleted"],
            },
            "retention_run": real,
        }),
    );
    Ok(())
}
