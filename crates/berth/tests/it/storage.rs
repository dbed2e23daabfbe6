//! Looking at (and damaging) what a server keeps in its blob store, whichever backend it runs
//! on: the data directory of the embedded default, or the S3 bucket and prefix of a fleet.
//! Tests use it to check that nothing is left behind and that every stored blob hashes to its
//! name, and to simulate crashes and corruption.

use std::path::PathBuf;
use std::sync::Arc;

use futures::TryStreamExt as _;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};

use crate::harness::sha256;

/// One server's blob storage.
pub enum Storage {
    /// `<data dir>/blobs/...` and `<data dir>/uploads/<id>`.
    Fs(PathBuf),
    /// `<prefix>blobs/...` and `<prefix>uploads/<id>/...` in the test bucket.
    S3 { s3: Arc<AmazonS3>, prefix: String },
}

impl Storage {
    /// The test bucket under `prefix`, reached with the same `AWS_*` environment and
    /// `BERTH_TEST_S3_*` variables the servers get.
    pub fn s3(prefix: &str) -> Self {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
        let s3 = AmazonS3Builder::from_env()
            .with_endpoint(var("BERTH_TEST_S3_ENDPOINT"))
            .with_bucket_name(var("BERTH_TEST_S3_BUCKET"))
            .with_allow_http(true)
            .build()
            .expect("S3 client for the test bucket");
        Self::S3 {
            s3: Arc::new(s3),
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }

    fn key(prefix: &str, rest: &str) -> ObjPath {
        ObjPath::from(format!("{prefix}/{rest}"))
    }

    /// `(key below the prefix, size)` of every object under `dir` (`"uploads"` or `"blobs"`).
    async fn list_s3(s3: &AmazonS3, prefix: &str, dir: &str) -> Vec<(String, u64)> {
        let root = Self::key(prefix, dir);
        let objects: Vec<_> = s3.list(Some(&root)).try_collect().await.unwrap();
        objects
            .into_iter()
            .map(|o| {
                let key = o.location.as_ref();
                let rest = key.strip_prefix(prefix).unwrap().trim_start_matches('/');
                (rest.to_owned(), o.size)
            })
            .collect()
    }

    /// Keys (below the prefix) of every object under `dir` (`"uploads"` or `"blobs"`); S3 only.
    pub async fn keys(&self, dir: &str) -> Vec<String> {
        match self {
            Self::Fs(_) => panic!("keys() lists S3 objects; use the data dir"),
            Self::S3 { s3, prefix } => Self::list_s3(s3, prefix, dir)
                .await
                .into_iter()
                .map(|(k, _)| k)
                .collect(),
        }
    }

    /// Ids of the upload sessions that have anything in storage.
    pub async fn upload_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = match self {
            Self::Fs(dir) => match std::fs::read_dir(dir.join("uploads")) {
                Ok(entries) => entries
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => panic!("read uploads dir: {e}"),
            },
            Self::S3 { s3, prefix } => Self::list_s3(s3, prefix, "uploads")
                .await
                .into_iter()
                .map(|(k, _)| k.split('/').nth(1).unwrap().to_owned())
                .collect(),
        };
        ids.sort();
        ids.dedup();
        ids
    }

    /// How many bytes upload `id` holds in storage (including any left past its offset).
    pub async fn upload_len(&self, id: &str) -> u64 {
        match self {
            Self::Fs(dir) => std::fs::metadata(dir.join("uploads").join(id))
                .unwrap()
                .len(),
            Self::S3 { s3, prefix } => Self::list_s3(s3, prefix, &format!("uploads/{id}"))
                .await
                .into_iter()
                .filter_map(|(k, size)| {
                    // Segments are `<start, 20 digits>-<token>`.
                    let name = k.rsplit('/').next()?;
                    let start: u64 = name.split('-').next()?.parse().ok()?;
                    Some(start + size)
                })
                .max()
                .unwrap_or(0),
        }
    }

    /// Leave `junk` in upload `id` right after its first `offset` bytes, as a chunk whose
    /// metadata update never happened (a crash in between) would: on S3, a segment at
    /// `offset` that metadata never recorded.
    pub async fn leave_junk_in_upload(&self, id: &str, offset: u64, junk: &[u8]) {
        match self {
            Self::Fs(dir) => {
                let path = dir.join("uploads").join(id);
                let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
                std::os::unix::fs::FileExt::write_all_at(&f, junk, offset).unwrap();
            }
            Self::S3 { s3, prefix } => {
                let key = Self::key(prefix, &format!("uploads/{id}/{offset:020}-c0ffee000000"));
                s3.put(&key, PutPayload::from(junk.to_vec())).await.unwrap();
            }
        }
    }

