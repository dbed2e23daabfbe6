//! Configuration in two steps: [`RawConfig`] is what a TOML file says (unknown keys refused);
//! [`Config`] is the validated result after environment variables and flags are laid on top.
//! Precedence: flags, then `BERTH_*` environment variables, then the file, then defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// The config file as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Address to listen on.
    pub listen: Option<String>,
    /// Where blobs and the metadata database live.
    pub data_dir: Option<PathBuf>,
    /// Logging.
    #[serde(default)]
    pub log: RawLog,
    /// Metadata database.
    #[serde(default)]
    pub metadata: RawMetadata,
    /// Blob storage.
    #[serde(default)]
    pub storage: RawStorage,
    /// TLS.
    #[serde(default)]
    pub tls: RawTls,
    /// Limits.
    #[serde(default)]
    pub limits: RawLimits,
    /// Upload sessions.
    #[serde(default)]
    pub uploads: RawUploads,
    /// Garbage collection.
    #[serde(default)]
    pub gc: RawGc,
    /// Retention policies.
    #[serde(default)]
    pub retention: RawRetention,
    /// Access control.
    #[serde(default)]
    pub auth: crate::auth_config::RawAuth,
}

/// `[log]`
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `text` or `json`.
    pub format: Option<String>,
    /// A tracing filter such as `info` or `berth=debug`.
    pub level: Option<String>,
}

/// `[metadata]`
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetadata {
    /// `postgres://user:password@host:port/db`; absent: SQLite in the data directory.
    pub url: Option<String>,
    /// Connections per instance to PostgreSQL (default 16).
    pub max_connections: Option<u32>,
    /// How long a request waits for a PostgreSQL connection before failing with 503, in
    /// seconds (default 5).
    pub acquire_timeout_seconds: Option<u64>,
    /// Whether `berth serve` applies pending schema migrations itself (default true). With
    /// false, it refuses to start until `berth migrate` has run.
    pub auto_migrate: Option<bool>,
}

/// `[storage]`
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    /// fsync blobs and the database before acknowledging writes (default true).
    pub fsync: Option<bool>,
    /// The `OCI-Chunk-Min-Length` advertised to clients (0: none).
    pub chunk_min_length: Option<u64>,
    /// Answer blob GETs with a redirect to a presigned object-store URL (default false; S3
    /// only).
    pub redirect: Option<bool>,
    /// How long a presigned URL stays valid, in seconds (default 300).
    pub redirect_expiry_seconds: Option<u64>,
    /// S3-compatible object storage instead of the data directory.
    pub s3: Option<RawS3>,
}

/// `[storage.s3]`. Credentials may also come from the standard `AWS_*` environment variables.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawS3 {
    /// Endpoint URL; absent: AWS S3 for the region.
    pub endpoint: Option<String>,
    /// Bucket name (required).
    pub bucket: Option<String>,
    /// Region (default from `AWS_REGION`, else `us-east-1`).
    pub region: Option<String>,
    /// Key prefix inside the bucket, for sharing a bucket.
    pub prefix: Option<String>,
    /// Access key id (default from `AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// Secret access key (default from `AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: Option<String>,
    /// Allow a plain-HTTP endpoint (default: true when the endpoint is `http://`).
    pub allow_http: Option<bool>,
    /// Use `bucket.host` addressing instead of `host/bucket` (default false).
    pub virtual_hosted_style: Option<bool>,
    /// Give up on one S3 request after this many seconds (default 60).
    pub request_timeout_seconds: Option<u64>,
    /// Give up on connecting after this many seconds (default 5).
    pub connect_timeout_seconds: Option<u64>,
    /// Retries of a failed S3 request (default 3).
    pub max_retries: Option<usize>,
}

/// `[tls]`
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

/// `[limits]`
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Largest manifest accepted, in bytes (default 4 MiB).
    pub manifest_max_bytes: Option<usize>,
    /// How long in-flight requests may take to finish on shutdown, in seconds (default 30).
    pub shutdown_grace_seconds: Option<u64>,
}

/// `[uploads]`
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUploads {
    /// Upload sessions nobody touched for this long are deleted (default 7 days).
    pub expire_after: Option<RawDuration>,
    /// How often to look for such sessions (default 1 hour).
    pub expire_interval: Option<RawDuration>,
}

