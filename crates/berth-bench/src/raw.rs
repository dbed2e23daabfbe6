//! A minimal HTTP/1.1 client over one kept-alive TCP connection, for jobs reqwest cannot do
//! here: a wrk-like closed-loop load generator that handles `HEAD` (wrk 4.1 waits for a body
//! after a `HEAD` reply with `Content-Length`, wg/wrk#198); reading replies with more than 100
//! header lines (hyper's client limit; a registry may send one `OCI-Tag` line per tag); and the
//! timed 1 GiB pulls, whose bodies are read on a blocking socket into one reused buffer and
//! dropped ([`get_discarding`]), so the client's own cost takes less of the shared CPU.

use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context};
use reqwest::Url;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A parsed reply.
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Header lines, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body, when asked to keep it.
    pub body: Vec<u8>,
    /// How many body bytes were read (kept or not).
    pub body_len: u64,
}

impl Reply {
    /// Every value of header `name` (lowercase).
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of header `name` (lowercase).
    pub fn header<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.all(name).next()
    }
}

/// `host:port` and the `Host` header value of a plain-HTTP URL.
pub fn authority(url: &Url) -> anyhow::Result<String> {
    ensure!(
        url.scheme() == "http",
        "the raw client speaks plain http only"
    );
    let host = url.host_str().ok_or_else(|| anyhow!("no host in {url}"))?;
    Ok(format!(
        "{host}:{}",
        url.port_or_known_default().unwrap_or(80)
    ))
}

/// Serialise a request head (and Content-Length when there is a body).
pub fn request_head(
    method: &str,
    url: &Url,
    headers: &[(&str, &str)],
    body_len: Option<usize>,
) -> anyhow::Result<Vec<u8>> {
    let mut path = url.path().to_owned();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    let mut s = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: berth-bench\r\n",
        authority(url)?
    );
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(n) = body_len {
        s.push_str(&format!("Content-Length: {n}\r\n"));
    }
    s.push_str("\r\n");
    Ok(s.into_bytes())
}

/// One kept-alive connection.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// A parsed reply head: status, headers (names lowercased) and `Content-Length` (0 if absent).
type Head = (u16, Vec<(String, String)>, usize);

/// Parse a reply head (without its blank line).
fn parse_head(head: &[u8]) -> anyhow::Result<Head> {
    let text = std::str::from_utf8(head).context("reply head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    let mut len = 0usize;
    for l in lines {
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| anyhow!("bad header {l:?}"))?;
        let k = k.trim().to_ascii_lowercase();
        let v = v.trim().to_owned();
        if k == "content-length" {
            len = v.parse().context("bad Content-Length")?;
        }
        if k == "transfer-encoding" && v.contains("chunked") {
            bail!("chunked replies are not supported by the raw client");
        }
        headers.push((k, v));
    }
    Ok((status, headers, len))
}

/// Where the head of an HTTP message in `b` ends (just past its blank line), once it has.
#[must_use]
pub fn find_head_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

impl Conn {
    /// Connect to `addr` (`host:port`).
    ///
    /// # Errors
    /// If the connection fails.
    pub async fn connect(addr: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: vec![0; 64 << 10],
            start: 0,
            end: 0,
        })
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let n = self.buf.len() * 2;
            ensure!(n <= 16 << 20, "reply head larger than 16 MiB");
            self.buf.resize(n, 0);
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            bail!("connection closed by the server");
        }
        self.end += n;
        Ok(())
    }

    /// Send `head` and `body`, read the reply. A reply to `HEAD` (`head_request`) has no body.
    /// With `keep_body` false the body is read and dropped.
    ///
    /// # Errors
    /// On I/O errors, a malformed reply or chunked encoding (not supported).
    pub async fn send(
        &mut self,
        head: &[u8],
        body: &[u8],
        head_request: bool,
        keep_body: bool,
    ) -> anyhow::Result<Reply> {
        if body.is_empty() {
            self.stream.write_all(head).await?;
        } else {
            let mut v = Vec::with_capacity(head.len() + body.len());
            v.extend_from_slice(head);
            v.extend_from_slice(body);
            self.stream.write_all(&v).await?;
        }
        self.read_reply(head_request, keep_body).await
    }

    /// Read one reply; see [`Conn::send`].
    async fn read_reply(&mut self, head_request: bool, keep_body: bool) -> anyhow::Result<Reply> {
        let head_len = loop {
            if let Some(n) = find_head_end(&self.buf[self.start..self.end]) {
                break n;
            }
            self.fill().await?;
        };
        let (status, headers, mut len) =
            parse_head(&self.buf[self.start..self.start + head_len - 4])?;
        self.start += head_len;
        if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
            len = 0;
        }
        let mut body = Vec::new();
        let mut need = len;
        while need > 0 {
            if self.start == self.end {
                self.fill().await?;
            }
            let take = need.min(self.end - self.start);
            if keep_body {
                body.extend_from_slice(&self.buf[self.start..self.start + take]);
            }
            self.start += take;
            need -= take;
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        Ok(Reply {
            status,
            headers,
            body,
            body_len: len as u64,
        })
    }
}

