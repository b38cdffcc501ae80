//! Dashboard sign-in: email and password for a short-lived, revocable bearer token.

use agentry_actors::{Secret, TenantId, UserId};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::accounts::verify_password;
use crate::db::{sessions, tenants};
use crate::domain::Email;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, TenantUser};
use crate::http::AppState;
use crate::tokens::TokenPurpose;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route("/auth/me", get(me))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: Secret<String>,
}

#[derive(Serialize)]
pub struct TokenResponse {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

async fn login(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    // A malformed email cannot match anyone; answer as for a wrong password.
    let candidate = match Email::parse(&request.email) {
        Ok(email) => tenants::find_login(&state.store, &email).await?,
        Err(_) => None,
    };
    let stored_hash = candidate.as_ref().map(|c| c.password_hash.clone());
    if !verify_password(request.password, stored_hash).await {
        return Err(ApiError::InvalidCredentials);
    }
    let candidate = candidate.ok_or(ApiError::InvalidCredentials)?;
    let tenant = TenantId::from_uuid(candidate.tenant_id);
    let expires_at =
        Utc::now() + Duration::seconds(state.settings.auth.dashboard_token_ttl_secs as i64);
    let mut tx = state.store.tenant(tenant).await?;
    let session =
        sessions::create_dashboard(&mut tx, UserId::from_uuid(candidate.user_id), expires_at)
            .await?;
    tx.commit().await?;
    let token = state
        .signer
        .issue(TokenPurpose::Dashboard, session, expires_at);
    Ok(Json(TokenResponse { token, expires_at }))
}

async fn logout(State(state): State<AppState>, user: TenantUser) -> Result<StatusCode, ApiError> {
    let mut tx = state.store.tenant(user.tenant).await?;
    sessions::revoke_dashboard(&mut tx, user.session_id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
struct Me {
    user_id: UserId,
    role: tenants::Role,
    tenant: tenants::Tenant,
}

async fn me(State(state): State<AppState>, user: TenantUser) -> Result<Json<Me>, ApiError> {
    let mut tx = state.store.tenant(user.tenant).await?;
    let tenant = tenants::current(&mut tx).await?;
    Ok(Json(Me {
        user_id: user.user,
        role: user.role,
        tenant,
    }))
}
