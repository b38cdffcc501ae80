//! A local HTTP server that answers like a provider, for the adapter tests:
//! it records every request and replies with a scripted status, headers and
//! a body streamed in the given pieces.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentry_actors::llm::CompletionEvent;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Router;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::transport::RetryPolicy;

/// Quick retries so failure tests stay fast.
pub fn test_policy() -> RetryPolicy {
    RetryPolicy {
        timeout: Duration::from_secs(5),
        max_retries: 2,
        base_backoff: Duration::from_millis(4),
        max_backoff: Duration::from_millis(20),
        retry_after_cap: Duration::from_millis(50),
    }
}

/// Every event sent so far.
pub fn drain(mut rx: mpsc::UnboundedReceiver<CompletionEvent>) -> Vec<CompletionEvent> {
    let mut events = Vec::new();
    while let Ok(event) = rx.try_recv() {
        events.push(event);
    }
    events
}

/// `text` cut every `size` bytes, even inside a UTF-8 character or a line.
pub fn split_bytes(text: &str, size: usize) -> Vec<Vec<u8>> {
    text.as_bytes().chunks(size).map(<[u8]>::to_vec).collect()
}

#[derive(Clone, Debug)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    pieces: Vec<Vec<u8>>,
    header_delay: Duration,
}

impl Reply {
    pub fn sse_bytes(pieces: Vec<Vec<u8>>) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            pieces,
            header_delay: Duration::ZERO,
        }
    }

    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            pieces: vec![body.to_string().into_bytes()],
            header_delay: Duration::ZERO,
        }
    }

    pub fn status(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            pieces: vec![body.as_bytes().to_vec()],
            header_delay: Duration::ZERO,
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn delay_headers(mut self, delay: Duration) -> Self {
        self.header_delay = delay;
        self
    }
}

#[derive(Clone, Debug)]
pub struct SeenRequest {
    /// Path and query.
    pub path: String,
    pub headers: HeaderMap,
    pub body: serde_json::Value,
}

impl SeenRequest {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

pub struct MockServer {
    /// `http://127.0.0.1:PORT`
    pub root: String,
    /// `{root}/v1`, the usual OpenAI-compatible base.
    pub base: String,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
}

type Responder = Arc<dyn Fn(usize, &serde_json::Value) -> Reply + Send + Sync>;

impl MockServer {
    /// Serves until the test's runtime ends; `responder` gets the 0-based
    /// number of the request.
    pub async fn start(responder: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_with_body(move |attempt, _| responder(attempt)).await
    }

    /// Like [`MockServer::start`], for replies that depend on the JSON body.
    pub async fn start_with_body(
        responder: impl Fn(usize, &serde_json::Value) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let responder: Responder = Arc::new(responder);
        let state = (seen.clone(), responder);
        let app = Router::new().fallback(move |request: Request| {
            let (seen, responder) = state.clone();
            async move { answer(request, seen, responder).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a local port");
        let address = listener.local_addr().expect("local address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let root = format!("http://{address}");
        Self {
            base: format!("{root}/v1"),
            root,
            seen,
        }
    }

    pub fn requests(&self) -> Vec<SeenRequest> {
        self.seen.lock().expect("not poisoned").clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().expect("not poisoned").len()
    }
}

async fn answer(
    request: Request,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    responder: Responder,
) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let attempt = {
        let mut seen = seen.lock().expect("not poisoned");
        seen.push(SeenRequest {
            path: parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
            headers: parts.headers,
            body: body.clone(),
        });
        seen.len() - 1
    };
    let reply = responder(attempt, &body);
    tokio::time::sleep(reply.header_delay).await;
    // A short pause between pieces makes them separate network reads.
    let pieces = futures_util::stream::iter(reply.pieces).then(|piece| async move {
        tokio::time::sleep(Duration::from_millis(2)).await;
        Ok::<_, Infallible>(Bytes::from(piece))
    });
    let mut response = Response::new(Body::from_stream(pieces));
    *response.status_mut() = StatusCode::from_u16(reply.status).expect("valid status");
    for (name, value) in reply.headers {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::try_from(name),
            axum::http::HeaderValue::try_from(value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}
