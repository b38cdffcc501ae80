//! Routes, one file per resource.

pub mod admin;
pub mod agents;
pub mod auth;
pub mod health;
pub mod widgets;

use axum::Router;

use super::error::ApiError;
use super::AppState;

/// `/api/v1`: the dashboard API (tenant users) and the operator API (`/admin`).
pub fn api_v1() -> Router<AppState> {
    Router::new()
        .merge(auth::router())
        .merge(agents::router())
        .merge(widgets::router())
        .nest("/admin", admin::router())
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound
}
