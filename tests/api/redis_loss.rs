//! Redis loses everything mid-stream (FLUSHALL, as a restart without
//! persistence would): every committed event still reaches every endpoint,
//! rebuilt from the outbox. On a private redis-server: FLUSHALL on the shared
//! one would wipe other tests' keys.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use agentry::webhook_delivery::webhook_id;
use agentry_actors::Secret;

use crate::dispatch::{commit_events, endpoint, eventually, rows, Receiver};
use crate::helpers::spawn_app_with;

/// A redis-server of the test's own, without persistence; killed on drop.
pub struct PrivateRedis {
    pub port: u16,
    child: Child,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        let redis = Self { port, child };
        eventually(Duration::from_secs(10), "the private redis", || async {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        })
        .await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn flushall(&self) {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "FLUSHALL"])
            .output()
            .expect("redis-cli runs");
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "OK");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn every_committed_event_is_delivered_although_redis_is_flushed_mid_stream() {
    let redis = PrivateRedis::start().await;
    let url = redis.url();
    let app = spawn_app_with(|settings| {
        settings.redis.url = Secret::new(url);
        settings.webhooks.retry_delays_secs = vec![1, 1, 1];
        // Few entries in hand, so the flush finds most still in the stream.
        settings.webhooks.max_in_flight = 4;
        settings.webhooks.max_in_flight_per_endpoint = 2;
    })
    .await;
    let tenant = app.create_tenant("Flush Co").await;
    let steady = Receiver::start(Arc::new(|_, _| 200), Duration::from_millis(10)).await;
    let steady_endpoint = endpoint(&app, &tenant, &steady.url("127.0.0.1")).await;
    // Fails each event's first attempt: its retry waits in the delayed set.
    let flaky = Receiver::start(
        Arc::new(|_, nth| if nth == 0 { 500 } else { 200 }),
        Duration::from_millis(10),
    )
    .await;
    let flaky_endpoint = endpoint(&app, &tenant, &flaky.url("127.0.0.1")).await;

    let mut events = commit_events(&app, tenant.id, 60).await;
    // Some retries wait in the delayed set, most events in the stream.
    eventually(Duration::from_secs(10), "retries scheduled", || async {
        let retrying = rows(&app, flaky_endpoint)
            .await
            .iter()
            .filter(|row| row.outcome == "retrying")
            .count();
        (retrying >= 3).then_some(())
    })
    .await;
    assert!(
        steady.delivered().len() < 40,
        "the flush must come mid-stream"
    );
    redis.flushall();
    events.extend(commit_events(&app, tenant.id, 40).await);

    for (receiver, endpoint) in [(&steady, steady_endpoint), (&flaky, flaky_endpoint)] {
        let missing = eventually(
            Duration::from_secs(30),
            "every event at every endpoint",
            || async {
                let delivered: std::collections::HashSet<String> = receiver
                    .delivered()
                    .into_iter()
                    .map(|s| s.webhook_id)
                    .collect();
                let missing = events
                    .iter()
                    .filter(|event| !delivered.contains(&webhook_id(**event, endpoint)))
                    .count();
                (missing == 0).then_some(missing)
            },
        )
        .await;
        assert_eq!(missing, 0);
    }
    // Duplicates are allowed, but each carries its event's own webhook-id.
    let known: std::collections::HashSet<String> = events
        .iter()
        .flat_map(|event| {
            [
                webhook_id(*event, steady_endpoint),
                webhook_id(*event, flaky_endpoint),
            ]
        })
        .collect();
    assert!(steady
        .seen()
        .iter()
        .chain(flaky.seen().iter())
        .all(|s| known.contains(&s.webhook_id)));
}
