//! Line-oriented command-line tools over the pipeline's pure text rules, so
//! anyone can check them against their own cases: `agentry pii scrub`.
//!
//! Each input line gets exactly one JSON output line; a line that cannot be
//! read as text gets a JSON error line, and the rest go on.

use std::io::{self, BufRead, Write};

use agentry_actors::pii::Scrubber;
use serde_json::{json, Map, Value};

fn error_line(code: &str, message: String) -> Value {
    json!({ "error": { "code": code, "message": message } })
}

/// Reads lines from `input` and writes `{"text", "found": {"EMAIL": n, ..}}`
/// for each (only the kinds found are listed).
pub fn scrub_lines(
    input: impl BufRead,
    mut output: impl Write,
    scrubber: &Scrubber,
) -> io::Result<()> {
    for (number, line) in input.split(b'\n').enumerate() {
        let mut bytes = line?;
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        let result = match String::from_utf8(bytes) {
            Ok(text) => {
                let scrubbed = scrubber.scrub(&text);
                let found: Map<String, Value> = scrubbed
                    .counts
                    .iter()
                    .map(|(kind, count)| (kind.as_str().to_uppercase(), json!(count)))
                    .collect();
                json!({ "text": scrubbed.text, "found": found })
            }
            Err(_) => error_line("invalid_utf8", format!("line {} is not UTF-8", number + 1)),
        };
        writeln!(output, "{result}")?;
    }
    output.flush()
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
}
