//! Logs (tracing) and metrics (Prometheus) set-up.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::configuration::{LogFormat, LogSettings};
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

/// The configured filter (`log.filter`, or `RUST_LOG`) with [`QUIET_DEPENDENCIES`] capped.
pub fn log_filter(configured: &str) -> EnvFilter {
    let filter = EnvFilter::try_new(configured).unwrap_or_else(|_| EnvFilter::new("info"));
    QUIET_DEPENDENCIES.iter().fold(filter, |filter, cap| {
        filter.add_directive(cap.parse().expect("a valid directive"))
    })
}

/// Installs the global log subscriber; later calls are no-ops (tests build many apps).
pub fn init_logging(settings: &LogSettings) {
    let filter = log_filter(&settings.filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
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
}
