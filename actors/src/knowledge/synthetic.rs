//! A deterministic synthetic corpus, for benchmarks and tests only.
//!
//! Retrieval benchmarks need many chunks whose words are distributed like real
//! text — a few very common words, a long tail of rare ones (Zipf's law) — and
//! whose documents are about something, so that some chunks really are nearer
//! to a query than others and recall can be measured. Each document here draws
//! a small topic vocabulary; its chunks mix topic words into Zipf-distributed
//! background words. The same seed gives the same corpus, ids included, on
//! every machine: the generator is written out here rather than borrowed from a
//! crate whose streams may change between versions.

use std::collections::HashSet;

use uuid::Uuid;

/// SplitMix64, a small, fast generator with good statistical quality; enough
/// for synthetic data, not for anything secret.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A random vector of unit length, components drawn uniformly from `[-1, 1)`.
    pub fn unit_vector(&mut self, dimensions: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dimensions)
            .map(|_| self.next_f64() as f32 * 2.0 - 1.0)
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        v
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        // The top 53 bits fill an f64 mantissa exactly.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..bound` (0 when `bound` is 0).
    pub fn below(&mut self, bound: usize) -> usize {
        // Multiply-shift: negligible bias for the small bounds used here.
        ((u128::from(self.next_u64()) * bound as u128) >> 64) as usize
    }

    /// Uniform in `low..=high` (`low` when `high < low`).
    pub fn between(&mut self, low: usize, high: usize) -> usize {
        low + self.below(high.saturating_sub(low) + 1)
    }

    /// A random (version 4) UUID drawn from this generator.
    pub fn uuid(&mut self) -> Uuid {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

/// What to generate. The defaults give chunks of 60–120 words from a
/// 4,000-word vocabulary, eight chunks per document.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticConfig {
    pub seed: u64,
    /// Number of chunks in the corpus.
    pub chunks: usize,
    /// Chunks per document (the last document may have fewer); at least 1.
    pub chunks_per_document: usize,
    /// Number of distinct words; at least 1.
    pub vocabulary_size: usize,
    /// The exponent `s` of the Zipf law: word of rank `r` has weight `1 / r^s`.
    pub zipf_exponent: f64,
    /// Words per chunk, inclusive bounds.
    pub min_words: usize,
    pub max_words: usize,
    /// Distinct words in each document's topic.
    pub topic_words: usize,
    /// Share of a chunk's words drawn from its document's topic, in `[0, 1]`.
    pub topic_share: f64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            seed: 0x5eed,
            chunks: 1000,
            chunks_per_document: 8,
            vocabulary_size: 4000,
            zipf_exponent: 1.07,
            min_words: 60,
            max_words: 120,
            topic_words: 24,
            topic_share: 0.25,
        }
    }
}

/// One generated chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntheticChunk {
    pub chunk_id: Uuid,
    pub document_id: Uuid,
    /// Space-separated lowercase words, with a full stop every few words.
    pub text: String,
}

/// A query made from a chunk's words, so that relevant chunks exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntheticQuery {
    pub text: String,
    /// The chunk whose words the query was made from.
    pub source_chunk: Uuid,
}

/// A generated corpus: the vocabulary (most frequent word first) and the chunks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntheticCorpus {
    pub vocabulary: Vec<String>,
    pub chunks: Vec<SyntheticChunk>,
}

