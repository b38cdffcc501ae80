//! Call recordings in the dashboard: `GET /api/v1/recordings` (newest first)
//! and `/api/v1/recordings/{id}`, each with a `url` to its audio signed for
//! this response only; and `GET /api/recordings/{id}/audio`, the signed link
//! itself, which needs no bearer token (an `<audio>` element cannot send one).
//!
//! A link names its tenant, recording and expiry and is signed over all
//! three: it is checked with no database round trip, cannot be moved to
//! another recording or extended, and a valid link to a recording since
//! deleted is told apart (404) from a bad one (403).

use agentry_actors::TenantId;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::db::recordings::{self, Recording};
use crate::http::error::ApiError;
use crate::http::extract::{IdPath, TenantUser};
use crate::http::listing::{into_page, page_limit, PageQuery};
use crate::http::AppState;
use crate::rate_limit::Tier;
use crate::recordings::capability::CapabilityError;
use crate::recordings::RecordingError;

/// `/api/v1/recordings…`, for signed-in tenant users.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
}

/// `/api/recordings/{id}/audio`, for whoever holds a signed link.
pub fn audio_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(audio))
}

#[derive(Serialize, ToSchema)]
struct RecordingView {
    id: Uuid,
    conversation_id: Option<Uuid>,
    call_sid: String,
    content_type: String,
    size_bytes: i64,
    duration_secs: Option<i32>,
    source: String,
    created_at: DateTime<Utc>,
    /// Scrubbed, once the tenant's model transcribed it (`recordings.transcribe`).
    transcript: Option<String>,
    /// A path to the audio, signed for `recordings.link_ttl_secs`.
    url: String,
}

fn view(
    state: &AppState,
    tenant: TenantId,
    recording: Recording,
    now: DateTime<Utc>,
) -> RecordingView {
    RecordingView {
        url: state.recordings.link(tenant, recording.id, now),
        id: recording.id,
        conversation_id: recording.conversation_id,
        call_sid: recording.call_sid,
        content_type: recording.content_type,
        size_bytes: recording.size_bytes,
        duration_secs: recording.duration_secs,
        source: recording.source,
        created_at: recording.created_at,
        transcript: recording.transcript,
    }
}

#[derive(Serialize, ToSchema)]
struct RecordingList {
    recordings: Vec<RecordingView>,
    next_cursor: Option<Uuid>,
}

/// Call recordings, newest first, each with a signed `url` to its audio.
#[utoipa::path(get, path = "/recordings", tag = "telephony", security(("dashboard" = [])), params(PageQuery),
    responses((status = 200, description = "A page of recordings", body = RecordingList)))]
async fn list(
    State(state): State<AppState>,
    user: TenantUser,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<RecordingList>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let limit = page_limit(query.limit)?;
    let mut tx = state.store.tenant(user.tenant).await?;
    let rows = recordings::list(&mut tx, query.cursor, limit + 1).await?;
    drop(tx);
    let (rows, next_cursor) = into_page(rows, limit, |row| row.id);
    let now = Utc::now();
    Ok(Json(RecordingList {
        recordings: rows
            .into_iter()
            .map(|row| view(&state, user.tenant, row, now))
            .collect(),
        next_cursor,
    }))
}

#[utoipa::path(get, path = "/recordings/{recording_id}", tag = "telephony", security(("dashboard" = [])), params(("recording_id" = Uuid, Path, description = "The recording's id")),
    responses((status = 200, description = "The recording", body = RecordingView)))]
async fn show(
    State(state): State<AppState>,
    user: TenantUser,
    IdPath(id): IdPath<Uuid>,
) -> Result<Json<RecordingView>, ApiError> {
    let mut tx = state.store.tenant(user.tenant).await?;
    let recording = recordings::get(&mut tx, id).await?;
    Ok(Json(view(&state, user.tenant, recording, Utc::now())))
}

/// A signed link's query, as `url` in a recording's view gives it.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LinkQuery {
    tenant: Uuid,
    expires: i64,
    signature: String,
}

/// A recording's audio through its signed link (no bearer token: an
/// `<audio>` element cannot send one). Counted on the tenant's `standard` tier.
#[utoipa::path(get, path = "/api/recordings/{recording_id}/audio", tag = "telephony",
    params(("recording_id" = Uuid, Path, description = "The recording's id"), LinkQuery),
    responses((status = 200, description = "The audio (WAV)", content_type = "audio/wav", body = Vec<u8>),
        (status = 403, description = "The link is incomplete, expired or not valid"),
        (status = 404, description = "A valid link to a recording since deleted"),
        (status = 429, description = "The tenant's standard tier is exhausted"),
        (status = 503, description = "Recording storage or the rate limiter is unavailable")))]
async fn audio(
    State(state): State<AppState>,
    IdPath(id): IdPath<Uuid>,
    query: Result<Query<LinkQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let refused = |why: &str| ApiError::Forbidden(format!("this recording link {why}"));
    let Query(link) = query.map_err(|_| refused("is incomplete"))?;
    let tenant = TenantId::from_uuid(link.tenant);
    state
        .recordings
        .capabilities
        .verify_link(tenant, id, link.expires, &link.signature, Utc::now())
        .map_err(|error| match error {
            CapabilityError::Expired => refused("has expired"),
            CapabilityError::Invalid => refused("is not valid"),
        })?;
    // Links are minted for the tenant's users: their downloads count as theirs.
    let limited = state
        .limit(Tier::Standard, Some(tenant), &tenant.to_string())
        .await?;
    let mut tx = state.store.tenant(tenant).await?;
    let recording = recordings::get(&mut tx, id).await?;
    drop(tx);
    let audio = state
        .recordings
        .audio(tenant, &recording)
        .await
        .map_err(|error| match error {
            RecordingError::Storage(error) => {
                tracing::warn!(%error, "recording storage unavailable");
                ApiError::Unavailable("recording storage")
            }
            other => ApiError::Internal(format!("recording {id}: {other}")),
        })?
        .ok_or(ApiError::NotFound)?;
    let content_type = HeaderValue::from_str(&recording.content_type)
        .map_err(|_| ApiError::Internal(format!("recording {id}: bad content type")))?;
    let length = audio.len();
    Ok((
        limited,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_LENGTH, HeaderValue::from(length)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("inline"),
            ),
        ],
        Body::from(audio),
    )
        .into_response())
}
