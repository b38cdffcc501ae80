//! A file's bytes at rest: AES-256-GCM in fixed 64 KiB plaintext segments
//! under the file's own random data key (the STREAM construction).
//!
//! Segment `i`'s nonce is the file's 7-byte random prefix, `i` as a 4-byte
//! big-endian counter, and a last-segment flag byte; its associated data
//! binds the tenant, the file row and `i`. So a segment moved to another
//! position, another file or tenant does not open, and an object cut short
//! fails where its last segment should have been flagged. A byte range is
//! served by opening only the segments that cover it.

use std::ops::Range;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use agentry_actors::{Secret, TenantId};
use rand::RngCore;
use uuid::Uuid;

pub const SEGMENT_BYTES: usize = 64 * 1024;
const TAG_BYTES: usize = 16;
pub const SEALED_SEGMENT_BYTES: usize = SEGMENT_BYTES + TAG_BYTES;
pub const NONCE_PREFIX_BYTES: usize = 7;
pub const DATA_KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SegmentError {
    #[error("a file segment does not open (altered, moved, truncated or under another key)")]
    Authentication,
    #[error("a file's data key or nonce prefix has the wrong length")]
    BadKey,
}

/// How many segments a file of `size` plaintext bytes has (an empty file has one, empty).
pub fn segment_count(size: u64) -> u64 {
    size.div_ceil(SEGMENT_BYTES as u64).max(1)
}

/// The object's length for `size` plaintext bytes.
pub fn sealed_len(size: u64) -> u64 {
    size + segment_count(size) * TAG_BYTES as u64
}

/// One file's segment cipher.
pub struct FileCipher {
    cipher: Aes256Gcm,
    prefix: [u8; NONCE_PREFIX_BYTES],
    tenant: TenantId,
    file: Uuid,
}

impl FileCipher {
    /// A fresh random data key and nonce prefix for a new file.
    pub fn generate(tenant: TenantId, file: Uuid) -> (Self, Secret<Vec<u8>>) {
        let mut key = vec![0u8; DATA_KEY_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut key);
        let mut prefix = [0u8; NONCE_PREFIX_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut prefix);
        let key = Secret::new(key);
        let cipher = Self::new(key.expose(), &prefix, tenant, file)
            .expect("freshly generated key and prefix have the right lengths");
        (cipher, key)
    }

    pub fn new(
        key: &[u8],
        prefix: &[u8],
        tenant: TenantId,
        file: Uuid,
    ) -> Result<Self, SegmentError> {
        if key.len() != DATA_KEY_BYTES {
            return Err(SegmentError::BadKey);
        }
        let prefix: [u8; NONCE_PREFIX_BYTES] =
            prefix.try_into().map_err(|_| SegmentError::BadKey)?;
        Ok(Self {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key)),
            prefix,
            tenant,
            file,
        })
    }

    pub fn nonce_prefix(&self) -> &[u8] {
        &self.prefix
    }

    fn nonce(&self, index: u32, last: bool) -> [u8; 12] {
        let mut nonce = [0u8; 12];
        nonce[..NONCE_PREFIX_BYTES].copy_from_slice(&self.prefix);
        nonce[NONCE_PREFIX_BYTES..11].copy_from_slice(&index.to_be_bytes());
        nonce[11] = u8::from(last);
        nonce
    }

    fn associated_data(&self, index: u32) -> [u8; 56] {
        let mut aad = [0u8; 56];
        aad[..20].copy_from_slice(b"agentry/v1/file-seg/");
        aad[20..36].copy_from_slice(self.tenant.as_uuid().as_bytes());
        aad[36..52].copy_from_slice(self.file.as_bytes());
        aad[52..].copy_from_slice(&index.to_be_bytes());
        aad
    }

    pub fn seal_segment(&self, index: u32, last: bool, plaintext: &[u8]) -> Vec<u8> {
        let aad = self.associated_data(index);
        self.cipher
            .encrypt(
                Nonce::from_slice(&self.nonce(index, last)),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail")
    }

    pub fn open_segment(
        &self,
        index: u32,
        last: bool,
        sealed: &[u8],
    ) -> Result<Vec<u8>, SegmentError> {
        let aad = self.associated_data(index);
        self.cipher
            .decrypt(
                Nonce::from_slice(&self.nonce(index, last)),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| SegmentError::Authentication)
    }
}

