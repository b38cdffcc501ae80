//! RagRetriever: one per (tenant, agent) namespace. Holds the namespace's
//! vectors in memory and answers hybrid queries: dense cosine over its index
//! fused by reciprocal rank with the store's full-text ranking.
//!
//! Before each query it compares the namespace version with the store's, so a
//! document ingested or deleted on any instance shows up (or disappears) here
//! on the next query: caches are never staler than one version check.

use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;

use crate::knowledge::{reciprocal_rank_fusion, DenseIndex, RRF_K};
use crate::llm::Embedder;
use crate::ports::{KnowledgeChunk, KnowledgeStore, Namespace, StoreError};
use crate::stage_metrics::{self, Stage};

/// How many candidates each ranking contributes before fusion.
const CANDIDATES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum RetrieveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("embedding failed: {0}")]
    Embedding(String),
}

pub enum RagMsg {
    Retrieve {
        query: String,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<KnowledgeChunk>, RetrieveError>>,
    },
}

pub struct RagArgs {
    pub namespace: Namespace,
    pub knowledge: Arc<dyn KnowledgeStore>,
    pub embedder: Arc<dyn Embedder>,
}

pub struct RagState {
    args: RagArgs,
    /// `None` until the namespace has vectors (their size fixes the dimension).
    index: Option<DenseIndex>,
    version: Option<i64>,
}

pub struct RagRetriever;

impl RagState {
    async fn refresh(&mut self) -> Result<(), RetrieveError> {
        let namespace = self.args.namespace;
        let version = self.args.knowledge.namespace_version(namespace).await?;
        if self.version == Some(version) {
            return Ok(());
        }
        let vectors = self.args.knowledge.namespace_vectors(namespace).await?;
        let mut index = vectors
            .first()
            .and_then(|first| DenseIndex::new(first.vector.len()).ok());
        if let Some(index) = index.as_mut() {
            index.reserve(vectors.len());
            for stored in &vectors {
                // A vector of another dimension (the embedder changed) is skipped, not fatal.
                if index
                    .insert(stored.chunk_id, stored.document_id, &stored.vector)
                    .is_err()
                {
                    tracing::warn!(%namespace, chunk = %stored.chunk_id, "skipping an unusable vector");
                }
            }
        }
        self.index = index;
        self.version = Some(version);
        Ok(())
    }

    async fn retrieve(
        &mut self,
        query: &str,
        limit: usize,
    ) -> Result<Vec<KnowledgeChunk>, RetrieveError> {
        self.refresh().await?;
        let Some(index) = self.index.as_ref().filter(|index| !index.is_empty()) else {
            return Ok(Vec::new());
        };
        let namespace = self.args.namespace;
        let embedded = self
            .args
            .embedder
            .embed(&[query.to_owned()])
            .await
            .map_err(|e| RetrieveError::Embedding(e.to_string()))?;
        let dense: Vec<uuid::Uuid> = match embedded
            .first()
            .map(|vector| index.top_k(vector, CANDIDATES))
        {
            Some(Ok(ranked)) => ranked.into_iter().map(|(id, _)| id).collect(),
            // A query vector of another size (the embedder changed): fall back to full-text only.
            Some(Err(_)) | None => Vec::new(),
        };
        let lexical = self
            .args
            .knowledge
            .lexical_search(namespace, query, CANDIDATES)
            .await?;
        let fused: Vec<uuid::Uuid> = reciprocal_rank_fusion(&[dense, lexical], RRF_K)
            .into_iter()
            .take(limit)
            .map(|(id, _)| id)
            .collect();
        Ok(self.args.knowledge.chunks(namespace, &fused).await?)
    }
}

impl Actor for RagRetriever {
    type Msg = RagMsg;
    type State = RagState;
    type Arguments = RagArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: RagArgs,
    ) -> Result<RagState, ActorProcessingErr> {
        Ok(RagState {
            args,
            index: None,
            version: None,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut RagState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RagMsg::Retrieve {
                query,
                limit,
                reply,
            } => {
                let started = Instant::now();
                let result = state.retrieve(&query, limit).await;
                let outcome = if result.is_ok() { "ok" } else { "error" };
                stage_metrics::record(Stage::RagRetriever, outcome, started);
                let _ = reply.send(result);
            }
        }
        Ok(())
    }
}
