//! Scheduled jobs: cron schedules (`[jobs]` in config/default.toml) run by
//! `tokio-cron-scheduler` in every instance, each tick doing its work once per
//! cluster.
//!
//! # Once per cluster, and the fence
//!
//! A run is named by its tick ([`schedule::tick_at`]: the schedule's fire
//! time, to the second), the same on every instance whatever its delay. It
//! opens one PostgreSQL transaction and first claims `(job, tick_at)` by
//! inserting into `scheduled_job_runs`; the job's database work follows in
//! the same transaction, and the row is marked `success` with its counts just
//! before the commit. The claim and the effects therefore commit together or
//! not at all, and the primary key is the fence:
//!
//! - a second instance firing for the same tick blocks on the key while the
//!   first runs, then sees the conflict and skips; it waits at most
//!   `jobs.claim_wait_ms` (`SET LOCAL lock_timeout`), so a holder that is
//!   paused mid-run (GC, SIGSTOP, a VM migration) costs a skip, not a hang;
//! - a paused instance that wakes late finds its tick taken and skips, and a
//!   tick older than `jobs.max_tick_lateness_secs` by the database's clock is
//!   not run at all, so a long-frozen instance never replays old ticks;
//! - one run of a job at a time: a winner that finds an earlier tick of its
//!   job still at work (a transaction-level advisory lock per job) steps
//!   aside, so two ticks never race over the same rows;
//! - a holder frozen mid-transaction is cut off by PostgreSQL after
//!   `IDLE_HOLDER_TIMEOUT` (`idle_in_transaction_session_timeout`): its claim
//!   and effects roll back, and it cannot commit late when it wakes;
//! - a winner that dies (or fails) rolls back, claim included: an instance
//!   still waiting on the key then wins and runs the tick, otherwise the next
//!   tick does the work. A failure is recorded afterwards as a `failure` row
//!   when no other instance took the tick over.
//!
//! Why not a Redis lease or an advisory lock: a lease can expire while its
//! holder is paused, and the holder's late writes then race the next holder
//! (the reason fencing tokens exist); an advisory lock is not tied to the
//! work's commit either. Here the claim is the work's own transaction, so a
//! paused holder either commits both or neither, and nothing else is needed.
//!
//! Effects outside PostgreSQL (Redis keys, objects in the object store) are
//! made only after the claim committed, and are idempotent: a winner that
//! dies between its commit and them leaves work the next tick redoes.
//!
//! Cross-tenant work goes through narrow `SECURITY DEFINER` functions
//! (migrations/20261201000015_scheduled_jobs.sql), since the application role
//! is under row-level security.
//!
//! Each run is one [`JobRan`] event: `agentry_job_runs_total{scheduled_job,outcome}`
//! (`success`, `failure`, `skipped` for a lost claim), the
//! `agentry_job_duration_seconds{scheduled_job}` histogram of runs that did work,
//! `agentry_job_last_success_timestamp_seconds{scheduled_job}`, and one log line with
//! the counts (numbers only, never a value of the rows touched).

pub mod redis_sweep;
pub mod schedule;
mod work;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, Transaction};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use tokio_util::task::TaskTracker;

use crate::configuration::JobsSettings;
use crate::http::AppState;

pub use work::RetentionStep;

/// How long shutdown waits for runs in flight; one still running after it is
/// rolled back when the process exits, and its tick is done by the next one.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);
/// A job's own statements may wait this long for a row lock (a request
/// holding it) before the run fails and the next tick tries again.
const WORK_LOCK_TIMEOUT: &str = "10s";
/// A run's transaction idle this long (its instance frozen between two
/// statements) is ended by PostgreSQL, releasing its tick for the next one.
const IDLE_HOLDER_TIMEOUT: &str = "60s";

/// The `SECURITY DEFINER` functions the jobs call, granted to the application role.
pub const DB_FUNCTIONS: [&str; 7] = [
    "agentry_job_purge_sessions(interval, interval)",
    "agentry_job_expire_api_tokens()",
    "agentry_job_rollup_usage(timestamptz)",
    "agentry_retention_conversations()",
    "agentry_retention_webhook_deliveries()",
    "agentry_retention_outbox_events()",
    "agentry_retention_files()",
];

/// The scheduled jobs; their names are the config keys and metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobName {
    PurgeSessions,
    ExpireApiTokens,
    PurgeVisitorIps,
    RollupUsage,
    ApplyRetention,
}

