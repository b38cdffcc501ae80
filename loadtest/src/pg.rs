//! PostgreSQL, as the owner: transaction counters from `pg_stat_database`,
//! and the run's own database (dropped afterwards).
//!
//! The monitoring connection goes to the `postgres` maintenance database, so
//! its own statements are not counted in the database it measures.

use std::str::FromStr;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::Connection;

/// Committed and rolled-back transactions of one database so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XactCounts {
    pub commits: i64,
    pub rollbacks: i64,
}

impl XactCounts {
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            commits: self.commits - earlier.commits,
            rollbacks: self.rollbacks - earlier.rollbacks,
        }
    }

    pub fn transactions(&self) -> i64 {
        self.commits + self.rollbacks
    }
}

/// `url` with its database replaced by `database` (query parameters kept).
pub fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let scheme_end = url
        .find("://")
        .map(|i| i + 3)
        .with_context(|| format!("{url:?} is not a postgres:// URL"))?;
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let after_authority = &rest[authority_end..];
    let query = after_authority
        .find('?')
        .map(|i| &after_authority[i..])
        .unwrap_or("");
    Ok(format!(
        "{}{}/{database}{query}",
        &url[..scheme_end],
        &rest[..authority_end]
    ))
}

/// The database a URL names (`postgres` when it names none, as libpq defaults
/// to the user name, which is `postgres` for the owner here).
pub fn database_of(url: &str) -> anyhow::Result<String> {
    let options =
        PgConnectOptions::from_str(url).with_context(|| format!("bad database URL {url:?}"))?;
    Ok(options
        .get_database()
        .map(str::to_owned)
        .unwrap_or_else(|| options.get_username().to_owned()))
}

/// An owner connection to the maintenance database of `url`'s server.
pub async fn connect_maintenance(url: &str) -> anyhow::Result<PgConnection> {
    let options = PgConnectOptions::from_str(url)
        .with_context(|| format!("bad database URL {url:?}"))?
        .application_name("agentry-loadtest");
    match PgConnection::connect_with(&options.clone().database("postgres")).await {
        Ok(connection) => Ok(connection),
        // No `postgres` database to connect to: the URL's own will do.
        Err(_) => PgConnection::connect_with(&options)
            .await
            .with_context(|| format!("could not connect to PostgreSQL at {}", redact(url))),
    }
}

/// An owner connection to the database `url` names.
pub async fn connect(url: &str) -> anyhow::Result<PgConnection> {
    let options = PgConnectOptions::from_str(url)
        .with_context(|| format!("bad database URL {url:?}"))?
        .application_name("agentry-loadtest");
    PgConnection::connect_with(&options)
        .await
        .with_context(|| format!("could not connect to PostgreSQL at {}", redact(url)))
}

/// The counters of `database`, read fresh (not from a cached stats snapshot).
pub async fn xacts(connection: &mut PgConnection, database: &str) -> anyhow::Result<XactCounts> {
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *connection)
        .await?;
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = $1",
    )
    .bind(database)
    .fetch_optional(&mut *connection)
    .await
    .context("reading pg_stat_database")?;
    let (commits, rollbacks) =
        row.with_context(|| format!("pg_stat_database has no database {database:?}"))?;
    Ok(XactCounts { commits, rollbacks })
}

/// Drops a database the run created, closing its remaining connections.
pub async fn drop_database(connection: &mut PgConnection, database: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        database
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "refusing to drop {database:?}"
    );
    sqlx::query(&format!(
        "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
    ))
    .execute(connection)
    .await
    .with_context(|| format!("dropping database {database}"))?;
    Ok(())
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) if rest[..at].contains(':') => {
            let user_info = &rest[..at];
            let user = user_info.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme_end], &rest[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/agentry", "x_1").unwrap(),
            "postgres://postgres@127.0.0.1:5432/x_1"
        );
        assert_eq!(
            with_database("postgres://u:p@db/agentry?sslmode=disable", "x").unwrap(),
            "postgres://u:p@db/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgresql://db:5432", "x").unwrap(),
            "postgresql://db:5432/x"
        );
        assert_eq!(
            with_database("postgres://db?sslmode=require", "x").unwrap(),
            "postgres://db/x?sslmode=require"
        );
        assert!(with_database("nonsense", "x").is_err());
    }

    #[test]
    fn database_names_come_from_the_url() {
        assert_eq!(
            database_of("postgres://postgres@127.0.0.1:5432/agentry").unwrap(),
            "agentry"
        );
        assert_eq!(
            database_of("postgres://alice@127.0.0.1:5432").unwrap(),
            "alice"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@db:5432/a"),
            "postgres://u:***@db:5432/a"
        );
        assert_eq!(redact("postgres://u@db/a"), "postgres://u@db/a");
        assert_eq!(redact("postgres://db/a"), "postgres://db/a");
    }

    #[test]
    fn counter_deltas_add_commits_and_rollbacks() {
        let before = XactCounts {
            commits: 100,
            rollbacks: 3,
        };
        let after = XactCounts {
            commits: 180,
            rollbacks: 5,
        };
        let delta = after.since(&before);
        assert_eq!(delta.commits, 80);
        assert_eq!(delta.transactions(), 82);
    }
}
