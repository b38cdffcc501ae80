//! Sends the SMS replies that missed Twilio's webhook deadline through
//! Twilio's Messages REST API. The queue is a table (`sms_outbound`): any
//! instance claims due messages for a while, so one that dies mid-send
//! leaves its claims to lapse and another sends them. The recipient's
//! suppression is checked again right before sending: a STOP that arrived
//! while the reply waited wins.

use std::time::Duration;

use agentry_actors::TenantId;
use chrono::Utc;
use tokio::sync::watch;
use uuid::Uuid;

use crate::configuration::TwilioSettings;
use crate::crypto::Keyring;
use crate::db::twilio::{self, SendOutcome};
use crate::db::{DbError, Store};
use crate::twilio::signature;

/// How long a claim holds before another instance may send the message.
const CLAIM: Duration = Duration::from_secs(60);
const BATCH: i32 = 16;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

pub struct SmsSender {
    pub store: Store,
    pub keyring: std::sync::Arc<Keyring>,
    pub settings: TwilioSettings,
    pub client: reqwest::Client,
}

/// What one attempt decided, before it is written down.
enum Attempt {
    Sent(String),
    Suppressed,
    /// Worth another try (network, 429, 5xx).
    Transient(String),
    /// Not worth another (Twilio refused the request itself).
    Permanent(String),
}

impl SmsSender {
    pub fn new(
        store: Store,
        keyring: std::sync::Arc<Keyring>,
        settings: TwilioSettings,
    ) -> reqwest::Result<Self> {
        Ok(Self {
            store,
            keyring,
            settings,
            client: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()?,
        })
    }

    /// Sends due messages until `stopped` turns true.
    pub async fn run(self, mut stopped: watch::Receiver<bool>) {
        let poll = Duration::from_millis(self.settings.outbound_poll_ms.max(10));
        let stop = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        tokio::pin!(stop);
        loop {
            match twilio::claim_outbound(&self.store, BATCH, CLAIM).await {
                Ok(claimed) => {
                    let busy = !claimed.is_empty();
                    for (id, tenant) in claimed {
                        if let Err(error) = self.send(tenant, id).await {
                            tracing::warn!(%error, "queued SMS not settled; its claim will lapse");
                        }
                    }
                    if busy {
                        continue;
                    }
                }
                Err(error) => tracing::warn!(%error, "claiming queued SMS failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                () = &mut stop => return,
            }
        }
    }

    async fn send(&self, tenant: TenantId, id: Uuid) -> Result<(), DbError> {
        let mut tx = self.store.tenant(tenant).await?;
        let message = twilio::get_outbound(&mut tx, id).await?;
        if message.state != "pending" {
            return Ok(());
        }
        let suppressed = twilio::is_suppressed(&mut tx, &message.to_number).await?;
        let config = twilio::get_config(&mut tx).await?;
        drop(tx);
        let attempt = match (suppressed, config) {
            (true, _) => Attempt::Suppressed,
            (false, None) => Attempt::Permanent("the tenant has no Twilio credentials".into()),
            (false, Some(config)) => {
                match self
                    .keyring
                    .open_string(&twilio::auth_token_owner(tenant), &config.auth_token_sealed)
                {
                    Ok(token) => {
                        let started = std::time::Instant::now();
                        let attempt = self
                            .post(&config.account_sid, token.expose(), &message)
                            .await;
                        metrics::histogram!("agentry_sms_send_duration_seconds")
                            .record(started.elapsed().as_secs_f64());
                        attempt
                    }
                    Err(error) => Attempt::Permanent(format!("auth token: {error}")),
                }
            }
        };
        let outcome = match &attempt {
            Attempt::Sent(sid) => SendOutcome::Sent { message_sid: sid },
            Attempt::Suppressed => SendOutcome::Suppressed,
            Attempt::Permanent(error) => SendOutcome::Failed { error },
            Attempt::Transient(error)
                if message.attempts as u32 >= self.settings.outbound_max_attempts =>
            {
                SendOutcome::Failed { error }
            }
            Attempt::Transient(error) => SendOutcome::Retry {
                error,
                at: Utc::now() + backoff(message.attempts),
            },
        };
        let label = match outcome {
            SendOutcome::Sent { .. } => "sent",
            SendOutcome::Suppressed => "suppressed",
            SendOutcome::Retry { .. } => "retry",
            SendOutcome::Failed { .. } => "failed",
        };
        metrics::counter!("agentry_sms_outbound_total", "outcome" => label).increment(1);
        let mut tx = self.store.tenant(tenant).await?;
        twilio::settle_outbound(&mut tx, id, outcome).await?;
        tx.commit().await
    }

    async fn post(&self, account_sid: &str, token: &str, message: &twilio::QueuedSms) -> Attempt {
        let url = format!(
            "{}/2010-04-01/Accounts/{account_sid}/Messages.json",
            self.settings.api_base_url.trim_end_matches('/')
        );
        let callback =
            signature::public_url(&self.settings.public_base_url, "/api/twilio/sms/status");
        let sent = self
            .client
            .post(url)
            .basic_auth(account_sid, Some(token))
            .form(&[
                ("To", message.to_number.as_str()),
                ("From", message.from_number.as_str()),
                ("Body", message.body.as_str()),
                ("StatusCallback", callback.as_str()),
            ])
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => return Attempt::Transient(format!("request failed: {error}")),
        };
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if status.is_success() {
            return match body["sid"].as_str() {
                Some(sid) => Attempt::Sent(sid.to_owned()),
                None => Attempt::Permanent(format!("{status} without a message sid")),
            };
        }
        let detail = format!(
            "{status}: {}",
            body["message"].as_str().unwrap_or("no message")
        );
        if status.is_server_error() || status.as_u16() == 429 {
            Attempt::Transient(detail)
        } else {
            Attempt::Permanent(detail)
        }
    }
}

/// 2, 4, 8 … seconds after the n-th attempt, at most five minutes.
fn backoff(attempts: i32) -> chrono::Duration {
    let exponent = attempts.clamp(1, 8) as u32;
    chrono::Duration::seconds((1_i64 << exponent).min(300))
}

#[cfg(test)]
mod tests {
    use super::backoff;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1).num_seconds(), 2);
        assert_eq!(backoff(3).num_seconds(), 8);
        assert_eq!(backoff(50).num_seconds(), 256);
        assert_eq!(backoff(0).num_seconds(), 2);
    }
}
