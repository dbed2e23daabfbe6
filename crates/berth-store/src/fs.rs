//! The local filesystem backend, the embedded default.
//!
//! ```text
//! <root>/
//! ├── blobs/
//! │   └── sha256/
//! │       └── ab/
//! │           └── abcdef0123…    committed blob, immutable, named by its hash
//! ├── uploads/
//! │   └── <upload id>            bytes of an upload session so far, append-only
//! └── quarantine/
//!     └── sha256/
//!         └── abcdef0123…-<label>  damaged bytes a scrub moved aside, never read
//! ```
//!
//! An upload is one file, written in place at the offset each append is given (bytes past it,
//! left by a chunk whose metadata update never happened, are cut off first). Segment tokens
//! and the recorded segments the trait passes are ignored: one process owns the directory and
//! serialises the appends of each upload, so no append can land on top of another's bytes.
//!
//! A blob is committed by renaming its upload file into `blobs/` after an fsync of the data,
//! then an fsync of the directory: the rename is the atomic step that makes it visible.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use berth_oci::{Digest, DigestAlgorithm};
use bytes::Bytes;
use futures::StreamExt;

use crate::{BlobContent, BlobStore, ByteStream, Segment, StoreError, StoredBlob};

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

/// Reads up to this size are done with one `pread` into memory: cheaper than a mapping.
const SMALL_READ: u64 = 256 << 10;

impl FsStore {
    /// Open (creating if needed) a store rooted at `root`.
    ///
    /// # Errors
    /// If the directories cannot be created.
    pub fn open(root: impl Into<PathBuf>, sync: SyncMode) -> std::io::Result<Self> {
        let root = root.into();
        // The per-algorithm directories too: `commit_upload` syncs the directory it creates a
        // blob's prefix directory in, which is `blobs/<alg>`, never `blobs` itself.
        for alg in [DigestAlgorithm::Sha256, DigestAlgorithm::Sha512] {
            std::fs::create_dir_all(root.join("blobs").join(alg.as_str()))?;
        }
        std::fs::create_dir_all(root.join("uploads"))?;
        Ok(Self { root, sync })
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        crate::blob_key(d)
            .iter()
            .fold(self.root.clone(), |p, part| p.join(part))
    }

    fn quarantine_path(&self, d: &Digest, label: &str) -> Result<PathBuf, StoreError> {
        Ok(crate::quarantine_key(d, label)?
            .iter()
            .fold(self.root.clone(), |p, part| p.join(part)))
    }

    fn upload_path(&self, id: &str) -> Result<PathBuf, StoreError> {
        crate::check_upload_id(id)?;
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

/// Block size that direct I/O offsets, lengths and buffers are aligned to. 4 KiB satisfies
/// every common device and filesystem (most need only 512 bytes).
const DIO_ALIGN: usize = 4096;
/// The first buffer of an append: small, so a small blob costs little memory.
const DIO_FIRST_BUF: usize = 256 << 10;
/// Later buffers: large writes keep the device busy with few syscalls.
const DIO_BUF: usize = 4 << 20;

/// A write buffer whose start is aligned to [`DIO_ALIGN`], filled without zeroing first.
struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    cap: usize,
}

impl AlignedBuf {
    /// `cap` must be a multiple of [`DIO_ALIGN`].
    fn new(cap: usize) -> Self {
        let mut raw: Vec<u8> = Vec::with_capacity(cap + DIO_ALIGN);
        let start = raw.as_ptr().align_offset(DIO_ALIGN);
        raw.resize(start, 0);
        Self { raw, start, cap }
    }

    fn len(&self) -> usize {
        self.raw.len() - self.start
    }

    /// Copy as much of `data` as fits; returns how much did.
    fn fill_from(&mut self, data: &[u8]) -> usize {
        let n = (self.cap - self.len()).min(data.len());
        // Never beyond capacity, so the allocation (and its alignment) never moves.
        self.raw.extend_from_slice(&data[..n]);
        n
    }

    fn is_full(&self) -> bool {
        self.len() == self.cap
    }

