//! The SMS and voice channels' tables: a tenant's phone numbers and Twilio
//! credentials, the SMS suppression list, conversations found by channel
//! key, replies queued for Twilio's REST API, and delivery statuses.

use agentry_actors::{AgentId, ConversationId, TenantId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{DbError, Store, TenantTx};
use crate::crypto::SecretOwner;

/// Where the tenant's auth token is sealed; bound into its ciphertext.
pub fn auth_token_owner(tenant: TenantId) -> SecretOwner {
    SecretOwner::new(tenant, "tenant_twilio_configs", "auth_token_sealed")
}

#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct PhoneNumber {
    pub id: Uuid,
    pub number: String,
    pub agent_id: Uuid,
    pub created_at: DateTime<Utc>,
}

pub async fn list_numbers(tx: &mut TenantTx) -> Result<Vec<PhoneNumber>, DbError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_as(
        "SELECT id, number, agent_id, created_at FROM phone_numbers WHERE tenant_id = $1 ORDER BY id",
    )
    .bind(tenant.as_uuid())
    .fetch_all(tx.conn())
    .await?)
}

pub async fn get_number(tx: &mut TenantTx, id: Uuid) -> Result<PhoneNumber, DbError> {
    let tenant = tx.tenant();
    sqlx::query_as(
        "SELECT id, number, agent_id, created_at FROM phone_numbers WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

/// Adds a number; it is unique across every tenant.
pub async fn create_number(
    tx: &mut TenantTx,
    number: &str,
    agent: AgentId,
) -> Result<PhoneNumber, DbError> {
    let tenant = tx.tenant();
    sqlx::query_as(
        "INSERT INTO phone_numbers (id, tenant_id, number, agent_id)
         SELECT $1, $2, $3, a.id FROM agents a WHERE a.tenant_id = $2 AND a.id = $4
         RETURNING id, number, agent_id, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(tenant.as_uuid())
    .bind(number)
    .bind(agent.as_uuid())
    .fetch_optional(tx.conn())
    .await
    .map_err(|error| DbError::conflict_on_unique(error, "that number is already in use"))?
    // No row: the agent is not the tenant's.
    .ok_or(DbError::NotFound)
}

/// Points the number at another of the tenant's agents.
pub async fn move_number(
    tx: &mut TenantTx,
    id: Uuid,
    agent: AgentId,
) -> Result<PhoneNumber, DbError> {
    let tenant = tx.tenant();
    sqlx::query_as(
        "UPDATE phone_numbers p SET agent_id = a.id FROM agents a
         WHERE p.tenant_id = $1 AND p.id = $2 AND a.tenant_id = $1 AND a.id = $3
         RETURNING p.id, p.number, p.agent_id, p.created_at",
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .bind(agent.as_uuid())
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

pub async fn delete_number(tx: &mut TenantTx, id: Uuid) -> Result<(), DbError> {
    let tenant = tx.tenant();
    let deleted = sqlx::query("DELETE FROM phone_numbers WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.as_uuid())
        .bind(id)
        .execute(tx.conn())
        .await?;
    match deleted.rows_affected() {
        0 => Err(DbError::NotFound),
        _ => Ok(()),
    }
}

/// A number called, before any tenant is known.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct CalledNumber {
    pub phone_number_id: Uuid,
    pub tenant_id: Uuid,
    pub agent_id: Uuid,
    /// `None` while the tenant has not set its Twilio credentials.
    pub auth_token_sealed: Option<Vec<u8>>,
}

impl CalledNumber {
    pub fn tenant(&self) -> TenantId {
        TenantId::from_uuid(self.tenant_id)
    }

    pub fn agent(&self) -> AgentId {
        AgentId::from_uuid(self.agent_id)
    }
}

pub async fn find_called(store: &Store, number: &str) -> Result<Option<CalledNumber>, DbError> {
    Ok(sqlx::query_as(
        "SELECT phone_number_id, tenant_id, agent_id, auth_token_sealed
         FROM agentry_find_phone_number($1)",
    )
    .bind(number)
    .fetch_optional(store.pool())
    .await?)
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct TwilioConfig {
    pub account_sid: String,
    pub auth_token_sealed: Vec<u8>,
    pub help_text: Option<String>,
    pub voice_greeting: Option<String>,
    pub escalation_number: Option<String>,
    pub updated_at: DateTime<Utc>,
}

const CONFIG_COLUMNS: &str =
    "account_sid, auth_token_sealed, help_text, voice_greeting, escalation_number, updated_at";

pub async fn get_config(tx: &mut TenantTx) -> Result<Option<TwilioConfig>, DbError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_as(&format!(
        "SELECT {CONFIG_COLUMNS} FROM tenant_twilio_configs WHERE tenant_id = $1"
    ))
    .bind(tenant.as_uuid())
    .fetch_optional(tx.conn())
    .await?)
}

pub struct NewConfig<'a> {
    pub account_sid: &'a str,
    pub auth_token_sealed: &'a [u8],
    pub help_text: Option<&'a str>,
    pub voice_greeting: Option<&'a str>,
    pub escalation_number: Option<&'a str>,
}

pub async fn put_config(
    tx: &mut TenantTx,
    config: &NewConfig<'_>,
) -> Result<TwilioConfig, DbError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_as(&format!(
        "INSERT INTO tenant_twilio_configs
            (tenant_id, account_sid, auth_token_sealed, help_text, voice_greeting, escalation_number)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (tenant_id) DO UPDATE SET
            account_sid = excluded.account_sid, auth_token_sealed = excluded.auth_token_sealed,
            help_text = excluded.help_text, voice_greeting = excluded.voice_greeting,
            escalation_number = excluded.escalation_number, updated_at = now()
         RETURNING {CONFIG_COLUMNS}"
    ))
    .bind(tenant.as_uuid())
    .bind(config.account_sid)
    .bind(config.auth_token_sealed)
    .bind(config.help_text)
    .bind(config.voice_greeting)
    .bind(config.escalation_number)
    .fetch_one(tx.conn())
    .await?)
}

pub async fn delete_config(tx: &mut TenantTx) -> Result<bool, DbError> {
    let tenant = tx.tenant();
    let deleted = sqlx::query("DELETE FROM tenant_twilio_configs WHERE tenant_id = $1")
        .bind(tenant.as_uuid())
        .execute(tx.conn())
        .await?;
    Ok(deleted.rows_affected() > 0)
}

#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Suppression {
    pub sender: String,
    /// The word the sender opted out with.
    pub keyword: String,
    pub created_at: DateTime<Utc>,
}

