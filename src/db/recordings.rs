//! `call_recordings`: one row per stored recording, naming the sealed object
//! that holds its audio.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{DbError, TenantTx};

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Recording {
    pub id: Uuid,
    pub conversation_id: Option<Uuid>,
    pub call_sid: String,
    pub recording_sid: String,
    pub object_key: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub duration_secs: Option<i32>,
    pub source: String,
    pub created_at: DateTime<Utc>,
    /// Scrubbed, when the tenant's model transcribed it.
    pub transcript: Option<String>,
}

const COLUMNS: &str = "id, conversation_id, call_sid, recording_sid, object_key, content_type, \
                       size_bytes, duration_secs, source, created_at, transcript";

pub struct NewRecording<'a> {
    pub id: Uuid,
    pub call_sid: &'a str,
    pub recording_sid: &'a str,
    pub object_key: &'a str,
    pub content_type: &'a str,
    pub size_bytes: i64,
    pub duration_secs: Option<i32>,
    pub source: &'a str,
}

/// Inserts the row, linked to the call's conversation if there is one;
/// `false` when the tenant already has a recording with this SID.
pub async fn insert(tx: &mut TenantTx, new: &NewRecording<'_>) -> Result<bool, DbError> {
    let tenant = tx.tenant();
    let inserted = sqlx::query(
        "INSERT INTO call_recordings
            (id, tenant_id, conversation_id, call_sid, recording_sid, object_key, content_type,
             size_bytes, duration_secs, source)
         VALUES ($1, $2,
            (SELECT c.id FROM conversations c
             WHERE c.tenant_id = $2 AND c.channel = 'voice' AND c.channel_key = $3),
            $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (tenant_id, recording_sid) DO NOTHING",
    )
    .bind(new.id)
    .bind(tenant.as_uuid())
    .bind(new.call_sid)
    .bind(new.recording_sid)
    .bind(new.object_key)
    .bind(new.content_type)
    .bind(new.size_bytes)
    .bind(new.duration_secs)
    .bind(new.source)
    .execute(tx.conn())
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Whether the tenant already stored the recording with this SID.
pub async fn exists(tx: &mut TenantTx, recording_sid: &str) -> Result<bool, DbError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM call_recordings WHERE tenant_id = $1 AND recording_sid = $2)",
    )
    .bind(tenant.as_uuid())
    .bind(recording_sid)
    .fetch_one(tx.conn())
    .await?)
}

/// Newest first; `before` is the previous page's last id.
pub async fn list(
    tx: &mut TenantTx,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Recording>, DbError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM call_recordings
         WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3"
    ))
    .bind(tenant.as_uuid())
    .bind(before)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<Recording, DbError> {
    let tenant = tx.tenant();
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM call_recordings WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.as_uuid())
    .bind(id)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

/// Stores a recording's (scrubbed) transcript and, when it is linked to the
/// call's conversation, one audit row per kind the scrub replaced.
pub async fn set_transcript(
    tx: &mut TenantTx,
    id: Uuid,
    transcript: &str,
    pii: &agentry_actors::pii::PiiCounts,
) -> Result<(), DbError> {
    let tenant = tx.tenant();
    let conversation: Option<Option<Uuid>> = sqlx::query_scalar(
        "UPDATE call_recordings SET transcript = $3, transcribed_at = now()
         WHERE tenant_id = $1 AND id = $2 RETURNING conversation_id",
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .bind(transcript)
    .fetch_optional(tx.conn())
    .await?;
    let conversation = conversation.ok_or(DbError::NotFound)?;
    if let Some(conversation) = conversation {
        let (kinds, counts): (Vec<&str>, Vec<i32>) = pii
            .iter()
            .map(|(kind, n)| (kind.as_str(), i32::try_from(n).unwrap_or(i32::MAX)))
            .unzip();
        sqlx::query(
            "INSERT INTO voice_pii_audits (id, tenant_id, conversation_id, pii_kind, occurrences)
             SELECT gen_random_uuid(), $1, $2, k.kind, k.n
             FROM unnest($3::text[], $4::int[]) AS k (kind, n)",
        )
        .bind(tenant.as_uuid())
        .bind(conversation)
        .bind(kinds)
        .bind(counts)
        .execute(tx.conn())
        .await?;
    }
    Ok(())
}
