//! API tokens' rows: created, listed and revoked inside the tenant's unit of
//! work; found by hash before any tenant is known (SECURITY DEFINER lookup).

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{DbError, Store, TenantTx};

/// A token as lists show it: never the token, never its hash.
#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ApiTokenRow {
    pub id: Uuid,
    pub name: String,
    pub scopes: Vec<String>,
    #[serde(skip)]
    pub last_four: String,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "id, name, scopes, last_four, created_by, created_at, expires_at, last_used_at, revoked_at";

pub struct NewApiToken<'a> {
    pub name: &'a str,
    pub scopes: &'a [String],
    pub hash: &'a [u8; 32],
    pub last_four: &'a str,
    pub created_by: Uuid,
    pub expires_at: DateTime<Utc>,
}

pub async fn create(tx: &mut TenantTx, token: NewApiToken<'_>) -> Result<ApiTokenRow, DbError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_as(&format!(
        "INSERT INTO api_tokens (id, tenant_id, name, scopes, token_hash, last_four, created_by, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(tenant.as_uuid())
    .bind(token.name)
    .bind(token.scopes)
    .bind(&token.hash[..])
    .bind(token.last_four)
    .bind(token.created_by)
    .bind(token.expires_at)
    .fetch_one(tx.conn())
    .await?)
}

/// Newest first; revoked and expired ones too (they show why a client stopped working).
pub async fn list(tx: &mut TenantTx) -> Result<Vec<ApiTokenRow>, DbError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM api_tokens WHERE tenant_id = $1 ORDER BY id DESC"
    ))
    .bind(tenant.as_uuid())
    .fetch_all(tx.conn())
    .await?)
}

/// Revokes a token (again is fine); `NotFound` for a token the tenant does not have.
pub async fn revoke(tx: &mut TenantTx, id: Uuid) -> Result<(), DbError> {
    let tenant = tx.tenant();
    let done = sqlx::query(
        "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now())
         WHERE id = $1 AND tenant_id = $2",
    )
    .bind(id)
    .bind(tenant.as_uuid())
    .execute(tx.conn())
    .await?;
    if done.rows_affected() == 0 {
        return Err(DbError::NotFound);
    }
    Ok(())
}

/// What authentication needs of a token.
#[derive(Debug, sqlx::FromRow)]
pub struct FoundToken {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub scopes: Vec<String>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

pub async fn find_by_hash(store: &Store, hash: &[u8; 32]) -> Result<Option<FoundToken>, DbError> {
    Ok(sqlx::query_as(
        "SELECT id, tenant_id, scopes, expires_at, revoked_at, last_used_at
         FROM agentry_find_api_token($1)",
    )
    .bind(&hash[..])
    .fetch_optional(store.pool())
    .await?)
}

/// Records a use, at most once a minute per token: the condition makes
/// concurrent uses on several instances write once, not once each.
pub async fn touch(tx: &mut TenantTx, id: Uuid) -> Result<(), DbError> {
    let tenant = tx.tenant();
    sqlx::query(
        "UPDATE api_tokens SET last_used_at = now()
         WHERE id = $1 AND tenant_id = $2
           AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
    )
    .bind(id)
    .bind(tenant.as_uuid())
    .execute(tx.conn())
    .await?;
    Ok(())
}
