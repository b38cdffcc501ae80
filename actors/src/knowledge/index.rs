//! An in-memory exhaustive cosine index over one namespace's chunk vectors.
//!
//! Exhaustive search is exact and, for the chunk counts one agent's knowledge
//! base has (thousands to a few hundred thousand), fast enough to need no
//! approximate structure: vectors sit in one contiguous buffer, scored by a
//! dot product the compiler vectorizes, with a bounded heap keeping the best k.
//! Vectors are expected L2-normalized (the [`crate::llm::Embedder`] contract),
//! so the dot product is the cosine similarity.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use uuid::Uuid;

/// Why a vector was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("an index needs at least one dimension")]
    ZeroDimensions,
    #[error("vector has {got} dimensions, the index has {expected}")]
    DimensionMismatch { expected: usize, got: usize },
    #[error("vector contains NaN or infinity")]
    NonFinite,
}

/// Which chunk (and of which document) a stored vector belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    chunk_id: Uuid,
    document_id: Uuid,
}

/// Exhaustive dot-product search over vectors of one fixed dimension.
///
/// Chunk ids are not checked for uniqueness (that would cost a map); re-index
/// a document with [`DenseIndex::remove_document`] then fresh inserts.
#[derive(Clone, Debug)]
pub struct DenseIndex {
    dimensions: usize,
    /// Row `i` is `vectors[i * dimensions..(i + 1) * dimensions]`.
    vectors: Vec<f32>,
    /// Row `i` belongs to `entries[i]`.
    entries: Vec<Entry>,
}

impl DenseIndex {
    /// An empty index for vectors of `dimensions` floats.
    pub fn new(dimensions: usize) -> Result<Self, IndexError> {
        if dimensions == 0 {
            return Err(IndexError::ZeroDimensions);
        }
        Ok(Self {
            dimensions,
            vectors: Vec::new(),
            entries: Vec::new(),
        })
    }

    /// The dimension every vector must have.
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// Number of stored vectors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Reserves room for `additional` more vectors (bulk loads).
    pub fn reserve(&mut self, additional: usize) {
        self.entries.reserve(additional);
        self.vectors
            .reserve(additional.saturating_mul(self.dimensions));
    }

    /// Stores `vector` for a chunk. It must have the index's dimension and only
    /// finite values (one NaN would make every ranking meaningless).
    pub fn insert(
        &mut self,
        chunk_id: Uuid,
        document_id: Uuid,
        vector: &[f32],
    ) -> Result<(), IndexError> {
        self.check(vector)?;
        self.vectors.extend_from_slice(vector);
        self.entries.push(Entry {
            chunk_id,
            document_id,
        });
        Ok(())
    }

    /// Removes every chunk of a document, compacting storage in place (order
    /// of the rest is kept). Returns how many chunks were removed.
    pub fn remove_document(&mut self, document_id: Uuid) -> usize {
        let dimensions = self.dimensions;
        let before = self.entries.len();
        let mut kept = 0;
        for row in 0..before {
            if self.entries[row].document_id == document_id {
                continue;
            }
            if kept != row {
                self.entries[kept] = self.entries[row];
                self.vectors
                    .copy_within(row * dimensions..(row + 1) * dimensions, kept * dimensions);
            }
            kept += 1;
        }
        self.entries.truncate(kept);
        self.vectors.truncate(kept * dimensions);
        before - kept
    }

