//! The `/v2` handlers: each extracts what it needs, calls the registry, shapes the reply.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use berth_core::{Actor, BodyLength, Error, Fetch, UploadState};
use berth_oci::range::{parse_content_range, parse_range};
use berth_oci::{Digest, Reference, RepoName, Tag};
use berth_store::{ByteStream, StoreError};
use bytes::Bytes;
use futures::TryStreamExt;

use crate::error::ApiError;
use crate::route::OciRoute;
use crate::AppState;

type Reply = Result<Response, ApiError>;

/// The query string as (key, value) pairs, percent-decoded.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(q: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(q.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn reply(status: StatusCode) -> axum::http::response::Builder {
    Response::builder().status(status)
}

fn finish(b: axum::http::response::Builder, body: Body) -> Reply {
    b.body(body)
        .map_err(|e| ApiError::Core(Error::Internal(e.to_string())))
}

fn parse_digest(s: &str) -> Result<Digest, ApiError> {
    s.parse::<Digest>()
        .map_err(|e| Error::DigestMalformed(format!("invalid digest {s:?}: {e}")).into())
}

fn body_length(headers: &HeaderMap) -> Result<BodyLength, ApiError> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(BodyLength::Unknown),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .map(BodyLength::Exact)
            .ok_or_else(|| Error::SizeInvalid("invalid Content-Length".into()).into()),
    }
}

