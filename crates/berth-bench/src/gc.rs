//! The garbage collection benchmark.
//!
//! `gc-fill` writes one registry's worth of content twice: through Berth's own store and
//! metadata layers (a data directory `berth serve` opens), and as CNCF Distribution's
//! filesystem layout (for `docker-registry garbage-collect`). Every manifest has a config and
//! layers of its own; the even ones stay tagged, the odd ones are deleted, so half of the
//! blobs are garbage in both.
//!
//! `gc-run` then starts a collection on a running Berth through its API and pushes small
//! images the whole time, reporting the run's duration and what it freed, and the latency
//! of the pushes during it next to the same pushes before it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use berth_meta::sqlite::{Durability, SqliteMeta};
use berth_meta::{MetaStore, NewManifest};
use berth_oci::{Digest, RepoName, Tag};
use berth_store::fs::{FsStore, SyncMode};
use berth_store::{BlobStore, Segment};
use bytes::Bytes;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::out::{quantile, r3, Out};

/// What `gc-fill` makes.
pub struct FillOpts {
    pub data_dir: PathBuf,
    pub dist_root: Option<PathBuf>,
    pub manifests: usize,
    pub blobs_per_manifest: usize,
    pub blob_size: usize,
    pub repos: usize,
}

/// The bytes of blob `j` of manifest `i`: distinct for every (i, j).
fn blob_bytes(i: usize, j: usize, size: usize) -> Vec<u8> {
    let mut out = format!("gc-bench {i} {j} ").into_bytes();
    let mut x = (i as u64) << 20 | j as u64;
    while out.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(size.max(16));
    out
}

fn manifest_json(config: (&Digest, usize), layers: &[(Digest, usize)]) -> Vec<u8> {
    let layers: Vec<Value> = layers
        .iter()
        .map(|(d, n)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": n}))
        .collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config.0.to_string(), "size": config.1},
        "layers": layers,
    }))
    .expect("JSON")
}

fn write_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, data)
}

/// Distribution 2.8's filesystem layout under `root`.
struct DistLayout(PathBuf);

impl DistLayout {
    fn v2(&self) -> PathBuf {
        self.0.join("docker/registry/v2")
    }

    fn blob(&self, d: &Digest, data: &[u8]) -> std::io::Result<()> {
        let hex = d.hex();
        write_file(
            &self
                .v2()
                .join(format!("blobs/sha256/{}/{hex}/data", &hex[..2])),
            data,
        )
    }

    fn link(&self, repo: &str, rest: &str, d: &Digest) -> std::io::Result<()> {
        write_file(
            &self.v2().join(format!("repositories/{repo}/{rest}/link")),
            d.to_string().as_bytes(),
        )
    }
}

/// Push one blob through the store, as an upload committed under its digest.
async fn store_blob(store: &FsStore, id: &str, digest: &Digest, data: Bytes) -> anyhow::Result<()> {
    let len = data.len() as u64;
    store.start_upload(id).await?;
    let body: berth_store::ByteStream = Box::pin(futures::stream::iter([Ok(data)]));
    store.append(id, 0, "t0", body).await?;
    store
        .commit_upload(id, digest, len, &[Segment::new(0, "t0")])
        .await?;
    Ok(())
}

