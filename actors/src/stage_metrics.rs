//! Metrics every pipeline stage reports the same way, so one dashboard covers
//! them all: `agentry_stage_messages_total{stage,outcome}` and
//! `agentry_stage_duration_seconds{stage}`; and supervisor restarts,
//! `agentry_actor_restarts_total{actor}`.

use std::time::Instant;

/// The stages, as metric label values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    ChatSession,
    RagRetriever,
    Llm,
    GuardrailFinalizer,
    /// One tool call run (outcome: its run status).
    Tool,
    KbIngest,
}

impl Stage {
    pub fn label(self) -> &'static str {
        match self {
            Self::ChatSession => "chat_session",
            Self::RagRetriever => "rag_retriever",
            Self::Llm => "llm",
            Self::GuardrailFinalizer => "guardrail_finalizer",
            Self::Tool => "tool",
            Self::KbIngest => "kb_ingest",
        }
    }
}

/// Records one message handled by `stage`, with its outcome and duration.
pub fn record(stage: Stage, outcome: &'static str, started: Instant) {
    metrics::counter!("agentry_stage_messages_total", "stage" => stage.label(), "outcome" => outcome).increment(1);
    metrics::histogram!("agentry_stage_duration_seconds", "stage" => stage.label())
        .record(started.elapsed().as_secs_f64());
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
