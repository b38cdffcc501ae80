//! The Redis stream primitives, against real Redis.

use std::time::Duration;

use agentry::bus::RedisBus;
use agentry::configuration::RedisSettings;
use agentry_actors::ports::{StreamBus, StreamName};
use fred::prelude::KeysInterface;
use uuid::Uuid;

use crate::helpers::test_settings;

const JOBS: StreamName = StreamName::new("test-jobs");

/// A bus on keys of its own, with the test settings as `change` leaves them.
pub fn bus_where(change: impl FnOnce(&mut RedisSettings)) -> RedisBus {
    let mut settings = test_settings();
    settings.redis.prefix = format!("agentry-test-{}", Uuid::new_v4().simple());
    change(&mut settings.redis);
    RedisBus::connect(&settings.redis).unwrap()
}

fn bus_with(max_len: u64) -> RedisBus {
    bus_where(|redis| redis.stream_max_len = max_len)
}

/// Waits until `bus` answers.
pub async fn ready(bus: &RedisBus) {
    for _ in 0..50 {
        if bus.ping().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("Redis did not become reachable");
}

#[tokio::test]
async fn published_entries_are_read_in_order_by_a_group_and_acknowledged() {
    let bus = bus_with(1000);
    ready(&bus).await;
    bus.ensure_group(JOBS, "workers").await.unwrap();
    bus.ensure_group(JOBS, "workers").await.unwrap(); // idempotent
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(bus.publish(JOBS, &format!("{{\"n\":{n}}}")).await.unwrap());
    }
    let entries = bus
        .read_group(JOBS, "workers", "c1", 10, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(
        entries.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        ids
    );
    assert_eq!(entries[3].payload, "{\"n\":3}");
    // Delivered once per group: a second read finds nothing new.
    let again = bus
        .read_group(JOBS, "workers", "c2", 10, Duration::from_millis(100))
        .await
        .unwrap();
    assert!(again.is_empty());
    assert_eq!(bus.ack(JOBS, "workers", &ids).await.unwrap(), 5);
    // Acknowledged entries are no longer pending, so nothing is left to reclaim.
    let reclaimed = bus
        .reclaim(JOBS, "workers", "c2", Duration::ZERO, 10)
        .await
        .unwrap();
    assert!(reclaimed.is_empty());
}

#[tokio::test]
async fn entries_left_pending_by_a_dead_consumer_are_reclaimed_by_another() {
    let bus = bus_with(1000);
    ready(&bus).await;
    bus.ensure_group(JOBS, "workers").await.unwrap();
    let id = bus.publish(JOBS, "orphan").await.unwrap();
    let taken = bus
        .read_group(JOBS, "workers", "doomed", 10, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    // Not idle long enough yet: nothing to reclaim.
    assert!(bus
        .reclaim(JOBS, "workers", "rescuer", Duration::from_secs(60), 10)
        .await
        .unwrap()
        .is_empty());
    tokio::time::sleep(Duration::from_millis(150)).await;
    let reclaimed = bus
        .reclaim(JOBS, "workers", "rescuer", Duration::from_millis(100), 10)
        .await
        .unwrap();
    assert_eq!(reclaimed.len(), 1);
    assert_eq!(reclaimed[0].id, id);
    assert_eq!(reclaimed[0].payload, "orphan");
    assert_eq!(bus.ack(JOBS, "workers", &[id]).await.unwrap(), 1);
}

#[tokio::test]
async fn a_blocking_read_waits_for_a_publish() {
    let bus = bus_with(1000);
    ready(&bus).await;
    bus.ensure_group(JOBS, "workers").await.unwrap();
    let reader = bus.clone();
    let waiting = tokio::spawn(async move {
        reader
            .read_group(JOBS, "workers", "c1", 1, Duration::from_secs(5))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Other commands are not stuck behind the blocked read.
    bus.ping().await.unwrap();
    bus.publish(JOBS, "wake up").await.unwrap();
    let entries = waiting.await.unwrap().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].payload, "wake up");
    let empty = bus
        .read_group(JOBS, "workers", "c1", 1, Duration::from_millis(50))
        .await
        .unwrap();
    assert!(empty.is_empty());
}

#[tokio::test]
async fn streams_are_trimmed_to_about_their_maximum_length() {
    let bus = bus_with(50);
    ready(&bus).await;
    for n in 0..2000 {
        bus.publish(JOBS, &n.to_string()).await.unwrap();
    }
    let len = bus.len(JOBS).await.unwrap();
    assert!((50..2000).contains(&len), "length {len}");
}

#[tokio::test]
async fn keys_carry_the_prefix_and_a_cluster_hash_tag() {
    let bus = bus_with(1000);
    ready(&bus).await;
    bus.publish(JOBS, "x").await.unwrap();
    let key = bus.stream_key(JOBS);
    assert!(
        key.starts_with("agentry-test-") && key.ends_with(":{test-jobs}:stream"),
        "{key}"
    );
    let exists: u32 = bus.pool().exists(key).await.unwrap();
    assert_eq!(exists, 1);
}

#[tokio::test]
async fn delayed_entries_move_to_their_stream_when_due_once_each() {
    let bus = bus_with(1000);
    ready(&bus).await;
    const RETRIES: StreamName = StreamName::new("test-retries");
    assert_eq!(bus.next_due(RETRIES).await.unwrap(), None);
    for (payload, due) in [("late", 3_000), ("early", 1_000), ("middle", 2_000)] {
        bus.publish_at(RETRIES, payload, due).await.unwrap();
    }
    assert_eq!(bus.next_due(RETRIES).await.unwrap(), Some(1_000));
    assert_eq!(
        bus.move_due(RETRIES, 999, 100).await.unwrap(),
        0,
        "nothing due yet"
    );
    assert_eq!(bus.move_due(RETRIES, 2_000, 100).await.unwrap(), 2);
    assert_eq!(bus.delayed_len(RETRIES).await.unwrap(), 1);
    assert_eq!(bus.next_due(RETRIES).await.unwrap(), Some(3_000));

    // Movers racing on several instances: every entry arrives exactly once.
    for n in 0..200 {
        bus.publish_at(RETRIES, &format!("race-{n}"), 5_000 + n)
            .await
            .unwrap();
    }
    let movers: Vec<_> = (0..4)
        .map(|_| {
            let bus = bus.clone();
            tokio::spawn(async move {
                let mut moved = 0;
                for _ in 0..20 {
                    moved += bus.move_due(RETRIES, 10_000, 7).await.unwrap();
                }
                moved
            })
        })
        .collect();
    let mut moved = 0;
    for mover in movers {
        moved += mover.await.unwrap();
    }
    assert_eq!(moved, 201, "the late one and the 200");
    assert_eq!(bus.delayed_len(RETRIES).await.unwrap(), 0);
    bus.ensure_group(RETRIES, "check").await.unwrap();
    let entries = bus
        .read_group(RETRIES, "check", "c", 1000, Duration::from_millis(100))
        .await
        .unwrap();
    let mut payloads: Vec<String> = entries.into_iter().map(|e| e.payload).collect();
    assert_eq!(payloads.len(), 203);
    payloads.sort();
    payloads.dedup();
    assert_eq!(payloads.len(), 203, "no entry arrived twice");
}
