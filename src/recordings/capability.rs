//! Capabilities that need no bearer token: a signed link to one recording's
//! audio, a tenant's share link to one of its files, and the token a Twilio
//! media stream connects with. All are
//! HMAC-SHA256 under keys derived from the token signing key, one key per
//! purpose, so neither can stand in for the other or for a bearer token; both
//! verify without a database round trip.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use chrono::{DateTime, TimeZone, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use agentry_actors::{Secret, TenantId};

type HmacSha256 = Hmac<Sha256>;

const STREAM_TOKEN_PREFIX: &str = "ams_";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CapabilityError {
    /// Altered, forged, or made for another recording or tenant.
    #[error("the signature is not valid")]
    Invalid,
    #[error("it has expired")]
    Expired,
}

/// What a media-stream token allows: recording one call of one tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamGrant {
    pub tenant: TenantId,
    pub call_sid: String,
    pub expires_at: DateTime<Utc>,
}

pub struct Capabilities {
    link_key: Secret<Vec<u8>>,
    stream_key: Secret<Vec<u8>>,
    file_share_key: Secret<Vec<u8>>,
}

impl Capabilities {
    pub fn new(token_key: &Secret<Vec<u8>>) -> Self {
        Self {
            link_key: derive(token_key, "recording-link"),
            stream_key: derive(token_key, "media-stream"),
            file_share_key: derive(token_key, "file-share"),
        }
    }

    /// The `signature` of share link `share` to `file`, valid until
    /// `expires` (Unix seconds; 0: permanent). Whether it still holds
    /// (expired, revoked) is the database's to say.
    pub fn sign_file_share(
        &self,
        tenant: TenantId,
        file: Uuid,
        share: Uuid,
        expires: i64,
    ) -> String {
        B64URL.encode(
            self.file_share_mac(tenant, file, share, expires)
                .finalize()
                .into_bytes(),
        )
    }

    pub fn verify_file_share(
        &self,
        tenant: TenantId,
        file: Uuid,
        share: Uuid,
        expires: i64,
        signature: &str,
    ) -> Result<(), CapabilityError> {
        let signature = B64URL
            .decode(signature)
            .map_err(|_| CapabilityError::Invalid)?;
        self.file_share_mac(tenant, file, share, expires)
            .verify_slice(&signature)
            .map_err(|_| CapabilityError::Invalid)
    }

    fn file_share_mac(
        &self,
        tenant: TenantId,
        file: Uuid,
        share: Uuid,
        expires: i64,
    ) -> HmacSha256 {
        let mut mac = link_mac(&self.file_share_key, tenant, file, expires);
        mac.update(share.as_bytes());
        mac
    }

    /// The `signature` of a link to `recording`'s audio valid until `expires`
    /// (Unix seconds).
    pub fn sign_link(&self, tenant: TenantId, recording: Uuid, expires: i64) -> String {
        B64URL.encode(
            link_mac(&self.link_key, tenant, recording, expires)
                .finalize()
                .into_bytes(),
        )
    }

    pub fn verify_link(
        &self,
        tenant: TenantId,
        recording: Uuid,
        expires: i64,
        signature: &str,
        now: DateTime<Utc>,
    ) -> Result<(), CapabilityError> {
        let signature = B64URL
            .decode(signature)
            .map_err(|_| CapabilityError::Invalid)?;
        // verify_slice compares in constant time.
        link_mac(&self.link_key, tenant, recording, expires)
            .verify_slice(&signature)
            .map_err(|_| CapabilityError::Invalid)?;
        // Checked after the signature: an altered expiry is "invalid", not "expired".
        if expires <= now.timestamp() {
            return Err(CapabilityError::Expired);
        }
        Ok(())
    }

    /// A token for the media stream of `call_sid`, valid until `expires_at`.
    pub fn issue_stream_token(
        &self,
        tenant: TenantId,
        call_sid: &str,
        expires_at: DateTime<Utc>,
    ) -> String {
        let mut payload = Vec::with_capacity(24 + call_sid.len());
        payload.extend_from_slice(tenant.as_uuid().as_bytes());
        payload.extend_from_slice(&expires_at.timestamp().to_be_bytes());
        payload.extend_from_slice(call_sid.as_bytes());
        let mac = self.stream_mac(&payload).finalize().into_bytes();
        format!(
            "{STREAM_TOKEN_PREFIX}{}.{}",
            B64URL.encode(&payload),
            B64URL.encode(mac)
        )
    }

