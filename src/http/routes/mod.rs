//! Routes, one file per resource.

pub mod action_runs;
pub mod admin;
pub mod agents;
pub mod api_tokens;
pub mod app;
pub mod auth;
pub mod conversations;
pub mod documents;
pub mod events;
pub mod files;
pub mod health;
pub mod leads;
pub mod llm_config;
pub mod phone_numbers;
pub mod privacy;
pub mod recordings;
pub mod retention;
pub mod twilio_hooks;
pub mod twilio_media;
pub mod usage;
pub mod web;
pub mod webhook_deliveries;
pub mod webhook_endpoints;
pub mod widget;
pub mod widgets;

use utoipa_axum::router::OpenApiRouter;

use super::error::ApiError;
use super::AppState;

/// `/api/v1`: the dashboard API (tenant users) and the operator API (`/admin`).
pub fn api_v1() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(auth::router())
        .merge(agents::router())
        .merge(widgets::router())
        .merge(documents::router())
        .merge(conversations::router())
        .merge(events::router())
        .merge(llm_config::router())
        .merge(leads::router())
        .merge(webhook_endpoints::router())
        .merge(webhook_deliveries::router())
        .merge(api_tokens::router())
        .merge(phone_numbers::router())
        .merge(recordings::router())
        .merge(action_runs::router())
        .merge(privacy::router())
        .merge(files::router())
        .merge(usage::router())
        .merge(retention::router())
        .nest("/admin", admin::router())
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound
}
