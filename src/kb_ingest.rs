//! The kb-ingest stage: turns pending knowledge-base documents into embedded
//! chunks. Jobs travel over a Redis stream read by a consumer group, so any
//! instance may ingest any document; a job left pending by a dead instance is
//! reclaimed, and a periodic sweep re-enqueues documents whose job was lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentry_actors::knowledge::{chunk_document, ChunkOptions, ContentType};
use agentry_actors::llm::Embedder;
use agentry_actors::ports::{BusError, StreamBus, StreamName};
use agentry_actors::stage_metrics::{self, Stage};
use agentry_actors::{AgentId, TenantId};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use uuid::Uuid;

use crate::bus::RedisBus;
use crate::db::knowledge::{self, NewChunk};
use crate::db::{DbError, Store};

pub const KB_STREAM: StreamName = StreamName::new("kb");
const GROUP: &str = "kb-ingest";
const BATCH: usize = 8;
const BLOCK: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestJob {
    pub tenant: TenantId,
    pub agent: AgentId,
    pub document: Uuid,
}

pub async fn enqueue(bus: &RedisBus, job: &IngestJob) -> Result<String, BusError> {
    let payload = serde_json::to_string(job).map_err(|e| BusError::Malformed {
        id: String::new(),
        reason: e.to_string(),
    })?;
    bus.publish(KB_STREAM, &payload).await
}

pub struct IngestWorker {
    pub store: Store,
    pub bus: RedisBus,
    pub embedder: Arc<dyn Embedder>,
    pub chunking: ChunkOptions,
    /// This instance's consumer name in the group.
    pub consumer: String,
    /// A job unacknowledged this long belongs to a consumer presumed dead, and
    /// a document pending this long without a job has lost it.
    pub recover_after: Duration,
}

/// Why a job did not finish; transient ones stay pending and are retried.
enum JobError {
    Transient(String),
}

impl From<DbError> for JobError {
    fn from(error: DbError) -> Self {
        Self::Transient(error.to_string())
    }
}

