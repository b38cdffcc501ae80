//! The built-in offline responder: a deterministic provider with no network
//! and no key, so the quick start, the demo and the load tests run anywhere.
//!
//! It answers from the grounding passages (the sentences sharing the most
//! words with the visitor's last message), says plainly when none match, and
//! calls tools from keywords in that message: contact details → `capture_lead`,
//! booking words → `book_appointment`, price words → `request_quote`, asking
//! for a person → `escalate_to_human` — only tools the request offers — then
//! says what their results report done, in the turn's next round.

use std::collections::BTreeSet;
use std::time::Instant;

use agentry_actors::contact;
use agentry_actors::llm::{
    ChatRole, Completion, CompletionEvent, CompletionRequest, GroundingPassage, LlmError,
    LlmProvider, ToolCall, ToolChoice, ToolRound, Usage,
};
use agentry_actors::tools::{
    BOOK_APPOINTMENT, CAPTURE_LEAD, ESCALATE_TO_HUMAN, NATIONAL_PHONE_REGION, REQUEST_QUOTE,
};
use async_trait::async_trait;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::transport::{record, Operation};
use super::{estimate_prompt_tokens, estimate_tokens};

pub const OFFLINE_MODEL: &str = "offline-grounded-v1";
const PROVIDER: &str = "offline";
/// Sentences quoted from the knowledge base in one answer.
const MAX_SENTENCES: usize = 3;

const NO_MATCH: &str = "I couldn't find anything about that in the knowledge base. \
                        Would you like me to connect you with a person who can help?";
const GREETING: &str = "Hello! What can I help you with today?";

/// The deterministic responder behind the `offline` provider kind.
#[derive(Clone, Copy, Debug, Default)]
pub struct OfflineProvider;

impl OfflineProvider {
    pub fn new() -> Self {
        Self
    }

    /// The whole answer, without streaming: a pure function of the request.
    ///
    /// Like a model using tools, it answers in rounds: the first calls the
    /// tools the message asks for (with whatever the knowledge base says),
    /// and the next, having read their results, says what was done. It
    /// never says a thing is done before a result says so.
    pub fn respond(&self, request: &CompletionRequest) -> Completion {
        let last_user = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == ChatRole::User)
            .map_or("", |m| m.content.trim());
        let conversation = conversation_hash(request);
        let called_before: BTreeSet<&str> = request
            .tool_rounds
            .iter()
            .flat_map(|round| round.calls.iter().map(|call| call.name.as_str()))
            .collect();
        let calls: Vec<(&str, Value)> = match request.tool_choice {
            ToolChoice::Auto => wanted_calls(request, last_user)
                .into_iter()
                .filter(|(name, _)| !called_before.contains(name))
                .collect(),
            ToolChoice::None => Vec::new(),
        };

        let mut parts = Vec::new();
        let answered_before = request.tool_rounds.iter().any(|r| !r.text.is_empty());
        if !answered_before {
            let sentences = grounded_sentences(&request.grounding, last_user);
            if !sentences.is_empty() {
                parts.push(format!("Here's what I found: {}", sentences.join(" ")));
            } else if calls.is_empty() && request.tool_rounds.is_empty() {
                // With tools at work their results are the answer; without,
                // be plain about the gap.
                parts.push(if content_words(last_user).is_empty() {
                    // "hi", "thanks": nothing was asked, so nothing was missed.
                    GREETING.to_owned()
                } else {
                    NO_MATCH.to_owned()
                });
            }
        }
        if calls.is_empty() {
            parts.extend(acknowledgements(&request.tool_rounds));
        }
        let text = parts.join(" ");

        let tool_calls = calls
            .into_iter()
            .map(|(name, arguments)| ToolCall {
                id: format!("call_{:016x}", fnv1a(conversation, name.as_bytes())),
                name: name.to_owned(),
                arguments,
            })
            .collect();
        Completion {
            usage: Usage {
                prompt_tokens: estimate_prompt_tokens(&request.messages),
                completion_tokens: estimate_tokens(text.chars().count()),
            },
            text,
            tool_calls,
        }
    }
}

