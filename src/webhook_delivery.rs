//! One delivery attempt of one event to one endpoint, and its audit row.
//!
//! The body is `{type, timestamp, data}`, signed with every key the endpoint
//! currently signs with ([`crate::webhook_signing`]). The request goes through
//! the SSRF-guarded client, so the endpoint's URL is checked again at every
//! attempt. 2xx is delivered; 410 means the receiver is gone for good; a
//! blocked URL is final; anything else may be retried.

use std::time::{Duration, Instant};

use agentry_actors::TenantId;
use chrono::{DateTime, Utc};
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::crypto::Keyring;
use crate::db::outbox::OutboxEvent;
use crate::db::webhook_endpoints::{self, Endpoint, SecretSlot};
use crate::db::{DbError, TenantTx};
use crate::net_guard::{Blocked, GuardedClient};
use crate::webhook_retry::parse_retry_after;
use crate::webhook_signing::{signing_key, SignatureHeaders};

/// The `webhook-id` of an event at an endpoint: the same on every retry and
/// every republication, different per endpoint.
pub fn webhook_id(event: Uuid, endpoint: Uuid) -> String {
    let digest = Sha256::new()
        .chain_update(event.as_bytes())
        .chain_update(endpoint.as_bytes())
        .finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("msg_{hex}")
}

/// The keys an endpoint signs with now: its secret, and the previous one
/// while its grace period lasts.
pub fn signing_keys(
    keyring: &Keyring,
    tenant: TenantId,
    endpoint: &Endpoint,
) -> Result<Vec<Vec<u8>>, String> {
    let open = |slot: SecretSlot, sealed: &[u8]| -> Result<Vec<u8>, String> {
        let secret = keyring
            .open_string(&slot.owner(tenant, endpoint.id), sealed)
            .map_err(|e| format!("the endpoint's secret does not open: {e}"))?;
        signing_key(secret.expose())
    };
    let mut keys = vec![open(SecretSlot::Current, &endpoint.secret_sealed)?];
    if let (Some(previous), Some(expires)) = (
        &endpoint.previous_secret_sealed,
        endpoint.previous_secret_expires_at,
    ) {
        if expires > Utc::now() {
            keys.push(open(SecretSlot::Previous, previous)?);
        }
    }
    Ok(keys)
}

/// How one attempt went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    Delivered {
        status: u16,
    },
    /// 410: the receiver asks never to be called again.
    Gone,
    /// The URL is refused by the SSRF guard: final, with a reason the tenant can act on.
    Blocked {
        reason: String,
    },
    /// Worth trying again: another status, a timeout, a refused connection.
    Failed {
        status: Option<u16>,
        retry_after: Option<Duration>,
        error: String,
    },
}

/// Sends `event` to `endpoint` once.
pub async fn attempt(
    client: &GuardedClient,
    endpoint_url: &str,
    keys: &[Vec<u8>],
    endpoint_id: Uuid,
    event: &OutboxEvent,
    timeout: Duration,
) -> (Attempt, Duration) {
    let started = Instant::now();
    let body = json!({
        "type": event.event_type,
        "timestamp": event.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": event.payload,
    })
    .to_string();
    let headers = SignatureHeaders::sign(
        &webhook_id(event.id, endpoint_id),
        Utc::now().timestamp(),
        body.as_bytes(),
        keys,
    );
    let request = match client.request(reqwest::Method::POST, endpoint_url) {
        Ok(request) => request,
        Err(blocked) => {
            return (
                Attempt::Blocked {
                    reason: blocked.reason,
                },
                started.elapsed(),
            )
        }
    };
    let mut request = request
        .timeout(timeout)
        .header("content-type", "application/json")
        .header("user-agent", "agentry-webhooks/1");
    for (name, value) in headers.pairs() {
        request = request.header(name, value);
    }
    let outcome = match request.body(body).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| parse_retry_after(value, Utc::now()));
            match status {
                200..=299 => Attempt::Delivered { status },
                410 => Attempt::Gone,
                _ => Attempt::Failed {
                    status: Some(status),
                    retry_after,
                    error: format!("the receiver answered {status}"),
                },
            }
        }
        Err(error) => match Blocked::behind(&error) {
            Some(blocked) => Attempt::Blocked {
                reason: blocked.reason.clone(),
            },
            None if error.is_timeout() => Attempt::Failed {
                status: None,
                retry_after: None,
                error: format!("no answer within {} s", timeout.as_secs()),
            },
            None => Attempt::Failed {
                status: None,
                retry_after: None,
                error: "the receiver could not be reached".into(),
            },
        },
    };
    (outcome, started.elapsed())
}

