//! The eval suite: cases in `evals/*.jsonl` that hold the guardrails and the
//! PII scrubber to written expectations. `cargo test` runs them
//! (tests/api/evals.rs) and `agentry eval` prints the pass rate per rule.
//!
//! A file whose name starts with `pii` holds scrubber cases:
//! `{"name", "rule", "text", "expected", "found": {"EMAIL": n, ..}, "region"?}`.
//! Every other file holds finalize cases: `{"name", "rule", "reply",
//! "passages"?, "profile"?, "system_prompt"?}` with any of `"expected"` (the
//! exact cleaned reply), `"removed"` (the exact counts per rule), `"contains"`
//! and `"excludes"` (substrings the cleaned reply must or must not hold).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use agentry_actors::pii::{Region, Scrubber};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::domain::AgentProfile;
use crate::text_tools::{scrub_line, CheckInput};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FinalizeCase {
    name: String,
    rule: String,
    reply: String,
    #[serde(default)]
    passages: Vec<String>,
    #[serde(default)]
    profile: AgentProfile,
    #[serde(default)]
    system_prompt: String,
    expected: Option<String>,
    removed: Option<BTreeMap<String, usize>>,
    #[serde(default)]
    contains: Vec<String>,
    #[serde(default)]
    excludes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PiiCase {
    name: String,
    rule: String,
    text: String,
    expected: String,
    found: Map<String, Value>,
    /// `US` (the default), another region code, or `none`.
    region: Option<String>,
}

/// One case's outcome.
#[derive(Debug)]
pub struct Outcome {
    pub file: String,
    pub name: String,
    pub rule: String,
    /// Why it failed; `None` when it passed.
    pub failure: Option<String>,
}

/// All outcomes of a run.
#[derive(Debug, Default)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
}

impl Report {
    pub fn failures(&self) -> impl Iterator<Item = &Outcome> {
        self.outcomes.iter().filter(|o| o.failure.is_some())
    }

    pub fn all_passed(&self) -> bool {
        self.failures().next().is_none()
    }

    /// Passed and total per rule.
    pub fn by_rule(&self) -> BTreeMap<&str, (usize, usize)> {
        let mut rules: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for outcome in &self.outcomes {
            let entry = rules.entry(outcome.rule.as_str()).or_default();
            entry.0 += usize::from(outcome.failure.is_none());
            entry.1 += 1;
        }
        rules
    }

    /// The pass-rate table, then each failure.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "| rule | passed | cases | pass rate |");
        let _ = writeln!(out, "|---|---:|---:|---:|");
        let (mut passed, mut total) = (0, 0);
        for (rule, (ok, all)) in self.by_rule() {
            let _ = writeln!(out, "| {rule} | {ok} | {all} | {} |", percent(ok, all));
            passed += ok;
            total += all;
        }
        let _ = writeln!(
            out,
            "| **all** | {passed} | {total} | {} |",
            percent(passed, total)
        );
        for failure in self.failures() {
            let _ = writeln!(
                out,
                "\nFAILED {} / {}: {}",
                failure.file,
                failure.name,
                failure.failure.as_deref().unwrap_or_default()
            );
        }
        out
    }
}

fn percent(passed: usize, total: usize) -> String {
    if total == 0 {
        return "n/a".into();
    }
    format!("{:.1} %", passed as f64 * 100.0 / total as f64)
}

/// Runs every `*.jsonl` file in `dir`, in name order.
pub fn run(dir: &Path) -> anyhow::Result<Report> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .collect();
    files.sort();
    anyhow::ensure!(
        !files.is_empty(),
        "no *.jsonl eval files in {}",
        dir.display()
    );
    let mut report = Report::default();
    for path in files {
        let file = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let scrubber_file = file.starts_with("pii");
        for (number, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            // A malformed case is a bug in the suite: say where, and stop.
            let located = |e: serde_json::Error| anyhow::anyhow!("{file}:{}: {e}", number + 1);
            let (name, rule, failure) = if scrubber_file {
                let case: PiiCase = serde_json::from_str(line).map_err(located)?;
                let failure = run_pii(&case);
                (case.name, case.rule, failure)
            } else {
                let case: FinalizeCase = serde_json::from_str(line).map_err(located)?;
                let failure = run_finalize(&case);
                (case.name, case.rule, failure)
            };
            report.outcomes.push(Outcome {
                file: file.clone(),
                name,
                rule,
                failure,
            });
        }
    }
    Ok(report)
}

/// Why a finalize case failed, if it did.
fn run_finalize(case: &FinalizeCase) -> Option<String> {
    let input = CheckInput {
        reply: case.reply.clone(),
        passages: case.passages.clone(),
        profile: case.profile.clone(),
        system_prompt: case.system_prompt.clone(),
    };
    match input.check() {
        Err(message) => Some(format!("the case is invalid: {message}")),
        Ok((cleaned, removals)) => {
            let removed: BTreeMap<String, usize> = removals
                .iter()
                .map(|(rule, count)| (rule.to_owned(), count))
                .collect();
            let mut problems = Vec::new();
            if let Some(expected) = &case.expected {
                if &cleaned != expected {
                    problems.push(format!("cleaned {cleaned:?}, expected {expected:?}"));
                }
            }
            if let Some(expected) = &case.removed {
                if &removed != expected {
                    problems.push(format!("removed {removed:?}, expected {expected:?}"));
                }
            }
            for wanted in &case.contains {
                if !cleaned.contains(wanted.as_str()) {
                    problems.push(format!("{cleaned:?} lacks {wanted:?}"));
                }
            }
            for unwanted in &case.excludes {
                if cleaned.to_lowercase().contains(&unwanted.to_lowercase()) {
                    problems.push(format!("{cleaned:?} still holds {unwanted:?}"));
                }
            }
            if case.expected.is_none()
                && case.removed.is_none()
                && case.contains.is_empty()
                && case.excludes.is_empty()
            {
                problems.push("the case expects nothing".into());
            }
            (!problems.is_empty()).then(|| problems.join("; "))
        }
    }
}

/// Why a scrubber case failed, if it did.
fn run_pii(case: &PiiCase) -> Option<String> {
    let region = match case.region.as_deref().unwrap_or("US") {
        none if none.eq_ignore_ascii_case("none") => Ok(None),
        code => code
            .to_ascii_uppercase()
            .parse::<Region>()
            .map(Some)
            .map_err(|_| format!("the case is invalid: region {code:?}")),
    };
    match region {
        Err(message) => Some(message),
        Ok(region) => {
            let answer = scrub_line(&Scrubber::new(region), &case.text);
            let mut problems = Vec::new();
            if answer["text"] != Value::String(case.expected.clone()) {
                problems.push(format!(
                    "scrubbed {}, expected {:?}",
                    answer["text"], case.expected
                ));
            }
            if answer["found"] != Value::Object(case.found.clone()) {
                problems.push(format!(
                    "found {}, expected {}",
                    answer["found"],
                    Value::Object(case.found.clone())
                ));
            }
            (!problems.is_empty()).then(|| problems.join("; "))
        }
    }
}
