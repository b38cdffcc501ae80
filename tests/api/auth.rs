//! Dashboard sign-in: tokens that expire, revoke, and cannot be forged.

use reqwest::Method;

use crate::helpers::{assert_error, body, spawn_app, spawn_app_with};

#[tokio::test]
async fn an_owner_logs_in_and_sees_their_tenant() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Login Co").await;
    let response = app.get("/api/v1/auth/me", &tenant.token).await;
    assert_eq!(response.status(), 200);
    let me = body(response).await;
    assert_eq!(me["role"], "owner");
    assert_eq!(me["tenant"]["name"], "Login Co");
    assert_eq!(me["tenant"]["id"], tenant.id.to_string());
}

#[tokio::test]
async fn a_login_returns_an_opaque_expiring_token() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Token Co").await;
    let response = app
        .login(&tenant.email.to_uppercase(), &tenant.password)
        .await;
    assert_eq!(response.status(), 200, "emails are case-insensitive");
    let json = body(response).await;
    let token = json["token"].as_str().unwrap();
    assert!(token.starts_with("agd_"));
    assert!(!token.contains(&tenant.id.to_string()));
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(json["expires_at"].as_str().unwrap()).unwrap();
    let ttl = expires_at
        .signed_duration_since(chrono::Utc::now())
        .num_seconds();
    assert!((3500..=3600).contains(&ttl), "{ttl}");
}

#[tokio::test]
async fn wrong_passwords_and_unknown_emails_get_the_same_401() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Secret Co").await;
    let wrong_password = assert_error(
        app.login(&tenant.email, "not the password").await,
        401,
        "invalid_credentials",
    )
    .await;
    let unknown = assert_error(
        app.login("nobody@example.com", "whatever password").await,
        401,
        "invalid_credentials",
    )
    .await;
    let malformed = assert_error(
        app.login("not an email", "whatever password").await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_eq!(wrong_password, unknown);
    assert_eq!(unknown, malformed);
}

#[tokio::test]
async fn logout_revokes_the_token() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Logout Co").await;
    let response = app
        .request(Method::POST, "/api/v1/auth/logout", Some(&tenant.token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_error(
        app.get("/api/v1/agents", &tenant.token).await,
        401,
        "unauthorized",
    )
    .await;
    // A fresh login still works.
    assert_eq!(
        app.login(&tenant.email, &tenant.password).await.status(),
        200
    );
}

#[tokio::test]
async fn missing_forged_and_expired_tokens_get_401() {
    let app = spawn_app_with(|settings| settings.auth.dashboard_token_ttl_secs = 1).await;
    let tenant = app.create_tenant("Expiry Co").await;
    let response = app
        .client
        .get(app.url("/api/v1/agents"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_error(response, 401, "unauthorized").await;

    // Change one character of the signed payload (just after the "agd_" prefix).
    let mut forged: Vec<char> = tenant.token.chars().collect();
    forged[4] = if forged[4] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    assert_error(
        app.get("/api/v1/agents", &forged).await,
        401,
        "unauthorized",
    )
    .await;
    assert_error(
        app.get("/api/v1/agents", "agd_garbage").await,
        401,
        "unauthorized",
    )
    .await;

    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_error(
        app.get("/api/v1/agents", &tenant.token).await,
        401,
        "unauthorized",
    )
    .await;
}

#[tokio::test]
async fn members_can_read_but_not_change_configuration() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Roles Co").await;
    let agent = app.create_agent(&tenant.token, "Shared").await;
    let token = app.create_member(tenant.id).await;

    assert_eq!(app.get("/api/v1/agents", &token).await.status(), 200);
    let agent_path = format!("/api/v1/agents/{}", agent["id"].as_str().unwrap());
    assert_eq!(app.get(&agent_path, &token).await.status(), 200);
    assert_error(
        app.post_json(
            "/api/v1/agents",
            Some(&token),
            &serde_json::json!({ "name": "Nope" }),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    assert_error(
        app.patch_json(&agent_path, &token, &serde_json::json!({ "name": "Nope" }))
            .await,
        403,
        "forbidden",
    )
    .await;
    assert_error(app.delete(&agent_path, &token).await, 403, "forbidden").await;
}
