//! Scheduled jobs: once per cluster per tick, whatever the instances do, and
//! each job's effect on real PostgreSQL and Redis.

use std::time::{Duration, Instant};

use agentry::configuration::Settings;
use agentry::jobs::{JobName, Jobs, Outcome, Skip};
use chrono::{DateTime, SubsecRound, Utc};
use fred::prelude::{Expiration, KeysInterface};
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::helpers::{
    assert_error, body, create_token, set_tenant, spawn_app_on, spawn_app_with, widget_session,
    TestApp, WIDGET_ORIGIN,
};

const EVERY_SECOND: &str = "* * * * * *";
/// Never within a test: the first second of the year.
const YEARLY: &str = "0 0 0 1 1 *";

/// Jobs on, `only` every second and the others out of the way.
/// Under `cargo test` every test shares one process and so one metrics
/// registry: tests that run schedulers take turns, so that the counts one
/// of them reads are its own instances'.
static SCHEDULERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn jobs_every_second(settings: &mut Settings, only: &[JobName]) {
    settings.jobs.enabled = true;
    for job in JobName::ALL {
        let schedule = if only.contains(&job) {
            EVERY_SECOND
        } else {
            YEARLY
        };
        let slot = match job {
            JobName::PurgeSessions => &mut settings.jobs.purge_sessions,
            JobName::ExpireApiTokens => &mut settings.jobs.expire_api_tokens,
            JobName::PurgeVisitorIps => &mut settings.jobs.purge_visitor_ips,
            JobName::RollupUsage => &mut settings.jobs.rollup_usage,
            JobName::ApplyRetention => &mut settings.jobs.apply_retention,
        };
        *slot = schedule.to_owned();
    }
}

/// A new agent of the tenant whose dashboard token is `token`.
async fn agent_id(app: &TestApp, token: &str, name: &str) -> Uuid {
    app.create_agent(token, name).await["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Two instances on one database and one Redis prefix, as a cluster.
async fn two_instances(configure: impl Fn(&mut Settings)) -> (TestApp, TestApp) {
    let first = spawn_app_with(&configure).await;
    let prefix = first.settings.redis.prefix.clone();
    let second = spawn_app_on(
        first.database_name(),
        |settings| {
            configure(settings);
            settings.redis.prefix = prefix;
        },
        false,
    )
    .await;
    (first, second)
}

async fn db_now(conn: &mut PgConnection) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT now()")
        .fetch_one(conn)
        .await
        .unwrap()
}

/// Waits until a run of `job` that began after `after` has finished (`done`
/// is a count its run writes last); returns the counts of every run that
/// finished after `after`, summed: an earlier run still working when the
/// test's data arrived may have done part of it.
async fn run_after(
    owner: &mut PgConnection,
    job: JobName,
    after: DateTime<Utc>,
    done: &str,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let finished: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM scheduled_job_runs
             WHERE job = $1 AND started_at > $2 AND outcome = 'success' AND counts ? $3)",
        )
        .bind(job.label())
        .bind(after)
        .bind(done)
        .fetch_one(&mut *owner)
        .await
        .unwrap();
        if finished {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no {} run after {after}",
            job.label()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sums: Vec<(String, i64)> = sqlx::query_as(
        "SELECT c.key, sum(c.value::bigint)::bigint
         FROM scheduled_job_runs r, jsonb_each_text(r.counts) c
         WHERE r.job = $1 AND r.outcome = 'success' AND r.finished_at > $2
         GROUP BY c.key",
    )
    .bind(job.label())
    .bind(after)
    .fetch_all(&mut *owner)
    .await
    .unwrap();
    Value::Object(
        sums.into_iter()
            .map(|(key, sum)| (key, json!(sum)))
            .collect(),
    )
}