/// Seals a stream of plaintext into segments as it arrives. A full segment
/// is held back until more bytes follow, since only the end of the stream
/// tells which segment is the last.
pub struct SegmentSealer {
    cipher: FileCipher,
    next: u32,
    pending: Vec<u8>,
}

impl SegmentSealer {
    pub fn new(cipher: FileCipher) -> Self {
        Self {
            cipher,
            next: 0,
            pending: Vec::with_capacity(SEGMENT_BYTES * 2),
        }
    }

    /// Takes `bytes`; calls `sealed` with each segment that is now complete.
    pub fn push(&mut self, mut bytes: &[u8], mut sealed: impl FnMut(Vec<u8>)) {
        while !bytes.is_empty() {
            let room = SEGMENT_BYTES * 2 - self.pending.len();
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.pending.extend_from_slice(now);
            bytes = rest;
            while self.pending.len() > SEGMENT_BYTES {
                let segment =
                    self.cipher
                        .seal_segment(self.next, false, &self.pending[..SEGMENT_BYTES]);
                self.pending.drain(..SEGMENT_BYTES);
                self.next += 1;
                sealed(segment);
            }
        }
    }

    /// The last segment (at most [`SEGMENT_BYTES`], possibly empty).
    pub fn finish(self) -> Vec<u8> {
        self.cipher.seal_segment(self.next, true, &self.pending)
    }
}

/// Which sealed bytes hold plaintext `range` of a file of `size` bytes, and
/// how to cut the opened segments back to the range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentSpan {
    pub first: u32,
    /// The last segment of the file (flagged), not of the span.
    pub last_of_file: u32,
    /// Byte range of the sealed object to fetch.
    pub sealed: Range<u64>,
    /// Plaintext bytes to drop from the first opened segment.
    pub skip: usize,
    /// Plaintext bytes to send in all.
    pub take: u64,
}

