//! The logging policy, tested on the real binary: a server process logging
//! at `RUST_LOG=trace` serves a full chat (with a lead and its webhook, and
//! a turn through the tenant's own keyed model), a scanned and shared file,
//! an SMS, logins and tokens, and not one line it writes holds a planted
//! secret, the visitor's IP or a message body.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::IntoResponse;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};

use crate::chat_support::{reply, site, visitor_token};
use crate::cluster::ServerProcess;
use crate::dispatch::{eventually, Receiver};
use crate::helpers::{body, create_token, spawn_app_with, TestApp};
use crate::twilio::{line, signed, twilio_settings, PUBLIC};

/// The visitor's address, as the trusted proxy in front forwards it.
const VISITOR_IP: &str = "203.0.113.77";
// Each message carries a marker word: a log line quoting any part of the
// message around it, escaped or cut, still holds the word.
const CHAT_TEXT: &str = "Wombatsaffron here: I am Quill, quill.marker@example.com";
const MODEL_REPLY: &str = "Periwinkleanvil is the answer of our own model.";
const LLM_KEY: &str = "sk-planted-llm-key-4f1d9a";
/// The number that texts in: the person's, not the business's.
const CALLER: &str = "+14155550977";
const SMS_TEXT: &str = "Marmaladeglacier text about opening hours";
const FILE_TEXT: &str = "Quokkaturmeric price list: a cleaning costs $80.";

/// An OpenAI-compatible model that answers [`MODEL_REPLY`] and keeps the
/// Authorization header of each request, to prove the key was really used.
async fn keyed_model() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    let router = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let kept = kept.clone();
            async move {
                let authorization = headers
                    .get("authorization")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default();
                kept.lock().unwrap().push(authorization.to_owned());
                let delta =
                    json!({ "choices": [{ "index": 0, "delta": { "content": MODEL_REPLY } }] });
                let stream = format!("data: {delta}\n\ndata: [DONE]\n\n");
                ([("content-type", "text/event-stream")], stream).into_response()
            }
        }),
    );
    let address = crate::helpers::serve_locally(router).await;
    (format!("http://{address}/v1"), seen)
}

