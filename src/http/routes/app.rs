//! The tenant dashboard: a shell page at `/app` and its ES modules and
//! stylesheet at `/app/{asset}`, all compiled into the binary (web/app/,
//! see web/README.md). The pages speak only the JSON API.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::http::error::ApiError;
use crate::http::AppState;

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

const SHELL: &str = include_str!("../../../web/app/index.html");

/// Every file of web/app/ but the shell: (name, content type, body).
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.css", CSS, include_str!("../../../web/app/app.css")),
    ("main.js", JS, include_str!("../../../web/app/main.js")),
    ("api.js", JS, include_str!("../../../web/app/api.js")),
    ("dom.js", JS, include_str!("../../../web/app/dom.js")),
    ("ui.js", JS, include_str!("../../../web/app/ui.js")),
    ("events.js", JS, include_str!("../../../web/app/events.js")),
    ("agents.js", JS, include_str!("../../../web/app/agents.js")),
    (
        "conversations.js",
        JS,
        include_str!("../../../web/app/conversations.js"),
    ),
    ("leads.js", JS, include_str!("../../../web/app/leads.js")),
    ("llm.js", JS, include_str!("../../../web/app/llm.js")),
    (
        "webhooks.js",
        JS,
        include_str!("../../../web/app/webhooks.js"),
    ),
    ("tokens.js", JS, include_str!("../../../web/app/tokens.js")),
    ("phone.js", JS, include_str!("../../../web/app/phone.js")),
    ("usage.js", JS, include_str!("../../../web/app/usage.js")),
];

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(shell))
        .routes(routes!(asset))
}

/// The dashboard (sign in, agents, conversations …; hash routes such as `/app#/agents`).
#[utoipa::path(get, path = "/app", tag = "web",
    responses((status = 200, description = "The dashboard's page", content_type = "text/html", body = String)))]
async fn shell() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SHELL,
    )
        .into_response()
}

/// One of the dashboard's modules or its stylesheet.
#[utoipa::path(get, path = "/app/{asset}", tag = "web",
    params(("asset" = String, Path, description = "A file name such as `main.js` or `app.css`")),
    responses((status = 200, description = "The file", content(
            (String = "text/javascript"),
            (String = "text/css"))),
        (status = 404, description = "No such file")))]
async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    let (_, content_type, body) = ASSETS
        .iter()
        .find(|(asset, _, _)| *asset == name)
        .ok_or(ApiError::NotFound)?;
    // Revalidated on every load: a deploy's modules must not mix with the last one's.
    Ok((
        [
            (header::CONTENT_TYPE, *content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        *body,
    )
        .into_response())
}
