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
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::error::{ApiError, RateHeaders};
use crate::http::extract::{ApiJson, TenantUser};
use crate::http::AppState;
use crate::privacy::{erase, export, PersonKey};
use crate::rate_limit::Tier;

const EXPLANATION: &str = "The person's lead, conversations, messages, bookings, quote requests, \
    SMS and recordings were deleted. Audit rows (tool runs, webhook deliveries) were kept, as \
    they are append-only, but the keys their personal fields were sealed under were destroyed: \
    those fields can no longer be read. Webhook events that carried their data were kept with \
    the payload redacted and will not be sent again.";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/privacy/export", get(export_person))
        .route("/privacy/erase", post(erase_person))
}

/// The one key a person is asked about by.
#[derive(Deserialize)]
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

/// A manager, within the privacy tier.
async fn admit(state: &AppState, user: &TenantUser) -> Result<RateHeaders, ApiError> {
    user.require_manager()?;
    state
        .limit(Tier::Privacy, Some(user.tenant), &user.tenant.to_string())
        .await
}

async fn export_person(
    State(state): State<AppState>,
    user: TenantUser,
    query: Result<Query<PersonFields>, QueryRejection>,
) -> Result<(RateHeaders, Json<Value>), ApiError> {
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
        Json(json!({
            "key_kind": key.kind(),
            "exported_at": Utc::now(),
            "empty": bundle.is_empty(),
            "bundle": bundle,
        })),
    ))
}

async fn erase_person(
    State(state): State<AppState>,
    user: TenantUser,
    ApiJson(fields): ApiJson<PersonFields>,
) -> Result<(RateHeaders, Json<Value>), ApiError> {
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
        Json(json!({
            "erasure_id": erasure.id,
            "key_kind": erasure.key_kind,
            "erased": erasure.erased,
            "shredded": erasure.shredded,
            "recording_objects_removed": erasure.recording_objects.len() as u64 - objects_left,
            "recording_objects_left": objects_left,
            "explanation": EXPLANATION,
        })),
    ))
}
