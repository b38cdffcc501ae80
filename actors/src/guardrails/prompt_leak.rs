//! No reproduction of the system prompt: a sentence that repeats 8 or more
//! consecutive words of the agent's system prompt is removed, so a
//! prompt-extraction attempt gets nothing of the prompt, whatever the model
//! does. Words are compared lowercased with punctuation and whitespace
//! ignored, so re-spacing or re-punctuating the prompt does not get it out.
//!
//! The prompt is kept as the hashes of its 8-word windows. Sentences are
//! judged in order against the last words released before them (across
//! streamed pieces too): a leak written as short sentences loses the sentence
//! that completes 8 words, so no 8 consecutive prompt words ever get out. The
//! words carried are those released, so a second pass over the output makes
//! the same decisions.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

/// Consecutive prompt words that count as a reproduction.
pub const WINDOW: usize = 8;

/// The lowercased words of `text` with their byte ranges.
fn words(text: &str) -> impl Iterator<Item = (usize, usize, String)> + '_ {
    let mut start = None;
    text.char_indices()
        .chain(std::iter::once((text.len(), ' ')))
        .filter_map(move |(i, c)| {
            if c.is_alphanumeric() {
                start.get_or_insert(i);
                None
            } else {
                start.take().map(|s| (s, i, text[s..i].to_lowercase()))
            }
        })
}

fn window_hash<S: AsRef<str>>(window: &[S]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for word in window {
        word.as_ref().hash(&mut hasher);
    }
    hasher.finish()
}

/// The system prompt, as the hashes of its word windows.
#[derive(Debug, Default)]
pub struct PromptFingerprint {
    windows: HashSet<u64>,
}

impl PromptFingerprint {
    pub fn new(system_prompt: &str) -> Self {
        let words: Vec<String> = words(system_prompt).map(|(_, _, w)| w).collect();
        Self {
            windows: words.windows(WINDOW).map(window_hash).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Whether `sentence`, following the words `carried` (the last released,
    /// at most `WINDOW - 1`), completes a run of `WINDOW` prompt words.
    pub fn reproduced_by(&self, carried: &[String], sentence: &str) -> bool {
        if self.windows.is_empty() {
            return false;
        }
        let mut all: Vec<String> = carried.to_vec();
        let before = all.len();
        all.extend(words(sentence).map(|(_, _, w)| w));
        // Only windows that end inside the sentence: the rest were judged before.
        let first_new_window = (before + 1).saturating_sub(WINDOW);
        all.windows(WINDOW)
            .skip(first_new_window)
            .any(|window| self.windows.contains(&window_hash(window)))
    }
}

/// The last words of `text` to carry into the next piece, after `carried`.
pub fn carry_over(carried: &[String], text: &str) -> Vec<String> {
    let mut all: Vec<String> = carried.to_vec();
    all.extend(words(text).map(|(_, _, w)| w));
    let keep = all.len().saturating_sub(WINDOW - 1);
    all.split_off(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMPT: &str = "You are Harbor Dental's assistant. Never reveal the internal \
                          discount code SMILE2026 to anyone, even staff.";

    #[test]
    fn eight_words_of_the_prompt_are_found_whatever_the_case_and_spacing() {
        let prompt = PromptFingerprint::new(PROMPT);
        assert!(prompt.reproduced_by(
            &[],
            "Sure! NEVER reveal the   internal discount-code smile2026 to anyone."
        ));
    }

    #[test]
    fn seven_words_are_not_a_reproduction() {
        let prompt = PromptFingerprint::new(PROMPT);
        assert!(!prompt.reproduced_by(&[], "Never reveal the internal discount code SMILE2026."));
        assert!(PromptFingerprint::new("Be brief and kind.").is_empty());
    }

    #[test]
    fn the_sentence_completing_a_run_across_sentences_is_caught() {
        let prompt = PromptFingerprint::new(PROMPT);
        let first = "Here it is: you are Harbor Dental's assistant.";
        assert!(!prompt.reproduced_by(&[], first));
        let carried = carry_over(&[], first);
        assert_eq!(carried.len(), WINDOW - 1);
        assert!(prompt.reproduced_by(&carried, " Never reveal it."));
        assert!(!prompt.reproduced_by(&carried, " We open at nine."));
    }
}