/// The calls the visitor's message asks for, among the tools offered, in
/// catalog order (so a lead is captured before a booking that needs it).
fn wanted_calls<'a>(request: &'a CompletionRequest, last_user: &str) -> Vec<(&'a str, Value)> {
    let offered: BTreeSet<&str> = request.tools.iter().map(|t| t.name.as_str()).collect();
    let mut calls: Vec<(&str, Value)> = Vec::new();
    if offered.contains(CAPTURE_LEAD) {
        let email = find_email(last_user);
        // A number that does not parse is left out when an email carries the
        // lead; alone, it is passed on so the refusal reaches the visitor.
        let phone = find_phone(last_user).filter(|phone| {
            email.is_none() || contact::parse_phone(phone, Some(NATIONAL_PHONE_REGION)).is_ok()
        });
        if email.is_some() || phone.is_some() {
            let name = find_name(last_user);
            let mut arguments = Map::new();
            for (field, value) in [("name", name), ("email", email), ("phone", phone)] {
                if let Some(value) = value {
                    arguments.insert(field.into(), json!(value));
                }
            }
            calls.push((CAPTURE_LEAD, Value::Object(arguments)));
        }
    }
    let words = Words::of(last_user);
    if offered.contains(BOOK_APPOINTMENT) && words.wants_booking() {
        calls.push((BOOK_APPOINTMENT, json!({ "requested_time": last_user })));
    }
    if offered.contains(REQUEST_QUOTE) && words.wants_quote() {
        calls.push((REQUEST_QUOTE, json!({ "details": last_user })));
    }
    if offered.contains(ESCALATE_TO_HUMAN) && words.wants_person() {
        calls.push((ESCALATE_TO_HUMAN, json!({ "reason": last_user })));
    }
    calls
}

const NOT_DONE: &str =
    "I couldn't pass that on to the team just now. Please try again in a moment.";
const ASK_CONTACT: &str =
    "What's the best email address or phone number for the team to reach you?";

/// What the results of this turn's tool runs allow the reply to say: each
/// claim rests on a result that reports it done.
fn acknowledgements(rounds: &[ToolRound]) -> Vec<String> {
    let mut said = Vec::new();
    let mut contact_needed = false;
    let mut not_done = false;
    for round in rounds {
        for (call, result) in round.calls.iter().zip(&round.results) {
            let status = result.output["status"].as_str().unwrap_or("");
            if result.is_error {
                match (call.name.as_str(), status) {
                    (CAPTURE_LEAD, "rejected") => said.push(
                        "That email address or phone number doesn't look right. \
                         Could you check it and send it again, with the country code for a phone number?"
                            .to_owned(),
                    ),
                    _ => not_done = true,
                }
                continue;
            }
            contact_needed |= result.output["contact_needed"] == json!(true);
            said.push(match call.name.as_str() {
                CAPTURE_LEAD => match call.arguments["name"].as_str() {
                    // The name is the visitor's own text: escaped like any
                    // lead field in a template (the finalizer turns it back).
                    Some(name) => crate::templates::render(
                        "Thanks, {{NAME}}! I've saved your contact details so the team can follow up.",
                        &[("NAME", name)],
                    ),
                    None => "Thanks! I've saved your contact details so the team can follow up."
                        .to_owned(),
                },
                BOOK_APPOINTMENT => "I've passed your appointment request to the team, \
                                     and they'll confirm a time with you."
                    .to_owned(),
                REQUEST_QUOTE => "I've asked the team to prepare a quote for you.".to_owned(),
                ESCALATE_TO_HUMAN if status == "already_waiting" => {
                    "A person on the team already has your conversation and will reply here."
                        .to_owned()
                }
                ESCALATE_TO_HUMAN => {
                    "I've asked a person on the team to take over; they'll reply here.".to_owned()
                }
                _ => continue,
            });
        }
    }
    if not_done {
        said.push(NOT_DONE.to_owned());
    }
    if contact_needed {
        said.push(ASK_CONTACT.to_owned());
    }
    said
}

#[async_trait]
impl LlmProvider for OfflineProvider {
    fn provider(&self) -> &str {
        PROVIDER
    }

    fn model(&self) -> &str {
        OFFLINE_MODEL
    }

