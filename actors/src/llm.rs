//! The LLM port: one trait for every provider (OpenAI-compatible, Anthropic,
//! the offline responder), with streaming and tool calls.
//!
//! A provider streams text deltas into a channel as they arrive and returns the
//! whole completion at the end, so callers can forward deltas to a visitor
//! (server-sent events) and still store one cleaned message.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    System,
    User,
    Assistant,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: ChatRole,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: ChatRole::System,
            content: content.into(),
        }
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: ChatRole::User,
            content: content.into(),
        }
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: ChatRole::Assistant,
            content: content.into(),
        }
    }
}

/// A tool the model may call; `parameters` is a JSON Schema object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: serde_json::Value,
}

/// A tool call the model asked for; `arguments` is the parsed JSON object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: serde_json::Value,
}

/// A knowledge-base passage the answer should rest on. Remote providers see it
/// inside the system prompt; the offline responder composes its answer from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroundingPassage {
    pub title: String,
    pub text: String,
}

/// Whether the model may call tools this round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ToolChoice {
    #[default]
    Auto,
    /// The last round of a turn: the tools stay declared (earlier rounds
    /// refer to them) but the model must answer in words.
    None,
}

/// What a tool run answered, as the model reads it in the next round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolResult {
    pub call_id: String,
    /// The run's output as JSON (the providers take it as text).
    pub output: serde_json::Value,
    /// The call was refused or failed: the model should not claim it worked.
    pub is_error: bool,
}

/// One earlier round of this turn: what the model said and called, and what
/// the calls answered. Providers render it in their own message format.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolRound {
    pub text: String,
    pub calls: Vec<ToolCall>,
    pub results: Vec<ToolResult>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CompletionRequest {
    /// System prompt first, then the conversation, ending with the visitor's turn.
    pub messages: Vec<ChatMessage>,
    pub tools: Vec<ToolSpec>,
    pub tool_choice: ToolChoice,
    /// This turn's earlier rounds, after the visitor's message, oldest first.
    pub tool_rounds: Vec<ToolRound>,
    pub grounding: Vec<GroundingPassage>,
    pub max_tokens: u32,
    pub temperature: f32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

/// The whole answer: the raw text (before guardrails), tool calls and usage.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Completion {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
}

/// Streamed while the completion is produced.
#[derive(Clone, Debug, PartialEq)]
pub enum CompletionEvent {
    Delta(String),
    ToolCall(ToolCall),
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// Timeouts, connection failures, 429 and 5xx after retries.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// 4xx other than 429: bad key, unknown model, malformed request.
    #[error("provider refused the request: {0}")]
    Rejected(String),
    /// The provider answered something we could not parse.
    #[error("provider protocol error: {0}")]
    Protocol(String),
}

#[async_trait]
pub trait LlmProvider: Send + Sync + 'static {
    /// Provider label for records and metrics (`openai`, `azure`, `anthropic`, `offline` …).
    fn provider(&self) -> &str;
    /// Model name for records.
    fn model(&self) -> &str;
    /// Produces a completion, sending deltas and tool calls to `events` as they
    /// arrive (a closed receiver is not an error: the visitor went away).
    async fn complete(
        &self,
        request: &CompletionRequest,
        events: &mpsc::UnboundedSender<CompletionEvent>,
    ) -> Result<Completion, LlmError>;
}

/// The embedding port: text in, L2-normalized vectors out.
#[async_trait]
pub trait Embedder: Send + Sync + 'static {
    /// Label for records (`offline-hash-v1`, `openai:text-embedding-3-small` …).
    fn name(&self) -> &str;
    fn dimensions(&self) -> usize;
    async fn embed(&self, texts: &[String]) -> Result<Embedded, LlmError>;
}

/// Vectors, one per text in order, and what the provider counted for them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    /// Input tokens as the provider reports them (the offline embedder counts
    /// the words it hashed).
    pub tokens: u32,
}
