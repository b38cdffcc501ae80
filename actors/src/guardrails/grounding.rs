//! The second rule of the finalize chain: no ungrounded specifics.
//!
//! A model asked about prices or dates will happily invent them. A sentence
//! that asserts a specific (an amount of money, a percentage or APR, a phone
//! number, an email address, a URL, a date, a count of items in stock) is kept
//! only if that specific appears in what the turn is grounded on: the passages
//! retrieved for it and the agent profile's facts. Specifics are compared
//! normalized: `$1,200` = `$1200` = `1200 dollars`, phone numbers by their last
//! ten digits, URLs without scheme, `www.` or trailing slash.

use std::collections::HashSet;
use std::sync::{LazyLock, OnceLock};

use regex::{Captures, Regex};

/// One normalized specific, e.g. `money:1200` or `phone:4155552671`.
pub type Specific = String;

struct Patterns {
    email: Regex,
    url: Regex,
    money: Regex,
    percent: Regex,
    stock: Regex,
    date: Regex,
    phone: Regex,
}

static PATTERNS: LazyLock<Patterns> = LazyLock::new(|| {
    let month = r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)";
    let compile = |pattern: &str| Regex::new(pattern).expect("a valid built-in pattern");
    Patterns {
        email: compile(r"(?i)\b[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}\b"),
        url: compile(
            r"(?i)\b(?:https?://|www\.)[^\s<>()]+|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|org|net|io|co|us|uk|de|fr|info|biz|app|dev)(?:/[^\s<>()]*)?",
        ),
        money: compile(
            r"(?i)(?:[$€£]\s?(\d[\d,]*(?:\.\d+)?))|(?:\b(\d[\d,]*(?:\.\d+)?)\s?(?:dollars?|usd|euros?|eur|pounds?|gbp)\b)",
        ),
        percent: compile(r"(?i)\b(\d+(?:\.\d+)?)\s?(?:%|percent\b)"),
        stock: compile(
            r"(?i)\b(\d+)\s+(?:(?:units?|items?|pieces?)\s+)?(?:in stock|left|remaining)\b",
        ),
        date: compile(&format!(
            r"(?i)\b(?:\d{{4}}-\d{{1,2}}-\d{{1,2}}|\d{{1,2}}/\d{{1,2}}(?:/\d{{2,4}})?|{month}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{month})\b"
        )),
        phone: compile(r"\+?\(?\d[\d\s().-]{5,}\d"),
    }
});

fn number(text: &str) -> String {
    let plain = text.replace(',', "");
    match plain.split_once('.') {
        Some((whole, fraction)) if fraction.trim_end_matches('0').is_empty() => whole.to_owned(),
        Some((whole, fraction)) => format!("{whole}.{}", fraction.trim_end_matches('0')),
        None => plain,
    }
}

fn normalized_url(url: &str) -> String {
    let lower = url.to_lowercase();
    let bare = lower
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_start_matches("www.");
    bare.trim_end_matches(|c: char| ".,;:!?'\"/".contains(c))
        .to_owned()
}

fn normalized_date(date: &str) -> String {
    date.to_lowercase()
        .replace(['.', ','], "")
        .split_whitespace()
        .filter(|word| *word != "of")
        .map(|word| {
            word.trim_end_matches(['s', 't', 'n', 'd', 'r', 'h'])
                .to_owned()
        })
        .map(|word| word.chars().take(3).collect::<String>())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Turns one match into its normalized specific; `None` leaves the text unclaimed.
type Normalize = fn(&Captures) -> Option<Specific>;

/// Whether `text` may hold a specific: every kind needs a digit, an `@`, or
/// (a URL) a dot inside a word or `://`. Most sentences have none and skip
/// the patterns.
fn may_assert(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().any(|(i, &b)| {
        b.is_ascii_digit()
            || b == b'@'
            || (b == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_alphanumeric))
            || (b == b':' && bytes[i + 1..].starts_with(b"//"))
    })
}

/// The specifics `text` asserts, normalized.
pub fn specifics(text: &str) -> HashSet<Specific> {
    if !may_assert(text) {
        return HashSet::new();
    }
    extract(text)
}

fn extract(text: &str) -> HashSet<Specific> {
    let p = &*PATTERNS;
    // In order of precedence: a span claimed by one kind (a price) is not
    // claimed again by a later one (its digits as a phone number).
    let kinds: [(&Regex, Normalize); 7] = [
        (&p.email, |c| Some(format!("email:{}", c[0].to_lowercase()))),
        (&p.url, |c| Some(format!("url:{}", normalized_url(&c[0])))),
        (&p.money, |c| {
            let amount = c.get(1).or_else(|| c.get(2))?;
            Some(format!("money:{}", number(amount.as_str())))
        }),
        (&p.percent, |c| Some(format!("percent:{}", number(&c[1])))),
        (&p.stock, |c| Some(format!("stock:{}", &c[1]))),
        (&p.date, |c| {
            Some(format!("date:{}", normalized_date(&c[0])))
        }),
        (&p.phone, |c| {
            let digits: String = c[0].chars().filter(char::is_ascii_digit).collect();
            (digits.len() >= 7)
                .then(|| format!("phone:{}", &digits[digits.len().saturating_sub(10)..]))
        }),
    ];
    let mut found = HashSet::new();
    let mut taken: Vec<(usize, usize)> = Vec::new();
    for (pattern, normalize) in kinds {
        for captures in pattern.captures_iter(text) {
            let whole = captures.get(0).expect("the whole match");
            let (start, end) = (whole.start(), whole.end());
            if taken.iter().any(|&(s, e)| start < e && s < end) {
                continue;
            }
            if let Some(specific) = normalize(&captures) {
                taken.push((start, end));
                found.insert(specific);
            }
        }
    }
    found
}

