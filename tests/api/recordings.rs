//! Call recordings: Twilio's recording callback downloads a real WAV (made
//! by espeak-ng; `bash .ci/run` installs it) from a local server that checks
//! the tenant's basic auth, stores it sealed, and serves it back through
//! short-lived signed links; the media-stream bridge refuses upgrades
//! without a valid token and stores the caller's audio as a μ-law WAV.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentry::recordings::{NewAudio, Source};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite;
use uuid::Uuid;

use crate::helpers::{assert_error, body, recordings_dir, serve_locally, spawn_app_with, TestApp};
use crate::twilio::{call, line, signed, twilio_settings, Line, ACCOUNT_SID, PUBLIC};

/// The CallSid the Twilio test helpers call with.
const CALL_SID: &str = "CA0123456789abcdef0123456789abcdef";
const RECORDING_SID: &str = "RE0123456789abcdef0123456789abcdef";
const STREAM_SID: &str = "MZ0123456789abcdef0123456789abcdef";

/// "Hello, this is a test call", spoken by espeak-ng into a WAV file.
fn spoken_wav() -> Vec<u8> {
    let path = std::env::temp_dir().join(format!("agentry-espeak-{}.wav", Uuid::new_v4()));
    let status = std::process::Command::new("espeak-ng")
        .arg("-w")
        .arg(&path)
        .arg("Hello, this is a test call")
        .status()
        .expect("espeak-ng runs (apt-get install espeak-ng; bash .ci/run installs it)");
    assert!(status.success(), "espeak-ng failed");
    let wav = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(&wav[..4], b"RIFF", "espeak-ng made a WAV");
    wav
}

/// Twilio's recording media, as far as the download needs it: the WAV at
/// `…/Recordings/{sid}.wav` for the tenant's account SID and auth token
/// (basic auth), 401 for any other credentials.
struct MediaServer {
    address: SocketAddr,
    /// (path, whether the credentials were the tenant's) of every request.
    requests: Arc<Mutex<Vec<(String, bool)>>>,
    /// While set, every request is answered 500.
    failing: Arc<AtomicBool>,
}

impl MediaServer {
    async fn start(wav: Vec<u8>, auth_token: &str) -> Self {
        let expected = format!(
            "Basic {}",
            BASE64.encode(format!("{ACCOUNT_SID}:{auth_token}"))
        );
        let requests = Arc::new(Mutex::new(Vec::new()));
        let failing = Arc::new(AtomicBool::new(false));
        let (seen, fail) = (requests.clone(), failing.clone());
        let router = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
            let (wav, expected, seen, fail) =
                (wav.clone(), expected.clone(), seen.clone(), fail.clone());
            async move {
                let authorized = headers
                    .get("authorization")
                    .is_some_and(|value| value.to_str().unwrap() == expected);
                seen.lock()
                    .unwrap()
                    .push((uri.path().to_owned(), authorized));
                if fail.load(Ordering::SeqCst) {
                    return StatusCode::INTERNAL_SERVER_ERROR.into_response();
                }
                if !authorized {
                    return StatusCode::UNAUTHORIZED.into_response();
                }
                if !uri.path().ends_with(".wav") {
                    return StatusCode::NOT_FOUND.into_response();
                }
                ([("content-type", "audio/x-wav")], wav).into_response()
            }
        });
        Self {
            address: serve_locally(router).await,
            requests,
            failing,
        }
    }

    fn recording_url(&self, host: &str) -> String {
        format!(
            "http://{host}:{}/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{RECORDING_SID}",
            self.address.port()
        )
    }

    fn requests(&self) -> Vec<(String, bool)> {
        self.requests.lock().unwrap().clone()
    }
}

/// The recording status callback Twilio makes for `line`'s number.
async fn recording_callback(
    app: &TestApp,
    line: &Line,
    recording_url: &str,
    status: &str,
) -> (u16, String) {
    let path = format!(
        "/api/twilio/voice/recording?number={}",
        line.number.replace('+', "%2B")
    );
    signed(
        app,
        line,
        &path,
        &[
            ("AccountSid", ACCOUNT_SID),
            ("CallSid", CALL_SID),
            ("RecordingSid", RECORDING_SID),
            ("RecordingUrl", recording_url),
            ("RecordingStatus", status),
            ("RecordingDuration", "2"),
            ("RecordingChannels", "1"),
            ("RecordingSource", "StartCallRecordingAPI"),
        ],
    )
    .await
}

