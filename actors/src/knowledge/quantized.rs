//! Dense search over int8 scalar-quantized vectors, reranked in full precision.
//!
//! Each vector is stored twice: as int8 codes with one scale per vector
//! (`code = round(x * 127 / max |x|)`), which an exhaustive scan reads, and as
//! the original f32, which only the scan's best few dozen are rescored with
//! (`max(4k, 40)` candidates for the top `k`). The scan reads a quarter of the
//! bytes an f32 scan reads and does integer multiply-adds the CPU packs
//! sixteen to an instruction; the rerank makes the returned scores exact and
//! the ranking that of exact search but for the rare true neighbour the int8
//! scores pushed out of the candidates.
//!
//! Measured on the development machine (2-core AMD EPYC with AVX2, shared
//! and noisy; release build, one thread; `timing_dense_search`: the synthetic
//! corpus of `knowledge::synthetic` embedded by `OfflineEmbedder`, 384
//! dimensions; 200 queries, top 20; figures move by 10-20% between runs):
//!
//! | rows | f32 exhaustive p50 / p99 | this index p50 / p99 | recall@10 vs f32 | int8 scan alone | heap |
//! |---:|---:|---:|---:|---:|---:|
//! | 1,000 | 62 µs / 100 µs | 33 µs / 75 µs | 1.000 | 0.980 | 2.0 MB |
//! | 10,000 | 628 µs / 940 µs | 211 µs / 320 µs | 1.000 | 0.984 | 19.9 MB |
//! | 100,000 | 7.26 ms / 10.1 ms | 2.13 ms / 3.26 ms | 1.000 | 0.981 | 195 MB |
//!
//! Building 100k rows takes 0.23-0.28 s. The f32 scan is bound by memory
//! bandwidth (154 MB a query at 100k rows). An i8×i8 scan compiled for the
//! x86-64 baseline is bound instead by widening bytes to words: 2.8 ms for the
//! bare scan at 100k, with or without AVX2. Widening the query to i16 once and
//! compiling the scan for AVX2 where the CPU has it (detected at run time)
//! brings the bare scan to 1.3 ms. Dropping the f32 copies (and the rerank)
//! would cut the heap by four fifths at a recall of 0.98.
//!
//! HNSW (`hnsw_rs` 0.3.5, measured once outside the crate, same corpus) does
//! not suit these vectors. Feature-hashed embeddings have a high intrinsic
//! dimension, and for them a proximity graph is both slow and inexact: at 10k
//! rows (M 24, ef_construction 200, built in 24 s) recall@10 reached 0.955
//! only at ef 256, where a search took 4.0 ms. At 100k rows (M 16,
//! ef_construction 100, built in 279 s) it reached 0.44 at 7.3 ms. It also
//! cannot remove a row.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use uuid::Uuid;

use super::index::{dot, IndexError};

/// Rows per storage block. Blocks are shared between clones through `Arc`,
/// so a change copies at most the blocks it touches; appends touch the last.
const BLOCK_ROWS: usize = 1024;

/// The largest code magnitude: symmetric, so that `-x` quantizes to `-q(x)`.
const CODE_MAX: f32 = 127.0;

/// Candidates the int8 scan keeps for every result asked for...
const RERANK_FACTOR: usize = 4;
/// ...and at least this many, so that a small `k` still reranks enough.
const RERANK_MIN: usize = 40;

/// Why a row was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DenseError {
    #[error(transparent)]
    Vector(#[from] IndexError),
    /// Row numbers are `u32`; compaction frees the numbers of removed rows.
    #[error("the index has numbered as many rows as a u32 can")]
    Full,
}

/// One block of rows, row-major.
#[derive(Clone, Debug, Default)]
struct Block {
    codes: Vec<i8>,
    /// Per row: the value of one code step (`max |x| / 127`); 0 for a zero vector.
    scales: Vec<f32>,
    vectors: Vec<f32>,
    keys: Vec<Uuid>,
}

