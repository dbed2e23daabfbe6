//! The registry benchmarks. Each computes the digests of what it sends, lets the registry
//! confirm them, and checks what comes back before reporting a number.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::client::{Registry, DOCKER_ACCEPT, OCI_MANIFEST};
use crate::data;
use crate::out::{median, quantile, r3, Out};
use crate::procfs;
use crate::raw;

const GIB: f64 = (1u64 << 30) as f64;

/// Run `f(0..count)` on `concurrency` tasks; returns wall seconds and each call's milliseconds.
/// The first error stops the remaining work and is returned.
async fn run_pool<F, Fut>(count: usize, concurrency: usize, f: F) -> anyhow::Result<(f64, Vec<f64>)>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (f, next) = (f.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let t = Instant::now();
                if let Err(e) = f(i).await {
                    next.store(count, Ordering::Relaxed);
                    return Err(e.context(format!("item {i}")));
                }
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::with_capacity(count);
    for t in tasks {
        all.extend(t.await??);
    }
    Ok((start.elapsed().as_secs_f64(), all))
}

/// Push a 4 KiB layer and a config to `repo`; returns the OCI manifest referring to them.
async fn image(reg: &Registry, repo: &str) -> anyhow::Result<Bytes> {
    let layer = Bytes::from(data::blob(0x1a7e, 4096));
    let layer_digest = data::digest(&layer);
    let config = Bytes::from(
        json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        })
        .to_string(),
    );
    let config_digest = data::digest(&config);
    reg.push_monolithic(repo, &layer_digest, layer, false)
        .await?;
    reg.push_monolithic(repo, &config_digest, config.clone(), false)
        .await?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer_digest,
            "size": 4096,
        }],
    });
    Ok(Bytes::from(serde_json::to_vec_pretty(&manifest)?))
}

/// Server `pid` idle: its RSS now.
///
/// # Errors
/// If `/proc` cannot be read.
pub fn idle(out: &Out, pid: u32) -> anyhow::Result<()> {
    let rss = procfs::rss(pid)?;
    let anon = procfs::rss_anon(pid)?;
    out.emit(
        "idle",
        json!({ "idle_rss_mb": r3(rss as f64 / 1e6), "idle_rss_anon_mb": r3(anon as f64 / 1e6) }),
        json!({ "pid": pid, "rss_bytes": rss, "rss_anon_bytes": anon,
                "cpu_seconds": procfs::cpu_seconds(pid)? }),
    );
    Ok(())
}

/// A large blob to pull, and how the timed pulls take its bytes in.
#[derive(Clone, Copy)]
pub struct BlobSpec {
    /// Size in bytes.
    pub size: u64,
    /// Seed of the generated content.
    pub seed: u64,
    /// Take the timed pulls in on the raw reader ([`crate::raw::get_discarding`]) instead of
    /// reqwest: it costs the client less CPU, which on a shared 2-core machine the server
    /// needs. Both registries are measured with the same reader.
    pub raw: bool,
}

/// How many bytes one read of a timed raw pull may take. 256 KiB stays in a core's L2 cache;
/// 1 and 4 MiB measured no faster (BENCHMARKS.md).
pub const PULL_READ: usize = 256 << 10;