#[derive(Debug, sqlx::FromRow)]
struct StoredRow {
    id: Uuid,
    tenant_id: Uuid,
    conversation_id: Option<Uuid>,
    object_key: String,
    size_bytes: i64,
    duration_secs: Option<i32>,
    source: String,
}

async fn stored_rows(app: &TestApp) -> Vec<StoredRow> {
    let mut owner = app.owner_connection().await;
    sqlx::query_as(
        "SELECT id, tenant_id, conversation_id, object_key, size_bytes, duration_secs, source
         FROM call_recordings ORDER BY id",
    )
    .fetch_all(&mut owner)
    .await
    .unwrap()
}

/// The sealed object of a recording, as it lies in the test's directory.
fn object_on_disk(app: &TestApp, object_key: &str) -> Vec<u8> {
    std::fs::read(recordings_dir(app.database_name()).join(object_key)).unwrap()
}

fn files_on_disk(app: &TestApp) -> usize {
    fn count(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .map(|entry| entry.unwrap().path())
                .map(|path| if path.is_dir() { count(&path) } else { 1 })
                .sum()
        })
    }
    count(&recordings_dir(app.database_name()))
}

fn assert_sealed(object: &[u8], audio: &[u8]) {
    assert_ne!(object, audio);
    assert!(!object.starts_with(b"RIFF"), "no WAV header on disk");
    assert!(
        !object
            .windows(4)
            .any(|window| window == b"WAVE" || window == b"data"),
        "no WAV chunk names on disk"
    );
    let sample = &audio[audio.len() / 2..audio.len() / 2 + 32];
    assert!(
        !object.windows(sample.len()).any(|window| window == sample),
        "no run of the audio on disk"
    );
}

/// `GET` a path of the app without credentials.
async fn fetch(app: &TestApp, path: &str) -> reqwest::Response {
    app.client.get(app.url(path)).send().await.unwrap()
}

