//! `GET /ws/twilio/media/{token}` (or `/ws/twilio/media?token=…`): the
//! media-stream bridge. A call's greeting starts a stream here when
//! `twilio.media_streams` is on; Twilio connects, speaks the Media Streams
//! JSON messages, and the caller's audio (the inbound track) is stored as a
//! sealed μ-law WAV recording when the stream stops.
//!
//! The token is minted by the voice route for one call of one tenant and
//! admits connections for `twilio.media_token_ttl_secs`: without one the
//! upgrade is 401, with an altered or expired one 403, both JSON and
//! without upgrading. The greeting puts it in the path because Twilio drops
//! a `<Stream>` URL's query string.
//!
//! An upgraded socket is no longer an HTTP request the server drains on
//! shutdown: [`MediaBridges`] ends the streams still open then, stores what
//! each captured, and is waited for before the database pool closes.

use std::time::Duration;

use agentry_actors::TenantId;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use chrono::Utc;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::http::error::ApiError;
use crate::http::AppState;
use crate::rate_limit::Tier;
use crate::recordings::capability::StreamGrant;
use crate::recordings::media_stream::{MediaCapture, Step, SAMPLE_RATE};
use crate::recordings::{wav, NewAudio, Outcome, RecordingEvent, Saved, Source};
use crate::twilio::signature;

/// Twilio's messages are a few hundred bytes (20 ms of audio each).
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// WebSocket close codes: done, and refused for what the peer sent.
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_POLICY: u16 = 1008;

/// The media streams this instance is bridging.
pub struct MediaBridges {
    tracker: TaskTracker,
    stop: watch::Sender<bool>,
}

impl Default for MediaBridges {
    fn default() -> Self {
        Self {
            tracker: TaskTracker::new(),
            stop: watch::channel(false).0,
        }
    }
}

impl MediaBridges {
    /// Ends every open stream (each stores what it captured) and waits up to
    /// `within` for them; how many had not finished by then.
    pub async fn shut_down(&self, within: Duration) -> usize {
        let _ = self.stop.send(true);
        self.tracker.close();
        if tokio::time::timeout(within, self.tracker.wait())
            .await
            .is_err()
        {
            return self.tracker.len();
        }
        0
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(by_query))
        .routes(routes!(by_path))
}

/// The token in the query, for clients that keep it (Twilio drops it).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct TokenQuery {
    /// The stream token the greeting's `<Stream>` was given.
    token: Option<String>,
}

/// The `<Stream url>` of a new media stream for `call_sid`: `wss://` when
/// `twilio.public_base_url` is https, `ws://` when it is http.
pub fn stream_url(state: &AppState, tenant: TenantId, call_sid: &str) -> String {
    let twilio = &state.settings.twilio;
    let expires_at = Utc::now() + chrono::Duration::seconds(twilio.media_token_ttl_secs as i64);
    let token = state
        .recordings
        .capabilities
        .issue_stream_token(tenant, call_sid, expires_at);
    let base = &twilio.public_base_url;
    let ws_base = match (base.strip_prefix("https://"), base.strip_prefix("http://")) {
        (Some(rest), _) => format!("wss://{rest}"),
        (None, Some(rest)) => format!("ws://{rest}"),
        _ => base.clone(),
    };
    signature::public_url(&ws_base, &format!("/ws/twilio/media/{token}"))
}

/// A Twilio media stream (WebSocket) of one call, recording the caller; the
/// token, signed for one call of one tenant, is in the path.
#[utoipa::path(get, path = "/media/{token}", tag = "twilio",
    params(("token" = String, Path, description = "The stream token")),
    responses((status = 101, description = "Upgraded: Twilio Media Streams messages (`start`, `media`, `stop`) follow"),
        (status = 400, description = "Not a WebSocket upgrade"),
        (status = 401, description = "No stream token"),
        (status = 403, description = "The stream token is forged, expired or for another call"),
        (status = 429, description = "The tenant's provider_webhooks tier is exhausted"),
        (status = 503, description = "The rate limiter is unavailable")))]
async fn by_path(
    State(state): State<AppState>,
    Path(token): Path<String>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    accept(state, Some(token), upgrade).await
}

/// The same stream with its token in the query.
#[utoipa::path(get, path = "/media", tag = "twilio", params(TokenQuery),
    responses((status = 101, description = "Upgraded: Twilio Media Streams messages (`start`, `media`, `stop`) follow"),
        (status = 400, description = "Not a WebSocket upgrade"),
        (status = 401, description = "No stream token"),
        (status = 403, description = "The stream token is forged, expired or for another call"),
        (status = 429, description = "The tenant's provider_webhooks tier is exhausted"),
        (status = 503, description = "The rate limiter is unavailable")))]
