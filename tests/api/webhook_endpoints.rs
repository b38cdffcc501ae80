//! Webhook endpoints: the secret shown once and masked after, URLs checked
//! against the SSRF guard at creation, rotation with a grace period.

use agentry::crypto::SecretOwner;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{assert_error, body, spawn_app, spawn_app_with, TestApp, TestTenant};

async fn call(
    app: &TestApp,
    tenant: &TestTenant,
    method: Method,
    path: &str,
    json: Option<Value>,
) -> reqwest::Response {
    let request = app.request(method, path, Some(&tenant.token));
    match json {
        Some(json) => request.json(&json),
        None => request,
    }
    .send()
    .await
    .unwrap()
}

#[tokio::test]
async fn the_secret_is_shown_once_sealed_for_its_row_and_masked_in_every_later_read() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Hook Co").await;
    let created = call(
        &app,
        &tenant,
        Method::POST,
        "/api/v1/webhook-endpoints",
        Some(json!({"url": "http://127.0.0.1:9/hooks", "event_types": ["lead.created", "support.escalated", "lead.created"], "description": "CRM"})),
    )
    .await;
    assert_eq!(created.status(), 201);
    let endpoint = body(created).await;
    let secret = endpoint["secret"].as_str().unwrap().to_owned();
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    assert!(key.len() >= 24, "{} key bytes", key.len());
    assert_eq!(
        endpoint["event_types"],
        json!(["lead.created", "support.escalated"])
    );
    assert_eq!(endpoint["enabled"], true);
    let id: Uuid = endpoint["id"].as_str().unwrap().parse().unwrap();
    let path = format!("/api/v1/webhook-endpoints/{id}");

    let read = body(call(&app, &tenant, Method::GET, &path, None).await).await;
    let listed = body(
        call(
            &app,
            &tenant,
            Method::GET,
            "/api/v1/webhook-endpoints",
            None,
        )
        .await,
    )
    .await;
    for shown in [&read, &listed] {
        let text = shown.to_string();
        assert!(
            !text.contains(&secret[6..]),
            "the secret is never read back: {text}"
        );
    }
    assert!(read.get("secret").is_none());
    assert_eq!(
        read["secret_masked"],
        format!("whsec_…{}", &secret[secret.len() - 4..])
    );

    // Sealed, and bound to its row: it opens for this row and no other.
    let mut owner = app.owner_connection().await;
    let sealed: Vec<u8> =
        sqlx::query_scalar("SELECT secret_sealed FROM webhook_endpoints WHERE id = $1")
            .bind(id)
            .fetch_one(&mut owner)
            .await
            .unwrap();
    assert!(!sealed
        .windows(8)
        .any(|w| secret.as_bytes().windows(8).any(|s| s == w)));
    let keyring = &app.state.keyring;
    let opened = keyring
        .open_string(
            &SecretOwner::of_row(tenant.id, "webhook_endpoints", "secret_sealed", id),
            &sealed,
        )
        .unwrap();
    assert_eq!(opened.expose(), &secret);
    assert!(keyring
        .open(
            &SecretOwner::of_row(
                tenant.id,
                "webhook_endpoints",
                "secret_sealed",
                Uuid::now_v7()
            ),
            &sealed
        )
        .is_err());

    // Rotation: a new secret, once; the previous one signs until the grace period ends.
    let rotated = call(
        &app,
        &tenant,
        Method::POST,
        &format!("{path}/rotate-secret"),
        None,
    )
    .await;
    assert_eq!(rotated.status(), 200);
    let rotated = body(rotated).await;
    let new_secret = rotated["secret"].as_str().unwrap();
    assert_ne!(new_secret, secret);
    let expires: chrono::DateTime<chrono::Utc> = rotated["previous_secret_expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let grace = (expires - chrono::Utc::now()).num_seconds();
    assert!((86_000..=86_400).contains(&grace), "grace {grace} s");
    let previous: Vec<u8> =
        sqlx::query_scalar("SELECT previous_secret_sealed FROM webhook_endpoints WHERE id = $1")
            .bind(id)
            .fetch_one(&mut owner)
            .await
            .unwrap();
    let previous = keyring
        .open_string(
            &SecretOwner::of_row(tenant.id, "webhook_endpoints", "previous_secret_sealed", id),
            &previous,
        )
        .unwrap();
    assert_eq!(previous.expose(), &secret);

    let updated = call(
        &app,
        &tenant,
        Method::PATCH,
        &path,
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(body(updated).await["enabled"], false);
    let other = app.create_tenant("Other Co").await;
    assert_error(
        call(&app, &other, Method::GET, &path, None).await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(
        call(&app, &tenant, Method::DELETE, &path, None)
            .await
            .status(),
        204
    );
    assert_error(
        call(&app, &tenant, Method::GET, &path, None).await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn endpoint_urls_and_events_are_checked_at_creation() {
    let app = spawn_app_with(|settings| {
        settings.webhooks.allow_http = false;
        settings.webhooks.allow_localhost = false;
    })
    .await;
    let tenant = app.create_tenant("Guard Co").await;
    for url in [
        "http://8.8.8.8/hook",
        "https://127.0.0.1/hook",
        "https://2130706433/hook",
        "https://[::ffff:10.0.0.1]/hook",
        "https://169.254.169.254/latest",
        "https://localhost/hook",
        "ftp://8.8.8.8/hook",
        "not a url",
    ] {
        let refused = call(
            &app,
            &tenant,
            Method::POST,
            "/api/v1/webhook-endpoints",
            Some(json!({"url": url, "event_types": ["lead.created"]})),
        )
        .await;
        let error = assert_error(refused, 422, "invalid").await;
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("url"),
            "{url}: {error}"
        );
    }
    for events in [json!([]), json!(["lead.deleted"])] {
        let refused = call(
            &app,
            &tenant,
            Method::POST,
            "/api/v1/webhook-endpoints",
            Some(json!({"url": "https://8.8.8.8/hook", "event_types": events})),
        )
        .await;
        assert_error(refused, 422, "invalid").await;
    }
}
