//! `/api/widget`: the visitor API behind the embeddable widget.
//!
//! A visitor's browser gets a short-lived, opaque session token for one widget
//! (checked against the widget's allowed origins), then chats through it. The
//! responses carry the visitor's own conversation and nothing else: no
//! tenant or agent ids, no prompt, no configuration.

use std::convert::Infallible;
use std::net::IpAddr;
use std::time::Duration;

use agentry_actors::chat_session::{TurnError, TurnEvent, TurnRequest};
use agentry_actors::ports::{StoreError, TurnChannel};
use agentry_actors::{AgentId, ConversationId, TenantId, WidgetId};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::db::{chat, conversations, widgets};
use crate::http::error::{ApiError, RateHeaders};
use crate::http::extract::{ip_subject, signed_session, ApiJson, ClientIp};
use crate::http::sse::{self, StreamGauge};
use crate::http::AppState;
use crate::live::{self, LiveEvent};
use crate::rate_limit::Tier;
use crate::tokens::TokenPurpose;
use crate::widget_sessions::WidgetSession;

pub fn router(state: AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_session))
        .routes(routes!(end_session))
        .routes(routes!(send_message, transcript))
        .routes(routes!(events))
        .layer(axum::middleware::from_fn_with_state(state, cors))
}

/// Marks a response whose Origin was checked against the widget itself.
#[derive(Clone)]
struct OriginChecked(HeaderValue);

/// CORS for the visitor API: preflights (which carry no key or token) are
/// answered for origins that some widget allows; actual responses name the
/// origin only when it is allowed (by the widget when known).
async fn cors(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let allowed_anywhere = |origin: HeaderValue| {
        let state = state.clone();
        async move {
            let Ok(text) = origin.to_str() else {
                return false;
            };
            state
                .origin_cache
                .allowed_anywhere(&state.store, text)
                .await
        }
    };
    if request.method() == Method::OPTIONS {
        return match origin {
            Some(origin) if allowed_anywhere(origin.clone()).await => {
                let mut response = StatusCode::NO_CONTENT.into_response();
                let headers = response.headers_mut();
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static("GET, POST"),
                );
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static("authorization, content-type, accept, last-event-id"),
                );
                headers.insert(
                    header::ACCESS_CONTROL_MAX_AGE,
                    HeaderValue::from_static("600"),
                );
                headers.insert(header::VARY, HeaderValue::from_static("Origin"));
                response
            }
            _ => {
                // The refusal depends on Origin too: a cache must not serve it to another origin.
                let mut response = ApiError::Forbidden("origin not allowed".into()).into_response();
                response
                    .headers_mut()
                    .insert(header::VARY, HeaderValue::from_static("Origin"));
                response
            }
        };
    }
    let mut response = next.run(request).await;
    let decided = response.extensions_mut().remove::<OriginChecked>();
    let allow = match (decided, origin) {
        (Some(OriginChecked(origin)), _) => Some(origin),
        // Errors raised before the widget was known (bad token): readable by allowed origins.
        (None, Some(origin)) if allowed_anywhere(origin.clone()).await => Some(origin),
        _ => None,
    };
    let headers = response.headers_mut();
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = allow {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    response
}

fn origin_of(headers: &HeaderMap) -> Option<HeaderValue> {
    headers.get(header::ORIGIN).cloned()
}

/// Marks `response` as readable by `origin` (already checked by the caller).
fn allow_origin(mut response: Response, origin: Option<HeaderValue>) -> Response {
    if let Some(origin) = origin {
        response.extensions_mut().insert(OriginChecked(origin));
    }
    response
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SessionRequest {
    public_key: String,
}

#[derive(Serialize, ToSchema)]
struct SessionResponse {
    token: String,
    expires_at: chrono::DateTime<Utc>,
}

/// Starts a visitor session for a widget, from a page on one of its allowed
/// origins. Counted on the `widget_sessions` tier per client IP and widget.
#[utoipa::path(post, path = "/session", tag = "widget", params(("origin" = Option<String>, Header, description = "The embedding page's origin; it must be one the widget allows")), request_body = SessionRequest,
    responses((status = 201, description = "A session token for the widget", body = SessionResponse, headers(("access-control-allow-origin" = String, description = "The page's origin, when allowed"), ("vary" = String, description = "`Origin`"))),
        (status = 403, description = "The page's origin may not use this widget"),
        (status = 404, description = "No widget has this public key"),
        (status = 429, description = "Too many new sessions from this client"),
        (status = 503, description = "The session store or the rate limiter is unavailable")))]
