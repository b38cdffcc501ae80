//! Reads of `agent_webhook_deliveries`, the append-only record of every
//! webhook attempt (written by [`crate::webhook_delivery::record`]).

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{DbError, TenantTx};

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Delivery {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub attempt: i32,
    /// success, retrying, failed or blocked.
    pub outcome: String,
    pub response_status: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: Option<i32>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, endpoint_id, event_id, event_type, attempt, outcome, response_status, \
                       error, duration_ms, next_attempt_at, created_at";

/// The latest attempt of `event` at `endpoint`: its number and outcome.
pub async fn latest_attempt(
    tx: &mut TenantTx,
    event: Uuid,
    endpoint: Uuid,
) -> Result<Option<(i32, String)>, DbError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_as(
        "SELECT attempt, outcome FROM agent_webhook_deliveries
         WHERE tenant_id = $1 AND event_id = $2 AND endpoint_id = $3
         ORDER BY attempt DESC, id DESC LIMIT 1",
    )
    .bind(tenant.as_uuid())
    .bind(event)
    .bind(endpoint)
    .fetch_optional(tx.conn())
    .await?)
}

/// The (event, endpoint) pairs among `events` that have an attempt on record.
pub async fn attempted_pairs(
    tx: &mut TenantTx,
    events: &[Uuid],
) -> Result<std::collections::HashSet<(Uuid, Uuid)>, DbError> {
    let tenant = tx.tenant();
    let pairs: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT DISTINCT event_id, endpoint_id FROM agent_webhook_deliveries
         WHERE tenant_id = $1 AND event_id = ANY($2)",
    )
    .bind(tenant.as_uuid())
    .bind(events)
    .fetch_all(tx.conn())
    .await?;
    Ok(pairs.into_iter().collect())
}

/// Filters of the dashboard's list, newest first; `None` does not filter.
#[derive(Default)]
pub struct DeliveryFilter<'a> {
    /// Only deliveries older than this one (the previous page's cursor).
    pub before: Option<Uuid>,
    pub endpoint_id: Option<Uuid>,
    pub event_type: Option<&'a str>,
    pub outcome: Option<&'a str>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub limit: i64,
}

pub async fn list(tx: &mut TenantTx, filter: DeliveryFilter<'_>) -> Result<Vec<Delivery>, DbError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM agent_webhook_deliveries
         WHERE tenant_id = $1
           AND ($2::uuid IS NULL OR id < $2)
           AND ($3::uuid IS NULL OR endpoint_id = $3)
           AND ($4::text IS NULL OR event_type = $4)
           AND ($5::text IS NULL OR outcome = $5)
           AND ($6::timestamptz IS NULL OR created_at >= $6)
           AND ($7::timestamptz IS NULL OR created_at < $7)
         ORDER BY id DESC LIMIT $8"
    ))
    .bind(tenant.as_uuid())
    .bind(filter.before)
    .bind(filter.endpoint_id)
    .bind(filter.event_type)
    .bind(filter.outcome)
    .bind(filter.created_after)
    .bind(filter.created_before)
    .bind(filter.limit)
    .fetch_all(tx.conn())
    .await?)
}

pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<Delivery, DbError> {
    let tenant = tx.tenant();
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM agent_webhook_deliveries WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.as_uuid())
    .bind(id)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}
