//! Privacy: crypto-shredding of personal fields in append-only audit rows,
//! and a person's export and erasure (GDPR/CCPA).
//!
//! # Why crypto-shredding
//!
//! The audit tables refuse UPDATE and DELETE in the database itself, for
//! every role: that is what makes them evidence. A person may still ask to
//! be forgotten. Both hold when the personal part of an audit row is never
//! stored readable: it is sealed (AES-256-GCM) under a data key of its own
//! subject, kept in `subject_keys`. Erasure deletes the key; the audit row
//! stays, byte for byte, and what it held about the person can no longer be
//! read by anyone, us included.
//!
//! # The subject
//!
//! One subject per visitor conversation, its key minted at the conversation's
//! first tool run. A visitor is a person before they leave contact details,
//! and a booking may come first, so the key cannot wait for a lead. Erasing a
//! lead destroys the keys of every conversation linked to them (and deleting
//! a conversation, e.g. by retention, destroys its key with it).
//!
//! # What is sealed, what stays, what goes
//!
//! - `agent_action_runs`: the call's arguments (`input_sealed`) and an output
//!   that echoes them (a refusal's, `output_sealed`) are sealed; `input` keeps
//!   the argument names only, `output` a form without personal data. Once the
//!   key is gone the API shows `"input": null, "personal_data": "erased"`.
//! - `agent_webhook_deliveries`, `agent_usage_events`, `voice_pii_audits` hold
//!   no personal values (ids, outcomes, token counts, PII kinds): they stay as
//!   they are. The payloads webhooks carried live in `outbox_events`, not an
//!   audit table: an erasure redacts them (`erased_at`) and the dispatcher
//!   never sends a redacted event again.
//! - Everything else about the person is deleted: the lead, their
//!   conversations with messages, bookings, quotes, SMS rows, call
//!   recordings with transcripts (and their stored audio, after commit).
//! - The erasure itself is recorded in `privacy_erasures` (append-only): who
//!   asked, when, which kind of key, and counts, never the values.

pub mod erase;
pub mod export;
pub mod runs;

use std::collections::BTreeMap;

use agentry_actors::{Secret, TenantId};
use rand::RngCore;
use serde::Serialize;
use uuid::Uuid;

use crate::crypto::{CryptoError, Keyring, SecretOwner};

/// A subject's data key, opened from its sealed form for the time of one use.
pub struct SubjectKey {
    pub id: Uuid,
    cipher: Keyring,
}

/// What a data key seals: one column of one audit row.
pub fn field_owner(
    tenant: TenantId,
    table: &'static str,
    column: &'static str,
    row: Uuid,
) -> SecretOwner {
    SecretOwner::of_row(tenant, table, column, row)
}

fn key_owner(tenant: TenantId, id: Uuid) -> SecretOwner {
    SecretOwner::of_row(tenant, "subject_keys", "key_sealed", id)
}

/// A data key's id inside its one-key ring (it names no keyring key).
const DATA_KEY_ID: &str = "subject";

impl SubjectKey {
    /// A fresh key and its form sealed by the keyring, to store.
    pub fn mint(keyring: &Keyring, tenant: TenantId) -> (Self, Vec<u8>) {
        let id = Uuid::now_v7();
        let mut bytes = vec![0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let sealed = keyring.seal(&key_owner(tenant, id), &bytes);
        let key = Self::from_bytes(id, Secret::new(bytes)).expect("32 random bytes make a key");
        (key, sealed)
    }

    /// Opens a stored key.
    pub fn open(
        keyring: &Keyring,
        tenant: TenantId,
        id: Uuid,
        sealed: &[u8],
    ) -> Result<Self, CryptoError> {
        Self::from_bytes(id, keyring.open(&key_owner(tenant, id), sealed)?)
    }

    fn from_bytes(id: Uuid, bytes: Secret<Vec<u8>>) -> Result<Self, CryptoError> {
        let keys = BTreeMap::from([(DATA_KEY_ID.to_owned(), bytes)]);
        Ok(Self {
            id,
            cipher: Keyring::new(DATA_KEY_ID, &keys)?,
        })
    }

    pub fn seal_json(&self, owner: &SecretOwner, value: &serde_json::Value) -> Vec<u8> {
        self.cipher.seal(owner, value.to_string().as_bytes())
    }

    pub fn open_json(
        &self,
        owner: &SecretOwner,
        sealed: &[u8],
    ) -> Result<serde_json::Value, CryptoError> {
        let plain = self.cipher.open(owner, sealed)?;
        serde_json::from_slice(plain.expose()).map_err(|_| CryptoError::Malformed)
    }
}

/// Whether an audit row's personal fields can be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PersonalData {
    /// Sealed under a key that still exists: shown opened.
    Readable,
    /// The subject's key was destroyed: the fields are gone for good.
    Erased,
    /// Written before sealing existed: stored as it is.
    NotSealed,
}

