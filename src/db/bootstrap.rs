//! Start-up: create the database if missing, migrate it as the owner, and make
//! sure the application role exists with exactly the rights it needs.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use super::{DbError, Store, AUDIT_TABLES};
use crate::configuration::DatabaseSettings;

/// Creates the database if needed, applies migrations, ensures the app role,
/// and returns the store connected as that role.
pub async fn prepare(settings: &DatabaseSettings) -> Result<Store, DbError> {
    let owner = owner_options(settings)?;
    create_database_if_missing(&owner).await?;
    migrate_with(&owner).await?;
    ensure_app_role(&owner, settings).await?;
    let pool = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout())
        .connect_with(app_options(settings)?)
        .await?;
    Ok(Store::new(pool))
}

/// `agentry migrate`: create the database if needed and apply migrations.
pub async fn migrate(settings: &DatabaseSettings) -> Result<(), DbError> {
    let owner = owner_options(settings)?;
    create_database_if_missing(&owner).await?;
    migrate_with(&owner).await?;
    ensure_app_role(&owner, settings).await
}

pub fn owner_options(settings: &DatabaseSettings) -> Result<PgConnectOptions, DbError> {
    Ok(PgConnectOptions::from_str(settings.url.expose())?
        .application_name("agentry-owner")
        .log_statements(tracing::log::LevelFilter::Trace))
}

pub fn app_options(settings: &DatabaseSettings) -> Result<PgConnectOptions, DbError> {
    // Start from the URL without its password: the owner's must never be sent for the app role.
    let mut options = PgConnectOptions::from_str(&strip_password(settings.url.expose()))?
        .username(&settings.app_user)
        .application_name("agentry")
        .log_statements(tracing::log::LevelFilter::Trace);
    let password = settings.app_password.expose();
    if !password.is_empty() {
        options = options.password(password);
    }
    Ok(options)
}

fn strip_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        Err(_) => url.to_owned(),
    }
}

async fn create_database_if_missing(owner: &PgConnectOptions) -> Result<(), DbError> {
    let Some(database) = owner.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut maintenance = owner.clone().database("postgres").connect().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&database)
            .fetch_one(&mut maintenance)
            .await?;
    if !exists {
        let created = sqlx::query(&format!("CREATE DATABASE {}", quote_ident(&database)))
            .execute(&mut maintenance)
            .await;
        match created {
            // Another instance created it first.
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P04") => {}
            Err(other) => return Err(other.into()),
            Ok(_) => tracing::info!(database = %database, "created database"),
        }
    }
    maintenance.close().await?;
    Ok(())
}

/// Applies the migrations inside one transaction that first takes a
/// transaction-level advisory lock, so instances starting together apply each
/// migration once. sqlx's own lock is a session's (`pg_advisory_lock`, then
/// `pg_advisory_unlock`): through a transaction-pooling PgBouncer the two can
/// run on different server connections, leaving the lock held by an idle one
/// and the next migrator waiting forever. A transaction keeps one server
/// connection throughout, and its lock ends with it. Each migration runs in a
/// savepoint of it; all commit together.
async fn migrate_with(owner: &PgConnectOptions) -> Result<(), DbError> {
    let pool = owner_pool(owner).await?;
    let mut tx = pool.begin().await?;
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut *tx)
        .await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(migration_lock_id(&database))
        .execute(&mut *tx)
        .await?;
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_locking(false);
    migrator.run(&mut *tx).await?;
    tx.commit().await?;
    pool.close().await;
    Ok(())
}

/// The key sqlx's migrator locks (its `generate_lock_id`), so an instance of
/// an earlier version, still taking sqlx's session lock, waits for this one
/// and the other way round (a session and a transaction lock on one key conflict).
fn migration_lock_id(database: &str) -> i64 {
    0x3d32_ad9e * i64::from(crc32fast::hash(database.as_bytes()))
}

async fn owner_pool(owner: &PgConnectOptions) -> Result<PgPool, DbError> {
    Ok(PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(owner.clone())
        .await?)
}

