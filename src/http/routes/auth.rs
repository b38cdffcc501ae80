//! Dashboard sign-in: email and password for a short-lived, revocable bearer token.

use agentry_actors::{Secret, TenantId, UserId};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::accounts::PasswordGate;
use std::future::Future;
use std::net::IpAddr;

use crate::db::{sessions, tenants, DbError};
use crate::domain::Email;
use crate::http::error::{ApiError, RateHeaders};
use crate::http::extract::{ip_subject, refuse_if_locked, ApiJson, ClientIp, TenantUser};
use crate::http::AppState;
use crate::rate_limit::Tier;
use crate::tokens::TokenPurpose;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    #[schema(value_type = String, format = Password)]
    pub password: Secret<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// Signs a tenant user in: a dashboard token. Counted on the `auth` tier per
/// client IP; wrong passwords count toward the lockout.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, description = "Signed in", body = TokenResponse),
        (status = 401, description = "Email or password is incorrect"),
        (status = 429, description = "Rate limited or locked out"),
        (status = 503, description = "Password checking or the rate limiter is busy")))]
async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(request): ApiJson<LoginRequest>,
) -> Result<(RateHeaders, Json<TokenResponse>), ApiError> {
    let store = &state.store;
    let (limited, candidate) = check_login(
        &state,
        ip,
        Tier::Auth,
        request,
        |email| async move { tenants::find_login(store, &email).await },
        |candidate| &candidate.password_hash,
    )
    .await?;
    let tenant = TenantId::from_uuid(candidate.tenant_id);
    let expires_at = session_expiry(&state);
    let mut tx = state.store.tenant(tenant).await?;
    let session =
        sessions::create_dashboard(&mut tx, UserId::from_uuid(candidate.user_id), expires_at)
            .await?;
    tx.commit().await?;
    let token = state
        .signer
        .issue(TokenPurpose::Dashboard, session, expires_at);
    Ok((limited, Json(TokenResponse { token, expires_at })))
}

/// A login's checks, in order: its rate-limit tier (before the password
/// hash: a flood stops here, cheaply), the lockout, then the password.
pub(super) async fn check_login<T, Fut>(
    state: &AppState,
    ip: Option<IpAddr>,
    tier: Tier,
    request: LoginRequest,
    find: impl FnOnce(Email) -> Fut,
    password_hash: impl Fn(&T) -> &String,
) -> Result<(RateHeaders, T), ApiError>
where
    Fut: Future<Output = Result<Option<T>, DbError>>,
{
    let limited = state.limit(tier, None, &ip_subject(ip)).await?;
    let candidate = guard_login(
        state,
        ip,
        authenticate(&state.password_gate, request, find, password_hash),
    )
    .await?;
    Ok((limited, candidate))
}

/// Finds the account a login names and checks its password. A malformed or
/// unknown email costs the same time and gets the same answer as a wrong password.
async fn authenticate<T, Fut>(
    gate: &PasswordGate,
    request: LoginRequest,
    find: impl FnOnce(Email) -> Fut,
    password_hash: impl Fn(&T) -> &String,
) -> Result<T, ApiError>
where
    Fut: Future<Output = Result<Option<T>, DbError>>,
{
    let candidate = match Email::parse(&request.email) {
        Ok(email) => find(email).await?,
        Err(_) => None,
    };
    let stored_hash = candidate.as_ref().map(|c| password_hash(c).clone());
    let matches = gate
        .verify(request.password, stored_hash)
        .await
        .map_err(|_| ApiError::Unavailable("password checking"))?;
    if !matches {
        return Err(ApiError::InvalidCredentials);
    }
    candidate.ok_or(ApiError::InvalidCredentials)
}

/// Runs a password check under the brute-force lockout: refused while the
/// client is locked out (before any Argon2 work), and a wrong password counts.
async fn guard_login<T>(
    state: &AppState,
    ip: Option<IpAddr>,
    attempt: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    refuse_if_locked(state, ip).await?;
    let outcome = attempt.await;
    if matches!(outcome, Err(ApiError::InvalidCredentials)) {
        state.lockout.record_failure(ip).await;
    }
    outcome
}

/// When a session signed in now expires (dashboard and operator alike).
pub(super) fn session_expiry(state: &AppState) -> DateTime<Utc> {
    Utc::now() + Duration::seconds(state.settings.auth.dashboard_token_ttl_secs as i64)
}

/// Revokes this dashboard token's session, on every instance at once.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", security(("dashboard" = [])),
    responses((status = 204, description = "Signed out")))]
async fn logout(State(state): State<AppState>, user: TenantUser) -> Result<StatusCode, ApiError> {
    let mut tx = state.store.tenant(user.tenant).await?;
    sessions::revoke_dashboard(&mut tx, user.session_id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
struct Me {
    #[schema(value_type = uuid::Uuid)]
    user_id: UserId,
    role: tenants::Role,
    tenant: tenants::Tenant,
}

/// Who this token belongs to.
#[utoipa::path(get, path = "/auth/me", tag = "auth", security(("dashboard" = [])),
    responses((status = 200, description = "The signed-in user", body = Me)))]
async fn me(State(state): State<AppState>, user: TenantUser) -> Result<Json<Me>, ApiError> {
    let mut tx = state.store.tenant(user.tenant).await?;
    let tenant = tenants::current(&mut tx).await?;
    Ok(Json(Me {
        user_id: user.user,
        role: user.role,
        tenant,
    }))
}