/// Push one blob of `size` bytes (seed `seed`), monolithic or in `chunk`-byte PATCHes, and
/// watch server `pid` while doing it.
///
/// # Errors
/// On any failed or unconfirmed upload.
pub async fn push_blob(
    out: &Out,
    reg: &Registry,
    repo: &str,
    size: u64,
    chunk: Option<u64>,
    seed: u64,
    pid: Option<u32>,
) -> anyhow::Result<()> {
    let (body, digest) = tokio::task::spawn_blocking(move || {
        let body = Bytes::from(data::blob(seed, size as usize));
        let digest = data::digest(&body);
        (body, digest)
    })
    .await?;
    let single = match chunk {
        None => reg.supports_single_post(repo).await?,
        Some(_) => false,
    };
    let mode = if chunk.is_some() { "chunked" } else { "mono" };
    let watch = pid.map(procfs::Watch::start).transpose()?;
    let me = std::process::id();
    let client_cpu = procfs::cpu_seconds(me)?;
    let t = Instant::now();
    match chunk {
        Some(c) => reg.push_chunked(repo, &digest, body, c as usize).await?,
        None => reg.push_monolithic(repo, &digest, body, single).await?,
    }
    let secs = t.elapsed().as_secs_f64();
    let client_cpu = procfs::cpu_seconds(me)? - client_cpu;
    let seen = watch.map(procfs::Watch::finish).transpose()?;
    let stored = reg.blob_size(repo, &digest).await?;
    ensure!(
        stored == size,
        "registry stored {stored} bytes, we pushed {size}"
    );
    let mut metrics = json!({ format!("push_{mode}_mb_s"): r3(size as f64 / secs / 1e6) });
    let mut detail = json!({
        "bytes": size, "seconds": r3(secs), "digest": digest, "verified": true,
        "chunk_bytes": chunk, "single_post": single, "client_cpu_seconds": r3(client_cpu),
    });
    if let Some(s) = seen {
        metrics[format!("push_{mode}_cpu_s_per_gib")] =
            json!(r3(s.cpu_seconds / (size as f64 / GIB)));
        metrics[format!("push_{mode}_hwm_mb")] = json!(r3(s.hwm as f64 / 1e6));
        detail["server_cpu_seconds"] = json!(r3(s.cpu_seconds));
        detail["server_rss_max_sampled_mb"] = json!(r3(s.rss_max_sampled as f64 / 1e6));
        detail["server_rss_after_mb"] = json!(r3(s.rss_after as f64 / 1e6));
    }
    out.emit(&format!("push-blob-{mode}"), metrics, detail);
    Ok(())
}

/// Pull the blob pushed as `blob`: one verified pull (hashing every byte), then `repeat`
/// timed pulls, then `range` bytes from its end five times, each checked byte for byte.
///
/// # Errors
/// On any mismatch.
pub async fn pull_blob(
    out: &Out,
    reg: &Registry,
    repo: &str,
    blob: BlobSpec,
    repeat: u32,
    range: u64,
) -> anyhow::Result<()> {
    let BlobSpec { size, seed, raw } = blob;
    let digest = tokio::task::spawn_blocking(move || data::blob_digest(seed, size)).await?;
    ensure!(
        reg.blob_size(repo, &digest).await? == size,
        "blob size differs"
    );

    // Verification pull: every byte hashed (untimed: hashing would cap the rate measured).
    let mut resp = reg.get_blob(repo, &digest, None).await?;
    let mut h = Sha256::new();
    while let Some(c) = resp.chunk().await? {
        h.update(&c);
    }
    let got = format!("sha256:{}", hex::encode(h.finalize()));
    ensure!(
        got == digest,
        "pulled blob hashes to {got}, expected {digest}"
    );

    let me = std::process::id();
    for _ in 0..repeat {
        let client_cpu = procfs::cpu_seconds(me)?;
        let t = Instant::now();
        let n = if raw {
            reg.pull_counting(repo, &digest, size, PULL_READ).await?
        } else {
            let mut resp = reg.get_blob(repo, &digest, None).await?;
            ensure!(
                resp.content_length() == Some(size),
                "Content-Length {:?}, expected {size}",
                resp.content_length()
            );
            let mut n = 0u64;
            while let Some(c) = resp.chunk().await? {
                n += c.len() as u64;
            }
            n
        };
        let secs = t.elapsed().as_secs_f64();
        let client_cpu = procfs::cpu_seconds(me)? - client_cpu;
        ensure!(n == size, "received {n} bytes, expected {size}");
        out.emit(
            "pull-blob",
            json!({ "pull_mb_s": r3(size as f64 / secs / 1e6) }),
            json!({ "bytes": size, "seconds": r3(secs), "digest": digest, "verified_by_hash": true,
                    "client": if raw { "raw" } else { "reqwest" },
                    "client_cpu_seconds": r3(client_cpu) }),
        );
    }

    if range > 0 && range <= size {
        let start = size - range;
        let mut want = vec![0u8; range as usize];
        data::fill(seed, start, &mut want);
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let resp = reg.get_blob(repo, &digest, Some((start, size - 1))).await?;
            let cr = resp
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let body = resp.bytes().await?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            ensure!(
                cr == format!("bytes {start}-{}/{size}", size - 1),
                "Content-Range {cr:?}"
            );
            ensure!(
                body[..] == want[..],
                "range bytes differ from the blob's end"
            );
        }
        out.emit(
            "pull-range",
            json!({ "range_ms": r3(median(&times).unwrap_or(0.0)) }),
            json!({ "range_bytes": range, "offset": start, "runs_ms": times.iter().map(|x| r3(*x)).collect::<Vec<_>>(), "verified": true }),
        );
    }
    Ok(())
}

