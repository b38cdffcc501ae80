//! Conversations as the dashboard lists them: who, where, and whether one
//! waits for a person; and a person's live takeover of one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{DbError, TenantTx};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ConversationSummary {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub channel: String,
    /// `open`, or `waiting_for_human` once the agent escalated it.
    pub status: String,
    pub lead_id: Option<Uuid>,
    pub started_at: DateTime<Utc>,
    pub escalated_at: Option<DateTime<Utc>>,
    pub escalation_reason: Option<String>,
    /// Who answers: `agent`, `waiting` (escalated, the agent still answers
    /// until a person takes over) or `human` (a team member has it).
    #[schema(example = "waiting")]
    pub state: String,
    /// The team member who took it over, while one has it.
    pub taken_over_by: Option<Uuid>,
}

/// A conversation's `state`, derived from who has it.
macro_rules! state_expr {
    () => {
        "CASE WHEN handled_by IS NOT NULL THEN 'human'
              WHEN status = 'waiting_for_human' THEN 'waiting'
              ELSE 'agent' END"
    };
}

/// The columns of a [`ConversationSummary`].
const SUMMARY_COLUMNS: &str = concat!(
    "id, agent_id, channel, status, lead_id, started_at, escalated_at, escalation_reason, ",
    state_expr!(),
    " AS state, handled_by AS taken_over_by"
);

/// The values of `?state=`.
pub const STATES: [&str; 3] = ["agent", "waiting", "human"];

/// A page of conversations, newest first.
#[derive(Clone, Copy, Debug)]
pub struct ConversationPage<'a> {
    pub before: Option<Uuid>,
    pub status: Option<&'a str>,
    /// One of [`STATES`].
    pub state: Option<&'a str>,
    pub agent: Option<Uuid>,
    /// Only conversations with a message containing this text, any case.
    pub text: Option<&'a str>,
    pub started_after: Option<DateTime<Utc>>,
    pub started_before: Option<DateTime<Utc>>,
    pub limit: i64,
}

/// Newest first (ids are time-ordered UUIDv7s).
pub async fn list(
    tx: &mut TenantTx,
    page: ConversationPage<'_>,
) -> Result<Vec<ConversationSummary>, DbError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_as(&format!(
        "SELECT {SUMMARY_COLUMNS}
         FROM conversations
         WHERE tenant_id = $1
           AND ($2::uuid IS NULL OR id < $2)
           AND ($3::text IS NULL OR status = $3)
           AND ($4::uuid IS NULL OR agent_id = $4)
           AND ($5::timestamptz IS NULL OR started_at > $5)
           AND ($6::timestamptz IS NULL OR started_at < $6)
           AND ($8::text IS NULL OR EXISTS (
                SELECT 1 FROM agent_messages m
                WHERE m.tenant_id = $1 AND m.conversation_id = conversations.id
                  AND m.content ILIKE $8 ESCAPE '\\'))
           AND ($9::text IS NULL OR $9 = {state})
         ORDER BY id DESC LIMIT $7",
        state = state_expr!()
    ))
    .bind(tenant.as_uuid())
    .bind(page.before)
    .bind(page.status)
    .bind(page.agent)
    .bind(page.started_after)
    .bind(page.started_before)
    .bind(page.limit)
    .bind(page.text.map(contains_pattern))
    .bind(page.state)
    .fetch_all(tx.conn())
    .await?)
}

