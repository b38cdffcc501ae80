//! Conversations as the dashboard lists them: who, where, and whether one
//! waits for a person.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{DbError, TenantTx};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
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
         ORDER BY id DESC LIMIT $7",
    )
    .bind(tenant.as_uuid())
    .bind(page.before)
    .bind(page.status)
    .bind(page.agent)
    .bind(page.started_after)
    .bind(page.started_before)
    .bind(page.limit)
    .fetch_all(tx.conn())
    .await?)
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
