//! The one place where errors become HTTP responses.

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_core::Error;
use berth_oci::ErrorCode;
use serde::Serialize;

/// An error on its way to the client.
#[derive(Debug)]
pub enum ApiError {
    /// A registry error.
    Core(Error),
    /// No endpoint at this path.
    NotFound,
    /// The endpoint exists but not for this method.
    MethodNotAllowed,
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self::Core(e)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    errors: [ErrorEntry<'a>; 1],
}

#[derive(Serialize)]
struct ErrorEntry<'a> {
    code: &'a str,
    message: String,
    detail: serde_json::Value,
}

fn status(e: &Error) -> StatusCode {
    match e {
        Error::NameInvalid(_)
        | Error::DigestMalformed(_)
        | Error::DigestMismatch { .. }
        | Error::UploadInvalid(_)
        | Error::SizeInvalid(_)
        | Error::ManifestInvalid(_)
        | Error::ManifestBlobUnknown(_)
        | Error::TagInvalid(_)
        | Error::PaginationInvalid(_) => StatusCode::BAD_REQUEST,
        Error::NameUnknown(_)
        | Error::BlobUnknown(_)
        | Error::UploadUnknown
        | Error::ManifestUnknown
        | Error::ManifestNotAcceptable(_) => StatusCode::NOT_FOUND,
        Error::ChunkOutOfOrder { .. } | Error::RangeNotSatisfiable { .. } => {
            StatusCode::RANGE_NOT_SATISFIABLE
        }
        Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Error::Unsupported(_) => StatusCode::METHOD_NOT_ALLOWED,
        Error::Unavailable { .. } | Error::UploadBusy(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        Error::Denied(_) => StatusCode::FORBIDDEN,
        Error::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::NotEmpty(_) => StatusCode::PRECONDITION_FAILED,
        Error::Invalid(_) => StatusCode::BAD_REQUEST,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn body(code: ErrorCode, message: String, detail: serde_json::Value) -> String {
    serde_json::to_string(&ErrorBody {
        errors: [ErrorEntry {
            code: code.as_str(),
            message,
            detail,
        }],
    })
    .unwrap_or_default()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message, detail) = match &self {
            Self::Core(e) => {
                let code = e.code();
                // Internal details, and what made a backend unavailable (which may name
                // internal hosts, buckets and keys), are logged by the middleware, never sent.
                let message = match e {
                    Error::Internal(_) => code.description().to_owned(),
                    Error::Unavailable { backend, .. } => {
                        format!("{backend} is unavailable; try again later")
                    }
                    e => e.to_string(),
                };
                let detail = match e {
                    Error::DigestMismatch { expected, actual } => {
                        serde_json::json!({ "expected": expected.to_string(), "actual": actual.to_string() })
                    }
                    Error::ManifestBlobUnknown(d) | Error::BlobUnknown(d) => {
                        serde_json::json!({ "digest": d.to_string() })
                    }
                    _ => serde_json::Value::Null,
                };
                (status(e), code, message, detail)
            }
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                ErrorCode::Unsupported,
                "no such endpoint".to_owned(),
                serde_json::Value::Null,
            ),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::Unsupported,
                "method not allowed on this endpoint".to_owned(),
                serde_json::Value::Null,
            ),
        };
        let mut resp = (status, body(code, message, detail)).into_response();
        let headers = resp.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        match &self {
            Self::Core(Error::RangeNotSatisfiable { size }) => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    headers.insert("content-range", v);
                }
            }
            Self::Core(Error::ChunkOutOfOrder { offset }) => {
                let last = offset.saturating_sub(1);
                if let Ok(v) = HeaderValue::from_str(&format!("0-{last}")) {
                    headers.insert("range", v);
                }
            }
            _ => {}
        }
        resp.extensions_mut().insert(Arc::new(self));
        resp
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn unavailable_names_the_backend_and_keeps_the_detail_for_the_log() {
        let detail = "S3 GET http://10.1.2.3:9000/bucket/prod/blobs/sha256/ab/abcd: timed out";
        let resp = ApiError::Core(Error::Unavailable {
            backend: berth_core::Backend::BlobStorage,
            detail: detail.into(),
        })
        .into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let logged = resp
            .extensions()
            .get::<Arc<ApiError>>()
            .expect("kept for the log");
        assert!(format!("{logged:?}").contains(detail));
        let sent = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&sent).unwrap();
        assert_eq!(v["errors"][0]["code"], "UNAVAILABLE");
        assert_eq!(
            v["errors"][0]["message"],
            "blob storage is unavailable; try again later"
        );
    }
}
