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

/// One body rule for every route: objects only, no NUL anywhere, length
/// limits on every string, and messages that name fields, not Rust types.
#[tokio::test]
async fn every_body_is_an_object_without_nul_and_errors_name_fields() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Rules Co").await;
    let agent = app.create_agent(&tenant.token, "Rules").await;
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    let widget = app.create_widget(&tenant.token, &agent_id).await;
    let public_key = widget["public_key"].as_str().unwrap().to_owned();
    let send = |method: Method, path: String, token: Option<String>, body: String| {
        let request = app
            .request(method, &path, token.as_deref())
            .header("content-type", "application/json")
            .header("origin", crate::helpers::WIDGET_ORIGIN)
            .body(body);
        async move { request.send().await.unwrap() }
    };
    let token = Some(tenant.token.clone());
    let agent_path = format!("/api/v1/agents/{agent_id}");
    // (method, path, token, body, the field path the message must name)
    let cases = [
        (
            Method::POST,
            "/api/widget/session".to_owned(),
            None,
            json!([public_key]).to_string(),
            "JSON object",
        ),
        (
            Method::POST,
            "/api/widget/session".to_owned(),
            None,
            json!(public_key).to_string(),
            "JSON object",
        ),
        (
            Method::POST,
            "/api/v1/agents".to_owned(),
            token.clone(),
            json!(["Arrayed", "p"]).to_string(),
            "JSON object",
        ),
        (
            Method::PATCH,
            agent_path.clone(),
            token.clone(),
            json!({ "profile": [] }).to_string(),
            "profile: expected an object, found an array",
        ),
        (
            Method::PATCH,
            agent_path.clone(),
            token.clone(),
            json!({ "profile": { "directives": [] } }).to_string(),
            "profile.directives",
        ),
        (
            Method::POST,
            "/api/widget/session".to_owned(),
            None,
            json!({ "public_key": "pk_\u{0}" }).to_string(),
            "public_key: must not contain NUL",
        ),
        (
            Method::POST,
            "/api/v1/agents".to_owned(),
            token.clone(),
            json!({ "name": "x", "system_prompt": "a\u{0}b" }).to_string(),
            "system_prompt: must not contain NUL",
        ),
        (
            Method::POST,
            "/api/v1/agents".to_owned(),
            token.clone(),
            json!({ "name": "x", "profile": { "facts": ["ok", "b\u{0}d"] } }).to_string(),
            "profile.facts[1]: must not contain NUL",
        ),
        (
            Method::POST,
            "/api/v1/agents".to_owned(),
            token.clone(),
            "{\"name\":\"x\",\"na\\u0000me\":\"y\"}".to_owned(),
            "NUL",
        ),
        (
            Method::POST,
            format!("{agent_path}/documents"),
            token.clone(),
            json!({ "title": "t\u{0}", "content": "c" }).to_string(),
            "title: must not contain NUL",
        ),
        (
            Method::POST,
            format!("{agent_path}/documents"),
            token.clone(),
            json!({ "title": "t", "content": "c\u{0}" }).to_string(),
            "content: must not contain NUL",
        ),
        (
            Method::PUT,
            "/api/v1/llm".to_owned(),
            token.clone(),
            json!({ "provider": "openai", "model": "m\u{0}" }).to_string(),
            "model: must not contain NUL",
        ),
        (
            Method::PUT,
            "/api/v1/llm".to_owned(),
            token.clone(),
            json!({ "provider": "openai", "model": "m".repeat(1_001) }).to_string(),
            "model: must be at most 1000 characters",
        ),
        (
            Method::PUT,
            "/api/v1/llm".to_owned(),
            token.clone(),
            json!({ "provider": "azure", "model": "m", "azure_deployment": "d".repeat(200_000) })
                .to_string(),
            "azure_deployment: must be at most 1000",
        ),
        (
            Method::PUT,
            "/api/v1/llm".to_owned(),
            token.clone(),
            json!({ "provider": "azure", "model": "m", "azure_api_version": "v".repeat(1_001) })
                .to_string(),
            "azure_api_version: must be at most 1000",
        ),
        (
            Method::POST,
            "/api/widget/session".to_owned(),
            None,
            json!({ "public_key": 7 }).to_string(),
            "public_key: expected a string, found an integer",
        ),
        (
            Method::POST,
            "/api/widget/session".to_owned(),
            None,
            json!({}).to_string(),
            "public_key: is required",
        ),
    ];
    for (method, path, token, body, names) in cases {
        let context = format!(
            "{method} {path} {}",
            body.chars().take(80).collect::<String>()
        );
        let error = assert_error(send(method, path, token, body).await, 422, "invalid").await;
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(names), "{context}: {message}");
        assert!(!message.contains("struct"), "{context}: {message}");
        assert!(!message.contains("Request"), "{context}: {message}");
    }
    // A NUL in a widget message is refused at the edge too (it was a 503).
    let visitor_token =
        crate::helpers::widget_session(&app, &public_key, crate::helpers::WIDGET_ORIGIN).await;
    let error = assert_error(
        send(
            Method::POST,
            "/api/widget/messages".into(),
            Some(visitor_token),
            json!({ "text": "hi\u{0}" }).to_string(),
        )
        .await,
        422,
        "invalid",
    )
    .await;
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("text:"));
    // The refused PATCH left the profile alone.
    let shown = crate::helpers::body(app.get(&agent_path, &tenant.token).await).await;
    assert_eq!(shown["profile"]["brand"], "Rules");
}

