//! Accounts: password hashing and the creation of tenants and operators,
//! shared by the CLI, the demo seed and the operator API.

use agentry_actors::{OperatorId, Secret, TenantId, UserId};
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::Serialize;

use crate::db::{operators, tenants, DbError, Store};
use crate::domain::{check_new_password, parse_name, Email};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

/// Hashes with Argon2id (the crate's defaults follow the OWASP minimum), off the async runtime.
pub async fn hash_password(password: Secret<String>) -> Result<String, AccountError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.expose().as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| AccountError::Hashing(e.to_string()))
    })
    .await
    .map_err(|e| AccountError::Hashing(e.to_string()))?
}

/// Bounds the password checks running at once, so a flood of logins queues
/// briefly and is then refused instead of taking every CPU and 19 MiB per
/// check.
pub struct PasswordGate {
    slots: tokio::sync::Semaphore,
    wait: std::time::Duration,
}

/// No password-check slot came free in time.
#[derive(Debug)]
pub struct GateBusy;

impl PasswordGate {
    /// `slots` 0 means one per CPU.
    pub fn new(slots: usize, wait: std::time::Duration) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            slots: tokio::sync::Semaphore::new(if slots == 0 { cpus } else { slots }),
            wait,
        }
    }

    /// [`verify_password`] once a slot is free.
    pub async fn verify(
        &self,
        password: Secret<String>,
        stored_hash: Option<String>,
    ) -> Result<bool, GateBusy> {
        let _slot = tokio::time::timeout(self.wait, self.slots.acquire())
            .await
            .map_err(|_| GateBusy)?
            .map_err(|_| GateBusy)?;
        Ok(verify_password(password, stored_hash).await)
    }
}

/// Verifies a password against a stored hash. With no stored hash (unknown
/// user) it still does the work, so response time does not reveal which emails exist.
pub async fn verify_password(password: Secret<String>, stored_hash: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        let user_exists = stored_hash.is_some();
        let hash = stored_hash.unwrap_or_else(|| UNKNOWN_USER_HASH.clone());
        let Ok(parsed) = PasswordHash::new(&hash) else {
            return false;
        };
        let matches = Argon2::default()
            .verify_password(password.expose().as_bytes(), &parsed)
            .is_ok();
        matches && user_exists
    })
    .await
    .unwrap_or(false)
}

static UNKNOWN_USER_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(b"no user has this password", &salt)
        .map(|hash| hash.to_string())
        .unwrap_or_default()
});

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedTenant {
    #[schema(value_type = uuid::Uuid)]
    pub tenant_id: TenantId,
    pub name: String,
    #[schema(value_type = uuid::Uuid)]
    pub admin_user_id: UserId,
    pub admin_email: String,
}

pub async fn create_tenant(
    store: &Store,
    name: &str,
    admin_email: &str,
    admin_password: Secret<String>,
) -> Result<CreatedTenant, AccountError> {
    let name = parse_name("name", name).map_err(AccountError::Invalid)?;
    let email = Email::parse(admin_email).map_err(AccountError::Invalid)?;
    check_new_password(admin_password.expose()).map_err(AccountError::Invalid)?;
    let hash = hash_password(admin_password).await?;
    let (tenant_id, admin_user_id) =
        tenants::create_with_owner(store, &name, &email, &hash).await?;
    Ok(CreatedTenant {
        tenant_id,
        name,
        admin_user_id,
        admin_email: email.as_str().to_owned(),
    })
}

pub async fn create_operator(
    store: &Store,
    email: &str,
    password: Secret<String>,
) -> Result<OperatorId, AccountError> {
    let email = Email::parse(email).map_err(AccountError::Invalid)?;
    check_new_password(password.expose()).map_err(AccountError::Invalid)?;
    let hash = hash_password(password).await?;
    Ok(operators::create(store, &email, &hash).await?)
}
