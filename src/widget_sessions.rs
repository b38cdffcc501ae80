//! Widget sessions: short-lived, scoped to one widget's agent, revocable.
//!
//! They live in Redis, not PostgreSQL: every instance sees a revocation at
//! once, they expire by themselves, and the visitor's IP (kept for abuse
//! control) disappears with the session instead of outliving it in a table.

use std::time::Instant;

use agentry_actors::{AgentId, ConversationId, TenantId, WidgetId};
use chrono::{DateTime, Utc};
use fred::prelude::{Expiration, KeysInterface};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::bus::RedisBus;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WidgetSession {
    pub tenant: TenantId,
    pub agent: AgentId,
    pub widget: WidgetId,
    pub conversation: ConversationId,
    pub visitor_ip: Option<String>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionStoreError {
    #[error("session store unavailable: {0}")]
    Unavailable(String),
}

#[derive(Clone, Debug)]
pub struct WidgetSessions {
    bus: RedisBus,
}

impl WidgetSessions {
    pub fn new(bus: RedisBus) -> Self {
        Self { bus }
    }

    fn key(&self, session: Uuid) -> String {
        self.bus.key(&format!("ws:{session}"), "session")
    }

    pub async fn create(&self, id: Uuid, session: &WidgetSession) -> Result<(), SessionStoreError> {
        let started = Instant::now();
        let created = self.store(id, session).await;
        record(
            "create",
            started,
            if created.is_ok() { "ok" } else { "error" },
        );
        created
    }

    async fn store(&self, id: Uuid, session: &WidgetSession) -> Result<(), SessionStoreError> {
        // Milliseconds: whole seconds would end the session up to a second before `expires_at`.
        let ttl = (session.expires_at - Utc::now()).num_milliseconds().max(1);
        let value = serde_json::to_string(session)
            .map_err(|e| SessionStoreError::Unavailable(e.to_string()))?;
        let _: () = self
            .bus
            .pool()
            .set(self.key(id), value, Some(Expiration::PX(ttl)), None, false)
            .await
            .map_err(|e| SessionStoreError::Unavailable(e.to_string()))?;
        Ok(())
    }

    /// The live session, or `None` if it expired, was revoked or never existed.
    pub async fn get(&self, id: Uuid) -> Result<Option<WidgetSession>, SessionStoreError> {
        let started = Instant::now();
        let value: Result<Option<String>, _> = self.bus.pool().get(self.key(id)).await;
        let session = value
            .map(|value| value.and_then(|json| serde_json::from_str(&json).ok()))
            .map_err(|e| SessionStoreError::Unavailable(e.to_string()));
        let outcome = match &session {
            Ok(Some(_)) => "found",
            Ok(None) => "missing",
            Err(_) => "error",
        };
        record("get", started, outcome);
        session
    }

    pub async fn revoke(&self, id: Uuid) -> Result<(), SessionStoreError> {
        let started = Instant::now();
        let deleted: Result<i64, _> = self.bus.pool().del(self.key(id)).await;
        record(
            "revoke",
            started,
            if deleted.is_ok() { "ok" } else { "error" },
        );
        deleted
            .map(drop)
            .map_err(|e| SessionStoreError::Unavailable(e.to_string()))
    }
}

/// `agentry_widget_session_operations_total{operation,outcome}` and
/// `agentry_widget_session_operation_duration_seconds{operation}`: every
/// widget turn reads its session from Redis first.
fn record(operation: &'static str, started: Instant, outcome: &'static str) {
    metrics::counter!("agentry_widget_session_operations_total", "operation" => operation, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("agentry_widget_session_operation_duration_seconds", "operation" => operation)
        .record(started.elapsed().as_secs_f64());
}
