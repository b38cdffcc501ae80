//! Opaque bearer tokens: a random session id and an expiry, signed with HMAC-SHA256.
//!
//! The signature lets every instance reject forged or expired tokens without a
//! database round trip; revocation lives with the session row (or, for widget
//! sessions, in Redis), so a token is only as good as its session. Each purpose
//! has its own prefix and is part of the signed message, so a dashboard token is
//! never accepted as an operator token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use chrono::{DateTime, TimeZone, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use agentry_actors::Secret;

type HmacSha256 = Hmac<Sha256>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenPurpose {
    /// A tenant user's dashboard session.
    Dashboard,
    /// A site operator's session.
    Operator,
    /// A visitor's widget session.
    Widget,
}

impl TokenPurpose {
    fn prefix(self) -> &'static str {
        match self {
            Self::Dashboard => "agd",
            Self::Operator => "ago",
            Self::Widget => "agw",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifiedToken {
    pub session_id: Uuid,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
}

pub struct TokenSigner {
    key: Secret<Vec<u8>>,
}

impl TokenSigner {
    pub fn new(key: Secret<Vec<u8>>) -> Self {
        Self { key }
    }

    pub fn issue(
        &self,
        purpose: TokenPurpose,
        session_id: Uuid,
        expires_at: DateTime<Utc>,
    ) -> String {
        let mut payload = [0u8; 24];
        payload[..16].copy_from_slice(session_id.as_bytes());
        payload[16..].copy_from_slice(&expires_at.timestamp().to_be_bytes());
        let signature = self.mac(purpose, &payload).finalize().into_bytes();
        format!(
            "{}_{}.{}",
            purpose.prefix(),
            B64URL.encode(payload),
            B64URL.encode(signature)
        )
    }

    pub fn verify(
        &self,
        purpose: TokenPurpose,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<VerifiedToken, TokenError> {
        let body = token
            .strip_prefix(purpose.prefix())
            .and_then(|rest| rest.strip_prefix('_'))
            .ok_or(TokenError::Malformed)?;
        let (payload, signature) = body.split_once('.').ok_or(TokenError::Malformed)?;
        let payload = B64URL.decode(payload).map_err(|_| TokenError::Malformed)?;
        let signature = B64URL
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        if payload.len() != 24 {
            return Err(TokenError::Malformed);
        }
        // verify_slice compares in constant time.
        self.mac(purpose, &payload)
            .verify_slice(&signature)
            .map_err(|_| TokenError::BadSignature)?;
        let session_id = Uuid::from_slice(&payload[..16]).map_err(|_| TokenError::Malformed)?;
        let mut seconds = [0u8; 8];
        seconds.copy_from_slice(&payload[16..]);
        let expires_at = Utc
            .timestamp_opt(i64::from_be_bytes(seconds), 0)
            .single()
            .ok_or(TokenError::Malformed)?;
        if expires_at <= now {
            return Err(TokenError::Expired);
        }
        Ok(VerifiedToken {
            session_id,
            expires_at,
        })
    }

    fn mac(&self, purpose: TokenPurpose, payload: &[u8]) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(self.key.expose()).expect("HMAC takes keys of any length");
        mac.update(purpose.prefix().as_bytes());
        mac.update(b".");
        mac.update(payload);
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn signer(fill: u8) -> TokenSigner {
        TokenSigner::new(Secret::new(vec![fill; 32]))
    }

    #[test]
    fn an_issued_token_verifies_until_it_expires() {
        let signer = signer(7);
        let session = Uuid::new_v4();
        let now = Utc::now();
        let token = signer.issue(TokenPurpose::Dashboard, session, now + Duration::minutes(5));
        let verified = signer.verify(TokenPurpose::Dashboard, &token, now).unwrap();
        assert_eq!(verified.session_id, session);
        assert_eq!(
            signer.verify(TokenPurpose::Dashboard, &token, now + Duration::minutes(6)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn a_token_is_only_good_for_its_purpose_and_key() {
        let now = Utc::now();
        let token = signer(7).issue(
            TokenPurpose::Dashboard,
            Uuid::new_v4(),
            now + Duration::minutes(5),
        );
        assert_eq!(
            signer(7).verify(TokenPurpose::Operator, &token, now),
            Err(TokenError::Malformed)
        );
        let relabelled = token.replacen("agd_", "ago_", 1);
        assert_eq!(
            signer(7).verify(TokenPurpose::Operator, &relabelled, now),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            signer(8).verify(TokenPurpose::Dashboard, &token, now),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn a_token_with_a_forged_expiry_is_rejected() {
        let signer = signer(7);
        let now = Utc::now();
        let token = signer.issue(
            TokenPurpose::Widget,
            Uuid::new_v4(),
            now + Duration::minutes(5),
        );
        let (head, signature) = token.split_once('.').unwrap();
        let mut payload = B64URL.decode(&head[4..]).unwrap();
        payload[23] ^= 0x10;
        let forged = format!("agw_{}.{signature}", B64URL.encode(payload));
        assert_eq!(
            signer.verify(TokenPurpose::Widget, &forged, now),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let signer = signer(7);
        for garbage in ["", "agd_", "agd_abc", "agd_!!!.???", "Bearer xyz"] {
            assert_eq!(
                signer.verify(TokenPurpose::Dashboard, garbage, Utc::now()),
                Err(TokenError::Malformed),
                "{garbage}"
            );
        }
    }
}