/// `path` with the query parameter `name` set to `value`.
fn with_param(path: &str, name: &str, value: &str) -> String {
    let mut url = url::Url::parse(&format!("http://x{path}")).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name {
                value.to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    format!("{}?{}", url.path(), url.query().unwrap())
}

#[tokio::test]
async fn a_completed_call_recording_is_fetched_with_basic_auth_stored_sealed_and_served_by_its_signed_link(
) {
    let app = spawn_app_with(twilio_settings).await;
    let shop = line(&app, "Recording Co", "+14155550160").await;
    // The call reached the agent, so it has a conversation to link to.
    call(
        &app,
        &shop,
        "/api/twilio/voice/gather",
        &[("SpeechResult", "Hello")],
    )
    .await;
    let wav = spoken_wav();
    let media = MediaServer::start(wav.clone(), &shop.auth_token).await;

    let (status, answer) =
        recording_callback(&app, &shop, &media.recording_url("127.0.0.1"), "completed").await;
    assert_eq!(status, 200, "{answer}");
    let path = format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{RECORDING_SID}.wav");
    assert_eq!(
        media.requests(),
        [(path, true)],
        "one download of the WAV, with the tenant's credentials"
    );

    let rows = stored_rows(&app).await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.tenant_id, shop.site.tenant.id.as_uuid());
    assert_eq!(row.size_bytes, wav.len() as i64);
    assert_eq!(row.duration_secs, Some(2));
    assert_eq!(row.source, "twilio");
    let mut owner = app.owner_connection().await;
    let conversation: Uuid = sqlx::query_scalar(
        "SELECT id FROM conversations WHERE channel = 'voice' AND channel_key = $1",
    )
    .bind(CALL_SID)
    .fetch_one(&mut owner)
    .await
    .unwrap();
    assert_eq!(row.conversation_id, Some(conversation));
    let on_disk = object_on_disk(&app, &row.object_key);
    eprintln!(
        "stored {} bytes of WAV as {} bytes starting {:?}",
        wav.len(),
        on_disk.len(),
        String::from_utf8_lossy(&on_disk[..8])
    );
    assert_sealed(&on_disk, &wav);

    // Twilio repeats a callback: nothing is downloaded or stored again.
    let (status, _) =
        recording_callback(&app, &shop, &media.recording_url("127.0.0.1"), "completed").await;
    assert_eq!(status, 200);
    assert_eq!(media.requests().len(), 1);
    assert_eq!(stored_rows(&app).await.len(), 1);

    let token = &shop.site.tenant.token;
    let listed = body(app.get("/api/v1/recordings", token).await).await;
    let listed = listed["recordings"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let recording = &listed[0];
    assert_eq!(recording["id"], row.id.to_string());
    assert_eq!(recording["conversation_id"], conversation.to_string());
    assert_eq!(recording["call_sid"], CALL_SID);
    assert_eq!(recording["content_type"], "audio/wav");
    assert_eq!(recording["size_bytes"], wav.len());
    assert_eq!(recording["duration_secs"], 2);
    assert_eq!(recording["source"], "twilio");
    assert!(recording["created_at"].is_string());
    let link = recording["url"].as_str().unwrap().to_owned();
    assert!(
        link.starts_with(&format!("/api/recordings/{}/audio?", row.id)),
        "{link}"
    );

    let served = fetch(&app, &link).await;
    assert_eq!(served.status(), 200);
    let headers = served.headers().clone();
    assert_eq!(headers["content-type"], "audio/wav");
    assert_eq!(headers["content-length"], wav.len().to_string().as_str());
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(served.bytes().await.unwrap().to_vec(), wav, "the very WAV");

    // One recording's link, altered, opens nothing.
    let signature = url::Url::parse(&format!("http://x{link}"))
        .unwrap()
        .query_pairs()
        .find(|(key, _)| key == "signature")
        .unwrap()
        .1
        .into_owned();
    let flipped = format!(
        "{}{}",
        if signature.starts_with('A') { 'B' } else { 'A' },
        &signature[1..]
    );
    let expires: i64 = link.split("expires=").nth(1).unwrap()[..10]
        .parse()
        .unwrap();
    let other_id = Uuid::now_v7().to_string();
    for altered in [
        with_param(&link, "signature", &flipped),
        with_param(&link, "expires", &(expires + 3600).to_string()),
        with_param(&link, "tenant", &Uuid::now_v7().to_string()),
        link.replace(&row.id.to_string(), &other_id),
        link.split('?').next().unwrap().to_owned(),
    ] {
        let refused = assert_error(fetch(&app, &altered).await, 403, "forbidden").await;
        eprintln!("{altered} -> {refused}");
    }

    // Another tenant's user finds nothing of it.
    let other = app.create_tenant("Other Co").await;
    let path = format!("/api/v1/recordings/{}", row.id);
    assert_error(app.get(&path, &other.token).await, 404, "not_found").await;
    let theirs = body(app.get("/api/v1/recordings", &other.token).await).await;
    assert_eq!(theirs["recordings"], json!([]));
    let shown = body(app.get(&path, token).await).await;
    assert_eq!(shown["id"], row.id.to_string());
    assert!(shown["url"].as_str().unwrap().contains("signature="));

    // Sealed to its row: the same object under another row does not open.
    let mut moved = agentry::db::recordings::get(
        &mut app.store.tenant(shop.site.tenant.id).await.unwrap(),
        row.id,
    )
    .await
    .unwrap();
    moved.id = Uuid::now_v7();
    let refused = app
        .state
        .recordings
        .audio(shop.site.tenant.id, &moved)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, agentry::recordings::RecordingError::Crypto(_)),
        "{refused:?}"
    );

    // A valid link to a recording since deleted: 404, not 403.
    sqlx::query("DELETE FROM call_recordings WHERE id = $1")
        .bind(row.id)
        .execute(&mut owner)
        .await
        .unwrap();
    assert_error(fetch(&app, &link).await, 404, "not_found").await;
}

