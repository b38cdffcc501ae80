//! ChatSession: one per live conversation. Its mailbox serializes the
//! conversation's turns: two turns of one conversation never interleave.
//!
//! A turn: store the visitor's message (reserving the reply's position), ask
//! the namespace's RagRetriever for passages, assemble the prompt, stream the
//! tenant's LLM, pass every finished sentence through the GuardrailFinalizer
//! before the visitor sees it, and store the cleaned reply with its usage.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{mpsc, oneshot};

use crate::guardrail_finalizer::{FinalizerMsg, SentenceBuffer};
use crate::ids::{AgentId, ConversationId, TenantId};
use crate::llm::{Completion, CompletionEvent, CompletionRequest, Embedder, LlmProvider};
use crate::ports::{
    ChatStore, KnowledgeChunk, KnowledgeStore, LlmResolver, StoreError, StoredMessage, TurnRecord,
};
use crate::prompt;
use crate::rag_retriever::RagMsg;
use crate::stage_metrics::{self, Stage};
use crate::tools;

/// Visitor text that makes a session panic when fault injection is on (tests only).
pub const FAULT_TRIGGER: &str = "__agentry_fault_injection__";

/// One visitor turn, as the HTTP edge asks for it.
#[derive(Clone, Debug)]
pub struct TurnRequest {
    pub tenant: TenantId,
    pub agent: AgentId,
    pub conversation: ConversationId,
    pub text: String,
}

/// What a turn streams back while it runs.
#[derive(Clone, Debug, PartialEq)]
pub enum TurnEvent {
    /// A cleaned piece of the reply.
    Delta(String),
}

#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the chat pipeline is unavailable: {0}")]
    Unavailable(String),
}

pub type TurnReply = oneshot::Sender<Result<StoredMessage, TurnError>>;

/// A turn on its way through the supervisors to its session.
pub struct TurnJob {
    pub request: TurnRequest,
    pub events: mpsc::UnboundedSender<TurnEvent>,
    pub reply: TurnReply,
}

/// Knobs of the pipeline (from the service's configuration).
#[derive(Clone, Debug)]
pub struct PipelineSettings {
    pub session_idle: Duration,
    pub tenant_idle: Duration,
    pub history_limit: usize,
    pub passages: usize,
    pub max_tokens: u32,
    pub temperature: f32,
    /// Said to the visitor when the provider fails; details go to the log only.
    pub apology: String,
    /// Lets tests crash a session on purpose (see [`FAULT_TRIGGER`]).
    pub fault_injection: bool,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            session_idle: Duration::from_secs(600),
            tenant_idle: Duration::from_secs(900),
            history_limit: 20,
            passages: 5,
            max_tokens: 512,
            temperature: 0.2,
            apology: "Sorry, I can't answer right now. Please try again in a moment.".into(),
            fault_injection: false,
        }
    }
}

/// The ports and settings every stage shares.
pub struct PipelineDeps {
    pub chat: Arc<dyn ChatStore>,
    pub knowledge: Arc<dyn KnowledgeStore>,
    pub embedder: Arc<dyn Embedder>,
    pub llm: Arc<dyn LlmResolver>,
    pub settings: PipelineSettings,
}

pub enum SessionMsg {
    Turn {
        job: TurnJob,
        retriever: ActorRef<RagMsg>,
        finalizer: ActorRef<FinalizerMsg>,
    },
    /// Stop after the turns already queued (a stop signal would drop them).
    Retire,
}

pub struct ChatSession;

pub struct SessionArgs {
    pub deps: Arc<PipelineDeps>,
    pub conversation: ConversationId,
}

impl Actor for ChatSession {
    type Msg = SessionMsg;
    type State = SessionArgs;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SessionArgs,
    ) -> Result<SessionArgs, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut SessionArgs,
    ) -> Result<(), ActorProcessingErr> {
        let (job, retriever, finalizer) = match message {
            SessionMsg::Turn {
                job,
                retriever,
                finalizer,
            } => (job, retriever, finalizer),
            SessionMsg::Retire => {
                myself.stop(Some("idle".into()));
                return Ok(());
            }
        };
        if state.deps.settings.fault_injection && job.request.text == FAULT_TRIGGER {
            panic!("fault injected into conversation {}", state.conversation);
        }
        let started = Instant::now();
        let result = run_turn(
            &state.deps,
            &job.request,
            &job.events,
            &retriever,
            &finalizer,
        )
        .await;
        stage_metrics::record(
            Stage::ChatSession,
            if result.is_ok() { "ok" } else { "error" },
            started,
        );
        let _ = job.reply.send(result);
        Ok(())
    }
}

