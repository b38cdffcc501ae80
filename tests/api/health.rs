use serde_json::Value;

use crate::helpers::{assert_error, body, spawn_app, spawn_app_with};

#[tokio::test]
async fn healthz_answers_ok() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(body(response).await["status"], "ok");
}

#[tokio::test]
async fn readyz_is_ready_when_postgres_and_redis_answer() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let json = body(response).await;
    assert_eq!(json["checks"]["postgres"], "ok");
    assert_eq!(json["checks"]["redis"], "ok");
}

#[tokio::test]
async fn readyz_is_503_naming_redis_when_redis_is_unreachable() {
    // Nothing listens on port 1: the app still starts, and says what is missing.
    let app = spawn_app_with(|settings| {
        settings.redis.url = agentry_actors::Secret::new("redis://127.0.0.1:1".into());
    })
    .await;
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let json = body(response).await;
    assert_eq!(json["error"]["code"], "not_ready");
    assert_eq!(json["error"]["message"], "redis unreachable");
    assert_eq!(json["checks"]["postgres"], "ok");
    assert_eq!(json["checks"]["redis"], "unreachable");
}

#[tokio::test]
async fn metrics_count_requests_per_route_with_a_latency_histogram() {
    let app = spawn_app().await;
    for _ in 0..3 {
        app.client.get(app.url("/healthz")).send().await.unwrap();
    }
    let tenant = app.create_tenant("Metrics Co").await;
    let agent_id = app.create_agent(&tenant.token, "Counter").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.get(&format!("/api/v1/agents/{agent_id}"), &tenant.token)
        .await;

    // The public port does not serve it; the metrics listener does.
    assert_error(
        app.client.get(app.url("/metrics")).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    let response = app
        .client
        .get(format!("{}/metrics", app.metrics_address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    let count_line = text
        .lines()
        .find(|line| {
            line.starts_with("agentry_http_requests_total")
                && line.contains(r#"route="/healthz""#)
                && line.contains(r#"status="200""#)
        })
        .unwrap_or_else(|| panic!("no healthz counter in:\n{text}"));
    let count: f64 = count_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 3.0, "{count_line}");
    // The route template, never the raw path with its id.
    assert!(
        text.contains(r#"route="/api/v1/agents/{agent_id}""#),
        "{text}"
    );
    assert!(!text.contains(&agent_id));
    assert!(
        text.contains("agentry_http_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_keeps_a_supplied_one() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    let generated = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-123");
    let _: Value = body(response).await;
}
