//! A tenant's LLM connection (base URL, Azure deployment, API key): sealed at
//! rest as one value bound to its tenant, opened only to build a provider or
//! to show the dashboard everything but the key.

use agentry_actors::{Secret, TenantId};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::crypto::{CryptoError, Keyring, SecretOwner};
use crate::db::llm_configs;
use crate::llm::{LlmConfigError, ProviderConfig, ProviderKind};

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
