//! Berth's HTTP layer. [`router`] builds the whole service: `/v2` (the OCI distribution API),
//! `/healthz`, `/readyz` and `/metrics`. Handlers parse requests into typed values, call the
//! [`Registry`] and shape replies; errors become HTTP in `error.rs` only.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use berth_core::Registry;
use metrics_exporter_prometheus::PrometheusHandle;

pub mod api;
mod auth;
mod error;
pub mod route;
pub mod sendfile;
mod v2;

pub use error::ApiError;

/// Everything a handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The registry service.
    pub registry: Registry,
    /// Renders `/metrics`; `None` when no recorder is installed (tests).
    pub metrics: Option<PrometheusHandle>,
    /// Access control: `None` when it is off (`[auth] mode = "open"`), and every caller may
    /// do everything.
    pub auth: Option<AuthState>,
}

/// Access control as the HTTP layer sees it.
#[derive(Clone)]
pub struct AuthState {
    /// The access service (logins, tokens, role checks).
    pub access: Arc<berth_core::Access>,
    /// The token endpoint's absolute URL for `WWW-Authenticate` challenges; `None`: made
    /// from each request's `Host` header (`https` when `tls` is set).
    pub realm: Option<String>,
    /// Whether the server speaks TLS (for realms made from the `Host` header).
    pub tls: bool,
}

/// The whole HTTP service.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v2", axum::routing::any(v2_entry))
        .route("/v2/", axum::routing::any(v2_entry))
        .route("/v2/{*rest}", axum::routing::any(v2_entry))
        .route(
            "/service/token",
            get(auth::token_endpoint).post(auth::token_endpoint),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_page))
        .merge(api::router())
        .layer(axum::middleware::from_fn(observe))
        .with_state(Arc::new(state))
}

async fn v2_entry(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let rest = path
        .strip_prefix("/v2")
        .map(|r| r.strip_prefix('/').unwrap_or(r))
        .unwrap_or("");
    let route = match route::parse(rest) {
        Ok(r) => r,
        Err(route::RouteError::NotFound) => return ApiError::NotFound.into_response(),
        // A tag that can't exist can't be found: reads and deletes of it answer 404, as for
        // any other missing manifest (the spec's GET/HEAD of a nonexistent manifest). A push
        // to it is still refused with 400.
        Err(route::RouteError::Invalid(berth_core::Error::TagInvalid(_)))
            if matches!(
                parts.method,
                axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::DELETE
            ) =>
        {
            return ApiError::Core(berth_core::Error::ManifestUnknown).into_response()
        }
        Err(route::RouteError::Invalid(e)) => return ApiError::Core(e).into_response(),
    };
    let label = route.label();
    let source = auth::source(&parts.extensions);
    let credentials = auth::credentials(&parts.headers);
    let had_token = matches!(credentials, auth::Credentials::Bearer(_));
    let actor = match auth::v2_actor(
        &state,
        &route,
        &parts.method,
        &parts.headers,
        credentials,
        source,
    )
    .await
    {
        Ok(a) => a,
        Err(mut refused) => {
            refused.extensions_mut().insert(RouteLabel(label));
            return refused;
        }
    };
    let query = v2::Query::parse(parts.uri.query());
    let mut resp = match v2::dispatch(
        &state,
        &actor,
        route.clone(),
        &parts.method,
        query,
        &parts.headers,
        body,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    auth::add_challenge(
        &state,
        &route,
        &parts.method,
        &parts.headers,
        had_token,
        &mut resp,
    );
    resp.extensions_mut().insert(RouteLabel(label));
    resp
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.registry.check_ready().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
        }
    }
}

async fn metrics_page(State(state): State<Arc<AppState>>) -> Response {
    match &state.metrics {
        Some(h) => ([("content-type", "text/plain; version=0.0.4")], h.render()).into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are disabled").into_response(),
    }
}

/// The endpoint a response came from, for metrics labels.
#[derive(Clone, Copy)]
struct RouteLabel(&'static str);

/// Label values are static strings, so counting a request allocates nothing.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

fn status_label(s: StatusCode) -> &'static str {
    static LABELS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
        (0..600u16)
            .map(|c| &*Box::leak(c.to_string().into_boxed_str()))
            .collect()
    });
    LABELS
        .get(usize::from(s.as_u16()))
        .copied()
        .unwrap_or("other")
}

/// Count, time and log every request, and stamp the API version header.
async fn observe(req: Request<Body>, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut resp = next.run(req).await;
    let status = resp.status();
    let route = resp.extensions().get::<RouteLabel>().map_or_else(
        || {
            if path.starts_with("/v2") {
                "v2"
            } else {
                "other"
            }
        },
        |r| r.0,
    );
    if path.starts_with("/v2") {
        resp.headers_mut().insert(
            "docker-distribution-api-version",
            HeaderValue::from_static("registry/2.0"),
        );
    }
    let elapsed = start.elapsed();
    let m = method_label(&method);
    metrics::counter!("berth_http_requests_total", "route" => route, "method" => m, "status" => status_label(status)).increment(1);
    metrics::histogram!("berth_http_request_duration_seconds", "route" => route, "method" => m)
        .record(elapsed.as_secs_f64());
    if let Some(err) = resp.extensions().get::<Arc<ApiError>>() {
        if status.is_server_error() {
            tracing::error!(%method, %path, status = status.as_u16(), error = ?err, "request failed");
        } else {
            tracing::debug!(%method, %path, status = status.as_u16(), error = ?err, "request refused");
        }
    }
    tracing::debug!(target: "berth::access", %method, %path, status = status.as_u16(), micros = elapsed.as_micros() as u64, "request");
    resp
}