/// What a turn's reply may assert: the specifics of its passages and facts.
/// They are extracted on the first sentence that asserts anything, so a reply
/// without specifics costs no scan of the sources.
#[derive(Debug, Default)]
pub struct Grounding {
    sources: Vec<String>,
    known: OnceLock<HashSet<Specific>>,
}

impl Grounding {
    pub fn new<'a>(sources: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            sources: sources.into_iter().map(str::to_owned).collect(),
            known: OnceLock::new(),
        }
    }

    /// Whether every specific `sentence` asserts is grounded.
    pub fn supports(&self, sentence: &str) -> bool {
        let asserted = specifics(sentence);
        if asserted.is_empty() {
            return true;
        }
        let known = self.known.get_or_init(|| {
            self.sources
                .iter()
                .flat_map(|source| specifics(source))
                .collect()
        });
        asserted.iter().all(|s| known.contains(s))
    }
}

/// Splits text after `.`, `!`, `?` followed by whitespace, or after a newline,
/// keeping each piece's trailing whitespace with it.
pub fn sentences(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, c) in text.char_indices() {
        let ends = c == '\n'
            || (matches!(c, '.' | '!' | '?')
                && bytes.get(i + 1).is_some_and(|b| b.is_ascii_whitespace()));
        if ends {
            let mut end = i + c.len_utf8();
            while end < bytes.len() && bytes[end].is_ascii_whitespace() && bytes[end] != b'\n' {
                end += 1;
            }
            if c != '\n' && bytes.get(end) == Some(&b'\n') {
                end += 1;
            }
            pieces.push(&text[start..end]);
            start = end;
        }
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces.retain(|p| !p.is_empty());
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grounding(sources: &[&str]) -> Grounding {
        Grounding::new(sources.iter().copied())
    }

    #[test]
    fn amounts_compare_normalized() {
        let g = grounding(&["A check-up costs $1,200.00 and whitening 250 dollars."]);
        for claim in [
            "It costs $1200.",
            "That is 1,200 dollars.",
            "Whitening is $250.",
            "About USD 1200? No: $1,200.",
        ] {
            assert!(g.supports(claim), "{claim}");
        }
        assert!(!g.supports("It costs $1,250."));
        assert!(!g.supports("Financing at 3.9% APR is available."));
    }

    #[test]
    fn phones_emails_urls_dates_and_stock_must_come_from_the_sources() {
        let g = grounding(&[
            "Call (415) 555-2671 or write to desk@harbor.example.com.",
            "See https://www.harbor.example.com/prices/ for details.",
            "We close on December 24th. 3 in stock.",
        ]);
        for claim in [
            "Call +1 415-555-2671.",
            "Email DESK@harbor.example.com today.",
            "Prices: harbor.example.com/prices",
            "We close Dec 24.",
            "Only 3 left in stock? Yes, 3 in stock.",
        ] {
            assert!(g.supports(claim), "{claim}");
        }
        for claim in [
            "Call 415-555-9999.",
            "Write to sales@harbor.example.com.",
            "See https://evil.example.net/offer.",
            "We close on December 31st.",
            "We have 12 in stock.",
            "The deadline is 2026-12-01.",
        ] {
            assert!(!g.supports(claim), "{claim}");
        }
    }

    #[test]
    fn sentences_without_specifics_always_stand() {
        let g = Grounding::default();
        assert!(g.supports("We would love to help you with that."));
        assert!(g.supports("Open most weekdays; ask the front desk."));
    }

    proptest::proptest! {
        #![proptest_config(crate::test_support::property_config(2000))]

        #[test]
        fn text_the_prefilter_skips_holds_no_specific(
            text in proptest::string::string_regex(
                r"([a-zA-Z ,;!?$%€£/:-]|\. |www|http|https|com|dollars|percent|in stock|december){0,20}"
            ).unwrap()
        ) {
            if !may_assert(&text) {
                proptest::prop_assert!(extract(&text).is_empty(), "{:?}", extract(&text));
            }
        }
    }

    #[test]
    fn sentences_split_and_rejoin_to_the_same_text() {
        for text in [
            "One. Two! Three?",
            "Line\nnext line",
            "No end",
            "A.B. c.  D",
            "",
        ] {
            assert_eq!(sentences(text).concat(), text);
        }
    }
}
