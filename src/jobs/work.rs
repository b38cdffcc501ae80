//! What each job does: its database part inside the claiming transaction,
//! then what must wait for that commit (Redis keys, stored objects).
//!
//! # Retention steps
//!
//! `apply_retention` runs [`RetentionStep::ALL`] in order, each one SQL
//! function across tenants returning how many rows it deleted and the keys
//! of the objects (recordings' audio, files) that go once the transaction
//! committed: a row never names a missing object, and an object left behind
//! by a failed deletion is sealed and named by nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{redis_sweep, Counts, JobError, JobName};
use crate::http::AppState;

/// Rollups recompute the days of events recorded since the last successful
/// run began, less this: an event committed just after that run's snapshot
/// carries an earlier `recorded_at` (its transaction's start).
const ROLLUP_OVERLAP_SECS: f64 = 600.0;
/// Job-run rows kept, for looking back at what ran; older ones are purged.
const JOB_RUNS_KEPT_DAYS: i32 = 30;

/// Work left for after the claim committed.
pub enum AfterCommit {
    Nothing,
    SweepWidgetSessions,
    SweepVisitorIps,
    /// Stored objects (recordings' audio, files) whose rows are gone.
    DeleteObjects(Vec<String>),
}

impl AfterCommit {
    pub fn is_nothing(&self) -> bool {
        matches!(self, Self::Nothing)
    }
}

pub async fn in_transaction(
    state: &AppState,
    job: JobName,
    conn: &mut PgConnection,
) -> Result<(Counts, AfterCommit), JobError> {
    let mut counts = Counts::new();
    let after = match job {
        JobName::PurgeSessions => {
            purge_sessions(state, conn, &mut counts).await?;
            AfterCommit::SweepWidgetSessions
        }
        JobName::ExpireApiTokens => {
            let erased: i64 = sqlx::query_scalar("SELECT agentry_job_expire_api_tokens()")
                .fetch_one(conn)
                .await?;
            counts.insert("hashes_erased", erased);
            AfterCommit::Nothing
        }
        // Redis only: the claim alone commits first.
        JobName::PurgeVisitorIps => AfterCommit::SweepVisitorIps,
        JobName::RollupUsage => {
            rollup_usage(conn, &mut counts).await?;
            AfterCommit::Nothing
        }
        JobName::ApplyRetention => {
            let mut objects = Vec::new();
            for step in RetentionStep::ALL {
                let (deleted, keys): (i64, Vec<String>) =
                    sqlx::query_as(step.sql()).fetch_one(&mut *conn).await?;
                counts.insert(step.label(), deleted);
                objects.extend(keys);
            }
            AfterCommit::DeleteObjects(objects)
        }
    };
    Ok((counts, after))
}

async fn purge_sessions(
    state: &AppState,
    conn: &mut PgConnection,
    counts: &mut Counts,
) -> Result<(), JobError> {
    let grace = state.settings.jobs.session_grace();
    let widget_ttl = Duration::from_secs(state.settings.widget.session_ttl_secs);
    let (dashboard, operator, widget): (i64, i64, i64) = sqlx::query_as(
        "SELECT dashboard_sessions, operator_sessions, widget_conversations
         FROM agentry_job_purge_sessions(make_interval(secs => $1), make_interval(secs => $2))",
    )
    .bind(grace.as_secs_f64())
    .bind(widget_ttl.as_secs_f64())
    .fetch_one(&mut *conn)
    .await?;
    let runs = sqlx::query(
        "DELETE FROM scheduled_job_runs WHERE tick_at < now() - make_interval(days => $1)",
    )
    .bind(JOB_RUNS_KEPT_DAYS)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    counts.insert("dashboard_sessions", dashboard);
    counts.insert("operator_sessions", operator);
    counts.insert("widget_conversations", widget);
    counts.insert("job_runs", runs as i64);
    Ok(())
}

async fn rollup_usage(conn: &mut PgConnection, counts: &mut Counts) -> Result<(), JobError> {
    let since: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT max(started_at) - make_interval(secs => $1) FROM scheduled_job_runs
         WHERE job = 'rollup_usage' AND outcome = 'success'",
    )
    .bind(ROLLUP_OVERLAP_SECS)
    .fetch_one(&mut *conn)
    .await?;
    let (days, rows): (i64, i64) = sqlx::query_as(
        "SELECT days, rows_written FROM agentry_job_rollup_usage(coalesce($1, '-infinity'::timestamptz))",
    )
    .bind(since)
    .fetch_one(&mut *conn)
    .await?;
    counts.insert("days", days);
    counts.insert("rows", rows);
    Ok(())
}

pub async fn after_commit(
    state: &AppState,
    after: AfterCommit,
    counts: &mut Counts,
) -> Result<(), JobError> {
    let bus = &state.bus;
    let prefix = &state.settings.redis.prefix;
    let session_ttl = Duration::from_secs(state.settings.widget.session_ttl_secs);
    match after {
        AfterCommit::Nothing => {}
        AfterCommit::SweepWidgetSessions => {
            let swept = redis_sweep::widget_sessions(bus, prefix, session_ttl).await?;
            swept.count_into(counts, "widget_keys");
        }
        AfterCommit::SweepVisitorIps => {
            let swept = redis_sweep::widget_sessions(bus, prefix, session_ttl).await?;
            swept.count_into(counts, "widget_keys");
            let swept = redis_sweep::ip_counters(bus, prefix, session_ttl).await?;
            swept.count_into(counts, "ip_keys");
        }
        AfterCommit::DeleteObjects(keys) => {
            let mut deleted = 0;
            for key in &keys {
                // The rows are gone: an object left behind is sealed and named by nothing.
                state
                    .recordings
                    .delete_object(key)
                    .await
                    .map_err(|error| JobError::Objects(error.to_string()))?;
                deleted += 1;
            }
            counts.insert("objects", deleted);
        }
    }
    Ok(())
}

/// One part of `apply_retention`, in the order [`Self::ALL`] runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetentionStep {
    Conversations,
    WebhookDeliveries,
    OutboxEvents,
    Files,
}

impl RetentionStep {
    pub const ALL: [Self; 4] = [
        Self::Conversations,
        Self::WebhookDeliveries,
        Self::OutboxEvents,
        Self::Files,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Conversations => "conversations",
            Self::WebhookDeliveries => "webhook_deliveries",
            Self::OutboxEvents => "outbox_events",
            Self::Files => "files",
        }
    }

    /// One row: how many rows went, and the keys of objects to delete after commit.
    fn sql(self) -> &'static str {
        match self {
            Self::Conversations => {
                "SELECT conversations, recording_keys FROM agentry_retention_conversations()"
            }
            Self::WebhookDeliveries => {
                "SELECT agentry_retention_webhook_deliveries(), '{}'::text[]"
            }
            Self::OutboxEvents => "SELECT agentry_retention_outbox_events(), '{}'::text[]",
            Self::Files => "SELECT files, object_keys FROM agentry_retention_files()",
        }
    }
}
