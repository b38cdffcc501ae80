//! Each tenant's own LLM (bring your own). The API key is sealed with the
//! keyring, bound to the tenant and this column; it is never read back out
//! through the API.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{DbError, TenantTx};

pub const TABLE: &str = "tenant_llm_configs";
pub const API_KEY_COLUMN: &str = "api_key_sealed";

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct LlmConfigRow {
    pub provider: String,
    pub model: String,
    pub base_url: Option<String>,
    pub azure_deployment: Option<String>,
    pub azure_api_version: Option<String>,
    pub api_key_sealed: Option<Vec<u8>>,
    pub updated_at: DateTime<Utc>,
}

/// What the dashboard shows: everything but the key, and whether there is one.
#[derive(Clone, Debug, Serialize)]
pub struct LlmConfigView {
    pub provider: String,
    pub model: String,
    pub base_url: Option<String>,
    pub azure_deployment: Option<String>,
    pub azure_api_version: Option<String>,
    pub has_api_key: bool,
    pub updated_at: DateTime<Utc>,
}

impl From<&LlmConfigRow> for LlmConfigView {
    fn from(row: &LlmConfigRow) -> Self {
        Self {
            provider: row.provider.clone(),
            model: row.model.clone(),
            base_url: row.base_url.clone(),
            azure_deployment: row.azure_deployment.clone(),
            azure_api_version: row.azure_api_version.clone(),
            has_api_key: row.api_key_sealed.is_some(),
            updated_at: row.updated_at,
        }
    }
}

pub async fn get(tx: &mut TenantTx) -> Result<Option<LlmConfigRow>, DbError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_as(
        "SELECT provider, model, base_url, azure_deployment, azure_api_version, api_key_sealed, updated_at
         FROM tenant_llm_configs WHERE tenant_id = $1",
    )
    .bind(tenant.as_uuid())
    .fetch_optional(tx.conn())
    .await?)
}

/// Inserts or replaces the tenant's configuration.
pub async fn put(tx: &mut TenantTx, row: &LlmConfigRow) -> Result<LlmConfigRow, DbError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_as(
        "INSERT INTO tenant_llm_configs
            (tenant_id, provider, model, base_url, azure_deployment, azure_api_version, api_key_sealed, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, now())
         ON CONFLICT (tenant_id) DO UPDATE SET
            provider = excluded.provider, model = excluded.model, base_url = excluded.base_url,
            azure_deployment = excluded.azure_deployment, azure_api_version = excluded.azure_api_version,
            api_key_sealed = excluded.api_key_sealed, updated_at = now()
         RETURNING provider, model, base_url, azure_deployment, azure_api_version, api_key_sealed, updated_at",
    )
    .bind(tenant.as_uuid())
    .bind(&row.provider)
    .bind(&row.model)
    .bind(&row.base_url)
    .bind(&row.azure_deployment)
    .bind(&row.azure_api_version)
    .bind(&row.api_key_sealed)
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
