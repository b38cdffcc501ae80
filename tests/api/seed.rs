//! The development demo seed.

use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{body, spawn_app_on};

#[tokio::test]
async fn the_first_start_on_an_empty_database_seeds_a_working_demo_once() {
    let database = format!("agentry_test_{}", Uuid::new_v4().simple());
    let first = spawn_app_on(&database, |settings| settings.demo.seed = true, false).await;
    let demo = first.seeded_demo.as_ref().expect("the demo was seeded");

    let response = first.login(&demo.admin_email, &demo.admin_password).await;
    assert_eq!(response.status(), 200);
    let token = body(response).await["token"].as_str().unwrap().to_owned();
    let agents = body(first.get("/api/v1/agents", &token).await).await;
    let agents = agents["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 1);
    assert!(!agents[0]["system_prompt"].as_str().unwrap().is_empty());
    let widgets: Value = body(
        first
            .get(
                &format!(
                    "/api/v1/agents/{}/widgets",
                    agents[0]["id"].as_str().unwrap()
                ),
                &token,
            )
            .await,
    )
    .await;
    assert_eq!(
        widgets["widgets"][0]["allowed_origins"][0],
        "http://127.0.0.1:8080"
    );
    assert_eq!(
        widgets["widgets"][0]["public_key"],
        demo.widget_public_key.as_str()
    );

    let operator = first
        .post_json(
            "/api/v1/admin/auth/login",
            None,
            &serde_json::json!({ "email": demo.operator_email, "password": demo.operator_password }),
        )
        .await;
    assert_eq!(operator.status(), 200);
    drop(first);

    // The second start finds a tenant and seeds nothing.
    let second = spawn_app_on(&database, |settings| settings.demo.seed = true, true).await;
    assert!(second.seeded_demo.is_none());
}

#[tokio::test]
async fn the_demo_tenants_events_reach_the_development_echo_receiver_signed() {
    let database = format!("agentry_test_{}", Uuid::new_v4().simple());
    let app = spawn_app_on(
        &database,
        |settings| {
            settings.demo.seed = true;
            settings.demo.webhook_echo = true;
            settings.demo.webhook_echo_port = 0;
        },
        true,
    )
    .await;
    let demo = app.seeded_demo.as_ref().expect("the demo was seeded");
    let echo = demo.webhook_echo.as_ref().expect("an echo endpoint");
    assert!(echo.url.starts_with("http://127.0.0.1:"), "{}", echo.url);
    assert!(echo.secret.starts_with("whsec_"));
    let token = body(app.login(&demo.admin_email, &demo.admin_password).await).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let endpoints = body(app.get("/api/v1/webhook-endpoints", &token).await).await;
    let endpoint = &endpoints["webhook_endpoints"][0];
    assert_eq!(endpoint["url"], echo.url.as_str());
    assert_eq!(endpoint["event_types"].as_array().unwrap().len(), 5);

    let mut owner = app.owner_connection().await;
    let tenant: Uuid = sqlx::query_scalar("SELECT id FROM tenants WHERE name = $1")
        .bind(&demo.tenant_name)
        .fetch_one(&mut owner)
        .await
        .unwrap();
    let mut tx = app
        .store
        .tenant(agentry_actors::TenantId::from_uuid(tenant))
        .await
        .unwrap();
    let event = agentry::db::outbox::append(
        &mut tx,
        "lead.created",
        &serde_json::json!({"email": "newcomer@example.com"}),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // The echo answers 200 only to a signature made with the seeded secret.
    let outcome = crate::dispatch::eventually(
        std::time::Duration::from_secs(10),
        "the delivery to the echo receiver",
        || {
            let app = &app;
            async move {
                let mut owner = app.owner_connection().await;
                sqlx::query_scalar::<_, String>(
                    "SELECT outcome FROM agent_webhook_deliveries WHERE event_id = $1",
                )
                .bind(event)
                .fetch_optional(&mut owner)
                .await
                .unwrap()
            }
        },
    )
    .await;
    assert_eq!(outcome, "success");
}
