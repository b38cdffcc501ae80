//! `/api/v1/privacy`: everything held about one person, exported or erased
//! (GDPR/CCPA). Owners and admins only, signed in to the dashboard, within
//! the tenant's `privacy` rate-limit tier.
//!
//! - `GET /privacy/export?lead_id=… | email=… | phone=…`: exactly one key
//!   (none or two: 400). A person never met, or erased, exports an empty
//!   bundle (200): the answer does not tell the two apart. A phone several
//!   leads share is 409, naming their ids, to ask again by `lead_id`.
//! - `POST /privacy/erase {"lead_id"} | {"email"} | {"phone"}`: deletes what
//!   is theirs, shreds their audit rows' personal fields, and records the
//!   erasure (see [`crate::privacy`]). Erasing nobody erases nothing, and is
//!   recorded all the same.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use std::collections::BTreeMap;

use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::http::error::{ApiError, RateHeaders};
use crate::http::extract::{ApiJson, TenantUser};
use crate::http::AppState;
use crate::privacy::export::Bundle;
use crate::privacy::{erase, export, PersonKey};
use crate::rate_limit::Tier;

const EXPLANATION: &str = "The person's lead, conversations, messages, bookings, quote requests, \
    SMS and recordings were deleted. Audit rows (tool runs, webhook deliveries) were kept, as \
    they are append-only, but the keys their personal fields were sealed under were destroyed: \
    those fields can no longer be read. Webhook events that carried their data were kept with \
    the payload redacted and will not be sent again.";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(export_person))
        .routes(routes!(erase_person))
}

/// The one key a person is asked about by.
#[derive(Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct PersonFields {
    lead_id: Option<String>,
    email: Option<String>,
    phone: Option<String>,
}

impl PersonFields {
    fn key(&self) -> Result<PersonKey, ApiError> {
        PersonKey::from_fields(
            self.lead_id.as_deref(),
            self.email.as_deref(),
            self.phone.as_deref(),
        )
        .map_err(ApiError::BadRequest)
    }
}

/// What an export answers.
#[derive(Serialize, ToSchema)]
struct Export {
    /// `lead_id`, `email` or `phone`: the key asked by.
    key_kind: &'static str,
    exported_at: DateTime<Utc>,
    /// Nothing is held (never met, or erased: the answer does not tell which).
    empty: bool,
    bundle: Bundle,
}

/// What an erasure answers.
#[derive(Serialize, ToSchema)]
struct ErasureReport {
    erasure_id: Uuid,
    key_kind: &'static str,
    /// Rows deleted, per kind.
    #[schema(value_type = BTreeMap<String, u64>)]
    erased: BTreeMap<&'static str, u64>,
    /// Audit rows kept with their personal fields made unreadable, and
    /// events kept with their payload redacted.
    #[schema(value_type = BTreeMap<String, u64>)]
    shredded: BTreeMap<&'static str, u64>,
    recording_objects_removed: u64,
    /// Recording objects not removed from storage (logged; nothing links to them).
    recording_objects_left: u64,
    explanation: &'static str,
}

/// A manager, within the privacy tier.
async fn admit(state: &AppState, user: &TenantUser) -> Result<RateHeaders, ApiError> {
    user.require_manager()?;
    state
        .limit(Tier::Privacy, Some(user.tenant), &user.tenant.to_string())
        .await
}

/// Everything held about one person (owners and admins; the `privacy` tier).
#[utoipa::path(get, path = "/privacy/export", tag = "privacy", security(("dashboard" = [])), params(PersonFields),
    responses((status = 200, description = "The person's data, possibly empty", body = Export), (status = 400, description = "Not exactly one of lead_id, email, phone"), (status = 403, description = "Your role cannot change configuration"),
        (status = 409, description = "Several leads share this phone: ask by lead_id (their ids are named)")))]
async fn export_person(
    State(state): State<AppState>,
    user: TenantUser,
    query: Result<Query<PersonFields>, QueryRejection>,
) -> Result<(RateHeaders, Json<Export>), ApiError> {
    let limited = admit(&state, &user).await?;
    let Query(fields) = query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let key = fields.key()?;
    let mut tx = state.store.tenant_snapshot(user.tenant).await?;
    let person = export::find(&mut tx, &key).await?;
    let bundle = export::bundle(&mut tx, &state.keyring, person).await?;
    drop(tx);
    metrics::counter!("agentry_privacy_exports_total", "key_kind" => key.kind()).increment(1);
    Ok((
        limited,
        Json(Export {
            key_kind: key.kind(),
            exported_at: Utc::now(),
            empty: bundle.is_empty(),
            bundle,
        }),
    ))
}

/// Erases one person: their rows deleted, their audit rows' personal fields shredded.
#[utoipa::path(post, path = "/privacy/erase", tag = "privacy", security(("dashboard" = [])), request_body = PersonFields,
    responses((status = 200, description = "What was erased", body = ErasureReport), (status = 400, description = "Not exactly one of lead_id, email, phone"), (status = 403, description = "Your role cannot change configuration"),
        (status = 409, description = "Several leads share this phone: ask by lead_id (their ids are named)")))]
async fn erase_person(
    State(state): State<AppState>,
    user: TenantUser,
    ApiJson(fields): ApiJson<PersonFields>,
) -> Result<(RateHeaders, Json<ErasureReport>), ApiError> {
    let limited = admit(&state, &user).await?;
    let key = fields.key()?;
    let mut tx = state.store.tenant(user.tenant).await?;
    let erasure = erase::erase(&mut tx, &key, user.user.as_uuid()).await?;
    tx.commit().await?;
    let mut objects_left = 0u64;
    for object in &erasure.recording_objects {
        if let Err(error) = state.recordings.delete_object(object).await {
            // The row is gone, so nothing links to it; the object stays sealed.
            tracing::warn!(%error, "an erased recording's audio was not removed");
            objects_left += 1;
        }
    }
    metrics::counter!("agentry_privacy_erasures_total", "key_kind" => erasure.key_kind)
        .increment(1);
    tracing::info!(erasure = %erasure.id, key_kind = erasure.key_kind, "privacy erasure");
    Ok((
        limited,
        Json(ErasureReport {
            erasure_id: erasure.id,
            key_kind: erasure.key_kind,
            recording_objects_removed: erasure.recording_objects.len() as u64 - objects_left,
            erased: erasure.erased,
            shredded: erasure.shredded,
            recording_objects_left: objects_left,
            explanation: EXPLANATION,
        }),
    ))
}
