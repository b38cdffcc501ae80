//! Tenants' files in the dashboard: `POST /api/v1/files` (multipart, field
//! `file`, optional `agent_id`), `GET /api/v1/files[/{id}]`, `DELETE
//! /api/v1/files/{id}`, `GET /api/v1/files/{id}/content`, and share links:
//! `POST /api/v1/files/{id}/share`, `GET /api/v1/files/{id}/shares`,
//! `DELETE /api/v1/files/{id}/shares/{share_id}`, and the public
//! `GET /api/files/shared/{share_id}?expires=…&signature=…`.
//!
//! Every download checks ownership and scan status before the first byte:
//! another tenant's file is 404, a pending one 409, an infected one 451.

use agentry_actors::TenantId;
use axum::body::Body;
use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Multipart, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, TimeZone, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::db::files::{self as db_files, FileRow, NewFile, NewShare, Share};
use crate::db::{knowledge, DbError};
use crate::files::range::{self, RangeRequest};
use crate::files::{sniff, FileError, ScanStatus, Stored};
use crate::http::error::{ApiError, RateHeaders};
use crate::http::extract::{ApiJson, IdPair, IdPath, TenantUser};
use crate::http::listing::{into_page, page_limit, PageQuery};
use crate::http::AppState;
use crate::rate_limit::Tier;

/// Room for the multipart framing and the small fields around the file.
pub const MULTIPART_SLACK_BYTES: u64 = 64 * 1024;
const MAX_NAME_CHARS: usize = 255;

/// `/api/v1/files…` but the upload (see [`upload_router`]).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show, remove))
        .routes(routes!(content))
        .routes(routes!(share))
        .routes(routes!(list_shares))
        .routes(routes!(revoke_share))
}

/// `POST /api/v1/files`, mounted with its own body limit and deadline.
pub fn upload_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(upload))
}

/// `/api/files/shared/{share_id}`, for whoever holds a share link.
pub fn shared_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(shared))
}

#[derive(Serialize, ToSchema)]
struct FileView {
    id: Uuid,
    name: String,
    size_bytes: i64,
    content_type: String,
    scan_status: String,
    scan_signature: Option<String>,
    scanned_at: Option<DateTime<Utc>>,
    agent_id: Option<Uuid>,
    kb_document_id: Option<Uuid>,
    created_at: DateTime<Utc>,
}

impl From<FileRow> for FileView {
    fn from(row: FileRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            size_bytes: row.size_bytes,
            content_type: row.content_type,
            scan_status: row.scan_status,
            scan_signature: row.scan_signature,
            scanned_at: row.scanned_at,
            agent_id: row.agent_id,
            kb_document_id: row.kb_document_id,
            created_at: row.created_at,
        }
    }
}

fn file_error(error: FileError) -> ApiError {
    match error {
        FileError::TooLarge => ApiError::PayloadTooLarge,
        FileError::Db(error) => error.into(),
        FileError::Storage(error) => {
            tracing::warn!(%error, "file storage unavailable");
            ApiError::Unavailable("file storage")
        }
        other => ApiError::Internal(format!("file: {other}")),
    }
}

fn multipart_error(error: MultipartError) -> ApiError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge
    } else {
        ApiError::BadRequest(format!(
            "the multipart body is malformed: {}",
            error.body_text()
        ))
    }
}

/// The last path segment of the client's name, without control characters.
fn clean_name(raw: Option<&str>) -> String {
    let base = raw
        .unwrap_or("")
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>();
    let trimmed = base.trim();
    if trimmed.is_empty() || trimmed == "." || trimmed == ".." {
        "file".to_owned()
    } else {
        crate::domain::first_chars(trimmed, MAX_NAME_CHARS).to_owned()
    }
}

/// The multipart body of an upload, as the docs describe it (the handler
/// reads the fields as a stream).
#[derive(ToSchema)]
#[allow(dead_code)]
struct UploadForm {
    /// The file; its content type is told from its bytes.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// Make the file (once clean) a document of this agent.
    agent_id: Option<Uuid>,
}

/// What the multipart body carried.
struct Received {
    name: String,
    stored: Stored,
    agent: Option<Uuid>,
}

