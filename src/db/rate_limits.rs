//! Per-tenant rate-limit tiers (`tenant_rate_limits`): written by operators,
//! loaded by every instance's limiter.

use std::collections::BTreeMap;

use agentry_actors::{OperatorId, TenantId};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::{DbError, Store};

/// One tier override as the limiters load it.
#[derive(sqlx::FromRow)]
pub struct OverrideRow {
    pub tenant_id: Uuid,
    pub tier: String,
    pub per_minute: i32,
    pub public_keys: Vec<String>,
}

/// Every tenant's overrides (a narrow lookup as the schema owner: limiters
/// decide before any tenant's unit of work).
pub async fn all_overrides(store: &Store) -> Result<Vec<OverrideRow>, DbError> {
    Ok(sqlx::query_as(
        "SELECT tenant_id, tier, per_minute, public_keys FROM agentry_rate_limit_overrides()",
    )
    .fetch_all(store.pool())
    .await?)
}

/// A tenant's overrides by tier name, in an operator's unit of work.
pub async fn of_tenant(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
) -> Result<BTreeMap<String, u32>, DbError> {
    let rows: Vec<(String, i32)> =
        sqlx::query_as("SELECT tier, per_minute FROM tenant_rate_limits WHERE tenant_id = $1")
            .bind(tenant.as_uuid())
            .fetch_all(&mut **tx)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(tier, per_minute)| (tier, u32::try_from(per_minute).unwrap_or(1)))
        .collect())
}

/// Replaces the tenant's overrides with `limits` (an empty map restores the defaults).
pub async fn replace(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    operator: OperatorId,
    limits: &BTreeMap<String, u32>,
) -> Result<(), DbError> {
    sqlx::query("DELETE FROM tenant_rate_limits WHERE tenant_id = $1")
        .bind(tenant.as_uuid())
        .execute(&mut **tx)
        .await?;
    let (tiers, per_minute): (Vec<&str>, Vec<i32>) = limits
        .iter()
        .map(|(tier, limit)| (tier.as_str(), i32::try_from(*limit).unwrap_or(i32::MAX)))
        .unzip();
    sqlx::query(
        "INSERT INTO tenant_rate_limits (tenant_id, tier, per_minute, set_by)
         SELECT $1, tier, per_minute, $2 FROM unnest($3::text[], $4::int[]) AS t (tier, per_minute)",
    )
    .bind(tenant.as_uuid())
    .bind(operator.as_uuid())
    .bind(tiers)
    .bind(per_minute)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