/// `GET` `url` on a blocking connection of its own and read the reply, its body into one
/// reused buffer of `read` bytes and dropped: the cheapest way to take a large body in (no
/// readiness polling between reads). [`Reply::body_len`] says how many body bytes came.
///
/// # Errors
/// On I/O errors, a malformed reply, or a body shorter than its `Content-Length`.
pub fn get_discarding(url: &Url, headers: &[(&str, &str)], read: usize) -> anyhow::Result<Reply> {
    use std::io::Read as _;
    let addr = authority(url)?;
    let mut s =
        std::net::TcpStream::connect(&addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true)?;
    s.write_all(&request_head("GET", url, headers, None)?)?;
    let mut buf = vec![0u8; read.max(64 << 10)];
    let mut end = 0;
    let head_len = loop {
        if let Some(n) = find_head_end(&buf[..end]) {
            break n;
        }
        ensure!(
            end < buf.len(),
            "reply head larger than {} bytes",
            buf.len()
        );
        match s.read(&mut buf[end..])? {
            0 => bail!("connection closed by the server"),
            n => end += n,
        }
    };
    let (status, headers, len) = parse_head(&buf[..head_len - 4])?;
    let mut got = (end - head_len).min(len) as u64;
    while got < len as u64 {
        match s.read(&mut buf)? {
            0 => bail!("connection closed after {got} of {len} body bytes"),
            n => got += n as u64,
        }
    }
    Ok(Reply {
        status,
        headers,
        body: Vec::new(),
        body_len: got,
    })
}

/// What a load run measured.
pub struct LoadResult {
    /// Completed requests per second.
    pub rps: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Requests completed.
    pub requests: u64,
    /// Replies other than 2xx.
    pub non_2xx: u64,
    /// Connection errors (each followed by a reconnect).
    pub errors: u64,
}

/// Closed-loop load like wrk: `connections` connections, each sending `method` to `url` again
/// as soon as the previous reply is in, for `duration`.
///
/// # Errors
/// If no connection can be made.
pub async fn load(
    url: &Url,
    method: &str,
    headers: &[(&str, &str)],
    connections: usize,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let addr = authority(url)?;
    let head = request_head(method, url, headers, None)?;
    let head_request = method == "HEAD";
    // Connect everything first, like wrk.
    let mut conns = Vec::new();
    for _ in 0..connections.max(1) {
        conns.push(Conn::connect(&addr).await?);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for mut c in conns {
        let (head, addr) = (head.clone(), addr.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat: Vec<u32> = Vec::with_capacity(1 << 16);
            let (mut non_2xx, mut errors) = (0u64, 0u64);
            // Bounded by time, and by a generous count in case the clock misbehaves.
            for _ in 0..50_000_000u64 {
                let t = Instant::now();
                if t >= deadline {
                    break;
                }
                match c.send(&head, &[], head_request, false).await {
                    Ok(r) => {
                        lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        if !(200..300).contains(&r.status) {
                            non_2xx += 1;
                        }
                    }
                    Err(_) => {
                        errors += 1;
                        match Conn::connect(&addr).await {
                            Ok(n) => c = n,
                            Err(_) => break,
                        }
                    }
                }
            }
            (lat, non_2xx, errors)
        }));
    }
    let mut all: Vec<u32> = Vec::new();
    let (mut non_2xx, mut errors) = (0, 0);
    for t in tasks {
        let (l, n, e) = t.await?;
        all.extend(l);
        non_2xx += n;
        errors += e;
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let q = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let rank = ((p * all.len() as f64).ceil() as usize).clamp(1, all.len());
        f64::from(all[rank - 1]) / 1000.0
    };
    Ok(LoadResult {
        rps: all.len() as f64 / secs,
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        requests: all.len() as u64,
        non_2xx,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Serve one connection: read the request, answer `head`, send `body`, close.
    fn serve_once(head: String, body: Vec<u8>) -> (Url, std::thread::JoinHandle<()>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v2/a/blobs/x", l.local_addr().unwrap())
            .parse()
            .unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut s, &mut buf).unwrap();
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(&body).unwrap();
        });
        (url, t)
    }

    #[test]
    fn get_discarding_counts_the_body_and_refuses_a_short_one() {
        let n = 300_001;
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nX-A: b\r\n\r\n");
        let (url, t) = serve_once(head, vec![9; n]);
        let r = get_discarding(&url, &[], 65536).unwrap();
        assert_eq!((r.status, r.body_len), (200, n as u64));
        assert_eq!(r.header("x-a"), Some("b"));
        t.join().unwrap();

        let head = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n".to_owned();
        let (url, t) = serve_once(head, vec![1; 5]);
        assert!(get_discarding(&url, &[], 65536).is_err());
        t.join().unwrap();
    }

    #[tokio::test]
    async fn reads_head_get_and_many_headers() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut tags = String::new();
            for i in 0..150 {
                tags.push_str(&format!("OCI-Tag: t{i}\r\n"));
            }
            let replies = [
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_owned(),
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_owned(),
                format!("HTTP/1.1 201 Created\r\n{tags}Content-Length: 0\r\n\r\n"),
            ];
            for r in replies {
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(r.as_bytes()).await.unwrap();
            }
        });
        let url: Url = format!("http://{addr}/v2/x").parse().unwrap();
        let mut c = Conn::connect(&addr).await.unwrap();
        let h = request_head("HEAD", &url, &[], None).unwrap();
        let r = c.send(&h, &[], true, true).await.unwrap();
        assert_eq!((r.status, r.body.len()), (200, 0));
        let g = request_head("GET", &url, &[("Accept", "x/y")], None).unwrap();
        let r = c.send(&g, &[], false, true).await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        let p = request_head("PUT", &url, &[], Some(2)).unwrap();
        let r = c.send(&p, b"{}", false, true).await.unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.all("oci-tag").count(), 150);
    }
}
