//! Webhook endpoints: a tenant's receivers, with their sealed signing secrets.

use agentry_actors::TenantId;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{DbError, TenantTx};
use crate::crypto::SecretOwner;

/// The two secrets an endpoint may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretSlot {
    Current,
    /// The one before the last rotation, signing until its grace period ends.
    Previous,
}

impl SecretSlot {
    /// What a secret in this slot is sealed for: its tenant, column and row.
    pub fn owner(self, tenant: TenantId, endpoint: Uuid) -> SecretOwner {
        let column = match self {
            Self::Current => "secret_sealed",
            Self::Previous => "previous_secret_sealed",
        };
        SecretOwner::of_row(tenant, "webhook_endpoints", column, endpoint)
    }
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Endpoint {
    pub id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub description: String,
    pub secret_sealed: Vec<u8>,
    pub previous_secret_sealed: Option<Vec<u8>>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, url, event_types, enabled, description, secret_sealed, \
                       previous_secret_sealed, previous_secret_expires_at, created_at, updated_at";

pub struct NewEndpoint<'a> {
    /// Chosen by the caller: the secret is sealed for this row before the insert.
    pub id: Uuid,
    pub url: &'a str,
    pub event_types: &'a [String],
    pub enabled: bool,
    pub description: &'a str,
    pub secret_sealed: &'a [u8],
}

/// Fields to change; `None` leaves a field as it is.
#[derive(Default)]
pub struct EndpointChanges<'a> {
    pub url: Option<&'a str>,
    pub event_types: Option<&'a [String]>,
    pub enabled: Option<bool>,
    pub description: Option<&'a str>,
}

pub async fn create(tx: &mut TenantTx, new: NewEndpoint<'_>) -> Result<Endpoint, DbError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_as(&format!(
        "INSERT INTO webhook_endpoints (id, tenant_id, url, event_types, enabled, description, secret_sealed)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    ))
    .bind(new.id)
    .bind(tenant.as_uuid())
    .bind(new.url)
    .bind(new.event_types)
    .bind(new.enabled)
    .bind(new.description)
    .bind(new.secret_sealed)
    .fetch_one(tx.conn())
    .await?)
}

pub async fn list(tx: &mut TenantTx) -> Result<Vec<Endpoint>, DbError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 ORDER BY id"
    ))
    .bind(tenant.as_uuid())
    .fetch_all(tx.conn())
    .await?)
}

pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<Endpoint, DbError> {
    let tenant = tx.tenant();
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.as_uuid())
    .bind(id)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

pub async fn update(
    tx: &mut TenantTx,
    id: Uuid,
    changes: EndpointChanges<'_>,
) -> Result<Endpoint, DbError> {
    let tenant = tx.tenant();
    sqlx::query_as(&format!(
        "UPDATE webhook_endpoints SET
            url = coalesce($3, url),
            event_types = coalesce($4, event_types),
            enabled = coalesce($5, enabled),
            description = coalesce($6, description),
            updated_at = now()
         WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
    ))
    .bind(tenant.as_uuid())
    .bind(id)
    .bind(changes.url)
    .bind(changes.event_types)
    .bind(changes.enabled)
    .bind(changes.description)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

/// Installs a new secret; the current one becomes the previous one, signing
/// beside it until `previous_expires_at`.
pub async fn rotate_secret(
    tx: &mut TenantTx,
    id: Uuid,
    secret_sealed: &[u8],
    previous_sealed: &[u8],
    previous_expires_at: DateTime<Utc>,
) -> Result<Endpoint, DbError> {
    let tenant = tx.tenant();
    sqlx::query_as(&format!(
        "UPDATE webhook_endpoints SET
            secret_sealed = $3,
            previous_secret_sealed = $4,
            previous_secret_expires_at = $5,
            updated_at = now()
         WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
    ))
    .bind(tenant.as_uuid())
    .bind(id)
    .bind(secret_sealed)
    .bind(previous_sealed)
    .bind(previous_expires_at)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

pub async fn delete(tx: &mut TenantTx, id: Uuid) -> Result<(), DbError> {
    let tenant = tx.tenant();
    let deleted = sqlx::query("DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.as_uuid())
        .bind(id)
        .execute(tx.conn())
        .await?
        .rows_affected();
    if deleted == 0 {
        return Err(DbError::NotFound);
    }
    Ok(())
}