/// Options for the manifest benchmark's wrk runs.
pub struct WrkOpts {
    /// wrk binary.
    pub wrk: String,
    /// wrk threads.
    pub threads: u32,
    /// Open connections.
    pub connections: u32,
    /// Seconds per run.
    pub seconds: u32,
}

/// Push an image tagged `tag`, check GET and HEAD, then load them with wrk.
///
/// # Errors
/// On setup failures, wrong replies, or non-2xx responses under load.
pub async fn manifest(
    out: &Out,
    reg: &Registry,
    repo: &str,
    tag: &str,
    o: &WrkOpts,
) -> anyhow::Result<()> {
    let body = image(reg, repo).await?;
    let digest = data::digest(&body);
    reg.put_manifest(repo, tag, &[], body).await?;
    for head in [false, true] {
        reg.check_manifest(repo, tag, &digest, head).await?;
    }
    let url = reg.url(&format!("/v2/{repo}/manifests/{tag}"))?;
    // GET with wrk, as asked; GET again and HEAD with the built-in closed-loop client, since
    // wrk 4.1 cannot finish a HEAD reply that has a Content-Length (wg/wrk#198). The second
    // GET calibrates the built-in client against wrk.
    for (method, tool) in [("GET", "wrk"), ("GET", "builtin"), ("HEAD", "builtin")] {
        let (threads, conns, secs) = (o.threads, o.connections, o.seconds);
        let (rps, p50, p99, requests, non_2xx, errors) = if tool == "wrk" {
            let (w, u) = (o.wrk.clone(), url.to_string());
            let (r, _) = tokio::task::spawn_blocking(move || {
                crate::wrk::run(
                    &w,
                    &u,
                    method,
                    &[("Accept", DOCKER_ACCEPT)],
                    threads,
                    conns,
                    secs,
                )
            })
            .await??;
            (
                r.rps,
                r.p50_ms,
                r.p99_ms,
                r.requests,
                r.non_2xx,
                r.socket_errors,
            )
        } else {
            let r = raw::load(
                &url,
                method,
                &[("Accept", DOCKER_ACCEPT)],
                conns as usize,
                std::time::Duration::from_secs(u64::from(secs)),
            )
            .await?;
            (r.rps, r.p50_ms, r.p99_ms, r.requests, r.non_2xx, r.errors)
        };
        if non_2xx > 0 {
            bail!("{method} manifest under load ({tool}): {non_2xx} non-2xx replies");
        }
        let m = method.to_ascii_lowercase();
        let key = if method == "GET" && tool == "builtin" {
            "manifest_get_builtin".to_owned()
        } else {
            format!("manifest_{m}")
        };
        out.emit(
            &format!("manifest-{m}-{tool}"),
            json!({
                format!("{key}_rps"): r3(rps),
                format!("{key}_p99_ms"): r3(p99),
            }),
            json!({
                "tool": tool, "p50_ms": r3(p50), "requests": requests, "errors": errors,
                "connections": conns, "threads": threads, "seconds": secs, "accept": DOCKER_ACCEPT,
            }),
        );
        // Still correct after the load.
        reg.check_manifest(repo, tag, &digest, method == "HEAD")
            .await
            .context("after the load run")?;
    }
    Ok(())
}