impl JobName {
    pub const ALL: [Self; 5] = [
        Self::PurgeSessions,
        Self::ExpireApiTokens,
        Self::PurgeVisitorIps,
        Self::RollupUsage,
        Self::ApplyRetention,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::PurgeSessions => "purge_sessions",
            Self::ExpireApiTokens => "expire_api_tokens",
            Self::PurgeVisitorIps => "purge_visitor_ips",
            Self::RollupUsage => "rollup_usage",
            Self::ApplyRetention => "apply_retention",
        }
    }

    /// Its cron schedule in `[jobs]`.
    pub fn schedule(self, settings: &JobsSettings) -> &str {
        match self {
            Self::PurgeSessions => &settings.purge_sessions,
            Self::ExpireApiTokens => &settings.expire_api_tokens,
            Self::PurgeVisitorIps => &settings.purge_visitor_ips,
            Self::RollupUsage => &settings.rollup_usage,
            Self::ApplyRetention => &settings.apply_retention,
        }
    }
}

/// What a run did, by name: numbers only.
pub type Counts = BTreeMap<&'static str, i64>;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("object store: {0}")]
    Objects(String),
}

impl JobError {
    /// What a failure row records: the kind, not the message (which may quote values).
    fn kind(&self) -> &'static str {
        match self {
            Self::Db(_) => "database",
            Self::Redis(_) => "redis",
            Self::Objects(_) => "object_store",
        }
    }
}

/// Why a run did nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Another instance committed this tick.
    Taken,
    /// Another instance holds this tick (running it, or paused) past `claim_wait_ms`.
    Held,
    /// The tick is older than `max_tick_lateness_secs`.
    Stale,
    /// An earlier tick of the job is still running.
    Busy,
}

impl Skip {
    fn label(self) -> &'static str {
        match self {
            Self::Taken => "taken",
            Self::Held => "held",
            Self::Stale => "stale",
            Self::Busy => "busy",
        }
    }
}

#[derive(Debug)]
pub enum Outcome {
    Success(Counts),
    Failure(JobError),
    Skipped(Skip),
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Success(_) => "success",
            Self::Failure(_) => "failure",
            Self::Skipped(_) => "skipped",
        }
    }
}

/// One run of one tick: its metrics and its log line, written together.
pub struct JobRan<'a> {
    pub job: JobName,
    pub tick: DateTime<Utc>,
    pub outcome: &'a Outcome,
    pub started: Instant,
}

impl JobRan<'_> {
    pub fn emit(self) {
        let job = self.job.label();
        let outcome = self.outcome.label();
        metrics::counter!("agentry_job_runs_total", "scheduled_job" => job, "outcome" => outcome)
            .increment(1);
        let elapsed = self.started.elapsed();
        match self.outcome {
            Outcome::Success(counts) => {
                metrics::histogram!("agentry_job_duration_seconds", "scheduled_job" => job)
                    .record(elapsed.as_secs_f64());
                metrics::gauge!("agentry_job_last_success_timestamp_seconds", "scheduled_job" => job)
                    .set(Utc::now().timestamp_millis() as f64 / 1000.0);
                tracing::info!(
                    job,
                    tick = %self.tick,
                    outcome,
                    duration_ms = elapsed.as_millis() as u64,
                    counts = %counts_json(counts),
                    "scheduled job run"
                );
            }
            Outcome::Failure(error) => {
                metrics::histogram!("agentry_job_duration_seconds", "scheduled_job" => job)
                    .record(elapsed.as_secs_f64());
                tracing::warn!(job, tick = %self.tick, outcome, %error, "scheduled job run failed");
            }
            Outcome::Skipped(why) => {
                tracing::debug!(job, tick = %self.tick, outcome, reason = why.label(), "scheduled job tick skipped");
            }
        }
    }
}

fn counts_json(counts: &Counts) -> serde_json::Value {
    serde_json::to_value(counts).unwrap_or_default()
}

/// Runs ticks of jobs for one instance.
#[derive(Clone)]
pub struct Jobs {
    state: AppState,
    instance: Arc<str>,
}

impl Jobs {
    pub fn new(state: AppState) -> Self {
        Self {
            state,
            instance: format!("instance-{}", uuid::Uuid::new_v4().simple()).into(),
        }
    }