/// The key a person is asked about by: exactly one, never OR-matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PersonKey {
    LeadId(Uuid),
    /// Lowercased, as leads store it.
    Email(String),
    /// E.164, as leads and SMS conversations store it.
    Phone(String),
}

impl PersonKey {
    /// The key from the three optional fields of a request, or why not.
    pub fn from_fields(
        lead_id: Option<&str>,
        email: Option<&str>,
        phone: Option<&str>,
    ) -> Result<Self, String> {
        match (lead_id, email, phone) {
            (Some(id), None, None) => id
                .trim()
                .parse()
                .map(Self::LeadId)
                .map_err(|_| format!("lead_id {id:?} is not a UUID")),
            (None, Some(email), None) => {
                agentry_actors::contact::parse_email(email).map(Self::Email)
            }
            (None, None, Some(phone)) => agentry_actors::contact::parse_phone(
                phone,
                Some(agentry_actors::tools::NATIONAL_PHONE_REGION),
            )
            .map(Self::Phone),
            _ => Err("give exactly one of lead_id, email or phone".into()),
        }
    }

    /// The kind of key, as the erasure record keeps it (never the value).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::LeadId(_) => "lead_id",
            Self::Email(_) => "email",
            Self::Phone(_) => "phone",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    /// Several leads share the phone: the caller must pick one by lead_id.
    #[error("{} leads share this phone number; ask again by lead_id: {}", .0.len(), join(.0))]
    AmbiguousPhone(Vec<Uuid>),
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
}

impl From<sqlx::Error> for PrivacyError {
    fn from(error: sqlx::Error) -> Self {
        Self::Db(error.into())
    }
}

fn join(ids: &[Uuid]) -> String {
    ids.iter()
        .map(Uuid::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keyring() -> Keyring {
        let keys = BTreeMap::from([("k1".to_string(), Secret::new(vec![7u8; 32]))]);
        Keyring::new("k1", &keys).unwrap()
    }

    #[test]
    fn a_field_opens_with_its_subject_key_only() {
        let ring = keyring();
        let tenant = TenantId::new();
        let (key, sealed_key) = SubjectKey::mint(&ring, tenant);
        let row = Uuid::now_v7();
        let owner = field_owner(tenant, "agent_action_runs", "input_sealed", row);
        let value = json!({ "email": "ana@example.org" });
        let sealed = key.seal_json(&owner, &value);
        assert!(!String::from_utf8_lossy(&sealed).contains("ana@example.org"));

        let reopened = SubjectKey::open(&ring, tenant, key.id, &sealed_key).unwrap();
        assert_eq!(reopened.open_json(&owner, &sealed).unwrap(), value);
        let (other, _) = SubjectKey::mint(&ring, tenant);
        assert!(other.open_json(&owner, &sealed).is_err());
        let elsewhere = field_owner(tenant, "agent_action_runs", "input_sealed", Uuid::now_v7());
        assert!(reopened.open_json(&elsewhere, &sealed).is_err());
        // A sealed key copied to another row does not open.
        assert!(SubjectKey::open(&ring, tenant, Uuid::now_v7(), &sealed_key).is_err());
    }

    #[test]
    fn a_person_is_asked_about_by_exactly_one_normalized_key() {
        assert_eq!(
            PersonKey::from_fields(None, Some(" Ana@Example.ORG "), None).unwrap(),
            PersonKey::Email("ana@example.org".into())
        );
        assert_eq!(
            PersonKey::from_fields(None, None, Some("(415) 555-2671")).unwrap(),
            PersonKey::Phone("+14155552671".into())
        );
        let id = Uuid::now_v7();
        assert_eq!(
            PersonKey::from_fields(Some(&id.to_string()), None, None).unwrap(),
            PersonKey::LeadId(id)
        );
        for (lead, email, phone) in [
            (None, None, None),
            (None, Some("a@b.co"), Some("+14155552671")),
            (Some("x"), None, None),
            (None, Some("nope"), None),
            (None, None, Some("12")),
        ] {
            assert!(PersonKey::from_fields(lead, email, phone).is_err());
        }
    }
}
