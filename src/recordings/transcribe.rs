//! The transcription port: a stored recording sent to the tenant's own
//! OpenAI-compatible model (`POST {base}/audio/transcriptions`, with the
//! tenant's key, billed to the tenant), its text scrubbed like a call's live
//! lines before it is stored, with an audit row per kind found. On when
//! `recordings.transcribe` is; a tenant whose model cannot transcribe (the
//! offline responder, Anthropic, Azure, Ollama) gets no transcript.

use std::sync::Arc;
use std::time::Duration;

use agentry_actors::pii::Scrubber;
use agentry_actors::TenantId;
use uuid::Uuid;

use crate::crypto::Keyring;
use crate::db::{llm_configs, recordings, Store};
use crate::llm::connection::{open_connection, parse_kind};
use crate::llm::ProviderKind;
use crate::net_guard::GuardedClient;

const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// A recording of up to 32 MiB takes a while to upload and transcribe.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct Transcriber {
    http: GuardedClient,
    model: String,
    scrubber: Scrubber,
    store: Store,
    keyring: Arc<Keyring>,
}

/// How a transcription ended (a metric label).
#[derive(Debug, PartialEq, Eq)]
pub enum Transcribed {
    Stored,
    /// The tenant's model cannot transcribe.
    NoModel,
}

#[derive(Debug, thiserror::Error)]
pub enum TranscribeError {
    #[error("database: {0}")]
    Db(#[from] crate::db::DbError),
    #[error("the tenant's model connection does not open: {0}")]
    Connection(String),
    #[error("the transcription request failed: {0}")]
    Request(String),
}

impl Transcriber {
    pub fn new(
        http: GuardedClient,
        model: String,
        scrubber: Scrubber,
        store: Store,
        keyring: Arc<Keyring>,
    ) -> Self {
        Self {
            http,
            model,
            scrubber,
            store,
            keyring,
        }
    }

    /// Transcribes in the background: the callback that stored the audio is
    /// answered at once. A failure is logged and counted; the recording stays.
    pub fn spawn(&self, tenant: TenantId, recording: Uuid, audio: Vec<u8>) {
        let this = self.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let outcome = match this.transcribe(tenant, recording, audio).await {
                Ok(Transcribed::Stored) => "stored",
                Ok(Transcribed::NoModel) => "no_model",
                Err(error) => {
                    tracing::warn!(%error, %tenant, %recording, "recording not transcribed");
                    "failed"
                }
            };
            metrics::counter!("agentry_recording_transcriptions_total", "outcome" => outcome)
                .increment(1);
            metrics::histogram!("agentry_recording_transcription_duration_seconds")
                .record(started.elapsed().as_secs_f64());
        });
    }

    pub async fn transcribe(
        &self,
        tenant: TenantId,
        recording: Uuid,
        audio: Vec<u8>,
    ) -> Result<Transcribed, TranscribeError> {
        let mut tx = self.store.tenant(tenant).await?;
        let config = llm_configs::get(&mut tx).await?;
        drop(tx);
        let Some(config) = config else {
            return Ok(Transcribed::NoModel);
        };
        let kind =
            parse_kind(&config.provider).map_err(|e| TranscribeError::Connection(e.to_string()))?;
        let connection = open_connection(&self.keyring, tenant, &config.connection_sealed)
            .map_err(|e| TranscribeError::Connection(e.to_string()))?;
        let base = match (kind, connection.base_url.as_deref()) {
            (ProviderKind::OpenAi, base) => base.unwrap_or(OPENAI_BASE_URL).to_owned(),
            (ProviderKind::Vllm, Some(base)) => base.to_owned(),
            _ => return Ok(Transcribed::NoModel),
        };
        let url = format!("{}/audio/transcriptions", base.trim_end_matches('/'));
        let file = reqwest::multipart::Part::bytes(audio)
            .file_name("recording.wav")
            .mime_str("audio/wav")
            .map_err(|e| TranscribeError::Request(e.to_string()))?;
        let form = reqwest::multipart::Form::new()
            .text("model", self.model.clone())
            .text("response_format", "json")
            .part("file", file);
        // The tenant's base URL passes the same guard as its chat requests.
        let mut request = self
            .http
            .request(reqwest::Method::POST, &url)
            .map_err(|blocked| TranscribeError::Request(blocked.to_string()))?
            .timeout(REQUEST_TIMEOUT)
            .multipart(form);
        if let Some(key) = connection.api_key.as_deref() {
            request = request.bearer_auth(key);
        }
        let response = request
            .send()
            .await
            .map_err(|e| TranscribeError::Request(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(TranscribeError::Request(format!("{status}")));
        }
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|e| TranscribeError::Request(e.to_string()))?;
        let text = body["text"]
            .as_str()
            .ok_or_else(|| TranscribeError::Request("the answer has no text".into()))?;
        let scrubbed = self.scrubber.scrub(text.trim());
        let mut tx = self.store.tenant(tenant).await?;
        recordings::set_transcript(&mut tx, recording, &scrubbed.text, &scrubbed.counts).await?;
        tx.commit().await?;
        Ok(Transcribed::Stored)
    }
}
