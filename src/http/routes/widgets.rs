//! `/api/v1/agents/{agent_id}/widgets`: the embeddable widgets in front of an agent.

use agentry_actors::{AgentId, WidgetId};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::db::agents;
use crate::db::widgets::{self, Widget};
use crate::domain::{new_widget_public_key, AllowedOrigin};
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, IdPair, IdPath, TenantUser};
use crate::http::AppState;

const MAX_ORIGINS: usize = 50;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, remove))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct WidgetBody {
    /// Origins (`https://shop.example.com`) whose pages may use the widget.
    #[schema(max_items = 50)]
    allowed_origins: Vec<String>,
}

impl WidgetBody {
    fn origins(&self) -> Result<Vec<AllowedOrigin>, ApiError> {
        if self.allowed_origins.len() > MAX_ORIGINS {
            return Err(ApiError::Invalid(format!(
                "at most {MAX_ORIGINS} allowed_origins"
            )));
        }
        let mut origins = Vec::with_capacity(self.allowed_origins.len());
        for input in &self.allowed_origins {
            let origin = AllowedOrigin::parse(input).map_err(ApiError::Invalid)?;
            if !origins.contains(&origin) {
                origins.push(origin);
            }
        }
        Ok(origins)
    }
}

#[derive(Serialize, ToSchema)]
struct WidgetList {
    widgets: Vec<Widget>,
}

#[utoipa::path(get, path = "/agents/{agent_id}/widgets", tag = "agents", security(("dashboard" = [])), params(("agent_id" = Uuid, Path, description = "The agent's id")),
    responses((status = 200, description = "The agent's widgets", body = WidgetList)))]
async fn list(
    State(state): State<AppState>,
    user: TenantUser,
    IdPath(agent): IdPath<AgentId>,
) -> Result<Json<WidgetList>, ApiError> {
    let mut tx = state.store.tenant(user.tenant).await?;
    // 404 for another tenant's agent, rather than an empty list that confirms nothing but looks like success.
    agents::get(&mut tx, agent).await?;
    Ok(Json(WidgetList {
        widgets: widgets::list_for_agent(&mut tx, agent).await?,
    }))
}

/// A widget with a fresh public key, for the origins given (owners and admins).
#[utoipa::path(post, path = "/agents/{agent_id}/widgets", tag = "agents", security(("dashboard" = [])), params(("agent_id" = Uuid, Path, description = "The agent's id")),
    request_body = WidgetBody,
    responses((status = 201, description = "Created", body = Widget), (status = 403, description = "Your role cannot change configuration")))]
async fn create(
    State(state): State<AppState>,
    user: TenantUser,
    IdPath(agent): IdPath<AgentId>,
    ApiJson(body): ApiJson<WidgetBody>,
) -> Result<(StatusCode, Json<Widget>), ApiError> {
    user.require_manager()?;
    let origins = body.origins()?;
    let mut tx = state.store.tenant(user.tenant).await?;
    let widget = widgets::create(&mut tx, agent, &new_widget_public_key(), &origins).await?;
    tx.commit().await?;
    state.origin_cache.invalidate();
    state
        .limiter
        .overrides()
        .widget_added(user.tenant, &widget.public_key);
    Ok((StatusCode::CREATED, Json(widget)))
}

#[utoipa::path(get, path = "/agents/{agent_id}/widgets/{widget_id}", tag = "agents", security(("dashboard" = [])), params(("agent_id" = Uuid, Path, description = "The agent's id"), ("widget_id" = Uuid, Path, description = "The widget's id")),
    responses((status = 200, description = "The widget", body = Widget)))]
async fn show(
    State(state): State<AppState>,
    user: TenantUser,
    IdPair(agent, widget): IdPair<AgentId, WidgetId>,
) -> Result<Json<Widget>, ApiError> {
    let mut tx = state.store.tenant(user.tenant).await?;
    Ok(Json(widgets::get(&mut tx, agent, widget).await?))
}

/// Replaces the widget's allowed origins (owners and admins).
#[utoipa::path(patch, path = "/agents/{agent_id}/widgets/{widget_id}", tag = "agents", security(("dashboard" = [])), params(("agent_id" = Uuid, Path, description = "The agent's id"), ("widget_id" = Uuid, Path, description = "The widget's id")),
    request_body = WidgetBody,
    responses((status = 200, description = "The widget as changed", body = Widget), (status = 403, description = "Your role cannot change configuration")))]
async fn update(
    State(state): State<AppState>,
    user: TenantUser,
    IdPair(agent, widget): IdPair<AgentId, WidgetId>,
    ApiJson(body): ApiJson<WidgetBody>,
) -> Result<Json<Widget>, ApiError> {
    user.require_manager()?;
    let origins = body.origins()?;
    let mut tx = state.store.tenant(user.tenant).await?;
    let widget = widgets::set_origins(&mut tx, agent, widget, &origins).await?;
    tx.commit().await?;
    state.origin_cache.invalidate();
    Ok(Json(widget))
}

#[utoipa::path(delete, path = "/agents/{agent_id}/widgets/{widget_id}", tag = "agents", security(("dashboard" = [])), params(("agent_id" = Uuid, Path, description = "The agent's id"), ("widget_id" = Uuid, Path, description = "The widget's id")),
    responses((status = 204, description = "Deleted"), (status = 403, description = "Your role cannot change configuration")))]
async fn remove(
    State(state): State<AppState>,
    user: TenantUser,
    IdPair(agent, widget): IdPair<AgentId, WidgetId>,
) -> Result<StatusCode, ApiError> {
    user.require_manager()?;
    let mut tx = state.store.tenant(user.tenant).await?;
    widgets::delete(&mut tx, agent, widget).await?;
    tx.commit().await?;
    state.origin_cache.invalidate();
    Ok(StatusCode::NO_CONTENT)
}
