//! The HTTP edge: the router, shared state, and the layers every request passes.

pub mod client_ip;
pub mod error;
pub mod extract;
pub mod json_body;
pub mod listing;
pub mod mcp;
pub mod middleware;
pub mod openapi;
pub mod origin_cache;
pub mod routes;
pub mod server;
pub mod sse;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa_axum::router::OpenApiRouter;

use agentry_actors::pipeline::ChatPipeline;

use crate::bus::RedisBus;
use crate::configuration::Settings;
use crate::crypto::Keyring;
use crate::db::Store;
use crate::lockout::Lockout;
use crate::telemetry::trace_context;
use crate::tokens::TokenSigner;
use crate::widget_sessions::WidgetSessions;

/// What handlers share; cheap to clone.
pub type AppState = Arc<AppContext>;

pub struct AppContext {
    pub settings: Settings,
    pub store: Store,
    pub bus: RedisBus,
    pub keyring: Arc<Keyring>,
    pub signer: TokenSigner,
    pub metrics: PrometheusHandle,
    pub pipeline: ChatPipeline,
    pub widget_sessions: WidgetSessions,
    /// Live conversation events across instances (takeover).
    pub live: Arc<crate::live::LiveHub>,
    pub limiter: crate::rate_limit::RateLimiter,
    pub password_gate: crate::accounts::PasswordGate,
    pub lockout: Lockout,
    pub origin_cache: origin_cache::OriginCache,
    pub recordings: crate::recordings::Recordings,
    pub media_bridges: routes::twilio_media::MediaBridges,
    pub files: Arc<crate::files::Files>,
}

impl AppContext {
    /// Counts one request of `subject` against `tier`: the headers to send
    /// when admitted (none while limits are off), a 429 when not.
    pub async fn limit(
        &self,
        tier: crate::rate_limit::Tier,
        tenant: Option<agentry_actors::TenantId>,
        subject: &str,
    ) -> Result<error::RateHeaders, error::ApiError> {
        match self.limiter.check(tier, tenant, subject).await {
            Some(decision) if decision.unchecked => {
                Err(error::ApiError::Unavailable("rate limiting"))
            }
            Some(decision) if !decision.allowed => Err(error::ApiError::RateLimited(decision)),
            decision => Ok(error::RateHeaders(decision)),
        }
    }

    /// Counts a request that an extractor admits (a tier for the whole API,
    /// not one route's): a 429 or 503 refuses it; an admitted request's
    /// headers are sent by [`middleware::rate_headers`] unless the handler
    /// sends those of a tighter tier.
    pub async fn limit_request(
        &self,
        parts: &axum::http::request::Parts,
        tier: crate::rate_limit::Tier,
        tenant: Option<agentry_actors::TenantId>,
        subject: &str,
    ) -> Result<(), error::ApiError> {
        let error::RateHeaders(decision) = self.limit(tier, tenant, subject).await?;
        if let (Some(decision), Some(slot)) =
            (decision, parts.extensions.get::<middleware::RateSlot>())
        {
            slot.fill(decision);
        }
        Ok(())
    }

    /// The client's address (see [`client_ip`]).
    pub fn client_ip(
        &self,
        peer: std::net::SocketAddr,
        headers: &header::HeaderMap,
    ) -> std::net::IpAddr {
        client_ip::client_ip(peer.ip(), headers, &self.settings.http.trusted_proxies)
    }
}

fn timeout(seconds: u64) -> TimeoutLayer {
    TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, Duration::from_secs(seconds))
}

/// `POST /api/v1/files` alone: its body may be `files.max_bytes` (plus the
/// multipart framing), not `http.max_body_bytes`, and it may take
/// `files.upload_timeout_secs`. The handler counts the file's bytes itself.
fn file_upload_router(state: AppState) -> OpenApiRouter {
    let files = &state.settings.files;
    let max_body = usize::try_from(
        files
            .max_bytes
            .saturating_add(routes::files::MULTIPART_SLACK_BYTES),
    )
    .unwrap_or(usize::MAX);
    let upload_timeout = files.upload_timeout_secs;
    routes::files::upload_router()
        .with_state(state)
        .route_layer(axum::middleware::from_fn(middleware::record_metrics))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(timeout(upload_timeout))
}

/// The whole HTTP API, as the router that serves it and the OpenAPI document
/// that describes it, built by the same calls.
pub fn router(state: AppState) -> Router {
    let trace_trust = trace_context::TraceTrust::new(&state.settings.http.trusted_proxies);
    let (router, api) = api_router(state).split_for_parts();
    let document = openapi::ApiDocument::new(&openapi::finish(api));
    edge_layers(router.layer(axum::Extension(document)), trace_trust)
}

fn api_router(state: AppState) -> OpenApiRouter {
    let max_body = state.settings.http.max_body_bytes;
    let request_timeout = state.settings.http.request_timeout_secs;
    // A chat turn has its own (often longer) deadline, answered by its handler;
    // the layer's margin only stops a handler that overruns it.
    let turn_timeout = state.settings.chat.turn_timeout_secs + 5;
    OpenApiRouter::new()
        .merge(routes::health::router())
        .merge(routes::web::router())
        .merge(routes::app::router())
        .merge(openapi::router())
        .nest("/api/v1", routes::api_v1())
        .merge(mcp::router(state.clone()))
        .merge(routes::recordings::audio_router())
        .merge(routes::files::shared_router())
        .layer(timeout(request_timeout))
        .nest(
            "/api/twilio",
            // Answered within twilio.webhook_timeout_secs by the handlers themselves.
            routes::twilio_hooks::router()
                .layer(timeout(state.settings.twilio.webhook_timeout_secs + 5)),
        )
        .nest(
            "/ws/twilio",
            // Bounds the upgrade only: the socket then lives in its own task.
            routes::twilio_media::router()
                .layer(timeout(state.settings.twilio.webhook_timeout_secs + 5)),
        )
        .nest(
            "/api/widget",
            routes::widget::router(state.clone()).layer(timeout(turn_timeout.max(request_timeout))),
        )
        .fallback(routes::not_found)
        .with_state(state.clone())
        // Inner layers: per-route metrics see the matched route.
        .route_layer(axum::middleware::from_fn(middleware::record_metrics))
        // Router::layer wraps outward: the last layer below sees the request first.
        .layer(DefaultBodyLimit::max(max_body))
        .layer(RequestBodyLimitLayer::new(max_body))
        // Merged after the global body limit, so that limit does not cover it.
        .merge(file_upload_router(state))
}

/// What every request passes, outermost last.
fn edge_layers(router: Router, trace_trust: trace_context::TraceTrust) -> Router {
    let x_request_id = header::HeaderName::from_static("x-request-id");
    router
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(axum::middleware::from_fn(middleware::rate_headers))
        .layer(axum::middleware::from_fn(middleware::json_errors))
        .layer(axum::middleware::from_fn(middleware::security_headers))
        .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(move |request: &Request<_>| {
                    trace_context::request_span(request, trace_trust.incoming(request))
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(axum::middleware::from_fn(
            trace_context::respond_with_traceparent,
        ))
        .layer(SetRequestIdLayer::new(x_request_id, MakeRequestUuid))
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
        ]))
}
