//! Erasing a person: one unit of work deletes what is theirs, destroys the
//! keys their audit rows are sealed under, redacts the events that carried
//! their data, and records the erasure itself (kinds and counts, never values).
//! Stored recording audio is removed by the caller after commit, since an
//! object store is not part of the transaction.

use std::collections::BTreeMap;

use serde::Serialize;
use uuid::Uuid;

use super::export::{self, bound, Person, THEIR_EVENTS, THEIR_REQUESTS, THEIR_SMS};
use super::{PersonKey, PrivacyError};
use crate::db::TenantTx;

/// What one erasure did.
#[derive(Debug, Serialize)]
pub struct Erasure {
    pub id: Uuid,
    pub key_kind: &'static str,
    /// Rows deleted, per kind.
    pub erased: BTreeMap<&'static str, u64>,
    /// Audit rows kept whose personal fields are now unreadable, and the
    /// events kept with their payload redacted.
    pub shredded: BTreeMap<&'static str, u64>,
    /// Recording objects to remove from storage once committed.
    #[serde(skip)]
    pub recording_objects: Vec<String>,
}

/// Erases the person `key` names in `tx`'s tenant, as asked by `requested_by`.
pub async fn erase(
    tx: &mut TenantTx,
    key: &PersonKey,
    requested_by: Uuid,
) -> Result<Erasure, PrivacyError> {
    let person = export::find(tx, key).await?;
    let tenant = tx.tenant().as_uuid();
    let mut erased = BTreeMap::new();
    let mut shredded = BTreeMap::new();

    let runs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM agent_action_runs
         WHERE tenant_id = $1 AND conversation_id = ANY ($2) AND subject_key_id IS NOT NULL",
    )
    .bind(tenant)
    .bind(&person.conversations)
    .fetch_one(tx.conn())
    .await?;
    shredded.insert("action_runs", u64::try_from(runs).unwrap_or(0));
    let keys = delete(
        tx,
        &person,
        "DELETE FROM subject_keys WHERE tenant_id = $1 AND conversation_id = ANY ($3)",
    )
    .await?;
    shredded.insert("subject_keys_destroyed", keys);
    // Kept (the delivery record names them) but emptied, and marked settled
    // and published so that no relay, republication or retry sends them again.
    let events = delete(
        tx,
        &person,
        &format!(
            "UPDATE outbox_events SET payload = '{{\"personal_data\": \"erased\"}}'::jsonb,
                 erased_at = now(), published_at = coalesce(published_at, now()),
                 settled_at = coalesce(settled_at, now())
             WHERE {THEIR_EVENTS}"
        ),
    )
    .await?;
    shredded.insert("webhook_event_payloads", events);

    let recording_objects: Vec<String> = sqlx::query_scalar(
        "DELETE FROM call_recordings WHERE tenant_id = $1 AND conversation_id = ANY ($2)
         RETURNING object_key",
    )
    .bind(tenant)
    .bind(&person.conversations)
    .fetch_all(tx.conn())
    .await?;
    erased.insert("recordings", recording_objects.len() as u64);
    let steps: [(&'static str, String); 9] = [
        (
            "sms_delivery_statuses",
            format!(
                "DELETE FROM sms_delivery_statuses WHERE tenant_id = $1 AND message_sid IN (
                     SELECT message_sid FROM sms_outbound WHERE {THEIR_SMS})"
            ),
        ),
        (
            "sms_messages",
            format!("DELETE FROM sms_outbound WHERE {THEIR_SMS}"),
        ),
        (
            "sms_suppressions",
            "DELETE FROM sms_suppressions WHERE tenant_id = $1 AND sender = $4".into(),
        ),
        (
            "bookings",
            format!("DELETE FROM bookings WHERE {THEIR_REQUESTS}"),
        ),
        (
            "quote_requests",
            format!("DELETE FROM quote_requests WHERE {THEIR_REQUESTS}"),
        ),
        (
            "messages",
            "DELETE FROM agent_messages WHERE tenant_id = $1 AND conversation_id = ANY ($3)".into(),
        ),
        (
            "conversations",
            "DELETE FROM conversations WHERE tenant_id = $1 AND id = ANY ($3)".into(),
        ),
        (
            "file_shares",
            "DELETE FROM file_shares WHERE tenant_id = $1 AND lead_id = $2".into(),
        ),
        (
            "leads",
            "DELETE FROM leads WHERE tenant_id = $1 AND id = $2".into(),
        ),
    ];
    for (kind, sql) in steps {
        erased.insert(kind, delete(tx, &person, &sql).await?);
    }

    let id = Uuid::now_v7();
    let counts = serde_json::json!({ "erased": erased, "shredded": shredded });
    sqlx::query(
        "INSERT INTO privacy_erasures (id, tenant_id, requested_by, key_kind, counts)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(tenant)
    .bind(requested_by)
    .bind(key.kind())
    .bind(&counts)
    .execute(tx.conn())
    .await?;
    Ok(Erasure {
        id,
        key_kind: key.kind(),
        erased,
        shredded,
        recording_objects,
    })
}

/// Runs one statement with the person's binds; the rows it touched.
async fn delete(tx: &mut TenantTx, person: &Person, sql: &str) -> Result<u64, PrivacyError> {
    let tenant = tx.tenant().as_uuid();
    Ok(bound(sql, tenant, person)
        .execute(tx.conn())
        .await?
        .rows_affected())
}
