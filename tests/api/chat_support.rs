//! Helpers for tests that chat through the visitor API.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{body, TestApp, TestTenant};

pub const ORIGIN: &str = "https://shop.example.com";

/// A tenant with an agent and a widget (allowed origin [`ORIGIN`]).
pub struct ChatSetup {
    pub tenant: TestTenant,
    pub agent_id: String,
    pub public_key: String,
}

pub async fn chat_setup(app: &TestApp, name: &str) -> ChatSetup {
    let tenant = app.create_tenant(name).await;
    let agent_id = app.create_agent(&tenant.token, name).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let widget = app.create_widget(&tenant.token, &agent_id).await;
    ChatSetup {
        tenant,
        agent_id,
        public_key: widget["public_key"].as_str().unwrap().to_owned(),
    }
}

/// A fresh visitor session token for `public_key`.
pub async fn visitor_token(app: &TestApp, public_key: &str) -> String {
    let response = app
        .client
        .post(app.url("/api/widget/session"))
        .header("origin", ORIGIN)
        .json(&json!({ "public_key": public_key }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    body(response).await["token"].as_str().unwrap().to_owned()
}

/// One JSON-mode turn; returns the status and body.
pub async fn say(app: &TestApp, token: &str, text: &str) -> (u16, Value) {
    let response = app
        .client
        .post(app.url("/api/widget/messages"))
        .bearer_auth(token)
        .header("origin", ORIGIN)
        .json(&json!({ "text": text }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, body(response).await)
}

/// The reply text of a successful turn.
pub async fn reply(app: &TestApp, token: &str, text: &str) -> String {
    let (status, body) = say(app, token, text).await;
    assert_eq!(status, 200, "{body}");
    body["reply"]["content"].as_str().unwrap().to_owned()
}

/// Uploads a document and waits until ingestion made it ready.
pub async fn upload_ready(
    app: &TestApp,
    token: &str,
    agent_id: &str,
    title: &str,
    content: &str,
) -> String {
    let response = app
        .post_json(
            &format!("/api/v1/agents/{agent_id}/documents"),
            Some(token),
            &json!({ "title": title, "content": content, "content_type": "markdown" }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let id = body(response).await["id"].as_str().unwrap().to_owned();
    wait_for_status(app, token, agent_id, &id, "ready").await;
    id
}

pub async fn wait_for_status(
    app: &TestApp,
    token: &str,
    agent_id: &str,
    document_id: &str,
    status: &str,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed = body(
            app.get(&format!("/api/v1/agents/{agent_id}/documents"), token)
                .await,
        )
        .await;
        let document = listed["documents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == document_id)
            .cloned()
            .unwrap_or(Value::Null);
        if document["status"] == status {
            return document;
        }
        assert!(
            Instant::now() < deadline,
            "document never became {status}: {document}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