impl SyntheticCorpus {
    /// Generates the corpus `config` describes; the same config always gives
    /// the same corpus.
    pub fn generate(config: &SyntheticConfig) -> Self {
        let mut rng = SplitMix64::new(config.seed);
        let vocabulary = vocabulary(&mut rng, config.vocabulary_size.max(1));
        let zipf = ZipfTable::new(vocabulary.len(), config.zipf_exponent);
        let per_document = config.chunks_per_document.max(1);
        let min_words = config.min_words.max(1);
        let max_words = config.max_words.max(min_words);
        // The most frequent words are function words in real text; topics are
        // drawn from the rest so that they carry meaning.
        let topic_floor = (vocabulary.len() / 40).min(vocabulary.len() - 1);

        let mut chunks = Vec::with_capacity(config.chunks);
        let mut topic: Vec<usize> = Vec::with_capacity(config.topic_words);
        let mut document_id = Uuid::nil();
        for i in 0..config.chunks {
            if i % per_document == 0 {
                document_id = rng.uuid();
                topic.clear();
                for _ in 0..config.topic_words {
                    topic.push(rng.between(topic_floor, vocabulary.len() - 1));
                }
            }
            let words = rng.between(min_words, max_words);
            let mut text = String::with_capacity(words * 8);
            let mut until_stop = rng.between(6, 18);
            for w in 0..words {
                let rank = if !topic.is_empty() && rng.next_f64() < config.topic_share {
                    topic[rng.below(topic.len())]
                } else {
                    zipf.sample(&mut rng)
                };
                if w > 0 {
                    text.push(' ');
                }
                text.push_str(&vocabulary[rank]);
                until_stop -= 1;
                if until_stop == 0 || w + 1 == words {
                    text.push('.');
                    until_stop = rng.between(6, 18);
                }
            }
            chunks.push(SyntheticChunk {
                chunk_id: rng.uuid(),
                document_id,
                text,
            });
        }
        Self { vocabulary, chunks }
    }

    /// `count` queries of 3–8 words, each picked from one random chunk, in
    /// random order, like a visitor's question in keywords. Empty when the
    /// corpus is.
    pub fn queries(&self, count: usize, seed: u64) -> Vec<SyntheticQuery> {
        let mut rng = SplitMix64::new(seed);
        if self.chunks.is_empty() {
            return Vec::new();
        }
        (0..count)
            .map(|_| {
                let chunk = &self.chunks[rng.below(self.chunks.len())];
                let words: Vec<&str> = chunk
                    .text
                    .split(' ')
                    .map(|w| w.trim_end_matches('.'))
                    .collect();
                let picked: Vec<&str> = (0..rng.between(3, 8))
                    .map(|_| words[rng.below(words.len())])
                    .collect();
                SyntheticQuery {
                    text: picked.join(" "),
                    source_chunk: chunk.chunk_id,
                }
            })
            .collect()
    }
}

/// `size` distinct pronounceable words, shortest first, so that the most
/// frequent ranks get short words as in natural language.
fn vocabulary(rng: &mut SplitMix64, size: usize) -> Vec<String> {
    const ONSETS: &[&str] = &[
        "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
        "br", "ch", "cl", "dr", "fl", "gr", "pl", "sh", "st", "th", "tr",
    ];
    const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ea", "ee", "oo", "ou"];
    const CODAS: &[&str] = &["", "", "", "n", "r", "s", "t", "l", "m", "nd", "st"];

    let mut seen = HashSet::with_capacity(size);
    let mut words = Vec::with_capacity(size);
    while words.len() < size {
        let syllables = rng.between(1, 4);
        let mut word = String::new();
        for _ in 0..syllables {
            word.push_str(ONSETS[rng.below(ONSETS.len())]);
            word.push_str(VOWELS[rng.below(VOWELS.len())]);
            word.push_str(CODAS[rng.below(CODAS.len())]);
        }
        if seen.insert(word.clone()) {
            words.push(word);
        }
    }
    // Stable sort: equal lengths keep their (seeded) generation order.
    words.sort_by_key(String::len);
    words
}

/// Cumulative Zipf weights, sampled by binary search.
struct ZipfTable {
    cumulative: Vec<f64>,
}