pub async fn suppress(tx: &mut TenantTx, sender: &str, keyword: &str) -> Result<(), DbError> {
    let tenant = tx.tenant();
    sqlx::query(
        "INSERT INTO sms_suppressions (tenant_id, sender, keyword) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id, sender) DO NOTHING",
    )
    .bind(tenant.as_uuid())
    .bind(sender)
    .bind(keyword)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Lifts the suppression; whether there was one.
pub async fn unsuppress(tx: &mut TenantTx, sender: &str) -> Result<bool, DbError> {
    let tenant = tx.tenant();
    let deleted = sqlx::query("DELETE FROM sms_suppressions WHERE tenant_id = $1 AND sender = $2")
        .bind(tenant.as_uuid())
        .bind(sender)
        .execute(tx.conn())
        .await?;
    Ok(deleted.rows_affected() > 0)
}

pub async fn is_suppressed(tx: &mut TenantTx, sender: &str) -> Result<bool, DbError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sms_suppressions WHERE tenant_id = $1 AND sender = $2)",
    )
    .bind(tenant.as_uuid())
    .bind(sender)
    .fetch_one(tx.conn())
    .await?)
}

pub async fn list_suppressions(tx: &mut TenantTx) -> Result<Vec<Suppression>, DbError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_as(
        "SELECT sender, keyword, created_at FROM sms_suppressions
         WHERE tenant_id = $1 ORDER BY created_at DESC, sender",
    )
    .bind(tenant.as_uuid())
    .fetch_all(tx.conn())
    .await?)
}

/// The conversation `key` names on `channel` (a number and a sender, a call),
/// created on first use; every instance finds the same one.
pub async fn channel_conversation(
    tx: &mut TenantTx,
    agent: AgentId,
    channel: &str,
    key: &str,
) -> Result<ConversationId, DbError> {
    let tenant = tx.tenant();
    // A concurrent first message may create it between this statement's
    // snapshot and its insert: then neither part sees a row, and the next
    // statement (a newer snapshot) does.
    for _ in 0..2 {
        let found: Option<Uuid> = sqlx::query_scalar(
            "WITH created AS (
                INSERT INTO conversations (id, tenant_id, agent_id, channel, channel_key)
                VALUES ($1, $2, $3, $4, $5)
                ON CONFLICT (tenant_id, channel, channel_key) WHERE channel_key IS NOT NULL DO NOTHING
                RETURNING id)
             SELECT id FROM created
             UNION ALL
             SELECT id FROM conversations WHERE tenant_id = $2 AND channel = $4 AND channel_key = $5
             LIMIT 1",
        )
        .bind(Uuid::now_v7())
        .bind(tenant.as_uuid())
        .bind(agent.as_uuid())
        .bind(channel)
        .bind(key)
        .fetch_optional(tx.conn())
        .await?;
        if let Some(id) = found {
            return Ok(ConversationId::from_uuid(id));
        }
    }
    Err(DbError::Conflict(
        "the conversation could not be found or created".into(),
    ))
}

