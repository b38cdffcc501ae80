//! Action runs with their personal fields sealed: what a tool run writes,
//! how a recorded run is replayed, and how the API reads them back (opened
//! while the subject's key exists, shown as erased once it does not).

use std::collections::HashMap;

use agentry_actors::ports::StoreError;
use agentry_actors::tools::{RunStatus, ToolRun};
use agentry_actors::TenantId;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{field_owner, PersonalData, SubjectKey};
use crate::crypto::Keyring;
use crate::db::{DbError, TenantTx};

const TABLE: &str = "agent_action_runs";
/// What stands in `input` for each argument's value.
const SEALED: &str = "sealed";

/// A subject key as stored.
pub struct StoredKey {
    pub id: Uuid,
    pub sealed: Vec<u8>,
}

/// A run already recorded for a call id.
pub struct StoredRun {
    pub id: Uuid,
    pub status: String,
    pub output: Value,
    pub output_sealed: Option<Vec<u8>>,
}

/// What a tool run finds before acting: the conversation's key and the run
/// of the same call id, if either exists.
pub struct Prior {
    pub key: Option<StoredKey>,
    pub run: Option<StoredRun>,
}

/// One query for both, so sealing adds no round trip to a run after the
/// conversation's first.
pub async fn prior(tx: &mut TenantTx, conversation: Uuid, call_id: &str) -> Result<Prior, DbError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        key_id: Option<Uuid>,
        key_sealed: Option<Vec<u8>>,
        run_id: Option<Uuid>,
        status: Option<String>,
        output: Option<Value>,
        output_sealed: Option<Vec<u8>>,
    }
    let tenant = tx.tenant();
    let row: Row = sqlx::query_as(
        "SELECT k.id AS key_id, k.key_sealed, r.id AS run_id, r.status, r.output, r.output_sealed
         FROM (VALUES (1)) AS one (x)
         LEFT JOIN subject_keys k ON k.tenant_id = $1 AND k.conversation_id = $2
         LEFT JOIN agent_action_runs r
             ON r.tenant_id = $1 AND r.conversation_id = $2 AND r.call_id = $3",
    )
    .bind(tenant.as_uuid())
    .bind(conversation)
    .bind(call_id)
    .fetch_one(tx.conn())
    .await?;
    Ok(Prior {
        key: row
            .key_id
            .zip(row.key_sealed)
            .map(|(id, sealed)| StoredKey { id, sealed }),
        run: match (row.run_id, row.status, row.output) {
            (Some(id), Some(status), Some(output)) => Some(StoredRun {
                id,
                status,
                output,
                output_sealed: row.output_sealed,
            }),
            _ => None,
        },
    })
}

/// The recorded run as the model read it the first time (its output opened
/// if it was sealed and the key still exists).
pub fn replay(keyring: &Keyring, tenant: TenantId, prior: &Prior) -> Option<ToolRun> {
    let run = prior.run.as_ref()?;
    let opened = match (&run.output_sealed, &prior.key) {
        (Some(sealed), Some(key)) => SubjectKey::open(keyring, tenant, key.id, &key.sealed)
            .and_then(|key| key.open_json(&output_owner(tenant, run.id), sealed))
            .ok(),
        _ => None,
    };
    Some(ToolRun {
        status: RunStatus::parse(&run.status).unwrap_or(RunStatus::Failed),
        output: opened.unwrap_or_else(|| run.output.clone()),
    })
}

pub fn open_key(
    keyring: &Keyring,
    tenant: TenantId,
    stored: &StoredKey,
) -> Result<SubjectKey, StoreError> {
    SubjectKey::open(keyring, tenant, stored.id, &stored.sealed).map_err(|error| {
        tracing::error!(%error, "a subject key does not open");
        StoreError::Unavailable("a subject key does not open".into())
    })
}

