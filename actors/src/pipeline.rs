//! The handle the service holds on the chat pipeline: it starts the
//! supervision tree and submits turns to it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use tokio::sync::{mpsc, oneshot};

use crate::chat_session::{
    InFlight, InFlightGuard, PipelineDeps, TurnError, TurnEvent, TurnJob, TurnRequest,
};
use crate::ports::StoredReply;
use crate::supervisor::{RootMsg, RootSupervisor};

/// A running turn: acceptance once the visitor's message is stored, cleaned
/// deltas as they come, then the stored reply.
pub struct TurnHandle {
    /// Resolves `Ok` once the visitor's message is stored; an error means the
    /// turn was refused or failed first, and `reply` says why.
    pub accepted: oneshot::Receiver<()>,
    pub events: mpsc::UnboundedReceiver<TurnEvent>,
    pub reply: oneshot::Receiver<Result<StoredReply, TurnError>>,
}

#[derive(Clone)]
pub struct ChatPipeline {
    root: ActorRef<RootMsg>,
    in_flight: Arc<InFlight>,
    draining: Arc<AtomicBool>,
}

impl ChatPipeline {
    pub async fn start(deps: PipelineDeps) -> Result<Self, ractor::SpawnErr> {
        let (root, _) = Actor::spawn(None, RootSupervisor, Arc::new(deps)).await?;
        Ok(Self {
            root,
            in_flight: Arc::default(),
            draining: Arc::default(),
        })
    }

    /// Submits a turn; the reply arrives on the handle.
    pub fn submit(&self, request: TurnRequest) -> Result<TurnHandle, TurnError> {
        if self.draining.load(Ordering::Acquire) {
            return Err(TurnError::Unavailable(
                "the pipeline is shutting down".into(),
            ));
        }
        let (events_tx, events) = mpsc::unbounded_channel();
        let (accepted_tx, accepted) = oneshot::channel();
        let (reply_tx, reply) = oneshot::channel();
        // The turn's trace: a child of the caller's span (the HTTP request),
        // carried through the actors' mailboxes and entered by each stage.
        let span = tracing::info_span!(
            target: crate::TRACE_TARGET,
            "chat_turn",
            channel = request.channel.label(),
            tenant = %request.tenant,
            outcome = tracing::field::Empty,
        );
        let job = TurnJob {
            request,
            span,
            events: events_tx,
            accepted: accepted_tx,
            reply: reply_tx,
            in_flight: InFlightGuard::new(self.in_flight.clone()),
        };
        self.root
            .send_message(RootMsg::Turn(job))
            .map_err(|_| TurnError::Unavailable("the pipeline has stopped".into()))?;
        Ok(TurnHandle {
            accepted,
            events,
            reply,
        })
    }

    pub async fn active_tenants(&self) -> usize {
        let (tx, rx) = oneshot::channel();
        if self.root.send_message(RootMsg::ActiveTenants(tx)).is_err() {
            return 0;
        }
        rx.await.unwrap_or(0)
    }

    /// Turns submitted and not answered yet.
    pub fn turns_in_flight(&self) -> usize {
        self.in_flight.count()
    }

    /// Refuses new turns, waits up to `deadline` for the ones in flight to be
    /// answered, then stops the tree; returns how many were still running.
    pub async fn drain(&self, deadline: Duration) -> usize {
        self.draining.store(true, Ordering::Release);
        let _ = tokio::time::timeout(deadline, self.in_flight.settled()).await;
        let left = self.in_flight.count();
        self.stop();
        left
    }

    /// Stops the tree; turns still queued fail and their callers see an error.
    pub fn stop(&self) {
        self.root.stop(Some("shutdown".into()));
    }
}

#[cfg(test)]
mod tests {
    //! The pipeline with in-memory ports: no database, no Redis, no network.

    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use async_trait::async_trait;
    use tokio::sync::mpsc;

    use super::*;
    use crate::chat_session::{PipelineSettings, TurnEvent, FAULT_TRIGGER};
    use crate::ids::{AgentId, ConversationId, TenantId, WidgetId};
    use crate::knowledge::OfflineEmbedder;
    use crate::llm::{
        ChatMessage, Completion, CompletionEvent, CompletionRequest, LlmError, LlmProvider,
        ToolCall, ToolChoice,
    };
    use crate::ports::{
        AgentBrief, CacheVersions, ChatStore, DocumentVersion, KnowledgeStore, LlmResolver,
        Namespace, NamespaceChanges, OpenedTurn, StoreError, TurnChannel, TurnRecord, TurnSlot,
        Versioned, VisitorMessage,
    };
    use crate::resident::ResidentNamespaces;
    use crate::tools::{self, ArgumentErrors, RunStatus, ToolInput, ToolRun, ToolRunner};

