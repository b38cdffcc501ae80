//! Agents: a name, a system prompt (never sent to visitors) and a profile.

use agentry_actors::AgentId;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::types::Json;

use super::{DbError, TenantTx};
use crate::domain::AgentProfile;

#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Agent {
    pub id: uuid::Uuid,
    pub name: String,
    pub system_prompt: String,
    #[schema(value_type = AgentProfile)]
    pub profile: Json<AgentProfile>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Changes with every update (a trigger bumps it); chat caches compare it.
    #[serde(skip)]
    pub version: i64,
}

const COLUMNS: &str = "id, name, system_prompt, profile, created_at, updated_at, version";

pub struct NewAgent<'a> {
    pub name: &'a str,
    pub system_prompt: &'a str,
    pub profile: &'a AgentProfile,
}

/// Fields to change; `None` leaves a field as it is.
#[derive(Default)]
pub struct AgentChanges<'a> {
    pub name: Option<&'a str>,
    pub system_prompt: Option<&'a str>,
    pub profile: Option<&'a AgentProfile>,
}

pub async fn create(tx: &mut TenantTx, new: NewAgent<'_>) -> Result<Agent, DbError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_as(&format!(
        "INSERT INTO agents (id, tenant_id, name, system_prompt, profile)
         VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    ))
    .bind(AgentId::new().as_uuid())
    .bind(tenant.as_uuid())
    .bind(new.name)
    .bind(new.system_prompt)
    .bind(Json(new.profile))
    .fetch_one(tx.conn())
    .await?)
}

pub async fn list(tx: &mut TenantTx) -> Result<Vec<Agent>, DbError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM agents WHERE tenant_id = $1 ORDER BY created_at, id"
    ))
    .bind(tenant.as_uuid())
    .fetch_all(tx.conn())
    .await?)
}

pub async fn get(tx: &mut TenantTx, agent: AgentId) -> Result<Agent, DbError> {
    let tenant = tx.tenant();
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM agents WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.as_uuid())
    .bind(agent.as_uuid())
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

pub async fn update(
    tx: &mut TenantTx,
    agent: AgentId,
    changes: AgentChanges<'_>,
) -> Result<Agent, DbError> {
    let tenant = tx.tenant();
    sqlx::query_as(&format!(
        "UPDATE agents SET
            name = coalesce($3, name),
            system_prompt = coalesce($4, system_prompt),
            profile = coalesce($5, profile),
            updated_at = now()
         WHERE tenant_id = $1 AND id = $2
         RETURNING {COLUMNS}"
    ))
    .bind(tenant.as_uuid())
    .bind(agent.as_uuid())
    .bind(changes.name)
    .bind(changes.system_prompt)
    .bind(changes.profile.map(Json))
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

pub async fn delete(tx: &mut TenantTx, agent: AgentId) -> Result<(), DbError> {
    let tenant = tx.tenant();
    let deleted = sqlx::query("DELETE FROM agents WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.as_uuid())
        .bind(agent.as_uuid())
        .execute(tx.conn())
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(DbError::NotFound);
    }
    Ok(())
}
