//! Prometheus text exposition: just enough to read the `_sum` and `_count`
//! of every `*_duration_seconds` histogram (or summary) and turn two scrapes
//! into the mean latency over the window between them.

use std::collections::BTreeMap;

/// One sample line: `name{labels} value [timestamp]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    /// In the order written.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses the sample lines of an exposition; comments, blank lines and lines
/// that do not parse are skipped (a scrape should never fail the run).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(after_brace)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Parses `a="x",b="y\"z"}` and returns the labels and what follows the `}`.
fn parse_labels(mut text: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start_matches([' ', ',']);
        if let Some(after) = text.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = text.find('=')?;
        let key = text[..eq].trim().to_owned();
        text = text[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = text.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                other => value.push(other),
            }
        };
        text = &text[end + 1..];
        labels.push((key, value));
    }
}

/// `_sum` and `_count` of one series.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SumCount {
    pub sum: f64,
    pub count: f64,
}

/// The `*_duration_seconds` series of a scrape, keyed `name{k="v",…}` (labels
/// sorted, without the `_sum`/`_count` suffix).
pub fn duration_series(samples: &[Sample]) -> BTreeMap<String, SumCount> {
    let mut series: BTreeMap<String, SumCount> = BTreeMap::new();
    for sample in samples {
        let (base, is_sum) = if let Some(base) = sample.name.strip_suffix("_sum") {
            (base, true)
        } else if let Some(base) = sample.name.strip_suffix("_count") {
            (base, false)
        } else {
            continue;
        };
        if !base.ends_with("_duration_seconds") {
            continue;
        }
        let entry = series.entry(series_key(base, &sample.labels)).or_default();
        if is_sum {
            entry.sum += sample.value;
        } else {
            entry.count += sample.value;
        }
    }
    series
}

fn series_key(name: &str, labels: &[(String, String)]) -> String {
    let mut labels: Vec<&(String, String)> = labels.iter().collect();
    labels.sort();
    if labels.is_empty() {
        return name.to_owned();
    }
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// Adds another instance's series into `total`.
pub fn accumulate(total: &mut BTreeMap<String, SumCount>, more: &BTreeMap<String, SumCount>) {
    for (key, value) in more {
        let entry = total.entry(key.clone()).or_default();
        entry.sum += value.sum;
        entry.count += value.count;
    }
}

/// The mean over a window, and how many observations it is from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowMean {
    pub mean_ms: f64,
    pub count: u64,
}

/// Per series, the mean of the observations made between the two scrapes.
/// Series with no new observation are left out, and so are series whose
/// counters went down (the server restarted in between: the delta means nothing).
pub fn window_means(
    before: &BTreeMap<String, SumCount>,
    after: &BTreeMap<String, SumCount>,
) -> BTreeMap<String, WindowMean> {
    let mut means = BTreeMap::new();
    for (key, now) in after {
        let then = before.get(key).copied().unwrap_or_default();
        let count = now.count - then.count;
        let sum = now.sum - then.sum;
        if count < 0.5 || sum < 0.0 {
            continue;
        }
        means.insert(
            key.clone(),
            WindowMean {
                mean_ms: sum / count * 1000.0,
                count: count.round() as u64,
            },
        );
    }
    means
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = r#"# HELP agentry_stage_duration_seconds time per stage
# TYPE agentry_stage_duration_seconds histogram
agentry_stage_duration_seconds_bucket{stage="rag_retriever",le="0.001"} 3
agentry_stage_duration_seconds_bucket{stage="rag_retriever",le="+Inf"} 10
agentry_stage_duration_seconds_sum{stage="rag_retriever"} 0.05
agentry_stage_duration_seconds_count{stage="rag_retriever"} 10
agentry_http_request_duration_seconds_sum{route="/api/widget/messages",method="POST"} 1.5
agentry_http_request_duration_seconds_count{method="POST",route="/api/widget/messages"} 100
agentry_http_requests_total{method="GET",route="/readyz",status="200"} 4
odd_duration_seconds_sum{path="a \"quoted\", {braced} value"} 2 1700000000000
odd_duration_seconds_count{path="a \"quoted\", {braced} value"} 4
plain_duration_seconds_sum 3
plain_duration_seconds_count 6
this line is garbage
"#;

    #[test]
    fn sample_lines_parse_with_escaped_labels_and_timestamps() {
        let samples = parse(SCRAPE);
        assert_eq!(samples.len(), 11);
        let odd = samples
            .iter()
            .find(|s| s.name == "odd_duration_seconds_sum")
            .unwrap();
        assert_eq!(
            odd.labels,
            vec![("path".to_owned(), "a \"quoted\", {braced} value".to_owned())]
        );
        assert_eq!(odd.value, 2.0);
        let inf = samples
            .iter()
            .find(|s| s.labels.iter().any(|(_, v)| v == "+Inf"))
            .unwrap();
        assert_eq!(inf.value, 10.0);
        assert!(parse_line("name{unterminated=\"x} 1").is_none());
        assert!(parse_line("name 12abc").is_none());
    }

    #[test]
    fn duration_series_are_keyed_by_sorted_labels() {
        let series = duration_series(&parse(SCRAPE));
        let http = &series
            ["agentry_http_request_duration_seconds{method=\"POST\",route=\"/api/widget/messages\"}"];
        assert_eq!(http.count, 100.0);
        assert_eq!(http.sum, 1.5);
        assert_eq!(series["plain_duration_seconds"].count, 6.0);
        assert!(!series.keys().any(|k| k.contains("requests_total")));
        assert_eq!(series.len(), 4);
    }

    #[test]
    fn window_means_come_from_deltas() {
        let before = duration_series(&parse(SCRAPE));
        let later = SCRAPE
            .replace("rag_retriever\"} 0.05", "rag_retriever\"} 0.25")
            .replace("rag_retriever\"} 10", "rag_retriever\"} 110")
            .replace(
                "plain_duration_seconds_count 6",
                "plain_duration_seconds_count 2",
            );
        let after = duration_series(&parse(&later));
        let means = window_means(&before, &after);
        let stage = means["agentry_stage_duration_seconds{stage=\"rag_retriever\"}"];
        assert_eq!(stage.count, 100);
        assert!((stage.mean_ms - 2.0).abs() < 1e-9);
        // Unchanged series and counters that went down are left out.
        assert_eq!(means.len(), 1);

        let mut total = BTreeMap::new();
        accumulate(&mut total, &after);
        accumulate(&mut total, &after);
        assert_eq!(total["plain_duration_seconds"].sum, 6.0);
    }
}