/// Uploads a file (owners and admins), streamed and sealed on the way in;
/// counted on the tenant's `upload` tier. Its limit is `files.max_bytes`.
#[utoipa::path(post, path = "/api/v1/files", tag = "files", security(("dashboard" = [])),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses((status = 201, description = "Stored (`pending` while a scan is due)", body = FileView), (status = 403, description = "Your role cannot change configuration")))]
async fn upload(
    State(state): State<AppState>,
    user: TenantUser,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, RateHeaders, Json<FileView>), ApiError> {
    user.require_manager()?;
    // Each upload is stored, scanned and maybe indexed: counted per tenant.
    let limited = state
        .limit(Tier::Upload, Some(user.tenant), &user.tenant.to_string())
        .await?;
    let multipart = multipart.map_err(|rejection| {
        ApiError::UnsupportedMediaType(format!(
            "expected a multipart/form-data body: {}",
            rejection.body_text()
        ))
    })?;
    let id = Uuid::now_v7();
    let received = receive(&state, user.tenant, id, multipart).await?;
    // From here the object exists: every refusal removes it again.
    match save(&state, user.tenant, id, &received).await {
        Ok(row) => Ok((StatusCode::CREATED, limited, Json(row.into()))),
        Err(error) => {
            state.files.remove_object(&received.stored.key).await;
            Err(error)
        }
    }
}

/// Reads the fields, streaming the file into the store; on any refusal
/// nothing of it is left there.
async fn receive(
    state: &AppState,
    tenant: TenantId,
    id: Uuid,
    mut multipart: Multipart,
) -> Result<Received, ApiError> {
    let mut agent = None;
    let mut file: Option<(String, Stored)> = None;
    let outcome = async {
        while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
            match field.name() {
                Some("file") if file.is_none() => {
                    let name = clean_name(field.file_name());
                    file = Some((name, stream_file(state, tenant, id, field).await?));
                }
                Some("file") => {
                    return Err(ApiError::Invalid("send one file per upload".into()));
                }
                Some("agent_id") => {
                    let text = field.text().await.map_err(multipart_error)?;
                    let parsed = Uuid::parse_str(text.trim())
                        .map_err(|_| ApiError::Invalid("agent_id must be a UUID".into()))?;
                    agent = Some(parsed);
                }
                Some(other) => {
                    return Err(ApiError::Invalid(format!(
                        "unknown field {:?}: expected file and optionally agent_id",
                        crate::domain::first_chars(other, 40)
                    )));
                }
                None => return Err(ApiError::Invalid("a multipart field has no name".into())),
            }
        }
        Ok(())
    }
    .await;
    match (outcome, file) {
        (Ok(()), Some((name, stored))) => Ok(Received {
            name,
            stored,
            agent,
        }),
        (Ok(()), None) => Err(ApiError::Invalid("the file field is missing".into())),
        (Err(error), stored) => {
            if let Some((_, stored)) = stored {
                state.files.remove_object(&stored.key).await;
            }
            Err(error)
        }
    }
}

async fn stream_file(
    state: &AppState,
    tenant: TenantId,
    id: Uuid,
    mut field: Field<'_>,
) -> Result<Stored, ApiError> {
    let mut upload = state
        .files
        .begin_upload(tenant, id)
        .await
        .map_err(file_error)?;
    loop {
        let pushed = match field.chunk().await {
            Ok(Some(bytes)) => upload.push(&bytes).await.map_err(file_error),
            Ok(None) => break,
            Err(error) => Err(multipart_error(error)),
        };
        if let Err(error) = pushed {
            upload.abort().await;
            return Err(error);
        }
    }
    upload.finish().await.map_err(file_error)
}

