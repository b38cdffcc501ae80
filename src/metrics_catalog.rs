//! Every metric agentry exports, in one table: its name, kind, help text
//! and (for histograms) buckets fitted to what it times. The Prometheus
//! recorder is configured from it, the dashboard and alert rules name only
//! metrics listed here (tests hold both to it), and a metric recorded
//! anywhere without an entry fails the catalog test.
//!
//! Naming: `agentry_<stage>_…`; counters end in `_total`, durations in
//! `_seconds`, gauges name what they hold. Labels are bounded sets written in
//! code (route templates, outcomes, tiers, providers, tools, channels, jobs),
//! never ids, URLs, emails or phone numbers.

/// What kind of series a metric is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram(&'static [f64]),
}

#[derive(Clone, Copy, Debug)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

/// The limiter decides in Redis in well under a millisecond.
pub const SUB_MILLISECOND: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];
/// In-memory stages (retriever search, guardrails) and Redis round trips.
pub const FAST: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Requests and turns: milliseconds when warm, seconds behind a slow model.
pub const REQUEST: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Calls to other services (LLM providers, webhook receivers, Twilio, clamd).
pub const REMOTE: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0,
];
/// Background work: ingest, scheduled jobs, scans, and how late retries run.
pub const BACKGROUND: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
];
/// How many decisions one limiter shard sends to Redis at once.
pub const BATCH_SIZE: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

const fn counter(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Counter,
        help,
    }
}

const fn gauge(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Gauge,
        help,
    }
}

const fn histogram(name: &'static str, buckets: &'static [f64], help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Histogram(buckets),
        help,
    }
}

