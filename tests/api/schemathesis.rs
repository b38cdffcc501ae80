//! Contract fuzzing: schemathesis (a tool we did not write; `bash .ci/run`
//! installs it and sets AGENTRY_PYTHON, and without it this test says so
//! and passes) generates requests for every operation of the live server's
//! own `/api/v1/openapi.json` and fails on any 5xx, and on any response whose
//! status, content type, headers or body the document does not describe.
//!
//! The run is bounded by `AGENTRY_SCHEMATHESIS_EXAMPLES` examples per
//! operation (default [`DEFAULT_EXAMPLES`]), so CI stays within its time, and
//! seeded by `AGENTRY_SCHEMATHESIS_SEED` (default 1): CI explores the same
//! cases on every run, and any seed reproduces a failure it found.

use std::time::Instant;

use serde_json::{json, Value};

use crate::helpers::{body, create_token, spawn_app_with, widget_session, TestApp, WIDGET_ORIGIN};

const DEFAULT_EXAMPLES: u32 = 25;
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance";

/// Runs the schemathesis CLI of `python` (the module, so no script path is needed).
const RUN_CLI: &str =
    "import sys; from schemathesis.cli import schemathesis; sys.argv[0] = 'schemathesis'; sys.exit(schemathesis())";

async fn has_schemathesis(python: &str) -> bool {
    tokio::process::Command::new(python)
        .args(["-c", "import schemathesis"])
        .output()
        .await
        .is_ok_and(|output| output.status.success())
}

