//! `/api/v1/webhook-deliveries`: every attempt to deliver a tenant's events,
//! newest first, and redelivery of one event to one endpoint. Any user of
//! the tenant may read the record; redelivering sends data out again, so it
//! is for managers, like endpoint changes. API tokens need `webhooks:read`
//! to list and `webhooks:write` to redeliver.

use agentry_actors::ports::StreamBus;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::api_tokens::Scope;
use crate::db::outbox::{self, EVENTS};
use crate::db::webhook_deliveries::{self, Delivery, DeliveryFilter};
use crate::db::{webhook_endpoints, DbError};
use crate::http::error::ApiError;
use crate::http::extract::{IdPath, Principal};
use crate::http::listing::{check_one_of, into_page, page_limit};
use crate::http::routes::webhook_endpoints::EVENT_TYPES;
use crate::http::AppState;
use crate::webhook_delivery::webhook_id;
use crate::webhook_dispatch::{AttemptJob, DeliveryState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(redeliver))
}

/// Which delivery attempts to list: the query of `GET /webhook-deliveries`
/// and the `list_webhook_deliveries` MCP tool.
#[derive(Deserialize, JsonSchema, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// The `next_cursor` of the previous page.
    cursor: Option<Uuid>,
    /// Attempts per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// Only attempts at this endpoint.
    endpoint_id: Option<Uuid>,
    /// Only attempts of this event type (`lead.created`, ...).
    event_type: Option<String>,
    /// `success`, `retrying`, `failed` or `blocked`.
    state: Option<String>,
    /// Only attempts made after this time (RFC 3339).
    created_after: Option<DateTime<Utc>>,
    /// Only attempts made before this time (RFC 3339).
    created_before: Option<DateTime<Utc>>,
}

/// A delivery attempt as the dashboard shows it.
#[derive(Serialize, ToSchema)]
struct DeliveryView {
    id: Uuid,
    endpoint_id: Uuid,
    event_id: Uuid,
    event_type: String,
    /// The `webhook-id` header the receiver saw (the same on every attempt).
    webhook_id: String,
    attempt: i32,
    state: String,
    response_status: Option<i32>,
    error: Option<String>,
    duration_ms: Option<i32>,
    /// When the next attempt is due, for a `retrying` attempt.
    next_attempt_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl From<Delivery> for DeliveryView {
    fn from(delivery: Delivery) -> Self {
        Self {
            webhook_id: webhook_id(delivery.event_id, delivery.endpoint_id),
            id: delivery.id,
            endpoint_id: delivery.endpoint_id,
            event_id: delivery.event_id,
            event_type: delivery.event_type,
            attempt: delivery.attempt,
            state: delivery.outcome,
            response_status: delivery.response_status,
            error: delivery.error,
            duration_ms: delivery.duration_ms,
            next_attempt_at: delivery.next_attempt_at,
            created_at: delivery.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    deliveries: Vec<DeliveryView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<Uuid>,
}

/// Delivery attempts, newest first, a page at a time.
#[utoipa::path(get, path = "/webhook-deliveries", tag = "webhooks", security(("dashboard" = []), ("api_token" = ["webhooks:read"])), params(DeliveryQuery),
    responses((status = 200, description = "A page of attempts", body = DeliveryList), (status = 403, description = "The token lacks the scope, or the role cannot do this")))]
async fn list(
    State(state): State<AppState>,
    caller: Principal,
    query: Result<Query<DeliveryQuery>, QueryRejection>,
) -> Result<Json<DeliveryList>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    list_deliveries(&state, &caller, query).await.map(Json)
}

