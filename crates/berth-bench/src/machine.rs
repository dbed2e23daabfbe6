//! This machine's own figures: one core's SHA-256 rate, loopback TCP throughput, and two
//! references for the registries: a pull served by nothing but `sendfile`, and the CPU a
//! durable push costs with nothing but receiving, hashing and a direct write.

use std::io::{Read as _, Write as _};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Instant;

use serde_json::json;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::out::{r3, Out};

/// Hash `size` bytes held in memory on one thread, `repeat` times; one line per run.
pub fn sha256(out: &Out, size: u64, repeat: u32) {
    let buf = crate::data::blob(1, size as usize);
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        let d = Sha256::digest(&buf);
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(d);
        out.emit(
            "machine-sha256",
            json!({ "sha256_mb_s": r3(size as f64 / secs / 1e6) }),
            json!({ "bytes": size, "seconds": r3(secs) }),
        );
    }
}

/// Send `size` bytes over a 127.0.0.1 TCP connection between two tasks, `repeat` times.
///
/// # Errors
/// On socket errors.
pub async fn loopback(out: &Out, size: u64, repeat: u32) -> anyhow::Result<()> {
    const WRITE: usize = 1 << 20;
    for _ in 0..repeat.max(1) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let reader = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await?;
            let mut buf = vec![0u8; 256 << 10];
            let mut got = 0u64;
            loop {
                let n = sock.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                got += n as u64;
            }
            anyhow::Ok(got)
        });
        let mut sock = tokio::net::TcpStream::connect(addr).await?;
        sock.set_nodelay(true)?;
        let chunk = crate::data::blob(2, WRITE);
        let t = Instant::now();
        let mut sent = 0u64;
        while sent < size {
            let n = (size - sent).min(WRITE as u64) as usize;
            sock.write_all(&chunk[..n]).await?;
            sent += n as u64;
        }
        sock.shutdown().await?;
        drop(sock);
        let got = reader.await??;
        let secs = t.elapsed().as_secs_f64();
        anyhow::ensure!(got == size, "loopback: sent {size} bytes, received {got}");
        out.emit(
            "machine-loopback",
            json!({ "loopback_mb_s": r3(size as f64 / secs / 1e6) }),
            json!({ "bytes": size, "seconds": r3(secs) }),
        );
    }
    Ok(())
}

