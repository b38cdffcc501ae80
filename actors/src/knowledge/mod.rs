//! Knowledge-base retrieval logic: chunking documents, the offline embedder,
//! the in-memory namespace snapshot (int8 dense index, BM25 full-text index)
//! and rank fusion.
//!
//! Everything here is pure computation; storing documents, chunks and vectors
//! belongs to the service crate, which loads snapshots from what it stores.

pub mod chunking;
pub mod embedding;
pub mod fusion;
pub mod index;
pub mod lexical;
pub mod quantized;
pub mod snapshot;
pub mod synthetic;

pub use chunking::{chunk_document, ChunkDraft, ChunkOptions, ContentType};
pub use embedding::{OfflineEmbedder, DEFAULT_DIMENSIONS, OFFLINE_EMBEDDER_NAME};
pub use fusion::{reciprocal_rank_fusion, RRF_K};
pub use index::{DenseIndex, IndexError};
pub use lexical::{candidate_budget, Analyzer, LexicalIndex};
pub use quantized::{DenseError, QuantizedIndex};
pub use snapshot::NamespaceSnapshot;

#[cfg(test)]
mod tests {
    use super::synthetic::{SyntheticConfig, SyntheticCorpus};
    use super::*;

    /// The pieces together: synthetic queries made from a chunk's words find
    /// that chunk among the first ten by offline embedding and dense search.
    #[test]
    fn synthetic_queries_find_their_source_chunk() {
        let corpus = SyntheticCorpus::generate(&SyntheticConfig {
            chunks: 600,
            ..SyntheticConfig::default()
        });
        let embedder = OfflineEmbedder::default();
        let mut index = DenseIndex::new(DEFAULT_DIMENSIONS).unwrap();
        for chunk in &corpus.chunks {
            index
                .insert(
                    chunk.chunk_id,
                    chunk.document_id,
                    &embedder.embed_one(&chunk.text),
                )
                .unwrap();
        }
        let queries = corpus.queries(100, 5);
        let found = queries
            .iter()
            .filter(|query| {
                index
                    .top_k(&embedder.embed_one(&query.text), 10)
                    .unwrap()
                    .iter()
                    .any(|(chunk, _)| *chunk == query.source_chunk)
            })
            .count();
        // 83 of 100 when written; most misses are queries of only common words.
        assert!(found >= 70, "{found} of 100");
    }
}