/// The conversation's key, minted now (its first tool run).
pub async fn mint_key(
    tx: &mut TenantTx,
    keyring: &Keyring,
    conversation: Uuid,
) -> Result<SubjectKey, StoreError> {
    let tenant = tx.tenant();
    let (key, sealed) = SubjectKey::mint(keyring, tenant);
    let inserted = sqlx::query(
        "INSERT INTO subject_keys (id, tenant_id, conversation_id, key_sealed)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, conversation_id) DO NOTHING",
    )
    .bind(key.id)
    .bind(tenant.as_uuid())
    .bind(conversation)
    .bind(&sealed)
    .execute(tx.conn())
    .await
    .map_err(DbError::from)?
    .rows_affected();
    if inserted == 1 {
        return Ok(key);
    }
    // Another instance's first run of this conversation committed its key
    // meanwhile (the insert waited for it): use that one.
    let stored: (Uuid, Vec<u8>) = sqlx::query_as(
        "SELECT id, key_sealed FROM subject_keys WHERE tenant_id = $1 AND conversation_id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(conversation)
    .fetch_one(tx.conn())
    .await
    .map_err(DbError::from)?;
    open_key(
        keyring,
        tenant,
        &StoredKey {
            id: stored.0,
            sealed: stored.1,
        },
    )
}

fn input_owner(tenant: TenantId, run: Uuid) -> crate::crypto::SecretOwner {
    field_owner(tenant, TABLE, "input_sealed", run)
}

fn output_owner(tenant: TenantId, run: Uuid) -> crate::crypto::SecretOwner {
    field_owner(tenant, TABLE, "output_sealed", run)
}

/// A run's row as written: the shape in the clear, the values sealed.
pub struct SealedRun {
    pub id: Uuid,
    pub key_id: Uuid,
    pub input_shape: Value,
    pub input_sealed: Vec<u8>,
    pub output: Value,
    pub output_sealed: Option<Vec<u8>>,
}

impl SealedRun {
    pub fn new(key: &SubjectKey, tenant: TenantId, arguments: &Value, run: &ToolRun) -> Self {
        let id = Uuid::now_v7();
        // A refusal quotes the values it refused; the other outputs are
        // statuses and flags this code writes, with no personal data.
        let (output, output_sealed) = if run.status == RunStatus::Rejected {
            (
                json!({ "status": "rejected", "personal_data": SEALED }),
                Some(key.seal_json(&output_owner(tenant, id), &run.output)),
            )
        } else {
            (run.output.clone(), None)
        };
        Self {
            id,
            key_id: key.id,
            input_shape: shape_of(arguments),
            input_sealed: key.seal_json(&input_owner(tenant, id), arguments),
            output,
            output_sealed,
        }
    }
}

/// The argument names of a call, each value replaced by a marker.
pub fn shape_of(arguments: &Value) -> Value {
    match arguments {
        Value::Object(fields) => Value::Object(
            fields
                .keys()
                .map(|name| (name.clone(), json!(SEALED)))
                .collect::<Map<String, Value>>(),
        ),
        _ => json!({}),
    }
}

/// An action run as the API shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ActionRun {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub conversation_id: Option<Uuid>,
    pub tool: String,
    pub status: String,
    /// The call's arguments; `null` once the subject was erased.
    pub input: Option<Value>,
    pub output: Value,
    pub personal_data: PersonalData,
    pub call_id: Option<String>,
    pub duration_ms: Option<i32>,
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct RunRow {
    id: Uuid,
    agent_id: Uuid,
    conversation_id: Option<Uuid>,
    tool: String,
    status: String,
    input: Value,
    output: Value,
    call_id: Option<String>,
    duration_ms: Option<i32>,
    created_at: DateTime<Utc>,
    subject_key_id: Option<Uuid>,
    input_sealed: Option<Vec<u8>>,
    output_sealed: Option<Vec<u8>>,
    key_sealed: Option<Vec<u8>>,
}

/// Which runs to read.
#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    /// Only these conversations' runs (`None`: every conversation).
    pub conversations: Option<Vec<Uuid>>,
    /// Only runs older than this one (the previous page's last).
    pub before: Option<Uuid>,
    pub limit: i64,
}

/// Runs newest first, their personal fields opened where the key exists.
pub async fn list(
    tx: &mut TenantTx,
    keyring: &Keyring,
    filter: &RunFilter,
) -> Result<Vec<ActionRun>, DbError> {
    let tenant = tx.tenant();
    let rows: Vec<RunRow> = sqlx::query_as(
        "SELECT r.id, r.agent_id, r.conversation_id, r.tool, r.status, r.input, r.output,
                r.call_id, r.duration_ms, r.created_at, r.subject_key_id, r.input_sealed,
                r.output_sealed, k.key_sealed
         FROM agent_action_runs r
         LEFT JOIN subject_keys k ON k.tenant_id = r.tenant_id AND k.id = r.subject_key_id
         WHERE r.tenant_id = $1
           AND ($2::uuid[] IS NULL OR r.conversation_id = ANY ($2))
           AND ($3::uuid IS NULL OR r.id < $3)
         ORDER BY r.id DESC LIMIT $4",
    )
    .bind(tenant.as_uuid())
    .bind(filter.conversations.as_deref())
    .bind(filter.before)
    .bind(filter.limit)
    .fetch_all(tx.conn())
    .await?;
    let mut keys: HashMap<Uuid, Option<SubjectKey>> = HashMap::new();
    Ok(rows
        .into_iter()
        .map(|row| opened(keyring, tenant, &mut keys, row))
        .collect())
}

fn opened(
    keyring: &Keyring,
    tenant: TenantId,
    keys: &mut HashMap<Uuid, Option<SubjectKey>>,
    row: RunRow,
) -> ActionRun {
    let (input, output, personal_data) = match row.subject_key_id {
        None => (Some(row.input), row.output, PersonalData::NotSealed),
        Some(key_id) => {
            let key = keys.entry(key_id).or_insert_with(|| {
                let sealed = row.key_sealed.as_deref()?;
                SubjectKey::open(keyring, tenant, key_id, sealed)
                    .inspect_err(|error| tracing::error!(%error, "a subject key does not open"))
                    .ok()
            });
            match key {
                Some(key) => {
                    let input = row.input_sealed.as_deref().and_then(|sealed| {
                        key.open_json(&input_owner(tenant, row.id), sealed).ok()
                    });
                    let output = row
                        .output_sealed
                        .as_deref()
                        .and_then(|sealed| {
                            key.open_json(&output_owner(tenant, row.id), sealed).ok()
                        })
                        .unwrap_or(row.output);
                    (input, output, PersonalData::Readable)
                }
                None => (None, row.output, PersonalData::Erased),
            }
        }
    };
    ActionRun {
        id: row.id,
        agent_id: row.agent_id,
        conversation_id: row.conversation_id,
        tool: row.tool,
        status: row.status,
        input,
        output,
        personal_data,
        call_id: row.call_id,
        duration_ms: row.duration_ms,
        created_at: row.created_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shape_keeps_argument_names_and_no_values() {
        assert_eq!(
            shape_of(&json!({ "email": "ana@example.org", "name": "Ana" })),
            json!({ "email": "sealed", "name": "sealed" })
        );
        assert_eq!(shape_of(&json!("angry")), json!({}));
    }
}
