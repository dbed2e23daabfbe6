//! `berth-bench`: a load generator for OCI registries. It speaks the `/v2` API to any registry
//! URL, computes and verifies every digest itself, and prints one JSON line per measurement.
//! `scripts/bench.sh` drives it against Berth and CNCF Distribution side by side.

mod bench;
mod client;
mod data;
mod gc;
mod load;
mod machine;
mod meta;
mod out;
mod procfs;
mod raw;
mod report;
mod wrk;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

fn size(s: &str) -> Result<u64, String> {
    data::parse_size(s)
}

/// Benchmark an OCI registry over its /v2 API.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// key=value added to every JSON line (repeatable), e.g. registry=berth round=1
    #[arg(long, global = true)]
    meta: Vec<String>,
    /// Client runtime worker threads
    #[arg(long, global = true, default_value_t = 2)]
    client_threads: usize,
    #[command(subcommand)]
    command: Command,
}

/// Where the registry is.
#[derive(clap::Args)]
struct Target {
    /// Registry base URL
    #[arg(long, default_value = "http://127.0.0.1:5000")]
    url: String,
    /// Repository name
    #[arg(long, default_value = "bench/blob")]
    repo: String,
}

#[derive(Subcommand)]
enum Command {
    /// Measure this machine: sha256 (one core), loopback (TCP over 127.0.0.1), sendfile (a
    /// cached file served by nothing but sendfile to the pull reader) or receive (the CPU a
    /// durable push costs with nothing but receiving, hashing and a direct write)
    Machine {
        #[arg(value_parser = ["sha256", "loopback", "sendfile", "receive"])]
        what: String,
        /// Bytes per run
        #[arg(long, value_parser = size, default_value = "1GiB")]
        bytes: u64,
        /// Runs
        #[arg(long, default_value_t = 3)]
        repeat: u32,
        /// Scratch directory for sendfile and receive (on the disk the registries use)
        #[arg(long, default_value_os_t = std::env::temp_dir())]
        dir: std::path::PathBuf,
    },
    /// Report a server's resident memory now
    Idle {
        /// Server process id
        #[arg(long)]
        pid: u32,
    },
    /// Push one blob, monolithic or chunked, timing it and watching the server
    PushBlob {
        #[command(flatten)]
        target: Target,
        /// Blob size
        #[arg(long, value_parser = size, default_value = "1GiB")]
        size: u64,
        /// Push in PATCH chunks of this size instead of one request
        #[arg(long, value_parser = size)]
        chunk: Option<u64>,
        /// Seed of the generated content (distinct seeds give distinct blobs)
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Server process id, to read its CPU time and memory from /proc
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Pull a blob pushed earlier with the same seed and size (verified, timed, and a Range read)
    PullBlob {
        #[command(flatten)]
        target: Target,
        /// Blob size
        #[arg(long, value_parser = size, default_value = "1GiB")]
        size: u64,
        /// Seed the blob was pushed with
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Timed pulls
        #[arg(long, default_value_t = 3)]
        repeat: u32,
        /// Bytes to read from the end with a Range request (0: skip)
        #[arg(long, value_parser = size, default_value = "1MiB")]
        range: u64,
        /// How the timed pulls take the body in: `raw` (a blocking socket, 256 KiB reads into
        /// one buffer) or `reqwest` (the reader used before; it costs the client more CPU)
        #[arg(long, value_parser = ["raw", "reqwest"], default_value = "raw")]
        via: String,
    },
    /// Push an image, then load manifest GET and HEAD by tag with wrk
    Manifest {
        #[command(flatten)]
        target: Target,
        /// Tag to push and request
        #[arg(long, default_value = "latest")]
        tag: String,
        /// wrk binary
        #[arg(long, default_value = "wrk")]
        wrk: String,
        /// wrk threads
        #[arg(long, default_value_t = 2)]
        threads: u32,
        /// Connections
        #[arg(long, default_value_t = 64)]
        connections: u32,
        /// Seconds per method
        #[arg(long, default_value_t = 10)]
        seconds: u32,
    },
    /// Push many small distinct blobs concurrently, then pull them all back
    SmallBlobs {
        #[command(flatten)]
        target: Target,
        /// Number of blobs
        #[arg(long, default_value_t = 2000)]
        count: usize,
        /// Bytes per blob
        #[arg(long, value_parser = size, default_value = "32KiB")]
        size: u64,
        /// Concurrent clients
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Seed of the generated content
        #[arg(long, default_value_t = 3)]
        seed: u64,
    },
    /// Tag one manifest many times, then list the tags page by page
    Tags {
        #[command(flatten)]
        target: Target,
        /// Tags to create
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// Tags per PUT with ?tag= (Berth); 0 for one PUT per tag
        #[arg(long, default_value_t = 0)]
        batch: usize,
        /// Requests in flight
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Page size n for the listing
        #[arg(long, default_value_t = 1000)]
        page: usize,
        /// Times to list all tags
        #[arg(long, default_value_t = 5)]
        list_repeat: u32,
    },
    /// Many clients push small images through one instance and pull through another for a
    /// while; then every image is verified through every instance. Fails on any error.
    Load {
        /// Registry base URL of each instance (repeat for several)
        #[arg(long = "url", required = true)]
        urls: Vec<String>,
        /// Concurrent clients
        #[arg(long, default_value_t = 200)]
        clients: usize,
        /// Seconds of load
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Layer size of each image
        #[arg(long, value_parser = size, default_value = "16KiB")]
        layer: u64,
        /// Repository name prefix
        #[arg(long, default_value = "load")]
        repo: String,
        /// Repositories to spread over
        #[arg(long, default_value_t = 20)]
        repos: usize,
        /// Requests in flight while verifying
        #[arg(long, default_value_t = 64)]
        verify_concurrency: usize,
    },
    /// Fill a Berth data directory (through its store and metadata layers) and, if asked, a
    /// Distribution root with the same registry: half of its blobs garbage
    GcFill {
        /// Berth's data directory (created)
        #[arg(long)]
        data_dir: PathBuf,
        /// Distribution's storage root (created), for `docker-registry garbage-collect`
        #[arg(long)]
        dist_root: Option<PathBuf>,
        /// Manifests, each with its own config and layers
        #[arg(long, default_value_t = 10_000)]
        manifests: usize,
        /// Blobs per manifest (config and layers)
        #[arg(long, default_value_t = 10)]
        blobs_per_manifest: usize,
        /// Bytes per blob
        #[arg(long, value_parser = size, default_value = "512")]
        blob_size: u64,
        /// Repositories the manifests are spread over
        #[arg(long, default_value_t = 10)]
        repos: usize,
    },
    /// Start garbage collection on a Berth (token mode) and push images until it ends
    /// Fill one project with artifacts through the metadata layer (for meta-run)
    MetaFill {
        /// Berth's data directory (SQLite), created
        #[arg(long, conflicts_with = "metadata_url")]
        data_dir: Option<PathBuf>,
        /// A PostgreSQL URL instead
        #[arg(long)]
        metadata_url: Option<String>,
        /// The project (created)
        #[arg(long, default_value = "meta")]
        project: String,
        /// The repository within it
        #[arg(long, default_value = "app")]
        repo: String,
        /// Artifacts, each with its own config, two shared layers and a tag
        #[arg(long, default_value_t = 100_000)]
        artifacts: usize,
    },
    /// Time artifact listing, tag and artifact deletes and retention on a running Berth filled
    /// by meta-fill
    MetaRun {
        /// Berth's base URL
        #[arg(long, default_value = "http://127.0.0.1:5000")]
        url: String,
        /// An administrator
        #[arg(long, default_value = "admin")]
        username: String,
        /// Its password
        #[arg(long, env = "BERTH_BENCH_PASSWORD")]
        password: String,
        #[arg(long, default_value = "meta")]
        project: String,
        #[arg(long, default_value = "app")]
        repo: String,
        /// Artifacts meta-fill made
        #[arg(long, default_value_t = 100_000)]
        artifacts: usize,
        /// Requests per measurement
        #[arg(long, default_value_t = 200)]
        samples: usize,
        /// Retention dry runs over the whole project to time
        #[arg(long, default_value_t = 3)]
        retention_dry_runs: usize,
        /// Then run retention for real (keeping the 10 newest artifacts) and time it
        #[arg(long)]
        retention_run: bool,
    },
    GcRun {
        /// Berth's base URL
        #[arg(long, default_value = "http://127.0.0.1:5000")]
        url: String,
        /// An administrator
        #[arg(long, default_value = "admin")]
        username: String,
        /// Its password
        #[arg(long, env = "BERTH_BENCH_PASSWORD")]
        password: String,
        /// Repository for the pushes during the run
        #[arg(long, default_value = "gcbench/live")]
        repo: String,
        /// Seconds of pushes before the run, for comparison
        #[arg(long, default_value_t = 3)]
        baseline_seconds: u64,
        /// Fail unless the run deletes at least this many blobs
        #[arg(long, default_value_t = 0)]
        expect_blobs: u64,
    },
    /// Print a free TCP port on 127.0.0.1
    FreePort,
    /// Summarise a JSON-lines results file: Markdown tables on stdout, JSON to --out
    Report {
        /// Results file (JSON lines)
        input: PathBuf,
        /// Summary JSON to write
        #[arg(long, default_value = "bench-results/latest.json")]
        out: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let out = out::Out::new(&cli.meta)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.client_threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Machine {
                what,
                bytes,
                repeat,
                dir,
            } => match what.as_str() {
                "sha256" => {
                    tokio::task::spawn_blocking(move || machine::sha256(&out, bytes, repeat))
                        .await?;
                    Ok(())
                }
                "sendfile" => {
                    tokio::task::spawn_blocking(move || {
                        machine::sendfile(&out, &dir, bytes, bench::PULL_READ, repeat)
                    })
                    .await?
                }
                "receive" => {
                    tokio::task::spawn_blocking(move || machine::receive(&out, &dir, bytes, repeat))
                        .await?
                }
                _ => machine::loopback(&out, bytes, repeat).await,
            },
            Command::Idle { pid } => bench::idle(&out, pid),
            Command::PushBlob {
                target,
                size,
                chunk,
                seed,
                pid,
            } => {
                let reg = client::Registry::new(&target.url)?;
                bench::push_blob(&out, &reg, &target.repo, size, chunk, seed, pid).await
            }
            Command::PullBlob {
                target,
                size,
                seed,
                repeat,
                range,
                via,
            } => {
                let reg = client::Registry::new(&target.url)?;
                let blob = bench::BlobSpec {
                    size,
                    seed,
                    raw: via == "raw",
                };
                bench::pull_blob(&out, &reg, &target.repo, blob, repeat, range).await
            }
            Command::Manifest {
                target,
                tag,
                wrk,
                threads,
                connections,
                seconds,
            } => {
                let reg = client::Registry::new(&target.url)?;
                let o = bench::WrkOpts {
                    wrk,
                    threads,
                    connections,
                    seconds,
                };
                bench::manifest(&out, &reg, &target.repo, &tag, &o).await
            }
            Command::SmallBlobs {
                target,
                count,
                size,
                concurrency,
                seed,
            } => {
                let reg = client::Registry::new(&target.url)?;
                bench::small_blobs(
                    &out,
                    &reg,
                    &target.repo,
                    count,
                    size as usize,
                    concurrency,
                    seed,
                )
                .await
            }
            Command::Tags {
                target,
                count,
                batch,
                concurrency,
                page,
                list_repeat,
            } => {
                let reg = client::Registry::new(&target.url)?;
                let o = bench::TagOpts {
                    count,
                    batch,
                    concurrency,
                    page,
                    list_repeat,
                };
                bench::tags(&out, &reg, &target.repo, &o).await
            }
            Command::Load {
                urls,
                clients,
                seconds,
                layer,
                repo,
                repos,
                verify_concurrency,
            } => {
                let regs = urls
                    .iter()
                    .map(|u| client::Registry::new(u))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let o = load::LoadOpts {
                    clients,
                    duration: std::time::Duration::from_secs(seconds),
                    layer: usize::try_from(layer)?,
                    repo,
                    repos,
                    verify_concurrency,
                };
                load::run(&out, regs, &o).await
            }
            Command::GcFill {
                data_dir,
                dist_root,
                manifests,
                blobs_per_manifest,
                blob_size,
                repos,
            } => {
                let o = gc::FillOpts {
                    data_dir,
                    dist_root,
                    manifests,
                    blobs_per_manifest,
                    blob_size: usize::try_from(blob_size)?,
                    repos,
                };
                gc::fill(&out, &o).await
            }
            Command::GcRun {
                url,
                username,
                password,
                repo,
                baseline_seconds,
                expect_blobs,
            } => {
                let o = gc::RunOpts {
                    url,
                    username,
                    password,
                    repo,
                    baseline: std::time::Duration::from_secs(baseline_seconds),
                    expect_blobs,
                };
                gc::run(&out, &o).await
            }
            Command::MetaFill {
                data_dir,
                metadata_url,
                project,
                repo,
                artifacts,
            } => {
                let target = match (data_dir, metadata_url) {
                    (Some(d), None) => meta::Target::Sqlite(d),
                    (None, Some(u)) => meta::Target::Postgres(u),
                    _ => anyhow::bail!("give --data-dir or --metadata-url"),
                };
                let o = meta::FillOpts {
                    target,
                    project,
                    repo,
                    artifacts,
                };
                meta::fill(&out, &o).await
            }
            Command::MetaRun {
                url,
                username,
                password,
                project,
                repo,
                artifacts,
                samples,
                retention_dry_runs,
                retention_run,
            } => {
                let o = meta::RunOpts {
                    url,
                    username,
                    password,
                    project,
                    repo,
                    samples,
                    artifacts,
                    retention_dry_runs,
                    retention_run,
                };
                meta::run(&out, &o).await
            }
            Command::FreePort => {
                let l = std::net::TcpListener::bind("127.0.0.1:0")?;
                println!("{}", l.local_addr()?.port());
                Ok(())
            }
            Command::Report { input, out: json } => {
                print!("{}", report::report(&input, &json)?);
                Ok(())
            }
        }
    })
}
