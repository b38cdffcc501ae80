//! The LLM adapters: the [`LlmProvider`] and [`Embedder`] ports of
//! `agentry-actors` implemented for OpenAI-compatible servers (OpenAI, Azure
//! OpenAI, Ollama, vLLM), Anthropic, and a built-in offline responder.
//!
//! A tenant's (or the deployment's) [`ProviderConfig`] is validated here once;
//! [`build_provider`] and [`build_embedder`] turn it into a port the pipeline
//! calls without knowing which provider sits behind it.

mod anthropic;
pub mod connection;
mod embeddings;
mod offline;
mod openai;
mod sse;
#[cfg(test)]
mod test_support;
mod transport;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use agentry_actors::knowledge::OfflineEmbedder;
use agentry_actors::llm::{ChatMessage, Embedder, LlmProvider};
use agentry_actors::Secret;
use serde::Deserialize;

use crate::configuration::EmbeddingSettings;
use crate::net_guard::GuardedClient;

pub use anthropic::AnthropicProvider;
pub use embeddings::OpenAiEmbedder;
pub use offline::{OfflineProvider, OFFLINE_MODEL};
pub use openai::OpenAiProvider;

pub const OPENAI_DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
pub const ANTHROPIC_DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
pub const OLLAMA_DEFAULT_BASE_URL: &str = "http://127.0.0.1:11434/v1";

/// Which wire protocol and defaults a configuration uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    OpenAi,
    Azure,
    Ollama,
    Vllm,
    Anthropic,
    Offline,
}

impl ProviderKind {
    /// The label used in records and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Azure => "azure",
            Self::Ollama => "ollama",
            Self::Vllm => "vllm",
            Self::Anthropic => "anthropic",
            Self::Offline => "offline",
        }
    }

    fn default_base_url(self) -> Option<&'static str> {
        match self {
            Self::OpenAi => Some(OPENAI_DEFAULT_BASE_URL),
            Self::Anthropic => Some(ANTHROPIC_DEFAULT_BASE_URL),
            Self::Ollama => Some(OLLAMA_DEFAULT_BASE_URL),
            Self::Azure | Self::Vllm | Self::Offline => None,
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to reach one model. Deserializes from the deployment's TOML or a
/// tenant's stored JSON; unknown keys are refused so typos surface.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// Model name (for Azure, informational: the deployment picks the model).
    #[serde(default)]
    pub model: String,
    /// Defaults: OpenAI `https://api.openai.com/v1`, Anthropic
    /// `https://api.anthropic.com`, Ollama `http://127.0.0.1:11434/v1`.
    /// Azure takes the resource URL (`https://NAME.openai.azure.com`); vLLM
    /// its `/v1` URL.
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub api_key: Option<Secret<String>>,
    #[serde(default)]
    pub azure_deployment: Option<String>,
    #[serde(default)]
    pub azure_api_version: Option<String>,
    /// Longest wait for the response headers, and for each next piece of a
    /// streamed answer (a streamed answer may take longer in total).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Extra attempts after a connection error, timeout, 429 or 5xx.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Embedding models only: the expected vector size; when absent it is
    /// learnt from the first response.
    #[serde(default)]
    pub dimensions: Option<usize>,
}

fn default_timeout_secs() -> u64 {
    60
}

fn default_max_retries() -> u32 {
    2
}

/// The most retries a configuration may ask for; more only delays the error.
const MAX_RETRIES_LIMIT: u32 = 10;

impl ProviderConfig {
    /// A configuration of `kind` for `model` with every optional field unset.
    pub fn new(kind: ProviderKind, model: impl Into<String>) -> Self {
        Self {
            kind,
            model: model.into(),
            base_url: None,
            api_key: None,
            azure_deployment: None,
            azure_api_version: None,
            timeout_secs: default_timeout_secs(),
            max_retries: default_max_retries(),
            dimensions: None,
        }
    }

    /// The built-in offline responder: no key, no network.
    pub fn offline() -> Self {
        Self::new(ProviderKind::Offline, OFFLINE_MODEL)
    }

