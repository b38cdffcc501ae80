//! The offline embedder: deterministic text vectors with no model and no network.
//!
//! It lets agentry answer from a knowledge base on a machine with no embedding
//! provider configured (development, tests, demos), and gives benchmarks a
//! realistic vector workload. Vectors come from feature hashing: lowercase word
//! unigrams and bigrams, plus character 3- to 5-grams of each word with
//! boundary markers (`<word>`), which make it tolerant of typos and inflection.
//! Each feature is hashed to a dimension and a sign (signed hashing keeps
//! collisions from adding up to a bias), weighted `1 + ln(tf)` so repeated
//! words do not dominate, and the vector is L2-normalized. A word is a run of
//! letters and digits, so text written without spaces (Chinese, Japanese)
//! becomes one long word per run and is matched through its n-grams.
//!
//! The hash is FNV-1a 64 with a fixed finalizer, written out here: vectors must
//! be identical across processes, restarts, platforms and dependency upgrades,
//! because stored chunk vectors are compared with query vectors made later.
//! Any change to the features, weights or hash needs a new [`OFFLINE_EMBEDDER_NAME`].

use std::num::NonZeroUsize;

use async_trait::async_trait;

use crate::llm::{Embedded, Embedder, LlmError};

/// The label stored with vectors made by [`OfflineEmbedder`].
pub const OFFLINE_EMBEDDER_NAME: &str = "offline-hash-v1";

/// The default vector size, the same as common small sentence-embedding models.
pub const DEFAULT_DIMENSIONS: usize = 384;

/// Weight of a whole word.
const WORD_WEIGHT: f32 = 1.0;
/// Weight of two adjacent words; they add phrase and word-order information.
const BIGRAM_WEIGHT: f32 = 0.5;
/// Weight of one character n-gram; a six-letter word has 15 of them, so at
/// this weight they carry about as much of the vector's norm as the word itself.
const CHAR_NGRAM_WEIGHT: f32 = 0.25;
const CHAR_NGRAM_SIZES: std::ops::RangeInclusive<usize> = 3..=5;

/// Hash domain tags, so that the word "ing" and the n-gram "ing" differ.
const TAG_WORD: u8 = 1;
const TAG_BIGRAM: u8 = 2;
const TAG_CHAR_NGRAM: u8 = 3;
/// Separates the words of a bigram; 0xFF never occurs in UTF-8.
const BIGRAM_SEPARATOR: u8 = 0xFF;

/// A deterministic feature-hashing embedder (see the module documentation).
///
/// A text with no letters or digits gets the zero vector, whose cosine
/// similarity (dot product) with any vector is 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfflineEmbedder {
    dimensions: usize,
}

impl Default for OfflineEmbedder {
    fn default() -> Self {
        Self {
            dimensions: DEFAULT_DIMENSIONS,
        }
    }
}

impl OfflineEmbedder {
    /// An embedder making vectors of `dimensions` floats.
    pub const fn new(dimensions: NonZeroUsize) -> Self {
        Self {
            dimensions: dimensions.get(),
        }
    }

    /// Embeds one text: L2-normalized, or all zeros when the text has no words.
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut features = Features::default();
        features.extract(text);
        let mut vector = vec![0.0f32; self.dimensions];
        add_weighted(&mut vector, &mut features.words, WORD_WEIGHT);
        add_weighted(&mut vector, &mut features.bigrams, BIGRAM_WEIGHT);
        add_weighted(&mut vector, &mut features.char_ngrams, CHAR_NGRAM_WEIGHT);
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 && norm.is_finite() {
            vector.iter_mut().for_each(|x| *x /= norm);
        } else {
            vector.iter_mut().for_each(|x| *x = 0.0);
        }
        vector
    }
}