#[tokio::test]
async fn a_signed_recording_link_stops_working_when_it_expires() {
    let app = spawn_app_with(|settings| {
        twilio_settings(settings);
        settings.recordings.link_ttl_secs = 2;
    })
    .await;
    let shop = line(&app, "Expiring Co", "+14155550161").await;
    let wav = spoken_wav();
    let media = MediaServer::start(wav.clone(), &shop.auth_token).await;
    let (status, answer) =
        recording_callback(&app, &shop, &media.recording_url("127.0.0.1"), "completed").await;
    assert_eq!(status, 200, "{answer}");
    let listed = body(app.get("/api/v1/recordings", &shop.site.tenant.token).await).await;
    let link = listed["recordings"][0]["url"].as_str().unwrap().to_owned();
    let expires: i64 = link.split("expires=").nth(1).unwrap()[..10]
        .parse()
        .unwrap();
    let now = Utc::now().timestamp();
    assert!((now + 2..=now + 3).contains(&expires), "{link}");

    let served = fetch(&app, &link).await;
    assert_eq!(served.status(), 200, "within its window");
    assert_eq!(served.bytes().await.unwrap().to_vec(), wav);

    let wait = (expires * 1000 - Utc::now().timestamp_millis()).max(0) as u64 + 200;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let refused = assert_error(fetch(&app, &link).await, 403, "forbidden").await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_recording_url_on_a_host_off_the_allow_list_is_refused_and_nothing_is_stored() {
    let app = spawn_app_with(twilio_settings).await;
    let shop = line(&app, "Allow-list Co", "+14155550162").await;
    let media = MediaServer::start(spoken_wav(), &shop.auth_token).await;
    // localhost reaches the same server and the guard allows loopback in
    // tests, but only 127.0.0.1 is on twilio.recording_hosts.
    for url in [
        media.recording_url("localhost"),
        "http://169.254.169.254/latest/meta-data/iam".to_owned(),
        "https://api.twilio.com.evil.example/Recordings/RE1".to_owned(),
        "file:///etc/passwd".to_owned(),
    ] {
        let (status, answer) = recording_callback(&app, &shop, &url, "completed").await;
        assert_eq!(status, 422, "{url}: {answer}");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("RecordingUrl is not allowed"),
            "{answer}"
        );
    }
    assert!(media.requests().is_empty(), "no request reached the server");
    assert!(stored_rows(&app).await.is_empty());
    assert_eq!(files_on_disk(&app), 0);
    let metrics = app.metrics_text().await;
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("agentry_recordings_total")
                && line.contains("outcome=\"refused\"")
                && line.contains("source=\"twilio\"")),
        "refusals are counted"
    );
}

#[tokio::test]
async fn a_failed_recording_download_is_answered_503_and_counted_and_the_retry_stores_it() {
    let app = spawn_app_with(twilio_settings).await;
    let shop = line(&app, "Flaky Co", "+14155550163").await;
    let wav = spoken_wav();
    let media = MediaServer::start(wav.clone(), &shop.auth_token).await;
    media.failing.store(true, Ordering::SeqCst);
    let url = media.recording_url("127.0.0.1");

    let (status, answer) = recording_callback(&app, &shop, &url, "completed").await;
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("unavailable"), "{answer}");
    assert!(stored_rows(&app).await.is_empty());
    assert_eq!(files_on_disk(&app), 0);
    let metrics = app.metrics_text().await;
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("agentry_recordings_total")
                && line.contains("outcome=\"fetch_failed\"")),
        "the failure is counted"
    );

    // Twilio asks again once it is back: stored.
    media.failing.store(false, Ordering::SeqCst);
    let (status, answer) = recording_callback(&app, &shop, &url, "completed").await;
    assert_eq!(status, 200, "{answer}");
    let rows = stored_rows(&app).await;
    assert_eq!(rows.len(), 1);
    assert_sealed(&object_on_disk(&app, &rows[0].object_key), &wav);
}

