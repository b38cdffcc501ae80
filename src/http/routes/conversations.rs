//! `/api/v1/conversations`: a tenant's conversations.

use agentry_actors::ConversationId;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::delete;
use axum::Router;

use crate::db::chat;
use crate::http::error::ApiError;
use crate::http::extract::{IdPath, TenantUser};
use crate::http::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/conversations/{conversation_id}/session",
        delete(revoke_session),
    )
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