/// A second dashboard session of the owner, for the operations that end
/// the one they are called with (logout), so the fuzzing of every other
/// operation keeps a live token.
async fn second_session(app: &TestApp, email: &str, password: &str) -> String {
    body(app.login(email, password).await).await["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// What the fuzzed operations' path ids name: ids that exist, so the
/// generated requests reach the handlers' own checks, not only their 404s.
struct Seeded {
    owner: String,
    spare_owner: String,
    operator: String,
    spare_operator: String,
    visitor: String,
    spare_visitor: String,
    agent_id: String,
    spare_agent_id: String,
    widget_id: String,
    lead_id: String,
    conversation_id: String,
    token_id: String,
    number_id: String,
    endpoint_id: String,
}

/// POSTs `payload` as the owner and returns the created resource's `id`.
async fn created(app: &TestApp, owner: &str, path: &str, payload: Value) -> String {
    let response = app.post_json(path, Some(owner), &payload).await;
    assert_eq!(response.status(), 201, "{path}");
    body(response).await["id"].as_str().unwrap().to_owned()
}

async fn seed_tenant(app: &TestApp) -> Seeded {
    let tenant = app.create_tenant("Fuzzed Co").await;
    let spare_owner = second_session(app, &tenant.email, &tenant.password).await;
    let agent = app.create_agent(&tenant.token, "Fuzzed agent").await;
    let spare_agent = app.create_agent(&tenant.token, "Spare agent").await;
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    let widget = app.create_widget(&tenant.token, &agent_id).await;
    let public_key = widget["public_key"].as_str().unwrap();
    let visitor = widget_session(app, public_key, WIDGET_ORIGIN).await;
    let spare_visitor = widget_session(app, public_key, WIDGET_ORIGIN).await;
    let owner = &tenant.token;
    let lead_id = created(
        app,
        owner,
        "/api/v1/leads",
        json!({ "name": "Ada", "email": "ada@example.com" }),
    )
    .await;
    let (token_id, _) = create_token(app, owner, &["leads:read"]).await;
    let number_id = created(
        app,
        owner,
        "/api/v1/phone-numbers",
        json!({ "number": "+14155550100", "agent_id": agent_id }),
    )
    .await;
    let endpoint_id = created(
        app,
        owner,
        "/api/v1/webhook-endpoints",
        json!({ "url": "http://127.0.0.1:9/hooks", "event_types": ["lead.created"] }),
    )
    .await;
    // One turn, so a conversation exists (on a session of its own: the
    // fuzzed ones may end theirs).
    let chatting = widget_session(app, public_key, WIDGET_ORIGIN).await;
    let turn = app
        .client
        .post(app.url("/api/widget/messages"))
        .bearer_auth(&chatting)
        .header("origin", WIDGET_ORIGIN)
        .json(&json!({ "text": "What are your opening hours?" }))
        .send()
        .await
        .unwrap();
    assert_eq!(turn.status(), 200);
    let conversations = body(app.get("/api/v1/conversations", owner).await).await;
    let conversation_id = conversations["conversations"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    Seeded {
        lead_id,
        token_id,
        number_id,
        endpoint_id,
        conversation_id,
        operator: app.operator_token().await,
        spare_operator: app.operator_token().await,
        owner: tenant.token,
        spare_owner,
        visitor,
        spare_visitor,
        agent_id,
        spare_agent_id: spare_agent["id"].as_str().unwrap().to_owned(),
        widget_id: widget["id"].as_str().unwrap().to_owned(),
    }
}

/// schemathesis.toml: who calls what. Everything runs as the owner, but the
/// operator's realm as an operator, the visitor API as a visitor on an
/// allowed origin, and what ends a session or deletes an agent with spares.
fn config(seeded: &Seeded) -> String {
    let bearer = |token: &str| format!("Bearer {token}");
    let value = |text: &str| Value::String(text.to_owned()).to_string();
    format!(
        r#"
headers = {{ Authorization = {owner} }}

[parameters]
agent_id = {agent_id}
widget_id = {widget_id}
lead_id = {lead_id}
conversation_id = {conversation_id}
token_id = {token_id}
number_id = {number_id}
endpoint_id = {endpoint_id}

[[operations]]
include-name = "POST /api/v1/auth/logout"
headers = {{ Authorization = {spare_owner} }}

[[operations]]
include-path-regex = "^/api/v1/admin/"
exclude-name = "POST /api/v1/admin/auth/logout"
headers = {{ Authorization = {operator} }}

[[operations]]
include-name = "POST /api/v1/admin/auth/logout"
headers = {{ Authorization = {spare_operator} }}

[[operations]]
include-path-regex = "^/api/widget/"
exclude-name = "POST /api/widget/session/end"
headers = {{ Authorization = {visitor}, Origin = {origin} }}

[[operations]]
include-name = "POST /api/widget/session/end"
headers = {{ Authorization = {spare_visitor}, Origin = {origin} }}

[[operations]]
include-name = "DELETE /api/v1/agents/{{agent_id}}"
parameters = {{ agent_id = {spare_agent_id} }}
"#,
        owner = value(&bearer(&seeded.owner)),
        spare_owner = value(&bearer(&seeded.spare_owner)),
        operator = value(&bearer(&seeded.operator)),
        spare_operator = value(&bearer(&seeded.spare_operator)),
        visitor = value(&bearer(&seeded.visitor)),
        spare_visitor = value(&bearer(&seeded.spare_visitor)),
        origin = value(WIDGET_ORIGIN),
        agent_id = value(&seeded.agent_id),
        spare_agent_id = value(&seeded.spare_agent_id),
        widget_id = value(&seeded.widget_id),
        lead_id = value(&seeded.lead_id),
        conversation_id = value(&seeded.conversation_id),
        token_id = value(&seeded.token_id),
        number_id = value(&seeded.number_id),
        endpoint_id = value(&seeded.endpoint_id),
    )
}

/// The summary lines a reader (and the closing note) needs.
fn summary(output: &str) -> Vec<&str> {
    output
        .lines()
        .map(str::trim)
        .filter(|line| {
            [
                "API Operations",
                "Selected",
                "Tested",
                "Test cases",
                "generated",
                "Failures",
                "Errors",
                "Seed",
            ]
            .iter()
            .any(|word| line.contains(word))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_contract_failure_in_any_operation() {
    let Ok(python) = std::env::var("AGENTRY_PYTHON") else {
        eprintln!("schemathesis test not run: set AGENTRY_PYTHON to a Python with schemathesis (bash .ci/run does)");
        return;
    };
    if !has_schemathesis(&python).await {
        eprintln!(
            "schemathesis test not run: {python} lacks schemathesis (bash .ci/run installs it)"
        );
        return;
    }
    let setting = |name: &str, default: u32| -> u32 {
        std::env::var(name)
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(default)
    };
    let examples = setting("AGENTRY_SCHEMATHESIS_EXAMPLES", DEFAULT_EXAMPLES);
    let seed = setting("AGENTRY_SCHEMATHESIS_SEED", 1);
    let app = spawn_app_with(|settings| {
        // Fuzzed logins are wrong passwords: without this the lockout would
        // turn every later request from this IP into a 429 and hide the rest.
        settings.lockout.max_failures = u32::MAX;
        // The live event streams end after a second, not five minutes: a
        // fuzzed request waits for its whole response.
        settings.http.event_stream_secs = 1;
    })
    .await;
    let seeded = seed_tenant(&app).await;
    let dir = std::env::temp_dir().join(format!("agentry-schemathesis-{}", app.database_name()));
    std::fs::create_dir_all(&dir).unwrap();
    let config_path = dir.join("schemathesis.toml");
    std::fs::write(&config_path, config(&seeded)).unwrap();
    let started = Instant::now();
    let output = tokio::process::Command::new(&python)
        // Its cache of replayable failures goes there, not into the work tree.
        .current_dir(&dir)
        .arg("-c")
        .arg(RUN_CLI)
        .arg("--config-file")
        .arg(&config_path)
        .args(["--no-color", "run"])
        .arg(app.url("/api/v1/openapi.json"))
        .args(["--url", &app.address])
        .args(["--checks", CHECKS])
        .args(["--max-examples", &examples.to_string()])
        .args(["--phases", "examples,coverage,fuzzing"])
        // One worker: with two, schemathesis 4.32's coverage phase can fail
        // with a KeyError from a cache its worker threads share (seen once
        // under the full suite's load); the run is then also reproducible.
        .args(["--workers", "1", "--request-timeout", "30"])
        .args(["--seed", &seed.to_string()])
        .arg("--generation-database=none")
        .arg("--report-dir")
        .arg(&dir)
        .output()
        .await
        .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!(
        "schemathesis, {examples} examples per operation, seed {seed}, {:.0} s:\n  {}",
        started.elapsed().as_secs_f64(),
        summary(&stdout).join("\n  ")
    );
    assert!(
        output.status.success(),
        "schemathesis reported failures:\n{stdout}\n{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The 5xx schemathesis found, pinned without it: a NUL (which PostgreSQL
/// text cannot hold) in a path, a query or a Twilio form reached a query
/// and failed it; each is now refused before.
#[tokio::test]
async fn a_nul_in_a_path_a_query_or_a_twilio_form_is_refused_not_a_server_error() {
    let app = crate::helpers::spawn_app().await;
    let tenant = app.create_tenant("NUL Co").await;
    let lifted = app
        .delete("/api/v1/sms-suppressions/%2B1415%00555", &tenant.token)
        .await;
    crate::helpers::assert_error(lifted, 404, "not_found").await;
    let searched = app
        .get("/api/v1/conversations?q=a%00b", &tenant.token)
        .await;
    crate::helpers::assert_error(searched, 400, "bad_request").await;
    for path in ["/api/twilio/sms", "/api/twilio/sms/status"] {
        let response = app
            .client
            .post(app.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("From=%2B1415%00555&To=%2B14155550100&MessageSid=SM1&Body=hi")
            .send()
            .await
            .unwrap();
        crate::helpers::assert_error(response, 400, "bad_request").await;
    }
    let recording = app
        .client
        .post(app.url("/api/twilio/voice/recording?number=%2B1%00"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("RecordingStatus=completed")
        .send()
        .await
        .unwrap();
    crate::helpers::assert_error(recording, 400, "bad_request").await;
}
