//! Widgets: the public key a website embeds, and the origins allowed to use it.

use agentry_actors::{AgentId, WidgetId};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{DbError, TenantTx};
use crate::domain::AllowedOrigin;

#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Widget {
    pub id: uuid::Uuid,
    pub agent_id: uuid::Uuid,
    pub public_key: String,
    pub allowed_origins: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, agent_id, public_key, allowed_origins, created_at, updated_at";

fn origin_strings(origins: &[AllowedOrigin]) -> Vec<String> {
    origins.iter().map(|o| o.as_str().to_owned()).collect()
}

/// Creates a widget for `agent`; `NotFound` if the agent is not this tenant's.
pub async fn create(
    tx: &mut TenantTx,
    agent: AgentId,
    public_key: &str,
    origins: &[AllowedOrigin],
) -> Result<Widget, DbError> {
    let tenant = tx.tenant();
    // INSERT ... SELECT from the tenant's own agent: no row, no widget.
    sqlx::query_as(&format!(
        "INSERT INTO widgets (id, tenant_id, agent_id, public_key, allowed_origins)
         SELECT $1, tenant_id, id, $4, $5 FROM agents WHERE tenant_id = $2 AND id = $3
         RETURNING {COLUMNS}"
    ))
    .bind(WidgetId::new().as_uuid())
    .bind(tenant.as_uuid())
    .bind(agent.as_uuid())
    .bind(public_key)
    .bind(origin_strings(origins))
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

pub async fn list_for_agent(tx: &mut TenantTx, agent: AgentId) -> Result<Vec<Widget>, DbError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM widgets WHERE tenant_id = $1 AND agent_id = $2 ORDER BY created_at, id"
    ))
    .bind(tenant.as_uuid())
    .bind(agent.as_uuid())
    .fetch_all(tx.conn())
    .await?)
}

pub async fn get(tx: &mut TenantTx, agent: AgentId, widget: WidgetId) -> Result<Widget, DbError> {
    let tenant = tx.tenant();
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM widgets WHERE tenant_id = $1 AND agent_id = $2 AND id = $3"
    ))
    .bind(tenant.as_uuid())
    .bind(agent.as_uuid())
    .bind(widget.as_uuid())
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

pub async fn set_origins(
    tx: &mut TenantTx,
    agent: AgentId,
    widget: WidgetId,
    origins: &[AllowedOrigin],
) -> Result<Widget, DbError> {
    let tenant = tx.tenant();
    sqlx::query_as(&format!(
        "UPDATE widgets SET allowed_origins = $4, updated_at = now()
         WHERE tenant_id = $1 AND agent_id = $2 AND id = $3 RETURNING {COLUMNS}"
    ))
    .bind(tenant.as_uuid())
    .bind(agent.as_uuid())
    .bind(widget.as_uuid())
    .bind(origin_strings(origins))
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

pub async fn delete(tx: &mut TenantTx, agent: AgentId, widget: WidgetId) -> Result<(), DbError> {
    let tenant = tx.tenant();
    let deleted =
        sqlx::query("DELETE FROM widgets WHERE tenant_id = $1 AND agent_id = $2 AND id = $3")
            .bind(tenant.as_uuid())
            .bind(agent.as_uuid())
            .bind(widget.as_uuid())
            .execute(tx.conn())
            .await?;
    if deleted.rows_affected() == 0 {
        return Err(DbError::NotFound);
    }
    Ok(())
}

/// A widget as a visitor's browser names it, found before its tenant is known.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct WidgetByKey {
    pub widget_id: uuid::Uuid,
    pub tenant_id: uuid::Uuid,
    pub agent_id: uuid::Uuid,
    pub allowed_origins: Vec<String>,
}

pub async fn find_by_public_key(
    store: &super::Store,
    public_key: &str,
) -> Result<Option<WidgetByKey>, DbError> {
    Ok(sqlx::query_as(
        "SELECT widget_id, tenant_id, agent_id, allowed_origins FROM agentry_find_widget($1)",
    )
    .bind(public_key)
    .fetch_optional(store.pool())
    .await?)
}

/// Whether any widget allows `origin` (CORS preflights name no widget).
pub async fn origin_allowed_anywhere(store: &super::Store, origin: &str) -> Result<bool, DbError> {
    Ok(sqlx::query_scalar("SELECT agentry_origin_allowed($1)")
        .bind(origin)
        .fetch_one(store.pool())
        .await?)
}

/// A widget's allowed origins, or `None` if it no longer exists.
pub async fn allowed_origins(
    tx: &mut TenantTx,
    widget: WidgetId,
) -> Result<Option<Vec<String>>, DbError> {
    let tenant = tx.tenant();
    Ok(
        sqlx::query_scalar("SELECT allowed_origins FROM widgets WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_uuid())
            .bind(widget.as_uuid())
            .fetch_optional(tx.conn())
            .await?,
    )
}