/// The value of a counter with these labels in a metrics scrape (0 when absent).
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter(|line| {
            labels
                .iter()
                .all(|(key, value)| line.contains(&format!("{key}=\"{value}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn two_instances_run_each_job_exactly_once_per_tick() {
    let _turn = SCHEDULERS.lock().await;
    // Counts of earlier tests in this process, taken off below.
    let before = agentry::telemetry::metrics_handle().render();
    let (first, second) = two_instances(|s| jobs_every_second(s, &JobName::ALL)).await;
    let mut owner = first.owner_connection().await;
    tokio::time::sleep(Duration::from_secs(6)).await;

    let rows: Vec<(String, DateTime<Utc>, String, String)> = sqlx::query_as(
        "SELECT job, tick_at, instance_id, outcome FROM scheduled_job_runs ORDER BY job, tick_at",
    )
    .fetch_all(&mut owner)
    .await
    .unwrap();
    let metrics = first.metrics_text().await;
    for job in JobName::ALL {
        let ticks: Vec<&(String, DateTime<Utc>, String, String)> =
            rows.iter().filter(|row| row.0 == job.label()).collect();
        assert!(
            ticks.len() >= 3,
            "{}: only {} ticks ran",
            job.label(),
            ticks.len()
        );
        assert!(
            ticks.iter().all(|row| row.3 == "success"),
            "{}: {ticks:?}",
            job.label()
        );
        // Ticks are whole seconds, one row each.
        assert!(ticks.iter().all(|row| row.1 == row.1.trunc_subsecs(0)));
        let mut distinct: Vec<DateTime<Utc>> = ticks.iter().map(|row| row.1).collect();
        distinct.dedup();
        assert_eq!(distinct.len(), ticks.len());
        // The process's metrics are both instances' (one registry): each
        // success is a tick's work, so the successes are exactly the rows —
        // none ran twice — and every other firing lost its claim.
        let label = [("scheduled_job", job.label())];
        let runs = |outcome: &str| {
            let labels = [label[0], ("outcome", outcome)];
            metric(&metrics, "agentry_job_runs_total", &labels)
                - metric(&before, "agentry_job_runs_total", &labels)
        };
        let (success, failure, skipped) = (runs("success"), runs("failure"), runs("skipped"));
        let committed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM scheduled_job_runs WHERE job = $1 AND outcome = 'success'",
        )
        .bind(job.label())
        .fetch_one(&mut owner)
        .await
        .unwrap();
        assert_eq!(failure, 0.0, "{}", job.label());
        // Scraped a moment after the rows were read: a tick may have landed between.
        assert!(
            (success - ticks.len() as f64).abs() <= 2.0 && success <= committed as f64,
            "{}: {success} successes, {} rows, {committed} committed",
            job.label(),
            ticks.len()
        );
        assert!(
            skipped >= 1.0,
            "{}: the second instance never lost a claim",
            job.label()
        );
        assert!(
            metric(&metrics, "agentry_job_duration_seconds_count", &label)
                - metric(&before, "agentry_job_duration_seconds_count", &label)
                >= success,
            "{}: durations",
            job.label()
        );
        assert!(
            metric(
                &metrics,
                "agentry_job_last_success_timestamp_seconds",
                &label
            ) > (Utc::now().timestamp() - 60) as f64
        );
    }
    drop(second);
}

#[tokio::test]
async fn a_stalled_claim_holder_does_not_lead_to_a_second_run_of_its_tick() {
    let _turn = SCHEDULERS.lock().await;
    let (first, _second) = two_instances(|s| {
        jobs_every_second(s, &[JobName::RollupUsage]);
        s.jobs.claim_wait_ms = 300;
    })
    .await;
    let mut owner = first.owner_connection().await;
    // A "paused" holder: claims two ticks ahead and holds the row lock past them.
    let now = db_now(&mut owner).await.trunc_subsecs(0);
    let kept = now + chrono::Duration::seconds(3);
    let abandoned = now + chrono::Duration::seconds(4);
    let mut holder = first.owner_connection().await;
    let mut stalled = holder.begin().await.unwrap();
    for tick in [kept, abandoned] {
        sqlx::query(
            "INSERT INTO scheduled_job_runs (job, tick_at, instance_id, outcome)
             VALUES ('rollup_usage', $1, 'stalled-holder', 'success')",
        )
        .bind(tick)
        .execute(&mut *stalled)
        .await
        .unwrap();
    }
    // Both instances fire at both ticks, wait 300 ms on the key and skip.
    tokio::time::sleep(Duration::from_millis(
        (abandoned - Utc::now()).num_milliseconds().max(0) as u64 + 2500,
    ))
    .await;
    // The holder wakes and commits one tick, gives the other up.
    sqlx::query("DELETE FROM scheduled_job_runs WHERE tick_at = $1")
        .bind(abandoned)
        .execute(&mut *stalled)
        .await
        .unwrap();
    stalled.commit().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let rows: Vec<(DateTime<Utc>, String)> = sqlx::query_as(
        "SELECT tick_at, instance_id FROM scheduled_job_runs WHERE job = 'rollup_usage' ORDER BY tick_at",
    )
    .fetch_all(&mut owner)
    .await
    .unwrap();
    let at = |tick| rows.iter().filter(|row| row.0 == tick).count();
    assert_eq!(at(kept), 1, "{rows:?}");
    assert_eq!(
        rows.iter().find(|row| row.0 == kept).unwrap().1,
        "stalled-holder"
    );
    assert_eq!(
        at(abandoned),
        0,
        "an abandoned tick is left to the next: {rows:?}"
    );
    // Neighbouring ticks ran normally, by the instances.
    assert!(rows
        .iter()
        .any(|row| row.0 > abandoned && row.1 != "stalled-holder"));
    assert!(rows
        .iter()
        .any(|row| row.0 < kept && row.0 >= now - chrono::Duration::seconds(1)));

    // An instance waking from a pause: a tick already done, or too old to run.
    let late = Jobs::new(first.state.clone());
    assert!(matches!(
        late.run(JobName::RollupUsage, kept).await,
        Outcome::Skipped(Skip::Taken)
    ));
    let long_ago = now - chrono::Duration::minutes(30);
    assert!(matches!(
        late.run(JobName::RollupUsage, long_ago).await,
        Outcome::Skipped(Skip::Stale)
    ));
    let none: i64 =
        sqlx::query_scalar("SELECT count(*) FROM scheduled_job_runs WHERE tick_at = $1")
            .bind(long_ago)
            .fetch_one(&mut owner)
            .await
            .unwrap();
    assert_eq!(none, 0);

    // An earlier run of the job still at work (its lock held here, in a
    // transaction as a run holds it: a session's lock and unlock could land on
    // two server connections behind a transaction-pooling PgBouncer): every
    // tick meanwhile steps aside and leaves no row.
    let mut busy = first.owner_connection().await;
    let mut busy = busy.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('agentry.job:rollup_usage', 0))")
        .execute(&mut *busy)
        .await
        .unwrap();
    let held_from = db_now(&mut owner).await;
    assert!(matches!(
        late.run(JobName::RollupUsage, now + chrono::Duration::hours(1))
            .await,
        Outcome::Skipped(Skip::Busy)
    ));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let held_until = db_now(&mut owner).await;
    busy.rollback().await.unwrap();
    let during: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM scheduled_job_runs WHERE job = 'rollup_usage' AND started_at BETWEEN $1 AND $2",
    )
    .bind(held_from)
    .bind(held_until)
    .fetch_one(&mut owner)
    .await
    .unwrap();
    assert_eq!(during, 0, "a tick ran beside an earlier run of its job");
    run_after(&mut owner, JobName::RollupUsage, held_until, "rows").await;
}

#[tokio::test]
async fn purge_sessions_removes_ended_sessions_and_widget_leftovers_and_keeps_live_ones() {
    let _turn = SCHEDULERS.lock().await;
    let (first, _second) = two_instances(|s| jobs_every_second(s, &[JobName::PurgeSessions])).await;
    let tenant = first.create_tenant("Sessions Co").await;
    let operator = first.operator_token().await;
    let agent = first.create_agent(&tenant.token, "Sessions").await;
    let agent_id: Uuid = agent["id"].as_str().unwrap().parse().unwrap();
    let widget = first
        .create_widget(&tenant.token, agent["id"].as_str().unwrap())
        .await;
    let live_visitor = widget_session(
        &first,
        widget["public_key"].as_str().unwrap(),
        WIDGET_ORIGIN,
    )
    .await;
    assert!(!live_visitor.is_empty());

    let mut owner = first.owner_connection().await;
    let user: Uuid = sqlx::query_scalar("SELECT id FROM tenant_users WHERE tenant_id = $1")
        .bind(tenant.id.as_uuid())
        .fetch_one(&mut owner)
        .await
        .unwrap();
    let insert_session = |expires: &'static str, revoked: Option<&'static str>| {
        let id = Uuid::new_v4();
        let sql = format!(
            "INSERT INTO tenant_user_sessions (id, tenant_id, user_id, expires_at, revoked_at)
             VALUES ($1, $2, $3, now() + interval '{expires}', {})",
            revoked.map_or("NULL".to_owned(), |ago| format!("now() - interval '{ago}'"))
        );
        (id, sql)
    };
    let mut ended = Vec::new();
    let mut kept = Vec::new();
    for (expires, revoked, goes) in [
        ("-2 hours", None, true),
        ("1 hour", Some("2 hours"), true),
        ("1 hour", Some("1 minute"), false),
        ("-1 minute", None, false),
        ("1 hour", None, false),
    ] {
        let (id, sql) = insert_session(expires, revoked);
        sqlx::query(&sql)
            .bind(id)
            .bind(tenant.id.as_uuid())
            .bind(user)
            .execute(&mut owner)
            .await
            .unwrap();
        if goes {
            ended.push(id)
        } else {
            kept.push(id)
        }
    }
    let old_operator_session = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO operator_sessions (id, operator_id, expires_at)
         SELECT $1, id, now() - interval '1 day' FROM operators LIMIT 1",
    )
    .bind(old_operator_session)
    .execute(&mut owner)
    .await
    .unwrap();
    // Widget conversations: one whose session must be over, one just started.
    let (old_conversation, new_conversation) = (Uuid::now_v7(), Uuid::now_v7());
    for (id, started) in [
        (old_conversation, "now() - interval '3 hours'"),
        (new_conversation, "now()"),
    ] {
        sqlx::query(&format!(
            "INSERT INTO conversations (id, tenant_id, agent_id, widget_id, channel, widget_session_id, started_at)
             VALUES ($1, $2, $3, $4, 'widget', $5, {started})"
        ))
        .bind(id)
        .bind(tenant.id.as_uuid())
        .bind(agent_id)
        .bind(widget["id"].as_str().unwrap().parse::<Uuid>().unwrap())
        .bind(Uuid::new_v4())
        .execute(&mut owner)
        .await
        .unwrap();
    }
    // Redis leftovers: a session key without a TTL, one past its expiry.
    let redis = first.state.bus.pool();
    let prefix = &first.settings.redis.prefix;
    let session_json = |expires_at: DateTime<Utc>| {
        json!({
            "tenant": tenant.id, "agent": agent_id, "widget": Uuid::now_v7(),
            "conversation": Uuid::now_v7(), "visitor_ip": "198.51.100.23",
            "expires_at": expires_at,
        })
        .to_string()
    };
    let no_ttl = format!("{prefix}:{{ws:{}}}:session", Uuid::new_v4());
    let outlived = format!("{prefix}:{{ws:{}}}:session", Uuid::new_v4());
    let _: () = redis
        .set(
            &no_ttl,
            session_json(Utc::now() + chrono::Duration::minutes(10)),
            None,
            None,
            false,
        )
        .await
        .unwrap();
    let _: () = redis
        .set(
            &outlived,
            session_json(Utc::now() - chrono::Duration::minutes(1)),
            Some(Expiration::EX(3600)),
            None,
            false,
        )
        .await
        .unwrap();

    let after = db_now(&mut owner).await;
    let counts = run_after(
        &mut owner,
        JobName::PurgeSessions,
        after,
        "widget_keys_scanned",
    )
    .await;
    assert!(
        counts["dashboard_sessions"].as_i64().unwrap() >= 2,
        "{counts}"
    );

    let remaining: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM tenant_user_sessions")
        .fetch_all(&mut owner)
        .await
        .unwrap();
    for id in &ended {
        assert!(!remaining.contains(id), "ended session {id} kept");
    }
    for id in &kept {
        assert!(
            remaining.contains(id),
            "session {id} within its grace or live was purged"
        );
    }
    let operator_left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM operator_sessions WHERE id = $1")
            .bind(old_operator_session)
            .fetch_one(&mut owner)
            .await
            .unwrap();
    assert_eq!(operator_left, 0);
    // The signed-in owner and operator still work.
    assert_eq!(
        first.get("/api/v1/agents", &tenant.token).await.status(),
        200
    );
    assert_eq!(
        first.get("/api/v1/admin/tenants", &operator).await.status(),
        200
    );

    let conversations: Vec<(Uuid, Option<Uuid>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT id, widget_session_id, ended_at FROM conversations WHERE id = ANY($1)",
    )
    .bind(vec![old_conversation, new_conversation])
    .fetch_all(&mut owner)
    .await
    .unwrap();
    let old = conversations
        .iter()
        .find(|c| c.0 == old_conversation)
        .unwrap();
    assert!(old.1.is_none() && old.2.is_some(), "{old:?}");
    let new = conversations
        .iter()
        .find(|c| c.0 == new_conversation)
        .unwrap();
    assert!(new.1.is_some() && new.2.is_none(), "{new:?}");

    // One key per EXISTS: on a cluster a command's keys must share a slot.
    for leftover in [&no_ttl, &outlived] {
        let exists: u32 = redis.exists(leftover).await.unwrap();
        assert_eq!(
            exists, 0,
            "widget session leftover {leftover} is still in Redis"
        );
    }
    // The live visitor's session is untouched (its expiry is rounded up to
    // the second, so its TTL may exceed the lifetime by under a second).
    let live = live_session_keys(&first).await;
    assert_eq!(live.len(), 1);
    let ttl: i64 = redis.pttl(&live[0]).await.unwrap();
    assert!(ttl > 0 && ttl <= 1801 * 1000, "{ttl}");
}