/// Creates the application role if missing and (re)applies its grants: full
/// access to ordinary tables, only SELECT and INSERT on the audit tables.
async fn ensure_app_role(
    owner: &PgConnectOptions,
    settings: &DatabaseSettings,
) -> Result<(), DbError> {
    let role = quote_ident(&settings.app_user);
    let mut conn = owner.connect().await?;
    // Roles are cluster-wide; several databases (test runs) may race to create it.
    let mut attempts = 0;
    loop {
        let created = sqlx::raw_sql(&format!(
            "DO $$ BEGIN
                IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {name}) THEN
                    CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT;
                END IF;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
             END $$;",
            name = quote_literal(&settings.app_user),
        ))
        .execute(&mut conn)
        .await;
        match created {
            Ok(_) => break,
            Err(error) if attempts < 5 => {
                attempts += 1;
                tracing::debug!(%error, "retrying application role creation");
                tokio::time::sleep(Duration::from_millis(50 * attempts)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
    let password = settings.app_password.expose();
    if !password.is_empty() {
        sqlx::raw_sql(&format!(
            "ALTER ROLE {role} PASSWORD {}",
            quote_literal(password)
        ))
        .execute(&mut conn)
        .await?;
    }
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut conn)
        .await?;
    let audit_tables = AUDIT_TABLES.join(", ");
    sqlx::raw_sql(&format!(
        "GRANT CONNECT ON DATABASE {database} TO {role};
         GRANT USAGE ON SCHEMA public TO {role};
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role};
         REVOKE UPDATE, DELETE, TRUNCATE ON {audit_tables} FROM {role};
         REVOKE ALL ON _sqlx_migrations FROM {role};
         GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role};
         GRANT EXECUTE ON FUNCTION agentry_find_login(text), agentry_find_dashboard_session(uuid),
             agentry_find_widget(text), agentry_origin_allowed(text),
             agentry_claim_stale_pending_documents(interval), agentry_demo_widget(text),
             agentry_claim_outbox(integer), agentry_mark_outbox_published(uuid[]),
             agentry_outbox_backlog(), agentry_republish_unsettled(timestamptz),
             agentry_pending_webhook_retries(timestamptz, integer),
             agentry_find_api_token(bytea), agentry_rate_limit_overrides(),
             agentry_find_phone_number(text), agentry_claim_sms_outbound(integer, interval),
             agentry_claim_pending_files(uuid, interval, integer), agentry_find_file_share(uuid),
             agentry_queue_depths() TO {role};",
        database = quote_ident(&database),
    ))
    .execute(&mut conn)
    .await?;
    // Scheduled jobs: their cross-tenant functions; billing totals are the
    // rollup's to write, never a request's.
    sqlx::raw_sql(&format!(
        "GRANT EXECUTE ON FUNCTION {} TO {role};
         REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON usage_daily FROM {role};",
        crate::jobs::DB_FUNCTIONS.join(", ")
    ))
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    Ok(())
}

/// Quotes an SQL identifier (role and database names come from configuration).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A maintenance connection to the server's `postgres` database (tests drop their databases with it).
pub async fn maintenance_connection(settings: &DatabaseSettings) -> Result<PgConnection, DbError> {
    Ok(owner_options(settings)?
        .database("postgres")
        .connect()
        .await?)
}

/// True when no tenant exists yet (checked as the owner: RLS would hide them all).
pub async fn database_is_empty(settings: &DatabaseSettings) -> Result<bool, DbError> {
    let mut conn = owner_options(settings)?.connect().await?;
    let empty: bool = sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM tenants)")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migration_lock_is_the_key_sqlx_locks() {
        // sqlx 0.8's generate_lock_id("agentry"): 0x3d32ad9e * CRC-32("agentry"),
        // worked out apart from this code (Python's zlib.crc32).
        assert_eq!(migration_lock_id("agentry"), 1_246_696_423_380_355_264);
    }
}