    async fn complete(
        &self,
        request: &CompletionRequest,
        events: &mpsc::UnboundedSender<CompletionEvent>,
    ) -> Result<Completion, LlmError> {
        let started = Instant::now();
        let completion = self.respond(request);
        // Word by word, spaces kept, so the deltas join to exactly the text.
        for word in completion.text.split_inclusive(' ') {
            let _ = events.send(CompletionEvent::Delta(word.to_owned()));
        }
        for call in &completion.tool_calls {
            let _ = events.send(CompletionEvent::ToolCall(call.clone()));
        }
        record(Operation::Chat, PROVIDER, "ok", started.elapsed());
        Ok(completion)
    }
}

/// FNV-1a: stable across platforms and releases, unlike std's hasher.
fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Tool call ids differ between turns but not between runs.
fn conversation_hash(request: &CompletionRequest) -> u64 {
    request
        .messages
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash, message| {
            let role: &[u8] = match message.role {
                ChatRole::System => b"s",
                ChatRole::User => b"u",
                ChatRole::Assistant => b"a",
            };
            fnv1a(fnv1a(fnv1a(hash, role), message.content.as_bytes()), &[0])
        })
}

const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "been", "before", "being", "but", "by", "can", "could", "did", "do", "does", "doing", "don",
    "for", "from", "get", "got", "had", "has", "have", "he", "hello", "her", "here", "hey", "hi",
    "him", "his", "how", "i", "if", "im", "in", "into", "is", "it", "its", "just", "know", "let",
    "like", "ll", "may", "me", "might", "more", "most", "much", "must", "my", "need", "no", "not",
    "of", "off", "ok", "on", "or", "our", "ours", "out", "over", "please", "re", "s", "she",
    "should", "so", "some", "t", "tell", "than", "thank", "thanks", "that", "the", "their", "them",
    "then", "there", "these", "they", "this", "those", "to", "too", "up", "us", "ve", "very",
    "was", "want", "we", "were", "what", "when", "where", "which", "who", "whom", "why", "will",
    "with", "would", "yes", "you", "your", "yours",
];

/// Lowercase words of a text, split at anything not a letter or digit.
fn tokens(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// The words that carry meaning, crudely singularized so "hours" meets "hour".
fn content_words(text: &str) -> BTreeSet<String> {
    tokens(text)
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .map(|w| {
            let chars = w.chars().count();
            if chars > 4 && w.ends_with("ies") {
                format!("{}y", &w[..w.len() - 3])
            } else if chars > 3 && w.ends_with('s') && !w.ends_with("ss") {
                w[..w.len() - 1].to_owned()
            } else {
                w
            }
        })
        .collect()
}

/// Sentences of a passage: ends at `.`, `!` or `?` before a space, and at line breaks.
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next = chars.peek().map(|&(_, n)| n);
        let end = match c {
            '\n' | '\r' => Some(i),
            '.' | '!' | '?' if next.is_none_or(char::is_whitespace) => Some(i + c.len_utf8()),
            _ => None,
        };
        if let Some(end) = end {
            out.push(text[start..end].trim());
            start = end;
        }
    }
    out.push(text[start..].trim());
    out.retain(|s| s.chars().any(char::is_alphanumeric));
    out
}

/// A sentence is quoted only when it (with its passage's title) covers at
/// least this share of the question's content words. Below it, the sentence
/// answers some other question: it is dropped, and with no pick left the
/// responder says it found nothing rather than offer a near miss.
const MIN_PICK_CONFIDENCE: f64 = 0.5;

