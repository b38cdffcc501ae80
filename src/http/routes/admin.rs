//! `/api/v1/admin`: the site operator's API. Its own login and token purpose;
//! a tenant user's token is refused here.

use std::collections::BTreeMap;

use agentry_actors::{OperatorId, Secret, TenantId};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{check_login, session_expiry, LoginRequest, TokenResponse};
use crate::accounts::{self, AccountError, CreatedTenant};
use crate::db::tenants::{self, Tenant};
use crate::db::{operators, rate_limits, sessions};
use crate::http::error::{ApiError, RateHeaders};
use crate::http::extract::{ApiJson, ClientIp, IdPath, Operator};
use crate::http::AppState;
use crate::rate_limit::{Tier, MAX_PER_MINUTE};
use crate::tokens::TokenPurpose;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(list_tenants, create_tenant))
        .routes(routes!(show_tenant))
        .routes(routes!(show_rate_limits, set_rate_limits))
}

/// Signs a site operator in. Counted on the `admin` tier per client IP.
#[utoipa::path(post, path = "/auth/login", tag = "admin", request_body = LoginRequest,
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

#[utoipa::path(post, path = "/auth/logout", tag = "admin", security(("operator" = [])),
    responses((status = 204, description = "Signed out")))]
async fn logout(State(state): State<AppState>, operator: Operator) -> Result<StatusCode, ApiError> {
    sessions::revoke_operator(&state.store, operator.session_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
struct TenantList {
    tenants: Vec<Tenant>,
}

#[utoipa::path(get, path = "/tenants", tag = "admin", security(("operator" = [])),
    responses((status = 200, description = "Every tenant", body = TenantList)))]
async fn list_tenants(
    State(state): State<AppState>,
    operator: Operator,
) -> Result<Json<TenantList>, ApiError> {
    let mut tx = state.store.operator(operator.operator).await?;
    Ok(Json(TenantList {
        tenants: tenants::list_for_operator(&mut tx).await?,
    }))
}

#[utoipa::path(get, path = "/tenants/{tenant_id}", tag = "admin", security(("operator" = [])), params(("tenant_id" = uuid::Uuid, Path, description = "The tenant's id")),
    responses((status = 200, description = "The tenant", body = Tenant)))]
async fn show_tenant(
    State(state): State<AppState>,
    operator: Operator,
    IdPath(tenant): IdPath<TenantId>,
) -> Result<Json<Tenant>, ApiError> {
    let mut tx = state.store.operator(operator.operator).await?;
    Ok(Json(tenants::get_for_operator(&mut tx, tenant).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    name: String,
    admin_email: String,
    #[schema(value_type = String, format = Password)]
    admin_password: Secret<String>,
}

/// A tenant and its owner.
#[utoipa::path(post, path = "/tenants", tag = "admin", security(("operator" = [])), request_body = CreateTenant,
    responses((status = 201, description = "Created", body = CreatedTenant),
        (status = 409, description = "The email is taken")))]
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

/// A tenant's rate-limit tiers, per minute.
#[derive(Serialize, ToSchema)]
struct TenantRateLimits {
    #[schema(value_type = uuid::Uuid)]
    tenant_id: TenantId,
    /// The tiers an operator set for this tenant.
    overrides: BTreeMap<String, u32>,
    /// Every tier counted within the tenant, at the limit it gets: its
    /// override, else the default from `[rate_limits]`.
    #[schema(value_type = BTreeMap<String, u32>)]
    effective: BTreeMap<&'static str, u32>,
}

impl TenantRateLimits {
    fn new(state: &AppState, tenant_id: TenantId, overrides: BTreeMap<String, u32>) -> Self {
        let effective = Tier::ALL
            .into_iter()
            .filter(|tier| tier.per_tenant())
            .map(|tier| {
                let default = tier.limit(&state.settings.rate_limits).per_minute;
                let limit = overrides.get(tier.label()).copied().unwrap_or(default);
                (tier.label(), limit)
            })
            .collect();
        Self {
            tenant_id,
            overrides,
            effective,
        }
    }
}

#[utoipa::path(get, path = "/tenants/{tenant_id}/rate-limits", tag = "admin", security(("operator" = [])), params(("tenant_id" = uuid::Uuid, Path, description = "The tenant's id")),
    responses((status = 200, description = "The tenant's tiers", body = TenantRateLimits)))]
async fn show_rate_limits(
    State(state): State<AppState>,
    operator: Operator,
    IdPath(tenant): IdPath<TenantId>,
) -> Result<Json<TenantRateLimits>, ApiError> {
    let mut tx = state.store.operator(operator.operator).await?;
    tenants::get_for_operator(&mut tx, tenant).await?;
    let overrides = rate_limits::of_tenant(&mut tx, tenant).await?;
    Ok(Json(TenantRateLimits::new(&state, tenant, overrides)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SetRateLimits {
    /// Tier name to requests per minute; tiers left out get the default again.
    overrides: BTreeMap<String, u32>,
}

/// Replaces the tenant's overrides; every instance applies them within
/// `rate_limits.overrides_refresh_secs`, this one at once.
#[utoipa::path(put, path = "/tenants/{tenant_id}/rate-limits", tag = "admin", security(("operator" = [])), params(("tenant_id" = uuid::Uuid, Path, description = "The tenant's id")),
    request_body = SetRateLimits,
    responses((status = 200, description = "The tenant's tiers as set", body = TenantRateLimits)))]
async fn set_rate_limits(
    State(state): State<AppState>,
    operator: Operator,
    IdPath(tenant): IdPath<TenantId>,
    ApiJson(body): ApiJson<SetRateLimits>,
) -> Result<Json<TenantRateLimits>, ApiError> {
    for (name, per_minute) in &body.overrides {
        match Tier::parse(name) {
            Some(tier) if tier.per_tenant() => {}
            Some(_) => {
                return Err(ApiError::Invalid(format!(
                    "overrides.{name}: counted per client IP before any tenant is known, so it has no per-tenant limit"
                )))
            }
            None => {
                let tiers: Vec<&str> = Tier::ALL
                    .into_iter()
                    .filter(|tier| tier.per_tenant())
                    .map(Tier::label)
                    .collect();
                return Err(ApiError::Invalid(format!(
                    "overrides.{name}: not a tier; the tiers are {}",
                    tiers.join(", ")
                )));
            }
        }
        if !(1..=MAX_PER_MINUTE).contains(per_minute) {
            return Err(ApiError::Invalid(format!(
                "overrides.{name} must be 1 to {MAX_PER_MINUTE} per minute"
            )));
        }
    }
    let mut tx = state.store.operator(operator.operator).await?;
    tenants::get_for_operator(&mut tx, tenant).await?;
    rate_limits::replace(&mut tx, tenant, operator.operator, &body.overrides).await?;
    tx.commit().await.map_err(crate::db::DbError::from)?;
    tracing::info!(%tenant, overrides = ?body.overrides, "rate-limit overrides set");
    if let Err(error) = state.limiter.overrides().refresh(&state.store).await {
        tracing::warn!(%error, "rate-limit overrides not reloaded here; the next refresh will");
    }
    Ok(Json(TenantRateLimits::new(&state, tenant, body.overrides)))
}
