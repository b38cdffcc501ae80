//! The HTTP/SSE transport of the remote providers: requests, the event
//! stream reader, timeouts, retries with
//! exponential backoff and jitter, `Retry-After`, status classification,
//! key-free error messages, and the request metrics.
//!
//! A request is retried only while nothing has reached the caller: once a
//! delta or tool call has been emitted, replaying would duplicate the answer.

use std::future::Future;
use std::time::{Duration, Instant};

use agentry_actors::llm::LlmError;
use agentry_actors::Secret;
use rand::Rng;
use reqwest::{RequestBuilder, Response, StatusCode};

use super::sse::{SseDecoder, SseEvent};
use super::ProviderConfig;

/// How long to wait and how often to try again.
#[derive(Clone, Debug)]
pub(crate) struct RetryPolicy {
    /// Longest wait for response headers, and between two pieces of a body.
    pub timeout: Duration,
    pub max_retries: u32,
    /// The first backoff; each retry doubles it, up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// `Retry-After` longer than this is shortened to it.
    pub retry_after_cap: Duration,
}

impl RetryPolicy {
    pub fn from_config(config: &ProviderConfig) -> Self {
        Self {
            timeout: config.timeout(),
            max_retries: config.max_retries,
            base_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
            retry_after_cap: Duration::from_secs(20),
        }
    }

    /// Backoff before retry number `retry` (0 for the first), with "equal
    /// jitter": half the exponential step fixed, half random, so clients that
    /// failed together do not retry together. `jitter` is in `[0, 1]`.
    pub fn backoff(&self, retry: u32, jitter: f64) -> Duration {
        let step = self
            .base_backoff
            .saturating_mul(1u32.checked_shl(retry.min(16)).unwrap_or(u32::MAX))
            .min(self.max_backoff);
        let half = step / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }

    fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(wait) => wait.min(self.retry_after_cap),
            None => self.backoff(retry, rand::thread_rng().gen_range(0.0..=1.0)),
        }
    }
}

/// Why one attempt failed, and whether another may follow.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Nothing reached the caller yet and the cause may pass.
    Retryable {
        error: LlmError,
        retry_after: Option<Duration>,
    },
    Final(LlmError),
}

impl Failure {
    pub fn retryable(error: LlmError) -> Self {
        Self::Retryable {
            error,
            retry_after: None,
        }
    }

    /// A transient failure becomes final once output has been emitted.
    pub fn after_output(self, emitted: bool) -> Self {
        match self {
            Self::Retryable { error, .. } if emitted => Self::Final(error),
            other => other,
        }
    }
}

/// A streamed response body, read as server-sent events with [`Transport::next_events`].
pub(crate) struct EventStream {
    response: Response,
    decoder: SseDecoder,
    ended: bool,
}

impl EventStream {
    pub fn new(response: Response) -> Self {
        Self {
            response,
            decoder: SseDecoder::new(),
            ended: false,
        }
    }
}

/// The bounded metric labels for a result.
fn outcome(result: &Result<impl Sized, LlmError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(LlmError::Unavailable(_)) => "unavailable",
        Err(LlmError::Rejected(_)) => "rejected",
        Err(LlmError::Protocol(_)) => "protocol",
    }
}

/// Which pair of metrics a call records into.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Operation {
    Chat,
    Embed,
}

pub(crate) fn record(
    operation: Operation,
    provider: &'static str,
    outcome: &'static str,
    elapsed: Duration,
) {
    let (total, duration) = match operation {
        Operation::Chat => (
            "agentry_llm_requests_total",
            "agentry_llm_request_duration_seconds",
        ),
        Operation::Embed => (
            "agentry_llm_embedding_requests_total",
            "agentry_llm_embedding_request_duration_seconds",
        ),
    };
    metrics::counter!(total, "provider" => provider, "outcome" => outcome).increment(1);
    metrics::histogram!(duration, "provider" => provider).record(elapsed.as_secs_f64());
}

/// A provider's HTTP side: the shared client, its policy, its label, and the
/// key to keep out of every message.
#[derive(Clone, Debug)]
pub(crate) struct Transport {
    http: reqwest::Client,
    pub policy: RetryPolicy,
    pub provider: &'static str,
    key: Option<Secret<String>>,
}

impl Transport {
    pub fn new(
        http: reqwest::Client,
        policy: RetryPolicy,
        provider: &'static str,
        key: Option<Secret<String>>,
    ) -> Self {
        Self {
            http,
            policy,
            provider,
            key,
        }
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.http
    }

