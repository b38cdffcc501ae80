//! The OpenAPI document as a live server serves it (`/api/v1/openapi.json`),
//! and the offline docs page over it (`/api/docs`).

use serde_json::Value;

use crate::helpers::{body, spawn_app, TestApp};

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

async fn document(app: &TestApp) -> Value {
    let response = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    body(response).await
}

/// Follows a local `$ref` (`#/components/...`) to what it names.
fn resolve<'a>(document: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("not a local $ref: {reference}"));
            let target = document
                .pointer(pointer)
                .unwrap_or_else(|| panic!("$ref {reference} names nothing"));
            resolve(document, target)
        }
        None => value,
    }
}

/// Every `$ref` anywhere in `value`.
fn references(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                found.push(reference.clone());
            }
            map.values().for_each(|child| references(child, found));
        }
        Value::Array(items) => items.iter().for_each(|child| references(child, found)),
        _ => {}
    }
}

/// Statuses that carry no body by definition.
fn bodiless(status: &str) -> bool {
    matches!(status, "101" | "202" | "204")
}

#[tokio::test]
async fn the_api_document_is_openapi_3_1_and_every_operation_describes_its_responses() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    for scheme in [
        "dashboard",
        "api_token",
        "operator",
        "widget_session",
        "twilio_signature",
    ] {
        assert!(schemes.contains_key(scheme), "security scheme {scheme}");
    }
    let mut found = Vec::new();
    references(&doc, &mut found);
    for reference in &found {
        resolve(&doc, &serde_json::json!({ "$ref": reference }));
    }

    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            operations += 1;
            let name = format!("{} {path}", method.to_uppercase());
            let responses = operation["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{name} has no responses"));
            assert!(
                responses
                    .keys()
                    .any(|status| status.starts_with('2') || status == "101"),
                "{name} has no success response"
            );
            for (status, response) in responses {
                let response = resolve(&doc, response);
                let content = response["content"].as_object();
                if bodiless(status) {
                    continue;
                }
                let content = content
                    .filter(|content| !content.is_empty())
                    .unwrap_or_else(|| panic!("{name} {status} describes no body"));
                for (media, entry) in content {
                    assert!(
                        entry.get("schema").is_some(),
                        "{name} {status} {media} has no schema"
                    );
                }
                if status.starts_with('4') || status.starts_with('5') {
                    // Every error is the shared error body, except where the
                    // protocol says otherwise (MCP's JSON-RPC refusals,
                    // readiness with its checks), which say so by name.
                    let schema = &content["application/json"]["schema"];
                    let reference = schema["$ref"].as_str().unwrap_or_default();
                    assert!(
                        reference == "#/components/schemas/ErrorBody"
                            || reference == "#/components/schemas/JsonRpcRefusal"
                            || reference == "#/components/schemas/NotReady",
                        "{name} {status} is not the error body: {schema}"
                    );
                }
            }
            if operation.get("security").is_some() {
                assert!(
                    responses.contains_key("401"),
                    "{name} is authenticated but has no 401"
                );
            }
        }
    }
    // Every route file's routes are in it (see the drift test in src/http/openapi.rs).
    assert!(operations >= 80, "only {operations} operations");
    for path in [
        "/healthz",
        "/readyz",
        "/api/v1/auth/login",
        "/api/v1/agents/{agent_id}/widgets/{widget_id}",
        "/api/v1/admin/tenants/{tenant_id}/rate-limits",
        "/api/v1/files",
        "/api/files/shared/{share_id}",
        "/api/recordings/{recording_id}/audio",
        "/api/widget/messages",
        "/api/twilio/voice/recording",
        "/ws/twilio/media/{token}",
        "/mcp",
        "/api/v1/openapi.json",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is missing");
    }
    let upload = &doc["paths"]["/api/v1/files"]["post"]["requestBody"]["content"];
    assert!(upload.get("multipart/form-data").is_some(), "{upload}");
    let sms = &doc["paths"]["/api/twilio/sms"]["post"]["requestBody"]["content"];
    assert!(
        sms.get("application/x-www-form-urlencoded").is_some(),
        "{sms}"
    );
    let login = &doc["paths"]["/api/v1/auth/login"]["post"]["responses"]["200"]["headers"];
    assert!(login.get("x-ratelimit-remaining").is_some(), "{login}");
    let limited = &doc["paths"]["/api/v1/leads"]["get"]["responses"]["429"]["headers"];
    assert!(limited.get("retry-after").is_some(), "{limited}");
}

#[tokio::test]
async fn the_docs_page_and_its_assets_are_served_from_the_binary() {
    let app = spawn_app().await;
    let page = app.client.get(app.url("/api/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(
        page.headers()["content-type"].to_str().unwrap(),
        "text/html; charset=utf-8"
    );
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    let html = page.text().await.unwrap();
    assert!(!html.contains("<script>"), "no inline script: {html}");
    for (path, content_type, marker) in [
        (
            "/api/docs/swagger-ui-bundle.js",
            "text/javascript; charset=utf-8",
            "SwaggerUIBundle",
        ),
        (
            "/api/docs/swagger-ui.css",
            "text/css; charset=utf-8",
            ".swagger-ui",
        ),
        (
            "/api/docs/init.js",
            "text/javascript; charset=utf-8",
            "/api/v1/openapi.json",
        ),
    ] {
        assert!(html.contains(path), "the page loads {path}");
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            content_type,
            "{path}"
        );
        assert!(response.text().await.unwrap().contains(marker), "{path}");
    }
}