    /// Zero-pad to a whole number of blocks.
    fn pad(&mut self) {
        let padded = self.len().next_multiple_of(DIO_ALIGN);
        self.raw.resize(self.start + padded, 0);
    }

    fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..]
    }

    fn as_mut_block(&mut self) -> &mut [u8] {
        self.raw.resize(self.start + DIO_ALIGN, 0);
        &mut self.raw[self.start..]
    }

    fn clear(&mut self) {
        self.raw.truncate(self.start);
    }
}

/// Open an upload file for positioned writes, with `O_DIRECT` where the filesystem takes it.
///
/// Direct writes go from our buffer to the device without a copy into the page cache, which
/// on a busy or virtualised machine costs more CPU than hashing (measured in BENCHMARKS.md).
/// Returns the file and whether it is in direct mode.
fn open_for_writing(path: &Path) -> std::io::Result<(File, bool)> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        match OpenOptions::new()
            .write(true)
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(f) => return Ok((f, true)),
            // tmpfs and some network filesystems refuse O_DIRECT: write through the cache.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    let f = OpenOptions::new().write(true).read(true).open(path)?;
    Ok((f, false))
}

/// Turn `O_DIRECT` off for `file`, for a filesystem that accepted it at open but refuses our
/// alignment at write time.
fn leave_direct_mode(file: &File) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        // SAFETY: fcntl on an fd we own, with integer arguments only.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        // SAFETY: as above.
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let _ = file;
    Ok(())
}

/// How many aligned buffers one append may hold: one being filled by the request task, the
/// others queued for or in the writer thread. Bounds an append's memory (16 MiB) and keeps
/// the device busy while the next buffer fills.
const DIO_BUFFERS: usize = 4;

/// A filled buffer on its way to the writer thread, to be written at file offset `pos`.
struct Filled {
    buf: AlignedBuf,
    pos: u64,
}

/// The request side of an append: copies the body into block-aligned buffers while each
/// chunk is still hot in this core's cache (it was just received and hashed here), and hands
/// full buffers to the writer thread. Copying here rather than on the writer thread costs
/// less CPU: there the bytes had to come over from this core first.
///
/// In direct mode every write covers whole blocks at a block-aligned offset: an append that
/// starts mid-block first reads that block's head back (see [`open_append`]), and the last
/// block is zero-padded and the file then cut to its real length. Padding left by a crash lies
/// past the offset that metadata records, and the next append cuts it off.
struct Filler {
    buf: AlignedBuf,
    /// File offset of `buf`'s first byte; always block-aligned.
    pos: u64,
    /// Buffers allocated so far (at most [`DIO_BUFFERS`]).
    allocated: usize,
    full: tokio::sync::mpsc::Sender<Filled>,
    free: tokio::sync::mpsc::Receiver<AlignedBuf>,
}

impl Filler {
    /// Copy `data` into buffers, sending each one that fills. Returns false if the writer
    /// thread has stopped (it failed; its error is reported when it is joined).
    async fn write(&mut self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            let n = self.buf.fill_from(data);
            data = &data[n..];
            if self.buf.is_full() && !self.send_full().await {
                return false;
            }
        }
        true
    }

    /// Send the current buffer and take an empty one: a recycled one if the writer has given
    /// one back (or once [`DIO_BUFFERS`] exist, waiting for one), else a new one.
    async fn send_full(&mut self) -> bool {
        let next = match self.free.try_recv() {
            Ok(b) => Some(b),
            Err(_) if self.allocated < DIO_BUFFERS => None,
            Err(_) => {
                // Send first, so the writer has something to give back.
                let len = self.buf.len() as u64;
                let buf = std::mem::replace(&mut self.buf, AlignedBuf::new(0));
                if self.full.send(Filled { buf, pos: self.pos }).await.is_err() {
                    return false;
                }
                self.pos += len;
                match self.free.recv().await {
                    Some(b) => {
                        self.buf = b;
                        return true;
                    }
                    None => return false,
                }
            }
        };
        // The small first buffer is replaced by a large one once a body outgrows it.
        let next = match next {
            Some(b) if b.cap >= DIO_BUF => b,
            _ => {
                self.allocated += 1;
                AlignedBuf::new(DIO_BUF)
            }
        };
        let len = self.buf.len() as u64;
        let buf = std::mem::replace(&mut self.buf, next);
        if self.full.send(Filled { buf, pos: self.pos }).await.is_err() {
            return false;
        }
        self.pos += len;
        true
    }

    /// Send what is buffered (the last, possibly partial, buffer).
    async fn finish(mut self) -> bool {
        if self.buf.len() == 0 {
            return true;
        }
        let buf = std::mem::replace(&mut self.buf, AlignedBuf::new(0));
        self.full.send(Filled { buf, pos: self.pos }).await.is_ok()
    }
}