#[async_trait]
impl Embedder for OfflineEmbedder {
    fn name(&self) -> &str {
        OFFLINE_EMBEDDER_NAME
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// Embeds on the calling task: a chunk takes tens of microseconds, so a
    /// batch is cheaper inline than a hop to a blocking thread.
    async fn embed(&self, texts: &[String]) -> Result<Embedded, LlmError> {
        let words = texts
            .iter()
            .map(|text| {
                text.split(|c: char| !c.is_alphanumeric())
                    .filter(|word| !word.is_empty())
                    .count()
            })
            .sum::<usize>();
        Ok(Embedded {
            vectors: texts.iter().map(|text| self.embed_one(text)).collect(),
            tokens: u32::try_from(words).unwrap_or(u32::MAX),
        })
    }
}

/// Hashed features of one text, by kind, with repeats (counted later).
#[derive(Default)]
struct Features {
    words: Vec<u64>,
    bigrams: Vec<u64>,
    char_ngrams: Vec<u64>,
}

impl Features {
    fn extract(&mut self, text: &str) {
        // Reused buffers: one word, the previous word, the padded word and its
        // char boundaries, so a text costs a handful of allocations.
        let mut word = String::new();
        let mut previous = String::new();
        let mut padded = String::new();
        let mut boundaries: Vec<usize> = Vec::new();

        let mut chars = text.chars().peekable();
        loop {
            word.clear();
            while let Some(&c) = chars.peek() {
                if c.is_alphanumeric() {
                    word.extend(c.to_lowercase());
                    chars.next();
                } else if word.is_empty() {
                    chars.next();
                } else {
                    break;
                }
            }
            if word.is_empty() {
                break;
            }

            self.words.push(finish(fnv1a(
                fnv1a(FNV_OFFSET, &[TAG_WORD]),
                word.as_bytes(),
            )));
            if !previous.is_empty() {
                let mut state = fnv1a(FNV_OFFSET, &[TAG_BIGRAM]);
                state = fnv1a(state, previous.as_bytes());
                state = fnv1a(state, &[BIGRAM_SEPARATOR]);
                state = fnv1a(state, word.as_bytes());
                self.bigrams.push(finish(state));
            }

            padded.clear();
            padded.push('<');
            padded.push_str(&word);
            padded.push('>');
            boundaries.clear();
            boundaries.extend(padded.char_indices().map(|(at, _)| at));
            boundaries.push(padded.len());
            let char_count = boundaries.len() - 1;
            for n in CHAR_NGRAM_SIZES {
                for start in 0..char_count.saturating_sub(n - 1) {
                    let gram = &padded.as_bytes()[boundaries[start]..boundaries[start + n]];
                    self.char_ngrams
                        .push(finish(fnv1a(fnv1a(FNV_OFFSET, &[TAG_CHAR_NGRAM]), gram)));
                }
            }

            std::mem::swap(&mut previous, &mut word);
        }
    }
}

/// Adds each distinct feature once, weighted `weight * (1 + ln(tf))`, at the
/// dimension and with the sign its hash picks.
fn add_weighted(vector: &mut [f32], hashes: &mut [u64], weight: f32) {
    // Sorting groups repeats to count them; cheaper than a hash map for a few
    // thousand features, and independent of any hasher's seed.
    hashes.sort_unstable();
    let dimensions = vector.len() as u128;
    for run in hashes.chunk_by(|a, b| a == b) {
        let hash = run[0];
        let term_frequency = run.len() as f32;
        let value = weight * (1.0 + term_frequency.ln());
        // Multiply-shift maps the hash's high bits to a dimension without
        // modulo bias; the lowest bit, independent of those, picks the sign.
        let index = ((u128::from(hash) * dimensions) >> 64) as usize;
        let signed = if hash & 1 == 0 { value } else { -value };
        vector[index] += signed;
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 over `bytes`, continuing from `state`.
fn fnv1a(mut state: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        state ^= u64::from(byte);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

/// MurmurHash3's 64-bit finalizer. FNV-1a's low bits mix poorly (its lowest
/// bit is just the parity of the input's lowest bits), and the sign comes from
/// the lowest bit, so every bit is mixed before use.
fn finish(mut hash: u64) -> u64 {
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::index::dot;

    fn cosine(embedder: &OfflineEmbedder, a: &str, b: &str) -> f32 {
        dot(&embedder.embed_one(a), &embedder.embed_one(b))
    }

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn vectors_are_deterministic_and_pinned() {
        let embedder = OfflineEmbedder::default();
        let text = "Our shop opens at 9am, Monday to Friday.";
        let a = embedder.embed_one(text);
        assert_eq!(a, embedder.embed_one(text));
        assert_eq!(a, OfflineEmbedder::default().embed_one(text));
        // Pinned: vectors already stored must keep matching new query vectors.
        // If this fails, the scheme changed and OFFLINE_EMBEDDER_NAME must too.
        // The word features dominate: their dimensions and signs pin the hash.
        let strong: Vec<(usize, bool)> = a
            .iter()
            .enumerate()
            .filter(|(_, x)| x.abs() > 0.2)
            .map(|(i, x)| (i, *x > 0.0))
            .collect();
        assert_eq!(strong, PINNED_STRONG);
        // And the weighting and normalization.
        assert!((a[22] - 0.271_546).abs() < 1e-4, "{}", a[22]);
    }

    const PINNED_STRONG: &[(usize, bool)] = &[
        (22, true),
        (25, false),
        (109, false),
        (113, false),
        (242, false),
        (301, true),
        (344, true),
        (375, true),
    ];

    #[test]
    fn vectors_have_unit_norm_and_the_configured_size() {
        let embedder = OfflineEmbedder::new(NonZeroUsize::new(64).unwrap());
        assert_eq!(embedder.dimensions(), 64);
        assert_eq!(embedder.name(), "offline-hash-v1");
        for text in [
            "a",
            "Hello, world!",
            "ÉCOLE été",
            "word ".repeat(500).as_str(),
        ] {
            let v = embedder.embed_one(text);
            assert_eq!(v.len(), 64);
            let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{text}: {norm}");
        }
    }

    #[test]
    fn text_without_words_is_the_zero_vector() {
        let embedder = OfflineEmbedder::default();
        for text in ["", "   ", "?!... -- ***"] {
            let v = embedder.embed_one(text);
            assert!(v.iter().all(|&x| x == 0.0));
            assert_eq!(dot(&v, &embedder.embed_one("anything")), 0.0);
        }
    }

    #[test]
    fn case_and_punctuation_do_not_matter() {
        let embedder = OfflineEmbedder::default();
        assert_eq!(
            embedder.embed_one("Refund policy: 30 days!"),
            embedder.embed_one("refund POLICY 30 days")
        );
    }

    #[test]
    fn similar_texts_score_higher_than_unrelated_ones() {
        let embedder = OfflineEmbedder::default();
        let doc = "You can return any item within 30 days for a full refund.";
        let related = cosine(&embedder, doc, "how do I get a refund for a returned item");
        let unrelated = cosine(
            &embedder,
            doc,
            "the bakery sells sourdough bread every morning",
        );
        assert!(related > 0.3, "{related}");
        assert!(unrelated < 0.15, "{unrelated}");
        assert!(related > unrelated + 0.2);
    }

    #[test]
    fn word_order_and_typos_keep_most_of_the_similarity() {
        let embedder = OfflineEmbedder::default();
        let base = "schedule a plumbing appointment for tomorrow";
        let reordered = cosine(
            &embedder,
            base,
            "tomorrow appointment for plumbing schedule a",
        );
        let typos = cosine(&embedder, base, "shedule a plumbng apointment for tomorow");
        let unrelated = cosine(&embedder, base, "cancel my pizza delivery order");
        assert!(reordered > 0.75, "{reordered}");
        assert!(typos > 0.35, "{typos}");
        assert!(typos > unrelated + 0.3, "{typos} vs {unrelated}");
        // A single misspelled word still resembles the right word far more than another word.
        let near = cosine(&embedder, "accommodation", "acommodation");
        let far = cosine(&embedder, "accommodation", "transportation");
        assert!(near > 0.45 && near > far + 0.25, "{near} vs {far}");
    }

    #[tokio::test]
    async fn the_port_embeds_each_text_in_order() {
        let embedder = OfflineEmbedder::default();
        let texts = vec!["first text".to_owned(), String::new(), "third".to_owned()];
        let embedded = embedder.embed(&texts).await.unwrap();
        assert_eq!(embedded.vectors.len(), 3);
        assert_eq!(embedded.tokens, 3, "the words it hashed");
        for (text, vector) in texts.iter().zip(&embedded.vectors) {
            assert_eq!(vector, &embedder.embed_one(text));
            assert_eq!(vector.len(), DEFAULT_DIMENSIONS);
        }
    }
}
