//! The tenant's directives: what an agent must never say, enforced on the
//! output as well as asked for in the prompt. A model may ignore its prompt
//! (or be talked out of it by a visitor); the finalizer does not.
//!
//! Each directive is on by default and may carry its own wording, said once in
//! place of what it removed. In a profile, a directive is `true`, `false`, or
//! `{"enabled": bool, "wording": "..."}`.

use std::sync::LazyLock;

use regex::Regex;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// One directive: on or off, with the tenant's wording or ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directive {
    pub enabled: bool,
    /// Said in place of what the directive removed (`None`: the default).
    pub wording: Option<String>,
}

impl Default for Directive {
    fn default() -> Self {
        Self {
            enabled: true,
            wording: None,
        }
    }
}

impl Directive {
    const MAX_WORDING_CHARS: usize = 500;
}

impl Serialize for Directive {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.wording {
            None => serializer.serialize_bool(self.enabled),
            Some(wording) => serde_json::json!({"enabled": self.enabled, "wording": wording})
                .serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Directive {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let shape = || {
            D::Error::custom(format!(
                "a directive is true, false or {{\"enabled\": true|false, \"wording\": \"1 to {} characters\"}}",
                Directive::MAX_WORDING_CHARS
            ))
        };
        match Value::deserialize(deserializer)? {
            Value::Bool(enabled) => Ok(Self {
                enabled,
                wording: None,
            }),
            Value::Object(fields) => {
                let mut directive = Self::default();
                for (key, value) in fields {
                    match (key.as_str(), value) {
                        ("enabled", Value::Bool(enabled)) => directive.enabled = enabled,
                        ("wording", Value::Null) => directive.wording = None,
                        ("wording", Value::String(wording))
                            if !wording.trim().is_empty()
                                && wording.chars().count() <= Self::MAX_WORDING_CHARS =>
                        {
                            directive.wording = Some(wording)
                        }
                        _ => return Err(shape()),
                    }
                }
                Ok(directive)
            }
            _ => Err(shape()),
        }
    }
}

/// The directives of an agent profile.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Directives {
    /// Prevents quoting an APR, an interest rate or a monthly payment: figures
    /// only a finance desk can commit to, and a regulatory risk when invented.
    pub no_financing_quotes: Directive,
    /// Prevents naming a dollar figure for a trade-in or an appraisal, which a
    /// visitor would hold the business to before anyone saw the vehicle.
    pub no_trade_in_values: Directive,
    /// Prevents recommending, praising, pricing or comparing the profile's
    /// competitors: the agent is the tenant's, not a shopping guide.
    pub competitor_deflection: Directive,
    /// Prevents the agent from handling alone the topics the tenant wants a
    /// person for: a visitor raising one gets the escalate tool called.
    pub escalation_topics: Directive,
}

/// The directive rules the finalizer applies per sentence, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SentenceRule {
    CompetitorDeflection,
    NoFinancingQuotes,
    NoTradeInValues,
}

impl SentenceRule {
    pub const ALL: [SentenceRule; 3] = [
        SentenceRule::CompetitorDeflection,
        SentenceRule::NoFinancingQuotes,
        SentenceRule::NoTradeInValues,
    ];

    /// The rule's name in metrics, usage records and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Self::CompetitorDeflection => "competitor_deflection",
            Self::NoFinancingQuotes => "no_financing_quotes",
            Self::NoTradeInValues => "no_trade_in_values",
        }
    }

    pub fn directive(self, directives: &Directives) -> &Directive {
        match self {
            Self::CompetitorDeflection => &directives.competitor_deflection,
            Self::NoFinancingQuotes => &directives.no_financing_quotes,
            Self::NoTradeInValues => &directives.no_trade_in_values,
        }
    }

    /// What is said in place of the removed sentences when the tenant set no wording.
    pub fn default_wording(self, brand: Option<&str>) -> String {
        match self {
            Self::CompetitorDeflection => match brand {
                Some(brand) => format!("I can only speak to the products and services of {brand}."),
                None => "I can only speak to our own products and services.".to_owned(),
            },
            Self::NoFinancingQuotes => {
                "I can't quote financing terms here; our finance team can walk you through the options."
                    .to_owned()
            }
            Self::NoTradeInValues => {
                "I can't put a value on a trade-in here; an in-person appraisal gives you a firm figure."
                    .to_owned()
            }
        }
    }
}