/// `[gc]`
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawGc {
    /// What was pushed, linked or referenced more recently than this is never collected
    /// (default 2 hours).
    pub grace_period: Option<RawDuration>,
    /// How often each instance looks whether the schedule is due (default 1 minute).
    pub schedule_check_interval: Option<RawDuration>,
}

/// `[retention]`
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    /// How often the fleet looks whether a policy's schedule is due (default 1 minute).
    pub schedule_check_interval: Option<RawDuration>,
}

/// A duration as written: a number of seconds, or a string such as `"90s"`, `"15m"`,
/// `"1h30m"` or `"7d"` (see [`parse_duration`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawDuration {
    /// Seconds.
    Seconds(u64),
    /// Text with units.
    Text(String),
}

/// Parse a duration: a whole number of seconds (`"3600"`), or numbers with units, largest
/// first (`"1h30m"`, `"7d"`, `"500ms"`): `w`, `d`, `h`, `m`, `s`, `ms`.
///
/// # Errors
/// If `text` is empty, has an unknown unit or a number without one after another, or
/// overflows.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(Duration::from_secs(
            t.parse()
                .with_context(|| format!("duration {text:?} is too large"))?,
        ));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    if rest.is_empty() {
        bail!("duration {text:?} is empty");
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let unit_len = rest[digits..]
            .bytes()
            .take_while(u8::is_ascii_alphabetic)
            .count();
        if digits == 0 || unit_len == 0 {
            bail!("duration {text:?} is not like 3600, 90s, 15m, 1h30m or 7d");
        }
        let n: u64 = rest[..digits]
            .parse()
            .with_context(|| format!("duration {text:?} is too large"))?;
        let unit = match &rest[digits..digits + unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            "w" => Duration::from_secs(7 * 86_400),
            other => bail!("duration {text:?} has an unknown unit {other:?} (ms, s, m, h, d, w)"),
        };
        let part = u32::try_from(n)
            .ok()
            .and_then(|n| unit.checked_mul(n))
            .with_context(|| format!("duration {text:?} is too large"))?;
        total = total
            .checked_add(part)
            .with_context(|| format!("duration {text:?} is too large"))?;
        rest = &rest[digits + unit_len..];
    }
    Ok(total)
}

/// `d` in the form [`parse_duration`] reads, largest units first (up to days): `"7d"`,
/// `"1h30m"`, `"500ms"`.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    let mut out = String::new();
    let mut secs = d.as_secs();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if d.subsec_millis() > 0 {
        out.push_str(&format!("{}ms", d.subsec_millis()));
    }
    out
}

pub(crate) fn serialize_duration<S: serde::Serializer>(
    d: &Duration,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

/// A duration from a flag or variable (`over`) or the file (`raw`), else `default`; at least
/// a second.
pub(crate) fn resolve_duration(
    key: &str,
    over: Option<&str>,
    raw: Option<RawDuration>,
    default: Duration,
) -> anyhow::Result<Duration> {
    let d = match (over, raw) {
        (Some(text), _) => parse_duration(text).with_context(|| key.to_owned())?,
        (None, Some(RawDuration::Text(text))) => {
            parse_duration(&text).with_context(|| key.to_owned())?
        }
        (None, Some(RawDuration::Seconds(n))) => Duration::from_secs(n),
        (None, None) => default,
    };
    if d < Duration::from_secs(1) {
        bail!("{key} must be at least one second");
    }
    Ok(d)
}

/// Validated `[uploads]`.
#[derive(Debug, Clone, Serialize)]
pub struct Uploads {
    /// Idle time after which an upload session is deleted.
    #[serde(serialize_with = "serialize_duration")]
    pub expire_after: Duration,
    /// How often idle sessions are looked for.
    #[serde(serialize_with = "serialize_duration")]
    pub expire_interval: Duration,
}

/// Validated `[gc]`.
#[derive(Debug, Clone, Serialize)]
pub struct Gc {
    /// What was touched more recently than this is kept.
    #[serde(serialize_with = "serialize_duration")]
    pub grace_period: Duration,
    /// How often the schedule is checked.
    #[serde(serialize_with = "serialize_duration")]
    pub schedule_check_interval: Duration,
}

/// Validated `[retention]`.
#[derive(Debug, Clone, Serialize)]
pub struct Retention {
    /// How often the policies' schedules are checked.
    #[serde(serialize_with = "serialize_duration")]
    pub schedule_check_interval: Duration,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Whether writes wait for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// fsync before acknowledging (the default).
    Durable,
    /// Leave flushing to the kernel.
    Relaxed,
}

/// A TLS certificate and key.
#[derive(Debug, Clone, Serialize)]
pub struct Tls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Where metadata lives.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum Metadata {
    /// SQLite in the data directory (the embedded default).
    Sqlite,
    /// A PostgreSQL server shared by every instance.
    Postgres {
        /// Connection URL; printed with its password hidden.
        #[serde(serialize_with = "redact_url")]
        url: String,
        /// Pool size per instance.
        max_connections: u32,
        /// Seconds a request waits for a connection.
        acquire_timeout_seconds: u64,
        /// Whether `serve` applies pending migrations.
        auto_migrate: bool,
    },
}

/// Where blobs live.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum Storage {
    /// Files under the data directory (the embedded default).
    Fs,
    /// An S3-compatible object store shared by every instance.
    S3(S3),
}

