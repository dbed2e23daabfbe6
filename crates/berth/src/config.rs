//! Configuration in two steps: [`RawConfig`] is what a TOML file says (unknown keys refused);
//! [`Config`] is the validated result after environment variables and flags are laid on top.
//! Precedence: flags, then `BERTH_*` environment variables, then the file, then defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    /// Blob storage.
    #[serde(default)]
    pub storage: RawStorage,
    /// TLS.
    #[serde(default)]
    pub tls: RawTls,
    /// Limits.
    #[serde(default)]
    pub limits: RawLimits,
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

/// `[storage]`
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    /// fsync blobs and the database before acknowledging writes (default true).
    pub fsync: Option<bool>,
    /// The `OCI-Chunk-Min-Length` advertised to clients (0: none).
    pub chunk_min_length: Option<u64>,
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

/// The validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where blobs and the metadata database live.
    pub data_dir: PathBuf,
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
        let manifest_max_bytes = raw.limits.manifest_max_bytes.unwrap_or(4 << 20);
        if manifest_max_bytes == 0 {
            bail!("limits.manifest_max_bytes must be positive");
        }
        Ok(Self {
            listen,
            data_dir,
            log_format,
            log_level,
            durability,
            chunk_min_length: raw.storage.chunk_min_length.unwrap_or(0),
            manifest_max_bytes,
            shutdown_grace_seconds: raw.limits.shutdown_grace_seconds.unwrap_or(30),
            tls,
        })
    }
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
