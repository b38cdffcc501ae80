//! `/api/v1/conversations`: a tenant's conversations, and the ones waiting
//! for a person (`?state=waiting`), found by what was said (`?q=`), and one
//! with its transcript; API tokens read them with `conversations:read`.
//!
//! Live takeover, for signed-in team members of any role: `takeover` makes
//! the agent stay silent, `messages` replies as a person (through the HTML
//! sanitizer, not the model's guardrails), `handback` returns it to the
//! agent. Each change and reply is announced on the live stream, which the
//! visitor's widget and the team's dashboards follow (see [`crate::live`]).

use agentry_actors::ConversationId;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::api_tokens::Scope;
use crate::db::chat;
use crate::db::conversations::{
    self, ConversationPage, ConversationSummary, Handover, TakeoverError,
};
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, IdPath, Principal, TenantUser};
use crate::http::listing::{check_one_of, into_page, page_limit};
use crate::http::AppState;
use crate::live::LiveEvent;

const STATUSES: [&str; 2] = ["open", "waiting_for_human"];
/// A search phrase, not a document.
const MAX_SEARCH_CHARS: usize = 200;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(revoke_session))
        .routes(routes!(take_over))
        .routes(routes!(reply_as_human))
        .routes(routes!(hand_back))
}

/// Which conversations to list: the query of `GET /conversations` and the
/// `search_conversations` MCP tool.
#[derive(Deserialize, JsonSchema, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConversationQuery {
    /// The `next_cursor` of the previous page.
    cursor: Option<Uuid>,
    /// Conversations per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// `open`, or `waiting_for_human` for those escalated to a person.
    status: Option<String>,
    /// Who answers: `agent`, `waiting` (escalated, not yet taken over) or
    /// `human` (a team member has it).
    state: Option<String>,
    /// Only this agent's conversations.
    agent_id: Option<Uuid>,
    /// Only conversations with a message containing this text (case-insensitive).
    #[param(max_length = 200)]
    q: Option<String>,
    /// Only conversations started after this time (RFC 3339).
    started_after: Option<DateTime<Utc>>,
    /// Only conversations started before this time (RFC 3339).
    started_before: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct ConversationList {
    conversations: Vec<ConversationSummary>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<Uuid>,
}

/// Conversations, newest first, a page at a time.
#[utoipa::path(get, path = "/conversations", tag = "conversations", security(("dashboard" = []), ("api_token" = ["conversations:read"])), params(ConversationQuery),
    responses((status = 200, description = "A page of conversations", body = ConversationList), (status = 403, description = "The token lacks the scope, or the role cannot do this")))]
async fn list(
    State(state): State<AppState>,
    caller: Principal,
    query: Result<Query<ConversationQuery>, QueryRejection>,
) -> Result<Json<ConversationList>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    list_conversations(&state, &caller, query).await.map(Json)
}

/// Newest first, a page at a time.
pub async fn list_conversations(
    state: &AppState,
    caller: &Principal,
    query: ConversationQuery,
) -> Result<ConversationList, ApiError> {
    caller.require(Scope::ConversationsRead)?;
    let limit = page_limit(query.limit)?;
    check_one_of("status", query.status.as_deref(), &STATUSES)?;
    check_one_of("state", query.state.as_deref(), &conversations::STATES)?;
    if let (Some(after), Some(before)) = (query.started_after, query.started_before) {
        if after >= before {
            return Err(ApiError::BadRequest(
                "started_after must be earlier than started_before".into(),
            ));
        }
    }
    let text = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    if text.is_some_and(|q| q.chars().count() > MAX_SEARCH_CHARS) {
        return Err(ApiError::BadRequest(format!(
            "q must be at most {MAX_SEARCH_CHARS} characters"
        )));
    }
    // PostgreSQL text cannot hold NUL: the search would fail, not find nothing.
    if text.is_some_and(|q| q.contains('\0')) {
        return Err(ApiError::BadRequest(
            "q must not contain NUL characters".into(),
        ));
    }
    let mut tx = state.store.tenant(caller.tenant()).await?;
    let rows = conversations::list(
        &mut tx,
        ConversationPage {
            before: query.cursor,
            status: query.status.as_deref(),
            state: query.state.as_deref(),
            agent: query.agent_id,
            text,
            started_after: query.started_after,
            started_before: query.started_before,
            limit: limit + 1,
        },
    )
    .await?;
    let (conversations, next_cursor) = into_page(rows, limit, |row| row.id);
    Ok(ConversationList {
        conversations,
        next_cursor,
    })
}