    pub fn verify_stream_token(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<StreamGrant, CapabilityError> {
        let (payload, mac) = token
            .strip_prefix(STREAM_TOKEN_PREFIX)
            .and_then(|rest| rest.split_once('.'))
            .ok_or(CapabilityError::Invalid)?;
        let payload = B64URL
            .decode(payload)
            .map_err(|_| CapabilityError::Invalid)?;
        let mac = B64URL.decode(mac).map_err(|_| CapabilityError::Invalid)?;
        self.stream_mac(&payload)
            .verify_slice(&mac)
            .map_err(|_| CapabilityError::Invalid)?;
        if payload.len() <= 24 {
            return Err(CapabilityError::Invalid);
        }
        let tenant = Uuid::from_slice(&payload[..16]).map_err(|_| CapabilityError::Invalid)?;
        let mut seconds = [0u8; 8];
        seconds.copy_from_slice(&payload[16..24]);
        let seconds = i64::from_be_bytes(seconds);
        let call_sid =
            String::from_utf8(payload[24..].to_vec()).map_err(|_| CapabilityError::Invalid)?;
        let expires_at = Utc
            .timestamp_opt(seconds, 0)
            .single()
            .ok_or(CapabilityError::Invalid)?;
        if expires_at <= now {
            return Err(CapabilityError::Expired);
        }
        Ok(StreamGrant {
            tenant: TenantId::from_uuid(tenant),
            call_sid,
            expires_at,
        })
    }

    fn stream_mac(&self, payload: &[u8]) -> HmacSha256 {
        let mut mac = keyed(&self.stream_key);
        mac.update(payload);
        mac
    }
}

fn keyed(key: &Secret<Vec<u8>>) -> HmacSha256 {
    HmacSha256::new_from_slice(key.expose()).expect("HMAC takes keys of any length")
}

/// A key for one purpose: HMAC(token key, label). Knowing a derived key
/// tells nothing of the token key or of the other purposes' keys.
fn derive(token_key: &Secret<Vec<u8>>, purpose: &str) -> Secret<Vec<u8>> {
    let mut mac = keyed(token_key);
    mac.update(b"agentry/v1/capability/");
    mac.update(purpose.as_bytes());
    Secret::new(mac.finalize().into_bytes().to_vec())
}

fn link_mac(key: &Secret<Vec<u8>>, tenant: TenantId, recording: Uuid, expires: i64) -> HmacSha256 {
    let mut mac = keyed(key);
    mac.update(tenant.as_uuid().as_bytes());
    mac.update(recording.as_bytes());
    mac.update(&expires.to_be_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn capabilities(fill: u8) -> Capabilities {
        Capabilities::new(&Secret::new(vec![fill; 32]))
    }

    #[test]
    fn a_recording_link_verifies_until_it_expires() {
        let keys = capabilities(1);
        let (tenant, recording) = (TenantId::new(), Uuid::now_v7());
        let now = Utc::now();
        let expires = now.timestamp() + 300;
        let signature = keys.sign_link(tenant, recording, expires);
        assert_eq!(
            keys.verify_link(tenant, recording, expires, &signature, now),
            Ok(())
        );
        assert_eq!(
            keys.verify_link(
                tenant,
                recording,
                expires,
                &signature,
                now + Duration::seconds(301)
            ),
            Err(CapabilityError::Expired)
        );
    }

    #[test]
    fn a_recording_link_cannot_be_moved_extended_or_forged() {
        let keys = capabilities(1);
        let (tenant, recording) = (TenantId::new(), Uuid::now_v7());
        let now = Utc::now();
        let expires = now.timestamp() + 300;
        let signature = keys.sign_link(tenant, recording, expires);
        let refused = |tenant, recording, expires, signature: &str| {
            keys.verify_link(tenant, recording, expires, signature, now)
        };
        assert_eq!(
            refused(tenant, Uuid::now_v7(), expires, &signature),
            Err(CapabilityError::Invalid),
            "another recording"
        );
        assert_eq!(
            refused(TenantId::new(), recording, expires, &signature),
            Err(CapabilityError::Invalid),
            "another tenant"
        );
        assert_eq!(
            refused(tenant, recording, expires + 3600, &signature),
            Err(CapabilityError::Invalid),
            "a later expiry"
        );
        for forged in ["", "!!", "AAAA", &signature[1..]] {
            assert_eq!(
                refused(tenant, recording, expires, forged),
                Err(CapabilityError::Invalid)
            );
        }
        assert_eq!(
            capabilities(2).verify_link(tenant, recording, expires, &signature, now),
            Err(CapabilityError::Invalid),
            "another key"
        );
    }

    #[test]
    fn a_file_share_signature_covers_share_file_tenant_and_expiry_under_its_own_key() {
        let keys = capabilities(1);
        let (tenant, file, share) = (TenantId::new(), Uuid::now_v7(), Uuid::now_v7());
        let signature = keys.sign_file_share(tenant, file, share, 0);
        assert_eq!(
            keys.verify_file_share(tenant, file, share, 0, &signature),
            Ok(())
        );
        for (tenant, file, share, expires) in [
            (TenantId::new(), file, share, 0),
            (tenant, Uuid::now_v7(), share, 0),
            (tenant, file, Uuid::now_v7(), 0),
            (tenant, file, share, 1),
        ] {
            assert_eq!(
                keys.verify_file_share(tenant, file, share, expires, &signature),
                Err(CapabilityError::Invalid)
            );
        }
        // A recording link's signature over the same ids is no share signature.
        let link = keys.sign_link(tenant, file, 0);
        assert_eq!(
            keys.verify_file_share(tenant, file, share, 0, &link),
            Err(CapabilityError::Invalid)
        );
        assert_eq!(
            capabilities(2).verify_file_share(tenant, file, share, 0, &signature),
            Err(CapabilityError::Invalid)
        );
    }

    #[test]
    fn a_media_stream_token_names_its_tenant_and_call_until_it_expires() {
        let keys = capabilities(1);
        let tenant = TenantId::new();
        let now = Utc::now();
        let call = "CA0123456789abcdef0123456789abcdef";
        let token = keys.issue_stream_token(tenant, call, now + Duration::seconds(60));
        let grant = keys.verify_stream_token(&token, now).unwrap();
        assert_eq!(grant.tenant, tenant);
        assert_eq!(grant.call_sid, call);
        assert_eq!(
            keys.verify_stream_token(&token, now + Duration::seconds(61)),
            Err(CapabilityError::Expired)
        );
        // Only characters a URL path keeps as they are.
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)));
    }

    #[test]
    fn a_media_stream_token_cannot_be_altered_or_made_from_a_recording_link() {
        let keys = capabilities(1);
        let now = Utc::now();
        let token = keys.issue_stream_token(
            TenantId::new(),
            "CA0123456789abcdef0123456789abcdef",
            now + Duration::seconds(60),
        );
        let (head, mac) = token.split_once('.').unwrap();
        let mut payload = B64URL.decode(&head[4..]).unwrap();
        payload[30] ^= 1;
        let altered = format!("ams_{}.{mac}", B64URL.encode(&payload));
        for bad in [
            altered.as_str(),
            "",
            "ams_",
            "ams_.",
            "agd_x.y",
            &token[1..],
        ] {
            assert_eq!(
                keys.verify_stream_token(bad, now),
                Err(CapabilityError::Invalid),
                "{bad}"
            );
        }
        assert_eq!(
            capabilities(2).verify_stream_token(&token, now),
            Err(CapabilityError::Invalid)
        );
        // The link key signs nothing a stream accepts: the same bytes under
        // the other purpose's key do not verify.
        let link_signed = format!(
            "ams_{head_payload}.{}",
            B64URL.encode(
                keyed(&keys.link_key)
                    .chain_update(B64URL.decode(&head[4..]).unwrap())
                    .finalize()
                    .into_bytes()
            ),
            head_payload = &head[4..]
        );
        assert_eq!(
            keys.verify_stream_token(&link_signed, now),
            Err(CapabilityError::Invalid)
        );
    }
}
