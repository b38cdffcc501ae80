//! Helpers for tests that chat through the visitor API.

use axum::response::IntoResponse;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{json, Value};

use crate::helpers::{
    body, upload_document_as, wait_until_document_ready, widget_session, TestApp, TestTenant,
};

pub use crate::helpers::WIDGET_ORIGIN as ORIGIN;

/// A tenant with an agent and a widget allowing [`ORIGIN`].
pub struct Site {
    pub tenant: TestTenant,
    pub agent_id: String,
    pub widget_id: String,
    pub public_key: String,
}

pub async fn site(app: &TestApp, name: &str) -> Site {
    let tenant = app.create_tenant(name).await;
    let agent = app
        .create_agent(&tenant.token, &format!("{name} agent"))
        .await;
    site_for_agent(app, tenant, agent).await
}

pub async fn site_for_agent(app: &TestApp, tenant: TestTenant, agent: Value) -> Site {
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    let widget = app.create_widget(&tenant.token, &agent_id).await;
    Site {
        tenant,
        agent_id,
        widget_id: widget["id"].as_str().unwrap().to_owned(),
        public_key: widget["public_key"].as_str().unwrap().to_owned(),
    }
}

/// A fresh visitor session token for `public_key`.
pub async fn visitor_token(app: &TestApp, public_key: &str) -> String {
    widget_session(app, public_key, ORIGIN).await
}

/// A visitor-side request, with the page's Origin when given.
pub fn visitor(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    origin: Option<&str>,
) -> RequestBuilder {
    let request = app.request(method, path, token);
    match origin {
        Some(origin) => request.header("origin", origin),
        None => request,
    }
}

/// Sends a message from [`ORIGIN`] asking for a JSON reply.
pub async fn say(app: &TestApp, token: &str, text: &str) -> Response {
    visitor(
        app,
        Method::POST,
        "/api/widget/messages",
        Some(token),
        Some(ORIGIN),
    )
    .json(&json!({ "text": text }))
    .send()
    .await
    .unwrap()
}

/// One JSON-mode turn; returns the status and body.
pub async fn turn(app: &TestApp, token: &str, text: &str) -> (u16, Value) {
    let response = say(app, token, text).await;
    let status = response.status().as_u16();
    (status, body(response).await)
}

/// The reply text of a successful turn.
pub async fn reply(app: &TestApp, token: &str, text: &str) -> String {
    let (status, body) = turn(app, token, text).await;
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

/// Points the site's tenant at an OpenAI-compatible stand-in (no key).
/// Replaces the site's agent profile.
pub async fn set_profile(app: &TestApp, setup: &Site, profile: Value) -> Response {
    app.request(
        Method::PATCH,
        &format!("/api/v1/agents/{}", setup.agent_id),
        Some(&setup.tenant.token),
    )
    .json(&json!({ "profile": profile }))
    .send()
    .await
    .unwrap()
}

pub async fn use_stand_in(app: &TestApp, setup: &Site, base_url: &str) {
    let configured = app
        .request(
            reqwest::Method::PUT,
            "/api/v1/llm",
            Some(&setup.tenant.token),
        )
        .json(&json!({ "provider": "vllm", "model": "stand-in", "base_url": base_url }))
        .send()
        .await
        .unwrap();
    assert_eq!(configured.status(), 200);
}

/// A local server speaking the OpenAI chat-completions streaming protocol.
pub async fn fake_openai(reply_chunks: &'static [&'static str]) -> String {
    recording_openai(reply_chunks).await.0
}

/// [`fake_openai`] that also keeps the system message of every request.
pub async fn recording_openai(
    reply_chunks: &'static [&'static str],
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let prompts = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = prompts.clone();
    let router = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |axum::Json(request): axum::Json<serde_json::Value>| {
            let seen = seen.clone();
            async move {
                let system = request["messages"][0]["content"].as_str().unwrap_or_default();
                seen.lock().unwrap().push(system.to_owned());
                let mut stream = String::new();
                for chunk in reply_chunks {
                    let event = json!({ "choices": [{ "index": 0, "delta": { "content": chunk } }] });
                    stream.push_str(&format!("data: {event}\n\n"));
                }
                let usage = json!({ "choices": [], "usage": { "prompt_tokens": 321, "completion_tokens": 12 } });
                stream.push_str(&format!("data: {usage}\n\ndata: [DONE]\n\n"));
                ([("content-type", "text/event-stream")], stream).into_response()
            }
        }),
    );
    let address = crate::helpers::serve_locally(router).await;
    (format!("http://{address}/v1"), prompts)
}
