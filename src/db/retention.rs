//! A tenant's retention setting (`tenant_retention`): how many days
//! conversations, webhook delivery attempts and files are kept; `None` keeps
//! them forever. The `apply_retention` job enforces it.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{DbError, TenantTx};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Retention {
    pub conversations_days: Option<i32>,
    pub webhook_deliveries_days: Option<i32>,
    pub files_days: Option<i32>,
}

#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RetentionRow {
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub retention: Retention,
    /// `None` while the tenant never set one (everything is kept).
    pub updated_at: Option<DateTime<Utc>>,
}

pub async fn get(tx: &mut TenantTx) -> Result<RetentionRow, DbError> {
    let tenant = tx.tenant();
    let row: Option<RetentionRow> = sqlx::query_as(
        "SELECT conversations_days, webhook_deliveries_days, files_days, updated_at
         FROM tenant_retention WHERE tenant_id = $1",
    )
    .bind(tenant.as_uuid())
    .fetch_optional(tx.conn())
    .await?;
    Ok(row.unwrap_or(RetentionRow {
        retention: Retention::default(),
        updated_at: None,
    }))
}

pub async fn put(tx: &mut TenantTx, retention: &Retention) -> Result<RetentionRow, DbError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_as(
        "INSERT INTO tenant_retention (tenant_id, conversations_days, webhook_deliveries_days, files_days)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id) DO UPDATE
         SET conversations_days = EXCLUDED.conversations_days,
             webhook_deliveries_days = EXCLUDED.webhook_deliveries_days,
             files_days = EXCLUDED.files_days,
             updated_at = now()
         RETURNING conversations_days, webhook_deliveries_days, files_days, updated_at",
    )
    .bind(tenant.as_uuid())
    .bind(retention.conversations_days)
    .bind(retention.webhook_deliveries_days)
    .bind(retention.files_days)
    .fetch_one(tx.conn())
    .await?)
}