async fn create_session(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SessionRequest>,
) -> Result<Response, ApiError> {
    // Counted before the widget is looked up: a flood of forged-Origin
    // sessions costs neither a query nor a session.
    let public_key = body.public_key.trim();
    let owner = state.limiter.overrides().tenant_of_widget_key(public_key);
    let limited = state
        .limit(
            Tier::WidgetSessions,
            owner,
            &format!("{}:{public_key}", ip_subject(ip)),
        )
        .await?;
    let widget = widgets::find_by_public_key(&state.store, public_key)
        .await?
        .ok_or(ApiError::NotFound)?;
    let origin = origin_of(&headers);
    let origin_text = origin.as_ref().and_then(|o| o.to_str().ok());
    // Browsers always send Origin on this cross-origin POST; its absence is not a browser on an allowed site.
    match origin_text {
        Some(text) if widget.allowed_origins.iter().any(|allowed| allowed == text) => {}
        _ => {
            return Err(ApiError::Forbidden(
                "this page's origin may not use this widget".into(),
            ))
        }
    }
    let tenant = TenantId::from_uuid(widget.tenant_id);
    let agent = AgentId::from_uuid(widget.agent_id);
    let widget_id = WidgetId::from_uuid(widget.widget_id);
    let session_id = Uuid::new_v4();
    // Whole seconds (rounded up), as the token carries it: the visitor is told the exact expiry.
    let deadline =
        Utc::now() + chrono::Duration::seconds(state.settings.widget.session_ttl_secs as i64);
    let round_up = i64::from(deadline.timestamp_subsec_nanos() > 0);
    let expires_at = chrono::DateTime::from_timestamp(deadline.timestamp() + round_up, 0)
        .ok_or_else(|| ApiError::Internal("session expiry out of range".into()))?;
    // The conversation's row is written with its first message: a session
    // that never speaks leaves nothing in PostgreSQL.
    let session = WidgetSession {
        tenant,
        agent,
        widget: widget_id,
        conversation: ConversationId::new(),
        // The address the limits key on: behind a trusted proxy, the client's.
        visitor_ip: ip.map(|ip| ip.to_string()),
        expires_at,
    };
    state
        .widget_sessions
        .create(session_id, &session)
        .await
        .map_err(|_| ApiError::Unavailable("the session store"))?;
    let token = state
        .signer
        .issue(TokenPurpose::Widget, session_id, expires_at);
    let response = (
        StatusCode::CREATED,
        limited,
        Json(SessionResponse { token, expires_at }),
    )
        .into_response();
    Ok(allow_origin(response, origin))
}

/// A visitor with a live session. Whether the widget (as it is now) still
/// allows the page's origin is checked by [`Visitor::check_widget`], or, for a
/// chat turn, inside the turn's first write.
struct Visitor {
    session_id: Uuid,
    session: WidgetSession,
    origin: Option<HeaderValue>,
}

impl FromRequestParts<AppState> for Visitor {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let session_id = signed_session(parts, state, TokenPurpose::Widget)?;
        let session = state
            .widget_sessions
            .get(session_id)
            .await
            .map_err(|_| ApiError::Unavailable("the session store"))?
            .ok_or(ApiError::Unauthorized)?;
        // A widget token is only good on a page the widget allows: without an
        // Origin (not a browser, or a stolen token replayed by a script) the
        // widget's origin list could not be enforced, so the call is refused.
        let origin = page_origin(&parts.headers, state).ok_or_else(origin_refused)?;
        Ok(Self {
            session_id,
            session,
            origin: Some(origin),
        })
    }
}

/// The origin of the page calling: its `Origin` header, or, for a request
/// the browser marks same-origin (`Sec-Fetch-Site`), this server's own public
/// origin: browsers send no Origin on a same-origin GET, such as the demo
/// page reading its transcript. It is then checked against the widget's list
/// like any other, so a customer's widget still refuses it.
fn page_origin(headers: &HeaderMap, state: &AppState) -> Option<HeaderValue> {
    if let Some(origin) = origin_of(headers) {
        return Some(origin);
    }
    let same_origin = headers
        .get("sec-fetch-site")
        .is_some_and(|site| site.as_bytes() == b"same-origin");
    if !same_origin {
        return None;
    }
    let own = url::Url::parse(&state.settings.http.public_url).ok()?;
    HeaderValue::from_str(&own.origin().ascii_serialization()).ok()
}

