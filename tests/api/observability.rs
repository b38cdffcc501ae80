//! The observability kit held to the real tools: every metric an instance
//! exports is catalogued (src/metrics_catalog.rs) with its help text and
//! buckets; the Grafana dashboard and the alert rules name only catalogued
//! metrics; promtool passes the rules and fires each alert from its unit
//! tests; and a real Prometheus scraping two instances after chat, webhook
//! and limiter traffic evaluates every panel query of the dashboard.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use agentry::metrics_catalog::{self, Kind};
use serde_json::{json, Value};

use crate::chat_support::{reply, site, upload_ready, visitor_token, ORIGIN};
use crate::cluster::{die_with_the_test, ServerProcess};
use crate::dispatch::{endpoint, eventually, Receiver};
use crate::helpers::{spawn_app, spawn_app_with};

const DASHBOARD: &str = include_str!("../../deploy/grafana/agentry.json");
const ALERTS: &str = include_str!("../../deploy/prometheus/alerts.yml");

fn deploy_dir(part: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(part)
}

/// Every `(panel title, query)` of the dashboard.
fn panel_queries() -> Vec<(String, String)> {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter(|panel| panel["type"] != "row")
        .flat_map(|panel| {
            let title = panel["title"].as_str().expect("a title").to_owned();
            let targets = panel["targets"].as_array().expect("targets").clone();
            assert!(!targets.is_empty(), "{title} has no query");
            targets.into_iter().map(move |target| {
                let expr = target["expr"].as_str().expect("an expr").to_owned();
                (title.clone(), expr)
            })
        })
        .collect()
}

/// The metric selectors of a PromQL expression (`name` or `name{…}`), for
/// the metrics agentry exports and Prometheus's own `up`.
fn selectors(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let mut found = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &expr[at..];
        let starts_name = (rest.starts_with("agentry_") || rest.starts_with("up{"))
            && (at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_'));
        if !starts_name {
            at += 1;
            continue;
        }
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let mut end = at + name_len;
        if expr[end..].starts_with('{') {
            end += expr[end..].find('}').expect("a closed selector") + 1;
        }
        found.push(expr[at..end].to_owned());
        at = end;
    }
    found
}

fn metric_name(selector: &str) -> &str {
    selector.split('{').next().unwrap_or(selector)
}

