//! Knowledge-base retrieval logic: chunking documents, the offline embedder,
//! an in-memory dense index and rank fusion.
//!
//! Everything here is pure computation; storing documents, chunks and vectors
//! (and full-text search) belongs to the service crate, which calls these.

pub mod chunking;
pub mod embedding;
pub mod fusion;
pub mod index;
pub mod synthetic;

pub use chunking::{chunk_document, ChunkDraft, ChunkOptions, ContentType};
pub use embedding::{OfflineEmbedder, DEFAULT_DIMENSIONS, OFFLINE_EMBEDDER_NAME};
pub use fusion::{reciprocal_rank_fusion, RRF_K};
pub use index::{DenseIndex, IndexError};