struct Patterns {
    money: Regex,
    percent: Regex,
    financing_words: Regex,
    rate: Regex,
    monthly: Regex,
    trade_in_words: Regex,
    endorsement: Regex,
}

static PATTERNS: LazyLock<Patterns> = LazyLock::new(|| {
    let compile = |pattern: &str| Regex::new(pattern).expect("a valid built-in pattern");
    Patterns {
        money: compile(
            r"(?i)[$€£]\s?\d|\b\d[\d,]*(?:\.\d+)?\s?(?:dollars?|usd|euros?|eur|pounds?|gbp|bucks|k)\b",
        ),
        percent: compile(r"(?i)\d\s?(?:%|percent\b|per cent\b)"),
        financing_words: compile(
            r"(?i)\b(?:apr|apy|interest|financ\w*|loans?|lease\w*|credit|down payments?)\b",
        ),
        rate: compile(r"(?i)\brates?\b"),
        monthly: compile(
            r"(?i)(?:/\s?mo\b|/\s?month|\bper month\b|\ba month\b|\bmonthly\b|\beach month\b|\bevery month\b|\bmonthly payments?\b)",
        ),
        trade_in_words: compile(
            r"(?i)\b(?:trade[\s-]?ins?|trad(?:e|ing) (?:it |them |your \w+ )?in|apprais\w*|blue book|kbb|your (?:car|vehicle|truck|suv|van|bike)\b.*\b(?:worth|value|fetch|get))",
        ),
        // Recommending, praising, pricing or comparing (as word beginnings).
        endorsement: compile(
            r"(?i)\b(?:recommend|suggest|try|tried|consider|check (?:out|them)|go (?:with|to|for)|head (?:to|over)|visit|choos|chose|pick|prefer|should|switch|worth|great|good|best|better|excellent|amazing|awesome|fantastic|love|nice|reliab|quality|trust|top|superior|impressive|popular|well[- ]known|reputab|favou?rite|solid|strong|wonderful|outstanding|beat|win|leader|price|pricing|cost|cheap|afford|deal|discount|offer|sale|expensive|pric|fee|rate|value|than|versus|vs\b|compar|similar|like|unlike|alternative|instead|rather|same|equal|match|over)",
        ),
    }
});

/// Whether `sentence` quotes an APR, an interest rate or a monthly payment.
pub fn quotes_financing(sentence: &str) -> bool {
    // Every figure holds a digit.
    if !sentence.bytes().any(|b| b.is_ascii_digit()) {
        return false;
    }
    let p = &*PATTERNS;
    let (percent, money) = (p.percent.is_match(sentence), p.money.is_match(sentence));
    // "a rate of 4%" is a financing quote; "a labor rate of $120" is a price.
    let rate_quote = percent && p.rate.is_match(sentence);
    let financing_figure = (percent || money) && p.financing_words.is_match(sentence);
    let monthly_payment = money && p.monthly.is_match(sentence);
    rate_quote || financing_figure || monthly_payment
}

/// Whether `sentence` names a dollar figure for a trade-in or an appraisal.
pub fn quotes_trade_in(sentence: &str) -> bool {
    if !sentence.bytes().any(|b| b.is_ascii_digit()) {
        return false;
    }
    let p = &*PATTERNS;
    p.money.is_match(sentence) && p.trade_in_words.is_match(sentence)
}

/// Finds the profile's competitors in a sentence, whole words, any case.
#[derive(Debug)]
pub struct Competitors {
    names: Option<Regex>,
}

impl Competitors {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let alternatives: Vec<String> = names
            .into_iter()
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(regex::escape)
            .collect();
        let names = (!alternatives.is_empty()).then(|| {
            Regex::new(&format!(r"(?i)\b(?:{})\b", alternatives.join("|")))
                .expect("escaped names make a valid pattern")
        });
        Self { names }
    }

    pub fn names_one(&self, sentence: &str) -> bool {
        self.names
            .as_ref()
            .is_some_and(|names| names.is_match(sentence))
    }

    /// Whether `sentence` recommends, praises, prices or compares a competitor.
    /// A plain mention ("I can't speak for Acme.") stands.
    pub fn endorsed_in(&self, sentence: &str) -> bool {
        let p = &*PATTERNS;
        self.names_one(sentence)
            && (p.endorsement.is_match(sentence)
                || p.money.is_match(sentence)
                || p.percent.is_match(sentence))
    }
}

