//! Three `agentry` server processes on one PostgreSQL database and one Redis
//! prefix deliver 2,000 events while one of them is killed with SIGKILL.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentry::webhook_delivery::webhook_id;
use uuid::Uuid;

use crate::dispatch::{commit_events, endpoint, eventually, Receiver};
use crate::helpers::{recordings_dir, spawn_app_with, test_settings, TestApp};

/// Where a server process listens: its API and its metrics, as base URLs.
pub struct Listeners {
    pub api: String,
    pub metrics: String,
}

/// A server process of the real binary; killed (SIGKILL) when dropped.
pub struct ServerProcess(Child);

impl ServerProcess {
    /// `agentry serve` on the app's database and Redis prefix, with `extra` settings.
    pub fn start(app: &TestApp, extra: &[(&str, &str)]) -> Self {
        Self(command(app, extra).spawn().expect("agentry starts"))
    }

    /// [`Self::start`] on a port the server picks itself; returns its base URL
    /// once it listens (a port picked beforehand may be taken by then).
    pub fn start_listening(app: &TestApp, extra: &[(&str, &str)]) -> (Self, String) {
        let (server, url, _log) = Self::start_logging(app, "warn,agentry=info", extra);
        (server, url)
    }

    /// [`Self::start_listening`] with the log `filter`, and every log line
    /// the process writes, as it writes them.
    pub fn start_logging(
        app: &TestApp,
        filter: &str,
        extra: &[(&str, &str)],
    ) -> (Self, String, Arc<Mutex<Vec<String>>>) {
        let (server, listeners, log) = Self::start_observed(app, filter, extra);
        (server, listeners.api, log)
    }