pub const METRICS: &[Metric] = &[
    gauge("agentry_build_info", "Always 1; the version this instance runs as a label."),
    // The HTTP edge.
    counter("agentry_http_requests_total", "HTTP requests answered, by method, route template and status."),
    histogram("agentry_http_request_duration_seconds", REQUEST, "HTTP request latency until the response head, by method and route template."),
    gauge("agentry_http_requests_in_flight", "HTTP requests being handled now."),
    counter("agentry_cors_origin_lookups_total", "Widget origin checks that had to ask PostgreSQL (the origin cache missed)."),
    counter("agentry_auth_lockouts_total", "Clients locked out after repeated failed sign-ins."),
    // Widget sessions.
    counter("agentry_widget_session_operations_total", "Widget session reads and writes in Redis, by operation and outcome."),
    histogram("agentry_widget_session_operation_duration_seconds", FAST, "Widget session operation latency, by operation."),
    // Chat sessions and turns.
    gauge("agentry_chat_sessions", "Chat session actors alive on this instance."),
    counter("agentry_chat_turns_total", "Chat turns run, by channel and outcome."),
    histogram("agentry_chat_turn_duration_seconds", REQUEST, "Chat turn latency inside its session (retrieval, model rounds, tools, storing), by channel."),
    counter("agentry_cache_lookups_total", "Lookups in a turn's in-memory caches, by cache and hit or miss."),
    // Retriever.
    counter("agentry_retriever_queries_total", "Knowledge-base queries, by outcome (empty: the namespace holds nothing)."),
    histogram("agentry_retriever_query_duration_seconds", FAST, "Knowledge-base query latency: embedding the question and the hybrid search."),
    counter("agentry_retriever_loads_total", "Namespace snapshots loaded into memory, by kind."),
    histogram("agentry_retriever_load_duration_seconds", BACKGROUND, "Namespace snapshot load latency, by kind."),
    counter("agentry_retriever_evictions_total", "Namespace snapshots evicted from the resident cache."),
    gauge("agentry_retriever_resident_namespaces", "Namespace snapshots held in memory."),
    gauge("agentry_retriever_resident_bytes", "Bytes of namespace snapshots held in memory."),
    // Guardrail finalizer.
    counter("agentry_finalizer_replies_total", "Reply fragments cleaned by the guardrail finalizer, by outcome."),
    histogram("agentry_finalizer_duration_seconds", FAST, "Guardrail finalizer latency per fragment."),
    counter("agentry_guardrail_removals_total", "Sentences or spots the guardrails removed, by rule."),
    // LLM providers.
    counter("agentry_llm_requests_total", "Completion requests to LLM providers, by provider and outcome."),
    histogram("agentry_llm_request_duration_seconds", REMOTE, "Completion request latency including retries, by provider."),
    counter("agentry_llm_retries_total", "Completion and embedding requests retried, by provider."),
    counter("agentry_llm_tokens_total", "Tokens the provider billed, by provider and kind (prompt or completion)."),
    counter("agentry_llm_embedding_requests_total", "Embedding requests, by provider and outcome."),
    histogram("agentry_llm_embedding_request_duration_seconds", REMOTE, "Embedding request latency including retries, by provider."),
    // Tools.
    counter("agentry_tool_runs_total", "Tool calls run, by tool and run status."),
    histogram("agentry_tool_run_duration_seconds", REQUEST, "Tool call latency, by tool."),
    counter("agentry_mcp_tool_calls_total", "MCP tool calls, by tool."),
    counter("agentry_mcp_tool_errors_total", "MCP tool calls that failed, by tool."),
    // Live conversations (takeover).
    counter("agentry_live_events_total", "Live conversation events, by outcome (read from the stream, publish_failed, read_failed)."),
    gauge("agentry_live_streams", "Event streams open on this instance, by audience (widget, dashboard)."),
    // Outbox relay.
    counter("agentry_outbox_relay_runs_total", "Outbox relay passes, by outcome (published, idle, error)."),
    histogram("agentry_outbox_relay_duration_seconds", FAST, "Outbox relay pass latency."),
    counter("agentry_outbox_published_total", "Outbox events published to the webhook stream."),
    gauge("agentry_outbox_backlog", "Outbox events not yet published (cluster-wide: every instance reports the same table)."),
    gauge("agentry_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox event."),
    // Webhook dispatcher.
    counter("agentry_webhook_deliveries_total", "Webhook delivery attempts, by resulting state."),
    histogram("agentry_webhook_attempt_duration_seconds", REMOTE, "Webhook delivery attempt latency, by resulting state."),
    histogram("agentry_webhook_retry_lateness_seconds", BACKGROUND, "How long after its due time a retry ran."),
    gauge("agentry_webhook_stream_length", "Entries in the webhook event stream."),
    gauge("agentry_webhook_pending", "Webhook stream entries delivered to a dispatcher but not yet acknowledged."),
    gauge("agentry_webhook_oldest_pending_age_seconds", "Age of the oldest unacknowledged webhook stream entry."),
    gauge("agentry_webhook_delayed", "Webhook retries waiting for their due time."),
    // Rate limits.
    counter("agentry_rate_limit_decisions_total", "Rate-limit decisions, by tier, outcome and source (redis: cluster-wide; local: this instance while Redis is away)."),
    counter("agentry_rate_limit_unavailable_total", "Rate-limit decisions made without Redis, by tier."),
    histogram("agentry_rate_limit_check_duration_seconds", SUB_MILLISECOND, "Rate-limit check latency, from ask to decision."),
    histogram("agentry_rate_limit_batch_size", BATCH_SIZE, "Decisions one shard sent to Redis in one pipeline."),
    gauge("agentry_rate_limit_shards_local", "Limiter shards deciding on their own because Redis is unavailable."),
    // Knowledge ingest.
    counter("agentry_ingest_jobs_total", "Knowledge documents ingested, by outcome."),
    histogram("agentry_ingest_duration_seconds", BACKGROUND, "Knowledge document ingest latency: chunking, embedding, storing."),
    gauge("agentry_ingest_backlog", "Ingest jobs queued or in progress."),
    gauge("agentry_ingest_oldest_age_seconds", "Age of the oldest queued or in-progress ingest job."),
    // Files.
    counter("agentry_file_uploads_total", "Files uploaded, by the scan status they started with."),
    counter("agentry_file_scans_total", "File scans by clamd, by outcome."),
    histogram("agentry_file_scan_duration_seconds", REMOTE, "File scan latency, by outcome."),
    gauge("agentry_file_scan_backlog", "Files waiting for their scan."),
    gauge("agentry_file_scan_oldest_age_seconds", "Age of the oldest file waiting for its scan."),
    // Scheduled jobs.
    counter("agentry_job_runs_total", "Scheduled job runs, by scheduled_job and outcome (skipped: another instance claimed the tick)."),
    histogram("agentry_job_duration_seconds", BACKGROUND, "Scheduled job run latency, by job."),
    gauge("agentry_job_last_success_timestamp_seconds", "Unix time of each job's last successful run on this instance."),
    gauge("agentry_job_interval_seconds", "Each job's time between two scheduled runs (from its cron schedule)."),
    // SMS and voice.
    counter("agentry_sms_outbound_total", "Outbound text messages, by outcome."),
    gauge("agentry_sms_outbound_backlog", "Outbound texts waiting to be sent (first attempts and retries)."),
    gauge("agentry_sms_outbound_oldest_age_seconds", "Age of the oldest outbound text waiting to be sent."),
    histogram("agentry_sms_send_duration_seconds", REMOTE, "Latency of one outbound text's request to Twilio."),
    counter("agentry_sms_keywords_total", "Inbound STOP/START/HELP keywords, by keyword."),
    counter("agentry_sms_late_replies_total", "SMS replies sent through the REST API because the turn outlasted the webhook."),
    counter("agentry_voice_calls_total", "Inbound voice calls answered."),
    counter("agentry_voice_transfers_total", "Voice calls transferred to a person."),
    counter("agentry_twilio_signature_refusals_total", "Twilio webhooks refused for a bad signature."),
    counter("agentry_recordings_total", "Call recordings stored, by source and outcome."),
    counter("agentry_recording_transcriptions_total", "Recording transcriptions, by outcome."),
    histogram("agentry_recording_transcription_duration_seconds", BACKGROUND, "Recording transcription latency (speech to text and storing)."),
    // Privacy.
    counter("agentry_privacy_exports_total", "Data subject exports, by key kind."),
    counter("agentry_privacy_erasures_total", "Data subject erasures, by key kind."),
    // Supervision and saturation.
    counter("agentry_actor_restarts_total", "Crashed actors replaced by their supervisor, by actor."),
    gauge("agentry_dependency_up", "1 when the dependency answered this instance's last check, by dependency."),
    histogram("agentry_dependency_check_duration_seconds", FAST, "Dependency check (ping) latency, by dependency."),
    gauge("agentry_db_pool_connections", "PostgreSQL pool connections, by state (busy or idle)."),
    gauge("agentry_db_pool_max_connections", "The PostgreSQL pool's connection limit."),
    gauge("agentry_redis_connections", "Redis client connections, by pool (commands or blocking) and state."),
];

