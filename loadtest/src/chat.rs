//! The `chat` scenario: seed, open sessions, warm up, measure, baseline, report.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};
use sqlx::postgres::PgConnection;

use crate::baseline;
use crate::cli::ChatArgs;
use crate::client::{BaseUrl, Connection};
use crate::corpus::{Corpus, Rng};
use crate::driver::{Load, LoadConfig, LoadPlan, Mode, Phase, WorkerStats};
use crate::pg::{self, XactCounts};
use crate::procstat::{self, AgentryProcesses, CpuTicks};
use crate::prom::{self, SumCount};
use crate::report::{self, CpuPerTurn, Latency, Machine, Report};
use crate::seed::{self, SeedOptions, ORIGIN};
use crate::server::{self, Resources};

/// The baseline's warm-up: enough to open its connections and fill caches.
const BASELINE_WARMUP: Duration = Duration::from_secs(1);

/// A short random id naming the run's database, Redis prefix and tenant.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut rng = Rng::new(nanos ^ (u64::from(std::process::id()) << 40));
    format!("{:010x}", rng.next_u64() >> 24)
}

/// Counters read at one edge of the window.
struct Snapshot {
    cpu: CpuTicks,
    pg: Result<XactCounts, String>,
    /// Per base URL; None when the scrape failed.
    metrics: Vec<Option<BTreeMap<String, SumCount>>>,
}

async fn scrape(connection: &mut Connection) -> Option<BTreeMap<String, SumCount>> {
    match connection
        .call(Method::GET, "/metrics", None, None, None)
        .await
    {
        Ok((StatusCode::OK, body)) => Some(prom::duration_series(&prom::parse(
            &String::from_utf8_lossy(&body),
        ))),
        _ => None,
    }
}

async fn snapshot(
    agentry: &AgentryProcesses,
    pg: Option<&mut PgConnection>,
    database: &str,
    scrapers: &mut [Connection],
) -> Snapshot {
    let agentry = agentry.clone();
    let cpu = tokio::task::spawn_blocking(move || CpuTicks::now(&agentry));
    let pg = async {
        match pg {
            Some(connection) => pg::xacts(connection, database)
                .await
                .map_err(|e| format!("{e:#}")),
            None => Err("no PostgreSQL connection".to_owned()),
        }
    };
    let metrics = async {
        let mut all = Vec::with_capacity(scrapers.len());
        for connection in scrapers.iter_mut() {
            all.push(scrape(connection).await);
        }
        all
    };
    let (cpu, pg, metrics) = tokio::join!(cpu, pg, metrics);
    Snapshot {
        cpu: cpu.unwrap_or_default(),
        pg,
        metrics,
    }
}

/// Runs the closed loop: warm-up, then the measured window; the load keeps
/// running while the closing counters are read, so both edges of the window
/// see the same steady state (see the README on pg_stat_database).
async fn measure(
    load: Load,
    warmup: Duration,
    duration: Duration,
    mut at_edge: impl AsyncFnMut() -> Option<Snapshot>,
) -> (WorkerStats, Duration, Option<(Snapshot, Snapshot)>) {
    load.start();
    tokio::time::sleep(warmup).await;
    load.set_phase(Phase::Measure);
    let started = Instant::now();
    let before = at_edge().await;
    tokio::time::sleep_until((started + duration).into()).await;
    load.set_phase(Phase::After);
    let elapsed = started.elapsed();
    let after = at_edge().await;
    let stats = load.stop().await;
    (stats, elapsed, before.zip(after))
}