impl Block {
    fn heap_bytes(&self) -> usize {
        self.codes.capacity()
            + self.scales.capacity() * size_of::<f32>()
            + self.vectors.capacity() * size_of::<f32>()
            + self.keys.capacity() * size_of::<Uuid>()
    }

    fn rows(&self) -> usize {
        self.scales.len()
    }
}

/// Exhaustive int8 dot-product search with a full-precision rerank, over rows
/// numbered from 0 in insertion order.
///
/// Rows are appended with [`QuantizedIndex::push`]; [`QuantizedIndex::remove`]
/// only marks a row, and [`QuantizedIndex::compact`] reclaims marked rows and
/// renumbers the rest. Cloning is cheap (storage blocks are shared), and a
/// clone's changes copy only the blocks they touch, so an immutable snapshot
/// can be changed into the next one while searches of the old one go on.
/// Vectors are expected L2-normalized, so the dot product is the cosine.
#[derive(Clone, Debug)]
pub struct QuantizedIndex {
    dimensions: usize,
    /// Row `r` is row `r % BLOCK_ROWS` of block `r / BLOCK_ROWS`.
    blocks: Vec<Arc<Block>>,
    /// Rows numbered so far (blocks may hold reserved room past them).
    rows: usize,
    /// Bit `r` set: row `r` is live (searched).
    live: Vec<u64>,
    live_rows: usize,
}

impl QuantizedIndex {
    /// An empty index for vectors of `dimensions` floats.
    pub fn new(dimensions: usize) -> Result<Self, IndexError> {
        if dimensions == 0 {
            return Err(IndexError::ZeroDimensions);
        }
        Ok(Self {
            dimensions,
            blocks: Vec::new(),
            rows: 0,
            live: Vec::new(),
            live_rows: 0,
        })
    }

    /// The dimension every vector must have.
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// Number of live rows.
    pub fn len(&self) -> usize {
        self.live_rows
    }

    pub fn is_empty(&self) -> bool {
        self.live_rows == 0
    }

    /// Rows numbered so far, removed ones included: the next row's number.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Removed rows still holding storage.
    pub fn garbage_rows(&self) -> usize {
        self.rows() - self.live_rows
    }

    /// Whether `row` is live (pushed and not removed).
    pub fn is_live(&self, row: u32) -> bool {
        let row = row as usize;
        self.live
            .get(row / 64)
            .is_some_and(|bits| bits & (1 << (row % 64)) != 0)
    }

    /// Reserves room for `additional` more rows (bulk loads).
    pub fn reserve(&mut self, additional: usize) {
        let (start, end) = (self.rows(), self.rows() + additional);
        self.live
            .reserve(end.div_ceil(64).saturating_sub(self.live.len()));
        self.blocks
            .reserve(end.div_ceil(BLOCK_ROWS).saturating_sub(self.blocks.len()));
        let mut row = start;
        while row < end {
            let in_block = (BLOCK_ROWS - row % BLOCK_ROWS).min(end - row);
            let dimensions = self.dimensions;
            let block = self.block_for(row);
            block.codes.reserve(in_block * dimensions);
            block.vectors.reserve(in_block * dimensions);
            block.scales.reserve(in_block);
            block.keys.reserve(in_block);
            row += in_block;
        }
    }

    /// Appends `vector` under `key` (the chunk id, which orders equal scores)
    /// and returns its row number. It must have the index's dimension and only
    /// finite values (one NaN would make every ranking meaningless).
    pub fn push(&mut self, key: Uuid, vector: &[f32]) -> Result<u32, DenseError> {
        check(self.dimensions, vector)?;
        let row = self.rows();
        let number = u32::try_from(row).map_err(|_| DenseError::Full)?;
        let block = self.block_for(row);
        let scale = quantize_into(vector, &mut block.codes);
        block.scales.push(scale);
        block.vectors.extend_from_slice(vector);
        block.keys.push(key);
        self.rows += 1;
        self.set_live(row);
        Ok(number)
    }