/// Check that `file` holds at least `len` bytes and cut off any beyond (left by a chunk that
/// metadata never recorded). Returns whether anything was cut.
fn cut_to(file: &File, len: u64) -> Result<bool, StoreError> {
    let actual = file.metadata()?.len();
    if actual < len {
        return Err(StoreError::OffsetMismatch {
            expected: len,
            actual,
        });
    }
    if actual > len {
        file.set_len(len)?;
    }
    Ok(actual > len)
}

/// Open upload `path` for an append at `offset`: check and cut its length, and read back the
/// head of the block `offset` falls in (direct writes cover whole blocks). Returns the file,
/// whether it is in direct mode, and the first buffer with the file offset it starts at.
fn open_append(path: &Path, offset: u64) -> Result<(File, bool, AlignedBuf, u64), StoreError> {
    let (file, direct) = open_for_writing(path).map_err(not_found)?;
    cut_to(&file, offset)?;
    let mut buf = AlignedBuf::new(DIO_FIRST_BUF);
    let head = (offset % DIO_ALIGN as u64) as usize;
    let pos = offset - head as u64;
    if head > 0 {
        use std::os::unix::fs::FileExt;
        let block = buf.as_mut_block();
        let mut got = 0;
        while got < head {
            match file.read_at(&mut block[got..], pos + got as u64)? {
                0 => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
                n => got += n,
            }
        }
        buf.raw.truncate(buf.start + head);
    }
    Ok((file, direct, buf, pos))
}

