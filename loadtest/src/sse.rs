//! An incremental Server-Sent Events reader: bytes in, event names out.
//!
//! Lines end in LF, CRLF or CR; an empty line dispatches the event; `event:`
//! names it (`message` when unnamed, as the SSE spec says); comments (`:`)
//! such as keep-alives carry no event. Only the names matter here.

/// The events of agentry's visitor stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SseEvent {
    Delta,
    Message,
    Done,
    Error,
    Other,
}

impl SseEvent {
    fn named(name: &[u8]) -> Self {
        match name {
            b"delta" => Self::Delta,
            b"message" | b"" => Self::Message,
            b"done" => Self::Done,
            b"error" => Self::Error,
            _ => Self::Other,
        }
    }
}

#[derive(Default)]
pub struct SseScanner {
    /// The unfinished line.
    line: Vec<u8>,
    /// A CR ended the last line: an LF right after it belongs to it.
    after_cr: bool,
    name: Vec<u8>,
    /// A field (other than a comment) was seen since the last dispatch.
    pending: bool,
}

impl SseScanner {
    /// Reads `bytes`, appending every event completed by them to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) {
        for &byte in bytes {
            if self.after_cr {
                self.after_cr = false;
                if byte == b'\n' {
                    continue;
                }
            }
            match byte {
                b'\n' => self.end_line(out),
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(out);
                }
                other => self.line.push(other),
            }
        }
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            if self.pending {
                out.push(SseEvent::named(&self.name));
            }
            self.name.clear();
            self.pending = false;
        } else if line[0] != b':' {
            let (field, value) = match line.iter().position(|&b| b == b':') {
                Some(colon) => {
                    let value = &line[colon + 1..];
                    (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (&line[..], &[][..]),
            };
            if field == b"event" {
                self.name = value.to_vec();
            }
            self.pending = true;
        }
        // Keep the allocation for the next line.
        self.line = line;
        self.line.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut scanner = SseScanner::default();
        let mut out = Vec::new();
        for chunk in chunks {
            scanner.push(chunk, &mut out);
        }
        out
    }

    #[test]
    fn agentrys_stream_reads_as_delta_message_done() {
        let stream = b"event: delta\ndata: {\"text\":\"Hi.\"}\n\nevent: delta\ndata: {\"text\":\" More.\"}\n\n:\n\nevent: message\ndata: {}\n\nevent: done\ndata: {}\n\n";
        use SseEvent::*;
        assert_eq!(scan(&[stream]), vec![Delta, Delta, Message, Done]);
        // Split anywhere, even inside a field name or between CR and LF.
        let crlf = String::from_utf8_lossy(stream).replace('\n', "\r\n");
        let bytes = crlf.as_bytes();
        for cut in 1..bytes.len() {
            assert_eq!(
                scan(&[&bytes[..cut], &bytes[cut..]]),
                vec![Delta, Delta, Message, Done],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn errors_unnamed_events_and_unfinished_events() {
        use SseEvent::*;
        assert_eq!(
            scan(&[b"event: error\ndata: {}\n\nevent:done\ndata: {}\n\n"]),
            vec![Error, Done]
        );
        assert_eq!(
            scan(&[b"data: x\n\nevent: other\n\n"]),
            vec![Message, Other]
        );
        // No blank line yet: nothing is dispatched.
        assert_eq!(scan(&[b"event: done\ndata: {}\n"]), vec![]);
        // Comments alone dispatch nothing.
        assert_eq!(scan(&[b": keep-alive\n\n\n\n"]), vec![]);
    }
}
