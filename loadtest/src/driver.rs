//! The closed loop: C connections, each one task with one request in flight,
//! cycling round robin over its own visitors (so a visitor never has two
//! turns in flight). Each task keeps its own histograms and counters and
//! hands them back at the end: nothing is shared on the hot path but one
//! atomic read of the phase.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN};
use hyper::{Method, Request, Response, StatusCode, Uri};
use serde::Deserialize;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::client::{BaseUrl, Connection, SendError};
use crate::corpus::Rng;
use crate::sse::{SseEvent, SseScanner};

/// How the visitor asks for the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `{"reply":{…}}` in one JSON body.
    Json,
    /// Server-Sent Events: `delta`… `message` `done`.
    Sse,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Sse => "sse",
        }
    }
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    /// A response with an unexpected status code.
    Status(u16),
    /// No complete response within --timeout.
    Timeout,
    /// The TCP connection could not be opened.
    Connect,
    /// The connection broke, or the response was not HTTP.
    Protocol,
    /// The body was not what the API promises.
    Parse,
    /// The stream carried an `error` event.
    SseError,
    /// The stream ended without `done`.
    SseIncomplete,
}

impl ErrorKind {
    pub fn label(self) -> String {
        match self {
            Self::Status(code) => format!("status_{code}"),
            Self::Timeout => "timeout".into(),
            Self::Connect => "connect".into(),
            Self::Protocol => "protocol".into(),
            Self::Parse => "parse".into(),
            Self::SseError => "sse_error".into(),
            Self::SseIncomplete => "sse_incomplete".into(),
        }
    }

    /// After these the connection's state is unknown: it is reopened.
    fn breaks_connection(self) -> bool {
        matches!(self, Self::Timeout | Self::Protocol | Self::SseIncomplete)
    }
}

impl From<SendError> for ErrorKind {
    fn from(error: SendError) -> Self {
        match error {
            SendError::Connect(_) => Self::Connect,
            SendError::Protocol(_) => Self::Protocol,
        }
    }
}

/// Where the run is; turns are counted by the phase they finish in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Warmup = 0,
    Measure = 1,
    After = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunState {
    Setup,
    Run,
    Stop,
}

/// What every connection does.
pub struct LoadConfig {
    pub mode: Mode,
    /// Sent with every visitor request.
    pub origin: Option<HeaderValue>,
    /// Request bodies, `{"text": …}`, one per question.
    pub questions: Vec<Bytes>,
    /// The widget's public key: visitors open sessions with it (none: the
    /// visitors come with tokens, as in the baseline).
    pub public_key: Option<String>,
    /// Turns per session before a fresh one (0: never).
    pub turns_per_session: u32,
    pub timeout: Duration,
}

/// One run: the base URLs connections are spread over, and the visitors.
pub struct LoadPlan {
    pub bases: Vec<BaseUrl>,
    pub connections: usize,
    /// Bearer tokens given in advance, one per visitor (empty: open sessions).
    pub tokens: Vec<String>,
    pub visitors: usize,
    pub config: LoadConfig,
    pub seed: u64,
}

/// What one connection measured in the window.
pub struct WorkerStats {
    /// Microseconds from sending the request to the complete reply.
    pub latency: Histogram<u64>,
    /// Microseconds from sending the request to the first `delta` (SSE).
    pub first_delta: Histogram<u64>,
    pub turns: u64,
    pub errors: BTreeMap<String, u64>,
    pub sessions_opened: u64,
    pub response_bytes: u64,
}

impl WorkerStats {
    fn new() -> Self {
        Self {
            latency: new_histogram(),
            first_delta: new_histogram(),
            turns: 0,
            errors: BTreeMap::new(),
            sessions_opened: 0,
            response_bytes: 0,
        }
    }

    fn error(&mut self, label: String) {
        *self.errors.entry(label).or_default() += 1;
    }

    /// Adds another connection's figures.
    pub fn merge(&mut self, other: &WorkerStats) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.first_delta.add(&other.first_delta);
        self.turns += other.turns;
        for (kind, count) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += count;
        }
        self.sessions_opened += other.sessions_opened;
        self.response_bytes += other.response_bytes;
    }
}

/// 1 µs to 1 hour at three significant figures.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| {
        // The bounds above are valid constants; this cannot happen.
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures are valid"))
    })
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

