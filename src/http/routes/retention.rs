//! `/api/v1/retention`: how long the tenant keeps conversations, webhook
//! delivery attempts and files, in days (`null`: forever). Every tenant user
//! reads it; owners and admins set it. The `apply_retention` job deletes
//! what is older.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::db::retention::{self, Retention, RetentionRow};
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, TenantUser};
use crate::http::AppState;

/// The shortest and longest windows, in days (as the table's checks).
pub const MIN_DAYS: i64 = 1;
pub const MAX_DAYS: i64 = 3650;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(show, set))
}

/// The whole setting: a field left out keeps that data forever, like `null`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RetentionBody {
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3650)]
    conversations_days: Option<i64>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3650)]
    webhook_deliveries_days: Option<i64>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3650)]
    files_days: Option<i64>,
}

fn days(field: &str, value: Option<i64>) -> Result<Option<i32>, ApiError> {
    match value {
        None => Ok(None),
        Some(days) if (MIN_DAYS..=MAX_DAYS).contains(&days) => Ok(Some(days as i32)),
        Some(_) => Err(ApiError::Invalid(format!(
            "{field} must be {MIN_DAYS} to {MAX_DAYS} days, or null to keep forever"
        ))),
    }
}

/// How many days each kind of data is kept (`null`: forever).
#[utoipa::path(get, path = "/retention", tag = "tenant", security(("dashboard" = [])),
    responses((status = 200, description = "The retention windows", body = RetentionRow)))]
async fn show(
    State(state): State<AppState>,
    user: TenantUser,
) -> Result<Json<RetentionRow>, ApiError> {
    let mut tx = state.store.tenant(user.tenant).await?;
    let row = retention::get(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(row))
}

/// Replaces the retention windows (owners and admins); a field left out is `null`.
#[utoipa::path(put, path = "/retention", tag = "tenant", security(("dashboard" = [])), request_body = RetentionBody,
    responses((status = 200, description = "The windows as set", body = RetentionRow), (status = 403, description = "Your role cannot change configuration")))]
async fn set(
    State(state): State<AppState>,
    user: TenantUser,
    ApiJson(body): ApiJson<RetentionBody>,
) -> Result<Json<RetentionRow>, ApiError> {
    user.require_manager()?;
    let wanted = Retention {
        conversations_days: days("conversations_days", body.conversations_days)?,
        webhook_deliveries_days: days("webhook_deliveries_days", body.webhook_deliveries_days)?,
        files_days: days("files_days", body.files_days)?,
    };
    let mut tx = state.store.tenant(user.tenant).await?;
    let row = retention::put(&mut tx, &wanted).await?;
    tx.commit().await?;
    Ok(Json(row))
}
