//! Brute-force lockout: failures counted per client IP in Redis, across
//! instances; once locked out, even a correct credential gets 429.

use serde_json::json;

use crate::helpers::{assert_error, spawn_app_on, spawn_app_with, TestApp};

fn strict(settings: &mut agentry::configuration::Settings) {
    settings.lockout.max_failures = 3;
    settings.lockout.window_secs = 60;
    settings.lockout.lockout_secs = 120;
}

async fn assert_locked_out(response: reqwest::Response) {
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=120).contains(&retry_after), "{retry_after}");
    assert_error(response, 429, "locked_out").await;
}

fn lockouts(app: &TestApp) -> f64 {
    let text = app.state.metrics.render();
    text.lines()
        .find(|line| line.starts_with("agentry_auth_lockouts_total"))
        .and_then(|line| line.split_whitespace().last())
        .map_or(0.0, |value| value.parse().unwrap())
}

#[tokio::test]
async fn wrong_passwords_lock_the_client_out_even_for_the_right_one() {
    let app = spawn_app_with(strict).await;
    let tenant = app.create_tenant("Lock Co").await;
    let before = lockouts(&app);
    for _ in 0..2 {
        assert_error(
            app.login(&tenant.email, "wrong password!").await,
            401,
            "invalid_credentials",
        )
        .await;
    }
    // Below the limit, the right password still works.
    assert_eq!(
        app.login(&tenant.email, &tenant.password).await.status(),
        200
    );
    assert_error(
        app.login(&tenant.email, "wrong password!").await,
        401,
        "invalid_credentials",
    )
    .await;
    // The third failure started the lockout: the right password is refused too,
    // and so is a valid bearer token from the same client.
    assert_locked_out(app.login(&tenant.email, &tenant.password).await).await;
    assert_locked_out(app.get("/api/v1/auth/me", &tenant.token).await).await;
    assert_eq!(lockouts(&app), before + 1.0);
}

#[tokio::test]
async fn bad_api_and_dashboard_tokens_count_as_failures() {
    let app = spawn_app_with(strict).await;
    let tenant = app.create_tenant("Guess Co").await;
    let guesses = [
        format!("agt_{}", "A".repeat(43)),
        "agt_short".to_owned(),
        "agd_forged.signature".to_owned(),
    ];
    for guess in &guesses {
        assert_error(app.get("/api/v1/leads", guess).await, 401, "unauthorized").await;
    }
    assert_locked_out(app.get("/api/v1/leads", &tenant.token).await).await;
    assert_locked_out(app.login(&tenant.email, &tenant.password).await).await;
}

#[tokio::test]
async fn a_missing_credential_is_not_a_failure() {
    let app = spawn_app_with(strict).await;
    let tenant = app.create_tenant("Anon Co").await;
    for _ in 0..5 {
        let response = app
            .client
            .get(app.url("/api/v1/leads"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    assert_eq!(app.get("/api/v1/leads", &tenant.token).await.status(), 200);
}

#[tokio::test]
async fn the_count_and_the_lockout_hold_across_instances() {
    let first = spawn_app_with(strict).await;
    let prefix = first.settings.redis.prefix.clone();
    let second = spawn_app_on(
        first.database_name(),
        |settings| {
            strict(settings);
            settings.redis.prefix = prefix;
        },
        false,
    )
    .await;
    let tenant = first.create_tenant("Cluster Lock Co").await;
    let wrong = json!({ "email": tenant.email, "password": "wrong password!" });
    for app in [&first, &second, &first] {
        let response = app.post_json("/api/v1/auth/login", None, &wrong).await;
        assert_error(response, 401, "invalid_credentials").await;
    }
    // Three failures in all, on two instances: both refuse the right password.
    assert_locked_out(second.login(&tenant.email, &tenant.password).await).await;
    assert_locked_out(first.login(&tenant.email, &tenant.password).await).await;
    let me = second.get("/api/v1/auth/me", &tenant.token).await;
    assert_locked_out(me).await;
}

#[tokio::test]
async fn an_ended_dashboard_session_does_not_count() {
    let app = spawn_app_with(strict).await;
    let tenant = app.create_tenant("Ended Co").await;
    let stale = tenant.token.clone();
    let response = app
        .request(reqwest::Method::POST, "/api/v1/auth/logout", Some(&stale))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    // A browser left open after logout keeps sending its old token.
    for _ in 0..5 {
        assert_error(app.get("/api/v1/leads", &stale).await, 401, "unauthorized").await;
    }
    assert_eq!(
        app.login(&tenant.email, &tenant.password).await.status(),
        200
    );
}

#[tokio::test]
async fn without_redis_the_lockout_fails_open_and_quickly() {
    let app = spawn_app_with(|settings| {
        strict(settings);
        settings.redis.url = agentry_actors::Secret::new("redis://127.0.0.1:1".into());
        settings.webhooks.dispatch = false;
    })
    .await;
    let tenant = app.create_tenant("No Redis Co").await;
    for _ in 0..4 {
        assert_error(
            app.login(&tenant.email, "wrong password!").await,
            401,
            "invalid_credentials",
        )
        .await;
    }
    let started = std::time::Instant::now();
    assert_eq!(
        app.login(&tenant.email, &tenant.password).await.status(),
        200
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
