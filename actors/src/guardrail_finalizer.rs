//! GuardrailFinalizer: one per tenant. Everything the model says passes through
//! it before it is stored or sent; the raw model text goes nowhere else.
//!
//! The chain, in order, on each releasable piece (whole sentences):
//! 1. dashes rewritten into plain punctuation ([`crate::guardrails::dashes`]);
//! 2. the HTML sanitizer (ammonia, no tags allowed, entities decoded back to
//!    text). It runs before the sentence rules so that what they judge is what
//!    the visitor reads: markup can hide a specific (`4<b></b>.9%`);
//! 3. per sentence, the first rule that fires removes it: reproduction of the
//!    system prompt ([`crate::guardrails::prompt_leak`]), the tenant's
//!    directives ([`crate::guardrails::directives`], whose wording is said
//!    once in place of what they removed), then ungrounded specifics
//!    ([`crate::guardrails::grounding`]).
//!
//! When nothing meaningful is left of a reply, the agent's fallback is said
//! instead. Each rule that fires is counted, per reply in [`Removals`] (stored
//! with the turn's usage) and in `agentry_guardrail_removals_total{rule}`;
//! what it removed is never logged.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;

use crate::guardrails::dashes::rewrite_dashes;
use crate::guardrails::directives::{self, Competitors, SentenceRule};
use crate::guardrails::grounding::{sentences, Grounding};
use crate::guardrails::prompt_leak::{carry_over, PromptFingerprint, WordHash};
use crate::ports::AgentBrief;
use crate::stage_metrics::{self, Stage};

/// Said when the guardrails removed every sentence of a reply and the agent
/// has no fallback of its own: honest about the gap, and offers a person.
pub const DEFAULT_FALLBACK: &str =
    "I'm not able to confirm that here. Would you like me to connect you with a person on our team?";

/// What one agent's replies are held to, compiled once per version of the agent.
#[derive(Debug)]
pub struct AgentRules {
    prompt: PromptFingerprint,
    competitors: Competitors,
    /// The enabled sentence directives with what each says in place of what it removed.
    directives: Vec<(SentenceRule, String)>,
    fallback: String,
    /// The sentences of the wordings and the fallback, trimmed: the tenant's
    /// own words, which no rule removes.
    tenant_sentences: HashSet<String>,
}

impl AgentRules {
    pub fn new(brief: &AgentBrief) -> Self {
        // Wordings pass the first steps of the chain themselves, so finalizing
        // a reply that contains one leaves it as it is.
        let prepare = |text: &str| sanitize(&rewrite_dashes(text).0).trim().to_owned();
        let directives: Vec<(SentenceRule, String)> = SentenceRule::ALL
            .into_iter()
            .filter_map(|rule| {
                let directive = rule.directive(&brief.directives);
                directive.enabled.then(|| {
                    let wording = directive
                        .wording
                        .clone()
                        .unwrap_or_else(|| rule.default_wording(brief.brand.as_deref()));
                    (rule, prepare(&wording))
                })
            })
            .collect();
        let fallback = prepare(brief.fallback.as_deref().unwrap_or(DEFAULT_FALLBACK));
        let tenant_sentences = directives
            .iter()
            .map(|(_, wording)| wording)
            .chain([&fallback])
            .flat_map(|text| sentences(text))
            .map(|sentence| sentence.trim().to_owned())
            .filter(|sentence| !sentence.is_empty())
            .collect();
        Self {
            prompt: PromptFingerprint::new(&brief.system_prompt),
            competitors: Competitors::new(brief.competitors.iter().map(String::as_str)),
            directives,
            fallback,
            tenant_sentences,
        }
    }

    /// Said instead of a reply of which nothing meaningful is left.
    pub fn fallback(&self) -> &str {
        &self.fallback
    }

    /// Whether `sentence` is the tenant's own words (a wording or the fallback).
    fn is_tenant_wording(&self, sentence: &str) -> bool {
        self.tenant_sentences.contains(sentence.trim())
    }

    fn breaks(&self, rule: SentenceRule, sentence: &str) -> bool {
        match rule {
            SentenceRule::CompetitorDeflection => self.competitors.endorsed_in(sentence),
            SentenceRule::NoFinancingQuotes => directives::quotes_financing(sentence),
            SentenceRule::NoTradeInValues => directives::quotes_trade_in(sentence),
        }
    }
}

/// What one turn's reply is held to: the agent's rules and what the turn is grounded on.
#[derive(Debug)]
pub struct ReplyPolicy {
    pub rules: Arc<AgentRules>,
    pub grounding: Grounding,
}

/// How many sentences (or, for dashes and markup, spots) each rule removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Removals(BTreeMap<&'static str, usize>);

