//! The management API's errors in Harbor's shape: `{"errors":[{"code":"NOT_FOUND",
//! "message":"..."}]}`. `harbor_status` is the one place where a [`berth_core::Error`]
//! becomes a Harbor code and status.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_core::Error;
use serde::Serialize;
use utoipa::ToSchema;

use crate::ApiError;

/// Harbor's error envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct Errors {
    /// The errors (Berth sends one).
    pub errors: Vec<ErrorItem>,
}

/// One error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorItem {
    /// Harbor's code: `UNAUTHORIZED`, `FORBIDDEN`, `NOT_FOUND`, `CONFLICT`, `BAD_REQUEST`,
    /// `PRECONDITION`, `TOO_MANY_REQUESTS`, `INTERNAL_SERVER_ERROR`, `UNAVAILABLE`.
    pub code: &'static str,
    /// What went wrong.
    pub message: String,
}

/// An error of the management API on its way to the client.
#[derive(Debug)]
pub struct HarborError(pub Error);

impl From<Error> for HarborError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

impl HarborError {
    /// A malformed request (400).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self(Error::Invalid(message.into()))
    }

    /// Nothing here (404).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self(Error::NotFound(message.into()))
    }
}

/// Harbor's status and code for a service error: the only mapping of the management API.
fn harbor_status(e: &Error) -> (StatusCode, &'static str) {
    match e {
        Error::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
        Error::Denied(_) => (StatusCode::FORBIDDEN, "FORBIDDEN"),
        Error::TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS"),
        Error::NotFound(_)
        | Error::NameUnknown(_)
        | Error::BlobUnknown(_)
        | Error::UploadUnknown
        | Error::ManifestUnknown
        | Error::ManifestNotAcceptable(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
        Error::Conflict(_) => (StatusCode::CONFLICT, "CONFLICT"),
        Error::NotEmpty(_) => (StatusCode::PRECONDITION_FAILED, "PRECONDITION"),
        Error::Invalid(_)
        | Error::NameInvalid(_)
        | Error::DigestMalformed(_)
        | Error::DigestMismatch { .. }
        | Error::UploadInvalid(_)
        | Error::ChunkOutOfOrder { .. }
        | Error::SizeInvalid(_)
        | Error::RangeNotSatisfiable { .. }
        | Error::ManifestInvalid(_)
        | Error::ManifestBlobUnknown(_)
        | Error::TagInvalid(_)
        | Error::PaginationInvalid(_) => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
        Error::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "BAD_REQUEST"),
        Error::Unsupported(_) => (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
        Error::Unavailable { .. } | Error::UploadBusy(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
        }
        Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_SERVER_ERROR"),
    }
}

impl IntoResponse for HarborError {
    fn into_response(self) -> Response {
        let (status, code) = harbor_status(&self.0);
        // Internal details, and what made a backend unavailable, go to the log (through the
        // response extension the request middleware reads), never to the client.
        let message = match &self.0 {
            Error::Internal(_) => "internal server error".to_owned(),
            Error::Unavailable { backend, .. } => {
                format!("{backend} is unavailable; try again later")
            }
            e => e.to_string(),
        };
        let body = Errors {
            errors: vec![ErrorItem { code, message }],
        };
        let mut resp = (status, axum::Json(body)).into_response();
        resp.extensions_mut()
            .insert(Arc::new(ApiError::Core(self.0)));
        resp
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn internal_errors_keep_their_detail_for_the_log() {
        let resp = HarborError(Error::Internal("db at 10.0.0.5 said no".into())).into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["errors"][0]["code"], "INTERNAL_SERVER_ERROR");
        assert!(!String::from_utf8_lossy(&body).contains("10.0.0.5"));
    }
}
