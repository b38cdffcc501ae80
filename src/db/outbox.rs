//! The transactional outbox and its relay to the Redis stream of events.
//!
//! [`append`] writes an event inside the unit of work that changes the data
//! it describes: a rolled-back transaction leaves no event, a committed one
//! always has its event. [`relay_once`] publishes unpublished events in id
//! order and marks them, in one transaction that holds their row locks: if
//! Redis or the instance dies in between, the marks roll back and the next
//! relay, on any instance, publishes them again. Delivery is therefore at
//! least once; a republished event keeps its id, and so its `webhook-id`.

use agentry_actors::ports::StreamName;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{DbError, Store, TenantTx};
use crate::bus::RedisBus;

/// The stream the relay publishes to and the webhook dispatchers read.
pub const EVENTS: StreamName = StreamName::new("events");

/// An event as it travels on the stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct OutboxEvent {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub event_type: String,
    pub payload: Value,
    pub created_at: DateTime<Utc>,
}

/// Records `event_type` with `payload` in the caller's unit of work.
pub async fn append(tx: &mut TenantTx, event_type: &str, payload: &Value) -> Result<Uuid, DbError> {
    let id = Uuid::now_v7();
    let tenant = tx.tenant();
    sqlx::query(
        "INSERT INTO outbox_events (id, tenant_id, event_type, payload) VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(tenant.as_uuid())
    .bind(event_type)
    .bind(payload)
    .execute(tx.conn())
    .await?;
    Ok(id)
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("publishing: {0}")]
    Bus(#[from] agentry_actors::ports::BusError),
}

impl From<sqlx::Error> for RelayError {
    fn from(error: sqlx::Error) -> Self {
        Self::Db(DbError::Sqlx(error))
    }
}

/// Publishes up to `batch` unpublished events; how many it published.
pub async fn relay_once(store: &Store, bus: &RedisBus, batch: usize) -> Result<usize, RelayError> {
    let mut tx = store.pool().begin().await?;
    let events: Vec<OutboxEvent> = sqlx::query_as(
        "SELECT id, tenant_id, event_type, payload, created_at FROM agentry_claim_outbox($1)",
    )
    .bind(i32::try_from(batch).unwrap_or(i32::MAX))
    .fetch_all(&mut *tx)
    .await?;
    if events.is_empty() {
        return Ok(0);
    }
    let payloads: Vec<String> = events
        .iter()
        .map(|event| serde_json::to_string(event).expect("an event serializes"))
        .collect();
    // A failure here drops the transaction: nothing is marked, all is retried.
    bus.publish_many(EVENTS, &payloads).await?;
    let published: Vec<Uuid> = events.iter().map(|event| event.id).collect();
    sqlx::query("SELECT agentry_mark_outbox_published($1)")
        .bind(&published)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(published.len())
}

/// Unpublished events and the creation time of the oldest, for the backlog gauges.
pub async fn backlog(store: &Store) -> Result<(i64, Option<DateTime<Utc>>), DbError> {
    Ok(
        sqlx::query_as("SELECT unpublished, oldest FROM agentry_outbox_backlog()")
            .fetch_one(store.pool())
            .await?,
    )
}

/// Marks an event settled: every endpoint subscribed to it has a final
/// delivery row or a recorded retry, so Redis no longer needs to hold it.
pub async fn settle(tx: &mut TenantTx, event: Uuid) -> Result<(), DbError> {
    sqlx::query("UPDATE outbox_events SET settled_at = now() WHERE id = $1 AND settled_at IS NULL")
        .bind(event)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Makes unsettled events published at or before `published_before`
/// unpublished again, so the relay publishes them anew; how many.
pub async fn republish_unsettled(
    store: &Store,
    published_before: DateTime<Utc>,
) -> Result<i32, DbError> {
    Ok(sqlx::query_scalar("SELECT agentry_republish_unsettled($1)")
        .bind(published_before)
        .fetch_one(store.pool())
        .await?)
}

/// A retry recorded in PostgreSQL: the latest attempt of `event` at
/// `endpoint_id` was `retrying`, the next one due at `next_attempt_at`.
#[derive(Clone, Debug)]
pub struct RecordedRetry {
    pub event: OutboxEvent,
    pub endpoint_id: Uuid,
    pub attempt: i32,
    pub next_attempt_at: DateTime<Utc>,
}

/// Retries whose latest attempt is `retrying` and due by `due_before`, soonest first.
pub async fn recorded_retries(
    store: &Store,
    due_before: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<RecordedRetry>, DbError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        event: OutboxEvent,
        endpoint_id: Uuid,
        attempt: i32,
        next_attempt_at: DateTime<Utc>,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, tenant_id, event_type, payload, created_at, endpoint_id, attempt, next_attempt_at
         FROM agentry_pending_webhook_retries($1, $2)",
    )
    .bind(due_before)
    .bind(i32::try_from(limit).unwrap_or(i32::MAX))
    .fetch_all(store.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| RecordedRetry {
            event: row.event,
            endpoint_id: row.endpoint_id,
            attempt: row.attempt,
            next_attempt_at: row.next_attempt_at,
        })
        .collect())
}

/// One event of the caller's tenant.
pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<OutboxEvent, DbError> {
    let tenant = tx.tenant();
    sqlx::query_as(
        "SELECT id, tenant_id, event_type, payload, created_at FROM outbox_events
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

/// [`settle`] for several events at once.
pub async fn settle_all(tx: &mut TenantTx, events: &[Uuid]) -> Result<(), DbError> {
    if events.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE outbox_events SET settled_at = now() WHERE id = ANY($1) AND settled_at IS NULL",
    )
    .bind(events)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Those of `events` whose person was erased (see [`crate::privacy`]): their
/// payloads are redacted, and a copy still on the stream or in the delayed
/// set must not be sent.
pub async fn erased_among(
    tx: &mut TenantTx,
    events: &[Uuid],
) -> Result<std::collections::HashSet<Uuid>, DbError> {
    let tenant = tx.tenant();
    let erased: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM outbox_events
         WHERE tenant_id = $1 AND id = ANY ($2) AND erased_at IS NOT NULL",
    )
    .bind(tenant.as_uuid())
    .bind(events)
    .fetch_all(tx.conn())
    .await?;
    Ok(erased.into_iter().collect())
}
