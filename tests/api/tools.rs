//! Tools that act: what the visitor is told rests on committed rows, each run
//! is recorded once per call id, and every effect has its outbox event.

use agentry::db::tool_runs::PgToolRunner;
use agentry_actors::llm::ToolCall;
use agentry_actors::tools::{self, RunStatus, ToolRunner};
use agentry_actors::{AgentId, ConversationId};
use axum::response::IntoResponse;
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use std::time::Duration;

use crate::chat_support::{reply, site, use_stand_in, visitor_token, Site};
use crate::dispatch::{endpoint, eventually, rows, Receiver};
use crate::helpers::{body, spawn_app, TestApp};
use crate::privacy::opened_runs;

/// The one conversation of `site`'s tenant.
async fn only_conversation(conn: &mut PgConnection, site: &Site) -> Uuid {
    sqlx::query_scalar(
        "SELECT c.id FROM conversations c JOIN agents a ON a.id = c.agent_id
         WHERE a.id = $1::uuid",
    )
    .bind(&site.agent_id)
    .fetch_one(conn)
    .await
    .unwrap()
}

async fn events(conn: &mut PgConnection, tenant: Uuid) -> Vec<(String, Value)> {
    sqlx::query_as("SELECT event_type, payload FROM outbox_events WHERE tenant_id = $1 ORDER BY id")
        .bind(tenant)
        .fetch_all(conn)
        .await
        .unwrap()
}

#[derive(sqlx::FromRow)]
struct StoredLead {
    id: Uuid,
    name: Option<String>,
    email: Option<String>,
    source_conversation_id: Option<Uuid>,
}

#[derive(Debug, sqlx::FromRow)]
struct ActionRun {
    tool: String,
    status: String,
    input: Value,
    output: Value,
    call_id: Option<String>,
    duration_ms: Option<i32>,
}

#[tokio::test]
async fn a_lead_given_in_chat_is_saved_with_its_event_before_the_visitor_is_told() {
    let app = spawn_app().await;
    let site = site(&app, "Lead Co").await;
    let token = visitor_token(&app, &site.public_key).await;
    let answer = reply(&app, &token, "I'm Ana, reach me at Ana.Lead@Example.org").await;
    assert!(
        answer.contains("I've saved your contact details"),
        "{answer}"
    );

    let mut owner = app.owner_connection().await;
    let conversation = only_conversation(&mut owner, &site).await;
    let leads: Vec<StoredLead> = sqlx::query_as(
        "SELECT id, name, email, source_conversation_id FROM leads WHERE tenant_id = $1",
    )
    .bind(site.tenant.id.as_uuid())
    .fetch_all(&mut owner)
    .await
    .unwrap();
    assert_eq!(leads.len(), 1);
    let lead = &leads[0];
    assert_eq!(
        (
            lead.name.as_deref(),
            lead.email.as_deref(),
            lead.source_conversation_id
        ),
        (
            Some("Ana"),
            Some("ana.lead@example.org"),
            Some(conversation)
        )
    );
    let lead_id = lead.id;

    let runs: Vec<ActionRun> = sqlx::query_as(
        "SELECT tool, status, input, output, call_id, duration_ms FROM agent_action_runs
         WHERE conversation_id = $1",
    )
    .bind(conversation)
    .fetch_all(&mut owner)
    .await
    .unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert_eq!(
        (run.tool.as_str(), run.status.as_str()),
        ("capture_lead", "succeeded")
    );
    assert_eq!(
        run.input,
        json!({ "name": "sealed", "email": "sealed" }),
        "the row keeps the arguments' shape; the values are sealed"
    );
    let opened = opened_runs(&app, &site.tenant.token).await;
    assert_eq!(
        opened[0]["input"]["email"], "Ana.Lead@Example.org",
        "the input as the model sent it, opened with the conversation's key"
    );
    assert_eq!(run.output["status"], "saved");
    assert!(run
        .call_id
        .as_deref()
        .is_some_and(|id| id.starts_with("call_")));
    assert!(run.duration_ms.is_some());

    let emitted = events(&mut owner, site.tenant.id.as_uuid()).await;
    assert_eq!(emitted.len(), 1, "{emitted:?}");
    assert_eq!(emitted[0].0, "lead.created");
    assert_eq!(emitted[0].1["lead"]["id"], json!(lead_id));
    assert_eq!(emitted[0].1["conversation_id"], json!(conversation));
    let linked: Option<Uuid> =
        sqlx::query_scalar("SELECT lead_id FROM conversations WHERE id = $1")
            .bind(conversation)
            .fetch_one(&mut owner)
            .await
            .unwrap();
    assert_eq!(linked, Some(lead_id));
}