async fn retrieve(retriever: &ActorRef<RagMsg>, query: &str, limit: usize) -> Vec<KnowledgeChunk> {
    let (reply, answer) = oneshot::channel();
    let message = RagMsg::Retrieve {
        query: query.to_owned(),
        limit,
        reply,
    };
    if retriever.send_message(message).is_err() {
        return Vec::new();
    }
    match answer.await {
        Ok(Ok(chunks)) => chunks,
        // Answering without passages beats failing the turn; the log says why.
        Ok(Err(error)) => {
            tracing::warn!(%error, "retrieval failed; answering without passages");
            Vec::new()
        }
        Err(_) => Vec::new(),
    }
}

async fn finalize(finalizer: &ActorRef<FinalizerMsg>, raw: String) -> String {
    let (reply, answer) = oneshot::channel();
    let fallback = raw.clone();
    if finalizer
        .send_message(FinalizerMsg::Finalize { raw, reply })
        .is_err()
    {
        // The finalizer is restarting: the pure function gives the same result.
        return crate::guardrail_finalizer::finalize(&fallback);
    }
    answer
        .await
        .unwrap_or_else(|_| crate::guardrail_finalizer::finalize(&fallback))
}

/// Streams the provider's completion, cleaning each finished sentence before
/// it is sent on; returns the completion and the cleaned text.
async fn stream_completion(
    provider: &dyn LlmProvider,
    request: &CompletionRequest,
    events: &mpsc::UnboundedSender<TurnEvent>,
    finalizer: &ActorRef<FinalizerMsg>,
) -> (Result<Completion, crate::llm::LlmError>, String) {
    let (llm_tx, mut llm_rx) = mpsc::unbounded_channel();
    let producer = async move {
        let result = provider.complete(request, &llm_tx).await;
        drop(llm_tx);
        result
    };
    let consumer = async {
        let mut buffer = SentenceBuffer::default();
        let mut cleaned = String::new();
        while let Some(event) = llm_rx.recv().await {
            if let CompletionEvent::Delta(delta) = event {
                if let Some(sentence) = buffer.push(&delta) {
                    let clean = finalize(finalizer, sentence).await;
                    cleaned.push_str(&clean);
                    let _ = events.send(TurnEvent::Delta(clean));
                }
            }
        }
        if let Some(rest) = buffer.finish() {
            let clean = finalize(finalizer, rest).await;
            cleaned.push_str(&clean);
            let _ = events.send(TurnEvent::Delta(clean));
        }
        cleaned
    };
    tokio::join!(producer, consumer)
}

async fn run_turn(
    deps: &PipelineDeps,
    request: &TurnRequest,
    events: &mpsc::UnboundedSender<TurnEvent>,
    retriever: &ActorRef<RagMsg>,
    finalizer: &ActorRef<FinalizerMsg>,
) -> Result<StoredMessage, TurnError> {
    let settings = &deps.settings;
    let history = deps
        .chat
        .history(request.tenant, request.conversation, settings.history_limit)
        .await?;
    let slot = deps
        .chat
        .begin_turn(request.tenant, request.conversation, &request.text)
        .await?;
    let agent = deps.chat.agent_brief(request.tenant, request.agent).await?;
    let passages = retrieve(retriever, &request.text, settings.passages).await;
    let completion_request = CompletionRequest {
        messages: prompt::assemble(&agent, &passages, &history, &request.text),
        tools: tools::catalog(),
        grounding: prompt::grounding(&passages),
        max_tokens: settings.max_tokens,
        temperature: settings.temperature,
    };

    let llm_started = Instant::now();
    let (provider, completion, mut cleaned) = match deps.llm.provider_for(request.tenant).await {
        Ok(provider) => {
            let (completion, cleaned) =
                stream_completion(provider.as_ref(), &completion_request, events, finalizer).await;
            (Some(provider), completion, cleaned)
        }
        Err(error) => (None, Err(error), String::new()),
    };
    let completion = match completion {
        Ok(completion) => {
            stage_metrics::record(Stage::Llm, "ok", llm_started);
            completion
        }
        Err(error) => {
            // The visitor gets a generic apology; the reason stays in the log.
            stage_metrics::record(Stage::Llm, "error", llm_started);
            tracing::warn!(%error, tenant = %request.tenant, "LLM provider failed");
            let apology = if cleaned.is_empty() {
                settings.apology.clone()
            } else {
                format!(" {}", settings.apology)
            };
            cleaned.push_str(&apology);
            let _ = events.send(TurnEvent::Delta(apology));
            Completion::default()
        }
    };
    let record = TurnRecord {
        agent: request.agent,
        reply_seq: slot.reply_seq,
        content: cleaned,
        provider: provider
            .as_ref()
            .map_or("none", |p| p.provider())
            .to_owned(),
        model: provider.as_ref().map_or("none", |p| p.model()).to_owned(),
        usage: completion.usage,
        tool_calls: completion.tool_calls,
        embedder: deps.embedder.name().to_owned(),
        embed_tokens: request.text.chars().count().div_ceil(4) as u32,
    };
    Ok(deps
        .chat
        .finish_turn(request.tenant, request.conversation, record)
        .await?)
}
