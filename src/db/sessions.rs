//! Dashboard and operator sessions behind bearer tokens; revocation is a column,
//! so logging out takes effect on every instance at once.

use agentry_actors::{OperatorId, TenantId, UserId};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{DbError, Store, TenantTx};

#[derive(Debug, sqlx::FromRow)]
pub struct DashboardSession {
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub role: String,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl DashboardSession {
    pub fn tenant(&self) -> TenantId {
        TenantId::from_uuid(self.tenant_id)
    }

    pub fn user(&self) -> UserId {
        UserId::from_uuid(self.user_id)
    }
}

pub async fn create_dashboard(
    tx: &mut TenantTx,
    user: UserId,
    expires_at: DateTime<Utc>,
) -> Result<Uuid, DbError> {
    let id = Uuid::new_v4();
    let tenant = tx.tenant();
    sqlx::query("INSERT INTO tenant_user_sessions (id, tenant_id, user_id, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(tenant.as_uuid())
        .bind(user.as_uuid())
        .bind(expires_at)
        .execute(tx.conn())
        .await?;
    Ok(id)
}

/// Looks a session up by id before its tenant is known (through a narrow SECURITY DEFINER function).
pub async fn find_dashboard(
    store: &Store,
    session: Uuid,
) -> Result<Option<DashboardSession>, DbError> {
    Ok(sqlx::query_as(
        "SELECT tenant_id, user_id, role, expires_at, revoked_at FROM agentry_find_dashboard_session($1)",
    )
    .bind(session)
    .fetch_optional(store.pool())
    .await?)
}

pub async fn revoke_dashboard(tx: &mut TenantTx, session: Uuid) -> Result<(), DbError> {
    let tenant = tx.tenant();
    sqlx::query(
        "UPDATE tenant_user_sessions SET revoked_at = now()
         WHERE id = $1 AND tenant_id = $2 AND revoked_at IS NULL",
    )
    .bind(session)
    .bind(tenant.as_uuid())
    .execute(tx.conn())
    .await?;
    Ok(())
}

#[derive(Debug, sqlx::FromRow)]
pub struct OperatorSession {
    pub operator_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub async fn create_operator(
    store: &Store,
    operator: OperatorId,
    expires_at: DateTime<Utc>,
) -> Result<Uuid, DbError> {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO operator_sessions (id, operator_id, expires_at) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(operator.as_uuid())
        .bind(expires_at)
        .execute(store.pool())
        .await?;
    Ok(id)
}

pub async fn find_operator(
    store: &Store,
    session: Uuid,
) -> Result<Option<OperatorSession>, DbError> {
    Ok(sqlx::query_as(
        "SELECT operator_id, expires_at, revoked_at FROM operator_sessions WHERE id = $1",
    )
    .bind(session)
    .fetch_optional(store.pool())
    .await?)
}

pub async fn revoke_operator(store: &Store, session: Uuid) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE operator_sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(session)
    .execute(store.pool())
    .await?;
    Ok(())
}
