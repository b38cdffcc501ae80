//! The command line: `loadtest chat …`, its options and the parsing of their values.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::client::BaseUrl;

#[derive(Parser, Debug)]
#[command(
    name = "loadtest",
    version,
    about = "Load generator for agentry: seeds a tenant through the HTTP API, drives widget chat turns and writes a report"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Visitors chatting with one agent through widget sessions.
    Chat(ChatArgs),
    /// N agentry instances behind nginx, under a scenario's load and
    /// optional faults; reports what happened to requests and webhook events.
    Cluster(ClusterArgs),
}

/// What the cluster is put under.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Widget chat turns answered from the knowledge base.
    Chat,
    /// A burst of chat turns that each capture a lead: one tool call and one
    /// webhook event per turn, delivered to a receiver loadtest runs.
    Webhooks,
    /// New widget sessions from one hot client IP and from many IPs, on a
    /// tenant with the default limits: what the cluster admits.
    Ratelimit,
    /// All of it at once, and dashboard reads.
    Mixed,
}

impl Scenario {
    pub fn label(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Webhooks => "webhooks",
            Self::Ratelimit => "ratelimit",
            Self::Mixed => "mixed",
        }
    }
}

/// Whether the private Redis of `--restart-redis-after` keeps its data.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// No RDB, no AOF: a restart loses every key (streams, groups, sessions, limits).
    None,
    /// Append-only file, fsync every second; a clean restart keeps every key.
    Aof,
}

