//! Webhook signatures checked by the official `standardwebhooks` Python
//! library, which we did not write. `bash .ci/run` installs it in a virtual
//! environment and sets AGENTRY_PYTHON to its interpreter; without that
//! variable the test says so and passes.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use agentry::webhook_signing::{signing_key, SignatureHeaders};
use serde_json::json;

use crate::deliveries::{receiver, Seen};
use crate::dispatch::{commit_events, eventually};
use crate::helpers::{body, spawn_app};

const VERIFY: &str = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
case = json.load(sys.stdin)
for secret in case["secrets"]:
    Webhook(secret).verify(case["body"], case["headers"])
print("verified")
"#;

/// Whether the official library accepts `headers` for `body` with every secret.
fn verified(python: &str, secrets: &[&str], body: &str, headers: &SignatureHeaders) -> bool {
    let headers: serde_json::Map<String, serde_json::Value> = headers
        .pairs()
        .iter()
        .map(|(name, value)| (name.to_string(), json!(value)))
        .collect();
    let mut child = Command::new(python)
        .args(["-c", VERIFY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the Python interpreter runs");
    let case = json!({ "secrets": secrets, "body": body, "headers": headers });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(case.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() || stderr.contains("WebhookVerificationError"),
        "the verifier itself failed: {stderr}"
    );
    output.status.success()
}

#[test]
fn the_official_standard_webhooks_library_verifies_our_signatures_also_during_a_rotation() {
    let Ok(python) = std::env::var("AGENTRY_PYTHON") else {
        eprintln!("signature test not run: set AGENTRY_PYTHON to a Python with standardwebhooks (bash .ci/run does)");
        return;
    };
    let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let new = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let body = r#"{"type":"lead.created","timestamp":"2026-12-01T12:00:00Z","data":{"id":"1"}}"#;
    let now = chrono::Utc::now().timestamp();
    let one = SignatureHeaders::sign("evt_1", now, body.as_bytes(), &[signing_key(old).unwrap()]);
    assert!(verified(&python, &[old], body, &one));
    assert!(
        !verified(&python, &[new], body, &one),
        "another secret does not verify"
    );
    let tampered = body.replace("\"1\"", "\"2\"");
    assert!(
        !verified(&python, &[old], &tampered, &one),
        "a changed body does not verify"
    );

    // While a rotated secret still signs, receivers holding either one verify.
    let both = SignatureHeaders::sign(
        "evt_2",
        now,
        body.as_bytes(),
        &[signing_key(new).unwrap(), signing_key(old).unwrap()],
    );
    assert!(verified(&python, &[new, old], body, &both));

    // An old timestamp is refused by the library (replay protection).
    let stale = SignatureHeaders::sign(
        "evt_3",
        now - 3600,
        body.as_bytes(),
        &[signing_key(old).unwrap()],
    );
    assert!(!verified(&python, &[old], body, &stale));
}

/// The `nth` (1-based) request `seen` got: its body and signature headers as sent.
async fn next_delivery(seen: &Seen, nth: usize) -> (String, SignatureHeaders) {
    eventually(Duration::from_secs(10), "a delivery", || async {
        let seen = seen.lock().unwrap();
        seen.get(nth - 1).map(|(headers, body)| {
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let signed = SignatureHeaders {
                webhook_id: header("webhook-id"),
                webhook_timestamp: header("webhook-timestamp"),
                webhook_signature: header("webhook-signature"),
                x_agentry_signature: header("x-agentry-signature"),
            };
            (body.clone(), signed)
        })
    })
    .await
}

#[tokio::test]
async fn real_deliveries_verify_with_the_secrets_the_api_returned_across_a_rotation() {
    let Ok(python) = std::env::var("AGENTRY_PYTHON") else {
        eprintln!("signature test not run: set AGENTRY_PYTHON to a Python with standardwebhooks (bash .ci/run does)");
        return;
    };
    let app = spawn_app().await;
    let tenant = app.create_tenant("Signed Co").await;
    let (url, captured) = receiver(vec![200]).await;
    let created = body(
        app.post_json(
            "/api/v1/webhook-endpoints",
            Some(&tenant.token),
            &json!({"url": url, "event_types": ["lead.created"]}),
        )
        .await,
    )
    .await;
    let first_secret = created["secret"].as_str().unwrap().to_owned();
    let endpoint = created["id"].as_str().unwrap();

    commit_events(&app, tenant.id, 1).await;
    let (body_one, signed_one) = next_delivery(&captured, 1).await;
    assert!(verified(&python, &[&first_secret], &body_one, &signed_one));
    assert!(
        !verified(
            &python,
            &["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"],
            &body_one,
            &signed_one
        ),
        "no other secret verifies"
    );

    let rotated = body(
        app.post_json(
            &format!("/api/v1/webhook-endpoints/{endpoint}/rotate-secret"),
            Some(&tenant.token),
            &json!({}),
        )
        .await,
    )
    .await;
    let second_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(second_secret, first_secret);
    commit_events(&app, tenant.id, 1).await;
    let (body_two, signed_two) = next_delivery(&captured, 2).await;
    assert_eq!(
        signed_two.webhook_signature.split(' ').count(),
        2,
        "both keys sign during the grace period"
    );
    assert!(verified(&python, &[&second_secret], &body_two, &signed_two));
    assert!(
        verified(&python, &[&first_secret], &body_two, &signed_two),
        "a receiver still on the old secret verifies during the grace period"
    );
}
