//! The transactional outbox and its relay, against real PostgreSQL and Redis.

use std::collections::HashSet;
use std::time::Duration;

use agentry::bus::RedisBus;
use agentry::db::outbox::{self, EVENTS};
use agentry_actors::ports::StreamBus;
use serde_json::{json, Value};

use crate::bus::{bus_where, ready};
use crate::helpers::{spawn_app_with, TestApp};

/// The app without its own relay and dispatcher: these tests drive the relay by hand.
async fn spawn_app() -> TestApp {
    spawn_app_with(|settings| settings.webhooks.dispatch = false).await
}

/// Every event on the stream, as the relay published it.
async fn published(bus: &RedisBus) -> Vec<Value> {
    bus.ensure_group(EVENTS, "check").await.unwrap();
    bus.read_group(EVENTS, "check", "c", 10_000, Duration::from_millis(100))
        .await
        .unwrap()
        .into_iter()
        .map(|entry| serde_json::from_str(&entry.payload).unwrap())
        .collect()
}

async fn unpublished(app: &TestApp) -> i64 {
    outbox::backlog(&app.store).await.unwrap().0
}

#[tokio::test]
async fn committed_events_are_relayed_once_and_rolled_back_ones_never() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Outbox Co").await;
    let bus = bus_where(|_| {});
    ready(&bus).await;

    let mut tx = app.store.tenant(tenant.id).await.unwrap();
    let kept = outbox::append(&mut tx, "lead.created", &json!({"lead": 1}))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = app.store.tenant(tenant.id).await.unwrap();
    outbox::append(&mut tx, "lead.created", &json!({"lead": 2}))
        .await
        .unwrap();
    drop(tx); // rolled back

    assert_eq!(unpublished(&app).await, 1);
    assert_eq!(outbox::relay_once(&app.store, &bus, 100).await.unwrap(), 1);
    assert_eq!(outbox::relay_once(&app.store, &bus, 100).await.unwrap(), 0);
    assert_eq!(unpublished(&app).await, 0);
    let events = published(&bus).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["id"], kept.to_string());
    assert_eq!(events[0]["tenant_id"], tenant.id.as_uuid().to_string());
    assert_eq!(events[0]["event_type"], "lead.created");
    assert_eq!(events[0]["payload"], json!({"lead": 1}));
}

#[tokio::test]
async fn events_wait_in_the_outbox_while_redis_is_unreachable() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Down Co").await;
    let mut tx = app.store.tenant(tenant.id).await.unwrap();
    outbox::append(&mut tx, "support.escalated", &json!({}))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let dead =
        bus_where(|redis| redis.url = agentry_actors::Secret::new("redis://127.0.0.1:1".into()));
    assert!(outbox::relay_once(&app.store, &dead, 100).await.is_err());
    assert_eq!(
        unpublished(&app).await,
        1,
        "nothing marked that was not published"
    );

    let bus = bus_where(|_| {});
    ready(&bus).await;
    assert_eq!(outbox::relay_once(&app.store, &bus, 100).await.unwrap(), 1);
    assert_eq!(published(&bus).await.len(), 1);
}

#[tokio::test]
async fn relays_on_several_instances_share_the_work_without_publishing_twice() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Many Co").await;
    let mut tx = app.store.tenant(tenant.id).await.unwrap();
    for n in 0..300 {
        outbox::append(&mut tx, "lead.updated", &json!({ "n": n }))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let bus = bus_where(|_| {});
    ready(&bus).await;
    let relays: Vec<_> = (0..3)
        .map(|_| {
            let (store, bus) = (app.store.clone(), bus.clone());
            tokio::spawn(async move {
                let mut total = 0;
                loop {
                    let moved = outbox::relay_once(&store, &bus, 25).await.unwrap();
                    if moved == 0 {
                        return total;
                    }
                    total += moved;
                }
            })
        })
        .collect();
    let mut total = 0;
    for relay in relays {
        total += relay.await.unwrap();
    }
    assert_eq!(total, 300);
    let events = published(&bus).await;
    let ids: HashSet<String> = events
        .iter()
        .map(|event| event["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!((events.len(), ids.len()), (300, 300));
}
