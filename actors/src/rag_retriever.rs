//! Retrieval: one RagRetriever actor per (tenant, agent) namespace keeps the
//! namespace's snapshot up to date; turns search that snapshot themselves, in
//! parallel, with no database call on a warm path.
//!
//! A snapshot ([`NamespaceSnapshot`]) holds the namespace's chunk texts,
//! vectors and lexical index in memory and never changes once published.
//! Every turn knows the namespace version its first write returned: a resident
//! snapshot at that version (or later) is searched at once; otherwise the
//! turn asks the namespace's actor, whose mailbox makes one load at a time,
//! and which applies only what changed (documents dropped and added) to the
//! snapshot it had, not a full reload. So a document ingested or deleted on any
//! instance is searched (or gone) from the next turn on, on every instance.

use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::knowledge::snapshot::NamespaceSnapshot;
use crate::llm::Embedder;
use crate::ports::{EmbeddingUsage, KnowledgeChunk, KnowledgeStore, Namespace, StoreError};
use crate::resident::ResidentNamespaces;
use crate::stage_metrics::{self, Stage};

/// How many candidates each ranking contributes before fusion.
const CANDIDATES: usize = 20;

/// Past this many chunks a search leaves the async workers for the blocking
/// pool, so a large namespace never stalls other turns' I/O.
const BLOCKING_SEARCH_CHUNKS: usize = 20_000;

pub type Resident = ResidentNamespaces<NamespaceSnapshot>;

#[derive(Debug, thiserror::Error)]
pub enum RetrieveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("embedding failed: {0}")]
    Embedding(String),
    #[error("the retriever stopped")]
    Stopped,
}

pub enum RagMsg {
    /// The namespace's snapshot at `version` or later, loading what changed.
    Snapshot {
        version: i64,
        reply: oneshot::Sender<Result<Arc<NamespaceSnapshot>, RetrieveError>>,
        /// The asking turn's span: a load it triggers belongs to that turn.
        span: tracing::Span,
    },
}

pub struct RagArgs {
    pub namespace: Namespace,
    pub knowledge: Arc<dyn KnowledgeStore>,
    pub resident: Arc<Resident>,
}

pub struct RagRetriever;

impl Actor for RagRetriever {
    type Msg = RagMsg;
    type State = RagArgs;
    type Arguments = RagArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: RagArgs,
    ) -> Result<RagArgs, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut RagArgs,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RagMsg::Snapshot {
                version,
                reply,
                span,
            } => {
                // Turns queued behind a load find it done.
                let result = match state.resident.current(state.namespace, version) {
                    Some(snapshot) => Ok(snapshot),
                    None => load(state).instrument(span).await,
                };
                let _ = reply.send(result);
            }
        }
        Ok(())
    }
}

/// Brings the namespace's snapshot up to date with the store.
async fn load(state: &RagArgs) -> Result<Arc<NamespaceSnapshot>, RetrieveError> {
    let started = Instant::now();
    let namespace = state.namespace;
    let base = state.resident.resident(namespace).map(|(_, s)| s);
    let held = base.as_ref().map(|s| s.documents()).unwrap_or_default();
    let mut changes = state.knowledge.changes(namespace, &held).await?;
    let kind = if base.is_some() {
        "incremental"
    } else {
        "full"
    };
    // Building a large namespace takes about a second (100k chunks): off the async workers.
    let removed = std::mem::take(&mut changes.removed);
    let added = std::mem::take(&mut changes.added);
    let snapshot =
        tokio::task::spawn_blocking(move || base.unwrap_or_default().apply(&removed, &added))
            .await
            .map(Arc::new)
            .map_err(|_| RetrieveError::Stopped)?;
    let bytes = snapshot.heap_bytes();
    state
        .resident
        .insert(namespace, changes.version, snapshot.clone(), bytes);
    metrics::counter!("agentry_retriever_loads_total", "kind" => kind).increment(1);
    metrics::histogram!("agentry_retriever_load_duration_seconds", "kind" => kind)
        .record(started.elapsed().as_secs_f64());
    tracing::debug!(%namespace, kind, chunks = snapshot.len(), bytes, "namespace snapshot loaded");
    Ok(snapshot)
}

/// The snapshot a turn searches: the resident one when current, else through
/// the namespace's actor.
pub async fn snapshot(
    resident: &Resident,
    retriever: &ActorRef<RagMsg>,
    namespace: Namespace,
    version: i64,
) -> Result<Arc<NamespaceSnapshot>, RetrieveError> {
    let hit = resident.current(namespace, version);
    stage_metrics::record_cache_lookup("namespace", hit.is_some());
    if let Some(snapshot) = hit {
        return Ok(snapshot);
    }
    let (reply, answer) = oneshot::channel();
    retriever
        .send_message(RagMsg::Snapshot {
            version,
            reply,
            span: tracing::Span::current(),
        })
        .map_err(|_| RetrieveError::Stopped)?;
    answer.await.map_err(|_| RetrieveError::Stopped)?
}

/// What a turn retrieved, and what embedding its question cost.
#[derive(Debug, Default)]
pub struct Retrieved {
    pub passages: Vec<KnowledgeChunk>,
    pub embedding: Option<EmbeddingUsage>,
}

/// Hybrid search of `snapshot` for `query`: dense and lexical rankings fused.
/// An empty namespace embeds nothing (and so costs nothing).
pub async fn search(
    snapshot: Arc<NamespaceSnapshot>,
    embedder: &dyn Embedder,
    query: &str,
    limit: usize,
) -> Result<Retrieved, RetrieveError> {
    let started = Instant::now();
    let result = search_snapshot(snapshot, embedder, query, limit).await;
    let outcome = match &result {
        Ok(retrieved) if retrieved.embedding.is_none() => "empty",
        Ok(_) => "ok",
        Err(_) => "error",
    };
    stage_metrics::record(Stage::Retriever, outcome, started);
    result
}

async fn search_snapshot(
    snapshot: Arc<NamespaceSnapshot>,
    embedder: &dyn Embedder,
    query: &str,
    limit: usize,
) -> Result<Retrieved, RetrieveError> {
    if snapshot.is_empty() {
        return Ok(Retrieved::default());
    }
    let embedded = embedder
        .embed(&[query.to_owned()])
        .await
        .map_err(|e| RetrieveError::Embedding(e.to_string()))?;
    let embedding = Some(EmbeddingUsage {
        embedder: embedder.name().to_owned(),
        tokens: embedded.tokens,
    });
    let vector = embedded.vectors.into_iter().next();
    let passages = if snapshot.len() < BLOCKING_SEARCH_CHUNKS {
        snapshot.search(vector.as_deref(), query, CANDIDATES, limit)
    } else {
        let query = query.to_owned();
        tokio::task::spawn_blocking(move || {
            snapshot.search(vector.as_deref(), &query, CANDIDATES, limit)
        })
        .await
        .map_err(|_| RetrieveError::Stopped)?
    };
    Ok(Retrieved {
        passages,
        embedding,
    })
}
