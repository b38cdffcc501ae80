//! Traces and the logs that follow them, on the real binary: every line a
//! chat turn writes, in the HTTP edge and inside the actors, names the
//! turn's trace, the one its response's `traceparent` names; and with OTLP
//! export on, a collector receives the turn's spans, one per stage, under
//! that same trace id, each with the right parent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use reqwest::Method;
use serde_json::{json, Value};

use crate::chat_support::{site, visitor, visitor_token, ORIGIN};
use crate::cluster::ServerProcess;
use crate::dispatch::eventually;
use crate::helpers::{spawn_app, spawn_app_with, TestApp};

/// A trace id and span id in a `traceparent` header, as a trusted proxy sends it.
const PROXY_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PROXY_SPAN: &str = "00f067aa0ba902b7";

/// The (trace id, span id, sampled) a response's `traceparent` names.
fn traceparent(response: &reqwest::Response) -> (String, String, bool) {
    let value = response
        .headers()
        .get("traceparent")
        .expect("every response names its trace")
        .to_str()
        .unwrap()
        .to_owned();
    let fields: Vec<&str> = value.split('-').collect();
    assert_eq!(fields.len(), 4, "{value}");
    assert_eq!(fields[0], "00", "{value}");
    let hex = |text: &str, len: usize| {
        text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    assert!(hex(fields[1], 32) && hex(fields[2], 16), "{value}");
    (
        fields[1].to_owned(),
        fields[2].to_owned(),
        fields[3] == "01",
    )
}

/// One JSON-mode turn from [`ORIGIN`] with our own request id and `extra` headers.
async fn traced_turn(
    app: &TestApp,
    token: &str,
    request_id: &str,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = visitor(
        app,
        Method::POST,
        "/api/widget/messages",
        Some(token),
        Some(ORIGIN),
    )
    .header("x-request-id", request_id)
    .json(&json!({ "text": "When are you open?" }));
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], request_id);
    response
}