#[tokio::test]
async fn recording_callbacks_must_be_signed_for_their_number_and_only_completed_ones_are_fetched() {
    let app = spawn_app_with(twilio_settings).await;
    let shop = line(&app, "Signed Recording Co", "+14155550164").await;
    let media = MediaServer::start(spoken_wav(), &shop.auth_token).await;
    let url = media.recording_url("127.0.0.1");
    let params = [
        ("AccountSid", ACCOUNT_SID),
        ("CallSid", CALL_SID),
        ("RecordingSid", RECORDING_SID),
        ("RecordingUrl", url.as_str()),
        ("RecordingStatus", "completed"),
    ];
    let path = "/api/twilio/voice/recording?number=%2B14155550164";

    // Unsigned, or signed for the URL without its query: 403.
    let unsigned = crate::twilio::post_form(&app, path, &params, None).await;
    assert_error(unsigned, 403, "forbidden").await;
    let without_query = agentry::twilio::signature::compute(
        &shop.auth_token,
        &format!("{PUBLIC}/api/twilio/voice/recording"),
        &crate::twilio::owned(&params),
    );
    let moved = crate::twilio::post_form(&app, path, &params, Some(&without_query)).await;
    assert_error(moved, 403, "forbidden").await;
    // No number in the URL: 400; a number no tenant has: 404.
    let (status, _) = signed(&app, &shop, "/api/twilio/voice/recording", &params).await;
    assert_eq!(status, 400);
    let (status, _) = signed(
        &app,
        &shop,
        "/api/twilio/voice/recording?number=%2B14155550999",
        &params,
    )
    .await;
    assert_eq!(status, 404);
    // Another account's callback, signed with this tenant's token: 403.
    let (status, _) = signed(
        &app,
        &shop,
        path,
        &[
            ("AccountSid", "ACffffffffffffffffffffffffffffffff"),
            ("CallSid", CALL_SID),
            ("RecordingSid", RECORDING_SID),
            ("RecordingUrl", url.as_str()),
            ("RecordingStatus", "completed"),
        ],
    )
    .await;
    assert_eq!(status, 403);
    // A recording still in progress, or absent: nothing to fetch.
    for status in ["in-progress", "absent", "failed"] {
        let (answered, _) = recording_callback(&app, &shop, &url, status).await;
        assert_eq!(answered, 200, "{status}");
    }
    assert!(media.requests().is_empty());
    assert!(stored_rows(&app).await.is_empty());
    // A bare "+" (form decoding reads it as a space) names the number too.
    let (status, answer) = signed(
        &app,
        &shop,
        "/api/twilio/voice/recording?number=+14155550164",
        &params,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(stored_rows(&app).await.len(), 1);
}

/// The WebSocket URL the greeting's `<Stream>` names, pointed at the test's listener.
fn local_stream_url(app: &TestApp, greeting: &str) -> String {
    let url = greeting
        .split("<Stream url=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no <Stream> in {greeting}"));
    let public_ws = PUBLIC.replacen("https://", "wss://", 1);
    assert!(
        url.starts_with(&format!("{public_ws}/ws/twilio/media/ams_")),
        "{url}"
    );
    url.replacen(&public_ws, &app.address.replacen("http://", "ws://", 1), 1)
}

/// The upgrade's refusal: its status and JSON body (no WebSocket was opened).
async fn refused_upgrade(url: &str) -> (u16, Value) {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => panic!("{url} was upgraded"),
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response.body().clone().unwrap_or_default();
            (status, serde_json::from_slice(&body).unwrap())
        }
        Err(other) => panic!("{url}: {other}"),
    }
}

#[tokio::test]
async fn a_media_stream_upgrade_is_refused_without_a_valid_unexpired_token() {
    let app = spawn_app_with(twilio_settings).await;
    let shop = line(&app, "Refused Stream Co", "+14155550165").await;
    let ws = app.address.replacen("http://", "ws://", 1);
    let capabilities = &app.state.recordings.capabilities;
    let tenant = shop.site.tenant.id;
    let valid = capabilities.issue_stream_token(
        tenant,
        CALL_SID,
        Utc::now() + chrono::Duration::seconds(60),
    );
    let expired = capabilities.issue_stream_token(
        tenant,
        CALL_SID,
        Utc::now() - chrono::Duration::seconds(1),
    );
    let tampered = format!("{}{}", &valid[..valid.len() - 1], {
        if valid.ends_with('A') {
            'B'
        } else {
            'A'
        }
    });

    for url in [
        format!("{ws}/ws/twilio/media"),
        format!("{ws}/ws/twilio/media?token="),
    ] {
        let (status, body) = refused_upgrade(&url).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("unauthorized"))
        );
    }
    for token in [
        &expired,
        &tampered,
        &"ams_x.y".to_owned(),
        &"garbage".to_owned(),
    ] {
        for url in [
            format!("{ws}/ws/twilio/media/{token}"),
            format!("{ws}/ws/twilio/media?token={token}"),
        ] {
            let (status, body) = refused_upgrade(&url).await;
            assert_eq!(status, 403, "{url}: {body}");
            assert_eq!(body["error"]["code"], "forbidden");
        }
    }
    let (_, body) = refused_upgrade(&format!("{ws}/ws/twilio/media/{expired}")).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );
    // A valid token without a WebSocket handshake is not upgraded either.
    let plain = app
        .client
        .get(app.url(&format!("/ws/twilio/media/{valid}")))
        .send()
        .await
        .unwrap();
    assert_error(plain, 400, "bad_request").await;
}

