//! Blob files streamed as memory-mapped windows, and the way back from a window to its file.
//!
//! A large read is served as a stream of [`Bytes`], each owning one read-only mapping of
//! `MAP_SLICE` bytes, so a download holds only the windows in flight. Every live window is
//! also recorded here, so that a transport that is handed such bytes can ask which file region
//! they are ([`file_region`]) and send it with `sendfile(2)` instead of copying it: the HTTP
//! layer stays ignorant of files, and the mapped pages are then never touched at all.

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use crate::{ByteStream, StoreError};

/// Size of the windows a mapped blob is streamed in.
const MAP_SLICE: usize = 8 << 20;
const PAGE: u64 = 4096;

/// A region of a file: the file and an offset in it.
#[derive(Debug, Clone)]
pub struct FileRegion {
    /// The open file.
    pub file: Arc<File>,
    /// Offset in `file` of the first byte.
    pub offset: u64,
}

struct Entry {
    len: usize,
    file: Arc<File>,
    offset: u64,
}

/// Live windows by start address.
static WINDOWS: RwLock<BTreeMap<usize, Entry>> = RwLock::new(BTreeMap::new());

/// The file region that `bytes` are a view of, if they lie inside a live mapped window.
///
/// Bytes inside a window are, by construction, exactly the file's bytes at the returned
/// offset: windows are read-only shared mappings of immutable blob files.
#[must_use]
pub fn file_region(bytes: &[u8]) -> Option<FileRegion> {
    if bytes.is_empty() {
        return None;
    }
    let addr = bytes.as_ptr() as usize;
    let windows = WINDOWS
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (start, e) = windows.range(..=addr).next_back()?;
    let skip = addr - start;
    (skip + bytes.len() <= e.len).then(|| FileRegion {
        file: e.file.clone(),
        offset: e.offset + skip as u64,
    })
}

/// Owns one mapping; unregisters it when the last `Bytes` view is dropped.
struct Window {
    map: memmap2::Mmap,
}

impl AsRef<[u8]> for Window {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        let mut windows = WINDOWS
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        windows.remove(&(self.map.as_ptr() as usize));
    }
}

/// Stream `len` bytes of `file` from `offset`, one memory-mapped window at a time.
pub(crate) fn mapped_stream(file: &File, offset: u64, len: u64) -> Result<ByteStream, StoreError> {
    let file = Arc::new(file.try_clone()?);
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
fn map_window(file: &Arc<File>, pos: u64, len: u64) -> Result<Bytes, StoreError> {
    let start = pos - pos % PAGE;
    let skip = (pos - start) as usize;
    let map_len = len as usize + skip;
    // SAFETY: blob files are immutable once committed and are only ever unlinked, never
    // truncated or rewritten, so the mapping cannot change or shrink under us.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(start)
            .len(map_len)
            .map(&**file)?
    };
    let _ = map.advise(memmap2::Advice::Sequential);
    {
        let mut windows = WINDOWS
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        windows.insert(
            map.as_ptr() as usize,
            Entry {
                len: map_len,
                file: file.clone(),
                offset: start,
            },
        );
    }
    Ok(Bytes::from_owner(Window { map }).slice(skip..))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::io::Write;

    #[tokio::test]
    async fn windows_know_their_file_region_until_dropped() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..(MAP_SLICE + 5000)).map(|i| (i % 253) as u8).collect();
        f.write_all(&data).unwrap();
        let mut stream = mapped_stream(&f, 1000, (MAP_SLICE + 3000) as u64).unwrap();
        let first = stream.next().await.unwrap().unwrap();
        let second = stream.next().await.unwrap().unwrap();
        assert!(stream.next().await.is_none());
        assert_eq!(first.len(), MAP_SLICE);
        assert_eq!(second.len(), 3000);

        let r = file_region(&first[10..20]).unwrap();
        assert_eq!(r.offset, 1010);
        let r = file_region(&second).unwrap();
        assert_eq!(r.offset, 1000 + MAP_SLICE as u64);
        // Bytes that are not in a window, or that run past one, are not a file region.
        assert!(file_region(&data[..10]).is_none());
        assert!(file_region(&[]).is_none());
    }
}
