//! What a tenant's turns read and rarely change: each agent's brief with its
//! compiled guardrail rules, and the tenant's LLM provider (its connection
//! decrypted and its client built once).
//!
//! Owned by the tenant's supervisor and lent to its sessions, so it lives and
//! retires with the tenant. Every lookup names the version the turn's first
//! write returned: a cache holding another version reloads, so an agent edited
//! or an LLM connection replaced on any instance is used by the next turn on
//! every instance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::guardrail_finalizer::AgentRules;
use crate::ids::{AgentId, TenantId};
use crate::llm::{LlmError, LlmProvider};
use crate::ports::{AgentBrief, ChatStore, LlmResolver, StoreError, Versioned};
use crate::stage_metrics::record_cache_lookup;

/// An agent as its turns use it: its brief, and the rules its replies are held
/// to, compiled from that brief once per version.
#[derive(Debug)]
pub struct CompiledAgent {
    pub brief: AgentBrief,
    pub rules: Arc<AgentRules>,
}

#[derive(Default)]
pub struct TenantCaches {
    briefs: Mutex<HashMap<AgentId, Versioned<Arc<CompiledAgent>>>>,
    provider: Mutex<Option<Versioned<Arc<dyn LlmProvider>>>>,
}

impl TenantCaches {
    /// The agent at `version` (or newer).
    pub async fn agent(
        &self,
        store: &dyn ChatStore,
        tenant: TenantId,
        agent: AgentId,
        version: i64,
    ) -> Result<Arc<CompiledAgent>, StoreError> {
        let cached = lock(&self.briefs)
            .get(&agent)
            .filter(|cached| cached.version == version)
            .map(|cached| cached.value.clone());
        record_cache_lookup("agent_brief", cached.is_some());
        if let Some(brief) = cached {
            return Ok(brief);
        }
        // Loaded after the turn's write committed, so at least as new as `version`.
        let loaded = store.agent_brief(tenant, agent).await?;
        let brief = Arc::new(CompiledAgent {
            rules: Arc::new(AgentRules::new(&loaded.value)),
            brief: loaded.value,
        });
        lock(&self.briefs).insert(
            agent,
            Versioned {
                version: loaded.version,
                value: brief.clone(),
            },
        );
        Ok(brief)
    }

    /// The tenant's provider at `version` (0: the tenant has none of its own).
    pub async fn provider(
        &self,
        resolver: &dyn LlmResolver,
        tenant: TenantId,
        version: i64,
    ) -> Result<Arc<dyn LlmProvider>, LlmError> {
        let cached = lock(&self.provider)
            .as_ref()
            .filter(|cached| cached.version == version)
            .map(|cached| cached.value.clone());
        record_cache_lookup("llm_provider", cached.is_some());
        if let Some(provider) = cached {
            return Ok(provider);
        }
        let loaded = resolver.provider_for(tenant).await?;
        let provider = loaded.value.clone();
        *lock(&self.provider) = Some(loaded);
        Ok(provider)
    }
}

/// A poisoned cache lock only means a panic elsewhere mid-insert; the map is still whole.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::ids::ConversationId;
    use crate::llm::ChatMessage;
    use crate::ports::{OpenedTurn, StoredReply, TurnChannel, TurnRecord};

    /// A store whose agent row has a version the test moves, counting reads.
    #[derive(Default)]
    struct Agents {
        version: AtomicI64,
        reads: AtomicUsize,
    }

    #[async_trait]
    impl ChatStore for Agents {
        async fn agent_brief(
            &self,
            _: TenantId,
            _: AgentId,
        ) -> Result<Versioned<AgentBrief>, StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let version = self.version.load(Ordering::SeqCst);
            Ok(Versioned {
                version,
                value: AgentBrief {
                    name: format!("v{version}"),
                    ..AgentBrief::default()
                },
            })
        }
        async fn history(
            &self,
            _: TenantId,
            _: ConversationId,
            _: i64,
            _: usize,
        ) -> Result<Vec<ChatMessage>, StoreError> {
            unreachable!()
        }
        async fn begin_turn(
            &self,
            _: TenantId,
            _: AgentId,
            _: ConversationId,
            _: &TurnChannel,
            _: crate::ports::VisitorMessage<'_>,
        ) -> Result<OpenedTurn, StoreError> {
            unreachable!()
        }
        async fn finish_turn(
            &self,
            _: TenantId,
            _: ConversationId,
            _: TurnRecord,
        ) -> Result<StoredReply, StoreError> {
            unreachable!()
        }
    }

    #[tokio::test]
    async fn a_brief_is_read_once_per_version() {
        let store = Agents::default();
        store.version.store(7, Ordering::SeqCst);
        let caches = TenantCaches::default();
        let (tenant, agent) = (TenantId::new(), AgentId::new());
        for _ in 0..3 {
            let brief = caches.agent(&store, tenant, agent, 7).await.unwrap();
            assert_eq!(brief.brief.name, "v7");
        }
        assert_eq!(store.reads.load(Ordering::SeqCst), 1, "one read, then hits");

        store.version.store(9, Ordering::SeqCst);
        let brief = caches.agent(&store, tenant, agent, 9).await.unwrap();
        assert_eq!(brief.brief.name, "v9", "a newer version reloads");
        caches.agent(&store, tenant, agent, 9).await.unwrap();
        assert_eq!(store.reads.load(Ordering::SeqCst), 2);

        let other = caches
            .agent(&store, tenant, AgentId::new(), 9)
            .await
            .unwrap();
        assert_eq!(other.brief.name, "v9");
        assert_eq!(
            store.reads.load(Ordering::SeqCst),
            3,
            "agents are cached apart"
        );
    }
}