impl ZipfTable {
    fn new(size: usize, exponent: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=size)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(exponent);
                total
            })
            .collect();
        Self { cumulative }
    }

    /// A rank from 0 (the most frequent word).
    fn sample(&self, rng: &mut SplitMix64) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let target = rng.next_f64() * total;
        self.cumulative
            .partition_point(|&c| c <= target)
            .min(self.cumulative.len().saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_corpus() {
        let config = SyntheticConfig {
            chunks: 50,
            ..SyntheticConfig::default()
        };
        let a = SyntheticCorpus::generate(&config);
        assert_eq!(a, SyntheticCorpus::generate(&config));
        assert_eq!(a.queries(10, 3), a.queries(10, 3));
        let b = SyntheticCorpus::generate(&SyntheticConfig { seed: 1, ..config });
        assert_ne!(a.chunks[0].text, b.chunks[0].text);
    }

    #[test]
    fn the_corpus_has_the_requested_shape() {
        let config = SyntheticConfig {
            chunks: 100,
            chunks_per_document: 8,
            vocabulary_size: 3000,
            ..SyntheticConfig::default()
        };
        let corpus = SyntheticCorpus::generate(&config);
        assert_eq!(corpus.vocabulary.len(), 3000);
        assert_eq!(corpus.vocabulary.iter().collect::<HashSet<_>>().len(), 3000);
        assert_eq!(corpus.chunks.len(), 100);
        let documents: HashSet<Uuid> = corpus.chunks.iter().map(|c| c.document_id).collect();
        assert_eq!(documents.len(), 13); // 100 / 8, rounded up
        let chunk_ids: HashSet<Uuid> = corpus.chunks.iter().map(|c| c.chunk_id).collect();
        assert_eq!(chunk_ids.len(), 100);
        for chunk in &corpus.chunks {
            let words = chunk.text.split(' ').count();
            assert!((60..=120).contains(&words), "{words}");
            assert!(chunk.text.ends_with('.'));
        }
    }

    #[test]
    fn word_frequencies_fall_off_like_zipf() {
        let corpus = SyntheticCorpus::generate(&SyntheticConfig {
            chunks: 300,
            topic_share: 0.0,
            ..SyntheticConfig::default()
        });
        let mut counts = std::collections::HashMap::new();
        for chunk in &corpus.chunks {
            for word in chunk.text.split(' ') {
                *counts.entry(word.trim_end_matches('.')).or_insert(0usize) += 1;
            }
        }
        let count = |rank: usize| {
            counts
                .get(corpus.vocabulary[rank].as_str())
                .copied()
                .unwrap_or(0)
        };
        // Rank 1 is about ten times as frequent as rank 10, and far above rank 1000.
        assert!(count(0) > 5 * count(9), "{} vs {}", count(0), count(9));
        assert!(count(9) > 10 * count(999).max(1) / 2);
    }

    #[test]
    fn queries_use_words_of_their_source_chunk() {
        let corpus = SyntheticCorpus::generate(&SyntheticConfig {
            chunks: 20,
            ..SyntheticConfig::default()
        });
        for query in corpus.queries(30, 9) {
            let source = corpus
                .chunks
                .iter()
                .find(|c| c.chunk_id == query.source_chunk)
                .unwrap();
            let words = query.text.split(' ').count();
            assert!((3..=8).contains(&words));
            for word in query.text.split(' ') {
                assert!(source.text.contains(word));
            }
        }
        let empty = SyntheticCorpus::generate(&SyntheticConfig {
            chunks: 0,
            ..SyntheticConfig::default()
        });
        assert!(empty.queries(5, 1).is_empty());
    }

    #[test]
    fn bounded_draws_stay_in_range() {
        let mut rng = SplitMix64::new(0);
        for _ in 0..1000 {
            assert!(rng.below(7) < 7);
            let x = rng.between(3, 5);
            assert!((3..=5).contains(&x));
            let f = rng.next_f64();
            assert!((0.0..1.0).contains(&f));
        }
        assert_eq!(rng.below(0), 0);
        assert_eq!(rng.between(5, 2), 5);
        assert_eq!(rng.uuid().get_version_num(), 4);
    }
}
