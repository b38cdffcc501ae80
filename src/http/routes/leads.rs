//! `/api/v1/leads`: the people a tenant's agents met. Any user of the tenant
//! may read, add and annotate leads: they are the team's daily work, not
//! configuration. API tokens need `leads:read` or `leads:write`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::api_tokens::Scope;
use crate::db::leads::{self, Booking, Contact, Lead, LeadPage, QuoteRequest};
use crate::db::outbox;
use crate::domain::{check_text, parse_name, parse_phone, Email};
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, IdPath, Principal};
use crate::http::listing::{into_page, page_limit};
use crate::http::AppState;

const MAX_NOTES_CHARS: usize = 10_000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update))
}

/// Which leads to list: the query of `GET /leads` and the `list_leads` MCP tool.
#[derive(Deserialize, JsonSchema, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LeadQuery {
    /// The `next_cursor` of the previous page.
    cursor: Option<Uuid>,
    /// Leads per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// Only leads created after this time (RFC 3339).
    created_after: Option<DateTime<Utc>>,
    /// Only leads created before this time (RFC 3339).
    created_before: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct LeadList {
    leads: Vec<Lead>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<Uuid>,
}

/// Leads, newest first, a page at a time.
#[utoipa::path(get, path = "/leads", tag = "leads", security(("dashboard" = []), ("api_token" = ["leads:read"])), params(LeadQuery),
    responses((status = 200, description = "A page of leads", body = LeadList), (status = 403, description = "The token lacks the scope, or the role cannot do this")))]
async fn list(
    State(state): State<AppState>,
    caller: Principal,
    query: Result<Query<LeadQuery>, QueryRejection>,
) -> Result<Json<LeadList>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    list_leads(&state, &caller, query).await.map(Json)
}

/// Newest first, a page at a time.
pub async fn list_leads(
    state: &AppState,
    caller: &Principal,
    query: LeadQuery,
) -> Result<LeadList, ApiError> {
    caller.require(Scope::LeadsRead)?;
    let limit = page_limit(query.limit)?;
    let mut tx = state.store.tenant(caller.tenant()).await?;
    let rows = leads::list(
        &mut tx,
        LeadPage {
            before: query.cursor,
            created_after: query.created_after,
            created_before: query.created_before,
            limit: limit + 1,
        },
    )
    .await?;
    let (leads, next_cursor) = into_page(rows, limit, |row| row.id);
    Ok(LeadList { leads, next_cursor })
}

/// A lead added by hand or by automation: `POST /leads` and `create_lead`.
#[derive(Deserialize, JsonSchema, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLead {
    /// The person's name.
    name: Option<String>,
    /// An email address; a lead needs an email or a phone.
    email: Option<String>,
    /// A phone number, E.164 or national (read as US without a country code).
    phone: Option<String>,
    /// Free-text notes, up to 10,000 characters.
    #[serde(default)]
    notes: String,
}

/// Adds a lead (with an email or a phone); emits `lead.created`.
#[utoipa::path(post, path = "/leads", tag = "leads", security(("dashboard" = []), ("api_token" = ["leads:write"])), request_body = CreateLead,
    responses((status = 201, description = "Created", body = Lead), (status = 403, description = "The token lacks the scope, or the role cannot do this"),
        (status = 409, description = "A lead with this email or phone exists")))]
async fn create(
    State(state): State<AppState>,
    caller: Principal,
    ApiJson(body): ApiJson<CreateLead>,
) -> Result<(StatusCode, Json<Lead>), ApiError> {
    let lead = create_lead(&state, &caller, body).await?;
    Ok((StatusCode::CREATED, Json(lead)))
}

/// Stores the lead and its `lead.created` event in one unit of work.
pub async fn create_lead(
    state: &AppState,
    caller: &Principal,
    body: CreateLead,
) -> Result<Lead, ApiError> {
    caller.require(Scope::LeadsWrite)?;
    let name = body
        .name
        .as_deref()
        .map(|name| parse_name("name", name))
        .transpose()
        .map_err(ApiError::Invalid)?;
    let email = body
        .email
        .as_deref()
        .map(Email::parse)
        .transpose()
        .map_err(ApiError::Invalid)?;
    let phone = body
        .phone
        .as_deref()
        .map(parse_phone)
        .transpose()
        .map_err(ApiError::Invalid)?;
    if email.is_none() && phone.is_none() {
        return Err(ApiError::Invalid("a lead needs an email or a phone".into()));
    }
    check_text("notes", &body.notes, MAX_NOTES_CHARS).map_err(ApiError::Invalid)?;
    let contact = Contact {
        name: name.as_deref(),
        email: email.as_ref().map(Email::as_str),
        phone: phone.as_deref(),
    };
    let mut tx = state.store.tenant(caller.tenant()).await?;
    let lead = leads::create(&mut tx, &contact, &body.notes, None).await?;
    outbox::append(&mut tx, "lead.created", &json!({ "lead": lead })).await?;
    tx.commit().await?;
    Ok(lead)
}

/// A lead with what it asked for.
#[derive(Serialize, ToSchema)]
pub struct LeadDetail {
    #[serde(flatten)]
    lead: Lead,
    bookings: Vec<Booking>,
    quote_requests: Vec<QuoteRequest>,
}

/// A lead with its bookings and quote requests.
#[utoipa::path(get, path = "/leads/{lead_id}", tag = "leads", security(("dashboard" = []), ("api_token" = ["leads:read"])), params(("lead_id" = Uuid, Path, description = "The lead's id")),
    responses((status = 200, description = "The lead", body = LeadDetail), (status = 403, description = "The token lacks the scope, or the role cannot do this")))]
async fn show(
    State(state): State<AppState>,
    caller: Principal,
    IdPath(id): IdPath<Uuid>,
) -> Result<Json<LeadDetail>, ApiError> {
    get_lead(&state, &caller, id).await.map(Json)
}

pub async fn get_lead(
    state: &AppState,
    caller: &Principal,
    id: Uuid,
) -> Result<LeadDetail, ApiError> {
    caller.require(Scope::LeadsRead)?;
    let mut tx = state.store.tenant(caller.tenant()).await?;
    let lead = leads::get(&mut tx, id).await?;
    let (bookings, quote_requests) = leads::requests_of(&mut tx, id).await?;
    Ok(LeadDetail {
        lead,
        bookings,
        quote_requests,
    })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateLead {
    notes: String,
}

/// Replaces the lead's notes; emits `lead.updated`.
#[utoipa::path(patch, path = "/leads/{lead_id}", tag = "leads", security(("dashboard" = []), ("api_token" = ["leads:write"])), params(("lead_id" = Uuid, Path, description = "The lead's id")), request_body = UpdateLead,
    responses((status = 200, description = "The lead as changed", body = Lead), (status = 403, description = "The token lacks the scope, or the role cannot do this")))]
async fn update(
    State(state): State<AppState>,
    caller: Principal,
    IdPath(id): IdPath<Uuid>,
    ApiJson(body): ApiJson<UpdateLead>,
) -> Result<Json<Lead>, ApiError> {
    caller.require(Scope::LeadsWrite)?;
    check_text("notes", &body.notes, MAX_NOTES_CHARS).map_err(ApiError::Invalid)?;
    let mut tx = state.store.tenant(caller.tenant()).await?;
    let lead = leads::update_notes(&mut tx, id, &body.notes).await?;
    outbox::append(&mut tx, "lead.updated", &json!({ "lead": lead })).await?;
    tx.commit().await?;
    Ok(Json(lead))
}