#[tokio::test]
async fn a_refused_phone_number_is_recorded_as_rejected_and_never_claimed_saved() {
    let app = spawn_app().await;
    let site = site(&app, "Typo Co").await;
    let token = visitor_token(&app, &site.public_key).await;
    // 555-867 is no real exchange: the phone fails its schema format.
    let answer = reply(&app, &token, "I'm Sam, call me at 555-867-5309").await;
    assert!(answer.contains("doesn't look right"), "{answer}");
    assert!(!answer.contains("saved"), "{answer}");

    let mut owner = app.owner_connection().await;
    let (status, stored): (String, Value) =
        sqlx::query_as("SELECT status, output FROM agent_action_runs")
            .fetch_one(&mut owner)
            .await
            .unwrap();
    assert_eq!(status, "rejected");
    assert!(
        !stored.to_string().contains("555"),
        "a refusal quotes the number: stored sealed, {stored}"
    );
    let output = &opened_runs(&app, &site.tenant.token).await[0]["output"];
    assert!(
        output["errors"][0].as_str().unwrap().contains("phone"),
        "{output}"
    );
    let leads: i64 = sqlx::query_scalar("SELECT count(*) FROM leads")
        .fetch_one(&mut owner)
        .await
        .unwrap();
    assert_eq!(leads, 0);
    assert!(events(&mut owner, site.tenant.id.as_uuid())
        .await
        .is_empty());
}

#[tokio::test]
async fn a_booking_before_contact_details_asks_for_them_and_joins_the_lead_later() {
    let app = spawn_app().await;
    let site = site(&app, "Booking Co").await;
    let token = visitor_token(&app, &site.public_key).await;
    let answer = reply(
        &app,
        &token,
        "Can I book an appointment for Tuesday at 3pm?",
    )
    .await;
    assert!(answer.contains("appointment request"), "{answer}");
    assert!(
        answer.contains("best email address or phone number"),
        "{answer}"
    );
    let answer = reply(&app, &token, "Sure, it's jo@example.com").await;
    assert!(answer.contains("saved your contact details"), "{answer}");

    let mut owner = app.owner_connection().await;
    let conversation = only_conversation(&mut owner, &site).await;
    let (booking_lead, requested_time): (Option<Uuid>, String) =
        sqlx::query_as("SELECT lead_id, requested_time FROM bookings WHERE conversation_id = $1")
            .bind(conversation)
            .fetch_one(&mut owner)
            .await
            .unwrap();
    assert_eq!(
        requested_time,
        "Can I book an appointment for Tuesday at 3pm?"
    );
    let lead: Uuid = sqlx::query_scalar("SELECT id FROM leads WHERE email = 'jo@example.com'")
        .fetch_one(&mut owner)
        .await
        .unwrap();
    assert_eq!(booking_lead, Some(lead), "the booking found its lead");
    let detail = body(
        app.get(&format!("/api/v1/leads/{lead}"), &site.tenant.token)
            .await,
    )
    .await;
    assert_eq!(detail["email"], "jo@example.com");
    assert_eq!(
        detail["bookings"][0]["requested_time"],
        "Can I book an appointment for Tuesday at 3pm?"
    );
    assert_eq!(detail["quote_requests"], json!([]));

    let emitted = events(&mut owner, site.tenant.id.as_uuid()).await;
    let types: Vec<&str> = emitted.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["booking.requested", "lead.created"]);
    assert_eq!(
        emitted[0].1["lead"],
        Value::Null,
        "no lead yet when it was booked"
    );
    assert_eq!(
        emitted[0].1["booking"]["requested_time"],
        "Can I book an appointment for Tuesday at 3pm?"
    );
}

