//! W3C Trace Context at the HTTP edge: every request is one trace, whose id
//! is in the request's span (and so in every log line written inside it, see
//! [`super::log_format`]) and in the `traceparent` response header.
//!
//! An incoming `traceparent` is honoured only from a peer in
//! `http.trusted_proxies` (the load balancer or gateway that starts traces);
//! from anyone else, and whenever it is malformed, it is ignored and the
//! request starts a trace of its own. A public client choosing its trace id
//! could otherwise splice its requests into another trace or make one trace
//! id name several unrelated turns in the logs.
//!
//! With OTLP export on (see [`super::otlp`]) the ids are OpenTelemetry's own,
//! so the exported trace and the logs share one id; without it they are
//! drawn here, at the cost of a random number per request.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags, TraceState};
use rand::RngCore;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::registry::LookupSpan;

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// A trace id: 16 bytes, never all zero; shown as 32 lowercase hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceId(u128);

impl TraceId {
    pub fn random() -> Self {
        loop {
            let mut bytes = [0u8; 16];
            rand::thread_rng().fill_bytes(&mut bytes);
            let id = u128::from_be_bytes(bytes);
            if id != 0 {
                return Self(id);
            }
        }
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A span id: 8 bytes, never all zero; shown as 16 lowercase hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpanId(u64);

impl SpanId {
    pub fn random() -> Self {
        loop {
            let id = rand::thread_rng().next_u64();
            if id != 0 {
                return Self(id);
            }
        }
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Where a request sits in its trace: the trace, the request's own span, and
/// whether the trace is sampled (exported).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

impl TraceContext {
    /// The `traceparent` naming this span, as a response header value.
    pub fn traceparent(&self) -> HeaderValue {
        let flags = if self.sampled { "01" } else { "00" };
        HeaderValue::try_from(format!("00-{}-{}-{flags}", self.trace_id, self.span_id))
            .expect("hex digits and dashes are a valid header value")
    }

    fn from_otel(context: &SpanContext) -> Option<Self> {
        context.is_valid().then(|| Self {
            trace_id: TraceId(u128::from_be_bytes(context.trace_id().to_bytes())),
            span_id: SpanId(u64::from_be_bytes(context.span_id().to_bytes())),
            sampled: context.is_sampled(),
        })
    }
}

/// A parsed `traceparent` header (version 00, or a later version's first four fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub parent_id: SpanId,
    pub sampled: bool,
}

impl TraceParent {
    /// `None` for anything the W3C grammar refuses: wrong lengths, uppercase
    /// or non-hex digits, all-zero ids, version `ff`, or extra fields on version 00.
    pub fn parse(value: &str) -> Option<Self> {
        let bytes = value.as_bytes();
        if bytes.len() < 55 || (bytes.len() > 55 && bytes[55] != b'-') {
            return None;
        }
        let field = |range: std::ops::Range<usize>| -> Option<&str> {
            let text = value.get(range)?;
            text.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                .then_some(text)
        };
        let version = field(0..2)?;
        if version == "ff" || (version == "00" && bytes.len() != 55) {
            return None;
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let trace_id = u128::from_str_radix(field(3..35)?, 16).ok()?;
        let parent_id = u64::from_str_radix(field(36..52)?, 16).ok()?;
        let flags = u8::from_str_radix(field(53..55)?, 16).ok()?;
        (trace_id != 0 && parent_id != 0).then_some(Self {
            trace_id: TraceId(trace_id),
            parent_id: SpanId(parent_id),
            sampled: flags & 1 == 1,
        })
    }

    /// The request's `traceparent`, if it has exactly one and it parses.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let mut values = headers.get_all(TRACEPARENT).iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        Self::parse(value.to_str().ok()?)
    }

    fn otel_context(&self) -> opentelemetry::Context {
        let flags = if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let parent = SpanContext::new(
            opentelemetry::trace::TraceId::from_bytes(self.trace_id.0.to_be_bytes()),
            opentelemetry::trace::SpanId::from_bytes(self.parent_id.0.to_be_bytes()),
            flags,
            true,
            TraceState::default(),
        );
        opentelemetry::Context::new().with_remote_span_context(parent)
    }
}

/// Decides whether a request's `traceparent` is believed: only from a
/// trusted proxy (`http.trusted_proxies`), judged by the socket's peer.
#[derive(Clone, Debug, Default)]
pub struct TraceTrust(Arc<[IpNet]>);

impl TraceTrust {
    pub fn new(trusted_proxies: &[IpNet]) -> Self {
        Self(trusted_proxies.into())
    }

    /// The incoming parent to continue, if any and believed.
    pub fn incoming<B>(&self, request: &axum::http::Request<B>) -> Option<TraceParent> {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()?
            .0
            .ip();
        if !self.0.iter().any(|net| net.contains(&peer)) {
            return None;
        }
        TraceParent::from_headers(request.headers())
    }
}

/// Filled by the request span ([`request_span`]) and read by
/// [`respond_with_traceparent`]: the span is made inside the trace layer,
/// the header is set outside it.
#[derive(Clone, Default)]
struct TraceSlot(Arc<OnceLock<TraceContext>>);

pub use agentry_actors::TRACE_TARGET;

/// The span of one HTTP request: its method, path (never the query, which
/// may carry tokens), request id and trace id. It continues `incoming`
/// when given, and its [`TraceContext`] is kept for the log lines and the
/// response header.
pub fn request_span<B>(request: &axum::http::Request<B>, incoming: Option<TraceParent>) -> Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let span = tracing::info_span!(
        target: TRACE_TARGET,
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id,
        trace_id = tracing::field::Empty,
        otel.kind = "server",
    );
    if let Some(parent) = &incoming {
        // Without the OpenTelemetry layer (export off) there is nothing to set.
        let _ = span.set_parent(parent.otel_context());
    }
    // With export on, OpenTelemetry drew the ids (continuing `incoming`).
    let exported = TraceContext::from_otel(span.context().span().span_context());
    let context = exported.unwrap_or_else(|| TraceContext {
        trace_id: incoming.map_or_else(TraceId::random, |parent| parent.trace_id),
        span_id: SpanId::random(),
        sampled: incoming.is_some_and(|parent| parent.sampled),
    });
    span.record("trace_id", tracing::field::display(context.trace_id));
    remember(&span, context);
    if let Some(slot) = request.extensions().get::<TraceSlot>() {
        let _ = slot.0.set(context);
    }
    span
}

/// Keeps `context` with `span` in the registry, where the log formatter
/// finds it for every line written inside the span or its children.
fn remember(span: &Span, context: TraceContext) {
    span.with_subscriber(|(id, dispatch)| {
        if let Some(registry) = dispatch.downcast_ref::<tracing_subscriber::Registry>() {
            if let Some(data) = registry.span(id) {
                data.extensions_mut().insert(context);
            }
        }
    });
}

/// `tokio::spawn` in the caller's span: what a request hands to a task of its
/// own (a streamed reply's forwarding, a late SMS reply) still logs under the
/// request's trace, and the span lasts until the task ends.
pub fn spawn_in_span<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(tracing::Instrument::instrument(future, Span::current()))
}

/// Middleware outside the trace layer: every response names its trace in
/// `traceparent`, so a client (or a support ticket) can quote it.
pub async fn respond_with_traceparent(mut request: Request, next: Next) -> Response {
    let slot = TraceSlot::default();
    request.extensions_mut().insert(slot.clone());
    let mut response = next.run(request).await;
    if let Some(context) = slot.0.get() {
        response
            .headers_mut()
            .insert(TRACEPARENT, context.traceparent());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_parses_into_its_ids_and_flag() {
        let parent = TraceParent::parse(VALID).unwrap();
        assert_eq!(
            parent.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parent.parent_id.to_string(), "00f067aa0ba902b7");
        assert!(parent.sampled);
        let unsampled = TraceParent::parse(&VALID.replace("-01", "-00")).unwrap();
        assert!(!unsampled.sampled);
        // A later version may add fields; its first four are read.
        assert!(TraceParent::parse(&format!("{}-extra", VALID.replacen("00", "01", 1))).is_some());
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "",
            "garbage",
            &VALID.to_uppercase(),
            &VALID[..54],
            &format!("{VALID}0"),
            &format!("{VALID}-extra"),
            &VALID.replacen("00", "ff", 1),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?} parsed");
        }
    }