/// The first escalation topic the visitor's message raises: every word of the
/// topic (ignoring short words and a plural `s`) appears in the message.
pub fn raised_topic<'a>(topics: &'a [String], visitor_text: &str) -> Option<&'a str> {
    let stem = |word: &str| {
        let lower = word.to_lowercase();
        match lower.strip_suffix('s') {
            Some(stem) if stem.chars().count() >= 3 => stem.to_owned(),
            _ => lower,
        }
    };
    let words = |text: &str| -> Vec<String> {
        text.split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.chars().count() >= 3)
            .map(stem)
            .collect()
    };
    let said = words(visitor_text);
    topics
        .iter()
        .find(|topic| {
            let wanted = words(topic);
            !wanted.is_empty() && wanted.iter().all(|w| said.contains(w))
        })
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_read_as_switches_or_with_wordings() {
        let parsed: Directives = serde_json::from_value(serde_json::json!({
            "no_financing_quotes": false,
            "competitor_deflection": {"wording": "We only talk about Harbor."}
        }))
        .unwrap();
        assert!(!parsed.no_financing_quotes.enabled);
        assert!(parsed.no_trade_in_values.enabled, "on by default");
        assert!(parsed.competitor_deflection.enabled);
        assert_eq!(
            parsed.competitor_deflection.wording.as_deref(),
            Some("We only talk about Harbor.")
        );
        let round_trip: Directives =
            serde_json::from_value(serde_json::to_value(&parsed).unwrap()).unwrap();
        assert_eq!(round_trip, parsed);
        for bad in [
            serde_json::json!({"no_financing_quotes": "yes"}),
            serde_json::json!({"no_financing_quotes": {"wording": ""}}),
            serde_json::json!({"no_financing_quotes": {"enable": true}}),
            serde_json::json!({"no_such_directive": true}),
        ] {
            assert!(serde_json::from_value::<Directives>(bad).is_err());
        }
    }

    #[test]
    fn financing_figures_are_recognised() {
        for quote in [
            "Financing is available at 3.9% APR.",
            "Payments start at $299/mo with approved credit.",
            "That works out to $412 per month.",
            "Our interest rate is 5 percent.",
            "Zero down and 0% financing this week!",
            "Your monthly payment would be about $350.",
        ] {
            assert!(quotes_financing(quote), "{quote}");
        }
        for plain in [
            "We offer financing; ask the finance desk.",
            "The oil change is $49.",
            "Our shop is 95% booked on Saturdays.",
            "We're open every month of the year.",
        ] {
            assert!(!quotes_financing(plain), "{plain}");
        }
    }

    #[test]
    fn trade_in_figures_are_recognised() {
        for quote in [
            "Your trade-in is worth about $8,500.",
            "We'd appraise it at 12k.",
            "Trading your Civic in could get you $6,000.",
            "Kelley Blue Book puts it at $9,100.",
        ] {
            assert!(quotes_trade_in(quote), "{quote}");
        }
        for plain in [
            "We accept trade-ins of any make.",
            "The warranty costs $500.",
        ] {
            assert!(!quotes_trade_in(plain), "{plain}");
        }
    }

    #[test]
    fn competitors_are_caught_when_endorsed_not_when_mentioned() {
        let rivals = Competitors::new(["Acme Motors", "Zenith"]);
        for endorsed in [
            "Acme Motors has great prices.",
            "You could try zenith instead.",
            "Zenith charges $30 for the same service.",
            "We are better than Acme Motors.",
        ] {
            assert!(rivals.endorsed_in(endorsed), "{endorsed}");
        }
        for plain in [
            "I can't speak for Zenith.",
            "Zeniths of the sky are lovely.",
            "We have great prices.",
        ] {
            assert!(!rivals.endorsed_in(plain), "{plain}");
        }
        assert!(!Competitors::new([]).endorsed_in("Anything at all is great."));
    }

    #[test]
    fn topics_are_raised_by_their_words() {
        let topics = vec!["legal claims".to_owned(), "refunds".to_owned()];
        assert_eq!(
            raised_topic(&topics, "Can I get a refund?"),
            Some("refunds")
        );
        assert_eq!(
            raised_topic(&topics, "I want to make a legal claim."),
            Some("legal claims")
        );
        assert_eq!(raised_topic(&topics, "Is this legal?"), None);
    }
}
