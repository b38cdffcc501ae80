//! The cluster report's figures, cut from the lanes' timestamped samples:
//! per lane over the window, per fault before / during / after it, and what
//! the limiter admitted for the hot key.

use std::collections::BTreeMap;

use serde::Serialize;

use super::lanes::{LaneKind, Outcome, Sample};
use crate::report::round;

/// One lane over the measured window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LaneFigures {
    pub connections: usize,
    pub requests: u64,
    pub ok: u64,
    /// 429s of a lane that probes the limiter.
    pub refused: u64,
    /// Kind → count, and `total`.
    pub errors: BTreeMap<String, u64>,
    pub ok_per_s: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// A window of milliseconds since the lanes started: `[from, to)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub from: u32,
    pub to: u32,
}

impl Window {
    fn contains(self, at_ms: u32) -> bool {
        (self.from..self.to).contains(&at_ms)
    }

    fn seconds(self) -> f64 {
        f64::from(self.to.saturating_sub(self.from)) / 1000.0
    }

    fn of(samples: &[Sample], window: Window) -> impl Iterator<Item = &Sample> {
        samples.iter().filter(move |s| window.contains(s.at_ms))
    }
}

/// The ok samples' latency percentiles in the window.
pub fn latency(samples: &[Sample], window: Window) -> Option<crate::report::Latency> {
    let mut histogram = crate::driver::new_histogram();
    for sample in Window::of(samples, window).filter(|s| s.outcome == Outcome::Ok) {
        histogram.saturating_record(u64::from(sample.micros.max(1)));
    }
    crate::report::Latency::of(&histogram)
}

/// Percentile `q` of the ok samples' latency, in ms.
fn percentile(micros: &mut [u32], q: f64) -> Option<f64> {
    if micros.is_empty() {
        return None;
    }
    micros.sort_unstable();
    let rank = ((q * micros.len() as f64).ceil() as usize).clamp(1, micros.len()) - 1;
    Some(round(f64::from(micros[rank]) / 1000.0, 3))
}

fn ok_latencies<'a>(samples: impl Iterator<Item = &'a Sample>) -> Vec<u32> {
    samples
        .filter(|s| s.outcome == Outcome::Ok)
        .map(|s| s.micros)
        .collect()
}

pub fn lane_figures(samples: &[Sample], connections: usize, window: Window) -> LaneFigures {
    let mut figures = LaneFigures {
        connections,
        requests: 0,
        ok: 0,
        refused: 0,
        errors: BTreeMap::new(),
        ok_per_s: 0.0,
        p50_ms: None,
        p99_ms: None,
    };
    for sample in Window::of(samples, window) {
        figures.requests += 1;
        match &sample.outcome {
            Outcome::Ok => figures.ok += 1,
            Outcome::Refused => figures.refused += 1,
            Outcome::Error(kind) => *figures.errors.entry(kind.clone()).or_default() += 1,
        }
    }
    figures.errors = crate::report::errors_with_total(figures.errors);
    figures.ok_per_s = round(figures.ok as f64 / window.seconds().max(1e-9), 1);
    let mut latencies = ok_latencies(Window::of(samples, window));
    figures.p50_ms = percentile(&mut latencies, 0.50);
    figures.p99_ms = percentile(&mut latencies, 0.99);
    figures
}

/// A phase around a fault: ok requests per second and their median, over
/// the chat-turn lanes (what a visitor feels).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Phase {
    pub turns_per_s: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub errors: u64,
}

fn phase(samples: &[&Sample], window: Window) -> Phase {
    if window.to <= window.from {
        return Phase {
            turns_per_s: 0.0,
            p50_ms: None,
            p99_ms: None,
            errors: 0,
        };
    }
    let in_window: Vec<&Sample> = samples
        .iter()
        .copied()
        .filter(|s| window.contains(s.at_ms))
        .collect();
    let mut latencies = ok_latencies(in_window.iter().copied());
    let ok = latencies.len();
    Phase {
        turns_per_s: round(ok as f64 / window.seconds().max(1e-9), 1),
        p50_ms: percentile(&mut latencies, 0.5),
        p99_ms: percentile(&mut latencies, 0.99),
        errors: in_window
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Error(_)))
            .count() as u64,
    }
}

/// What one fault did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultReport {
    pub kind: &'static str,
    /// Seconds into the measured window it began, and how long it lasted
    /// (0 for a SIGKILL or a cut: the damage is done at once).
    pub at_s: f64,
    pub lasted_s: f64,
    /// What was done, as the runner saw it.
    pub detail: String,
    /// Failed requests from its start until `settle_s` after its end, by
    /// lane and kind: what the fault cost.
    pub failed: BTreeMap<String, BTreeMap<String, u64>>,
    pub failed_total: u64,
    /// From the fault's start to the last failure it explains (0: none).
    pub recovered_after_s: f64,
    /// Chat turns (chat and lead lanes) in the seconds before, during, and after.
    pub before: Phase,
    pub during: Phase,
    pub after: Phase,
}

