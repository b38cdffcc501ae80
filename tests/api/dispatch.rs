//! The webhook dispatcher end to end: events appended to the outbox reach
//! local receivers through the relay, the stream, retries and the record.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentry::db::outbox::{self, EVENTS};
use agentry::webhook_delivery::webhook_id;
use agentry::webhook_dispatch::GROUP;
use agentry_actors::ports::StreamBus;
use agentry_actors::TenantId;
use axum::http::{HeaderMap, StatusCode};
use axum::serve::ListenerExt;
use chrono::{DateTime, Utc};
use fred::prelude::{KeysInterface, StreamsInterface};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{body, spawn_app, spawn_app_on, spawn_app_with, TestApp, TestTenant};

/// One request a receiver saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub webhook_id: String,
    pub body: Value,
    pub at: DateTime<Utc>,
}

/// Chooses the status of the `nth` (0-based) request bearing one webhook-id.
pub type Respond = Arc<dyn Fn(&str, usize) -> u16 + Send + Sync>;

/// A local webhook receiver: what it saw, how many TCP connections reached
/// it, and the most requests it had in flight at once.
#[derive(Clone)]
pub struct Receiver {
    pub address: std::net::SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
    pub most_in_flight: Arc<AtomicUsize>,
}

impl Receiver {
    /// Listens on 127.0.0.1; answers after `delay` with `respond`'s status.
    pub async fn start(respond: Respond, delay: Duration) -> Self {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let connections = Arc::new(AtomicUsize::new(0));
        let most_in_flight = Arc::new(AtomicUsize::new(0));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let per_id: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let (log, most, counts) = (seen.clone(), most_in_flight.clone(), per_id.clone());
        let router = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, text: String| {
                let (log, most, counts, in_flight, respond) = (
                    log.clone(),
                    most.clone(),
                    counts.clone(),
                    in_flight.clone(),
                    respond.clone(),
                );
                async move {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    let id = headers
                        .get("webhook-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    let nth = {
                        let mut counts = counts.lock().unwrap();
                        let count = counts.entry(id.clone()).or_default();
                        *count += 1;
                        *count - 1
                    };
                    let at = Utc::now();
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let status = respond(&id, nth);
                    if (200..300).contains(&status) {
                        log.lock().unwrap().push(Seen {
                            webhook_id: id,
                            body: serde_json::from_str(&text).unwrap_or(Value::Null),
                            at,
                        });
                    } else {
                        log.lock().unwrap().push(Seen {
                            webhook_id: id,
                            body: json!({"refused_with": status}),
                            at,
                        });
                    }
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let counter = connections.clone();
        let listener = listener.tap_io(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self {
            address,
            seen,
            connections,
            most_in_flight,
        }
    }

    pub async fn answering(status: u16) -> Self {
        Self::start(Arc::new(move |_, _| status), Duration::ZERO).await
    }

    pub fn url(&self, host: &str) -> String {
        format!("http://{host}:{}/hook", self.address.port())
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests answered 2xx.
    pub fn delivered(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|seen| seen.body.get("refused_with").is_none())
            .collect()
    }
}

/// Creates an endpoint for `lead.created` through the API; its id.
pub async fn endpoint(app: &TestApp, tenant: &TestTenant, url: &str) -> Uuid {
    let created = app
        .post_json(
            "/api/v1/webhook-endpoints",
            Some(&tenant.token),
            &json!({"url": url, "event_types": ["lead.created"]}),
        )
        .await;
    assert_eq!(created.status(), 201);
    body(created).await["id"].as_str().unwrap().parse().unwrap()
}

/// Commits `count` lead.created events of `tenant` in one transaction; their ids.
pub async fn commit_events(app: &TestApp, tenant: TenantId, count: usize) -> Vec<Uuid> {
    let mut tx = app.store.tenant(tenant).await.unwrap();
    let mut ids = Vec::with_capacity(count);
    for n in 0..count {
        ids.push(
            outbox::append(&mut tx, "lead.created", &json!({ "n": n }))
                .await
                .unwrap(),
        );
    }
    tx.commit().await.unwrap();
    ids
}

/// Polls `check` every 20 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A delivery row, as the owner reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Row {
    pub event_id: Uuid,
    pub endpoint_id: Uuid,
    pub attempt: i32,
    pub outcome: String,
    pub response_status: Option<i32>,
    pub error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

pub async fn rows(app: &TestApp, endpoint: Uuid) -> Vec<Row> {
    let mut owner = app.owner_connection().await;
    sqlx::query_as(
        "SELECT event_id, endpoint_id, attempt, outcome, response_status, error, next_attempt_at
         FROM agent_webhook_deliveries WHERE endpoint_id = $1 ORDER BY attempt, id",
    )
    .bind(endpoint)
    .fetch_all(&mut owner)
    .await
    .unwrap()
}

/// Retries a second apart (the shortest the configuration allows).
pub fn quick_retries(settings: &mut agentry::configuration::Settings) {
    settings.webhooks.retry_delays_secs = vec![1, 1, 1];
}

#[tokio::test]
async fn a_receiver_failing_twice_is_retried_on_time_and_succeeds_on_the_third_attempt() {
    let app = spawn_app_with(quick_retries).await;
    let tenant = app.create_tenant("Dispatch Co").await;
    let receiver = Receiver::start(
        Arc::new(|_, nth| [500, 503, 200][nth.min(2)]),
        Duration::ZERO,
    )
    .await;
    let endpoint = endpoint(&app, &tenant, &receiver.url("127.0.0.1")).await;
    let event = commit_events(&app, tenant.id, 1).await[0];

    let rows = eventually(
        Duration::from_secs(15),
        "three attempts on record",
        || async {
            let rows = rows(&app, endpoint).await;
            (rows.len() >= 3).then_some(rows)
        },
    )
    .await;
    let summary: Vec<_> = rows
        .iter()
        .map(|row| (row.attempt, row.outcome.as_str(), row.response_status))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "retrying", Some(500)),
            (2, "retrying", Some(503)),
            (3, "success", Some(200)),
        ]
    );
    assert!(rows
        .iter()
        .all(|row| row.event_id == event && row.endpoint_id == endpoint));
    let seen = receiver.seen();
    assert_eq!(seen.len(), 3, "three requests reached the receiver");
    let id = webhook_id(event, endpoint);
    assert!(seen.iter().all(|s| s.webhook_id == id), "one webhook-id");
    assert_eq!(seen[2].body["type"], "lead.created");
    assert_eq!(seen[2].body["data"], json!({"n": 0}));
    // Each retry fired within 100 ms of the due time its failed attempt recorded.
    for (failed, retry) in rows.iter().zip(&seen[1..]) {
        let due = failed
            .next_attempt_at
            .expect("a retrying row has its due time");
        let late = (retry.at - due).num_milliseconds();
        assert!((-5..100).contains(&late), "retry {late} ms after due");
    }
    let settled: Option<DateTime<Utc>> = {
        let mut owner = app.owner_connection().await;
        sqlx::query_scalar("SELECT settled_at FROM outbox_events WHERE id = $1")
            .bind(event)
            .fetch_one(&mut owner)
            .await
            .unwrap()
    };
    assert!(settled.is_some(), "the event is settled");
}

