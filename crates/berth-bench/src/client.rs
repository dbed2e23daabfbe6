//! A small OCI distribution (`/v2`) client: just the calls the benchmarks make, each checking
//! the status code and the digests the registry sends back.

use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context};
use bytes::Bytes;
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LINK};
use reqwest::{Method, Response, StatusCode, Url};

use crate::raw;

/// The OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The Accept header a Docker client sends for manifests.
pub const DOCKER_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// How long one small request may take.
const SHORT: Duration = Duration::from_secs(60);
/// How long a whole large transfer may take.
const LONG: Duration = Duration::from_secs(900);

/// A registry at one base URL.
#[derive(Clone)]
pub struct Registry {
    base: Url,
    http: reqwest::Client,
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Fail unless `resp` has status `want`; the error carries the registry's message.
pub async fn expect(resp: Response, want: StatusCode, what: &str) -> anyhow::Result<Response> {
    if resp.status() == want {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    bail!(
        "{what}: expected {want}, got {status}: {}",
        body.chars().take(300).collect::<String>()
    )
}

fn check_digest_header(h: &HeaderMap, want: &str, what: &str) -> anyhow::Result<()> {
    check_digest(header(h, "docker-content-digest"), want, what)
}

fn check_digest(got: Option<&str>, want: &str, what: &str) -> anyhow::Result<()> {
    match got {
        Some(d) if d != want => bail!("{what}: registry says digest {d}, we computed {want}"),
        _ => Ok(()),
    }
}

impl Registry {
    /// A client for the registry at `url` (e.g. `http://127.0.0.1:5000`).
    ///
    /// # Errors
    /// If `url` does not parse.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let base = Url::parse(url).with_context(|| format!("registry URL {url:?}"))?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(256)
            .timeout(LONG)
            .build()?;
        Ok(Self { base, http })
    }

    /// `path` (starting with `/v2/`) on this registry.
    pub fn url(&self, path: &str) -> anyhow::Result<Url> {
        Ok(self.base.join(path)?)
    }

    fn location(&self, resp: &Response) -> anyhow::Result<Url> {
        let loc = header(resp.headers(), "location")
            .ok_or_else(|| anyhow!("no Location header in the {} reply", resp.status()))?;
        Ok(self.base.join(loc)?)
    }

    /// Whether `POST .../blobs/uploads/?digest=` with a body stores the blob in one request
    /// (OCI spec "single POST"). Probed with a tiny unique blob, which is left stored.
    ///
    /// # Errors
    /// On transport errors or replies other than 201 and 202.
    pub async fn supports_single_post(&self, repo: &str) -> anyhow::Result<bool> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        let body = Bytes::from(format!("berth-bench probe {nanos}"));
        let digest = crate::data::digest(&body);
        let mut url = self.url(&format!("/v2/{repo}/blobs/uploads/"))?;
        url.query_pairs_mut().append_pair("digest", &digest);
        let resp = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(body.clone())
            .timeout(SHORT)
            .send()
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                // The registry opened a session and ignored the body: finish it properly.
                let loc = self.location(&resp)?;
                self.finish_with_body(loc, &digest, body).await?;
                Ok(false)
            }
            s => bail!("probing single-POST upload: unexpected {s}"),
        }
    }

    async fn start_session(&self, repo: &str) -> anyhow::Result<Url> {
        let resp = self
            .http
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/"))?)
            .header(CONTENT_LENGTH, "0")
            .timeout(SHORT)
            .send()
            .await?;
        let resp = expect(resp, StatusCode::ACCEPTED, "starting an upload").await?;
        self.location(&resp)
    }

    async fn finish_with_body(
        &self,
        mut loc: Url,
        digest: &str,
        body: Bytes,
    ) -> anyhow::Result<()> {
        loc.query_pairs_mut().append_pair("digest", digest);
        let resp = self
            .http
            .put(loc)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .send()
            .await?;
        let resp = expect(resp, StatusCode::CREATED, "finishing an upload").await?;
        check_digest_header(resp.headers(), digest, "finishing an upload")
    }

    /// Push `body`, whose digest is `digest`, in one request if `single_post`, otherwise as
    /// `POST` (empty) then `PUT ?digest=` with the body: the fastest each registry offers.
    ///
    /// # Errors
    /// On transport errors or unexpected replies (including the registry disagreeing on the digest).
    pub async fn push_monolithic(
        &self,
        repo: &str,
        digest: &str,
        body: Bytes,
        single_post: bool,
    ) -> anyhow::Result<()> {
        if !single_post {
            let loc = self.start_session(repo).await?;
            return self.finish_with_body(loc, digest, body).await;
        }
        let mut url = self.url(&format!("/v2/{repo}/blobs/uploads/"))?;
        url.query_pairs_mut().append_pair("digest", digest);
        let resp = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .send()
            .await?;
        let resp = expect(resp, StatusCode::CREATED, "single-POST upload").await?;
        check_digest_header(resp.headers(), digest, "single-POST upload")
    }

    /// Push `body` as `POST`, one `PATCH` per `chunk` bytes (with `Content-Range`), then an
    /// empty `PUT ?digest=`.
    ///
    /// # Errors
    /// On transport errors or unexpected replies.
    pub async fn push_chunked(
        &self,
        repo: &str,
        digest: &str,
        body: Bytes,
        chunk: usize,
    ) -> anyhow::Result<()> {
        let mut loc = self.start_session(repo).await?;
        let mut off = 0usize;
        while off < body.len() {
            let end = (off + chunk.max(1)).min(body.len());
            let resp = self
                .http
                .patch(loc.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_RANGE, format!("{off}-{}", end - 1))
                .body(body.slice(off..end))
                .send()
                .await?;
            let resp = expect(resp, StatusCode::ACCEPTED, "uploading a chunk").await?;
            let want = format!("0-{}", end - 1);
            match header(resp.headers(), "range") {
                Some(r) if r != want => {
                    bail!("after a chunk the registry has {r}, expected {want}")
                }
                _ => {}
            }
            loc = self.location(&resp)?;
            off = end;
        }
        loc.query_pairs_mut().append_pair("digest", digest);
        let resp = self
            .http
            .put(loc)
            .header(CONTENT_LENGTH, "0")
            .timeout(SHORT)
            .send()
            .await?;
        let resp = expect(resp, StatusCode::CREATED, "closing a chunked upload").await?;
        check_digest_header(resp.headers(), digest, "closing a chunked upload")
    }

    /// `HEAD` a blob: its size, checking the digest header.
    ///
    /// # Errors
    /// If the blob is missing.
    pub async fn blob_size(&self, repo: &str, digest: &str) -> anyhow::Result<u64> {
        let resp = self
            .http
            .head(self.url(&format!("/v2/{repo}/blobs/{digest}"))?)
            .timeout(SHORT)
            .send()
            .await?;
        let resp = expect(resp, StatusCode::OK, "HEAD blob").await?;
        check_digest_header(resp.headers(), digest, "HEAD blob")?;
        header(resp.headers(), "content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("HEAD blob: no Content-Length"))
    }

    /// Start a `GET` of a blob, optionally with a `Range` header; checks the status.
    ///
    /// # Errors
    /// On transport errors or a status other than 200 (206 with a range).
    pub async fn get_blob(
        &self,
        repo: &str,
        digest: &str,
        range: Option<(u64, u64)>,
    ) -> anyhow::Result<Response> {
        let mut req = self
            .http
            .get(self.url(&format!("/v2/{repo}/blobs/{digest}"))?);
        let want = match range {
            Some((s, e)) => {
                req = req.header("range", format!("bytes={s}-{e}"));
                StatusCode::PARTIAL_CONTENT
            }
            None => StatusCode::OK,
        };
        let resp = expect(req.send().await?, want, "GET blob").await?;
        check_digest_header(resp.headers(), digest, "GET blob")?;
        Ok(resp)
    }

    /// `GET` a blob on a raw blocking connection whose reads take up to `read` bytes at once
    /// into one buffer, dropping the bytes; checks the status, `Docker-Content-Digest` and that
    /// `Content-Length` is `size`. Returns the body bytes received. For timed pulls whose bytes
    /// another pull has already hashed.
    ///
    /// # Errors
    /// On transport errors or unexpected replies.
    pub async fn pull_counting(
        &self,
        repo: &str,
        digest: &str,
        size: u64,
        read: usize,
    ) -> anyhow::Result<u64> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"))?;
        let reply =
            tokio::task::spawn_blocking(move || raw::get_discarding(&url, &[], read)).await??;
        if reply.status != StatusCode::OK.as_u16() {
            bail!(
                "GET blob: expected 200 OK, got {}: {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            );
        }
        check_digest(reply.header("docker-content-digest"), digest, "GET blob")?;
        let len = reply.header("content-length");
        ensure!(
            len == Some(size.to_string().as_str()),
            "Content-Length {len:?}, expected {size}"
        );
        Ok(reply.body_len)
    }

    /// `PUT` a manifest at `reference` (a tag or digest), with extra `?tag=` parameters.
    /// Returns the tags the registry confirmed in `OCI-Tag` headers.
    ///
    /// # Errors
    /// On unexpected replies or a digest different from the body's.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        tags: &[String],
        body: Bytes,
    ) -> anyhow::Result<Vec<String>> {
        let digest = crate::data::digest(&body);
        let mut url = self.url(&format!("/v2/{repo}/manifests/{reference}"))?;
        if !tags.is_empty() {
            let mut q = url.query_pairs_mut();
            for t in tags {
                q.append_pair("tag", t);
            }
        }
        let resp = self
            .http
            .put(url)
            .header(CONTENT_TYPE, OCI_MANIFEST)
            .body(body)
            .timeout(SHORT)
            .send()
            .await?;
        let resp = expect(resp, StatusCode::CREATED, "PUT manifest").await?;
        check_digest_header(resp.headers(), &digest, "PUT manifest")?;
        Ok(resp
            .headers()
            .get_all("oci-tag")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_owned())
            .collect())
    }

    /// `GET` or `HEAD` a manifest with the Docker Accept header; checks the digest of the body
    /// (GET) or the digest header (HEAD) against `digest`.
    ///
    /// # Errors
    /// On any mismatch.
    pub async fn check_manifest(
        &self,
        repo: &str,
        reference: &str,
        digest: &str,
        head: bool,
    ) -> anyhow::Result<()> {
        let method = if head { Method::HEAD } else { Method::GET };
        let resp = self
            .http
            .request(
                method,
                self.url(&format!("/v2/{repo}/manifests/{reference}"))?,
            )
            .header(ACCEPT, DOCKER_ACCEPT)
            .timeout(SHORT)
            .send()
            .await?;
        let resp = expect(resp, StatusCode::OK, "GET manifest").await?;
        if header(resp.headers(), "docker-content-digest") != Some(digest) {
            bail!("manifest {reference}: missing or wrong Docker-Content-Digest");
        }
        if !head {
            let body = resp.bytes().await?;
            if crate::data::digest(&body) != digest {
                bail!("manifest {reference}: body does not hash to {digest}");
            }
        }
        Ok(())
    }

    /// `GET` one page of tags; returns the tags and the next page's URL from `Link`.
    ///
    /// # Errors
    /// On unexpected replies or malformed JSON.
    pub async fn tags_page(&self, url: Url) -> anyhow::Result<(Vec<String>, Option<Url>)> {
        let resp = self.http.get(url).timeout(SHORT).send().await?;
        let resp = expect(resp, StatusCode::OK, "GET tags/list").await?;
        let next = match header(resp.headers(), LINK.as_str()) {
            Some(l) => Some(parse_link(l).and_then(|u| Ok(self.base.join(&u)?))?),
            None => None,
        };
        let v: serde_json::Value = serde_json::from_slice(&resp.bytes().await?)?;
        let tags = v["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok((tags, next))
    }
}

/// The target of a `Link: <url>; rel="next"` header.
pub fn parse_link(h: &str) -> anyhow::Result<String> {
    let start = h.find('<').ok_or_else(|| anyhow!("bad Link {h:?}"))?;
    let end = h[start..]
        .find('>')
        .ok_or_else(|| anyhow!("bad Link {h:?}"))?;
    if !h[start + end..].contains("rel=\"next\"") && !h[start + end..].contains("rel=next") {
        bail!("Link {h:?} is not rel=next");
    }
    Ok(h[start + 1..start + end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links() {
        assert_eq!(
            parse_link("</v2/a/tags/list?n=2&last=b>; rel=\"next\"").unwrap(),
            "/v2/a/tags/list?n=2&last=b"
        );
        assert!(parse_link("nothing").is_err());
        assert!(parse_link("</x>; rel=\"prev\"").is_err());
    }
}