fn origin_refused() -> ApiError {
    ApiError::Forbidden("this page's origin may not use this widget".into())
}

impl Visitor {
    fn origin_text(&self) -> Option<&str> {
        self.origin.as_ref().and_then(|o| o.to_str().ok())
    }

    /// Counts one request against the widget's tier for this client IP.
    async fn limit_widget(
        &self,
        state: &AppState,
        ip: Option<IpAddr>,
    ) -> Result<RateHeaders, ApiError> {
        state
            .limit(
                Tier::WidgetMessages,
                Some(self.session.tenant),
                &format!("{}:{}", ip_subject(ip), self.session.widget),
            )
            .await
    }

    /// Counts a turn against the widget's tier for this client IP and the
    /// chat tier for this session (each turn is an LLM call billed to the
    /// tenant); the headers are those of the tighter of the two.
    async fn limit_turn(
        &self,
        state: &AppState,
        ip: Option<IpAddr>,
    ) -> Result<RateHeaders, ApiError> {
        let widget = self.limit_widget(state, ip).await?;
        let session = state
            .limit(
                Tier::Chat,
                Some(self.session.tenant),
                &self.session_id.to_string(),
            )
            .await?;
        Ok(match (widget.0, session.0) {
            (Some(a), Some(b)) if a.remaining < b.remaining => RateHeaders(Some(a)),
            _ => session,
        })
    }

    /// The widget as it is now, not as it was when the session began: deleting
    /// it ends its sessions, and removing an origin shuts that origin out at once.
    async fn check_widget(&self, state: &AppState) -> Result<(), ApiError> {
        let mut tx = state.store.tenant(self.session.tenant).await?;
        let allowed_origins = widgets::allowed_origins(&mut tx, self.session.widget)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        tx.commit().await?;
        match self.origin_text() {
            Some(text) if !allowed_origins.iter().any(|allowed| allowed == text) => {
                Err(origin_refused())
            }
            _ => Ok(()),
        }
    }
}

/// What the visitor is told when a turn could not run.
fn turn_refusal(error: TurnError) -> ApiError {
    match error {
        // The widget was deleted or the conversation ended: the session is over.
        TurnError::Store(StoreError::NotFound) => ApiError::Unauthorized,
        TurnError::Store(StoreError::OriginRefused) => origin_refused(),
        error => {
            tracing::warn!(%error, "chat turn failed");
            ApiError::Unavailable("the assistant")
        }
    }
}

/// Ends the visitor's session (the widget's "End conversation").
#[utoipa::path(post, path = "/session/end", tag = "widget", security(("widget_session" = [])), params(("origin" = Option<String>, Header, description = "The embedding page's origin; it must be one the widget allows")),
    responses((status = 204, description = "Ended", headers(("access-control-allow-origin" = String, description = "The page's origin, when allowed"), ("vary" = String, description = "`Origin`"))),
        (status = 403, description = "The page's origin may not use this widget")))]
async fn end_session(
    State(state): State<AppState>,
    visitor: Visitor,
) -> Result<Response, ApiError> {
    visitor.check_widget(&state).await?;
    state
        .widget_sessions
        .revoke(visitor.session_id)
        .await
        .map_err(|_| ApiError::Unavailable("the session store"))?;
    Ok(allow_origin(
        StatusCode::NO_CONTENT.into_response(),
        visitor.origin,
    ))
}

#[derive(Serialize, ToSchema)]
struct Transcript {
    messages: Vec<chat::Message>,
}

/// The visitor's own conversation so far.
#[utoipa::path(get, path = "/messages", tag = "widget", security(("widget_session" = [])), params(("origin" = Option<String>, Header, description = "The embedding page's origin; it must be one the widget allows")),
    responses((status = 200, description = "The messages, oldest first", body = Transcript, headers(("access-control-allow-origin" = String, description = "The page's origin, when allowed"), ("vary" = String, description = "`Origin`"))),
        (status = 403, description = "The page's origin may not use this widget")))]
