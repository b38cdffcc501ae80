//! Cross-cutting HTTP behaviour: security headers, per-route metrics, and
//! JSON bodies for errors produced outside handlers (405, 413, panics).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{error_response, RateHeaders};
use crate::rate_limit::Decision;

const STRICT_CSP: &str =
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";
/// Widget assets and APIs are meant to be embedded in any site: framing is
/// allowed, everything else stays as strict.
const EMBEDDABLE_CSP: &str =
    "default-src 'self'; frame-ancestors *; base-uri 'none'; form-action 'self'; object-src 'none'";

/// The API docs page (Swagger UI) draws a few icons from `data:` SVG images
/// in its stylesheet; everything else stays as strict (no inline script, no
/// eval: Swagger UI needs neither). A `data:` image cannot run script.
const DOCS_CSP: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";

/// Paths served to third-party websites through the embeddable widget.
pub fn is_embeddable_path(path: &str) -> bool {
    path == "/widget.js" || path.starts_with("/widget/") || path.starts_with("/api/widget/")
}

/// Where an extractor leaves the decision of the tier it counted (see
/// [`super::AppContext::limit_request`]), for [`rate_headers`] to send.
#[derive(Clone, Default)]
pub struct RateSlot(Arc<Mutex<Option<Decision>>>);

impl RateSlot {
    pub fn fill(&self, decision: Decision) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(decision);
    }

    fn take(&self) -> Option<Decision> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Sends the `X-RateLimit-*` headers of a request admitted by an
/// extractor's tier, unless the handler already sent those of its own.
pub async fn rate_headers(mut request: Request, next: Next) -> Response {
    let slot = RateSlot::default();
    request.extensions_mut().insert(slot.clone());
    let mut response = next.run(request).await;
    if !response.headers().contains_key("x-ratelimit-limit") {
        if let Some(decision) = slot.take() {
            RateHeaders::insert(&decision, response.headers_mut());
        }
    }
    response
}

pub async fn security_headers(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let embeddable = is_embeddable_path(path);
    let api = path.starts_with("/api/");
    let docs = path == "/api/docs";
    let mut response = next.run(request).await;
    apply_security_headers(response.headers_mut(), embeddable);
    if docs {
        response.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(DOCS_CSP),
        );
    }
    if api {
        // API responses carry tokens (logins, widget sessions), transcripts and
        // system prompts: no browser or proxy cache may keep any of them.
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

fn apply_security_headers(headers: &mut HeaderMap, embeddable: bool) {
    let set = |headers: &mut HeaderMap, name: HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(
        headers,
        header::REFERRER_POLICY,
        "strict-origin-when-cross-origin",
    );
    set(
        headers,
        header::STRICT_TRANSPORT_SECURITY,
        "max-age=63072000; includeSubDomains; preload",
    );
    set(
        headers,
        HeaderName::from_static("permissions-policy"),
        "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    );
    if embeddable {
        headers.remove(header::X_FRAME_OPTIONS);
        set(headers, header::CONTENT_SECURITY_POLICY, EMBEDDABLE_CSP);
        set(
            headers,
            HeaderName::from_static("cross-origin-resource-policy"),
            "cross-origin",
        );
    } else {
        set(headers, header::X_FRAME_OPTIONS, "DENY");
        set(headers, header::CONTENT_SECURITY_POLICY, STRICT_CSP);
        set(
            headers,
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        );
        set(
            headers,
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        );
    }
}

/// A request method as a metric label: HTTP lets a client invent methods,
/// and each invented one would otherwise be a new series.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// One request in `agentry_http_requests_in_flight`, also when its client
/// goes away and the handler is dropped mid-way.
struct InFlight(metrics::Gauge);

impl InFlight {
    fn start() -> Self {
        let gauge = metrics::gauge!("agentry_http_requests_in_flight");
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// `agentry_http_requests_total` and `agentry_http_request_duration_seconds`,
/// labelled by the route template (never the raw path, which holds ids).
pub async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(request.method()).to_owned();
    let in_flight = InFlight::start();
    let response = next.run(request).await;
    drop(in_flight);
    let status = response.status().as_u16().to_string();
    metrics::counter!("agentry_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("agentry_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Gives every error response without a JSON body one, so clients can always
/// parse `{"error":{...}}` (axum's own 405 and the body-limit 413 are plain).
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "method not allowed on this path"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "request body is too large"),
        StatusCode::NOT_FOUND => ("not_found", "not found"),
        StatusCode::REQUEST_TIMEOUT => ("timeout", "request took too long"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("unsupported_media_type", "unsupported content type")
        }
        s if s.is_server_error() => ("internal", "internal error"),
        _ => ("bad_request", "bad request"),
    };
    let mut replacement = error_response(status, code, message);
    // Keep headers such as Allow (405) and request ids; drop the old body's framing.
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            replacement
                .headers_mut()
                .insert(name.clone(), value.clone());
        }
    }
    replacement
}

/// A panic in a handler becomes a logged 500 with a JSON body; the process lives on.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = detail, "handler panicked");
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error",
    )
    .into_response()
}
