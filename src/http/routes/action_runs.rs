//! `/api/v1/action-runs`: the audit record of the agents' tool runs, newest
//! first, optionally of one conversation. Personal fields are shown opened
//! while their subject's key exists; after an erasure a run shows
//! `"input": null, "personal_data": "erased"`. API tokens need
//! `conversations:read`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::api_tokens::Scope;
use crate::http::error::ApiError;
use crate::http::extract::Principal;
use crate::http::listing::{into_page, page_limit};
use crate::http::AppState;
use crate::privacy::runs::{self, ActionRun, RunFilter};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct RunQuery {
    /// The `next_cursor` of the previous page.
    cursor: Option<Uuid>,
    /// Runs per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// Only this conversation's runs (it may have been erased since).
    conversation_id: Option<Uuid>,
}

#[derive(Serialize, ToSchema)]
struct RunList {
    action_runs: Vec<ActionRun>,
    next_cursor: Option<Uuid>,
}

/// The agents' tool runs, newest first.
#[utoipa::path(get, path = "/action-runs", tag = "conversations", security(("dashboard" = []), ("api_token" = ["conversations:read"])), params(RunQuery),
    responses((status = 200, description = "A page of runs", body = RunList), (status = 403, description = "The token lacks the scope, or the role cannot do this")))]
async fn list(
    State(state): State<AppState>,
    caller: Principal,
    query: Result<Query<RunQuery>, QueryRejection>,
) -> Result<Json<RunList>, ApiError> {
    caller.require(Scope::ConversationsRead)?;
    let Query(query) = query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let limit = page_limit(query.limit)?;
    let mut tx = state.store.tenant(caller.tenant()).await?;
    let rows = runs::list(
        &mut tx,
        &state.keyring,
        &RunFilter {
            conversations: query.conversation_id.map(|id| vec![id]),
            before: query.cursor,
            limit: limit + 1,
        },
    )
    .await?;
    let (action_runs, next_cursor) = into_page(rows, limit, |run| run.id);
    Ok(Json(RunList {
        action_runs,
        next_cursor,
    }))
}
