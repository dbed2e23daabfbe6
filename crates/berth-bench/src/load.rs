//! A sustained mixed load through one or more instances of a registry: many clients each push
//! small distinct images (two blobs and a manifest) through one instance and pull images back
//! through another, for a fixed time. Every reply is checked as it comes; afterwards every
//! image pushed is pulled again through every instance and its digests verified. Reports
//! requests per second and latency quantiles per kind of request, and the errors seen: a run
//! with any error, or any image that does not verify, fails.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::client::{Registry, OCI_MANIFEST};
use crate::data;
use crate::out::{quantile, r3, Out};

/// What to run.
pub struct LoadOpts {
    /// Concurrent clients.
    pub clients: usize,
    /// How long they push and pull.
    pub duration: Duration,
    /// Layer bytes per image.
    pub layer: usize,
    /// Repositories are `<repo>/r0 .. r<repos-1>`.
    pub repo: String,
    /// How many repositories the clients spread over.
    pub repos: usize,
    /// Requests in flight while verifying afterwards.
    pub verify_concurrency: usize,
}

/// One image a client pushed and the registry acknowledged.
#[derive(Clone)]
struct Pushed {
    repo: String,
    tag: String,
    manifest: String,
    blobs: Vec<String>,
}

/// The kinds of request timed.
#[derive(Clone, Copy)]
enum Op {
    BlobPush = 0,
    ManifestPut = 1,
    ManifestGet = 2,
    BlobGet = 3,
}

const OPS: [(&str, Op); 4] = [
    ("blob_push", Op::BlobPush),
    ("manifest_put", Op::ManifestPut),
    ("manifest_get", Op::ManifestGet),
    ("blob_get", Op::BlobGet),
];

#[derive(Default)]
struct ClientLog {
    latencies: [Vec<f64>; 4],
    pushed: Vec<Pushed>,
    errors: Vec<String>,
}

impl ClientLog {
    async fn timed<T>(
        &mut self,
        op: Op,
        f: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> Option<T> {
        let t = Instant::now();
        match f.await {
            Ok(v) => {
                self.latencies[op as usize].push(t.elapsed().as_secs_f64() * 1e3);
                Some(v)
            }
            Err(e) => {
                self.errors.push(format!("{e:#}"));
                None
            }
        }
    }
}

/// GET a blob and check that its bytes hash to `digest`.
async fn get_verified(reg: &Registry, repo: &str, digest: &str) -> anyhow::Result<()> {
    let resp = reg.get_blob(repo, digest, None).await?;
    let mut h = Sha256::new();
    let mut body = resp.bytes_stream();
    while let Some(piece) = body.next().await {
        h.update(piece?);
    }
    let got = format!("sha256:{}", hex::encode(h.finalize()));
    if got != digest {
        bail!("blob {repo}@{digest}: body hashes to {got}");
    }
    Ok(())
}

/// Push one image (layer, config, manifest under `tag`); returns what was pushed.
async fn push_image(
    log: &mut ClientLog,
    reg: &Registry,
    repo: &str,
    tag: &str,
    seed: u64,
    layer_size: usize,
) -> Option<Pushed> {
    let layer = Bytes::from(data::blob(seed, layer_size));
    let layer_digest = data::digest(&layer);
    let config = Bytes::from(
        json!({"architecture": "amd64", "os": "linux", "seed": seed,
               "rootfs": {"type": "layers", "diff_ids": [layer_digest]}})
        .to_string(),
    );
    let config_digest = data::digest(&config);
    log.timed(
        Op::BlobPush,
        reg.push_monolithic(repo, &layer_digest, layer, true),
    )
    .await?;
    let config_len = config.len();
    log.timed(
        Op::BlobPush,
        reg.push_monolithic(repo, &config_digest, config, true),
    )
    .await?;
    let manifest = Bytes::from(
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config_len},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer_digest, "size": layer_size}],
        }))
        .ok()?,
    );
    let manifest_digest = data::digest(&manifest);
    log.timed(Op::ManifestPut, reg.put_manifest(repo, tag, &[], manifest))
        .await?;
    Some(Pushed {
        repo: repo.to_owned(),
        tag: tag.to_owned(),
        manifest: manifest_digest,
        blobs: vec![config_digest, layer_digest],
    })
}