fn twilio_message(message: Value) -> tungstenite::Message {
    tungstenite::Message::text(message.to_string())
}

fn media_message(track: &str, chunk: usize, samples: &[u8]) -> tungstenite::Message {
    twilio_message(json!({
        "event": "media", "sequenceNumber": (chunk + 2).to_string(), "streamSid": STREAM_SID,
        "media": {
            "track": track, "chunk": chunk.to_string(),
            "timestamp": (chunk * 20).to_string(), "payload": BASE64.encode(samples)
        }
    }))
}

fn start_message(call_sid: &str) -> tungstenite::Message {
    twilio_message(json!({
        "event": "start", "sequenceNumber": "1", "streamSid": STREAM_SID,
        "start": {
            "accountSid": ACCOUNT_SID, "streamSid": STREAM_SID, "callSid": call_sid,
            "tracks": ["inbound"], "customParameters": {},
            "mediaFormat": { "encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1 }
        }
    }))
}

/// Reads until the server closes; its close code.
async fn close_code<S>(socket: &mut S) -> u16
where
    S: futures_util::Stream<Item = Result<tungstenite::Message, tungstenite::Error>> + Unpin,
{
    let read = async {
        while let Some(message) = socket.next().await {
            if let tungstenite::Message::Close(frame) = message.unwrap() {
                return frame.map_or(1005, |frame| u16::from(frame.code));
            }
        }
        panic!("the stream ended without a close frame");
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the server closes the stream")
}

/// The `data` chunk of a WAV, after checking it is μ-law, 8 kHz, mono.
fn mulaw_data(wav: &[u8]) -> &[u8] {
    assert_eq!(&wav[..4], b"RIFF");
    assert_eq!(&wav[8..12], b"WAVE");
    let mut at = 12;
    let mut format = None;
    while at + 8 <= wav.len() {
        let id = &wav[at..at + 4];
        let size = u32::from_le_bytes(wav[at + 4..at + 8].try_into().unwrap()) as usize;
        let chunk = &wav[at + 8..at + 8 + size];
        match id {
            b"fmt " => {
                let u16_at = |i: usize| u16::from_le_bytes([chunk[i], chunk[i + 1]]);
                let rate = u32::from_le_bytes(chunk[4..8].try_into().unwrap());
                format = Some((u16_at(0), u16_at(2), rate, u16_at(14)));
            }
            b"data" => {
                assert_eq!(format, Some((7, 1, 8000, 8)), "μ-law, mono, 8 kHz, 8 bits");
                return chunk;
            }
            _ => {}
        }
        at += 8 + size + size % 2;
    }
    panic!("no data chunk");
}

#[tokio::test]
async fn a_media_stream_is_stored_as_a_sealed_mulaw_wav_of_the_callers_audio() {
    let app = spawn_app_with(|settings| {
        twilio_settings(settings);
        settings.twilio.media_streams = true;
        // An upgraded socket outlives the HTTP deadlines: the stream below
        // pauses longer than the header deadline after its first bytes.
        settings.http.header_read_timeout_secs = 1;
    })
    .await;
    let shop = line(&app, "Streaming Co", "+14155550166").await;
    let greeting = call(
        &app,
        &shop,
        "/api/twilio/voice",
        &[("CallStatus", "ringing")],
    )
    .await;
    assert!(
        greeting.contains("<Start><Stream url=\"") && greeting.contains("track=\"inbound_track\""),
        "{greeting}"
    );
    let gather = greeting
        .find("<Gather")
        .expect("the greeting still listens");
    assert!(greeting.find("<Start>").unwrap() < gather, "{greeting}");
    let url = local_stream_url(&app, &greeting);

    let (mut socket, response) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    socket
        .send(twilio_message(
            json!({ "event": "connected", "protocol": "Call", "version": "1.0.0" }),
        ))
        .await
        .unwrap();
    socket.send(start_message(CALL_SID)).await.unwrap();
    let mut caller_audio = Vec::new();
    for chunk in 0..50 {
        // 20 ms of μ-law each, every byte value in turn.
        let samples: Vec<u8> = (0..160).map(|i| ((chunk * 160 + i) % 251) as u8).collect();
        socket
            .send(media_message("inbound", chunk, &samples))
            .await
            .unwrap();
        caller_audio.extend_from_slice(&samples);
        // What the call played to the caller is not their audio.
        socket
            .send(media_message("outbound", chunk, &[0xff; 160]))
            .await
            .unwrap();
        if chunk == 25 {
            socket
                .send(twilio_message(json!({
                    "event": "mark", "streamSid": STREAM_SID, "mark": { "name": "half" }
                })))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
    }
    socket
        .send(twilio_message(json!({
            "event": "stop", "sequenceNumber": "200", "streamSid": STREAM_SID,
            "stop": { "accountSid": ACCOUNT_SID, "callSid": CALL_SID }
        })))
        .await
        .unwrap();
    assert_eq!(close_code(&mut socket).await, 1000);

    let token = &shop.site.tenant.token;
    let listed = body(app.get("/api/v1/recordings", token).await).await;
    let recordings = listed["recordings"].as_array().unwrap();
    assert_eq!(recordings.len(), 1, "{listed}");
    let recording = &recordings[0];
    assert_eq!(recording["source"], "media_stream");
    assert_eq!(recording["call_sid"], CALL_SID);
    assert_eq!(recording["content_type"], "audio/wav");
    assert_eq!(recording["duration_secs"], 1, "8,000 bytes of audio = 1 s");
    let served = fetch(&app, recording["url"].as_str().unwrap()).await;
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["content-type"], "audio/wav");
    let wav = served.bytes().await.unwrap().to_vec();
    assert_eq!(recording["size_bytes"], wav.len());
    assert_eq!(
        mulaw_data(&wav),
        &caller_audio[..],
        "exactly the caller's payloads"
    );
    let rows = stored_rows(&app).await;
    assert_sealed(&object_on_disk(&app, &rows[0].object_key), &wav);

    // The same token for another call's stream: closed as a policy
    // violation, nothing stored.
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    socket
        .send(start_message("CAffffffffffffffffffffffffffffffff"))
        .await
        .unwrap();
    assert_eq!(close_code(&mut socket).await, 1008);
    assert_eq!(stored_rows(&app).await.len(), 1);
}

#[tokio::test]
async fn media_stored_directly_is_listed_for_its_tenant_only() {
    let app = spawn_app_with(twilio_settings).await;
    let shop = line(&app, "Direct Co", "+14155550167").await;
    let audio = agentry::recordings::wav::mulaw_wav(&[0x7f; 800], 8000);
    let captured = NewAudio {
        call_sid: CALL_SID,
        recording_sid: STREAM_SID,
        content_type: "audio/wav",
        bytes: &audio,
        duration_secs: Some(0),
        source: Source::MediaStream,
    };
    let save = || {
        app.state
            .recordings
            .save(&app.store, shop.site.tenant.id, &captured)
    };
    let saved = save().await.unwrap();
    // The same StreamSid again stores nothing twice.
    let again = save().await.unwrap();
    assert!(matches!(saved, agentry::recordings::Saved::Stored(_)));
    assert_eq!(again, agentry::recordings::Saved::Duplicate);
    assert_eq!(files_on_disk(&app), 1, "the duplicate's object was removed");
    // No conversation for this call: the recording stands alone.
    let rows = stored_rows(&app).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].conversation_id, None);
    let listed = body(
        app.get("/api/v1/recordings?limit=1", &shop.site.tenant.token)
            .await,
    )
    .await;
    assert_eq!(listed["recordings"].as_array().unwrap().len(), 1);
    assert_eq!(listed["next_cursor"], Value::Null);
    let bad = app
        .get("/api/v1/recordings?limit=0", &shop.site.tenant.token)
        .await;
    assert_error(bad, 400, "bad_request").await;
}

