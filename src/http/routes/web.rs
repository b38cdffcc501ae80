//! Static front end: the embeddable widget script and, in development, the
//! demo page that embeds it for the demo tenant.

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::http::error::ApiError;
use crate::http::AppState;

const WIDGET_JS: &str = include_str!("../../../web/widget.js");
const DEMO_HTML: &str = include_str!("../../../web/demo.html");
const DEMO_CSS: &str = include_str!("../../../web/demo.css");

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(widget_js))
        .routes(routes!(demo))
        .routes(routes!(demo_css))
        .routes(routes!(favicon))
}

/// No icon: an empty answer rather than a 404 in every browser's console.
#[utoipa::path(get, path = "/favicon.ico", tag = "web",
    responses((status = 204, description = "No icon")))]
async fn favicon() -> axum::http::StatusCode {
    axum::http::StatusCode::NO_CONTENT
}

/// The embeddable widget script (see web/README.md).
#[utoipa::path(get, path = "/widget.js", tag = "widget",
    responses((status = 200, description = "The widget", content_type = "text/javascript", body = String)))]
async fn widget_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        WIDGET_JS,
    )
        .into_response()
}

#[utoipa::path(get, path = "/demo.css", tag = "web",
    responses((status = 200, description = "The demo page's styles", content_type = "text/css", body = String)))]
async fn demo_css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        DEMO_CSS,
    )
        .into_response()
}

/// The demo page, only where the demo is enabled (development).
#[utoipa::path(get, path = "/demo", tag = "web",
    responses((status = 200, description = "The demo page", content_type = "text/html", body = String),
        (status = 404, description = "The demo is not enabled here")))]
async fn demo(State(state): State<AppState>) -> Result<Html<String>, ApiError> {
    if !state.settings.demo.seed {
        return Err(ApiError::NotFound);
    }
    let origin = url::Url::parse(&state.settings.http.public_url)
        .map(|url| url.origin().ascii_serialization())
        .map_err(|_| ApiError::NotFound)?;
    let demo: Option<(String, String)> =
        sqlx::query_as("SELECT public_key, tenant_name FROM agentry_demo_widget($1)")
            .bind(&origin)
            .fetch_optional(state.store.pool())
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    let (public_key, tenant_name) = demo.ok_or(ApiError::NotFound)?;
    Ok(Html(crate::templates::render(
        DEMO_HTML,
        &[("TENANT_NAME", &tenant_name), ("PUBLIC_KEY", &public_key)],
    )))
}
