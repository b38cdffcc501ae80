//! `files` and `file_shares`: a tenant's stored files (naming the sealed
//! object and its sealed data key) and the signed links to them.

use agentry_actors::TenantId;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{DbError, Store, TenantTx};

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct FileRow {
    pub id: Uuid,
    pub name: String,
    pub size_bytes: i64,
    pub content_type: String,
    pub object_key: String,
    pub data_key: Vec<u8>,
    pub nonce_prefix: Vec<u8>,
    pub scan_status: String,
    pub scan_signature: Option<String>,
    pub scanned_at: Option<DateTime<Utc>>,
    pub agent_id: Option<Uuid>,
    pub kb_document_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, name, size_bytes, content_type, object_key, data_key, nonce_prefix, \
                       scan_status, scan_signature, scanned_at, agent_id, kb_document_id, created_at";

pub struct NewFile<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub size_bytes: i64,
    pub content_type: &'a str,
    pub object_key: &'a str,
    pub data_key: &'a [u8],
    pub nonce_prefix: &'a [u8],
    pub scan_status: &'a str,
    pub agent_id: Option<Uuid>,
}

pub async fn insert(tx: &mut TenantTx, new: &NewFile<'_>) -> Result<FileRow, DbError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_as(&format!(
        "INSERT INTO files (id, tenant_id, name, size_bytes, content_type, object_key, data_key,
                            nonce_prefix, scan_status, agent_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         RETURNING {COLUMNS}"
    ))
    .bind(new.id)
    .bind(tenant.as_uuid())
    .bind(new.name)
    .bind(new.size_bytes)
    .bind(new.content_type)
    .bind(new.object_key)
    .bind(new.data_key)
    .bind(new.nonce_prefix)
    .bind(new.scan_status)
    .bind(new.agent_id)
    .fetch_one(tx.conn())
    .await?)
}

pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<FileRow, DbError> {
    let tenant = tx.tenant();
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM files WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.as_uuid())
    .bind(id)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

/// Newest first, after `cursor` when given.
pub async fn list(
    tx: &mut TenantTx,
    cursor: Option<Uuid>,
    limit: i64,
) -> Result<Vec<FileRow>, DbError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM files
         WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3"
    ))
    .bind(tenant.as_uuid())
    .bind(cursor)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

/// What a deleted file leaves to clean up: its object, and the knowledge-base
/// document made of it.
#[derive(Debug, sqlx::FromRow)]
pub struct Deleted {
    pub object_key: String,
    pub agent_id: Option<Uuid>,
    pub kb_document_id: Option<Uuid>,
}

/// Deletes the row (and its shares).
pub async fn delete(tx: &mut TenantTx, id: Uuid) -> Result<Deleted, DbError> {
    let tenant = tx.tenant();
    sqlx::query_as(
        "DELETE FROM files WHERE tenant_id = $1 AND id = $2
         RETURNING object_key, agent_id, kb_document_id",
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

/// Records a scan's verdict, if the file is still pending (another
/// instance's verdict, or a delete, came first otherwise); `false` then.
pub async fn record_scan(
    tx: &mut TenantTx,
    id: Uuid,
    status: &str,
    signature: Option<&str>,
) -> Result<bool, DbError> {
    let tenant = tx.tenant();
    let updated = sqlx::query(
        "UPDATE files SET scan_status = $3, scan_signature = $4, scanned_at = now(),
                          scan_claimed_by = NULL, scan_lease_until = NULL
         WHERE tenant_id = $1 AND id = $2 AND scan_status = 'pending'",
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .bind(status)
    .bind(signature)
    .execute(tx.conn())
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Links the file to the knowledge-base document made of it, once; `false`
/// when it already has one.
pub async fn set_kb_document(tx: &mut TenantTx, id: Uuid, document: Uuid) -> Result<bool, DbError> {
    let tenant = tx.tenant();
    let updated = sqlx::query(
        "UPDATE files SET kb_document_id = $3
         WHERE tenant_id = $1 AND id = $2 AND kb_document_id IS NULL",
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .bind(document)
    .execute(tx.conn())
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Leases up to `limit` pending files nobody holds (or whose holder's lease
/// ran out) to `claimer`, across tenants.
pub async fn claim_pending(
    store: &Store,
    claimer: Uuid,
    lease: std::time::Duration,
    limit: i32,
) -> Result<Vec<(TenantId, Uuid)>, DbError> {
    let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT tenant_id, file_id
         FROM agentry_claim_pending_files($1, make_interval(secs => $2), $3)",
    )
    .bind(claimer)
    .bind(lease.as_secs_f64())
    .bind(limit)
    .fetch_all(store.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(tenant, file)| (TenantId::from_uuid(tenant), file))
        .collect())
}

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Share {
    pub id: Uuid,
    pub file_id: Uuid,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_by: Uuid,
    pub lead_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

const SHARE_COLUMNS: &str = "id, file_id, expires_at, revoked_at, created_by, lead_id, created_at";

pub struct NewShare {
    pub id: Uuid,
    pub file_id: Uuid,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_by: Uuid,
    pub lead_id: Option<Uuid>,
}

/// Adds a share of one of the tenant's files; `NotFound` for another
/// tenant's file (or lead).
pub async fn insert_share(tx: &mut TenantTx, new: &NewShare) -> Result<Share, DbError> {
    let tenant = tx.tenant();
    sqlx::query_as(&format!(
        "INSERT INTO file_shares (id, tenant_id, file_id, expires_at, created_by, lead_id)
         SELECT $1, f.tenant_id, f.id, $4, $5, $6 FROM files f
         WHERE f.tenant_id = $2 AND f.id = $3
           AND ($6::uuid IS NULL OR EXISTS (SELECT 1 FROM leads l WHERE l.tenant_id = $2 AND l.id = $6))
         RETURNING {SHARE_COLUMNS}"
    ))
    .bind(new.id)
    .bind(tenant.as_uuid())
    .bind(new.file_id)
    .bind(new.expires_at)
    .bind(new.created_by)
    .bind(new.lead_id)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

pub async fn list_shares(tx: &mut TenantTx, file: Uuid) -> Result<Vec<Share>, DbError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_as(&format!(
        "SELECT {SHARE_COLUMNS} FROM file_shares WHERE tenant_id = $1 AND file_id = $2 ORDER BY id DESC"
    ))
    .bind(tenant.as_uuid())
    .bind(file)
    .fetch_all(tx.conn())
    .await?)
}

/// Revokes a share (again is a no-op); `NotFound` when the file has no such share.
pub async fn revoke_share(tx: &mut TenantTx, file: Uuid, share: Uuid) -> Result<(), DbError> {
    let tenant = tx.tenant();
    sqlx::query_scalar::<_, Uuid>(
        "UPDATE file_shares SET revoked_at = coalesce(revoked_at, now())
         WHERE tenant_id = $1 AND file_id = $2 AND id = $3 RETURNING id",
    )
    .bind(tenant.as_uuid())
    .bind(file)
    .bind(share)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)?;
    Ok(())
}

/// A share presented by its link, before anyone knows whose it is.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PresentedShare {
    pub tenant_id: Uuid,
    pub file_id: Uuid,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub async fn find_share(store: &Store, share: Uuid) -> Result<Option<PresentedShare>, DbError> {
    Ok(sqlx::query_as(
        "SELECT tenant_id, file_id, expires_at, revoked_at FROM agentry_find_file_share($1)",
    )
    .bind(share)
    .fetch_optional(store.pool())
    .await?)
}