/// Run the load against `regs` (one per instance).
///
/// # Errors
/// If any request failed or any image does not verify afterwards.
pub async fn run(out: &Out, regs: Vec<Registry>, o: &LoadOpts) -> anyhow::Result<()> {
    let regs = Arc::new(regs);
    let n = regs.len();
    let start = Instant::now();
    let deadline = start + o.duration;
    let mut tasks = Vec::new();
    for k in 0..o.clients {
        let regs = regs.clone();
        let repo = format!("{}/r{}", o.repo, k % o.repos.max(1));
        let layer = o.layer;
        tasks.push(tokio::spawn(async move {
            let mut log = ClientLog::default();
            let mut i = 0usize;
            while Instant::now() < deadline {
                // Push through one instance and pull through the next, so every read
                // crosses instances when there are several.
                let push_via = &regs[(k + i) % n];
                let pull_via = &regs[(k + i + 1) % n];
                let tag = format!("c{k}-{i}");
                let seed = ((k as u64) << 32) | i as u64;
                if let Some(p) = push_image(&mut log, push_via, &repo, &tag, seed, layer).await {
                    log.pushed.push(p);
                }
                // Pull an image this client pushed earlier (its latest, and now and then an
                // older one).
                if let Some(p) = log
                    .pushed
                    .get(i.wrapping_mul(7919) % log.pushed.len().max(1))
                    .cloned()
                {
                    let got = log
                        .timed(
                            Op::ManifestGet,
                            pull_via.check_manifest(&p.repo, &p.tag, &p.manifest, false),
                        )
                        .await;
                    if got.is_some() {
                        log.timed(Op::BlobGet, get_verified(pull_via, &p.repo, &p.blobs[1]))
                            .await;
                    }
                }
                i += 1;
            }
            log
        }));
    }
    let mut logs = Vec::with_capacity(o.clients);
    for t in tasks {
        logs.push(t.await.context("client task")?);
    }
    let elapsed = start.elapsed().as_secs_f64();

    let mut metrics = serde_json::Map::new();
    let mut total = 0usize;
    for (name, op) in OPS {
        let lat: Vec<f64> = logs
            .iter()
            .flat_map(|l| l.latencies[op as usize].iter().copied())
            .collect();
        total += lat.len();
        metrics.insert(
            format!("{name}_per_s"),
            json!(r3(lat.len() as f64 / elapsed)),
        );
        metrics.insert(format!("{name}_p50_ms"), json!(quantile(&lat, 0.5).map(r3)));
        metrics.insert(
            format!("{name}_p99_ms"),
            json!(quantile(&lat, 0.99).map(r3)),
        );
    }
    let errors: Vec<String> = logs.iter().flat_map(|l| l.errors.iter().cloned()).collect();
    let pushed: Vec<Pushed> = logs.into_iter().flat_map(|l| l.pushed).collect();
    metrics.insert("requests_per_s".into(), json!(r3(total as f64 / elapsed)));
    metrics.insert("images_pushed".into(), json!(pushed.len()));
    metrics.insert("errors".into(), json!(errors.len()));

    // Afterwards: every acknowledged image, through every instance.
    let verify_start = Instant::now();
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let jobs = pushed
        .iter()
        .flat_map(|p| (0..n).map(move |r| (p, r)))
        .map(|(p, r)| {
            let (regs, failures) = (regs.clone(), failures.clone());
            async move {
                let reg = &regs[r];
                let checked = async {
                    reg.check_manifest(&p.repo, &p.tag, &p.manifest, false)
                        .await?;
                    for b in &p.blobs {
                        get_verified(reg, &p.repo, b).await?;
                    }
                    anyhow::Ok(())
                }
                .await;
                if let Err(e) = checked {
                    failures
                        .lock()
                        .expect("failures lock")
                        .push(format!("instance {r}: {}:{}: {e:#}", p.repo, p.tag));
                }
                anyhow::Ok(())
            }
        });
    futures::stream::iter(jobs)
        .buffer_unordered(o.verify_concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    let failures = failures.lock().expect("failures lock").clone();
    metrics.insert("verify_failures".into(), json!(failures.len()));
    metrics.insert(
        "verify_seconds".into(),
        json!(r3(verify_start.elapsed().as_secs_f64())),
    );
    out.emit(
        "load",
        serde_json::Value::Object(metrics),
        json!({
            "clients": o.clients,
            "seconds": r3(elapsed),
            "instances": n,
            "layer_bytes": o.layer,
            "first_errors": errors.iter().take(10).collect::<Vec<_>>(),
            "first_verify_failures": failures.iter().take(10).collect::<Vec<_>>(),
        }),
    );
    if pushed.is_empty() {
        bail!("no image was pushed");
    }
    if !errors.is_empty() || !failures.is_empty() {
        bail!(
            "{} request errors and {} images that did not verify (first: {})",
            errors.len(),
            failures.len(),
            errors
                .first()
                .or(failures.first())
                .map_or("", String::as_str)
        );
    }
    Ok(())
}
