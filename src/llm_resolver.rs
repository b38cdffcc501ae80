//! Which model answers for a tenant: the tenant's own (bring your own LLM,
//! its connection sealed at rest) or, when it has none, the built-in offline
//! responder. Also the deployment's embedder.

use std::sync::Arc;

use agentry_actors::knowledge::OfflineEmbedder;
use agentry_actors::llm::{Embedder, LlmError, LlmProvider};
use agentry_actors::ports::LlmResolver;
use agentry_actors::{Secret, TenantId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::configuration::EmbeddingSettings;
use crate::crypto::{CryptoError, Keyring, SecretOwner};
use crate::db::llm_configs::{self, LlmConfigRow};
use crate::db::Store;
use crate::llm::{self, LlmConfigError, OfflineProvider, ProviderConfig, ProviderKind};

pub fn parse_kind(provider: &str) -> Result<ProviderKind, LlmConfigError> {
    serde_json::from_value(serde_json::Value::String(
        provider.trim().to_ascii_lowercase(),
    ))
    .map_err(|_| {
        LlmConfigError::Invalid(format!(
            "provider {provider:?} is not one of openai, azure, ollama, vllm, anthropic, offline"
        ))
    })
}

/// The deployment's embedder, from `[embedding]`.
pub fn build_embedder(
    settings: &EmbeddingSettings,
    http: reqwest::Client,
) -> Result<Arc<dyn Embedder>, LlmConfigError> {
    let kind = parse_kind(&settings.provider)?;
    if kind == ProviderKind::Offline {
        return Ok(Arc::new(OfflineEmbedder::default()));
    }
    let mut config = ProviderConfig::new(kind, settings.model.clone());
    config.base_url = Some(settings.base_url.clone()).filter(|url| !url.trim().is_empty());
    let key = settings.api_key.expose();
    config.api_key = (!key.is_empty()).then(|| Secret::new(key.clone()));
    llm::build_embedder(&config, http)
}

/// How to reach a tenant's model: the part of its configuration sealed at rest.
#[derive(Default, Serialize, Deserialize, Zeroize)]
#[zeroize(drop)]
pub struct LlmConnection {
    pub base_url: Option<String>,
    pub azure_deployment: Option<String>,
    pub azure_api_version: Option<String>,
    pub api_key: Option<String>,
}

fn connection_owner(tenant: TenantId) -> SecretOwner {
    SecretOwner::new(tenant, llm_configs::TABLE, llm_configs::CONNECTION_COLUMN)
}

pub fn seal_connection(keyring: &Keyring, tenant: TenantId, connection: &LlmConnection) -> Vec<u8> {
    let mut json = serde_json::to_vec(connection).unwrap_or_default();
    let sealed = keyring.seal(&connection_owner(tenant), &json);
    json.zeroize();
    sealed
}

pub fn open_connection(
    keyring: &Keyring,
    tenant: TenantId,
    sealed: &[u8],
) -> Result<LlmConnection, CryptoError> {
    let json = keyring.open(&connection_owner(tenant), sealed)?;
    serde_json::from_slice(json.expose()).map_err(|_| CryptoError::Malformed)
}

/// The stored configuration as a provider configuration (key included).
pub fn provider_config(
    kind: ProviderKind,
    model: &str,
    connection: &LlmConnection,
) -> ProviderConfig {
    let mut config = ProviderConfig::new(kind, model);
    config.base_url = connection.base_url.clone();
    config.azure_deployment = connection.azure_deployment.clone();
    config.azure_api_version = connection.azure_api_version.clone();
    config.api_key = connection.api_key.clone().map(Secret::new);
    config
}

/// What the dashboard shows: everything but the key, and whether there is one.
#[derive(Serialize)]
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

pub struct PgLlmResolver {
    store: Store,
    keyring: Arc<Keyring>,
    http: reqwest::Client,
    offline: Arc<dyn LlmProvider>,
}

impl PgLlmResolver {
    pub fn new(store: Store, keyring: Arc<Keyring>, http: reqwest::Client) -> Self {
        Self {
            store,
            keyring,
            http,
            offline: Arc::new(OfflineProvider::new()),
        }
    }
}

#[async_trait]
impl LlmResolver for PgLlmResolver {
    async fn provider_for(&self, tenant: TenantId) -> Result<Arc<dyn LlmProvider>, LlmError> {
        let unavailable = |e: String| LlmError::Unavailable(e);
        let mut tx = self
            .store
            .tenant(tenant)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let Some(row) = llm_configs::get(&mut tx)
            .await
            .map_err(|e| unavailable(e.to_string()))?
        else {
            return Ok(self.offline.clone());
        };
        let kind = parse_kind(&row.provider).map_err(|e| LlmError::Rejected(e.to_string()))?;
        // A connection that fails to open (tampered, moved, unknown key id) is refused, never used.
        let connection = open_connection(&self.keyring, tenant, &row.connection_sealed)
            .map_err(|e| LlmError::Rejected(format!("stored LLM connection: {e}")))?;
        llm::build_provider(
            &provider_config(kind, &row.model, &connection),
            self.http.clone(),
        )
        .map_err(|e| LlmError::Rejected(e.to_string()))
    }
}