    /// The base URL to use: the configured one without a trailing slash, or
    /// the kind's default.
    pub fn resolved_base_url(&self) -> Option<String> {
        match self.base_url.as_deref().map(str::trim) {
            Some(url) if !url.is_empty() => Some(url.trim_end_matches('/').to_owned()),
            _ => self.kind.default_base_url().map(str::to_owned),
        }
    }

    fn key(&self) -> Option<&Secret<String>> {
        self.api_key
            .as_ref()
            .filter(|key| !key.expose().trim().is_empty())
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// Checks what deserialization cannot, naming the missing or wrong field.
    pub fn validate(&self) -> Result<(), LlmConfigError> {
        let kind = self.kind;
        if kind == ProviderKind::Offline {
            return Ok(());
        }
        if self.model.trim().is_empty() && kind != ProviderKind::Azure {
            return Err(LlmConfigError::Missing {
                kind,
                what: "model",
            });
        }
        if self.timeout_secs == 0 {
            return Err(LlmConfigError::Invalid(
                "timeout_secs must be at least 1".into(),
            ));
        }
        if self.max_retries > MAX_RETRIES_LIMIT {
            return Err(LlmConfigError::Invalid(format!(
                "max_retries must be at most {MAX_RETRIES_LIMIT}"
            )));
        }
        if self.dimensions == Some(0) {
            return Err(LlmConfigError::Invalid(
                "dimensions must be positive when set".into(),
            ));
        }
        match kind {
            ProviderKind::OpenAi | ProviderKind::Anthropic if self.key().is_none() => {
                return Err(LlmConfigError::Missing {
                    kind,
                    what: "api_key",
                });
            }
            ProviderKind::Azure => {
                if self.base_url.as_deref().is_none_or(|u| u.trim().is_empty()) {
                    return Err(LlmConfigError::Missing {
                        kind,
                        what: "base_url (the resource URL, https://NAME.openai.azure.com)",
                    });
                }
                for (value, what) in [
                    (&self.azure_deployment, "azure_deployment"),
                    (&self.azure_api_version, "azure_api_version"),
                ] {
                    if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
                        return Err(LlmConfigError::Missing { kind, what });
                    }
                }
                if self.key().is_none() {
                    return Err(LlmConfigError::Missing {
                        kind,
                        what: "api_key",
                    });
                }
            }
            ProviderKind::Vllm if self.base_url.as_deref().is_none_or(|u| u.trim().is_empty()) => {
                return Err(LlmConfigError::Missing {
                    kind,
                    what: "base_url (the server's /v1 URL)",
                });
            }
            _ => {}
        }
        if let Some(base) = self.resolved_base_url() {
            match url::Url::parse(&base) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
                    // Credentials in the URL would end up in error messages and logs.
                    if !url.username().is_empty() || url.password().is_some() {
                        return Err(LlmConfigError::Invalid(
                            "base_url must not contain credentials; use api_key".into(),
                        ));
                    }
                }
                _ => {
                    return Err(LlmConfigError::Invalid(format!(
                        "base_url must be an http(s) URL, got {base:?}"
                    )))
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LlmConfigError {
    #[error("the {kind} provider needs {what}")]
    Missing {
        kind: ProviderKind,
        what: &'static str,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("the {0} provider has no embeddings endpoint here")]
    NoEmbeddings(ProviderKind),
}

/// Refuses a configuration whose endpoint the outbound guard refuses, before
/// a client is built for it: a name is checked again at every connection by
/// the guard's resolver, but an IP literal never reaches a resolver.
fn check_endpoint(config: &ProviderConfig, client: &GuardedClient) -> Result<(), LlmConfigError> {
    let Some(base) = config
        .resolved_base_url()
        .filter(|_| config.kind != ProviderKind::Offline)
    else {
        return Ok(());
    };
    let url = url::Url::parse(&base)
        .map_err(|_| LlmConfigError::Invalid(format!("{base:?} is not a URL")))?;
    client
        .policy()
        .check_url(&url)
        .map_err(|blocked| LlmConfigError::Invalid(format!("{base}: {}", blocked.reason)))
}

/// Builds the provider a configuration describes. `client` is shared (one
/// connection pool for the process) and guarded: its resolver checks every
/// address it connects to. Timeouts come from the configuration.
pub fn build_provider(
    config: &ProviderConfig,
    client: &GuardedClient,
) -> Result<Arc<dyn LlmProvider>, LlmConfigError> {
    config.validate()?;
    check_endpoint(config, client)?;
    let http = client.http().clone();
    Ok(match config.kind {
        ProviderKind::Offline => Arc::new(OfflineProvider::new()),
        ProviderKind::Anthropic => Arc::new(AnthropicProvider::from_config(config, http)?),
        ProviderKind::OpenAi | ProviderKind::Azure | ProviderKind::Ollama | ProviderKind::Vllm => {
            Arc::new(OpenAiProvider::from_config(config, http)?)
        }
    })
}

/// Builds the OpenAI-compatible embeddings client (OpenAI, Azure, Ollama,
/// vLLM), through the guarded `client` like [`build_provider`].
pub fn build_embedder(
    config: &ProviderConfig,
    client: &GuardedClient,
) -> Result<Arc<dyn Embedder>, LlmConfigError> {
    config.validate()?;
    check_endpoint(config, client)?;
    let http = client.http().clone();
    match config.kind {
        ProviderKind::Anthropic | ProviderKind::Offline => {
            Err(LlmConfigError::NoEmbeddings(config.kind))
        }
        ProviderKind::OpenAi | ProviderKind::Azure | ProviderKind::Ollama | ProviderKind::Vllm => {
            Ok(Arc::new(OpenAiEmbedder::from_config(config, http)?))
        }
    }
}

/// Where an OpenAI-compatible endpoint lives and how to authenticate to it.
#[derive(Clone, Debug)]
pub(crate) struct OpenAiEndpoint {
    /// Full URL of the operation, query included.
    pub url: String,
    pub auth: Auth,
}

#[derive(Clone, Debug)]
pub(crate) enum Auth {
    Bearer(Secret<String>),
    AzureKey(Secret<String>),
    None,
}

impl Auth {
    pub(crate) fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Self::Bearer(key) => request.bearer_auth(key.expose()),
            Self::AzureKey(key) => request.header("api-key", key.expose()),
            Self::None => request,
        }
    }

    pub(crate) fn secret(&self) -> Option<&Secret<String>> {
        match self {
            Self::Bearer(key) | Self::AzureKey(key) => Some(key),
            Self::None => None,
        }
    }
}

impl OpenAiEndpoint {
    /// The URL of `operation` (`chat/completions`, `embeddings`) for a
    /// validated OpenAI-compatible configuration.
    pub(crate) fn for_operation(
        config: &ProviderConfig,
        operation: &str,
    ) -> Result<Self, LlmConfigError> {
        let base = config.resolved_base_url().ok_or(LlmConfigError::Missing {
            kind: config.kind,
            what: "base_url",
        })?;
        let key = config.key().cloned();
        Ok(match config.kind {
            ProviderKind::Azure => {
                let deployment = config.azure_deployment.as_deref().unwrap_or("").trim();
                let version = config.azure_api_version.as_deref().unwrap_or("").trim();
                let key = key.ok_or(LlmConfigError::Missing {
                    kind: config.kind,
                    what: "api_key",
                })?;
                Self {
                    url: format!(
                        "{base}/openai/deployments/{}/{operation}?api-version={}",
                        url_escape(deployment),
                        url_escape(version)
                    ),
                    auth: Auth::AzureKey(key),
                }
            }
            _ => Self {
                url: format!("{base}/{operation}"),
                auth: key.map_or(Auth::None, Auth::Bearer),
            },
        })
    }
}

fn url_escape(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

/// The rough token count used when a provider reports none: a quarter of the
/// characters, rounded up.
pub(crate) fn estimate_tokens(chars: usize) -> u32 {
    u32::try_from(chars.div_ceil(4)).unwrap_or(u32::MAX)
}

pub(crate) fn estimate_prompt_tokens(messages: &[ChatMessage]) -> u32 {
    estimate_tokens(messages.iter().map(|m| m.content.chars().count()).sum())
}

/// The deployment's embedder, from `[embedding]`.
pub fn deployment_embedder(
    settings: &EmbeddingSettings,
    http: &GuardedClient,
) -> Result<Arc<dyn Embedder>, LlmConfigError> {
    let kind = connection::parse_kind(&settings.provider)?;
    if kind == ProviderKind::Offline {
        return Ok(Arc::new(OfflineEmbedder::default()));
    }
    let mut config = ProviderConfig::new(kind, settings.model.clone());
    config.base_url = Some(settings.base_url.clone()).filter(|url| !url.trim().is_empty());
    let key = settings.api_key.expose();
    config.api_key = (!key.is_empty()).then(|| Secret::new(key.clone()));
    build_embedder(&config, http)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net_guard::GuardPolicy;

    fn parse(toml_json: serde_json::Value) -> ProviderConfig {
        serde_json::from_value(toml_json).expect("config parses")
    }

    #[test]
    fn defaults_fill_in_the_base_url_timeout_and_retries() {
        let config = parse(
            serde_json::json!({"kind": "openai", "model": "gpt-4o-mini", "api_key": "sk-test"}),
        );
        assert_eq!(
            config.resolved_base_url().as_deref(),
            Some(OPENAI_DEFAULT_BASE_URL)
        );
        assert_eq!(config.timeout_secs, 60);
        assert_eq!(config.max_retries, 2);
        config.validate().expect("valid");

        let ollama = parse(
            serde_json::json!({"kind": "ollama", "model": "llama3.1", "base_url": "http://gpu:11434/v1/"}),
        );
        assert_eq!(
            ollama.resolved_base_url().as_deref(),
            Some("http://gpu:11434/v1")
        );
        ollama.validate().expect("ollama needs no key");
        let anthropic = ProviderConfig::new(ProviderKind::Anthropic, "claude");
        assert_eq!(
            anthropic.resolved_base_url().as_deref(),
            Some(ANTHROPIC_DEFAULT_BASE_URL)
        );
    }

    #[test]
    fn unknown_kinds_and_keys_are_refused() {
        assert!(
            serde_json::from_value::<ProviderConfig>(serde_json::json!({"kind": "gemini"}))
                .is_err()
        );
        assert!(serde_json::from_value::<ProviderConfig>(
            serde_json::json!({"kind": "openai", "modle": "x"})
        )
        .is_err());
    }

    #[test]
    fn validation_names_what_is_missing() {
        let message = |config: ProviderConfig| config.validate().unwrap_err().to_string();
        assert_eq!(
            message(ProviderConfig::new(ProviderKind::OpenAi, "gpt-4o")),
            "the openai provider needs api_key"
        );
        assert_eq!(
            message(ProviderConfig::new(ProviderKind::Anthropic, "claude")),
            "the anthropic provider needs api_key"
        );
        let mut azure = ProviderConfig::new(ProviderKind::Azure, "");
        assert!(message(azure.clone()).contains("needs base_url"));
        azure.base_url = Some("https://example.openai.azure.com".into());
        assert!(message(azure.clone()).contains("needs azure_deployment"));
        azure.azure_deployment = Some("chat".into());
        assert!(message(azure.clone()).contains("needs azure_api_version"));
        azure.azure_api_version = Some("2024-10-21".into());
        assert!(message(azure.clone()).contains("needs api_key"));
        azure.api_key = Some(Secret::new("k".into()));
        azure.validate().expect("complete azure config");
        assert!(message(ProviderConfig::new(ProviderKind::Vllm, "m")).contains("needs base_url"));
        assert!(message(ProviderConfig::new(ProviderKind::Ollama, " ")).contains("needs model"));

        let mut bad_url = ProviderConfig::new(ProviderKind::Ollama, "m");
        bad_url.base_url = Some("ftp://host".into());
        assert!(message(bad_url.clone()).contains("http(s) URL"));
        bad_url.base_url = Some("http://user:pw@host/v1".into());
        assert!(message(bad_url).contains("credentials"));
        ProviderConfig::offline()
            .validate()
            .expect("offline needs nothing");
    }

    #[test]
    fn azure_and_openai_urls_and_auth_differ() {
        let mut azure = ProviderConfig::new(ProviderKind::Azure, "");
        azure.base_url = Some("https://res.openai.azure.com/".into());
        azure.azure_deployment = Some("my chat".into());
        azure.azure_api_version = Some("2024-10-21".into());
        azure.api_key = Some(Secret::new("k".into()));
        let endpoint = OpenAiEndpoint::for_operation(&azure, "chat/completions").unwrap();
        assert_eq!(
            endpoint.url,
            "https://res.openai.azure.com/openai/deployments/my+chat/chat/completions?api-version=2024-10-21"
        );
        assert!(matches!(endpoint.auth, Auth::AzureKey(_)));

        let ollama = ProviderConfig::new(ProviderKind::Ollama, "llama3.1");
        let endpoint = OpenAiEndpoint::for_operation(&ollama, "embeddings").unwrap();
        assert_eq!(endpoint.url, "http://127.0.0.1:11434/v1/embeddings");
        assert!(matches!(endpoint.auth, Auth::None));
    }

    fn guarded(allow_private: bool) -> GuardedClient {
        GuardedClient::new(GuardPolicy {
            allow_http: true,
            allow_private,
            ..GuardPolicy::default()
        })
        .unwrap()
    }

    #[test]
    fn an_endpoint_the_guard_refuses_is_never_built() {
        let mut vllm = ProviderConfig::new(ProviderKind::Vllm, "qwen");
        for private in [
            "http://10.0.0.5:8000/v1",
            "http://169.254.169.254/latest",
            "http://[::ffff:127.0.0.1]:8000/v1",
            "http://2130706433/v1",
        ] {
            vllm.base_url = Some(private.into());
            let refused = build_provider(&vllm, &guarded(false)).err();
            assert!(
                matches!(&refused, Some(LlmConfigError::Invalid(reason)) if reason.contains("private")),
                "{private}: {refused:?}"
            );
            assert!(build_embedder(&vllm, &guarded(false)).is_err(), "{private}");
        }
        vllm.base_url = Some("http://10.0.0.5:8000/v1".into());
        assert!(
            build_provider(&vllm, &guarded(true)).is_ok(),
            "the opt-in admits it"
        );
    }

    #[test]
    fn builders_pick_the_implementation_by_kind() {
        let http = &guarded(true);
        let offline = build_provider(&ProviderConfig::offline(), http).unwrap();
        assert_eq!(
            (offline.provider(), offline.model()),
            ("offline", OFFLINE_MODEL)
        );
        let mut vllm = ProviderConfig::new(ProviderKind::Vllm, "qwen");
        vllm.base_url = Some("http://10.0.0.5:8000/v1".into());
        let provider = build_provider(&vllm, http).unwrap();
        assert_eq!((provider.provider(), provider.model()), ("vllm", "qwen"));
        assert!(build_provider(&ProviderConfig::new(ProviderKind::OpenAi, "m"), http).is_err());
        assert!(matches!(
            build_embedder(&ProviderConfig::offline(), http),
            Err(LlmConfigError::NoEmbeddings(ProviderKind::Offline))
        ));
        let mut embed = ProviderConfig::new(ProviderKind::OpenAi, "text-embedding-3-small");
        embed.api_key = Some(Secret::new("sk".into()));
        embed.dimensions = Some(1536);
        let embedder = build_embedder(&embed, http).unwrap();
        assert_eq!(embedder.name(), "openai:text-embedding-3-small");
        assert_eq!(embedder.dimensions(), 1536);
    }

    #[test]
    fn token_estimate_rounds_up() {
        assert_eq!(estimate_tokens(0), 0);
        assert_eq!(estimate_tokens(1), 1);
        assert_eq!(estimate_tokens(8), 2);
        assert_eq!(estimate_tokens(9), 3);
    }
}