/// An ILIKE pattern matching `text` anywhere, its wildcards taken literally.
fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// One conversation of the tenant.
pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<ConversationSummary, DbError> {
    let tenant = tx.tenant();
    sqlx::query_as(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM conversations WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.as_uuid())
    .bind(id)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

/// Why a takeover, reply or handback was refused.
#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    #[error("no such conversation")]
    NotFound,
    #[error("another team member has taken this conversation over")]
    HeldByAnother,
    #[error("take the conversation over before replying in it")]
    NotTakenOver,
    #[error("the conversation has ended")]
    Ended,
    #[error("live takeover is for widget conversations; this one is on {0}")]
    Channel(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for TakeoverError {
    fn from(error: sqlx::Error) -> Self {
        Self::Db(DbError::from(error))
    }
}

/// A conversation changing hands.
#[derive(Clone, Copy, Debug)]
pub enum Handover {
    /// `by` takes it over: from the next visitor message on, the agent stays
    /// silent. Taking over one's own again changes nothing. The row lock
    /// orders this against a turn's first write (see the migration
    /// `live_takeover`): a turn that began before still answers.
    TakeOver { by: Uuid },
    /// Back to the agent, from `holder` only (`None`: from whoever has it).
    /// The person answered it, so it no longer waits for one.
    HandBack { holder: Option<Uuid> },
}

pub async fn change_hands(
    tx: &mut TenantTx,
    id: Uuid,
    handover: Handover,
) -> Result<ConversationSummary, TakeoverError> {
    let tenant = tx.tenant();
    let (change, user) = match handover {
        Handover::TakeOver { by } => (
            "SET handled_by = $3,
                 taken_over_at = CASE WHEN handled_by = $3 THEN taken_over_at ELSE now() END
             WHERE tenant_id = $1 AND id = $2 AND channel = 'widget' AND ended_at IS NULL
               AND (handled_by IS NULL OR handled_by = $3)",
            Some(by),
        ),
        Handover::HandBack { holder } => (
            "SET handled_by = NULL, taken_over_at = NULL, status = 'open'
             WHERE tenant_id = $1 AND id = $2 AND handled_by IS NOT NULL
               AND ($3::uuid IS NULL OR handled_by = $3)",
            holder,
        ),
    };
    let changed: Option<ConversationSummary> = sqlx::query_as(&format!(
        "UPDATE conversations {change} RETURNING {SUMMARY_COLUMNS}"
    ))
    .bind(tenant.as_uuid())
    .bind(id)
    .bind(user)
    .fetch_optional(tx.conn())
    .await?;
    match changed {
        Some(summary) => Ok(summary),
        None => Err(why_refused(tx, id, user.unwrap_or_default()).await?),
    }
}

/// Stores a team member's reply at the conversation's next position, as an
/// assistant message marked human; refused unless `user` has it.
pub async fn human_reply(
    tx: &mut TenantTx,
    id: Uuid,
    user: Uuid,
    content: &str,
) -> Result<super::chat::Message, TakeoverError> {
    let tenant = tx.tenant();
    let stored: Option<(Uuid, i64, DateTime<Utc>)> = sqlx::query_as(
        "WITH slot AS (
             UPDATE conversations SET next_seq = next_seq + 1
             WHERE tenant_id = $1 AND id = $2 AND handled_by = $3 AND ended_at IS NULL
             RETURNING next_seq - 1 AS seq)
         INSERT INTO agent_messages (id, tenant_id, conversation_id, seq, role, content, human, sent_by)
         SELECT $4, $1, $2, slot.seq, 'assistant', $5, true, $3 FROM slot
         RETURNING id, seq, created_at",
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .bind(user)
    .bind(Uuid::now_v7())
    .bind(content)
    .fetch_optional(tx.conn())
    .await?;
    match stored {
        Some((id, seq, created_at)) => Ok(super::chat::Message {
            id,
            seq,
            role: agentry_actors::ports::MessageRole::Assistant,
            content: content.to_owned(),
            created_at,
            human: true,
        }),
        None => Err(why_refused(tx, id, user).await?),
    }
}

/// What stopped `user`'s takeover, reply or handback of `id`.
async fn why_refused(tx: &mut TenantTx, id: Uuid, user: Uuid) -> Result<TakeoverError, DbError> {
    let tenant = tx.tenant();
    let row: Option<(String, Option<Uuid>, bool)> = sqlx::query_as(
        "SELECT channel, handled_by, ended_at IS NOT NULL FROM conversations
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .fetch_optional(tx.conn())
    .await?;
    Ok(match row {
        None => TakeoverError::NotFound,
        Some((channel, _, _)) if channel != "widget" => TakeoverError::Channel(channel),
        Some((_, _, true)) => TakeoverError::Ended,
        Some((_, Some(holder), _)) if holder != user => TakeoverError::HeldByAnother,
        Some(_) => TakeoverError::NotTakenOver,
    })
}

#[cfg(test)]
mod tests {
    use super::contains_pattern;

    #[test]
    fn a_search_takes_wildcards_literally() {
        assert_eq!(contains_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
        assert_eq!(contains_pattern("oil"), "%oil%");
    }
}
