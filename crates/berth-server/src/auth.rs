//! Who is calling: credentials on `/v2` (bearer tokens, or basic credentials for tools such
//! as curl), the challenges that send clients to the token service, and the token service
//! itself (`/service/token`, the Docker registry token specification).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use berth_core::access::Scope;
use berth_core::{Actor, Error, Principal};

use crate::error::ApiError;
use crate::route::OciRoute;
use crate::{AppState, AuthState};

/// What the client sent in `Authorization`.
pub(crate) enum Credentials {
    /// Nothing.
    None,
    /// `Bearer <token>`.
    Bearer(String),
    /// `Basic base64(user:password)`.
    Basic(String, String),
}

/// Read the `Authorization` header.
pub(crate) fn credentials(headers: &HeaderMap) -> Credentials {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Credentials::None;
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Credentials::Bearer(rest.to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        if let Some((user, pass)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
            return Credentials::Basic(user.to_owned(), pass.to_owned());
        }
    }
    // Anything else is as good as no credentials: the client gets a challenge.
    Credentials::None
}

/// The client's address, when the server was started with connection info.
pub(crate) fn source(req_ext: &axum::http::Extensions) -> Option<IpAddr> {
    req_ext
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip())
}

fn realm(auth: &AuthState, headers: &HeaderMap) -> String {
    if let Some(r) = &auth.realm {
        return r.clone();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if auth.tls { "https" } else { "http" };
    format!("{scheme}://{host}/service/token")
}

/// The `WWW-Authenticate` value sending a client to the token service for `scope`.
pub(crate) fn challenge(
    auth: &AuthState,
    headers: &HeaderMap,
    scope: Option<&Scope>,
    error: Option<&str>,
) -> Option<HeaderValue> {
    let mut v = format!(
        "Bearer realm=\"{}\",service=\"{}\"",
        realm(auth, headers),
        auth.access.settings().service
    );
    if let Some(s) = scope {
        v.push_str(&format!(",scope=\"{s}\""));
    }
    if let Some(e) = error {
        v.push_str(&format!(",error=\"{e}\""));
    }
    HeaderValue::from_str(&v).ok()
}

/// The caller of a `/v2` request, or the response refusing it.
pub(crate) async fn v2_actor(
    state: &AppState,
    route: &OciRoute,
    method: &Method,
    headers: &HeaderMap,
    credentials: Credentials,
    source: Option<IpAddr>,
) -> Result<Actor, Response> {
    let Some(auth) = &state.auth else {
        return Ok(Actor::system().from_source(source));
    };
    let refuse = |e: Error, error: Option<&str>| {
        let mut resp = ApiError::Core(e).into_response();
        if let Some(v) = challenge(auth, headers, route.scope(method).as_ref(), error) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        resp
    };
    match credentials {
        Credentials::Bearer(token) => {
            auth.access
                .actor_from_token(&token, source)
                .await
                .map_err(|e| match e {
                    Error::Unauthorized(_) => refuse(e, Some("invalid_token")),
                    other => ApiError::Core(other).into_response(),
                })
        }
        Credentials::Basic(user, pass) => {
            let principal = auth
                .access
                .authenticate(&user, &pass, source)
                .await
                .map_err(|e| match e {
                    Error::Unauthorized(_) => refuse(e, None),
                    other => ApiError::Core(other).into_response(),
                })?;
            let asked: Vec<Scope> = route.scope(method).into_iter().collect();
            let granted = auth
                .access
                .grant(&principal, &asked)
                .await
                .map_err(|e| ApiError::Core(e).into_response())?;
            Ok(Actor::with_grants(principal, granted, source))
        }
        Credentials::None if matches!(route, OciRoute::Base) => Err(refuse(
            Error::Unauthorized("sign in to use this registry".into()),
            None,
        )),
        Credentials::None => Ok(Actor::anonymous(source)),
    }
}

/// Add the challenge to a `/v2` response that refused the caller for lack of a grant.
pub(crate) fn add_challenge(
    state: &AppState,
    route: &OciRoute,
    method: &Method,
    headers: &HeaderMap,
    had_token: bool,
    resp: &mut Response,
) {
    let Some(auth) = &state.auth else { return };
    if resp.status() != StatusCode::UNAUTHORIZED {
        return;
    }
    let error = had_token.then_some("insufficient_scope");
    if let Some(v) = challenge(auth, headers, route.scope(method).as_ref(), error) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
}

/// The parameters of a token request, from the query (`GET`) or the form (`POST`).
#[derive(Default)]
struct TokenRequest {
    service: Option<String>,
    scopes: Vec<String>,
    grant_type: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

impl TokenRequest {
    fn parse(raw: &[u8]) -> Self {
        let mut r = TokenRequest::default();
        for (k, v) in form_urlencoded::parse(raw) {
            match &*k {
                "service" => r.service = Some(v.into_owned()),
                "scope" => r.scopes.push(v.into_owned()),
                "grant_type" => r.grant_type = Some(v.into_owned()),
                "username" => r.username = Some(v.into_owned()),
                "password" => r.password = Some(v.into_owned()),
                _ => {}
            }
        }
        r
    }
}

/// Largest token request form accepted.
const MAX_FORM: usize = 64 * 1024;

/// `GET /service/token` (Docker's token flow, basic credentials or none) and
/// `POST /service/token` (OAuth2 password grant, as containerd sends).
pub(crate) async fn token_endpoint(State(state): State<Arc<AppState>>, req: Request) -> Response {
    match issue(&state, req).await {
        Ok(r) => r,
        Err(e) => {
            let mut resp = ApiError::Core(e).into_response();
            if resp.status() == StatusCode::UNAUTHORIZED {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"berth\""),
                );
            }
            resp
        }
    }
}

