//! Webhook accounting: what the tenant's data says was published (every
//! event in the outbox, which is written in the transaction of the change
//! it describes), against what the receiver acknowledged.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnection;

use super::receiver::Tally;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Events {
    /// Events committed for the tenant (one delivery each to the one endpoint).
    pub published: u64,
    /// Of those, acknowledged by the receiver at least once.
    pub delivered: u64,
    /// Acknowledgements beyond the first of an event (at-least-once delivery).
    pub duplicates: u64,
    /// Published and never acknowledged by the end of the drain.
    pub lost: u64,
    /// Acknowledged ids that match no published event (must be 0).
    pub unknown: u64,
    /// What the receiver answered besides acknowledgements.
    pub receiver_requests: u64,
    pub receiver_refused: u64,
    pub receiver_late: u64,
    pub bad_signatures: u64,
    /// From the end of the window until the last event was delivered (or the drain gave up).
    pub drain_s: f64,
}

/// The `webhook-id` agentry sends for `event` to `endpoint`: the first 16
/// bytes of SHA-256(event ‖ endpoint), hex, after `msg_`.
pub fn webhook_id(event: &[u8; 16], endpoint: &[u8; 16]) -> String {
    let digest = Sha256::new()
        .chain_update(event)
        .chain_update(endpoint)
        .finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("msg_{hex}")
}

/// A UUID's 16 bytes from its text form.
pub fn uuid_bytes(text: &str) -> anyhow::Result<[u8; 16]> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    anyhow::ensure!(hex.len() == 32, "{text:?} is not a UUID");
    let mut bytes = [0u8; 16];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| anyhow::anyhow!("{text:?} is not a UUID"))?;
    }
    Ok(bytes)
}

/// The webhook ids of every event committed for `tenant`.
pub async fn expected_ids(
    connection: &mut PgConnection,
    tenant: &str,
    endpoint: &[u8; 16],
) -> anyhow::Result<HashSet<String>> {
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT id::text FROM outbox_events WHERE tenant_id = $1::uuid")
            .bind(tenant)
            .fetch_all(&mut *connection)
            .await?;
    ids.iter()
        .map(|id| Ok(webhook_id(&uuid_bytes(id)?, endpoint)))
        .collect()
}

/// Counts the tally against what was published.
pub fn account(expected: &HashSet<String>, tally: &Tally, drain: Duration) -> Events {
    let acknowledged: &HashMap<String, u32> = &tally.acknowledged;
    let delivered = expected
        .iter()
        .filter(|id| acknowledged.contains_key(*id))
        .count() as u64;
    Events {
        published: expected.len() as u64,
        delivered,
        duplicates: acknowledged
            .values()
            .map(|n| u64::from(n.saturating_sub(1)))
            .sum(),
        lost: expected.len() as u64 - delivered,
        unknown: acknowledged
            .keys()
            .filter(|id| !expected.contains(*id))
            .count() as u64,
        receiver_requests: tally.requests,
        receiver_refused: tally.refused,
        receiver_late: tally.late,
        bad_signatures: tally.bad_signatures,
        drain_s: crate::report::round(drain.as_secs_f64(), 1),
    }
}

/// Waits until every published event is acknowledged (and no new one was
/// published for a second), or `timeout`; returns the last accounting.
pub async fn drain(
    connection: &mut PgConnection,
    tenant: &str,
    endpoint: &[u8; 16],
    tally: impl Fn() -> Tally,
    timeout: Duration,
) -> anyhow::Result<Events> {
    let started = Instant::now();
    let mut complete_since: Option<Instant> = None;
    loop {
        let expected = expected_ids(connection, tenant, endpoint).await?;
        let events = account(&expected, &tally(), started.elapsed());
        if events.lost == 0 {
            let since = *complete_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_secs(1) {
                return Ok(events);
            }
        } else {
            complete_since = None;
        }
        if started.elapsed() > timeout {
            return Ok(events);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_ids_follow_agentrys_formula() {
        // SHA-256 of 16 zero bytes then 16 0xff bytes, computed apart (Python's hashlib).
        let event = uuid_bytes("00000000-0000-0000-0000-000000000000").unwrap();
        let endpoint = uuid_bytes("ffffffff-ffff-ffff-ffff-ffffffffffff").unwrap();
        assert_eq!(
            webhook_id(&event, &endpoint),
            "msg_a386a11d535d6047c30ecdd1135c508b"
        );
        assert_ne!(webhook_id(&endpoint, &event), webhook_id(&event, &endpoint));
        assert!(uuid_bytes("not-a-uuid").is_err());
        assert!(uuid_bytes("0000000g-0000-0000-0000-000000000000").is_err());
    }

    #[test]
    fn accounting_counts_delivered_duplicates_lost_and_unknown() {
        let expected: HashSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let tally = Tally {
            acknowledged: [
                ("a".to_owned(), 1),
                ("b".to_owned(), 3),
                ("z".to_owned(), 1),
            ]
            .into_iter()
            .collect(),
            requests: 7,
            ..Tally::default()
        };
        let events = account(&expected, &tally, Duration::from_millis(1500));
        assert_eq!(
            (
                events.published,
                events.delivered,
                events.duplicates,
                events.lost,
                events.unknown
            ),
            (3, 2, 2, 1, 1)
        );
        assert_eq!(events.drain_s, 1.5);
    }
}
