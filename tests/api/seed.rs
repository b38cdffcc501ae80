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