    /// Marks `row` removed; false if it was not live. Its storage stays until
    /// [`QuantizedIndex::compact`].
    pub fn remove(&mut self, row: u32) -> bool {
        if !self.is_live(row) {
            return false;
        }
        let row = row as usize;
        self.live[row / 64] &= !(1 << (row % 64));
        self.live_rows -= 1;
        true
    }

    /// Keeps the rows `remap` maps to a number and drops the others: row `r`
    /// becomes row `remap[r]`; rows past the end of `remap` are dropped. Kept
    /// rows stay live or removed as they were. New numbers must count up from
    /// 0 in row order (as [`QuantizedIndex::compact_removed`] makes them).
    pub fn compact(&mut self, remap: &[Option<u32>]) {
        let kept = remap.iter().flatten().count();
        let mut compacted = Self {
            dimensions: self.dimensions,
            blocks: Vec::new(),
            rows: 0,
            live: Vec::new(),
            live_rows: 0,
        };
        compacted.reserve(kept);
        let dimensions = self.dimensions;
        for (row, new) in remap.iter().enumerate().take(self.rows()) {
            if new.is_none() {
                continue;
            }
            let (block, offset) = (&self.blocks[row / BLOCK_ROWS], row % BLOCK_ROWS);
            let new_row = compacted.rows();
            debug_assert_eq!(
                *new,
                Some(new_row as u32),
                "remap must count up in row order"
            );
            let target = compacted.block_for(new_row);
            let range = offset * dimensions..(offset + 1) * dimensions;
            target.codes.extend_from_slice(&block.codes[range.clone()]);
            target.vectors.extend_from_slice(&block.vectors[range]);
            target.scales.push(block.scales[offset]);
            target.keys.push(block.keys[offset]);
            compacted.rows += 1;
            if self.is_live(row as u32) {
                compacted.set_live(new_row);
            } else if new_row / 64 == compacted.live.len() {
                compacted.live.push(0);
            }
        }
        *self = compacted;
    }

