//! The SMS and voice channels' configuration: `/api/v1/phone-numbers` (a
//! tenant's numbers, each answered by one agent), `/api/v1/twilio` (the
//! account SID and auth token, the token stored sealed and never returned)
//! and `/api/v1/sms-suppressions` (senders who opted out).

use agentry_actors::{AgentId, Secret};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::db::twilio::{self, NewConfig, PhoneNumber, Suppression, TwilioConfig};
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, IdPath, TenantUser};
use crate::http::AppState;
use crate::twilio::sms_text::is_e164;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_numbers, add_number))
        .routes(routes!(show_number, move_number, remove_number))
        .routes(routes!(show_config, replace_config, remove_config))
        .routes(routes!(list_suppressions))
        .routes(routes!(lift_suppression))
}

fn e164(field: &str, number: &str) -> Result<(), ApiError> {
    if is_e164(number) {
        Ok(())
    } else {
        Err(ApiError::Invalid(format!(
            "{field} must be an E.164 number such as +14155550100"
        )))
    }
}

#[derive(Serialize, ToSchema)]
struct NumberList {
    phone_numbers: Vec<PhoneNumber>,
}

#[utoipa::path(get, path = "/phone-numbers", tag = "telephony", security(("dashboard" = [])),
    responses((status = 200, description = "The tenant's numbers", body = NumberList)))]
async fn list_numbers(
    State(state): State<AppState>,
    user: TenantUser,
) -> Result<Json<NumberList>, ApiError> {
    let mut tx = state.store.tenant(user.tenant).await?;
    Ok(Json(NumberList {
        phone_numbers: twilio::list_numbers(&mut tx).await?,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewNumber {
    /// E.164, such as `+14155550100`.
    #[schema(pattern = r"^\+[1-9][0-9]{7,14}$")]
    number: String,
    agent_id: Uuid,
}

/// A number (E.164) answered by one agent (owners and admins).
#[utoipa::path(post, path = "/phone-numbers", tag = "telephony", security(("dashboard" = [])), request_body = NewNumber,
    responses((status = 201, description = "Added", body = PhoneNumber), (status = 403, description = "Your role cannot change configuration"),
        (status = 409, description = "The number is taken")))]
async fn add_number(
    State(state): State<AppState>,
    user: TenantUser,
    ApiJson(body): ApiJson<NewNumber>,
) -> Result<(StatusCode, Json<PhoneNumber>), ApiError> {
    user.require_manager()?;
    let number = body.number.trim();
    e164("number", number)?;
    let mut tx = state.store.tenant(user.tenant).await?;
    let created = twilio::create_number(&mut tx, number, AgentId::from_uuid(body.agent_id))
        .await
        .map_err(|error| match error {
            crate::db::DbError::NotFound => ApiError::Invalid("agent_id: no such agent".into()),
            other => other.into(),
        })?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(get, path = "/phone-numbers/{number_id}", tag = "telephony", security(("dashboard" = [])), params(("number_id" = Uuid, Path, description = "The phone number's id")),
    responses((status = 200, description = "The number", body = PhoneNumber)))]
async fn show_number(
    State(state): State<AppState>,
    user: TenantUser,
    IdPath(id): IdPath<Uuid>,
) -> Result<Json<PhoneNumber>, ApiError> {
    let mut tx = state.store.tenant(user.tenant).await?;
    Ok(Json(twilio::get_number(&mut tx, id).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MoveNumber {
    agent_id: Uuid,
}

/// Hands the number to another agent (owners and admins).
#[utoipa::path(patch, path = "/phone-numbers/{number_id}", tag = "telephony", security(("dashboard" = [])), params(("number_id" = Uuid, Path, description = "The phone number's id")), request_body = MoveNumber,
    responses((status = 200, description = "The number as changed", body = PhoneNumber), (status = 403, description = "Your role cannot change configuration")))]
async fn move_number(
    State(state): State<AppState>,
    user: TenantUser,
    IdPath(id): IdPath<Uuid>,
    ApiJson(body): ApiJson<MoveNumber>,
) -> Result<Json<PhoneNumber>, ApiError> {
    user.require_manager()?;
    let mut tx = state.store.tenant(user.tenant).await?;
    // 404 for another tenant's number or agent alike.
    let moved = twilio::move_number(&mut tx, id, AgentId::from_uuid(body.agent_id)).await?;
    tx.commit().await?;
    Ok(Json(moved))
}

#[utoipa::path(delete, path = "/phone-numbers/{number_id}", tag = "telephony", security(("dashboard" = [])), params(("number_id" = Uuid, Path, description = "The phone number's id")),
    responses((status = 204, description = "Removed"), (status = 403, description = "Your role cannot change configuration")))]
async fn remove_number(
    State(state): State<AppState>,
    user: TenantUser,
    IdPath(id): IdPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    user.require_manager()?;
    let mut tx = state.store.tenant(user.tenant).await?;
    twilio::delete_number(&mut tx, id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What the dashboard shows: everything but the auth token.
#[derive(Serialize, ToSchema)]
struct ConfigView {
    account_sid: String,
    has_auth_token: bool,
    help_text: Option<String>,
    voice_greeting: Option<String>,
    escalation_number: Option<String>,
    updated_at: DateTime<Utc>,
}

impl From<TwilioConfig> for ConfigView {
    fn from(config: TwilioConfig) -> Self {
        Self {
            account_sid: config.account_sid,
            has_auth_token: !config.auth_token_sealed.is_empty(),
            help_text: config.help_text,
            voice_greeting: config.voice_greeting,
            escalation_number: config.escalation_number,
            updated_at: config.updated_at,
        }
    }
}

/// The tenant's Twilio account, without its auth token.
#[utoipa::path(get, path = "/twilio", tag = "telephony", security(("dashboard" = [])),
    responses((status = 200, description = "The account", body = ConfigView),
        (status = 404, description = "No Twilio account is set")))]
async fn show_config(
    State(state): State<AppState>,
    user: TenantUser,
) -> Result<Json<ConfigView>, ApiError> {
    let mut tx = state.store.tenant(user.tenant).await?;
    let config = twilio::get_config(&mut tx)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(config.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ConfigBody {
    /// `AC` and 32 lowercase hex digits.
    #[schema(pattern = "^AC[0-9a-f]{32}$")]
    account_sid: String,
    #[schema(value_type = String, format = Password)]
    auth_token: Secret<String>,
    help_text: Option<String>,
    voice_greeting: Option<String>,
    escalation_number: Option<String>,
}

/// An optional text: trimmed, `None` when blank, at most `max` characters.
fn optional_text(field: &str, text: Option<&str>, max: usize) -> Result<Option<String>, ApiError> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    crate::domain::check_text(field, text, max).map_err(ApiError::Invalid)?;
    Ok(Some(text.to_owned()))
}

/// Sets the Twilio account (owners and admins); the auth token is sealed.
#[utoipa::path(put, path = "/twilio", tag = "telephony", security(("dashboard" = [])), request_body = ConfigBody,
    responses((status = 200, description = "The account as stored", body = ConfigView), (status = 403, description = "Your role cannot change configuration")))]
