//! The report: one JSON document, and a markdown summary of it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Percentiles of a latency histogram (recorded in microseconds), in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    /// None for an empty histogram.
    pub fn of(histogram: &Histogram<u64>) -> Option<Self> {
        if histogram.is_empty() {
            return None;
        }
        let ms = |micros: u64| round(micros as f64 / 1000.0, 3);
        Some(Self {
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p95_ms: ms(histogram.value_at_quantile(0.95)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            max_ms: ms(histogram.max()),
            mean_ms: round(histogram.mean() / 1000.0, 3),
        })
    }
}

pub fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// `part / turns`, or None without turns.
pub fn per_turn(part: f64, turns: u64) -> Option<f64> {
    (turns > 0).then(|| round(part / turns as f64, 3))
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CpuPerTurn {
    pub agentry: Option<f64>,
    pub postgres: Option<f64>,
    pub redis: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub kernel: String,
}

impl Machine {
    pub fn this() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let version = std::fs::read_to_string("/proc/version").unwrap_or_default();
        Self {
            cores,
            kernel: kernel_of(&version),
        }
    }
}

/// "Linux version 6.1.0-18-amd64 (…) #1 SMP …" → "Linux 6.1.0-18-amd64".
pub fn kernel_of(proc_version: &str) -> String {
    let words: Vec<&str> = proc_version.split_whitespace().collect();
    match words.as_slice() {
        [os, "version", release, ..] => format!("{os} {release}"),
        _ => proc_version.trim().chars().take(60).collect(),
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub mode: &'static str,
    pub base_urls: Vec<String>,
    /// loadtest started the server itself (fresh database).
    pub self_started: bool,
    /// The self-started server decided rate limits (tiers raised, none refusing).
    pub rate_limits: bool,
    pub docs: usize,
    pub chunks: u64,
    pub visitors: usize,
    pub connections: usize,
    /// The measured window as it really lasted.
    pub duration_s: f64,
    pub warmup_s: f64,
    /// Turns per session before a fresh one (0: never).
    pub turns_per_session: u32,
    pub turns: u64,
    pub turns_per_s: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub mean_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_delta_p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_delta_p99_ms: Option<f64>,
    /// Kind → count over the window, and `total`.
    pub errors: BTreeMap<String, u64>,
    pub sessions_opened: u64,
    pub pg_database: String,
    pub pg_transactions_per_turn: Option<f64>,
    pub pg_commits_per_turn: Option<f64>,
    pub cpu_ms_per_turn: CpuPerTurn,
    /// Time the guardrail finalizer spent per turn (its mean per piece times
    /// pieces per turn), from /metrics: what the finalize chain adds to a turn.
    pub guardrail_ms_per_turn: Option<f64>,
    /// Mean over the window of every `*_duration_seconds` series, in ms.
    pub stage_latency_ms: BTreeMap<String, f64>,
    /// Observations behind each mean.
    pub stage_counts: BTreeMap<String, u64>,
    pub baseline_rps: Option<f64>,
    pub baseline_p50_ms: Option<f64>,
    pub baseline_p99_ms: Option<f64>,
    pub ratio_to_baseline: Option<f64>,
    pub started_at: String,
    pub machine: Machine,
    /// How the figures were taken, and anything that went wrong while taking them.
    pub notes: Vec<String>,
    /// `loadtest cluster`: the instances, the balancer and each kind of traffic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::ClusterFigures>,
    /// `loadtest cluster`: webhook events published, delivered, duplicated, lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<crate::cluster::Events>,
    /// `loadtest cluster`: what each fault did to the requests in flight.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<crate::cluster::FaultReport>,
}

/// Error counts with their `total`.
pub fn errors_with_total(mut errors: BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let total = errors.values().sum();
    errors.insert("total".into(), total);
    errors
}

/// `report.json` → `report.md`; a path without extension gets `.md` added.
pub fn markdown_path(json: &Path) -> PathBuf {
    if json.extension().is_some() {
        json.with_extension("md")
    } else {
        let mut path = json.as_os_str().to_owned();
        path.push(".md");
        PathBuf::from(path)
    }
}

pub fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "–".into(), |v| format!("{v:.2}"))
}

