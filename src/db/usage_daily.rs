//! Daily usage totals (`usage_daily`), as the `rollup_usage` job last
//! computed them from `agent_usage_events`; read-only to requests.

use chrono::NaiveDate;
use serde::Serialize;

use super::{DbError, TenantTx};

/// One day's total of one kind of usage with one model.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct UsageRow {
    pub day: NaiveDate,
    pub kind: String,
    pub provider: String,
    pub model: String,
    pub events: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

/// The tenant's rows from `from` to `to`, both included, by day.
pub async fn between(
    tx: &mut TenantTx,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<UsageRow>, DbError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_as(
        "SELECT day, kind, provider, model, events, prompt_tokens, completion_tokens
         FROM usage_daily
         WHERE tenant_id = $1 AND day BETWEEN $2 AND $3
         ORDER BY day, kind, provider, model",
    )
    .bind(tenant.as_uuid())
    .bind(from)
    .bind(to)
    .fetch_all(tx.conn())
    .await?)
}