#[test]
fn the_dashboard_and_alert_rules_name_only_catalogued_metrics_scoped_by_job_and_instance() {
    let queries = panel_queries();
    assert!(queries.len() > 60, "{} queries", queries.len());
    for (title, expr) in &queries {
        let found = selectors(expr);
        assert!(!found.is_empty(), "{title}: no metric in {expr}");
        for selector in found {
            let name = metric_name(&selector);
            assert!(
                name == "up" || metrics_catalog::find(name).is_some(),
                "{title}: {name} is not in the metrics catalog"
            );
            assert!(
                selector.contains(r#"job=~"$job""#)
                    && selector.contains(r#"instance=~"$instance""#),
                "{title}: {selector} ignores the job and instance variables"
            );
        }
    }
    let dashboard: Value = serde_json::from_str(DASHBOARD).unwrap();
    let variables: BTreeSet<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|variable| variable["name"].as_str())
        .collect();
    assert_eq!(variables, BTreeSet::from(["datasource", "instance", "job"]));
    let alert_selectors = selectors(ALERTS);
    assert!(alert_selectors.len() > 15, "{alert_selectors:?}");
    for selector in alert_selectors {
        let name = metric_name(&selector);
        assert!(
            name == "up" || metrics_catalog::find(name).is_some(),
            "alerts.yml: {name} is not in the metrics catalog"
        );
    }
}

#[test]
fn selectors_are_read_out_of_expressions() {
    assert_eq!(
        selectors(r#"sum(rate(agentry_a_total{x="1"}[1m])) / max(agentry_b) or up{job="j"}"#),
        [r#"agentry_a_total{x="1"}"#, "agentry_b", r#"up{job="j"}"#]
    );
    assert!(selectors("sum by (scheduled_job) (vector(1))").is_empty());
}

#[tokio::test]
async fn every_exported_metric_is_catalogued_with_its_kind_help_and_buckets() {
    let app = spawn_app().await;
    let shop = site(&app, "Catalog Co").await;
    upload_ready(
        &app,
        &shop.tenant.token,
        &shop.agent_id,
        "Hours",
        "We are open 9 to 5 on weekdays.",
    )
    .await;
    let visitor = visitor_token(&app, &shop.public_key).await;
    reply(&app, &visitor, "When are you open?").await;
    reply(&app, &visitor, "I'm Cat, reach me at cat@example.org").await;
    let text = app.metrics_text().await;

    let mut families = BTreeMap::new();
    let mut helped = BTreeSet::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("#"), Some("TYPE"), Some(name), Some(kind)) => {
                families.insert(name.to_owned(), kind.to_owned());
            }
            (Some("#"), Some("HELP"), Some(name), Some(_)) => {
                helped.insert(name.to_owned());
            }
            _ => {}
        }
    }
    let ours: Vec<_> = families
        .iter()
        .filter(|(name, _)| name.starts_with("agentry_"))
        .collect();
    assert!(ours.len() > 25, "{ours:?}");
    for (name, kind) in ours {
        let metric = metrics_catalog::find(name)
            .unwrap_or_else(|| panic!("{name} is exported but not in the metrics catalog"));
        let expected = match metric.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram(_) => "histogram",
        };
        assert_eq!(kind, expected, "{name}");
        assert!(helped.contains(name), "{name} has no # HELP line");
    }
    // Each histogram's buckets are its catalog entry's.
    for line in text.lines().filter(|line| line.contains("_bucket{")) {
        let name = line.split('{').next().unwrap();
        let Some(Kind::Histogram(buckets)) = metrics_catalog::find(name).map(|m| m.kind) else {
            continue;
        };
        let le = line
            .split("le=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("a bucket bound");
        assert!(
            le == "+Inf" || buckets.iter().any(|b| le.parse::<f64>() == Ok(*b)),
            "{name}: bucket {le} is not one of {buckets:?}"
        );
    }
    // The stages a turn passes report under their own names.
    for name in [
        "agentry_chat_turn_duration_seconds",
        "agentry_retriever_query_duration_seconds",
        "agentry_finalizer_duration_seconds",
        "agentry_tool_run_duration_seconds",
        "agentry_llm_request_duration_seconds",
        "agentry_widget_session_operation_duration_seconds",
        "agentry_llm_tokens_total",
        "agentry_build_info",
    ] {
        assert!(families.contains_key(name), "{name} missing after a turn");
    }
}

/// `program` if it is on PATH, else a note that the test did not run.
fn tool(program: &str, test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        eprintln!("{test} not run: {program} is not installed (bash .ci/run installs Debian's prometheus)");
    }
    found
}

fn run(command: &mut Command) -> String {
    let output = command.output().expect("the command runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?} failed:\n{text}");
    text
}

#[test]
fn promtool_checks_the_rules_and_fires_every_alert_from_its_unit_tests() {
    let Some(promtool) = tool("promtool", "the promtool test") else {
        return;
    };
    let dir = deploy_dir("prometheus");
    let checked = run(Command::new(&promtool)
        .args(["check", "rules", "alerts.yml"])
        .current_dir(&dir));
    let rules = ALERTS.matches("- alert:").count();
    assert!(
        checked.contains(&format!("SUCCESS: {rules} rules found")),
        "{checked}"
    );
    let tested = run(Command::new(&promtool)
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(&dir));
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Each alert has a test that expects it to fire, and one that it stays quiet.
    let tests = std::fs::read_to_string(dir.join("alerts.test.yml")).unwrap();
    for alert in ALERTS
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert: "))
    {
        assert_eq!(
            tests.matches(&format!("alertname: {alert}\n")).count(),
            2,
            "{alert} is not tested both quiet and firing"
        );
    }
}