/// Push `count` distinct blobs of `size` bytes with `concurrency` clients, then pull them all
/// back and compare every byte.
///
/// # Errors
/// On any failed push or differing pull.
pub async fn small_blobs(
    out: &Out,
    reg: &Registry,
    repo: &str,
    count: usize,
    size: usize,
    concurrency: usize,
    seed: u64,
) -> anyhow::Result<()> {
    let blobs: Arc<Vec<(Bytes, String)>> = Arc::new(
        tokio::task::spawn_blocking(move || {
            (0..count)
                .map(|i| {
                    let mut b = vec![0u8; size];
                    data::fill(data::sub_seed(seed, i as u64), 0, &mut b);
                    let d = data::digest(&b);
                    (Bytes::from(b), d)
                })
                .collect()
        })
        .await?,
    );
    let single = reg.supports_single_post(repo).await?;
    let (r, b, rp) = (reg.clone(), blobs.clone(), repo.to_owned());
    let (push_secs, push_lat) = run_pool(count, concurrency, move |i| {
        let (r, b, rp) = (r.clone(), b.clone(), rp.clone());
        async move {
            let (body, d) = &b[i];
            r.push_monolithic(&rp, d, body.clone(), single).await
        }
    })
    .await?;
    let (r, b, rp) = (reg.clone(), blobs.clone(), repo.to_owned());
    let (pull_secs, pull_lat) = run_pool(count, concurrency, move |i| {
        let (r, b, rp) = (r.clone(), b.clone(), rp.clone());
        async move {
            let (body, d) = &b[i];
            let got = r.get_blob(&rp, d, None).await?.bytes().await?;
            ensure!(got == *body, "blob {d} came back different");
            Ok(())
        }
    })
    .await?;
    let ms = |v: &[f64], q: f64| r3(quantile(v, q).unwrap_or(0.0));
    out.emit(
        "small-blobs",
        json!({
            "small_push_per_s": r3(count as f64 / push_secs),
            "small_pull_per_s": r3(count as f64 / pull_secs),
        }),
        json!({
            "count": count, "bytes": size, "concurrency": concurrency, "single_post": single,
            "push_seconds": r3(push_secs), "pull_seconds": r3(pull_secs),
            "push_p50_ms": ms(&push_lat, 0.5), "push_p99_ms": ms(&push_lat, 0.99),
            "pull_p50_ms": ms(&pull_lat, 0.5), "pull_p99_ms": ms(&pull_lat, 0.99),
            "verified": true,
        }),
    );
    Ok(())
}

/// Options for the tags benchmark.
pub struct TagOpts {
    /// Tags to create.
    pub count: usize,
    /// Tags per `PUT ...?tag=` request; 0 for one `PUT /manifests/<tag>` per tag.
    pub batch: usize,
    /// Requests in flight.
    pub concurrency: usize,
    /// `n` for the listing.
    pub page: usize,
    /// How many times to list everything.
    pub list_repeat: u32,
}