    /// (seq, role, content) per conversation.
    type Transcripts = HashMap<ConversationId, Vec<(i64, String, String)>>;

    #[derive(Default)]
    struct MemoryChat {
        messages: Mutex<Transcripts>,
        history_reads: AtomicUsize,
    }

    #[async_trait]
    impl ChatStore for MemoryChat {
        async fn agent_brief(
            &self,
            _: TenantId,
            _: AgentId,
        ) -> Result<Versioned<AgentBrief>, StoreError> {
            Ok(Versioned {
                version: 1,
                value: AgentBrief {
                    system_prompt: "Be brief.".into(),
                    ..Default::default()
                },
            })
        }

        async fn history(
            &self,
            _: TenantId,
            c: ConversationId,
            before_seq: i64,
            _: usize,
        ) -> Result<Vec<ChatMessage>, StoreError> {
            self.history_reads.fetch_add(1, Ordering::SeqCst);
            let messages = self.messages.lock().unwrap();
            Ok(messages.get(&c).map_or_else(Vec::new, |m| {
                m.iter()
                    .filter(|(seq, _, _)| *seq < before_seq)
                    .map(|(_, role, text)| {
                        if role == "visitor" {
                            ChatMessage::user(text.clone())
                        } else {
                            ChatMessage::assistant(text.clone())
                        }
                    })
                    .collect()
            }))
        }

        async fn begin_turn(
            &self,
            _: TenantId,
            _: AgentId,
            c: ConversationId,
            _: &TurnChannel,
            message: VisitorMessage<'_>,
        ) -> Result<OpenedTurn, StoreError> {
            let mut messages = self.messages.lock().unwrap();
            let conversation = messages.entry(c).or_default();
            let seq = conversation.last().map_or(0, |(seq, _, _)| seq + 1);
            conversation.push((seq, "visitor".into(), message.text.into()));
            Ok(OpenedTurn {
                held: false,
                slot: TurnSlot {
                    visitor_seq: seq,
                    reply_seq: seq + 1,
                },
                versions: CacheVersions {
                    agent: 1,
                    llm: 0,
                    namespace: 0,
                },
                stored_scrubbed: false,
            })
        }

        async fn finish_turn(
            &self,
            _: TenantId,
            c: ConversationId,
            record: TurnRecord,
        ) -> Result<StoredReply, StoreError> {
            let mut messages = self.messages.lock().unwrap();
            messages.entry(c).or_default().push((
                record.reply_seq,
                "assistant".into(),
                record.content.clone(),
            ));
            Ok(StoredReply {
                id: uuid::Uuid::new_v4(),
                seq: record.reply_seq,
                content: record.content,
                created_at: chrono::Utc::now(),
            })
        }
    }

    struct NoKnowledge;

    #[async_trait]
    impl KnowledgeStore for NoKnowledge {
        async fn changes(
            &self,
            _: Namespace,
            _: &[DocumentVersion],
        ) -> Result<NamespaceChanges, StoreError> {
            Ok(NamespaceChanges::default())
        }
    }

    /// Echoes the visitor slowly, in two deltas, and counts overlapping calls.
    #[derive(Default)]
    struct SlowEcho {
        in_flight: AtomicUsize,
        most_in_flight: AtomicUsize,
        /// The conversation part (after the system prompt) of every request.
        seen: Mutex<Vec<Vec<String>>>,
    }

    #[async_trait]
    impl LlmProvider for SlowEcho {
        fn provider(&self) -> &str {
            "echo"
        }
        fn model(&self) -> &str {
            "echo-1"
        }
        async fn complete(
            &self,
            request: &CompletionRequest,
            events: &mpsc::UnboundedSender<CompletionEvent>,
        ) -> Result<Completion, LlmError> {
            self.seen.lock().unwrap().push(
                request.messages[1..]
                    .iter()
                    .map(|m| m.content.clone())
                    .collect(),
            );
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            let text = format!(
                "You said: {}.",
                request.messages.last().map_or("", |m| m.content.as_str())
            );
            let _ = events.send(CompletionEvent::Delta("You said: ".into()));
            tokio::time::sleep(Duration::from_millis(30)).await;
            let _ = events.send(CompletionEvent::Delta(text["You said: ".len()..].into()));
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok(Completion {
                text,
                ..Default::default()
            })
        }
    }

    struct Fixed(Arc<dyn LlmProvider>);

