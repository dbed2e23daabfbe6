//! A fault-injecting TCP proxy for S3 (see [`FaultProxy`]), used by `s3_faults`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// What the proxy does with the connections it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Pass bytes through to S3 both ways.
    Pass,
    /// Read each request and answer `503 Service Unavailable`, as S3 does when overloaded.
    Unavailable,
    /// Accept the connection, read what comes, never answer.
    Stall,
    /// Read the request head, then reset the connection (RST).
    Reset,
}

/// A TCP proxy in front of the S3 test server that injects [`Fault`]s, switchable at run
/// time. It runs on a thread of its own, so a test's own runtime never delays it. A switch
/// reaches open connections too, so pooled keep-alive connections cannot carry the old
/// behaviour on: a pass-through connection goes silent (stall), is reset, or is closed; any
/// other is closed.
pub struct FaultProxy {
    addr: SocketAddr,
    fault: watch::Sender<Fault>,
    /// Requests answered 503, requests reset and connections stalled, so far.
    faulted: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy to `upstream` (`http://host:port`), passing through.
    pub fn start(upstream: &str) -> Self {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("the S3 test endpoint is http://ip:port");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (fault, watching) = watch::channel(Fault::Pass);
        let faulted = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = oneshot::channel();
        let count = Arc::clone(&faulted);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                let accept = async {
                    while let Ok((socket, _)) = listener.accept().await {
                        let _ = socket.set_nodelay(true);
                        tokio::spawn(proxy_connection(
                            socket,
                            upstream,
                            watching.clone(),
                            Arc::clone(&count),
                        ));
                    }
                };
                tokio::select! {
                    () = accept => {}
                    _ = stopped => {}
                }
            });
        });
        Self {
            addr,
            fault,
            faulted,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The endpoint to give berth instead of the S3 server's.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on, inject `fault`.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// Requests answered 503, requests reset and connections stalled, so far.
    pub fn faulted(&self) -> u64 {
        self.faulted.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serve one accepted connection with the fault in force when it was accepted, until it
/// ends or the fault changes. A pass-through connection meets the new fault in mid-transfer:
/// under [`Fault::Stall`] both sides go silent (until the next change), under
/// [`Fault::Reset`] berth's side is reset; any other change closes it.
async fn proxy_connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut fault: watch::Receiver<Fault>,
    faulted: Arc<AtomicU64>,
) {
    let mode = *fault.borrow_and_update();
    if mode == Fault::Pass {
        let Ok(mut server) = TcpStream::connect(upstream).await else {
            return;
        };
        let _ = server.set_nodelay(true);
        let changed = tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
            _ = fault.changed() => *fault.borrow_and_update(),
        };
        match changed {
            Fault::Stall => {
                faulted.fetch_add(1, Ordering::Relaxed);
                let _ = fault.changed().await;
            }
            Fault::Reset => {
                faulted.fetch_add(1, Ordering::Relaxed);
                let _ = client.set_zero_linger();
            }
            Fault::Pass | Fault::Unavailable => {}
        }
        return;
    }
    let work = async {
        match mode {
            Fault::Pass => {}
            Fault::Unavailable => {
                let mut buf = Vec::new();
                while let Some(method) = read_request(&mut client, &mut buf).await? {
                    faulted.fetch_add(1, Ordering::Relaxed);
                    let body = if method == "HEAD" {
                        ""
                    } else {
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>ServiceUnavailable\
                         </Code><Message>injected by the test proxy</Message></Error>"
                    };
                    let reply = format!(
                        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/xml\r\n\
                         content-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    client.write_all(reply.as_bytes()).await?;
                }
            }
            Fault::Stall => {
                faulted.fetch_add(1, Ordering::Relaxed);
                let mut sink = vec![0u8; 64 << 10];
                while client.read(&mut sink).await? > 0 {}
                // The client gave up; hold nothing.
            }
            Fault::Reset => {
                let mut buf = Vec::new();
                if read_request(&mut client, &mut buf).await?.is_some() {
                    faulted.fetch_add(1, Ordering::Relaxed);
                }
                // Closing with a zero linger time sends RST instead of FIN.
                client.set_zero_linger()?;
            }
        }
        Ok::<(), std::io::Error>(())
    };
    tokio::select! {
        _ = work => {}
        _ = fault.changed() => {}
    }
}

/// Read one HTTP/1.1 request (head, then as many body bytes as its `Content-Length` says,
/// discarded) and return its method; `None` when the connection ends first. `buf` holds bytes
/// read past the request, for the next one.
async fn read_request(
    socket: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<String>> {
    let mut chunk = vec![0u8; 64 << 10];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end);
    let method = head.split(' ').next().unwrap_or("").to_owned();
    let mut body_left: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let buffered = body_left.min(buf.len());
    buf.drain(..buffered);
    body_left -= buffered;
    while body_left > 0 {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        let used = n.min(body_left);
        body_left -= used;
        buf.extend_from_slice(&chunk[used..n]);
    }
    Ok(Some(method))
}
