//! Logs (tracing), traces (spans, optionally exported over OTLP) and
//! metrics (Prometheus) set-up.

pub mod log_format;
pub mod otlp;
pub mod trace_context;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::filter::{filter_fn, FilterExt, Targets};
use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::configuration::{LogFormat, LogSettings, TelemetrySettings};
use crate::metrics_catalog::{self, Kind};

/// Dependencies that log what they process at their debug or trace levels:
/// the HTML parser behind the sanitizer quotes every reply it cleans, the
/// MCP SDK its messages, WebSocket and HTTP/2 codecs their frames (a caller's
/// audio), PDF readers the text they extract. Capped whatever the filter
/// asks, so that `RUST_LOG=trace` still logs no message body.
const QUIET_DEPENDENCIES: &[&str] = &[
    "html5ever=warn",
    "markup5ever=warn",
    "ammonia=warn",
    "rmcp=info",
    "tungstenite=info",
    "tokio_tungstenite=info",
    "h2=info",
    "pdf_extract=warn",
    "lopdf=warn",
];

/// The configured filter (`log.filter`, or `RUST_LOG`) with [`QUIET_DEPENDENCIES`]
/// capped, and the spans that carry a trace id (the request's, the chat
/// turn's) always on: a warning inside a turn names its trace under any filter.
pub fn log_filter(configured: &str) -> EnvFilter {
    let filter = EnvFilter::try_new(configured).unwrap_or_else(|_| EnvFilter::new("info"));
    let always = format!("{}=info", agentry_actors::TRACE_TARGET);
    QUIET_DEPENDENCIES
        .iter()
        .copied()
        .chain([always.as_str()])
        .fold(filter, |filter, directive| {
            filter.add_directive(directive.parse().expect("a valid directive"))
        })
}

/// A per-layer filter that is asked at every span and event, never
/// trusted to have decided once per callsite.
///
/// Why: with per-layer filters, tracing-subscriber (0.3.23) records each
/// filter's verdict in a thread-local map during `enabled` and consumes it
/// in `new_span`/`on_event`. A callsite whose interest is cached as
/// `always` skips `enabled` and reads the map as the thread's previous
/// pass left it; a pass that no filter enabled (a `log` record bridged by
/// tracing-log, an `enabled!` check) leaves "disabled" bits behind. The
/// next `always` span on that thread, a request's span say, is then
/// silently off for every layer: its lines lose their trace id and its
/// export starts a trace of its own (seen as about half of the OTLP test's
/// runs). Asking every time keeps the map fresh, for a few nanoseconds.
struct AskEveryTime<F>(F);

impl<S, F: tracing_subscriber::layer::Filter<S>> tracing_subscriber::layer::Filter<S>
    for AskEveryTime<F>
{
    fn enabled(
        &self,
        metadata: &tracing::Metadata<'_>,
        cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        self.0.enabled(metadata, cx)
    }

    fn callsite_enabled(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        match self.0.callsite_enabled(metadata).is_never() {
            true => tracing::subscriber::Interest::never(),
            false => tracing::subscriber::Interest::sometimes(),
        }
    }

    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        self.0.event_enabled(event, cx)
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        self.0.max_level_hint()
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        cx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.on_new_span(attrs, id, cx)
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        cx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.on_record(id, values, cx)
    }

    fn on_enter(&self, id: &tracing::span::Id, cx: tracing_subscriber::layer::Context<'_, S>) {
        self.0.on_enter(id, cx)
    }

    fn on_exit(&self, id: &tracing::span::Id, cx: tracing_subscriber::layer::Context<'_, S>) {
        self.0.on_exit(id, cx)
    }

    fn on_close(&self, id: tracing::span::Id, cx: tracing_subscriber::layer::Context<'_, S>) {
        self.0.on_close(id, cx)
    }
}

/// What [`init_logging`] started: the span export, when configured.
#[derive(Default)]
pub struct Telemetry {
    exporter: Option<otlp::Exporter>,
}

impl Telemetry {
    /// Flushes the spans still batched (on graceful shutdown).
    pub async fn shutdown(self) {
        if let Some(exporter) = self.exporter {
            exporter.shutdown().await;
        }
    }
}

/// Log lines in the configured format, filtered by the configured filter.
fn log_layer<W>(settings: &LogSettings, writer: W) -> Box<dyn Layer<Registry> + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = AskEveryTime(log_filter(&settings.filter));
    match settings.format {
        LogFormat::Json => {
            let format = tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(true);
            tracing_subscriber::fmt::layer()
                .fmt_fields(JsonFields::new())
                .event_format(log_format::WithTraceId(format))
                .with_writer(writer)
                .with_filter(filter)
                .boxed()
        }
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    }
}

/// Installs the global subscriber: log lines in the configured format, and
/// with `telemetry.otlp_endpoint` set, agentry's spans exported. Later calls
/// are no-ops (tests build many apps). Must run inside a Tokio runtime when
/// export is on.
pub fn init_logging(
    settings: &LogSettings,
    telemetry: &TelemetrySettings,
) -> anyhow::Result<Telemetry> {
    let logs = log_layer(settings, std::io::stderr);
    let exporter = match telemetry.traces_url() {
        Some(url) => Some(otlp::Exporter::start(telemetry, &url)?),
        None => None,
    };
    // Spans only (a log line's text stays out of the traces), and only
    // agentry's own, whatever the log filter says.
    let exported = exporter.as_ref().map(|exporter| {
        tracing_opentelemetry::layer()
            .with_tracer(exporter.tracer())
            .with_threads(false)
            .with_filter(AskEveryTime(
                filter_fn(|metadata| metadata.is_span())
                    .and(Targets::new().with_target("agentry", tracing::Level::DEBUG)),
            ))
    });
    let installed = Registry::default().with(logs).with(exported).try_init();
    Ok(match installed {
        Ok(()) => Telemetry { exporter },
        // Another subscriber was installed first: nothing of ours is used.
        Err(_) => Telemetry::default(),
    })
}