#[tokio::test]
async fn a_media_stream_open_at_shutdown_is_stored_before_the_instance_stops() {
    let mut app = spawn_app_with(|settings| {
        twilio_settings(settings);
        settings.twilio.media_streams = true;
    })
    .await;
    let shop = line(&app, "Shutdown Co", "+14155550168").await;
    let greeting = call(
        &app,
        &shop,
        "/api/twilio/voice",
        &[("CallStatus", "ringing")],
    )
    .await;
    let url = local_stream_url(&app, &greeting);
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    socket.send(start_message(CALL_SID)).await.unwrap();
    let said: Vec<u8> = (0..1600).map(|i| (i % 200) as u8).collect();
    for (chunk, samples) in said.chunks(160).enumerate() {
        socket
            .send(media_message("inbound", chunk, samples))
            .await
            .unwrap();
    }
    // Twilio has not stopped the stream when the instance is told to stop.
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.begin_shutdown();
    assert_eq!(close_code(&mut socket).await, 1001, "going away");

    let rows = stored_rows(&app).await;
    assert_eq!(rows.len(), 1, "stored before the close");
    // The instance's pool is closed by now: open the object as it lies.
    let sealed = object_on_disk(&app, &rows[0].object_key);
    let wav = app
        .state
        .keyring
        .open(
            &agentry::recordings::object_owner(shop.site.tenant.id, rows[0].id),
            &sealed,
        )
        .unwrap();
    assert_eq!(mulaw_data(wav.expose()), &said[..]);
}

