//! Helpers for tests that chat through the visitor API.

use serde_json::{json, Value};

use crate::helpers::{
    body, upload_document_as, wait_until_document_ready, widget_session, TestApp, TestTenant,
};

pub use crate::helpers::WIDGET_ORIGIN as ORIGIN;

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
    widget_session(app, public_key, ORIGIN).await
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

/// Uploads a markdown document and waits until ingestion made it ready.
pub async fn upload_ready(
    app: &TestApp,
    token: &str,
    agent_id: &str,
    title: &str,
    content: &str,
) -> String {
    let id = upload_document_as(app, token, agent_id, title, content, "markdown").await;
    wait_until_document_ready(app, token, agent_id, &id).await;
    id
}
