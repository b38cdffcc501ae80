//! Tenants' files: uploaded as a stream, sealed segment by segment under a
//! per-file data key ([`segments`]), kept in the object store beside the call
//! recordings, scanned by clamd ([`clamd`], [`scan`]) before any byte is
//! served, and, when attached to an agent, ingested into its knowledge base
//! once clean ([`text`]).
//!
//! - [`range`]: `Range` headers on downloads.
//! - [`sniff`]: the content type, told from the bytes.

pub mod clamd;
pub mod range;
pub mod scan;
pub mod segments;
pub mod sniff;
pub mod text;

use std::ops::Range;
use std::sync::Arc;

use agentry_actors::{AgentId, TenantId};
use axum::body::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::bus::RedisBus;
use crate::configuration::FileSettings;
use crate::crypto::{CryptoError, Keyring, SecretOwner};
use crate::db::files::{self, FileRow};
use crate::db::{knowledge, DbError, Store};
use crate::kb_ingest::{self, IngestJob};
use crate::object_storage::{ByteStream, ObjectStorage, ObjectWriter, StorageError};
use segments::{FileCipher, SegmentError, SegmentSealer, SEALED_SEGMENT_BYTES};

/// Parts of an upload sent to the store at once (S3's smallest part is 5 MiB).
const UPLOAD_PART_BYTES: usize = 5 * 1024 * 1024;

/// A file's scan status (the `scan_status` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanStatus {
    Pending,
    Clean,
    Infected,
    Unscanned,
}