/// Up to three sentences covering the most content words of `query`, in
/// reading order. A word counts when the sentence or its passage's title holds
/// it; among equal coverage, words in the sentence itself rank first.
fn grounded_sentences(passages: &[GroundingPassage], query: &str) -> Vec<String> {
    let wanted = content_words(query);
    if wanted.is_empty() {
        return Vec::new();
    }
    struct Scored<'a> {
        /// Question words held by the sentence or its title.
        covered: usize,
        /// Of those, held by the sentence itself.
        own: usize,
        position: usize,
        text: &'a str,
    }
    let mut scored = Vec::new();
    for passage in passages {
        let title = content_words(&passage.title);
        for sentence in sentences(&passage.text) {
            let words = content_words(sentence);
            let own = wanted.intersection(&words).count();
            let covered = wanted
                .iter()
                .filter(|w| words.contains(*w) || title.contains(*w))
                .count();
            let confidence = covered as f64 / wanted.len() as f64;
            if confidence >= MIN_PICK_CONFIDENCE {
                scored.push(Scored {
                    covered,
                    own,
                    position: scored.len(),
                    text: sentence,
                });
            }
        }
    }
    scored.sort_by(|a, b| {
        (b.covered, b.own)
            .cmp(&(a.covered, a.own))
            .then(a.position.cmp(&b.position))
    });
    let Some((best_covered, best_own)) = scored.first().map(|s| (s.covered, s.own)) else {
        return Vec::new();
    };
    // Close enough to the best: two thirds of its coverage, and half its own
    // words when it has any (a sentence that names the thing beats its neighbours).
    let good_enough = |s: &Scored| s.covered * 3 >= best_covered * 2 && s.own * 2 >= best_own;
    let mut chosen: Vec<&Scored> = Vec::new();
    for candidate in &scored {
        if chosen.len() == MAX_SENTENCES || !good_enough(candidate) {
            break;
        }
        if !chosen.iter().any(|c| c.text == candidate.text) {
            chosen.push(candidate);
        }
    }
    chosen.sort_by_key(|s| s.position);
    chosen.into_iter().map(|s| s.text.to_owned()).collect()
}

/// The last message's words, for intent keywords and phrases.
struct Words {
    /// " w1 w2 … " so phrases match on word boundaries.
    padded: String,
}

impl Words {
    fn of(text: &str) -> Self {
        let words: Vec<String> = tokens(text).collect();
        Self {
            padded: format!(" {} ", words.join(" ")),
        }
    }

    fn has_any(&self, phrases: &[&str]) -> bool {
        phrases
            .iter()
            .any(|phrase| self.padded.contains(&format!(" {phrase} ")))
    }

    fn wants_booking(&self) -> bool {
        self.has_any(&[
            "book",
            "books",
            "booking",
            "booked",
            "appointment",
            "appointments",
            "schedule",
            "scheduled",
            "scheduling",
            "reschedule",
            "reserve",
            "reserved",
            "reservation",
            "reservations",
            "availability",
        ])
    }

    fn wants_quote(&self) -> bool {
        self.has_any(&[
            "quote",
            "quotes",
            "price",
            "prices",
            "pricing",
            "estimate",
            "estimates",
            "cost",
            "costs",
            "how much",
        ])
    }

    fn wants_person(&self) -> bool {
        // "come in person" is about a visit, not a handoff.
        let padded = self.padded.replace(" in person ", " ");
        let words = Self { padded };
        words.has_any(&[
            "human",
            "humans",
            "person",
            "real person",
            "representative",
            "speak to someone",
            "talk to someone",
            "speak with someone",
            "talk with someone",
            "agent",
        ])
    }
}

/// The first email address in the text.
fn find_email(text: &str) -> Option<String> {
    text.split_whitespace()
        .map(|word| {
            word.trim_start_matches(|c: char| "<([{\"'".contains(c))
                .trim_end_matches(|c: char| ">)]}\"'.,;:!?".contains(c))
        })
        .find(|word| is_email(word))
        .map(str::to_owned)
}

fn is_email(candidate: &str) -> bool {
    let Some((local, domain)) = candidate.split_once('@') else {
        return false;
    };
    let labels: Vec<&str> = domain.split('.').collect();
    !local.is_empty()
        && local
            .chars()
            .all(|c| c.is_alphanumeric() || "._%+-".contains(c))
        && labels.len() >= 2
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_alphanumeric() || c == '-'))
        && labels
            .last()
            .is_some_and(|tld| tld.chars().count() >= 2 && tld.chars().all(char::is_alphabetic))
}

