//! The demo page in a real browser (Debian's Chromium driven by playwright-core,
//! web/tests/widget.test.mjs) against the real server: a visitor opens the
//! widget, asks, gets a streamed answer from the demo knowledge base, and the
//! conversation survives a reload.
//!
//! It needs Chromium and `npm ci` in web/, which `.ci/run` installs and then
//! sets AGENTRY_BROWSER_TESTS=1; without that variable the test says so and
//! does nothing, so `cargo test` works on a machine without a browser.

use std::process::Stdio;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::helpers::wait_for_document_status as wait_for_status;
use crate::helpers::{body, spawn_app_on};

#[tokio::test]
async fn a_visitor_chats_on_the_demo_page_in_a_real_browser() {
    if std::env::var("AGENTRY_BROWSER_TESTS").as_deref() != Ok("1") {
        eprintln!("browser test not run: set AGENTRY_BROWSER_TESTS=1 (bash .ci/run does)");
        return;
    }
    // The page's origin must be the server's public URL, which the demo widget allows.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let database = format!("agentry_test_{}", Uuid::new_v4().simple());
    let app = spawn_app_on(
        &database,
        |settings| {
            settings.http.bind = format!("127.0.0.1:{port}").parse().unwrap();
            settings.http.public_url = format!("http://127.0.0.1:{port}");
            settings.demo.seed = true;
        },
        true,
    )
    .await;
    let demo = app.seeded_demo.as_ref().expect("the demo was seeded");
    let login = body(app.login(&demo.admin_email, &demo.admin_password).await).await;
    let token = login["token"].as_str().unwrap();
    let agents = body(app.get("/api/v1/agents", token).await).await;
    let agent_id = agents["agents"][0]["id"].as_str().unwrap();
    let documents = body(
        app.get(&format!("/api/v1/agents/{agent_id}/documents"), token)
            .await,
    )
    .await;
    for document in documents["documents"].as_array().unwrap() {
        wait_for_status(
            &app,
            token,
            agent_id,
            document["id"].as_str().unwrap(),
            "ready",
        )
        .await;
    }

    let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let started = Instant::now();
    let output = tokio::process::Command::new("node")
        .args(["--test", "tests/widget.test.mjs"])
        .current_dir(&web)
        .env("BASE_URL", &app.address)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(240), output)
        .await
        .expect("the browser test finished in time")
        .expect("node runs (install Node.js and run `npm ci` in web/)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser test failed after {:?}:\n{stdout}\n{stderr}",
        started.elapsed()
    );
    assert!(
        stdout.contains("# pass 1"),
        "exactly the real-server test ran:\n{stdout}"
    );
}