#[tokio::test]
async fn a_quote_request_is_tied_to_the_conversations_lead() {
    let app = spawn_app().await;
    let site = site(&app, "Quote Co").await;
    let token = visitor_token(&app, &site.public_key).await;
    reply(&app, &token, "Hi, I'm Lee: lee@example.com").await;
    let answer = reply(&app, &token, "How much is a full roof replacement?").await;
    assert!(answer.contains("prepare a quote"), "{answer}");
    assert!(!answer.contains("best email address"), "{answer}");

    let mut owner = app.owner_connection().await;
    let (details, lead_email): (String, String) = sqlx::query_as(
        "SELECT q.details, l.email FROM quote_requests q JOIN leads l ON l.id = q.lead_id",
    )
    .fetch_one(&mut owner)
    .await
    .unwrap();
    assert_eq!(details, "How much is a full roof replacement?");
    assert_eq!(lead_email, "lee@example.com");
    let emitted = events(&mut owner, site.tenant.id.as_uuid()).await;
    assert_eq!(emitted[1].0, "quote.requested");
    assert_eq!(emitted[1].1["lead"]["email"], "lee@example.com");
}

#[tokio::test]
async fn escalation_marks_the_conversation_waiting_and_the_dashboard_lists_it() {
    let app = spawn_app().await;
    let site = site(&app, "Human Co").await;
    let token = visitor_token(&app, &site.public_key).await;
    let calm = visitor_token(&app, &site.public_key).await;
    reply(&app, &calm, "What time do you open?").await;
    let answer = reply(&app, &token, "Can I talk to a real person?").await;
    assert!(
        answer.contains("asked a person on the team to take over"),
        "{answer}"
    );
    let again = reply(&app, &token, "Hello? I want a human").await;
    assert!(again.contains("already has your conversation"), "{again}");

    let mut owner = app.owner_connection().await;
    let escalations: Vec<Value> = sqlx::query_scalar(
        "SELECT payload FROM outbox_events WHERE event_type = 'support.escalated'",
    )
    .fetch_all(&mut owner)
    .await
    .unwrap();
    assert_eq!(escalations.len(), 1, "one event however often it is asked");
    assert_eq!(
        escalations[0]["escalation"]["reason"],
        "Can I talk to a real person?"
    );

    let listed = body(
        app.get(
            "/api/v1/conversations?status=waiting_for_human",
            &site.tenant.token,
        )
        .await,
    )
    .await;
    let waiting = listed["conversations"].as_array().unwrap();
    assert_eq!(waiting.len(), 1, "{listed}");
    assert_eq!(waiting[0]["status"], "waiting_for_human");
    assert_eq!(
        waiting[0]["escalation_reason"],
        "Can I talk to a real person?"
    );
    assert_eq!(waiting[0]["id"], json!(escalations[0]["conversation_id"]));
    let all = body(app.get("/api/v1/conversations", &site.tenant.token).await).await;
    assert_eq!(all["conversations"].as_array().unwrap().len(), 2);

    let other = app.create_tenant("Elsewhere").await;
    let theirs = body(
        app.get(
            "/api/v1/conversations?status=waiting_for_human",
            &other.token,
        )
        .await,
    )
    .await;
    assert_eq!(theirs["conversations"], json!([]));
    let bad = app
        .get("/api/v1/conversations?status=closed", &site.tenant.token)
        .await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn a_call_id_runs_once_however_often_it_arrives() {
    let app = spawn_app().await;
    let site = site(&app, "Once Co").await;
    let token = visitor_token(&app, &site.public_key).await;
    reply(&app, &token, "hello").await;
    let mut owner = app.owner_connection().await;
    let conversation = only_conversation(&mut owner, &site).await;

    let runner = PgToolRunner::new(
        app.store.clone(),
        app.state.keyring.clone(),
        app.state.live.clone(),
    );
    let tenant = site.tenant.id;
    let agent = AgentId::from_uuid(site.agent_id.parse().unwrap());
    let call = ToolCall {
        id: "call_repeated".into(),
        name: tools::REQUEST_QUOTE.into(),
        arguments: json!({ "details": "two windows" }),
    };
    let runs = futures_util::future::join_all((0..4).map(|_| {
        runner.run(
            tenant,
            agent,
            ConversationId::from_uuid(conversation),
            &call,
            tools::check(&call),
        )
    }))
    .await;
    for run in &runs {
        let run = run.as_ref().unwrap();
        assert_eq!(run.status, RunStatus::Succeeded);
        assert_eq!(run.output, runs[0].as_ref().unwrap().output);
    }
    let counts: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM quote_requests), (SELECT count(*) FROM agent_action_runs),
                (SELECT count(*) FROM outbox_events)",
    )
    .fetch_one(&mut owner)
    .await
    .unwrap();
    assert_eq!(counts, (1, 1, 1), "one quote, one run, one event");
}