    /// The `k` chunks most similar to `query`, best first, with their dot
    /// product. Equal scores are ordered by chunk id, so results do not depend
    /// on insertion order.
    pub fn top_k(&self, query: &[f32], k: usize) -> Result<Vec<(Uuid, f32)>, IndexError> {
        self.check(query)?;
        if k == 0 || self.entries.is_empty() {
            return Ok(Vec::new());
        }
        // A min-heap of the best k so far: its top is the one to beat, so most
        // rows cost one comparison and the whole search O(n log k).
        let mut best: BinaryHeap<Reverse<Candidate>> =
            BinaryHeap::with_capacity(k.min(self.entries.len()));
        for (vector, entry) in self
            .vectors
            .chunks_exact(self.dimensions)
            .zip(&self.entries)
        {
            let score = dot(query, vector);
            if best.len() < k {
                best.push(Reverse(Candidate {
                    score,
                    key: entry.chunk_id,
                    item: (),
                }));
                continue;
            }
            if let Some(mut worst) = best.peek_mut() {
                // The cheap float test first; the id only matters on a tie.
                if score >= worst.0.score {
                    let candidate = Candidate {
                        score,
                        key: entry.chunk_id,
                        item: (),
                    };
                    if candidate > worst.0 {
                        *worst = Reverse(candidate);
                    }
                }
            }
        }
        // Ascending Reverse order is descending candidate order: best first.
        Ok(best
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse(c)| (c.key, c.score))
            .collect())
    }

    fn check(&self, vector: &[f32]) -> Result<(), IndexError> {
        if vector.len() != self.dimensions {
            return Err(IndexError::DimensionMismatch {
                expected: self.dimensions,
                got: vector.len(),
            });
        }
        if !vector.iter().all(|x| x.is_finite()) {
            return Err(IndexError::NonFinite);
        }
        Ok(())
    }
}

/// A scored entry in a top-k search; greater is better (higher score, then
/// smaller key), so results do not depend on storage order. `item` is what the
/// index needs back besides the key (a row number, or nothing).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidate<T = ()> {
    pub(crate) score: f32,
    pub(crate) key: Uuid,
    pub(crate) item: T,
}

impl<T> Ord for Candidate<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.key.cmp(&self.key))
    }
}

impl<T> PartialOrd for Candidate<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> PartialEq for Candidate<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<T> Eq for Candidate<T> {}

/// Lanes of independent partial sums: float addition is not associative, so
/// the compiler vectorizes only what is written as separate accumulators.
/// Sixteen fill four 128-bit or two 256-bit registers and hide add latency.
const LANES: usize = 16;

