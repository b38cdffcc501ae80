//! GuardrailFinalizer: one per tenant. Everything the model says passes through
//! it before it is stored or sent; the raw model text goes nowhere else.
//!
//! The chain, in order: dashes rewritten into plain punctuation
//! ([`crate::guardrails::dashes`]), then the HTML sanitizer (ammonia, no tags
//! allowed, entities decoded back to text). Ungrounded claims and the tenant's
//! directives are still to join it (issue 12). Each rule that fires is counted
//! in `agentry_guardrail_removals_total{rule}`; what it removed is never logged.

use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;

use crate::guardrails::grounding::{strip_ungrounded, Grounding};
use crate::stage_metrics::{self, Stage};

/// Cleans one piece of model output. Pure, so it is testable without an actor.
pub fn finalize(raw: &str, grounding: &Grounding) -> String {
    let (text, dashes) = crate::guardrails::dashes::rewrite_dashes(raw);
    record_removals("dashes", dashes);
    let (text, ungrounded) = strip_ungrounded(&text, grounding);
    record_removals("ungrounded", ungrounded);
    // No tag survives; script/style contents are dropped entirely.
    let sanitized = ammonia::Builder::empty().clean(&text).to_string();
    decode_entities(&sanitized)
}

fn record_removals(rule: &'static str, count: usize) {
    if count > 0 {
        metrics::counter!("agentry_guardrail_removals_total", "rule" => rule)
            .increment(count as u64);
    }
}

/// The sanitizer escapes text for HTML; visitors get plain text (widgets render
/// it with textContent), so undo the escaping of the few characters it touches.
fn decode_entities(html: &str) -> String {
    html.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// Splits streamed text into pieces that can be finalized on their own: whole
/// sentences or lines, so a tag or a claim is never cut in half.
#[derive(Default)]
pub struct SentenceBuffer {
    pending: String,
}

impl SentenceBuffer {
    /// Adds a delta; returns the complete sentences it finished, if any.
    pub fn push(&mut self, delta: &str) -> Option<String> {
        self.pending.push_str(delta);
        let cut = self
            .pending
            .char_indices()
            .rev()
            .find(|(i, c)| {
                matches!(c, '\n')
                    || (matches!(c, '.' | '!' | '?') && self.pending[i + 1..].starts_with(' '))
            })
            .map(|(i, c)| i + c.len_utf8())?;
        // Keep an unclosed tag for the next piece.
        if self.pending[..cut].rfind('<') > self.pending[..cut].rfind('>') {
            return None;
        }
        let rest = self.pending.split_off(cut);
        Some(std::mem::replace(&mut self.pending, rest))
    }

    /// Whatever is left at the end of the stream.
    pub fn finish(&mut self) -> Option<String> {
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }
}

pub enum FinalizerMsg {
    Finalize {
        raw: String,
        /// What this turn's reply may assert (its passages and the agent's facts).
        grounding: Arc<Grounding>,
        reply: oneshot::Sender<String>,
    },
}

pub struct GuardrailFinalizer;

impl Actor for GuardrailFinalizer {
    type Msg = FinalizerMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match message {
            FinalizerMsg::Finalize {
                raw,
                grounding,
                reply,
            } => {
                let started = Instant::now();
                let _ = reply.send(finalize(&raw, &grounding));
                stage_metrics::record(Stage::GuardrailFinalizer, "ok", started);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_removed_and_text_is_kept() {
        assert_eq!(
            finalize("Hello <b>there</b>!", &Grounding::default()),
            "Hello there!"
        );
        assert_eq!(
            finalize("<script>alert(1)</script>Hi", &Grounding::default()),
            "Hi"
        );
        assert_eq!(
            finalize("<img src=x onerror=alert(1)>ok", &Grounding::default()),
            "ok"
        );
        assert_eq!(
            finalize("a < b & c > d", &Grounding::default()),
            "a < b & c > d"
        );
        assert_eq!(
            finalize("Tom's \"quote\"", &Grounding::default()),
            "Tom's \"quote\""
        );
    }

    #[test]
    fn ungrounded_sentences_are_removed_and_grounded_ones_kept() {
        let grounding = Grounding::new(["A check-up costs 85 dollars."]);
        assert_eq!(
            finalize("A check-up is $85. Our APR is 4.9%! See you.", &grounding),
            "A check-up is $85. See you."
        );
    }

    #[test]
    fn dashes_are_rewritten_before_the_sanitizer() {
        assert_eq!(
            finalize("We open <b>7–9</b> — see you!", &Grounding::default()),
            "We open 7 to 9, see you!"
        );
    }

    #[test]
    fn the_buffer_releases_whole_sentences() {
        let mut buffer = SentenceBuffer::default();
        assert_eq!(buffer.push("We open at 8"), None);
        assert_eq!(buffer.push(". Come by"), Some("We open at 8.".into()));
        assert_eq!(
            buffer.push(" soon!"),
            None,
            "a sentence ends only where the next one starts"
        );
        assert_eq!(buffer.push(" And"), Some(" Come by soon!".into()));
        assert_eq!(buffer.finish(), Some(" And".into()));
        assert_eq!(buffer.finish(), None);
    }

    #[test]
    fn the_buffer_never_splits_a_tag() {
        let mut buffer = SentenceBuffer::default();
        assert_eq!(buffer.push("Click <a href=\"x. y\"> here"), None);
        assert_eq!(
            buffer.push("</a>. Next "),
            Some("Click <a href=\"x. y\"> here</a>.".into())
        );
    }
}