/// The first phone number: 7 to 15 digits with the usual separators,
/// standing alone (not part of a word, an address or a date).
fn find_phone(text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let starts = c.is_ascii_digit() || c == '+' || c == '(';
        if !starts || (i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '@')) {
            i += 1;
            continue;
        }
        let (mut j, mut end, mut digits) = (i, i, 0);
        while j < chars.len() {
            let d = chars[j];
            if d.is_ascii_digit() {
                digits += 1;
                end = j + 1;
            } else if d == '+' && j == i {
            } else if d == ' ' {
                // One space inside a number, as in "555 123 4567".
                if !chars
                    .get(j + 1)
                    .is_some_and(|n| n.is_ascii_digit() || *n == '(')
                {
                    break;
                }
            } else if !"-().".contains(d) {
                break;
            }
            j += 1;
        }
        let standalone = chars
            .get(end)
            .is_none_or(|n| !n.is_alphanumeric() && *n != '@');
        let candidate: String = chars[i..end].iter().collect();
        if (7..=15).contains(&digits) && standalone && !looks_like_date(&candidate) {
            return Some(candidate);
        }
        i = j.max(i + 1);
    }
    None
}

fn looks_like_date(candidate: &str) -> bool {
    let groups: Vec<usize> = candidate
        .split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .map(str::len)
        .collect();
    matches!(groups.as_slice(), [4, 1..=2, 1..=2] | [1..=2, 1..=2, 4])
}

/// "my name is Ana Lopez" → "Ana Lopez"; "I'm Ana" → "Ana" (capitalized only,
/// so "I'm looking for…" is not a name).
fn find_name(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase().replace('’', "'");
    let text = text.replace('’', "'");
    let after = |phrase: &str| {
        let mut from = 0;
        while let Some(found) = lower[from..].find(phrase) {
            let at = from + found;
            let boundary = lower[..at]
                .chars()
                .next_back()
                .is_none_or(|c| !c.is_alphanumeric());
            if boundary {
                return Some(&text[at + phrase.len()..]);
            }
            from = at + phrase.len();
        }
        None
    };
    if let Some(rest) = after("my name is ") {
        if let Some(name) = name_words(rest, false) {
            return Some(name);
        }
    }
    ["i'm ", "i am "]
        .iter()
        .find_map(|phrase| after(phrase).and_then(|rest| name_words(rest, true)))
}

/// Up to three name-like words; after the first, only capitalized ones.
fn name_words(rest: &str, first_capitalized: bool) -> Option<String> {
    let mut words = Vec::new();
    for raw in rest.split_whitespace().take(3) {
        let word = raw.trim_end_matches(|c: char| ",.!?;:".contains(c));
        let capitalized = word.chars().next().is_some_and(char::is_uppercase);
        let name_like = !word.is_empty()
            && word.chars().next().is_some_and(char::is_alphabetic)
            && word
                .chars()
                .all(|c| c.is_alphabetic() || c == '-' || c == '\'');
        if !name_like || ((first_capitalized || !words.is_empty()) && !capitalized) {
            break;
        }
        words.push(word);
        if word.len() != raw.len() {
            break;
        }
    }
    (!words.is_empty()).then(|| words.join(" "))
}

#[cfg(test)]
mod tests {
    use agentry_actors::llm::{ChatMessage, ToolResult};
    use agentry_actors::tools;

    use super::*;
    use crate::llm::test_support::drain;

    fn passages() -> Vec<GroundingPassage> {
        vec![
            GroundingPassage {
                title: "Opening hours".into(),
                text: "We are open Monday to Friday from 8am to 6pm. On Saturdays we open from 9am to 1pm. We are closed on Sundays and public holidays.".into(),
            },
            GroundingPassage {
                title: "Parking".into(),
                text: "Free parking is available behind the building. The entrance is on Elm Street.".into(),
            },
            GroundingPassage {
                title: "Payment".into(),
                text: "We accept cards and bank transfers.\nInsurance claims are filed for you.".into(),
            },
        ]
    }

    fn request(message: &str) -> CompletionRequest {
        CompletionRequest {
            messages: vec![
                ChatMessage::system("Answer from the knowledge base."),
                ChatMessage::user("Hello"),
                ChatMessage::assistant("Hi! How can I help?"),
                ChatMessage::user(message),
            ],
            tools: tools::catalog(),
            tool_choice: ToolChoice::Auto,
            tool_rounds: Vec::new(),
            grounding: passages(),
            max_tokens: 300,
            temperature: 0.0,
        }
    }

    fn respond(message: &str) -> Completion {
        OfflineProvider::new().respond(&request(message))
    }

