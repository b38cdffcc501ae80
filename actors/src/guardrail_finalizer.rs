//! GuardrailFinalizer: one per tenant. Everything the model says passes through
//! it before it is stored or sent; the raw model text goes nowhere else.
//!
//! The chain, in order: dashes rewritten into plain punctuation
//! ([`crate::guardrails::dashes`]), the HTML sanitizer (ammonia, no tags
//! allowed, entities decoded back to text), then sentences with ungrounded
//! specifics removed ([`crate::guardrails::grounding`]). The sanitizer runs
//! before the claim check so that what is checked is what the visitor reads.
//! The tenant's directives are still to join it (issue 12). Each rule that fires is counted
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
    // Claims are judged on what the visitor would read: markup can hide a
    // specific from the check and release it once stripped (`4<b></b>.9%`).
    let text = sanitize(&text);
    let (text, ungrounded) = strip_ungrounded(&text, grounding);
    record_removals("ungrounded", ungrounded);
    text
}

/// No tag survives; script/style contents are dropped entirely. Decoding the
/// sanitizer's entities can make new markup out of escaped text (`&lt;b&gt;`
/// becomes `<b>`), so it runs until nothing changes: the result is a fixed
/// point, and finalizing it again changes nothing. Each further pass only
/// shortens the text, so the loop ends.
fn sanitize(text: &str) -> String {
    let mut current = decode_entities(&ammonia::Builder::empty().clean(text).to_string());
    while current.contains(['<', '&']) {
        let next = decode_entities(&ammonia::Builder::empty().clean(&current).to_string());
        if next == current {
            break;
        }
        current = next;
    }
    current
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

    /// The chain with nothing to ground claims on.
    fn clean(raw: &str) -> String {
        finalize(raw, &Grounding::default())
    }

    #[test]
    fn tags_are_removed_and_text_is_kept() {
        assert_eq!(clean("Hello <b>there</b>!"), "Hello there!");
        assert_eq!(clean("<script>alert(1)</script>Hi"), "Hi");
        assert_eq!(clean("<img src=x onerror=alert(1)>ok"), "ok");
        assert_eq!(clean("a < b & c > d"), "a < b & c > d");
        assert_eq!(clean("Tom's \"quote\""), "Tom's \"quote\"");
    }

    #[test]
    fn markup_made_by_decoding_escaped_text_is_removed_too() {
        let none = Grounding::default();
        assert_eq!(finalize("&lt;b&gt;bold&lt;/b&gt; text", &none), "bold text");
        // Twice escaped, a script still goes with its contents.
        assert_eq!(finalize("&amp;lt;script&amp;gt;x", &none), "");
        assert_eq!(finalize("a &amp; b &lt; c", &none), "a & b < c");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2000,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        #[test]
        fn finalize_is_idempotent_and_leaves_no_markup(
            raw in proptest::string::string_regex(
                r#"([a-z ]{0,6}|<[a-z/!]{0,8}[ a-z="']{0,10}>?|&(amp;|lt;|gt;|quot;|#39;)?|[—–.!?0-9$%]){0,24}"#
            ).unwrap()
        ) {
            let none = Grounding::default();
            let once = finalize(&raw, &none);
            proptest::prop_assert_eq!(&finalize(&once, &none), &once);
            // A sanitizer pass finds nothing left to remove.
            proptest::prop_assert_eq!(&sanitize(&once), &once);
            proptest::prop_assert!(!once.to_lowercase().contains("<script"));
        }

        #[test]
        fn finalize_never_panics_on_arbitrary_text(raw in proptest::prelude::any::<String>()) {
            let grounding = Grounding::new(["Call (415) 555-2671, $85."]);
            let once = finalize(&raw, &grounding);
            let dashed = once.contains(['\u{2014}', '\u{2013}']);
            proptest::prop_assert!(!dashed, "a dash survived in {:?}", once);
        }
    }

    #[test]
    fn markup_cannot_hide_an_ungrounded_specific() {
        let none = Grounding::default();
        assert_eq!(finalize("Only 4<b></b>.9% APR. Ask us.", &none), "Ask us.");
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
            clean("We open <b>7–9</b> — see you!"),
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
