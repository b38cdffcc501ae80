//! Conversations as the dashboard lists them: who, where, and whether one
//! waits for a person.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{DbError, TenantTx};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
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
}

/// A page of conversations, newest first.
#[derive(Clone, Copy, Debug)]
pub struct ConversationPage<'a> {
    pub before: Option<Uuid>,
    pub status: Option<&'a str>,
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
    Ok(sqlx::query_as(
        "SELECT id, agent_id, channel, status, lead_id, started_at, escalated_at, escalation_reason
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
         ORDER BY id DESC LIMIT $7",
    )
    .bind(tenant.as_uuid())
    .bind(page.before)
    .bind(page.status)
    .bind(page.agent)
    .bind(page.started_after)
    .bind(page.started_before)
    .bind(page.limit)
    .bind(page.text.map(contains_pattern))
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
    sqlx::query_as(
        "SELECT id, agent_id, channel, status, lead_id, started_at, escalated_at, escalation_reason
         FROM conversations WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
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