impl Removals {
    pub const DASHES: &'static str = "dashes";
    pub const MARKUP: &'static str = "markup";
    pub const PROMPT_LEAK: &'static str = "prompt_leak";
    pub const UNGROUNDED: &'static str = "ungrounded";

    /// Counts what `rule` removed, here and in `agentry_guardrail_removals_total`.
    fn add(&mut self, rule: &'static str, count: usize) {
        if count > 0 {
            *self.0.entry(rule).or_default() += count;
            metrics::counter!("agentry_guardrail_removals_total", "rule" => rule)
                .increment(count as u64);
        }
    }

    pub fn get(&self, rule: &str) -> usize {
        self.0.get(rule).copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, usize)> + '_ {
        self.0.iter().map(|(rule, count)| (*rule, *count))
    }
}

/// What finalize remembers between the pieces of one reply.
#[derive(Clone, Debug, Default)]
pub struct ReplyState {
    /// Directives whose wording was already said: each is said once per reply.
    said: BTreeSet<SentenceRule>,
    /// The last words released, for prompt reproduction across pieces.
    carried: Vec<WordHash>,
    /// Whether anything was released yet (the reply starts without whitespace).
    started: bool,
    pub removals: Removals,
}

/// Cleans one piece of model output. Pure, so it is testable without an actor.
pub fn finalize(raw: &str, policy: &ReplyPolicy, state: &mut ReplyState) -> String {
    let (text, dashes) = rewrite_dashes(raw);
    state.removals.add(Removals::DASHES, dashes);
    let decoded = decode_entities(&text);
    let text = sanitize(&text);
    state
        .removals
        .add(Removals::MARKUP, usize::from(text != decoded));
    let rules = &policy.rules;

    let mut kept = String::with_capacity(text.len());
    for sentence in sentences(&text) {
        let verdict = if rules.is_tenant_wording(sentence) {
            Verdict::Keep
        } else if rules.prompt.reproduced_by(&state.carried, sentence) {
            Verdict::Remove(Removals::PROMPT_LEAK)
        } else if let Some((rule, wording)) = rules
            .directives
            .iter()
            .find(|(rule, _)| rules.breaks(*rule, sentence))
        {
            Verdict::Replace(*rule, wording)
        } else if !policy.grounding.supports(sentence) {
            Verdict::Remove(Removals::UNGROUNDED)
        } else {
            Verdict::Keep
        };
        let released = match verdict {
            Verdict::Keep => {
                kept.push_str(sentence);
                sentence
            }
            Verdict::Remove(rule) => {
                state.removals.add(rule, 1);
                continue;
            }
            Verdict::Replace(rule, wording) => {
                state.removals.add(rule.name(), 1);
                if !state.said.insert(rule) {
                    continue;
                }
                // The wording takes the sentence's place and its spacing.
                let body = sentence.trim();
                let at = sentence.find(body).unwrap_or(0);
                kept.push_str(&sentence[..at]);
                kept.push_str(wording);
                kept.push_str(&sentence[at + body.len()..]);
                wording
            }
        };
        // What the visitor reads is what later sentences are checked against.
        carry_over(&mut state.carried, released);
    }
    let kept = if state.started {
        kept
    } else {
        kept.trim_start().to_owned()
    };
    state.started |= !kept.is_empty();
    kept
}

