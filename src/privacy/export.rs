//! Finding everything held about one person, to export it or erase it.
//!
//! A person is asked about by one key. By lead id or email: their lead and
//! the conversations linked to it. By phone: the one lead with that phone
//! (several leads sharing a phone, a household's, are refused with their
//! ids, so the tenant picks one by lead id) and the SMS conversations that
//! phone texted from. A lead asked about by id or email also owns the SMS
//! conversations of their phone when no other lead shares it. Voice calls
//! are keyed by call, not by number: they belong to a person through the
//! lead the call captured.

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use uuid::Uuid;

use super::runs::{self, ActionRun, RunFilter};
use super::{PersonKey, PrivacyError};
use crate::crypto::Keyring;
use crate::db::leads::Lead;
use crate::db::{DbError, TenantTx};

/// Who was found for a key, and where their data is.
pub struct Person {
    pub lead: Option<Lead>,
    /// The phone whose SMS conversations, messages and opt-out are theirs.
    pub phone: Option<String>,
    pub conversations: Vec<Uuid>,
}

impl Person {
    fn lead_id(&self) -> Option<Uuid> {
        self.lead.as_ref().map(|lead| lead.id)
    }
}

const LEAD_COLUMNS: &str =
    "id, name, email, phone, notes, source_conversation_id, created_at, updated_at";

/// The person `key` names in the tenant of `tx` (nobody: an empty person).
pub async fn find(tx: &mut TenantTx, key: &PersonKey) -> Result<Person, PrivacyError> {
    let tenant = tx.tenant();
    let (matches, value) = match key {
        PersonKey::LeadId(id) => ("id = $2::uuid", id.to_string()),
        PersonKey::Email(email) => ("email = $2", email.clone()),
        PersonKey::Phone(phone) => ("phone = $2", phone.clone()),
    };
    // One column at a time, never "email OR phone" (see db::leads).
    let leads: Vec<Lead> = sqlx::query_as(&format!(
        "SELECT {LEAD_COLUMNS} FROM leads WHERE tenant_id = $1 AND {matches} ORDER BY id"
    ))
    .bind(tenant.as_uuid())
    .bind(&value)
    .fetch_all(tx.conn())
    .await?;
    if leads.len() > 1 {
        return Err(PrivacyError::AmbiguousPhone(
            leads.iter().map(|lead| lead.id).collect(),
        ));
    }
    let lead = leads.into_iter().next();
    let phone = match (key, &lead) {
        (PersonKey::Phone(phone), _) => Some(phone.clone()),
        (
            _,
            Some(Lead {
                id,
                phone: Some(phone),
                ..
            }),
        ) => {
            let shared: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM leads WHERE tenant_id = $1 AND phone = $2 AND id <> $3)",
            )
            .bind(tenant.as_uuid())
            .bind(phone)
            .bind(id)
            .fetch_one(tx.conn())
            .await?;
            (!shared).then(|| phone.clone())
        }
        _ => None,
    };
    let lead_id = lead.as_ref().map(|lead| lead.id);
    let conversations: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM conversations
         WHERE tenant_id = $1
           AND (lead_id = $2
                OR id = (SELECT source_conversation_id FROM leads WHERE tenant_id = $1 AND id = $2)
                OR (channel = 'sms' AND split_part(channel_key, ':', 2) = $3))
         ORDER BY id",
    )
    .bind(tenant.as_uuid())
    .bind(lead_id)
    .bind(phone.as_deref())
    .fetch_all(tx.conn())
    .await?;
    Ok(Person {
        lead,
        phone,
        conversations,
    })
}

/// Runs `sql` with the person's binds: `$1` tenant, `$2` lead id, `$3`
/// conversation ids, `$4` phone (any may go unused).
pub(super) fn bound<'q>(
    sql: &'q str,
    tenant: Uuid,
    person: &'q Person,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sql)
        .bind(tenant)
        .bind(person.lead_id())
        .bind(&person.conversations)
        .bind(person.phone.as_deref())
}

/// The JSON rows `sql` selects, with [`bound`]'s binds.
async fn rows(tx: &mut TenantTx, person: &Person, sql: &str) -> Result<Vec<Value>, DbError> {
    let tenant = tx.tenant().as_uuid();
    let rows = bound(sql, tenant, person).fetch_all(tx.conn()).await?;
    Ok(rows
        .iter()
        .map(|row| row.try_get::<Value, _>(0))
        .collect::<Result<_, _>>()?)
}

/// Everything held about a person. Empty (no lead, no rows) for a person
/// never met, or erased.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Bundle {
    pub lead: Option<Lead>,
    /// With their messages, oldest first.
    pub conversations: Vec<Value>,
    pub bookings: Vec<Value>,
    pub quote_requests: Vec<Value>,
    /// The audit record of their tool runs, personal fields opened.
    pub action_runs: Vec<ActionRun>,
    /// Events that carried their data, with every delivery attempt.
    pub webhook_events: Vec<Value>,
    pub sms_messages: Vec<Value>,
    pub sms_suppressions: Vec<Value>,
    /// Call recordings' metadata and transcripts (the audio has its own links).
    pub recordings: Vec<Value>,
    pub files_shared: Vec<Value>,
}

impl Bundle {
    pub fn is_empty(&self) -> bool {
        self.lead.is_none()
            && self.conversations.is_empty()
            && self.bookings.is_empty()
            && self.quote_requests.is_empty()
            && self.action_runs.is_empty()
            && self.webhook_events.is_empty()
            && self.sms_messages.is_empty()
            && self.sms_suppressions.is_empty()
            && self.recordings.is_empty()
            && self.files_shared.is_empty()
    }
}