/// `range` must be within `0..size` and non-empty, except the whole of an empty file.
pub fn span(size: u64, range: Range<u64>) -> SegmentSpan {
    let segment = SEGMENT_BYTES as u64;
    let sealed_segment = SEALED_SEGMENT_BYTES as u64;
    let first = range.start / segment;
    let last = range.end.saturating_sub(1) / segment;
    SegmentSpan {
        first: first as u32,
        last_of_file: (segment_count(size) - 1) as u32,
        sealed: first * sealed_segment..((last + 1) * sealed_segment).min(sealed_len(size)),
        skip: (range.start - first * segment) as usize,
        take: range.end - range.start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal_all(cipher: FileCipher, plaintext: &[u8], piece: usize) -> Vec<u8> {
        let mut sealer = SegmentSealer::new(cipher);
        let mut object = Vec::new();
        for chunk in plaintext.chunks(piece.max(1)) {
            sealer.push(chunk, |segment| object.extend_from_slice(&segment));
        }
        object.extend_from_slice(&sealer.finish());
        object
    }

    fn open_span(
        cipher: &FileCipher,
        object: &[u8],
        size: u64,
        range: Range<u64>,
    ) -> Result<Vec<u8>, SegmentError> {
        let span = span(size, range);
        let sealed = &object[span.sealed.start as usize..span.sealed.end as usize];
        let mut plain = Vec::new();
        for (offset, segment) in sealed.chunks(SEALED_SEGMENT_BYTES).enumerate() {
            let index = span.first + offset as u32;
            plain.extend(cipher.open_segment(index, index == span.last_of_file, segment)?);
        }
        Ok(plain[span.skip..span.skip + span.take as usize].to_vec())
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 256) as u8).collect()
    }

    #[test]
    fn segments_round_trip_any_range_at_any_size() {
        let (tenant, file) = (TenantId::new(), Uuid::now_v7());
        for size in [
            0,
            1,
            SEGMENT_BYTES - 1,
            SEGMENT_BYTES,
            SEGMENT_BYTES + 1,
            3 * SEGMENT_BYTES + 17,
        ] {
            let (cipher, key) = FileCipher::generate(tenant, file);
            let prefix = cipher.nonce_prefix().to_vec();
            let plaintext = sample(size);
            let object = seal_all(cipher, &plaintext, 10_000);
            assert_eq!(object.len() as u64, sealed_len(size as u64), "size {size}");
            let cipher = FileCipher::new(key.expose(), &prefix, tenant, file).unwrap();
            let whole = if size == 0 { 0..0 } else { 0..size as u64 };
            assert_eq!(
                open_span(&cipher, &object, size as u64, whole).unwrap(),
                plaintext
            );
            if size > 2 {
                let (a, b) = (size / 3, size - 1);
                assert_eq!(
                    open_span(&cipher, &object, size as u64, a as u64..b as u64).unwrap(),
                    plaintext[a..b]
                );
            }
        }
    }

    #[test]
    fn a_range_fetches_only_the_segments_that_cover_it() {
        let size = 10 * SEGMENT_BYTES as u64;
        let span = span(
            size,
            3 * SEGMENT_BYTES as u64 + 5..4 * SEGMENT_BYTES as u64 + 1,
        );
        assert_eq!(span.first, 3);
        assert_eq!(span.last_of_file, 9);
        assert_eq!(
            span.sealed,
            3 * SEALED_SEGMENT_BYTES as u64..5 * SEALED_SEGMENT_BYTES as u64
        );
        assert_eq!((span.skip, span.take), (5, SEGMENT_BYTES as u64 - 4));
    }

    #[test]
    fn truncated_reordered_moved_or_rekeyed_segments_do_not_open() {
        let (tenant, file) = (TenantId::new(), Uuid::now_v7());
        let (cipher, key) = FileCipher::generate(tenant, file);
        let prefix = cipher.nonce_prefix().to_vec();
        let size = 3 * SEGMENT_BYTES;
        let object = seal_all(cipher, &sample(size), SEGMENT_BYTES);
        let reopen = |tenant, file| FileCipher::new(key.expose(), &prefix, tenant, file).unwrap();
        let cipher = reopen(tenant, file);
        let segment = |i: usize| &object[i * SEALED_SEGMENT_BYTES..(i + 1) * SEALED_SEGMENT_BYTES];
        // Truncated after two segments: the second is not flagged last.
        assert_eq!(
            cipher.open_segment(1, true, segment(1)),
            Err(SegmentError::Authentication)
        );
        // Reordered: segment 0 read in position 1.
        assert_eq!(
            cipher.open_segment(1, false, segment(0)),
            Err(SegmentError::Authentication)
        );
        // Under another file row or tenant.
        for other in [
            reopen(tenant, Uuid::now_v7()),
            reopen(TenantId::new(), file),
        ] {
            assert_eq!(
                other.open_segment(0, false, segment(0)),
                Err(SegmentError::Authentication)
            );
        }
        let (stranger, _) = FileCipher::generate(tenant, file);
        assert_eq!(
            stranger.open_segment(0, false, segment(0)),
            Err(SegmentError::Authentication)
        );
        let mut altered = segment(2).to_vec();
        altered[100] ^= 1;
        assert_eq!(
            cipher.open_segment(2, true, &altered),
            Err(SegmentError::Authentication)
        );
        assert!(cipher.open_segment(2, true, segment(2)).is_ok());
        assert!(FileCipher::new(&[0; 16], &prefix, tenant, file).is_err());
    }
}