pub async fn run(args: &ChatArgs, resources: &Resources) -> anyhow::Result<Report> {
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let run_id = run_id();
    let mut notes = Vec::new();

    let self_started = args.base_urls.is_empty();
    let (bases, metrics_bases, agentry, pg_database) = if self_started {
        let started = server::start(args, &run_id, resources).await?;
        (
            vec![started.base],
            vec![started.metrics],
            AgentryProcesses::Pid(started.pid),
            started.database,
        )
    } else {
        notes.push(
            "CPU of agentry is every process named `agentry` on this machine; PostgreSQL and Redis CPU and transactions include any other clients they had during the window".to_owned(),
        );
        if args.metrics_urls.is_empty() {
            notes.push(
                "no server-side latency: pass --metrics-url for each instance's metrics listener"
                    .to_owned(),
            );
        }
        (
            args.base_urls.clone(),
            args.metrics_urls.clone(),
            AgentryProcesses::ByName,
            pg::database_of(&args.database_url)?,
        )
    };

    let corpus = Corpus::generate(args.docs as usize, args.seed);
    eprintln!(
        "loadtest: seeding a tenant through {} ({} documents)",
        bases[0], args.docs
    );
    let seeded = seed::seed(
        &bases[0],
        &corpus,
        &SeedOptions {
            operator_email: &args.operator_email,
            operator_password: &args.operator_password,
            run_id: &run_id,
            ingest_timeout: args.ingest_timeout,
        },
    )
    .await?;

    let mut pg_connection = match pg::connect_maintenance(&args.database_url).await {
        Ok(connection) => Some(connection),
        Err(error) => {
            notes.push(format!("no PostgreSQL figures: {error:#}"));
            None
        }
    };
    // One scrape per instance (its metrics listener), however often its URL was given.
    let mut instances: Vec<BaseUrl> = Vec::new();
    for base in &metrics_bases {
        if !instances.contains(base) {
            instances.push(base.clone());
        }
    }
    let mut scrapers: Vec<Connection> = instances.iter().cloned().map(Connection::new).collect();

    let questions: Vec<Bytes> = corpus
        .questions
        .iter()
        .map(|q| Bytes::from(serde_json::json!({ "text": q }).to_string()))
        .collect();
    let mode = if args.sse { Mode::Sse } else { Mode::Json };
    let plan = LoadPlan {
        bases: bases.clone(),
        connections: args.connections as usize,
        tokens: Vec::new(),
        visitors: args.visitors as usize,
        config: LoadConfig {
            mode,
            origin: Some(HeaderValue::from_static(ORIGIN)),
            questions: questions.clone(),
            public_key: Some(seeded.public_key.clone()),
            turns_per_session: args.turns,
            timeout: args.timeout,
        },
        seed: args.seed,
    };
    eprintln!(
        "loadtest: opening {} widget sessions over {} connections",
        args.visitors, args.connections
    );
    let load = Load::prepare(plan).await?;
    eprintln!(
        "loadtest: {} turns, {:?} warm-up, then {:?} measured",
        mode.label(),
        args.warmup,
        args.duration
    );
    let (stats, elapsed, edges) = measure(load, args.warmup, args.duration, async || {
        Some(
            snapshot(
                &agentry,
                pg_connection.as_mut(),
                &pg_database,
                &mut scrapers,
            )
            .await,
        )
    })
    .await;
    let (before, after) = edges.unwrap_or_else(|| unreachable!("snapshots are always taken"));

    let turns = stats.turns;
    let seconds = elapsed.as_secs_f64();
    let latency = Latency::of(&stats.latency);
    let first_delta = Latency::of(&stats.first_delta);

    let (pg_transactions_per_turn, pg_commits_per_turn) = match (&before.pg, &after.pg) {
        (Ok(before), Ok(after)) => {
            let delta = after.since(before);
            (
                report::per_turn(delta.transactions() as f64, turns),
                report::per_turn(delta.commits as f64, turns),
            )
        }
        (Err(error), _) | (_, Err(error)) => {
            notes.push(format!("no PostgreSQL figures: {error}"));
            (None, None)
        }
    };

    let ticks = after.cpu.since(&before.cpu);
    let ms_per_tick = 1000.0 / procstat::clock_ticks_per_second() as f64;
    let cpu_ms_per_turn = CpuPerTurn {
        agentry: report::per_turn(ticks.agentry as f64 * ms_per_tick, turns),
        postgres: report::per_turn(ticks.postgres as f64 * ms_per_tick, turns),
        redis: report::per_turn(ticks.redis as f64 * ms_per_tick, turns),
    };

    let mut series_before = BTreeMap::new();
    let mut series_after = BTreeMap::new();
    for (index, (b, a)) in before.metrics.iter().zip(&after.metrics).enumerate() {
        match (b, a) {
            (Some(b), Some(a)) => {
                prom::accumulate(&mut series_before, b);
                prom::accumulate(&mut series_after, a);
            }
            _ => notes.push(format!("could not scrape {}/metrics", instances[index])),
        }
    }
    let means = prom::window_means(&series_before, &series_after);
    let stage_latency_ms = means
        .iter()
        .map(|(k, v)| (k.clone(), report::round(v.mean_ms, 3)))
        .collect();
    let stage_counts = means.iter().map(|(k, v)| (k.clone(), v.count)).collect();
    let guardrail_ms_per_turn = means
        .get("agentry_finalizer_duration_seconds")
        .and_then(|finalizer| report::per_turn(finalizer.mean_ms * finalizer.count as f64, turns));

    let mut baseline_figures = None;
    if !args.no_baseline {
        let body_bytes = stats
            .response_bytes
            .checked_div(turns)
            .map_or(600, |bytes| bytes as usize);
        match run_baseline(args, questions, body_bytes).await {
            Ok(figures) => baseline_figures = Some(figures),
            Err(error) => notes.push(format!("the baseline failed: {error:#}")),
        }
    }
    let baseline_rps = baseline_figures.as_ref().map(|b| report::round(b.rps, 1));
    if let Some(baseline) = &baseline_figures {
        if baseline.errors > 0 {
            notes.push(format!("the baseline had {} errors", baseline.errors));
        }
    }

    let turns_per_s = if seconds > 0.0 {
        turns as f64 / seconds
    } else {
        0.0
    };
    Ok(Report {
        scenario: "chat",
        mode: mode.label(),
        base_urls: bases.iter().map(BaseUrl::to_string).collect(),
        self_started,
        rate_limits: self_started && args.rate_limits,
        docs: seeded.documents,
        chunks: seeded.chunks,
        visitors: args.visitors as usize,
        connections: args.connections as usize,
        duration_s: report::round(seconds, 3),
        warmup_s: report::round(args.warmup.as_secs_f64(), 3),
        turns_per_session: args.turns,
        turns,
        turns_per_s: report::round(turns_per_s, 1),
        p50_ms: latency.map(|l| l.p50_ms),
        p95_ms: latency.map(|l| l.p95_ms),
        p99_ms: latency.map(|l| l.p99_ms),
        max_ms: latency.map(|l| l.max_ms),
        mean_ms: latency.map(|l| l.mean_ms),
        first_delta_p50_ms: (mode == Mode::Sse)
            .then(|| first_delta.map(|l| l.p50_ms))
            .flatten(),
        first_delta_p99_ms: (mode == Mode::Sse)
            .then(|| first_delta.map(|l| l.p99_ms))
            .flatten(),
        errors: report::errors_with_total(stats.errors),
        sessions_opened: stats.sessions_opened,
        pg_database,
        pg_transactions_per_turn,
        pg_commits_per_turn,
        cpu_ms_per_turn,
        guardrail_ms_per_turn,
        stage_latency_ms,
        stage_counts,
        baseline_rps,
        baseline_p50_ms: baseline_figures
            .as_ref()
            .and_then(|b| b.latency.map(|l| l.p50_ms)),
        baseline_p99_ms: baseline_figures
            .as_ref()
            .and_then(|b| b.latency.map(|l| l.p99_ms)),
        ratio_to_baseline: baseline_figures
            .as_ref()
            .filter(|b| b.rps > 0.0)
            .map(|b| report::round(turns_per_s / b.rps, 5)),
        started_at,
        machine: Machine::this(),
        notes,
        cluster: None,
        events: None,
        faults: Vec::new(),
    })
}

