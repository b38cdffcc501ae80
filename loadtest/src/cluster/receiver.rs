//! The tenant's webhook receiver, run by loadtest: it checks each delivery's
//! Standard Webhooks signature and counts deliveries by `webhook-id`, which
//! is stable per event and endpoint, so a repeat is a duplicate. A fault
//! makes it slow (beyond the sender's deadline) or answer 500 for a while.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How the receiver answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Behaviour {
    /// 200 at once.
    Healthy = 0,
    /// 200 after `slow_by`, past the sender's deadline: the sender has given
    /// up by then, so the delivery does not count.
    Slow = 1,
    /// 500 at once.
    Failing = 2,
}

/// What the receiver saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Answered 200 in time, by webhook-id: how many times each.
    pub acknowledged: HashMap<String, u32>,
    /// Requests of any kind.
    pub requests: u64,
    /// Answered 500 by a failing receiver.
    pub refused: u64,
    /// Held past the sender's deadline by a slow receiver.
    pub late: u64,
    /// Missing or wrong signature (401).
    pub bad_signatures: u64,
}

struct Shared {
    secret: Mutex<Option<Vec<u8>>>,
    behaviour: AtomicU8,
    slow_by: Duration,
    requests: AtomicU64,
    refused: AtomicU64,
    late: AtomicU64,
    bad_signatures: AtomicU64,
    acknowledged: Mutex<HashMap<String, u32>>,
}

/// A running receiver on a loopback port; it stops when dropped.
pub struct Receiver {
    shared: Arc<Shared>,
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// `slow_by`: how long a slow receiver takes to answer.
    pub async fn start(slow_by: Duration) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            secret: Mutex::new(None),
            behaviour: AtomicU8::new(Behaviour::Healthy as u8),
            slow_by,
            requests: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            late: AtomicU64::new(0),
            bad_signatures: AtomicU64::new(0),
            acknowledged: Mutex::new(HashMap::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("could not open the webhook receiver's port")?;
        let url = format!("http://{}/hooks", listener.local_addr()?);
        let app = Router::new()
            .route("/hooks", post(deliver))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { shared, url, task })
    }

    /// The endpoint's signing secret (`whsec_…`), known once it is created.
    pub fn set_secret(&self, secret: &str) -> anyhow::Result<()> {
        let key = BASE64
            .decode(secret.trim_start_matches("whsec_"))
            .context("the endpoint's secret is not whsec_<base64>")?;
        *lock(&self.shared.secret) = Some(key);
        Ok(())
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.shared
            .behaviour
            .store(behaviour as u8, Ordering::SeqCst);
    }

    pub fn tally(&self) -> Tally {
        Tally {
            acknowledged: lock(&self.shared.acknowledged).clone(),
            requests: self.shared.requests.load(Ordering::Relaxed),
            refused: self.shared.refused.load(Ordering::Relaxed),
            late: self.shared.late.load(Ordering::Relaxed),
            bad_signatures: self.shared.bad_signatures.load(Ordering::Relaxed),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn deliver(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(timestamp), Some(signatures)) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    ) else {
        shared.bad_signatures.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED;
    };
    let key = lock(&shared.secret).clone();
    if !key.is_some_and(|key| signed(&key, id, timestamp, &body, signatures)) {
        shared.bad_signatures.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED;
    }
    match shared.behaviour.load(Ordering::SeqCst) {
        b if b == Behaviour::Failing as u8 => {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            StatusCode::INTERNAL_SERVER_ERROR
        }
        b if b == Behaviour::Slow as u8 => {
            // Counted now: the sender hangs up at its deadline, and the
            // server then drops this handler mid-sleep.
            shared.late.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(shared.slow_by).await;
            StatusCode::OK
        }
        _ => {
            *lock(&shared.acknowledged).entry(id.to_owned()).or_default() += 1;
            StatusCode::OK
        }
    }
}

/// Whether one of the space-separated `v1,<base64>` signatures is the
/// HMAC-SHA256 of `id.timestamp.body` (Standard Webhooks).
fn signed(key: &[u8], id: &str, timestamp: &str, body: &[u8], signatures: &str) -> bool {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    signatures.split(' ').any(|signature| {
        signature
            .strip_prefix("v1,")
            .and_then(|b64| BASE64.decode(b64).ok())
            .is_some_and(|given| given.as_slice() == expected.as_slice())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(key: &[u8], id: &str, ts: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(body);
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn one_matching_signature_among_several_is_enough() {
        let key = b"0123456789abcdef0123456789abcdef";
        let good = sign(key, "msg_1", "1700000000", b"{}");
        let other = sign(
            b"another key of thirty-two bytes!",
            "msg_1",
            "1700000000",
            b"{}",
        );
        assert!(signed(key, "msg_1", "1700000000", b"{}", &good));
        assert!(signed(
            key,
            "msg_1",
            "1700000000",
            b"{}",
            &format!("{other} {good}")
        ));
        assert!(!signed(key, "msg_1", "1700000000", b"{}", &other));
        assert!(!signed(key, "msg_2", "1700000000", b"{}", &good));
        assert!(!signed(key, "msg_1", "1700000000", b"{ }", &good));
        assert!(!signed(key, "msg_1", "1700000000", b"{}", "v1,not-base64"));
    }

    #[tokio::test]
    async fn deliveries_are_counted_by_id_and_faults_change_the_answer() {
        let receiver = Receiver::start(Duration::from_millis(10)).await.unwrap();
        let secret = format!(
            "whsec_{}",
            BASE64.encode(b"0123456789abcdef0123456789abcdef")
        );
        receiver.set_secret(&secret).unwrap();
        let key = b"0123456789abcdef0123456789abcdef";
        let post = |id: &'static str, signature: String| {
            let url = receiver.url.clone();
            async move {
                let request = format!(
                    "POST {} HTTP/1.1\r\nhost: x\r\nwebhook-id: {id}\r\nwebhook-timestamp: 1\r\nwebhook-signature: {signature}\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}",
                    url.trim_start_matches("http://").split_once('/').map(|(_, p)| format!("/{p}")).unwrap()
                );
                let address = url
                    .trim_start_matches("http://")
                    .split('/')
                    .next()
                    .unwrap()
                    .to_owned();
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
                stream.write_all(request.as_bytes()).await.unwrap();
                let mut reply = String::new();
                stream.read_to_string(&mut reply).await.unwrap();
                reply.split(' ').nth(1).unwrap().to_owned()
            }
        };
        assert_eq!(post("msg_a", sign(key, "msg_a", "1", b"{}")).await, "200");
        assert_eq!(post("msg_a", sign(key, "msg_a", "1", b"{}")).await, "200");
        assert_eq!(post("msg_b", "v1,AAAA".to_owned()).await, "401");
        receiver.set_behaviour(Behaviour::Failing);
        assert_eq!(post("msg_c", sign(key, "msg_c", "1", b"{}")).await, "500");
        receiver.set_behaviour(Behaviour::Slow);
        assert_eq!(post("msg_d", sign(key, "msg_d", "1", b"{}")).await, "200");
        let tally = receiver.tally();
        assert_eq!(tally.acknowledged.get("msg_a"), Some(&2));
        assert_eq!(tally.acknowledged.len(), 1, "{tally:?}");
        assert_eq!(
            (
                tally.requests,
                tally.refused,
                tally.late,
                tally.bad_signatures
            ),
            (5, 1, 1, 1)
        );
    }
}