fn entries(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The response line of `request_id` (TraceLayer's, the one that logs the
/// request id), once the server has written it.
async fn response_line(log: &Arc<Mutex<Vec<String>>>, request_id: &str) -> (usize, Value) {
    eventually(
        Duration::from_secs(10),
        "the response's log line",
        || async {
            let lines = log.lock().unwrap().clone();
            entries(&lines).into_iter().enumerate().find(|(_, entry)| {
                entry["message"] == "finished processing request"
                    && entry["span"]["request_id"] == request_id
            })
        },
    )
    .await
}

#[tokio::test]
async fn every_log_line_of_a_chat_turn_names_the_trace_its_response_names() {
    // The in-process app only hosts the database; its workers stay quiet.
    let mut app = spawn_app_with(|settings| settings.webhooks.dispatch = false).await;
    let (server, url, log) = ServerProcess::start_logging(
        &app,
        // Debug, with the statements sqlx logs at trace: the turn's queries.
        "debug,sqlx::query=trace",
        &[("AGENTRY__WEBHOOKS__DISPATCH", "false")],
    );
    app.address = url;
    let shop = site(&app, "Traced Logs Co").await;
    let token = visitor_token(&app, &shop.public_key).await;

    let request_id = format!("turn-{}", uuid::Uuid::new_v4().simple());
    let response = traced_turn(&app, &token, &request_id, &[]).await;
    let (trace_id, _, _) = traceparent(&response);
    let (end, finished) = response_line(&log, &request_id).await;
    assert_eq!(finished["trace_id"], trace_id.as_str(), "{finished}");
    assert_eq!(
        finished["span"]["trace_id"],
        trace_id.as_str(),
        "{finished}"
    );
    drop(server);

    // From the request's first line to its response line: the request's
    // edge, its turn in the actors, and whatever else ran meanwhile.
    let lines = entries(&log.lock().unwrap());
    let start = lines
        .iter()
        .position(|entry| entry["span"]["request_id"] == request_id.as_str())
        .expect("the request's first line");
    assert_eq!(lines[start]["message"], "started processing request");
    let window = &lines[start..=end];
    let mut in_turn = HashMap::<String, usize>::new();
    let mut stages = HashMap::<String, usize>::new();
    for entry in window {
        let target = entry["target"].as_str().unwrap_or_default();
        let spanned = entry.get("span").is_some();
        // A line outside any span is a background task's (a pool's
        // maintenance, a poller); everything the request and its turn
        // write is inside their spans, actors included.
        if !spanned {
            assert!(
                !target.starts_with("agentry_actors") && !target.starts_with("agentry::http"),
                "a line of the turn outside its spans: {entry}"
            );
            continue;
        }
        assert_eq!(
            entry["trace_id"],
            trace_id.as_str(),
            "a line inside the request names another trace: {entry}"
        );
        *in_turn.entry(target.to_owned()).or_default() += 1;
        let stage = entry["span"]["name"].as_str().unwrap_or_default();
        *stages.entry(stage.to_owned()).or_default() += 1;
    }
    // What the actors wrote (the retriever's first load of the namespace,
    // the session's answer) and the turn's queries are among them.
    for wanted in [
        "agentry_actors::rag_retriever",
        "agentry_actors::chat_session",
        "sqlx::query",
    ] {
        assert!(
            in_turn.contains_key(wanted),
            "no line of {wanted} in the turn: {in_turn:?}"
        );
    }
    // Written inside the stages' own spans, which run on the actors' tasks.
    for stage in ["retrieve", "persist", "chat_turn", "request"] {
        assert!(
            stages.contains_key(stage),
            "no line inside a {stage} span: {stages:?}"
        );
    }
    // And no other line anywhere names this trace.
    let named = lines
        .iter()
        .enumerate()
        .filter(|(_, entry)| entry["trace_id"] == trace_id.as_str())
        .map(|(index, _)| index);
    for index in named {
        assert!(
            (start..=end).contains(&index),
            "a line outside the request names its trace: {}",
            lines[index]
        );
    }
}

#[tokio::test]
async fn a_traceparent_is_continued_from_a_trusted_proxy_only_and_never_when_malformed() {
    let app = spawn_app().await;
    let shop = site(&app, "Trace Trust Co").await;
    let token = visitor_token(&app, &shop.public_key).await;
    let incoming = format!("00-{PROXY_TRACE}-{PROXY_SPAN}-01");

    // The test's client is no trusted proxy: a fresh trace, not the caller's.
    let response = traced_turn(&app, &token, "untrusted", &[("traceparent", &incoming)]).await;
    let (trace_id, span_id, _) = traceparent(&response);
    assert_ne!(trace_id, PROXY_TRACE);
    assert_ne!(span_id, PROXY_SPAN);

    // Every response, answered or refused, names a trace of its own.
    let other = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_ne!(traceparent(&other).0, trace_id);
    let refused = app
        .client
        .get(app.url("/api/v1/agents"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    traceparent(&refused);

    // From the proxy in front, the trace continues (its id, a span of ours).
    let trusted = spawn_app_with(|settings| {
        settings.http.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let shop = site(&trusted, "Trace Trust Proxy Co").await;
    let token = visitor_token(&trusted, &shop.public_key).await;
    let response = traced_turn(&trusted, &token, "trusted", &[("traceparent", &incoming)]).await;
    let (trace_id, span_id, sampled) = traceparent(&response);
    assert_eq!(trace_id, PROXY_TRACE);
    assert_ne!(
        span_id, PROXY_SPAN,
        "the response names our span, not the caller's"
    );
    assert!(sampled, "the caller's sampling decision is kept");
    for malformed in [
        format!("00-{}-{PROXY_SPAN}-01", PROXY_TRACE.to_uppercase()),
        format!("00-{PROXY_TRACE}-{PROXY_SPAN}"),
        format!("00-{}-{PROXY_SPAN}-01", "0".repeat(32)),
        "garbage".to_owned(),
    ] {
        let response = traced_turn(
            &trusted,
            &token,
            "malformed",
            &[("traceparent", &malformed)],
        )
        .await;
        let (trace_id, _, _) = traceparent(&response);
        assert_ne!(trace_id, PROXY_TRACE, "{malformed} continued");
        assert_ne!(trace_id, "0".repeat(32));
    }
}

/// Spans posted to `/v1/traces`, as an OTLP/HTTP collector receives them.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Span>>>);

impl Collector {
    async fn start() -> (Self, String) {
        let collector = Self::default();
        let kept = collector.clone();
        let router = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
                let kept = kept.clone();
                async move {
                    assert_eq!(headers["content-type"], "application/x-protobuf");
                    let request = ExportTraceServiceRequest::decode(body).unwrap();
                    let mut spans = kept.0.lock().unwrap();
                    for resource in request.resource_spans {
                        let service = resource
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|a| a.key == "service.name")
                            .and_then(|a| a.value.as_ref())
                            .map(|v| format!("{:?}", v.value));
                        assert!(
                            service
                                .as_deref()
                                .is_some_and(|s| s.contains("agentry-traced")),
                            "{service:?}"
                        );
                        for scope in resource.scope_spans {
                            spans.extend(scope.spans);
                        }
                    }
                    axum::http::StatusCode::OK
                }
            }),
        );
        let address = crate::helpers::serve_locally(router).await;
        (collector, format!("http://{address}"))
    }

    fn spans_of(&self, trace_id: &str) -> Vec<Span> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|span| hex(&span.trace_id) == trace_id)
            .cloned()
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
        .map(|value| match value {
            Any::StringValue(text) => text.clone(),
            Any::IntValue(number) => number.to_string(),
            other => format!("{other:?}"),
        })
}

/// Also the regression test of `telemetry::AskEveryTime`: without it about
/// half the runs lost a request's span (its lines named no trace, and its
/// export began a trace of its own).
#[tokio::test]
async fn with_otlp_on_a_turn_exports_a_span_per_stage_under_the_logged_trace() {
    let (collector, endpoint) = Collector::start().await;
    let mut app = spawn_app_with(|settings| settings.webhooks.dispatch = false).await;
    let (mut server, url, log) = ServerProcess::start_logging(
        &app,
        "info",
        &[
            ("AGENTRY__TELEMETRY__OTLP_ENDPOINT", &endpoint),
            ("AGENTRY__TELEMETRY__SERVICE_NAME", "agentry-traced"),
            ("AGENTRY__HTTP__TRUSTED_PROXIES", "127.0.0.1/32"),
            // Nothing is exported on a timer within the test: what arrives
            // was flushed by the graceful shutdown.
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ],
    );
    app.address = url;
    let shop = site(&app, "Exported Traces Co").await;
    let token = visitor_token(&app, &shop.public_key).await;
    let incoming = format!("00-{PROXY_TRACE}-{PROXY_SPAN}-01");
    let response = traced_turn(&app, &token, "exported", &[("traceparent", &incoming)]).await;
    let (trace_id, request_span_id, _) = traceparent(&response);
    assert_eq!(trace_id, PROXY_TRACE);
    let (_, finished) = response_line(&log, "exported").await;
    assert_eq!(finished["trace_id"], trace_id.as_str(), "{finished}");
    // A second turn: a trace of its own.
    let second = traced_turn(&app, &token, "exported-2", &[]).await;
    let (second_trace, _, _) = traceparent(&second);
    assert_ne!(second_trace, trace_id);
    let (_, second_finished) = response_line(&log, "exported-2").await;
    assert_eq!(
        second_finished["trace_id"],
        second_trace.as_str(),
        "{second_finished}"
    );
    assert!(
        collector.0.lock().unwrap().is_empty(),
        "exported before the shutdown"
    );

    assert!(
        server.terminate(Duration::from_secs(30)).await,
        "a graceful exit"
    );
    let spans = collector.spans_of(&trace_id);
    let names: Vec<&str> = spans.iter().map(|span| span.name.as_str()).collect();
    let by_name = |name: &str| -> Vec<&Span> { spans.iter().filter(|s| s.name == name).collect() };
    let one = |name: &str| -> &Span {
        let found = by_name(name);
        assert_eq!(found.len(), 1, "one {name} span: {names:?}");
        found[0]
    };
    let request = one("request");
    assert_eq!(hex(&request.span_id), request_span_id);
    assert_eq!(
        hex(&request.parent_span_id),
        PROXY_SPAN,
        "continues the proxy's span"
    );
    assert_eq!(
        attribute(request, "request_id").as_deref(),
        Some("exported")
    );
    let turn = one("chat_turn");
    assert_eq!(turn.parent_span_id, request.span_id);
    assert_eq!(attribute(turn, "channel").as_deref(), Some("widget"));
    assert_eq!(attribute(turn, "outcome").as_deref(), Some("ok"));
    let retrieve = one("retrieve");
    assert_eq!(retrieve.parent_span_id, turn.span_id);
    let llm = one("llm");
    assert_eq!(llm.parent_span_id, turn.span_id);
    assert_eq!(attribute(llm, "provider").as_deref(), Some("offline"));
    assert!(attribute(llm, "model").is_some());
    let finalized = by_name("finalize");
    assert!(!finalized.is_empty(), "{names:?}");
    for span in &finalized {
        assert_eq!(span.parent_span_id, turn.span_id);
    }
    let persisted = by_name("persist");
    let writes: Vec<String> = persisted
        .iter()
        .map(|span| attribute(span, "write").unwrap_or_default())
        .collect();
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert!(writes.contains(&"visitor_message".to_owned()) && writes.contains(&"reply".to_owned()));
    for span in &persisted {
        assert_eq!(span.parent_span_id, turn.span_id);
    }
    // Each stage lies within its turn.
    for span in spans.iter().filter(|s| s.name != "request") {
        assert!(
            span.start_time_unix_nano >= request.start_time_unix_nano,
            "{}",
            span.name
        );
        assert!(
            span.end_time_unix_nano >= span.start_time_unix_nano,
            "{}",
            span.name
        );
    }
    // No text of the conversation became an attribute.
    for span in &spans {
        for attribute in &span.attributes {
            let value = format!("{:?}", attribute.value);
            assert!(
                !value.contains("When are you open"),
                "{}: {value}",
                span.name
            );
        }
    }
    // The second turn's spans came too, under their own trace.
    let second_names: Vec<String> = collector
        .spans_of(&second_trace)
        .into_iter()
        .map(|span| span.name)
        .collect();
    assert!(
        second_names.iter().any(|name| name == "chat_turn"),
        "{second_names:?}"
    );
}