    /// [`Self::start_logging`], with the metrics listener's URL too (both
    /// on ports the server picks).
    pub fn start_observed(
        app: &TestApp,
        filter: &str,
        extra: &[(&str, &str)],
    ) -> (Self, Listeners, Arc<Mutex<Vec<String>>>) {
        let mut command = command(app, extra);
        command
            .env("AGENTRY__HTTP__BIND", "127.0.0.1:0")
            .env("AGENTRY__METRICS__BIND", "127.0.0.1:0")
            .env("RUST_LOG", filter)
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("agentry starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let (listening, address) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = log.clone();
        // Keeps draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut listening = Some(listening);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("agentry listening") {
                    let entry = serde_json::from_str::<serde_json::Value>(&line).ok();
                    let field = |name: &str| {
                        entry
                            .as_ref()
                            .and_then(|entry| entry[name].as_str())
                            .map(|address| format!("http://{address}"))
                    };
                    if let (Some(sender), Some(api), Some(metrics)) =
                        (listening.take(), field("address"), field("metrics"))
                    {
                        let _ = sender.send(Listeners { api, metrics });
                    }
                }
                kept.lock().unwrap().push(line);
            }
        });
        let listeners = address
            .recv_timeout(Duration::from_secs(120))
            .expect("the server process listens");
        (Self(child), listeners, log)
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGTERM, as an orchestrator stops an instance; whether it exited
    /// successfully within `limit`.
    /// Async, so the test's own servers (a collector) keep answering meanwhile.
    pub async fn terminate(&mut self, limit: Duration) -> bool {
        let signalled = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .is_ok_and(|status| status.success());
        let deadline = std::time::Instant::now() + limit;
        while signalled && std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.success();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The command line of a server process on the app's database and Redis prefix.
fn command(app: &TestApp, extra: &[(&str, &str)]) -> Command {
    let mut url = url::Url::parse(test_settings().database.url.expose()).unwrap();
    url.set_path(&format!("/{}", app.database_name()));
    let mut command = Command::new(env!("CARGO_BIN_EXE_agentry"));
    command
        .arg("serve")
        // The runner's own RUST_LOG would win over the filter a test sets.
        .env_remove("RUST_LOG")
        .env("AGENTRY_ENV", "test")
        .env("DATABASE_URL", url.to_string())
        .env("AGENTRY__REDIS__PREFIX", &app.settings.redis.prefix)
        .env("REDIS_URL", app.settings.redis.url.expose())
        .env("AGENTRY__HTTP__BIND", "127.0.0.1:0")
        .env(
            "AGENTRY__RECORDINGS__PATH",
            recordings_dir(app.database_name()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    die_with_the_test(&mut command);
    for (name, value) in extra {
        command.env(name, value);
    }
    command
}

/// Has the kernel kill `command`'s process when the test's thread ends: a
/// test process killed mid-test (nextest cancelling the run after a failure)
/// would otherwise leave its servers running, holding ports and every file
/// descriptor they inherited (a build lock among them).
pub fn die_with_the_test(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe, and the closure allocates nothing.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Success rows per event, as the owner reads them.
async fn successes(app: &TestApp, endpoint: Uuid) -> HashMap<Uuid, usize> {
    let mut owner = app.owner_connection().await;
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT event_id, count(*) FROM agent_webhook_deliveries
         WHERE endpoint_id = $1 AND outcome = 'success' GROUP BY event_id",
    )
    .bind(endpoint)
    .fetch_all(&mut owner)
    .await
    .unwrap();
    rows.into_iter().map(|(id, n)| (id, n as usize)).collect()
}

#[tokio::test]
async fn three_instances_deliver_every_event_although_one_is_killed_mid_run() {
    // The test process only sets up and commits; the three servers deliver.
    let app = spawn_app_with(|settings| settings.webhooks.dispatch = false).await;
    let tenant = app.create_tenant("Cluster Co").await;
    let receiver = Receiver::start(Arc::new(|_, _| 200), Duration::from_millis(2)).await;
    let endpoint = endpoint(&app, &tenant, &receiver.url("127.0.0.1")).await;
    let settings = [
        ("AGENTRY__WEBHOOKS__TIMEOUT_SECS", "2"),
        ("AGENTRY__WEBHOOKS__RECLAIM_AFTER_SECS", "8"),
        ("AGENTRY__WEBHOOKS__MAX_IN_FLIGHT", "16"),
    ];
    let mut servers: Vec<ServerProcess> = (0..3)
        .map(|_| ServerProcess::start(&app, &settings))
        .collect();

    let mut events = Vec::new();
    for _ in 0..10 {
        events.extend(commit_events(&app, tenant.id, 100).await);
    }
    eventually(Duration::from_secs(60), "deliveries under way", || async {
        (receiver.delivered().len() >= 500).then_some(())
    })
    .await;
    // Mid-run, with entries in its hands: no shutdown, no ack.
    servers[0].kill();
    let killed_at = receiver.delivered().len();
    for _ in 0..10 {
        events.extend(commit_events(&app, tenant.id, 100).await);
    }
    assert_eq!(events.len(), 2_000);
    assert!(killed_at < 2_000, "the kill came mid-run");

    let expected: HashMap<String, Uuid> = events
        .iter()
        .map(|event| (webhook_id(*event, endpoint), *event))
        .collect();
    eventually(Duration::from_secs(90), "every event delivered", || async {
        let delivered: HashSet<String> = receiver
            .delivered()
            .into_iter()
            .map(|seen| seen.webhook_id)
            .collect();
        expected
            .keys()
            .all(|id| delivered.contains(id))
            .then_some(())
    })
    .await;
    // Let the survivors record what they were finishing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(servers);

    let seen = receiver.delivered();
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for request in &seen {
        assert!(
            expected.contains_key(&request.webhook_id),
            "a request with an unknown webhook-id: {}",
            request.webhook_id
        );
        *per_id.entry(request.webhook_id.clone()).or_default() += 1;
        // A duplicate is the same event: its body carries the same data as the first.
        assert_eq!(request.body["type"], "lead.created");
    }
    assert_eq!(per_id.len(), 2_000, "every event at least once");

    // The record agrees with the receiver: every event it got has a success
    // row, and rows never exceed requests. Only what the killed instance had
    // in flight (at most its 16) may have reached the receiver unrecorded.
    let recorded = successes(&app, endpoint).await;
    assert_eq!(recorded.len(), 2_000, "a success row for every event");
    let mut unrecorded = 0;
    for (id, requests) in &per_id {
        let rows = recorded.get(&expected[id]).copied().unwrap_or(0);
        assert!(
            rows <= *requests,
            "{rows} rows for {requests} requests of {id}"
        );
        unrecorded += requests - rows;
    }
    assert!(
        unrecorded <= 16,
        "{unrecorded} requests reached the receiver without a row"
    );
    eprintln!(
        "cluster: {} requests for 2000 events ({} duplicates, {unrecorded} unrecorded), kill after {killed_at}",
        seen.len(),
        seen.len() - 2_000
    );
}