struct Shared {
    phase: AtomicU8,
}

/// A running load: created with its sessions open, then started, phased and stopped.
pub struct Load {
    shared: Arc<Shared>,
    state: watch::Sender<RunState>,
    workers: Vec<JoinHandle<WorkerStats>>,
}

impl Load {
    /// Spawns the connections; returns when every visitor has a session.
    pub async fn prepare(plan: LoadPlan) -> anyhow::Result<Load> {
        anyhow::ensure!(!plan.bases.is_empty(), "no base URL");
        anyhow::ensure!(plan.connections > 0, "no connection");
        anyhow::ensure!(!plan.config.questions.is_empty(), "no question to ask");
        let shared = Arc::new(Shared {
            phase: AtomicU8::new(Phase::Warmup as u8),
        });
        let (state, state_rx) = watch::channel(RunState::Setup);
        let config = Arc::new(plan.config);
        let mut visitors: Vec<Vec<Visitor>> = (0..plan.connections).map(|_| Vec::new()).collect();
        let mut rng = Rng::new(plan.seed ^ 0x7669_7369_746f_7273);
        for v in 0..plan.visitors {
            let token = match plan.tokens.get(v) {
                Some(token) => bearer(token)?,
                None => HeaderValue::from_static(""),
            };
            visitors[v % plan.connections].push(Visitor {
                token,
                turns_in_session: 0,
                rng: Rng::new(rng.next_u64()),
            });
        }
        let mut workers = Vec::with_capacity(plan.connections);
        let mut readies = Vec::with_capacity(plan.connections);
        for (index, visitors) in visitors.into_iter().enumerate() {
            let base = plan.bases[index % plan.bases.len()].clone();
            let target = Target::new(&base)?;
            let (ready, ready_rx) = oneshot::channel();
            let worker = Worker {
                connection: Connection::new(base),
                target,
                visitors,
                config: config.clone(),
                shared: shared.clone(),
                needs_sessions: plan.tokens.is_empty(),
            };
            workers.push(tokio::spawn(worker.run(ready, state_rx.clone())));
            readies.push(ready_rx);
        }
        let load = Load {
            shared,
            state,
            workers,
        };
        for ready in readies {
            let result = ready
                .await
                .map_err(|_| anyhow!("a connection task ended during set-up"))
                .and_then(|r| r);
            if let Err(error) = result {
                load.abort();
                return Err(error);
            }
        }
        Ok(load)
    }

    /// Starts the turns, in the warm-up phase.
    pub fn start(&self) {
        self.state.send_replace(RunState::Run);
    }

    pub fn set_phase(&self, phase: Phase) {
        self.shared.phase.store(phase as u8, Ordering::SeqCst);
    }

    fn abort(&self) {
        for worker in &self.workers {
            worker.abort();
        }
    }

    /// Stops every connection (abandoning requests in flight) and adds up their figures.
    pub async fn stop(self) -> WorkerStats {
        self.state.send_replace(RunState::Stop);
        let mut total = WorkerStats::new();
        for worker in self.workers {
            if let Ok(stats) = worker.await {
                total.merge(&stats);
            }
        }
        total
    }
}

fn bearer(token: &str) -> anyhow::Result<HeaderValue> {
    HeaderValue::from_str(&format!("Bearer {token}")).context("a token is not a valid header value")
}

struct Visitor {
    token: HeaderValue,
    turns_in_session: u32,
    rng: Rng,
}

/// Request targets of one base URL, parsed once.
struct Target {
    host: HeaderValue,
    messages: Uri,
    session: Uri,
}

impl Target {
    fn new(base: &BaseUrl) -> anyhow::Result<Self> {
        Ok(Self {
            host: base.host_header(),
            messages: base.uri("/api/widget/messages")?,
            session: base.uri("/api/widget/session")?,
        })
    }
}

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");

struct Worker {
    connection: Connection,
    target: Target,
    visitors: Vec<Visitor>,
    config: Arc<LoadConfig>,
    shared: Arc<Shared>,
    needs_sessions: bool,
}

/// A successful turn.
struct TurnOk {
    latency: Duration,
    first_delta: Option<Duration>,
    bytes: u64,
}

#[derive(Deserialize)]
struct ReplyEnvelope {
    #[allow(dead_code)]
    reply: serde::de::IgnoredAny,
}

