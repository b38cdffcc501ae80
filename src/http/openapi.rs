//! The OpenAPI 3.1 document of the whole HTTP API (`GET /api/v1/openapi.json`)
//! and the docs page over it (`/api/docs`, Swagger UI served from the binary).
//!
//! Every route is registered through utoipa-axum's `routes!`, which adds the
//! handler's `#[utoipa::path]` operation to the document in the same call that
//! adds the route to the router: the router and the document are one piece of
//! code and cannot drift. What every operation shares (the error body, the
//! errors the edge answers before a handler runs, the rate-limit headers and
//! the security schemes) is added once by [`finish`], not repeated on each handler.

use std::sync::Arc;

use axum::extract::Extension;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, InfoBuilder, ObjectBuilder, OpenApi, Ref, RefOr,
    ResponseBuilder, Type,
};
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

/// Security scheme names, as the handlers' `security(...)` attributes name them.
pub const DASHBOARD: &str = "dashboard";
pub const API_TOKEN: &str = "api_token";
pub const OPERATOR: &str = "operator";
pub const WIDGET_SESSION: &str = "widget_session";
pub const TWILIO: &str = "twilio_signature";

/// Tags group the operations on the docs page.
pub mod tags {
    pub const HEALTH: &str = "health";
    pub const AUTH: &str = "auth";
    pub const AGENTS: &str = "agents";
    pub const KNOWLEDGE: &str = "knowledge";
    pub const CONVERSATIONS: &str = "conversations";
    pub const LEADS: &str = "leads";
    pub const WEBHOOKS: &str = "webhooks";
    pub const TOKENS: &str = "api-tokens";
    pub const TELEPHONY: &str = "telephony";
    pub const FILES: &str = "files";
    pub const PRIVACY: &str = "privacy";
    pub const TENANT: &str = "tenant";
    pub const ADMIN: &str = "admin";
    pub const WIDGET: &str = "widget";
    pub const TWILIO: &str = "twilio";
    pub const MCP: &str = "mcp";
    pub const WEB: &str = "web";
}

/// Every error response's body: `{"error":{"code","message"}}` (see
/// [`super::error::ApiError`]).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// A stable machine-readable code: `not_found`, `invalid`, `rate_limited` …
    #[schema(example = "not_found")]
    code: String,
    /// For people; may change between versions.
    message: String,
}

/// `agentry_actors::guardrails::directives::Directives` as the API reads and
/// writes it (the actors crate knows nothing of HTTP, so its schema is here).
#[derive(Default, Serialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
#[allow(dead_code)]
pub struct DirectivesSchema {
    /// No APR, interest rate or monthly payment figures.
    no_financing_quotes: DirectiveSchema,
    /// No dollar figure for a trade-in or appraisal.
    no_trade_in_values: DirectiveSchema,
    /// No recommending, pricing or comparing the profile's competitors.
    competitor_deflection: DirectiveSchema,
    /// The profile's escalation topics go to a person.
    escalation_topics: DirectiveSchema,
}

/// A directive: on or off, or on or off with the tenant's own wording.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum DirectiveSchema {
    Enabled(bool),
    Worded(WordedDirective),
}

impl Default for DirectiveSchema {
    fn default() -> Self {
        Self::Enabled(false)
    }
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct WordedDirective {
    #[serde(default)]
    enabled: bool,
    /// 1 to 500 characters, not blank.
    #[schema(min_length = 1, max_length = 500)]
    #[serde(default)]
    wording: Option<String>,
}

/// `agentry_actors::ports::MessageRole`: who said a message.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum MessageRoleSchema {
    Visitor,
    Assistant,
}

/// The document served at `/api/v1/openapi.json`, serialized once at start-up.
#[derive(Clone)]
pub struct ApiDocument(Arc<String>);

impl ApiDocument {
    pub fn new(api: &OpenApi) -> Self {
        // Serializing our own document cannot fail: every value in it is a
        // string, number, bool, array or map.
        Self(Arc::new(api.to_json().unwrap_or_else(|_| "{}".to_owned())))
    }
}

/// The document and the docs page, registered like any other routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(openapi_json))
        .routes(routes!(docs_page))
        .routes(routes!(docs_init))
        .routes(routes!(docs_bundle))
        .routes(routes!(docs_css))
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = tags::WEB,
    responses((status = 200, description = "The OpenAPI 3.1 document of this API",
        content_type = "application/json", body = Object)),
)]
async fn openapi_json(Extension(document): Extension<ApiDocument>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.0.as_str().to_owned(),
    )
        .into_response()
}