/// Validated `[storage.s3]`.
#[derive(Debug, Clone, Serialize)]
pub struct S3 {
    /// Endpoint URL, if not AWS.
    pub endpoint: Option<String>,
    /// Bucket.
    pub bucket: String,
    /// Region, if set.
    pub region: Option<String>,
    /// Key prefix.
    pub prefix: String,
    /// Access key id, if set here rather than in the environment.
    pub access_key_id: Option<String>,
    /// Secret access key; printed hidden.
    #[serde(serialize_with = "redact_opt")]
    pub secret_access_key: Option<String>,
    /// Whether plain HTTP is allowed.
    pub allow_http: bool,
    /// Virtual-hosted-style addressing.
    pub virtual_hosted_style: bool,
    /// Per-request timeout, seconds.
    pub request_timeout_seconds: u64,
    /// Connect timeout, seconds.
    pub connect_timeout_seconds: u64,
    /// Retries per request.
    pub max_retries: usize,
}

fn redact_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_password(url))
}

fn redact_opt<S: serde::Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str("(hidden)"),
        None => s.serialize_none(),
    }
}

/// `scheme://user:secret@host/...` becomes `scheme://user:(hidden)@host/...`.
fn redact_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:(hidden){}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

/// The validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where blobs and the metadata database live (when they are local).
    pub data_dir: PathBuf,
    /// The metadata backend.
    pub metadata: Metadata,
    /// The blob backend.
    pub storage: Storage,
    /// Redirect blob GETs to presigned URLs.
    pub redirect: bool,
    /// Lifetime of presigned URLs, seconds.
    pub redirect_expiry_seconds: u64,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
    /// Durability of writes.
    pub durability: Durability,
    /// Advertised minimum chunk length.
    pub chunk_min_length: u64,
    /// Largest manifest accepted.
    pub manifest_max_bytes: usize,
    /// Shutdown grace period in seconds.
    pub shutdown_grace_seconds: u64,
    /// TLS, when configured.
    pub tls: Option<Tls>,
    /// Upload sessions.
    pub uploads: Uploads,
    /// Garbage collection.
    pub gc: Gc,
    /// Retention policies.
    pub retention: Retention,
    /// Access control.
    pub auth: crate::auth_config::Auth,
}

/// Values given on the command line (clap has already folded in the `BERTH_*` variables).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// Address to listen on [default: 127.0.0.1:5000]
    #[arg(long, env = "BERTH_LISTEN")]
    pub listen: Option<String>,
    /// Data directory for blobs and metadata [default: ./berth-data]
    #[arg(long, env = "BERTH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log format: text or json
    #[arg(long, env = "BERTH_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Log filter, e.g. info or berth=debug
    #[arg(long, env = "BERTH_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// fsync writes before acknowledging them: true or false
    #[arg(long, env = "BERTH_FSYNC")]
    pub fsync: Option<bool>,
    /// TLS certificate (PEM)
    #[arg(long, env = "BERTH_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM)
    #[arg(long, env = "BERTH_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PostgreSQL URL for metadata (postgres://...) [default: SQLite in the data directory]
    #[arg(long, env = "BERTH_METADATA_URL")]
    pub metadata_url: Option<String>,
    /// S3 endpoint URL (with --s3-bucket: blobs in S3 instead of the data directory)
    #[arg(long, env = "BERTH_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 bucket for blobs
    #[arg(long, env = "BERTH_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// S3 region
    #[arg(long, env = "BERTH_S3_REGION")]
    pub s3_region: Option<String>,
    /// S3 key prefix
    #[arg(long, env = "BERTH_S3_PREFIX")]
    pub s3_prefix: Option<String>,
    /// Redirect blob GETs to presigned object-store URLs: true or false
    #[arg(long, env = "BERTH_STORAGE_REDIRECT")]
    pub redirect: Option<bool>,
    /// Delete upload sessions idle this long: seconds, or e.g. 90s, 15m, 1h30m, 7d [default: 7d]
    #[arg(long, env = "BERTH_UPLOADS_EXPIRE_AFTER")]
    pub uploads_expire_after: Option<String>,
    /// How often to look for idle upload sessions [default: 1h]
    #[arg(long, env = "BERTH_UPLOADS_EXPIRE_INTERVAL")]
    pub uploads_expire_interval: Option<String>,
    /// Garbage collection keeps what was touched this recently: seconds, or e.g. 30m, 2h [default: 2h]
    #[arg(long, env = "BERTH_GC_GRACE_PERIOD")]
    pub gc_grace_period: Option<String>,
    /// Access control: token (sign-in, roles, tokens) or open (anyone may do anything on /v2) [default: token]
    #[arg(long, env = "BERTH_AUTH_MODE")]
    pub auth_mode: Option<String>,
}