struct BaselineFigures {
    rps: f64,
    latency: Option<Latency>,
    errors: u64,
}

/// The same closed loop against the in-process bare handler.
async fn run_baseline(
    args: &ChatArgs,
    questions: Vec<Bytes>,
    body_bytes: usize,
) -> anyhow::Result<BaselineFigures> {
    let server = baseline::start(body_bytes)?;
    let visitors = args.visitors as usize;
    let plan = LoadPlan {
        bases: vec![server.base.clone()],
        connections: args.connections as usize,
        tokens: (0..visitors)
            .map(|i| format!("baseline-visitor-{i}"))
            .collect(),
        visitors,
        config: LoadConfig {
            mode: Mode::Json,
            origin: Some(HeaderValue::from_static(ORIGIN)),
            questions,
            public_key: None,
            turns_per_session: 0,
            timeout: args.timeout,
        },
        seed: args.seed,
    };
    eprintln!(
        "loadtest: baseline, {:?} against a bare axum handler on {}",
        args.baseline_duration, server.base
    );
    let load = Load::prepare(plan).await?;
    let (stats, elapsed, _) =
        measure(load, BASELINE_WARMUP, args.baseline_duration, async || None).await;
    drop(server);
    Ok(BaselineFigures {
        rps: stats.turns as f64 / elapsed.as_secs_f64().max(1e-9),
        latency: Latency::of(&stats.latency),
        errors: stats.errors.values().sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_short_lowercase_hex() {
        let id = run_id();
        assert_eq!(id.len(), 10);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }
}