async fn by_query(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let token = query.and_then(|query| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "token")
            .map(|(_, value)| value.into_owned())
    });
    accept(state, token, upgrade).await
}

/// The token first: nothing is upgraded for a caller that has none.
async fn accept(
    state: AppState,
    token: Option<String>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let token = token
        .filter(|token| !token.is_empty())
        .ok_or(ApiError::Unauthorized)?;
    let grant = state
        .recordings
        .capabilities
        .verify_stream_token(&token, Utc::now())
        .map_err(|error| {
            RecordingEvent {
                source: Source::MediaStream,
                outcome: Outcome::StreamRefused,
                detail: Some(&error.to_string()),
            }
            .emit();
            ApiError::Forbidden(format!("media stream token refused: {error}"))
        })?;
    state
        .limit(
            Tier::ProviderWebhooks,
            Some(grant.tenant),
            &grant.tenant.to_string(),
        )
        .await?;
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::BadRequest(format!(
            "a WebSocket upgrade is expected: {}",
            rejection.body_text()
        ))
    })?;
    let bridges = state.media_bridges.tracker.clone();
    Ok(upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| bridges.track_future(bridge(state, grant, socket))))
}

/// Reads the stream until `stop`, a close, an error, silence or shutdown,
/// then stores what the caller said and closes.
async fn bridge(state: AppState, grant: StreamGrant, mut socket: WebSocket) {
    let settings = &state.settings.recordings;
    let idle = Duration::from_secs(settings.stream_idle_secs);
    let mut capture = MediaCapture::new(&grant.call_sid, settings.max_stream_bytes);
    let mut refused = None;
    let mut stopping = state.media_bridges.stop.subscribe();
    let mut shut_down = false;
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout(idle, socket.recv()) => next,
            _ = stopping.wait_for(|stop| *stop) => {
                shut_down = true;
                break;
            }
        };
        let message = match next {
            Err(_) => {
                tracing::info!(
                    idle_secs = idle.as_secs(),
                    "media stream went silent; ending it"
                );
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(error))) => {
                tracing::info!(%error, "media stream connection failed");
                break;
            }
            Ok(Some(Ok(message))) => message,
        };
        match message {
            Message::Text(text) => match capture.accept(text.as_str()) {
                Ok(Step::Continue) => {}
                Ok(Step::Stopped) => break,
                Err(error) => {
                    refused = Some(error);
                    break;
                }
            },
            Message::Close(_) => break,
            // Pings are answered by the socket itself; Twilio sends no binary frames.
            Message::Binary(_) | Message::Ping(_) | Message::Pong(_) => {}
        }
    }
    if let Some(error) = &refused {
        RecordingEvent {
            source: Source::MediaStream,
            outcome: Outcome::StreamRefused,
            detail: Some(&error.to_string()),
        }
        .emit();
    }
    // Stored before the close, so a peer that waits for it finds the recording.
    if let Some(captured) = capture.finish() {
        if captured.dropped_bytes > 0 {
            RecordingEvent {
                source: Source::MediaStream,
                outcome: Outcome::Truncated,
                detail: Some(&format!(
                    "{} bytes past recordings.max_stream_bytes dropped",
                    captured.dropped_bytes
                )),
            }
            .emit();
        }
        if !captured.audio.is_empty() {
            store(&state, grant.tenant, &captured).await;
        }
    }
    let (code, reason) = match (refused, shut_down) {
        (Some(_), _) => (CLOSE_POLICY, "not a Twilio media stream for this call"),
        (None, true) => (CLOSE_GOING_AWAY, "the server is shutting down"),
        (None, false) => (CLOSE_NORMAL, "stream stored"),
    };
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        })))
        .await;
}

async fn store(
    state: &AppState,
    tenant: TenantId,
    captured: &crate::recordings::media_stream::Captured,
) {
    let wav = wav::mulaw_wav(&captured.audio, SAMPLE_RATE);
    let duration_secs = i32::try_from(captured.audio.len() / SAMPLE_RATE as usize).ok();
    let saved = state
        .recordings
        .save(
            &state.store,
            tenant,
            &NewAudio {
                call_sid: &captured.start.call_sid,
                recording_sid: &captured.start.stream_sid,
                content_type: "audio/wav",
                bytes: &wav,
                duration_secs,
                source: Source::MediaStream,
            },
        )
        .await;
    let (outcome, detail) = match saved {
        Ok(Saved::Stored(id)) => {
            state.recordings.transcribe_later(tenant, id, wav);
            (Outcome::Stored, None)
        }
        Ok(Saved::Duplicate) => (Outcome::Duplicate, None),
        Err(error) => (Outcome::StoreFailed, Some(error.to_string())),
    };
    RecordingEvent {
        source: Source::MediaStream,
        outcome,
        detail: detail.as_deref(),
    }
    .emit();
}