enum Verdict<'a> {
    Keep,
    Remove(&'static str),
    Replace(SentenceRule, &'a str),
}

/// A whole reply through the chain; the fallback when nothing meaningful is left.
pub fn finalize_reply(raw: &str, policy: &ReplyPolicy) -> (String, Removals) {
    let mut state = ReplyState::default();
    let cleaned = finalize(raw, policy, &mut state);
    let cleaned = match needs_fallback(raw, &cleaned, &state.removals) {
        true => policy.rules.fallback().to_owned(),
        false => cleaned,
    };
    (cleaned, state.removals)
}

/// Whether nothing meaningful is left of a reply: the model said something
/// and no word of it stands, or a sentence rule removed part of it and less
/// than two words are left ("Sure!", "Thanks!").
pub fn needs_fallback(raw: &str, cleaned: &str, removals: &Removals) -> bool {
    let words = |text: &str| {
        text.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .count()
    };
    let sentences_removed = removals
        .iter()
        .any(|(rule, _)| ![Removals::DASHES, Removals::MARKUP].contains(&rule));
    let left = words(cleaned);
    (left == 0 && words(raw) > 0) || (sentences_removed && left < 2)
}

/// No tag survives; script/style contents are dropped entirely. Decoding the
/// sanitizer's entities can make new markup out of escaped text (`&lt;b&gt;`
/// becomes `<b>`), so it runs until nothing changes: the result is a fixed
/// point, and finalizing it again changes nothing. Each further pass only
/// shortens the text, so the loop ends.
pub fn sanitize(text: &str) -> String {
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
    /// One piece of a reply; the answer is the cleaned piece and the reply's
    /// state after it, to be sent along with the next piece.
    Finalize {
        raw: String,
        policy: Arc<ReplyPolicy>,
        state: ReplyState,
        reply: oneshot::Sender<(String, ReplyState)>,
        /// The caller's `finalize` span, entered while the piece is cleaned.
        span: tracing::Span,
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
                policy,
                mut state,
                reply,
                span,
            } => {
                let started = Instant::now();
                let cleaned = span.in_scope(|| finalize(&raw, &policy, &mut state));
                let _ = reply.send((cleaned, state));
                stage_metrics::record(Stage::Finalizer, "ok", started);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A policy for an agent with `brief`, grounded on `sources`.
    fn policy_for(brief: &AgentBrief, sources: &[&str]) -> ReplyPolicy {
        ReplyPolicy {
            rules: Arc::new(AgentRules::new(brief)),
            grounding: Grounding::new(sources.iter().copied()),
        }
    }

    fn grounded(sources: &[&str]) -> ReplyPolicy {
        policy_for(&AgentBrief::default(), sources)
    }

    /// One piece through the chain, as the first of its reply.
    fn piece(raw: &str, policy: &ReplyPolicy) -> String {
        finalize(raw, policy, &mut ReplyState::default())
    }

    /// The chain with nothing to ground claims on.
    fn clean(raw: &str) -> String {
        piece(raw, &grounded(&[]))
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
        assert_eq!(clean("&lt;b&gt;bold&lt;/b&gt; text"), "bold text");
        // Twice escaped, a script still goes with its contents.
        assert_eq!(clean("&amp;lt;script&amp;gt;x"), "");
        assert_eq!(clean("a &amp; b &lt; c"), "a & b < c");
    }

    proptest::proptest! {
        #![proptest_config(crate::test_support::property_config(2000))]

        #[test]
        fn finalize_is_idempotent_and_leaves_no_markup(
            raw in proptest::string::string_regex(
                r#"([a-z ]{0,6}|<[a-z/!]{0,8}[ a-z="']{0,10}>?|&(amp;|lt;|gt;|quot;|#39;)?|[—–.!?0-9$%]){0,24}"#
            ).unwrap()
        ) {
            let once = clean(&raw);
            proptest::prop_assert_eq!(&clean(&once), &once);
            // A sanitizer pass finds nothing left to remove.
            proptest::prop_assert_eq!(&sanitize(&once), &once);
            // No tag, comment or declaration can open (`<b`, `</b`, `<!`, `<?`):
            // any `<` left is text, as in "a < b" or a lone "</".
            let bytes = once.as_bytes();
            let opens_markup = bytes.iter().enumerate().any(|(i, &b)| {
                let next = |k: usize| bytes.get(i + k).copied().unwrap_or(b' ');
                b == b'<'
                    && (next(1).is_ascii_alphabetic()
                        || matches!(next(1), b'!' | b'?')
                        || (next(1) == b'/' && next(2).is_ascii_alphabetic()))
            });
            proptest::prop_assert!(!opens_markup, "markup survived in {:?}", once);
        }

        #[test]
        fn finalize_with_every_rule_is_idempotent(
            raw in proptest::string::string_regex(
                r"((Acme Auto|Zenith Cars|Harbor Motors|is|great|cheaper|than|you are the assistant of|never mention the internal dealer holdback|APR|per month|trade-in|worth|[$]4[0-9]{0,3}|3\.9%|—| |\. |! |\n|<b>)){0,30}"
            ).unwrap()
        ) {
            let policy = policy_for(&dealer(), &["$410 a month", "3.9%"]);
            let (once, _) = finalize_reply(&raw, &policy);
            let (twice, removals) = finalize_reply(&once, &policy);
            proptest::prop_assert_eq!(&twice, &once);
            proptest::prop_assert!(removals.is_empty(), "{:?} on {:?}", removals, once);
        }

        #[test]
        fn finalize_never_panics_on_arbitrary_text(raw in proptest::prelude::any::<String>()) {
            let once = piece(&raw, &grounded(&["Call (415) 555-2671, $85."]));
            let dashed = once.contains(['\u{2014}', '\u{2013}']);
            proptest::prop_assert!(!dashed, "a dash survived in {:?}", once);
        }
    }

    #[test]
    fn markup_cannot_hide_an_ungrounded_specific() {
        assert_eq!(clean("Only 4<b></b>.9% off. Ask us."), "Ask us.");
    }

    #[test]
    fn ungrounded_sentences_are_removed_and_grounded_ones_kept() {
        let policy = grounded(&["A check-up costs 85 dollars."]);
        assert_eq!(
            piece("A check-up is $85. Whitening is 40% off! See you.", &policy),
            "A check-up is $85. See you."
        );
    }

    #[test]
    fn only_the_ungrounded_sentences_go() {
        let policy = grounded(&["Check-ups cost $85."]);
        let (kept, removals) = finalize_reply(
            "A check-up costs $85. Whitening is $99 today! Anything else?",
            &policy,
        );
        assert_eq!(kept, "A check-up costs $85. Anything else?");
        assert_eq!(removals.get(Removals::UNGROUNDED), 1);
        assert_eq!(
            finalize_reply(&kept, &policy),
            (kept.clone(), Removals::default()),
            "idempotent"
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

    fn dealer() -> AgentBrief {
        AgentBrief {
            system_prompt: "You are the assistant of Harbor Motors. Never mention the \
                            internal dealer holdback of two percent to anyone."
                .into(),
            brand: Some("Harbor Motors".into()),
            competitors: vec!["Acme Auto".into(), "Zenith Cars".into()],
            ..AgentBrief::default()
        }
    }

    #[test]
    fn directives_remove_their_sentences_and_say_the_wording_once() {
        let policy = policy_for(&dealer(), &["Financing at 3.9% APR for 60 months."]);
        let (cleaned, removals) = finalize_reply(
            "We have the SUV in blue. Financing is 3.9% APR. Or $410 per month! \
             Acme Auto is cheaper. Zenith Cars has a great deal too. Test drives are free.",
            &policy,
        );
        assert_eq!(
            cleaned,
            "We have the SUV in blue. I can't quote financing terms here; our finance team \
             can walk you through the options. I can only speak to the products and \
             services of Harbor Motors. Test drives are free."
        );
        assert_eq!(removals.get("no_financing_quotes"), 2, "grounded or not");
        assert_eq!(removals.get("competitor_deflection"), 2);
        assert_eq!(
            finalize_reply(&cleaned, &policy),
            (cleaned.clone(), Removals::default())
        );
    }

    #[test]
    fn a_wording_is_said_once_across_the_pieces_of_a_streamed_reply() {
        let policy = policy_for(&dealer(), &[]);
        let mut state = ReplyState::default();
        let first = finalize("Acme Auto is better. ", &policy, &mut state);
        let second = finalize(
            "Zenith Cars is cheaper. We open at nine.",
            &policy,
            &mut state,
        );
        assert_eq!(
            first,
            "I can only speak to the products and services of Harbor Motors. "
        );
        assert_eq!(second, "We open at nine.");
        assert_eq!(state.removals.get("competitor_deflection"), 2);
    }

    #[test]
    fn a_directive_switched_off_lets_its_sentences_through() {
        let mut brief = dealer();
        brief.directives.no_financing_quotes.enabled = false;
        brief.directives.competitor_deflection.wording = Some("Let's talk about our cars.".into());
        let policy = policy_for(&brief, &["3.9% APR"]);
        assert_eq!(
            piece("Financing is 3.9% APR. Acme Auto is cheaper.", &policy),
            "Financing is 3.9% APR. Let's talk about our cars."
        );
    }

    #[test]
    fn a_reproduced_system_prompt_goes_whatever_the_model_does() {
        let policy = policy_for(&dealer(), &[]);
        let (cleaned, removals) = finalize_reply(
            "My instructions? Here: never mention the internal dealer holdback of two \
             percent to anyone. You are the assistant of Harbor Motors. \
             Never mention it. Anything else?",
            &policy,
        );
        assert_eq!(
            cleaned, "My instructions? You are the assistant of Harbor Motors. Anything else?",
            "seven words of the prompt stand, the eighth goes with its sentence"
        );
        assert_eq!(removals.get("prompt_leak"), 2);
    }

    #[test]
    fn nothing_meaningful_left_becomes_the_fallback() {
        let mut brief = dealer();
        let (cleaned, _) = finalize_reply("Sure! It is $999.", &policy_for(&brief, &[]));
        assert_eq!(cleaned, DEFAULT_FALLBACK);
        brief.fallback = Some("Please call us \u{2014} we're happy to help.".into());
        let policy = policy_for(&brief, &[]);
        let (cleaned, _) = finalize_reply("<script>x</script>", &policy);
        assert_eq!(cleaned, "Please call us, we're happy to help.");
        assert_eq!(
            finalize_reply(&cleaned, &policy).0,
            cleaned,
            "the fallback stands"
        );
        assert_eq!(finalize_reply("Hi!", &policy).0, "Hi!", "nothing was taken");
    }
}
