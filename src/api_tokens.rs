//! API tokens for automation: `agt_` + 256 random bits (base64url), scoped and
//! revocable. Unlike dashboard tokens they are not signed: they live for months,
//! so every use is checked against PostgreSQL (revocation, expiry), where only
//! their SHA-256 is kept. A 256-bit random secret needs no salt or slow hash:
//! it cannot be guessed, only stolen, and the hash is useless to a thief.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use rand::RngCore;
use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};

pub const PREFIX: &str = "agt_";
/// 32 bytes in unpadded base64url.
const ENCODED_LEN: usize = 43;

/// What an API token may do; the dashboard's roles map onto the same checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    LeadsRead,
    LeadsWrite,
    ConversationsRead,
    KnowledgeWrite,
    WebhooksRead,
    WebhooksWrite,
}

impl Scope {
    pub const ALL: [Scope; 6] = [
        Self::LeadsRead,
        Self::LeadsWrite,
        Self::ConversationsRead,
        Self::KnowledgeWrite,
        Self::WebhooksRead,
        Self::WebhooksWrite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::LeadsRead => "leads:read",
            Self::LeadsWrite => "leads:write",
            Self::ConversationsRead => "conversations:read",
            Self::KnowledgeWrite => "knowledge:write",
            Self::WebhooksRead => "webhooks:read",
            Self::WebhooksWrite => "webhooks:write",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == value)
    }

    /// Whether a dashboard user needs a managing role (owner, admin) for it;
    /// leads are every user's daily work, knowledge and webhooks configuration.
    pub fn needs_manager(self) -> bool {
        matches!(self, Self::KnowledgeWrite | Self::WebhooksWrite)
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Parses a list of scope names: sorted, without duplicates; names an unknown one.
pub fn parse_scopes(names: &[String]) -> Result<Vec<Scope>, String> {
    if names.is_empty() {
        return Err("scopes must name at least one scope".into());
    }
    let mut scopes = Vec::with_capacity(names.len());
    for name in names {
        let scope = Scope::parse(name).ok_or_else(|| {
            let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
            format!(
                "unknown scope {:?}; scopes are {}",
                crate::domain::first_chars(name, 40),
                known.join(", ")
            )
        })?;
        scopes.push(scope);
    }
    scopes.sort();
    scopes.dedup();
    Ok(scopes)
}

/// A freshly generated token: the secret (shown once) and what is stored of it.
pub struct NewToken {
    pub token: String,
    pub hash: [u8; 32],
    pub last_four: String,
}

pub fn generate() -> NewToken {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = format!("{PREFIX}{}", B64URL.encode(bytes));
    NewToken {
        hash: hash(&token),
        last_four: token[token.len() - 4..].to_owned(),
        token,
    }
}

pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The hash to look a presented token up by, or `None` when it cannot be one
/// of ours (no database trip for garbage).
pub fn lookup_hash(token: &str) -> Option<[u8; 32]> {
    let body = token.strip_prefix(PREFIX)?;
    if body.len() != ENCODED_LEN || B64URL.decode(body).map(|b| b.len()) != Ok(32) {
        return None;
    }
    Some(hash(token))
}

/// How lists show a token: enough to recognise it, useless to use it.
pub fn masked(last_four: &str) -> String {
    format!("{PREFIX}…{last_four}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_distinct_and_look_themselves_up() {
        let a = generate();
        let b = generate();
        assert_ne!(a.token, b.token);
        assert!(a.token.starts_with("agt_"));
        assert_eq!(a.token.len(), 4 + 43);
        assert_eq!(lookup_hash(&a.token), Some(a.hash));
        assert!(a.token.ends_with(&a.last_four));
        assert_eq!(masked(&a.last_four).chars().count(), 4 + 1 + 4);
    }

    #[test]
    fn garbage_is_not_looked_up() {
        for garbage in [
            "",
            "agt_",
            "agt_short",
            "agd_x.y",
            &format!("agt_{}", "!".repeat(43)),
        ] {
            assert_eq!(lookup_hash(garbage), None, "{garbage}");
        }
    }

    #[test]
    fn scopes_parse_exactly() {
        let names = vec![
            "leads:write".to_owned(),
            "leads:read".to_owned(),
            "leads:read".to_owned(),
        ];
        assert_eq!(
            parse_scopes(&names).unwrap(),
            vec![Scope::LeadsRead, Scope::LeadsWrite]
        );
        assert!(parse_scopes(&["leads:*".to_owned()])
            .unwrap_err()
            .contains("unknown scope"));
        assert!(parse_scopes(&[]).is_err());
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
        }
    }
}
