//! Server-sent event streams fed by a task: the task sends events into a
//! bounded channel (a slow client holds the task back rather than growing a
//! buffer), and the response streams them, with keep-alive comments.

use std::convert::Infallible;

use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::mpsc;

/// Events a client may fall behind by before its task waits.
const BUFFER: usize = 64;

pub type Sender = mpsc::Sender<Event>;

/// A sender for the task, and the receiving end for [`response`].
pub fn channel() -> (Sender, mpsc::Receiver<Event>) {
    mpsc::channel(BUFFER)
}

/// The response streaming what the task sends, until the task ends.
pub fn response(
    receiver: mpsc::Receiver<Event>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), receiver))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// The `Last-Event-ID` a reconnecting client sends, if any (trimmed).
pub fn last_event_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("last-event-id")
        .map(|value| value.to_str().map(str::trim).unwrap_or("\u{0}"))
        .filter(|id| !id.is_empty())
}

/// One server-sent event, as the API document describes `text/event-stream`
/// content (and as schemathesis checks each event): its name, its data
/// (JSON, as text) and, where the stream is resumable, its id.
#[derive(utoipa::ToSchema)]
#[schema(as = ServerSentEvent)]
#[allow(dead_code)] // describes the wire format; never built
pub struct ServerSentEvent {
    event: String,
    data: String,
    id: Option<String>,
}

/// Counts an open stream in `agentry_live_streams` while it lives.
pub struct StreamGauge(&'static str);

impl StreamGauge {
    pub fn open(audience: &'static str) -> Self {
        metrics::gauge!("agentry_live_streams", "audience" => audience).increment(1.0);
        Self(audience)
    }
}

impl Drop for StreamGauge {
    fn drop(&mut self) {
        metrics::gauge!("agentry_live_streams", "audience" => self.0).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_last_event_id_is_read_trimmed_and_an_unreadable_one_is_not_lost() {
        let mut headers = HeaderMap::new();
        assert_eq!(last_event_id(&headers), None);
        headers.insert("last-event-id", " 5-1 ".parse().unwrap());
        assert_eq!(last_event_id(&headers), Some("5-1"));
        headers.insert("last-event-id", "".parse().unwrap());
        assert_eq!(last_event_id(&headers), None);
        headers.insert(
            "last-event-id",
            axum::http::HeaderValue::from_bytes(b"\xff").unwrap(),
        );
        // Not text: reported as a value no stream gave, so it is refused.
        assert_eq!(last_event_id(&headers), Some("\u{0}"));
    }
}
