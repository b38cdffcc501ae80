//! The PostgreSQL store.
//!
//! Every unit of work on tenant data opens with [`Store::tenant`], which sets
//! `app.tenant_id` transaction-locally (PgBouncer transaction-mode safe) and
//! hands back a [`TenantTx`]; the repository functions take that, so tenant
//! data cannot be reached without naming the tenant. Row-level security checks
//! the same thing underneath: the pool connects as a role that cannot bypass it.

pub mod agents;
pub mod api_tokens;
pub mod bootstrap;
pub mod chat;
pub mod conversations;
pub mod files;
pub mod knowledge;
pub mod leads;
pub mod llm_configs;
pub mod operators;
pub mod outbox;
pub mod rate_limits;
pub mod recordings;
pub mod retention;
pub mod sessions;
pub mod tenants;
pub mod tool_runs;
pub mod twilio;
pub mod usage;
pub mod usage_daily;
pub mod webhook_deliveries;
pub mod webhook_endpoints;
pub mod widgets;

use agentry_actors::{OperatorId, TenantId};
use sqlx::postgres::PgPool;
use sqlx::{PgConnection, Postgres, Transaction};

/// Tables that refuse UPDATE and DELETE, in the database itself.
pub const AUDIT_TABLES: [&str; 5] = [
    "agent_action_runs",
    "agent_usage_events",
    "agent_webhook_deliveries",
    "voice_pii_audits",
    "privacy_erasures",
];

/// Tables whose rows belong to one tenant and carry a row-level-security policy.
pub const TENANT_TABLES: [&str; 34] = [
    "tenants",
    "tenant_users",
    "tenant_user_sessions",
    "agents",
    "widgets",
    "conversations",
    "agent_messages",
    "agent_action_runs",
    "agent_usage_events",
    "agent_webhook_deliveries",
    "voice_pii_audits",
    "kb_documents",
    "kb_chunks",
    "kb_namespace_versions",
    "tenant_llm_configs",
    "leads",
    "webhook_endpoints",
    "outbox_events",
    "bookings",
    "quote_requests",
    "api_tokens",
    "tenant_rate_limits",
    "phone_numbers",
    "tenant_twilio_configs",
    "sms_suppressions",
    "sms_outbound",
    "sms_delivery_statuses",
    "call_recordings",
    "subject_keys",
    "privacy_erasures",
    "files",
    "file_shares",
    "usage_daily",
    "tenant_retention",
];

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl DbError {
    /// Whether the database, not the request, failed: no connection could be
    /// had, or the one in use was lost (a restart, a failover,
    /// `pg_terminate_backend`). The pool replaces lost connections, so the
    /// caller may retry: 503, not 500.
    pub fn is_unavailable(&self) -> bool {
        let Self::Sqlx(error) = self else {
            return false;
        };
        match error {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                // Class 08: connection exceptions; 57P01-57P03: the server
                // shut the session down or is starting; 53300: too many connections.
                code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
            }),
            _ => false,
        }
    }

    /// Maps a unique violation to a conflict with a caller-chosen message.
    pub(crate) fn conflict_on_unique(error: sqlx::Error, message: &str) -> Self {
        match &error {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
                Self::Conflict(message.to_owned())
            }
            _ => Self::Sqlx(error),
        }
    }
}

#[cfg(test)]
mod unavailable_tests {
    use super::DbError;

    #[test]
    fn lost_connections_are_unavailability_and_bad_queries_are_not() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(DbError::Sqlx(sqlx::Error::Io(io)).is_unavailable());
        assert!(DbError::Sqlx(sqlx::Error::PoolTimedOut).is_unavailable());
        assert!(DbError::Sqlx(sqlx::Error::PoolClosed).is_unavailable());
        assert!(!DbError::Sqlx(sqlx::Error::RowNotFound).is_unavailable());
        assert!(!DbError::NotFound.is_unavailable());
        assert!(!DbError::Conflict("taken".into()).is_unavailable());
    }
}

/// The application's handle on PostgreSQL (through the non-owner app role).
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Opens a unit of work scoped to `tenant`.
    pub async fn tenant(&self, tenant: TenantId) -> Result<TenantTx, DbError> {
        self.begin_for(tenant, "BEGIN").await
    }

    /// A read-only unit of work scoped to `tenant` that sees one snapshot of
    /// the database throughout (repeatable read): for loads that must be
    /// consistent across several queries.
    pub async fn tenant_snapshot(&self, tenant: TenantId) -> Result<TenantTx, DbError> {
        self.begin_for(tenant, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
    }

    async fn begin_for(&self, tenant: TenantId, begin: &str) -> Result<TenantTx, DbError> {
        let tx = begin_with_setting(&self.pool, begin, "app.tenant_id", tenant.as_uuid()).await?;
        Ok(TenantTx { tx, tenant })
    }

    /// Opens an operator's unit of work: tenant metadata is readable, tenant data is not.
    pub async fn operator(
        &self,
        operator: OperatorId,
    ) -> Result<Transaction<'static, Postgres>, DbError> {
        begin_with_setting(&self.pool, "BEGIN", "app.operator_id", operator.as_uuid()).await
    }

    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// Begins a transaction and sets `setting` to `id` transaction-locally, in one
/// round trip (a UUID's text form needs no quoting; `setting` is a constant).
async fn begin_with_setting(
    pool: &PgPool,
    begin: &str,
    setting: &'static str,
    id: uuid::Uuid,
) -> Result<Transaction<'static, Postgres>, DbError> {
    Ok(pool
        .begin_with(format!(
            "{begin}; SELECT set_config('{setting}', '{}', true)",
            id.hyphenated()
        ))
        .await?)
}

/// A transaction in which `app.tenant_id` is set; dropped without commit, it rolls back.
pub struct TenantTx {
    tx: Transaction<'static, Postgres>,
    tenant: TenantId,
}

impl TenantTx {
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    pub async fn commit(self) -> Result<(), DbError> {
        self.tx.commit().await?;
        Ok(())
    }
}