/// An OpenAI-compatible stand-in that answers its first request with a
/// tool call only and every later one with text naming what it was told.
async fn tool_first_openai() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = requests.clone();
    let router = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |axum::Json(request): axum::Json<Value>| {
            let seen = seen.clone();
            async move {
                let first = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(request.clone());
                    seen.len() == 1
                };
                let chunk = if first {
                    json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_lead_1","type":"function","function":{"name":"capture_lead","arguments":"{\"email\":\"kim@example.com\"}"}}]}}]})
                } else {
                    let told = request["messages"]
                        .as_array()
                        .and_then(|m| m.last())
                        .and_then(|m| m["content"].as_str())
                        .unwrap_or_default()
                        .to_owned();
                    let status: Value = serde_json::from_str(&told).unwrap_or_default();
                    json!({"choices":[{"index":0,"delta":{"content": format!("Done: your details are {}.", status["status"].as_str().unwrap_or("unknown"))}}]})
                };
                let stream = format!("data: {chunk}\n\ndata: [DONE]\n\n");
                ([("content-type", "text/event-stream")], stream).into_response()
            }
        }),
    );
    let address = crate::helpers::serve_locally(router).await;
    (format!("http://{address}/v1"), requests)
}

#[tokio::test]
async fn a_tool_only_first_answer_from_a_real_provider_gets_a_spoken_follow_up() {
    let app: TestApp = spawn_app().await;
    let site = site(&app, "Loop Co").await;
    let (base_url, requests) = tool_first_openai().await;
    use_stand_in(&app, &site, &base_url).await;
    let token = visitor_token(&app, &site.public_key).await;
    let answer = reply(&app, &token, "kim@example.com, please call back").await;
    assert_eq!(answer, "Done: your details are saved.");

    let requests = requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2, "one tool round, then the answer");
    let messages = requests[1]["messages"].as_array().unwrap();
    let n = messages.len();
    assert_eq!(messages[n - 2]["tool_calls"][0]["id"], "call_lead_1");
    assert_eq!(messages[n - 1]["role"], "tool");
    assert_eq!(messages[n - 1]["tool_call_id"], "call_lead_1");

    let mut owner = app.owner_connection().await;
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT content FROM agent_messages WHERE role = 'assistant'")
            .fetch_all(&mut owner)
            .await
            .unwrap();
    assert_eq!(
        stored,
        [answer],
        "the stored reply is the spoken one, never empty"
    );
    let email: String = sqlx::query_scalar("SELECT email FROM leads")
        .fetch_one(&mut owner)
        .await
        .unwrap();
    assert_eq!(email, "kim@example.com");
}

#[tokio::test]
async fn a_lead_left_in_chat_reaches_the_tenants_webhook_receiver() {
    let app = spawn_app().await;
    let site = site(&app, "Hooked Co").await;
    let receiver = Receiver::answering(200).await;
    let endpoint = endpoint(&app, &site.tenant, &receiver.url("127.0.0.1")).await;
    let token = visitor_token(&app, &site.public_key).await;
    reply(&app, &token, "I'm Rae, rae@example.com").await;

    let delivered = eventually(Duration::from_secs(10), "the lead's webhook", || async {
        let delivered = receiver.delivered();
        (!delivered.is_empty()).then_some(delivered)
    })
    .await;
    assert_eq!(delivered.len(), 1);
    let hook = &delivered[0].body;
    assert_eq!(hook["type"], "lead.created");
    assert_eq!(hook["data"]["lead"]["email"], "rae@example.com");
    assert_eq!(hook["data"]["lead"]["name"], "Rae");
    let recorded = eventually(Duration::from_secs(5), "the delivery row", || async {
        let rows = rows(&app, endpoint).await;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(recorded[0].outcome, "success");
    assert_eq!(
        delivered[0].webhook_id,
        agentry::webhook_delivery::webhook_id(recorded[0].event_id, endpoint)
    );
}