/// A client whose every request arrives from the trusted proxy on behalf of [`VISITOR_IP`].
fn forwarding_client() -> reqwest::Client {
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", HeaderValue::from_static(VISITOR_IP));
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

#[tokio::test]
async fn nothing_secret_personal_or_said_reaches_a_trace_level_log() {
    // The in-process app only hosts the database: its own workers stay out
    // of the way so that the server process does the work being logged.
    let mut app = spawn_app_with(|settings| {
        settings.webhooks.dispatch = false;
        twilio_settings(settings);
    })
    .await;
    // Without a clamd the file is served unscanned: still uploaded, fetched and shared.
    let clamd = crate::files::clamd();
    let verdict = if clamd.is_some() {
        "clean"
    } else {
        "unscanned"
    };
    let (server, url, log) = ServerProcess::start_logging(
        &app,
        "trace",
        &[
            ("AGENTRY__HTTP__TRUSTED_PROXIES", "127.0.0.1/32"),
            ("AGENTRY__TWILIO__PUBLIC_BASE_URL", PUBLIC),
            ("AGENTRY__FILES__CLAMD_ADDR", clamd.as_deref().unwrap_or("")),
            ("AGENTRY__FILES__SCAN_POLL_MS", "100"),
        ],
    );
    app.address = url;
    app.client = forwarding_client();
    let mut planted: Vec<String> = vec![
        VISITOR_IP.into(),
        "Wombatsaffron".into(),
        "quill.marker".into(),
        "Quill".into(),
        CALLER.into(),
        "Periwinkleanvil".into(),
        LLM_KEY.into(),
        "Marmaladeglacier".into(),
        "Quokkaturmeric".into(),
    ];
    planted.extend(configured_secrets(&app));

    // Dashboard: a login (the password), an API token used once, a webhook
    // endpoint (its signing secret), the tenant's keyed model.
    let shop = site(&app, "Quiet Logs Co").await;
    planted.push(shop.tenant.password.clone());
    planted.push(shop.tenant.token.clone());
    let (_, api_token) = create_token(&app, &shop.tenant.token, &["leads:read"]).await;
    assert_eq!(app.get("/api/v1/leads", &api_token).await.status(), 200);
    planted.push(api_token);
    let receiver = Receiver::answering(200).await;
    let created = app
        .post_json(
            "/api/v1/webhook-endpoints",
            Some(&shop.tenant.token),
            &json!({ "url": receiver.url("127.0.0.1"), "event_types": ["lead.created"] }),
        )
        .await;
    assert_eq!(created.status(), 201);
    planted.push(body(created).await["secret"].as_str().unwrap().to_owned());

    // A visitor leaves contact details: the lead's webhook goes out signed.
    let visitor = visitor_token(&app, &shop.public_key).await;
    planted.push(visitor.clone());
    reply(&app, &visitor, CHAT_TEXT).await;
    let delivered = eventually(Duration::from_secs(20), "the lead's webhook", || async {
        let delivered = receiver.delivered();
        (!delivered.is_empty()).then_some(delivered)
    })
    .await;
    assert_eq!(
        delivered[0].body["data"]["lead"]["email"],
        "quill.marker@example.com"
    );

    // A file, scanned, downloaded, and shared by a signed link.
    let uploaded = crate::files::uploaded(
        &app,
        &shop.tenant.token,
        "prices.txt",
        FILE_TEXT.as_bytes().to_vec(),
    )
    .await;
    let file = uploaded["id"].as_str().unwrap();
    let scanned = crate::files::wait_for_scan(&app, &shop.tenant.token, file).await;
    assert_eq!(scanned["scan_status"], verdict, "{scanned}");
    let content = app
        .get(&format!("/api/v1/files/{file}/content"), &shop.tenant.token)
        .await;
    assert_eq!(content.text().await.unwrap(), FILE_TEXT);
    let link = crate::files::share(&app, &shop.tenant.token, file, "24h").await;
    let link = link["url"].as_str().unwrap().to_owned();
    let shared = app.client.get(app.url(&link)).send().await.unwrap();
    assert_eq!(shared.text().await.unwrap(), FILE_TEXT);
    planted.push(link.split("signature=").nth(1).unwrap().to_owned());

    // A second tenant talks through its own model, with its own key.
    let keyed = site(&app, "Keyed Model Co").await;
    let (model_url, authorizations) = keyed_model().await;
    let configured = app
        .request(
            reqwest::Method::PUT,
            "/api/v1/llm",
            Some(&keyed.tenant.token),
        )
        .json(
            &json!({ "provider": "vllm", "model": "m", "base_url": model_url, "api_key": LLM_KEY }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(configured.status(), 200);
    let keyed_visitor = visitor_token(&app, &keyed.public_key).await;
    assert_eq!(
        reply(&app, &keyed_visitor, "What is on offer?").await,
        MODEL_REPLY
    );
    assert_eq!(
        authorizations.lock().unwrap().as_slice(),
        [format!("Bearer {LLM_KEY}")]
    );

    // An SMS, signed with the tenant's Twilio auth token.
    let texting = line(&app, "Texting Co", "+14155550142").await;
    planted.push(texting.auth_token.clone());
    let (status, twiml) = signed(
        &app,
        &texting,
        "/api/twilio/sms",
        &[
            ("From", CALLER),
            ("To", &texting.number),
            ("Body", SMS_TEXT),
            ("MessageSid", "SMlogpolicy"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{twiml}");
    assert!(twiml.contains("<Message>"), "{twiml}");

    // Lines still on their way through the pipe.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(server);
    let lines = log.lock().unwrap().clone();
    assert_the_flow_was_logged(&lines);
    for line in &lines {
        for value in &planted {
            assert!(
                !line.contains(value.as_str()),
                "a log line holds {value:?}: {line}"
            );
        }
    }
}

/// The process's own keys, as its test profile configures them.
fn configured_secrets(app: &TestApp) -> Vec<String> {
    let security = &app.settings.security;
    let mut secrets: Vec<String> = security
        .encryption_keys
        .values()
        .map(|key| key.expose().clone())
        .collect();
    secrets.push(security.signing.token_key.expose().clone());
    secrets
}

/// The capture saw the whole flow at trace level, so an empty or filtered
/// log cannot pass for a clean one.
fn assert_the_flow_was_logged(lines: &[String]) {
    let entries: Vec<Value> = lines
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let level = |wanted: &str| entries.iter().filter(|e| e["level"] == wanted).count();
    assert!(level("TRACE") > 0, "no TRACE line among {}", lines.len());
    assert!(level("DEBUG") > 0, "no DEBUG line among {}", lines.len());
    for path in [
        "/api/v1/auth/login",
        "/api/widget/messages",
        "/api/v1/llm",
        "/api/twilio/sms",
        "/api/v1/files",
        "/api/files/shared/",
    ] {
        assert!(
            lines.iter().any(|line| line.contains(path)),
            "no line about {path}"
        );
    }
}
