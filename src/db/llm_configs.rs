//! Each tenant's own LLM (bring your own). Where and how to reach it is stored
//! sealed (see [`crate::llm_resolver`]); the API key never comes back out
//! through the API.

use chrono::{DateTime, Utc};

use super::{DbError, TenantTx};

pub const TABLE: &str = "tenant_llm_configs";
pub const CONNECTION_COLUMN: &str = "connection_sealed";

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct LlmConfigRow {
    pub provider: String,
    pub model: String,
    pub connection_sealed: Vec<u8>,
    pub updated_at: DateTime<Utc>,
    /// Changes with every update (a trigger bumps it); chat caches compare it.
    pub version: i64,
}

pub async fn get(tx: &mut TenantTx) -> Result<Option<LlmConfigRow>, DbError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_as(
        "SELECT provider, model, connection_sealed, updated_at, version FROM tenant_llm_configs WHERE tenant_id = $1",
    )
    .bind(tenant.as_uuid())
    .fetch_optional(tx.conn())
    .await?)
}

/// Inserts or replaces the tenant's configuration.
pub async fn put(
    tx: &mut TenantTx,
    provider: &str,
    model: &str,
    connection_sealed: &[u8],
) -> Result<LlmConfigRow, DbError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_as(
        "INSERT INTO tenant_llm_configs (tenant_id, provider, model, connection_sealed, updated_at)
         VALUES ($1, $2, $3, $4, now())
         ON CONFLICT (tenant_id) DO UPDATE SET
            provider = excluded.provider, model = excluded.model,
            connection_sealed = excluded.connection_sealed, updated_at = now()
         RETURNING provider, model, connection_sealed, updated_at, version",
    )
    .bind(tenant.as_uuid())
    .bind(provider)
    .bind(model)
    .bind(connection_sealed)
    .fetch_one(tx.conn())
    .await?)
}

pub async fn delete(tx: &mut TenantTx) -> Result<bool, DbError> {
    let tenant = tx.tenant();
    let deleted = sqlx::query("DELETE FROM tenant_llm_configs WHERE tenant_id = $1")
        .bind(tenant.as_uuid())
        .execute(tx.conn())
        .await?;
    Ok(deleted.rows_affected() > 0)
}