const DOCS_HTML: &str = include_str!("../../web/api-docs.html");
const DOCS_INIT_JS: &str = include_str!("../../web/api-docs.js");
const SWAGGER_UI_JS: &str = include_str!("../../web/vendor/swagger-ui/swagger-ui-bundle.js");
const SWAGGER_UI_CSS: &str = include_str!("../../web/vendor/swagger-ui/swagger-ui.css");

/// The API docs page (Swagger UI), which works offline: its assets are in the binary.
#[utoipa::path(
    get,
    path = "/api/docs",
    tag = tags::WEB,
    responses((status = 200, description = "The docs page", content_type = "text/html", body = String)),
)]
async fn docs_page() -> Response {
    asset("text/html; charset=utf-8", DOCS_HTML)
}

#[utoipa::path(
    get,
    path = "/api/docs/init.js",
    tag = tags::WEB,
    responses((status = 200, description = "The docs page's start-up script",
        content_type = "text/javascript", body = String)),
)]
async fn docs_init() -> Response {
    asset("text/javascript; charset=utf-8", DOCS_INIT_JS)
}

#[utoipa::path(
    get,
    path = "/api/docs/swagger-ui-bundle.js",
    tag = tags::WEB,
    responses((status = 200, description = "Swagger UI (swagger-ui-dist)",
        content_type = "text/javascript", body = String)),
)]
async fn docs_bundle() -> Response {
    asset("text/javascript; charset=utf-8", SWAGGER_UI_JS)
}

#[utoipa::path(
    get,
    path = "/api/docs/swagger-ui.css",
    tag = tags::WEB,
    responses((status = 200, description = "Swagger UI's styles", content_type = "text/css", body = String)),
)]
async fn docs_css() -> Response {
    asset("text/css; charset=utf-8", SWAGGER_UI_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Completes the document the routers collected: title, security schemes,
/// the shared error body, and on every operation the responses the edge
/// gives before or around its handler.
pub fn finish(mut api: OpenApi) -> OpenApi {
    api.info = InfoBuilder::new()
        .title("agentry")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "Multi-tenant backend for website and phone AI agents. Every error is \
             `{\"error\":{\"code\",\"message\"}}`. Responses of rate-limited requests carry \
             `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`; a 429 \
             carries `Retry-After` too.",
        ))
        .build();
    let components = api.components.get_or_insert_with(Default::default);
    let (name, schema) = (ErrorBody::name(), ErrorBody::schema());
    components.schemas.insert(name.into_owned(), schema);
    let (name, schema) = (ErrorDetail::name(), ErrorDetail::schema());
    components.schemas.insert(name.into_owned(), schema);
    let bearer = |format: &str, description: &str| {
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format(format)
                .description(Some(description))
                .build(),
        )
    };
    components.security_schemes.insert(
        DASHBOARD.into(),
        bearer(
            "signed token",
            "A tenant user's dashboard token from `POST /api/v1/auth/login`; lives \
             `auth.dashboard_token_ttl_secs`, revoked by `POST /api/v1/auth/logout`.",
        ),
    );
    components.security_schemes.insert(
        API_TOKEN.into(),
        bearer(
            "agt_…",
            "A scoped API token (`POST /api/v1/api-tokens`); an operation names the \
             scope it needs (`leads:read`, `leads:write`, `conversations:read`, \
             `knowledge:write`, `webhooks:read` …).",
        ),
    );
    components.security_schemes.insert(
        OPERATOR.into(),
        bearer(
            "signed token",
            "A site operator's token from `POST /api/v1/admin/auth/login`.",
        ),
    );
    components.security_schemes.insert(
        WIDGET_SESSION.into(),
        bearer(
            "signed token",
            "A visitor's widget session token from `POST /api/widget/session`: \
             short-lived, one agent, revocable.",
        ),
    );
    components.security_schemes.insert(
        TWILIO.into(),
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-Twilio-Signature",
            "Twilio's HMAC-SHA1 signature over `twilio.public_base_url`, the path and \
             the form parameters, made with the tenant's auth token.",
        ))),
    );
    for item in api.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            complete_operation(operation);
        }
    }
    api
}