/// When a fault happened, in ms since the lanes started.
#[derive(Clone, Debug)]
pub struct FaultTime {
    pub kind: &'static str,
    pub detail: String,
    pub start_ms: u32,
    pub end_ms: u32,
}

/// How long after a fault's end failures are still put down to it: an
/// instance's death is noticed by nginx on the next requests, pools
/// reconnect with backoff.
pub const SETTLE_MS: u32 = 5_000;
/// The phases compared around a fault, and the gap between its end and
/// the phase after it.
const PHASE_MS: u32 = 5_000;
const AFTER_GAP_MS: u32 = 2_000;

/// The fault's window of blame: from its start to SETTLE_MS after its end.
pub fn blame(fault: &FaultTime) -> Window {
    Window {
        from: fault.start_ms,
        to: fault.end_ms.saturating_add(SETTLE_MS),
    }
}

pub fn fault_report(
    fault: &FaultTime,
    lanes: &[(LaneKind, Vec<Sample>)],
    window: Window,
) -> FaultReport {
    let window_start_ms = window.from;
    // Phases are cut to the measured window.
    let clip = |from: u32, to: u32| Window {
        from: from.max(window.from),
        to: to.min(window.to).max(from.max(window.from)),
    };
    let blamed = blame(fault);
    let mut failed: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut last_failure = None;
    for (kind, samples) in lanes {
        for sample in Window::of(samples, blamed) {
            if let Outcome::Error(error) = &sample.outcome {
                *failed
                    .entry(kind.label().to_owned())
                    .or_default()
                    .entry(error.clone())
                    .or_default() += 1;
                last_failure = last_failure.max(Some(sample.at_ms));
            }
        }
    }
    let turns: Vec<&Sample> = lanes
        .iter()
        .filter(|(kind, _)| matches!(kind, LaneKind::Chat | LaneKind::Leads))
        .flat_map(|(_, samples)| samples.iter())
        .collect();
    let during_end = fault.end_ms.max(fault.start_ms + 1000);
    FaultReport {
        kind: fault.kind,
        at_s: round(
            f64::from(fault.start_ms.saturating_sub(window_start_ms)) / 1000.0,
            2,
        ),
        lasted_s: round(f64::from(fault.end_ms - fault.start_ms) / 1000.0, 2),
        detail: fault.detail.clone(),
        failed_total: failed.values().flat_map(|kinds| kinds.values()).sum(),
        failed,
        recovered_after_s: last_failure.map_or(0.0, |at| {
            round(f64::from(at.saturating_sub(fault.start_ms)) / 1000.0, 2)
        }),
        before: phase(
            &turns,
            clip(fault.start_ms.saturating_sub(PHASE_MS), fault.start_ms),
        ),
        during: phase(&turns, clip(fault.start_ms, during_end)),
        after: phase(
            &turns,
            clip(
                during_end.saturating_add(AFTER_GAP_MS),
                during_end.saturating_add(AFTER_GAP_MS + PHASE_MS),
            ),
        ),
    }
}

/// Failures in the window that no fault explains: with no fault, every
/// failure; they should be 0.
pub fn unexplained_failures(
    lanes: &[(LaneKind, Vec<Sample>)],
    faults: &[FaultTime],
    window: Window,
) -> BTreeMap<String, u64> {
    let mut unexplained = BTreeMap::new();
    for (kind, samples) in lanes {
        let count = Window::of(samples, window)
            .filter(|s| matches!(s.outcome, Outcome::Error(_)))
            .filter(|s| !faults.iter().any(|f| blame(f).contains(s.at_ms)))
            .count() as u64;
        if count > 0 {
            unexplained.insert(kind.label().to_owned(), count);
        }
    }
    unexplained
}

/// What the limiter admitted for the hot key, against what one cluster-wide
/// limit allows: a burst of the per-minute limit, then the rate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RateLimitFigures {
    pub tier: &'static str,
    pub per_minute: u32,
    /// First to last hot request, in seconds.
    pub hot_span_s: f64,
    pub hot_admitted: u64,
    pub hot_refused: u64,
    /// per_minute + per_minute × (span + 1 s) / 60: the most one limit
    /// admits, with a second's slack for the requests' own latency.
    pub hot_bound: u64,
    pub many_admitted: u64,
    pub many_refused: u64,
    /// Decisions over the run by where they were made (`redis`: cluster-wide,
    /// `local`: an instance alone while Redis was away), from /metrics.
    pub decided_by: BTreeMap<String, u64>,
}

/// The span is measured between the first and last answers, while the
/// limiter decided a request's latency earlier: a second more of rate
/// keeps the bound from failing an honest run by one.
const BOUND_SLACK_MS: u32 = 1_000;