#[derive(Deserialize)]
struct SessionEnvelope {
    token: String,
}

impl Worker {
    async fn run(
        mut self,
        ready: oneshot::Sender<anyhow::Result<()>>,
        mut state: watch::Receiver<RunState>,
    ) -> WorkerStats {
        let mut stats = WorkerStats::new();
        if self.needs_sessions {
            for index in 0..self.visitors.len() {
                match self.open_session().await {
                    Ok(token) => self.visitors[index].token = token,
                    Err((kind, detail)) => {
                        let _ = ready.send(Err(anyhow!(
                            "opening a widget session on {} failed ({}): {detail}",
                            self.connection.base(),
                            kind.label()
                        )));
                        return stats;
                    }
                }
            }
        }
        let _ = ready.send(Ok(()));
        if state.wait_for(|s| *s != RunState::Setup).await.is_err() {
            return stats;
        }
        let mut next = 0;
        while *state.borrow() == RunState::Run {
            let visitor = next;
            next = (next + 1) % self.visitors.len();
            let limit = self.config.turns_per_session;
            if self.needs_sessions && limit > 0 && self.visitors[visitor].turns_in_session >= limit
            {
                let opened = tokio::select! {
                    biased;
                    _ = state.wait_for(|s| *s == RunState::Stop) => break,
                    opened = tokio::time::timeout(self.config.timeout, self.open_session()) => opened,
                };
                let measuring = self.phase() == Phase::Measure;
                match opened {
                    Ok(Ok(token)) => {
                        let visitor = &mut self.visitors[visitor];
                        visitor.token = token;
                        visitor.turns_in_session = 0;
                        if measuring {
                            stats.sessions_opened += 1;
                        }
                    }
                    Ok(Err((kind, _))) => {
                        self.after_error(kind).await;
                        if measuring {
                            stats.error(format!("session_{}", kind.label()));
                        }
                    }
                    Err(_) => {
                        self.connection.reset();
                        if measuring {
                            stats.error("session_timeout".into());
                        }
                    }
                }
                continue;
            }

            let question = {
                let rng = &mut self.visitors[visitor].rng;
                self.config.questions[rng.below(self.config.questions.len())].clone()
            };
            let token = self.visitors[visitor].token.clone();
            let outcome = tokio::select! {
                biased;
                _ = state.wait_for(|s| *s == RunState::Stop) => break,
                outcome = tokio::time::timeout(self.config.timeout, self.turn(token, question)) => outcome,
            };
            let measuring = self.phase() == Phase::Measure;
            self.visitors[visitor].turns_in_session += 1;
            match outcome {
                Ok(Ok(ok)) => {
                    if measuring {
                        stats.turns += 1;
                        stats.response_bytes += ok.bytes;
                        stats.latency.saturating_record(micros(ok.latency));
                        if let Some(first) = ok.first_delta {
                            stats.first_delta.saturating_record(micros(first));
                        }
                    }
                }
                Ok(Err(kind)) => {
                    self.after_error(kind).await;
                    if measuring {
                        stats.error(kind.label());
                    }
                }
                Err(_) => {
                    self.connection.reset();
                    if measuring {
                        stats.error(ErrorKind::Timeout.label());
                    }
                }
            }
        }
        stats
    }

    fn phase(&self) -> Phase {
        match self.shared.phase.load(Ordering::Relaxed) {
            0 => Phase::Warmup,
            1 => Phase::Measure,
            _ => Phase::After,
        }
    }

