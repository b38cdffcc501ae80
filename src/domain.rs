//! Validated values, parsed once at the edge so the rest of the code never sees
//! an invalid one. Parse errors are messages fit for an API client.

use agentry_actors::guardrails::directives::Directives;
use agentry_actors::ports::AgentBrief;
use serde::{Deserialize, Serialize};

/// A login email, normalized to lowercase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(input: &str) -> Result<Self, String> {
        agentry_actors::contact::parse_email(input).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A phone number in international format, normalized to E.164 (`+14155550100`).
pub fn parse_phone(input: &str) -> Result<String, String> {
    agentry_actors::contact::parse_phone(input, None)
}

/// The first `max` characters of `text`, cut on a character boundary.
pub fn first_chars(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// Free text a person writes (lead notes): at most `max` characters, no
/// control characters but line breaks and tabs.
pub fn check_text(field: &str, text: &str, max: usize) -> Result<(), String> {
    if text.chars().count() > max {
        return Err(format!("{field} must be at most {max} characters"));
    }
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(format!("{field} must not contain control characters"));
    }
    Ok(())
}

/// A new password: long enough to mean something, short enough to hash cheaply.
pub fn check_new_password(password: &str) -> Result<(), String> {
    match password.chars().count() {
        0..=9 => Err("password must be at least 10 characters".into()),
        10..=256 => Ok(()),
        _ => Err("password must be at most 256 characters".into()),
    }
}

/// A widget's public key: it identifies the widget in a web page, nothing more.
pub fn new_widget_public_key() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    format!(
        "pk_{}",
        Alphanumeric.sample_string(&mut rand::rngs::OsRng, 32)
    )
}

/// A display name (tenant, agent): trimmed, 1 to 200 characters, no control characters.
pub fn parse_name(field: &str, input: &str) -> Result<String, String> {
    let name = input.trim();
    if name.is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if name.chars().count() > 200 {
        return Err(format!("{field} must be at most 200 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{field} must not contain control characters"));
    }
    Ok(name.to_owned())
}

pub const MAX_SYSTEM_PROMPT_CHARS: usize = 20_000;

pub fn check_system_prompt(prompt: &str) -> Result<(), String> {
    if prompt.chars().count() > MAX_SYSTEM_PROMPT_CHARS {
        return Err(format!(
            "system_prompt must be at most {MAX_SYSTEM_PROMPT_CHARS} characters"
        ));
    }
    Ok(())
}

/// What an agent knows about the business it speaks for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AgentProfile {
    pub brand: Option<String>,
    pub competitors: Vec<String>,
    pub facts: Vec<String>,
    pub escalation_topics: Vec<String>,
    /// Said instead of a reply whose every sentence the guardrails removed.
    pub fallback: Option<String>,
    /// What the agent must never say, enforced on its output.
    #[schema(value_type = crate::http::openapi::DirectivesSchema)]
    pub directives: Directives,
    /// Store visitor messages with emails, phone numbers, SSNs and card
    /// numbers replaced by placeholders (the turn's model still reads the
    /// original message; later turns read the stored one).
    pub scrub_visitor_messages: bool,
}

impl AgentProfile {
    const MAX_ITEMS: usize = 100;
    const MAX_ITEM_CHARS: usize = 1_000;

    /// The agent as prompt assembly and the guardrails see it.
    pub fn into_brief(self, name: String, system_prompt: String) -> AgentBrief {
        AgentBrief {
            name,
            system_prompt,
            brand: self.brand,
            facts: self.facts,
            competitors: self.competitors,
            escalation_topics: self.escalation_topics,
            fallback: self.fallback,
            directives: self.directives,
        }
    }

    pub fn check(&self) -> Result<(), String> {
        if let Some(brand) = &self.brand {
            parse_name("profile.brand", brand)?;
        }
        if let Some(fallback) = &self.fallback {
            if fallback.trim().is_empty() || fallback.chars().count() > Self::MAX_ITEM_CHARS {
                return Err(format!(
                    "profile.fallback must be 1 to {} characters",
                    Self::MAX_ITEM_CHARS
                ));
            }
        }
        for (field, items) in [
            ("competitors", &self.competitors),
            ("facts", &self.facts),
            ("escalation_topics", &self.escalation_topics),
        ] {
            if items.len() > Self::MAX_ITEMS {
                return Err(format!(
                    "profile.{field} may hold at most {} entries",
                    Self::MAX_ITEMS
                ));
            }
            if items
                .iter()
                .any(|item| item.trim().is_empty() || item.chars().count() > Self::MAX_ITEM_CHARS)
            {
                return Err(format!(
                    "profile.{field} entries must be 1 to {} characters",
                    Self::MAX_ITEM_CHARS
                ));
            }
        }
        Ok(())
    }
}

/// A web origin a widget may be embedded on: `scheme://host[:port]`, normalized
/// (lowercase host, default port dropped) so comparison with a browser's
/// `Origin` header is exact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct AllowedOrigin(String);

impl AllowedOrigin {
    pub fn parse(input: &str) -> Result<Self, String> {
        let reject = || format!("{input:?} is not an origin of the form scheme://host[:port]");
        let trimmed = input.trim();
        let url = url::Url::parse(trimmed).map_err(|_| reject())?;
        let shaped = matches!(url.scheme(), "http" | "https")
            && url.has_host()
            && url.username().is_empty()
            && url.password().is_none()
            && url.path() == "/"
            && url.query().is_none()
            && url.fragment().is_none()
            // Url::parse turns "https://a.com/" and "https://a.com" alike into path "/"; refuse the former.
            && !trimmed.ends_with('/');
        if !shaped {
            return Err(reject());
        }
        Ok(Self(url.origin().ascii_serialization()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalized() {
        assert_eq!(
            AllowedOrigin::parse("HTTPS://Shop.Example.com")
                .unwrap()
                .as_str(),
            "https://shop.example.com"
        );
        assert_eq!(
            AllowedOrigin::parse("https://example.com:443")
                .unwrap()
                .as_str(),
            "https://example.com"
        );
        assert_eq!(
            AllowedOrigin::parse("http://127.0.0.1:8080")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8080"
        );
    }

    #[test]
    fn anything_but_an_origin_is_refused() {
        for bad in [
            "*",
            "example.com",
            "ftp://example.com",
            "https://example.com/",
            "https://example.com/path",
            "https://example.com?q=1",
            "https://user:pw@example.com",
            "javascript:alert(1)",
            "",
        ] {
            assert!(AllowedOrigin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn phones_are_read_in_international_format_and_kept_in_e164() {
        assert_eq!(parse_phone("+1 (415) 555-2671").unwrap(), "+14155552671");
        assert_eq!(parse_phone("+44 161 496 0000").unwrap(), "+441614960000");
        for bad in ["415 555 2671", "+1 555", "+999 1234567", "call me", ""] {
            assert!(parse_phone(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_are_checked_and_lowercased() {
        assert_eq!(
            Email::parse(" Ada@Example.COM ").unwrap().as_str(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "a@b@c.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn profiles_refuse_unknown_fields_and_oversized_lists() {
        let err = serde_json::from_str::<AgentProfile>(r#"{"brnd":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"));
        let profile = AgentProfile {
            facts: vec!["x".into(); 101],
            ..Default::default()
        };
        assert!(profile.check().is_err());
    }
}
