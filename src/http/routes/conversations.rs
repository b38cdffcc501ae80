//! `/api/v1/conversations`: a tenant's conversations, and the ones waiting
//! for a person (`?status=waiting_for_human`), and one with its transcript.
//! API tokens read them with `conversations:read`.

use agentry_actors::ports::MessageRole;
use agentry_actors::ConversationId;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api_tokens::Scope;
use crate::db::chat;
use crate::db::conversations::{self, ConversationPage, ConversationSummary};
use crate::http::error::ApiError;
use crate::http::extract::{IdPath, Principal, TenantUser};
use crate::http::listing::{check_one_of, into_page, page_limit};
use crate::http::AppState;

const STATUSES: [&str; 2] = ["open", "waiting_for_human"];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/conversations", get(list))
        .route("/conversations/{conversation_id}", get(show))
        .route(
            "/conversations/{conversation_id}/session",
            delete(revoke_session),
        )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// The `next_cursor` of the previous page.
    cursor: Option<Uuid>,
    limit: Option<i64>,
    status: Option<String>,
    agent_id: Option<Uuid>,
    /// Conversations started in this window (automation polls by time).
    started_after: Option<DateTime<Utc>>,
    started_before: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
struct ConversationList {
    conversations: Vec<ConversationSummary>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<Uuid>,
}

async fn list(
    State(state): State<AppState>,
    caller: Principal,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ConversationList>, ApiError> {
    caller.require(Scope::ConversationsRead)?;
    let Query(query) = query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let limit = page_limit(query.limit)?;
    check_one_of("status", query.status.as_deref(), &STATUSES)?;
    if let (Some(after), Some(before)) = (query.started_after, query.started_before) {
        if after >= before {
            return Err(ApiError::BadRequest(
                "started_after must be earlier than started_before".into(),
            ));
        }
    }
    let mut tx = state.store.tenant(caller.tenant()).await?;
    let rows = conversations::list(
        &mut tx,
        ConversationPage {
            before: query.cursor,
            status: query.status.as_deref(),
            agent: query.agent_id,
            started_after: query.started_after,
            started_before: query.started_before,
            limit: limit + 1,
        },
    )
    .await?;
    let (conversations, next_cursor) = into_page(rows, limit, |row| row.id);
    Ok(Json(ConversationList {
        conversations,
        next_cursor,
    }))
}

/// A message of a transcript.
#[derive(Serialize)]
struct TranscriptMessage {
    id: Uuid,
    role: MessageRole,
    content: String,
    created_at: DateTime<Utc>,
}

#[derive(Serialize)]
struct ConversationDetail {
    #[serde(flatten)]
    conversation: ConversationSummary,
    /// The visitor's and the assistant's messages, oldest first.
    messages: Vec<TranscriptMessage>,
}

/// One conversation with its transcript, read in one snapshot.
async fn show(
    State(state): State<AppState>,
    caller: Principal,
    IdPath(id): IdPath<Uuid>,
) -> Result<Json<ConversationDetail>, ApiError> {
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
    Ok(Json(ConversationDetail {
        conversation,
        messages,
    }))
}

/// Ends the visitor's widget session behind a conversation, on every instance at once.
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
