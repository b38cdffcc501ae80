//! `/api/v1/conversations`: a tenant's conversations, and the ones waiting
//! for a person (`?status=waiting_for_human`).

use agentry_actors::ConversationId;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::db::chat;
use crate::db::conversations::{self, ConversationPage, ConversationSummary};
use crate::http::error::ApiError;
use crate::http::extract::{IdPath, TenantUser};
use crate::http::listing::{check_one_of, into_page, page_limit};
use crate::http::AppState;

const STATUSES: [&str; 2] = ["open", "waiting_for_human"];

pub fn router() -> Router<AppState> {
    Router::new().route("/conversations", get(list)).route(
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
}

#[derive(Serialize)]
struct ConversationList {
    conversations: Vec<ConversationSummary>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<Uuid>,
}

async fn list(
    State(state): State<AppState>,
    user: TenantUser,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ConversationList>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let limit = page_limit(query.limit)?;
    check_one_of("status", query.status.as_deref(), &STATUSES)?;
    let mut tx = state.store.tenant(user.tenant).await?;
    let rows = conversations::list(
        &mut tx,
        ConversationPage {
            before: query.cursor,
            status: query.status.as_deref(),
            agent: query.agent_id,
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
