//! `GET /api/v1/events`: the dashboard's server-sent event stream. A
//! signed-in team member (any role) hears about the tenant's live
//! conversations, whichever instance they happen on: `conversation` when one
//! is escalated, taken over or handed back, `message` for each message
//! stored in one that is waiting or taken over.
//!
//! Each event's `id` is its live-stream id; a client reconnecting with
//! `Last-Event-ID` gets what it missed (within the stream's cap, see
//! [`crate::live`]). A stream lasts at most `http.event_stream_secs`, so a
//! revoked or expired token stops hearing within it: the client reconnects
//! and is authenticated again.

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::http::error::ApiError;
use crate::http::extract::TenantUser;
use crate::http::sse::{self, StreamGauge};
use crate::http::AppState;
use crate::live::{self, LiveEntry, LiveEvent};

/// How long one connection streams before the client must reconnect.
pub fn stream_lifetime(state: &AppState) -> Duration {
    Duration::from_secs(state.settings.http.event_stream_secs)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}

/// The tenant's live conversation events, as server-sent events.
#[utoipa::path(get, path = "/events", tag = "conversations", security(("dashboard" = [])),
    params(("last-event-id" = Option<String>, Header, description = "The `id` of the last event received: the stream resumes after it")),
    responses((status = 200, description = "`conversation` `{\"conversation\":{…}}` and `message` `{\"conversation_id\",\"message\":{…}}` events", content_type = "text/event-stream", body = crate::http::sse::ServerSentEvent),
        (status = 400, description = "`Last-Event-ID` is not an id this stream gave"),
        (status = 403, description = "Only a signed-in team member listens")))]
async fn events(
    State(state): State<AppState>,
    user: TenantUser,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let resume = match sse::last_event_id(&headers) {
        Some(id) if live::stream_order(id).is_some() => Some(id.to_owned()),
        Some(_) => {
            return Err(ApiError::BadRequest(
                "Last-Event-ID must be the id of an event of this stream".into(),
            ))
        }
        None => None,
    };
    // Subscribed before the replay is read: nothing falls between the two.
    let mut subscription = state.live.subscribe();
    let tenant = user.tenant;
    let replay = match &resume {
        Some(after) => state
            .live
            .since(after, tenant)
            .await
            .map_err(|_| ApiError::Unavailable("the live stream"))?,
        None => Vec::new(),
    };
    let (sender, stream) = sse::channel();
    let hub = state.live.clone();
    let lifetime = stream_lifetime(&state);
    tokio::spawn(async move {
        let _open = StreamGauge::open("dashboard");
        let mut last = resume;
        let deadline = tokio::time::sleep(lifetime);
        tokio::pin!(deadline);
        for entry in replay {
            if !forward(&sender, &entry, &mut last).await {
                return;
            }
        }
        loop {
            let entry = tokio::select! {
                received = subscription.events.recv() => match received {
                    Ok(entry) if entry.tenant == tenant => entry,
                    Ok(_) => continue,
                    // Too slow to keep up: catch up from the stream itself.
                    Err(RecvError::Lagged(_)) => {
                        let Some(after) = last.clone() else { continue };
                        match hub.since(&after, tenant).await {
                            Ok(missed) => {
                                for entry in missed {
                                    if !forward(&sender, &entry, &mut last).await {
                                        return;
                                    }
                                }
                            }
                            Err(_) => return,
                        }
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                },
                _ = live::until_set(&mut subscription.closing) => return,
                _ = sender.closed() => return,
                _ = &mut deadline => return,
            };
            if !forward(&sender, &entry, &mut last).await {
                return;
            }
        }
    });
    Ok(sse::response(stream).into_response())
}

/// Sends `entry` unless it is not newer than `last` (a replayed event heard
/// live as well); `false` once the client is gone.
async fn forward(sender: &sse::Sender, entry: &LiveEntry, last: &mut Option<String>) -> bool {
    if last
        .as_deref()
        .is_some_and(|last| live::stream_order(&entry.id) <= live::stream_order(last))
    {
        return true;
    }
    *last = Some(entry.id.clone());
    let event = match &entry.event {
        LiveEvent::Conversation { conversation } => Event::default()
            .event("conversation")
            .data(json!({ "conversation": conversation }).to_string()),
        LiveEvent::Message { message } => Event::default()
            .event("message")
            .data(json!({ "conversation_id": entry.conversation, "message": message }).to_string()),
    };
    sender.send(event.id(entry.id.clone())).await.is_ok()
}
