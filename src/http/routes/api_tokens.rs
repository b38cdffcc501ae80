//! `/api/v1/api-tokens`: scoped tokens for automation. Owners and admins create
//! and revoke them; the token is in the creation response only. Managing
//! tokens takes a dashboard sign-in: a token cannot mint or revoke tokens.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::api_tokens::{self, Scope};
use crate::db::api_tokens::{self as db, ApiTokenRow, NewApiToken};
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, IdPath, TenantUser};
use crate::http::AppState;

const MAX_NAME_CHARS: usize = 100;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(revoke))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewToken {
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    name: String,
    /// `leads:read`, `leads:write`, `conversations:read`, `knowledge:write`,
    /// `webhooks:read`, `webhooks:write`.
    #[schema(min_items = 1)]
    scopes: Vec<String>,
    /// 1 to `tokens.max_lifetime_days` (default `tokens.lifetime_days`).
    #[schema(minimum = 1, maximum = 365)]
    lifetime_days: Option<u32>,
}

/// A token as the API shows it: masked, never its hash.
#[derive(Serialize, ToSchema)]
struct TokenView {
    #[serde(flatten)]
    row: ApiTokenRow,
    token_masked: String,
    /// `active`, `expired` or `revoked`.
    #[schema(value_type = String)]
    status: &'static str,
}

impl From<ApiTokenRow> for TokenView {
    fn from(row: ApiTokenRow) -> Self {
        let status = if row.revoked_at.is_some() {
            "revoked"
        } else if row.expires_at <= Utc::now() {
            "expired"
        } else {
            "active"
        };
        Self {
            token_masked: api_tokens::masked(&row.last_four),
            row,
            status,
        }
    }
}

#[derive(Serialize, ToSchema)]
struct CreatedToken {
    #[serde(flatten)]
    view: TokenView,
    /// The token itself: shown in this response only.
    token: String,
}

/// Creates a token (owners and admins); the token is in this response only.
#[utoipa::path(post, path = "/api-tokens", tag = "api-tokens", security(("dashboard" = [])), request_body = NewToken,
    responses((status = 201, description = "Created; `token` is shown this once", body = CreatedToken), (status = 403, description = "Your role cannot change configuration")))]
async fn create(
    State(state): State<AppState>,
    user: TenantUser,
    ApiJson(body): ApiJson<NewToken>,
) -> Result<Response, ApiError> {
    user.require_manager()?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.contains('\0') {
        return Err(ApiError::Invalid(format!(
            "name must be 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    let scopes = api_tokens::parse_scopes(&body.scopes).map_err(ApiError::Invalid)?;
    let settings = &state.settings.tokens;
    let days = body.lifetime_days.unwrap_or(settings.lifetime_days);
    if days == 0 || days > settings.max_lifetime_days {
        return Err(ApiError::Invalid(format!(
            "lifetime_days must be 1 to {}",
            settings.max_lifetime_days
        )));
    }
    let expires_at: DateTime<Utc> = Utc::now() + Duration::days(i64::from(days));
    let scope_names: Vec<String> = scopes
        .iter()
        .map(|s| Scope::as_str(*s).to_owned())
        .collect();
    let secret = api_tokens::generate();
    let mut tx = state.store.tenant(user.tenant).await?;
    let row = db::create(
        &mut tx,
        NewApiToken {
            name,
            scopes: &scope_names,
            hash: &secret.hash,
            last_four: &secret.last_four,
            created_by: user.user.as_uuid(),
            expires_at,
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(tenant = %user.tenant, user = %user.user, token_id = %row.id, scopes = ?scope_names, "API token created");
    let mut response = (
        StatusCode::CREATED,
        Json(CreatedToken {
            view: TokenView::from(row),
            token: secret.token,
        }),
    )
        .into_response();
    // The one response that holds the token: no cache may keep it.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[derive(Serialize, ToSchema)]
struct TokenList {
    api_tokens: Vec<TokenView>,
}

/// The tenant's tokens, masked.
#[utoipa::path(get, path = "/api-tokens", tag = "api-tokens", security(("dashboard" = [])),
    responses((status = 200, description = "The tokens", body = TokenList)))]
async fn list(
    State(state): State<AppState>,
    user: TenantUser,
) -> Result<Json<TokenList>, ApiError> {
    let mut tx = state.store.tenant(user.tenant).await?;
    let rows = db::list(&mut tx).await?;
    Ok(Json(TokenList {
        api_tokens: rows.into_iter().map(TokenView::from).collect(),
    }))
}

/// Revocation is a column read on every use: it holds on every instance at once.
#[utoipa::path(delete, path = "/api-tokens/{token_id}", tag = "api-tokens", security(("dashboard" = [])),
    params(("token_id" = Uuid, Path, description = "The token's id")),
    responses((status = 204, description = "Revoked"), (status = 403, description = "Your role cannot change configuration")))]
async fn revoke(
    State(state): State<AppState>,
    user: TenantUser,
    IdPath(id): IdPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    user.require_manager()?;
    let mut tx = state.store.tenant(user.tenant).await?;
    db::revoke(&mut tx, id).await?;
    tx.commit().await?;
    tracing::info!(tenant = %user.tenant, user = %user.user, token_id = %id, "API token revoked");
    Ok(StatusCode::NO_CONTENT)
}