async fn transcript(State(state): State<AppState>, visitor: Visitor) -> Result<Response, ApiError> {
    visitor.check_widget(&state).await?;
    let mut tx = state.store.tenant(visitor.session.tenant).await?;
    let messages = chat::transcript(&mut tx, visitor.session.conversation).await?;
    Ok(allow_origin(
        Json(Transcript { messages }).into_response(),
        visitor.origin,
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MessageRequest {
    text: String,
}

/// A turn's answer to a client that did not ask for an event stream:
/// the reply; or, while a person on the team has the conversation, none
/// (`held`), their answer coming on the conversation's event stream.
#[derive(Serialize, ToSchema)]
struct Reply {
    reply: Option<chat::Message>,
    /// A team member has the conversation: the message is theirs to answer.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    held: bool,
}

fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

/// One chat turn. With `Accept: text/event-stream` the reply streams as
/// server-sent events (`delta` `{"text"}`…, then `message` with the stored
/// reply, then `done`; or `error` `{"error":{…}}`); otherwise it is one JSON
/// answer. Counted on `widget_messages` (client IP and widget) and `chat`
/// (this session).
#[utoipa::path(post, path = "/messages", tag = "widget", security(("widget_session" = [])),
    params(("origin" = Option<String>, Header, description = "The embedding page's origin; it must be one the widget allows"), ("accept" = Option<String>, Header, description = "`text/event-stream` to stream the reply")),
    request_body = MessageRequest,
    responses((status = 200, description = "The reply (cleaned, as stored)",
            content((Reply = "application/json"), (String = "text/event-stream")), headers(("access-control-allow-origin" = String, description = "The page's origin, when allowed"), ("vary" = String, description = "`Origin`"))),
        (status = 202, description = "Held (JSON mode): a team member has the conversation, so the agent does not answer; `{\"reply\":null,\"held\":true}`, their answer comes on `GET /events`", body = Reply,
            headers(("access-control-allow-origin" = String, description = "The page's origin, when allowed"), ("vary" = String, description = "`Origin`"))),
        (status = 403, description = "The page's origin may not use this widget")))]
async fn send_message(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    visitor: Visitor,
    headers: HeaderMap,
    ApiJson(body): ApiJson<MessageRequest>,
) -> Result<Response, ApiError> {
    let limited = visitor.limit_turn(&state, ip).await?;
    let text = body.text.trim();
    let max = state.settings.widget.max_message_chars;
    let invalid = if text.is_empty() {
        Some("text must not be empty".to_owned())
    } else if text.chars().count() > max {
        Some(format!("text must be at most {max} characters"))
    } else {
        None
    };
    if let Some(reason) = invalid {
        // A valid turn checks the widget in its first write; an invalid one
        // never gets there, and an origin the widget refuses hears only that.
        visitor.check_widget(&state).await?;
        return Err(ApiError::Invalid(reason));
    }
    let request = TurnRequest {
        tenant: visitor.session.tenant,
        agent: visitor.session.agent,
        conversation: visitor.session.conversation,
        channel: TurnChannel::Widget {
            widget: visitor.session.widget,
            session: visitor.session_id,
            origin: visitor.origin_text().map(str::to_owned),
        },
        text: text.to_owned(),
    };
    let mut handle = state
        .pipeline
        .submit(request)
        .map_err(|_| ApiError::Unavailable("the assistant"))?;
    let timeout = Duration::from_secs(state.settings.chat.turn_timeout_secs);
    let unavailable = || ApiError::Unavailable("the assistant");

    if !wants_event_stream(&headers) {
        let answered = tokio::time::timeout(timeout, handle.reply)
            .await
            .map_err(|_| unavailable())?
            .map_err(|_| unavailable())?;
        let (status, reply) = match answered {
            Ok(reply) => (
                StatusCode::OK,
                Reply {
                    reply: Some(chat::Message::from(reply)),
                    held: false,
                },
            ),
            Err(TurnError::TakenOver) => (
                StatusCode::ACCEPTED,
                Reply {
                    reply: None,
                    held: true,
                },
            ),
            Err(error) => return Err(turn_refusal(error)),
        };
        return Ok(allow_origin(
            (status, limited, Json(reply)).into_response(),
            visitor.origin,
        ));
    }

    // The stream starts once the visitor's message is stored, so a refused
    // turn (origin, ended session) still gets its status code.
    let accepted = tokio::time::timeout(timeout, &mut handle.accepted)
        .await
        .map_err(|_| unavailable())?;
    if accepted.is_err() {
        let refusal = tokio::time::timeout(timeout, handle.reply)
            .await
            .map_err(|_| unavailable())?
            .map_err(|_| unavailable())?;
        return Err(match refusal {
            Err(error) => turn_refusal(error),
            Ok(_) => unavailable(),
        });
    }

    // Forward cleaned deltas as they come, then the stored message; the turn
    // finishes (and is stored) even if the visitor disconnects.
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel::<Event>();
    crate::telemetry::trace_context::spawn_in_span(async move {
        let mut events = handle.events;
        let mut reply = handle.reply;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                Some(TurnEvent::Delta(text)) = events.recv() => {
                    let _ = sender.send(delta_event(&text));
                }
                result = &mut reply => {
                    // Deltas sent before the reply may still sit in the channel.
                    while let Ok(TurnEvent::Delta(text)) = events.try_recv() {
                        let _ = sender.send(delta_event(&text));
                    }
                    let event = match result {
                        Ok(Ok(reply)) => Event::default()
                            .event("message")
                            .data(json!(chat::Message::from(reply)).to_string()),
                        Ok(Err(TurnError::TakenOver)) => Event::default().event("held").data("{}"),
                        other => {
                            if let Ok(Err(error)) = other {
                                tracing::warn!(%error, "chat turn failed");
                            }
                            error_event()
                        }
                    };
                    let _ = sender.send(event);
                    let _ = sender.send(Event::default().event("done").data("{}"));
                    break;
                }
                _ = &mut deadline => {
                    let _ = sender.send(error_event());
                    break;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), receiver))
    });
    let response = (limited, Sse::new(stream).keep_alive(KeepAlive::default())).into_response();
    Ok(allow_origin(response, visitor.origin))
}

