//! The baseline: a bare axum handler with the visitor API's request shape
//! (POST JSON with a bearer token, a JSON `{"reply":{…}}` of the run's mean
//! reply size), served in this process on its own tokio runtime, so that
//! turns/s can be read against what this machine, this client and axum manage
//! with no work behind the handler.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::client::BaseUrl;

pub struct Baseline {
    pub base: BaseUrl,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for Baseline {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

struct Shared {
    content: String,
    served: AtomicU64,
}

#[derive(Deserialize)]
struct MessageRequest {
    text: String,
}

#[derive(Serialize)]
struct Reply<'a> {
    reply: Message<'a>,
}

/// Shaped like agentry's stored message.
#[derive(Serialize)]
struct Message<'a> {
    id: String,
    role: &'static str,
    content: &'a str,
    created_at: String,
}

async fn message(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(body): Json<MessageRequest>,
) -> Response {
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer ") && v.len() > 7);
    if !authorized {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if body.text.trim().is_empty() {
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    }
    let n = shared.served.fetch_add(1, Ordering::Relaxed);
    Json(Reply {
        reply: Message {
            id: format!("00000000-0000-4000-8000-{n:012x}"),
            role: "assistant",
            content: &shared.content,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        },
    })
    .into_response()
}

/// Reply text making the whole body about `body_bytes` long.
fn content_for(body_bytes: usize) -> String {
    // The envelope around the content: ids, role and timestamp.
    const ENVELOPE: usize = 130;
    const WORDS: &str = "the answer from the knowledge base with a little detail about it ";
    let wanted = body_bytes.saturating_sub(ENVELOPE).max(16);
    WORDS
        .chars()
        .cycle()
        .take(wanted)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Starts the baseline server on a free loopback port, on a runtime of its
/// own with as many workers as cores (like the server under test).
pub fn start(body_bytes: usize) -> anyhow::Result<Baseline> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the baseline")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let shared = Arc::new(Shared {
        content: content_for(body_bytes),
        served: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/api/widget/messages", post(message))
        .with_state(shared);
    let (shutdown, stopped) = oneshot::channel::<()>();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("baseline")
        .enable_all()
        .build()
        .context("starting the baseline runtime")?;
    std::thread::Builder::new()
        .name("baseline".into())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        })
        .context("starting the baseline thread")?;
    Ok(Baseline {
        base: BaseUrl::loopback(port),
        shutdown: Some(shutdown),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_is_about_the_requested_size() {
        let shared = Shared {
            content: content_for(900),
            served: AtomicU64::new(0),
        };
        let body = serde_json::to_string(&Reply {
            reply: Message {
                id: "00000000-0000-4000-8000-000000000000".into(),
                role: "assistant",
                content: &shared.content,
                created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            },
        })
        .unwrap();
        assert!((850..=950).contains(&body.len()), "{}", body.len());
        assert!(content_for(0).len() >= 10);
    }
}
