//! The kinds of traffic a cluster run sends through the balancer, each a
//! lane of closed-loop connections (one request in flight each). Every
//! request is kept as a timestamped sample, so that the report can cut any
//! window afterwards: before, during and after a fault.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN};
use hyper::{Method, Request, StatusCode, Uri};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::{BaseUrl, Connection};
use crate::corpus::Rng;
use crate::driver::ErrorKind;

use super::fleet;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LaneKind {
    /// Widget chat turns answered from the knowledge base.
    Chat,
    /// Chat turns that give contact details: each captures a lead (a tool
    /// call and a webhook event).
    Leads,
    /// The dashboard's list pages, as a signed-in admin.
    Dashboard,
    /// New widget sessions from one client address: the hot rate-limit key.
    LimitHot,
    /// New widget sessions, each from another of 65,536 client addresses.
    LimitMany,
}

impl LaneKind {
    pub fn label(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Leads => "leads",
            Self::Dashboard => "dashboard",
            Self::LimitHot => "limit_hot",
            Self::LimitMany => "limit_many",
        }
    }
}

/// What a request came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// 429 where the lane probes the limiter.
    Refused,
    Error(String),
}

/// One request: when it finished (ms since the lanes started), how long it took.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at_ms: u32,
    pub micros: u32,
    pub outcome: Outcome,
}

/// What the lanes need to know about the seeded tenants.
pub struct Targets {
    pub balancer: BaseUrl,
    pub origin: HeaderValue,
    /// The load tenant's widget (limits raised far beyond the run's rate).
    pub public_key: String,
    /// The limiter tenant's widget (default limits).
    pub limited_public_key: String,
    pub admin_token: String,
    pub questions: Vec<Bytes>,
    pub visitors_per_connection: usize,
    pub timeout: Duration,
    pub seed: u64,
}

/// Running lanes; `stop` ends them and hands back every sample.
pub struct Lanes {
    stop: watch::Sender<bool>,
    pub started: Instant,
    workers: Vec<(LaneKind, JoinHandle<Vec<Sample>>)>,
}

impl Lanes {
    pub fn start(targets: Arc<Targets>, lanes: &[(LaneKind, usize)]) -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let started = Instant::now();
        let mut workers = Vec::new();
        let mut index = 0u64;
        for &(kind, connections) in lanes {
            for _ in 0..connections {
                index += 1;
                let worker = Worker::new(kind, index, targets.clone(), started);
                workers.push((kind, tokio::spawn(worker.run(stop_rx.clone()))));
            }
        }
        Self {
            stop,
            started,
            workers,
        }
    }

    /// Stops every connection (abandoning requests in flight) and collects the samples.
    pub async fn stop(self) -> Vec<(LaneKind, Vec<Sample>)> {
        self.stop.send_replace(true);
        let mut all: Vec<(LaneKind, Vec<Sample>)> = Vec::new();
        for (kind, worker) in self.workers {
            let samples = worker.await.unwrap_or_default();
            match all.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, existing)) => existing.extend(samples),
                None => all.push((kind, samples)),
            }
        }
        for (_, samples) in &mut all {
            samples.sort_by_key(|s| s.at_ms);
        }
        all
    }
}

const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// The dashboard pages' reads.
const DASHBOARD_PATHS: [&str; 4] = [
    "/api/v1/conversations?limit=20",
    "/api/v1/leads?limit=20",
    "/api/v1/agents",
    "/api/v1/webhook-endpoints",
];

struct Worker {
    kind: LaneKind,
    /// Unique across the run: part of every generated email address.
    index: u64,
    targets: Arc<Targets>,
    connection: Connection,
    started: Instant,
    /// Widget session tokens (chat lanes), None until opened or after a 401.
    sessions: Vec<Option<HeaderValue>>,
    next_session: usize,
    sent: u64,
    rng: Rng,
    messages: Uri,
    session: Uri,
}

#[derive(Deserialize)]
struct SessionEnvelope {
    token: String,
}