#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// agentry instances behind the balancer.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub instances: u32,

    #[arg(long, value_enum, default_value_t = Scenario::Mixed)]
    pub scenario: Scenario,

    /// Length of the measured window (faults happen in it).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Load before the measured window, not counted.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Persistent client connections to the balancer, shared out among the
    /// scenario's kinds of traffic.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub connections: u32,

    /// Widget sessions each chat connection cycles through.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub visitors_per_connection: u32,

    /// Knowledge-base documents to seed.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..=2000))]
    pub docs: u32,

    /// SIGKILL one instance this far into the measured window.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub kill_one_after: Option<Duration>,

    /// Restart Redis this far into the window. loadtest then runs a private
    /// redis-server of its own (the shared one is never restarted).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub restart_redis_after: Option<Duration>,

    /// Whether that Redis keeps its data across the restart.
    #[arg(long, value_enum, default_value_t = Persistence::None)]
    pub redis_persistence: Persistence,

    /// How long Redis stays down.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub redis_down_for: Duration,

    /// Terminate every PostgreSQL session of the cluster's database
    /// (pg_terminate_backend) this far into the window.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub cut_postgres_after: Option<Duration>,

    /// Make the webhook receiver answer slower than the instances' attempt
    /// deadline this far into the window, for --receiver-fault-for.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub slow_receiver_after: Option<Duration>,

    /// Make the webhook receiver answer 500 this far into the window, for --receiver-fault-for.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub failing_receiver_after: Option<Duration>,

    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub receiver_fault_for: Duration,

    /// After the window, how long to wait for every event to be delivered.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// A request taking longer counts as a `timeout` error.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Write the JSON report here, and the markdown summary beside it (`.md`).
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,

    /// Owner connection to PostgreSQL; the run creates and drops its own database there.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/agentry"
    )]
    pub database_url: String,

    /// Redis the instances share (its keys under the run's prefix are removed afterwards).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

    /// The agentry binary to start, instead of `cargo build --release --bin agentry`.
    #[arg(long, value_name = "PATH")]
    pub agentry_bin: Option<PathBuf>,

    /// The nginx binary (default: nginx on PATH or /usr/sbin/nginx, installed
    /// from Debian's package when missing and running as root).
    #[arg(long, value_name = "PATH")]
    pub nginx_bin: Option<PathBuf>,

    /// Seed of the generated documents and questions.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl ClusterArgs {
    /// The faults asked for, at their offsets into the window.
    pub fn fault_times(&self) -> Vec<(&'static str, Duration)> {
        [
            ("kill_instance", self.kill_one_after),
            ("restart_redis", self.restart_redis_after),
            ("cut_postgres", self.cut_postgres_after),
            ("slow_receiver", self.slow_receiver_after),
            ("failing_receiver", self.failing_receiver_after),
        ]
        .into_iter()
        .filter_map(|(name, at)| Some((name, at?)))
        .collect()
    }

    /// Checks the options against each other; the message is a usage error.
    pub fn validate(&self) -> Result<(), String> {
        if self.duration.is_zero() {
            return Err("--duration must be longer than zero".into());
        }
        if self.timeout.is_zero() {
            return Err("--timeout must be longer than zero".into());
        }
        for (name, at) in self.fault_times() {
            if at >= self.duration {
                return Err(format!(
                    "the {name} fault at {at:?} is not inside the {:?} window (--duration)",
                    self.duration
                ));
            }
        }
        if self.kill_one_after.is_some() && self.instances < 2 {
            return Err("--kill-one-after needs at least 2 --instances: one must survive".into());
        }
        let receiver_faults = [self.slow_receiver_after, self.failing_receiver_after];
        if receiver_faults.iter().any(Option::is_some)
            && matches!(self.scenario, Scenario::Chat | Scenario::Ratelimit)
        {
            return Err(
                "receiver faults need webhook traffic: --scenario webhooks or mixed".into(),
            );
        }
        if self.connections < self.scenario_lanes() {
            return Err(format!(
                "--scenario {} needs at least {} --connections",
                self.scenario.label(),
                self.scenario_lanes()
            ));
        }
        Ok(())
    }

    /// Kinds of traffic the scenario runs at once (each needs a connection).
    fn scenario_lanes(&self) -> u32 {
        match self.scenario {
            Scenario::Chat | Scenario::Webhooks => 1,
            Scenario::Ratelimit => 2,
            Scenario::Mixed => 5,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ChatArgs {
    /// A running agentry (repeat for several instances behind no balancer:
    /// connections are spread over them). Without it, loadtest starts its own
    /// agentry on a fresh database and removes it afterwards.
    #[arg(long = "base-url", value_name = "URL", value_parser = BaseUrl::parse)]
    pub base_urls: Vec<BaseUrl>,

    /// The metrics listener (`metrics.bind`) of each --base-url instance, for
    /// the server-side latency figures; /metrics is not on the public port.
    /// Without it (and with --base-url) those figures are left out.
    #[arg(long = "metrics-url", value_name = "URL", value_parser = BaseUrl::parse)]
    pub metrics_urls: Vec<BaseUrl>,

    /// Knowledge-base documents to seed.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..=2000))]
    pub docs: u32,

    /// Visitors (widget sessions), spread over the connections round robin.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub visitors: u32,

    /// Persistent HTTP/1.1 connections, each with one request in flight.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub connections: u32,

    /// Length of the measured window (e.g. 15s, 500ms, 2m).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Load before the measured window, not counted.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Turns per visitor session before the visitor opens a fresh one (0: never).
    #[arg(long, default_value_t = 0)]
    pub turns: u32,

    /// Ask for Server-Sent Events (`Accept: text/event-stream`) instead of JSON.
    #[arg(long)]
    pub sse: bool,

    /// Decide every request's rate limits in Redis, with the load-test
    /// tenant's tiers raised by the operator API so that none refuses: the
    /// cost of limiting, not its effect. Without it the server it starts
    /// runs with limits off.
    #[arg(long)]
    pub rate_limits: bool,

    /// Write the JSON report here, and the markdown summary beside it (`.md`).
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,

    /// Owner connection to PostgreSQL: reads pg_stat_database; with no
    /// --base-url also creates and drops the run's database. With --base-url,
    /// its database is the one measured.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/agentry"
    )]
    pub database_url: String,

    /// Redis of the self-started server: its keys (under the run's own prefix) are removed afterwards.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

    /// Operator who creates the load-test tenant.
    #[arg(long, default_value = "operator@demo.agentry.test")]
    pub operator_email: String,

    #[arg(long, default_value = "operator-password-change-me")]
    pub operator_password: String,

    /// Skip the baseline (a bare axum handler served in this process).
    #[arg(long)]
    pub no_baseline: bool,

    /// Length of the baseline's measured window.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub baseline_duration: Duration,

    /// A turn taking longer counts as a `timeout` error (its connection is reopened).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Longest wait for the seeded documents to be ingested.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub ingest_timeout: Duration,

    /// The agentry binary to start, instead of `cargo build --release --bin agentry`.
    #[arg(long, value_name = "PATH")]
    pub agentry_bin: Option<PathBuf>,

    /// Seed of the generated documents and questions.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl ChatArgs {
    /// Checks the options against each other; the message is a usage error.
    pub fn validate(&self) -> Result<(), String> {
        if self.duration.is_zero() {
            return Err("--duration must be longer than zero".into());
        }
        if self.timeout.is_zero() {
            return Err("--timeout must be longer than zero".into());
        }
        if !self.no_baseline && self.baseline_duration.is_zero() {
            return Err(
                "--baseline-duration must be longer than zero (or pass --no-baseline)".into(),
            );
        }
        if self.connections > self.visitors {
            return Err(format!(
                "--connections ({}) is more than --visitors ({}): a visitor never has two turns in flight, so a connection needs at least one visitor of its own",
                self.connections, self.visitors
            ));
        }
        if self.operator_email.trim().is_empty() || self.operator_password.is_empty() {
            return Err("--operator-email and --operator-password must not be empty".into());
        }
        Ok(())
    }
}

