//! What a turn reads is cached on the instance that serves it (the agent's
//! brief, the tenant's LLM, the conversation's history) and validated by the
//! versions the turn's first write returns: a change made through one
//! instance is used by the very next turn on another.

use std::sync::{Arc, Mutex};

use axum::response::IntoResponse;
use serde_json::{json, Value};

use crate::chat_support::{reply, site, use_stand_in, visitor_token};
use crate::helpers::{spawn_app, spawn_app_on, TestApp};

/// An OpenAI-compatible server that answers `"{name} answers."` and keeps
/// the messages of every request it gets.
struct RecordingLlm {
    base_url: String,
    requests: Arc<Mutex<Vec<Vec<Value>>>>,
}

impl RecordingLlm {
    async fn start(name: &'static str) -> Self {
        let requests: Arc<Mutex<Vec<Vec<Value>>>> = Arc::default();
        let recorded = requests.clone();
        let router = axum::Router::new().route(
            "/v1/chat/completions",
            axum::routing::post(move |axum::Json(request): axum::Json<Value>| {
                let recorded = recorded.clone();
                async move {
                    let messages = request["messages"].as_array().cloned().unwrap_or_default();
                    recorded.lock().unwrap().push(messages);
                    let delta = json!({ "choices": [{ "index": 0, "delta": { "content": format!("{name} answers.") } }] });
                    let stream = format!("data: {delta}\n\ndata: [DONE]\n\n");
                    ([("content-type", "text/event-stream")], stream).into_response()
                }
            }),
        );
        let address = crate::helpers::serve_locally(router).await;
        Self {
            base_url: format!("http://{address}/v1"),
            requests,
        }
    }

    fn calls(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// The contents of the last request's messages, system prompt first.
    fn last_contents(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .last()
            .expect("a request")
            .iter()
            .map(|m| m["content"].as_str().unwrap_or("").to_owned())
            .collect()
    }
}

/// A second instance on the first one's database and Redis.
async fn second_instance(first: &TestApp) -> TestApp {
    let prefix = first.settings.redis.prefix.clone();
    spawn_app_on(
        &first.database,
        |settings| settings.redis.prefix = prefix,
        false,
    )
    .await
}

#[tokio::test]
async fn an_agent_edited_through_one_instance_is_used_by_the_next_turn_on_another() {
    let first = spawn_app().await;
    let second = second_instance(&first).await;
    let setup = site(&first, "Edit Co").await;
    let llm = RecordingLlm::start("house").await;
    use_stand_in(&first, &setup, &llm.base_url).await;
    let token = visitor_token(&second, &setup.public_key).await;
    reply(&second, &token, "hello").await;
    reply(&second, &token, "hello again").await;
    assert!(!llm.last_contents()[0].contains("Speak like a lighthouse keeper"));

    let response = first
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/agents/{}", setup.agent_id),
            Some(&setup.tenant.token),
        )
        .json(&json!({ "system_prompt": "Speak like a lighthouse keeper." }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    reply(&second, &token, "and now?").await;
    assert!(
        llm.last_contents()[0].contains("Speak like a lighthouse keeper"),
        "the edited prompt: {:?}",
        llm.last_contents()[0]
    );
}

#[tokio::test]
async fn an_llm_replaced_or_removed_through_one_instance_answers_the_next_turn_on_another() {
    let first = spawn_app().await;
    let second = second_instance(&first).await;
    let setup = site(&first, "Switch Co").await;
    let (old, new) = (
        RecordingLlm::start("old").await,
        RecordingLlm::start("new").await,
    );
    use_stand_in(&first, &setup, &old.base_url).await;
    let token = visitor_token(&second, &setup.public_key).await;
    assert_eq!(reply(&second, &token, "hi").await, "old answers.");
    assert_eq!(reply(&second, &token, "hi").await, "old answers.");

    use_stand_in(&first, &setup, &new.base_url).await;
    assert_eq!(reply(&second, &token, "hi").await, "new answers.");
    assert_eq!((old.calls(), new.calls()), (2, 1));

    let response = first
        .request(
            reqwest::Method::DELETE,
            "/api/v1/llm",
            Some(&setup.tenant.token),
        )
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let offline = reply(&second, &token, "hi").await;
    assert_ne!(offline, "new answers.", "the offline responder answers");
    assert_eq!(new.calls(), 1);
}

#[tokio::test]
async fn a_conversation_alternating_between_instances_keeps_its_whole_history() {
    let first = spawn_app().await;
    let second = second_instance(&first).await;
    let setup = site(&first, "Hop Co").await;
    let llm = RecordingLlm::start("hop").await;
    use_stand_in(&first, &setup, &llm.base_url).await;
    let token = visitor_token(&first, &setup.public_key).await;
    for (n, app) in [&first, &second, &first, &first, &second]
        .iter()
        .enumerate()
    {
        reply(app, &token, &format!("question {n}")).await;
        // System prompt, then every earlier question and answer, then this question.
        let contents = llm.last_contents();
        let expected: Vec<String> = (0..n)
            .flat_map(|earlier| [format!("question {earlier}"), "hop answers.".to_owned()])
            .chain([format!("question {n}")])
            .collect();
        assert_eq!(contents[1..], expected[..], "turn {n}");
    }
}
