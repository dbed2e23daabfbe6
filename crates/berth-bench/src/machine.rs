//! This machine's own limits: one core's SHA-256 rate and loopback TCP throughput.

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