/// Parses a duration: a number and a unit, `ms`, `s`, `m` or `h` (`15s`,
/// `500ms`, `2m`, `1.5s`). A bare number is refused rather than guessed.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds_per_unit = match unit.trim() {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "" => {
            return Err(format!(
                "{text:?} has no unit: write e.g. 15s, 500ms, 2m or 1h"
            ))
        }
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ms, s, m or h"
            ))
        }
    };
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(format!(
            "{text:?} is not a duration: write e.g. 15s, 500ms, 2m or 1h"
        ));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: write e.g. 15s, 500ms, 2m or 1h"))?;
    let seconds = value * seconds_per_unit;
    if !seconds.is_finite() || seconds > 365.0 * 86_400.0 {
        return Err(format!("{text:?} is too long"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_ms_s_m_and_h() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(" 3s "), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_say_what_is_wrong() {
        assert!(parse_duration("15").unwrap_err().contains("no unit"));
        assert!(parse_duration("15x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("s").unwrap_err().contains("not a duration"));
        assert!(parse_duration("").unwrap_err().contains("no unit"));
        assert!(parse_duration("1..2s").is_err());
        assert!(parse_duration(".5s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("99999999h")
            .unwrap_err()
            .contains("too long"));
    }

    fn chat(args: &[&str]) -> Result<ChatArgs, clap::Error> {
        let mut argv = vec!["loadtest", "chat"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Command::Chat(args) => args,
            Command::Cluster(_) => unreachable!("parsed `chat`"),
        })
    }

    fn cluster(args: &[&str]) -> Result<ClusterArgs, clap::Error> {
        let mut argv = vec!["loadtest", "cluster"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Command::Cluster(args) => args,
            Command::Chat(_) => unreachable!("parsed `cluster`"),
        })
    }

    #[test]
    fn the_documented_cluster_command_line_parses() {
        let args = cluster(&[
            "--instances",
            "3",
            "--scenario",
            "mixed",
            "--duration",
            "30s",
            "--kill-one-after",
            "10s",
            "--restart-redis-after",
            "10s",
            "--report",
            "/tmp/c.json",
        ])
        .unwrap();
        assert_eq!(args.instances, 3);
        assert_eq!(args.scenario, Scenario::Mixed);
        assert_eq!(
            args.fault_times(),
            vec![
                ("kill_instance", Duration::from_secs(10)),
                ("restart_redis", Duration::from_secs(10))
            ]
        );
        assert_eq!(args.redis_persistence, Persistence::None);
        assert!(args.validate().is_ok());
    }

    #[test]
    fn cluster_faults_must_fall_inside_the_window_and_fit_the_scenario() {
        let args = cluster(&["--duration", "10s", "--kill-one-after", "10s"]).unwrap();
        assert!(args.validate().unwrap_err().contains("not inside"));
        let args = cluster(&["--instances", "1", "--kill-one-after", "5s"]).unwrap();
        assert!(args.validate().unwrap_err().contains("survive"));
        let args = cluster(&["--scenario", "chat", "--slow-receiver-after", "5s"]).unwrap();
        assert!(args.validate().unwrap_err().contains("webhook traffic"));
        let args = cluster(&["--connections", "3"]).unwrap();
        assert!(args.validate().unwrap_err().contains("at least 5"));
        assert_eq!(
            cluster(&["--scenario", "bogus"]).unwrap_err().exit_code(),
            2
        );
        assert_eq!(cluster(&["--instances", "0"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn the_documented_command_line_parses() {
        let args = chat(&[
            "--base-url",
            "http://127.0.0.1:8080",
            "--base-url",
            "http://127.0.0.1:8081/",
            "--docs",
            "40",
            "--visitors",
            "256",
            "--connections",
            "64",
            "--duration",
            "15s",
            "--sse",
            "--report",
            "/tmp/r.json",
        ])
        .unwrap();
        assert_eq!(args.base_urls.len(), 2);
        assert_eq!(args.base_urls[1].authority(), "127.0.0.1:8081");
        assert_eq!(args.duration, Duration::from_secs(15));
        assert!(args.sse);
        assert_eq!(args.turns, 0);
        assert_eq!(args.warmup, Duration::from_secs(3));
        assert!(args.validate().is_ok());
    }

    #[test]
    fn usage_errors_are_clap_errors_or_validation_messages() {
        let error = chat(&["--duration", "15"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert_eq!(chat(&["--docs", "0"]).unwrap_err().exit_code(), 2);
        assert_eq!(
            chat(&["--base-url", "https://x"]).unwrap_err().exit_code(),
            2
        );
        let args = chat(&["--visitors", "4", "--connections", "8"]).unwrap();
        assert!(args.validate().unwrap_err().contains("--connections"));
        let args = chat(&["--duration", "0s"]).unwrap();
        assert!(args.validate().is_err());
    }
}