    #[async_trait]
    impl LlmResolver for Fixed {
        async fn provider_for(
            &self,
            _: TenantId,
        ) -> Result<Versioned<Arc<dyn LlmProvider>>, LlmError> {
            Ok(Versioned {
                version: 0,
                value: self.0.clone(),
            })
        }
    }

    /// Runs every valid call (recording it) and refuses the others.
    #[derive(Default)]
    struct MemoryTools {
        runs: Mutex<Vec<ToolCall>>,
    }

    #[async_trait]
    impl ToolRunner for MemoryTools {
        async fn run(
            &self,
            _: TenantId,
            _: AgentId,
            _: ConversationId,
            call: &ToolCall,
            checked: Result<ToolInput, ArgumentErrors>,
        ) -> Result<ToolRun, StoreError> {
            Ok(match checked {
                Ok(_) => {
                    self.runs.lock().unwrap().push(call.clone());
                    ToolRun {
                        status: RunStatus::Succeeded,
                        output: serde_json::json!({ "status": "saved" }),
                    }
                }
                Err(errors) => ToolRun::rejected(&errors),
            })
        }
    }

    /// Answers a first round with a lead capture and nothing else, and a
    /// round that has read results with the last result's status; with
    /// `always_call` it calls again whenever it may.
    struct ToolFirst {
        always_call: bool,
        /// Per request: the rounds it carried and its tool choice.
        requests: Mutex<Vec<(usize, ToolChoice)>>,
    }

    #[async_trait]
    impl LlmProvider for ToolFirst {
        fn provider(&self) -> &str {
            "scripted"
        }
        fn model(&self) -> &str {
            "tool-first"
        }
        async fn complete(
            &self,
            request: &CompletionRequest,
            events: &mpsc::UnboundedSender<CompletionEvent>,
        ) -> Result<Completion, LlmError> {
            let rounds = request.tool_rounds.len();
            self.requests
                .lock()
                .unwrap()
                .push((rounds, request.tool_choice));
            let may_call = request.tool_choice == ToolChoice::Auto;
            if may_call && (self.always_call || rounds == 0) {
                return Ok(Completion {
                    tool_calls: vec![ToolCall {
                        id: format!("call_{rounds}"),
                        name: tools::CAPTURE_LEAD.into(),
                        arguments: serde_json::json!({ "email": "ana@example.com" }),
                    }],
                    ..Default::default()
                });
            }
            let status = request.tool_rounds.last().map_or("nothing", |round| {
                round.results[0].output["status"].as_str().unwrap()
            });
            let text = format!("Your details are {status}.");
            let _ = events.send(CompletionEvent::Delta(text.clone()));
            Ok(Completion {
                text,
                ..Default::default()
            })
        }
    }

    #[tokio::test]
    async fn a_tool_only_first_answer_is_followed_by_the_models_reply_to_its_result() {
        let llm = Arc::new(ToolFirst {
            always_call: false,
            requests: Mutex::default(),
        });
        let tools = Arc::new(MemoryTools::default());
        let pipeline = pipeline_with_tools(
            llm.clone(),
            Arc::new(MemoryChat::default()),
            tools.clone(),
            PipelineSettings::default(),
        )
        .await;
        let handle = pipeline
            .submit(turn(
                TenantId::new(),
                ConversationId::new(),
                "I'm ana@example.com",
            ))
            .unwrap();
        let (deltas, reply) = finish(handle).await;
        let reply = reply.unwrap();
        assert_eq!(reply.content, "Your details are saved.");
        assert_eq!(deltas.concat(), reply.content);
        assert_eq!(tools.runs.lock().unwrap().len(), 1);
        assert_eq!(
            *llm.requests.lock().unwrap(),
            [(0, ToolChoice::Auto), (1, ToolChoice::Auto)]
        );
        pipeline.stop();
    }

    #[tokio::test]
    async fn tool_rounds_are_bounded_and_the_last_one_must_answer_in_words() {
        let llm = Arc::new(ToolFirst {
            always_call: true,
            requests: Mutex::default(),
        });
        let tools = Arc::new(MemoryTools::default());
        let settings = PipelineSettings {
            max_tool_rounds: 2,
            ..PipelineSettings::default()
        };
        let pipeline = pipeline_with_tools(
            llm.clone(),
            Arc::new(MemoryChat::default()),
            tools.clone(),
            settings,
        )
        .await;
        let handle = pipeline
            .submit(turn(TenantId::new(), ConversationId::new(), "hello"))
            .unwrap();
        let reply = finish(handle).await.1.unwrap();
        assert_eq!(reply.content, "Your details are saved.");
        assert_eq!(
            tools.runs.lock().unwrap().len(),
            2,
            "one run per allowed round"
        );
        assert_eq!(
            *llm.requests.lock().unwrap(),
            [
                (0, ToolChoice::Auto),
                (1, ToolChoice::Auto),
                (2, ToolChoice::None)
            ]
        );
        pipeline.stop();
    }

