//! ChatSession: one per live conversation. Its mailbox serializes the
//! conversation's turns: two turns of one conversation never interleave.
//!
//! A turn: one write stores the visitor's message (reserving the reply's
//! position) and returns the versions of everything the turn reads; the
//! conversation's history (kept here), the agent's brief and the tenant's LLM
//! (kept by the tenant's caches) and the namespace's snapshot are used as
//! cached when their version matches, and reloaded only when it does not.
//! Then the prompt is assembled, the tenant's LLM streamed, every finished
//! sentence passed through the GuardrailFinalizer before the visitor sees it,
//! and one more write stores the cleaned reply with its usage.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::Instrument;

use crate::guardrail_finalizer::{self, FinalizerMsg, ReplyPolicy, ReplyState, SentenceBuffer};
use crate::guardrails::directives::raised_topic;
use crate::guardrails::grounding::Grounding;
use crate::ids::{AgentId, ConversationId, TenantId};
use crate::llm::{
    ChatMessage, Completion, CompletionEvent, CompletionRequest, Embedder, LlmError, LlmProvider,
    ToolCall, ToolChoice, ToolRound, Usage,
};
use crate::pii::Scrubber;
use crate::ports::{
    ChatStore, KnowledgeStore, LlmResolver, Namespace, StoreError, StoredReply, TurnChannel,
    TurnRecord, VisitorMessage,
};
use crate::prompt;
use crate::rag_retriever::{self, RagMsg, Resident, Retrieved};
use crate::stage_metrics::{self, Stage};
use crate::tenant_cache::TenantCaches;
use crate::tools::{self, ToolRunner};

/// Visitor text that makes a session panic when fault injection is on (tests only).
pub const FAULT_TRIGGER: &str = "__agentry_fault_injection__";

/// One visitor turn, as the HTTP edge asks for it.
#[derive(Clone, Debug)]
pub struct TurnRequest {
    pub tenant: TenantId,
    pub agent: AgentId,
    pub conversation: ConversationId,
    pub channel: TurnChannel,
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
    /// Not a failure: a person on the tenant's team has the conversation,
    /// the visitor's message is stored for them, and the agent stays silent.
    #[error("a team member has taken this conversation over")]
    TakenOver,
}

pub type TurnReply = oneshot::Sender<Result<StoredReply, TurnError>>;

/// Counts turns submitted and not yet answered, so shutdown can wait for them.
#[derive(Default)]
pub struct InFlight {
    turns: AtomicUsize,
    idle: Notify,
}

impl InFlight {
    pub fn count(&self) -> usize {
        self.turns.load(Ordering::Acquire)
    }

