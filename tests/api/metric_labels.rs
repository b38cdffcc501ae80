//! Every label value on `/metrics` comes from a bounded set: traffic full of
//! ids, emails, phone numbers, invented paths and invented methods adds no
//! series of its own.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use uuid::Uuid;

use crate::chat_support::{reply, site, visitor_token};
use crate::helpers::spawn_app;

/// `(name, labels)` of each sample line of a Prometheus text exposition.
fn samples(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let series = line.rsplit_once(' ').map_or(line, |(series, _)| series);
            let Some((name, labels)) = series.split_once('{') else {
                return (series.to_owned(), Vec::new());
            };
            let labels = labels
                .trim_end_matches('}')
                .split("\",")
                .filter_map(|pair| pair.split_once("=\""))
                .map(|(key, value)| (key.to_owned(), value.trim_end_matches('"').to_owned()))
                .collect();
            (name.to_owned(), labels)
        })
        .collect()
}

/// What a value that names a person, a row or a request looks like.
fn looks_unbounded(value: &str) -> bool {
    let longest_digit_run = value
        .split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    Uuid::parse_str(value).is_ok()
        || value.contains('@')
        || value.contains("://")
        || value.contains('?')
        || longest_digit_run >= 7
        || value.parse::<std::net::IpAddr>().is_ok()
}

#[tokio::test]
async fn metric_labels_stay_bounded_whatever_the_traffic() {
    let app = spawn_app().await;
    let shop = site(&app, "Labels Co").await;
    let visitor = visitor_token(&app, &shop.public_key).await;
    reply(
        &app,
        &visitor,
        "I'm Lena, lena.label@example.com, +1 415 555 0123",
    )
    .await;
    for n in 0..20 {
        let agent = format!("/api/v1/agents/{}", Uuid::new_v4());
        app.get(&agent, &shop.tenant.token).await;
        app.get(&format!("/no/such/page/{n}?email=x{n}@example.com"), "")
            .await;
        let invented = Method::from_bytes(format!("BREW{n}").as_bytes()).unwrap();
        app.request(invented, "/api/v1/agents", Some(&shop.tenant.token))
            .send()
            .await
            .unwrap();
    }

    let text = app.metrics_text().await;
    let mut values: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, labels) in samples(&text) {
        for (key, value) in labels {
            assert!(
                !looks_unbounded(&value),
                "{name}{{{key}=\"{value}\"}}: an unbounded label value"
            );
            values.entry(key).or_default().insert(value);
        }
    }
    let methods = &values["method"];
    assert!(
        methods.is_subset(
            &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "other"]
                .into_iter()
                .map(String::from)
                .collect()
        ),
        "{methods:?}"
    );
    // The traffic above did reach the counters, under its templates.
    assert!(
        values["route"].contains("/api/v1/agents/{agent_id}"),
        "{:?}",
        values["route"]
    );
    assert!(
        methods.contains("other"),
        "the invented methods were counted: {methods:?}"
    );
    for (key, seen) in &values {
        // Route templates are many but fixed; every other label is a short list.
        let bound = if key == "route" { 200 } else { 40 };
        assert!(
            seen.len() <= bound,
            "label {key} has {} values: {seen:?}",
            seen.len()
        );
    }
}