/// Fill a Berth data directory (and a Distribution root) with the benchmark's registry.
///
/// # Errors
/// On any store, metadata or file error.
pub async fn fill(out: &Out, o: &FillOpts) -> anyhow::Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&o.data_dir)?;
    let meta = Arc::new(SqliteMeta::open(
        &o.data_dir.join("meta.db"),
        Durability::Normal,
    )?);
    let store = Arc::new(FsStore::open(&o.data_dir, SyncMode::Relaxed)?);
    let dist = o.dist_root.clone().map(|r| Arc::new(DistLayout(r)));
    let (blob_size, per, repos) = (o.blob_size, o.blobs_per_manifest.max(2), o.repos.max(1));
    let results: Vec<anyhow::Result<u64>> = futures::stream::iter(0..o.manifests)
        .map(|i| {
            let (meta, store, dist) = (Arc::clone(&meta), Arc::clone(&store), dist.clone());
            async move {
                let repo_name = format!("gcbench/r{}", i % repos);
                let repo: RepoName = repo_name.parse()?;
                let mut digests = Vec::with_capacity(per);
                for j in 0..per {
                    let data = Bytes::from(blob_bytes(i, j, blob_size));
                    let d = Digest::sha256_of(&data);
                    store_blob(&store, &format!("fill-{i}-{j}"), &d, data.clone()).await?;
                    meta.link_blob(&repo, &d, data.len() as u64).await?;
                    if let Some(dist) = &dist {
                        let (dist, d2, data) = (Arc::clone(dist), d.clone(), data.clone());
                        let r = repo_name.clone();
                        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                            dist.blob(&d2, &data)?;
                            dist.link(&r, &format!("_layers/sha256/{}", d2.hex()), &d2)
                        })
                        .await??;
                    }
                    digests.push((d, data.len()));
                }
                let body = manifest_json((&digests[0].0, digests[0].1), &digests[1..]);
                let md = Digest::sha256_of(&body);
                let keep = i % 2 == 0;
                let tag: Tag = format!("t{i}").parse()?;
                meta.put_manifest(
                    NewManifest {
                        repo: repo.clone(),
                        digest: md.clone(),
                        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                        artifact_type: None,
                        subject: None,
                        annotations: None,
                        content: body.clone(),
                        blobs: digests.iter().map(|(d, _)| d.clone()).collect(),
                        manifests: Vec::new(),
                        pinned_tags: Vec::new(),
                    },
                    &[tag],
                )
                .await?;
                if !keep {
                    meta.delete_manifest(&repo, &md).await?;
                }
                if let Some(dist) = &dist {
                    let (dist, r) = (Arc::clone(dist), repo_name.clone());
                    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                        // A deleted manifest's bytes stay in Distribution until its GC; only
                        // the repository's revision and tag links go.
                        dist.blob(&md, &body)?;
                        if keep {
                            let rev = format!("_manifests/revisions/sha256/{}", md.hex());
                            dist.link(&r, &rev, &md)?;
                            dist.link(&r, &format!("_manifests/tags/t{i}/current"), &md)?;
                            dist.link(
                                &r,
                                &format!("_manifests/tags/t{i}/index/sha256/{}", md.hex()),
                                &md,
                            )?;
                        }
                        Ok(())
                    })
                    .await??;
                }
                Ok(if keep { 0 } else { per as u64 })
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut garbage = 0u64;
    for r in results {
        garbage += r?;
    }
    let blobs = (o.manifests * per) as u64;
    out.emit(
        "gc-fill",
        json!({"fill_s": r3(started.elapsed().as_secs_f64())}),
        json!({"manifests": o.manifests, "blobs": blobs, "garbage_blobs": garbage,
            "blob_size": blob_size, "repos": repos,
            "distribution_root": o.dist_root.as_ref().map(|p| p.display().to_string())}),
    );
    Ok(())
}

/// What `gc-run` does.
pub struct RunOpts {
    pub url: String,
    pub username: String,
    pub password: String,
    /// Where the pushes during the run go.
    pub repo: String,
    /// How long to push before starting the run, for the baseline.
    pub baseline: Duration,
    /// Garbage blobs the run must delete (0: don't check).
    pub expect_blobs: u64,
}

