//! Logs (tracing) and metrics (Prometheus) set-up.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::configuration::{LogFormat, LogSettings};

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

/// Latency buckets (seconds) for every `*_seconds` histogram.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("bucket list is non-empty")
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
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
