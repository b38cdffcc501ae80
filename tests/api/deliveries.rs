//! Webhook delivery attempts against a local receiver: signed, the same
//! webhook-id on every retry, one audit row per attempt, 410 disables.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentry::db::outbox::OutboxEvent;
use agentry::db::webhook_endpoints;
use agentry::net_guard::GuardedClient;
use agentry::webhook_delivery::{self, Attempt};
use agentry::webhook_signing::{signing_key, SignatureHeaders};
use axum::http::{HeaderMap, StatusCode};
use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{body, serve_locally, spawn_app, TestApp, TestTenant};

/// What the receiver saw: headers and body of each request.
pub type Seen = Arc<Mutex<Vec<(HeaderMap, String)>>>;

/// A receiver answering the given statuses in turn (the last one from then on).
pub async fn receiver(statuses: Vec<u16>) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let (log, statuses) = (log.clone(), statuses.clone());
            async move {
                let mut log = log.lock().unwrap();
                log.push((headers, body));
                let status = statuses[(log.len() - 1).min(statuses.len() - 1)];
                StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    (format!("http://{}/hook", serve_locally(router).await), seen)
}

async fn endpoint_for(app: &TestApp, tenant: &TestTenant, url: &str) -> (Uuid, String) {
    let created = app
        .request(
            Method::POST,
            "/api/v1/webhook-endpoints",
            Some(&tenant.token),
        )
        .json(&json!({"url": url, "event_types": ["lead.created"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let endpoint = body(created).await;
    (
        endpoint["id"].as_str().unwrap().parse().unwrap(),
        endpoint["secret"].as_str().unwrap().to_owned(),
    )
}

fn event(tenant: &TestTenant) -> OutboxEvent {
    OutboxEvent {
        id: Uuid::now_v7(),
        tenant_id: tenant.id.as_uuid(),
        event_type: "lead.created".into(),
        payload: json!({"lead_id": "l1", "email": "ana@example.com"}),
        created_at: chrono::Utc::now(),
    }
}

/// Attempts until delivered or final, recording each; the attempts made.
async fn deliver(
    app: &TestApp,
    tenant: &TestTenant,
    endpoint: Uuid,
    event: &OutboxEvent,
) -> Vec<Attempt> {
    let client = GuardedClient::new(app.settings.webhooks.guard_policy()).unwrap();
    let schedule = app.settings.webhooks.retry_schedule();
    let mut attempts = Vec::new();
    for number in 1.. {
        let mut tx = app.store.tenant(tenant.id).await.unwrap();
        let stored = webhook_endpoints::get(&mut tx, endpoint).await.unwrap();
        let keys = webhook_delivery::signing_keys(&app.state.keyring, tenant.id, &stored).unwrap();
        let (attempt, took) = webhook_delivery::attempt(
            &client,
            &stored.url,
            &keys,
            endpoint,
            event,
            Duration::from_secs(5),
        )
        .await;
        let next_attempt_at = match attempt {
            Attempt::Failed { .. } => schedule
                .delay_after(number, 0.5, None)
                .map(|delay| chrono::Utc::now() + delay),
            _ => None,
        };
        let retrying = next_attempt_at.is_some();
        webhook_delivery::record(
            &mut tx,
            endpoint,
            event,
            number,
            &attempt,
            next_attempt_at,
            took,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        attempts.push(attempt);
        if !retrying {
            return attempts;
        }
    }
    unreachable!()
}

async fn outcomes(app: &TestApp, endpoint: Uuid) -> Vec<(i32, String, Option<i32>)> {
    let mut owner = app.owner_connection().await;
    sqlx::query_as(
        "SELECT attempt, outcome, response_status FROM agent_webhook_deliveries
         WHERE endpoint_id = $1 ORDER BY attempt",
    )
    .bind(endpoint)
    .fetch_all(&mut owner)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_receiver_failing_twice_gets_three_signed_attempts_with_one_webhook_id() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Retry Co").await;
    let (url, seen) = receiver(vec![500, 503, 200]).await;
    let (endpoint, secret) = endpoint_for(&app, &tenant, &url).await;
    let event = event(&tenant);
    let attempts = deliver(&app, &tenant, endpoint, &event).await;
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[2], Attempt::Delivered { status: 200 });

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    let id = seen[0].0["webhook-id"].to_str().unwrap().to_owned();
    assert_eq!(id, webhook_delivery::webhook_id(event.id, endpoint));
    let key = signing_key(&secret).unwrap();
    for (headers, body) in seen.iter() {
        let header = |name: &str| headers[name].to_str().unwrap().to_owned();
        assert_eq!(header("webhook-id"), id, "the same id on every retry");
        let expected = SignatureHeaders::sign(
            &id,
            header("webhook-timestamp").parse().unwrap(),
            body.as_bytes(),
            std::slice::from_ref(&key),
        );
        assert_eq!(header("webhook-signature"), expected.webhook_signature);
        assert_eq!(header("x-agentry-signature"), expected.x_agentry_signature);
        let sent: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(sent["type"], "lead.created");
        assert_eq!(sent["data"], event.payload);
    }
    assert_eq!(
        outcomes(&app, endpoint).await,
        vec![
            (1, "retrying".into(), Some(500)),
            (2, "retrying".into(), Some(503)),
            (3, "success".into(), Some(200)),
        ]
    );
}

#[tokio::test]
async fn a_gone_receiver_disables_its_endpoint_and_a_private_url_is_blocked_unsent() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Gone Co").await;
    let (url, _) = receiver(vec![410]).await;
    let (endpoint, _) = endpoint_for(&app, &tenant, &url).await;
    let attempts = deliver(&app, &tenant, endpoint, &event(&tenant)).await;
    assert_eq!(attempts, vec![Attempt::Gone]);
    let mut tx = app.store.tenant(tenant.id).await.unwrap();
    assert!(
        !webhook_endpoints::get(&mut tx, endpoint)
            .await
            .unwrap()
            .enabled
    );
    drop(tx);
    assert_eq!(
        outcomes(&app, endpoint).await,
        vec![(1, "failed".into(), Some(410))]
    );

    // A URL that became private after it was saved: checked again, never sent.
    let (url, seen) = receiver(vec![200]).await;
    let (endpoint, _) = endpoint_for(&app, &tenant, &url).await;
    let mut owner = app.owner_connection().await;
    sqlx::query("UPDATE webhook_endpoints SET url = $1 WHERE id = $2")
        .bind(url.replace("127.0.0.1", "10.255.255.1"))
        .bind(endpoint)
        .execute(&mut owner)
        .await
        .unwrap();
    let attempts = deliver(&app, &tenant, endpoint, &event(&tenant)).await;
    assert!(
        matches!(&attempts[..], [Attempt::Blocked { reason }] if reason.contains("10.255.255.1")),
        "{attempts:?}"
    );
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(
        outcomes(&app, endpoint).await,
        vec![(1, "blocked".into(), None)]
    );
}
