//! Liveness and readiness on the public listener; the Prometheus scrape
//! endpoint on its own (`metrics_router`).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::http::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct Liveness {
    #[schema(example = "ok")]
    status: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct Readiness {
    #[schema(example = "ready")]
    status: String,
    checks: Checks,
}

/// `ok` or `unreachable` per dependency.
#[derive(ToSchema)]
#[allow(dead_code)]
struct Checks {
    postgres: String,
    redis: String,
}

/// The 503 body: the error, and the checks that name what failed.
#[derive(ToSchema)]
#[allow(dead_code)]
struct NotReady {
    error: crate::http::openapi::ErrorDetail,
    checks: Checks,
}

/// The metrics listener's router: `/metrics` only (see `metrics.bind`).
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// The process is up and serving.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Alive", body = Liveness)))]
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// PostgreSQL and Redis both answer; otherwise 503 naming what does not.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "PostgreSQL or Redis unreachable", body = NotReady)))]
async fn readyz(State(state): State<AppState>) -> Response {
    let (postgres_ok, redis_ok) =
        crate::saturation::check_dependencies(&state.store, &state.bus).await;
    let word = |ok: bool| if ok { "ok" } else { "unreachable" };
    let checks = json!({ "postgres": word(postgres_ok), "redis": word(redis_ok) });
    if postgres_ok && redis_ok {
        return Json(json!({ "status": "ready", "checks": checks })).into_response();
    }
    let failing: Vec<&str> = [("postgres", postgres_ok), ("redis", redis_ok)]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| name)
        .collect();
    let message = format!("{} unreachable", failing.join(" and "));
    let body = json!({ "error": { "code": "not_ready", "message": message }, "checks": checks });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