/// A scratch file under the measurement directory, removed when dropped (also when a
/// measurement fails half-way).
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(dir: &Path, what: &str) -> Self {
        Self(dir.join(format!("berth-bench-{what}-{}", std::process::id())))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Serve a `size`-byte file, cached in memory, over a 127.0.0.1 connection with blocking
/// `sendfile(2)` to the reader the timed pulls use ([`crate::raw::get_discarding`]), `repeat`
/// times after one untimed run: a reference for the pull figures, a server that does nothing
/// but hand the file to the socket. The file is written under `dir` and removed afterwards.
///
/// # Errors
/// On I/O errors, or if the reader gets a different number of bytes.
pub fn sendfile(out: &Out, dir: &Path, size: u64, read: usize, repeat: u32) -> anyhow::Result<()> {
    anyhow::ensure!(size > 0, "sendfile: --bytes must be more than 0");
    let scratch = Scratch::new(dir, "sendfile");
    std::fs::write(&scratch.0, crate::data::blob(3, usize::try_from(size)?))
        .map_err(|e| anyhow::Error::new(e).context(format!("writing {}", scratch.0.display())))?;
    let file = std::fs::File::open(&scratch.0)?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = reqwest::Url::parse(&format!("http://{}/blob", listener.local_addr()?))?;
    let runs = repeat.max(1) + 1;
    let server = std::thread::spawn(move || -> anyhow::Result<()> {
        for _ in 0..runs {
            let (sock, _) = listener.accept()?;
            serve_file(sock, &file, size)?;
        }
        Ok(())
    });
    let fetch = || -> anyhow::Result<()> {
        for run in 0..runs {
            let t = Instant::now();
            let reply = crate::raw::get_discarding(&url, &[], read)?;
            let secs = t.elapsed().as_secs_f64();
            anyhow::ensure!(
                reply.body_len == size,
                "sendfile: got {} of {size} bytes",
                reply.body_len
            );
            if run > 0 {
                out.emit(
                    "machine-sendfile",
                    json!({ "sendfile_mb_s": r3(size as f64 / secs / 1e6) }),
                    json!({ "bytes": size, "seconds": r3(secs), "read_bytes": read }),
                );
            }
        }
        Ok(())
    };
    let fetched = fetch();
    // A server that failed explains the reader's error better than the reader can; one that
    // is still waiting for a connection the reader never made is left behind.
    if fetched.is_ok() || server.is_finished() {
        server
            .join()
            .map_err(|_| anyhow::anyhow!("the sendfile server panicked"))??;
    }
    fetched
}

/// Read one request head from `sock`, then answer with the whole of `file` (`size` bytes).
fn serve_file(
    mut sock: std::net::TcpStream,
    file: &std::fs::File,
    size: u64,
) -> anyhow::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while crate::raw::find_head_end(&head).is_none() {
        match sock.read(&mut buf) {
            Ok(0) => anyhow::bail!("the reader closed before its request ended"),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    sock.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n").as_bytes())?;
    let mut offset: libc::off_t = 0;
    while (offset as u64) < size {
        let left = usize::try_from(size - offset as u64)?;
        // SAFETY: both descriptors are open; `offset` is a local the kernel updates.
        let n =
            unsafe { libc::sendfile(sock.as_raw_fd(), file.as_raw_fd(), &raw mut offset, left) };
        match n {
            0 => anyhow::bail!("sendfile: the file ended early"),
            n if n < 0 => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    anyhow::bail!("sendfile: {e}");
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Receive `size` bytes over a 127.0.0.1 connection, hash them with SHA-256 and write them
/// with `O_DIRECT` to a file under `dir`, then `fdatasync` it: a durable push with no HTTP, no
/// runtime and no extra copy (each `recv` lands in the block-aligned buffer that is written),
/// on one thread. `repeat` times; reports that thread's CPU time per GiB, a reference for the
/// server CPU per GiB pushed.
///
/// # Errors
/// On I/O errors, or if fewer bytes arrive than were sent.
pub fn receive(out: &Out, dir: &Path, size: u64, repeat: u32) -> anyhow::Result<()> {
    const WRITE: usize = 1 << 20;
    anyhow::ensure!(size > 0, "receive: --bytes must be more than 0");
    let chunk = crate::data::blob(4, WRITE);
    for _ in 0..repeat.max(1) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let scratch = Scratch::new(dir, "receive");
        let receiver = std::thread::spawn({
            let path = scratch.0.clone();
            move || receive_one(&listener, &path)
        });
        let t = Instant::now();
        let send = || -> anyhow::Result<()> {
            let mut sock = std::net::TcpStream::connect(addr)?;
            sock.set_nodelay(true)?;
            let mut sent = 0u64;
            while sent < size {
                let n = usize::try_from((size - sent).min(WRITE as u64))?;
                sock.write_all(&chunk[..n])?;
                sent += n as u64;
            }
            Ok(())
        };
        let sent = send();
        if sent.is_err() {
            // A receiver that failed first (and so broke the send) is given a moment to finish
            // and explain; one that never got a connection is left behind.
            for _ in 0..100 {
                if receiver.is_finished() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            if !receiver.is_finished() {
                return sent;
            }
        }
        let got = receiver
            .join()
            .map_err(|_| anyhow::anyhow!("the receiver panicked"))?;
        let secs = t.elapsed().as_secs_f64();
        // The receiver's error explains a broken send better than the sender's.
        let Received { bytes, cpu, direct } = got?;
        sent?;
        anyhow::ensure!(
            bytes == size,
            "receive: sent {size} bytes, received {bytes}"
        );
        let gib = size as f64 / f64::from(1u32 << 30);
        out.emit(
            "machine-receive",
            json!({
                "receive_cpu_s_per_gib": r3(cpu / gib),
                "receive_mb_s": r3(size as f64 / secs / 1e6),
                // 0 when the scratch filesystem refused O_DIRECT and the writes went through
                // the page cache: the report then says the reference is not comparable.
                "receive_o_direct": u8::from(direct),
            }),
            json!({ "bytes": size, "seconds": r3(secs), "cpu_seconds": r3(cpu), "o_direct": direct }),
        );
    }
    Ok(())
}

struct Received {
    bytes: u64,
    cpu: f64,
    direct: bool,
}

/// The receiving thread of [`receive`]: accept one connection and store what it sends.
fn receive_one(listener: &std::net::TcpListener, path: &Path) -> anyhow::Result<Received> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    const BUF: usize = 1 << 20;
    const ALIGN: usize = 4096;
    let (mut sock, _) = listener.accept()?;
    let start = thread_cpu_seconds()?;
    let open = |flags| {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(flags)
            .open(path)
    };
    // Filesystems without direct I/O (tmpfs) refuse the flag with EINVAL: write through the
    // cache there, and say so in the result.
    let (file, direct) = match open(libc::O_DIRECT) {
        Ok(f) => (f, true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (open(0)?, false),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("creating {}", path.display()))),
    };
    // One block-aligned buffer that every recv lands in directly.
    let mut raw = vec![0u8; BUF + ALIGN];
    let skip = raw.as_ptr().align_offset(ALIGN);
    let buf = &mut raw[skip..skip + BUF];
    let mut hasher = Sha256::new();
    let (mut total, mut fill) = (0u64, 0usize);
    loop {
        let n = match sock.read(&mut buf[fill..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        hasher.update(&buf[fill..fill + n]);
        fill += n;
        total += n as u64;
        if fill == BUF || (n == 0 && fill > 0) {
            let padded = fill.next_multiple_of(ALIGN);
            buf[fill..padded].fill(0);
            file.write_all_at(&buf[..padded], total - fill as u64)?;
            fill = 0;
        }
        if n == 0 {
            break;
        }
    }
    file.set_len(total)?;
    file.sync_data()?;
    std::hint::black_box(hasher.finalize());
    Ok(Received {
        bytes: total,
        cpu: thread_cpu_seconds()? - start,
        direct,
    })
}

/// CPU time (user and system) this thread has used.
fn thread_cpu_seconds() -> std::io::Result<f64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9)
}
