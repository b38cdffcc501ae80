//! The operator realm: its own login, unreachable with tenant tokens and vice versa.

use serde_json::json;

use crate::helpers::{assert_error, body, spawn_app};

#[tokio::test]
async fn an_operator_lists_and_creates_tenants_whose_admins_can_then_log_in() {
    let app = spawn_app().await;
    let existing = app.create_tenant("Existing Co").await;
    let operator = app.operator_token().await;
    assert!(operator.starts_with("ago_"));

    let response = app
        .post_json(
            "/api/v1/admin/tenants",
            Some(&operator),
            &json!({ "name": "New Co", "admin_email": "Boss@New.example.com", "admin_password": "a long enough password" }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let created = body(response).await;
    assert_eq!(created["admin_email"], "boss@new.example.com");
    let new_id = created["tenant_id"].as_str().unwrap();

    let listed = body(app.get("/api/v1/admin/tenants", &operator).await).await;
    let names: Vec<&str> = listed["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["Existing Co", "New Co"]);
    let shown = body(
        app.get(&format!("/api/v1/admin/tenants/{new_id}"), &operator)
            .await,
    )
    .await;
    assert_eq!(shown["name"], "New Co");
    assert_error(
        app.get(
            &format!("/api/v1/admin/tenants/{}", uuid::Uuid::new_v4()),
            &operator,
        )
        .await,
        404,
        "not_found",
    )
    .await;

    assert_eq!(
        app.login("boss@new.example.com", "a long enough password")
            .await
            .status(),
        200
    );
    let _ = existing;
}

#[tokio::test]
async fn tenant_tokens_cannot_reach_the_operator_api_nor_operator_tokens_the_dashboard() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Tenant Co").await;
    let operator = app.operator_token().await;
    assert_error(
        app.get("/api/v1/admin/tenants", &tenant.token).await,
        401,
        "unauthorized",
    )
    .await;
    assert_error(
        app.post_json(
            "/api/v1/admin/tenants",
            Some(&tenant.token),
            &json!({ "name": "x", "admin_email": "a@b.co", "admin_password": "long password!!" }),
        )
        .await,
        401,
        "unauthorized",
    )
    .await;
    assert_error(
        app.get("/api/v1/agents", &operator).await,
        401,
        "unauthorized",
    )
    .await;
    // A tenant's email and password do not open the operator login either.
    assert_error(
        app.post_json(
            "/api/v1/admin/auth/login",
            None,
            &json!({ "email": tenant.email, "password": tenant.password }),
        )
        .await,
        401,
        "invalid_credentials",
    )
    .await;
}

#[tokio::test]
async fn operator_tenant_creation_validates_and_refuses_duplicate_emails() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Taken Co").await;
    let operator = app.operator_token().await;
    let create = |payload: serde_json::Value| {
        let request = app
            .request(
                reqwest::Method::POST,
                "/api/v1/admin/tenants",
                Some(&operator),
            )
            .json(&payload);
        async move { request.send().await.unwrap() }
    };
    assert_error(
        create(json!({ "name": "X", "admin_email": "nope", "admin_password": "long password!!" }))
            .await,
        422,
        "invalid",
    )
    .await;
    assert_error(
        create(json!({ "name": "X", "admin_email": "a@b.co", "admin_password": "short" })).await,
        422,
        "invalid",
    )
    .await;
    assert_error(
        create(json!({ "name": "", "admin_email": "a@b.co", "admin_password": "long password!!" }))
            .await,
        422,
        "invalid",
    )
    .await;
    assert_error(
        create(json!({ "name": "Dup", "admin_email": tenant.email, "admin_password": "long password!!" })).await,
        409,
        "conflict",
    )
    .await;
}

#[tokio::test]
async fn operator_logout_revokes_the_operator_token() {
    let app = spawn_app().await;
    let operator = app.operator_token().await;
    let response = app
        .request(
            reqwest::Method::POST,
            "/api/v1/admin/auth/logout",
            Some(&operator),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_error(
        app.get("/api/v1/admin/tenants", &operator).await,
        401,
        "unauthorized",
    )
    .await;
}
