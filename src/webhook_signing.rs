//! Signatures of webhook deliveries.
//!
//! Standard Webhooks (what the official `standardwebhooks` libraries verify):
//! `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature:
//! v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, several space-separated
//! while a rotated secret still signs. The key is the base64 after `whsec_`.
//!
//! For receivers that want one header: `X-Agentry-Signature:
//! t=<timestamp>,v1=<hex HMAC-SHA256 of "timestamp.body">`, one `v1` per key.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const SECRET_PREFIX: &str = "whsec_";

/// The HMAC key of a `whsec_` secret.
pub fn signing_key(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or("a webhook secret starts with whsec_")?;
    BASE64
        .decode(encoded)
        .map_err(|_| "a webhook secret is whsec_ and base64".to_owned())
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// The headers that sign one delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureHeaders {
    pub webhook_id: String,
    pub webhook_timestamp: String,
    pub webhook_signature: String,
    pub x_agentry_signature: String,
}

impl SignatureHeaders {
    /// Signs `body` for `id` at `timestamp` (Unix seconds) with every key,
    /// the current one first.
    pub fn sign(id: &str, timestamp: i64, body: &[u8], keys: &[Vec<u8>]) -> Self {
        let timestamp = timestamp.to_string();
        let standard: Vec<String> = keys
            .iter()
            .map(|key| {
                let mac = hmac(
                    key,
                    &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
                );
                format!("v1,{}", BASE64.encode(mac))
            })
            .collect();
        let single: Vec<String> = keys
            .iter()
            .map(|key| {
                let mac = hmac(key, &[timestamp.as_bytes(), b".", body]);
                format!("v1={}", hex(&mac))
            })
            .collect();
        Self {
            webhook_id: id.to_owned(),
            x_agentry_signature: format!("t={timestamp},{}", single.join(",")),
            webhook_timestamp: timestamp,
            webhook_signature: standard.join(" "),
        }
    }

    /// As `(name, value)` pairs for an HTTP request.
    pub fn pairs(&self) -> [(&'static str, &str); 4] {
        [
            ("webhook-id", &self.webhook_id),
            ("webhook-timestamp", &self.webhook_timestamp),
            ("webhook-signature", &self.webhook_signature),
            ("x-agentry-signature", &self.x_agentry_signature),
        ]
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_standard_webhooks_test_vector() {
        // The example of the Standard Webhooks specification.
        let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let headers = SignatureHeaders::sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
            &[key],
        );
        assert_eq!(
            headers.webhook_signature,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(headers.x_agentry_signature.starts_with("t=1614265330,v1="));
        assert_eq!(
            headers.x_agentry_signature.len(),
            "t=1614265330,v1=".len() + 64
        );
    }

    #[test]
    fn every_key_signs_during_a_rotation() {
        let headers = SignatureHeaders::sign("evt", 1, b"{}", &[vec![1; 32], vec![2; 32]]);
        assert_eq!(headers.webhook_signature.split(' ').count(), 2);
        assert_eq!(headers.x_agentry_signature.matches("v1=").count(), 2);
        assert!(signing_key("nope").is_err());
        assert!(signing_key("whsec_***").is_err());
    }
}
