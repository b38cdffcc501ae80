//! Secrets at rest: an AES-256-GCM keyring.
//!
//! Every sealed value names the key that sealed it, so keys can rotate: new
//! values use the current key, old ones open with any key still listed. The
//! owner of a value (tenant, table, column) is bound in as associated data, so
//! a ciphertext copied into another tenant's row, or another column, fails to
//! open rather than decrypting in the wrong place.
//!
//! Layout of a sealed value: `b"ag1"`, key-id length (1 byte), key id, 12-byte
//! random nonce, ciphertext with its 16-byte tag.

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use agentry_actors::{Secret, TenantId};
use rand::RngCore;

const MAGIC: &[u8; 3] = b"ag1";
const NONCE_LEN: usize = 12;

/// Where a sealed value lives; bound into the ciphertext as associated data.
#[derive(Clone, Copy, Debug)]
pub struct SecretOwner {
    pub tenant: TenantId,
    pub table: &'static str,
    pub column: &'static str,
    /// The row, for tables with many rows per tenant: a value sealed for one
    /// row does not open in another.
    pub row: Option<uuid::Uuid>,
}

impl SecretOwner {
    pub fn new(tenant: TenantId, table: &'static str, column: &'static str) -> Self {
        Self {
            tenant,
            table,
            column,
            row: None,
        }
    }

    /// The owner of the value in one row of `table`.
    pub fn of_row(
        tenant: TenantId,
        table: &'static str,
        column: &'static str,
        row: uuid::Uuid,
    ) -> Self {
        Self {
            row: Some(row),
            ..Self::new(tenant, table, column)
        }
    }

    fn associated_data(&self) -> Vec<u8> {
        let mut data = format!("agentry/v1/{}/{}.{}", self.tenant, self.table, self.column);
        if let Some(row) = self.row {
            data.push_str(&format!("/{row}"));
        }
        data.into_bytes()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("no encryption key {0:?} in the keyring")]
    UnknownKey(String),
    #[error("sealed value is malformed")]
    Malformed,
    /// Tampered, or opened for the wrong owner: GCM cannot tell which, and neither do we.
    #[error("sealed value failed authentication")]
    Authentication,
    #[error("keyring: {0}")]
    Keyring(String),
}

pub struct Keyring {
    current_id: String,
    keys: BTreeMap<String, Aes256Gcm>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current_id", &self.current_id)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    pub fn new(
        current_id: &str,
        keys: &BTreeMap<String, Secret<Vec<u8>>>,
    ) -> Result<Self, CryptoError> {
        let mut ciphers = BTreeMap::new();
        for (id, key) in keys {
            if id.is_empty() || id.len() > u8::MAX as usize {
                return Err(CryptoError::Keyring(format!("bad key id {id:?}")));
            }
            if key.expose().len() != 32 {
                return Err(CryptoError::Keyring(format!("key {id:?} is not 32 bytes")));
            }
            let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.expose()));
            ciphers.insert(id.clone(), cipher);
        }
        if !ciphers.contains_key(current_id) {
            return Err(CryptoError::UnknownKey(current_id.to_owned()));
        }
        Ok(Self {
            current_id: current_id.to_owned(),
            keys: ciphers,
        })
    }

    pub fn current_key_id(&self) -> &str {
        &self.current_id
    }

    /// Encrypts `plaintext` for `owner` with the current key.
    pub fn seal(&self, owner: &SecretOwner, plaintext: &[u8]) -> Vec<u8> {
        let cipher = &self.keys[&self.current_id];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = owner.associated_data();
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut sealed = Vec::with_capacity(
            MAGIC.len() + 1 + self.current_id.len() + NONCE_LEN + ciphertext.len(),
        );
        sealed.extend_from_slice(MAGIC);
        sealed.push(self.current_id.len() as u8);
        sealed.extend_from_slice(self.current_id.as_bytes());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// Decrypts a value sealed for `owner` with any key in the ring.
    pub fn open(&self, owner: &SecretOwner, sealed: &[u8]) -> Result<Secret<Vec<u8>>, CryptoError> {
        let (key_id, nonce, ciphertext) = split_sealed(sealed)?;
        let cipher = self
            .keys
            .get(key_id)
            .ok_or_else(|| CryptoError::UnknownKey(key_id.to_owned()))?;
        let aad = owner.associated_data();
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map(Secret::new)
            .map_err(|_| CryptoError::Authentication)
    }

    /// Convenience for text secrets (API keys, tokens).
    pub fn open_string(
        &self,
        owner: &SecretOwner,
        sealed: &[u8],
    ) -> Result<Secret<String>, CryptoError> {
        let bytes = self.open(owner, sealed)?;
        String::from_utf8(bytes.expose().clone())
            .map(Secret::new)
            .map_err(|_| CryptoError::Malformed)
    }

    /// The key id a sealed value names, to find values still sealed with an old key.
    pub fn key_id_of(sealed: &[u8]) -> Result<&str, CryptoError> {
        split_sealed(sealed).map(|(key_id, _, _)| key_id)
    }
}

