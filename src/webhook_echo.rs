//! A webhook receiver for development: accepts deliveries on loopback,
//! checks their Standard Webhooks signature when it knows the secret, and
//! prints one line per delivery. `agentry dev webhook-echo` runs it alone;
//! with `demo.webhook_echo` the development server runs it beside itself
//! and points the seeded demo tenant's endpoint at it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use crate::webhook_signing::{signing_key, SignatureHeaders};

/// The path deliveries are posted to.
pub const PATH: &str = "/webhooks";
/// How far a signature's timestamp may be from now (the libraries' default).
const TOLERANCE_SECS: i64 = 300;

#[derive(Clone)]
pub struct EchoReceiver {
    key: Option<Arc<Vec<u8>>>,
    /// Deliveries accepted so far.
    pub received: Arc<AtomicU64>,
}

/// What the receiver concluded about one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Verified,
    /// No secret given: the signature was not checked.
    Unchecked,
    Refused(&'static str),
}

impl EchoReceiver {
    /// `secret` is the endpoint's `whsec_` secret, if known.
    pub fn new(secret: Option<&str>) -> Result<Self, String> {
        let key = secret.map(signing_key).transpose()?.map(Arc::new);
        Ok(Self {
            key,
            received: Arc::default(),
        })
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route(PATH, post(receive))
            .route("/", post(receive))
            .with_state(self.clone())
    }

    /// Serves on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Checks the Standard Webhooks headers against `body`.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Verdict {
        let Some(key) = &self.key else {
            return Verdict::Unchecked;
        };
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(id), Some(timestamp), Some(signatures)) = (
            header("webhook-id"),
            header("webhook-timestamp"),
            header("webhook-signature"),
        ) else {
            return Verdict::Refused("missing webhook-id, webhook-timestamp or webhook-signature");
        };
        let Ok(timestamp) = timestamp.parse::<i64>() else {
            return Verdict::Refused("webhook-timestamp is not a number");
        };
        if (Utc::now().timestamp() - timestamp).abs() > TOLERANCE_SECS {
            return Verdict::Refused("webhook-timestamp is too far from now");
        }
        let expected = SignatureHeaders::sign(id, timestamp, body, std::slice::from_ref(key));
        let matches = signatures.split(' ').any(|candidate| {
            bool::from(
                candidate
                    .as_bytes()
                    .ct_eq(expected.webhook_signature.as_bytes()),
            )
        });
        if matches {
            Verdict::Verified
        } else {
            Verdict::Refused("no signature matches the secret")
        }
    }
}

async fn receive(
    State(echo): State<EchoReceiver>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let verdict = echo.verify(&headers, &body);
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let text = String::from_utf8_lossy(&body);
    let signature = match verdict {
        Verdict::Verified => "signature verified",
        Verdict::Unchecked => "signature not checked (no --secret)",
        Verdict::Refused(reason) => {
            println!("[webhook-echo] REFUSED {id}: {reason}");
            return (StatusCode::UNAUTHORIZED, "signature refused\n");
        }
    };
    echo.received.fetch_add(1, Ordering::Relaxed);
    println!("[webhook-echo] {id} ({signature}): {text}");
    (StatusCode::OK, "ok\n")
}

/// Binds the receiver's loopback address.
pub async fn bind(port: u16) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let address = listener.local_addr()?;
    Ok((listener, address))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn signed(body: &str, secret: &str, at: i64) -> HeaderMap {
        let signed = SignatureHeaders::sign(
            "msg_1",
            at,
            body.as_bytes(),
            &[signing_key(secret).unwrap()],
        );
        let mut headers = HeaderMap::new();
        for (name, value) in signed.pairs() {
            headers.insert(name, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn a_delivery_signed_with_the_secret_verifies_and_others_are_refused() {
        let echo = EchoReceiver::new(Some(SECRET)).unwrap();
        let now = Utc::now().timestamp();
        let headers = signed("{\"a\":1}", SECRET, now);
        assert_eq!(echo.verify(&headers, b"{\"a\":1}"), Verdict::Verified);
        assert!(matches!(
            echo.verify(&headers, b"{\"a\":2}"),
            Verdict::Refused(_)
        ));
        let other = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let forged = signed("{\"a\":1}", other, now);
        assert!(matches!(
            echo.verify(&forged, b"{\"a\":1}"),
            Verdict::Refused(_)
        ));
        let stale = signed("{\"a\":1}", SECRET, now - 3_600);
        assert!(matches!(
            echo.verify(&stale, b"{\"a\":1}"),
            Verdict::Refused(_)
        ));
        assert!(matches!(
            echo.verify(&HeaderMap::new(), b"{}"),
            Verdict::Refused(_)
        ));
        let open = EchoReceiver::new(None).unwrap();
        assert_eq!(open.verify(&HeaderMap::new(), b"{}"), Verdict::Unchecked);
        assert!(EchoReceiver::new(Some("not-a-secret")).is_err());
    }
}