async fn save(
    state: &AppState,
    tenant: TenantId,
    id: Uuid,
    received: &Received,
) -> Result<FileRow, ApiError> {
    let stored = &received.stored;
    if stored.size == 0 {
        return Err(ApiError::Invalid("the file is empty".into()));
    }
    let mut tx = state.store.tenant(tenant).await?;
    if let Some(agent) = received.agent {
        match crate::db::agents::get(&mut tx, agent.into()).await {
            Err(DbError::NotFound) => {
                return Err(ApiError::Invalid(
                    "agent_id names no agent of this tenant".into(),
                ))
            }
            other => {
                other?;
            }
        }
    }
    let status = if state.files.scanning() {
        ScanStatus::Pending
    } else {
        ScanStatus::Unscanned
    };
    let row = db_files::insert(
        &mut tx,
        &NewFile {
            id,
            name: &received.name,
            size_bytes: stored.size as i64,
            content_type: sniff::content_type(&stored.head, &received.name),
            object_key: &stored.key,
            data_key: &stored.data_key,
            nonce_prefix: &stored.nonce_prefix,
            scan_status: status.label(),
            agent_id: received.agent,
        },
    )
    .await?;
    tx.commit().await?;
    metrics::counter!("agentry_file_uploads_total", "scan_status" => status.label()).increment(1);
    if status == ScanStatus::Pending {
        state.files.wake_scanner();
        return Ok(row);
    }
    // Not scanned: servable at once, so indexed at once.
    match state
        .files
        .attach_to_knowledge(
            &state.store,
            &state.bus,
            state.settings.knowledge.max_document_chars,
            tenant,
            &row,
        )
        .await
    {
        Ok(Some(document)) => Ok(FileRow {
            kb_document_id: Some(document),
            ..row
        }),
        Ok(None) => Ok(row),
        Err(error) => {
            tracing::warn!(file = %id, %error, "an uploaded file was not added to its knowledge base");
            Ok(row)
        }
    }
}

#[derive(Serialize, ToSchema)]
struct FileList {
    files: Vec<FileView>,
    next_cursor: Option<Uuid>,
}

/// Files, newest first.
#[utoipa::path(get, path = "/files", tag = "files", security(("dashboard" = [])), params(PageQuery),
    responses((status = 200, description = "A page of files", body = FileList)))]
async fn list(
    State(state): State<AppState>,
    user: TenantUser,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<FileList>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let limit = page_limit(query.limit)?;
    let mut tx = state.store.tenant(user.tenant).await?;
    let rows = db_files::list(&mut tx, query.cursor, limit + 1).await?;
    drop(tx);
    let (rows, next_cursor) = into_page(rows, limit, |row| row.id);
    Ok(Json(FileList {
        files: rows.into_iter().map(FileView::from).collect(),
        next_cursor,
    }))
}

#[utoipa::path(get, path = "/files/{file_id}", tag = "files", security(("dashboard" = [])), params(("file_id" = Uuid, Path, description = "The file's id")),
    responses((status = 200, description = "The file's metadata", body = FileView)))]
async fn show(
    State(state): State<AppState>,
    user: TenantUser,
    IdPath(id): IdPath<Uuid>,
) -> Result<Json<FileView>, ApiError> {
    let mut tx = state.store.tenant(user.tenant).await?;
    Ok(Json(db_files::get(&mut tx, id).await?.into()))
}

/// Deletes the file, its share links and the document made from it (owners and admins).
#[utoipa::path(delete, path = "/files/{file_id}", tag = "files", security(("dashboard" = [])), params(("file_id" = Uuid, Path, description = "The file's id")),
    responses((status = 204, description = "Deleted"), (status = 403, description = "Your role cannot change configuration")))]
async fn remove(
    State(state): State<AppState>,
    user: TenantUser,
    IdPath(id): IdPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    user.require_manager()?;
    let mut tx = state.store.tenant(user.tenant).await?;
    let deleted = db_files::delete(&mut tx, id).await?;
    // What the agent learnt from the file goes with it (unless already removed).
    if let (Some(agent), Some(document)) = (deleted.agent_id, deleted.kb_document_id) {
        match knowledge::delete_document(&mut tx, agent.into(), document).await {
            Ok(()) | Err(DbError::NotFound) => {}
            Err(error) => return Err(error.into()),
        }
    }
    tx.commit().await?;
    // The row goes first: a failed object delete leaves an unreachable object, never a dangling row.
    state.files.remove_object(&deleted.object_key).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The file's bytes (a `Range` reads only part); never before its scan.
#[utoipa::path(get, path = "/files/{file_id}/content", tag = "files", security(("dashboard" = [])),
    params(("file_id" = Uuid, Path, description = "The file's id"), ("range" = Option<String>, Header, description = "`bytes=start-end`")),
    responses((status = 200, description = "The file's bytes, as the type told from them (`application/pdf`, `image/png` …)", content_type = "*/*", body = Vec<u8>,
            headers(("content-disposition" = String, description = "`attachment` with the file's name"),
                ("accept-ranges" = String, description = "`bytes`"))),
        (status = 206, description = "The range asked for (one `Range: bytes=`)", content_type = "*/*", body = Vec<u8>,
            headers(("content-range" = String, description = "`bytes start-end/size`"))),
        (status = 409, description = "Still being scanned for viruses"),
        (status = 416, description = "The range is not within the file",
            headers(("content-range" = String, description = "`bytes */size`"))),
        (status = 451, description = "The virus scanner flagged it: never served")))]