/// Which events carried the person's data: those of their lead or of one of
/// their conversations (`$2`, `$3`), not yet erased.
pub(super) const THEIR_EVENTS: &str = "tenant_id = $1 AND erased_at IS NULL
    AND ((payload -> 'lead' ->> 'id') = $2::text
         OR (payload ->> 'conversation_id') = ANY ($3::uuid[]::text[]))";

/// Their SMS: sent in their conversations or to their phone.
pub(super) const THEIR_SMS: &str =
    "tenant_id = $1 AND (conversation_id = ANY ($3) OR to_number = $4)";

/// Bookings and quotes: of their lead or made in their conversations.
pub(super) const THEIR_REQUESTS: &str =
    "tenant_id = $1 AND (lead_id = $2 OR conversation_id = ANY ($3))";

pub async fn bundle(
    tx: &mut TenantTx,
    keyring: &Keyring,
    person: Person,
) -> Result<Bundle, DbError> {
    let conversations = rows(
        tx,
        &person,
        "SELECT jsonb_build_object(
             'id', c.id, 'agent_id', c.agent_id, 'channel', c.channel,
             'channel_key', c.channel_key, 'status', c.status,
             'escalation_reason', c.escalation_reason,
             'started_at', c.started_at, 'ended_at', c.ended_at,
             'messages', coalesce((
                 SELECT jsonb_agg(jsonb_build_object('seq', m.seq, 'role', m.role,
                                                     'content', m.content, 'created_at', m.created_at)
                                  ORDER BY m.seq)
                 FROM agent_messages m WHERE m.tenant_id = c.tenant_id AND m.conversation_id = c.id),
                 '[]'::jsonb))
         FROM conversations c WHERE c.tenant_id = $1 AND c.id = ANY ($3) ORDER BY c.id",
    )
    .await?;
    let bookings = rows(
        tx,
        &person,
        &format!(
            "SELECT to_jsonb(b) - 'tenant_id' FROM bookings b WHERE {THEIR_REQUESTS} ORDER BY id"
        ),
    )
    .await?;
    let quote_requests = rows(
        tx,
        &person,
        &format!(
            "SELECT to_jsonb(q) - 'tenant_id' FROM quote_requests q WHERE {THEIR_REQUESTS} ORDER BY id"
        ),
    )
    .await?;
    let webhook_events = rows(
        tx,
        &person,
        &format!(
            "SELECT jsonb_build_object(
                 'id', o.id, 'event_type', o.event_type, 'payload', o.payload,
                 'created_at', o.created_at,
                 'deliveries', coalesce((
                     SELECT jsonb_agg(jsonb_build_object(
                                'endpoint_id', d.endpoint_id, 'attempt', d.attempt,
                                'outcome', d.outcome, 'response_status', d.response_status,
                                'created_at', d.created_at) ORDER BY d.id)
                     FROM agent_webhook_deliveries d
                     WHERE d.tenant_id = o.tenant_id AND d.event_id = o.id), '[]'::jsonb))
             FROM outbox_events o WHERE {THEIR_EVENTS} ORDER BY o.id"
        ),
    )
    .await?;
    let sms_messages = rows(
        tx,
        &person,
        &format!(
            "SELECT to_jsonb(s) - 'tenant_id' - 'claimed_until' || jsonb_build_object(
                 'delivery_statuses', coalesce((
                     SELECT jsonb_agg(jsonb_build_object('status', d.status,
                                      'error_code', d.error_code, 'created_at', d.created_at)
                                      ORDER BY d.id)
                     FROM sms_delivery_statuses d
                     WHERE d.tenant_id = s.tenant_id AND d.message_sid = s.message_sid),
                     '[]'::jsonb))
             FROM sms_outbound s WHERE {THEIR_SMS} ORDER BY id"
        ),
    )
    .await?;
    let sms_suppressions = rows(
        tx,
        &person,
        "SELECT to_jsonb(x) - 'tenant_id' FROM sms_suppressions x
         WHERE tenant_id = $1 AND sender = $4",
    )
    .await?;
    let recordings = rows(
        tx,
        &person,
        "SELECT to_jsonb(r) - 'tenant_id' - 'object_key' FROM call_recordings r
         WHERE tenant_id = $1 AND conversation_id = ANY ($3) ORDER BY id",
    )
    .await?;
    let files_shared = files_shared(tx, &person).await?;
    let action_runs = if person.conversations.is_empty() {
        Vec::new()
    } else {
        let mut runs = runs::list(
            tx,
            keyring,
            &RunFilter {
                conversations: Some(person.conversations.clone()),
                before: None,
                limit: i64::MAX,
            },
        )
        .await?;
        runs.reverse();
        runs
    };
    Ok(Bundle {
        lead: person.lead,
        conversations,
        bookings,
        quote_requests,
        action_runs,
        webhook_events,
        sms_messages,
        sms_suppressions,
        recordings,
        files_shared,
    })
}

/// The share links made for the person's lead (`file_shares.lead_id`).
async fn files_shared(tx: &mut TenantTx, person: &Person) -> Result<Vec<Value>, DbError> {
    if person.lead.is_none() {
        return Ok(Vec::new());
    }
    // The file's name and type, never its storage key or data key.
    rows(
        tx,
        person,
        "SELECT jsonb_build_object(
                    'id', s.id, 'file_id', s.file_id, 'file_name', f.name,
                    'content_type', f.content_type, 'expires_at', s.expires_at,
                    'revoked_at', s.revoked_at, 'created_at', s.created_at)
         FROM file_shares s JOIN files f ON f.id = s.file_id AND f.tenant_id = s.tenant_id
         WHERE s.tenant_id = $1 AND s.lead_id = $2 ORDER BY s.id",
    )
    .await
}