    /// Drops removed rows and renumbers the rest in order; returns each old
    /// row's new number (`None` for a removed one).
    pub fn compact_removed(&mut self) -> Vec<Option<u32>> {
        let mut next = 0u32;
        let remap: Vec<Option<u32>> = (0..self.rows() as u32)
            .map(|row| {
                self.is_live(row).then(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        self.compact(&remap);
        remap
    }

    /// The key a row was pushed with, removed or not.
    pub fn key(&self, row: u32) -> Option<Uuid> {
        let row = row as usize;
        self.blocks
            .get(row / BLOCK_ROWS)?
            .keys
            .get(row % BLOCK_ROWS)
            .copied()
    }

    /// The full-precision vector of a live row.
    pub fn vector(&self, row: u32) -> Option<&[f32]> {
        if !self.is_live(row) {
            return None;
        }
        Some(self.full_vector(row as usize))
    }

    /// The `k` live rows most similar to `query`, best first, with their
    /// full-precision dot product. Equal scores are ordered by key.
    pub fn top_k(&self, query: &[f32], k: usize) -> Result<Vec<(u32, f32)>, IndexError> {
        check(self.dimensions, query)?;
        if k == 0 || self.live_rows == 0 {
            return Ok(Vec::new());
        }
        let mut codes = Vec::with_capacity(self.dimensions);
        quantize_into(query, &mut codes);
        // Widened once here rather than for every row in the scan.
        let codes: Vec<i16> = codes.into_iter().map(i16::from).collect();
        let keep = k.saturating_mul(RERANK_FACTOR).max(RERANK_MIN);
        let mut reranked: Vec<Candidate> = self
            .scan(&codes, keep)
            .into_iter()
            .map(|candidate| Candidate {
                score: dot(query, self.full_vector(candidate.item as usize)),
                ..candidate
            })
            .collect();
        reranked.sort_unstable_by(|a, b| b.cmp(a));
        reranked.truncate(k);
        Ok(reranked.into_iter().map(|c| (c.item, c.score)).collect())
    }

    /// The `keep` live rows of best approximate score (the codes' dot product
    /// times the row's scale; the query's scale is common to all), unordered.
    fn scan(&self, query_codes: &[i16], keep: usize) -> Vec<Candidate> {
        let keep = keep.min(self.live_rows);
        let mut best: BinaryHeap<Reverse<Candidate>> = BinaryHeap::with_capacity(keep + 1);
        // One block's dot products first, in a tight loop the compiler
        // vectorizes; then the branchy selection over them.
        let mut dots = vec![0i32; BLOCK_ROWS];
        // The score to beat once `best` is full, kept apart from the heap so
        // that most rows cost one comparison.
        let mut floor = f32::NEG_INFINITY;
        for (block_index, block) in self.blocks.iter().enumerate() {
            let first_row = block_index * BLOCK_ROWS;
            let dots = &mut dots[..block.rows()];
            dot_rows(query_codes, &block.codes, self.dimensions, dots);
            for (offset, (dot, scale)) in dots.iter().zip(&block.scales).enumerate() {
                let score = *dot as f32 * scale;
                if score < floor {
                    continue;
                }
                let row = first_row + offset;
                if self.live[row / 64] & (1 << (row % 64)) == 0 {
                    continue;
                }
                let candidate = Candidate {
                    score,
                    key: block.keys[offset],
                    item: row as u32,
                };
                if best.len() < keep {
                    best.push(Reverse(candidate));
                } else if let Some(mut worst) = best.peek_mut() {
                    if candidate > worst.0 {
                        *worst = Reverse(candidate);
                    }
                }
                if best.len() == keep {
                    floor = best.peek().map_or(floor, |worst| worst.0.score);
                }
            }
        }
        best.into_iter()
            .map(|Reverse(candidate)| candidate)
            .collect()
    }

    /// Heap memory held, by capacity; blocks shared with clones are counted in full.
    pub fn heap_bytes(&self) -> usize {
        let blocks: usize = self
            .blocks
            .iter()
            .map(|block| block.heap_bytes() + size_of::<Block>() + 2 * size_of::<usize>())
            .sum();
        blocks
            + self.blocks.capacity() * size_of::<Arc<Block>>()
            + self.live.capacity() * size_of::<u64>()
    }

    fn full_vector(&self, row: usize) -> &[f32] {
        let offset = row % BLOCK_ROWS;
        let block = &self.blocks[row / BLOCK_ROWS];
        &block.vectors[offset * self.dimensions..(offset + 1) * self.dimensions]
    }

    /// The block row `row` goes in (the next row, or one being reserved), made
    /// writable: a block shared with a clone is copied first.
    fn block_for(&mut self, row: usize) -> &mut Block {
        let index = row / BLOCK_ROWS;
        if index == self.blocks.len() {
            self.blocks.push(Arc::default());
        }
        Arc::make_mut(&mut self.blocks[index])
    }

    fn set_live(&mut self, row: usize) {
        if row / 64 == self.live.len() {
            self.live.push(0);
        }
        self.live[row / 64] |= 1 << (row % 64);
        self.live_rows += 1;
    }
}

fn check(dimensions: usize, vector: &[f32]) -> Result<(), IndexError> {
    if vector.len() != dimensions {
        return Err(IndexError::DimensionMismatch {
            expected: dimensions,
            got: vector.len(),
        });
    }
    if !vector.iter().all(|x| x.is_finite()) {
        return Err(IndexError::NonFinite);
    }
    Ok(())
}

/// Appends `vector`'s codes to `codes` and returns its scale (0 for a zero vector).
fn quantize_into(vector: &[f32], codes: &mut Vec<i8>) -> f32 {
    let max = vector.iter().fold(0.0f32, |max, x| max.max(x.abs()));
    if max == 0.0 {
        codes.extend(std::iter::repeat_n(0, vector.len()));
        return 0.0;
    }
    let inverse = CODE_MAX / max;
    codes.extend(
        vector
            .iter()
            .map(|x| (x * inverse).round().clamp(-CODE_MAX, CODE_MAX) as i8),
    );
    max / CODE_MAX
}

/// The dot products of `query` (codes widened to i16) with each
/// `dimensions`-long row of `codes`, into `out`.
fn dot_rows(query: &[i16], codes: &[i8], dimensions: usize, out: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU was just found to support AVX2, the one requirement
        // of this function, which holds no other unsafe code.
        unsafe { dot_rows_avx2(query, codes, dimensions, out) };
        return;
    }
    dot_rows_portable(query, codes, dimensions, out);
}

/// [`dot_rows_portable`] compiled for AVX2, which widens and multiply-adds
/// sixteen codes an instruction where the x86-64 baseline (SSE2) needs several.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_rows_avx2(query: &[i16], codes: &[i8], dimensions: usize, out: &mut [i32]) {
    dot_rows_portable(query, codes, dimensions, out);
}

#[inline(always)]
fn dot_rows_portable(query: &[i16], codes: &[i8], dimensions: usize, out: &mut [i32]) {
    for (row, out) in codes.chunks_exact(dimensions).zip(out.iter_mut()) {
        *out = dot_codes(query, row);
    }
}

/// Lanes of independent i32 sums, so that the compiler vectorizes them (four
/// AVX2 registers of products); fewer measured slower, more spilled.
const CODE_LANES: usize = 32;

/// The dot product of widened query codes with one row's codes (extra
/// elements of the longer slice are ignored). It cannot overflow: each
/// product is at most 127² < 2^14 and a lane sums under 2^17 of them for any
/// vector below four million dimensions.
#[inline(always)]
fn dot_codes(a: &[i16], b: &[i8]) -> i32 {
    let len = a.len().min(b.len());
    let (a, b) = (&a[..len], &b[..len]);
    let mut sums = [0i32; CODE_LANES];
    let mut a_blocks = a.chunks_exact(CODE_LANES);
    let mut b_blocks = b.chunks_exact(CODE_LANES);
    for (x, y) in a_blocks.by_ref().zip(b_blocks.by_ref()) {
        for ((sum, x), y) in sums.iter_mut().zip(x).zip(y) {
            *sum += i32::from(*x) * i32::from(*y);
        }
    }
    let tail: i32 = a_blocks
        .remainder()
        .iter()
        .zip(b_blocks.remainder())
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum();
    sums.iter().sum::<i32>() + tail
}

/// A scored row: the row number rides along as the candidate's item.
type Candidate = super::index::Candidate<u32>;

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::knowledge::index::DenseIndex;
    use crate::knowledge::synthetic::{SplitMix64, SyntheticConfig, SyntheticCorpus};
    use crate::knowledge::OfflineEmbedder;

