//! The local filesystem backend, the embedded default.
//!
//! ```text
//! <root>/
//! ├── blobs/
//! │   └── sha256/
//! │       └── ab/
//! │           └── abcdef0123…    committed blob, immutable, named by its hash
//! └── uploads/
//!     └── <upload id>            bytes of an upload session so far, append-only
//! ```
//!
//! A blob is committed by renaming its upload file into `blobs/` after an fsync of the data,
//! then an fsync of the directory: the rename is the atomic step that makes it visible.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use berth_oci::Digest;
use bytes::Bytes;
use futures::StreamExt;

use crate::{BlobContent, BlobStore, ByteStream, StoreError};

/// Whether writes are flushed to stable storage before they are acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// fsync data before acknowledging an upload chunk or committing a blob (the default).
    #[default]
    Durable,
    /// Leave flushing to the kernel: faster, but a power loss can lose acknowledged blobs.
    Relaxed,
}

/// Blobs and uploads in a directory tree.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
    sync: SyncMode,
}

/// How many bytes the writer thread takes at once; large batches keep syscalls few.
const BATCH_BYTES: usize = 1 << 20;
/// Reads up to this size are done with one `pread` into memory: cheaper than a mapping.
const SMALL_READ: u64 = 256 << 10;
/// Size of the slices a mapped blob is streamed in.
const MAP_SLICE: usize = 8 << 20;

/// Stream `len` bytes of `file` from `offset`, one memory-mapped window at a time.
///
/// Each chunk owns its own mapping of [`MAP_SLICE`] bytes and unmaps when the server has
/// sent it, so a large download holds only the windows in flight, not the whole blob.
pub(crate) fn mapped_stream(file: &File, offset: u64, len: u64) -> Result<ByteStream, StoreError> {
    let file = std::sync::Arc::new(file.try_clone()?);
    let end = offset + len;
    let windows = futures::stream::unfold(offset, move |pos| {
        let file = file.clone();
        async move {
            if pos >= end {
                return None;
            }
            let n = (end - pos).min(MAP_SLICE as u64);
            Some((map_window(&file, pos, n), pos + n))
        }
    });
    Ok(Box::pin(windows))
}

/// Map `len` bytes of `file` at `pos` as one chunk.
fn map_window(file: &File, pos: u64, len: u64) -> Result<Bytes, StoreError> {
    const PAGE: u64 = 4096;
    let start = pos - pos % PAGE;
    let skip = (pos - start) as usize;
    let map_len = len as usize + skip;
    // SAFETY: blob files are immutable once committed and are only ever unlinked, never
    // truncated or rewritten, so the mapping cannot change or shrink under us.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(start)
            .len(map_len)
            .map(file)?
    };
    let _ = map.advise(memmap2::Advice::Sequential);
    Ok(Bytes::from_owner(map).slice(skip..))
}

impl FsStore {
    /// Open (creating if needed) a store rooted at `root`.
    ///
    /// # Errors
    /// If the directories cannot be created.
    pub fn open(root: impl Into<PathBuf>, sync: SyncMode) -> std::io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join("blobs"))?;
        std::fs::create_dir_all(root.join("uploads"))?;
        Ok(Self { root, sync })
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.root
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
    }

    fn upload_path(&self, id: &str) -> Result<PathBuf, StoreError> {
        // Upload ids come from the registry (uuids), but never let one name a path elsewhere.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(StoreError::NotFound);
        }
        Ok(self.root.join("uploads").join(id))
    }
}

fn not_found(e: std::io::Error) -> StoreError {
    if e.kind() == std::io::ErrorKind::NotFound {
        StoreError::NotFound
    } else {
        StoreError::Io(e)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(e)))?
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()
}

/// In durable mode, start writeback of every this many bytes while the upload streams in, so
/// the final fdatasync waits only for the tail instead of the whole blob.
const WRITEBACK_EVERY: u64 = 32 << 20;

/// Ask the kernel to start writing `len` bytes at `offset` to disk, without waiting.
fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain syscall on an fd we own; it reads no memory of ours.
        let _ = unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Write batches from `rx` to `file` (which starts at `base` bytes) until the channel closes;
/// returns bytes written.
fn write_batches(
    file: &mut File,
    base: u64,
    mut rx: tokio::sync::mpsc::Receiver<Vec<Bytes>>,
    sync: SyncMode,
) -> std::io::Result<u64> {
    let mut written = 0u64;
    let mut flushed = 0u64;
    while let Some(batch) = rx.blocking_recv() {
        for chunk in batch {
            file.write_all(&chunk)?;
            written += chunk.len() as u64;
        }
        if sync == SyncMode::Durable && written - flushed >= WRITEBACK_EVERY {
            start_writeback(file, base + flushed, written - flushed);
            flushed = written;
        }
    }
    if sync == SyncMode::Durable {
        file.sync_data()?;
    }
    Ok(written)
}