/// An OpenAI-compatible `/audio/transcriptions`; keeps (authorization, body) of each request.
async fn transcription_api(text: &'static str) -> (String, Arc<Mutex<Vec<(String, Vec<u8>)>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    let router = axum::Router::new().route(
        "/v1/audio/transcriptions",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let authorization = headers
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                let multipart = headers
                    .get("content-type")
                    .is_some_and(|v| v.to_str().unwrap().starts_with("multipart/form-data"));
                assert!(multipart, "{headers:?}");
                kept.lock().unwrap().push((authorization, body.to_vec()));
                axum::Json(json!({ "text": text }))
            }
        }),
    );
    let address = serve_locally(router).await;
    (format!("http://{address}/v1"), seen)
}

#[tokio::test]
async fn a_stored_recording_is_transcribed_by_the_tenants_own_model_and_stored_scrubbed() {
    let app = spawn_app_with(|settings| {
        twilio_settings(settings);
        settings.recordings.transcribe = true;
    })
    .await;
    let shop = line(&app, "Transcript Co", "+14155550170").await;
    let (base_url, requests) =
        transcription_api("Hello, this is a test call. Call me back on 415 555 0123.").await;
    let configured = app
        .request(reqwest::Method::PUT, "/api/v1/llm", Some(&shop.site.tenant.token))
        .json(&json!({ "provider": "vllm", "model": "stand-in", "base_url": base_url, "api_key": "sk-tenant-own-key" }))
        .send()
        .await
        .unwrap();
    assert_eq!(configured.status(), 200);
    call(
        &app,
        &shop,
        "/api/twilio/voice/gather",
        &[("SpeechResult", "Hello")],
    )
    .await;
    let wav = spoken_wav();
    let media = MediaServer::start(wav.clone(), &shop.auth_token).await;
    let (status, answer) =
        recording_callback(&app, &shop, &media.recording_url("127.0.0.1"), "completed").await;
    assert_eq!(status, 200, "{answer}");

    let listed = crate::dispatch::eventually(Duration::from_secs(10), "the transcript", || async {
        let listed = body(app.get("/api/v1/recordings", &shop.site.tenant.token).await).await;
        listed["recordings"][0]["transcript"]
            .is_string()
            .then_some(listed)
    })
    .await;
    let recording = &listed["recordings"][0];
    assert_eq!(
        recording["transcript"],
        "Hello, this is a test call. Call me back on [PHONE]."
    );
    let (authorization, sent) = requests.lock().unwrap()[0].clone();
    assert_eq!(authorization, "Bearer sk-tenant-own-key");
    let sent_text = String::from_utf8_lossy(&sent);
    assert!(sent_text.contains("name=\"model\"") && sent_text.contains("whisper-1"));
    assert!(
        sent.windows(wav.len())
            .any(|window| window == wav.as_slice()),
        "the recording's audio was uploaded as it was recorded"
    );
    let conversation = recording["conversation_id"].as_str().unwrap();
    assert_eq!(
        crate::twilio::audit_rows(&app, conversation).await,
        [("phone".to_owned(), 1)]
    );
    let mut owner = app.owner_connection().await;
    let stored: String = sqlx::query_scalar("SELECT transcript FROM call_recordings")
        .fetch_one(&mut owner)
        .await
        .unwrap();
    assert!(!stored.contains("555"), "{stored}");
}