/// Token-bearing API responses are never cached; a refused preflight varies by Origin.
#[tokio::test]
async fn api_responses_are_no_store_and_refused_preflights_vary_by_origin() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Cache Co").await;
    let agent = app.create_agent(&tenant.token, "Cache").await;
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    let widget = app.create_widget(&tenant.token, &agent_id).await;
    let origin = crate::helpers::WIDGET_ORIGIN;
    let visitor =
        crate::helpers::widget_session(&app, widget["public_key"].as_str().unwrap(), origin).await;
    let no_store = |response: &reqwest::Response, context: &str| {
        assert_eq!(
            response
                .headers()
                .get("cache-control")
                .map(|v| v.to_str().unwrap()),
            Some("no-store"),
            "{context}"
        );
    };
    let login = app.login(&tenant.email, &tenant.password).await;
    assert_eq!(login.status(), 200);
    no_store(&login, "login");
    no_store(
        &app.get(&format!("/api/v1/agents/{agent_id}"), &tenant.token)
            .await,
        "agent",
    );
    let session = app
        .request(Method::POST, "/api/widget/session", None)
        .header("origin", origin)
        .json(&json!({ "public_key": widget["public_key"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(session.status(), 201);
    no_store(&session, "widget session");
    let transcript = app
        .request(Method::GET, "/api/widget/messages", Some(&visitor))
        .header("origin", origin)
        .send()
        .await
        .unwrap();
    assert_eq!(transcript.status(), 200);
    no_store(&transcript, "transcript");
    no_store(
        &app.client
            .get(app.url("/api/v1/agents"))
            .send()
            .await
            .unwrap(),
        "401",
    );

    let refused = app
        .request(Method::OPTIONS, "/api/widget/session", None)
        .header("origin", "https://evil.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(refused.headers()["vary"], "Origin");
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Reads until the server closes the socket; false if it stays open for `wait`.
async fn closed_within(socket: &mut tokio::net::TcpStream, wait: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, socket.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Sockets that send a partial request head (slowloris) or sit idle on
/// keep-alive are closed after their timeouts, so they stop holding fds.
#[tokio::test]
async fn partial_headers_and_idle_keep_alive_are_closed_after_their_timeouts() {
    use std::time::{Duration, Instant};
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(|settings| {
        settings.http.header_read_timeout_secs = 1;
        settings.http.idle_timeout_secs = 3;
    })
    .await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let before = open_fds();
    let started = Instant::now();
    let mut sockets = Vec::new();
    for _ in 0..300 {
        let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
        socket
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
            .await
            .unwrap();
        sockets.push(socket);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let open = open_fds();
    for socket in &mut sockets {
        assert!(
            closed_within(socket, Duration::from_secs(5)).await,
            "a partial request head is closed after header_read_timeout_secs"
        );
    }
    assert!(started.elapsed() >= Duration::from_millis(900));
    drop(sockets);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = open_fds();
    eprintln!("fds (client and server sockets in this process): before {before}, 300 slow sockets open {open}, after the timeout {after}");
    assert!(
        open >= before + 500,
        "both ends of 300 sockets were open: {open}"
    );
    // A few more for the database pool and Redis, which may grow meanwhile.
    assert!(
        after < before + 50,
        "the server closed its ends: {after} vs {before}"
    );

    // Keep-alive: a served connection may idle past header_read_timeout_secs,
    // and is closed after idle_timeout_secs.
    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: idle\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 2048];
    use tokio::io::AsyncReadExt;
    let read = socket.read(&mut buffer).await.unwrap();
    assert!(String::from_utf8_lossy(&buffer[..read]).starts_with("HTTP/1.1 200"));
    assert!(
        !closed_within(&mut socket, Duration::from_millis(1_800)).await,
        "idle keep-alive is not cut by the header timeout"
    );
    assert!(
        closed_within(&mut socket, Duration::from_secs(4)).await,
        "idle keep-alive is closed after idle_timeout_secs"
    );
}

/// Beyond max_connections the server stops accepting until one closes.
#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(|settings| {
        settings.http.max_connections = 2;
        settings.http.header_read_timeout_secs = 30;
    })
    .await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
        socket
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        held.push(socket);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(800))
        .build()
        .unwrap();
    assert!(
        client.get(app.url("/healthz")).send().await.is_err(),
        "a third connection is not served while two are held"
    );
    drop(held);
    let response = reqwest::Client::new()
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

fn origin_lookups(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|line| line.starts_with("agentry_cors_origin_lookups_total"))
        .and_then(|line| line.rsplit(' ').next())
        .map_or(0, |value| value.parse::<f64>().unwrap() as u64)
}

/// Preflights reuse the per-origin answer instead of asking every tenant's
/// widgets each time; a widget change on the instance is seen at once.
#[tokio::test]
async fn preflights_are_answered_from_the_origin_cache() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Preflight Co").await;
    let agent_id = app.create_agent(&tenant.token, "Preflight").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let widget = app.create_widget(&tenant.token, &agent_id).await;
    let preflight = |origin: &'static str| {
        let request = app
            .request(Method::OPTIONS, "/api/widget/session", None)
            .header("origin", origin)
            .header("access-control-request-method", "POST");
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let allowed = crate::helpers::WIDGET_ORIGIN;
    let evil = "https://evil.example.com";
    let before = origin_lookups(&app.metrics_text().await);
    for _ in 0..20 {
        assert_eq!(preflight(allowed).await, 204);
        assert_eq!(preflight(evil).await, 403);
    }
    assert_eq!(
        origin_lookups(&app.metrics_text().await) - before,
        2,
        "one lookup per origin, not per preflight"
    );
    // The origin is removed: the next preflight from it is refused.
    let path = format!(
        "/api/v1/agents/{agent_id}/widgets/{}",
        widget["id"].as_str().unwrap()
    );
    let updated = app
        .patch_json(
            &path,
            &tenant.token,
            &json!({ "allowed_origins": ["https://other.example.com"] }),
        )
        .await;
    assert_eq!(updated.status(), 200);
    assert_eq!(preflight(allowed).await, 403);
    assert_eq!(preflight("https://other.example.com").await, 204);
}