    async fn pipeline(llm: Arc<SlowEcho>, chat: Arc<MemoryChat>) -> ChatPipeline {
        pipeline_with(
            llm,
            chat,
            PipelineSettings {
                fault_injection: true,
                ..PipelineSettings::default()
            },
        )
        .await
    }

    async fn pipeline_with(
        llm: Arc<dyn LlmProvider>,
        chat: Arc<MemoryChat>,
        settings: PipelineSettings,
    ) -> ChatPipeline {
        pipeline_with_tools(llm, chat, Arc::new(MemoryTools::default()), settings).await
    }

    async fn pipeline_with_tools(
        llm: Arc<dyn LlmProvider>,
        chat: Arc<MemoryChat>,
        tools: Arc<MemoryTools>,
        settings: PipelineSettings,
    ) -> ChatPipeline {
        ChatPipeline::start(PipelineDeps {
            chat,
            knowledge: Arc::new(NoKnowledge),
            embedder: Arc::new(OfflineEmbedder::default()),
            llm: Arc::new(Fixed(llm)),
            tools,
            resident: Arc::new(ResidentNamespaces::new(1 << 20)),
            settings,
        })
        .await
        .unwrap()
    }

    fn turn(tenant: TenantId, conversation: ConversationId, text: &str) -> TurnRequest {
        TurnRequest {
            tenant,
            agent: AgentId::new(),
            conversation,
            channel: TurnChannel::Widget {
                widget: WidgetId::new(),
                session: uuid::Uuid::new_v4(),
                origin: None,
            },
            text: text.into(),
        }
    }

    async fn finish(
        handle: TurnHandle,
    ) -> (
        Vec<String>,
        Result<StoredReply, crate::chat_session::TurnError>,
    ) {
        let TurnHandle {
            mut events, reply, ..
        } = handle;
        let reply = reply.await.expect("the session answered");
        let mut deltas = Vec::new();
        while let Ok(TurnEvent::Delta(delta)) = events.try_recv() {
            deltas.push(delta);
        }
        (deltas, reply)
    }

    #[tokio::test]
    async fn concurrent_turns_of_one_conversation_never_interleave() {
        let llm = Arc::new(SlowEcho::default());
        let chat = Arc::new(MemoryChat::default());
        let pipeline = pipeline(llm.clone(), chat.clone()).await;
        let (tenant, conversation) = (TenantId::new(), ConversationId::new());
        let handles: Vec<_> = (0..5)
            .map(|n| {
                pipeline
                    .submit(turn(tenant, conversation, &format!("turn {n}")))
                    .unwrap()
            })
            .collect();
        for handle in handles {
            let (deltas, reply) = finish(handle).await;
            assert_eq!(
                deltas.concat(),
                reply.unwrap().content,
                "the deltas are the stored reply"
            );
        }
        assert_eq!(
            llm.most_in_flight.load(Ordering::SeqCst),
            1,
            "one conversation, one turn at a time"
        );
        let messages = chat.messages.lock().unwrap()[&conversation].clone();
        for pair in messages.chunks(2) {
            assert_eq!(pair[0].1, "visitor");
            assert_eq!(pair[1].1, "assistant");
            assert_eq!(
                pair[1].2,
                format!("You said: {}.", pair[0].2),
                "each reply answers its own question"
            );
        }
        pipeline.stop();
    }

    #[tokio::test]
    async fn different_conversations_run_concurrently() {
        let llm = Arc::new(SlowEcho::default());
        let pipeline = pipeline(llm.clone(), Arc::new(MemoryChat::default())).await;
        let tenant = TenantId::new();
        let handles: Vec<_> = (0..4)
            .map(|n| {
                pipeline
                    .submit(turn(tenant, ConversationId::new(), &format!("hi {n}")))
                    .unwrap()
            })
            .collect();
        for handle in handles {
            finish(handle).await.1.unwrap();
        }
        assert!(
            llm.most_in_flight.load(Ordering::SeqCst) > 1,
            "sessions are independent actors"
        );
        pipeline.stop();
    }