    fn succeeded(call: &ToolCall) -> ToolResult {
        ToolResult {
            call_id: call.id.clone(),
            output: json!({ "status": "done" }),
            is_error: false,
        }
    }

    /// The first round, then the round that read `results` of its calls:
    /// the text the visitor reads, and the second round's completion.
    fn respond_after(
        message: &str,
        results: impl Fn(&ToolCall) -> ToolResult,
    ) -> (String, Completion) {
        let mut request = request(message);
        let first = OfflineProvider::new().respond(&request);
        request.tool_rounds.push(ToolRound {
            text: first.text.clone(),
            results: first.tool_calls.iter().map(&results).collect(),
            calls: first.tool_calls,
        });
        let second = OfflineProvider::new().respond(&request);
        let said = [first.text, second.text.clone()]
            .into_iter()
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        (said, second)
    }

    fn names(completion: &Completion) -> Vec<&str> {
        completion
            .tool_calls
            .iter()
            .map(|c| c.name.as_str())
            .collect()
    }

    #[test]
    fn the_answer_quotes_the_matching_passage() {
        let completion = respond("Is there parking near you?");
        assert_eq!(
            completion.text,
            "Here's what I found: Free parking is available behind the building."
        );
        assert!(completion.tool_calls.is_empty());

        let hours = respond("What are your opening hours on Saturday?");
        assert!(
            hours.text.contains("On Saturdays we open from 9am to 1pm."),
            "{}",
            hours.text
        );
        assert!(!hours.text.contains("parking"));
        assert!(!hours.text.contains("Sundays"));

        // Only the title matches: the passage's sentences stand in, three at most.
        let by_title = respond("What are your hours?");
        assert_eq!(
            by_title.text.matches("We ").count() + by_title.text.matches("On ").count(),
            3
        );
        assert!(by_title.text.contains("Monday to Friday"));
    }

    #[test]
    fn a_pick_below_the_confidence_threshold_is_dropped_not_offered() {
        // Elm Street is in the parking passage, but that answers another question.
        let completion = respond("Do you repair bicycles on weekends near Elm Street?");
        assert_eq!(completion.text, NO_MATCH);
        // A title-only match covering the whole question beats a sentence that
        // shares one word of it by chance.
        let mut request = request("What are your opening hours?");
        request.grounding.push(GroundingPassage {
            title: "Cancellations".into(),
            text: "Cancel at least 24 hours ahead.".into(),
        });
        let hours = OfflineProvider::new().respond(&request).text;
        assert!(hours.contains("Monday to Friday"), "{hours}");
        assert!(!hours.contains("Cancel"), "{hours}");
    }

    #[test]
    fn no_match_says_so_and_offers_a_person() {
        let completion = respond("Do you repair bicycles?");
        assert_eq!(completion.text, NO_MATCH);
        assert!(completion.tool_calls.is_empty());
        let mut empty = request("Where is the entrance?");
        empty.grounding.clear();
        assert_eq!(OfflineProvider::new().respond(&empty).text, NO_MATCH);
        assert_eq!(respond("Hi there, thanks!").text, GREETING);
    }

    #[test]
    fn contact_details_capture_a_lead_with_the_name() {
        let completion =
            respond("My name is Ana Lopez, email ana.lopez@example.com or call +1 (555) 123-4567.");
        assert_eq!(names(&completion), [CAPTURE_LEAD]);
        // 555-123 is no real number: with an email to carry the lead, it is left out.
        assert_eq!(
            completion.tool_calls[0].arguments,
            json!({"name": "Ana Lopez", "email": "ana.lopez@example.com"})
        );
        assert!(!completion.text.contains("saved"), "nothing is done yet");
        let (said, second) = respond_after(
            "My name is Ana Lopez, email ana.lopez@example.com or call +1 (415) 555-2671.",
            succeeded,
        );
        assert!(
            said.contains("Thanks, Ana Lopez! I've saved your contact details"),
            "{said}"
        );
        assert!(second.tool_calls.is_empty(), "each tool runs once a turn");
        let with_phone = respond("Ana here: ana@example.com, +1 (415) 555-2671");
        assert_eq!(
            with_phone.tool_calls[0].arguments["phone"],
            "+1 (415) 555-2671"
        );

        let phone_only = respond("I'm Sam, reach me at 555-867-5309");
        assert_eq!(
            phone_only.tool_calls[0].arguments,
            json!({"name": "Sam", "phone": "555-867-5309"})
        );
        let email_only = respond("i'm looking for help, write to me at <x@y.org>.");
        assert_eq!(
            email_only.tool_calls[0].arguments,
            json!({"email": "x@y.org"})
        );
    }

