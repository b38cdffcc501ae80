//! The tenant dashboard (`/app`, web/app/) in a real browser: Debian's
//! Chromium driven by playwright-core (web/tests/dashboard.test.mjs) against
//! the real server, with the production rate limits on. A tenant made
//! through the operator API signs in, builds an agent with a knowledge
//! document and a widget, embeds the widget on a page of another origin,
//! chats there as a visitor, and finds the conversation and the lead in the
//! dashboard; the secrets shown once stay shown once; a member is refused.
//! Screenshots go to AGENTRY_SCREENSHOTS (default web/test-results/screenshots).
//!
//! Gated like tests/api/browser.rs: without AGENTRY_BROWSER_TESTS=1 it says
//! so and does nothing.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use uuid::Uuid;

use crate::helpers::{body, spawn_app_on, spawn_app_with, TestApp};

const OWNER_PASSWORD: &str = "dashboard owner password 1";
const MEMBER_PASSWORD: &str = "dashboard member password 1";

/// A tenant through the operator API, as an operator would make one.
async fn tenant_through_operator_api(app: &TestApp, owner_email: &str) -> Uuid {
    let operator = app.operator_token().await;
    let response = app
        .request(
            reqwest::Method::POST,
            "/api/v1/admin/tenants",
            Some(&operator),
        )
        .json(&json!({
            "name": "Dockside Bikes & <Repairs>",
            "admin_email": owner_email,
            "admin_password": OWNER_PASSWORD,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created = body(response).await;
    created["tenant_id"].as_str().unwrap().parse().unwrap()
}

/// A member (the read-only role). There is no API that invites users yet,
/// so this uses the accounts code directly.
async fn add_member(app: &TestApp, tenant: Uuid, email: &str) {
    let hash =
        agentry::accounts::hash_password(agentry_actors::Secret::new(MEMBER_PASSWORD.into()))
            .await
            .unwrap();
    let mut tx = app
        .store
        .tenant(agentry_actors::TenantId::from_uuid(tenant))
        .await
        .unwrap();
    let parsed = agentry::domain::Email::parse(email).unwrap();
    agentry::db::tenants::add_user(&mut tx, &parsed, &hash, agentry::db::tenants::Role::Member)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn a_new_tenant_runs_its_dashboard_in_a_real_browser() {
    if std::env::var("AGENTRY_BROWSER_TESTS").as_deref() != Ok("1") {
        eprintln!(
            "dashboard browser test not run: set AGENTRY_BROWSER_TESTS=1 (bash .ci/run does)"
        );
        return;
    }
    // The production tiers, to see whether a normal dashboard session trips them.
    let app = spawn_app_with(|settings| settings.rate_limits.enabled = true).await;
    // Instance B on A's database and Redis: the takeover part puts the
    // visitor on A and the team member's dashboard on B.
    let prefix = app.settings.redis.prefix.clone();
    let second = spawn_app_on(
        &app.database,
        |settings| {
            settings.redis.prefix = prefix;
            settings.rate_limits.enabled = true;
        },
        false,
    )
    .await;
    let owner_email = format!("owner-{}@example.com", Uuid::new_v4().simple());
    let member_email = format!("member-{}@example.com", Uuid::new_v4().simple());
    let tenant = tenant_through_operator_api(&app, &owner_email).await;
    add_member(&app, tenant, &member_email).await;

    let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let screenshots = std::env::var("AGENTRY_SCREENSHOTS")
        .unwrap_or_else(|_| web.join("test-results/screenshots").display().to_string());
    let started = Instant::now();
    let output = tokio::process::Command::new("node")
        .args(["--test", "tests/dashboard.test.mjs"])
        .current_dir(&web)
        .env("BASE_URL", &app.address)
        .env("SECOND_BASE_URL", &second.address)
        .env("OWNER_EMAIL", &owner_email)
        .env("OWNER_PASSWORD", OWNER_PASSWORD)
        .env("MEMBER_EMAIL", &member_email)
        .env("MEMBER_PASSWORD", MEMBER_PASSWORD)
        .env("AGENTRY_SCREENSHOTS", &screenshots)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), output)
        .await
        .expect("the dashboard browser test finished in time")
        .expect("node runs (install Node.js and run `npm ci` in web/)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!(
        "dashboard browser test took {:?}:\n{stdout}",
        started.elapsed()
    );
    assert!(
        output.status.success(),
        "dashboard browser test failed after {:?}:\n{stdout}\n{stderr}",
        started.elapsed()
    );
    assert!(stdout.contains("# fail 0"), "no test failed:\n{stdout}");
}
