//! `/api/v1/llm`: the tenant's own LLM. The connection goes in sealed; the key
//! never comes back out.

use agentry_actors::Secret;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::db::llm_configs::{self, LlmConfigRow};
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, TenantUser};
use crate::http::AppState;
use crate::llm::connection::{
    open_connection, parse_kind, provider_config, seal_connection, LlmConnection,
};
use crate::llm::{self, ProviderKind};
use crate::net_guard;

/// What the dashboard shows: everything but the key, and whether there is one.
#[derive(Serialize, ToSchema)]
pub struct LlmConfigView {
    pub provider: String,
    pub model: String,
    pub base_url: Option<String>,
    pub azure_deployment: Option<String>,
    pub azure_api_version: Option<String>,
    pub has_api_key: bool,
    pub updated_at: Option<DateTime<Utc>>,
}

impl LlmConfigView {
    pub fn new(row: &LlmConfigRow, connection: &LlmConnection) -> Self {
        Self {
            provider: row.provider.clone(),
            model: row.model.clone(),
            base_url: connection.base_url.clone(),
            azure_deployment: connection.azure_deployment.clone(),
            azure_api_version: connection.azure_api_version.clone(),
            has_api_key: connection.api_key.is_some(),
            updated_at: Some(row.updated_at),
        }
    }

    /// No configuration: the built-in offline responder answers.
    pub fn offline() -> Self {
        Self {
            provider: ProviderKind::Offline.as_str().into(),
            model: llm::OFFLINE_MODEL.into(),
            base_url: None,
            azure_deployment: None,
            azure_api_version: None,
            has_api_key: false,
            updated_at: None,
        }
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(show, replace, remove))
}

/// The tenant's LLM connection, without its key (`offline` when none is set).
#[utoipa::path(get, path = "/llm", tag = "tenant", security(("dashboard" = [])),
    responses((status = 200, description = "The connection", body = LlmConfigView)))]
async fn show(
    State(state): State<AppState>,
    user: TenantUser,
) -> Result<Json<LlmConfigView>, ApiError> {
    let mut tx = state.store.tenant(user.tenant).await?;
    let Some(row) = llm_configs::get(&mut tx).await? else {
        return Ok(Json(LlmConfigView::offline()));
    };
    let connection = open_connection(&state.keyring, user.tenant, &row.connection_sealed)
        .map_err(|e| ApiError::Internal(format!("stored LLM connection: {e}")))?;
    Ok(Json(LlmConfigView::new(&row, &connection)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LlmConfigBody {
    /// `openai`, `azure`, `ollama`, `vllm`, `anthropic` or `offline`.
    #[schema(example = "ollama")]
    provider: String,
    #[serde(default)]
    model: String,
    base_url: Option<String>,
    #[schema(value_type = Option<String>, format = Password)]
    api_key: Option<Secret<String>>,
    azure_deployment: Option<String>,
    azure_api_version: Option<String>,
}

fn non_blank(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// Sets the tenant's LLM connection (owners and admins); the key is sealed.
#[utoipa::path(put, path = "/llm", tag = "tenant", security(("dashboard" = [])), request_body = LlmConfigBody,
    responses((status = 200, description = "The connection as stored", body = LlmConfigView), (status = 403, description = "Your role cannot change configuration")))]
async fn replace(
    State(state): State<AppState>,
    user: TenantUser,
    ApiJson(body): ApiJson<LlmConfigBody>,
) -> Result<Json<LlmConfigView>, ApiError> {
    user.require_manager()?;
    let kind = parse_kind(&body.provider).map_err(|e| ApiError::Invalid(e.to_string()))?;
    let connection = LlmConnection {
        base_url: non_blank(body.base_url.as_deref()),
        azure_deployment: non_blank(body.azure_deployment.as_deref()),
        azure_api_version: non_blank(body.azure_api_version.as_deref()),
        api_key: non_blank(body.api_key.as_ref().map(|key| key.expose().as_str())),
    };
    let model = body.model.trim();
    let config = provider_config(kind, model, &connection);
    config
        .validate()
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    if !state.settings.llm.allow_private_base_urls && kind != ProviderKind::Offline {
        if let Some(base_url) = config.resolved_base_url() {
            net_guard::check_public_url(&base_url)
                .await
                .map_err(|reason| ApiError::Invalid(format!("base_url: {reason}")))?;
        }
    }
    let sealed = seal_connection(&state.keyring, user.tenant, &connection);
    let mut tx = state.store.tenant(user.tenant).await?;
    let stored = llm_configs::put(&mut tx, kind.as_str(), model, &sealed).await?;
    tx.commit().await?;
    Ok(Json(LlmConfigView::new(&stored, &connection)))
}

/// Back to the built-in offline responder (owners and admins).
#[utoipa::path(delete, path = "/llm", tag = "tenant", security(("dashboard" = [])),
    responses((status = 204, description = "Removed"), (status = 403, description = "Your role cannot change configuration")))]
async fn remove(State(state): State<AppState>, user: TenantUser) -> Result<StatusCode, ApiError> {
    user.require_manager()?;
    let mut tx = state.store.tenant(user.tenant).await?;
    llm_configs::delete(&mut tx).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