/// This deployment's widget session keys.
async fn live_session_keys(app: &TestApp) -> Vec<String> {
    use futures_util::TryStreamExt;
    let pattern = format!("{}:{{ws:*}}:session", app.settings.redis.prefix);
    let keys: Vec<fred::types::Key> =
        agentry::jobs::redis_sweep::scan(app.state.bus.pool().next(), pattern)
            .try_collect()
            .await
            .unwrap();
    keys.into_iter()
        .filter_map(|key| key.into_string())
        .collect()
}

#[tokio::test]
async fn expire_api_tokens_erases_the_hash_of_expired_tokens_and_lists_them_as_expired() {
    let _turn = SCHEDULERS.lock().await;
    let (first, _second) =
        two_instances(|s| jobs_every_second(s, &[JobName::ExpireApiTokens])).await;
    let tenant = first.create_tenant("Tokens Co").await;
    let (expired_id, expired) = create_token(&first, &tenant.token, &["leads:read"]).await;
    let (live_id, live) = create_token(&first, &tenant.token, &["leads:read"]).await;
    let mut owner = first.owner_connection().await;
    sqlx::query("UPDATE api_tokens SET expires_at = now() - interval '1 minute' WHERE id = $1")
        .bind(expired_id.parse::<Uuid>().unwrap())
        .execute(&mut owner)
        .await
        .unwrap();
    // Refused on use already, before the job.
    assert_eq!(first.get("/api/v1/leads", &expired).await.status(), 401);

    let after = db_now(&mut owner).await;
    let counts = run_after(&mut owner, JobName::ExpireApiTokens, after, "hashes_erased").await;
    assert!(counts["hashes_erased"].as_i64().unwrap() >= 1, "{counts}");
    let hashes: Vec<(Uuid, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT id, token_hash FROM api_tokens ORDER BY id")
            .fetch_all(&mut owner)
            .await
            .unwrap();
    let hash_of = |id: &str| {
        hashes
            .iter()
            .find(|row| row.0.to_string() == id)
            .unwrap()
            .1
            .clone()
    };
    assert!(
        hash_of(&expired_id).is_none(),
        "the expired token's hash is still stored"
    );
    assert!(hash_of(&live_id).is_some());
    assert_eq!(first.get("/api/v1/leads", &expired).await.status(), 401);
    assert_eq!(first.get("/api/v1/leads", &live).await.status(), 200);
    let listed = body(first.get("/api/v1/api-tokens", &tenant.token).await).await;
    let tokens = listed["api_tokens"].as_array().expect("tokens listed");
    let status = |id: &str| {
        tokens
            .iter()
            .find(|t| t["id"] == id)
            .map(|t| t["status"].clone())
            .unwrap()
    };
    assert_eq!(status(&expired_id), "expired");
    assert_eq!(status(&live_id), "active");
}

#[tokio::test]
async fn purge_visitor_ips_removes_ip_keys_without_a_ttl_and_bounds_long_ones() {
    let _turn = SCHEDULERS.lock().await;
    let (first, _second) = two_instances(|s| {
        jobs_every_second(s, &[JobName::PurgeVisitorIps]);
        s.widget.session_ttl_secs = 600;
    })
    .await;
    let tenant = first.create_tenant("Visitors Co").await;
    let agent = first.create_agent(&tenant.token, "Visitors").await;
    let widget = first
        .create_widget(&tenant.token, agent["id"].as_str().unwrap())
        .await;
    widget_session(
        &first,
        widget["public_key"].as_str().unwrap(),
        WIDGET_ORIGIN,
    )
    .await;
    let live = live_session_keys(&first).await;
    assert_eq!(live.len(), 1);

    let redis = first.state.bus.pool();
    let prefix = &first.settings.redis.prefix;
    let counter_without_ttl = format!("{prefix}:{{rl:auth:203.0.113.9}}:gcra");
    let long_lockout = format!("{prefix}:{{lockout:203.0.113.9}}:locked");
    let fresh_counter = format!("{prefix}:{{rl:widget_sessions:203.0.113.10:pk}}:gcra");
    let other_deployment = format!(
        "other-{}:{{rl:auth:203.0.113.9}}:gcra",
        Uuid::new_v4().simple()
    );
    let _: () = redis
        .set(&counter_without_ttl, "1", None, None, false)
        .await
        .unwrap();
    let _: () = redis
        .set(
            &long_lockout,
            "1",
            Some(Expiration::EX(86_400)),
            None,
            false,
        )
        .await
        .unwrap();
    let _: () = redis
        .set(&fresh_counter, "1", Some(Expiration::EX(30)), None, false)
        .await
        .unwrap();
    let _: () = redis
        .set(&other_deployment, "1", None, None, false)
        .await
        .unwrap();

    let mut owner = first.owner_connection().await;
    let after = db_now(&mut owner).await;
    let counts = run_after(
        &mut owner,
        JobName::PurgeVisitorIps,
        after,
        "ip_keys_scanned",
    )
    .await;
    assert!(counts["ip_keys_deleted"].as_i64().unwrap() >= 1, "{counts}");

    let gone: u32 = redis.exists(&counter_without_ttl).await.unwrap();
    assert_eq!(gone, 0, "a counter keyed by IP without a TTL survived");
    let lockout_ttl: i64 = redis.pttl(&long_lockout).await.unwrap();
    assert!(lockout_ttl > 0 && lockout_ttl <= 600_000, "{lockout_ttl}");
    let fresh_ttl: i64 = redis.pttl(&fresh_counter).await.unwrap();
    assert!(fresh_ttl > 0 && fresh_ttl <= 30_000, "{fresh_ttl}");
    let session_ttl: i64 = redis.pttl(&live[0]).await.unwrap();
    assert!(
        session_ttl > 0 && session_ttl <= 601_000,
        "the live session's key: {session_ttl}"
    );
    // Another deployment's keys are not this one's to touch.
    let other_ttl: i64 = redis.pttl(&other_deployment).await.unwrap();
    assert_eq!(other_ttl, -1);
    let _: i64 = redis.del(&other_deployment).await.unwrap();
}

/// Usage events of a tenant, `days_ago` days back, straight into the audit table.
async fn insert_usage(
    conn: &mut PgConnection,
    tenant: Uuid,
    agent: Uuid,
    days_ago: i32,
    count: i32,
    model: &str,
) {
    sqlx::query(
        "INSERT INTO agent_usage_events (id, tenant_id, agent_id, kind, provider, model, prompt_tokens, completion_tokens, created_at)
         SELECT gen_random_uuid(), $1, $2, CASE WHEN n % 3 = 0 THEN 'embedding' ELSE 'chat' END,
                'offline', $3, 10 + n % 7, n % 5, date_trunc('day', now()) - make_interval(days => $4) + make_interval(secs => n % 80000)
         FROM generate_series(1, $5) AS n",
    )
    .bind(tenant)
    .bind(agent)
    .bind(model)
    .bind(days_ago)
    .bind(count)
    .execute(conn)
    .await
    .unwrap();
}

/// Per (tenant, day): events, prompt and completion tokens, from the events and from the rollup.
async fn usage_both_ways(
    conn: &mut PgConnection,
) -> (
    Vec<(Uuid, String, i64, i64, i64)>,
    Vec<(Uuid, String, i64, i64, i64)>,
) {
    let events = sqlx::query_as(
        "SELECT tenant_id, ((created_at AT TIME ZONE 'UTC')::date)::text AS day, count(*),
                sum(prompt_tokens)::bigint, sum(completion_tokens)::bigint
         FROM agent_usage_events GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let rolled = sqlx::query_as(
        "SELECT tenant_id, day::text, sum(events)::bigint, sum(prompt_tokens)::bigint, sum(completion_tokens)::bigint
         FROM usage_daily GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    (events, rolled)
}

#[tokio::test]
async fn rollup_usage_totals_equal_the_events_and_a_second_run_changes_nothing() {
    let _turn = SCHEDULERS.lock().await;
    let (first, _second) = two_instances(|s| jobs_every_second(s, &[JobName::RollupUsage])).await;
    let a = first.create_tenant("Usage A").await;
    let b = first.create_tenant("Usage B").await;
    let agent_a = agent_id(&first, &a.token, "A").await;
    let agent_b = agent_id(&first, &b.token, "B").await;
    let mut owner = first.owner_connection().await;
    insert_usage(&mut owner, a.id.as_uuid(), agent_a, 0, 40, "model-1").await;
    insert_usage(&mut owner, a.id.as_uuid(), agent_a, 0, 5, "model-2").await;
    insert_usage(&mut owner, a.id.as_uuid(), agent_a, 1, 30, "model-1").await;
    insert_usage(&mut owner, b.id.as_uuid(), agent_b, 0, 7, "model-1").await;

    let after = db_now(&mut owner).await;
    run_after(&mut owner, JobName::RollupUsage, after, "rows").await;
    let (events, rolled) = usage_both_ways(&mut owner).await;
    assert_eq!(events.len(), 3);
    assert_eq!(events, rolled, "daily totals differ from the events");

    // More events today: the next run brings today's total up to date, and
    // the run after that (nothing new) leaves every total as it was.
    insert_usage(&mut owner, a.id.as_uuid(), agent_a, 0, 3, "model-1").await;
    let after = db_now(&mut owner).await;
    run_after(&mut owner, JobName::RollupUsage, after, "rows").await;
    let (events, rolled) = usage_both_ways(&mut owner).await;
    assert_eq!(events, rolled);
    let after = db_now(&mut owner).await;
    run_after(&mut owner, JobName::RollupUsage, after, "rows").await;
    let (_, rolled_again) = usage_both_ways(&mut owner).await;
    assert_eq!(rolled, rolled_again, "a second run changed the totals");

    // The dashboard API: tenant A's days and sum, nothing of B's.
    let today = Utc::now().date_naive();
    let yesterday = today.pred_opt().unwrap();
    let report = body(
        first
            .get(
                &format!("/api/v1/usage?from={yesterday}&to={today}"),
                &a.token,
            )
            .await,
    )
    .await;
    let days = report["days"].as_array().unwrap();
    assert_eq!(days.len(), 2, "{report}");
    let mine: Vec<&(Uuid, String, i64, i64, i64)> = events
        .iter()
        .filter(|row| row.0 == a.id.as_uuid())
        .collect();
    let events_sum: i64 = mine.iter().map(|row| row.2).sum();
    let prompt_sum: i64 = mine.iter().map(|row| row.3).sum();
    assert_eq!(report["total"]["events"], events_sum);
    assert_eq!(report["total"]["prompt_tokens"], prompt_sum);
    assert_eq!(days[0]["day"], yesterday.to_string());
    assert_eq!(days[0]["events"], 30);
    assert_eq!(days[1]["events"], 48);
    // 2 in 3 of the generated events are chat turns.
    assert_eq!(
        report["total"]["turns"],
        days[0]["turns"].as_i64().unwrap() + days[1]["turns"].as_i64().unwrap()
    );
    assert_eq!(report["total"]["by_model"].as_array().unwrap().len(), 4);

    // How long one rollup takes, on a day of 50,000 events more.
    insert_usage(&mut owner, b.id.as_uuid(), agent_b, 2, 50_000, "model-3").await;
    let after = db_now(&mut owner).await;
    run_after(&mut owner, JobName::RollupUsage, after, "rows").await;
    eprintln!(
        "rollup_usage over 50,000 new events (50,085 in all): {:.3} s",
        longest_run_after(&mut owner, JobName::RollupUsage, after).await
    );
    let (events, rolled) = usage_both_ways(&mut owner).await;
    assert_eq!(events, rolled);
}

/// The longest run of `job` that finished after `after`, in seconds.
async fn longest_run_after(owner: &mut PgConnection, job: JobName, after: DateTime<Utc>) -> f64 {
    sqlx::query_scalar(
        "SELECT extract(epoch FROM max(finished_at - started_at))::float8 FROM scheduled_job_runs
         WHERE job = $1 AND outcome = 'success' AND finished_at > $2",
    )
    .bind(job.label())
    .bind(after)
    .fetch_one(owner)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_usage_and_retention_apis_validate_their_input_and_roles() {
    let app = spawn_app_with(|_| {}).await;
    let tenant = app.create_tenant("Validation Co").await;
    let member = app.create_member(tenant.id).await;
    for query in [
        "",
        "?from=2026-12-01",
        "?to=2026-12-01",
        "?from=2026-12-31&to=2026-12-01",
        "?from=2026-02-30&to=2026-03-01",
        "?from=01-12-2026&to=2026-12-02",
        "?from=2025-01-01&to=2026-12-01",
        "?from=2026-12-01&to=2026-12-02&tenant=x",
    ] {
        let response = app
            .get(&format!("/api/v1/usage{query}"), &tenant.token)
            .await;
        assert_error(response, 400, "bad_request").await;
    }
    let ok = app
        .get("/api/v1/usage?from=2026-11-01&to=2026-11-30", &member)
        .await;
    assert_eq!(ok.status(), 200);
    let report = body(ok).await;
    assert_eq!(report["days"].as_array().unwrap().len(), 30);
    assert_eq!(report["total"]["events"], 0);

    let shown = body(app.get("/api/v1/retention", &member).await).await;
    assert_eq!(shown["conversations_days"], Value::Null);
    let put = |token: &str, payload: Value| {
        app.request(Method::PUT, "/api/v1/retention", Some(token))
            .json(&payload)
            .send()
    };
    let refused = put(&member, json!({ "conversations_days": 30 }))
        .await
        .unwrap();
    assert_error(refused, 403, "forbidden").await;
    for payload in [
        json!({ "conversations_days": 0 }),
        json!({ "webhook_deliveries_days": 3651 }),
        json!({ "files_days": -1 }),
        json!({ "conversations_days": "thirty" }),
        json!({ "conversations_days": 1.5 }),
        json!({ "keep": "forever" }),
    ] {
        let response = put(&tenant.token, payload.clone()).await.unwrap();
        assert_error(response, 422, "invalid").await;
    }
    let set = put(
        &tenant.token,
        json!({ "conversations_days": 30, "webhook_deliveries_days": 7 }),
    )
    .await
    .unwrap();
    assert_eq!(set.status(), 200);
    let shown = body(app.get("/api/v1/retention", &member).await).await;
    assert_eq!(shown["conversations_days"], 30);
    assert_eq!(shown["webhook_deliveries_days"], 7);
    assert_eq!(shown["files_days"], Value::Null);
    assert!(shown["updated_at"].is_string());
}

/// A conversation of `tenant` with one message and one booking, `days_ago` old.
async fn old_conversation(
    conn: &mut PgConnection,
    tenant: Uuid,
    agent: Uuid,
    days_ago: i32,
) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO conversations (id, tenant_id, agent_id, channel, started_at)
         VALUES ($1, $2, $3, 'sms', now() - make_interval(days => $4))",
    )
    .bind(id)
    .bind(tenant)
    .bind(agent)
    .bind(days_ago)
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO agent_messages (id, tenant_id, conversation_id, seq, role, content, created_at)
         VALUES ($1, $2, $3, 0, 'visitor', 'hello', now() - make_interval(days => $4))",
    )
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(id)
    .bind(days_ago)
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query("INSERT INTO bookings (id, tenant_id, conversation_id, requested_time) VALUES ($1, $2, $3, 'Friday')")
        .bind(Uuid::now_v7())
        .bind(tenant)
        .bind(id)
        .execute(&mut *conn)
        .await
        .unwrap();
    id
}

async fn delivery(conn: &mut PgConnection, tenant: Uuid, days_ago: i32) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO agent_webhook_deliveries (id, tenant_id, endpoint_id, event_id, event_type, attempt, outcome, created_at)
         VALUES ($1, $2, $3, $4, 'lead.created', 1, 'success', now() - make_interval(days => $5))",
    )
    .bind(id)
    .bind(tenant)
    .bind(Uuid::now_v7())
    .bind(Uuid::now_v7())
    .bind(days_ago)
    .execute(conn)
    .await
    .unwrap();
    id
}

