//! `/api/v1/webhook-endpoints`: where a tenant's events are delivered.
//!
//! The signing secret is made here (`whsec_` and the base64 of 32 random
//! bytes, the Standard Webhooks format: the decoded bytes are the HMAC key),
//! shown once when it is made, sealed for its row, and masked in every later
//! read.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::crypto::Keyring;
use crate::db::webhook_endpoints::{self, Endpoint, EndpointChanges, NewEndpoint, SecretSlot};
use crate::domain::check_text;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, IdPath, TenantUser};
use crate::http::AppState;
use crate::net_guard::SystemResolver;

/// The events an endpoint can subscribe to.
pub const EVENT_TYPES: [&str; 5] = [
    "lead.created",
    "lead.updated",
    "booking.requested",
    "quote.requested",
    "support.escalated",
];
const SECRET_PREFIX: &str = "whsec_";
const SECRET_BYTES: usize = 32;
const MAX_URL_CHARS: usize = 2_048;
const MAX_DESCRIPTION_CHARS: usize = 500;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, remove))
        .routes(routes!(rotate_secret))
}

/// An endpoint as the API shows it: the secret masked, except in the answer
/// that made it.
#[derive(Serialize, ToSchema)]
struct EndpointView {
    id: Uuid,
    url: String,
    event_types: Vec<String>,
    enabled: bool,
    description: String,
    /// The whole secret: only in the responses that create or rotate it.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    secret_masked: String,
    /// Until when the secret before the last rotation still signs.
    previous_secret_expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl EndpointView {
    fn new(endpoint: Endpoint, keyring: &Keyring, tenant: agentry_actors::TenantId) -> Self {
        let owner = SecretSlot::Current.owner(tenant, endpoint.id);
        // The last four characters tell two secrets apart without giving either away.
        let secret_masked = match keyring.open_string(&owner, &endpoint.secret_sealed) {
            Ok(secret) => {
                let secret = secret.expose();
                let tail: String = secret
                    .chars()
                    .rev()
                    .take(4)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                format!("{SECRET_PREFIX}…{tail}")
            }
            Err(_) => format!("{SECRET_PREFIX}…"),
        };
        let still_signing = endpoint
            .previous_secret_expires_at
            .filter(|expires| *expires > Utc::now());
        Self {
            id: endpoint.id,
            url: endpoint.url,
            event_types: endpoint.event_types,
            enabled: endpoint.enabled,
            description: endpoint.description,
            secret: None,
            secret_masked,
            previous_secret_expires_at: still_signing,
            created_at: endpoint.created_at,
            updated_at: endpoint.updated_at,
        }
    }

    fn with_secret(mut self, secret: String) -> Self {
        self.secret = Some(secret);
        self
    }
}

/// A fresh signing secret: `whsec_` and the base64 of 32 random bytes.
pub fn new_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{SECRET_PREFIX}{}", BASE64.encode(bytes))
}

/// The URL, checked as deliveries will check it: scheme, and every address.
async fn checked_url(state: &AppState, url: &str) -> Result<String, ApiError> {
    let url = url.trim();
    if url.chars().count() > MAX_URL_CHARS {
        return Err(ApiError::Invalid(format!(
            "url must be at most {MAX_URL_CHARS} characters"
        )));
    }
    let parsed = url::Url::parse(url)
        .map_err(|_| ApiError::Invalid(format!("url: {url:?} is not a URL")))?;
    state
        .settings
        .webhooks
        .guard_policy()
        .check_reachable(&parsed, &SystemResolver)
        .await
        .map_err(|blocked| ApiError::Invalid(format!("url: {blocked}")))?;
    Ok(parsed.to_string())
}

