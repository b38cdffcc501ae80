//! Call recordings: Twilio's own (downloaded when its recording status
//! callback says one is ready) and the caller's audio captured from a media
//! stream. Each is sealed with AES-256-GCM under the keyring, its row bound
//! in as associated data, then written to the object store; the dashboard
//! lists them and hands out short-lived signed links to their audio.
//!
//! - [`capability`]: the signed links and the media-stream tokens.
//! - [`fetch`]: downloading a `RecordingUrl` (allow-listed hosts, SSRF guard).
//! - [`media_stream`]: Twilio Media Streams messages, captured within a cap.
//! - [`storage`]: the object store (a directory or an S3-compatible bucket),
//!   shared with tenants' files ([`crate::object_storage`]).
//! - [`wav`]: μ-law WAV files, and telling a WAV from anything else.

pub mod capability;
pub mod fetch;
pub mod media_stream;
pub mod transcribe;
pub mod wav;

pub use crate::object_storage as storage;

use std::sync::Arc;
use std::time::Duration;

use agentry_actors::TenantId;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::configuration::Settings;
use crate::crypto::{CryptoError, Keyring, SecretOwner};
use crate::db::recordings::{self, NewRecording, Recording};
use crate::db::{DbError, Store};
use crate::net_guard::GuardPolicy;
use capability::Capabilities;
use fetch::RecordingFetcher;
use storage::{ObjectStorage, StorageError};

/// Where a recording came from (the `source` column and metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Twilio,
    MediaStream,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Self::Twilio => "twilio",
            Self::MediaStream => "media_stream",
        }
    }
}

/// The ciphertext's owner: one row of `call_recordings`, so an object copied
/// under another recording (or tenant) does not open.
pub fn object_owner(tenant: TenantId, recording: Uuid) -> SecretOwner {
    SecretOwner::of_row(tenant, "call_recordings", "object", recording)
}

/// How handling one recording (or one media stream) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Stored,
    /// Already stored: Twilio repeated a callback.
    Duplicate,
    /// A `RecordingUrl` off the allow-list or refused by the SSRF guard.
    Refused,
    TooLarge,
    NotWav,
    FetchFailed,
    StoreFailed,
    /// A media stream's token or messages were refused.
    StreamRefused,
    /// A media stream ran past `recordings.max_stream_bytes`; the rest was dropped.
    Truncated,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Duplicate => "duplicate",
            Self::Refused => "refused",
            Self::TooLarge => "too_large",
            Self::NotWav => "not_wav",
            Self::FetchFailed => "fetch_failed",
            Self::StoreFailed => "store_failed",
            Self::StreamRefused => "stream_refused",
            Self::Truncated => "truncated",
        }
    }
}

/// One recording's outcome: counted and logged together.
pub struct RecordingEvent<'a> {
    pub source: Source,
    pub outcome: Outcome,
    /// Why, for the log (never a label).
    pub detail: Option<&'a str>,
}