/// Which edge answers an operation can meet, from its shape.
fn complete_operation(operation: &mut Operation) {
    let secured = operation
        .security
        .as_ref()
        .is_some_and(|requirements| !requirements.is_empty());
    let with_body = operation.request_body.is_some();
    let with_path_ids = operation.parameters.as_ref().is_some_and(|parameters| {
        parameters
            .iter()
            .any(|parameter| parameter.parameter_in == ParameterIn::Path)
    });
    let with_query = operation.parameters.as_ref().is_some_and(|parameters| {
        parameters
            .iter()
            .any(|parameter| parameter.parameter_in == ParameterIn::Query)
    });
    // Rate-limited: every authenticated route, and the public ones whose
    // own tier can refuse them (logins, widget sessions, signed links).
    let rate_limited = secured || operation.responses.responses.contains_key("429");
    let mut edge: Vec<(&str, &str)> = vec![
        // Every route runs under a deadline, and may fail inside.
        ("408", "The request took longer than its deadline"),
        ("500", "Internal error (details are logged, never sent)"),
    ];
    if secured {
        edge.extend([
            ("401", "Missing, invalid, expired or revoked credentials"),
            (
                "429",
                "Rate limited, or locked out after too many failed authentications",
            ),
            (
                "503",
                "A dependency (database, rate limiter, session store) is briefly unavailable",
            ),
        ]);
    }
    if with_body {
        edge.extend([
            ("400", "Malformed body"),
            ("413", "Request body is too large"),
            ("415", "Wrong Content-Type"),
            ("422", "A field is invalid (the message names it)"),
        ]);
    }
    if with_query {
        edge.push(("400", "A query parameter is malformed or unknown"));
    }
    if with_path_ids {
        edge.push(("404", "No such resource (or another tenant's)"));
    }
    let responses = &mut operation.responses.responses;
    for (status, description) in edge {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| error_response(status, description));
    }
    for (status, response) in responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        response.headers.insert(
            "x-request-id".into(),
            header_of(
                Type::String,
                "The request's id, also in the server's log lines",
            ),
        );
        let success = status.starts_with('2');
        if (success && rate_limited) || status == "429" {
            for (name, description) in RATE_HEADERS {
                response
                    .headers
                    .entry(name.into())
                    .or_insert_with(|| header_of(Type::Integer, description));
            }
        }
        if status == "429" || status == "503" {
            response
                .headers
                .entry("retry-after".into())
                .or_insert_with(|| header_of(Type::Integer, "Seconds to wait before trying again"));
        }
        if status == "401" {
            response
                .headers
                .entry("www-authenticate".into())
                .or_insert_with(|| header_of(Type::String, "`Bearer`"));
        }
        let error = status.starts_with('4') || status.starts_with('5');
        if error && response.content.is_empty() {
            response
                .content
                .insert("application/json".into(), error_content());
        }
    }
}

const RATE_HEADERS: [(&str, &str); 3] = [
    (
        "x-ratelimit-limit",
        "Requests per minute of the tier that counted this request",
    ),
    (
        "x-ratelimit-remaining",
        "Requests left in the current burst",
    ),
    (
        "x-ratelimit-reset",
        "Seconds until a full burst is available again",
    ),
];

fn header_of(kind: Type, description: &str) -> utoipa::openapi::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(kind))
        .description(Some(description))
        .build()
}

fn error_content() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(ErrorBody::name())))
        .build()
}

fn error_response(_status: &str, description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content("application/json", error_content())
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// A route added with axum's own `route`, `route_service` or
    /// `nest_service` would be served without being in the document; only
    /// these two are, on purpose: the metrics listener is not the public API,
    /// and `/mcp` is the SDK's service, described beside it in `mcp.rs`.
    const NOT_THROUGH_ROUTES_MACRO: [(&str, &str); 2] = [
        ("routes/health.rs", ".route(\"/metrics\""),
        ("mcp.rs", ".nest_service(\"/mcp\""),
    ];

    fn sources(dir: &Path, found: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, found);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let name = path
                    .strip_prefix(concat!(env!("CARGO_MANIFEST_DIR"), "/src/http/"))
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                found.push((name, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }

    #[test]
    fn every_route_is_registered_with_its_operation() {
        let mut files = Vec::new();
        sources(
            Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src/http")),
            &mut files,
        );
        assert!(files.len() > 20, "read the route files");
        let mut stray = Vec::new();
        for (name, text) in &files {
            // Unit tests (this one included) build no routers of the API.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (number, line) in code.lines().enumerate() {
                let line = line.trim();
                let registers = [".route(", ".route_service(", ".nest_service("]
                    .iter()
                    .any(|call| line.contains(call));
                let allowed = NOT_THROUGH_ROUTES_MACRO
                    .iter()
                    .any(|(file, call)| name == file && line.contains(call));
                if registers && !allowed && !line.starts_with("//") {
                    stray.push(format!("src/http/{name}:{}: {line}", number + 1));
                }
            }
        }
        assert!(
            stray.is_empty(),
            "routes outside utoipa_axum::routes! (not in the OpenAPI document):\n{}",
            stray.join("\n")
        );
    }
}
