//! The handle the service holds on the chat pipeline: it starts the
//! supervision tree and submits turns to it.

use std::sync::Arc;

use ractor::{Actor, ActorRef};
use tokio::sync::{mpsc, oneshot};

use crate::chat_session::{PipelineDeps, TurnError, TurnEvent, TurnJob, TurnRequest};
use crate::ports::StoredMessage;
use crate::supervisor::{RootMsg, RootSupervisor};

/// A running turn: cleaned deltas as they come, then the stored reply.
pub struct TurnHandle {
    pub events: mpsc::UnboundedReceiver<TurnEvent>,
    pub reply: oneshot::Receiver<Result<StoredMessage, TurnError>>,
}

#[derive(Clone)]
pub struct ChatPipeline {
    root: ActorRef<RootMsg>,
}

impl ChatPipeline {
    pub async fn start(deps: PipelineDeps) -> Result<Self, ractor::SpawnErr> {
        let (root, _) = Actor::spawn(None, RootSupervisor, Arc::new(deps)).await?;
        Ok(Self { root })
    }

    /// Submits a turn; the reply arrives on the handle.
    pub fn submit(&self, request: TurnRequest) -> Result<TurnHandle, TurnError> {
        let (events_tx, events) = mpsc::unbounded_channel();
        let (reply_tx, reply) = oneshot::channel();
        let job = TurnJob {
            request,
            events: events_tx,
            reply: reply_tx,
        };
        self.root
            .send_message(RootMsg::Turn(job))
            .map_err(|_| TurnError::Unavailable("the pipeline has stopped".into()))?;
        Ok(TurnHandle { events, reply })
    }

    pub async fn active_tenants(&self) -> usize {
        let (tx, rx) = oneshot::channel();
        if self.root.send_message(RootMsg::ActiveTenants(tx)).is_err() {
            return 0;
        }
        rx.await.unwrap_or(0)
    }

    /// Stops the tree; in-flight turns finish or their callers see an error.
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
    use crate::ids::{AgentId, ConversationId, TenantId};
    use crate::knowledge::OfflineEmbedder;
    use crate::llm::{
        ChatMessage, Completion, CompletionEvent, CompletionRequest, LlmError, LlmProvider,
    };
    use crate::ports::{
        AgentBrief, ChatStore, KnowledgeChunk, KnowledgeStore, LlmResolver, Namespace, StoreError,
        StoredVector, TurnRecord, TurnSlot,
    };

    /// (seq, role, content) per conversation.
    type Transcripts = HashMap<ConversationId, Vec<(i64, String, String)>>;

    #[derive(Default)]
    struct MemoryChat {
        messages: Mutex<Transcripts>,
    }

    #[async_trait]
    impl ChatStore for MemoryChat {
        async fn agent_brief(&self, _: TenantId, _: AgentId) -> Result<AgentBrief, StoreError> {
            Ok(AgentBrief {
                system_prompt: "Be brief.".into(),
                ..Default::default()
            })
        }

        async fn history(
            &self,
            _: TenantId,
            c: ConversationId,
            _: usize,
        ) -> Result<Vec<ChatMessage>, StoreError> {
            let messages = self.messages.lock().unwrap();
            Ok(messages.get(&c).map_or_else(Vec::new, |m| {
                m.iter()
                    .map(|(_, _, text)| ChatMessage::user(text.clone()))
                    .collect()
            }))
        }

        async fn begin_turn(
            &self,
            _: TenantId,
            c: ConversationId,
            text: &str,
        ) -> Result<TurnSlot, StoreError> {
            let mut messages = self.messages.lock().unwrap();
            let conversation = messages.entry(c).or_default();
            let seq = conversation.len() as i64;
            conversation.push((seq, "visitor".into(), text.into()));
            Ok(TurnSlot {
                visitor_seq: seq,
                reply_seq: seq + 1,
            })
        }

        async fn finish_turn(
            &self,
            _: TenantId,
            c: ConversationId,
            record: TurnRecord,
        ) -> Result<StoredMessage, StoreError> {
            let mut messages = self.messages.lock().unwrap();
            messages.entry(c).or_default().push((
                record.reply_seq,
                "assistant".into(),
                record.content.clone(),
            ));
            Ok(StoredMessage {
                id: uuid::Uuid::new_v4(),
                role: "assistant".into(),
                content: record.content,
                created_at: chrono::Utc::now(),
            })
        }
    }

    struct NoKnowledge;

    #[async_trait]
    impl KnowledgeStore for NoKnowledge {
        async fn namespace_version(&self, _: Namespace) -> Result<i64, StoreError> {
            Ok(0)
        }
        async fn namespace_vectors(&self, _: Namespace) -> Result<Vec<StoredVector>, StoreError> {
            Ok(Vec::new())
        }
        async fn lexical_search(
            &self,
            _: Namespace,
            _: &str,
            _: usize,
        ) -> Result<Vec<uuid::Uuid>, StoreError> {
            Ok(Vec::new())
        }
        async fn chunks(
            &self,
            _: Namespace,
            _: &[uuid::Uuid],
        ) -> Result<Vec<KnowledgeChunk>, StoreError> {
            Ok(Vec::new())
        }
    }

    /// Echoes the visitor slowly, in two deltas, and counts overlapping calls.
    #[derive(Default)]
    struct SlowEcho {
        in_flight: AtomicUsize,
        most_in_flight: AtomicUsize,
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

    struct Fixed(Arc<SlowEcho>);

    #[async_trait]
    impl LlmResolver for Fixed {
        async fn provider_for(&self, _: TenantId) -> Result<Arc<dyn LlmProvider>, LlmError> {
            Ok(self.0.clone())
        }
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
        llm: Arc<SlowEcho>,
        chat: Arc<MemoryChat>,
        settings: PipelineSettings,
    ) -> ChatPipeline {
        ChatPipeline::start(PipelineDeps {
            chat,
            knowledge: Arc::new(NoKnowledge),
            embedder: Arc::new(OfflineEmbedder::default()),
            llm: Arc::new(Fixed(llm)),
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
            text: text.into(),
        }
    }

    async fn finish(
        handle: TurnHandle,
    ) -> (
        Vec<String>,
        Result<StoredMessage, crate::chat_session::TurnError>,
    ) {
        let TurnHandle { mut events, reply } = handle;
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
}