/// Read the TOML file at `path`.
///
/// # Errors
/// If it cannot be read or has unknown or mistyped keys.
pub fn read_file(path: &Path) -> anyhow::Result<RawConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

impl Config {
    /// Lay `over` on top of `raw` and validate the result.
    ///
    /// # Errors
    /// On an invalid address, log format, or a TLS cert without a key.
    pub fn resolve(raw: RawConfig, over: &Overrides) -> anyhow::Result<Self> {
        let listen = over
            .listen
            .clone()
            .or(raw.listen)
            .unwrap_or_else(|| "127.0.0.1:5000".into());
        let listen: SocketAddr = listen
            .parse()
            .with_context(|| format!("listen address {listen:?} is not host:port"))?;
        let data_dir = over
            .data_dir
            .clone()
            .or(raw.data_dir)
            .unwrap_or_else(|| "./berth-data".into());
        let log_format = match over.log_format.as_deref().or(raw.log.format.as_deref()) {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => bail!("log format {other:?} is not text or json"),
        };
        let log_level = over
            .log_level
            .clone()
            .or(raw.log.level)
            .unwrap_or_else(|| "info".into());
        let durability = if over.fsync.or(raw.storage.fsync).unwrap_or(true) {
            Durability::Durable
        } else {
            Durability::Relaxed
        };
        let tls = match (
            over.tls_cert.clone().or(raw.tls.cert),
            over.tls_key.clone().or(raw.tls.key),
        ) {
            (Some(cert), Some(key)) => Some(Tls { cert, key }),
            (None, None) => None,
            _ => bail!("TLS needs both a certificate and a key"),
        };
        let metadata = match over.metadata_url.clone().or(raw.metadata.url) {
            None => Metadata::Sqlite,
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Metadata::Postgres {
                    url,
                    max_connections: raw.metadata.max_connections.unwrap_or(16).max(1),
                    acquire_timeout_seconds: raw.metadata.acquire_timeout_seconds.unwrap_or(5),
                    auto_migrate: raw.metadata.auto_migrate.unwrap_or(true),
                }
            }
            Some(url) => bail!(
                "metadata url {:?} is not postgres://...; leave it out to use SQLite",
                redact_password(&url)
            ),
        };
        let storage = resolve_s3(raw.storage.s3, over)?.map_or(Storage::Fs, Storage::S3);
        let redirect = over.redirect.or(raw.storage.redirect).unwrap_or(false);
        if redirect && matches!(storage, Storage::Fs) {
            bail!(
                "storage.redirect needs S3 storage: files in the data directory have no URL \
                 (configure [storage.s3] or set storage.redirect = false)"
            );
        }
        let uploads = Uploads {
            expire_after: resolve_duration(
                "uploads.expire_after",
                over.uploads_expire_after.as_deref(),
                raw.uploads.expire_after,
                Duration::from_secs(7 * 86_400),
            )?,
            expire_interval: resolve_duration(
                "uploads.expire_interval",
                over.uploads_expire_interval.as_deref(),
                raw.uploads.expire_interval,
                Duration::from_secs(3600),
            )?,
        };
        let gc = Gc {
            grace_period: resolve_duration(
                "gc.grace_period",
                over.gc_grace_period.as_deref(),
                raw.gc.grace_period,
                Duration::from_secs(2 * 3600),
            )?,
            schedule_check_interval: resolve_duration(
                "gc.schedule_check_interval",
                None,
                raw.gc.schedule_check_interval,
                Duration::from_secs(60),
            )?,
        };
        let retention = Retention {
            schedule_check_interval: resolve_duration(
                "retention.schedule_check_interval",
                None,
                raw.retention.schedule_check_interval,
                Duration::from_secs(60),
            )?,
        };
        let manifest_max_bytes = raw.limits.manifest_max_bytes.unwrap_or(4 << 20);
        if manifest_max_bytes == 0 {
            bail!("limits.manifest_max_bytes must be positive");
        }
        Ok(Self {
            listen,
            data_dir,
            metadata,
            storage,
            redirect,
            redirect_expiry_seconds: raw.storage.redirect_expiry_seconds.unwrap_or(300).max(1),
            log_format,
            log_level,
            durability,
            chunk_min_length: raw.storage.chunk_min_length.unwrap_or(0),
            manifest_max_bytes,
            shutdown_grace_seconds: raw.limits.shutdown_grace_seconds.unwrap_or(30),
            tls,
            uploads,
            gc,
            retention,
            auth: crate::auth_config::Auth::resolve(raw.auth, over.auth_mode.as_deref())?,
        })
    }
}

