//! Extractors whose rejections are Harbor errors (400 with the envelope), not axum's
//! plain-text ones.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::HarborError;
use crate::AppState;

/// A JSON body.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for JsonBody<T> {
    type Rejection = HarborError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|j| Self(j.0))
            .map_err(|e| HarborError::bad_request(e.body_text()))
    }
}

/// Query parameters.
pub struct Q<T>(pub T);

impl<T: DeserializeOwned> FromRequestParts<Arc<AppState>> for Q<T> {
    type Rejection = HarborError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e| HarborError::bad_request(e.body_text()))
    }
}

/// Path parameters.
pub struct P<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<Arc<AppState>> for P<T> {
    type Rejection = HarborError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e| HarborError::bad_request(e.body_text()))
    }
}