async fn content(
    State(state): State<AppState>,
    user: TenantUser,
    IdPath(id): IdPath<Uuid>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut tx = state.store.tenant(user.tenant).await?;
    let row = db_files::get(&mut tx, id).await?;
    drop(tx);
    serve(&state, user.tenant, row, &headers, RateHeaders(None)).await
}

/// The checks every download makes before its first byte, then the bytes
/// (or the range asked for) as they are decrypted.
async fn serve(
    state: &AppState,
    tenant: TenantId,
    row: FileRow,
    headers: &HeaderMap,
    limited: RateHeaders,
) -> Result<Response, ApiError> {
    match ScanStatus::parse(&row.scan_status) {
        Some(ScanStatus::Pending) => {
            return Err(ApiError::Conflict(
                "this file is still being scanned for viruses; try again shortly".into(),
            ))
        }
        Some(ScanStatus::Infected) => return Err(ApiError::Infected),
        Some(ScanStatus::Clean | ScanStatus::Unscanned) => {}
        None => {
            return Err(ApiError::Internal(format!(
                "file {}: unknown scan status",
                row.id
            )))
        }
    }
    let size = row.size_bytes as u64;
    let asked = headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok());
    let (status, range) = match range::parse(asked, size) {
        RangeRequest::Full => (StatusCode::OK, 0..size),
        RangeRequest::Partial(range) => (StatusCode::PARTIAL_CONTENT, range),
        RangeRequest::Unsatisfiable => return Err(ApiError::RangeNotSatisfiable { size }),
    };
    let content_type = if row.content_type.starts_with("text/") {
        format!("{}; charset=utf-8", row.content_type)
    } else {
        row.content_type.clone()
    };
    let content_type = HeaderValue::from_str(&content_type)
        .map_err(|_| ApiError::Internal(format!("file {}: bad content type", row.id)))?;
    let disposition = HeaderValue::from_str(&attachment(&row.name))
        .map_err(|_| ApiError::Internal(format!("file {}: bad name", row.id)))?;
    let body = state
        .files
        .open(tenant, &row, range.clone())
        .await
        .map_err(file_error)?;
    let file = row.id;
    let body = body.inspect(move |chunk| {
        if let Err(error) = chunk {
            // Headers are gone already: the connection is cut, and the log says why.
            tracing::error!(%file, %error, "a file download failed midway");
        }
    });
    let mut response = (
        status,
        limited,
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::CONTENT_LENGTH,
                HeaderValue::from(range.end - range.start),
            ),
            (header::CONTENT_DISPOSITION, disposition),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::ACCEPT_RANGES, HeaderValue::from_static("bytes")),
        ],
        Body::from_stream(body),
    )
        .into_response();
    if status == StatusCode::PARTIAL_CONTENT {
        let value = format!("bytes {}-{}/{size}", range.start, range.end - 1);
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
    }
    Ok(response)
}

