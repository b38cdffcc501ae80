//! Twilio Media Streams, the messages: `connected`, `start` (the stream and
//! call SIDs and the media format), `media` (base64 μ-law, 20 ms a message,
//! per track), `stop`; also `mark` and `dtmf`, which carry no audio.
//! [`MediaCapture`] keeps the caller's audio (the inbound track) of one
//! stream within a byte cap; the route feeds it messages and stores what it
//! captured when the stream ends.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::Deserialize;

/// The only format Twilio streams in: G.711 μ-law, 8 kHz, mono.
pub const ENCODING: &str = "audio/x-mulaw";
pub const SAMPLE_RATE: u32 = 8000;

#[derive(Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
enum Message {
    Connected,
    Start {
        start: Start,
    },
    Media {
        media: Media,
    },
    Stop,
    /// `mark`, `dtmf` and whatever Twilio adds later: nothing to record.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Start {
    stream_sid: String,
    call_sid: String,
    media_format: MediaFormat,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MediaFormat {
    encoding: String,
    sample_rate: u32,
    channels: u32,
}

#[derive(Deserialize)]
struct Media {
    /// `inbound` (the caller) or `outbound` (what the call plays); absent
    /// when the stream has one track, which is then the inbound one.
    track: Option<String>,
    payload: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    #[error("message is not a Twilio media stream message: {0}")]
    Malformed(String),
    #[error("media arrived before the stream's start")]
    MediaBeforeStart,
    #[error("the stream started twice")]
    StartedTwice,
    #[error("the stream is for another call than its token names")]
    WrongCall,
    #[error("media format {0} is not audio/x-mulaw at 8000 Hz mono")]
    UnsupportedFormat(String),
    #[error("a stream SID must be MZ followed by 32 hex digits")]
    BadStreamSid,
}

/// What the stream said it is, in its `start` message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamStart {
    pub stream_sid: String,
    pub call_sid: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Continue,
    /// Twilio sent `stop`: the stream is over.
    Stopped,
}

/// One stream's caller audio, as far as the cap allows.
pub struct MediaCapture {
    call_sid: String,
    max_bytes: usize,
    start: Option<StreamStart>,
    audio: Vec<u8>,
    dropped_bytes: usize,
}

/// What a stream left to store.
#[derive(Debug)]
pub struct Captured {
    pub start: StreamStart,
    /// The inbound track's μ-law samples, in order.
    pub audio: Vec<u8>,
    /// Audio past the cap, not kept.
    pub dropped_bytes: usize,
}

impl MediaCapture {
    /// A capture for the call `call_sid` (the token's), keeping at most `max_bytes`.
    pub fn new(call_sid: &str, max_bytes: usize) -> Self {
        Self {
            call_sid: call_sid.to_owned(),
            max_bytes,
            start: None,
            audio: Vec::new(),
            dropped_bytes: 0,
        }
    }

    /// Takes one text message of the stream.
    pub fn accept(&mut self, text: &str) -> Result<Step, StreamError> {
        let message: Message = serde_json::from_str(text)
            .map_err(|error| StreamError::Malformed(error.to_string()))?;
        match message {
            Message::Connected | Message::Other => Ok(Step::Continue),
            Message::Start { start } => {
                if self.start.is_some() {
                    return Err(StreamError::StartedTwice);
                }
                if start.call_sid != self.call_sid {
                    return Err(StreamError::WrongCall);
                }
                if !is_sid(&start.stream_sid, "MZ") {
                    return Err(StreamError::BadStreamSid);
                }
                let format = &start.media_format;
                if format.encoding != ENCODING
                    || format.sample_rate != SAMPLE_RATE
                    || format.channels != 1
                {
                    return Err(StreamError::UnsupportedFormat(format!(
                        "{} at {} Hz, {} channels",
                        format.encoding, format.sample_rate, format.channels
                    )));
                }
                self.start = Some(StreamStart {
                    stream_sid: start.stream_sid,
                    call_sid: start.call_sid,
                });
                Ok(Step::Continue)
            }
            Message::Media { media } => {
                if self.start.is_none() {
                    return Err(StreamError::MediaBeforeStart);
                }
                if media
                    .track
                    .as_deref()
                    .is_some_and(|track| track != "inbound")
                {
                    return Ok(Step::Continue);
                }
                let samples = BASE64
                    .decode(media.payload.as_bytes())
                    .map_err(|error| StreamError::Malformed(format!("payload: {error}")))?;
                let room = self.max_bytes - self.audio.len();
                let kept = samples.len().min(room);
                self.audio.extend_from_slice(&samples[..kept]);
                self.dropped_bytes += samples.len() - kept;
                Ok(Step::Continue)
            }
            Message::Stop => Ok(Step::Stopped),
        }
    }