#[derive(Serialize, ToSchema)]
pub struct ConversationDetail {
    #[serde(flatten)]
    conversation: ConversationSummary,
    /// The visitor's and the assistant's messages, oldest first.
    messages: Vec<chat::Message>,
}

/// One conversation with its transcript.
#[utoipa::path(get, path = "/conversations/{conversation_id}", tag = "conversations", security(("dashboard" = []), ("api_token" = ["conversations:read"])), params(("conversation_id" = Uuid, Path, description = "The conversation's id")),
    responses((status = 200, description = "The conversation", body = ConversationDetail), (status = 403, description = "The token lacks the scope, or the role cannot do this")))]
async fn show(
    State(state): State<AppState>,
    caller: Principal,
    IdPath(id): IdPath<Uuid>,
) -> Result<Json<ConversationDetail>, ApiError> {
    get_conversation(&state, &caller, id).await.map(Json)
}

/// One conversation with its transcript, read in one snapshot.
pub async fn get_conversation(
    state: &AppState,
    caller: &Principal,
    id: Uuid,
) -> Result<ConversationDetail, ApiError> {
    caller.require(Scope::ConversationsRead)?;
    let mut tx = state.store.tenant_snapshot(caller.tenant()).await?;
    let conversation = conversations::get(&mut tx, id).await?;
    let messages = chat::transcript(&mut tx, ConversationId::from_uuid(id)).await?;
    Ok(ConversationDetail {
        conversation,
        messages,
    })
}

/// Ends the visitor's widget session behind a conversation, on every instance at once.
#[utoipa::path(delete, path = "/conversations/{conversation_id}/session", tag = "conversations", security(("dashboard" = [])), params(("conversation_id" = Uuid, Path, description = "The conversation's id")),
    responses((status = 204, description = "The visitor's session, if any, is ended"), (status = 403, description = "Your role cannot change configuration")))]
async fn revoke_session(
    State(state): State<AppState>,
    user: TenantUser,
    IdPath(conversation): IdPath<ConversationId>,
) -> Result<StatusCode, ApiError> {
    user.require_manager()?;
    let mut tx = state.store.tenant(user.tenant).await?;
    let session = chat::widget_session_of(&mut tx, conversation).await?;
    tx.commit().await?;
    if let Some(session) = session {
        state
            .widget_sessions
            .revoke(session)
            .await
            .map_err(|_| ApiError::Unavailable("the session store"))?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// A conversation after a takeover or handback.
#[derive(Serialize, ToSchema)]
struct ConversationChanged {
    conversation: ConversationSummary,
}

impl From<TakeoverError> for ApiError {
    fn from(error: TakeoverError) -> Self {
        match error {
            TakeoverError::NotFound => ApiError::NotFound,
            TakeoverError::Db(error) => error.into(),
            refused => ApiError::Conflict(refused.to_string()),
        }
    }
}

/// Takes the conversation over: from the visitor's next message on, the
/// agent stays silent and the team member answers (`messages`). A turn
/// already running finishes. Any role may, the tenant's members included;
/// taking over one's own again changes nothing.
#[utoipa::path(post, path = "/conversations/{conversation_id}/takeover", tag = "conversations", security(("dashboard" = [])), params(("conversation_id" = Uuid, Path, description = "The conversation's id")),
    responses((status = 200, description = "Taken over", body = ConversationChanged),
        (status = 403, description = "Only a signed-in team member takes over"),
        (status = 409, description = "Another team member has it, it has ended, or it is not a widget conversation")))]