impl Worker {
    fn new(kind: LaneKind, index: u64, targets: Arc<Targets>, started: Instant) -> Self {
        let base = targets.balancer.clone();
        let connection = match kind {
            LaneKind::LimitHot => Connection::from_source(base.clone(), fleet::hot_client()),
            _ => Connection::new(base.clone()),
        };
        let sessions = match kind {
            LaneKind::Chat | LaneKind::Leads => vec![None; targets.visitors_per_connection],
            _ => Vec::new(),
        };
        let rng = Rng::new(targets.seed ^ (index << 32) ^ 0x6c61_6e65);
        Self {
            kind,
            index,
            connection,
            started,
            sessions,
            next_session: 0,
            sent: 0,
            rng,
            messages: parse_uri(&base, "/api/widget/messages"),
            session: parse_uri(&base, "/api/widget/session"),
            targets,
        }
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) -> Vec<Sample> {
        let mut samples = Vec::new();
        while !*stop.borrow() {
            let began = Instant::now();
            let timeout = self.targets.timeout;
            let outcome = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break,
                outcome = tokio::time::timeout(timeout, self.request()) => outcome,
            };
            let outcome = match outcome {
                Ok(outcome) => outcome,
                Err(_) => {
                    self.connection.reset();
                    Outcome::Error(ErrorKind::Timeout.label())
                }
            };
            if let Outcome::Error(_) = &outcome {
                // Do not spin on a balancer or instance that is not answering.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            samples.push(Sample {
                at_ms: u32::try_from(self.started.elapsed().as_millis()).unwrap_or(u32::MAX),
                micros: u32::try_from(began.elapsed().as_micros()).unwrap_or(u32::MAX),
                outcome,
            });
        }
        samples
    }

    async fn request(&mut self) -> Outcome {
        self.sent += 1;
        match self.kind {
            LaneKind::Chat => {
                let question =
                    self.targets.questions[self.rng.below(self.targets.questions.len())].clone();
                self.turn(question).await
            }
            LaneKind::Leads => {
                // A new address each time: each turn is a new lead and one event.
                let text = format!(
                    "Hi, I'm Ana Lopez, please reach me at ana.lopez+w{}n{}@example.com about the service.",
                    self.index, self.sent
                );
                self.turn(Bytes::from(serde_json::json!({ "text": text }).to_string()))
                    .await
            }
            LaneKind::Dashboard => {
                let path = DASHBOARD_PATHS[(self.sent as usize) % DASHBOARD_PATHS.len()];
                let uri = parse_uri(&self.targets.balancer, path);
                let token = HeaderValue::from_str(&format!("Bearer {}", self.targets.admin_token))
                    .unwrap_or(HeaderValue::from_static(""));
                match self
                    .send(Method::GET, &uri, Some(token), Bytes::new())
                    .await
                {
                    Ok((StatusCode::OK, _)) => Outcome::Ok,
                    Ok((status, _)) => status_error(status),
                    Err(kind) => Outcome::Error(kind.label()),
                }
            }
            LaneKind::LimitHot | LaneKind::LimitMany => {
                if self.kind == LaneKind::LimitMany {
                    // Each new session from a client address of its own.
                    let n = self.index.wrapping_mul(7919).wrapping_add(self.sent) % 65_536;
                    self.connection.set_source(fleet::many_client(n));
                }
                let key = self.targets.limited_public_key.clone();
                match self.open_session(&key).await {
                    Ok(_) => Outcome::Ok,
                    Err(Outcome::Error(label)) if label == "status_429" => Outcome::Refused,
                    Err(outcome) => outcome,
                }
            }
        }
    }

    /// One chat turn on the next session, opening it first if it has none.
    async fn turn(&mut self, body: Bytes) -> Outcome {
        let slot = self.next_session;
        self.next_session = (self.next_session + 1) % self.sessions.len();
        let token = match self.sessions[slot].clone() {
            Some(token) => token,
            None => {
                let key = self.targets.public_key.clone();
                match self.open_session(&key).await {
                    Ok(token) => {
                        self.sessions[slot] = Some(token.clone());
                        token
                    }
                    Err(Outcome::Error(label)) => {
                        return Outcome::Error(format!("session_{label}"))
                    }
                    Err(other) => return other,
                }
            }
        };
        let uri = self.messages.clone();
        match self.send(Method::POST, &uri, Some(token), body).await {
            Ok((StatusCode::OK, _)) => Outcome::Ok,
            Ok((status, _)) => {
                if status == StatusCode::UNAUTHORIZED {
                    // The session is gone (Redis lost it): the visitor opens a new one.
                    self.sessions[slot] = None;
                }
                status_error(status)
            }
            Err(kind) => Outcome::Error(kind.label()),
        }
    }

    async fn open_session(&mut self, public_key: &str) -> Result<HeaderValue, Outcome> {
        let body = Bytes::from(serde_json::json!({ "public_key": public_key }).to_string());
        let uri = self.session.clone();
        match self.send(Method::POST, &uri, None, body).await {
            Ok((StatusCode::CREATED, body)) => {
                let session: SessionEnvelope = serde_json::from_slice(&body)
                    .map_err(|_| Outcome::Error(ErrorKind::Parse.label()))?;
                HeaderValue::from_str(&format!("Bearer {}", session.token))
                    .map_err(|_| Outcome::Error(ErrorKind::Parse.label()))
            }
            Ok((status, _)) => Err(status_error(status)),
            Err(kind) => Err(Outcome::Error(kind.label())),
        }
    }

    async fn send(
        &mut self,
        method: Method,
        uri: &Uri,
        token: Option<HeaderValue>,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), ErrorKind> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri.clone();
        let headers = request.headers_mut();
        headers.insert(HOST, self.targets.balancer.host_header());
        headers.insert(ACCEPT, JSON);
        headers.insert(CONTENT_TYPE, JSON);
        headers.insert(ORIGIN, self.targets.origin.clone());
        if let Some(token) = token {
            headers.insert(AUTHORIZATION, token);
        }
        let response = self.connection.send(request).await.map_err(|error| {
            self.connection.reset();
            ErrorKind::from(error)
        })?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|_| {
                self.connection.reset();
                ErrorKind::Protocol
            })?
            .to_bytes();
        Ok((status, bytes))
    }
}

fn status_error(status: StatusCode) -> Outcome {
    Outcome::Error(ErrorKind::Status(status.as_u16()).label())
}

fn parse_uri(base: &BaseUrl, path: &str) -> Uri {
    base.uri(path)
        .unwrap_or_else(|_| unreachable!("the lanes' paths are valid request targets"))
}