/// The process-wide Prometheus recorder, installed on first use with each
/// histogram's buckets and every metric's help text from the catalog.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = metrics_catalog::METRICS.iter().fold(
                PrometheusBuilder::new(),
                |builder, metric| match metric.kind {
                    Kind::Histogram(buckets) => builder
                        .set_buckets_for_metric(Matcher::Full(metric.name.into()), buckets)
                        .expect("bucket lists are non-empty"),
                    Kind::Counter | Kind::Gauge => builder,
                },
            );
            let handle = builder
                .install_recorder()
                .expect("no other metrics recorder is installed");
            metrics_catalog::describe_all();
            metrics::gauge!("agentry_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            handle
        })
        .clone()
}

/// Seconds from `since_ms` (Unix milliseconds) until now, never negative:
/// the age gauges of queues.
pub fn age_secs(since_ms: i64) -> f64 {
    ((chrono::Utc::now().timestamp_millis() - since_ms).max(0)) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_that_quote_their_input_stay_capped_at_trace() {
        let filter = log_filter("trace").to_string();
        for cap in QUIET_DEPENDENCIES {
            assert!(filter.contains(cap), "{cap} missing from {filter}");
        }
        assert!(filter.contains("trace"), "{filter}");
    }

    /// Log lines written to a buffer, as the service would write them.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Logs a request with a turn inside it (the turn's span made as the
    /// pipeline makes it, entered on another thread as an actor would), and
    /// returns the lines and the request's trace id.
    fn log_a_turn(format: LogFormat, filter: &str) -> (Vec<String>, String) {
        let captured = Captured::default();
        let writer = captured.clone();
        let settings = LogSettings {
            filter: filter.into(),
            format,
        };
        let subscriber = Registry::default().with(log_layer(&settings, move || writer.clone()));
        let trace_id = tracing::subscriber::with_default(subscriber, || {
            let request = axum::http::Request::get("/api/widget/messages?token=t")
                .body(())
                .unwrap();
            let span = trace_context::request_span(&request, None);
            let trace_id = span
                .with_subscriber(|(id, dispatch)| {
                    let registry = dispatch.downcast_ref::<Registry>()?;
                    let data = tracing_subscriber::registry::LookupSpan::span(registry, id)?;
                    let context = *data.extensions().get::<trace_context::TraceContext>()?;
                    Some(context.trace_id.to_string())
                })
                .flatten()
                .expect("the request span keeps its trace");
            let turn = span.in_scope(|| {
                tracing::info_span!(target: agentry_actors::TRACE_TARGET, "chat_turn", channel = "widget")
            });
            let dispatch = tracing::dispatcher::get_default(Clone::clone);
            std::thread::spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    turn.in_scope(|| {
                        tracing::debug_span!("retrieve")
                            .in_scope(|| tracing::warn!(kind = "full", "inside a stage"));
                    });
                })
            })
            .join()
            .unwrap();
            span.in_scope(|| tracing::warn!("the response"));
            tracing::warn!("outside any request");
            trace_id
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        (text.lines().map(without_colours).collect(), trace_id)
    }

    /// `line` without its ANSI colour sequences (`ESC [ … m`).
    fn without_colours(line: &str) -> String {
        let mut plain = String::with_capacity(line.len());
        let mut rest = line;
        while let Some(start) = rest.find('\x1b') {
            plain.push_str(&rest[..start]);
            rest = rest[start..]
                .find('m')
                .map_or("", |end| &rest[start + end + 1..]);
        }
        plain.push_str(rest);
        plain
    }

    #[test]
    fn json_lines_inside_a_request_name_its_trace_at_the_top_level() {
        for filter in ["debug", "warn"] {
            let (lines, trace_id) = log_a_turn(LogFormat::Json, filter);
            assert_eq!(trace_id.len(), 32, "{trace_id}");
            assert_eq!(lines.len(), 3, "{lines:#?}");
            let entries: Vec<serde_json::Value> = lines
                .iter()
                .map(|line| serde_json::from_str(line).expect("each line is JSON"))
                .collect();
            assert_eq!(entries[0]["trace_id"], trace_id.as_str(), "{}", lines[0]);
            assert_eq!(entries[0]["message"], "inside a stage");
            assert_eq!(entries[0]["kind"], "full");
            assert_eq!(entries[1]["trace_id"], trace_id.as_str(), "{}", lines[1]);
            assert_eq!(entries[1]["span"]["name"], "request");
            assert_eq!(entries[1]["span"]["trace_id"], trace_id.as_str());
            assert!(
                entries[2].get("trace_id").is_none(),
                "a line of no request names no trace: {}",
                lines[2]
            );
            for line in &lines {
                assert!(
                    !line.contains("token=t"),
                    "the query string is logged: {line}"
                );
            }
        }
    }

    #[test]
    fn pretty_lines_inside_a_request_name_its_trace() {
        let (lines, trace_id) = log_a_turn(LogFormat::Pretty, "debug");
        assert_eq!(lines.len(), 3, "{lines:#?}");
        for line in &lines[..2] {
            assert!(line.contains(&format!("trace_id={trace_id}")), "{line}");
        }
        assert!(lines[0].contains("chat_turn"), "{}", lines[0]);
        assert!(!lines[2].contains("trace_id"), "{}", lines[2]);
    }
}
