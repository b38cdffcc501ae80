//! Conversations and messages, and the [`ChatStore`] port the pipeline uses.

use agentry_actors::llm::{ChatMessage, ChatRole};
use agentry_actors::ports::{
    AgentBrief, ChatStore, StoreError, StoredMessage, TurnRecord, TurnSlot,
};
use agentry_actors::{AgentId, ConversationId, TenantId, WidgetId};
use async_trait::async_trait;
use uuid::Uuid;

use super::{agents, DbError, Store, TenantTx};

impl From<DbError> for StoreError {
    fn from(error: DbError) -> Self {
        match error {
            DbError::NotFound => StoreError::NotFound,
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// Starts a widget conversation, remembering which widget session owns it.
pub async fn create_widget_conversation(
    tx: &mut TenantTx,
    agent: AgentId,
    widget: WidgetId,
    widget_session: Uuid,
) -> Result<ConversationId, DbError> {
    let id = ConversationId::new();
    let tenant = tx.tenant();
    sqlx::query(
        "INSERT INTO conversations (id, tenant_id, agent_id, widget_id, channel, widget_session_id)
         VALUES ($1, $2, $3, $4, 'widget', $5)",
    )
    .bind(id.as_uuid())
    .bind(tenant.as_uuid())
    .bind(agent.as_uuid())
    .bind(widget.as_uuid())
    .bind(widget_session)
    .execute(tx.conn())
    .await?;
    Ok(id)
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

/// A conversation's messages in order, as its visitor may see them.
pub async fn transcript(
    tx: &mut TenantTx,
    conversation: ConversationId,
) -> Result<Vec<StoredMessage>, DbError> {
    let tenant = tx.tenant();
    let rows: Vec<(Uuid, String, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT id, role, content, created_at FROM agent_messages
         WHERE tenant_id = $1 AND conversation_id = $2 AND role IN ('visitor', 'assistant')
         ORDER BY seq",
    )
    .bind(tenant.as_uuid())
    .bind(conversation.as_uuid())
    .fetch_all(tx.conn())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, role, content, created_at)| StoredMessage {
            id,
            role,
            content,
            created_at,
        })
        .collect())
}

async fn insert_message(
    tx: &mut TenantTx,
    conversation: ConversationId,
    seq: i64,
    role: &str,
    content: &str,
) -> Result<StoredMessage, DbError> {
    let tenant = tx.tenant();
    let (id, created_at): (Uuid, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "INSERT INTO agent_messages (id, tenant_id, conversation_id, seq, role, content)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(tenant.as_uuid())
    .bind(conversation.as_uuid())
    .bind(seq)
    .bind(role)
    .bind(content)
    .fetch_one(tx.conn())
    .await?;
    Ok(StoredMessage {
        id,
        role: role.to_owned(),
        content: content.to_owned(),
        created_at,
    })
}

/// The PostgreSQL side of the chat pipeline.
pub struct PgChatStore {
    store: Store,
}

impl PgChatStore {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[async_trait]
impl ChatStore for PgChatStore {
    async fn agent_brief(
        &self,
        tenant: TenantId,
        agent: AgentId,
    ) -> Result<AgentBrief, StoreError> {
        let mut tx = self.store.tenant(tenant).await?;
        let agent = agents::get(&mut tx, agent).await?;
        let profile = agent.profile.0;
        Ok(AgentBrief {
            name: agent.name,
            system_prompt: agent.system_prompt,
            brand: profile.brand,
            facts: profile.facts,
            competitors: profile.competitors,
            escalation_topics: profile.escalation_topics,
        })
    }

    async fn history(
        &self,
        tenant: TenantId,
        conversation: ConversationId,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        let mut tx = self.store.tenant(tenant).await?;
        let mut rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT role, content FROM agent_messages
             WHERE tenant_id = $1 AND conversation_id = $2 AND role IN ('visitor', 'assistant')
             ORDER BY seq DESC LIMIT $3",
        )
        .bind(tenant.as_uuid())
        .bind(conversation.as_uuid())
        .bind(limit as i64)
        .fetch_all(tx.conn())
        .await
        .map_err(DbError::from)?;
        rows.reverse();
        Ok(rows
            .into_iter()
            .map(|(role, content)| ChatMessage {
                role: if role == "visitor" {
                    ChatRole::User
                } else {
                    ChatRole::Assistant
                },
                content,
            })
            .collect())
    }

    async fn begin_turn(
        &self,
        tenant: TenantId,
        conversation: ConversationId,
        visitor_text: &str,
    ) -> Result<TurnSlot, StoreError> {
        let mut tx = self.store.tenant(tenant).await?;
        let reserved: Option<(i64,)> = sqlx::query_as(
            "UPDATE conversations SET next_seq = next_seq + 2
             WHERE tenant_id = $1 AND id = $2 AND ended_at IS NULL RETURNING next_seq - 2",
        )
        .bind(tenant.as_uuid())
        .bind(conversation.as_uuid())
        .fetch_optional(tx.conn())
        .await
        .map_err(DbError::from)?;
        let (visitor_seq,) = reserved.ok_or(StoreError::NotFound)?;
        insert_message(&mut tx, conversation, visitor_seq, "visitor", visitor_text).await?;
        tx.commit().await?;
        Ok(TurnSlot {
            visitor_seq,
            reply_seq: visitor_seq + 1,
        })
    }

    async fn finish_turn(
        &self,
        tenant: TenantId,
        conversation: ConversationId,
        record: TurnRecord,
    ) -> Result<StoredMessage, StoreError> {
        let mut tx = self.store.tenant(tenant).await?;
        let stored = insert_message(
            &mut tx,
            conversation,
            record.reply_seq,
            "assistant",
            &record.content,
        )
        .await?;
        let usage_rows = [
            (
                "chat",
                record.provider.as_str(),
                record.model.as_str(),
                record.usage.prompt_tokens,
                record.usage.completion_tokens,
            ),
            (
                "embedding",
                record.embedder.as_str(),
                record.embedder.as_str(),
                record.embed_tokens,
                0,
            ),
        ];
        for (kind, provider, model, prompt_tokens, completion_tokens) in usage_rows {
            sqlx::query(
                "INSERT INTO agent_usage_events
                 (id, tenant_id, agent_id, conversation_id, kind, provider, model, prompt_tokens, completion_tokens)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(Uuid::now_v7())
            .bind(tenant.as_uuid())
            .bind(record.agent.as_uuid())
            .bind(conversation.as_uuid())
            .bind(kind)
            .bind(provider)
            .bind(model)
            .bind(prompt_tokens as i32)
            .bind(completion_tokens as i32)
            .execute(tx.conn())
            .await
            .map_err(DbError::from)?;
        }
        // Executing the tools (leads, bookings, webhooks) is its own stage; this records the request.
        for call in &record.tool_calls {
            sqlx::query(
                "INSERT INTO agent_action_runs (id, tenant_id, agent_id, conversation_id, tool, status, input)
                 VALUES ($1, $2, $3, $4, $5, 'requested', $6)",
            )
            .bind(Uuid::now_v7())
            .bind(tenant.as_uuid())
            .bind(record.agent.as_uuid())
            .bind(conversation.as_uuid())
            .bind(&call.name)
            .bind(sqlx::types::Json(&call.arguments))
            .execute(tx.conn())
            .await
            .map_err(DbError::from)?;
        }
        tx.commit().await?;
        Ok(stored)
    }
}