    #[test]
    fn a_refused_or_failed_run_is_never_claimed_done() {
        let refused = |call: &ToolCall| ToolResult {
            call_id: call.id.clone(),
            output: json!({ "status": "rejected", "errors": ["phone: bad"] }),
            is_error: true,
        };
        let (said, _) = respond_after("I'm Sam, reach me at 555-867-5309", refused);
        assert!(said.contains("doesn't look right"), "{said}");
        assert!(!said.contains("saved"), "{said}");

        let failed = |call: &ToolCall| ToolResult {
            call_id: call.id.clone(),
            output: json!({ "status": "failed" }),
            is_error: true,
        };
        let (said, _) = respond_after("Can I book Tuesday and get a quote?", failed);
        assert_eq!(said.matches(NOT_DONE).count(), 1, "{said}");
        assert!(!said.contains("passed your appointment"), "{said}");
    }

    #[test]
    fn a_booking_without_contact_details_asks_for_them() {
        let needs_contact = |call: &ToolCall| ToolResult {
            call_id: call.id.clone(),
            output: json!({ "status": "requested", "contact_needed": true }),
            is_error: false,
        };
        let (said, _) = respond_after("Can I book Tuesday and get a quote?", needs_contact);
        assert!(said.contains("appointment request"), "{said}");
        assert_eq!(said.matches(ASK_CONTACT).count(), 1, "{said}");
    }

    #[test]
    fn with_tool_choice_none_it_answers_in_words_only() {
        let mut request = request("Book me in Tuesday please");
        request.tool_choice = ToolChoice::None;
        let completion = OfflineProvider::new().respond(&request);
        assert!(completion.tool_calls.is_empty());
        assert!(!completion.text.is_empty());
    }

    #[test]
    fn dates_and_times_are_not_phone_numbers() {
        assert_eq!(find_phone("on 2024-05-01 at 10:30"), None);
        assert_eq!(find_phone("room 12, 3 people"), None);
        assert_eq!(find_phone("ana123456789@example.com"), None);
        assert_eq!(
            find_phone("call 0612345678 today").as_deref(),
            Some("0612345678")
        );
    }

    #[test]
    fn booking_words_request_an_appointment() {
        let message = "Can I book an appointment for Tuesday at 3pm?";
        let completion = respond(message);
        assert_eq!(names(&completion), [BOOK_APPOINTMENT]);
        assert_eq!(
            completion.tool_calls[0].arguments,
            json!({"requested_time": message})
        );
        assert!(!completion.text.contains("appointment request"));
        let (said, _) = respond_after(message, succeeded);
        assert!(said.contains("appointment request"), "{said}");
        assert_eq!(
            names(&respond("What is your availability next week?")),
            [BOOK_APPOINTMENT]
        );
        assert_eq!(
            names(&respond("I'd like to reserve a slot")),
            [BOOK_APPOINTMENT]
        );
    }

    #[test]
    fn price_words_request_a_quote() {
        for message in [
            "How much is a cleaning?",
            "Can I get a quote for braces?",
            "What does whitening cost?",
        ] {
            let completion = respond(message);
            assert_eq!(names(&completion), [REQUEST_QUOTE], "{message}");
            assert_eq!(
                completion.tool_calls[0].arguments,
                json!({"details": message})
            );
            assert!(!completion.text.contains("prepare a quote"));
            let (said, _) = respond_after(message, succeeded);
            assert!(said.contains("prepare a quote"), "{said}");
        }
    }

