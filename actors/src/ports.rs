//! The ports this crate's stages need from the outside world.
//!
//! Implemented in the service crate (Redis, PostgreSQL, HTTP); stages and their
//! unit tests depend only on these traits.

use std::time::Duration;

use async_trait::async_trait;

use crate::ids::{AgentId, ConversationId, TenantId, WidgetId};
use crate::llm::{ChatMessage, LlmError, LlmProvider, Usage};

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
    /// The widget no longer allows the page's origin.
    #[error("this page's origin may not use this widget")]
    OriginRefused,
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// A cached value and the version of the row it was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned<T> {
    pub version: i64,
    pub value: T,
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
    /// Said when the guardrails removed the whole reply (`None`: the default).
    pub fallback: Option<String>,
    pub directives: crate::guardrails::directives::Directives,
}

/// Where a turn comes from, as its first write checks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TurnChannel {
    /// A visitor of an embedded widget: the widget must still exist and, when
    /// the browser named the page's origin, still allow it.
    Widget {
        widget: WidgetId,
        session: uuid::Uuid,
        origin: Option<String>,
    },
    /// A text message to one of the tenant's numbers.
    Sms,
    /// A caller's speech on a phone call.
    Voice,
}

impl TurnChannel {
    /// The `conversations.channel` value.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Widget { .. } => "widget",
            Self::Sms => "sms",
            Self::Voice => "voice",
        }
    }

    /// Whether every line of the transcript is stored scrubbed, whatever the
    /// agent's profile says: a call's transcript is, both sides of it.
    pub fn stores_scrubbed(&self) -> bool {
        matches!(self, Self::Voice)
    }
}

/// The two positions a turn reserves in its conversation: the visitor's message
/// and the reply. Reserved together, so concurrent turns never interleave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TurnSlot {
    pub visitor_seq: i64,
    pub reply_seq: i64,
}

/// The versions of what a turn reads from caches, as its first write saw them.
/// A cache holding an older version reloads before the turn uses it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheVersions {
    pub agent: i64,
    /// 0 when the tenant has no LLM of its own.
    pub llm: i64,
    /// 0 when the namespace has never held a document.
    pub namespace: i64,
}

/// A visitor's message as a turn's first write receives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VisitorMessage<'a> {
    pub text: &'a str,
    /// The text with its personal data replaced, when it held any: stored
    /// instead of `text` when the agent's profile (or the channel) asks for it.
    pub scrubbed: Option<&'a str>,
    /// What the scrub replaced, for the audit row of a line stored scrubbed.
    pub pii: crate::pii::PiiCounts,
}

/// A turn whose visitor message is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenedTurn {
    /// A person on the tenant's team has the conversation: the message is
    /// stored for them, and the agent does not answer it.
    pub held: bool,
    pub slot: TurnSlot,
    pub versions: CacheVersions,
    /// Whether the scrubbed text is what was stored.
    pub stored_scrubbed: bool,
}

/// Who said a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageRole {
    Visitor,
    Assistant,
}

impl MessageRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Visitor => "visitor",
            Self::Assistant => "assistant",
        }
    }
}

/// What embedding the visitor's question cost, when it was embedded at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddingUsage {
    pub embedder: String,
    pub tokens: u32,
}

/// What a finished turn writes: the cleaned reply and its usage (its tool
/// calls were recorded as they ran).
#[derive(Clone, Debug)]
pub struct TurnRecord {
    pub agent: AgentId,
    pub reply_seq: i64,
    pub content: String,
    pub provider: String,
    pub model: String,
    /// Summed over the turn's rounds.
    pub usage: Usage,
    /// `None` when retrieval embedded nothing (an empty knowledge base).
    pub embedding: Option<EmbeddingUsage>,
    /// What the guardrails removed from the reply, per rule (never the text).
    pub guardrail_removals: crate::guardrail_finalizer::Removals,
    /// What the scrub replaced in `content`, when the channel stores replies scrubbed.
    pub pii: crate::pii::PiiCounts,
}

/// The stored reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredReply {
    pub id: uuid::Uuid,
    /// Its position in the conversation.
    pub seq: i64,
    /// What the visitor was told (a call's transcript stores it scrubbed).
    pub content: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// The chat pipeline's view of the database. A warm turn calls only
