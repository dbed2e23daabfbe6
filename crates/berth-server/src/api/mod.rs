//! The management API under `/api/v2.0`, in Harbor's paths and JSON shapes.

use std::sync::Arc;

use axum::Router;

use crate::AppState;

/// The management API's routes.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
}
