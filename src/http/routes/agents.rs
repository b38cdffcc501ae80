//! `/api/v1/agents`: a tenant's agents.

use agentry_actors::AgentId;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::db::agents::{self, Agent, AgentChanges, NewAgent};
use crate::domain::{check_system_prompt, parse_name, AgentProfile};
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, IdPath, TenantUser};
use crate::http::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, remove))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateAgent {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    name: String,
    #[serde(default)]
    #[schema(max_length = 20000)]
    system_prompt: String,
    #[serde(default)]
    profile: AgentProfile,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateAgent {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    name: Option<String>,
    #[schema(max_length = 20000)]
    system_prompt: Option<String>,
    profile: Option<AgentProfile>,
}

#[derive(Serialize, ToSchema)]
struct AgentList {
    agents: Vec<Agent>,
}

/// The tenant's agents, oldest first.
#[utoipa::path(get, path = "/agents", tag = "agents", security(("dashboard" = [])),
    responses((status = 200, description = "The agents", body = AgentList)))]
async fn list(
    State(state): State<AppState>,
    user: TenantUser,
) -> Result<Json<AgentList>, ApiError> {
    let mut tx = state.store.tenant(user.tenant).await?;
    Ok(Json(AgentList {
        agents: agents::list(&mut tx).await?,
    }))
}

/// Creates an agent (owners and admins).
#[utoipa::path(post, path = "/agents", tag = "agents", security(("dashboard" = [])),
    request_body = CreateAgent,
    responses((status = 201, description = "Created", body = Agent),
        (status = 403, description = "Your role cannot change configuration")))]
async fn create(
    State(state): State<AppState>,
    user: TenantUser,
    ApiJson(body): ApiJson<CreateAgent>,
) -> Result<(StatusCode, Json<Agent>), ApiError> {
    user.require_manager()?;
    let name = parse_name("name", &body.name).map_err(ApiError::Invalid)?;
    check_system_prompt(&body.system_prompt).map_err(ApiError::Invalid)?;
    body.profile.check().map_err(ApiError::Invalid)?;
    let mut tx = state.store.tenant(user.tenant).await?;
    let agent = agents::create(
        &mut tx,
        NewAgent {
            name: &name,
            system_prompt: &body.system_prompt,
            profile: &body.profile,
        },
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(agent)))
}

#[utoipa::path(get, path = "/agents/{agent_id}", tag = "agents", security(("dashboard" = [])),
    params(("agent_id" = Uuid, Path, description = "The agent's id")),
    responses((status = 200, description = "The agent", body = Agent)))]
async fn show(
    State(state): State<AppState>,
    user: TenantUser,
    IdPath(agent): IdPath<AgentId>,
) -> Result<Json<Agent>, ApiError> {
    let mut tx = state.store.tenant(user.tenant).await?;
    Ok(Json(agents::get(&mut tx, agent).await?))
}

/// Changes the fields given; the others stay (owners and admins).
#[utoipa::path(patch, path = "/agents/{agent_id}", tag = "agents", security(("dashboard" = [])),
    params(("agent_id" = Uuid, Path, description = "The agent's id")), request_body = UpdateAgent,
    responses((status = 200, description = "The agent as changed", body = Agent),
        (status = 403, description = "Your role cannot change configuration")))]
async fn update(
    State(state): State<AppState>,
    user: TenantUser,
    IdPath(agent): IdPath<AgentId>,
    ApiJson(body): ApiJson<UpdateAgent>,
) -> Result<Json<Agent>, ApiError> {
    user.require_manager()?;
    let name = body
        .name
        .as_deref()
        .map(|name| parse_name("name", name))
        .transpose()
        .map_err(ApiError::Invalid)?;
    if let Some(prompt) = &body.system_prompt {
        check_system_prompt(prompt).map_err(ApiError::Invalid)?;
    }
    if let Some(profile) = &body.profile {
        profile.check().map_err(ApiError::Invalid)?;
    }
    let mut tx = state.store.tenant(user.tenant).await?;
    let changes = AgentChanges {
        name: name.as_deref(),
        system_prompt: body.system_prompt.as_deref(),
        profile: body.profile.as_ref(),
    };
    let agent = agents::update(&mut tx, agent, changes).await?;
    tx.commit().await?;
    Ok(Json(agent))
}

/// Deletes the agent with its widgets and knowledge base (owners and admins).
#[utoipa::path(delete, path = "/agents/{agent_id}", tag = "agents", security(("dashboard" = [])),
    params(("agent_id" = Uuid, Path, description = "The agent's id")),
    responses((status = 204, description = "Deleted"),
        (status = 403, description = "Your role cannot change configuration")))]
async fn remove(
    State(state): State<AppState>,
    user: TenantUser,
    IdPath(agent): IdPath<AgentId>,
) -> Result<StatusCode, ApiError> {
    user.require_manager()?;
    let mut tx = state.store.tenant(user.tenant).await?;
    agents::delete(&mut tx, agent).await?;
    tx.commit().await?;
    // Its widgets went with it.
    state.origin_cache.invalidate();
    Ok(StatusCode::NO_CONTENT)
}
