//! Line-oriented command-line tools over the pipeline's pure text rules, so
//! anyone can check them against their own cases: `agentry pii scrub` and
//! `agentry guardrails check`.
//!
//! Each input line gets exactly one JSON output line; a line that cannot be
//! read gets a JSON error line, and the rest go on.

use std::io::{self, BufRead, Write};
use std::sync::Arc;

use agentry_actors::guardrail_finalizer::{finalize_reply, AgentRules, Removals, ReplyPolicy};
use agentry_actors::guardrails::grounding::Grounding;
use agentry_actors::pii::Scrubber;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::domain::{check_system_prompt, AgentProfile};

fn error_line(code: &str, message: String) -> Value {
    json!({ "error": { "code": code, "message": message } })
}

/// Writes `answer(line)` for each line of `input`, or an error line for a line
/// that is not UTF-8.
fn each_line(
    input: impl BufRead,
    mut output: impl Write,
    mut answer: impl FnMut(&str) -> Value,
) -> io::Result<()> {
    for (number, line) in input.split(b'\n').enumerate() {
        let mut bytes = line?;
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        let result = match String::from_utf8(bytes) {
            Ok(text) => answer(&text),
            Err(_) => error_line("invalid_utf8", format!("line {} is not UTF-8", number + 1)),
        };
        writeln!(output, "{result}")?;
    }
    output.flush()
}

/// `{"text", "found": {"EMAIL": n, ..}}` for one line (only the kinds found).
pub fn scrub_line(scrubber: &Scrubber, text: &str) -> Value {
    let scrubbed = scrubber.scrub(text);
    let found: Map<String, Value> = scrubbed
        .counts
        .iter()
        .map(|(kind, count)| (kind.as_str().to_uppercase(), json!(count)))
        .collect();
    json!({ "text": scrubbed.text, "found": found })
}

/// Reads lines from `input` and writes one scrubbed JSON line for each.
pub fn scrub_lines(input: impl BufRead, output: impl Write, scrubber: &Scrubber) -> io::Result<()> {
    each_line(input, output, |text| scrub_line(scrubber, text))
}

/// One case for the finalize chain: a model reply and what it is held to.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckInput {
    pub reply: String,
    /// The passages retrieved for the turn.
    #[serde(default)]
    pub passages: Vec<String>,
    #[serde(default)]
    pub profile: AgentProfile,
    #[serde(default)]
    pub system_prompt: String,
}

impl CheckInput {
    /// The cleaned reply and what each rule removed, as a chat turn would
    /// produce them (the finalize chain and, if nothing is left, the fallback).
    pub fn check(&self) -> Result<(String, Removals), String> {
        self.profile.check()?;
        check_system_prompt(&self.system_prompt)?;
        let brief = self
            .profile
            .clone()
            .into_brief(String::new(), self.system_prompt.clone());
        let policy = ReplyPolicy {
            rules: Arc::new(AgentRules::new(&brief)),
            grounding: Grounding::new(self.passages.iter().chain(&brief.facts).map(String::as_str)),
        };
        Ok(finalize_reply(&self.reply, &policy))
    }
}

/// `{"cleaned", "removed": {"<rule>": n}}` for one JSON line of [`CheckInput`].
pub fn check_line(line: &str) -> Value {
    let input = match serde_json::from_str::<CheckInput>(line) {
        Ok(input) => input,
        Err(error) => return error_line("invalid_json", error.to_string()),
    };
    match input.check() {
        Ok((cleaned, removed)) => json!({ "cleaned": cleaned, "removed": removed }),
        Err(message) => error_line("invalid_input", message),
    }
}

/// Reads JSON lines of [`CheckInput`] and writes one result line for each.
pub fn check_lines(input: impl BufRead, output: impl Write) -> io::Result<()> {
    each_line(input, output, check_line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> Vec<Value> {
        let mut out = Vec::new();
        scrub_lines(input, &mut out, &Scrubber::default()).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn each_line_gets_one_json_line_and_a_bad_line_an_error() {
        let lines =
            run(b"mail ana@example.com or call (415) 555-2671\r\nnothing here\n\xff\xfe\nlast");
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0]["text"], "mail [EMAIL] or call [PHONE]");
        assert_eq!(lines[0]["found"], json!({ "EMAIL": 1, "PHONE": 1 }));
        assert_eq!(lines[1], json!({ "text": "nothing here", "found": {} }));
        assert_eq!(lines[2]["error"]["code"], "invalid_utf8");
        assert_eq!(lines[3]["text"], "last");
    }

    #[test]
    fn each_check_line_gets_its_cleaned_reply_or_an_error() {
        let input = concat!(
            r#"{"reply": "Our APR is 3.9%. We open at 9.", "passages": ["3.9% APR"]}"#,
            "\n",
            r#"{"reply": "Hi", "profile": {"brnd": "x"}}"#,
            "\n",
            "not json\n",
            r#"{"reply": "x", "profile": {"facts": [""]}}"#,
        );
        let mut out = Vec::new();
        check_lines(input.as_bytes(), &mut out).unwrap();
        let lines: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0],
            json!({
                "cleaned": "I can't quote financing terms here; our finance team can walk you through the options. We open at 9.",
                "removed": {"no_financing_quotes": 1}
            })
        );
        assert_eq!(lines[1]["error"]["code"], "invalid_json");
        assert!(lines[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("brnd"));
        assert_eq!(lines[2]["error"]["code"], "invalid_json");
        assert_eq!(lines[3]["error"]["code"], "invalid_input");
    }
}
