//! The MCP server at `/mcp`: checked by the official `mcp` Python SDK, which
//! we did not write (`bash .ci/run` installs it and sets AGENTRY_PYTHON;
//! without that variable that test says so and passes), and by raw JSON-RPC
//! for what a client library would hide (status codes, isolation).

use serde_json::{json, Value};

use crate::chat_support::{reply, site, visitor_token};
use crate::helpers::{assert_error, body, create_token, spawn_app, TestApp};

const PROTOCOL: &str = "2025-06-18";

/// One stateless JSON-RPC call of `method`; the HTTP status and the body.
async fn rpc(app: &TestApp, token: Option<&str>, method: &str, params: Value) -> (u16, Value) {
    let mut request = app
        .client
        .post(app.url("/mcp"))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", PROTOCOL)
        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn call(app: &TestApp, token: &str, tool: &str, arguments: Value) -> Value {
    let (status, reply) = rpc(
        app,
        Some(token),
        "tools/call",
        json!({ "name": tool, "arguments": arguments }),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    reply["result"].clone()
}

#[tokio::test]
async fn the_official_python_sdk_initializes_lists_tools_reads_and_meets_a_scope_error() {
    let Ok(python) = std::env::var("AGENTRY_PYTHON") else {
        eprintln!(
            "MCP SDK test not run: set AGENTRY_PYTHON to a Python with mcp (bash .ci/run does)"
        );
        return;
    };
    let app = spawn_app().await;
    let tenant = app.create_tenant("MCP Co").await;
    let (_, writer) = create_token(&app, &tenant.token, &["leads:read", "leads:write"]).await;
    let (_, reader) = create_token(&app, &tenant.token, &["leads:read"]).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp_client.py");
    // Asynchronously: the server under test runs on this test's own runtime.
    let output = tokio::process::Command::new(python)
        .args([script, &app.url("/mcp"), &writer, &reader])
        .output()
        .await
        .expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("one JSON report");

    assert_eq!(report["server_name"], "agentry");
    let tools: Vec<&str> = report["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| tool.as_str().unwrap())
        .collect();
    assert_eq!(
        tools,
        [
            "add_knowledge_document",
            "create_lead",
            "get_conversation",
            "get_lead",
            "list_leads",
            "list_webhook_deliveries",
            "search_conversations"
        ]
    );
    let lead_schema = &report["schemas"]["create_lead"]["properties"];
    assert!(lead_schema["email"].is_object(), "{lead_schema}");

    let created = &report["created"];
    assert_eq!(created["is_error"], false, "{created}");
    assert_eq!(created["structured"]["email"], "ada@example.com");
    assert_eq!(report["invalid"]["is_error"], true);
    assert_eq!(
        report["invalid"]["structured"]["error"]["message"],
        "a lead needs an email or a phone"
    );

    let listed = &report["listed"]["structured"]["leads"];
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(report["got"]["structured"]["notes"], "met over MCP");

    let refused = &report["read_only_write"];
    assert_eq!(refused["is_error"], true, "{refused}");
    assert_eq!(refused["structured"]["error"]["code"], "insufficient_scope");
    assert_eq!(refused["structured"]["error"]["status"], 403);
    let bad_token = &report["bad_token"];
    assert_eq!(bad_token["accepted"], false, "{bad_token}");
    assert_eq!(bad_token["error"], "MCPError", "{bad_token}");
    assert_eq!(bad_token["data"]["status"], 401, "{bad_token}");

    // The lead the SDK created is the REST API's lead, with its event.
    let leads = body(app.get("/api/v1/leads", &tenant.token).await).await;
    assert_eq!(leads["leads"].as_array().unwrap().len(), 1);
    let mut owner = app.owner_connection().await;
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox_events WHERE event_type = 'lead.created'")
            .fetch_one(&mut owner)
            .await
            .unwrap();
    assert_eq!(events, 1, "the read-only token's create_lead made nothing");
}

#[tokio::test]
async fn without_a_valid_token_mcp_answers_a_json_401() {
    let app = spawn_app().await;
    let (status, reply) = rpc(&app, None, "tools/list", json!({})).await;
    assert_eq!(status, 401);
    assert_eq!(reply["error"]["code"], -32001, "{reply}");
    assert_eq!(reply["error"]["data"]["code"], "unauthorized");
    let (status, _) = rpc(&app, Some("agt_forged"), "tools/list", json!({})).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn tools_see_only_their_tenant_and_honour_every_scope() {
    let app = spawn_app().await;
    let first = site(&app, "First Co").await;
    let second = app.create_tenant("Second Co").await;
    let (_, all) = create_token(
        &app,
        &first.tenant.token,
        &[
            "leads:read",
            "leads:write",
            "conversations:read",
            "knowledge:write",
            "webhooks:read",
        ],
    )
    .await;
    let (_, other) = create_token(&app, &second.token, &["leads:read", "conversations:read"]).await;
    let (_, none) = create_token(&app, &first.tenant.token, &["webhooks:write"]).await;

    let lead = call(
        &app,
        &all,
        "create_lead",
        json!({ "phone": "+14155550100" }),
    )
    .await;
    let lead_id = lead["structuredContent"]["id"].as_str().unwrap().to_owned();
    let theirs = call(&app, &other, "get_lead", json!({ "lead_id": lead_id })).await;
    assert_eq!(theirs["isError"], true);
    assert_eq!(theirs["structuredContent"]["error"]["code"], "not_found");

    // A conversation found by what the visitor said, then read whole.
    let visitor = visitor_token(&app, &first.public_key).await;
    reply(&app, &visitor, "Do you service heat pumps?").await;
    let found = call(
        &app,
        &all,
        "search_conversations",
        json!({ "q": "HEAT pump" }),
    )
    .await;
    let conversations = found["structuredContent"]["conversations"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(conversations.len(), 1, "{found}");
    let missed = call(&app, &all, "search_conversations", json!({ "q": "boiler" })).await;
    assert_eq!(
        missed["structuredContent"]["conversations"],
        json!([]),
        "{missed}"
    );
    let wildcard = call(&app, &all, "search_conversations", json!({ "q": "%" })).await;
    assert_eq!(wildcard["structuredContent"]["conversations"], json!([]));
    let id = conversations[0]["id"].as_str().unwrap();
    let conversation = call(
        &app,
        &all,
        "get_conversation",
        json!({ "conversation_id": id }),
    )
    .await;
    let messages = conversation["structuredContent"]["messages"]
        .as_array()
        .unwrap();
    assert_eq!(messages[0]["content"], "Do you service heat pumps?");
    let elsewhere = call(&app, &other, "search_conversations", json!({})).await;
    assert_eq!(elsewhere["structuredContent"]["conversations"], json!([]));

    let document = call(
        &app,
        &all,
        "add_knowledge_document",
        json!({ "agent_id": first.agent_id, "title": "Hours", "content": "Open 8 to 5." }),
    )
    .await;
    assert_eq!(document["isError"], false, "{document}");
    assert_eq!(document["structuredContent"]["status"], "pending");
    let deliveries = call(&app, &all, "list_webhook_deliveries", json!({})).await;
    assert_eq!(deliveries["structuredContent"]["deliveries"], json!([]));

    // Each tool names the scope it lacks.
    for (tool, arguments, scope) in [
        ("list_leads", json!({}), "leads:read"),
        (
            "create_lead",
            json!({ "email": "x@example.com" }),
            "leads:write",
        ),
        ("search_conversations", json!({}), "conversations:read"),
        (
            "add_knowledge_document",
            json!({ "agent_id": first.agent_id, "title": "T", "content": "C" }),
            "knowledge:write",
        ),
        ("list_webhook_deliveries", json!({}), "webhooks:read"),
    ] {
        let refused = call(&app, &none, tool, arguments).await;
        assert_eq!(refused["isError"], true, "{tool}");
        let message = refused["structuredContent"]["error"]["message"]
            .as_str()
            .unwrap();
        assert!(message.contains(scope), "{tool}: {message}");
    }

    // Bad arguments are the REST API's 4xx, told to the model; an unknown tool is a protocol error.
    let nul = call(
        &app,
        &all,
        "create_lead",
        json!({ "email": "a\u{0}@example.com" }),
    )
    .await;
    assert_eq!(nul["structuredContent"]["error"]["status"], 422);
    let (_, unknown) = rpc(
        &app,
        Some(&all),
        "tools/call",
        json!({ "name": "drop_tables", "arguments": {} }),
    )
    .await;
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");
}

#[tokio::test]
async fn the_rest_api_searches_conversations_by_what_was_said() {
    let app = spawn_app().await;
    let shop = site(&app, "Search Co").await;
    let visitor = visitor_token(&app, &shop.public_key).await;
    reply(&app, &visitor, "My furnace is making a noise").await;
    let other = visitor_token(&app, &shop.public_key).await;
    reply(&app, &other, "Hello there").await;
    let found = body(
        app.get("/api/v1/conversations?q=furnace", &shop.tenant.token)
            .await,
    )
    .await;
    assert_eq!(found["conversations"].as_array().unwrap().len(), 1);
    let all = body(app.get("/api/v1/conversations", &shop.tenant.token).await).await;
    assert_eq!(all["conversations"].as_array().unwrap().len(), 2);
    let long = "x".repeat(201);
    assert_error(
        app.get(
            &format!("/api/v1/conversations?q={long}"),
            &shop.tenant.token,
        )
        .await,
        400,
        "bad_request",
    )
    .await;
}
