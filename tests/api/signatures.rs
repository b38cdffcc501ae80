//! Webhook signatures checked by the official `standardwebhooks` Python
//! library, which we did not write. `bash .ci/run` installs it in a virtual
//! environment and sets AGENTRY_PYTHON to its interpreter; without that
//! variable the test says so and passes.

use std::io::Write as _;
use std::process::{Command, Stdio};

use agentry::webhook_signing::{signing_key, SignatureHeaders};
use serde_json::json;

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