/// The writer thread of an append: writes each filled buffer at its offset and gives the
/// buffer back, until the channel closes; then syncs in durable mode.
fn write_buffers(
    file: &File,
    mut direct: bool,
    sync: SyncMode,
    mut full: tokio::sync::mpsc::Receiver<Filled>,
    free: tokio::sync::mpsc::Sender<AlignedBuf>,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    // In buffered durable mode, how far writeback has been started.
    let mut flushed: Option<u64> = None;
    while let Some(Filled { mut buf, pos }) = full.blocking_recv() {
        let len = buf.len() as u64;
        let padded = direct && !buf.len().is_multiple_of(DIO_ALIGN);
        if direct {
            buf.pad();
        }
        match file.write_all_at(buf.as_slice(), pos) {
            #[cfg(target_os = "linux")]
            Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => {
                leave_direct_mode(file)?;
                direct = false;
                file.write_all_at(buf.as_slice(), pos)?;
            }
            other => other?,
        }
        if padded {
            // Only the last buffer is partial: cut the padding off.
            file.set_len(pos + len)?;
        }
        let end = pos + len;
        let from = *flushed.get_or_insert(pos);
        if !direct && sync == SyncMode::Durable && end - from >= WRITEBACK_EVERY {
            start_writeback(file, from, end - from);
            flushed = Some(end);
        }
        buf.clear();
        // The filler may have finished and gone: then the buffer is simply freed.
        let _ = free.try_send(buf);
    }
    if sync == SyncMode::Durable {
        file.sync_data()?;
    }
    Ok(())
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

    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<StoredBlob>, StoreError> {
        let root = self.root.join("blobs");
        let after = after.cloned();
        blocking(move || list_fs_blobs(&root, after.as_ref(), limit)).await
    }

    async fn quarantine_blob(&self, digest: &Digest, label: &str) -> Result<bool, StoreError> {
        let from = self.blob_path(digest);
        let to = self.quarantine_path(digest, label)?;
        let sync = self.sync;
        blocking(move || {
            let dir = to.parent().expect("quarantine paths have a parent");
            std::fs::create_dir_all(dir)?;
            // One filesystem: a rename, atomic; a reader that has the file open keeps it.
            match std::fs::rename(&from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e.into()),
            }
            if sync == SyncMode::Durable {
                sync_dir(dir)?;
                sync_dir(from.parent().expect("blob paths have a parent"))?;
            }
            Ok(true)
        })
        .await
    }

    async fn quarantine_bytes(
        &self,
        digest: &Digest,
        label: &str,
        content: Bytes,
    ) -> Result<(), StoreError> {
        let path = self.quarantine_path(digest, label)?;
        let sync = self.sync;
        blocking(move || {
            let dir = path.parent().expect("quarantine paths have a parent");
            std::fs::create_dir_all(dir)?;
            let mut file = File::create(&path)?;
            std::io::Write::write_all(&mut file, &content)?;
            if sync == SyncMode::Durable {
                file.sync_all()?;
                sync_dir(dir)?;
            }
            Ok(())
        })
        .await
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

    async fn append(
        &self,
        id: &str,
        offset: u64,
        _token: &str,
        mut body: ByteStream,
    ) -> Result<u64, StoreError> {
        // One file per upload, appended to in place: tokens name nothing here. Appends to one
        // upload never overlap (the registry serialises them in this one process), and the
        // offset check below cuts off whatever an unrecorded chunk left.
        let path = self.upload_path(id)?;
        let sync = self.sync;
        let (file, direct, first, pos) = blocking(move || open_append(&path, offset)).await?;
        let dup = file.try_clone()?;
        // The network side (this task: receive, hash, copy into aligned buffers) and the disk
        // side (a blocking thread: the writes) run in parallel.
        let (full_tx, full_rx) = tokio::sync::mpsc::channel::<Filled>(DIO_BUFFERS);
        let (free_tx, free_rx) = tokio::sync::mpsc::channel::<AlignedBuf>(DIO_BUFFERS);
        let writer = tokio::task::spawn_blocking(move || {
            write_buffers(&file, direct, sync, full_rx, free_tx)
        });
        let mut filler = Filler {
            buf: first,
            pos,
            allocated: 1,
            full: full_tx,
            free: free_rx,
        };
        let mut written = 0u64;
        let mut body_error = None;
        let mut writer_alive = true;
        while let Some(item) = body.next().await {
            match item {
                Ok(chunk) => {
                    written += chunk.len() as u64;
                    if !filler.write(&chunk).await {
                        writer_alive = false;
                        break; // the writer failed; its error is reported below
                    }
                }
                Err(e) => {
                    body_error = Some(e);
                    break;
                }
            }
        }
        if body_error.is_none() && writer_alive {
            writer_alive = filler.finish().await;
        } else {
            drop(filler);
        }
        let result = writer
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e)))?;
        match (result, body_error) {
            (Ok(()), None) if writer_alive => Ok(written),
            (result, err) => {
                // Cut the upload back to where this chunk began: a failed chunk changes nothing.
                blocking(move || Ok(dup.set_len(offset)?)).await?;
                Err(err.unwrap_or_else(|| match result {
                    Err(e) => StoreError::Io(e),
                    Ok(()) => StoreError::Body("incomplete".into()),
                }))
            }
        }
    }

    async fn read_upload(
        &self,
        id: &str,
        _segments: &[Segment],
    ) -> Result<BlobContent, StoreError> {
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

    async fn commit_upload(
        &self,
        id: &str,
        digest: &Digest,
        len: u64,
        _segments: &[Segment],
    ) -> Result<(), StoreError> {
        let from = self.upload_path(id)?;
        let to = self.blob_path(digest);
        let sync = self.sync;
        blocking(move || {
            let file = OpenOptions::new()
                .write(true)
                .open(&from)
                .map_err(not_found)?;
            // Every append already synced its bytes; only a cut-off tail needs another sync.
            if cut_to(&file, len)? && sync == SyncMode::Durable {
                file.sync_data()?;
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

/// Sorted names of the entries of `dir` (none if it does not exist).
fn sorted_names(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                if let Ok(name) = e?.file_name().into_string() {
                    names.push(name);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    names.sort_unstable();
    Ok(names)
}

/// [`BlobStore::list_blobs`] over `root` (`blobs/`): walks `<algorithm>/<xx>/<hex>` in order,
/// starting at `after`'s folder, so each page reads only the folders it needs.
fn list_fs_blobs(
    root: &Path,
    after: Option<&Digest>,
    limit: usize,
) -> Result<Vec<StoredBlob>, StoreError> {
    let mut out = Vec::new();
    let start = after.map(|d| (d.algorithm().as_str().to_owned(), d.hex().to_owned()));
    for alg in sorted_names(root)? {
        if start
            .as_ref()
            .is_some_and(|(a, _)| alg.as_str() < a.as_str())
        {
            continue;
        }
        let alg_dir = root.join(&alg);
        for prefix in sorted_names(&alg_dir)? {
            let skip_below = start
                .as_ref()
                .filter(|(a, _)| *a == alg)
                .map(|(_, hex)| hex.as_str());
            if skip_below.is_some_and(|hex| prefix.as_str() < &hex[..2.min(hex.len())]) {
                continue;
            }
            let dir = alg_dir.join(&prefix);
            for hex in sorted_names(&dir)? {
                if skip_below.is_some_and(|h| hex.as_str() <= h) {
                    continue;
                }
                let Some(digest) = crate::digest_of_key(&alg, &prefix, &hex) else {
                    continue;
                };
                let meta = match std::fs::metadata(dir.join(&hex)) {
                    Ok(m) if m.is_file() => m,
                    Ok(_) => continue,
                    // Deleted since the folder was read.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                };
                out.push(StoredBlob {
                    digest,
                    size: meta.len(),
                    modified: meta.modified()?,
                });
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
    }
    Ok(out)
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
        store.append("big", 0, "t1", body).await.unwrap();
        store
            .commit_upload("big", &digest, data.len() as u64, &[Segment::new(0, "t1")])
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

    fn body(bytes: &'static [u8]) -> ByteStream {
        Box::pin(futures::stream::iter(vec![Ok(Bytes::from_static(bytes))]))
    }

    /// One file per upload: the file itself tells how far it got, so appends and commits are
    /// checked against it, and bytes past the offset are cut off whatever segments say.
    #[tokio::test]
    async fn offsets_are_checked_against_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path(), SyncMode::Relaxed).unwrap();
        assert!(matches!(
            store.append("missing", 0, "t1", body(b"x")).await,
            Err(StoreError::NotFound)
        ));
        store.start_upload("u").await.unwrap();
        assert_eq!(
            store.append("u", 0, "t1", body(b"hello, ")).await.unwrap(),
            7
        );
        assert!(matches!(
            store.append("u", 99, "t2", body(b"x")).await,
            Err(StoreError::OffsetMismatch {
                expected: 99,
                actual: 7
            })
        ));
        // Bytes past the offset the caller knows are dropped.
        assert_eq!(store.append("u", 5, "t3", body(b"!!")).await.unwrap(), 2);
        let segments = [Segment::new(0, "t1"), Segment::new(5, "t3")];
        let digest = Digest::sha256_of(b"hello!!");
        assert!(matches!(
            store.commit_upload("u", &digest, 100, &segments).await,
            Err(StoreError::OffsetMismatch {
                expected: 100,
                actual: 7
            })
        ));
        // A commit of fewer bytes than the file holds drops the rest.
        let digest = Digest::sha256_of(b"hello");
        store
            .commit_upload("u", &digest, 5, &segments)
            .await
            .unwrap();
        assert_eq!(store.stat(&digest).await.unwrap(), Some(5));
        assert!(matches!(
            store.commit_upload("u", &digest, 0, &[]).await,
            Err(StoreError::NotFound)
        ));
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