    /// Runs `job` for `tick` (the scheduler calls this on every instance; at
    /// most one of them does the work) and emits the run's event.
    pub async fn run(&self, job: JobName, tick: DateTime<Utc>) -> Outcome {
        let started = Instant::now();
        let outcome = self.attempt(job, tick).await;
        JobRan {
            job,
            tick,
            outcome: &outcome,
            started,
        }
        .emit();
        outcome
    }

    async fn attempt(&self, job: JobName, tick: DateTime<Utc>) -> Outcome {
        let mut tx = match self.state.store.pool().begin().await {
            Ok(tx) => tx,
            Err(error) => return Outcome::Failure(error.into()),
        };
        match self.claim(&mut tx, job, tick).await {
            Ok(None) => {}
            Ok(Some(skip)) => return Outcome::Skipped(skip),
            Err(error) => return Outcome::Failure(error.into()),
        }
        let (mut counts, after) = match self.work_and_commit(tx, job, tick).await {
            Ok(done) => done,
            Err(error) => {
                self.record_failure(job, tick, &error, &Counts::new()).await;
                return Outcome::Failure(error);
            }
        };
        if after.is_nothing() {
            return Outcome::Success(counts);
        }
        match work::after_commit(&self.state, after, &mut counts).await {
            Ok(()) => {
                if let Err(error) = self.record(job, tick, "success", &counts).await {
                    tracing::debug!(job = job.label(), %error, "scheduled job counts not recorded");
                }
                Outcome::Success(counts)
            }
            Err(error) => {
                self.record_failure(job, tick, &error, &counts).await;
                Outcome::Failure(error)
            }
        }
    }

    /// The job's database work after the claim, and the commit of both; on
    /// failure everything is rolled back (the claim too) before returning.
    async fn work_and_commit(
        &self,
        mut tx: Transaction<'static, Postgres>,
        job: JobName,
        tick: DateTime<Utc>,
    ) -> Result<(Counts, work::AfterCommit), JobError> {
        let (counts, after) = match work::in_transaction(&self.state, job, &mut tx).await {
            Ok(done) => done,
            Err(error) => {
                let _ = tx.rollback().await;
                return Err(error);
            }
        };
        if let Err(error) = mark(&mut tx, job, tick, &self.instance, "success", &counts).await {
            let _ = tx.rollback().await;
            return Err(error.into());
        }
        tx.commit().await?;
        Ok((counts, after))
    }

    /// Claims the tick: `None` when this run won it (the row is in `tx`), or why it is skipped.
    async fn claim(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        job: JobName,
        tick: DateTime<Utc>,
    ) -> Result<Option<Skip>, sqlx::Error> {
        let settings = &self.state.settings.jobs;
        set_lock_timeout(tx, &format!("{}ms", settings.claim_wait().as_millis())).await?;
        let claimed: Result<(bool, bool), sqlx::Error> = sqlx::query_as(
            "WITH fresh AS (SELECT $2::timestamptz >= now() - make_interval(secs => $4) AS ok),
             claimed AS (
                 INSERT INTO scheduled_job_runs (job, tick_at, instance_id)
                 SELECT $1, $2, $3 FROM fresh WHERE fresh.ok
                 ON CONFLICT (job, tick_at) DO NOTHING
                 RETURNING 1)
             SELECT (SELECT ok FROM fresh), EXISTS (SELECT 1 FROM claimed)",
        )
        .bind(job.label())
        .bind(tick)
        .bind(&*self.instance)
        .bind(settings.max_tick_lateness().as_secs_f64())
        .fetch_one(&mut **tx)
        .await;
        match claimed {
            Ok((false, _)) => Ok(Some(Skip::Stale)),
            Ok((true, false)) => Ok(Some(Skip::Taken)),
            Ok((true, true)) => {
                // One run of a job at a time in the cluster: an earlier tick
                // still at work (slow, or its instance paused) makes this one
                // step aside rather than race it over the same rows.
                let alone: bool = sqlx::query_scalar(
                    "SELECT pg_try_advisory_xact_lock(hashtextextended('agentry.job:' || $1, 0))",
                )
                .bind(job.label())
                .fetch_one(&mut **tx)
                .await?;
                if !alone {
                    return Ok(Some(Skip::Busy));
                }
                // A holder frozen mid-run is cut off by the server, claim and
                // effects rolled back: it cannot commit late when it wakes.
                sqlx::query("SELECT set_config('idle_in_transaction_session_timeout', $1, true)")
                    .bind(IDLE_HOLDER_TIMEOUT)
                    .execute(&mut **tx)
                    .await?;
                set_lock_timeout(tx, WORK_LOCK_TIMEOUT).await?;
                Ok(None)
            }
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("55P03") => {
                Ok(Some(Skip::Held))
            }
            Err(error) => Err(error),
        }
    }

