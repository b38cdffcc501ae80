//! Site operators: the cross-tenant administrator realm.

use agentry_actors::OperatorId;

use super::{DbError, Store};
use crate::domain::Email;

#[derive(Debug, sqlx::FromRow)]
pub struct OperatorLogin {
    pub id: uuid::Uuid,
    pub password_hash: String,
}

pub async fn create(
    store: &Store,
    email: &Email,
    password_hash: &str,
) -> Result<OperatorId, DbError> {
    let id = OperatorId::new();
    sqlx::query("INSERT INTO operators (id, email, password_hash) VALUES ($1, $2, $3)")
        .bind(id.as_uuid())
        .bind(email.as_str())
        .bind(password_hash)
        .execute(store.pool())
        .await
        .map_err(|e| {
            DbError::conflict_on_unique(e, "an operator with this email already exists")
        })?;
    Ok(id)
}

pub async fn find_login(store: &Store, email: &Email) -> Result<Option<OperatorLogin>, DbError> {
    Ok(
        sqlx::query_as("SELECT id, password_hash FROM operators WHERE lower(email) = $1")
            .bind(email.as_str())
            .fetch_optional(store.pool())
            .await?,
    )
}
