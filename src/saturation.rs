//! Gauges sampled every few seconds rather than recorded as work happens:
//! whether PostgreSQL and Redis answer this instance (what `/readyz` asks,
//! so an alert can see readiness failing between load-balancer probes), how
//! full the connection pools are, and the queues that live in PostgreSQL.

use std::time::{Duration, Instant};

use fred::prelude::ClientLike;
use tokio::sync::watch;

use crate::bus::RedisBus;
use crate::db::Store;
use crate::telemetry::age_secs;

/// Often enough for a one-minute alert window; cheap (two pings, one query).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// A dependency slower than this to answer counts as down, as for `/readyz`.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether PostgreSQL and Redis each answer within [`CHECK_TIMEOUT`],
/// recorded in `agentry_dependency_up` and its check latency.
pub async fn check_dependencies(store: &Store, bus: &RedisBus) -> (bool, bool) {
    let timed = |dependency: &'static str, started: Instant, ok: bool| {
        metrics::histogram!("agentry_dependency_check_duration_seconds", "dependency" => dependency)
            .record(started.elapsed().as_secs_f64());
        metrics::gauge!("agentry_dependency_up", "dependency" => dependency).set(if ok {
            1.0
        } else {
            0.0
        });
        ok
    };
    let postgres = async {
        let started = Instant::now();
        let answered = tokio::time::timeout(CHECK_TIMEOUT, store.ping()).await;
        timed("postgres", started, matches!(answered, Ok(Ok(()))))
    };
    let redis = async {
        let started = Instant::now();
        let answered = tokio::time::timeout(CHECK_TIMEOUT, bus.ping()).await;
        timed("redis", started, matches!(answered, Ok(Ok(()))))
    };
    tokio::join!(postgres, redis)
}

/// Samples until `stop` turns true.
pub async fn run(store: Store, bus: RedisBus, mut stop: watch::Receiver<bool>) {
    loop {
        check_dependencies(&store, &bus).await;
        sample_pools(&store, &bus);
        if let Err(error) = sample_queues(&store).await {
            tracing::debug!(%error, "metrics: queue depths unavailable");
        }
        tokio::select! {
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

fn sample_pools(store: &Store, bus: &RedisBus) {
    let pool = store.pool();
    let open = pool.size() as f64;
    let idle = pool.num_idle() as f64;
    metrics::gauge!("agentry_db_pool_connections", "state" => "busy").set(open - idle);
    metrics::gauge!("agentry_db_pool_connections", "state" => "idle").set(idle);
    metrics::gauge!("agentry_db_pool_max_connections")
        .set(f64::from(pool.options().get_max_connections()));
    for (name, clients) in [
        ("commands", bus.pool().clients()),
        ("blocking", bus.blocking_pool().clients()),
    ] {
        let connected = clients
            .iter()
            .filter(|client| client.is_connected())
            .count();
        metrics::gauge!("agentry_redis_connections", "pool" => name, "state" => "connected")
            .set(connected as f64);
        metrics::gauge!("agentry_redis_connections", "pool" => name, "state" => "disconnected")
            .set((clients.len() - connected) as f64);
    }
}

async fn sample_queues(store: &Store) -> Result<(), sqlx::Error> {
    let depths: Vec<(String, i64, Option<chrono::DateTime<chrono::Utc>>)> =
        sqlx::query_as("SELECT queue, backlog, oldest FROM agentry_queue_depths()")
            .fetch_all(store.pool())
            .await?;
    for (queue, backlog, oldest) in depths {
        let age = oldest.map_or(0.0, |at| age_secs(at.timestamp_millis()));
        match queue.as_str() {
            "file_scan" => {
                metrics::gauge!("agentry_file_scan_backlog").set(backlog as f64);
                metrics::gauge!("agentry_file_scan_oldest_age_seconds").set(age);
            }
            "sms_outbound" => {
                metrics::gauge!("agentry_sms_outbound_backlog").set(backlog as f64);
                metrics::gauge!("agentry_sms_outbound_oldest_age_seconds").set(age);
            }
            other => tracing::debug!(queue = other, "metrics: a queue without gauges"),
        }
    }
    Ok(())
}