async fn outbox_event(conn: &mut PgConnection, tenant: Uuid, days_ago: i32, settled: bool) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO outbox_events (id, tenant_id, event_type, payload, created_at, published_at, settled_at)
         VALUES ($1, $2, 'lead.created', '{}', now() - make_interval(days => $3),
                 now() - make_interval(days => $3), CASE WHEN $4 THEN now() - make_interval(days => $3) END)",
    )
    .bind(id)
    .bind(tenant)
    .bind(days_ago)
    .bind(settled)
    .execute(conn)
    .await
    .unwrap();
    id
}

async fn ids_present(conn: &mut PgConnection, table: &str, ids: &[Uuid]) -> Vec<Uuid> {
    sqlx::query_scalar(&format!("SELECT id FROM {table} WHERE id = ANY($1)"))
        .bind(ids.to_vec())
        .fetch_all(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn apply_retention_deletes_only_the_old_data_of_the_tenant_with_a_setting() {
    let _turn = SCHEDULERS.lock().await;
    let (first, _second) =
        two_instances(|s| jobs_every_second(s, &[JobName::ApplyRetention])).await;
    let a = first.create_tenant("Retention A").await;
    let b = first.create_tenant("Retention B").await;
    let agent_a = agent_id(&first, &a.token, "A").await;
    let agent_b = agent_id(&first, &b.token, "B").await;
    let (ta, tb) = (a.id.as_uuid(), b.id.as_uuid());
    let mut owner = first.owner_connection().await;
    let a_old = old_conversation(&mut owner, ta, agent_a, 40).await;
    let a_new = old_conversation(&mut owner, ta, agent_a, 3).await;
    // Started long ago, but spoken in last week: still in use.
    let a_active = old_conversation(&mut owner, ta, agent_a, 40).await;
    sqlx::query("INSERT INTO agent_messages (id, tenant_id, conversation_id, seq, role, content) VALUES ($1, $2, $3, 1, 'visitor', 'still here')")
        .bind(Uuid::now_v7()).bind(ta).bind(a_active)
        .execute(&mut owner).await.unwrap();
    let b_old = old_conversation(&mut owner, tb, agent_b, 400).await;
    sqlx::query("INSERT INTO call_recordings (id, tenant_id, conversation_id, call_sid, recording_sid, object_key, content_type, size_bytes, source) VALUES ($1, $2, $3, 'CA0123456789abcdef0123456789abcdef', 'RE0123456789abcdef0123456789abcdef', 'retention-test-object', 'audio/wav', 0, 'twilio')")
        .bind(Uuid::now_v7()).bind(ta).bind(a_old)
        .execute(&mut owner).await.unwrap();
    let a_old_delivery = delivery(&mut owner, ta, 10).await;
    let a_new_delivery = delivery(&mut owner, ta, 2).await;
    let b_old_delivery = delivery(&mut owner, tb, 400).await;
    let a_old_settled = outbox_event(&mut owner, ta, 10, true).await;
    let a_old_unsettled = outbox_event(&mut owner, ta, 10, false).await;
    let b_old_settled = outbox_event(&mut owner, tb, 400, true).await;

    // Set once the old rows are in: a run between two inserts would take half of them.
    let set = first
        .request(Method::PUT, "/api/v1/retention", Some(&a.token))
        .json(&json!({ "conversations_days": 30, "webhook_deliveries_days": 7 }))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let after = db_now(&mut owner).await;
    let counts = run_after(&mut owner, JobName::ApplyRetention, after, "objects").await;
    assert_eq!(counts["conversations"], 1, "{counts}");
    assert_eq!(counts["webhook_deliveries"], 1, "{counts}");
    assert_eq!(counts["outbox_events"], 1, "{counts}");
    assert_eq!(counts["objects"], 1, "{counts}");

    let conversations = ids_present(
        &mut owner,
        "conversations",
        &[a_old, a_new, a_active, b_old],
    )
    .await;
    assert!(!conversations.contains(&a_old));
    for kept in [a_new, a_active, b_old] {
        assert!(conversations.contains(&kept), "{kept} deleted");
    }
    let dependents: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM agent_messages WHERE conversation_id = $1)
              + (SELECT count(*) FROM bookings WHERE conversation_id = $1)
              + (SELECT count(*) FROM call_recordings WHERE conversation_id = $1)",
    )
    .bind(a_old)
    .fetch_one(&mut owner)
    .await
    .unwrap();
    assert_eq!(
        dependents, 0,
        "the old conversation's messages, booking or recording remain"
    );
    assert_eq!(
        ids_present(
            &mut owner,
            "agent_webhook_deliveries",
            &[a_old_delivery, a_new_delivery, b_old_delivery]
        )
        .await
        .len(),
        2
    );
    assert!(
        ids_present(&mut owner, "agent_webhook_deliveries", &[a_old_delivery])
            .await
            .is_empty()
    );
    let outbox = ids_present(
        &mut owner,
        "outbox_events",
        &[a_old_settled, a_old_unsettled, b_old_settled],
    )
    .await;
    assert!(!outbox.contains(&a_old_settled));
    assert!(outbox.contains(&a_old_unsettled) && outbox.contains(&b_old_settled));

    // How long one retention run takes over 20,000 old delivery attempts.
    sqlx::query(
        "INSERT INTO agent_webhook_deliveries (id, tenant_id, endpoint_id, event_id, event_type, attempt, outcome, created_at)
         SELECT gen_random_uuid(), $1, gen_random_uuid(), gen_random_uuid(), 'lead.created', 1, 'success', now() - interval '30 days'
         FROM generate_series(1, 20000)",
    )
    .bind(ta)
    .execute(&mut owner)
    .await
    .unwrap();
    let after = db_now(&mut owner).await;
    let counts = run_after(&mut owner, JobName::ApplyRetention, after, "objects").await;
    assert_eq!(counts["webhook_deliveries"], 20_000, "{counts}");
    eprintln!(
        "apply_retention deleting 20,000 delivery attempts: {:.3} s",
        longest_run_after(&mut owner, JobName::ApplyRetention, after).await
    );
}