/// `attachment` with an ASCII fallback name and the exact one in RFC 5987 form.
fn attachment(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::with_capacity(name.len() * 3);
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewShareBody {
    /// `1h`, `24h`, `7d`, `30d` (as `files.share_expiries` names them) or `permanent`.
    #[schema(example = "7d")]
    expires_in: String,
    /// The customer the link is for.
    lead_id: Option<Uuid>,
}

#[derive(Serialize, ToSchema)]
struct ShareView {
    id: Uuid,
    file_id: Uuid,
    url: String,
    /// `null`: permanent.
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    lead_id: Option<Uuid>,
    created_by: Uuid,
    created_at: DateTime<Utc>,
}

fn share_view(state: &AppState, tenant: TenantId, share: Share) -> ShareView {
    let expires = share.expires_at.map_or(0, |at| at.timestamp());
    let signature =
        state
            .recordings
            .capabilities
            .sign_file_share(tenant, share.file_id, share.id, expires);
    ShareView {
        url: format!(
            "/api/files/shared/{}?expires={expires}&signature={signature}",
            share.id
        ),
        id: share.id,
        file_id: share.file_id,
        expires_at: share.expires_at,
        revoked_at: share.revoked_at,
        lead_id: share.lead_id,
        created_by: share.created_by,
        created_at: share.created_at,
    }
}

/// A share link for the file (owners and admins).
#[utoipa::path(post, path = "/files/{file_id}/share", tag = "files", security(("dashboard" = [])), params(("file_id" = Uuid, Path, description = "The file's id")), request_body = NewShareBody,
    responses((status = 201, description = "The link", body = ShareView), (status = 403, description = "Your role cannot change configuration")))]
async fn share(
    State(state): State<AppState>,
    user: TenantUser,
    IdPath(file): IdPath<Uuid>,
    ApiJson(body): ApiJson<NewShareBody>,
) -> Result<(StatusCode, Json<ShareView>), ApiError> {
    user.require_manager()?;
    let expires_at = match body.expires_in.as_str() {
        "permanent" => None,
        name => {
            let seconds = state
                .settings
                .files
                .share_expiries
                .get(name)
                .ok_or_else(|| {
                    ApiError::Invalid(format!(
                        "expires_in must be one of {}, permanent",
                        crate::configuration::SHARE_EXPIRY_NAMES.join(", ")
                    ))
                })?;
            // Whole seconds: the link's `expires` is exactly the row's.
            let at = Utc::now().timestamp().saturating_add(*seconds as i64);
            Some(
                Utc.timestamp_opt(at, 0)
                    .single()
                    .ok_or_else(|| ApiError::Invalid("expires_in is too far ahead".into()))?,
            )
        }
    };
    let mut tx = state.store.tenant(user.tenant).await?;
    if let Some(lead) = body.lead_id {
        let known: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM leads WHERE tenant_id = $1 AND id = $2)",
        )
        .bind(user.tenant.as_uuid())
        .bind(lead)
        .fetch_one(tx.conn())
        .await
        .map_err(DbError::from)?;
        if !known {
            return Err(ApiError::Invalid(
                "lead_id names no lead of this tenant".into(),
            ));
        }
    }
    let share = db_files::insert_share(
        &mut tx,
        &NewShare {
            id: Uuid::now_v7(),
            file_id: file,
            expires_at,
            created_by: user.user.as_uuid(),
            lead_id: body.lead_id,
        },
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(share_view(&state, user.tenant, share)),
    ))
}

#[derive(Serialize, ToSchema)]
struct ShareList {
    shares: Vec<ShareView>,
}

#[utoipa::path(get, path = "/files/{file_id}/shares", tag = "files", security(("dashboard" = [])), params(("file_id" = Uuid, Path, description = "The file's id")),
    responses((status = 200, description = "The file's share links", body = ShareList)))]
async fn list_shares(
    State(state): State<AppState>,
    user: TenantUser,
    IdPath(file): IdPath<Uuid>,
) -> Result<Json<ShareList>, ApiError> {
    let mut tx = state.store.tenant(user.tenant).await?;
    db_files::get(&mut tx, file).await?;
    let shares = db_files::list_shares(&mut tx, file).await?;
    Ok(Json(ShareList {
        shares: shares
            .into_iter()
            .map(|share| share_view(&state, user.tenant, share))
            .collect(),
    }))
}

#[utoipa::path(delete, path = "/files/{file_id}/shares/{share_id}", tag = "files", security(("dashboard" = [])),
    params(("file_id" = Uuid, Path, description = "The file's id"), ("share_id" = Uuid, Path, description = "The share link's id")),
    responses((status = 204, description = "Revoked"), (status = 403, description = "Your role cannot change configuration")))]