    /// Mean share of the exact top 10 that `index` returns, over `queries`.
    fn recall_at_10(exact: &DenseIndex, index: &QuantizedIndex, queries: &[Vec<f32>]) -> f64 {
        let mut found = 0;
        for query in queries {
            let truth: Vec<Uuid> = exact
                .top_k(query, 10)
                .unwrap()
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            found += index
                .top_k(query, 10)
                .unwrap()
                .iter()
                .filter(|(row, _)| truth.contains(&index.key(*row).unwrap()))
                .count();
        }
        found as f64 / (10 * queries.len()) as f64
    }

    #[test]
    fn code_dot_products_match_a_plain_sum() {
        let mut rng = SplitMix64::new(5);
        for len in [0, 1, 31, 32, 33, 100, 384, 1000] {
            let a: Vec<i16> = (0..len).map(|_| rng.below(255) as i16 - 127).collect();
            let b: Vec<i8> = (0..len)
                .map(|_| (rng.below(255) as i16 - 127) as i8)
                .collect();
            let plain: i32 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| i32::from(*x) * i32::from(*y))
                .sum();
            assert_eq!(dot_codes(&a, &b), plain, "len {len}");
            let mut out = [0i32; 3];
            let rows: Vec<i8> = b.iter().cycle().take(3 * len).copied().collect();
            if len > 0 {
                dot_rows(&a, &rows, len, &mut out);
                assert_eq!(out, [plain; 3], "len {len}");
            }
        }
        // The extremes of the code range do not overflow.
        assert_eq!(dot_codes(&[-127; 384], &[-127; 384]), 127 * 127 * 384);
    }

    #[test]
    fn quantization_is_symmetric_and_keeps_zero_vectors() {
        let mut codes = Vec::new();
        let scale = quantize_into(&[0.5, -0.25, 0.0, -0.5], &mut codes);
        assert_eq!(codes, [127, -64, 0, -127]);
        assert!((scale - 0.5 / 127.0).abs() < 1e-9);
        codes.clear();
        assert_eq!(quantize_into(&[0.0; 4], &mut codes), 0.0);
        assert_eq!(codes, [0; 4]);
    }

    #[test]
    fn results_are_exact_scores_of_nearly_the_exact_neighbours() {
        let mut rng = SplitMix64::new(42);
        let dimensions = 37; // not a multiple of the lane count
        let mut exact = DenseIndex::new(dimensions).unwrap();
        let mut index = QuantizedIndex::new(dimensions).unwrap();
        for _ in 0..3000 {
            let (chunk, vector) = (rng.uuid(), rng.unit_vector(dimensions));
            exact.insert(chunk, Uuid::nil(), &vector).unwrap();
            assert_eq!(
                index.push(chunk, &vector).unwrap() as usize,
                index.rows() - 1
            );
        }
        assert_eq!(
            (index.len(), index.rows(), index.garbage_rows()),
            (3000, 3000, 0)
        );
        let queries: Vec<Vec<f32>> = (0..50).map(|_| rng.unit_vector(dimensions)).collect();
        for query in &queries {
            let got = index.top_k(query, 20).unwrap();
            assert_eq!(got.len(), 20);
            assert!(got.windows(2).all(|w| w[0].1 >= w[1].1));
            for (row, score) in got {
                assert_eq!(score, dot(query, index.vector(row).unwrap()));
            }
        }
        let recall = recall_at_10(&exact, &index, &queries);
        assert!(recall >= 0.99, "{recall}");
    }

    #[test]
    fn equal_vectors_are_ordered_by_key() {
        let mut index = QuantizedIndex::new(2).unwrap();
        for n in [7u128, 3, 5] {
            index.push(Uuid::from_u128(n), &[0.6, 0.8]).unwrap();
        }
        index.push(Uuid::from_u128(1), &[1.0, 0.0]).unwrap();
        let keys: Vec<Uuid> = index
            .top_k(&[0.6, 0.8], 4)
            .unwrap()
            .iter()
            .map(|(row, _)| index.key(*row).unwrap())
            .collect();
        let expected: Vec<Uuid> = [3u128, 5, 7, 1].into_iter().map(Uuid::from_u128).collect();
        assert_eq!(keys, expected);
    }

    #[test]
    fn removed_rows_are_never_returned_and_compaction_keeps_the_rest() {
        let mut rng = SplitMix64::new(7);
        let mut index = QuantizedIndex::new(16).unwrap();
        let mut vectors = Vec::new();
        // More than a block, so that compaction crosses block boundaries.
        for _ in 0..2500 {
            let vector = rng.unit_vector(16);
            index.push(rng.uuid(), &vector).unwrap();
            vectors.push(vector);
        }
        let before = index.clone();
        for row in (0..2500u32).filter(|row| row % 3 != 0) {
            assert!(index.remove(row));
            assert!(!index.remove(row));
        }
        assert_eq!((index.len(), index.garbage_rows()), (834, 1666));
        for (row, vector) in vectors.iter().enumerate() {
            let best = index.top_k(vector, 5).unwrap();
            assert!(best.iter().all(|(r, _)| r % 3 == 0));
            if row % 3 == 0 {
                assert_eq!(best[0].0 as usize, row);
            }
        }
        let keys: Vec<Uuid> = (0..2500u32)
            .filter(|r| r % 3 == 0)
            .map(|r| index.key(r).unwrap())
            .collect();
        let remap = index.compact_removed();
        assert_eq!(remap[3], Some(1));
        assert_eq!(remap[4], None);
        assert_eq!(
            (index.len(), index.rows(), index.garbage_rows()),
            (834, 834, 0)
        );
        for (new_row, key) in keys.iter().enumerate() {
            assert_eq!(index.key(new_row as u32), Some(*key));
            let vector = &vectors[new_row * 3];
            assert_eq!(index.vector(new_row as u32), Some(vector.as_slice()));
            assert_eq!(index.top_k(vector, 1).unwrap()[0].0 as usize, new_row);
        }
        // The clone taken before shares storage and saw none of it.
        assert_eq!(before.len(), 2500);
        assert_eq!(before.top_k(&vectors[1], 1).unwrap()[0].0, 1);
    }

    #[test]
    fn compaction_can_keep_removed_rows_in_place() {
        let mut index = QuantizedIndex::new(2).unwrap();
        for n in 0..4u128 {
            index.push(Uuid::from_u128(n), &[1.0, n as f32]).unwrap();
        }
        index.remove(1);
        index.remove(2);
        // Keep row 1 (removed) but drop row 2: row 1 stays unsearchable.
        index.compact(&[Some(0), Some(1), None, Some(2)]);
        assert_eq!((index.rows(), index.len()), (3, 2));
        assert!(!index.is_live(1));
        assert_eq!(index.key(2), Some(Uuid::from_u128(3)));
        let rows: Vec<u32> = index
            .top_k(&[0.0, 1.0], 3)
            .unwrap()
            .iter()
            .map(|(r, _)| *r)
            .collect();
        assert_eq!(rows, [2, 0]);
    }

    #[test]
    fn wrong_vectors_are_rejected() {
        assert_eq!(
            QuantizedIndex::new(0).unwrap_err(),
            IndexError::ZeroDimensions
        );
        let mut index = QuantizedIndex::new(3).unwrap();
        let key = Uuid::from_u128(1);
        assert_eq!(
            index.push(key, &[1.0, 0.0]),
            Err(DenseError::Vector(IndexError::DimensionMismatch {
                expected: 3,
                got: 2
            }))
        );
        assert_eq!(
            index.push(key, &[1.0, f32::NAN, 0.0]),
            Err(DenseError::Vector(IndexError::NonFinite))
        );
        assert!(index.is_empty());
        assert_eq!(index.top_k(&[1.0, 0.0, 0.0], 3).unwrap(), vec![]);
        index.push(key, &[0.0, 0.0, 0.0]).unwrap();
        assert_eq!(index.top_k(&[1.0, 0.0, 0.0], 3).unwrap(), vec![(0, 0.0)]);
        assert_eq!(index.top_k(&[1.0, 0.0, 0.0], 0).unwrap(), vec![]);
        assert!(index.top_k(&[1.0; 4], 1).is_err());
        assert!(index.top_k(&[f32::INFINITY, 0.0, 0.0], 1).is_err());
    }

    #[test]
    fn heap_bytes_grow_with_rows_and_shrink_with_compaction() {
        let mut rng = SplitMix64::new(9);
        let mut index = QuantizedIndex::new(64).unwrap();
        let empty = index.heap_bytes();
        for _ in 0..2000 {
            index.push(rng.uuid(), &rng.unit_vector(64)).unwrap();
        }
        let full = index.heap_bytes();
        // Codes, vectors, scale and key: 64 + 256 + 4 + 16 bytes a row at least.
        assert!(full >= empty + 2000 * 340, "{full}");
        for row in 0..1800 {
            index.remove(row);
        }
        assert_eq!(index.heap_bytes(), full, "removal alone frees nothing");
        index.compact_removed();
        assert!(
            index.heap_bytes() < full / 5,
            "{} of {full}",
            index.heap_bytes()
        );
    }

    #[test]
    fn synthetic_queries_reach_the_recall_of_exact_search() {
        let corpus = SyntheticCorpus::generate(&SyntheticConfig {
            chunks: 2000,
            ..SyntheticConfig::default()
        });
        let embedder = OfflineEmbedder::default();
        let mut exact = DenseIndex::new(384).unwrap();
        let mut index = QuantizedIndex::new(384).unwrap();
        for chunk in &corpus.chunks {
            let vector = embedder.embed_one(&chunk.text);
            exact
                .insert(chunk.chunk_id, chunk.document_id, &vector)
                .unwrap();
            index.push(chunk.chunk_id, &vector).unwrap();
        }
        let queries: Vec<Vec<f32>> = corpus
            .queries(100, 7)
            .iter()
            .map(|query| embedder.embed_one(&query.text))
            .collect();
        let recall = recall_at_10(&exact, &index, &queries);
        assert!(recall >= 0.95, "{recall}");
    }

    fn percentile(sorted: &[Duration], p: f64) -> Duration {
        let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    /// Exact f32 search against this index, and the int8 scan alone, on the
    /// synthetic corpus; the numbers in the module documentation.
    #[test]
    #[ignore = "timing: cargo test --release -p agentry-actors -- --ignored --nocapture timing"]
    fn timing_dense_search() {
        let corpus = SyntheticCorpus::generate(&SyntheticConfig {
            chunks: 100_000,
            ..SyntheticConfig::default()
        });
        let embedder = OfflineEmbedder::default();
        let vectors: Vec<Vec<f32>> = corpus
            .chunks
            .iter()
            .map(|c| embedder.embed_one(&c.text))
            .collect();
        let queries: Vec<Vec<f32>> = corpus
            .queries(200, 7)
            .iter()
            .map(|q| embedder.embed_one(&q.text))
            .collect();
        for size in [1_000, 10_000, 100_000] {
            let mut exact = DenseIndex::new(384).unwrap();
            let mut index = QuantizedIndex::new(384).unwrap();
            let clock = Instant::now();
            for (chunk, vector) in corpus.chunks.iter().zip(&vectors).take(size) {
                index.push(chunk.chunk_id, vector).unwrap();
            }
            let built = clock.elapsed();
            for (chunk, vector) in corpus.chunks.iter().zip(&vectors).take(size) {
                exact
                    .insert(chunk.chunk_id, chunk.document_id, vector)
                    .unwrap();
            }
            let (mut exact_times, mut times) = (Vec::new(), Vec::new());
            let mut int8_found = 0;
            for query in &queries {
                let clock = Instant::now();
                let truth = exact.top_k(query, 20).unwrap();
                exact_times.push(clock.elapsed());
                let clock = Instant::now();
                std::hint::black_box(index.top_k(query, 20).unwrap());
                times.push(clock.elapsed());
                let mut codes = Vec::new();
                quantize_into(query, &mut codes);
                let codes: Vec<i16> = codes.into_iter().map(i16::from).collect();
                let truth: Vec<Uuid> = truth.iter().take(10).map(|(id, _)| *id).collect();
                int8_found += index
                    .scan(&codes, 10)
                    .iter()
                    .filter(|c| truth.contains(&c.key))
                    .count();
            }
            exact_times.sort();
            times.sort();
            eprintln!(
                "dense {size}: f32 p50 {:?} p99 {:?} | int8+rerank p50 {:?} p99 {:?} | recall@10 {:.4}, int8 alone {:.4} | built in {built:?}, {:.1} MB",
                percentile(&exact_times, 0.5),
                percentile(&exact_times, 0.99),
                percentile(&times, 0.5),
                percentile(&times, 0.99),
                recall_at_10(&exact, &index, &queries),
                int8_found as f64 / (10 * queries.len()) as f64,
                index.heap_bytes() as f64 / 1e6
            );
        }
    }
}
