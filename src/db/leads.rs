//! Leads: contact details a tenant's agents collected, one row per person.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{DbError, TenantTx};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Lead {
    pub id: Uuid,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub notes: String,
    pub source_conversation_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "id, name, email, phone, notes, source_conversation_id, created_at, updated_at";

/// Contact details, already validated (email lowercased, phone in E.164).
#[derive(Clone, Debug, Default)]
pub struct Contact<'a> {
    pub name: Option<&'a str>,
    pub email: Option<&'a str>,
    pub phone: Option<&'a str>,
}

/// A page of leads, newest first.
#[derive(Clone, Copy, Debug)]
pub struct LeadPage {
    /// Only leads older than this one (the previous page's last).
    pub before: Option<Uuid>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub limit: i64,
}

pub async fn create(
    tx: &mut TenantTx,
    contact: &Contact<'_>,
    notes: &str,
    conversation: Option<Uuid>,
) -> Result<Lead, DbError> {
    let tenant = tx.tenant();
    sqlx::query_as(&format!(
        "INSERT INTO leads (id, tenant_id, name, email, phone, notes, source_conversation_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(tenant.as_uuid())
    .bind(contact.name)
    .bind(contact.email)
    .bind(contact.phone)
    .bind(notes)
    .bind(conversation)
    .fetch_one(tx.conn())
    .await
    .map_err(|e| DbError::conflict_on_unique(e, "a lead with this email already exists"))
}

/// What [`find_or_create`] did to the lead it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeadChange {
    Created,
    /// Found, and given details it lacked (a name, a phone).
    Updated,
    Unchanged,
}

impl LeadChange {
    /// The outbox event this change emits, if any.
    pub fn event_type(self) -> Option<&'static str> {
        match self {
            Self::Created => Some("lead.created"),
            Self::Updated => Some("lead.updated"),
            Self::Unchanged => None,
        }
    }
}

/// The lead these details belong to, created if there is none, and what
/// was done to it.
///
/// Found by ONE key at a time: by email when there is one, otherwise by
/// phone among the leads that have no email. Never by "email OR phone": a
/// household shares a phone, and two visitors with their own emails and that
/// one phone are two people. Matching on either key would merge them and send
/// one person's bookings and notes to the other. Do not "simplify" this.
pub async fn find_or_create(
    tx: &mut TenantTx,
    contact: &Contact<'_>,
    conversation: Option<Uuid>,
) -> Result<(Lead, LeadChange), DbError> {
    let tenant = tx.tenant();
    // Two conversations leaving the same new details at once must find one
    // lead, not race to create two (or fail on the email's unique index):
    // the key is locked for the rest of the unit of work.
    if let Some(key) = contact.email.or(contact.phone) {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("lead:{tenant}:{key}"))
            .execute(tx.conn())
            .await?;
    }
    let found: Option<Lead> = match (contact.email, contact.phone) {
        (Some(email), _) => {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM leads WHERE tenant_id = $1 AND email = $2 FOR UPDATE"
            ))
            .bind(tenant.as_uuid())
            .bind(email)
            .fetch_optional(tx.conn())
            .await?
        }
        (None, Some(phone)) => {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM leads
                 WHERE tenant_id = $1 AND phone = $2 AND email IS NULL
                 ORDER BY id DESC LIMIT 1 FOR UPDATE"
            ))
            .bind(tenant.as_uuid())
            .bind(phone)
            .fetch_optional(tx.conn())
            .await?
        }
        (None, None) => return Err(DbError::Conflict("a lead needs an email or a phone".into())),
    };
    match found {
        // What the person adds now fills what was missing; nothing is overwritten.
        Some(lead) => {
            let fills =
                |held: &Option<String>, given: Option<&str>| held.is_none() && given.is_some();
            if !fills(&lead.name, contact.name) && !fills(&lead.phone, contact.phone) {
                return Ok((lead, LeadChange::Unchanged));
            }
            let lead = sqlx::query_as(&format!(
                "UPDATE leads SET name = coalesce(name, $3), phone = coalesce(phone, $4),
                        updated_at = now()
                 WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
            ))
            .bind(tenant.as_uuid())
            .bind(lead.id)
            .bind(contact.name)
            .bind(contact.phone)
            .fetch_one(tx.conn())
            .await?;
            Ok((lead, LeadChange::Updated))
        }
        None => Ok((
            create(tx, contact, "", conversation).await?,
            LeadChange::Created,
        )),
    }
}

pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<Lead, DbError> {
    let tenant = tx.tenant();
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM leads WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.as_uuid())
    .bind(id)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

/// Newest first (ids are time-ordered UUIDv7s, so id order is creation order).
pub async fn list(tx: &mut TenantTx, page: LeadPage) -> Result<Vec<Lead>, DbError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM leads
         WHERE tenant_id = $1
           AND ($2::uuid IS NULL OR id < $2)
           AND ($3::timestamptz IS NULL OR created_at >= $3)
           AND ($4::timestamptz IS NULL OR created_at < $4)
         ORDER BY id DESC LIMIT $5"
    ))
    .bind(tenant.as_uuid())
    .bind(page.before)
    .bind(page.created_after)
    .bind(page.created_before)
    .bind(page.limit)
    .fetch_all(tx.conn())
    .await?)
}

pub async fn update_notes(tx: &mut TenantTx, id: Uuid, notes: &str) -> Result<Lead, DbError> {
    let tenant = tx.tenant();
    sqlx::query_as(&format!(
        "UPDATE leads SET notes = $3, updated_at = now()
         WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
    ))
    .bind(tenant.as_uuid())
    .bind(id)
    .bind(notes)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

/// A booking a lead asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Booking {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub requested_time: String,
    pub service: Option<String>,
    pub note: Option<String>,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

/// A quote a lead asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct QuoteRequest {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub details: String,
    pub created_at: DateTime<Utc>,
}

/// The lead's bookings and quote requests, oldest first.
pub async fn requests_of(
    tx: &mut TenantTx,
    lead: Uuid,
) -> Result<(Vec<Booking>, Vec<QuoteRequest>), DbError> {
    let tenant = tx.tenant();
    let bookings = sqlx::query_as(
        "SELECT id, conversation_id, requested_time, service, note, status, created_at
         FROM bookings WHERE tenant_id = $1 AND lead_id = $2 ORDER BY id",
    )
    .bind(tenant.as_uuid())
    .bind(lead)
    .fetch_all(tx.conn())
    .await?;
    let quotes = sqlx::query_as(
        "SELECT id, conversation_id, details, created_at
         FROM quote_requests WHERE tenant_id = $1 AND lead_id = $2 ORDER BY id",
    )
    .bind(tenant.as_uuid())
    .bind(lead)
    .fetch_all(tx.conn())
    .await?;
    Ok((bookings, quotes))
}