    /// Runs `attempt` until it succeeds, fails for good, or retries run out,
    /// then records the outcome and the total duration.
    pub async fn run<T, F, Fut>(&self, operation: Operation, mut attempt: F) -> Result<T, LlmError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let started = Instant::now();
        let mut retry = 0;
        let result = loop {
            match attempt().await {
                Ok(value) => break Ok(value),
                Err(Failure::Final(error)) => break Err(error),
                Err(Failure::Retryable { error, .. }) if retry >= self.policy.max_retries => {
                    break Err(error)
                }
                Err(Failure::Retryable { error, retry_after }) => {
                    let delay = self.policy.delay(retry, retry_after);
                    tracing::warn!(
                        provider = self.provider,
                        retry = retry + 1,
                        delay_ms = delay.as_millis() as u64,
                        error = %error,
                        "LLM request failed, retrying"
                    );
                    metrics::counter!("agentry_llm_retries_total", "provider" => self.provider)
                        .increment(1);
                    tokio::time::sleep(delay).await;
                    retry += 1;
                }
            }
        };
        record(
            operation,
            self.provider,
            outcome(&result),
            started.elapsed(),
        );
        result
    }

    /// Sends a request and classifies the status: success returns the
    /// response; 429 and 5xx may be retried; other statuses are final.
    pub async fn send(&self, request: RequestBuilder) -> Result<Response, Failure> {
        let response = match tokio::time::timeout(self.policy.timeout, request.send()).await {
            Err(_) => {
                return Err(Failure::retryable(LlmError::Unavailable(format!(
                    "no response within {}",
                    describe_duration(self.policy.timeout)
                ))))
            }
            Ok(Err(error)) if error.is_builder() => {
                return Err(Failure::Final(LlmError::Unavailable(
                    self.scrub(&describe(&error)),
                )))
            }
            Ok(Err(error)) => {
                return Err(Failure::retryable(LlmError::Unavailable(
                    self.scrub(&describe(&error)),
                )))
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = retry_after(&response);
        let detail = self.error_detail(status, response).await;
        Err(
            if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                Failure::Retryable {
                    error: LlmError::Unavailable(detail),
                    retry_after,
                }
            } else if status.is_client_error() {
                Failure::Final(LlmError::Rejected(detail))
            } else {
                Failure::Final(LlmError::Protocol(detail))
            },
        )
    }

    /// The next piece of a body, waiting at most the timeout for it.
    pub async fn next_chunk(&self, response: &mut Response) -> Result<Option<Vec<u8>>, Failure> {
        match tokio::time::timeout(self.policy.timeout, response.chunk()).await {
            Err(_) => Err(Failure::retryable(LlmError::Unavailable(format!(
                "the response stalled for {}",
                describe_duration(self.policy.timeout)
            )))),
            Ok(Err(error)) => Err(Failure::retryable(LlmError::Unavailable(
                self.scrub(&describe(&error)),
            ))),
            Ok(Ok(chunk)) => Ok(chunk.map(|bytes| bytes.to_vec())),
        }
    }

    /// The events of the next piece of a streamed body, waiting at most the
    /// timeout for it; `None` once the body has ended and its last event was given.
    pub async fn next_events(
        &self,
        body: &mut EventStream,
    ) -> Result<Option<Vec<SseEvent>>, Failure> {
        if body.ended {
            return Ok(None);
        }
        match self.next_chunk(&mut body.response).await? {
            Some(bytes) => body
                .decoder
                .push(&bytes)
                .map(Some)
                .map_err(|e| Failure::Final(LlmError::Protocol(e.to_string()))),
            None => {
                body.ended = true;
                Ok(Some(body.decoder.finish().into_iter().collect()))
            }
        }
    }

    /// A whole (small) body, e.g. an embeddings response, within `limit` bytes.
    pub async fn read_body(
        &self,
        response: &mut Response,
        limit: usize,
    ) -> Result<Vec<u8>, Failure> {
        let mut body = Vec::new();
        while let Some(chunk) = self.next_chunk(response).await? {
            body.extend_from_slice(&chunk);
            if body.len() > limit {
                return Err(Failure::Final(LlmError::Protocol(format!(
                    "response body larger than {limit} bytes"
                ))));
            }
        }
        Ok(body)
    }

    /// "HTTP 401 (invalid_request_error): message", from the provider's JSON
    /// error body when it has one, without the key.
    async fn error_detail(&self, status: StatusCode, mut response: Response) -> String {
        const LIMIT: usize = 16 * 1024;
        let mut body = Vec::new();
        while body.len() < LIMIT {
            match tokio::time::timeout(self.policy.timeout, response.chunk()).await {
                Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        body.truncate(LIMIT);
        let text = String::from_utf8_lossy(&body);
        let mut detail = format!("HTTP {}", status.as_u16());
        let parsed = serde_json::from_str::<serde_json::Value>(&text).ok();
        let error = parsed
            .as_ref()
            .map(|value| value.get("error").unwrap_or(value));
        let field = |name: &str| {
            error
                .and_then(|e| e.get(name))
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
        };
        if let Some(kind) = field("type").or_else(|| field("code")) {
            detail.push_str(&format!(" ({kind})"));
        }
        let message = match error {
            Some(_) => field("message").unwrap_or("").to_owned(),
            None => text.trim().to_owned(),
        };
        if !message.is_empty() {
            detail.push_str(": ");
            detail.push_str(&truncate(&message, 300));
        }
        self.scrub(&detail)
    }

    /// The same failure with the key scrubbed from its message.
    pub fn scrub_failure(&self, failure: Failure) -> Failure {
        let scrub = |error: LlmError| match error {
            LlmError::Unavailable(m) => LlmError::Unavailable(self.scrub(&m)),
            LlmError::Rejected(m) => LlmError::Rejected(self.scrub(&m)),
            LlmError::Protocol(m) => LlmError::Protocol(self.scrub(&m)),
        };
        match failure {
            Failure::Retryable { error, retry_after } => Failure::Retryable {
                error: scrub(error),
                retry_after,
            },
            Failure::Final(error) => Failure::Final(scrub(error)),
        }
    }

    /// Removes the key, and any word holding a piece of it (providers echo
    /// keys back partly masked, e.g. `sk-abc***xyz`).
    pub fn scrub(&self, text: &str) -> String {
        match &self.key {
            Some(key) => scrub_key(text, key.expose()),
            None => text.to_owned(),
        }
    }
}

/// The shortest piece of a key that marks a word as carrying it.
const KEY_FRAGMENT: usize = 6;

pub(crate) fn scrub_key(text: &str, key: &str) -> String {
    let key = key.trim();
    if key.is_empty() {
        return text.to_owned();
    }
    let text = text.replace(key, "[redacted]");
    let carries_key = |word: &str| {
        word.contains("***")
            || (key.len() >= KEY_FRAGMENT
                && key
                    .as_bytes()
                    .windows(KEY_FRAGMENT)
                    .filter_map(|piece| std::str::from_utf8(piece).ok())
                    .any(|piece| word.contains(piece)))
    };
    text.split(' ')
        .map(|word| {
            if carries_key(word) {
                "[redacted]"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `Retry-After` (or Azure/OpenAI's `retry-after-ms`) as a duration.
fn retry_after(response: &Response) -> Option<Duration> {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_secs_f64(ms / 1000.0));
        }
    }
    // The HTTP-date form is rare from these APIs; the backoff covers it.
    header("retry-after")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// A reqwest error without its URL (which may name internal hosts), with the
/// cause chain that says what actually went wrong.
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_body() || error.is_decode() {
        "reading the response failed"
    } else {
        "request failed"
    };
    let mut message = kind.to_owned();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn describe_duration(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            timeout: Duration::from_secs(1),
            max_retries: 3,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            retry_after_cap: Duration::from_secs(2),
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let policy = policy();
        assert_eq!(policy.backoff(0, 0.0), Duration::from_millis(50));
        assert_eq!(policy.backoff(0, 1.0), Duration::from_millis(100));
        assert_eq!(policy.backoff(1, 0.0), Duration::from_millis(100));
        assert_eq!(policy.backoff(2, 1.0), Duration::from_millis(400));
        assert_eq!(policy.backoff(3, 1.0), Duration::from_millis(500));
        assert_eq!(policy.backoff(40, 1.0), Duration::from_millis(500));
    }

    #[test]
    fn retry_after_is_capped() {
        let policy = policy();
        assert_eq!(
            policy.delay(0, Some(Duration::from_secs(60))),
            Duration::from_secs(2)
        );
        assert_eq!(
            policy.delay(0, Some(Duration::from_millis(10))),
            Duration::from_millis(10)
        );
    }

    #[test]
    fn scrubbing_removes_the_key_and_masked_echoes_of_it() {
        let key = "sk-live-0123456789abcdef";
        let text = format!("Incorrect API key provided: sk-live-012***cdef. Full: {key}");
        let clean = scrub_key(&text, key);
        assert!(!clean.contains(key));
        assert!(!clean.contains("sk-live-012"));
        assert!(clean.starts_with("Incorrect API key provided: [redacted]"));
        assert_eq!(scrub_key("nothing here", key), "nothing here");
    }
}