/// Whether the conversation waits for a person (the agent escalated it).
pub async fn waits_for_human(
    tx: &mut TenantTx,
    conversation: ConversationId,
) -> Result<bool, DbError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_scalar(
        "SELECT coalesce((SELECT status = 'waiting_for_human' FROM conversations
                          WHERE tenant_id = $1 AND id = $2), false)",
    )
    .bind(tenant.as_uuid())
    .bind(conversation.as_uuid())
    .fetch_one(tx.conn())
    .await?)
}

/// Marks a call's conversation ended (the caller hung up).
pub async fn end_channel_conversation(
    tx: &mut TenantTx,
    channel: &str,
    key: &str,
) -> Result<(), DbError> {
    let tenant = tx.tenant();
    sqlx::query(
        "UPDATE conversations SET ended_at = now()
         WHERE tenant_id = $1 AND channel = $2 AND channel_key = $3 AND ended_at IS NULL",
    )
    .bind(tenant.as_uuid())
    .bind(channel)
    .bind(key)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// A reply to send through Twilio's REST API.
pub struct OutboundSms<'a> {
    pub conversation: ConversationId,
    pub from: &'a str,
    pub to: &'a str,
    pub body: &'a str,
}

pub async fn enqueue_outbound(tx: &mut TenantTx, sms: &OutboundSms<'_>) -> Result<Uuid, DbError> {
    let tenant = tx.tenant();
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO sms_outbound (id, tenant_id, conversation_id, from_number, to_number, body)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(tenant.as_uuid())
    .bind(sms.conversation.as_uuid())
    .bind(sms.from)
    .bind(sms.to)
    .bind(sms.body)
    .execute(tx.conn())
    .await?;
    Ok(id)
}

/// Claims up to `limit` due messages for `claim` (another instance takes
/// them over when the claim lapses); (message, tenant) pairs.
pub async fn claim_outbound(
    store: &Store,
    limit: i32,
    claim: std::time::Duration,
) -> Result<Vec<(Uuid, TenantId)>, DbError> {
    let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT id, tenant_id FROM agentry_claim_sms_outbound($1, make_interval(secs => $2))",
    )
    .bind(limit)
    .bind(claim.as_secs_f64())
    .fetch_all(store.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, tenant)| (id, TenantId::from_uuid(tenant)))
        .collect())
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct QueuedSms {
    pub id: Uuid,
    pub from_number: String,
    pub to_number: String,
    pub body: String,
    pub attempts: i32,
    pub state: String,
}

pub async fn get_outbound(tx: &mut TenantTx, id: Uuid) -> Result<QueuedSms, DbError> {
    let tenant = tx.tenant();
    sqlx::query_as(
        "SELECT id, from_number, to_number, body, attempts, state FROM sms_outbound
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

/// How one attempt to send ended.
pub enum SendOutcome<'a> {
    Sent {
        message_sid: &'a str,
    },
    /// The recipient opted out after the reply was queued.
    Suppressed,
    Retry {
        error: &'a str,
        at: DateTime<Utc>,
    },
    Failed {
        error: &'a str,
    },
}

pub async fn settle_outbound(
    tx: &mut TenantTx,
    id: Uuid,
    outcome: SendOutcome<'_>,
) -> Result<(), DbError> {
    let tenant = tx.tenant();
    let (state, sid, error, next): (&str, Option<&str>, Option<&str>, Option<DateTime<Utc>>) =
        match outcome {
            SendOutcome::Sent { message_sid } => ("sent", Some(message_sid), None, None),
            SendOutcome::Suppressed => ("suppressed", None, None, None),
            SendOutcome::Retry { error, at } => ("pending", None, Some(error), Some(at)),
            SendOutcome::Failed { error } => ("failed", None, Some(error), None),
        };
    sqlx::query(
        "UPDATE sms_outbound SET state = $3, message_sid = coalesce($4, message_sid),
            last_error = $5, next_attempt_at = coalesce($6, next_attempt_at), claimed_until = NULL
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .bind(state)
    .bind(sid)
    .bind(error)
    .bind(next)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Records a status Twilio reported for a message.
pub async fn record_status(
    tx: &mut TenantTx,
    message_sid: &str,
    status: &str,
    error_code: Option<&str>,
) -> Result<(), DbError> {
    let tenant = tx.tenant();
    sqlx::query(
        "INSERT INTO sms_delivery_statuses (id, tenant_id, message_sid, status, error_code)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(Uuid::now_v7())
    .bind(tenant.as_uuid())
    .bind(message_sid)
    .bind(status)
    .bind(error_code)
    .execute(tx.conn())
    .await?;
    Ok(())
}
