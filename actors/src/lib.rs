//! agentry's pipeline stages and the ports they depend on.
//!
//! This crate knows nothing of HTTP, SQL or Redis wire details: it declares the
//! ports it needs as traits ([`ports`]) and the service crate implements them.
//! Identifier newtypes ([`ids`]) and the redacting [`Secret`] wrapper live here
//! because both sides of every port speak them.

pub mod chat_session;
pub mod contact;
pub mod guardrail_finalizer;
pub mod guardrails;
pub mod ids;
pub mod knowledge;
pub mod llm;
pub mod pii;
pub mod pipeline;
pub mod ports;
pub mod prompt;
pub mod rag_retriever;
pub mod resident;
pub mod secret;
pub mod stage_metrics;
pub mod supervisor;
pub mod tenant_cache;
pub mod tools;

pub use ids::{AgentId, ConversationId, OperatorId, TenantId, UserId, WidgetId};
pub use secret::Secret;

/// The target of the spans that carry a trace id (an HTTP request's, a chat
/// turn's): the service enables it whatever the log filter, so a warning
/// inside a turn still names its trace when `info` lines are filtered out.
pub const TRACE_TARGET: &str = "agentry::trace";

#[cfg(test)]
pub(crate) mod test_support {
    /// Property tests run `cases` cases; failures are reported, not written
    /// into the source tree.
    pub fn property_config(cases: u32) -> proptest::prelude::ProptestConfig {
        proptest::prelude::ProptestConfig {
            cases,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        }
    }
}
