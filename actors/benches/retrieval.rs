//! Retrieval hot paths on a deterministic synthetic corpus: exhaustive dense
//! search at 1k, 10k and 100k chunks, rank fusion, and the offline embedder.
//!
//! The corpus (100k chunks of 60–120 words) is generated and embedded once;
//! the smaller indexes are prefixes of it.

use std::hint::black_box;
use std::time::Instant;

use agentry_actors::knowledge::synthetic::{SplitMix64, SyntheticConfig, SyntheticCorpus};
use agentry_actors::knowledge::{reciprocal_rank_fusion, DenseIndex, OfflineEmbedder, RRF_K};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use uuid::Uuid;

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const K: usize = 10;

fn retrieval(c: &mut Criterion) {
    let largest = SIZES[SIZES.len() - 1];
    let started = Instant::now();
    let corpus = SyntheticCorpus::generate(&SyntheticConfig {
        chunks: largest,
        ..SyntheticConfig::default()
    });
    let generated = started.elapsed();
    let embedder = OfflineEmbedder::default();
    let vectors: Vec<Vec<f32>> = corpus
        .chunks
        .iter()
        .map(|chunk| embedder.embed_one(&chunk.text))
        .collect();
    eprintln!(
        "corpus: {largest} chunks generated in {generated:.2?}, embedded in {:.2?}",
        started.elapsed() - generated
    );
    let queries: Vec<Vec<f32>> = corpus
        .queries(64, 7)
        .iter()
        .map(|query| embedder.embed_one(&query.text))
        .collect();

    let mut group = c.benchmark_group("dense_top_k");
    for size in SIZES {
        let mut index = DenseIndex::new(vectors[0].len()).expect("nonzero dimensions");
        index.reserve(size);
        for (chunk, vector) in corpus.chunks.iter().zip(&vectors).take(size) {
            index
                .insert(chunk.chunk_id, chunk.document_id, vector)
                .expect("embedder dimensions match");
        }
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &index, |b, index| {
            let mut next = 0;
            b.iter(|| {
                next = (next + 1) % queries.len();
                index.top_k(black_box(&queries[next]), K)
            });
        });
    }
    group.finish();

    let mut rng = SplitMix64::new(11);
    let pool: Vec<Uuid> = (0..80).map(|_| rng.uuid()).collect();
    // Two 50-long rankings sharing part of their ids, as dense and full-text do.
    let dense: Vec<Uuid> = pool[..50].to_vec();
    let mut text: Vec<Uuid> = pool[30..].to_vec();
    text.reverse();
    let lists = [dense, text];
    c.bench_function("rrf_2x50", |b| {
        b.iter(|| reciprocal_rank_fusion(black_box(&lists), RRF_K))
    });

    let mut next = 0;
    c.bench_function("offline_embed_chunk", |b| {
        b.iter(|| {
            next = (next + 1) % 1000;
            embedder.embed_one(black_box(&corpus.chunks[next].text))
        })
    });
}

criterion_group!(benches, retrieval);
criterion_main!(benches);