fn checked_event_types(types: &[String]) -> Result<Vec<String>, ApiError> {
    if types.is_empty() {
        return Err(ApiError::Invalid(
            "event_types must name at least one event".into(),
        ));
    }
    let mut unique = BTreeSet::new();
    for event in types {
        if !EVENT_TYPES.contains(&event.as_str()) {
            return Err(ApiError::Invalid(format!(
                "event_types: {event:?} is not one of {}",
                EVENT_TYPES.join(", ")
            )));
        }
        unique.insert(event.clone());
    }
    Ok(unique.into_iter().collect())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateEndpoint {
    /// Checked by the SSRF guard, as every delivery is.
    #[schema(max_length = 2048)]
    url: String,
    /// `lead.created`, `lead.updated`, `booking.requested`, `quote.requested`, `support.escalated`.
    #[schema(min_items = 1)]
    event_types: Vec<String>,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
    #[serde(default)]
    description: String,
}

fn enabled_by_default() -> bool {
    true
}

#[derive(Serialize, ToSchema)]
struct EndpointList {
    webhook_endpoints: Vec<EndpointView>,
}

#[utoipa::path(get, path = "/webhook-endpoints", tag = "webhooks", security(("dashboard" = [])),
    responses((status = 200, description = "The endpoints, secrets masked", body = EndpointList)))]
async fn list(
    State(state): State<AppState>,
    user: TenantUser,
) -> Result<Json<EndpointList>, ApiError> {
    let mut tx = state.store.tenant(user.tenant).await?;
    let endpoints = webhook_endpoints::list(&mut tx).await?;
    Ok(Json(EndpointList {
        webhook_endpoints: endpoints
            .into_iter()
            .map(|endpoint| EndpointView::new(endpoint, &state.keyring, user.tenant))
            .collect(),
    }))
}

/// An endpoint and its signing secret, shown in this response only
/// (owners and admins). The URL must pass the SSRF guard.
#[utoipa::path(post, path = "/webhook-endpoints", tag = "webhooks", security(("dashboard" = [])), request_body = CreateEndpoint,
    responses((status = 201, description = "Created, with `secret`", body = EndpointView), (status = 403, description = "Your role cannot change configuration")))]
async fn create(
    State(state): State<AppState>,
    user: TenantUser,
    ApiJson(body): ApiJson<CreateEndpoint>,
) -> Result<(StatusCode, Json<EndpointView>), ApiError> {
    user.require_manager()?;
    let event_types = checked_event_types(&body.event_types)?;
    check_text("description", &body.description, MAX_DESCRIPTION_CHARS)
        .map_err(ApiError::Invalid)?;
    let url = checked_url(&state, &body.url).await?;
    let id = Uuid::now_v7();
    let secret = new_secret();
    let owner = SecretSlot::Current.owner(user.tenant, id);
    let sealed = state.keyring.seal(&owner, secret.as_bytes());
    let mut tx = state.store.tenant(user.tenant).await?;
    let endpoint = webhook_endpoints::create(
        &mut tx,
        NewEndpoint {
            id,
            url: &url,
            event_types: &event_types,
            enabled: body.enabled,
            description: &body.description,
            secret_sealed: &sealed,
        },
    )
    .await?;
    tx.commit().await?;
    let view = EndpointView::new(endpoint, &state.keyring, user.tenant).with_secret(secret);
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(get, path = "/webhook-endpoints/{endpoint_id}", tag = "webhooks", security(("dashboard" = [])), params(("endpoint_id" = Uuid, Path, description = "The endpoint's id")),
    responses((status = 200, description = "The endpoint", body = EndpointView)))]
async fn show(
    State(state): State<AppState>,
    user: TenantUser,
    IdPath(id): IdPath<Uuid>,
) -> Result<Json<EndpointView>, ApiError> {
    let mut tx = state.store.tenant(user.tenant).await?;
    let endpoint = webhook_endpoints::get(&mut tx, id).await?;
    Ok(Json(EndpointView::new(
        endpoint,
        &state.keyring,
        user.tenant,
    )))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateEndpoint {
    url: Option<String>,
    event_types: Option<Vec<String>>,
    enabled: Option<bool>,
    description: Option<String>,
}

/// Changes the fields given (owners and admins).
#[utoipa::path(patch, path = "/webhook-endpoints/{endpoint_id}", tag = "webhooks", security(("dashboard" = [])), params(("endpoint_id" = Uuid, Path, description = "The endpoint's id")),
    request_body = UpdateEndpoint,
    responses((status = 200, description = "The endpoint as changed", body = EndpointView), (status = 403, description = "Your role cannot change configuration")))]