impl RecordingEvent<'_> {
    pub fn emit(self) {
        let (source, outcome) = (self.source.label(), self.outcome.label());
        metrics::counter!("agentry_recordings_total", "source" => source, "outcome" => outcome)
            .increment(1);
        let detail = self.detail.unwrap_or("");
        match self.outcome {
            Outcome::Stored | Outcome::Duplicate => {
                tracing::info!(source, outcome, "call recording")
            }
            Outcome::Truncated => {
                tracing::warn!(source, outcome, detail, "call recording cut short")
            }
            _ => tracing::warn!(source, outcome, detail, "call recording not stored"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("HTTP client for recording downloads: {0}")]
    Client(#[from] reqwest::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("a stored recording does not open: {0}")]
    Crypto(#[from] CryptoError),
}

/// Audio to keep.
pub struct NewAudio<'a> {
    pub call_sid: &'a str,
    pub recording_sid: &'a str,
    pub content_type: &'a str,
    pub bytes: &'a [u8],
    pub duration_secs: Option<i32>,
    pub source: Source,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Saved {
    Stored(Uuid),
    /// The tenant already had it (Twilio repeated a callback).
    Duplicate,
}

pub struct Recordings {
    storage: ObjectStorage,
    keyring: Arc<Keyring>,
    pub capabilities: Capabilities,
    pub fetcher: RecordingFetcher,
    link_ttl: chrono::Duration,
    /// Set when `recordings.transcribe` is on.
    pub transcriber: Option<transcribe::Transcriber>,
}

impl Recordings {
    pub fn new(settings: &Settings, keyring: Arc<Keyring>) -> Result<Self, SetupError> {
        let twilio = &settings.twilio;
        let recordings = &settings.recordings;
        let fetcher = RecordingFetcher::new(
            GuardPolicy {
                allow_http: twilio.recording_allow_http,
                allow_loopback: twilio.recording_allow_localhost,
                ..GuardPolicy::default()
            },
            &twilio.recording_hosts,
            recordings.max_fetch_bytes,
            Duration::from_secs(recordings.fetch_timeout_secs),
        )?;
        Ok(Self {
            storage: ObjectStorage::from_settings(recordings)?,
            keyring,
            capabilities: Capabilities::new(&settings.token_key_bytes()),
            fetcher,
            link_ttl: chrono::Duration::seconds(recordings.link_ttl_secs as i64),
            transcriber: None,
        })
    }

    /// The object store recordings are kept in (tenants' files share it).
    pub fn storage(&self) -> &ObjectStorage {
        &self.storage
    }

    /// Asks for a transcript of a recording just stored, when transcription is on.
    pub fn transcribe_later(&self, tenant: TenantId, recording: Uuid, audio: Vec<u8>) {
        if let Some(transcriber) = &self.transcriber {
            transcriber.spawn(tenant, recording, audio);
        }
    }

    /// Removes a stored object whose row is gone (retention, erasure).
    pub async fn delete_object(&self, key: &str) -> Result<(), StorageError> {
        self.storage.delete(key).await
    }

    /// Seals and writes the audio, then its row: a row never names a missing
    /// object. A duplicate's object is removed again.
    pub async fn save(
        &self,
        store: &Store,
        tenant: TenantId,
        audio: &NewAudio<'_>,
    ) -> Result<Saved, RecordingError> {
        let id = Uuid::now_v7();
        let key = format!("{tenant}/{id}.sealed");
        let sealed = self.keyring.seal(&object_owner(tenant, id), audio.bytes);
        self.storage.put(&key, sealed).await?;
        let inserted = async {
            let mut tx = store.tenant(tenant).await?;
            let inserted = recordings::insert(
                &mut tx,
                &NewRecording {
                    id,
                    call_sid: audio.call_sid,
                    recording_sid: audio.recording_sid,
                    object_key: &key,
                    content_type: audio.content_type,
                    size_bytes: audio.bytes.len() as i64,
                    duration_secs: audio.duration_secs,
                    source: audio.source.label(),
                },
            )
            .await?;
            tx.commit().await?;
            Ok::<_, DbError>(inserted)
        }
        .await;
        match inserted {
            Ok(true) => Ok(Saved::Stored(id)),
            Ok(false) => {
                self.remove_orphan(&key).await;
                Ok(Saved::Duplicate)
            }
            Err(error) => {
                self.remove_orphan(&key).await;
                Err(error.into())
            }
        }
    }

    async fn remove_orphan(&self, key: &str) {
        if let Err(error) = self.storage.delete(key).await {
            tracing::warn!(%error, key, "an unreferenced recording object was not removed");
        }
    }

    /// The recording's audio, opened; `None` when its object is gone.
    pub async fn audio(
        &self,
        tenant: TenantId,
        recording: &Recording,
    ) -> Result<Option<Vec<u8>>, RecordingError> {
        let Some(sealed) = self.storage.get(&recording.object_key).await? else {
            return Ok(None);
        };
        let opened = self
            .keyring
            .open(&object_owner(tenant, recording.id), &sealed)?;
        Ok(Some(opened.expose().clone()))
    }

    /// A path to the recording's audio, good for `recordings.link_ttl_secs`
    /// from `now` (rounded up to whole seconds).
    pub fn link(&self, tenant: TenantId, recording: Uuid, now: DateTime<Utc>) -> String {
        let expires_at = now + self.link_ttl;
        let expires = expires_at.timestamp() + i64::from(expires_at.timestamp_subsec_nanos() > 0);
        let signature = self.capabilities.sign_link(tenant, recording, expires);
        format!("/api/recordings/{recording}/audio?tenant={tenant}&expires={expires}&signature={signature}")
    }
}