/// The dot product of two equally long slices (extra elements of the longer
/// one are ignored).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let len = a.len().min(b.len());
    let (a, b) = (&a[..len], &b[..len]);
    let mut sums = [0.0f32; LANES];
    let mut a_blocks = a.chunks_exact(LANES);
    let mut b_blocks = b.chunks_exact(LANES);
    for (x, y) in a_blocks.by_ref().zip(b_blocks.by_ref()) {
        for ((sum, x), y) in sums.iter_mut().zip(x).zip(y) {
            *sum += x * y;
        }
    }
    let tail: f32 = a_blocks
        .remainder()
        .iter()
        .zip(b_blocks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    // Pairwise reduction of the lanes, for accuracy and a short dependency chain.
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            sums[i] += sums[i + width];
        }
    }
    sums[0] + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::synthetic::SplitMix64;

    fn id(rng: &mut SplitMix64) -> Uuid {
        rng.uuid()
    }

    #[test]
    fn dot_matches_a_plain_sum() {
        let mut rng = SplitMix64::new(1);
        for len in [0, 1, 7, 16, 17, 100, 384, 1000] {
            let a: Vec<f32> = (0..len).map(|_| rng.next_f64() as f32 - 0.5).collect();
            let b: Vec<f32> = (0..len).map(|_| rng.next_f64() as f32 - 0.5).collect();
            let plain: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            assert!((f64::from(dot(&a, &b)) - plain).abs() < 1e-4, "len {len}");
        }
    }

    #[test]
    fn top_k_matches_a_full_sort() {
        let mut rng = SplitMix64::new(42);
        let dimensions = 37; // not a multiple of the lane count
        let mut index = DenseIndex::new(dimensions).unwrap();
        let mut rows = Vec::new();
        for _ in 0..2000 {
            let (chunk, document) = (id(&mut rng), id(&mut rng));
            let vector = rng.unit_vector(dimensions);
            index.insert(chunk, document, &vector).unwrap();
            rows.push((chunk, vector));
        }
        // Exact duplicates force ties, which must be ordered by chunk id.
        for i in 0..20 {
            let chunk = id(&mut rng);
            let vector = rows[i].1.clone();
            index.insert(chunk, id(&mut rng), &vector).unwrap();
            rows.push((chunk, vector));
        }
        for q in 0..25 {
            let query = if q < 5 {
                rows[q].1.clone()
            } else {
                rng.unit_vector(dimensions)
            };
            let mut expected: Vec<(Uuid, f32)> =
                rows.iter().map(|(c, v)| (*c, dot(&query, v))).collect();
            expected.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            for k in [1, 3, 10, 100] {
                let got = index.top_k(&query, k).unwrap();
                assert_eq!(got, expected[..k].to_vec(), "query {q}, k {k}");
            }
        }
    }

    #[test]
    fn top_k_handles_small_and_empty_indexes() {
        let mut index = DenseIndex::new(2).unwrap();
        assert!(index.is_empty());
        assert_eq!(index.top_k(&[1.0, 0.0], 5).unwrap(), vec![]);
        let (a, b, doc) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(9));
        index.insert(a, doc, &[0.0, 1.0]).unwrap();
        index.insert(b, doc, &[1.0, 0.0]).unwrap();
        assert_eq!(index.len(), 2);
        assert_eq!(index.top_k(&[1.0, 0.0], 0).unwrap(), vec![]);
        assert_eq!(
            index.top_k(&[1.0, 0.0], 5).unwrap(),
            vec![(b, 1.0), (a, 0.0)]
        );
    }

    #[test]
    fn remove_document_compacts_and_keeps_the_rest() {
        let mut rng = SplitMix64::new(7);
        let mut index = DenseIndex::new(8).unwrap();
        let documents = [id(&mut rng), id(&mut rng), id(&mut rng)];
        let mut kept = Vec::new();
        for i in 0..30 {
            let document = documents[i % 3];
            let chunk = id(&mut rng);
            let vector = rng.unit_vector(8);
            index.insert(chunk, document, &vector).unwrap();
            if document != documents[1] {
                kept.push((chunk, vector));
            }
        }
        assert_eq!(index.remove_document(documents[1]), 10);
        assert_eq!(index.remove_document(documents[1]), 0);
        assert_eq!(index.len(), 20);
        assert_eq!(index.vectors.len(), 20 * 8);
        // Every kept chunk is still found with its own vector as the best match.
        for (chunk, vector) in &kept {
            assert_eq!(index.top_k(vector, 1).unwrap()[0].0, *chunk);
        }
        assert_eq!(index.remove_document(documents[0]), 10);
        assert_eq!(index.remove_document(documents[2]), 10);
        assert!(index.is_empty());
        assert!(index.vectors.is_empty());
    }

    #[test]
    fn wrong_vectors_are_rejected() {
        assert_eq!(DenseIndex::new(0).unwrap_err(), IndexError::ZeroDimensions);
        let mut index = DenseIndex::new(3).unwrap();
        let (chunk, doc) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(
            index.insert(chunk, doc, &[1.0, 0.0]),
            Err(IndexError::DimensionMismatch {
                expected: 3,
                got: 2
            })
        );
        assert_eq!(
            index.insert(chunk, doc, &[1.0, f32::NAN, 0.0]),
            Err(IndexError::NonFinite)
        );
        assert!(index.is_empty());
        index.insert(chunk, doc, &[1.0, 0.0, 0.0]).unwrap();
        assert_eq!(
            index.top_k(&[1.0; 4], 1),
            Err(IndexError::DimensionMismatch {
                expected: 3,
                got: 4
            })
        );
        assert_eq!(
            index.top_k(&[f32::INFINITY, 0.0, 0.0], 1),
            Err(IndexError::NonFinite)
        );
    }
}
