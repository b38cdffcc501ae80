//! `loadtest cluster`: N agentry instances on one fresh database and one
//! Redis prefix, nginx in front, a scenario's traffic through nginx, faults
//! on a timeline inside the measured window, and a report of what happened
//! to requests and to webhook events.
//!
//! The instances run with compressed webhook timings (2 s attempt deadline,
//! retries after 1, 2, 4, 8, 15 and 30 s, stream entries reclaimed after
//! 8 s) so that a fault's retries and reclaims happen within a run; the
//! report lists them.

mod events;
mod faults;
mod figures;
mod fleet;
mod lanes;
mod receiver;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};
use serde::Serialize;

use crate::cli::{ClusterArgs, Persistence, Scenario};
use crate::client::{BaseUrl, Connection};
use crate::corpus::Corpus;
use crate::pg;
use crate::procstat::{self, AgentryProcesses, CpuTicks};
use crate::prom;
use crate::report::{self, CpuPerTurn, Machine, Report};
use crate::seed::{self, SeedOptions, ORIGIN};
use crate::server::{self, Resources};

pub use events::Events;
pub use figures::{FaultReport, LaneFigures, RateLimitFigures};
use fleet::{InstanceEnv, PrivateRedis};
use lanes::{LaneKind, Lanes, Targets};

/// The operator loadtest creates in the run's fresh database.
const OPERATOR_EMAIL: &str = "operator@loadtest.agentry.test";
const OPERATOR_PASSWORD: &str = "loadtest-operator-password";
/// The limiter tenant's widget_sessions tier, pinned so that the report's
/// bound does not depend on the defaults.
const WIDGET_SESSIONS_PER_MINUTE: u32 = 30;
/// The instances' webhook attempt deadline; a slow receiver answers after 1.5 × it.
const WEBHOOK_TIMEOUT_SECS: u64 = 2;

/// The cluster part of the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClusterFigures {
    pub instances: u32,
    pub balancer: String,
    pub redis: String,
    /// Every lane over the measured window.
    pub lanes: BTreeMap<String, LaneFigures>,
    /// Failed requests in the window that no fault explains (should be none).
    pub unexplained_failures: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitFigures>,
    /// Webhook stream entries still unacknowledged on the surviving
    /// instances after the drain: 0 once a dead instance's were reclaimed.
    pub webhook_pending_after_drain: Option<u64>,
    /// The settings the instances ran with that differ from the defaults.
    pub settings: BTreeMap<String, String>,
}

impl ClusterFigures {
    pub fn markdown(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "\n## Cluster: {} instances behind {}, Redis {}\n",
            self.instances, self.balancer, self.redis
        );
        let _ = writeln!(
            out,
            "| traffic | connections | requests | ok | ok/s | refused (429) | errors | p50 ms | p99 ms |\n| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"
        );
        for (name, lane) in &self.lanes {
            let errors: Vec<String> = lane
                .errors
                .iter()
                .filter(|(kind, _)| kind.as_str() != "total")
                .map(|(kind, n)| format!("{kind} {n}"))
                .collect();
            let total = lane.errors.get("total").copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {:.1} | {} | {} | {} | {} |",
                lane.connections,
                lane.requests,
                lane.ok,
                lane.ok_per_s,
                lane.refused,
                if errors.is_empty() {
                    "0".to_owned()
                } else {
                    format!("{total} ({})", errors.join(", "))
                },
                report::ms(lane.p50_ms),
                report::ms(lane.p99_ms)
            );
        }
        let unexplained = if self.unexplained_failures.is_empty() {
            "none".to_owned()
        } else {
            format!("{:?}", self.unexplained_failures)
        };
        let _ = writeln!(out, "\nFailures no fault explains: {unexplained}.");
        if let Some(limit) = &self.rate_limit {
            let _ = writeln!(
                out,
                "\nRate limit `{}` at {}/min, one key across the cluster: the hot client was admitted {} times and refused {} times in {:.1} s (one limit admits at most {}); the many clients were admitted {} times, refused {}. Decisions by source: {:?}.",
                limit.tier,
                limit.per_minute,
                limit.hot_admitted,
                limit.hot_refused,
                limit.hot_span_s,
                limit.hot_bound,
                limit.many_admitted,
                limit.many_refused,
                limit.decided_by
            );
        }
        let pending = self
            .webhook_pending_after_drain
            .map_or_else(|| "unknown".to_owned(), |p| p.to_string());
        let _ = writeln!(
            out,
            "\nWebhook stream entries unacknowledged after the drain: {pending}."
        );
    }
}