async fn revoke_share(
    State(state): State<AppState>,
    user: TenantUser,
    IdPair(file, share): IdPair<Uuid, Uuid>,
) -> Result<StatusCode, ApiError> {
    user.require_manager()?;
    let mut tx = state.store.tenant(user.tenant).await?;
    db_files::revoke_share(&mut tx, file, share).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A share link's query, as its `url` gives it.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LinkQuery {
    expires: i64,
    signature: String,
}

/// A shared file, through its link (no bearer token). Counted on the
/// tenant's `standard` tier.
#[utoipa::path(get, path = "/api/files/shared/{share_id}", tag = "files",
    params(("share_id" = Uuid, Path, description = "The share link's id"), LinkQuery,
        ("range" = Option<String>, Header, description = "`bytes=start-end`")),
    responses((status = 200, description = "The file's bytes, as the type told from them (`application/pdf`, `image/png` …)", content_type = "*/*", body = Vec<u8>,
            headers(("content-disposition" = String, description = "`attachment` with the file's name"),
                ("accept-ranges" = String, description = "`bytes`"))),
        (status = 206, description = "The range asked for (one `Range: bytes=`)", content_type = "*/*", body = Vec<u8>,
            headers(("content-range" = String, description = "`bytes start-end/size`"))),
        (status = 409, description = "Still being scanned for viruses"),
        (status = 416, description = "The range is not within the file",
            headers(("content-range" = String, description = "`bytes */size`"))),
        (status = 451, description = "The virus scanner flagged it: never served"),
        (status = 403, description = "The link is not valid"),
        (status = 410, description = "The link was revoked or has expired"),
        (status = 429, description = "The tenant's standard tier is exhausted"),
        (status = 503, description = "File storage or the rate limiter is unavailable")))]
async fn shared(
    State(state): State<AppState>,
    IdPath(share): IdPath<Uuid>,
    query: Result<Query<LinkQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let refused = || ApiError::Forbidden("this share link is not valid".into());
    let Query(link) = query.map_err(|_| refused())?;
    // Read from PostgreSQL every time: a revocation holds on every instance at once.
    let found = db_files::find_share(&state.store, share)
        .await?
        .ok_or_else(refused)?;
    let tenant = TenantId::from_uuid(found.tenant_id);
    state
        .recordings
        .capabilities
        .verify_file_share(tenant, found.file_id, share, link.expires, &link.signature)
        .map_err(|_| refused())?;
    if link.expires != found.expires_at.map_or(0, |at| at.timestamp()) {
        return Err(refused());
    }
    if found.revoked_at.is_some() {
        return Err(ApiError::Gone("this share link was revoked".into()));
    }
    if found.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(ApiError::Gone("this share link has expired".into()));
    }
    // Links are made by the tenant's users: their downloads count as the tenant's.
    let limited = state
        .limit(Tier::Standard, Some(tenant), &tenant.to_string())
        .await?;
    let mut tx = state.store.tenant(tenant).await?;
    let row = db_files::get(&mut tx, found.file_id).await?;
    drop(tx);
    serve(&state, tenant, row, &headers, limited).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_their_directories_and_control_characters() {
        assert_eq!(clean_name(Some("../../etc/passwd")), "passwd");
        assert_eq!(
            clean_name(Some("C:\\Users\\x\\Price list.pdf")),
            "Price list.pdf"
        );
        assert_eq!(clean_name(Some("a\r\nb.txt")), "ab.txt");
        assert_eq!(clean_name(Some("..")), "file");
        assert_eq!(clean_name(None), "file");
        assert_eq!(
            clean_name(Some(&"x".repeat(300))).chars().count(),
            MAX_NAME_CHARS
        );
    }

    #[test]
    fn a_disposition_is_an_attachment_with_a_safe_name() {
        assert_eq!(
            attachment("Preise \"2027\".pdf"),
            "attachment; filename=\"Preise _2027_.pdf\"; filename*=UTF-8''Preise%20%222027%22.pdf"
        );
        assert_eq!(
            attachment("café.txt"),
            "attachment; filename=\"caf_.txt\"; filename*=UTF-8''caf%C3%A9.txt"
        );
    }
}
