//! Metrics every pipeline stage reports the same way, so one dashboard row
//! covers each: `agentry_<stage>_total{outcome}` for rate and errors, and
//! `agentry_<stage>_duration_seconds` for latency (each stage with buckets
//! fitted to it, see the service's metrics catalog); and supervisor
//! restarts, `agentry_actor_restarts_total{actor}`.

use std::time::Instant;

/// The stages of the pipeline that count one message each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// One chat turn, from its session's view (labelled by channel).
    ChatTurn,
    /// One knowledge-base query.
    Retriever,
    /// One reply cleaned and released by the guardrails.
    Finalizer,
    /// One tool call run (outcome: its run status; labelled by tool).
    Tool,
    /// One knowledge document chunked, embedded and stored.
    Ingest,
}

impl Stage {
    /// `(counter, histogram)` names.
    pub const fn metric_names(self) -> (&'static str, &'static str) {
        match self {
            Self::ChatTurn => (
                "agentry_chat_turns_total",
                "agentry_chat_turn_duration_seconds",
            ),
            Self::Retriever => (
                "agentry_retriever_queries_total",
                "agentry_retriever_query_duration_seconds",
            ),
            Self::Finalizer => (
                "agentry_finalizer_replies_total",
                "agentry_finalizer_duration_seconds",
            ),
            Self::Tool => (
                "agentry_tool_runs_total",
                "agentry_tool_run_duration_seconds",
            ),
            Self::Ingest => (
                "agentry_ingest_jobs_total",
                "agentry_ingest_duration_seconds",
            ),
        }
    }
}

/// Records one message handled by `stage`, with its outcome and duration.
pub fn record(stage: Stage, outcome: &'static str, started: Instant) {
    let (total, duration) = stage.metric_names();
    metrics::counter!(total, "outcome" => outcome).increment(1);
    metrics::histogram!(duration).record(started.elapsed().as_secs_f64());
}

/// [`record`] with one more bounded label on both metrics (a turn's
/// channel, a tool's name).
pub fn record_labelled(
    stage: Stage,
    label: (&'static str, &'static str),
    outcome: &'static str,
    started: Instant,
) {
    let (total, duration) = stage.metric_names();
    let (key, value) = label;
    metrics::counter!(total, key => value, "outcome" => outcome).increment(1);
    metrics::histogram!(duration, key => value).record(started.elapsed().as_secs_f64());
}

/// Counts a lookup in one of the turn's caches (`agentry_cache_lookups_total{cache,outcome}`),
/// so a warm turn can be told from a cold one.
pub fn record_cache_lookup(cache: &'static str, hit: bool) {
    let outcome = if hit { "hit" } else { "miss" };
    metrics::counter!("agentry_cache_lookups_total", "cache" => cache, "outcome" => outcome)
        .increment(1);
}

/// Records a supervisor replacing a crashed child.
pub fn record_restart(actor: &'static str) {
    metrics::counter!("agentry_actor_restarts_total", "actor" => actor).increment(1);
    tracing::warn!(actor, "supervisor restarting a crashed child");
}

/// Counts the tokens a provider billed for one model round
/// (`agentry_llm_tokens_total{provider,kind}`; providers are a fixed set in code).
pub fn record_tokens(provider: &str, usage: &crate::llm::Usage) {
    for (kind, tokens) in [
        ("prompt", usage.prompt_tokens),
        ("completion", usage.completion_tokens),
    ] {
        metrics::counter!("agentry_llm_tokens_total", "provider" => provider.to_owned(), "kind" => kind)
            .increment(u64::from(tokens));
    }
}