fn split_sealed(sealed: &[u8]) -> Result<(&str, &[u8], &[u8]), CryptoError> {
    let rest = sealed
        .strip_prefix(MAGIC.as_slice())
        .ok_or(CryptoError::Malformed)?;
    let (&id_len, rest) = rest.split_first().ok_or(CryptoError::Malformed)?;
    let id_len = id_len as usize;
    if rest.len() < id_len + NONCE_LEN + 16 {
        return Err(CryptoError::Malformed);
    }
    let (key_id, rest) = rest.split_at(id_len);
    let key_id = std::str::from_utf8(key_id).map_err(|_| CryptoError::Malformed)?;
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    Ok((key_id, nonce, ciphertext))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(current: &str, ids: &[(&str, u8)]) -> Keyring {
        let keys = ids
            .iter()
            .map(|(id, fill)| (id.to_string(), Secret::new(vec![*fill; 32])))
            .collect();
        Keyring::new(current, &keys).unwrap()
    }

    fn owner(tenant: TenantId) -> SecretOwner {
        SecretOwner::new(tenant, "tenant_llm_configs", "api_key")
    }

    #[test]
    fn a_sealed_value_opens_for_its_owner() {
        let keyring = ring("k1", &[("k1", 1)]);
        let tenant = TenantId::new();
        let sealed = keyring.seal(&owner(tenant), b"sk-live-abc");
        assert!(!sealed.windows(11).any(|w| w == b"sk-live-abc"));
        assert_eq!(
            keyring.open(&owner(tenant), &sealed).unwrap().expose(),
            b"sk-live-abc"
        );
        assert_eq!(Keyring::key_id_of(&sealed).unwrap(), "k1");
    }

    #[test]
    fn sealing_twice_gives_different_ciphertexts() {
        let keyring = ring("k1", &[("k1", 1)]);
        let who = owner(TenantId::new());
        assert_ne!(keyring.seal(&who, b"same"), keyring.seal(&who, b"same"));
    }

    #[test]
    fn a_tampered_ciphertext_fails_to_open() {
        let keyring = ring("k1", &[("k1", 1)]);
        let who = owner(TenantId::new());
        let sealed = keyring.seal(&who, b"secret");
        for index in [sealed.len() - 1, sealed.len() - 20, 3 + 1 + 2 + 1] {
            let mut tampered = sealed.clone();
            tampered[index] ^= 0x01;
            assert_eq!(
                keyring.open(&who, &tampered).unwrap_err(),
                CryptoError::Authentication
            );
        }
        assert_eq!(
            keyring.open(&who, &sealed[..10]).unwrap_err(),
            CryptoError::Malformed
        );
        assert_eq!(
            keyring.open(&who, b"plain text").unwrap_err(),
            CryptoError::Malformed
        );
    }

    #[test]
    fn a_ciphertext_copied_to_another_tenant_or_column_fails_to_open() {
        let keyring = ring("k1", &[("k1", 1)]);
        let first = TenantId::new();
        let sealed = keyring.seal(&owner(first), b"secret");
        let second_tenant = owner(TenantId::new());
        assert_eq!(
            keyring.open(&second_tenant, &sealed).unwrap_err(),
            CryptoError::Authentication
        );
        let other_column = SecretOwner::new(first, "tenant_llm_configs", "base_url");
        assert_eq!(
            keyring.open(&other_column, &sealed).unwrap_err(),
            CryptoError::Authentication
        );
    }

    #[test]
    fn an_unknown_or_wrong_key_id_fails_to_open() {
        let old = ring("k1", &[("k1", 1)]);
        let who = owner(TenantId::new());
        let sealed = old.seal(&who, b"secret");
        let without_k1 = ring("k2", &[("k2", 2)]);
        assert_eq!(
            without_k1.open(&who, &sealed).unwrap_err(),
            CryptoError::UnknownKey("k1".into())
        );

        // Relabel the value as sealed by another listed key: authentication fails.
        let both = ring("k1", &[("k1", 1), ("k2", 2)]);
        let mut relabelled = sealed.clone();
        relabelled[5] = b'2';
        assert_eq!(Keyring::key_id_of(&relabelled).unwrap(), "k2");
        assert_eq!(
            both.open(&who, &relabelled).unwrap_err(),
            CryptoError::Authentication
        );
    }

    #[test]
    fn rotation_opens_old_values_and_seals_new_ones_with_the_current_key() {
        let who = owner(TenantId::new());
        let sealed_by_k1 = ring("k1", &[("k1", 1)]).seal(&who, b"secret");
        let rotated = ring("k2", &[("k1", 1), ("k2", 2)]);
        assert_eq!(
            rotated.open(&who, &sealed_by_k1).unwrap().expose(),
            b"secret"
        );
        let resealed = rotated.seal(&who, b"secret");
        assert_eq!(Keyring::key_id_of(&resealed).unwrap(), "k2");
    }

    #[test]
    fn a_keyring_without_its_current_key_is_refused() {
        let keys = BTreeMap::from([("k1".to_string(), Secret::new(vec![1u8; 32]))]);
        assert!(Keyring::new("k9", &keys).is_err());
        let short = BTreeMap::from([("k1".to_string(), Secret::new(vec![1u8; 16]))]);
        assert!(Keyring::new("k1", &short).is_err());
    }
}
