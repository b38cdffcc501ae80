//! Which model answers for a tenant: the tenant's own (bring your own LLM,
//! its connection sealed at rest) or, when it has none, the built-in offline
//! responder. The pipeline caches the provider by the version it carries.

use std::sync::Arc;

use agentry_actors::llm::{LlmError, LlmProvider};
use agentry_actors::ports::{LlmResolver, Versioned};
use agentry_actors::TenantId;
use async_trait::async_trait;

use crate::crypto::Keyring;
use crate::db::llm_configs;
use crate::db::Store;
use crate::llm::connection::{open_connection, parse_kind, provider_config};
use crate::llm::{self, OfflineProvider};
use crate::net_guard::GuardedClient;

pub struct PgLlmResolver {
    store: Store,
    keyring: Arc<Keyring>,
    http: GuardedClient,
    offline: Arc<dyn LlmProvider>,
}

impl PgLlmResolver {
    /// `http` is the guarded client every tenant LLM is reached through.
    pub fn new(store: Store, keyring: Arc<Keyring>, http: GuardedClient) -> Self {
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
    async fn provider_for(
        &self,
        tenant: TenantId,
    ) -> Result<Versioned<Arc<dyn LlmProvider>>, LlmError> {
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
            return Ok(Versioned {
                version: 0,
                value: self.offline.clone(),
            });
        };
        let kind = parse_kind(&row.provider).map_err(|e| LlmError::Rejected(e.to_string()))?;
        // A connection that fails to open (tampered, moved, unknown key id) is refused, never used.
        let connection = open_connection(&self.keyring, tenant, &row.connection_sealed)
            .map_err(|e| LlmError::Rejected(format!("stored LLM connection: {e}")))?;
        let provider =
            llm::build_provider(&provider_config(kind, &row.model, &connection), &self.http)
                .map_err(|e| LlmError::Rejected(e.to_string()))?;
        Ok(Versioned {
            version: row.version,
            value: provider,
        })
    }
}