pub fn rate_limit_figures(
    lanes: &[(LaneKind, Vec<Sample>)],
    per_minute: u32,
    decided_by: BTreeMap<String, u64>,
) -> Option<RateLimitFigures> {
    let samples_of = |wanted: LaneKind| {
        lanes
            .iter()
            .find(|(kind, _)| *kind == wanted)
            .map(|(_, samples)| samples.as_slice())
    };
    let hot = samples_of(LaneKind::LimitHot)?;
    let count = |samples: &[Sample], outcome: &Outcome| {
        samples.iter().filter(|s| &s.outcome == outcome).count() as u64
    };
    // Every hot request, warm-up included: the limit counts from the first.
    let span_ms = match (hot.first(), hot.last()) {
        (Some(first), Some(last)) => last.at_ms - first.at_ms,
        _ => 0,
    };
    let many = samples_of(LaneKind::LimitMany).unwrap_or(&[]);
    Some(RateLimitFigures {
        tier: "widget_sessions",
        per_minute,
        hot_span_s: round(f64::from(span_ms) / 1000.0, 2),
        hot_admitted: count(hot, &Outcome::Ok),
        hot_refused: count(hot, &Outcome::Refused),
        hot_bound: u64::from(per_minute)
            + (f64::from(per_minute) * f64::from(span_ms + BOUND_SLACK_MS) / 60_000.0).ceil()
                as u64,
        many_admitted: count(many, &Outcome::Ok),
        many_refused: count(many, &Outcome::Refused),
        decided_by,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: u32, micros: u32, outcome: Outcome) -> Sample {
        Sample {
            at_ms,
            micros,
            outcome,
        }
    }

    fn error(kind: &str) -> Outcome {
        Outcome::Error(kind.to_owned())
    }

    #[test]
    fn a_lane_is_cut_to_the_window() {
        let samples = vec![
            sample(500, 9_000, Outcome::Ok),
            sample(1_000, 1_000, Outcome::Ok),
            sample(1_500, 3_000, Outcome::Ok),
            sample(2_000, 1_000, error("status_502")),
            sample(2_500, 1_000, Outcome::Refused),
            sample(3_000, 9_000, Outcome::Ok),
        ];
        let figures = lane_figures(
            &samples,
            2,
            Window {
                from: 1_000,
                to: 3_000,
            },
        );
        assert_eq!((figures.requests, figures.ok, figures.refused), (4, 2, 1));
        assert_eq!(figures.errors["status_502"], 1);
        assert_eq!(figures.errors["total"], 1);
        assert_eq!(figures.ok_per_s, 1.0);
        assert_eq!(figures.p50_ms, Some(1.0));
        assert_eq!(figures.p99_ms, Some(3.0));
    }

    #[test]
    fn failures_are_put_down_to_the_fault_whose_window_holds_them() {
        let lanes = vec![(
            LaneKind::Chat,
            vec![
                sample(7_000, 2_000, Outcome::Ok),
                sample(10_100, 1_000, error("status_502")),
                sample(10_400, 1_000, error("status_502")),
                sample(12_000, 2_000, Outcome::Ok),
                sample(20_000, 1_000, error("timeout")),
            ],
        )];
        let fault = FaultTime {
            kind: "kill_instance",
            detail: "agentry-3".into(),
            start_ms: 10_000,
            end_ms: 10_000,
        };
        let report = fault_report(
            &fault,
            &lanes,
            Window {
                from: 3_000,
                to: 33_000,
            },
        );
        assert_eq!(report.at_s, 7.0);
        assert_eq!(report.failed_total, 2);
        assert_eq!(report.failed["chat"]["status_502"], 2);
        assert_eq!(report.recovered_after_s, 0.4);
        assert_eq!(report.before.turns_per_s, 0.2);
        assert_eq!(report.before.p50_ms, Some(2.0));
        assert_eq!(report.during.errors, 2);
        assert_eq!(report.after.turns_per_s, 0.0);
        let unexplained = unexplained_failures(
            &lanes,
            &[fault],
            Window {
                from: 0,
                to: 30_000,
            },
        );
        assert_eq!(unexplained, BTreeMap::from([("chat".to_owned(), 1)]));
    }

    #[test]
    fn the_hot_keys_bound_is_a_burst_then_the_rate() {
        let hot: Vec<Sample> = (0..100)
            .map(|i| {
                let outcome = if i < 40 {
                    Outcome::Ok
                } else {
                    Outcome::Refused
                };
                sample(i * 300, 500, outcome)
            })
            .collect();
        let lanes = vec![(LaneKind::LimitHot, hot)];
        let figures = rate_limit_figures(&lanes, 30, BTreeMap::new()).unwrap();
        assert_eq!(figures.hot_span_s, 29.7);
        // 30 at once, then one every 2 s over 29.7 s and a second's slack: 30 + 16.
        assert_eq!(figures.hot_bound, 46);
        assert_eq!((figures.hot_admitted, figures.hot_refused), (40, 60));
        assert_eq!(rate_limit_figures(&[], 30, BTreeMap::new()), None);
    }
}