fn body_stream(body: Body) -> ByteStream {
    Box::pin(
        body.into_data_stream()
            .map_err(|e| StoreError::Body(e.to_string())),
    )
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn content_range(headers: &HeaderMap) -> Result<Option<(u64, u64)>, ApiError> {
    header_str(headers, header::CONTENT_RANGE)
        .map(|h| {
            parse_content_range(h)
                .map_err(|_| Error::UploadInvalid(format!("malformed Content-Range {h:?}")).into())
        })
        .transpose()
}

fn upload_location(repo: &RepoName, id: &str) -> String {
    format!("/v2/{repo}/blobs/uploads/{id}")
}

fn upload_reply(
    status: StatusCode,
    repo: &RepoName,
    u: &UploadState,
) -> axum::http::response::Builder {
    // Distribution sends 0-0 for an empty upload; clients expect that form.
    let last = u.offset.saturating_sub(1);
    reply(status)
        .header(header::LOCATION, hv(&upload_location(repo, &u.id)))
        .header("docker-upload-uuid", hv(&u.id))
        .header(header::RANGE, hv(&format!("0-{last}")))
        .header(header::CONTENT_LENGTH, "0")
}

fn blob_created(repo: &RepoName, digest: &Digest) -> Reply {
    finish(
        reply(StatusCode::CREATED)
            .header(header::LOCATION, hv(&format!("/v2/{repo}/blobs/{digest}")))
            .header("docker-content-digest", hv(&digest.to_string()))
            .header(header::CONTENT_LENGTH, "0"),
        Body::empty(),
    )
}

/// Dispatch a parsed route and method to its handler.
pub(crate) async fn dispatch(
    state: &AppState,
    actor: &Actor,
    route: OciRoute,
    method: &Method,
    query: Query,
    headers: &HeaderMap,
    body: Body,
) -> Reply {
    let head = method == Method::HEAD;
    match (route, method.clone()) {
        // Whether the caller must sign in first is decided before dispatch.
        (OciRoute::Base, Method::GET | Method::HEAD) => finish(
            reply(StatusCode::OK).header(header::CONTENT_TYPE, "application/json"),
            Body::from(if head { "" } else { "{}" }),
        ),
        (OciRoute::Catalog, Method::GET) => catalog(state, actor, &query).await,
        (OciRoute::Tags(repo), Method::GET) => tags(state, actor, &repo, &query).await,
        (OciRoute::Manifest(repo, r), Method::GET | Method::HEAD) => {
            get_manifest(state, actor, &repo, &r, headers, head).await
        }
        (OciRoute::Manifest(repo, r), Method::PUT) => {
            put_manifest(state, actor, &repo, &r, &query, headers, body).await
        }
        (OciRoute::Manifest(repo, r), Method::DELETE) => {
            state.registry.delete_manifest(actor, &repo, &r).await?;
            finish(
                reply(StatusCode::ACCEPTED).header(header::CONTENT_LENGTH, "0"),
                Body::empty(),
            )
        }
        (OciRoute::Blob(repo, d), Method::GET | Method::HEAD) => {
            get_blob(state, actor, &repo, &d, headers, head).await
        }
        (OciRoute::Blob(repo, d), Method::DELETE) => {
            state.registry.delete_blob(actor, &repo, &d).await?;
            finish(
                reply(StatusCode::ACCEPTED).header(header::CONTENT_LENGTH, "0"),
                Body::empty(),
            )
        }
        (OciRoute::UploadStart(repo), Method::POST) => {
            start_upload(state, actor, &repo, &query, headers, body).await
        }
        (OciRoute::Upload(repo, id), Method::GET) => {
            let u = state.registry.upload_status(actor, &repo, &id).await?;
            finish(
                upload_reply(StatusCode::NO_CONTENT, &repo, &u),
                Body::empty(),
            )
        }
        (OciRoute::Upload(repo, id), Method::PATCH) => {
            let range = content_range(headers)?;
            let len = body_length(headers)?;
            let u = state
                .registry
                .append_chunk(actor, &repo, &id, range, body_stream(body), len)
                .await?;
            finish(upload_reply(StatusCode::ACCEPTED, &repo, &u), Body::empty())
        }
        (OciRoute::Upload(repo, id), Method::PUT) => {
            finish_upload(state, actor, &repo, &id, &query, headers, body).await
        }
        (OciRoute::Upload(repo, id), Method::DELETE) => {
            state.registry.cancel_upload(actor, &repo, &id).await?;
            finish(reply(StatusCode::NO_CONTENT), Body::empty())
        }
        (OciRoute::Referrers(repo, d), Method::GET) => {
            referrers(state, actor, &repo, &d, &query).await
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

fn page_params(query: &Query) -> Result<(Option<usize>, Option<&str>), ApiError> {
    let n = query
        .get("n")
        .map(|n| {
            n.parse::<usize>()
                .map_err(|_| ApiError::Core(Error::PaginationInvalid(format!("invalid n {n:?}"))))
        })
        .transpose()?;
    Ok((n, query.get("last").filter(|l| !l.is_empty())))
}

fn link(path: &str, limit: usize, last: &str) -> String {
    let last: String = form_urlencoded::byte_serialize(last.as_bytes()).collect();
    format!("<{path}?n={limit}&last={last}>; rel=\"next\"")
}

async fn catalog(state: &AppState, actor: &Actor, query: &Query) -> Reply {
    let (n, last) = page_params(query)?;
    let page = state.registry.catalog(actor, n, last).await?;
    let json = serde_json::json!({ "repositories": page.names });
    let mut b = reply(StatusCode::OK).header(header::CONTENT_TYPE, "application/json");
    if let (true, Some(l)) = (page.more, page.names.last()) {
        b = b.header(header::LINK, hv(&link("/v2/_catalog", page.limit, l)));
    }
    finish(b, Body::from(json.to_string()))
}

async fn tags(state: &AppState, actor: &Actor, repo: &RepoName, query: &Query) -> Reply {
    let (n, last) = page_params(query)?;
    let page = state.registry.list_tags(actor, repo, n, last).await?;
    let json = serde_json::json!({ "name": repo.as_str(), "tags": page.names });
    let mut b = reply(StatusCode::OK).header(header::CONTENT_TYPE, "application/json");
    if let (true, Some(l)) = (page.more, page.names.last()) {
        b = b.header(
            header::LINK,
            hv(&link(&format!("/v2/{repo}/tags/list"), page.limit, l)),
        );
    }
    finish(b, Body::from(json.to_string()))
}

/// The media types listed in `Accept` headers, parameters dropped.
fn accepted(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.split(';').next().unwrap_or("").trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

async fn get_manifest(
    state: &AppState,
    actor: &Actor,
    repo: &RepoName,
    r: &Reference,
    headers: &HeaderMap,
    head: bool,
) -> Reply {
    let m = state
        .registry
        .get_manifest(
            actor,
            repo,
            r,
            &accepted(headers),
            if head { Fetch::Head } else { Fetch::Get },
        )
        .await?;
    let digest = m.digest.to_string();
    let b = reply(StatusCode::OK)
        .header(header::CONTENT_TYPE, hv(&m.media_type))
        .header(header::CONTENT_LENGTH, m.content.len())
        .header("docker-content-digest", hv(&digest))
        .header(header::ETAG, hv(&format!("\"{digest}\"")));
    finish(
        b,
        if head {
            Body::empty()
        } else {
            Body::from(m.content)
        },
    )
}

async fn put_manifest(
    state: &AppState,
    actor: &Actor,
    repo: &RepoName,
    r: &Reference,
    query: &Query,
    headers: &HeaderMap,
    body: Body,
) -> Reply {
    let limit = state.registry.limits().manifest_max_bytes;
    let too_large = || Error::TooLarge(format!("manifest is larger than the {limit} byte limit"));
    if let BodyLength::Exact(n) = body_length(headers)? {
        if n > DRAIN_FACTOR * limit as u64 {
            return Err(too_large().into());
        }
    }
    let bytes = read_limited(body, limit).await?.ok_or_else(too_large)?;
    let extra: Vec<Tag> = query
        .all("tag")
        .map(|t| {
            t.parse::<Tag>()
                .map_err(|_| ApiError::Core(Error::TagInvalid(format!("invalid tag {t:?}"))))
        })
        .collect::<Result<_, _>>()?;
    let content_type = header_str(headers, header::CONTENT_TYPE);
    let put = state
        .registry
        .put_manifest(actor, repo, r, &extra, content_type, bytes)
        .await?;
    let digest = put.digest.to_string();
    let mut b = reply(StatusCode::CREATED)
        .header(
            header::LOCATION,
            hv(&format!("/v2/{repo}/manifests/{digest}")),
        )
        .header("docker-content-digest", hv(&digest))
        .header(header::CONTENT_LENGTH, "0");
    if let Some(s) = &put.subject {
        b = b.header("oci-subject", hv(&s.to_string()));
    }
    if !put.tags.is_empty() {
        // One field line with the tags comma-separated (RFC 9110 list syntax; tags cannot
        // contain commas): a line per tag would pass the 100-header limit of common HTTP
        // clients (hyper, reqwest) when a push names many tags.
        let tags: Vec<&str> = put.tags.iter().map(Tag::as_str).collect();
        b = b.header("oci-tag", hv(&tags.join(", ")));
    }
    finish(b, Body::empty())
}

/// How far past a size limit a body is still read (and discarded), so that the client gets
/// the 413 answer instead of a connection reset in the middle of sending.
const DRAIN_FACTOR: u64 = 4;

/// Read a body of at most `limit` bytes; `None` if it is larger.
async fn read_limited(body: Body, limit: usize) -> Result<Option<Bytes>, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    let mut total = 0u64;
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        let chunk =
            chunk.map_err(|e| Error::SizeInvalid(format!("reading the body failed: {e}")))?;
        total += chunk.len() as u64;
        if total <= limit as u64 {
            buf.extend_from_slice(&chunk);
        } else if total > DRAIN_FACTOR * limit as u64 {
            break;
        }
    }
    Ok((total <= limit as u64).then(|| buf.freeze()))
}

async fn get_blob(
    state: &AppState,
    actor: &Actor,
    repo: &RepoName,
    d: &Digest,
    headers: &HeaderMap,
    head: bool,
) -> Reply {
    let common = |b: axum::http::response::Builder| {
        b.header("docker-content-digest", hv(&d.to_string()))
            .header(header::ETAG, hv(&format!("\"{d}\"")))
            .header(header::ACCEPT_RANGES, "bytes")
            .header(header::CONTENT_TYPE, "application/octet-stream")
    };
    if head {
        let size = state.registry.stat_blob(actor, repo, d).await?;
        return finish(
            common(reply(StatusCode::OK)).header(header::CONTENT_LENGTH, size),
            Body::empty(),
        );
    }
    // Every GET is redirected, a ranged one too: the client sends its Range header again to
    // the new location (as Distribution's redirects expect), and the object store answers it.
    if let Some(url) = state.registry.blob_url(actor, repo, d).await? {
        return blob_redirect(&url, d);
    }
    let range = match header_str(headers, header::RANGE) {
        // A malformed Range may be ignored (RFC 9110); serve the whole blob.
        Some(h) => parse_range(h).ok().flatten(),
        None => None,
    };
    let read = state.registry.read_blob(actor, repo, d, range).await?;
    let (len, b) = match read.range {
        Some((s, e)) => (
            e - s + 1,
            reply(StatusCode::PARTIAL_CONTENT).header(
                header::CONTENT_RANGE,
                hv(&format!("bytes {s}-{e}/{}", read.size)),
            ),
        ),
        None => (read.size, reply(StatusCode::OK)),
    };
    metrics::counter!("berth_blob_bytes_sent_total").increment(len);
    let stream = read.content.into_stream().map_err(Error::from)?;
    finish(
        common(b).header(header::CONTENT_LENGTH, len),
        Body::from_stream(stream),
    )
}

/// `307 Temporary Redirect` to a presigned object-store URL of blob `d`.
fn blob_redirect(url: &str, d: &Digest) -> Reply {
    let location = HeaderValue::from_str(url)
        .map_err(|e| Error::Internal(format!("presigned URL is not a header value: {e}")))?;
    metrics::counter!("berth_blob_redirects_total").increment(1);
    finish(
        reply(StatusCode::TEMPORARY_REDIRECT)
            .header(header::LOCATION, location)
            .header("docker-content-digest", hv(&d.to_string()))
            .header(header::CONTENT_LENGTH, "0"),
        Body::empty(),
    )
}

async fn start_upload(
    state: &AppState,
    actor: &Actor,
    repo: &RepoName,
    query: &Query,
    headers: &HeaderMap,
    body: Body,
) -> Reply {
    if let Some(mount) = query.get("mount") {
        let d = parse_digest(mount)?;
        let from = query
            .get("from")
            .filter(|f| !f.is_empty())
            .map(|f| {
                f.parse::<RepoName>().map_err(|e| {
                    ApiError::Core(Error::NameInvalid(format!("invalid from {f:?}: {e}")))
                })
            })
            .transpose()?;
        if state
            .registry
            .mount_blob(actor, repo, &d, from.as_ref())
            .await?
            .is_some()
        {
            return blob_created(repo, &d);
        }
        // Not mountable: fall through to an ordinary upload session, as the spec says.
    } else if let Some(d) = query.get("digest") {
        let d = parse_digest(d)?;
        let len = body_length(headers)?;
        state
            .registry
            .upload_blob(actor, repo, &d, body_stream(body), len)
            .await?;
        return blob_created(repo, &d);
    }
    let u = state.registry.start_upload(actor, repo).await?;
    let min = state.registry.limits().chunk_min_length;
    let b = upload_reply(StatusCode::ACCEPTED, repo, &u).header("oci-chunk-min-length", min);
    finish(b, Body::empty())
}

async fn finish_upload(
    state: &AppState,
    actor: &Actor,
    repo: &RepoName,
    id: &str,
    query: &Query,
    headers: &HeaderMap,
    body: Body,
) -> Reply {
    let d = query.get("digest").ok_or_else(|| {
        ApiError::Core(Error::DigestMalformed(
            "the digest query parameter is required".into(),
        ))
    })?;
    let d = parse_digest(d)?;
    let range = content_range(headers)?;
    let len = body_length(headers)?;
    let has_body = !matches!(len, BodyLength::Exact(0)) || range.is_some();
    let body = has_body.then(|| body_stream(body));
    state
        .registry
        .finish_upload(actor, repo, id, &d, range, body, len)
        .await?;
    blob_created(repo, &d)
}

async fn referrers(
    state: &AppState,
    actor: &Actor,
    repo: &RepoName,
    d: &Digest,
    query: &Query,
) -> Reply {
    let filter = query.get("artifactType").filter(|t| !t.is_empty());
    let index = state.registry.referrers(actor, repo, d, filter).await?;
    let mut b = reply(StatusCode::OK).header(header::CONTENT_TYPE, berth_oci::media::OCI_INDEX);
    if filter.is_some() {
        b = b.header("oci-filters-applied", "artifactType");
    }
    finish(b, Body::from(index))
}
