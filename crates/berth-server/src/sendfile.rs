//! A TCP transport that sends blob bytes with `sendfile(2)`.
//!
//! hyper writes a response body by handing the transport the body's own [`bytes::Bytes`]
//! (vectored writes, no copy into its buffer). When those bytes are a window of a blob file
//! ([`berth_store::mapped::file_region`]), [`ZeroCopyStream`] asks the kernel to send that
//! file region instead: the data goes from the page cache to the socket without passing
//! through this process, and the mapping is never even faulted in. Anything else (headers,
//! small bodies, and everything under TLS, where the transport only sees ciphertext) is
//! written as usual.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use berth_store::mapped::{file_region, FileRegion};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Largest count one `sendfile` call takes on Linux.
const SENDFILE_MAX: usize = 0x7fff_f000;

/// A TCP connection whose writes of mapped blob bytes become `sendfile` calls.
#[derive(Debug)]
pub struct ZeroCopyStream(TcpStream);

impl ZeroCopyStream {
    /// Wraps an accepted connection.
    pub fn new(tcp: TcpStream) -> Self {
        ZeroCopyStream(tcp)
    }

    fn poll_sendfile(
        &self,
        cx: &mut Context<'_>,
        region: &FileRegion,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        let len = len.min(SENDFILE_MAX);
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self
                .0
                .try_io(Interest::WRITABLE, || sendfile(&self.0, region, len))
            {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return Poll::Ready(other),
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn sendfile(tcp: &TcpStream, region: &FileRegion, len: usize) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut offset = libc::off_t::try_from(region.offset).map_err(io::Error::other)?;
    // SAFETY: both descriptors are open for the duration of the call (we hold the stream and
    // an Arc of the file); `offset` is a valid local the kernel updates.
    let n = unsafe {
        libc::sendfile(
            tcp.as_raw_fd(),
            region.file.as_raw_fd(),
            &raw mut offset,
            len,
        )
    };
    match n {
        n if n < 0 => Err(io::Error::last_os_error()),
        // The file ended early: it was damaged under us. Fail the response, don't loop.
        0 => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "blob file shorter than expected",
        )),
        n => Ok(n as usize),
    }
}

#[cfg(not(target_os = "linux"))]
fn sendfile(tcp: &TcpStream, region: &FileRegion, len: usize) -> io::Result<usize> {
    let _ = (tcp, region, len);
    Err(io::ErrorKind::Unsupported.into())
}

impl AsyncRead for ZeroCopyStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ZeroCopyStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if cfg!(target_os = "linux") {
            if let Some(region) = file_region(buf) {
                return self.poll_sendfile(cx, &region, buf.len());
            }
        }
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let bufs = match bufs.iter().position(|b| !b.is_empty()) {
            Some(first) => &bufs[first..],
            None => return Poll::Ready(Ok(0)),
        };
        if !cfg!(target_os = "linux") {
            return Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs);
        }
        if let Some(region) = file_region(&bufs[0]) {
            return self.poll_sendfile(cx, &region, bufs[0].len());
        }
        // Write the plain slices up to the next file region in one writev.
        let plain = 1 + bufs[1..]
            .iter()
            .position(|b| file_region(b).is_some())
            .unwrap_or(bufs.len() - 1);
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, &bufs[..plain])
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}
