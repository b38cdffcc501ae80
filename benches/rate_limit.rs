//! Rate-limit decisions through Redis, written to the "Rate limits" section's
//! figures in `docs/BENCHMARKS.md` by hand.
//!
//! 64 concurrent callers decide through a real [`RateLimiter`] (its
//! RateLimitShard actors and the GCRA script) against the Redis at
//! REDIS_URL (default 127.0.0.1:6379) for a few seconds, over 10,000 keys
//! with a limit none reaches; then `redis-benchmark` runs the same script
//! with 64 clients at pipeline 16: the limit of this box. Prints decisions
//! per second, p50 / p99 decision latency and the ratio.
//! `cargo bench --bench rate_limit`; RATE_LIMIT_BENCH_SECS sets the length.
//! Built but not run by `cargo test`.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentry::bus::RedisBus;
use agentry::configuration::{RateLimitSettings, RedisSettings};
use agentry::rate_limit::{Ask, Limit, RateLimiter, WhenUnavailable, GCRA_SCRIPT};

const CALLERS: usize = 64;
const KEYS: usize = 10_000;
const LIMIT: Limit = Limit {
    per_minute: 10_000_000,
};

fn settings() -> RateLimitSettings {
    RateLimitSettings {
        enabled: true,
        shards: 4,
        auth: 5,
        admin: 5,
        chat: 20,
        upload: 15,
        standard: 60,
        provider_webhooks: 100,
        widget_sessions: 30,
        widget_messages: 60,
        api_tokens: 120,
        privacy: 10,
        fail_closed: vec!["auth".into()],
        overrides_refresh_secs: 5,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// `redis-benchmark` running the script with the same concurrency at pipeline 16.
fn redis_benchmark(url: &url::Url, requests: u64) -> Option<f64> {
    let limit = LIMIT;
    let output = Command::new("redis-benchmark")
        .args([
            "-h",
            url.host_str().unwrap_or("127.0.0.1"),
            "-p",
            &url.port().unwrap_or(6379).to_string(),
            "-c",
            &CALLERS.to_string(),
            "-P",
            "16",
            "-n",
            &requests.to_string(),
            "-r",
            &KEYS.to_string(),
            "-q",
            "EVAL",
            GCRA_SCRIPT,
            "1",
            "agentry-bench:{rl:__rand_int__}:gcra",
            &limit.interval().to_string(),
            &limit.window().to_string(),
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    // "EVAL ...: 241000.00 requests per second, p50=..."
    let figure = text
        .split("requests per second")
        .next()?
        .rsplit(|c: char| c.is_whitespace() || c == ':')
        .find(|word| !word.is_empty())?;
    figure.trim().parse().ok()
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|arg| arg == "--list" || arg == "--test") {
        // Built by `cargo test --all-targets`: nothing to check without Redis load.
        return;
    }
    let secs: u64 = std::env::var("RATE_LIMIT_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let bus = RedisBus::connect(&RedisSettings {
        url: agentry_actors::Secret::new(url.clone()),
        prefix: format!("agentry-bench-{}", uuid::Uuid::new_v4().simple()),
        pool_size: 4,
        stream_max_len: 1000,
    })
    .expect("Redis settings");
    bus.ping().await.expect("Redis answers");
    let limiter = Arc::new(RateLimiter::start(bus, settings()).await.expect("limiter"));
    let keys: Arc<Vec<String>> = Arc::new(
        (0..KEYS)
            .map(|n| limiter.key("bench", &n.to_string()))
            .collect(),
    );
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let callers: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let (limiter, keys) = (limiter.clone(), keys.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = caller;
                while Instant::now() < deadline {
                    let asked = Instant::now();
                    let decision = limiter
                        .decide(Ask {
                            tier: "bench",
                            key: keys[n % KEYS].clone(),
                            limit: LIMIT,
                            when_unavailable: WhenUnavailable::Local,
                        })
                        .await;
                    assert!(decision.allowed && !decision.unchecked);
                    latencies.push(asked.elapsed());
                    n += CALLERS;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for caller in callers {
        latencies.extend(caller.await.unwrap());
    }
    let took = started.elapsed();
    latencies.sort();
    let rate = latencies.len() as f64 / took.as_secs_f64();
    println!(
        "limiter: {} decisions in {:.2} s: {:.0} decisions/s, p50 {:.3} ms, p99 {:.3} ms ({CALLERS} callers, 4 shards)",
        latencies.len(),
        took.as_secs_f64(),
        rate,
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
    );
    let parsed = url::Url::parse(&url).expect("REDIS_URL");
    match redis_benchmark(&parsed, (rate as u64 * 3).max(100_000)) {
        Some(limit) => println!(
            "redis-benchmark, same script, {CALLERS} clients, pipeline 16: {limit:.0}/s; the limiter reaches {:.0} % of it",
            rate / limit * 100.0
        ),
        None => println!("redis-benchmark did not run (not installed?)"),
    }
    limiter.stop();
}
