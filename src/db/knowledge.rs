//! Knowledge-base documents and chunks, and the [`KnowledgeStore`] port.
//!
//! Every chunk query names the namespace (`tenant:{tenant}:agent:{agent}`)
//! besides the tenant, so a ranking bug cannot reach another namespace.

use agentry_actors::ports::{KnowledgeChunk, KnowledgeStore, Namespace, StoreError, StoredVector};
use agentry_actors::AgentId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{DbError, Store, TenantTx};

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
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
    count_lexemes(tx, document, -1).await?;
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

/// Adds (`sign` 1) or removes (`sign` -1) a document's chunks in the namespace's
/// lexeme statistics and chunk total. Rows are locked in lexeme order, so concurrent ingests of
/// one namespace cannot deadlock on them.
async fn count_lexemes(tx: &mut TenantTx, document: Uuid, sign: i32) -> Result<(), DbError> {
    let tenant = tx.tenant();
    sqlx::query(
        "INSERT INTO kb_lexemes (tenant_id, agent_id, lexeme, chunk_count)
         SELECT c.tenant_id, c.agent_id, l.lexeme, $3 * count(*)::integer
         FROM kb_chunks c, unnest(tsvector_to_array(c.search)) AS l (lexeme)
         WHERE c.tenant_id = $1 AND c.document_id = $2
         GROUP BY c.tenant_id, c.agent_id, l.lexeme
         ORDER BY l.lexeme
         ON CONFLICT (tenant_id, agent_id, lexeme)
         DO UPDATE SET chunk_count = kb_lexemes.chunk_count + excluded.chunk_count",
    )
    .bind(tenant.as_uuid())
    .bind(document)
    .bind(sign)
    .execute(tx.conn())
    .await?;
    sqlx::query(
        "INSERT INTO kb_namespace_versions (tenant_id, agent_id, version, chunks)
         SELECT $1, agent_id, 0, $3 * count(*) FROM kb_chunks
         WHERE tenant_id = $1 AND document_id = $2 GROUP BY agent_id
         ON CONFLICT (tenant_id, agent_id)
         DO UPDATE SET chunks = kb_namespace_versions.chunks + excluded.chunks",
    )
    .bind(tenant.as_uuid())
    .bind(document)
    .bind(i64::from(sign))
    .execute(tx.conn())
    .await?;
    if sign < 0 {
        sqlx::query("DELETE FROM kb_lexemes WHERE tenant_id = $1 AND chunk_count <= 0")
            .bind(tenant.as_uuid())
            .execute(tx.conn())
            .await?;
    }
    Ok(())
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
    count_lexemes(tx, document, -1).await?;
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
    count_lexemes(tx, document, 1).await?;
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

/// Full-text search ranks at most about this many chunks per query...
const LEXICAL_CANDIDATES: i64 = 1500;

/// ...and at most a quarter of the namespace, so words most chunks contain
/// (the tenant's own name, say) are left out as stop words are.
pub fn candidate_budget(namespace_chunks: i64) -> i64 {
    (namespace_chunks / 4).clamp(20, LEXICAL_CANDIDATES)
}

/// Picks the query's rarest lexemes (by how many of the namespace's chunks hold
/// them) while their chunks add up to at most `budget`, and ORs them into a
/// tsquery. Common words match most chunks and say little about the question;
/// ranking only the rare ones is faster and better. `None` when no query word
/// occurs in the namespace.
pub fn discriminating_terms(mut counted: Vec<(String, i32)>, budget: i64) -> Option<String> {
    counted.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    let mut total = 0i64;
    let mut terms = Vec::new();
    for (lexeme, count) in counted {
        total += i64::from(count.max(0));
        // The rarest word always counts, however common.
        if !terms.is_empty() && total > budget {
            break;
        }
        // Quoted for tsquery input, which takes lexemes as they are (no re-parsing):
        // a lexeme may hold characters the tsquery syntax gives meaning to.
        terms.push(format!(
            "'{}'",
            lexeme.replace('\\', "\\\\").replace('\'', "''")
        ));
    }
    (!terms.is_empty()).then(|| terms.join(" | "))
}

/// The tsquery `lexical_search` runs for `query`: its rarest words in the
/// namespace (see [`discriminating_terms`]), or `None` if none occurs there.
pub async fn full_text_terms(
    tx: &mut TenantTx,
    namespace: Namespace,
    query: &str,
) -> Result<Option<String>, DbError> {
    let counted: Vec<(String, i32, i64)> = sqlx::query_as(
        // One primary-key lookup per query word: LIMIT 1 keeps the planner
        // from turning it into a scan of all the namespace's lexemes.
        "SELECT q.lexeme, l.chunk_count, v.chunks
         FROM kb_namespace_versions v,
              unnest(tsvector_to_array(to_tsvector('english', $3))) AS q (lexeme),
              LATERAL (
                  SELECT k.chunk_count FROM kb_lexemes k
                  WHERE k.tenant_id = $1 AND k.agent_id = $2 AND k.lexeme = q.lexeme
                  LIMIT 1
              ) l
         WHERE v.tenant_id = $1 AND v.agent_id = $2",
    )
    .bind(namespace.tenant.as_uuid())
    .bind(namespace.agent.as_uuid())
    .bind(query)
    .fetch_all(tx.conn())
    .await?;
    let namespace_chunks = counted.first().map_or(0, |(_, _, chunks)| *chunks);
    let counted = counted
        .into_iter()
        .map(|(lexeme, count, _)| (lexeme, count))
        .collect();
    Ok(discriminating_terms(
        counted,
        candidate_budget(namespace_chunks),
    ))
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
    async fn namespace_version(&self, namespace: Namespace) -> Result<i64, StoreError> {
        let mut tx = self.store.tenant(namespace.tenant).await?;
        let version: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM kb_namespace_versions WHERE tenant_id = $1 AND agent_id = $2",
        )
        .bind(namespace.tenant.as_uuid())
        .bind(namespace.agent.as_uuid())
        .fetch_optional(tx.conn())
        .await
        .map_err(DbError::from)?;
        Ok(version.unwrap_or(0))
    }

    async fn namespace_vectors(
        &self,
        namespace: Namespace,
    ) -> Result<Vec<StoredVector>, StoreError> {
        let mut tx = self.store.tenant(namespace.tenant).await?;
        let rows: Vec<(Uuid, Uuid, Vec<f32>)> = sqlx::query_as(
            "SELECT id, document_id, embedding FROM kb_chunks WHERE tenant_id = $1 AND namespace = $2",
        )
        .bind(namespace.tenant.as_uuid())
        .bind(namespace.to_string())
        .fetch_all(tx.conn())
        .await
        .map_err(DbError::from)?;
        Ok(rows
            .into_iter()
            .map(|(chunk_id, document_id, vector)| StoredVector {
                chunk_id,
                document_id,
                vector,
            })
            .collect())
    }

    async fn lexical_search(
        &self,
        namespace: Namespace,
        query: &str,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        let mut tx = self.store.tenant(namespace.tenant).await?;
        let Some(terms) = full_text_terms(&mut tx, namespace, query).await? else {
            return Ok(Vec::new());
        };
        let ids: Vec<Uuid> = sqlx::query_scalar(
            // Through a function (see migration 3): under row-level security the
            // full-text index could not be used.
            "SELECT chunk_id FROM agentry_kb_lexical_search($1, $2, $3::tsquery, $4::integer)",
        )
        .bind(namespace.tenant.as_uuid())
        .bind(namespace.to_string())
        .bind(terms)
        .bind(limit as i64)
        .fetch_all(tx.conn())
        .await
        .map_err(DbError::from)?;
        Ok(ids)
    }

    async fn chunks(
        &self,
        namespace: Namespace,
        ids: &[Uuid],
    ) -> Result<Vec<KnowledgeChunk>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.store.tenant(namespace.tenant).await?;
        let rows: Vec<(Uuid, String, String, String)> = sqlx::query_as(
            "SELECT c.id, d.title, c.heading, c.body FROM kb_chunks c
             JOIN kb_documents d ON d.id = c.document_id AND d.tenant_id = c.tenant_id
             WHERE c.tenant_id = $1 AND c.namespace = $2 AND c.id = ANY($3)",
        )
        .bind(namespace.tenant.as_uuid())
        .bind(namespace.to_string())
        .bind(ids)
        .fetch_all(tx.conn())
        .await
        .map_err(DbError::from)?;
        let mut by_id: std::collections::HashMap<Uuid, KnowledgeChunk> = rows
            .into_iter()
            .map(|(id, title, heading, text)| {
                (
                    id,
                    KnowledgeChunk {
                        id,
                        title,
                        heading,
                        text,
                    },
                )
            })
            .collect();
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_a_quarter_of_the_namespace_within_bounds() {
        assert_eq!(candidate_budget(0), 20);
        assert_eq!(candidate_budget(1_000), 250);
        assert_eq!(candidate_budget(1_000_000), LEXICAL_CANDIDATES);
    }

    #[test]
    fn the_rarest_terms_are_kept_within_the_budget() {
        let counted = vec![
            ("the".to_owned(), 900),
            ("lighthous".to_owned(), 3),
            ("open".to_owned(), 120),
        ];
        assert_eq!(
            discriminating_terms(counted.clone(), 200).as_deref(),
            Some("'lighthous' | 'open'")
        );
        assert_eq!(
            discriminating_terms(counted.clone(), 100).as_deref(),
            Some("'lighthous'")
        );
        assert_eq!(
            discriminating_terms(counted, 5000).as_deref(),
            Some("'lighthous' | 'open' | 'the'")
        );
        let common_only = vec![("the".to_owned(), 900)];
        assert_eq!(
            discriminating_terms(common_only, 10).as_deref(),
            Some("'the'")
        );
        assert_eq!(discriminating_terms(Vec::new(), 10), None);
    }

    #[test]
    fn lexemes_are_quoted_as_tsquery_literals() {
        let counted = vec![("o'neil".to_owned(), 1), ("a\\b".to_owned(), 2)];
        assert_eq!(
            discriminating_terms(counted, 10).as_deref(),
            Some("'o''neil' | 'a\\\\b'")
        );
    }
}
