//! The HTTP edge: security headers everywhere, JSON errors for every kind of bad input.

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{assert_error, spawn_app, spawn_app_with};

fn assert_strict_headers(headers: &HeaderMap, context: &str) {
    let expect = |name: &str, value: &str| {
        assert_eq!(
            headers.get(name).map(|v| v.to_str().unwrap()),
            Some(value),
            "{name} on {context}"
        );
    };
    expect("x-frame-options", "DENY");
    expect("x-content-type-options", "nosniff");
    expect("referrer-policy", "strict-origin-when-cross-origin");
    expect(
        "strict-transport-security",
        "max-age=63072000; includeSubDomains; preload",
    );
    let permissions = headers["permissions-policy"].to_str().unwrap();
    for feature in ["camera=()", "microphone=()", "geolocation=()"] {
        assert!(permissions.contains(feature), "{feature} on {context}");
    }
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
}

#[tokio::test]
async fn security_headers_are_on_normal_and_error_responses() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Headers Co").await;
    let cases = [
        (
            app.client.get(app.url("/healthz")).send().await.unwrap(),
            200,
            "healthz",
        ),
        (
            app.client.get(app.url("/nope")).send().await.unwrap(),
            404,
            "unknown path",
        ),
        (
            app.client.delete(app.url("/healthz")).send().await.unwrap(),
            405,
            "wrong method",
        ),
        (
            app.client
                .get(app.url("/api/v1/agents"))
                .send()
                .await
                .unwrap(),
            401,
            "no token",
        ),
        (
            app.request(Method::POST, "/api/v1/agents", Some(&tenant.token))
                .header("content-type", "application/json")
                .body("{nope")
                .send()
                .await
                .unwrap(),
            400,
            "malformed JSON",
        ),
        (
            app.get("/api/v1/agents", &tenant.token).await,
            200,
            "agent list",
        ),
    ];
    for (response, status, context) in cases {
        assert_eq!(response.status(), status, "{context}");
        assert_strict_headers(response.headers(), context);
    }
}

#[tokio::test]
async fn widget_paths_may_be_framed_by_any_site() {
    let app = spawn_app().await;
    for path in ["/widget.js", "/widget/frame", "/api/widget/session"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        let headers = response.headers();
        assert!(headers.get("x-frame-options").is_none(), "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors *"), "{path}: {csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert!(headers.get("strict-transport-security").is_some());
    }
}

#[tokio::test]
async fn malformed_bodies_get_json_4xx_never_500() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Bodies Co").await;
    let json = Some("application/json");
    let cases: [(Option<&str>, &[u8], u16, &str); 10] = [
        (json, b"{\"name\": ", 400, "bad_request"),
        (json, b"", 400, "bad_request"),
        (json, &[0xff, 0xfe, 0x00], 400, "bad_request"),
        (None, b"{\"name\":\"x\"}", 415, "unsupported_media_type"),
        (
            Some("text/plain"),
            b"{\"name\":\"x\"}",
            415,
            "unsupported_media_type",
        ),
        (json, b"[1,2,3]", 422, "invalid"),
        (json, b"{\"name\": 42}", 422, "invalid"),
        (json, b"{\"system_prompt\": \"no name\"}", 422, "invalid"),
        (
            json,
            b"{\"name\":\"x\",\"tenant_id\":\"y\"}",
            422,
            "invalid",
        ),
        (json, b"{\"name\":\"   \"}", 422, "invalid"),
    ];
    for (content_type, body, status, code) in cases {
        let mut request = app
            .request(Method::POST, "/api/v1/agents", Some(&tenant.token))
            .body(body.to_vec());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        assert_error(request.send().await.unwrap(), status, code).await;
    }
    let prompt = "p".repeat(20_001);
    assert_error(
        app.post_json(
            "/api/v1/agents",
            Some(&tenant.token),
            &json!({ "name": "x", "system_prompt": prompt }),
        )
        .await,
        422,
        "invalid",
    )
    .await;
    assert_error(
        app.post_json(
            "/api/v1/agents",
            Some(&tenant.token),
            &json!({ "name": "x", "profile": { "brnd": "typo" } }),
        )
        .await,
        422,
        "invalid",
    )
    .await;
}

#[tokio::test]
async fn oversized_bodies_get_413_json() {
    let app = spawn_app_with(|settings| settings.http.max_body_bytes = 1024).await;
    let tenant = app.create_tenant("Big Co").await;
    let big = json!({ "name": "x", "system_prompt": "y".repeat(4096) });
    let response = app
        .post_json("/api/v1/agents", Some(&tenant.token), &big)
        .await;
    assert_error(response, 413, "payload_too_large").await;
    // Without Content-Length (chunked), the limit still holds.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(b"{\"name\":\"".to_vec()),
        Ok(vec![b'z'; 4096]),
        Ok(b"\"}".to_vec()),
    ];
    let response = app
        .request(Method::POST, "/api/v1/agents", Some(&tenant.token))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_error(response, 413, "payload_too_large").await;
}

#[tokio::test]
async fn unknown_paths_wrong_methods_and_bad_ids_are_json_errors() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Paths Co").await;
    assert_error(
        app.client
            .get(app.url("/api/v1/nothing"))
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    let response = app
        .request(Method::PUT, "/api/v1/agents", Some(&tenant.token))
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("allow").is_some());
    assert_error(response, 405, "method_not_allowed").await;
    assert_error(
        app.get("/api/v1/agents/not-a-uuid", &tenant.token).await,
        404,
        "not_found",
    )
    .await;
}