    /// Writes the outcome of this instance's run of a tick outside the run's transaction.
    async fn record(
        &self,
        job: JobName,
        tick: DateTime<Utc>,
        outcome: &str,
        counts: &Counts,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.state.store.pool().begin().await?;
        let wait = format!("{}ms", self.state.settings.jobs.claim_wait().as_millis());
        set_lock_timeout(&mut tx, &wait).await?;
        mark(&mut tx, job, tick, &self.instance, outcome, counts).await?;
        tx.commit().await
    }

    async fn record_failure(
        &self,
        job: JobName,
        tick: DateTime<Utc>,
        error: &JobError,
        counts: &Counts,
    ) {
        let mut counts = counts.clone();
        counts.insert(error.kind(), 1);
        if let Err(error) = self.record(job, tick, "failure", &counts).await {
            tracing::debug!(job = job.label(), %error, "scheduled job failure not recorded");
        }
    }
}

/// `SET LOCAL lock_timeout`, as a function call so it takes a parameter.
async fn set_lock_timeout(conn: &mut PgConnection, timeout: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('lock_timeout', $1, true)")
        .bind(timeout)
        .execute(conn)
        .await?;
    Ok(())
}

/// Inserts or updates this instance's row of a tick; a row another instance
/// committed (it took the tick over) is left alone.
async fn mark(
    conn: &mut PgConnection,
    job: JobName,
    tick: DateTime<Utc>,
    instance: &str,
    outcome: &str,
    counts: &Counts,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO scheduled_job_runs AS r (job, tick_at, instance_id, outcome, finished_at, counts)
         VALUES ($1, $2, $3, $4, clock_timestamp(), $5)
         ON CONFLICT (job, tick_at) DO UPDATE
         SET outcome = EXCLUDED.outcome, finished_at = EXCLUDED.finished_at, counts = EXCLUDED.counts
         WHERE r.instance_id = EXCLUDED.instance_id",
    )
    .bind(job.label())
    .bind(tick)
    .bind(instance)
    .bind(outcome)
    .bind(counts_json(counts))
    .execute(conn)
    .await?;
    Ok(())
}

/// Starts the scheduler with every job of `[jobs]`; the returned task stops
/// it when `stop` turns true and waits for the runs in flight.
pub async fn start(
    state: AppState,
    mut stop: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, JobSchedulerError> {
    let mut scheduler = JobScheduler::new().await?;
    let jobs = Jobs::new(state.clone());
    let in_flight = TaskTracker::new();
    for job in JobName::ALL {
        let text = job.schedule(&state.settings.jobs).to_owned();
        // Checked when the settings loaded.
        let cron = schedule::parse(&text).map_err(|_| JobSchedulerError::ParseSchedule)?;
        if let Some(interval) = schedule::interval_after(&cron, Utc::now()) {
            metrics::gauge!("agentry_job_interval_seconds", "scheduled_job" => job.label())
                .set(interval.num_seconds() as f64);
        }
        let (jobs, in_flight) = (jobs.clone(), in_flight.clone());
        scheduler
            .add(Job::new_async(text.as_str(), move |_id, _scheduler| {
                let (jobs, in_flight, cron) = (jobs.clone(), in_flight.clone(), cron.clone());
                Box::pin(async move {
                    let Some(tick) = schedule::tick_at(&cron, Utc::now()) else {
                        return;
                    };
                    in_flight.track_future(jobs.run(job, tick)).await;
                })
            })?)
            .await?;
    }
    scheduler.start().await?;
    tracing::info!(instance = %jobs.instance, "scheduled jobs started");
    Ok(tokio::spawn(async move {
        let _ = stop.wait_for(|stop| *stop).await;
        if let Err(error) = scheduler.shutdown().await {
            tracing::warn!(%error, "job scheduler did not shut down cleanly");
        }
        in_flight.close();
        if tokio::time::timeout(SHUTDOWN_WAIT, in_flight.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown: scheduled job runs still in flight after the wait");
        }
    }))
}