    #[test]
    fn asking_for_a_person_escalates() {
        for message in [
            "Can I talk to someone?",
            "I want a real person",
            "representative please",
            "Are you a human?",
        ] {
            let completion = respond(message);
            assert_eq!(names(&completion), [ESCALATE_TO_HUMAN], "{message}");
            assert_eq!(
                completion.tool_calls[0].arguments,
                json!({"reason": message})
            );
            let (said, _) = respond_after(message, succeeded);
            assert!(
                said.contains("asked a person on the team to take over"),
                "{said}"
            );
        }
        assert!(respond("Can I pay in person?").tool_calls.is_empty());
    }

    #[test]
    fn several_intents_call_several_tools_in_catalog_order() {
        let completion =
            respond("I need a person to give me a price and book me in; I'm Jo, jo@example.com");
        assert_eq!(
            names(&completion),
            [
                CAPTURE_LEAD,
                BOOK_APPOINTMENT,
                REQUEST_QUOTE,
                ESCALATE_TO_HUMAN
            ]
        );
        assert_eq!(completion.tool_calls[0].arguments["name"], "Jo");
        let ids: BTreeSet<_> = completion.tool_calls.iter().map(|c| &c.id).collect();
        assert_eq!(ids.len(), 4, "ids are distinct");
    }

    #[test]
    fn tools_the_request_does_not_offer_are_never_called() {
        let mut limited = request("Book me Tuesday, and how much? ana@example.com, or a human");
        limited.tools.retain(|t| t.name == REQUEST_QUOTE);
        let completion = OfflineProvider::new().respond(&limited);
        assert_eq!(names(&completion), [REQUEST_QUOTE]);
        limited.tools.clear();
        assert!(OfflineProvider::new()
            .respond(&limited)
            .tool_calls
            .is_empty());
    }

    #[test]
    fn usage_is_a_quarter_of_the_characters() {
        let req = request("Is there parking?");
        let completion = OfflineProvider::new().respond(&req);
        let prompt_chars: usize = req.messages.iter().map(|m| m.content.chars().count()).sum();
        assert_eq!(
            completion.usage.prompt_tokens as usize,
            prompt_chars.div_ceil(4)
        );
        assert_eq!(
            completion.usage.completion_tokens as usize,
            completion.text.chars().count().div_ceil(4)
        );
    }

    #[tokio::test]
    async fn the_same_request_streams_the_same_answer_word_by_word() {
        let provider = OfflineProvider::new();
        assert_eq!(
            (provider.provider(), provider.model()),
            ("offline", OFFLINE_MODEL)
        );
        let mut req = request("When are you open? Also how much is parking? my email is a@b.co");
        // The first round calls the tools; the second, having read their
        // results, is the one that speaks.
        for round in 0..2 {
            let mut runs = Vec::new();
            for _ in 0..2 {
                let (tx, rx) = mpsc::unbounded_channel();
                let completion = provider.complete(&req, &tx).await.unwrap();
                runs.push((completion, drain(rx)));
            }
            assert_eq!(runs[0], runs[1]);
            let (completion, events) = runs.swap_remove(0);
            let deltas: Vec<&str> = events
                .iter()
                .filter_map(|e| match e {
                    CompletionEvent::Delta(d) => Some(d.as_str()),
                    CompletionEvent::ToolCall(_) => None,
                })
                .collect();
            assert_eq!(deltas.concat(), completion.text);
            let calls: Vec<&ToolCall> = events
                .iter()
                .filter_map(|e| match e {
                    CompletionEvent::ToolCall(c) => Some(c),
                    CompletionEvent::Delta(_) => None,
                })
                .collect();
            assert_eq!(calls.len(), completion.tool_calls.len());
            if round == 0 {
                assert_eq!(names(&completion), [CAPTURE_LEAD, REQUEST_QUOTE]);
                req.tool_rounds.push(ToolRound {
                    text: completion.text.clone(),
                    results: completion.tool_calls.iter().map(succeeded).collect(),
                    calls: completion.tool_calls,
                });
            } else {
                assert!(deltas.len() > 5, "{deltas:?}");
                assert!(completion.tool_calls.is_empty());
            }
        }
    }

    #[test]
    fn sentences_split_at_stops_and_line_breaks() {
        assert_eq!(
            sentences("One. Two!\nThree? 3.5 stays\r\n"),
            ["One.", "Two!", "Three?", "3.5 stays"]
        );
    }
}