/// A file's object key and knowledge-base document, as the owner reads them.
async fn stored_file(owner: &mut PgConnection, id: Uuid) -> (String, Option<Uuid>) {
    sqlx::query_as("SELECT object_key, kb_document_id FROM files WHERE id = $1")
        .bind(id)
        .fetch_one(owner)
        .await
        .unwrap()
}

#[tokio::test]
async fn apply_retention_deletes_old_files_with_their_objects_shares_and_documents() {
    let _turn = SCHEDULERS.lock().await;
    let app = spawn_app_with(|s| jobs_every_second(s, &[JobName::ApplyRetention])).await;
    let tenant = app.create_tenant("File Retention Co").await;
    let set = app
        .request(Method::PUT, "/api/v1/retention", Some(&tenant.token))
        .json(&json!({ "files_days": 30 }))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let agent = app.create_agent(&tenant.token, "Files").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Scanning is off here: an attached file feeds the knowledge base at once.
    let old = body(
        crate::files::upload(
            &app,
            &tenant.token,
            "old-prices.txt",
            "text/plain",
            b"Old prices: a cleaning costs $60.".to_vec(),
            Some(&agent),
        )
        .await,
    )
    .await;
    let fresh =
        crate::files::uploaded(&app, &tenant.token, "new-prices.txt", b"$80 now.".to_vec()).await;
    let (old_id, fresh_id): (Uuid, Uuid) = (
        old["id"].as_str().unwrap().parse().unwrap(),
        fresh["id"].as_str().unwrap().parse().unwrap(),
    );
    let shared = app
        .post_json(
            &format!("/api/v1/files/{old_id}/share"),
            Some(&tenant.token),
            &json!({ "expires_in": "permanent" }),
        )
        .await;
    assert_eq!(shared.status(), 201);
    let mut owner = app.owner_connection().await;
    let (old_key, document) = stored_file(&mut owner, old_id).await;
    let document = document.expect("the attached file became a document");
    let (fresh_key, _) = stored_file(&mut owner, fresh_id).await;
    let objects = crate::helpers::recordings_dir(app.database_name());
    assert!(objects.join(&old_key).exists() && objects.join(&fresh_key).exists());
    sqlx::query("UPDATE files SET created_at = now() - interval '40 days' WHERE id = $1")
        .bind(old_id)
        .execute(&mut owner)
        .await
        .unwrap();

    let after = db_now(&mut owner).await;
    let counts = run_after(&mut owner, JobName::ApplyRetention, after, "objects").await;
    assert_eq!(counts["files"], 1, "{counts}");
    assert_eq!(
        ids_present(&mut owner, "files", &[old_id, fresh_id]).await,
        [fresh_id]
    );
    assert!(ids_present(&mut owner, "kb_documents", &[document])
        .await
        .is_empty());
    let shares: i64 = sqlx::query_scalar("SELECT count(*) FROM file_shares WHERE file_id = $1")
        .bind(old_id)
        .fetch_one(&mut owner)
        .await
        .unwrap();
    assert_eq!(shares, 0);
    assert!(
        !objects.join(&old_key).exists(),
        "the old file's object remains"
    );
    assert!(objects.join(&fresh_key).exists());
    let gone = app
        .get(&format!("/api/v1/files/{old_id}"), &tenant.token)
        .await;
    assert_eq!(gone.status(), 404);
}

