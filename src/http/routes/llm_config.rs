//! `/api/v1/llm`: the tenant's own LLM. The key goes in, sealed; it never comes out.

use agentry_actors::Secret;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::db::llm_configs::{self, LlmConfigRow, LlmConfigView};
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, TenantUser};
use crate::http::AppState;
use crate::llm::{ProviderConfig, ProviderKind};
use crate::llm_resolver::{key_owner, parse_kind};
use crate::net_guard;

pub fn router() -> Router<AppState> {
    Router::new().route("/llm", get(show).put(replace).delete(remove))
}

async fn show(
    State(state): State<AppState>,
    user: TenantUser,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut tx = state.store.tenant(user.tenant).await?;
    Ok(Json(match llm_configs::get(&mut tx).await? {
        Some(row) => serde_json::to_value(LlmConfigView::from(&row))
            .map_err(|e| ApiError::Internal(e.to_string()))?,
        // No configuration: the built-in offline responder answers.
        None => {
            serde_json::json!({ "provider": "offline", "model": crate::llm::OFFLINE_MODEL, "has_api_key": false })
        }
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LlmConfigBody {
    provider: String,
    #[serde(default)]
    model: String,
    base_url: Option<String>,
    api_key: Option<Secret<String>>,
    azure_deployment: Option<String>,
    azure_api_version: Option<String>,
}

async fn replace(
    State(state): State<AppState>,
    user: TenantUser,
    ApiJson(body): ApiJson<LlmConfigBody>,
) -> Result<Json<LlmConfigView>, ApiError> {
    user.require_manager()?;
    let kind = parse_kind(&body.provider).map_err(|e| ApiError::Invalid(e.to_string()))?;
    let mut config = ProviderConfig::new(kind, body.model.trim());
    config.base_url = body.base_url.clone().filter(|u| !u.trim().is_empty());
    config.api_key = body
        .api_key
        .clone()
        .filter(|k| !k.expose().trim().is_empty());
    config.azure_deployment = body.azure_deployment.clone();
    config.azure_api_version = body.azure_api_version.clone();
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
    let sealed = config.api_key.as_ref().map(|key| {
        state
            .keyring
            .seal(&key_owner(user.tenant), key.expose().as_bytes())
    });
    let row = LlmConfigRow {
        provider: kind.as_str().to_owned(),
        model: config.model.clone(),
        base_url: config.base_url.clone(),
        azure_deployment: config.azure_deployment.clone(),
        azure_api_version: config.azure_api_version.clone(),
        api_key_sealed: sealed,
        updated_at: chrono::Utc::now(),
    };
    let mut tx = state.store.tenant(user.tenant).await?;
    let stored = llm_configs::put(&mut tx, &row).await?;
    tx.commit().await?;
    Ok(Json(LlmConfigView::from(&stored)))
}

async fn remove(State(state): State<AppState>, user: TenantUser) -> Result<StatusCode, ApiError> {
    user.require_manager()?;
    let mut tx = state.store.tenant(user.tenant).await?;
    llm_configs::delete(&mut tx).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