async fn update(
    State(state): State<AppState>,
    user: TenantUser,
    IdPath(id): IdPath<Uuid>,
    ApiJson(body): ApiJson<UpdateEndpoint>,
) -> Result<Json<EndpointView>, ApiError> {
    user.require_manager()?;
    let event_types = body
        .event_types
        .as_deref()
        .map(checked_event_types)
        .transpose()?;
    if let Some(description) = &body.description {
        check_text("description", description, MAX_DESCRIPTION_CHARS).map_err(ApiError::Invalid)?;
    }
    let url = match &body.url {
        Some(url) => Some(checked_url(&state, url).await?),
        None => None,
    };
    let mut tx = state.store.tenant(user.tenant).await?;
    let endpoint = webhook_endpoints::update(
        &mut tx,
        id,
        EndpointChanges {
            url: url.as_deref(),
            event_types: event_types.as_deref(),
            enabled: body.enabled,
            description: body.description.as_deref(),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Json(EndpointView::new(
        endpoint,
        &state.keyring,
        user.tenant,
    )))
}

#[utoipa::path(delete, path = "/webhook-endpoints/{endpoint_id}", tag = "webhooks", security(("dashboard" = [])), params(("endpoint_id" = Uuid, Path, description = "The endpoint's id")),
    responses((status = 204, description = "Deleted"), (status = 403, description = "Your role cannot change configuration")))]
async fn remove(
    State(state): State<AppState>,
    user: TenantUser,
    IdPath(id): IdPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    user.require_manager()?;
    let mut tx = state.store.tenant(user.tenant).await?;
    webhook_endpoints::delete(&mut tx, id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new secret; the current one keeps signing beside it for the grace period.
#[utoipa::path(post, path = "/webhook-endpoints/{endpoint_id}/rotate-secret", tag = "webhooks", security(("dashboard" = [])), params(("endpoint_id" = Uuid, Path, description = "The endpoint's id")),
    responses((status = 200, description = "The endpoint with its new `secret`", body = EndpointView), (status = 403, description = "Your role cannot change configuration")))]
async fn rotate_secret(
    State(state): State<AppState>,
    user: TenantUser,
    IdPath(id): IdPath<Uuid>,
) -> Result<Json<EndpointView>, ApiError> {
    user.require_manager()?;
    let mut tx = state.store.tenant(user.tenant).await?;
    let current = webhook_endpoints::get(&mut tx, id).await?;
    let current_secret = state
        .keyring
        .open(
            &SecretSlot::Current.owner(user.tenant, id),
            &current.secret_sealed,
        )
        .map_err(|e| ApiError::Internal(format!("opening a webhook secret: {e}")))?;
    let previous = state.keyring.seal(
        &SecretSlot::Previous.owner(user.tenant, id),
        current_secret.expose(),
    );
    let secret = new_secret();
    let sealed = state.keyring.seal(
        &SecretSlot::Current.owner(user.tenant, id),
        secret.as_bytes(),
    );
    // At most 30 days, as configuration loading checks.
    let grace = chrono::Duration::seconds(state.settings.webhooks.rotation_grace_secs as i64);
    let endpoint =
        webhook_endpoints::rotate_secret(&mut tx, id, &sealed, &previous, Utc::now() + grace)
            .await?;
    tx.commit().await?;
    Ok(Json(
        EndpointView::new(endpoint, &state.keyring, user.tenant).with_secret(secret),
    ))
}