impl Report {
    pub fn write(&self, path: &Path) -> anyhow::Result<PathBuf> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("could not create {}", dir.display()))?;
        }
        let json = serde_json::to_string_pretty(self)? + "\n";
        std::fs::write(path, json)
            .with_context(|| format!("could not write {}", path.display()))?;
        let md = markdown_path(path);
        std::fs::write(&md, self.markdown())
            .with_context(|| format!("could not write {}", md.display()))?;
        Ok(md)
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# loadtest {} ({}), {}\n",
            self.scenario, self.mode, self.started_at
        );
        let server = if self.self_started {
            format!(
                "{} (self-started, fresh database)",
                self.base_urls.join(", ")
            )
        } else {
            self.base_urls.join(", ")
        };
        let mut row = |name: &str, value: String| {
            let _ = writeln!(out, "| {name} | {value} |");
        };
        row("figure", "value".into());
        row("---", "---".into());
        row("server", server);
        if self.self_started {
            let limits = match (self.rate_limits, self.cluster.is_some()) {
                (true, true) => {
                    "on (the load tenant's tiers raised; the limiter tenant's at the defaults)"
                }
                (true, false) => "on (decided in Redis, tiers raised so none refuses)",
                (false, _) => "off",
            };
            row("rate limits", limits.to_owned());
        }
        row(
            "machine",
            format!("{} cores, {}", self.machine.cores, self.machine.kernel),
        );
        row(
            "documents / chunks",
            format!("{} / {}", self.docs, self.chunks),
        );
        let sessions = if self.cluster.is_some() {
            "widget sessions shared out over the chat and lead connections, reopened when lost"
                .to_owned()
        } else if self.turns_per_session == 0 {
            "one session each".to_owned()
        } else {
            format!(
                "a fresh session every {} turns, {} opened in the window",
                self.turns_per_session, self.sessions_opened
            )
        };
        row(
            "visitors / connections",
            format!("{} / {}; {sessions}", self.visitors, self.connections),
        );
        row(
            "window",
            format!(
                "{:.2} s after {:.1} s of warm-up",
                self.duration_s, self.warmup_s
            ),
        );
        row(
            "turns",
            format!("{} ({:.1} per second)", self.turns, self.turns_per_s),
        );
        row(
            "latency p50 / p95 / p99 / max",
            format!(
                "{} / {} / {} / {} ms",
                ms(self.p50_ms),
                ms(self.p95_ms),
                ms(self.p99_ms),
                ms(self.max_ms)
            ),
        );
        if self.mode == "sse" {
            row(
                "first delta p50 / p99",
                format!(
                    "{} / {} ms",
                    ms(self.first_delta_p50_ms),
                    ms(self.first_delta_p99_ms)
                ),
            );
        }
        let total = self.errors.get("total").copied().unwrap_or(0);
        let kinds: Vec<String> = self
            .errors
            .iter()
            .filter(|(kind, _)| kind.as_str() != "total")
            .map(|(kind, count)| format!("{kind} {count}"))
            .collect();
        row(
            "errors",
            if kinds.is_empty() {
                total.to_string()
            } else {
                format!("{total} ({})", kinds.join(", "))
            },
        );
        row(
            "PostgreSQL per turn",
            format!(
                "{} transactions, {} commits (database {})",
                ms(self.pg_transactions_per_turn),
                ms(self.pg_commits_per_turn),
                self.pg_database
            ),
        );
        row(
            "CPU per turn",
            format!(
                "agentry {} ms, PostgreSQL {} ms, Redis {} ms",
                ms(self.cpu_ms_per_turn.agentry),
                ms(self.cpu_ms_per_turn.postgres),
                ms(self.cpu_ms_per_turn.redis)
            ),
        );
        row(
            "guardrail chain per turn",
            match self.guardrail_ms_per_turn {
                Some(chain) => format!("{chain:.3} ms (finalizer stage, from /metrics)"),
                None => "not measured".into(),
            },
        );
        match (self.baseline_rps, self.ratio_to_baseline) {
            (Some(rps), Some(ratio)) => row(
                "baseline (bare axum handler)",
                format!(
                    "{rps:.0} requests/s, p50 {} ms; turns/s are {:.2} % of it",
                    ms(self.baseline_p50_ms),
                    ratio * 100.0
                ),
            ),
            _ => row("baseline (bare axum handler)", "not run".into()),
        }
        if !self.stage_latency_ms.is_empty() {
            let _ = writeln!(
                out,
                "\n## Server-side latency (mean over the window, from /metrics)\n"
            );
            let _ = writeln!(out, "| series | mean ms | count |\n| --- | ---: | ---: |");
            for (series, mean) in &self.stage_latency_ms {
                let count = self.stage_counts.get(series).copied().unwrap_or(0);
                let _ = writeln!(out, "| `{series}` | {mean:.3} | {count} |");
            }
        }
        if let Some(cluster) = &self.cluster {
            cluster.markdown(&mut out);
        }
        if let Some(events) = &self.events {
            let _ = writeln!(out, "\n## Webhook events\n");
            let _ = writeln!(
                out,
                "| published | delivered | duplicates | lost | unknown | receiver refused / late | bad signatures | drained in |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
            );
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} / {} | {} | {:.1} s |",
                events.published,
                events.delivered,
                events.duplicates,
                events.lost,
                events.unknown,
                events.receiver_refused,
                events.receiver_late,
                events.bad_signatures,
                events.drain_s
            );
        }
        if !self.faults.is_empty() {
            let _ = writeln!(out, "\n## Faults\n");
            let _ = writeln!(
                out,
                "| fault | at | what was done | requests failed | recovered after | turns/s before / during / after | p50 ms before / during / after |\n| --- | ---: | --- | --- | ---: | --- | --- |"
            );
            for fault in &self.faults {
                let failed: Vec<String> = fault
                    .failed
                    .iter()
                    .flat_map(|(lane, kinds)| {
                        kinds
                            .iter()
                            .map(move |(kind, n)| format!("{lane} {kind} {n}"))
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "| {} | {:.1} s | {} | {} | {:.1} s | {:.0} / {:.0} / {:.0} | {} / {} / {} |",
                    fault.kind,
                    fault.at_s,
                    fault.detail,
                    if failed.is_empty() {
                        "0".to_owned()
                    } else {
                        format!("{} ({})", fault.failed_total, failed.join(", "))
                    },
                    fault.recovered_after_s,
                    fault.before.turns_per_s,
                    fault.during.turns_per_s,
                    fault.after.turns_per_s,
                    ms(fault.before.p50_ms),
                    ms(fault.during.p50_ms),
                    ms(fault.after.p50_ms)
                );
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(out, "\n## Notes\n");
            for note in &self.notes {
                let _ = writeln!(out, "- {note}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::new_histogram;

    #[test]
    fn percentiles_come_out_in_milliseconds() {
        let mut histogram = new_histogram();
        for micros in 1..=1000u64 {
            histogram.record(micros * 100).unwrap(); // 0.1 ms … 100 ms
        }
        let latency = Latency::of(&histogram).unwrap();
        assert!((latency.p50_ms - 50.0).abs() < 0.1, "{latency:?}");
        assert!((latency.p95_ms - 95.0).abs() < 0.1, "{latency:?}");
        assert!((latency.p99_ms - 99.0).abs() < 0.1, "{latency:?}");
        assert!((latency.max_ms - 100.0).abs() < 0.1, "{latency:?}");
        assert!((latency.mean_ms - 50.05).abs() < 0.1, "{latency:?}");
        assert_eq!(Latency::of(&new_histogram()), None);
    }

    #[test]
    fn per_turn_figures_and_totals() {
        assert_eq!(per_turn(10.0, 4), Some(2.5));
        assert_eq!(per_turn(10.0, 0), None);
        assert_eq!(round(1.23456, 2), 1.23);
        let errors = errors_with_total(BTreeMap::from([
            ("timeout".to_owned(), 2),
            ("status_503".to_owned(), 3),
        ]));
        assert_eq!(errors["total"], 5);
        assert_eq!(errors_with_total(BTreeMap::new())["total"], 0);
    }

    #[test]
    fn paths_and_kernels() {
        assert_eq!(
            markdown_path(Path::new("/tmp/lt/report.json")),
            PathBuf::from("/tmp/lt/report.md")
        );
        assert_eq!(
            markdown_path(Path::new("/tmp/lt/report")),
            PathBuf::from("/tmp/lt/report.md")
        );
        assert_eq!(
            kernel_of("Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org) (gcc) #1 SMP"),
            "Linux 6.1.0-18-amd64"
        );
        assert_eq!(kernel_of("odd"), "odd");
    }

    #[test]
    fn the_summary_names_every_figure() {
        let report = Report {
            scenario: "chat",
            mode: "sse",
            base_urls: vec!["http://127.0.0.1:1".into()],
            self_started: true,
            rate_limits: true,
            docs: 40,
            chunks: 550,
            visitors: 256,
            connections: 64,
            duration_s: 15.0,
            warmup_s: 3.0,
            turns_per_session: 0,
            turns: 1500,
            turns_per_s: 100.0,
            p50_ms: Some(1.0),
            p95_ms: Some(2.0),
            p99_ms: Some(3.0),
            max_ms: Some(4.0),
            mean_ms: Some(1.2),
            first_delta_p50_ms: Some(0.5),
            first_delta_p99_ms: Some(0.9),
            errors: errors_with_total(BTreeMap::from([("timeout".to_owned(), 1)])),
            sessions_opened: 0,
            pg_database: "agentry_load_x".into(),
            pg_transactions_per_turn: Some(2.0),
            pg_commits_per_turn: Some(2.0),
            cpu_ms_per_turn: CpuPerTurn {
                agentry: Some(0.4),
                postgres: Some(0.3),
                redis: Some(0.05),
            },
            guardrail_ms_per_turn: Some(0.02),
            stage_latency_ms: BTreeMap::from([(
                "a_duration_seconds{stage=\"x\"}".to_owned(),
                0.25,
            )]),
            stage_counts: BTreeMap::from([("a_duration_seconds{stage=\"x\"}".to_owned(), 1500)]),
            baseline_rps: Some(40000.0),
            baseline_p50_ms: Some(0.1),
            baseline_p99_ms: Some(0.5),
            ratio_to_baseline: Some(0.0025),
            started_at: "2026-01-01T00:00:00Z".into(),
            machine: Machine {
                cores: 2,
                kernel: "Linux 6".into(),
            },
            notes: vec!["a note".into()],
            cluster: None,
            events: None,
            faults: Vec::new(),
        };
        let md = report.markdown();
        for needle in [
            "1500 (100.0 per second)",
            "1.00 / 2.00 / 3.00 / 4.00 ms",
            "first delta p50 / p99 | 0.50 / 0.90 ms",
            "1 (timeout 1)",
            "2.00 transactions",
            "agentry 0.40 ms",
            "40000 requests/s",
            "0.25 % of it",
            "`a_duration_seconds{stage=\"x\"}` | 0.250 | 1500",
            "- a note",
        ] {
            assert!(md.contains(needle), "{needle:?} missing from\n{md}");
        }
        let json = serde_json::to_value(&report).unwrap();
        for field in [
            "scenario",
            "mode",
            "base_urls",
            "docs",
            "chunks",
            "visitors",
            "connections",
            "duration_s",
            "turns",
            "turns_per_s",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "max_ms",
            "errors",
            "pg_transactions_per_turn",
            "pg_commits_per_turn",
            "cpu_ms_per_turn",
            "guardrail_ms_per_turn",
            "stage_latency_ms",
            "baseline_rps",
            "ratio_to_baseline",
            "started_at",
            "machine",
            "first_delta_p50_ms",
            "first_delta_p99_ms",
        ] {
            assert!(json.get(field).is_some(), "{field} missing");
        }
        assert_eq!(json["cpu_ms_per_turn"]["redis"], 0.05);
        assert_eq!(json["machine"]["cores"], 2);
    }
}