impl IngestWorker {
    /// Runs until `shutdown` turns true; the job in hand is finished first.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let housekeeping_every = (self.recover_after / 2).max(Duration::from_millis(100));
        let mut last_housekeeping = Instant::now() - housekeeping_every;
        // Created once, and again after a failed read: a restarted Redis has lost it.
        let mut group_ready = false;
        while !*shutdown.borrow() {
            if !group_ready {
                if let Err(error) = self.bus.ensure_group(KB_STREAM, GROUP).await {
                    tracing::warn!(%error, "kb-ingest: stream unavailable");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
                group_ready = true;
            }
            if last_housekeeping.elapsed() >= housekeeping_every {
                last_housekeeping = Instant::now();
                self.housekeeping().await;
            }
            let entries = tokio::select! {
                read = self.bus.read_group(KB_STREAM, GROUP, &self.consumer, BATCH, BLOCK) => read,
                _ = shutdown.changed() => break,
            };
            match entries {
                Ok(entries) if entries.is_empty() => {}
                Ok(entries) => {
                    self.process_all(entries).await;
                    self.report_backlog().await;
                }
                Err(error) => {
                    tracing::warn!(%error, "kb-ingest: read failed");
                    group_ready = false;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn housekeeping(&self) {
        match self
            .bus
            .reclaim(KB_STREAM, GROUP, &self.consumer, self.recover_after, BATCH)
            .await
        {
            Ok(entries) if !entries.is_empty() => self.process_all(entries).await,
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "kb-ingest: reclaim failed"),
        }
        match stale_pending(&self.store, self.recover_after).await {
            Ok(jobs) => {
                for job in jobs {
                    if let Err(error) = enqueue(&self.bus, &job).await {
                        tracing::warn!(%error, "kb-ingest: re-enqueue failed");
                        break;
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "kb-ingest: sweep failed"),
        }
        self.report_backlog().await;
    }

    async fn report_backlog(&self) {
        if let Ok((backlog, oldest_ms)) = self.bus.group_depth(KB_STREAM, GROUP).await {
            metrics::gauge!("agentry_ingest_backlog").set(backlog as f64);
            metrics::gauge!("agentry_ingest_oldest_age_seconds")
                .set(oldest_ms.map_or(0.0, crate::telemetry::age_secs));
        }
    }

    async fn process_all(&self, entries: Vec<agentry_actors::ports::StreamEntry>) {
        for entry in entries {
            let started = Instant::now();
            let outcome = match serde_json::from_str::<IngestJob>(&entry.payload) {
                Ok(job) => match self.ingest(&job).await {
                    Ok(outcome) => outcome,
                    Err(JobError::Transient(reason)) => {
                        // Left pending: another pass (or instance) reclaims it.
                        tracing::warn!(document = %job.document, %reason, "kb-ingest: will retry");
                        stage_metrics::record(Stage::Ingest, "retry", started);
                        continue;
                    }
                },
                Err(error) => {
                    tracing::error!(id = %entry.id, %error, "kb-ingest: dropping a malformed job");
                    "malformed"
                }
            };
            stage_metrics::record(Stage::Ingest, outcome, started);
            if let Err(error) = self.bus.ack(KB_STREAM, GROUP, &[entry.id]).await {
                tracing::warn!(%error, "kb-ingest: ack failed; the job may run twice (it is idempotent)");
            }
        }
    }

    /// Chunks, embeds and stores one document. Idempotent: a ready document is left alone.
    async fn ingest(&self, job: &IngestJob) -> Result<&'static str, JobError> {
        let mut tx = self.store.tenant(job.tenant).await?;
        let source = match knowledge::document_source(&mut tx, job.agent, job.document).await {
            Ok(source) => source,
            // Deleted before we got to it.
            Err(DbError::NotFound) => return Ok("gone"),
            Err(other) => return Err(other.into()),
        };
        if source.status == "ready" {
            return Ok("duplicate");
        }
        let content_type = ContentType::parse(&source.content_type).unwrap_or(ContentType::Text);
        let drafts = chunk_document(&source.title, &source.content, content_type, &self.chunking);
        if drafts.is_empty() {
            knowledge::mark_failed(&mut tx, job.document, "the document has no text to index")
                .await?;
            tx.commit().await?;
            return Ok("failed");
        }
        let texts: Vec<String> = drafts
            .iter()
            .map(|d| format!("{}\n{}", d.heading, d.text))
            .collect();
        let vectors = match self.embedder.embed(&texts).await {
            Ok(embedded) if embedded.vectors.len() == drafts.len() => embedded.vectors,
            Ok(_) => {
                return Err(JobError::Transient(
                    "the embedder returned the wrong number of vectors".into(),
                ))
            }
            Err(error) => {
                knowledge::mark_failed(
                    &mut tx,
                    job.document,
                    &format!("embedding failed: {error}"),
                )
                .await?;
                tx.commit().await?;
                return Ok("failed");
            }
        };
        let chunks: Vec<NewChunk> = drafts
            .into_iter()
            .zip(vectors)
            .map(|(draft, embedding)| NewChunk {
                ordinal: draft.ordinal as i32,
                heading: draft.heading,
                body: draft.text,
                embedding,
            })
            .collect();
        knowledge::store_chunks(
            &mut tx,
            job.agent,
            job.document,
            &chunks,
            self.embedder.name(),
        )
        .await?;
        tx.commit().await?;
        Ok("ok")
    }
}

async fn stale_pending(store: &Store, older_than: Duration) -> Result<Vec<IngestJob>, DbError> {
    let rows: Vec<(Uuid, Uuid, Uuid)> = sqlx::query_as(
        "SELECT tenant_id, agent_id, document_id
         FROM agentry_claim_stale_pending_documents(make_interval(secs => $1))",
    )
    .bind(older_than.as_secs_f64())
    .fetch_all(store.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(tenant, agent, document)| IngestJob {
            tenant: TenantId::from_uuid(tenant),
            agent: AgentId::from_uuid(agent),
            document,
        })
        .collect())
}