#[tokio::test]
async fn delivery_attempts_stay_append_only_outside_the_retention_function() {
    let app = spawn_app_with(|_| {}).await;
    let tenant = app.create_tenant("Append Co").await;
    let put = app
        .request(Method::PUT, "/api/v1/retention", Some(&tenant.token))
        .json(&json!({ "webhook_deliveries_days": 7 }))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let tenant_id = tenant.id.as_uuid();
    let mut owner = app.owner_connection().await;
    let old = delivery(&mut owner, tenant_id, 30).await;
    let recent = delivery(&mut owner, tenant_id, 1).await;
    let pretend = "SELECT set_config('agentry.retention', 'on', true)";

    // The application role, with its tenant and the setting set.
    let mut conn = app.app_role_connection().await;
    for statement in [
        "DELETE FROM agent_webhook_deliveries WHERE id = $1",
        "UPDATE agent_webhook_deliveries SET outcome = 'failed' WHERE id = $1",
    ] {
        let mut tx = conn.begin().await.unwrap();
        set_tenant(&mut tx, tenant.id).await;
        sqlx::query(pretend).execute(&mut *tx).await.unwrap();
        let refused = sqlx::query(statement).bind(old).execute(&mut *tx).await;
        assert!(refused.is_err(), "app role: {statement} went through");
        tx.rollback().await.unwrap();
    }
    // The owner, with the setting: still refused by the trigger.
    for statement in [
        "DELETE FROM agent_webhook_deliveries WHERE id = $1",
        "UPDATE agent_webhook_deliveries SET outcome = 'failed' WHERE id = $1",
    ] {
        let mut tx = owner.begin().await.unwrap();
        sqlx::query(pretend).execute(&mut *tx).await.unwrap();
        let error = sqlx::query(statement)
            .bind(old)
            .execute(&mut *tx)
            .await
            .expect_err(statement);
        assert!(
            error.to_string().contains("append-only"),
            "owner: {statement}: {error}"
        );
        tx.rollback().await.unwrap();
    }
    // Nor from a block of the owner's own that names the function in passing.
    let mut tx = owner.begin().await.unwrap();
    sqlx::query(pretend).execute(&mut *tx).await.unwrap();
    let disguised = sqlx::raw_sql(&format!(
        "DO $$ BEGIN /* agentry_retention_webhook_deliveries() */
         DELETE FROM agent_webhook_deliveries WHERE id = '{old}'; END $$"
    ))
    .execute(&mut *tx)
    .await;
    assert!(
        disguised.is_err(),
        "a DO block passed for the retention function"
    );
    tx.rollback().await.unwrap();
    let truncated = sqlx::query("TRUNCATE agent_webhook_deliveries")
        .execute(&mut owner)
        .await;
    assert!(truncated.is_err());

    // Inside the retention function: only the row past the tenant's window goes.
    let mut conn = app.app_role_connection().await;
    let deleted: i64 = sqlx::query_scalar("SELECT agentry_retention_webhook_deliveries()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert_eq!(
        ids_present(&mut owner, "agent_webhook_deliveries", &[old, recent]).await,
        vec![recent]
    );
    // And the setting does not outlive the function.
    let after: Option<String> =
        sqlx::query_scalar("SELECT current_setting('agentry.retention', true)")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_ne!(after.as_deref(), Some("on"));
}