    async fn after_error(&mut self, kind: ErrorKind) {
        if kind.breaks_connection() {
            self.connection.reset();
        }
        if kind == ErrorKind::Connect {
            // Do not spin on a server that is not there.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn request(&self, uri: &Uri, token: Option<HeaderValue>, body: Bytes) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri.clone();
        let headers = request.headers_mut();
        headers.insert(HOST, self.target.host.clone());
        headers.insert(CONTENT_TYPE, JSON);
        if let Some(token) = token {
            headers.insert(AUTHORIZATION, token);
        }
        if let Some(origin) = &self.config.origin {
            headers.insert(ORIGIN, origin.clone());
        }
        request
    }

    async fn open_session(&mut self) -> Result<HeaderValue, (ErrorKind, String)> {
        let key = self.config.public_key.as_deref().unwrap_or("");
        let body = Bytes::from(serde_json::json!({ "public_key": key }).to_string());
        let mut request = self.request(&self.target.session, None, body);
        request.headers_mut().insert(ACCEPT, JSON);
        let response = self.connection.send(request).await.map_err(|e| {
            let detail = e.to_string();
            (ErrorKind::from(e), detail)
        })?;
        let status = response.status();
        let body = collect(response)
            .await
            .map_err(|kind| (kind, "the body did not arrive".to_owned()))?;
        if status != StatusCode::CREATED {
            return Err((
                ErrorKind::Status(status.as_u16()),
                crate::client::snippet(&body),
            ));
        }
        let session: SessionEnvelope = serde_json::from_slice(&body).map_err(|e| {
            (
                ErrorKind::Parse,
                format!("{e}: {}", crate::client::snippet(&body)),
            )
        })?;
        bearer(&session.token).map_err(|e| (ErrorKind::Parse, e.to_string()))
    }

    async fn turn(&mut self, token: HeaderValue, question: Bytes) -> Result<TurnOk, ErrorKind> {
        let started = Instant::now();
        let mut request = self.request(&self.target.messages, Some(token), question);
        let mode = self.config.mode;
        request.headers_mut().insert(
            ACCEPT,
            match mode {
                Mode::Json => JSON,
                Mode::Sse => EVENT_STREAM,
            },
        );
        let response = self.connection.send(request).await?;
        if response.status() != StatusCode::OK {
            let status = response.status().as_u16();
            // Read the error body so that the connection can carry the next request.
            collect(response).await?;
            return Err(ErrorKind::Status(status));
        }
        match mode {
            Mode::Json => {
                let body = collect(response).await?;
                serde_json::from_slice::<ReplyEnvelope>(&body).map_err(|_| ErrorKind::Parse)?;
                Ok(TurnOk {
                    latency: started.elapsed(),
                    first_delta: None,
                    bytes: body.len() as u64,
                })
            }
            Mode::Sse => read_stream(response, started).await,
        }
    }
}

async fn collect(response: Response<Incoming>) -> Result<Bytes, ErrorKind> {
    Ok(response
        .into_body()
        .collect()
        .await
        .map_err(|_| ErrorKind::Protocol)?
        .to_bytes())
}

/// Reads an SSE reply to its end: the time of the first `delta`, and of `done`.
async fn read_stream(response: Response<Incoming>, started: Instant) -> Result<TurnOk, ErrorKind> {
    let mut body = response.into_body();
    let mut scanner = SseScanner::default();
    let mut events = Vec::new();
    let mut first_delta = None;
    let mut done = None;
    let mut failed = false;
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ErrorKind::Protocol)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        bytes += data.len() as u64;
        scanner.push(&data, &mut events);
        for event in events.drain(..) {
            match event {
                SseEvent::Delta => {
                    first_delta.get_or_insert_with(|| started.elapsed());
                }
                SseEvent::Error => failed = true,
                SseEvent::Done => {
                    done.get_or_insert_with(|| started.elapsed());
                }
                SseEvent::Message | SseEvent::Other => {}
            }
        }
    }
    if failed {
        return Err(ErrorKind::SseError);
    }
    let latency = done.ok_or(ErrorKind::SseIncomplete)?;
    Ok(TurnOk {
        latency,
        first_delta,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_have_stable_labels() {
        assert_eq!(ErrorKind::Status(503).label(), "status_503");
        assert_eq!(ErrorKind::SseError.label(), "sse_error");
        assert!(ErrorKind::Timeout.breaks_connection());
        assert!(!ErrorKind::Status(429).breaks_connection());
    }

    #[test]
    fn worker_figures_merge() {
        let mut a = WorkerStats::new();
        a.turns = 2;
        a.latency.record(1000).unwrap();
        a.error("timeout".into());
        let mut b = WorkerStats::new();
        b.turns = 3;
        b.latency.record(3000).unwrap();
        b.error("timeout".into());
        b.error("status_503".into());
        a.merge(&b);
        assert_eq!(a.turns, 5);
        assert_eq!(a.latency.len(), 2);
        assert_eq!(a.errors["timeout"], 2);
        assert_eq!(a.errors["status_503"], 1);
        assert_eq!(micros(Duration::ZERO), 1);
    }
}