    #[tokio::test]
    async fn a_crashed_session_fails_its_turn_only_and_the_conversation_recovers() {
        let llm = Arc::new(SlowEcho::default());
        let pipeline = pipeline(llm, Arc::new(MemoryChat::default())).await;
        let (crashing, steady) = (TenantId::new(), TenantId::new());
        let (crash_conversation, steady_conversation) =
            (ConversationId::new(), ConversationId::new());
        finish(
            pipeline
                .submit(turn(steady, steady_conversation, "before"))
                .unwrap(),
        )
        .await
        .1
        .unwrap();

        let crashed = pipeline
            .submit(turn(crashing, crash_conversation, FAULT_TRIGGER))
            .unwrap();
        assert!(
            crashed.reply.await.is_err(),
            "the crashed turn's caller learns it failed"
        );

        finish(
            pipeline
                .submit(turn(steady, steady_conversation, "after"))
                .unwrap(),
        )
        .await
        .1
        .unwrap();
        let recovered = finish(
            pipeline
                .submit(turn(crashing, crash_conversation, "again"))
                .unwrap(),
        )
        .await;
        assert_eq!(recovered.1.unwrap().content, "You said: again.");
        assert_eq!(pipeline.active_tenants().await, 2);
        pipeline.stop();
    }

    #[tokio::test]
    async fn no_turn_is_lost_while_idle_sessions_and_tenants_retire() {
        // Idle limits shorter than the gaps between turns: sessions and tenant
        // supervisors retire and come back all the time, racing the turns.
        let settings = PipelineSettings {
            session_idle: Duration::from_millis(2),
            tenant_idle: Duration::from_millis(2),
            ..PipelineSettings::default()
        };
        let pipeline = pipeline_with(
            Arc::new(SlowEcho::default()),
            Arc::new(MemoryChat::default()),
            settings,
        )
        .await;
        let tenants = [TenantId::new(), TenantId::new()];
        let conversations = [
            ConversationId::new(),
            ConversationId::new(),
            ConversationId::new(),
        ];
        for round in 0..40u64 {
            let tenant = tenants[(round % 2) as usize];
            let conversation = conversations[(round % 3) as usize];
            let handle = pipeline
                .submit(turn(tenant, conversation, &format!("round {round}")))
                .unwrap();
            let (_, reply) = finish(handle).await;
            assert_eq!(reply.unwrap().content, format!("You said: round {round}."));
            tokio::time::sleep(Duration::from_millis(round % 7)).await;
        }
        pipeline.stop();
    }

    #[tokio::test]
    async fn history_is_kept_by_the_session_and_reread_only_after_another_writer() {
        let llm = Arc::new(SlowEcho::default());
        let chat = Arc::new(MemoryChat::default());
        let pipeline = pipeline(llm.clone(), chat.clone()).await;
        let (tenant, conversation) = (TenantId::new(), ConversationId::new());
        for text in ["one", "two"] {
            finish(pipeline.submit(turn(tenant, conversation, text)).unwrap())
                .await
                .1
                .unwrap();
        }
        assert_eq!(chat.history_reads.load(Ordering::SeqCst), 0);
        assert_eq!(
            llm.seen.lock().unwrap()[1],
            ["one", "You said: one.", "two"],
            "the kept history is the stored one"
        );

        // Another instance answers a turn of the same conversation.
        chat.messages
            .lock()
            .unwrap()
            .entry(conversation)
            .or_default()
            .extend([
                (4, "visitor".to_owned(), "elsewhere".to_owned()),
                (5, "assistant".to_owned(), "answered elsewhere".to_owned()),
            ]);
        finish(
            pipeline
                .submit(turn(tenant, conversation, "three"))
                .unwrap(),
        )
        .await
        .1
        .unwrap();
        assert_eq!(chat.history_reads.load(Ordering::SeqCst), 1);
        let last = llm.seen.lock().unwrap().last().unwrap().clone();
        assert_eq!(
            last[last.len() - 3..],
            ["elsewhere", "answered elsewhere", "three"]
        );
        pipeline.stop();
    }

    #[tokio::test]
    async fn draining_waits_for_turns_in_flight_and_refuses_new_ones() {
        let pipeline = pipeline(
            Arc::new(SlowEcho::default()),
            Arc::new(MemoryChat::default()),
        )
        .await;
        let tenant = TenantId::new();
        let handles: Vec<_> = (0..3)
            .map(|n| {
                pipeline
                    .submit(turn(tenant, ConversationId::new(), &format!("late {n}")))
                    .unwrap()
            })
            .collect();
        assert_eq!(pipeline.turns_in_flight(), 3);
        let left = pipeline.drain(Duration::from_secs(5)).await;
        assert_eq!(left, 0, "every turn in flight was answered");
        assert!(pipeline
            .submit(turn(tenant, ConversationId::new(), "too late"))
            .is_err());
        for handle in handles {
            let reply = handle.reply.await.expect("answered before the stop");
            assert!(reply.unwrap().content.starts_with("You said: late"));
        }
    }
}
