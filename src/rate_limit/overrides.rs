//! Per-tenant tier limits set by an operator (`tenant_rate_limits`), so a
//! load-test tenant or a busy customer is raised without touching the
//! defaults. Every instance keeps them in memory, reloaded every
//! `rate_limits.overrides_refresh_secs` and at once where an operator changed
//! them: a limit check never waits on PostgreSQL.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use agentry_actors::TenantId;
use tokio::sync::watch;

use super::Tier;
use crate::db::{rate_limits, DbError, Store};

#[derive(Default)]
pub struct TierOverrides {
    snapshot: RwLock<Snapshot>,
}

#[derive(Default)]
struct Snapshot {
    limits: HashMap<(TenantId, Tier), u32>,
    /// Widget sessions are counted before the widget is looked up: the
    /// public keys of tenants whose widget-session tier is overridden.
    widget_keys: HashMap<String, TenantId>,
}

impl TierOverrides {
    /// The tenant's own limit for `tier`, if an operator set one.
    pub fn per_minute(&self, tier: Tier, tenant: TenantId) -> Option<u32> {
        self.read().limits.get(&(tenant, tier)).copied()
    }

    /// The tenant of a widget's public key, when that tenant's widget-session tier is overridden.
    pub fn tenant_of_widget_key(&self, public_key: &str) -> Option<TenantId> {
        self.read().widget_keys.get(public_key).copied()
    }

    /// A widget created on this instance counts at its tenant's overridden
    /// widget-session tier at once, not from the next reload on.
    pub fn widget_added(&self, tenant: TenantId, public_key: &str) {
        if self.per_minute(Tier::WidgetSessions, tenant).is_some() {
            self.snapshot
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .widget_keys
                .insert(public_key.to_owned(), tenant);
        }
    }

    /// Reloads every override; on failure the previous ones stay in force.
    pub async fn refresh(&self, store: &Store) -> Result<(), DbError> {
        let mut snapshot = Snapshot::default();
        for row in rate_limits::all_overrides(store).await? {
            let Some(tier) = Tier::parse(&row.tier) else {
                continue;
            };
            let tenant = TenantId::from_uuid(row.tenant_id);
            snapshot
                .limits
                .insert((tenant, tier), u32::try_from(row.per_minute).unwrap_or(1));
            for key in row.public_keys {
                snapshot.widget_keys.insert(key, tenant);
            }
        }
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = snapshot;
        Ok(())
    }

    /// Reloads every `every` until `stopped` turns true.
    pub async fn refresh_every(
        self: Arc<Self>,
        store: Store,
        every: Duration,
        mut stopped: watch::Receiver<bool>,
    ) {
        let stop = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        tokio::pin!(stop);
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    if let Err(error) = self.refresh(&store).await {
                        tracing::warn!(%error, "rate-limit overrides not reloaded; the previous ones hold");
                    }
                }
                () = &mut stop => return,
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Snapshot> {
        self.snapshot.read().unwrap_or_else(|e| e.into_inner())
    }
}
