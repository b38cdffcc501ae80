//! The chat pipeline's actors: supervision, isolation of crashes, ordering of
//! turns across instances, the tenant's own LLM, and what a turn records.

use std::time::Duration;

use agentry_actors::chat_session::FAULT_TRIGGER;
use axum::response::IntoResponse;
use serde_json::json;

use crate::chat_support::{
    fake_openai, recording_openai, reply, set_profile, site, turn, use_stand_in, visitor_token,
};
use crate::helpers::{assert_error, body, spawn_app_on, spawn_app_with};

async fn restarts(app: &crate::helpers::TestApp, actor: &str) -> f64 {
    let text = app.metrics_text().await;
    text.lines()
        .find(|line| {
            line.starts_with("agentry_actor_restarts_total")
                && line.contains(&format!("actor=\"{actor}\""))
        })
        .and_then(|line| line.rsplit(' ').next())
        .map(|value| value.parse().unwrap())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_crash_in_one_tenants_session_is_restarted_and_never_reaches_another_tenant() {
    let app = spawn_app_with(|settings| settings.chat.fault_injection = true).await;
    let first = site(&app, "Crashy Co").await;
    let second = site(&app, "Steady Co").await;
    let first_visitor = visitor_token(&app, &first.public_key).await;
    let second_visitor = visitor_token(&app, &second.public_key).await;
    // Both tenants have live sessions before the crash.
    reply(&app, &first_visitor, "hello").await;
    reply(&app, &second_visitor, "hello").await;
    let before = restarts(&app, "chat_session").await;

    let (status, error) = turn(&app, &first_visitor, FAULT_TRIGGER).await;
    assert_eq!(status, 503, "{error}");
    assert_eq!(error["error"]["code"], "unavailable");

    // The other tenant's conversation carries on, undisturbed.
    reply(&app, &second_visitor, "are you still there?").await;
    // The crashed conversation comes back after the restart backoff.
    reply(&app, &first_visitor, "and you?").await;
    assert_eq!(restarts(&app, "chat_session").await, before + 1.0);

    // The second tenant's transcript is complete and in order.
    let transcript = body(
        app.client
            .get(app.url("/api/widget/messages"))
            .bearer_auth(&second_visitor)
            .header("origin", crate::chat_support::ORIGIN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let roles: Vec<&str> = transcript["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["visitor", "assistant", "visitor", "assistant"]);
}

#[tokio::test]
async fn turns_of_one_conversation_on_two_instances_stay_ordered_and_never_duplicate() {
    // One turn of the eight answered 503 once in a full CI run, with no
    // PostgreSQL error logged: pools of 4 (the test profile) for eight turns
    // at once on a loaded machine are the likely cause. Ordering is the point.
    let first = spawn_app_with(|settings| settings.database.max_connections = 8).await;
    let prefix = first.settings.redis.prefix.clone();
    let second = spawn_app_on(
        &first.database,
        |settings| {
            settings.redis.prefix = prefix;
            settings.database.max_connections = 8;
        },
        false,
    )
    .await;
    let setup = site(&first, "Busy Co").await;
    let token = visitor_token(&first, &setup.public_key).await;

    let questions: Vec<String> = (0..8).map(|n| format!("question number {n}")).collect();
    let mut turns = Vec::new();
    for (n, question) in questions.iter().enumerate() {
        let app = if n % 2 == 0 { &first } else { &second };
        turns.push(turn(app, &token, question));
    }
    for (status, body) in futures_util::future::join_all(turns).await {
        assert_eq!(status, 200, "{body}");
    }

    let mut owner = first.owner_connection().await;
    let rows: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT seq, role, content FROM agent_messages ORDER BY seq")
            .fetch_all(&mut owner)
            .await
            .unwrap();
    assert_eq!(rows.len(), 16, "every turn stored once: {rows:?}");
    for (index, (seq, role, _)) in rows.iter().enumerate() {
        assert_eq!(*seq, index as i64, "no gaps, no duplicates");
        assert_eq!(
            role,
            if index % 2 == 0 {
                "visitor"
            } else {
                "assistant"
            },
            "a reply follows its question"
        );
    }
    let mut stored_questions: Vec<&str> = rows
        .iter()
        .filter(|r| r.1 == "visitor")
        .map(|r| r.2.as_str())
        .collect();
    stored_questions.sort();
    let mut expected: Vec<&str> = questions.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(stored_questions, expected);
}

#[tokio::test]
async fn a_tenants_own_llm_answers_and_its_raw_output_is_cleaned_before_storage() {
    let app = spawn_app_with(|_| {}).await;
    let setup = site(&app, "Byo Co").await;
    let base_url = fake_openai(&[
        "Hello <b>the",
        "re</b>! We open at <script>alert(1)</script>",
        "8am.",
    ])
    .await;
    let configured = app
        .request(reqwest::Method::PUT, "/api/v1/llm", Some(&setup.tenant.token))
        .json(&json!({ "provider": "vllm", "model": "house-model", "base_url": base_url, "api_key": "sk-test-123456" }))
        .send()
        .await
        .unwrap();
    assert_eq!(configured.status(), 200);
    let view = body(configured).await;
    assert_eq!(view["has_api_key"], true);
    assert!(!view.to_string().contains("sk-test-123456"));

    let token = visitor_token(&app, &setup.public_key).await;
    let answer = reply(&app, &token, "When do you open?").await;
    assert_eq!(answer, "Hello there! We open at 8am.");

    let mut owner = app.owner_connection().await;
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT content FROM agent_messages WHERE role = 'assistant'")
            .fetch_all(&mut owner)
            .await
            .unwrap();
    assert_eq!(stored, vec!["Hello there! We open at 8am.".to_owned()]);
    let usage: (String, String, i32, i32) = sqlx::query_as(
        "SELECT provider, model, prompt_tokens, completion_tokens FROM agent_usage_events WHERE kind = 'chat'",
    )
    .fetch_one(&mut owner)
    .await
    .unwrap();
    assert_eq!(usage, ("vllm".into(), "house-model".into(), 321, 12));
    let embedding: i64 =
        sqlx::query_scalar("SELECT count(*) FROM agent_usage_events WHERE kind = 'embedding'")
            .fetch_one(&mut owner)
            .await
            .unwrap();
    assert_eq!(
        embedding, 0,
        "an empty knowledge base embeds nothing, so no embedding usage is recorded"
    );
}

#[tokio::test]
async fn a_failing_provider_gets_the_visitor_a_generic_apology_and_the_turn_is_still_recorded() {
    let app = spawn_app_with(|_| {}).await;
    let setup = site(&app, "Down Co").await;
    // Nothing listens on port 1.
    let configured = app
        .request(reqwest::Method::PUT, "/api/v1/llm", Some(&setup.tenant.token))
        .json(&json!({ "provider": "ollama", "model": "llama3", "base_url": "http://127.0.0.1:1/v1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(configured.status(), 200);
    let token = visitor_token(&app, &setup.public_key).await;
    let answer = reply(&app, &token, "Anyone there?").await;
    assert!(answer.starts_with("Sorry"), "{answer}");
    assert!(
        !answer.contains("127.0.0.1") && !answer.contains("ollama"),
        "{answer}"
    );
    let mut owner = app.owner_connection().await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM agent_messages")
        .fetch_one(&mut owner)
        .await
        .unwrap();
    assert_eq!(count, 2);
}

#[tokio::test]
async fn idle_tenant_supervisors_stop_and_restart_on_demand() {
    let app = spawn_app_with(|settings| {
        settings.chat.session_idle_secs = 0;
        settings.chat.tenant_idle_secs = 0;
    })
    .await;
    let setup = site(&app, "Sleepy Co").await;
    let token = visitor_token(&app, &setup.public_key).await;
    reply(&app, &token, "hello").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while app.state.pipeline.active_tenants().await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle tenant supervisor never stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The next turn starts the tenant's actors again.
    reply(&app, &token, "hello again").await;
}

#[tokio::test]
async fn llm_configuration_is_validated_and_only_managers_change_it() {
    let app = spawn_app_with(|_| {}).await;
    let setup = site(&app, "Config Co").await;
    let put = |payload: serde_json::Value| {
        let request = app
            .request(
                reqwest::Method::PUT,
                "/api/v1/llm",
                Some(&setup.tenant.token),
            )
            .json(&payload);
        async move { request.send().await.unwrap() }
    };
    assert_error(
        put(json!({ "provider": "skynet", "model": "x" })).await,
        422,
        "invalid",
    )
    .await;
    assert_error(
        put(json!({ "provider": "openai", "model": "gpt-4o-mini" })).await,
        422,
        "invalid",
    )
    .await;
    assert_error(
        put(json!({ "provider": "azure", "api_key": "k" })).await,
        422,
        "invalid",
    )
    .await;
    let shown = body(app.get("/api/v1/llm", &setup.tenant.token).await).await;
    assert_eq!(shown["provider"], "offline");
    let response = app
        .request(
            reqwest::Method::DELETE,
            "/api/v1/llm",
            Some(&setup.tenant.token),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
}

#[tokio::test]
async fn where_private_base_urls_are_not_allowed_a_tenant_cannot_point_its_llm_into_the_private_network(
) {
    let app = spawn_app_with(|settings| settings.llm.allow_private_base_urls = false).await;
    let setup = site(&app, "Sneaky Co").await;
    for base_url in [
        "http://127.0.0.1:11434/v1",
        "http://169.254.169.254/latest",
        "http://localhost:8080/v1",
    ] {
        let response = app
            .request(
                reqwest::Method::PUT,
                "/api/v1/llm",
                Some(&setup.tenant.token),
            )
            .json(&json!({ "provider": "ollama", "model": "llama3", "base_url": base_url }))
            .send()
            .await
            .unwrap();
        let error = assert_error(response, 422, "invalid").await;
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("private network"),
            "{error}"
        );
    }
    // Ollama's default base URL is loopback too.
    let response = app
        .request(
            reqwest::Method::PUT,
            "/api/v1/llm",
            Some(&setup.tenant.token),
        )
        .json(&json!({ "provider": "ollama", "model": "llama3" }))
        .send()
        .await
        .unwrap();
    assert_error(response, 422, "invalid").await;
}

#[tokio::test]
async fn a_tenants_llm_connection_is_sealed_and_does_not_open_in_another_tenants_row() {
    let app = spawn_app_with(|_| {}).await;
    let first = site(&app, "Sealed Co").await;
    let second = site(&app, "Thief Co").await;
    let base_url = fake_openai(&["From the first tenant's model."]).await;
    let configured = app
        .request(reqwest::Method::PUT, "/api/v1/llm", Some(&first.tenant.token))
        .json(&json!({ "provider": "vllm", "model": "m", "base_url": base_url, "api_key": "sk-first-tenant-secret" }))
        .send()
        .await
        .unwrap();
    assert_eq!(configured.status(), 200);
    let shown = body(app.get("/api/v1/llm", &first.tenant.token).await).await;
    assert_eq!(shown["base_url"], base_url.as_str());
    assert_eq!(shown["has_api_key"], true);
    assert!(!shown.to_string().contains("sk-first-tenant-secret"));

    let mut owner = app.owner_connection().await;
    let sealed: Vec<u8> =
        sqlx::query_scalar("SELECT connection_sealed FROM tenant_llm_configs WHERE tenant_id = $1")
            .bind(first.tenant.id.as_uuid())
            .fetch_one(&mut owner)
            .await
            .unwrap();
    let contains = |needle: &[u8]| sealed.windows(needle.len()).any(|window| window == needle);
    assert!(
        !contains(b"sk-first-tenant-secret") && !contains(base_url.as_bytes()),
        "stored in the clear"
    );

    // Copied into the second tenant's row, the ciphertext does not open: that tenant gets an apology.
    sqlx::query("INSERT INTO tenant_llm_configs (tenant_id, provider, model, connection_sealed) VALUES ($1, 'vllm', 'm', $2)")
        .bind(second.tenant.id.as_uuid())
        .bind(&sealed)
        .execute(&mut owner)
        .await
        .unwrap();
    let token = visitor_token(&app, &second.public_key).await;
    let answer = reply(&app, &token, "hello?").await;
    assert!(answer.starts_with("Sorry"), "{answer}");
    let token = visitor_token(&app, &first.public_key).await;
    assert_eq!(
        reply(&app, &token, "hello?").await,
        "From the first tenant's model."
    );
}

#[tokio::test]
async fn a_turn_may_take_longer_than_the_request_timeout_when_its_own_timeout_allows() {
    let app = spawn_app_with(|settings| {
        settings.http.request_timeout_secs = 1;
        settings.chat.turn_timeout_secs = 10;
    })
    .await;
    let setup = site(&app, "Slow Co").await;
    // A model that takes longer to answer than any request but a turn may take.
    let router = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(|| async {
            tokio::time::sleep(Duration::from_millis(2_500)).await;
            let delta =
                json!({ "choices": [{ "index": 0, "delta": { "content": "Worth the wait." } }] });
            (
                [("content-type", "text/event-stream")],
                format!("data: {delta}\n\ndata: [DONE]\n\n"),
            )
                .into_response()
        }),
    );
    let address = crate::helpers::serve_locally(router).await;
    use_stand_in(&app, &setup, &format!("http://{address}/v1")).await;
    let token = visitor_token(&app, &setup.public_key).await;
    let started = std::time::Instant::now();
    assert_eq!(reply(&app, &token, "hello?").await, "Worth the wait.");
    assert!(started.elapsed() > Duration::from_secs(2));
}

#[tokio::test]
async fn dashes_from_the_model_are_rewritten_in_the_stream_and_in_storage() {
    let app = spawn_app_with(|_| {}).await;
    let setup = site(&app, "Dash Co").await;
    let base_url = fake_openai(&["We open 7–9 on Sat", "urdays — come by", " any time."]).await;
    use_stand_in(&app, &setup, &base_url).await;
    let token = visitor_token(&app, &setup.public_key).await;
    let answer = reply(&app, &token, "When do you open?").await;
    assert_eq!(answer, "We open 7 to 9 on Saturdays, come by any time.");
    let mut owner = app.owner_connection().await;
    let stored: String =
        sqlx::query_scalar("SELECT content FROM agent_messages WHERE role = 'assistant'")
            .fetch_one(&mut owner)
            .await
            .unwrap();
    assert_eq!(stored, answer);
}

/// The chat usage row's guardrail removals of the conversation's latest turn.
async fn latest_removals(app: &crate::helpers::TestApp) -> serde_json::Value {
    let mut owner = app.owner_connection().await;
    sqlx::query_scalar(
        "SELECT guardrail_removals FROM agent_usage_events WHERE kind = 'chat'
         ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .fetch_one(&mut owner)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_apr_quote_from_the_model_is_removed_end_to_end_and_a_reply_with_nothing_left_becomes_the_fallback(
) {
    let app = spawn_app_with(|_| {}).await;
    let setup = site(&app, "Ground Co").await;
    let patch = |profile: serde_json::Value| set_profile(&app, &setup, profile);
    let facts = json!(["A check-up costs 85 dollars.", "Financing at 4.9% APR."]);
    let response = patch(json!({ "facts": facts })).await;
    assert_eq!(response.status(), 200);
    let base_url = fake_openai(&[
        "A check-up costs $85. ",
        "We finance it at 4.9% APR",
        " for 12 months.",
    ])
    .await;
    use_stand_in(&app, &setup, &base_url).await;
    let token = visitor_token(&app, &setup.public_key).await;
    let cleaned = "A check-up costs $85. I can't quote financing terms here; \
                   our finance team can walk you through the options.";
    // The APR is in the agent's facts: the directive removes it all the same.
    assert_eq!(
        reply(&app, &token, "How much is a check-up?").await,
        cleaned
    );
    let mut owner = app.owner_connection().await;
    let stored: String = sqlx::query_scalar(
        "SELECT content FROM agent_messages WHERE role = 'assistant' ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(&mut owner)
    .await
    .unwrap();
    assert_eq!(stored, cleaned);
    assert_eq!(
        latest_removals(&app).await,
        json!({ "no_financing_quotes": 1 })
    );

    // Switched off, the grounded APR stands.
    let response = patch(json!({
        "facts": facts,
        "directives": { "no_financing_quotes": false }
    }))
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        reply(&app, &token, "How much is a check-up?").await,
        "A check-up costs $85. We finance it at 4.9% APR for 12 months."
    );
    assert_eq!(latest_removals(&app).await, json!({}));

    // Without the facts, nothing of the reply can stand: the agent's fallback is said instead.
    let response = patch(json!({
        "fallback": "Let me find someone who can confirm that.",
        "directives": { "no_financing_quotes": false }
    }))
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        reply(&app, &token, "How much is a check-up?").await,
        "Let me find someone who can confirm that."
    );
    assert_eq!(latest_removals(&app).await, json!({ "ungrounded": 2 }));
    for bad in [
        json!({ "fallback": " " }),
        json!({ "directives": { "no_financing_quotes": "off" } }),
        json!({ "directives": { "no_such_rule": true } }),
    ] {
        let response = patch(bad.clone()).await;
        assert_eq!(response.status(), 422, "{bad}");
        assert!(body(response).await["error"]["message"].is_string());
    }
}

#[tokio::test]
async fn a_competitor_praised_by_the_model_is_deflected_and_the_prompt_names_the_competitors() {
    let app = spawn_app_with(|_| {}).await;
    let setup = site(&app, "Rival Co").await;
    let response = set_profile(
        &app,
        &setup,
        json!({ "brand": "Rival Co", "competitors": ["Acme Auto"] }),
    )
    .await;
    assert_eq!(response.status(), 200);
    let (base_url, prompts) =
        recording_openai(&["Acme Auto has great prices. ", "Ask us anything."]).await;
    use_stand_in(&app, &setup, &base_url).await;
    let token = visitor_token(&app, &setup.public_key).await;
    assert_eq!(
        reply(&app, &token, "Is Acme Auto cheaper than you?").await,
        "I can only speak to the products and services of Rival Co. Ask us anything."
    );
    let system = prompts.lock().unwrap()[0].clone();
    assert!(
        system.contains("compare these competitors: <<<Acme Auto>>>"),
        "{system}"
    );
}

#[tokio::test]
async fn an_agent_can_store_visitor_messages_scrubbed_of_personal_data() {
    let app = spawn_app_with(|_| {}).await;
    let setup = site(&app, "Scrub Co").await;
    let token = visitor_token(&app, &setup.public_key).await;
    let message = "I'm Ana, ana@example.com, card 4111 1111 1111 1111";
    reply(&app, &token, message).await;
    let response = set_profile(&app, &setup, json!({ "scrub_visitor_messages": true })).await;
    assert_eq!(response.status(), 200);
    let answer = reply(&app, &token, message).await;
    let mut owner = app.owner_connection().await;
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT content FROM agent_messages WHERE role = 'visitor' ORDER BY seq",
    )
    .fetch_all(&mut owner)
    .await
    .unwrap();
    assert_eq!(
        stored,
        vec![
            message.to_owned(),
            "I'm Ana, [EMAIL], card [CARD]".to_owned()
        ],
        "off by default; on, the very next turn is stored scrubbed"
    );
    // The turn's own model still read the message: it thanked Ana by name.
    assert!(answer.contains("Ana"), "{answer}");
}

#[tokio::test]
async fn a_visitor_raising_an_escalation_topic_gets_the_escalate_tool_called() {
    let app = spawn_app_with(|_| {}).await;
    let setup = site(&app, "Escalate Co").await;
    let response = set_profile(&app, &setup, json!({ "escalation_topics": ["refunds"] })).await;
    assert_eq!(response.status(), 200);
    let token = visitor_token(&app, &setup.public_key).await;
    reply(&app, &token, "What time do you close?").await;
    reply(&app, &token, "Can I get a refund for my visit?").await;
    let runs: Vec<(serde_json::Value, serde_json::Value)> =
        crate::privacy::opened_runs(&app, &setup.tenant.token)
            .await
            .into_iter()
            .map(|run| (run["tool"].clone(), run["input"].clone()))
            .collect();
    assert_eq!(
        runs,
        vec![(
            json!("escalate_to_human"),
            json!({ "reason": "escalation topic: refunds" })
        )]
    );
}