    #[test]
    fn two_traceparent_headers_name_no_parent() {
        let mut headers = HeaderMap::new();
        headers.append(TRACEPARENT, HeaderValue::from_static(VALID));
        assert!(TraceParent::from_headers(&headers).is_some());
        headers.append(TRACEPARENT, HeaderValue::from_static(VALID));
        assert_eq!(TraceParent::from_headers(&headers), None);
    }

    #[test]
    fn a_response_traceparent_round_trips() {
        let context = TraceContext {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            sampled: false,
        };
        let header = context.traceparent();
        let parsed = TraceParent::parse(header.to_str().unwrap()).unwrap();
        assert_eq!(parsed.trace_id, context.trace_id);
        assert_eq!(parsed.parent_id, context.span_id);
        assert!(!parsed.sampled);
    }

    #[test]
    fn only_a_trusted_peer_continues_a_trace() {
        let request = |peer: &str| {
            let mut request = axum::http::Request::new(());
            request
                .headers_mut()
                .insert(TRACEPARENT, HeaderValue::from_static(VALID));
            request
                .extensions_mut()
                .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
            request
        };
        let trust = TraceTrust::new(&["10.0.0.0/8".parse().unwrap()]);
        assert!(trust.incoming(&request("10.1.2.3:5000")).is_some());
        assert_eq!(trust.incoming(&request("203.0.113.9:5000")), None);
        assert_eq!(
            TraceTrust::default().incoming(&request("10.1.2.3:5000")),
            None
        );
    }
}