/// Push one small image (config, layer, manifest) with `auth`; returns its latency in ms.
async fn push_image(
    http: &reqwest::Client,
    base: &str,
    auth: &str,
    repo: &str,
    n: u64,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut digests = Vec::new();
    for part in ["config", "layer"] {
        let data = Bytes::from(format!("gc-bench live {part} {n} {:?}", Instant::now()));
        let d = Digest::sha256_of(&data);
        let r = http
            .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
            .header("authorization", auth)
            .body(data.clone())
            .send()
            .await?;
        if r.status() != StatusCode::CREATED {
            bail!("push blob: {} {}", r.status(), r.text().await?);
        }
        digests.push((d, data.len()));
    }
    let body = manifest_json((&digests[0].0, digests[0].1), &digests[1..]);
    let r = http
        .put(format!("{base}/v2/{repo}/manifests/live{n}"))
        .header("authorization", auth)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(body)
        .send()
        .await?;
    if r.status() != StatusCode::CREATED {
        bail!("push manifest: {} {}", r.status(), r.text().await?);
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

fn latency_summary(ms: &[f64]) -> Value {
    json!({
        "count": ms.len(),
        "p50_ms": quantile(ms, 0.5).map(r3),
        "p99_ms": quantile(ms, 0.99).map(r3),
        "max_ms": quantile(ms, 1.0).map(r3),
    })
}

/// Start a collection on Berth at `o.url` and push images through it until it ends.
///
/// # Errors
/// On a failed push, a failed run, or fewer blobs deleted than expected.
pub async fn run(out: &Out, o: &RunOpts) -> anyhow::Result<()> {
    use base64::Engine as _;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let base = o.url.trim_end_matches('/').to_owned();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", o.username, o.password))
    );
    let token: Value = http
        .get(format!(
            "{base}/service/token?service=berth&scope=repository:{}:pull,push",
            o.repo
        ))
        .header("authorization", &basic)
        .send()
        .await?
        .error_for_status()
        .context("token for the pushes")?
        .json()
        .await?;
    let bearer = format!(
        "Bearer {}",
        token["token"].as_str().context("no token in the reply")?
    );
    let mut n = 0u64;
    let mut baseline = Vec::new();
    let until = Instant::now() + o.baseline;
    while Instant::now() < until {
        baseline.push(push_image(&http, &base, &bearer, &o.repo, n).await?);
        n += 1;
    }
    let started = Instant::now();
    let r = http
        .post(format!("{base}/api/v2.0/system/gc/schedule"))
        .header("authorization", &basic)
        .json(&json!({"schedule": {"type": "Manual"}, "parameters": {}}))
        .send()
        .await?;
    if r.status() != StatusCode::CREATED {
        bail!("start GC: {} {}", r.status(), r.text().await?);
    }
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .context("no Location")?
        .to_owned();
    let status = {
        let (http, basic, url) = (http.clone(), basic.clone(), format!("{base}{location}"));
        tokio::spawn(async move {
            loop {
                let run: Value = http
                    .get(&url)
                    .header("authorization", &basic)
                    .send()
                    .await?
                    .json()
                    .await?;
                match run["job_status"].as_str() {
                    Some("Success") => return Ok::<_, anyhow::Error>((run, started.elapsed())),
                    Some("Error" | "Stopped") => bail!("GC ended badly: {run}"),
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
    };
    let mut during = Vec::new();
    while !status.is_finished() {
        during.push(push_image(&http, &base, &bearer, &o.repo, n).await?);
        n += 1;
    }
    let (gc, wall) = status.await??;
    let freed = gc["blobs_deleted"].as_u64().unwrap_or(0);
    if freed < o.expect_blobs {
        bail!(
            "GC deleted {freed} blobs, expected {}: {gc}",
            o.expect_blobs
        );
    }
    out.emit(
        "gc-run",
        json!({"gc_s": r3(wall.as_secs_f64()),
            "push_during_p99_ms": quantile(&during, 0.99).map(r3),
            "push_before_p99_ms": quantile(&baseline, 0.99).map(r3)}),
        json!({"run": gc, "pushes_before": latency_summary(&baseline),
            "pushes_during": latency_summary(&during)}),
    );
    Ok(())
}
