//! Knowledge-base documents and chunks, and the [`KnowledgeStore`] port.
//!
//! Every chunk query names the namespace (`tenant:{tenant}:agent:{agent}`)
//! besides the tenant, so a ranking bug cannot reach another namespace.

use std::collections::HashMap;

use agentry_actors::ports::{
    document_changes, DocumentVersion, KnowledgeStore, Namespace, NamespaceChanges, StoreError,
    StoredChunk, StoredDocument,
};
use agentry_actors::AgentId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{DbError, Store, TenantTx};

#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Document {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub title: String,
    pub content_type: String,
    pub status: String,
    pub failure_reason: Option<String>,
    pub chunk_count: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const DOCUMENT_COLUMNS: &str =
    "id, agent_id, title, content_type, status, failure_reason, chunk_count, created_at, updated_at";

/// Adds a pending document to one of the tenant's agents; `NotFound` for another tenant's agent.
pub async fn create_document(
    tx: &mut TenantTx,
    agent: AgentId,
    title: &str,
    content_type: &str,
    content: &str,
) -> Result<Document, DbError> {
    let tenant = tx.tenant();
    sqlx::query_as(&format!(
        "INSERT INTO kb_documents (id, tenant_id, agent_id, title, content_type, content)
         SELECT $1, tenant_id, id, $4, $5, $6 FROM agents WHERE tenant_id = $2 AND id = $3
         RETURNING {DOCUMENT_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(tenant.as_uuid())
    .bind(agent.as_uuid())
    .bind(title)
    .bind(content_type)
    .bind(content)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

pub async fn list_documents(tx: &mut TenantTx, agent: AgentId) -> Result<Vec<Document>, DbError> {
    let tenant = tx.tenant();
    Ok(sqlx::query_as(&format!(
        "SELECT {DOCUMENT_COLUMNS} FROM kb_documents WHERE tenant_id = $1 AND agent_id = $2 ORDER BY created_at, id"
    ))
    .bind(tenant.as_uuid())
    .bind(agent.as_uuid())
    .fetch_all(tx.conn())
    .await?)
}

/// Deletes a document and its chunks, and bumps the namespace version so every
/// retriever drops them from memory before its next answer.
pub async fn delete_document(
    tx: &mut TenantTx,
    agent: AgentId,
    document: Uuid,
) -> Result<(), DbError> {
    let tenant = tx.tenant();
    let deleted =
        sqlx::query("DELETE FROM kb_documents WHERE tenant_id = $1 AND agent_id = $2 AND id = $3")
            .bind(tenant.as_uuid())
            .bind(agent.as_uuid())
            .bind(document)
            .execute(tx.conn())
            .await?;
    if deleted.rows_affected() == 0 {
        return Err(DbError::NotFound);
    }
    bump_namespace_version(tx, agent).await
}

async fn bump_namespace_version(tx: &mut TenantTx, agent: AgentId) -> Result<(), DbError> {
    let tenant = tx.tenant();
    sqlx::query(
        "INSERT INTO kb_namespace_versions (tenant_id, agent_id, version) VALUES ($1, $2, 1)
         ON CONFLICT (tenant_id, agent_id) DO UPDATE SET version = kb_namespace_versions.version + 1",
    )
    .bind(tenant.as_uuid())
    .bind(agent.as_uuid())
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// What ingestion needs of a document.
#[derive(Debug, sqlx::FromRow)]
pub struct DocumentSource {
    pub title: String,
    pub content_type: String,
    pub content: String,
    pub status: String,
}

pub async fn document_source(
    tx: &mut TenantTx,
    agent: AgentId,
    document: Uuid,
) -> Result<DocumentSource, DbError> {
    let tenant = tx.tenant();
    sqlx::query_as(
        "SELECT title, content_type, content, status FROM kb_documents
         WHERE tenant_id = $1 AND agent_id = $2 AND id = $3",
    )
    .bind(tenant.as_uuid())
    .bind(agent.as_uuid())
    .bind(document)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(DbError::NotFound)
}

/// One chunk ready to store.
pub struct NewChunk {
    pub ordinal: i32,
    pub heading: String,
    pub body: String,
    pub embedding: Vec<f32>,
}

/// Replaces a document's chunks and marks it ready, in one transaction with the version bump.
pub async fn store_chunks(
    tx: &mut TenantTx,
    agent: AgentId,
    document: Uuid,
    chunks: &[NewChunk],
    embedder: &str,
) -> Result<(), DbError> {
    let tenant = tx.tenant();
    sqlx::query("DELETE FROM kb_chunks WHERE tenant_id = $1 AND document_id = $2")
        .bind(tenant.as_uuid())
        .bind(document)
        .execute(tx.conn())
        .await?;
    for chunk in chunks {
        sqlx::query(
            "INSERT INTO kb_chunks (id, tenant_id, agent_id, document_id, ordinal, heading, body, embedding)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(Uuid::now_v7())
        .bind(tenant.as_uuid())
        .bind(agent.as_uuid())
        .bind(document)
        .bind(chunk.ordinal)
        .bind(&chunk.heading)
        .bind(&chunk.body)
        .bind(&chunk.embedding)
        .execute(tx.conn())
        .await?;
    }
    sqlx::query(
        "UPDATE kb_documents SET status = 'ready', failure_reason = NULL, chunk_count = $3, embedder = $4,
         updated_at = now() WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(document)
    .bind(chunks.len() as i32)
    .bind(embedder)
    .execute(tx.conn())
    .await?;
    bump_namespace_version(tx, agent).await
}

pub async fn mark_failed(tx: &mut TenantTx, document: Uuid, reason: &str) -> Result<(), DbError> {
    let tenant = tx.tenant();
    sqlx::query(
        "UPDATE kb_documents SET status = 'failed', failure_reason = $3, updated_at = now()
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(document)
    .bind(reason)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// The PostgreSQL side of retrieval.
pub struct PgKnowledgeStore {
    store: Store,
}

impl PgKnowledgeStore {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[async_trait]
impl KnowledgeStore for PgKnowledgeStore {
    async fn changes(
        &self,
        namespace: Namespace,
        held: &[DocumentVersion],
    ) -> Result<NamespaceChanges, StoreError> {
        // One snapshot of the database for the version, the documents and their chunks.
        let mut tx = self.store.tenant_snapshot(namespace.tenant).await?;
        let (tenant, agent) = (namespace.tenant.as_uuid(), namespace.agent.as_uuid());
        let version: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM kb_namespace_versions WHERE tenant_id = $1 AND agent_id = $2",
        )
        .bind(tenant)
        .bind(agent)
        .fetch_optional(tx.conn())
        .await
        .map_err(DbError::from)?;
        let documents: Vec<(Uuid, i64, String)> = sqlx::query_as(
            "SELECT id, version, title FROM kb_documents
             WHERE tenant_id = $1 AND agent_id = $2 AND status = 'ready'",
        )
        .bind(tenant)
        .bind(agent)
        .fetch_all(tx.conn())
        .await
        .map_err(DbError::from)?;
        let current: Vec<DocumentVersion> = documents
            .iter()
            .map(|(id, version, _)| DocumentVersion {
                id: *id,
                version: *version,
            })
            .collect();
        let (removed, to_load) = document_changes(held, &current);
        let load_ids: Vec<Uuid> = to_load.iter().map(|d| d.id).collect();
        let rows: Vec<(Uuid, Uuid, String, String, Vec<f32>)> = if load_ids.is_empty() {
            Vec::new()
        } else {
            sqlx::query_as(
                "SELECT document_id, id, heading, body, embedding FROM kb_chunks
                 WHERE tenant_id = $1 AND namespace = $2 AND document_id = ANY($3)
                 ORDER BY document_id, ordinal",
            )
            .bind(tenant)
            .bind(namespace.to_string())
            .bind(&load_ids)
            .fetch_all(tx.conn())
            .await
            .map_err(DbError::from)?
        };
        let titles: HashMap<Uuid, &str> = documents
            .iter()
            .map(|(id, _, title)| (*id, title.as_str()))
            .collect();
        let mut added: Vec<StoredDocument> = to_load
            .iter()
            .map(|document| StoredDocument {
                document: *document,
                title: titles.get(&document.id).copied().unwrap_or("").to_owned(),
                chunks: Vec::new(),
            })
            .collect();
        let position: HashMap<Uuid, usize> = added
            .iter()
            .enumerate()
            .map(|(i, d)| (d.document.id, i))
            .collect();
        for (document_id, id, heading, text, vector) in rows {
            if let Some(&i) = position.get(&document_id) {
                added[i].chunks.push(StoredChunk {
                    id,
                    heading,
                    text,
                    vector,
                });
            }
        }
        Ok(NamespaceChanges {
            version: version.unwrap_or(0),
            removed,
            added,
        })
    }
}
