//! Which model answers for a tenant: the tenant's own (bring your own LLM,
//! stored with its key sealed) or, when it has none, the built-in offline
//! responder. Also the deployment's embedder.

use std::sync::Arc;

use agentry_actors::knowledge::OfflineEmbedder;
use agentry_actors::llm::{Embedder, LlmError, LlmProvider};
use agentry_actors::ports::LlmResolver;
use agentry_actors::{Secret, TenantId};
use async_trait::async_trait;

use crate::configuration::EmbeddingSettings;
use crate::crypto::{Keyring, SecretOwner};
use crate::db::{llm_configs, Store};
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

pub fn key_owner(tenant: TenantId) -> SecretOwner {
    SecretOwner::new(tenant, llm_configs::TABLE, llm_configs::API_KEY_COLUMN)
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
        let mut config = ProviderConfig::new(kind, row.model);
        config.base_url = row.base_url;
        config.azure_deployment = row.azure_deployment;
        config.azure_api_version = row.azure_api_version;
        if let Some(sealed) = row.api_key_sealed {
            // A key that fails to open (tampered, moved, unknown key id) is refused, never used.
            let key = self
                .keyring
                .open_string(&key_owner(tenant), &sealed)
                .map_err(|e| LlmError::Rejected(format!("stored API key: {e}")))?;
            config.api_key = Some(key);
        }
        llm::build_provider(&config, self.http.clone())
            .map_err(|e| LlmError::Rejected(e.to_string()))
    }
}