/// The catalog entry for `name`, also matching a histogram's or summary's
/// `_bucket`, `_sum` and `_count` series.
pub fn find(name: &str) -> Option<&'static Metric> {
    METRICS
        .iter()
        .find(|metric| metric.name == name)
        .or_else(|| {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))?;
            METRICS
                .iter()
                .find(|metric| metric.name == base && matches!(metric.kind, Kind::Histogram(_)))
        })
}

/// Gives every catalogued metric its help text (the `# HELP` lines).
pub fn describe_all() {
    for metric in METRICS {
        match metric.kind {
            Kind::Counter => metrics::describe_counter!(metric.name, metric.help),
            Kind::Gauge => metrics::describe_gauge!(metric.name, metric.help),
            Kind::Histogram(_) => metrics::describe_histogram!(metric.name, metric.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for metric in METRICS {
            assert!(seen.insert(metric.name), "{} listed twice", metric.name);
            assert!(metric.name.starts_with("agentry_"), "{}", metric.name);
            let is_total = metric.name.ends_with("_total");
            assert_eq!(
                is_total,
                metric.kind == Kind::Counter,
                "{}: counters and only counters end in _total",
                metric.name
            );
            if metric.name.ends_with("_seconds") && metric.kind != Kind::Gauge {
                assert!(matches!(metric.kind, Kind::Histogram(_)), "{}", metric.name);
            }
            if let Kind::Histogram(buckets) = metric.kind {
                assert!(
                    buckets.windows(2).all(|pair| pair[0] < pair[1]),
                    "{}",
                    metric.name
                );
            }
            assert!(!metric.help.is_empty(), "{}", metric.name);
        }
    }

    #[test]
    fn histogram_series_resolve_to_their_metric() {
        assert!(find("agentry_chat_turn_duration_seconds_bucket").is_some());
        assert!(find("agentry_chat_turn_duration_seconds_count").is_some());
        assert!(find("agentry_chat_turns_total_count").is_none());
        assert!(find("agentry_no_such_metric").is_none());
    }
}
