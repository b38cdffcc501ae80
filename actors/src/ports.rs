//! The ports this crate's stages need from the outside world.
//!
//! Implemented in the service crate (Redis, PostgreSQL, HTTP); stages and their
//! unit tests depend only on these traits.

use std::time::Duration;

use async_trait::async_trait;

use crate::ids::{AgentId, ConversationId, TenantId};
use crate::llm::{ChatMessage, LlmError, LlmProvider, ToolCall, Usage};

/// A durable stream of work shared by every instance (Redis streams underneath).
///
/// Delivery is at least once: an entry read by a consumer stays pending until it
/// is acknowledged, and entries left pending by a dead consumer can be reclaimed
/// by another after `min_idle`.
#[async_trait]
pub trait StreamBus: Send + Sync + 'static {
    /// Appends `payload` to `stream`, trimming the stream to roughly its configured
    /// maximum length. Returns the entry id.
    async fn publish(&self, stream: StreamName, payload: &str) -> Result<String, BusError>;

    /// Creates the consumer group (and the stream) if missing; idempotent.
    async fn ensure_group(&self, stream: StreamName, group: &str) -> Result<(), BusError>;

    /// Reads up to `count` new entries for `consumer`, waiting at most `block`.
    async fn read_group(
        &self,
        stream: StreamName,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<StreamEntry>, BusError>;

    /// Acknowledges processed entries; returns how many were pending.
    async fn ack(&self, stream: StreamName, group: &str, ids: &[String]) -> Result<u64, BusError>;

    /// Takes over up to `count` entries pending longer than `min_idle` for `consumer`.
    async fn reclaim(
        &self,
        stream: StreamName,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<StreamEntry>, BusError>;

    /// Number of entries in the stream (for backlog gauges).
    async fn len(&self, stream: StreamName) -> Result<u64, BusError>;
}

/// A logical stream name; the bus derives its keys (prefix, hash tag) from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamName(&'static str);

impl StreamName {
    /// `name` becomes the Redis Cluster hash tag, so it must be short and stable.
    pub const fn new(name: &'static str) -> Self {
        Self(name)
    }

    pub const fn as_str(&self) -> &'static str {
        self.0
    }
}

/// One entry read from a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamEntry {
    pub id: String,
    pub payload: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("stream backend unavailable: {0}")]
    Unavailable(String),
    #[error("malformed stream entry {id}: {reason}")]
    Malformed { id: String, reason: String },
}

/// A knowledge-base namespace: one agent of one tenant. Every retrieval query
/// carries it, so another tenant's chunks cannot come back through a ranking bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Namespace {
    pub tenant: TenantId,
    pub agent: AgentId,
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tenant:{}:agent:{}", self.tenant, self.agent)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// What an agent says about itself, for prompt assembly (never sent to visitors).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentBrief {
    pub name: String,
    pub system_prompt: String,
    pub brand: Option<String>,
    pub facts: Vec<String>,
    pub competitors: Vec<String>,
    pub escalation_topics: Vec<String>,
}

/// The two positions a turn reserves in its conversation: the visitor's message
/// and the reply. Reserved together, so concurrent turns never interleave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TurnSlot {
    pub visitor_seq: i64,
    pub reply_seq: i64,
}

/// What a finished turn writes: the cleaned reply, usage, tool calls.
#[derive(Clone, Debug)]
pub struct TurnRecord {
    pub agent: AgentId,
    pub reply_seq: i64,
    pub content: String,
    pub provider: String,
    pub model: String,
    pub usage: Usage,
    pub tool_calls: Vec<ToolCall>,
    /// The embedder that embedded the visitor's query, and its token estimate.
    pub embedder: String,
    pub embed_tokens: u32,
}

/// A message as stored and as a visitor may see it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StoredMessage {
    pub id: uuid::Uuid,
    pub role: String,
    pub content: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// The chat pipeline's view of the database.
#[async_trait]
pub trait ChatStore: Send + Sync + 'static {
    async fn agent_brief(&self, tenant: TenantId, agent: AgentId)
        -> Result<AgentBrief, StoreError>;
    /// The conversation so far, oldest first, at most `limit` messages.
    async fn history(
        &self,
        tenant: TenantId,
        conversation: ConversationId,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, StoreError>;
    /// Stores the visitor's message and reserves the reply's position.
    async fn begin_turn(
        &self,
        tenant: TenantId,
        conversation: ConversationId,
        visitor_text: &str,
    ) -> Result<TurnSlot, StoreError>;
    /// Stores the cleaned reply, its usage event and its tool calls' action runs.
    async fn finish_turn(
        &self,
        tenant: TenantId,
        conversation: ConversationId,
        record: TurnRecord,
    ) -> Result<StoredMessage, StoreError>;
}

/// One stored chunk's vector, for the retriever's in-memory index.
#[derive(Clone, Debug)]
pub struct StoredVector {
    pub chunk_id: uuid::Uuid,
    pub document_id: uuid::Uuid,
    pub vector: Vec<f32>,
}

/// A retrieved passage.
#[derive(Clone, Debug, PartialEq)]
pub struct KnowledgeChunk {
    pub id: uuid::Uuid,
    pub title: String,
    pub heading: String,
    pub text: String,
}

/// The knowledge base's view of the database; every call is namespaced.
#[async_trait]
pub trait KnowledgeStore: Send + Sync + 'static {
    /// Changes whenever a document of the namespace is ingested or deleted.
    async fn namespace_version(&self, namespace: Namespace) -> Result<i64, StoreError>;
    async fn namespace_vectors(
        &self,
        namespace: Namespace,
    ) -> Result<Vec<StoredVector>, StoreError>;
    /// Full-text ranking, best first.
    async fn lexical_search(
        &self,
        namespace: Namespace,
        query: &str,
        limit: usize,
    ) -> Result<Vec<uuid::Uuid>, StoreError>;
    /// The chunks with these ids that belong to the namespace, in the order given.
    async fn chunks(
        &self,
        namespace: Namespace,
        ids: &[uuid::Uuid],
    ) -> Result<Vec<KnowledgeChunk>, StoreError>;
}

/// Finds the LLM a tenant brought (or the offline responder).
#[async_trait]
pub trait LlmResolver: Send + Sync + 'static {
    async fn provider_for(
        &self,
        tenant: TenantId,
    ) -> Result<std::sync::Arc<dyn LlmProvider>, LlmError>;
}