#[tokio::test]
async fn a_gone_receiver_disables_its_endpoint_and_a_blocked_url_ends_blocked_unreached() {
    // Loopback is refused except by the name "localhost", so one receiver is
    // allowed by name and blocked by address.
    let app = spawn_app_with(|settings| {
        settings.webhooks.allow_localhost = false;
        settings.webhooks.allowed_hosts = vec!["localhost".into()];
    })
    .await;
    let tenant = app.create_tenant("Final Co").await;
    let gone = Receiver::answering(410).await;
    let gone_endpoint = endpoint(&app, &tenant, &gone.url("localhost")).await;
    let target = Receiver::answering(200).await;
    let blocked_endpoint = endpoint(&app, &tenant, &target.url("localhost")).await;
    let mut owner = app.owner_connection().await;
    sqlx::query("UPDATE webhook_endpoints SET url = $1 WHERE id = $2")
        .bind(target.url("127.0.0.1"))
        .bind(blocked_endpoint)
        .execute(&mut owner)
        .await
        .unwrap();
    commit_events(&app, tenant.id, 1).await;

    let gone_rows = eventually(Duration::from_secs(10), "the 410 on record", || async {
        let rows = rows(&app, gone_endpoint).await;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(
        (
            gone_rows.len(),
            gone_rows[0].outcome.as_str(),
            gone_rows[0].response_status
        ),
        (1, "failed", Some(410))
    );
    let endpoint_json = body(
        app.get(
            &format!("/api/v1/webhook-endpoints/{gone_endpoint}"),
            &tenant.token,
        )
        .await,
    )
    .await;
    assert_eq!(endpoint_json["enabled"], false, "410 disables the endpoint");

    let blocked_rows = eventually(Duration::from_secs(10), "the block on record", || async {
        let rows = rows(&app, blocked_endpoint).await;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(blocked_rows.len(), 1, "blocked is final: {blocked_rows:?}");
    assert_eq!(blocked_rows[0].outcome, "blocked");
    let reason = blocked_rows[0].error.clone().unwrap_or_default();
    assert!(reason.contains("127.0.0.1"), "{reason}");
    // Give a wrong retry the time to happen before saying none did.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        target.connections.load(Ordering::SeqCst),
        0,
        "no connection reached the target"
    );
    assert_eq!(rows(&app, blocked_endpoint).await.len(), 1);
}

#[tokio::test]
async fn attempts_in_flight_stay_within_the_per_endpoint_cap() {
    let app = spawn_app_with(|settings| {
        settings.webhooks.max_in_flight = 16;
        settings.webhooks.max_in_flight_per_endpoint = 3;
    })
    .await;
    let tenant = app.create_tenant("Cap Co").await;
    let slow = Receiver::start(Arc::new(|_, _| 200), Duration::from_millis(50)).await;
    let endpoint = endpoint(&app, &tenant, &slow.url("127.0.0.1")).await;
    commit_events(&app, tenant.id, 40).await;
    eventually(Duration::from_secs(20), "40 deliveries", || async {
        (slow.delivered().len() >= 40).then_some(())
    })
    .await;
    assert_eq!(
        slow.most_in_flight.load(Ordering::SeqCst),
        3,
        "the cap is reached and never exceeded"
    );
    // Rows are written once each attempt returns: the last may trail the receiver.
    eventually(Duration::from_secs(5), "40 delivery rows", || async {
        (rows(&app, endpoint).await.len() == 40).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_entry_left_pending_by_a_dead_instance_is_reclaimed_after_the_deadline() {
    // Set up with no dispatcher: the only consumer is the one that dies.
    let setup = spawn_app_with(|settings| settings.webhooks.dispatch = false).await;
    let tenant = setup.create_tenant("Reclaim Co").await;
    let receiver = Receiver::answering(200).await;
    let endpoint = endpoint(&setup, &tenant, &receiver.url("127.0.0.1")).await;
    let event = commit_events(&setup, tenant.id, 1).await[0];
    let bus = &setup.state.bus;
    bus.ensure_group(EVENTS, GROUP).await.unwrap();
    // Redis has lost nothing: the survivor must not rebuild it from the outbox.
    assert!(bus.claim_epoch(EVENTS).await.unwrap());
    assert_eq!(outbox::relay_once(&setup.store, bus, 10).await.unwrap(), 1);
    let taken = bus
        .read_group(EVENTS, GROUP, "doomed", 10, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(taken.len(), 1, "the doomed instance holds the entry");
    let taken_at = std::time::Instant::now();

    let prefix = setup.settings.redis.prefix.clone();
    let _survivor = spawn_app_on(
        setup.database_name(),
        |settings| {
            settings.redis.prefix = prefix;
            settings.webhooks.timeout_secs = 1;
            settings.webhooks.reclaim_after_secs = 7;
        },
        false,
    )
    .await;
    let first = eventually(
        Duration::from_secs(20),
        "the reclaimed delivery",
        || async { receiver.delivered().first().cloned() },
    )
    .await;
    let waited = taken_at.elapsed();
    assert_eq!(first.webhook_id, webhook_id(event, endpoint));
    assert!(
        waited >= Duration::from_secs(7),
        "taken over only after the deadline ({waited:?})"
    );
    assert_eq!(receiver.delivered().len(), 1);
}

/// Success rows on record for `tenant`, as the owner reads them.
async fn recorded_successes(app: &TestApp, tenant: TenantId) -> i64 {
    let mut owner = app.owner_connection().await;
    sqlx::query_scalar(
        "SELECT count(*) FROM agent_webhook_deliveries
         WHERE tenant_id = $1 AND outcome = 'success'",
    )
    .bind(tenant.as_uuid())
    .fetch_one(&mut owner)
    .await
    .unwrap()
}

/// Waits until the receiver saw `count` requests and each success is on
/// record: an attempt still being recorded when Redis loses the group is
/// delivered again after it (at least once, same webhook-id), one on
/// record is not, and that is what this test pins.
async fn delivered_and_recorded(
    app: &TestApp,
    tenant: TenantId,
    receiver: &Receiver,
    count: usize,
    what: &str,
) {
    const RECOVERY: Duration = Duration::from_secs(30);
    eventually(RECOVERY, what, || async {
        let recorded = recorded_successes(app, tenant).await;
        (receiver.delivered().len() == count && recorded == count as i64).then_some(())
    })
    .await;
}

#[tokio::test]
async fn consumption_resumes_by_itself_after_the_group_and_stream_vanish() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Nogroup Co").await;
    let receiver = Receiver::answering(200).await;
    endpoint(&app, &tenant, &receiver.url("127.0.0.1")).await;
    commit_events(&app, tenant.id, 5).await;
    delivered_and_recorded(&app, tenant.id, &receiver, 5, "the first five").await;
    // The group destroyed while the dispatcher blocks on it; then the stream too.
    let bus = &app.state.bus;
    let key = bus.stream_key(EVENTS);
    let _: u64 = bus.pool().xgroup_destroy(&key, GROUP).await.unwrap();
    commit_events(&app, tenant.id, 5).await;
    delivered_and_recorded(
        &app,
        tenant.id,
        &receiver,
        10,
        "five more after XGROUP DESTROY",
    )
    .await;
    let _: u64 = bus.pool().del(&key).await.unwrap();
    commit_events(&app, tenant.id, 5).await;
    delivered_and_recorded(&app, tenant.id, &receiver, 15, "five more after DEL").await;
    let ids: std::collections::HashSet<String> = receiver
        .delivered()
        .into_iter()
        .map(|s| s.webhook_id)
        .collect();
    assert_eq!(ids.len(), 15, "each event once");
}

#[tokio::test]
async fn the_relay_and_dispatcher_report_backlog_gauges_outcomes_latency_and_lateness() {
    let app = spawn_app_with(quick_retries).await;
    let tenant = app.create_tenant("Metrics Co").await;
    let receiver = Receiver::start(
        Arc::new(|_, nth| if nth == 0 { 503 } else { 200 }),
        Duration::ZERO,
    )
    .await;
    endpoint(&app, &tenant, &receiver.url("127.0.0.1")).await;
    commit_events(&app, tenant.id, 1).await;
    eventually(Duration::from_secs(10), "the retried delivery", || async {
        (receiver.delivered().len() == 1).then_some(())
    })
    .await;
    // The gauges refresh every second.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let text = app.metrics_text().await;
    for expected in [
        "agentry_outbox_backlog ",
        "agentry_outbox_oldest_age_seconds ",
        "agentry_webhook_stream_length ",
        "agentry_webhook_pending ",
        "agentry_webhook_oldest_pending_age_seconds ",
        "agentry_webhook_delayed ",
        "agentry_webhook_deliveries_total{state=\"success\"}",
        "agentry_webhook_deliveries_total{state=\"retrying\"}",
        "agentry_webhook_attempt_duration_seconds_bucket{state=\"success\",le=\"0.005\"}",
        "agentry_webhook_retry_lateness_seconds_bucket{le=\"0.1\"}",
    ] {
        assert!(text.contains(expected), "{expected} missing from /metrics");
    }
}

#[tokio::test]
async fn attempts_in_flight_stay_within_the_instance_cap_across_endpoints() {
    let app = spawn_app_with(|settings| {
        settings.webhooks.max_in_flight = 4;
        settings.webhooks.max_in_flight_per_endpoint = 8;
    })
    .await;
    let tenant = app.create_tenant("Instance Cap Co").await;
    let slow = Receiver::start(Arc::new(|_, _| 200), Duration::from_millis(50)).await;
    // Two endpoints at one receiver: it sees the instance's total.
    endpoint(&app, &tenant, &slow.url("127.0.0.1")).await;
    endpoint(&app, &tenant, &slow.url("localhost")).await;
    commit_events(&app, tenant.id, 20).await;
    eventually(Duration::from_secs(20), "40 deliveries", || async {
        (slow.delivered().len() >= 40).then_some(())
    })
    .await;
    assert_eq!(slow.most_in_flight.load(Ordering::SeqCst), 4);
}
