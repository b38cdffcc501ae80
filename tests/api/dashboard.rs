//! The tenant dashboard (`/app`, web/app/) in a real browser: Debian's
//! Chromium driven by playwright-core (web/tests/dashboard.test.mjs) against
//! the real server, with the production rate limits on (but for this tenant's
//! `standard` tier, see below). A tenant made
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

use crate::helpers::{body, spawn_app, spawn_app_on, spawn_app_with, TestApp};

const OWNER_PASSWORD: &str = "dashboard owner password 1";
const MEMBER_PASSWORD: &str = "dashboard member password 1";

/// A tenant through the operator API, as an operator would make one.
async fn tenant_through_operator_api(app: &TestApp, operator: &str, owner_email: &str) -> Uuid {
    let response = app
        .request(
            reqwest::Method::POST,
            "/api/v1/admin/tenants",
            Some(operator),
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
    let operator = app.operator_token().await;
    let tenant = tenant_through_operator_api(&app, &operator, &owner_email).await;
    add_member(&app, tenant, &member_email).await;
    // The browser clicks through the pages far faster than a person: about 95
    // dashboard requests in 15 s drain the `standard` tier (60 a minute per
    // tenant, bursts of 60) and the member's reads and changes get 429. This
    // tenant gets a higher tier the way an operator gives one (the production
    // defaults stay); AGENTRY_DASHBOARD_PRODUCTION_TIERS=1 leaves it at 60.
    if std::env::var("AGENTRY_DASHBOARD_PRODUCTION_TIERS").as_deref() != Ok("1") {
        let response = app
            .request(
                reqwest::Method::PUT,
                &format!("/api/v1/admin/tenants/{tenant}/rate-limits"),
                Some(&operator),
            )
            .json(&json!({ "overrides": { "standard": 600 } }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let screenshots = std::env::var("AGENTRY_SCREENSHOTS")
        .unwrap_or_else(|_| web.join("test-results/screenshots").display().to_string());
    let started = Instant::now();
    let output = tokio::process::Command::new("node")
        .args([
            "--test",
            "tests/dashboard-events.test.mjs",
            "tests/dashboard.test.mjs",
        ])
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

/// The relative imports (`from './x.js'`) of a module's source.
fn imports(source: &str) -> Vec<String> {
    source
        .split("from '")
        .skip(1)
        .filter_map(|rest| rest.split('\'').next())
        .filter_map(|target| target.strip_prefix("./"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_dashboard_and_every_module_it_imports_are_served_from_the_binary_under_the_strict_csp()
{
    let app = spawn_app().await;
    let shell = app.client.get(app.url("/app")).send().await.unwrap();
    assert_eq!(shell.status(), 200);
    assert_eq!(shell.headers()["content-type"], "text/html; charset=utf-8");
    let csp = shell.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(shell.headers()["x-frame-options"], "DENY");
    let html = shell.text().await.unwrap();
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "no inline script or style: {html}"
    );
    assert!(html.contains(r#"<script type="module" src="/app/main.js">"#));
    assert!(html.contains(r#"href="/app/app.css""#));

    let css = app
        .client
        .get(app.url("/app/app.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), 200);
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");

    // Every module reachable from main.js, as a browser would fetch them.
    let mut pending = vec!["main.js".to_owned()];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(name) = pending.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let response = app
            .client
            .get(app.url(&format!("/app/{name}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "/app/{name}");
        assert_eq!(
            response.headers()["content-type"],
            "text/javascript; charset=utf-8",
            "/app/{name}"
        );
        let source = response.text().await.unwrap();
        assert!(
            !source.contains("innerHTML"),
            "{name} builds DOM without HTML strings"
        );
        assert!(!source.contains("eval("), "{name} needs no eval");
        pending.extend(imports(&source));
    }
    let on_disk: std::collections::BTreeSet<String> =
        std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web/app"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".js"))
            .collect();
    assert_eq!(
        seen, on_disk,
        "every module in web/app is served and imported"
    );

    let missing = app
        .client
        .get(app.url("/app/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(body(missing).await["error"]["code"], "not_found");
}