/// The instances' settings beyond the database, Redis and ports.
fn instance_settings() -> Vec<(&'static str, String)> {
    vec![
        ("AGENTRY__DEMO__SEED", "false".into()),
        ("AGENTRY__LOG__FILTER", "warn".into()),
        ("AGENTRY__RATE_LIMITS__ENABLED", "true".into()),
        ("AGENTRY__RATE_LIMITS__OVERRIDES_REFRESH_SECS", "1".into()),
        (
            "AGENTRY__RATE_LIMITS__WIDGET_SESSIONS",
            WIDGET_SESSIONS_PER_MINUTE.to_string(),
        ),
        (
            "AGENTRY__HTTP__TRUSTED_PROXIES",
            format!("{}/32", fleet::PROXY_SOURCE),
        ),
        ("AGENTRY_WEBHOOK_ALLOW_HTTP", "true".into()),
        ("AGENTRY_WEBHOOK_ALLOW_LOCALHOST", "true".into()),
        (
            "AGENTRY__WEBHOOKS__TIMEOUT_SECS",
            WEBHOOK_TIMEOUT_SECS.to_string(),
        ),
        (
            "AGENTRY__WEBHOOKS__RETRY_DELAYS_SECS",
            "1,2,4,8,15,30".into(),
        ),
        ("AGENTRY__WEBHOOKS__RECLAIM_AFTER_SECS", "8".into()),
    ]
}

/// The scenario's lanes and their share of the connections.
fn lanes_of(scenario: Scenario, connections: usize) -> Vec<(LaneKind, usize)> {
    let share = |percent: usize| (connections * percent / 100).max(1);
    match scenario {
        Scenario::Chat => vec![(LaneKind::Chat, connections)],
        Scenario::Webhooks => vec![(LaneKind::Leads, connections)],
        Scenario::Ratelimit => {
            let hot = (connections / 2).max(1);
            vec![
                (LaneKind::LimitHot, hot),
                (LaneKind::LimitMany, connections.saturating_sub(hot).max(1)),
            ]
        }
        Scenario::Mixed => {
            let leads = share(20);
            let dashboard = share(10);
            let hot = share(5);
            let many = share(10);
            let chat = connections
                .saturating_sub(leads + dashboard + hot + many)
                .max(1);
            vec![
                (LaneKind::Chat, chat),
                (LaneKind::Leads, leads),
                (LaneKind::Dashboard, dashboard),
                (LaneKind::LimitHot, hot),
                (LaneKind::LimitMany, many),
            ]
        }
    }
}

/// A short random id naming the run's database, Redis prefix and tenants.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut rng = crate::corpus::Rng::new(nanos ^ (u64::from(std::process::id()) << 40));
    format!("{:010x}", rng.next_u64() >> 24)
}

/// The outcome of a run: its report, and whether it proved what it should
/// (events all delivered, requests answered).
pub struct Outcome {
    pub report: Report,
    pub problems: Vec<String>,
}

