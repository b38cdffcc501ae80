//! A server-sent events decoder for streamed completions.
//!
//! Network chunks split events (and lines, and UTF-8 characters) anywhere, so
//! bytes are buffered until a line ends and an event is dispatched at the
//! blank line that closes it, as the WHATWG event-stream format says.

/// One dispatched event. `event` is empty when the stream named none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SseEvent {
    pub event: String,
    pub data: String,
}

/// A line longer than this means the peer is not speaking SSE.
const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("event-stream line longer than {MAX_LINE_BYTES} bytes")]
pub(crate) struct LineTooLong;

#[derive(Debug, Default)]
pub(crate) struct SseDecoder {
    buffer: Vec<u8>,
    event: String,
    data: Vec<String>,
    /// A CR ended the last line; a LF that follows belongs to it.
    after_cr: bool,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes, returning the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, LineTooLong> {
        let mut events = Vec::new();
        let mut bytes = bytes;
        if self.after_cr && !bytes.is_empty() {
            self.after_cr = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\n' | b'\r' => {
                    self.buffer.extend_from_slice(&bytes[start..i]);
                    let line = std::mem::take(&mut self.buffer);
                    if let Some(event) = self.line(&line) {
                        events.push(event);
                    }
                    if bytes[i] == b'\r' {
                        match bytes.get(i + 1) {
                            Some(b'\n') => i += 1,
                            Some(_) => {}
                            None => self.after_cr = true,
                        }
                    }
                    start = i + 1;
                }
                _ => {}
            }
            i += 1;
        }
        self.buffer.extend_from_slice(&bytes[start..]);
        if self.buffer.len() > MAX_LINE_BYTES {
            return Err(LineTooLong);
        }
        Ok(events)
    }

    /// The stream ended: an event still open (no closing blank line) is
    /// dispatched, since some servers end without one.
    pub fn finish(&mut self) -> Option<SseEvent> {
        let line = std::mem::take(&mut self.buffer);
        let mut event = self.line(&line);
        if event.is_none() {
            event = self.line(b"");
        }
        event
    }

    /// Processes one line; a blank line dispatches the pending event.
    fn line(&mut self, line: &[u8]) -> Option<SseEvent> {
        let line = String::from_utf8_lossy(line);
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            if self.data.is_empty() {
                return None;
            }
            let data = std::mem::take(&mut self.data).join("\n");
            return Some(SseEvent { event, data });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => self.data.push(value.to_owned()),
            // `id` and `retry` matter to reconnecting browsers, not to us.
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "event: message_start\r\ndata: {\"a\":\"é→\"}\r\n\r\n: keep-alive\n\ndata: one\ndata: two\n\nevent: x\rdata:tight\r\rdata: [DONE]\n\n";

    fn expected() -> Vec<SseEvent> {
        vec![
            SseEvent {
                event: "message_start".into(),
                data: "{\"a\":\"é→\"}".into(),
            },
            SseEvent {
                event: String::new(),
                data: "one\ntwo".into(),
            },
            SseEvent {
                event: "x".into(),
                data: "tight".into(),
            },
            SseEvent {
                event: String::new(),
                data: "[DONE]".into(),
            },
        ]
    }

    #[test]
    fn every_split_of_the_stream_decodes_the_same() {
        let bytes = STREAM.as_bytes();
        for first in 0..=bytes.len() {
            for second in first..=bytes.len() {
                let mut decoder = SseDecoder::new();
                let mut events = Vec::new();
                for piece in [&bytes[..first], &bytes[first..second], &bytes[second..]] {
                    events.extend(decoder.push(piece).unwrap());
                }
                assert_eq!(decoder.finish(), None);
                assert_eq!(events, expected(), "split at {first}/{second}");
            }
        }
    }

    #[test]
    fn an_unterminated_last_event_is_dispatched_at_the_end() {
        let mut decoder = SseDecoder::new();
        assert!(decoder.push(b"data: {\"x\":1}").unwrap().is_empty());
        assert_eq!(
            decoder.finish(),
            Some(SseEvent {
                event: String::new(),
                data: "{\"x\":1}".into()
            })
        );
    }
}
