//! `/api/v1/admin`: the site operator's API. Its own login and token purpose;
//! a tenant user's token is refused here.

use agentry_actors::{OperatorId, Secret, TenantId};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::auth::{check_login, session_expiry, LoginRequest, TokenResponse};
use crate::accounts::{self, AccountError, CreatedTenant};
use crate::db::tenants::{self, Tenant};
use crate::db::{operators, sessions};
use crate::http::error::{ApiError, RateHeaders};
use crate::http::extract::{ApiJson, ClientIp, IdPath, Operator};
use crate::http::AppState;
use crate::rate_limit::Tier;
use crate::tokens::TokenPurpose;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route("/tenants", get(list_tenants).post(create_tenant))
        .route("/tenants/{tenant_id}", get(show_tenant))
}

async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(request): ApiJson<LoginRequest>,
) -> Result<(RateHeaders, Json<TokenResponse>), ApiError> {
    let store = &state.store;
    let (limited, candidate) = check_login(
        &state,
        ip,
        Tier::Admin,
        request,
        |email| async move { operators::find_login(store, &email).await },
        |candidate| &candidate.password_hash,
    )
    .await?;
    let expires_at = session_expiry(&state);
    let session = sessions::create_operator(
        &state.store,
        OperatorId::from_uuid(candidate.id),
        expires_at,
    )
    .await?;
    let token = state
        .signer
        .issue(TokenPurpose::Operator, session, expires_at);
    Ok((limited, Json(TokenResponse { token, expires_at })))
}

async fn logout(State(state): State<AppState>, operator: Operator) -> Result<StatusCode, ApiError> {
    sessions::revoke_operator(&state.store, operator.session_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
struct TenantList {
    tenants: Vec<Tenant>,
}

async fn list_tenants(
    State(state): State<AppState>,
    operator: Operator,
) -> Result<Json<TenantList>, ApiError> {
    let mut tx = state.store.operator(operator.operator).await?;
    Ok(Json(TenantList {
        tenants: tenants::list_for_operator(&mut tx).await?,
    }))
}

async fn show_tenant(
    State(state): State<AppState>,
    operator: Operator,
    IdPath(tenant): IdPath<TenantId>,
) -> Result<Json<Tenant>, ApiError> {
    let mut tx = state.store.operator(operator.operator).await?;
    Ok(Json(tenants::get_for_operator(&mut tx, tenant).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    name: String,
    admin_email: String,
    admin_password: Secret<String>,
}

async fn create_tenant(
    State(state): State<AppState>,
    _operator: Operator,
    ApiJson(body): ApiJson<CreateTenant>,
) -> Result<(StatusCode, Json<CreatedTenant>), ApiError> {
    let created = accounts::create_tenant(
        &state.store,
        &body.name,
        &body.admin_email,
        body.admin_password,
    )
    .await
    .map_err(|error| match error {
        AccountError::Invalid(message) => ApiError::Invalid(message),
        AccountError::Db(db) => db.into(),
        AccountError::Hashing(detail) => ApiError::Internal(detail),
    })?;
    Ok((StatusCode::CREATED, Json(created)))
}
