//! `/api/v1/agents/{agent_id}/documents`: an agent's knowledge base.
//! Uploads are stored as pending and ingested asynchronously by any instance.
//! API tokens may add documents with `knowledge:write`.

use agentry_actors::knowledge::ContentType;
use agentry_actors::AgentId;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::api_tokens::Scope;
use crate::db::knowledge::{self, Document};
use crate::http::error::{ApiError, RateHeaders};
use crate::http::extract::{ApiJson, IdPair, IdPath, Principal, TenantUser};
use crate::http::AppState;
use crate::kb_ingest::{self, IngestJob};
use crate::rate_limit::Tier;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(remove))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDocument {
    #[schema(min_length = 1, max_length = 300, pattern = r"\S")]
    pub title: String,
    #[schema(min_length = 1, pattern = r"\S")]
    pub content: String,
    /// `text` (default), `markdown` or `html`.
    #[schema(pattern = "^(text|markdown|html)$")]
    pub content_type: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct DocumentList {
    documents: Vec<Document>,
}

/// The agent's knowledge-base documents (without their content).
#[utoipa::path(get, path = "/agents/{agent_id}/documents", tag = "knowledge", security(("dashboard" = [])), params(("agent_id" = Uuid, Path, description = "The agent's id")),
    responses((status = 200, description = "The documents", body = DocumentList)))]
async fn list(
    State(state): State<AppState>,
    user: TenantUser,
    IdPath(agent): IdPath<AgentId>,
) -> Result<Json<DocumentList>, ApiError> {
    let mut tx = state.store.tenant(user.tenant).await?;
    crate::db::agents::get(&mut tx, agent).await?;
    Ok(Json(DocumentList {
        documents: knowledge::list_documents(&mut tx, agent).await?,
    }))
}

/// Adds a document, stored `pending` and ingested in the background;
/// counted on the tenant's `upload` tier.
#[utoipa::path(post, path = "/agents/{agent_id}/documents", tag = "knowledge", security(("dashboard" = []), ("api_token" = ["knowledge:write"])), params(("agent_id" = Uuid, Path, description = "The agent's id")),
    request_body = NewDocument,
    responses((status = 201, description = "Stored, ingestion queued", body = Document), (status = 403, description = "The token lacks the scope, or the role cannot do this")))]
async fn create(
    State(state): State<AppState>,
    caller: Principal,
    IdPath(agent): IdPath<AgentId>,
    ApiJson(body): ApiJson<NewDocument>,
) -> Result<(StatusCode, RateHeaders, Json<Document>), ApiError> {
    let (limited, document) = add_document(&state, &caller, agent, body).await?;
    Ok((StatusCode::CREATED, limited, Json(document)))
}

/// Stores the document as pending and queues its ingestion.
pub async fn add_document(
    state: &AppState,
    caller: &Principal,
    agent: AgentId,
    body: NewDocument,
) -> Result<(RateHeaders, Document), ApiError> {
    caller.require(Scope::KnowledgeWrite)?;
    // Each upload is chunked and embedded: counted per tenant.
    let limited = state
        .limit(
            Tier::Upload,
            Some(caller.tenant()),
            &caller.tenant().to_string(),
        )
        .await?;
    let title = body.title.trim();
    if title.is_empty() || title.chars().count() > 300 {
        return Err(ApiError::Invalid(
            "title must be 1 to 300 characters".into(),
        ));
    }
    let content_type = ContentType::parse(body.content_type.as_deref().unwrap_or("text"))
        .map_err(ApiError::Invalid)?;
    if body.content.trim().is_empty() {
        return Err(ApiError::Invalid("content must not be empty".into()));
    }
    let max = state.settings.knowledge.max_document_chars;
    if body.content.chars().count() > max {
        return Err(ApiError::Invalid(format!(
            "content must be at most {max} characters"
        )));
    }
    let mut tx = state.store.tenant(caller.tenant()).await?;
    let document =
        knowledge::create_document(&mut tx, agent, title, content_type.as_str(), &body.content)
            .await?;
    tx.commit().await?;
    let job = IngestJob {
        tenant: caller.tenant(),
        agent,
        document: document.id,
    };
    // If this publish is lost, the ingest stage's sweep re-enqueues the pending document.
    if let Err(error) = kb_ingest::enqueue(&state.bus, &job).await {
        tracing::warn!(%error, "could not enqueue a document for ingestion; the sweep will retry");
    }
    Ok((limited, document))
}

#[utoipa::path(delete, path = "/agents/{agent_id}/documents/{document_id}", tag = "knowledge", security(("dashboard" = [])), params(("agent_id" = Uuid, Path, description = "The agent's id"), ("document_id" = Uuid, Path, description = "The document's id")),
    responses((status = 204, description = "Deleted"), (status = 403, description = "Your role cannot change configuration")))]
async fn remove(
    State(state): State<AppState>,
    user: TenantUser,
    IdPair(agent, document): IdPair<AgentId, Uuid>,
) -> Result<StatusCode, ApiError> {
    user.require_manager()?;
    let mut tx = state.store.tenant(user.tenant).await?;
    knowledge::delete_document(&mut tx, agent, document).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