fn delta_event(text: &str) -> Event {
    Event::default()
        .event("delta")
        .data(json!({ "text": text }).to_string())
}

fn error_event() -> Event {
    let body = json!({ "error": { "code": "unavailable", "message": "the assistant is unavailable, try again shortly" } });
    Event::default().event("error").data(body.to_string())
}

/// Who answers the visitor, as the widget is told: `agent` (the assistant,
/// also while the conversation waits for a person) or `human`.
fn visitor_state(state: &str) -> &'static str {
    if state == "human" {
        "human"
    } else {
        "agent"
    }
}

fn state_event(state: &str) -> Event {
    Event::default()
        .event("state")
        .data(json!({ "state": visitor_state(state) }).to_string())
}

/// The visitor's conversation, live: first `state` `{"state":"agent"|"human"}`,
/// then each `message` stored in it while the team watches (a team member's
/// replies among them, marked `human`), and `state` again when a person
/// takes over or hands back. A message's event `id` is its position: with
/// `Last-Event-ID` the stream first sends every message after it, from the
/// transcript. A connection lasts at most `http.event_stream_secs`, then
/// the widget reconnects (and its session is checked again). Each stream
/// opened counts on `widget_messages` (client IP and widget).
#[utoipa::path(get, path = "/events", tag = "widget", security(("widget_session" = [])),
    params(("origin" = Option<String>, Header, description = "The embedding page's origin; it must be one the widget allows"),
        ("last-event-id" = Option<String>, Header, description = "The position of the last message received")),
    responses((status = 200, description = "`state` and `message` events", content_type = "text/event-stream", body = crate::http::sse::ServerSentEvent,
            headers(("access-control-allow-origin" = String, description = "The page's origin, when allowed"), ("vary" = String, description = "`Origin`"))),
        (status = 400, description = "`Last-Event-ID` is not a message position"),
        (status = 403, description = "The page's origin may not use this widget")))]
