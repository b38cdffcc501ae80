//! `/api/v1/conversations`: a tenant's conversations, and the ones waiting
//! for a person (`?status=waiting_for_human`), found by what was said
//! (`?q=`), and one with its transcript.
//! API tokens read them with `conversations:read`.

use agentry_actors::ports::MessageRole;
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
use crate::db::conversations::{self, ConversationPage, ConversationSummary};
use crate::http::error::ApiError;
use crate::http::extract::{IdPath, Principal, TenantUser};
use crate::http::listing::{check_one_of, into_page, page_limit};
use crate::http::AppState;

const STATUSES: [&str; 2] = ["open", "waiting_for_human"];
/// A search phrase, not a document.
const MAX_SEARCH_CHARS: usize = 200;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(revoke_session))
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

/// A message of a transcript.
#[derive(Serialize, ToSchema)]
struct TranscriptMessage {
    id: Uuid,
    #[schema(value_type = crate::http::openapi::MessageRoleSchema)]
    role: MessageRole,
    content: String,
    created_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct ConversationDetail {
    #[serde(flatten)]
    conversation: ConversationSummary,
    /// The visitor's and the assistant's messages, oldest first.
    messages: Vec<TranscriptMessage>,
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
    let messages = chat::transcript(&mut tx, ConversationId::from_uuid(id))
        .await?
        .into_iter()
        .map(|message| TranscriptMessage {
            id: message.id,
            role: message.role,
            content: message.content,
            created_at: message.created_at,
        })
        .collect();
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