#[async_trait]
impl BlobStore for FsStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        match tokio::fs::metadata(self.blob_path(digest)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn read(
        &self,
        digest: &Digest,
        offset: u64,
        len: u64,
    ) -> Result<BlobContent, StoreError> {
        let path = self.blob_path(digest);
        blocking(move || {
            let file = File::open(path).map_err(not_found)?;
            // Never map past the end: a file shorter than its metadata (damage, a restore)
            // must be an error, not a SIGBUS that takes the whole process down.
            let actual = file.metadata()?.len();
            if actual < offset + len {
                return Err(StoreError::OffsetMismatch {
                    expected: offset + len,
                    actual,
                });
            }
            if len <= SMALL_READ {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; len as usize];
                file.read_exact_at(&mut buf, offset)?;
                return Ok(BlobContent::Bytes(Bytes::from(buf)));
            }
            Ok(BlobContent::File { file, offset, len })
        })
        .await
    }

    async fn delete(&self, digest: &Digest) -> Result<(), StoreError> {
        match tokio::fs::remove_file(self.blob_path(digest)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn start_upload(&self, id: &str) -> Result<(), StoreError> {
        let path = self.upload_path(id)?;
        blocking(move || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)?;
            Ok(())
        })
        .await
    }

    async fn append(&self, id: &str, offset: u64, mut body: ByteStream) -> Result<u64, StoreError> {
        let path = self.upload_path(id)?;
        let sync = self.sync;
        let mut file = blocking(move || {
            let file = OpenOptions::new()
                .append(true)
                .open(path)
                .map_err(not_found)?;
            let actual = file.metadata()?.len();
            if actual < offset {
                return Err(StoreError::OffsetMismatch {
                    expected: offset,
                    actual,
                });
            }
            if actual > offset {
                file.set_len(offset)?;
            }
            Ok(file)
        })
        .await?;
        let dup = file.try_clone()?;
        // The network side (this task) and the disk side (a blocking thread) run in parallel,
        // so receiving and hashing overlap with writing.
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<Bytes>>(4);
        let writer =
            tokio::task::spawn_blocking(move || write_batches(&mut file, offset, rx, sync));
        let mut batch = Vec::new();
        let mut batch_len = 0usize;
        let mut body_error = None;
        while let Some(item) = body.next().await {
            match item {
                Ok(chunk) => {
                    batch_len += chunk.len();
                    batch.push(chunk);
                    if batch_len >= BATCH_BYTES {
                        batch_len = 0;
                        if tx.send(std::mem::take(&mut batch)).await.is_err() {
                            break; // the writer failed; its error is reported below
                        }
                    }
                }
                Err(e) => {
                    body_error = Some(e);
                    break;
                }
            }
        }
        if body_error.is_none() && !batch.is_empty() {
            let _ = tx.send(batch).await;
        }
        drop(tx);
        let result = writer
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e)))?;
        match (result, body_error) {
            (Ok(n), None) => Ok(n),
            (result, err) => {
                // Cut the upload back to where this chunk began: a failed chunk changes nothing.
                blocking(move || Ok(dup.set_len(offset)?)).await?;
                Err(err.unwrap_or_else(|| match result {
                    Err(e) => StoreError::Io(e),
                    Ok(_) => StoreError::Body("incomplete".into()),
                }))
            }
        }
    }

    async fn read_upload(&self, id: &str) -> Result<BlobContent, StoreError> {
        let path = self.upload_path(id)?;
        blocking(move || {
            let file = File::open(path).map_err(not_found)?;
            let len = file.metadata()?.len();
            Ok(BlobContent::File {
                file,
                offset: 0,
                len,
            })
        })
        .await
    }

    async fn commit_upload(&self, id: &str, digest: &Digest, len: u64) -> Result<(), StoreError> {
        let from = self.upload_path(id)?;
        let to = self.blob_path(digest);
        let sync = self.sync;
        blocking(move || {
            let file = OpenOptions::new()
                .write(true)
                .open(&from)
                .map_err(not_found)?;
            let actual = file.metadata()?.len();
            if actual < len {
                return Err(StoreError::OffsetMismatch {
                    expected: len,
                    actual,
                });
            }
            // Every append already synced its bytes; only a cut-off tail needs another sync.
            if actual > len {
                file.set_len(len)?;
                if sync == SyncMode::Durable {
                    file.sync_data()?;
                }
            }
            let dir = to.parent().expect("blob paths have a parent");
            if !dir.is_dir() {
                std::fs::create_dir_all(dir)?;
                if sync == SyncMode::Durable {
                    // The new directory's own entry must be durable too.
                    sync_dir(dir.parent().expect("prefix directories have a parent"))?;
                }
            }
            std::fs::rename(&from, &to).map_err(not_found)?;
            if sync == SyncMode::Durable {
                sync_dir(dir)?;
            }
            Ok(())
        })
        .await
    }

    async fn abort_upload(&self, id: &str) -> Result<(), StoreError> {
        let path = self.upload_path(id)?;
        match tokio::fs::remove_file(path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_backend_testsuite() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path(), SyncMode::Durable).unwrap();
        crate::testsuite::run(&store).await;
    }

    #[tokio::test]
    async fn large_ranges_stream_from_a_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path(), SyncMode::Relaxed).unwrap();
        let data: Vec<u8> = (0..(9u32 << 20) + 123).map(|i| (i % 251) as u8).collect();
        let digest = Digest::sha256_of(&data);
        store.start_upload("big").await.unwrap();
        let chunk = Bytes::from(data.clone());
        let body: ByteStream = Box::pin(futures::stream::iter(vec![Ok(chunk)]));
        store.append("big", 0, body).await.unwrap();
        store
            .commit_upload("big", &digest, data.len() as u64)
            .await
            .unwrap();
        for (offset, len) in [
            (0u64, data.len() as u64),
            (5000, 600_000),
            (4096, (9 << 20) - 4000),
        ] {
            let content = store.read(&digest, offset, len).await.unwrap();
            assert!(matches!(content, BlobContent::File { .. }));
            let mut got = Vec::new();
            let mut s = content.into_stream().unwrap();
            while let Some(c) = s.next().await {
                got.extend_from_slice(&c.unwrap());
            }
            assert_eq!(got, &data[offset as usize..(offset + len) as usize]);
        }
    }

    #[tokio::test]
    async fn hostile_upload_ids_name_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path(), SyncMode::Relaxed).unwrap();
        for id in ["../x", "", "a/b", ".."] {
            assert!(matches!(
                store.start_upload(id).await,
                Err(StoreError::NotFound)
            ));
        }
    }
}