/// Newest first, a page at a time.
pub async fn list_deliveries(
    state: &AppState,
    caller: &Principal,
    query: DeliveryQuery,
) -> Result<DeliveryList, ApiError> {
    caller.require(Scope::WebhooksRead)?;
    let limit = page_limit(query.limit)?;
    check_one_of("event_type", query.event_type.as_deref(), &EVENT_TYPES)?;
    let states = DeliveryState::ALL.map(DeliveryState::label);
    check_one_of("state", query.state.as_deref(), &states)?;
    if let (Some(after), Some(before)) = (query.created_after, query.created_before) {
        if after >= before {
            return Err(ApiError::BadRequest(
                "created_after must be earlier than created_before".into(),
            ));
        }
    }
    let mut tx = state.store.tenant(caller.tenant()).await?;
    let rows = webhook_deliveries::list(
        &mut tx,
        DeliveryFilter {
            before: query.cursor,
            endpoint_id: query.endpoint_id,
            event_type: query.event_type.as_deref(),
            outcome: query.state.as_deref(),
            created_after: query.created_after,
            created_before: query.created_before,
            limit: limit + 1,
        },
    )
    .await?;
    let (deliveries, next_cursor) = into_page(rows, limit, |row| row.id);
    Ok(DeliveryList {
        deliveries: deliveries.into_iter().map(DeliveryView::from).collect(),
        next_cursor,
    })
}

#[derive(Serialize, ToSchema)]
struct Redelivery {
    /// The delivery this one repeats.
    redelivery_of: Uuid,
    event_id: Uuid,
    endpoint_id: Uuid,
    webhook_id: String,
    /// The number the new attempt will be recorded with.
    attempt: u32,
    /// Always `scheduled`: the attempt runs in the background; list the
    /// deliveries of the endpoint to see its outcome.
    #[schema(value_type = String)]
    status: &'static str,
}

/// Schedules one new attempt of the delivery's event at its endpoint, now.
/// A manual redelivery is one attempt: if it fails it is not retried.
#[utoipa::path(post, path = "/webhook-deliveries/{delivery_id}/redeliver", tag = "webhooks", security(("dashboard" = []), ("api_token" = ["webhooks:write"])),
    params(("delivery_id" = Uuid, Path, description = "The delivery attempt's id")),
    responses((status = 202, description = "One new attempt scheduled", body = Redelivery), (status = 403, description = "The token lacks the scope, or the role cannot do this"),
        (status = 409, description = "The endpoint was deleted or is disabled")))]
async fn redeliver(
    State(state): State<AppState>,
    caller: Principal,
    IdPath(id): IdPath<Uuid>,
) -> Result<(StatusCode, Json<Redelivery>), ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    let mut tx = state.store.tenant(caller.tenant()).await?;
    let delivery = webhook_deliveries::get(&mut tx, id).await?;
    let endpoint = match webhook_endpoints::get(&mut tx, delivery.endpoint_id).await {
        Ok(endpoint) => endpoint,
        Err(DbError::NotFound) => {
            return Err(ApiError::Conflict(
                "the delivery's endpoint was deleted".into(),
            ))
        }
        Err(other) => return Err(other.into()),
    };
    if !endpoint.enabled {
        return Err(ApiError::Conflict(
            "the endpoint is disabled; enable it to redeliver".into(),
        ));
    }
    let event = outbox::get(&mut tx, delivery.event_id).await?;
    let latest = webhook_deliveries::latest_attempt(&mut tx, event.id, endpoint.id)
        .await?
        .map_or(0, |(number, _)| number);
    drop(tx);
    let attempt = u32::try_from(latest + 1).unwrap_or(u32::MAX);
    let mut job = AttemptJob::new(event, endpoint.id, attempt, Utc::now());
    job.manual = true;
    state
        .bus
        .publish(EVENTS, &job.payload())
        .await
        .map_err(|error| {
            tracing::warn!(%error, "redelivery not queued");
            ApiError::Unavailable("the delivery queue")
        })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Redelivery {
            redelivery_of: id,
            webhook_id: webhook_id(job.event.id, endpoint.id),
            event_id: job.event.id,
            endpoint_id: endpoint.id,
            attempt,
            status: "scheduled",
        }),
    ))
}
