//! The knowledge-base namespaces this instance holds in memory, within a byte
//! budget (`knowledge.cache_max_bytes`).
//!
//! Behind a load balancer every instance may serve every tenant, so what is
//! resident must be bounded: when a new or grown snapshot pushes the total over
//! the budget, the least recently used namespaces are evicted, and are loaded
//! again from PostgreSQL (the source of truth) on their next use. The registry
//! is the only long-lived owner of a snapshot: searches in flight keep theirs
//! alive through an `Arc` until they finish, then its memory is freed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::ports::Namespace;

struct Entry<S> {
    snapshot: Arc<S>,
    version: i64,
    bytes: usize,
    last_used: u64,
}

struct Inner<S> {
    entries: HashMap<Namespace, Entry<S>>,
    bytes: usize,
    /// A use counter: cheaper than a clock and strictly ordered.
    uses: u64,
}

pub struct ResidentNamespaces<S> {
    budget_bytes: usize,
    inner: Mutex<Inner<S>>,
}

impl<S> ResidentNamespaces<S> {
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            budget_bytes,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                bytes: 0,
                uses: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<S>> {
        // Every update below leaves the map consistent before anything can panic.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The snapshot of `namespace` if it holds `version` or a later one; a hit
    /// counts as a use.
    pub fn current(&self, namespace: Namespace, version: i64) -> Option<Arc<S>> {
        let mut inner = self.lock();
        inner.uses += 1;
        let uses = inner.uses;
        let entry = inner.entries.get_mut(&namespace)?;
        if entry.version < version {
            return None;
        }
        entry.last_used = uses;
        Some(entry.snapshot.clone())
    }

    /// Whatever snapshot of `namespace` is resident, at its version: the base
    /// an incremental update starts from.
    pub fn resident(&self, namespace: Namespace) -> Option<(i64, Arc<S>)> {
        let inner = self.lock();
        let entry = inner.entries.get(&namespace)?;
        Some((entry.version, entry.snapshot.clone()))
    }

    /// Makes `snapshot` the resident one for `namespace`, then evicts the least
    /// recently used others until the total fits the budget. The newcomer
    /// itself stays even when it alone exceeds the budget: the turn asking for
    /// it needs it, and it goes first once another namespace is used.
    pub fn insert(&self, namespace: Namespace, version: i64, snapshot: Arc<S>, bytes: usize) {
        let mut inner = self.lock();
        inner.uses += 1;
        let uses = inner.uses;
        let entry = Entry {
            snapshot,
            version,
            bytes,
            last_used: uses,
        };
        if let Some(old) = inner.entries.insert(namespace, entry) {
            inner.bytes -= old.bytes;
        }
        inner.bytes += bytes;
        let mut evicted = 0u64;
        while inner.bytes > self.budget_bytes {
            let Some(oldest) = inner
                .entries
                .iter()
                .filter(|(key, _)| **key != namespace)
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(key, _)| *key)
            else {
                break;
            };
            if let Some(gone) = inner.entries.remove(&oldest) {
                inner.bytes -= gone.bytes;
                evicted += 1;
            }
        }
        metrics::counter!("agentry_retriever_evictions_total").increment(evicted);
        publish_gauges(&inner);
    }

    /// Drops `namespace` (its agent is gone).
    pub fn remove(&self, namespace: Namespace) {
        let mut inner = self.lock();
        if let Some(gone) = inner.entries.remove(&namespace) {
            inner.bytes -= gone.bytes;
        }
        publish_gauges(&inner);
    }

    /// (namespaces, bytes) resident now.
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.entries.len(), inner.bytes)
    }
}

fn publish_gauges<S>(inner: &Inner<S>) {
    metrics::gauge!("agentry_retriever_resident_namespaces").set(inner.entries.len() as f64);
    metrics::gauge!("agentry_retriever_resident_bytes").set(inner.bytes as f64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{AgentId, TenantId};

    fn namespace() -> Namespace {
        Namespace {
            tenant: TenantId::new(),
            agent: AgentId::new(),
        }
    }

    #[test]
    fn a_stale_version_is_a_miss_and_a_newer_one_a_hit() {
        let resident = ResidentNamespaces::new(1_000);
        let ns = namespace();
        resident.insert(ns, 5, Arc::new("five"), 10);
        assert_eq!(resident.current(ns, 5).as_deref(), Some(&"five"));
        assert_eq!(resident.current(ns, 4).as_deref(), Some(&"five"));
        assert!(resident.current(ns, 6).is_none());
        assert_eq!(resident.resident(ns).map(|(v, _)| v), Some(5));
        assert!(resident.current(namespace(), 0).is_none());
    }

    #[test]
    fn the_least_recently_used_namespaces_go_first_when_over_budget() {
        let resident = ResidentNamespaces::new(100);
        let (a, b, c) = (namespace(), namespace(), namespace());
        resident.insert(a, 1, Arc::new('a'), 40);
        resident.insert(b, 1, Arc::new('b'), 40);
        // Using `a` makes `b` the least recently used.
        assert!(resident.current(a, 1).is_some());
        resident.insert(c, 1, Arc::new('c'), 40);
        assert!(resident.current(b, 1).is_none(), "b was evicted");
        assert!(resident.current(a, 1).is_some());
        assert!(resident.current(c, 1).is_some());
        assert_eq!(resident.usage(), (2, 80));
    }

    #[test]
    fn a_replaced_snapshot_is_counted_once_and_an_oversized_one_stays_alone() {
        let resident = ResidentNamespaces::new(100);
        let (a, b) = (namespace(), namespace());
        resident.insert(a, 1, Arc::new(1), 30);
        resident.insert(a, 2, Arc::new(2), 50);
        assert_eq!(resident.usage(), (1, 50));
        resident.insert(b, 1, Arc::new(3), 500);
        assert_eq!(
            resident.usage(),
            (1, 500),
            "a evicted, b kept though too big"
        );
        resident.remove(b);
        assert_eq!(resident.usage(), (0, 0));
    }
}