impl ScanStatus {
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "pending" => Self::Pending,
            "clean" => Self::Clean,
            "infected" => Self::Infected,
            "unscanned" => Self::Unscanned,
            _ => return None,
        })
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Clean => "clean",
            Self::Infected => "infected",
            Self::Unscanned => "unscanned",
        }
    }

    /// Clean or unscanned: the only files whose bytes are ever served or indexed.
    pub fn servable(self) -> bool {
        matches!(self, Self::Clean | Self::Unscanned)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("a file's data key does not open: {0}")]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Segment(#[from] SegmentError),
    #[error("the file is larger than files.max_bytes")]
    TooLarge,
    #[error(transparent)]
    Scan(#[from] clamd::ScanError),
    #[error(transparent)]
    Text(#[from] text::TextError),
}

/// The data key's owner: one row of `files`, so a key copied to another file
/// (or tenant) does not open.
pub fn data_key_owner(tenant: TenantId, file: Uuid) -> SecretOwner {
    SecretOwner::of_row(tenant, "files", "data_key", file)
}

pub fn object_key(tenant: TenantId, file: Uuid) -> String {
    format!("files/{tenant}/{file}.sealed")
}

pub struct Files {
    storage: ObjectStorage,
    keyring: Arc<Keyring>,
    pub settings: FileSettings,
    scan_wake: Arc<Notify>,
}

impl Files {
    pub fn new(storage: ObjectStorage, keyring: Arc<Keyring>, settings: FileSettings) -> Self {
        Self {
            storage,
            keyring,
            settings,
            scan_wake: Arc::new(Notify::new()),
        }
    }

    /// Whether uploads wait for clamd (`files.clamd_addr` set).
    pub fn scanning(&self) -> bool {
        !self.settings.clamd_addr.trim().is_empty()
    }

    /// Tells this instance's scan worker a file is waiting.
    pub fn wake_scanner(&self) {
        self.scan_wake.notify_one();
    }

    /// Starts sealing and storing file `id`'s bytes.
    pub async fn begin_upload(&self, tenant: TenantId, id: Uuid) -> Result<Upload, FileError> {
        let key = object_key(tenant, id);
        let writer = self.storage.writer(&key, UPLOAD_PART_BYTES).await?;
        let (cipher, data_key) = FileCipher::generate(tenant, id);
        let nonce_prefix = cipher.nonce_prefix().to_vec();
        Ok(Upload {
            writer,
            sealer: SegmentSealer::new(cipher),
            size: 0,
            max: self.settings.max_bytes,
            head: Vec::with_capacity(sniff::SNIFF_BYTES),
            stored: Stored {
                key,
                size: 0,
                head: Vec::new(),
                data_key: self
                    .keyring
                    .seal(&data_key_owner(tenant, id), data_key.expose()),
                nonce_prefix,
            },
        })
    }

    /// Removes an object no row names (any more); a failure is logged.
    pub async fn remove_object(&self, key: &str) {
        if let Err(error) = self.storage.delete(key).await {
            tracing::warn!(%error, key, "an unreferenced file object was not removed");
        }
    }

    /// The plaintext of `range` (within the file; `0..0` for an empty file),
    /// decrypted segment by segment as the sealed bytes arrive.
    pub async fn open(
        &self,
        tenant: TenantId,
        row: &FileRow,
        range: Range<u64>,
    ) -> Result<impl Stream<Item = Result<Bytes, FileError>> + Send + 'static, FileError> {
        let data_key = self
            .keyring
            .open(&data_key_owner(tenant, row.id), &row.data_key)?;
        let cipher = FileCipher::new(data_key.expose(), &row.nonce_prefix, tenant, row.id)?;
        let span = segments::span(row.size_bytes as u64, range);
        let sealed = if span.take == 0 {
            futures_util::stream::empty().boxed()
        } else {
            self.storage
                .get_range(&row.object_key, span.sealed.clone())
                .await?
        };
        Ok(decrypting(Decrypting {
            sealed,
            cipher,
            buffer: Vec::with_capacity(SEALED_SEGMENT_BYTES * 2),
            index: span.first,
            last_of_file: span.last_of_file,
            skip: span.skip,
            remaining: span.take,
        }))
    }

    /// The whole plaintext (for indexing, which needs it all).
    pub async fn read_all(&self, tenant: TenantId, row: &FileRow) -> Result<Vec<u8>, FileError> {
        let parts: Vec<Bytes> = self
            .open(tenant, row, 0..row.size_bytes as u64)
            .await?
            .try_collect()
            .await?;
        Ok(parts.concat())
    }

    /// Adds a servable file attached to an agent to that agent's knowledge
    /// base as a document, once (the file row remembers it); the document's
    /// id, or `None` when there is nothing to do.
    pub async fn attach_to_knowledge(
        &self,
        store: &Store,
        bus: &RedisBus,
        max_document_chars: usize,
        tenant: TenantId,
        row: &FileRow,
    ) -> Result<Option<Uuid>, FileError> {
        let servable = ScanStatus::parse(&row.scan_status).is_some_and(ScanStatus::servable);
        let (Some(agent), None, true) = (row.agent_id, row.kb_document_id, servable) else {
            return Ok(None);
        };
        let bytes = self.read_all(tenant, row).await?;
        let content_type = row.content_type.clone();
        let (kind, text) =
            tokio::task::spawn_blocking(move || text::extract(&content_type, &bytes))
                .await
                .map_err(|_| text::TextError::Pdf("the text extraction stopped".into()))??;
        let agent = AgentId::from_uuid(agent);
        let mut tx = store.tenant(tenant).await?;
        let document = knowledge::create_document(
            &mut tx,
            agent,
            crate::domain::first_chars(&row.name, 300),
            kind.as_str(),
            crate::domain::first_chars(&text, max_document_chars),
        )
        .await?;
        if !files::set_kb_document(&mut tx, row.id, document.id).await? {
            // Another instance attached it first; this transaction rolls back.
            return Ok(None);
        }
        tx.commit().await?;
        let job = IngestJob {
            tenant,
            agent,
            document: document.id,
        };
        if let Err(error) = kb_ingest::enqueue(bus, &job).await {
            tracing::warn!(%error, "could not enqueue a file's document for ingestion; the sweep will retry");
        }
        Ok(Some(document.id))
    }
}

/// A file being received: its bytes are sealed and written as they come.
pub struct Upload {
    writer: ObjectWriter,
    sealer: SegmentSealer,
    size: u64,
    max: u64,
    head: Vec<u8>,
    stored: Stored,
}

/// What an upload left in the store, for its row.
pub struct Stored {
    pub key: String,
    pub size: u64,
    /// The first bytes, to tell the content type from.
    pub head: Vec<u8>,
    /// Sealed by the keyring for the file's row.
    pub data_key: Vec<u8>,
    pub nonce_prefix: Vec<u8>,
}

impl Upload {
    /// Takes the next bytes; past `files.max_bytes` it is [`FileError::TooLarge`].
    pub async fn push(&mut self, bytes: &[u8]) -> Result<(), FileError> {
        self.size += bytes.len() as u64;
        if self.size > self.max {
            return Err(FileError::TooLarge);
        }
        let room = sniff::SNIFF_BYTES - self.head.len();
        self.head.extend_from_slice(&bytes[..room.min(bytes.len())]);
        let mut sealed = Vec::new();
        self.sealer.push(bytes, |segment| sealed.push(segment));
        for segment in sealed {
            self.writer.write(&segment).await?;
        }
        Ok(())
    }

    /// Writes the last segment and completes the object.
    pub async fn finish(mut self) -> Result<Stored, FileError> {
        let last = self.sealer.finish();
        if let Err(error) = self.writer.write(&last).await {
            self.writer.abort().await;
            return Err(error.into());
        }
        self.writer.finish().await?;
        self.stored.size = self.size;
        self.stored.head = self.head;
        Ok(self.stored)
    }

    /// Drops everything written so far.
    pub async fn abort(self) {
        self.writer.abort().await;
    }
}

struct Decrypting {
    sealed: ByteStream,
    cipher: FileCipher,
    buffer: Vec<u8>,
    index: u32,
    last_of_file: u32,
    skip: usize,
    remaining: u64,
}

fn decrypting(state: Decrypting) -> impl Stream<Item = Result<Bytes, FileError>> + Send + 'static {
    futures_util::stream::try_unfold(state, |mut state| async move {
        if state.remaining == 0 {
            return Ok(None);
        }
        while state.buffer.len() < SEALED_SEGMENT_BYTES {
            match state.sealed.next().await {
                Some(chunk) => state
                    .buffer
                    .extend_from_slice(&chunk.map_err(StorageError::from)?),
                None => break,
            }
        }
        if state.buffer.is_empty() {
            // The object ends before the range does: cut short.
            return Err(SegmentError::Authentication.into());
        }
        let length = state.buffer.len().min(SEALED_SEGMENT_BYTES);
        let plain = state.cipher.open_segment(
            state.index,
            state.index == state.last_of_file,
            &state.buffer[..length],
        )?;
        state.buffer.drain(..length);
        state.index += 1;
        let start = std::mem::take(&mut state.skip).min(plain.len());
        let end = (start as u64 + state.remaining).min(plain.len() as u64) as usize;
        state.remaining -= (end - start) as u64;
        Ok(Some((Bytes::from(plain).slice(start..end), state)))
    })
}