/// `begin_turn` and `finish_turn`, each one write transaction; the reads are
/// for caches that `begin_turn`'s versions found stale.
#[async_trait]
pub trait ChatStore: Send + Sync + 'static {
    async fn agent_brief(
        &self,
        tenant: TenantId,
        agent: AgentId,
    ) -> Result<Versioned<AgentBrief>, StoreError>;
    /// The conversation's messages before position `before_seq`, oldest
    /// first, at most `limit` of them.
    async fn history(
        &self,
        tenant: TenantId,
        conversation: ConversationId,
        before_seq: i64,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, StoreError>;
    /// Checks the channel, stores the visitor's message (creating the
    /// conversation at its first), reserves the reply's position, and returns
    /// the cache versions.
    async fn begin_turn(
        &self,
        tenant: TenantId,
        agent: AgentId,
        conversation: ConversationId,
        channel: &TurnChannel,
        message: VisitorMessage<'_>,
    ) -> Result<OpenedTurn, StoreError>;
    /// Stores the cleaned reply and its usage events.
    async fn finish_turn(
        &self,
        tenant: TenantId,
        conversation: ConversationId,
        record: TurnRecord,
    ) -> Result<StoredReply, StoreError>;
}

/// A document as a namespace snapshot holds it: its id and its row's version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DocumentVersion {
    pub id: uuid::Uuid,
    pub version: i64,
}

/// One stored chunk, with everything retrieval needs of it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredChunk {
    pub id: uuid::Uuid,
    pub heading: String,
    pub text: String,
    pub vector: Vec<f32>,
}

/// A ready document and its chunks.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredDocument {
    pub document: DocumentVersion,
    pub title: String,
    pub chunks: Vec<StoredChunk>,
}

/// How a namespace differs from a snapshot: documents to drop (deleted, or
/// changed and so also in `added`) and documents to load.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NamespaceChanges {
    /// The namespace version these changes bring the snapshot to.
    pub version: i64,
    pub removed: Vec<uuid::Uuid>,
    pub added: Vec<StoredDocument>,
}

/// Which of `held` are gone or changed, and which documents of `current` are
/// not held: what a snapshot must drop and load to match the store.
pub fn document_changes(
    held: &[DocumentVersion],
    current: &[DocumentVersion],
) -> (Vec<uuid::Uuid>, Vec<DocumentVersion>) {
    let current_by_id: std::collections::HashMap<uuid::Uuid, i64> =
        current.iter().map(|d| (d.id, d.version)).collect();
    let held_set: std::collections::HashSet<DocumentVersion> = held.iter().copied().collect();
    let removed = held
        .iter()
        .filter(|d| current_by_id.get(&d.id) != Some(&d.version))
        .map(|d| d.id)
        .collect();
    let added = current
        .iter()
        .filter(|d| !held_set.contains(d))
        .copied()
        .collect();
    (removed, added)
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
/// Retrieval itself runs in memory: the store is read only to load or bring a
/// namespace's snapshot up to date.
#[async_trait]
pub trait KnowledgeStore: Send + Sync + 'static {
    /// What the namespace holds that a snapshot of `held` documents does not,
    /// read in one consistent unit of work.
    async fn changes(
        &self,
        namespace: Namespace,
        held: &[DocumentVersion],
    ) -> Result<NamespaceChanges, StoreError>;
}

/// Finds the LLM a tenant brought (or the offline responder), built with its
/// connection opened: callers cache it by the version it carries.
#[async_trait]
pub trait LlmResolver: Send + Sync + 'static {
    async fn provider_for(
        &self,
        tenant: TenantId,
    ) -> Result<Versioned<std::sync::Arc<dyn LlmProvider>>, LlmError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(n: u128, version: i64) -> DocumentVersion {
        DocumentVersion {
            id: uuid::Uuid::from_u128(n),
            version,
        }
    }

    #[test]
    fn changed_documents_are_dropped_and_loaded_and_held_ones_kept() {
        let held = [doc(1, 10), doc(2, 20), doc(3, 30)];
        let current = [doc(1, 10), doc(2, 21), doc(4, 40)];
        let (removed, added) = document_changes(&held, &current);
        assert_eq!(removed, vec![doc(2, 0).id, doc(3, 0).id]);
        assert_eq!(added, vec![doc(2, 21), doc(4, 40)]);
        assert_eq!(document_changes(&current, &current), (vec![], vec![]));
    }
}
