//! Who calls the management API: HTTP Basic credentials (users, and robots as
//! `robot$...`), or a browser session opened by `POST /c/login`.
//!
//! CSRF: a request authenticated by the session cookie with an unsafe method (anything but
//! GET, HEAD, OPTIONS) must carry the session's token in `X-Harbor-CSRF-Token`; the token
//! comes back in that header from the login and from every cookie-authenticated GET.
//!
//! Basic-authenticated requests need no token. A browser does replay basic credentials it
//! has cached for an origin on a cross-site request, so they are not immune by nature; what
//! protects them is that every unsafe endpoint here takes a JSON body or a method other
//! than POST, which a cross-site page can send only after a CORS preflight that Berth never
//! approves, and, as a second line, an unsafe request that a browser marks as cross-site
//! (`Sec-Fetch-Site: cross-site`/`same-site`, or an `Origin` whose host is not the
//! request's `Host`) is refused whatever its credentials. Command-line clients send neither
//! header and are unaffected.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_core::access::manage::{Caller, SESSION_TTL};
use berth_core::{Admin, Error, Principal};
use subtle::ConstantTimeEq as _;

use super::error::HarborError;
use crate::auth::{credentials, source, Credentials};
use crate::AppState;

/// The session cookie's name, as Harbor's.
pub const SESSION_COOKIE: &str = "sid";
/// The CSRF header, as Harbor's.
pub const CSRF_HEADER: &str = "x-harbor-csrf-token";

/// Where the authenticator leaves the CSRF token for the response (set by [`echo_csrf`]).
#[derive(Clone, Default)]
struct CsrfSlot(Arc<Mutex<Option<String>>>);

/// Put the session's CSRF token on responses to cookie-authenticated GETs.
pub async fn echo_csrf(mut req: Request<Body>, next: Next) -> Response {
    let slot = CsrfSlot::default();
    req.extensions_mut().insert(slot.clone());
    let mut resp = next.run(req).await;
    let token = slot.0.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(v) = token.and_then(|t| HeaderValue::from_str(&t).ok()) {
        resp.headers_mut().insert(CSRF_HEADER, v);
    }
    resp
}

/// The management service, or a 404 when access control is off: without the access
/// store there are no users, projects or robots to manage.
pub fn admin(state: &AppState) -> Result<Admin, HarborError> {
    match &state.auth {
        Some(a) => Ok(Admin::new(a.access.clone())),
        None => Err(HarborError::not_found(
            "access control is off ([auth] mode = \"open\"); the management API needs it",
        )),
    }
}

/// The authenticated caller of a management request.
#[derive(Debug, Clone)]
pub struct Authn(pub Caller);

fn is_safe(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether a browser marked the request as coming from another site.
pub fn cross_site(headers: &HeaderMap) -> bool {
    let fetch_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site" || v == "same-site");
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_mismatch = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|o| {
            let o_host = o.split_once("://").map_or(o, |(_, rest)| rest);
            host != Some(o_host)
        });
    fetch_site || origin_mismatch
}

/// The value of cookie `name`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl FromRequestParts<Arc<AppState>> for Authn {
    type Rejection = HarborError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let admin = admin(state)?;
        let source = source(&parts.extensions);
        let unsafe_method = !is_safe(&parts.method);
        if unsafe_method && cross_site(&parts.headers) {
            return Err(HarborError(Error::Denied(
                "cross-site requests may not change anything".into(),
            )));
        }
        match credentials(&parts.headers) {
            Credentials::Basic(user, password) => {
                let principal = admin
                    .access()
                    .authenticate(&user, &password, source)
                    .await?;
                return Ok(Self(Caller::new(principal, source)));
            }
            Credentials::Bearer(_) => {
                return Err(HarborError(Error::Unauthorized(
                    "the management API takes Basic credentials or a session, not tokens".into(),
                )))
            }
            Credentials::None => {}
        }
        if let Some(sid) = cookie(&parts.headers, SESSION_COOKIE) {
            // A stale cookie is no error: the caller is anonymous, as in Harbor.
            if let Some((principal, csrf)) = admin.session(sid).await? {
                if unsafe_method {
                    let sent = parts
                        .headers
                        .get(CSRF_HEADER)
                        .map(HeaderValue::as_bytes)
                        .unwrap_or_default();
                    if !bool::from(sent.ct_eq(csrf.as_bytes())) {
                        return Err(HarborError(Error::Denied(
                            "the CSRF token is missing or wrong".into(),
                        )));
                    }
                } else if let Some(slot) = parts.extensions.get::<CsrfSlot>() {
                    *slot.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(csrf);
                }
                return Ok(Self(Caller::new(principal, source)));
            }
        }
        Ok(Self(Caller::new(Principal::Anonymous, source)))
    }
}

fn session_cookie(state: &AppState, value: &str, max_age: u64) -> Option<HeaderValue> {
    let secure = if state.auth.as_ref().is_some_and(|a| a.tls) {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .ok()
}

/// `POST /c/login` with form fields `principal` and `password`: open a session. Answers
/// 200 with the `sid` cookie and the CSRF token in `X-Harbor-CSRF-Token`.
pub async fn login(
    State(state): State<Arc<AppState>>,
    req: Request<Body>,
) -> Result<Response, HarborError> {
    let admin = admin(&state)?;
    let (parts, body) = req.into_parts();
    if cross_site(&parts.headers) {
        return Err(HarborError(Error::Denied(
            "cross-site sign-in is not allowed".into(),
        )));
    }
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|_| HarborError::bad_request("the form is too large"))?;
    let mut principal = None;
    let mut password = None;
    for (k, v) in form_urlencoded::parse(&bytes) {
        match &*k {
            "principal" => principal = Some(v.into_owned()),
            "password" => password = Some(v.into_owned()),
            _ => {}
        }
    }
    let (Some(user), Some(pw)) = (principal, password) else {
        return Err(HarborError::bad_request(
            "the form needs the fields principal and password",
        ));
    };
    let session = admin
        .open_session(&user, &pw, source(&parts.extensions))
        .await?;
    let mut resp = StatusCode::OK.into_response();
    if let Some(c) = session_cookie(&state, &session.id, SESSION_TTL.as_secs()) {
        resp.headers_mut().insert(header::SET_COOKIE, c);
    }
    if let Ok(v) = HeaderValue::from_str(&session.csrf_token) {
        resp.headers_mut().insert(CSRF_HEADER, v);
    }
    Ok(resp)
}

/// `GET /c/logout`: end the session and clear the cookie.
pub async fn logout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, HarborError> {
    let admin = admin(&state)?;
    if let Some(sid) = cookie(&headers, SESSION_COOKIE) {
        admin.close_session(sid).await?;
    }
    let mut resp = StatusCode::OK.into_response();
    if let Some(c) = session_cookie(&state, "", 0) {
        resp.headers_mut().insert(header::SET_COOKIE, c);
    }
    Ok(resp)
}