/// One attempt to record: which, how it went, and when the next is due.
pub struct AttemptRecord<'a> {
    pub endpoint: Uuid,
    pub event: &'a OutboxEvent,
    pub number: u32,
    pub attempt: &'a Attempt,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub took: Duration,
}

/// Records an attempt in `agent_webhook_deliveries` (append-only); a 410
/// also disables the endpoint. `next_attempt_at` is when the next attempt is
/// due, if one follows: kept in the row, so a retry Redis lost is rebuilt
/// from PostgreSQL.
pub async fn record(
    tx: &mut TenantTx,
    endpoint: Uuid,
    event: &OutboxEvent,
    number: u32,
    attempt: &Attempt,
    next_attempt_at: Option<DateTime<Utc>>,
    took: Duration,
) -> Result<Uuid, DbError> {
    let ids = record_all(
        tx,
        &[AttemptRecord {
            endpoint,
            event,
            number,
            attempt,
            next_attempt_at,
            took,
        }],
    )
    .await?;
    Ok(ids[0])
}

/// [`record`] for several attempts, in one statement.
pub async fn record_all(
    tx: &mut TenantTx,
    records: &[AttemptRecord<'_>],
) -> Result<Vec<Uuid>, DbError> {
    let mut ids = Vec::with_capacity(records.len());
    let (mut endpoints, mut events, mut types, mut numbers) = (vec![], vec![], vec![], vec![]);
    let (mut outcomes, mut statuses, mut errors, mut durations, mut next) =
        (vec![], vec![], vec![], vec![], vec![]);
    for record in records {
        let retrying = record.next_attempt_at.is_some();
        let (outcome, status, error) = match record.attempt {
            Attempt::Delivered { status } => ("success", Some(*status), None),
            Attempt::Gone => (
                "failed",
                Some(410),
                Some("the receiver answered 410 Gone; endpoint disabled".to_owned()),
            ),
            Attempt::Blocked { reason } => ("blocked", None, Some(reason.clone())),
            Attempt::Failed { status, error, .. } => (
                if retrying { "retrying" } else { "failed" },
                *status,
                Some(error.clone()),
            ),
        };
        if matches!(record.attempt, Attempt::Gone) {
            webhook_endpoints::update(
                tx,
                record.endpoint,
                webhook_endpoints::EndpointChanges {
                    enabled: Some(false),
                    ..Default::default()
                },
            )
            .await?;
        }
        ids.push(Uuid::now_v7());
        endpoints.push(record.endpoint);
        events.push(record.event.id);
        types.push(record.event.event_type.clone());
        numbers.push(record.number as i32);
        outcomes.push(outcome);
        statuses.push(status.map(i32::from));
        errors.push(error);
        durations.push(i32::try_from(record.took.as_millis()).unwrap_or(i32::MAX));
        next.push(record.next_attempt_at.filter(|_| outcome == "retrying"));
    }
    let tenant = tx.tenant();
    sqlx::query(
        "INSERT INTO agent_webhook_deliveries
            (id, tenant_id, endpoint_id, event_id, event_type, attempt, outcome, response_status,
             error, duration_ms, next_attempt_at)
         SELECT id, $1, endpoint_id, event_id, event_type, attempt, outcome, response_status,
                error, duration_ms, next_attempt_at
         FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::int[], $7::text[],
                     $8::int[], $9::text[], $10::int[], $11::timestamptz[])
              AS r(id, endpoint_id, event_id, event_type, attempt, outcome, response_status,
                   error, duration_ms, next_attempt_at)",
    )
    .bind(tenant.as_uuid())
    .bind(&ids)
    .bind(&endpoints)
    .bind(&events)
    .bind(&types)
    .bind(&numbers)
    .bind(&outcomes)
    .bind(&statuses)
    .bind(&errors)
    .bind(&durations)
    .bind(&next)
    .execute(tx.conn())
    .await?;
    Ok(ids)
}