async fn events(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    visitor: Visitor,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    visitor.check_widget(&state).await?;
    // A stream is long-lived: each one opened counts as a message on the
    // widget's tier, so one client cannot hold them open without bound.
    let limited = visitor.limit_widget(&state, ip).await?;
    let after = match sse::last_event_id(&headers) {
        None => None,
        Some(id) => Some(
            id.parse::<i64>()
                .ok()
                .filter(|seq| *seq >= -1)
                .ok_or_else(|| {
                    ApiError::BadRequest("Last-Event-ID must be a message position".into())
                })?,
        ),
    };
    // Subscribed before the transcript is read: nothing falls between the two.
    let mut subscription = state.live.subscribe();
    let (tenant, conversation) = (visitor.session.tenant, visitor.session.conversation);
    let mut tx = state.store.tenant_snapshot(tenant).await?;
    let current = match conversations::get(&mut tx, conversation.as_uuid()).await {
        Ok(summary) => summary.state,
        // No message yet: the conversation starts at the first.
        Err(crate::db::DbError::NotFound) => "agent".to_owned(),
        Err(error) => return Err(error.into()),
    };
    let replay = match after {
        Some(after) => chat::messages_after(&mut tx, conversation, after).await?,
        None => Vec::new(),
    };
    tx.commit().await?;
    let (sender, stream) = sse::channel();
    let lifetime = super::events::stream_lifetime(&state);
    let mut feed = WidgetFeed {
        sender,
        store: state.store.clone(),
        tenant,
        conversation,
        last_seq: after,
    };
    tokio::spawn(async move {
        let _open = StreamGauge::open("widget");
        let mut told = visitor_state(&current);
        let deadline = tokio::time::sleep(lifetime);
        tokio::pin!(deadline);
        if feed.sender.send(state_event(told)).await.is_err() {
            return;
        }
        for message in &replay {
            if !feed.send(message).await {
                return;
            }
        }
        loop {
            let delivered = tokio::select! {
                received = subscription.events.recv() => match received {
                    Ok(entry) if entry.conversation == conversation && entry.tenant == tenant => {
                        match &entry.event {
                            LiveEvent::Message { message } => feed.deliver(message).await,
                            LiveEvent::Conversation { conversation } => {
                                let now = visitor_state(&conversation.state);
                                let changed = now != told;
                                told = now;
                                !changed || feed.sender.send(state_event(now)).await.is_ok()
                            }
                        }
                    }
                    Ok(_) => true,
                    // Too slow to keep up: what was missed is in the transcript.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => feed.catch_up().await,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => false,
                },
                _ = live::until_set(&mut subscription.closing) => false,
                _ = feed.sender.closed() => false,
                _ = &mut deadline => false,
            };
            if !delivered {
                return;
            }
        }
    });
    Ok(allow_origin(
        (limited, sse::response(stream)).into_response(),
        visitor.origin,
    ))
}

/// One visitor's stream of their conversation's messages: each sent once,
/// in position order. Instances publish independently, so a message can be
/// heard before an earlier one; a gap is filled from the transcript first.
struct WidgetFeed {
    sender: sse::Sender,
    store: crate::db::Store,
    tenant: TenantId,
    conversation: ConversationId,
    /// The last position sent; `None` until the first (a fresh connection
    /// starts at whatever comes next).
    last_seq: Option<i64>,
}

impl WidgetFeed {
    /// Sends a message heard live, after any stored before it and not yet
    /// sent; `false` once the visitor is gone (or the store is).
    async fn deliver(&mut self, message: &chat::Message) -> bool {
        match self.last_seq {
            Some(last) if message.seq > last + 1 => self.catch_up().await,
            _ => self.send(message).await,
        }
    }

    /// Sends every stored message after the last one sent.
    async fn catch_up(&mut self) -> bool {
        let Some(after) = self.last_seq else {
            return true;
        };
        let missed = async {
            let mut tx = self.store.tenant(self.tenant).await?;
            chat::messages_after(&mut tx, self.conversation, after).await
        };
        let Ok(missed) = missed.await else {
            return false;
        };
        for message in &missed {
            if !self.send(message).await {
                return false;
            }
        }
        true
    }

    /// Sends a message newer than the last one sent.
    async fn send(&mut self, message: &chat::Message) -> bool {
        if self.last_seq.is_some_and(|last| message.seq <= last) {
            return true;
        }
        self.last_seq = Some(message.seq);
        let event = Event::default()
            .event("message")
            .id(message.seq.to_string())
            .data(json!(message).to_string());
        self.sender.send(event).await.is_ok()
    }
}