pub async fn run(args: &ClusterArgs, resources: &Resources) -> anyhow::Result<Outcome> {
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let run_id = run_id();
    let mut notes = Vec::new();
    let dir = std::env::temp_dir().join(format!("agentry-cluster-{run_id}"));
    std::fs::create_dir_all(&dir)?;
    resources.set_scratch(dir.clone());

    let binary = match &args.agentry_bin {
        Some(path) => path.clone(),
        None => server::build_agentry().await?,
    };
    anyhow::ensure!(
        binary.is_file(),
        "no agentry binary at {}",
        binary.display()
    );
    let nginx = fleet::find_or_install_nginx(args.nginx_bin.as_deref()).await?;
    let balancer_name = fleet::nginx_version(&nginx).await;

    // A Redis fault needs a Redis of the run's own: the shared one is never restarted.
    let private_redis = args.restart_redis_after.map(|_| PrivateRedis {
        port: server::free_loopback_port().unwrap_or(6390),
        dir: dir.join("redis"),
        persistence: args.redis_persistence,
    });
    let (redis_url, redis_label) = match &private_redis {
        Some(redis) => {
            redis.start(resources).await?;
            let persistence = match redis.persistence {
                Persistence::None => "no persistence",
                Persistence::Aof => "append-only file, fsync every second",
            };
            (
                redis.url(),
                format!("private redis-server on {} ({persistence})", redis.url()),
            )
        }
        None => (
            args.redis_url.clone(),
            format!("shared, {}", args.redis_url),
        ),
    };
    let database = format!("agentry_cluster_{run_id}");
    let prefix = format!("agentry-cluster-{run_id}");
    let database_url = pg::with_database(&args.database_url, &database)?;
    resources.add_store(
        (args.database_url.clone(), database.clone()),
        private_redis
            .is_none()
            .then(|| (redis_url.clone(), prefix.clone())),
    );

    let mut vars: Vec<(String, String)> = vec![
        ("DATABASE_URL".into(), database_url.clone()),
        ("REDIS_URL".into(), redis_url.clone()),
        ("AGENTRY__REDIS__PREFIX".into(), prefix.clone()),
    ];
    let settings = instance_settings();
    vars.extend(settings.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    let env = InstanceEnv { binary, vars };
    eprintln!("loadtest: creating database {database} and the operator");
    server::operator_create(&env.binary, &env.pairs(), OPERATOR_EMAIL, OPERATOR_PASSWORD).await?;

    let mut instances = Vec::new();
    for index in 1..=args.instances as usize {
        instances.push(fleet::start_instance(&env, index, &dir, resources).await?);
    }
    let apis: Vec<BaseUrl> = instances.iter().map(|i| i.api.clone()).collect();
    let balancer = fleet::start_nginx(&nginx, &dir, &apis, resources).await?;
    eprintln!(
        "loadtest: {balancer_name} on {balancer} in front of {} instances",
        instances.len()
    );

    let receiver =
        receiver::Receiver::start(Duration::from_secs(WEBHOOK_TIMEOUT_SECS) * 3 / 2).await?;
    let corpus = Corpus::generate(args.docs as usize, args.seed);
    eprintln!(
        "loadtest: seeding through the balancer ({} documents)",
        args.docs
    );
    let seeded = seed::seed(
        &balancer,
        &corpus,
        &SeedOptions {
            operator_email: OPERATOR_EMAIL,
            operator_password: OPERATOR_PASSWORD,
            run_id: &run_id,
            ingest_timeout: Duration::from_secs(300),
        },
    )
    .await?;
    let (endpoint_id, secret) =
        seed::webhook_endpoint(&balancer, &seeded.admin_token, &receiver.url).await?;
    receiver.set_secret(&secret)?;
    let endpoint = events::uuid_bytes(&endpoint_id)?;
    let limited_public_key =
        seed::limited_tenant(&balancer, &seeded.operator_token, &run_id).await?;
    // Every instance picks up the raised tiers (overrides_refresh_secs = 1).
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut pg_connection = pg::connect_maintenance(&args.database_url).await?;
    let questions: Vec<Bytes> = corpus
        .questions
        .iter()
        .map(|q| Bytes::from(serde_json::json!({ "text": q }).to_string()))
        .collect();
    let targets = Arc::new(Targets {
        balancer: balancer.clone(),
        origin: HeaderValue::from_static(ORIGIN),
        public_key: seeded.public_key.clone(),
        limited_public_key,
        admin_token: seeded.admin_token.clone(),
        questions,
        visitors_per_connection: args.visitors_per_connection as usize,
        timeout: args.timeout,
        seed: args.seed,
    });
    let lane_plan = lanes_of(args.scenario, args.connections as usize);
    let pids: Vec<u32> = instances.iter().map(|i| i.pid).collect();
    let processes = AgentryProcesses::Pids(pids);

    eprintln!(
        "loadtest: {} over {} connections: {:?} warm-up, then {:?} measured",
        args.scenario.label(),
        args.connections,
        args.warmup,
        args.duration
    );
    let running = Lanes::start(targets, &lane_plan);
    tokio::time::sleep(args.warmup).await;
    let window_start = running.started.elapsed();
    let cpu_before = CpuTicks::now(&processes);
    let pg_before = pg::xacts(&mut pg_connection, &database).await;
    let mut timeline = faults::Timeline::new(args, running.started, window_start);
    let context = faults::Context {
        resources,
        instances: &instances,
        redis: private_redis.as_ref(),
        receiver: &receiver,
        database_url: &args.database_url,
        database: &database,
        redis_down_for: args.redis_down_for,
        receiver_fault_for: args.receiver_fault_for,
    };
    let window_end = window_start + args.duration;
    timeline
        .run_until(&context, running.started + window_end)
        .await;
    let cpu_after = CpuTicks::now(&processes);
    let pg_after = pg::xacts(&mut pg_connection, &database).await;
    let samples = running.stop().await;
    let fault_times = timeline.finish(&context).await;

    eprintln!(
        "loadtest: waiting for every webhook event to be delivered (at most {:?})",
        args.drain_timeout
    );
    let mut events_connection = pg::connect(&database_url).await?;
    let events = events::drain(
        &mut events_connection,
        &seeded.tenant_id,
        &endpoint,
        || receiver.tally(),
        args.drain_timeout,
    )
    .await?;

    // What the instances still alive say.
    let killed: Vec<&str> = fault_times
        .iter()
        .filter(|f| f.kind == "kill_instance")
        .map(|f| f.detail.split_whitespace().nth(1).unwrap_or(""))
        .collect();
    let mut pending = Some(0u64);
    let mut decided_by: BTreeMap<String, u64> = BTreeMap::new();
    for instance in instances
        .iter()
        .filter(|i| !killed.contains(&i.name.as_str()))
    {
        let mut connection = Connection::new(instance.metrics.clone());
        match connection
            .call(Method::GET, "/metrics", None, None, None)
            .await
        {
            Ok((StatusCode::OK, body)) => {
                let samples = prom::parse(&String::from_utf8_lossy(&body));
                for sample in &samples {
                    if sample.name == "agentry_webhook_pending" {
                        pending = pending.map(|p| p + sample.value as u64);
                    }
                    if sample.name == "agentry_rate_limit_decisions_total" {
                        let source = sample
                            .labels
                            .iter()
                            .find(|(k, _)| k == "source")
                            .map_or("unknown", |(_, v)| v.as_str());
                        *decided_by.entry(source.to_owned()).or_default() += sample.value as u64;
                    }
                }
            }
            _ => {
                pending = None;
                notes.push(format!("could not scrape {}'s /metrics", instance.name));
            }
        }
    }

    let window = figures::Window {
        from: window_start.as_millis() as u32,
        to: window_end.as_millis() as u32,
    };
    let mut lane_figures = BTreeMap::new();
    for (kind, lane_samples) in &samples {
        let connections = lane_plan
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, n)| n)
            .sum();
        lane_figures.insert(
            kind.label().to_owned(),
            figures::lane_figures(lane_samples, connections, window),
        );
    }
    let fault_reports: Vec<FaultReport> = fault_times
        .iter()
        .map(|fault| figures::fault_report(fault, &samples, window))
        .collect();
    let unexplained = figures::unexplained_failures(&samples, &fault_times, window);
    let rate_limit = figures::rate_limit_figures(&samples, WIDGET_SESSIONS_PER_MINUTE, decided_by);

    // The chat report's figures are the visitors' turns: the chat and lead lanes.
    let turn_samples: Vec<lanes::Sample> = samples
        .iter()
        .filter(|(kind, _)| matches!(kind, LaneKind::Chat | LaneKind::Leads))
        .flat_map(|(_, s)| s.iter().cloned())
        .collect();
    let turn_figures = figures::lane_figures(&turn_samples, 0, window);
    let turns = turn_figures.ok;
    let latency = figures::latency(&turn_samples, window);
    let (pg_transactions_per_turn, pg_commits_per_turn) = match (&pg_before, &pg_after) {
        (Ok(before), Ok(after)) => {
            let delta = after.since(before);
            (
                report::per_turn(delta.transactions() as f64, turns),
                report::per_turn(delta.commits as f64, turns),
            )
        }
        _ => {
            notes.push("no PostgreSQL figures".to_owned());
            (None, None)
        }
    };
    let ticks = cpu_after.since(&cpu_before);
    let ms_per_tick = 1000.0 / procstat::clock_ticks_per_second() as f64;
    notes.push(
        "CPU per turn is all CPU of the instances, PostgreSQL and Redis over the window divided by the chat and lead turns, whatever else the scenario sent".to_owned(),
    );
    let seconds = args.duration.as_secs_f64();

    let mut problems = Vec::new();
    if events.lost > 0 {
        problems.push(format!("{} webhook events were lost", events.lost));
    }
    if events.unknown > 0 {
        problems.push(format!(
            "{} deliveries matched no published event",
            events.unknown
        ));
    }
    if !unexplained.is_empty() {
        problems.push(format!(
            "requests failed that no fault explains: {unexplained:?}"
        ));
    }
    let server_errors: u64 = lane_figures
        .values()
        .map(|lane| lane.errors.get("status_500").copied().unwrap_or(0))
        .sum();
    if server_errors > 0 {
        problems.push(format!(
            "{server_errors} requests got 500: a failure must be a clean 503"
        ));
    }
    if let Some(limit) = &rate_limit {
        // While Redis is away each instance limits alone, as the policy says.
        if private_redis.is_none() && limit.hot_admitted > limit.hot_bound {
            problems.push(format!(
                "the hot key was admitted {} times, more than one cluster-wide limit allows ({})",
                limit.hot_admitted, limit.hot_bound
            ));
        }
    }
    if lane_figures.values().all(|lane| lane.ok == 0) {
        problems.push("no request succeeded in the measured window".to_owned());
    }

    let report = Report {
        scenario: args.scenario.label(),
        mode: "json",
        base_urls: vec![balancer.to_string()],
        self_started: true,
        rate_limits: true,
        docs: seeded.documents,
        chunks: seeded.chunks,
        visitors: lane_plan
            .iter()
            .filter(|(k, _)| matches!(k, LaneKind::Chat | LaneKind::Leads))
            .map(|(_, n)| n * args.visitors_per_connection as usize)
            .sum(),
        connections: args.connections as usize,
        duration_s: report::round(seconds, 3),
        warmup_s: report::round(args.warmup.as_secs_f64(), 3),
        turns_per_session: 0,
        turns,
        turns_per_s: report::round(turns as f64 / seconds, 1),
        p50_ms: latency.map(|l| l.p50_ms),
        p95_ms: latency.map(|l| l.p95_ms),
        p99_ms: latency.map(|l| l.p99_ms),
        max_ms: latency.map(|l| l.max_ms),
        mean_ms: latency.map(|l| l.mean_ms),
        first_delta_p50_ms: None,
        first_delta_p99_ms: None,
        errors: turn_figures.errors.clone(),
        sessions_opened: 0,
        pg_database: database.clone(),
        pg_transactions_per_turn,
        pg_commits_per_turn,
        cpu_ms_per_turn: CpuPerTurn {
            agentry: report::per_turn(ticks.agentry as f64 * ms_per_tick, turns),
            postgres: report::per_turn(ticks.postgres as f64 * ms_per_tick, turns),
            redis: report::per_turn(ticks.redis as f64 * ms_per_tick, turns),
        },
        guardrail_ms_per_turn: None,
        stage_latency_ms: BTreeMap::new(),
        stage_counts: BTreeMap::new(),
        baseline_rps: None,
        baseline_p50_ms: None,
        baseline_p99_ms: None,
        ratio_to_baseline: None,
        started_at,
        machine: Machine::this(),
        notes,
        cluster: Some(ClusterFigures {
            instances: args.instances,
            balancer: balancer_name,
            redis: redis_label,
            lanes: lane_figures,
            unexplained_failures: unexplained,
            rate_limit,
            webhook_pending_after_drain: pending,
            settings: settings
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        }),
        events: Some(events),
        faults: fault_reports,
    };
    Ok(Outcome { report, problems })
}
