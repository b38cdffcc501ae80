//! The webhook benchmark: a report, not a timed test (ignored by default).
//!
//! `cargo test --release --test api webhook_bench -- --ignored --nocapture`
//!
//! Deliveries per second from event commit to receiver 2xx, and p50/p99 of
//! that latency, with one and with three `agentry` server processes, beside
//! the same receiver driven by a plain reqwest client with no queue (the
//! limit of this machine); then retry lateness (attempt start minus the due
//! time its failed attempt recorded). Figures go to docs/BENCHMARKS.md.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentry::webhook_delivery::webhook_id;
use agentry::webhook_signing::{signing_key, SignatureHeaders};
use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::cluster::ServerProcess;
use crate::dispatch::{commit_events, endpoint, eventually, rows, Receiver};
use crate::helpers::{spawn_app_with, TestApp, TestTenant};

const EVENTS: usize = 4_000;
const CONCURRENCY: usize = 64;
const PRODUCERS: usize = 4;
const BATCH: usize = 20;

/// CPU seconds (user + system) used so far by `pid`, from /proc.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// CPU seconds of every process whose command is `name`.
fn cpu_secs_named(name: &str) -> f64 {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == name)
        })
        .map(cpu_secs)
        .sum()
}

/// CPU seconds so far: the agentry servers, PostgreSQL, Redis, this process
/// (the producer and the receiver).
fn cpu_snapshot(servers: &[u32]) -> [f64; 4] {
    [
        servers.iter().map(|pid| cpu_secs(*pid)).sum(),
        cpu_secs_named("postgres"),
        cpu_secs_named("redis-server"),
        cpu_secs(std::process::id()),
    ]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The receiver driven directly: CONCURRENCY workers posting signed bodies.
async fn plain_client_rate(receiver: &Receiver) -> f64 {
    let client = reqwest::Client::new();
    let url = receiver.url("127.0.0.1");
    let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let started = Instant::now();
    let per_worker = EVENTS / CONCURRENCY;
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|worker| {
            let (client, url, key) = (client.clone(), url.clone(), key.clone());
            tokio::spawn(async move {
                for n in 0..per_worker {
                    let body =
                        json!({"type": "lead.created", "timestamp": Utc::now(), "data": {"n": n}})
                            .to_string();
                    let id = format!("msg_plain_{worker}_{n}");
                    let headers = SignatureHeaders::sign(
                        &id,
                        Utc::now().timestamp(),
                        body.as_bytes(),
                        std::slice::from_ref(&key),
                    );
                    let mut request = client.post(&url).header("content-type", "application/json");
                    for (name, value) in headers.pairs() {
                        request = request.header(name, value);
                    }
                    let response = request.body(body).send().await.unwrap();
                    assert!(response.status().is_success());
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    (per_worker * CONCURRENCY) as f64 / started.elapsed().as_secs_f64()
}

struct Run {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Commits EVENTS events from PRODUCERS tasks, each pausing `pace` after
/// each batch (none: as fast as they go), and waits for every one to reach
/// the receiver.
async fn dispatched_run(
    app: &TestApp,
    tenant: &TestTenant,
    receiver: &Receiver,
    endpoint_id: Uuid,
    pace: Duration,
) -> Run {
    let already = receiver.delivered().len();
    let started = Instant::now();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|_| {
            let (store, tenant) = (app.store.clone(), tenant.id);
            tokio::spawn(async move {
                let mut committed: Vec<(Uuid, DateTime<Utc>)> = Vec::new();
                for _ in 0..EVENTS / PRODUCERS / BATCH {
                    let mut tx = store.tenant(tenant).await.unwrap();
                    let mut ids = Vec::new();
                    for n in 0..BATCH {
                        ids.push(
                            agentry::db::outbox::append(&mut tx, "lead.created", &json!({"n": n}))
                                .await
                                .unwrap(),
                        );
                    }
                    tx.commit().await.unwrap();
                    let at = Utc::now();
                    committed.extend(ids.into_iter().map(|id| (id, at)));
                    if !pace.is_zero() {
                        tokio::time::sleep(pace).await;
                    }
                }
                committed
            })
        })
        .collect();
    let mut committed: HashMap<String, DateTime<Utc>> = HashMap::new();
    for producer in producers {
        for (id, at) in producer.await.unwrap() {
            committed.insert(webhook_id(id, endpoint_id), at);
        }
    }
    let produced = started.elapsed();
    eventually(
        Duration::from_secs(300),
        "every benchmark event",
        || async { (receiver.delivered().len() >= already + committed.len()).then_some(()) },
    )
    .await;
    let elapsed = started.elapsed();
    let seen = receiver.delivered();
    let mut latencies: Vec<f64> = seen[already..]
        .iter()
        .filter_map(|s| {
            committed
                .get(&s.webhook_id)
                .map(|at| (s.at - *at).num_microseconds().unwrap_or(0) as f64 / 1000.0)
        })
        .collect();
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "  (all {} events committed in {:.2} s: {:.0} commits of events/s)",
        committed.len(),
        produced.as_secs_f64(),
        committed.len() as f64 / produced.as_secs_f64()
    );
    Run {
        rate: committed.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
    }
}

fn server_settings() -> Vec<(&'static str, String)> {
    vec![
        ("AGENTRY__WEBHOOKS__MAX_IN_FLIGHT", CONCURRENCY.to_string()),
        (
            "AGENTRY__WEBHOOKS__MAX_IN_FLIGHT_PER_ENDPOINT",
            CONCURRENCY.to_string(),
        ),
        ("AGENTRY__DATABASE__MAX_CONNECTIONS", "16".into()),
    ]
}

#[tokio::test]
#[ignore = "a benchmark: run with --ignored --nocapture, in release"]
async fn webhook_bench() {
    let receiver = Receiver::start(Arc::new(|_, _| 200), Duration::ZERO).await;
    let plain = plain_client_rate(&receiver).await;
    println!("plain reqwest client, {CONCURRENCY} concurrent: {plain:.0} requests/s");

    let mut results = Vec::new();
    for instances in [1, 3] {
        let app = spawn_app_with(|settings| {
            settings.webhooks.dispatch = false;
            settings.database.max_connections = 16;
        })
        .await;
        let tenant = app.create_tenant("Bench Co").await;
        let endpoint_id = endpoint(&app, &tenant, &receiver.url("127.0.0.1")).await;
        let extra = server_settings();
        let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let servers: Vec<ServerProcess> = (0..instances)
            .map(|_| ServerProcess::start(&app, &extra))
            .collect();
        // Warm up: the servers are up once a first event arrives.
        let before = receiver.delivered().len();
        commit_events(&app, tenant.id, 1).await;
        eventually(Duration::from_secs(60), "warm-up", || async {
            (receiver.delivered().len() > before).then_some(())
        })
        .await;
        let pids: Vec<u32> = servers.iter().map(ServerProcess::pid).collect();
        let cpu_before = cpu_snapshot(&pids);
        let run = dispatched_run(&app, &tenant, &receiver, endpoint_id, Duration::ZERO).await;
        let cpu_after = cpu_snapshot(&pids);
        let per_delivery: Vec<String> = cpu_before
            .iter()
            .zip(cpu_after)
            .map(|(before, after)| format!("{:.3}", (after - before) * 1000.0 / EVENTS as f64))
            .collect();
        println!(
            "  CPU ms per delivery: agentry {}, PostgreSQL {}, Redis {}, producer+receiver {}",
            per_delivery[0], per_delivery[1], per_delivery[2], per_delivery[3]
        );
        println!(
            "{instances} instance(s): {:.0} deliveries/s ({:.0} % of plain), commit to 2xx p50 {:.1} ms, p99 {:.1} ms",
            run.rate,
            100.0 * run.rate / plain,
            run.p50_ms,
            run.p99_ms,
        );
        // Latency without a backlog: about 1,000 events/s, well under capacity.
        let paced = dispatched_run(
            &app,
            &tenant,
            &receiver,
            endpoint_id,
            Duration::from_millis(80),
        )
        .await;
        println!(
            "{instances} instance(s), paced at about 1,000 events/s: commit to 2xx p50 {:.1} ms, p99 {:.1} ms",
            paced.p50_ms, paced.p99_ms
        );
        results.push((instances, run, paced));
        drop(servers);
    }

    // The caps under load: a receiver taking 5 ms, 8 per endpoint per instance.
    let app = spawn_app_with(|settings| {
        settings.webhooks.dispatch = false;
        settings.database.max_connections = 16;
    })
    .await;
    let tenant = app.create_tenant("Caps Co").await;
    let slow = Receiver::start(Arc::new(|_, _| 200), Duration::from_millis(5)).await;
    endpoint(&app, &tenant, &slow.url("127.0.0.1")).await;
    let capped = [
        ("AGENTRY__WEBHOOKS__MAX_IN_FLIGHT", "64"),
        ("AGENTRY__WEBHOOKS__MAX_IN_FLIGHT_PER_ENDPOINT", "8"),
        ("AGENTRY__DATABASE__MAX_CONNECTIONS", "16"),
    ];
    let capped_servers: Vec<ServerProcess> = (0..3)
        .map(|_| ServerProcess::start(&app, &capped))
        .collect();
    commit_events(&app, tenant.id, 2_000).await;
    eventually(
        Duration::from_secs(120),
        "the capped deliveries",
        || async { (slow.delivered().len() >= 2_000).then_some(()) },
    )
    .await;
    println!(
        "caps: 3 instances x 8 per endpoint, a 5 ms receiver: at most {} requests in flight at it",
        slow.most_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
    );
    drop(capped_servers);

    // Retry lateness: every first attempt fails, the retry is due about 5 s later (the default schedule).
    let app = spawn_app_with(|settings| {
        settings.webhooks.dispatch = false;
        settings.database.max_connections = 16;
    })
    .await;
    let tenant = app.create_tenant("Lateness Co").await;
    let flaky = Receiver::start(
        Arc::new(|_, nth| if nth == 0 { 500 } else { 200 }),
        Duration::ZERO,
    )
    .await;
    let flaky_endpoint = endpoint(&app, &tenant, &flaky.url("127.0.0.1")).await;
    let extra = server_settings();
    let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _server = ServerProcess::start(&app, &extra);
    const RETRIED: usize = 500;
    let mut events = Vec::new();
    for _ in 0..RETRIED / 50 {
        events.extend(commit_events(&app, tenant.id, 50).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually(Duration::from_secs(120), "every retry", || async {
        (flaky.delivered().len() >= RETRIED).then_some(())
    })
    .await;
    let due: HashMap<Uuid, DateTime<Utc>> = rows(&app, flaky_endpoint)
        .await
        .into_iter()
        .filter(|row| row.attempt == 1)
        .filter_map(|row| row.next_attempt_at.map(|at| (row.event_id, at)))
        .collect();
    let by_id: HashMap<String, Uuid> = events
        .iter()
        .map(|e| (webhook_id(*e, flaky_endpoint), *e))
        .collect();
    let mut late: Vec<f64> = flaky
        .delivered()
        .iter()
        .filter_map(|seen| {
            let event = by_id.get(&seen.webhook_id)?;
            let due = due.get(event)?;
            Some((seen.at - *due).num_microseconds()? as f64 / 1000.0)
        })
        .collect();
    late.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "retry lateness over {} retries: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        late.len(),
        percentile(&late, 0.5),
        percentile(&late, 0.99),
        late.last().copied().unwrap_or(f64::NAN)
    );
    println!("\n| setup | deliveries/s | vs plain client | p50 / p99 commit→2xx, burst | p50 / p99, paced 1,000/s |\n| --- | --- | --- | --- | --- |");
    println!("| plain reqwest, {CONCURRENCY} concurrent, no queue | {plain:.0} | 100 % | | |");
    for (instances, run, paced) in &results {
        println!(
            "| {instances} agentry instance(s) | {:.0} | {:.0} % | {:.1} / {:.1} ms | {:.1} / {:.1} ms |",
            run.rate,
            100.0 * run.rate / plain,
            run.p50_ms,
            run.p99_ms,
            paced.p50_ms,
            paced.p99_ms
        );
    }
}