    /// What there is to store: nothing for a stream that never started.
    pub fn finish(self) -> Option<Captured> {
        let start = self.start?;
        Some(Captured {
            start,
            audio: self.audio,
            dropped_bytes: self.dropped_bytes,
        })
    }
}

/// A Twilio SID: two letters and 32 lowercase hex digits.
pub fn is_sid(sid: &str, prefix: &str) -> bool {
    sid.len() == 34
        && sid.starts_with(prefix)
        && sid[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CALL: &str = "CA0123456789abcdef0123456789abcdef";
    const STREAM: &str = "MZ0123456789abcdef0123456789abcdef";

    fn start(call: &str, encoding: &str, rate: u32) -> String {
        json!({
            "event": "start", "sequenceNumber": "1", "streamSid": STREAM,
            "start": {
                "accountSid": "AC0123456789abcdef0123456789abcdef", "streamSid": STREAM,
                "callSid": call, "tracks": ["inbound"], "customParameters": {},
                "mediaFormat": { "encoding": encoding, "sampleRate": rate, "channels": 1 }
            }
        })
        .to_string()
    }

    fn media(track: &str, samples: &[u8]) -> String {
        json!({
            "event": "media", "sequenceNumber": "2", "streamSid": STREAM,
            "media": { "track": track, "chunk": "1", "timestamp": "5", "payload": BASE64.encode(samples) }
        })
        .to_string()
    }

    #[test]
    fn a_media_stream_keeps_the_inbound_track_in_order_until_stop() {
        let mut capture = MediaCapture::new(CALL, 1000);
        let connected = r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#;
        assert_eq!(capture.accept(connected), Ok(Step::Continue));
        assert_eq!(
            capture.accept(&start(CALL, ENCODING, 8000)),
            Ok(Step::Continue)
        );
        capture.accept(&media("inbound", &[1, 2, 3])).unwrap();
        capture.accept(&media("outbound", &[9, 9, 9])).unwrap();
        capture
            .accept(r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"x"}}"#)
            .unwrap();
        capture.accept(&media("inbound", &[4, 5])).unwrap();
        let stop = r#"{"event":"stop","sequenceNumber":"9","stop":{"callSid":"CA1"}}"#;
        assert_eq!(capture.accept(stop), Ok(Step::Stopped));
        let captured = capture.finish().unwrap();
        assert_eq!(captured.audio, [1, 2, 3, 4, 5]);
        assert_eq!(captured.start.stream_sid, STREAM);
        assert_eq!(captured.dropped_bytes, 0);
    }

    #[test]
    fn a_media_stream_keeps_no_more_than_its_cap() {
        let mut capture = MediaCapture::new(CALL, 4);
        capture.accept(&start(CALL, ENCODING, 8000)).unwrap();
        capture.accept(&media("inbound", &[1, 2, 3])).unwrap();
        capture.accept(&media("inbound", &[4, 5, 6])).unwrap();
        capture.accept(&media("inbound", &[7])).unwrap();
        let captured = capture.finish().unwrap();
        assert_eq!(captured.audio, [1, 2, 3, 4]);
        assert_eq!(captured.dropped_bytes, 3);
    }

    #[test]
    fn a_media_stream_for_another_call_or_format_is_refused() {
        let other = "CAffffffffffffffffffffffffffffffff";
        assert_eq!(
            MediaCapture::new(CALL, 10).accept(&start(other, ENCODING, 8000)),
            Err(StreamError::WrongCall)
        );
        assert!(matches!(
            MediaCapture::new(CALL, 10).accept(&start(CALL, "audio/l16", 8000)),
            Err(StreamError::UnsupportedFormat(_))
        ));
        assert!(matches!(
            MediaCapture::new(CALL, 10).accept(&start(CALL, ENCODING, 16000)),
            Err(StreamError::UnsupportedFormat(_))
        ));
        let mut capture = MediaCapture::new(CALL, 10);
        assert_eq!(
            capture.accept(&media("inbound", &[1])),
            Err(StreamError::MediaBeforeStart)
        );
        capture.accept(&start(CALL, ENCODING, 8000)).unwrap();
        assert_eq!(
            capture.accept(&start(CALL, ENCODING, 8000)),
            Err(StreamError::StartedTwice)
        );
        assert!(matches!(
            capture.accept("not json"),
            Err(StreamError::Malformed(_))
        ));
        assert!(matches!(
            capture.accept(r#"{"event":"media","media":{"track":"inbound","payload":"%%%"}}"#),
            Err(StreamError::Malformed(_))
        ));
    }

    #[test]
    fn a_media_stream_that_never_started_leaves_nothing() {
        let mut capture = MediaCapture::new(CALL, 10);
        capture.accept(r#"{"event":"connected"}"#).unwrap();
        assert!(capture.finish().is_none());
    }
}