#[test]
fn the_committed_dashboard_and_alert_tests_match_their_generators() {
    run(Command::new("python3")
        .arg(deploy_dir("grafana").join("generate.py"))
        .arg("--check"));
    // The alert tests' generator reads YAML: the venv bash .ci/run makes has PyYAML.
    let python = std::env::var("AGENTRY_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_yaml = Command::new(&python)
        .args(["-c", "import yaml"])
        .status()
        .is_ok_and(|status| status.success());
    if !has_yaml {
        eprintln!("alert test generator check not run: {python} has no PyYAML");
        return;
    }
    run(Command::new(&python)
        .arg(deploy_dir("prometheus").join("generate_tests.py"))
        .arg("--check"));
}

/// A Prometheus server of Debian's package; killed when dropped.
struct Prometheus {
    child: Child,
    url: String,
    data: PathBuf,
}

impl Prometheus {
    fn start(binary: &Path, targets: &[String]) -> Self {
        let data =
            std::env::temp_dir().join(format!("agentry-prometheus-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&data).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let targets: Vec<String> = targets
            .iter()
            .map(|url| format!("'{}'", url.trim_start_matches("http://")))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: ['{}']\n\
             scrape_configs:\n  - job_name: agentry\n    static_configs:\n      - targets: [{}]\n",
            deploy_dir("prometheus").join("alerts.yml").display(),
            targets.join(", ")
        );
        let config_path = data.join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let mut command = Command::new(binary);
        die_with_the_test(&mut command);
        let child = command
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                data.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            data,
        }
    }

    async fn api(&self, client: &reqwest::Client, path: &str, query: &[(&str, &str)]) -> Value {
        let response = client
            .get(format!("{}{path}", self.url))
            .query(query)
            .send()
            .await
            .expect("prometheus answers");
        response.json().await.expect("a JSON answer")
    }

    /// The result vector of an instant query; panics when it does not parse.
    async fn query(&self, client: &reqwest::Client, expr: &str) -> Vec<Value> {
        let answer = self.api(client, "/api/v1/query", &[("query", expr)]).await;
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// A dashboard query as Grafana sends it with "All" chosen for both variables.
fn as_grafana_sends(expr: &str) -> String {
    expr.replace("$job", ".*")
        .replace("$instance", ".*")
        .replace("$__rate_interval", "1m")
}

#[tokio::test]
async fn a_real_prometheus_scraping_two_instances_answers_every_panel_query() {
    let Some(binary) = tool("prometheus", "the Prometheus test") else {
        return;
    };
    // The test process only sets up; the two server processes serve and deliver.
    let app = spawn_app_with(|settings| settings.webhooks.dispatch = false).await;
    let shop = site(&app, "Observed Co").await;
    upload_ready(
        &app,
        &shop.tenant.token,
        &shop.agent_id,
        "Hours",
        "We are open 9 to 5 on weekdays; Saturday 10 to 2.",
    )
    .await;
    let receiver = Receiver::start(Arc::new(|_, _| 200), Duration::from_millis(1)).await;
    endpoint(&app, &shop.tenant, &receiver.url("127.0.0.1")).await;
    let settings = [
        ("AGENTRY__RATE_LIMITS__ENABLED", "true"),
        ("AGENTRY__RATE_LIMITS__AUTH", "2"),
    ];
    let instances: Vec<_> = (0..2)
        .map(|_| ServerProcess::start_observed(&app, "warn,agentry=info", &settings))
        .collect();
    let prometheus = Prometheus::start(
        &binary,
        &instances
            .iter()
            .map(|(_, listeners, _)| listeners.metrics.clone())
            .collect::<Vec<_>>(),
    );
    let client = reqwest::Client::new();

    // Chat on both instances, each conversation leaving a lead (a webhook
    // event); failed sign-ins past the auth tier's limit.
    const CONVERSATIONS: usize = 6;
    for n in 0..CONVERSATIONS {
        let base = &instances[n % 2].1.api;
        let session: Value = client
            .post(format!("{base}/api/widget/session"))
            .header("origin", ORIGIN)
            .json(&json!({ "public_key": shop.public_key }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = session["token"]
            .as_str()
            .expect("a widget session")
            .to_owned();
        for text in [
            "Hello! When are you open on Saturday?".to_owned(),
            format!("I'm Ana, reach me at ana{n}@example.org"),
        ] {
            let answer = client
                .post(format!("{base}/api/widget/messages"))
                .bearer_auth(&token)
                .header("origin", ORIGIN)
                .json(&json!({ "text": text }))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 200);
        }
    }
    let mut limited = 0;
    for _ in 0..4 {
        let refused = client
            .post(format!("{}/api/v1/auth/login", instances[0].1.api))
            .json(&json!({ "email": "nobody@example.com", "password": "wrong password" }))
            .send()
            .await
            .unwrap();
        limited += usize::from(refused.status() == 429);
    }
    assert!(limited > 0, "the auth tier never limited");
    eventually(Duration::from_secs(30), "every lead delivered", || async {
        (receiver.seen().len() >= CONVERSATIONS).then_some(())
    })
    .await;

    // Prometheus has scraped both instances since the traffic.
    let delivered = r#"sum(agentry_webhook_deliveries_total{job="agentry", state="success"})"#;
    eventually(
        Duration::from_secs(30),
        "Prometheus saw the traffic",
        || async {
            let up = prometheus.query(&client, r#"sum(up{job="agentry"})"#).await;
            let deliveries = prometheus.query(&client, delivered).await;
            let value = |result: &[Value]| {
                result
                    .first()
                    .and_then(|sample| sample["value"][1].as_str())
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            (value(&up) == 2.0 && value(&deliveries) >= CONVERSATIONS as f64).then_some(())
        },
    )
    .await;
    // A couple more scrapes, so every rate has two samples after the traffic.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut exercised = BTreeSet::new();
    let mut not_exercised = BTreeSet::new();
    let queries = panel_queries();
    for (title, expr) in &queries {
        let expr = as_grafana_sends(expr);
        let result = prometheus.query(&client, &expr).await;
        let mut all_present = true;
        for selector in selectors(&expr) {
            let count = format!("count({selector})");
            all_present &= !prometheus.query(&client, &count).await.is_empty();
        }
        if all_present {
            assert!(
                !result.is_empty(),
                "{title}: every metric of `{expr}` has series, yet the query returns none"
            );
            exercised.insert(title.clone());
        } else {
            not_exercised.insert(title.clone());
        }
    }
    eprintln!(
        "{} queries; panels exercised: {}; not exercised by this traffic: {not_exercised:?}",
        queries.len(),
        exercised.len()
    );
    for panel in [
        "Requests by instance",
        "Latency",
        "Turns by channel and outcome",
        "Turn latency by channel",
        "Retriever latency",
        "Requests by provider",
        "Tool runs",
        "Outbox relay",
        "Delivery outcomes",
        "Attempt latency",
        "Decisions by tier",
        "Check latency",
        "Dependencies up",
        "PostgreSQL pool",
    ] {
        assert!(
            exercised.contains(panel),
            "{panel} was not exercised: {not_exercised:?}"
        );
    }
    // Both instances are in the per-instance panels.
    let per_instance = prometheus
        .query(
            &client,
            &as_grafana_sends(
                r#"sum by (instance) (rate(agentry_http_requests_total{job=~"$job", instance=~"$instance"}[$__rate_interval]))"#,
            ),
        )
        .await;
    assert_eq!(per_instance.len(), 2, "{per_instance:?}");

    // The alert rules load and evaluate against the real series.
    let rules = prometheus.api(&client, "/api/v1/rules", &[]).await;
    let loaded: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_array().unwrap())
        .collect();
    assert_eq!(loaded.len(), ALERTS.matches("- alert:").count());
    for rule in loaded {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
    let firing = prometheus.api(&client, "/api/v1/alerts", &[]).await;
    let firing: Vec<&str> = firing["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|alert| alert["state"] == "firing")
        .filter_map(|alert| alert["labels"]["alertname"].as_str())
        .collect();
    assert!(firing.is_empty(), "a healthy cluster fires {firing:?}");
}