    /// Resolves once no turn is in flight.
    pub async fn settled(&self) {
        loop {
            let idle = self.idle.notified();
            if self.count() == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// Held by a turn from submission until it is answered or dropped.
pub struct InFlightGuard(Arc<InFlight>);

impl InFlightGuard {
    pub fn new(in_flight: Arc<InFlight>) -> Self {
        in_flight.turns.fetch_add(1, Ordering::AcqRel);
        Self(in_flight)
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.turns.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// A turn on its way through the supervisors to its session.
pub struct TurnJob {
    pub request: TurnRequest,
    /// The turn's `chat_turn` span: every stage runs inside it, whichever
    /// actor's task that is, so their log lines and spans belong to the turn.
    /// Held until the turn is answered, streamed replies included.
    pub span: tracing::Span,
    pub events: mpsc::UnboundedSender<TurnEvent>,
    /// Fires once the visitor's message is stored; dropped unsent when the turn
    /// is refused (the reply then says why).
    pub accepted: oneshot::Sender<()>,
    pub reply: TurnReply,
    pub in_flight: InFlightGuard,
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
    /// Scrubs visitor messages for agents that store them scrubbed.
    pub scrubber: Scrubber,
    /// Rounds of tool calls a turn may run before the model must answer in words.
    pub max_tool_rounds: usize,
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
            scrubber: Scrubber::default(),
            max_tool_rounds: 3,
        }
    }
}

/// The ports and settings every stage shares.
pub struct PipelineDeps {
    pub chat: Arc<dyn ChatStore>,
    pub knowledge: Arc<dyn KnowledgeStore>,
    pub embedder: Arc<dyn Embedder>,
    pub llm: Arc<dyn LlmResolver>,
    pub tools: Arc<dyn ToolRunner>,
    /// The namespaces held in memory, within the retriever cache budget.
    pub resident: Arc<Resident>,
    pub settings: PipelineSettings,
}

pub enum SessionMsg {
    Turn {
        /// Boxed: an idle session's mailbox slot stays small.
        job: Box<TurnJob>,
        retriever: ActorRef<RagMsg>,
        finalizer: ActorRef<FinalizerMsg>,
        caches: Arc<TenantCaches>,
    },
    /// Stop after the turns already queued (a stop signal would drop them).
    Retire,
}

pub struct ChatSession;

pub struct SessionArgs {
    pub deps: Arc<PipelineDeps>,
    pub conversation: ConversationId,
}

/// The conversation's latest messages as this session last stored them.
struct History {
    /// The position the next turn's visitor message takes if no one else
    /// (another instance) wrote to the conversation in between.
    next_seq: i64,
    messages: VecDeque<ChatMessage>,
}

pub struct SessionState {
    deps: Arc<PipelineDeps>,
    conversation: ConversationId,
    /// `None` until known: after a failed turn, or before the first one.
    history: Option<History>,
}

impl SessionState {
    /// The messages before `visitor_seq`: kept ones when this session wrote
    /// the conversation's latest turn, else read from the store.
    async fn history_before(
        &mut self,
        tenant: TenantId,
        visitor_seq: i64,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        let limit = self.deps.settings.history_limit;
        let kept = self
            .history
            .as_ref()
            .filter(|history| history.next_seq == visitor_seq);
        stage_metrics::record_cache_lookup("history", kept.is_some() || visitor_seq == 0);
        if let Some(history) = kept {
            return Ok(history.messages.iter().cloned().collect());
        }
        if visitor_seq == 0 {
            return Ok(Vec::new());
        }
        self.deps
            .chat
            .history(tenant, self.conversation, visitor_seq, limit)
            .await
    }

    /// Keeps the finished turn's two messages as the latest history.
    fn remember(
        &mut self,
        mut before: Vec<ChatMessage>,
        visitor: &str,
        reply: &str,
        reply_seq: i64,
    ) {
        let limit = self.deps.settings.history_limit;
        before.push(ChatMessage::user(visitor));
        before.push(ChatMessage::assistant(reply));
        let mut messages = VecDeque::from(before);
        while messages.len() > limit {
            messages.pop_front();
        }
        self.history = Some(History {
            next_seq: reply_seq + 1,
            messages,
        });
    }
}

impl Actor for ChatSession {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        Ok(SessionState {
            deps: args.deps,
            conversation: args.conversation,
            history: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        let (job, stages) = match message {
            SessionMsg::Turn {
                job,
                retriever,
                finalizer,
                caches,
            } => (
                job,
                TurnStages {
                    retriever,
                    finalizer,
                    caches,
                },
            ),
            SessionMsg::Retire => {
                myself.stop(Some("idle".into()));
                return Ok(());
            }
        };
        if state.deps.settings.fault_injection && job.request.text == FAULT_TRIGGER {
            panic!("fault injected into conversation {}", state.conversation);
        }
        let started = Instant::now();
        let TurnJob {
            request,
            span,
            events,
            accepted,
            reply,
            in_flight,
        } = *job;
        // Boxed: an idle session's task would otherwise be as large as a turn's
        // whole state machine, for every live conversation.
        let result = Box::pin(run_turn(state, &stages, &request, &events, accepted))
            .instrument(span.clone())
            .await;
        if result.is_err() {
            // The store may hold more than this session knows (a reply never stored).
            state.history = None;
        }
        let outcome = match &result {
            Ok(_) => "ok",
            Err(TurnError::TakenOver) => "held",
            Err(_) => "error",
        };
        stage_metrics::record_labelled(
            Stage::ChatTurn,
            ("channel", request.channel.label()),
            outcome,
            started,
        );
        span.record("outcome", outcome);
        span.in_scope(
            || tracing::debug!(outcome, elapsed = ?started.elapsed(), "chat turn answered"),
        );
        // Closed (and so handed to the exporter) before the caller hears the
        // answer and before a draining shutdown can flush: otherwise the
        // last turn's span could miss the final export.
        drop(span);
        let _ = reply.send(result);
        drop(in_flight);
        Ok(())
    }
}

/// The tenant's stages a turn uses besides its session.
struct TurnStages {
    retriever: ActorRef<RagMsg>,
    finalizer: ActorRef<FinalizerMsg>,
    caches: Arc<TenantCaches>,
}

async fn retrieve(
    deps: &PipelineDeps,
    retriever: &ActorRef<RagMsg>,
    namespace: Namespace,
    version: i64,
    query: &str,
) -> Retrieved {
    let span = tracing::debug_span!("retrieve", passages = tracing::field::Empty);
    let result = async {
        let snapshot =
            rag_retriever::snapshot(&deps.resident, retriever, namespace, version).await?;
        rag_retriever::search(
            snapshot,
            deps.embedder.as_ref(),
            query,
            deps.settings.passages,
        )
        .await
    }
    .instrument(span.clone())
    .await;
    if let Ok(retrieved) = &result {
        span.record("passages", retrieved.passages.len());
    }
    result.unwrap_or_else(|error| {
        // Answering without passages beats failing the turn; the log says why.
        tracing::warn!(%error, "retrieval failed; answering without passages");
        Retrieved::default()
    })
}

async fn finalize(
    finalizer: &ActorRef<FinalizerMsg>,
    raw: String,
    policy: &Arc<ReplyPolicy>,
    state: &mut ReplyState,
) -> String {
    let (reply, answer) = oneshot::channel();
    // Kept for the pure function, which gives the same result when the
    // finalizer is restarting or dropped the piece.
    let (fallback_raw, fallback_state) = (raw.clone(), state.clone());
    // One span per piece, a child of the turn; the finalizer's task enters it.
    let span = tracing::debug_span!("finalize");
    let message = FinalizerMsg::Finalize {
        raw,
        policy: policy.clone(),
        state: std::mem::take(state),
        reply,
        span: span.clone(),
    };
    let answered = match finalizer.send_message(message) {
        Ok(()) => answer.await.ok(),
        Err(_) => None,
    };
    let (cleaned, after) = answered.unwrap_or_else(|| {
        let mut state = fallback_state;
        span.in_scope(|| {
            (
                guardrail_finalizer::finalize(&fallback_raw, policy, &mut state),
                state,
            )
        })
    });
    *state = after;
    cleaned
}

/// Sends a cleaned piece on to the visitor and keeps it for storage; a piece
/// the rules removed entirely sends nothing.
fn release(clean: String, reply: &mut ReplyText, events: &mpsc::UnboundedSender<TurnEvent>) {
    if clean.is_empty() {
        return;
    }
    // A round's first words follow the previous round's last sentence.
    let clean = match std::mem::take(&mut reply.round_starts)
        && !reply.cleaned.is_empty()
        && !clean.starts_with(char::is_whitespace)
    {
        true => format!(" {clean}"),
        false => clean,
    };
    reply.cleaned.push_str(&clean);
    let _ = events.send(TurnEvent::Delta(clean));
}

/// The reply as the visitor sees it, across the turn's rounds.
#[derive(Default)]
struct ReplyText {
    cleaned: String,
    /// The model's text as written, every round, for the fallback decision.
    raw: String,
    state: ReplyState,
    /// The next released piece opens a new round.
    round_starts: bool,
}

impl ReplyText {
    /// Appends a piece the system itself says (fallback, apology), after
    /// whatever was already released.
    fn say(&mut self, text: &str, events: &mpsc::UnboundedSender<TurnEvent>) {
        let text = match self.cleaned.is_empty() {
            true => text.to_owned(),
            false => format!(" {text}"),
        };
        self.cleaned.push_str(&text);
        let _ = events.send(TurnEvent::Delta(text));
    }
}

/// Streams one round of the provider's completion, cleaning each finished
/// sentence before it is sent on and appending it to `reply`.
async fn stream_round(
    provider: &dyn LlmProvider,
    request: &CompletionRequest,
    events: &mpsc::UnboundedSender<TurnEvent>,
    finalizer: &ActorRef<FinalizerMsg>,
    policy: &Arc<ReplyPolicy>,
    reply: &mut ReplyText,
) -> Result<Completion, LlmError> {
    let (llm_tx, mut llm_rx) = mpsc::unbounded_channel();
    // The provider call alone: the pieces it streams are finalized beside
    // it, in the turn's span. Labels only, never the prompt.
    let span = tracing::debug_span!(
        "llm",
        provider = provider.provider(),
        model = provider.model(),
        round = request.tool_rounds.len(),
        prompt_tokens = tracing::field::Empty,
        completion_tokens = tracing::field::Empty,
        tool_calls = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let recorded = span.clone();
    let producer = async move {
        let result = provider.complete(request, &llm_tx).await;
        drop(llm_tx);
        match &result {
            Ok(completion) => {
                recorded.record("prompt_tokens", completion.usage.prompt_tokens);
                recorded.record("completion_tokens", completion.usage.completion_tokens);
                recorded.record("tool_calls", completion.tool_calls.len());
                recorded.record("outcome", "ok");
            }
            Err(_) => {
                recorded.record("outcome", "error");
            }
        }
        result
    }
    .instrument(span);
    reply.round_starts = true;
    let consumer = async {
        let mut buffer = SentenceBuffer::default();
        while let Some(event) = llm_rx.recv().await {
            if let CompletionEvent::Delta(delta) = event {
                if let Some(sentence) = buffer.push(&delta) {
                    let clean = finalize(finalizer, sentence, policy, &mut reply.state).await;
                    release(clean, reply, events);
                }
            }
        }
        if let Some(rest) = buffer.finish() {
            let clean = finalize(finalizer, rest, policy, &mut reply.state).await;
            release(clean, reply, events);
        }
    };
    let (completion, ()) = tokio::join!(producer, consumer);
    if let Ok(completion) = &completion {
        reply.raw.push_str(&completion.text);
    }
    completion
}

/// Runs a round's calls in order (a lead captured first is the one a
/// booking in the same round belongs to) and returns what each answered.
async fn run_tools(
    runner: &dyn ToolRunner,
    request: &TurnRequest,
    calls: &[ToolCall],
) -> Vec<crate::llm::ToolResult> {
    let mut results = Vec::with_capacity(calls.len());
    for call in calls {
        let started = Instant::now();
        let checked = tools::check(call);
        let span = tracing::debug_span!("tool", tool = %call.name, status = tracing::field::Empty);
        let run = runner
            .run(
                request.tenant,
                request.agent,
                request.conversation,
                call,
                checked,
            )
            .instrument(span.clone())
            .await
            .unwrap_or_else(|error| {
                tracing::warn!(%error, tool = %call.name, "a tool could not run");
                tools::ToolRun::unavailable()
            });
        span.record("status", run.status.as_str());
        stage_metrics::record_labelled(
            Stage::Tool,
            ("tool", tools::metric_label(&call.name)),
            run.status.as_str(),
            started,
        );
        results.push(run.result_for(call));
    }
    results
}

/// The escalate call the `escalation_topics` directive makes when the visitor
/// raised one of the agent's escalation topics. It runs before the model's
/// first round, which reads its result: the reply can then tell the visitor
/// truthfully that a person will take over. Its reason names the tenant's
/// topic, never the visitor's words.
fn enforced_escalation(brief: &crate::ports::AgentBrief, visitor_text: &str) -> Option<ToolCall> {
    if !brief.directives.escalation_topics.enabled {
        return None;
    }
    let topic = raised_topic(&brief.escalation_topics, visitor_text)?;
    Some(ToolCall {
        id: format!("directive_{}", uuid::Uuid::now_v7().simple()),
        name: tools::ESCALATE_TO_HUMAN.to_owned(),
        arguments: serde_json::json!({ "reason": format!("escalation topic: {topic}") }),
    })
}

/// What the model's rounds of one turn share.
struct Conversing<'a> {
    deps: &'a PipelineDeps,
    stages: &'a TurnStages,
    request: &'a TurnRequest,
    policy: &'a Arc<ReplyPolicy>,
    events: &'a mpsc::UnboundedSender<TurnEvent>,
}

impl Conversing<'_> {
    /// The model's rounds: each streams its words into `reply`; its calls
    /// are run and their results read by the next round. After
    /// `max_tool_rounds` rounds with calls, the model must answer in words.
    /// Returns the usage of every round, with how the last one ended.
    async fn converse(
        &self,
        provider: &dyn LlmProvider,
        completion_request: &mut CompletionRequest,
        reply: &mut ReplyText,
    ) -> (Usage, Result<(), LlmError>) {
        let max_rounds = self.deps.settings.max_tool_rounds;
        let mut usage = Usage::default();
        for round in 0..=max_rounds {
            if round == max_rounds {
                completion_request.tool_choice = ToolChoice::None;
            }
            let completion = match stream_round(
                provider,
                completion_request,
                self.events,
                &self.stages.finalizer,
                self.policy,
                reply,
            )
            .await
            {
                Ok(completion) => completion,
                Err(error) => return (usage, Err(error)),
            };
            usage.prompt_tokens += completion.usage.prompt_tokens;
            usage.completion_tokens += completion.usage.completion_tokens;
            stage_metrics::record_tokens(provider.provider(), &completion.usage);
            // Calls in the last round (a provider ignoring `none`) are not run.
            if completion.tool_calls.is_empty() || round == max_rounds {
                break;
            }
            let results = run_tools(
                self.deps.tools.as_ref(),
                self.request,
                &completion.tool_calls,
            )
            .await;
            completion_request.tool_rounds.push(ToolRound {
                text: completion.text,
                calls: completion.tool_calls,
                results,
            });
        }
        (usage, Ok(()))
    }
}

async fn run_turn(
    state: &mut SessionState,
    stages: &TurnStages,
    request: &TurnRequest,
    events: &mpsc::UnboundedSender<TurnEvent>,
    accepted: oneshot::Sender<()>,
) -> Result<StoredReply, TurnError> {
    let deps = state.deps.clone();
    let settings = &deps.settings;
    let (tenant, agent) = (request.tenant, request.agent);
    // Scrubbed for every agent (a few microseconds per message) so the first
    // write can decide on the agent row itself whether to store it.
    let scrubbed = settings.scrubber.scrub(&request.text);
    let message = VisitorMessage {
        text: &request.text,
        scrubbed: (!scrubbed.counts.is_empty()).then_some(scrubbed.text.as_str()),
        pii: scrubbed.counts,
    };
    let opened = deps
        .chat
        .begin_turn(
            tenant,
            agent,
            request.conversation,
            &request.channel,
            message,
        )
        .instrument(tracing::debug_span!("persist", write = "visitor_message"))
        .await?;
    let stored_visitor_text = match opened.stored_scrubbed {
        true => scrubbed.text.as_str(),
        false => request.text.as_str(),
    };
    let _ = accepted.send(());
    if opened.held {
        return Err(TurnError::TakenOver);
    }
    let versions = opened.versions;
    let namespace = Namespace { tenant, agent };
    let (history, compiled, retrieved, provider) = tokio::join!(
        state.history_before(tenant, opened.slot.visitor_seq),
        stages
            .caches
            .agent(deps.chat.as_ref(), tenant, agent, versions.agent),
        retrieve(
            &deps,
            &stages.retriever,
            namespace,
            versions.namespace,
            &request.text
        ),
        stages
            .caches
            .provider(deps.llm.as_ref(), tenant, versions.llm),
    );
    let (history, compiled) = (history?, compiled?);
    let brief = &compiled.brief;
    let passages = &retrieved.passages;
    let policy = Arc::new(ReplyPolicy {
        rules: compiled.rules.clone(),
        // What the reply may assert: this turn's passages and the agent's own facts.
        grounding: Grounding::new(
            passages
                .iter()
                .flat_map(|p| [p.title.as_str(), p.heading.as_str(), p.text.as_str()])
                .chain(brief.facts.iter().map(String::as_str)),
        ),
    });
    let mut completion_request = CompletionRequest {
        messages: prompt::assemble(brief, passages, &history, &request.text),
        tools: tools::catalog(),
        tool_choice: ToolChoice::Auto,
        tool_rounds: Vec::new(),
        grounding: prompt::grounding(passages),
        max_tokens: settings.max_tokens,
        temperature: settings.temperature,
    };
    if let Some(escalation) = enforced_escalation(brief, &request.text) {
        let results = run_tools(
            deps.tools.as_ref(),
            request,
            std::slice::from_ref(&escalation),
        )
        .await;
        completion_request.tool_rounds.push(ToolRound {
            text: String::new(),
            calls: vec![escalation],
            results,
        });
    }

    let mut reply = ReplyText::default();
    let turn = Conversing {
        deps: &deps,
        stages,
        request,
        policy: &policy,
        events,
    };
    let (provider, (usage, outcome)) = match provider {
        Ok(provider) => {
            let rounds = turn
                .converse(provider.as_ref(), &mut completion_request, &mut reply)
                .await;
            (Some(provider), rounds)
        }
        Err(error) => (None, (Usage::default(), Err(error))),
    };
    match outcome {
        Ok(()) => {
            if guardrail_finalizer::needs_fallback(
                &reply.raw,
                &reply.cleaned,
                &reply.state.removals,
            ) {
                // What was released (a "Sure!") is followed by the fallback.
                reply.say(policy.rules.fallback(), events);
            }
        }
        Err(error) => {
            // The visitor gets a generic apology; the reason stays in the log.
            tracing::warn!(%error, tenant = %tenant, "LLM provider failed");
            reply.say(&settings.apology, events);
        }
    }
    // The caller hears the reply as it is; a channel that stores its
    // transcript scrubbed keeps the reply scrubbed too.
    let told = reply.cleaned;
    let (content, pii) = if request.channel.stores_scrubbed() {
        let stored = settings.scrubber.scrub(&told);
        (stored.text, stored.counts)
    } else {
        (told.clone(), Default::default())
    };
    let record = TurnRecord {
        agent,
        reply_seq: opened.slot.reply_seq,
        content,
        pii,
        provider: provider
            .as_ref()
            .map_or("none", |p| p.provider())
            .to_owned(),
        model: provider.as_ref().map_or("none", |p| p.model()).to_owned(),
        usage,
        embedding: retrieved.embedding,
        guardrail_removals: reply.state.removals,
    };
    let mut stored = deps
        .chat
        .finish_turn(tenant, request.conversation, record)
        .instrument(tracing::debug_span!("persist", write = "reply"))
        .await?;
    state.remember(
        history,
        stored_visitor_text,
        &stored.content,
        opened.slot.reply_seq,
    );
    stored.content = told;
    Ok(stored)
}