async fn issue(state: &AppState, req: Request) -> Result<Response, Error> {
    let Some(auth) = &state.auth else {
        return Err(Error::Unsupported(
            "access control is off: this registry needs no token".into(),
        ));
    };
    let source = source(req.extensions());
    let (parts, body) = req.into_parts();
    let (params, creds) = if parts.method == Method::POST {
        let bytes = axum::body::to_bytes(Body::new(body), MAX_FORM)
            .await
            .map_err(|_| Error::Invalid("the token request form is too large".into()))?;
        let p = TokenRequest::parse(&bytes);
        if p.grant_type.as_deref() != Some("password") {
            return Err(Error::Invalid(
                "unsupported grant_type: only \"password\" is supported".into(),
            ));
        }
        let creds = match (&p.username, &p.password) {
            (Some(u), Some(pw)) => Credentials::Basic(u.clone(), pw.clone()),
            _ => Credentials::None,
        };
        (p, creds)
    } else {
        let p = TokenRequest::parse(parts.uri.query().unwrap_or("").as_bytes());
        (p, credentials(&parts.headers))
    };
    if let Some(service) = &params.service {
        if *service != auth.access.settings().service {
            return Err(Error::Invalid(format!(
                "this token service issues tokens for {:?}, not {service:?}",
                auth.access.settings().service
            )));
        }
    }
    let principal = match creds {
        Credentials::Basic(user, pass) => auth.access.login(&user, &pass, source).await?,
        Credentials::None => Principal::Anonymous,
        Credentials::Bearer(_) => {
            return Err(Error::Unauthorized(
                "the token service takes basic credentials".into(),
            ))
        }
    };
    let asked = Scope::parse_all(params.scopes.iter().map(String::as_str));
    let t = auth.access.issue_token(&principal, &asked).await?;
    let issued_at = crate::api::time(
        i64::try_from(t.issued_at)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000),
    );
    let body = if parts.method == Method::POST {
        serde_json::json!({
            "access_token": t.token,
            "token_type": "Bearer",
            "expires_in": t.expires_in,
            "issued_at": issued_at,
            "scope": t.granted.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "),
        })
    } else {
        serde_json::json!({
            "token": t.token,
            "access_token": t.token,
            "expires_in": t.expires_in,
            "issued_at": issued_at,
        })
    };
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_credentials() {
        let mut h = HeaderMap::new();
        assert!(matches!(credentials(&h), Credentials::None));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert!(matches!(credentials(&h), Credentials::Bearer(t) if t == "abc"));
        // "alice:pa:ss" — the password may hold colons.
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YWxpY2U6cGE6c3M="),
        );
        assert!(
            matches!(credentials(&h), Credentials::Basic(u, p) if u == "alice" && p == "pa:ss")
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert!(matches!(credentials(&h), Credentials::None));
    }
}