async fn take_over(
    State(state): State<AppState>,
    user: TenantUser,
    IdPath(id): IdPath<Uuid>,
) -> Result<Json<ConversationChanged>, ApiError> {
    let by = user.user.as_uuid();
    change_hands(&state, &user, id, Handover::TakeOver { by }).await
}

/// Returns the conversation to its agent, which answers the visitor's next
/// message. The team member who has it hands it back; an owner or admin may
/// hand back anyone's.
#[utoipa::path(post, path = "/conversations/{conversation_id}/handback", tag = "conversations", security(("dashboard" = [])), params(("conversation_id" = Uuid, Path, description = "The conversation's id")),
    responses((status = 200, description = "Handed back", body = ConversationChanged),
        (status = 403, description = "Only a signed-in team member hands back"),
        (status = 409, description = "Nobody has it, or another team member does")))]
async fn hand_back(
    State(state): State<AppState>,
    user: TenantUser,
    IdPath(id): IdPath<Uuid>,
) -> Result<Json<ConversationChanged>, ApiError> {
    let holder = (!user.role.can_manage()).then(|| user.user.as_uuid());
    change_hands(&state, &user, id, Handover::HandBack { holder }).await
}

/// Stores the change, then tells the visitor's widget and the team's dashboards.
async fn change_hands(
    state: &AppState,
    user: &TenantUser,
    id: Uuid,
    handover: Handover,
) -> Result<Json<ConversationChanged>, ApiError> {
    let mut tx = state.store.tenant(user.tenant).await?;
    let conversation = conversations::change_hands(&mut tx, id, handover).await?;
    tx.commit().await?;
    let event = LiveEvent::Conversation {
        conversation: conversation.clone(),
    };
    let conversation_id = ConversationId::from_uuid(conversation.id);
    state
        .live
        .announce(user.tenant, conversation_id, event)
        .await;
    Ok(Json(ConversationChanged { conversation }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct HumanReply {
    /// Plain text; markup is removed, as from the agent's replies.
    text: String,
}

#[derive(Serialize, ToSchema)]
struct HumanReplyStored {
    message: chat::Message,
}

/// Replies to the visitor as the team member who took the conversation
/// over. The text goes through the HTML sanitizer (no markup reaches the
/// visitor) and is stored once, at the conversation's next position,
/// marked human; the visitor's widget shows it live.
#[utoipa::path(post, path = "/conversations/{conversation_id}/messages", tag = "conversations", security(("dashboard" = [])), params(("conversation_id" = Uuid, Path, description = "The conversation's id")),
    request_body = HumanReply,
    responses((status = 201, description = "Stored and sent", body = HumanReplyStored),
        (status = 403, description = "Only a signed-in team member replies"),
        (status = 409, description = "Take the conversation over first; or it has ended"),
        (status = 422, description = "Empty, too long, or nothing left once markup is removed")))]
async fn reply_as_human(
    State(state): State<AppState>,
    user: TenantUser,
    IdPath(id): IdPath<Uuid>,
    ApiJson(body): ApiJson<HumanReply>,
) -> Result<(StatusCode, Json<HumanReplyStored>), ApiError> {
    let max = state.settings.widget.max_message_chars;
    if body.text.chars().count() > max {
        return Err(ApiError::Invalid(format!(
            "text must be at most {max} characters"
        )));
    }
    let text = agentry_actors::guardrail_finalizer::sanitize(&body.text);
    let text = text.trim();
    if text.is_empty() {
        return Err(ApiError::Invalid(
            "text must not be empty once markup is removed".into(),
        ));
    }
    let mut tx = state.store.tenant(user.tenant).await?;
    let message = conversations::human_reply(&mut tx, id, user.user.as_uuid(), text).await?;
    tx.commit().await?;
    let event = LiveEvent::Message {
        message: message.clone(),
    };
    state
        .live
        .announce(user.tenant, ConversationId::from_uuid(id), event)
        .await;
    Ok((StatusCode::CREATED, Json(HumanReplyStored { message })))
}
