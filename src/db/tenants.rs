//! Tenants and their dashboard users.

use agentry_actors::{TenantId, UserId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, Postgres, Transaction};

use super::{DbError, Store};
use crate::domain::Email;

#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Tenant {
    pub id: uuid::Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Admin,
    Member,
}

impl Role {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "owner" => Some(Self::Owner),
            "admin" => Some(Self::Admin),
            "member" => Some(Self::Member),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }

    /// Owners and admins change configuration; members only read it.
    pub fn can_manage(self) -> bool {
        matches!(self, Self::Owner | Self::Admin)
    }
}

/// Creates a tenant and its owner in one transaction, scoped to the new tenant.
pub async fn create_with_owner(
    store: &Store,
    name: &str,
    owner_email: &Email,
    password_hash: &str,
) -> Result<(TenantId, UserId), DbError> {
    let tenant = TenantId::new();
    let user = UserId::new();
    let mut tx = store.tenant(tenant).await?;
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, $2)")
        .bind(tenant.as_uuid())
        .bind(name)
        .execute(tx.conn())
        .await?;
    insert_user(
        tx.conn(),
        tenant,
        user,
        owner_email,
        password_hash,
        Role::Owner,
    )
    .await?;
    tx.commit().await?;
    Ok((tenant, user))
}

async fn insert_user(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    email: &Email,
    password_hash: &str,
    role: Role,
) -> Result<(), DbError> {
    sqlx::query("INSERT INTO tenant_users (id, tenant_id, email, password_hash, role) VALUES ($1, $2, $3, $4, $5)")
        .bind(user.as_uuid())
        .bind(tenant.as_uuid())
        .bind(email.as_str())
        .bind(password_hash)
        .bind(role.as_str())
        .execute(conn)
        .await
        .map_err(|e| DbError::conflict_on_unique(e, "a user with this email already exists"))?;
    Ok(())
}

/// Adds a user to the tenant of `tx`.
pub async fn add_user(
    tx: &mut super::TenantTx,
    email: &Email,
    password_hash: &str,
    role: Role,
) -> Result<UserId, DbError> {
    let user = UserId::new();
    let tenant = tx.tenant();
    insert_user(tx.conn(), tenant, user, email, password_hash, role).await?;
    Ok(user)
}

/// The tenant of `tx` itself.
pub async fn current(tx: &mut super::TenantTx) -> Result<Tenant, DbError> {
    let tenant = tx.tenant();
    sqlx::query_as("SELECT id, name, created_at FROM tenants WHERE id = $1")
        .bind(tenant.as_uuid())
        .fetch_optional(tx.conn())
        .await?
        .ok_or(DbError::NotFound)
}

/// Operators list tenants (metadata only; RLS keeps tenant data out of reach).
pub async fn list_for_operator(
    tx: &mut Transaction<'static, Postgres>,
) -> Result<Vec<Tenant>, DbError> {
    Ok(
        sqlx::query_as("SELECT id, name, created_at FROM tenants ORDER BY created_at, id")
            .fetch_all(&mut **tx)
            .await?,
    )
}

pub async fn get_for_operator(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
) -> Result<Tenant, DbError> {
    sqlx::query_as("SELECT id, name, created_at FROM tenants WHERE id = $1")
        .bind(tenant.as_uuid())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(DbError::NotFound)
}

/// What login needs to know about a user, found before any tenant is known.
#[derive(Debug, sqlx::FromRow)]
pub struct LoginCandidate {
    pub user_id: uuid::Uuid,
    pub tenant_id: uuid::Uuid,
    pub password_hash: String,
    pub role: String,
}

pub async fn find_login(store: &Store, email: &Email) -> Result<Option<LoginCandidate>, DbError> {
    Ok(
        sqlx::query_as(
            "SELECT user_id, tenant_id, password_hash, role FROM agentry_find_login($1)",
        )
        .bind(email.as_str())
        .fetch_optional(store.pool())
        .await?,
    )
}