/// Tag one manifest `count` times, then list the tags page by page following `Link`.
///
/// # Errors
/// On failed pushes; listing anomalies are reported, not fatal.
pub async fn tags(out: &Out, reg: &Registry, repo: &str, o: &TagOpts) -> anyhow::Result<()> {
    let body = image(reg, repo).await?;
    let digest = data::digest(&body);
    reg.put_manifest(repo, &digest, &[], body.clone()).await?;
    let names: Arc<Vec<String>> = Arc::new((0..o.count).map(|i| format!("v{i:05}")).collect());

    let (r, n, rp, b, d) = (
        reg.clone(),
        names.clone(),
        repo.to_owned(),
        body.clone(),
        digest.clone(),
    );
    let batch = o.batch;
    let pool: Arc<std::sync::Mutex<Vec<raw::Conn>>> = Arc::default();
    let requests = if batch == 0 {
        o.count
    } else {
        o.count.div_ceil(batch)
    };
    let (push_secs, _) = run_pool(requests, o.concurrency, move |i| {
        let (r, n, rp, b, d) = (r.clone(), n.clone(), rp.clone(), b.clone(), d.clone());
        let pool = pool.clone();
        async move {
            if batch == 0 {
                r.put_manifest(&rp, &n[i], &[], b).await?;
            } else {
                let want = &n[i * batch..((i + 1) * batch).min(n.len())];
                // A raw connection: a registry may confirm the tags with one OCI-Tag line
                // per tag, more header lines than reqwest (hyper) accepts.
                let mut url = r.url(&format!("/v2/{rp}/manifests/{d}"))?;
                {
                    let mut q = url.query_pairs_mut();
                    for t in want {
                        q.append_pair("tag", t);
                    }
                }
                let head = raw::request_head(
                    "PUT",
                    &url,
                    &[("Content-Type", OCI_MANIFEST)],
                    Some(b.len()),
                )?;
                let pooled = pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
                let mut conn = match pooled {
                    Some(c) => c,
                    None => raw::Conn::connect(&raw::authority(&url)?).await?,
                };
                let reply = conn.send(&head, &b, false, true).await?;
                ensure!(
                    reply.status == 201,
                    "PUT manifest with {} tags: {} {}",
                    want.len(),
                    reply.status,
                    String::from_utf8_lossy(&reply.body)
                );
                ensure!(
                    reply.all("docker-content-digest").next() == Some(d.as_str()),
                    "PUT manifest: wrong or missing Docker-Content-Digest"
                );
                let got: BTreeSet<&str> = reply
                    .all("oci-tag")
                    .flat_map(|v| v.split(','))
                    .map(str::trim)
                    .collect();
                if let Some(missing) = want.iter().find(|t| !got.contains(t.as_str())) {
                    bail!("registry did not confirm tag {missing} (does it support ?tag=?)");
                }
                pool.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
            }
            Ok(())
        }
    })
    .await?;

    let max_pages = o.count / o.page.max(1) + 3;
    let mut list_ms = Vec::new();
    let mut checks = None;
    for _ in 0..o.list_repeat.max(1) {
        let t = Instant::now();
        let mut url = reg.url(&format!("/v2/{repo}/tags/list"))?;
        url.query_pairs_mut().append_pair("n", &o.page.to_string());
        let mut pages: Vec<Vec<String>> = Vec::new();
        let mut next = Some(url);
        while let Some(u) = next.take() {
            if pages.len() >= max_pages {
                bail!("more than {max_pages} pages: is Link looping?");
            }
            let (tags, link) = reg.tags_page(u).await?;
            pages.push(tags);
            next = link;
        }
        list_ms.push(t.elapsed().as_secs_f64() * 1e3);
        if checks.is_none() {
            let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
            let last = sizes.len().saturating_sub(1);
            let n_honoured = sizes
                .iter()
                .enumerate()
                .all(|(i, &s)| s == o.page || (i == last && s <= o.page && s > 0));
            let all: Vec<&String> = pages.iter().flatten().collect();
            let unique: BTreeSet<&str> = all.iter().map(|s| s.as_str()).collect();
            let expected: BTreeSet<&str> = names.iter().map(String::as_str).collect();
            let all_returned = all.len() == names.len() && unique == expected;
            checks = Some((sizes, n_honoured, all_returned, all.len()));
        }
    }
    let (sizes, n_honoured, all_returned, returned) = checks.unwrap_or_default();
    let key = if batch == 0 {
        "tags_push_single_s".to_owned()
    } else {
        "tags_push_batch_s".to_owned()
    };
    out.emit(
        &format!("tags-{}", if batch == 0 { "single" } else { "batch" }),
        json!({
            key: r3(push_secs),
            "tags_list_ms": r3(median(&list_ms).unwrap_or(0.0)),
            "tags_n_honoured": u8::from(n_honoured),
            "tags_all_returned": u8::from(all_returned),
        }),
        json!({
            "count": o.count, "batch": batch, "requests": requests, "concurrency": o.concurrency,
            "page": o.page, "pages": sizes.len(), "page_sizes": sizes, "returned": returned,
            "list_runs_ms": list_ms.iter().map(|x| r3(*x)).collect::<Vec<_>>(),
        }),
    );
    Ok(())
}