async fn replace_config(
    State(state): State<AppState>,
    user: TenantUser,
    ApiJson(body): ApiJson<ConfigBody>,
) -> Result<Json<ConfigView>, ApiError> {
    user.require_manager()?;
    let sid = body.account_sid.trim();
    let sid_ok = sid.len() == 34
        && sid.starts_with("AC")
        && sid[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !sid_ok {
        return Err(ApiError::Invalid(
            "account_sid must be AC followed by 32 lowercase hex digits".into(),
        ));
    }
    let token = body.auth_token.expose().trim();
    if token.len() < 16 || token.len() > 128 || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::Invalid(
            "auth_token must be 16 to 128 letters and digits".into(),
        ));
    }
    let help_text = optional_text("help_text", body.help_text.as_deref(), 320)?;
    let voice_greeting = optional_text("voice_greeting", body.voice_greeting.as_deref(), 500)?;
    let escalation_number = body
        .escalation_number
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    if let Some(number) = escalation_number {
        e164("escalation_number", number)?;
    }
    let sealed = state
        .keyring
        .seal(&twilio::auth_token_owner(user.tenant), token.as_bytes());
    let mut tx = state.store.tenant(user.tenant).await?;
    let stored = twilio::put_config(
        &mut tx,
        &NewConfig {
            account_sid: sid,
            auth_token_sealed: &sealed,
            help_text: help_text.as_deref(),
            voice_greeting: voice_greeting.as_deref(),
            escalation_number,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Json(stored.into()))
}

#[utoipa::path(delete, path = "/twilio", tag = "telephony", security(("dashboard" = [])),
    responses((status = 204, description = "Removed"), (status = 403, description = "Your role cannot change configuration"),
        (status = 404, description = "No Twilio account is set")))]
async fn remove_config(
    State(state): State<AppState>,
    user: TenantUser,
) -> Result<StatusCode, ApiError> {
    user.require_manager()?;
    let mut tx = state.store.tenant(user.tenant).await?;
    let removed = twilio::delete_config(&mut tx).await?;
    tx.commit().await?;
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

#[derive(Serialize, ToSchema)]
struct SuppressionList {
    suppressions: Vec<Suppression>,
}

/// Senders who opted out of SMS.
#[utoipa::path(get, path = "/sms-suppressions", tag = "telephony", security(("dashboard" = [])),
    responses((status = 200, description = "The suppression list", body = SuppressionList)))]
async fn list_suppressions(
    State(state): State<AppState>,
    user: TenantUser,
) -> Result<Json<SuppressionList>, ApiError> {
    let mut tx = state.store.tenant(user.tenant).await?;
    Ok(Json(SuppressionList {
        suppressions: twilio::list_suppressions(&mut tx).await?,
    }))
}

/// Lets the tenant message a sender again (who asked for it outside SMS).
#[utoipa::path(delete, path = "/sms-suppressions/{sender}", tag = "telephony", security(("dashboard" = [])),
    params(("sender" = String, Path, description = "The sender's number, E.164")),
    responses((status = 204, description = "Lifted"), (status = 403, description = "Your role cannot change configuration"),
        (status = 400, description = "The path is not valid UTF-8"),
        (status = 404, description = "The sender is not suppressed")))]
async fn lift_suppression(
    State(state): State<AppState>,
    user: TenantUser,
    Path(sender): Path<String>,
) -> Result<StatusCode, ApiError> {
    user.require_manager()?;
    // No suppressed sender holds a NUL, and PostgreSQL text could not hold one.
    if sender.contains('\0') {
        return Err(ApiError::NotFound);
    }
    let mut tx = state.store.tenant(user.tenant).await?;
    let lifted = twilio::unsuppress(&mut tx, sender.trim()).await?;
    tx.commit().await?;
    if lifted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}