/// `[storage.s3]` with the `--s3-*` flags on top; `None` when neither names a bucket or
/// endpoint.
fn resolve_s3(raw: Option<RawS3>, over: &Overrides) -> anyhow::Result<Option<S3>> {
    let flags_given = over.s3_endpoint.is_some() || over.s3_bucket.is_some();
    if raw.is_none() && !flags_given {
        return Ok(None);
    }
    let raw = raw.unwrap_or_default();
    let endpoint = over.s3_endpoint.clone().or(raw.endpoint);
    let Some(bucket) = over.s3_bucket.clone().or(raw.bucket) else {
        bail!("S3 storage needs a bucket (storage.s3.bucket or --s3-bucket)");
    };
    let allow_http = raw.allow_http.unwrap_or_else(|| {
        endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"))
    });
    if let Some(e) = &endpoint {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            bail!("S3 endpoint {e:?} must start with http:// or https://");
        }
    }
    Ok(Some(S3 {
        endpoint,
        bucket,
        region: over.s3_region.clone().or(raw.region),
        prefix: over.s3_prefix.clone().or(raw.prefix).unwrap_or_default(),
        access_key_id: raw.access_key_id,
        secret_access_key: raw.secret_access_key,
        allow_http,
        virtual_hosted_style: raw.virtual_hosted_style.unwrap_or(false),
        request_timeout_seconds: raw.request_timeout_seconds.unwrap_or(60).max(1),
        connect_timeout_seconds: raw.connect_timeout_seconds.unwrap_or(5).max(1),
        max_retries: raw.max_retries.unwrap_or(3),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = Config::resolve(RawConfig::default(), &Overrides::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:5000");
        assert_eq!(c.data_dir, PathBuf::from("./berth-data"));
        assert_eq!(c.durability, Durability::Durable);
        assert!(c.tls.is_none());
    }

    #[test]
    fn flags_beat_the_file() {
        let raw: RawConfig = toml::from_str(
            "listen = \"127.0.0.1:6000\"\ndata_dir = \"/x\"\n[storage]\nfsync = false\n",
        )
        .unwrap();
        let over = Overrides {
            listen: Some("127.0.0.1:7000".into()),
            ..Default::default()
        };
        let c = Config::resolve(raw, &over).unwrap();
        assert_eq!(c.listen.port(), 7000);
        assert_eq!(c.data_dir, PathBuf::from("/x"));
        assert_eq!(c.durability, Durability::Relaxed);
    }

    #[test]
    fn fleet_backends_from_file_and_flags() {
        let raw: RawConfig = toml::from_str(
            "[metadata]\nurl = \"postgres://berth:s3cret@db:5432/berth\"\nmax_connections = 4\n\
             [storage]\nredirect = true\n[storage.s3]\nendpoint = \"http://s3:9000\"\n\
             bucket = \"images\"\nsecret_access_key = \"key\"\n",
        )
        .unwrap();
        let over = Overrides {
            s3_prefix: Some("prod/".into()),
            ..Default::default()
        };
        let c = Config::resolve(raw, &over).unwrap();
        assert!(matches!(
            &c.metadata,
            Metadata::Postgres {
                max_connections: 4,
                auto_migrate: true,
                ..
            }
        ));
        let Storage::S3(s3) = &c.storage else {
            panic!("expected S3 storage")
        };
        assert_eq!(s3.bucket, "images");
        assert_eq!(s3.prefix, "prod/");
        assert!(s3.allow_http, "http:// endpoints allow plain HTTP");
        assert!(c.redirect);
        // Printing the configuration never shows secrets.
        let printed = toml::to_string(&c).unwrap();
        assert!(
            !printed.contains("s3cret") && !printed.contains("\"key\""),
            "{printed}"
        );
        assert!(
            printed.contains("postgres://berth:(hidden)@db:5432/berth"),
            "{printed}"
        );
    }

    #[test]
    fn refuses_half_configured_backends() {
        let no_bucket: RawConfig =
            toml::from_str("[storage.s3]\nendpoint = \"http://s3\"\n").unwrap();
        assert!(Config::resolve(no_bucket, &Overrides::default()).is_err());
        let redirect_on_fs: RawConfig = toml::from_str("[storage]\nredirect = true\n").unwrap();
        assert!(Config::resolve(redirect_on_fs, &Overrides::default()).is_err());
        let over = Overrides {
            metadata_url: Some("mysql://root:pw@db/x".into()),
            ..Default::default()
        };
        let err = Config::resolve(RawConfig::default(), &over)
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("pw@"),
            "the password must not leak into errors: {err}"
        );
        assert_eq!(redact_password("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(
            redact_password("postgres://u:p@h/d?x=@"),
            "postgres://u:(hidden)@h/d?x=@"
        );
    }

    #[test]
    fn upload_expiry_durations() {
        let c = Config::resolve(RawConfig::default(), &Overrides::default()).unwrap();
        assert_eq!(c.uploads.expire_after, Duration::from_secs(7 * 86_400));
        assert_eq!(c.uploads.expire_interval, Duration::from_secs(3600));
        let printed = toml::to_string(&c).unwrap();
        assert!(
            printed.contains("[uploads]\nexpire_after = \"7d\"\nexpire_interval = \"1h\""),
            "{printed}"
        );
        let raw: RawConfig =
            toml::from_str("[uploads]\nexpire_after = 86400\nexpire_interval = \"15m\"\n").unwrap();
        let c = Config::resolve(raw, &Overrides::default()).unwrap();
        assert_eq!(c.uploads.expire_after, Duration::from_secs(86_400));
        assert_eq!(c.uploads.expire_interval, Duration::from_secs(900));
        // Flags (and their variables) beat the file.
        let raw: RawConfig = toml::from_str("[uploads]\nexpire_after = \"2d\"\n").unwrap();
        let over = Overrides {
            uploads_expire_after: Some("3".into()),
            uploads_expire_interval: Some("1h30m".into()),
            ..Default::default()
        };
        let c = Config::resolve(raw, &over).unwrap();
        assert_eq!(c.uploads.expire_after, Duration::from_secs(3));
        assert_eq!(c.uploads.expire_interval, Duration::from_secs(5400));
        for bad in ["0", "500ms", "soon", "5x"] {
            let over = Overrides {
                uploads_expire_after: Some(bad.into()),
                ..Default::default()
            };
            assert!(
                Config::resolve(RawConfig::default(), &over).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn durations_parse_and_print() {
        for (text, secs, millis) in [
            ("3600", 3600, 0),
            ("90s", 90, 0),
            ("15m", 900, 0),
            ("1h30m", 5400, 0),
            ("7d", 604_800, 0),
            ("2w", 1_209_600, 0),
            ("1s500ms", 1, 500),
            (" 10m ", 600, 0),
        ] {
            let d = parse_duration(text).unwrap();
            assert_eq!(
                d,
                Duration::from_secs(secs) + Duration::from_millis(millis),
                "{text}"
            );
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d, "{text}");
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(86_400)), "1d");
        for bad in ["", "h", "1.5h", "10 m", "1y", "99999999999999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refuses_bad_config() {
        assert!(toml::from_str::<RawConfig>("lisen = \"x\"").is_err());
        let raw: RawConfig = toml::from_str("[tls]\ncert = \"/c\"\n").unwrap();
        assert!(Config::resolve(raw, &Overrides::default()).is_err());
        let over = Overrides {
            listen: Some("nope".into()),
            ..Default::default()
        };
        assert!(Config::resolve(RawConfig::default(), &over).is_err());
    }
}
