//! CORS preflights name no widget, so "does any widget allow this origin?"
//! asks every tenant's widgets. Asked per preflight, that is an
//! unauthenticated cross-tenant scan anyone can repeat; the answer is kept
//! per origin for a short time instead (`widget.origin_cache_ttl_secs`), and
//! dropped on this instance whenever a widget changes here. Other instances
//! see a change within the TTL; the widget's own origin list, not this cache,
//! decides whether a session or a turn is allowed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::db::{widgets, Store};

/// Distinct origins remembered at most; beyond it expired ones are dropped
/// first, then all (a flood of made-up origins cannot grow memory).
const MAX_ENTRIES: usize = 10_000;
/// `scheme://host:port` is far shorter; a longer header is no allowed origin.
const MAX_ORIGIN_LEN: usize = 512;

pub struct OriginCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (bool, Instant)>>,
}

impl OriginCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Whether some widget allows `origin`; from the cache when fresh.
    pub async fn allowed_anywhere(&self, store: &Store, origin: &str) -> bool {
        if origin.len() > MAX_ORIGIN_LEN {
            return false;
        }
        if let Some(allowed) = self.fresh(origin) {
            return allowed;
        }
        metrics::counter!("agentry_cors_origin_lookups_total").increment(1);
        match widgets::origin_allowed_anywhere(store, origin).await {
            Ok(allowed) => {
                self.remember(origin, allowed);
                allowed
            }
            // Not remembered: a database blip must not pin a refusal.
            Err(error) => {
                tracing::warn!(%error, "CORS origin lookup failed");
                false
            }
        }
    }

    /// Forgets every answer: a widget changed on this instance.
    pub fn invalidate(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (bool, Instant)>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn fresh(&self, origin: &str) -> Option<bool> {
        let entries = self.lock();
        let (allowed, at) = entries.get(origin)?;
        (at.elapsed() < self.ttl).then_some(*allowed)
    }

    fn remember(&self, origin: &str, allowed: bool) {
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(origin.to_owned(), (allowed, Instant::now()));
    }
}
