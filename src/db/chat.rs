//! Conversations and messages, and the [`ChatStore`] port the pipeline uses.
//!
//! A turn is two units of work, each one statement and one round trip: the
//! functions `agentry_begin_turn` and `agentry_finish_turn` (see the
//! migration `turn_unit_of_work`) set the tenant themselves, inside the
//! statement's own transaction.

use agentry_actors::llm::ChatMessage;
use agentry_actors::pii::PiiCounts;
use agentry_actors::ports::{
    AgentBrief, CacheVersions, ChatStore, MessageRole, OpenedTurn, StoreError, StoredReply,
    TurnChannel, TurnRecord, TurnSlot, Versioned, VisitorMessage,
};
use agentry_actors::{AgentId, ConversationId, TenantId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;

use uuid::Uuid;

use super::{agents, usage, DbError, Store, TenantTx};
use crate::live::{LiveEvent, LiveHub};

impl From<DbError> for StoreError {
    fn from(error: DbError) -> Self {
        match error {
            DbError::NotFound => StoreError::NotFound,
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

fn unavailable(error: sqlx::Error) -> StoreError {
    StoreError::from(DbError::from(error))
}

/// A stored message, as the conversation's visitor may see it (no
/// conversation, agent or tenant ids): what the widget, the dashboard's
/// transcripts and the live streams all show.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Message {
    pub id: Uuid,
    /// Its position in the conversation: messages are shown in this order
    /// (and a widget's event stream resumes after it).
    pub seq: i64,
    #[schema(value_type = crate::http::openapi::MessageRoleSchema)]
    pub role: MessageRole,
    pub content: String,
    pub created_at: DateTime<Utc>,
    /// A team member's reply during a takeover, not the agent's.
    pub human: bool,
}

fn role_of(stored: &str) -> Option<MessageRole> {
    match stored {
        "visitor" => Some(MessageRole::Visitor),
        "assistant" => Some(MessageRole::Assistant),
        _ => None,
    }
}

/// The widget session behind a conversation, for revocation from the dashboard.
pub async fn widget_session_of(
    tx: &mut TenantTx,
    conversation: ConversationId,
) -> Result<Option<Uuid>, DbError> {
    let tenant = tx.tenant();
    let row: Option<(Option<Uuid>,)> = sqlx::query_as(
        "SELECT widget_session_id FROM conversations WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(conversation.as_uuid())
    .fetch_optional(tx.conn())
    .await?;
    row.map(|(session,)| session).ok_or(DbError::NotFound)
}

/// A conversation's visitor and assistant messages in order (none before its first turn).
pub async fn transcript(
    tx: &mut TenantTx,
    conversation: ConversationId,
) -> Result<Vec<Message>, DbError> {
    messages_after(tx, conversation, -1).await
}

/// The conversation's messages after position `after_seq`, oldest first:
/// what a visitor's event stream resumes with.
pub async fn messages_after(
    tx: &mut TenantTx,
    conversation: ConversationId,
    after_seq: i64,
) -> Result<Vec<Message>, DbError> {
    let tenant = tx.tenant();
    let rows: Vec<(Uuid, i64, String, String, DateTime<Utc>, bool)> = sqlx::query_as(
        "SELECT id, seq, role, content, created_at, human FROM agent_messages
         WHERE tenant_id = $1 AND conversation_id = $2 AND seq > $3
           AND role IN ('visitor', 'assistant')
         ORDER BY seq",
    )
    .bind(tenant.as_uuid())
    .bind(conversation.as_uuid())
    .bind(after_seq)
    .fetch_all(tx.conn())
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, seq, role, content, created_at, human)| {
            Some(Message {
                id,
                seq,
                role: role_of(&role)?,
                content,
                created_at,
                human,
            })
        })
        .collect())
}

impl From<StoredReply> for Message {
    fn from(reply: StoredReply) -> Self {
        Self {
            id: reply.id,
            seq: reply.seq,
            role: MessageRole::Assistant,
            content: reply.content,
            created_at: reply.created_at,
            human: false,
        }
    }
}

/// The PostgreSQL side of the chat pipeline. A turn's messages in a
/// conversation the team watches are also announced on the live stream,
/// after they are stored.
pub struct PgChatStore {
    store: Store,
    live: Arc<LiveHub>,
}

impl PgChatStore {
    pub fn new(store: Store, live: Arc<LiveHub>) -> Self {
        Self { store, live }
    }

    async fn announce(&self, tenant: TenantId, conversation: ConversationId, message: Message) {
        self.live
            .announce(tenant, conversation, LiveEvent::Message { message })
            .await;
    }
}

#[async_trait]
impl ChatStore for PgChatStore {
    async fn agent_brief(
        &self,
        tenant: TenantId,
        agent: AgentId,
    ) -> Result<Versioned<AgentBrief>, StoreError> {
        let mut tx = self.store.tenant(tenant).await?;
        let agent = agents::get(&mut tx, agent).await?;
        Ok(Versioned {
            version: agent.version,
            value: agent.profile.0.into_brief(agent.name, agent.system_prompt),
        })
    }

    async fn history(
        &self,
        tenant: TenantId,
        conversation: ConversationId,
        before_seq: i64,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        let mut tx = self.store.tenant(tenant).await?;
        let mut rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT role, content FROM agent_messages
             WHERE tenant_id = $1 AND conversation_id = $2 AND seq < $3
               AND role IN ('visitor', 'assistant')
             ORDER BY seq DESC LIMIT $4",
        )
        .bind(tenant.as_uuid())
        .bind(conversation.as_uuid())
        .bind(before_seq)
        .bind(limit as i64)
        .fetch_all(tx.conn())
        .await
        .map_err(unavailable)?;
        rows.reverse();
        Ok(rows
            .into_iter()
            .filter_map(|(role, content)| match role_of(&role)? {
                MessageRole::Visitor => Some(ChatMessage::user(content)),
                MessageRole::Assistant => Some(ChatMessage::assistant(content)),
            })
            .collect())
    }

    async fn begin_turn(
        &self,
        tenant: TenantId,
        agent: AgentId,
        conversation: ConversationId,
        channel: &TurnChannel,
        message: VisitorMessage<'_>,
    ) -> Result<OpenedTurn, StoreError> {
        let (widget, session, origin) = match channel {
            TurnChannel::Widget {
                widget,
                session,
                origin,
            } => (Some(widget.as_uuid()), Some(*session), origin.as_deref()),
            TurnChannel::Sms | TurnChannel::Voice => (None, None, None),
        };
        let message_id = Uuid::now_v7();
        // One statement outside an explicit transaction: one round trip, one commit.
        #[allow(clippy::type_complexity)]
        let (
            outcome,
            visitor_seq,
            agent_version,
            llm_version,
            namespace_version,
            scrubbed,
            live,
            created_at,
        ): (
            String,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<bool>,
            Option<bool>,
            Option<DateTime<Utc>>,
        ) = sqlx::query_as(
            "SELECT * FROM agentry_begin_turn($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(tenant.as_uuid())
        .bind(agent.as_uuid())
        .bind(conversation.as_uuid())
        .bind(channel.label())
        .bind(widget)
        .bind(session)
        .bind(origin)
        .bind(message_id)
        .bind(message.text)
        .bind(message.scrubbed)
        .bind(pii_json(&message.pii))
        .fetch_one(self.store.pool())
        .await
        .map_err(unavailable)?;
        let held = match outcome.as_str() {
            "ok" => false,
            "held" => true,
            "origin_refused" => return Err(StoreError::OriginRefused),
            "widget_gone" | "conversation_ended" => return Err(StoreError::NotFound),
            other => {
                return Err(StoreError::Unavailable(format!(
                    "agentry_begin_turn answered {other:?}"
                )))
            }
        };
        let visitor_seq = visitor_seq
            .ok_or_else(|| StoreError::Unavailable("agentry_begin_turn returned no seq".into()))?;
        let stored_scrubbed = scrubbed.unwrap_or(false);
        if live == Some(true) {
            let content = match stored_scrubbed {
                true => message.scrubbed.unwrap_or(message.text),
                false => message.text,
            };
            let message = Message {
                id: message_id,
                seq: visitor_seq,
                role: MessageRole::Visitor,
                content: content.to_owned(),
                created_at: created_at.unwrap_or_else(Utc::now),
                human: false,
            };
            self.announce(tenant, conversation, message).await;
        }
        Ok(OpenedTurn {
            held,
            slot: TurnSlot {
                visitor_seq,
                reply_seq: visitor_seq + 1,
            },
            versions: CacheVersions {
                // The agent cannot be gone while its widget exists; -1 never matches a cache.
                agent: agent_version.unwrap_or(-1),
                llm: llm_version.unwrap_or(0),
                namespace: namespace_version.unwrap_or(0),
            },
            stored_scrubbed,
        })
    }

    async fn finish_turn(
        &self,
        tenant: TenantId,
        conversation: ConversationId,
        record: TurnRecord,
    ) -> Result<StoredReply, StoreError> {
        let id = Uuid::now_v7();
        let (created_at, live): (DateTime<Utc>, bool) =
            sqlx::query_as("SELECT * FROM agentry_finish_turn($1, $2, $3, $4, $5, $6, $7, $8)")
                .bind(tenant.as_uuid())
                .bind(record.agent.as_uuid())
                .bind(conversation.as_uuid())
                .bind(id)
                .bind(record.reply_seq)
                .bind(&record.content)
                .bind(usage::usage_rows(&record))
                .bind(pii_json(&record.pii))
                .fetch_one(self.store.pool())
                .await
                .map_err(unavailable)?;
        if live {
            let message = Message {
                id,
                seq: record.reply_seq,
                role: MessageRole::Assistant,
                content: record.content.clone(),
                created_at,
                human: false,
            };
            self.announce(tenant, conversation, message).await;
        }
        Ok(StoredReply {
            id,
            seq: record.reply_seq,
            content: record.content,
            created_at,
        })
    }
}

/// `{"phone": 1, ...}`: what a scrub replaced, for its audit rows (counts only).
fn pii_json(counts: &PiiCounts) -> serde_json::Value {
    serde_json::Value::Object(
        counts
            .iter()
            .map(|(kind, n)| (kind.as_str().to_owned(), serde_json::Value::from(n)))
            .collect(),
    )
}