    /// The digests of every committed blob, sorted.
    pub async fn blob_digests(&self) -> Vec<String> {
        let mut out: Vec<String> = match self {
            Self::Fs(dir) => {
                let root = dir.join("blobs").join("sha256");
                let mut out = Vec::new();
                if let Ok(prefixes) = std::fs::read_dir(&root) {
                    for p in prefixes {
                        for f in std::fs::read_dir(p.unwrap().path()).unwrap() {
                            let name = f.unwrap().file_name().into_string().unwrap();
                            out.push(format!("sha256:{name}"));
                        }
                    }
                }
                out
            }
            Self::S3 { s3, prefix } => Self::list_s3(s3, prefix, "blobs/sha256")
                .await
                .into_iter()
                .map(|(key, _)| format!("sha256:{}", key.rsplit('/').next().unwrap()))
                .collect(),
        };
        out.sort();
        out
    }

    /// Check that every committed blob hashes to its name; returns how many there are.
    pub async fn verify_blobs(&self) -> usize {
        let blobs: Vec<(String, Vec<u8>)> = match self {
            Self::Fs(dir) => {
                let root = dir.join("blobs").join("sha256");
                let mut out = Vec::new();
                let Ok(prefixes) = std::fs::read_dir(&root) else {
                    return 0;
                };
                for p in prefixes {
                    for f in std::fs::read_dir(p.unwrap().path()).unwrap() {
                        let f = f.unwrap();
                        let name = f.file_name().into_string().unwrap();
                        out.push((name, std::fs::read(f.path()).unwrap()));
                    }
                }
                out
            }
            Self::S3 { s3, prefix } => {
                let mut out = Vec::new();
                for (key, _) in Self::list_s3(s3, prefix, "blobs/sha256").await {
                    let bytes = s3
                        .get(&Self::key(prefix, &key))
                        .await
                        .unwrap()
                        .bytes()
                        .await
                        .unwrap();
                    out.push((key.rsplit('/').next().unwrap().to_owned(), bytes.to_vec()));
                }
                out
            }
        };
        for (name, bytes) in &blobs {
            assert_eq!(
                sha256(bytes),
                format!("sha256:{name}"),
                "corrupt blob {name}"
            );
        }
        blobs.len()
    }

    /// The key below the root of the stored blob `digest` (sha256).
    fn blob_rest(digest: &str) -> String {
        let hex = digest.trim_start_matches("sha256:");
        format!("blobs/sha256/{}/{hex}", &hex[..2])
    }

    /// The stored bytes of blob `digest`.
    pub async fn blob_bytes(&self, digest: &str) -> Vec<u8> {
        let rest = Self::blob_rest(digest);
        match self {
            Self::Fs(dir) => std::fs::read(dir.join(rest)).unwrap(),
            Self::S3 { s3, prefix } => s3
                .get(&Self::key(prefix, &rest))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
                .to_vec(),
        }
    }

    /// Flip the first byte of the stored blob `digest`, keeping its size, as bit rot would:
    /// bytes that no longer hash to their name. Returns the damaged bytes.
    pub async fn corrupt_blob(&self, digest: &str) -> Vec<u8> {
        let mut bytes = self.blob_bytes(digest).await;
        bytes[0] ^= 0xff;
        let rest = Self::blob_rest(digest);
        match self {
            Self::Fs(dir) => std::fs::write(dir.join(rest), &bytes).unwrap(),
            Self::S3 { s3, prefix } => {
                s3.put(&Self::key(prefix, &rest), PutPayload::from(bytes.clone()))
                    .await
                    .unwrap();
            }
        }
        bytes
    }

    /// Remove the stored blob `digest`, as if its bytes were lost.
    pub async fn lose_blob(&self, digest: &str) {
        let rest = Self::blob_rest(digest);
        match self {
            Self::Fs(dir) => std::fs::remove_file(dir.join(rest)).unwrap(),
            Self::S3 { s3, prefix } => s3.delete(&Self::key(prefix, &rest)).await.unwrap(),
        }
    }

    /// What a scrub moved into quarantine for `digest` under `label`
    /// (`quarantine/sha256/<hex>-<label>`), if anything.
    pub async fn quarantined(&self, digest: &str, label: &str) -> Option<Vec<u8>> {
        let hex = digest.trim_start_matches("sha256:");
        let rest = format!("quarantine/sha256/{hex}-{label}");
        match self {
            Self::Fs(dir) => match std::fs::read(dir.join(rest)) {
                Ok(b) => Some(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => panic!("read quarantine: {e}"),
            },
            Self::S3 { s3, prefix } => match s3.get(&Self::key(prefix, &rest)).await {
                Ok(r) => Some(r.bytes().await.unwrap().to_vec()),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => panic!("read quarantine: {e}"),
            },
        }
    }

    /// Cut the stored blob `digest` down to its first `len` bytes.
    pub async fn truncate_blob(&self, digest: &str, len: usize) {
        let hex = digest.trim_start_matches("sha256:");
        let rest = format!("blobs/sha256/{}/{hex}", &hex[..2]);
        match self {
            Self::Fs(dir) => std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join(rest))
                .unwrap()
                .set_len(len as u64)
                .unwrap(),
            Self::S3 { s3, prefix } => {
                let key = Self::key(prefix, &rest);
                let bytes = s3.get(&key).await.unwrap().bytes().await.unwrap();
                s3.put(&key, PutPayload::from(bytes.slice(..len)))
                    .await
                    .unwrap();
            }
        }
    }
}