#[tokio::test]
async fn a_failing_run_is_recorded_and_counted_and_the_next_tick_succeeds_again() {
    let _turn = SCHEDULERS.lock().await;
    let (first, _second) =
        two_instances(|s| jobs_every_second(s, &[JobName::ExpireApiTokens])).await;
    let mut owner = first.owner_connection().await;
    let grant = |verb: &str| {
        format!(
            "{verb} EXECUTE ON FUNCTION agentry_job_expire_api_tokens() {} {}",
            if verb == "GRANT" { "TO" } else { "FROM" },
            first.settings.database.app_user
        )
    };
    sqlx::query(&grant("REVOKE"))
        .execute(&mut owner)
        .await
        .unwrap();
    let broken_at = db_now(&mut owner).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let failure: Value = loop {
        let found: Option<Value> = sqlx::query_scalar(
            "SELECT counts FROM scheduled_job_runs
             WHERE job = 'expire_api_tokens' AND outcome = 'failure' AND started_at > $1 LIMIT 1",
        )
        .bind(broken_at)
        .fetch_optional(&mut owner)
        .await
        .unwrap();
        if let Some(counts) = found {
            break counts;
        }
        assert!(Instant::now() < deadline, "no failure recorded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The kind of failure, never its message.
    assert_eq!(failure, json!({ "database": 1 }));
    let metrics = first.metrics_text().await;
    assert!(
        metric(
            &metrics,
            "agentry_job_runs_total",
            &[
                ("scheduled_job", "expire_api_tokens"),
                ("outcome", "failure")
            ]
        ) >= 1.0
    );

    sqlx::query(&grant("GRANT"))
        .execute(&mut owner)
        .await
        .unwrap();
    let fixed_at = db_now(&mut owner).await;
    run_after(
        &mut owner,
        JobName::ExpireApiTokens,
        fixed_at,
        "hashes_erased",
    )
    .await;
}
