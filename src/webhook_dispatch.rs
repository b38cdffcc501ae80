//! The asynchronous path of webhooks, on every instance: the outbox relay,
//! the dispatcher reading the `events` stream through the `webhooks`
//! consumer group, the mover of due retries, and the gauges.
//!
//! Each part is an actor under the instance's `WebhookDispatcher`
//! supervisor (`webhook_supervisor`), restarted if it crashes. The limits are
//! permits held across each attempt (an instance semaphore and one per
//! endpoint), and shutdown drains the attempts in flight before the parts
//! return.
//!
//! Durability: PostgreSQL is the record, Redis the fast path. An event is
//! acknowledged on the stream only after each of its attempts has its row
//! (final, or `retrying` with its due time); an event whose endpoints all
//! have rows is settled. What Redis loses (FLUSHALL, a restart without
//! persistence) is rebuilt from the outbox: the first instance to notice the
//! missing epoch sentinel republishes unsettled events and reschedules
//! recorded retries; a periodic sweep does the same for anything stuck.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentry_actors::ports::{StreamBus, StreamEntry};
use agentry_actors::TenantId;
use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use uuid::Uuid;

use crate::bus::{entry_time_ms, RedisBus};
use crate::configuration::WebhookSettings;
use crate::crypto::Keyring;
use crate::db::outbox::{self, OutboxEvent, EVENTS};
use crate::db::webhook_endpoints::{self, Endpoint};
use crate::db::{webhook_deliveries, DbError, Store};
use crate::net_guard::GuardedClient;
use crate::telemetry::age_secs;
use crate::webhook_delivery::{self, Attempt, AttemptRecord};
use crate::webhook_retry::RetrySchedule;
use crate::webhook_supervisor::{supervise, Part};

/// The consumer group of webhook dispatchers on the `events` stream.
pub const GROUP: &str = "webhooks";
/// Entries read per XREADGROUP, at most (fewer when few permits are free).
const READ_BATCH: usize = 64;
const READ_BLOCK: Duration = Duration::from_secs(1);
/// Retries due by another instance are picked up at least this often.
const MOVER_RECHECK: Duration = Duration::from_secs(1);
const MOVE_BATCH: usize = 500;
const EPOCH_CHECK_EVERY: Duration = Duration::from_millis(250);
const GAUGES_EVERY: Duration = Duration::from_secs(1);
const BACKOFF: Duration = Duration::from_secs(1);

/// The stop signal every loop here listens to; startup owns the sender.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    pub fn new(receiver: watch::Receiver<bool>) -> Self {
        Self(receiver)
    }

    pub fn is_stopping(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once stopping (or once the sender is gone).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    /// Sleeps for `duration`; false if interrupted by shutdown.
    async fn sleep(&mut self, duration: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(duration) => true,
            _ = self.wait() => false,
        }
    }
}

/// A scheduled attempt of one event at one endpoint, on the stream beside
/// fresh events. `job` makes each payload unique (delayed-set members are).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttemptJob {
    pub job: Uuid,
    pub event: OutboxEvent,
    pub endpoint_id: Uuid,
    pub attempt: u32,
    /// When it was due (Unix ms), for the lateness histogram.
    pub due_ms: i64,
    /// A redelivery asked for from the dashboard: one attempt, no retries.
    #[serde(default)]
    pub manual: bool,
}

impl AttemptJob {
    pub fn new(event: OutboxEvent, endpoint_id: Uuid, attempt: u32, due: DateTime<Utc>) -> Self {
        Self {
            job: Uuid::new_v4(),
            event,
            endpoint_id,
            attempt,
            due_ms: due.timestamp_millis(),
            manual: false,
        }
    }

    pub fn payload(&self) -> String {
        serde_json::to_string(self).expect("a job serializes")
    }
}

/// What an entry of the `events` stream holds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StreamJob {
    Attempt(AttemptJob),
    Event(OutboxEvent),
}

/// The final state of one attempt, as metric label and audit outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    Success,
    Retrying,
    Failed,
    Blocked,
}

impl DeliveryState {
    pub const ALL: [Self; 4] = [Self::Success, Self::Retrying, Self::Failed, Self::Blocked];

    pub fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Retrying => "retrying",
            Self::Failed => "failed",
            Self::Blocked => "blocked",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.label() == text)
    }
}

/// One attempt made: its metrics and its log line, emitted together.
struct WebhookAttempted {
    event: Uuid,
    endpoint: Uuid,
    attempt: u32,
    state: DeliveryState,
    took: Duration,
}

impl WebhookAttempted {
    fn emit(self) {
        let state = self.state.label();
        metrics::counter!("agentry_webhook_deliveries_total", "state" => state).increment(1);
        metrics::histogram!("agentry_webhook_attempt_duration_seconds", "state" => state)
            .record(self.took.as_secs_f64());
        tracing::info!(
            event = %self.event,
            endpoint = %self.endpoint,
            attempt = self.attempt,
            state,
            took_ms = self.took.as_millis() as u64,
            "webhook attempt"
        );
    }
}

/// A scheduled attempt started: how late after its due time.
fn emit_retry_lateness(due_ms: i64) {
    let late_ms = (Utc::now().timestamp_millis() - due_ms).max(0);
    metrics::histogram!("agentry_webhook_retry_lateness_seconds").record(late_ms as f64 / 1000.0);
}

/// Everything the workers share.
pub struct DispatchDeps {
    pub store: Store,
    pub bus: RedisBus,
    pub keyring: Arc<Keyring>,
    pub client: GuardedClient,
    pub settings: WebhookSettings,
    /// This instance's consumer name in the group.
    pub consumer: String,
}

/// Starts the relay, the dispatcher, the mover, the recorders and the
/// gauges, each an actor under the instance's [`WebhookDispatcher`]
/// supervisor; each returns once `shutdown` turns true, the dispatcher after
/// its attempts in flight, the recorders after the last of them is on
/// record. The handle resolves when all have.
///
/// [`WebhookDispatcher`]: crate::webhook_supervisor::WebhookDispatcher
pub async fn start(
    deps: DispatchDeps,
    shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, ractor::SpawnErr> {
    let (records, queue) = mpsc::channel(RECORD_QUEUE);
    let queue = Arc::new(tokio::sync::Mutex::new(queue));
    let mut parts: Vec<Part> = (0..RECORDERS)
        .map(|_| {
            let (store, bus, queue) = (deps.store.clone(), deps.bus.clone(), queue.clone());
            Part::new("webhook_recorder", move || {
                recorder(store.clone(), bus.clone(), queue.clone())
            })
        })
        .collect();
    let shared = Arc::new(Shared {
        schedule: deps.settings.retry_schedule(),
        attempts: Arc::new(Semaphore::new(deps.settings.max_in_flight)),
        per_endpoint: Mutex::default(),
        retry_scheduled: Notify::new(),
        records,
        deps,
    });
    let shutdown = Shutdown::new(shutdown);
    let with_shared = |name: &'static str, run: fn(Arc<Shared>, Shutdown) -> PartFuture| {
        let (shared, shutdown) = (shared.clone(), shutdown.clone());
        Part::new(name, move || run(shared.clone(), shutdown.clone()))
    };
    parts.extend([
        with_shared("outbox_relay", |shared, stop| Box::pin(relay(shared, stop))),
        with_shared("webhook_stream_reader", |shared, stop| {
            Box::pin(dispatch(shared, stop))
        }),
        with_shared("retry_mover", |shared, stop| Box::pin(mover(shared, stop))),
        with_shared("webhook_gauges", |shared, stop| {
            Box::pin(gauges(shared, stop))
        }),
    ]);
    // The parts hold what they share; once they end, the recorders' queue closes.
    drop(shared);
    supervise(parts).await
}

/// A part's loop, as the supervisor runs it.
type PartFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

struct Shared {
    deps: DispatchDeps,
    schedule: RetrySchedule,
    /// The instance's cap on attempts in flight.
    attempts: Arc<Semaphore>,
    /// The per-endpoint caps, made on first use.
    per_endpoint: Mutex<HashMap<Uuid, Arc<Semaphore>>>,
    /// Wakes this instance's mover when a retry is scheduled (it may be sooner).
    retry_scheduled: Notify,
    /// Attempts made, on their way to the recorders.
    records: mpsc::Sender<RecordRequest>,
}

/// Why an entry stays pending: nothing durable was written for some attempt.
#[derive(Debug, thiserror::Error)]
enum DispatchError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("recording: {0}")]
    Record(String),
}

/// One attempt made, not yet recorded.
#[derive(Clone)]
struct Made {
    endpoint: Uuid,
    number: u32,
    outcome: Attempt,
    next_attempt_at: Option<DateTime<Utc>>,
    state: DeliveryState,
    took: Duration,
}

/// Attempts of one event to record together, and whether the event is then settled.
struct RecordRequest {
    tenant: TenantId,
    event: OutboxEvent,
    made: Vec<Made>,
    settle: bool,
    /// The stream entry to acknowledge once the rows are durable.
    entry: String,
    done: oneshot::Sender<Result<(), String>>,
}

/// Recorders writing attempts, and requests one may take per transaction.
const RECORDERS: usize = 4;
const RECORD_BATCH: usize = 256;
const RECORD_QUEUE: usize = 4_096;

/// Writes attempts in group commits: whatever is queued when a recorder
/// comes round goes into one transaction per tenant, so a burst of
/// deliveries costs a few commits rather than one (or two) each. Every
/// requester hears whether its rows are durable before it acknowledges.
async fn recorder(
    store: Store,
    bus: RedisBus,
    queue: Arc<tokio::sync::Mutex<mpsc::Receiver<RecordRequest>>>,
) {
    loop {
        let mut batch = Vec::new();
        {
            let mut queue = queue.lock().await;
            match queue.recv().await {
                Some(first) => batch.push(first),
                // Every sender is gone: the dispatcher has finished.
                None => return,
            }
            while batch.len() < RECORD_BATCH {
                match queue.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
        }
        let mut by_tenant: HashMap<TenantId, Vec<RecordRequest>> = HashMap::new();
        for request in batch {
            by_tenant.entry(request.tenant).or_default().push(request);
        }
        let mut finished = Vec::new();
        let mut answers = Vec::new();
        for (tenant, requests) in by_tenant {
            let written = write_records(&store, tenant, &requests).await;
            if let Err(error) = &written {
                // Left pending: reclaimed after the deadline and tried again.
                tracing::warn!(%error, "webhooks: recording attempts failed");
            }
            for request in requests {
                if written.is_ok() {
                    finished.push(request.entry);
                }
                answers.push((
                    request.done,
                    written.as_ref().map(|_| ()).map_err(|e| e.to_string()),
                ));
            }
        }
        // One acknowledgement for the whole group commit.
        if let Err(error) = bus.ack_and_delete(EVENTS, GROUP, &finished).await {
            // Reclaimed later; their attempts on record are not repeated.
            tracing::warn!(%error, "webhooks: ack failed");
        }
        for (done, answer) in answers {
            let _ = done.send(answer);
        }
    }
}

async fn write_records(
    store: &Store,
    tenant: TenantId,
    requests: &[RecordRequest],
) -> Result<(), DbError> {
    let records: Vec<AttemptRecord> = requests
        .iter()
        .flat_map(|request| {
            request.made.iter().map(|made| AttemptRecord {
                endpoint: made.endpoint,
                event: &request.event,
                number: made.number,
                attempt: &made.outcome,
                next_attempt_at: made.next_attempt_at,
                took: made.took,
            })
        })
        .collect();
    let settled: Vec<Uuid> = requests
        .iter()
        .filter(|request| request.settle)
        .map(|request| request.event.id)
        .collect();
    let mut tx = store.tenant(tenant).await?;
    if !records.is_empty() {
        webhook_delivery::record_all(&mut tx, &records).await?;
    }
    outbox::settle_all(&mut tx, &settled).await?;
    tx.commit().await
}

/// A fresh event, with the endpoints it is still owed to.
struct Fanout {
    entry: String,
    event: OutboxEvent,
    endpoints: Vec<Endpoint>,
}

impl Shared {
    fn endpoint_limit(&self, endpoint: Uuid) -> Arc<Semaphore> {
        let mut limits = self.per_endpoint.lock().unwrap_or_else(|e| e.into_inner());
        limits
            .entry(endpoint)
            .or_insert_with(|| {
                Arc::new(Semaphore::new(
                    self.deps.settings.max_in_flight_per_endpoint,
                ))
            })
            .clone()
    }

    /// Puts `job` in the delayed set and wakes the mover.
    async fn schedule(&self, job: &AttemptJob) -> Result<(), agentry_actors::ports::BusError> {
        self.deps
            .bus
            .publish_at(EVENTS, &job.payload(), job.due_ms)
            .await?;
        self.retry_scheduled.notify_one();
        Ok(())
    }

    /// Handles the entries of one read. The endpoints of the fresh events
    /// are read once per tenant; then each entry goes its own way (a slow
    /// endpoint holds up only the entries that need it) and is acknowledged
    /// once its attempts are on record.
    async fn handle_batch(self: Arc<Self>, entries: Vec<(StreamEntry, OwnedSemaphorePermit)>) {
        let mut fresh: HashMap<Uuid, Vec<(String, OutboxEvent, OwnedSemaphorePermit)>> =
            HashMap::new();
        let mut scheduled = Vec::new();
        let mut malformed = Vec::new();
        for (entry, permit) in entries {
            match serde_json::from_str::<StreamJob>(&entry.payload) {
                Ok(StreamJob::Event(event)) => fresh
                    .entry(event.tenant_id)
                    .or_default()
                    .push((entry.id, event, permit)),
                Ok(StreamJob::Attempt(job)) => scheduled.push((entry.id, job, permit)),
                Err(error) => {
                    tracing::error!(id = %entry.id, %error, "webhooks: dropping a malformed stream entry");
                    malformed.push(entry.id);
                }
            }
        }
        self.ack(malformed).await;
        let mut work = Vec::new();
        for (tenant, events) in fresh {
            match self
                .owed_endpoints(TenantId::from_uuid(tenant), &events)
                .await
            {
                Ok(owed) => {
                    for ((entry, event, permit), endpoints) in events.into_iter().zip(owed) {
                        let fanout = Fanout {
                            entry,
                            event,
                            endpoints,
                        };
                        work.push(self.clone().deliver_event(fanout, permit).boxed());
                    }
                }
                // Left pending: reclaimed and tried again after the deadline.
                Err(error) => tracing::warn!(%error, "webhooks: reading endpoints failed"),
            }
        }
        for (entry, job, permit) in scheduled {
            work.push(self.clone().deliver_job(entry, job, permit).boxed());
        }
        futures_util::future::join_all(work).await;
    }

    /// For each event of one tenant: its enabled, subscribed endpoints that
    /// have no attempt of it on record yet (a republished event is not sent
    /// again where it already was).
    async fn owed_endpoints(
        &self,
        tenant: TenantId,
        events: &[(String, OutboxEvent, OwnedSemaphorePermit)],
    ) -> Result<Vec<Vec<Endpoint>>, DbError> {
        let ids: Vec<Uuid> = events.iter().map(|(_, event, _)| event.id).collect();
        let mut tx = self.deps.store.tenant(tenant).await?;
        let attempted = webhook_deliveries::attempted_pairs(&mut tx, &ids).await?;
        let erased = outbox::erased_among(&mut tx, &ids).await?;
        let endpoints: Vec<Endpoint> = webhook_endpoints::list(&mut tx)
            .await?
            .into_iter()
            .filter(|endpoint| endpoint.enabled)
            .collect();
        drop(tx);
        Ok(events
            .iter()
            .map(|(_, event, _)| {
                endpoints
                    .iter()
                    .filter(|endpoint| {
                        !erased.contains(&event.id)
                            && endpoint.event_types.contains(&event.event_type)
                            && !attempted.contains(&(event.id, endpoint.id))
                    })
                    .cloned()
                    .collect()
            })
            .collect())
    }

    async fn ack(&self, ids: Vec<String>) {
        if let Err(error) = self.deps.bus.ack_and_delete(EVENTS, GROUP, &ids).await {
            // The entries are reclaimed later; their attempts on record are not repeated.
            tracing::warn!(%error, "webhooks: ack failed");
        }
    }

    /// A fresh event: one attempt per owed endpoint, recorded with the
    /// event's settlement in one go, then acknowledged.
    async fn deliver_event(self: Arc<Self>, fanout: Fanout, _in_hand: OwnedSemaphorePermit) {
        let tenant = TenantId::from_uuid(fanout.event.tenant_id);
        let made = futures_util::future::join_all(
            fanout
                .endpoints
                .iter()
                .map(|endpoint| self.try_once(tenant, &fanout.event, endpoint, 1, false)),
        )
        .await;
        match self
            .record(tenant, &fanout.event, made, true, fanout.entry.clone())
            .await
        {
            Ok(()) => {}
            Err(error) => {
                tracing::warn!(id = %fanout.entry, %error, "webhooks: left pending, to be reclaimed")
            }
        }
    }

    /// A retry or a redelivery, acknowledged once its attempt is on record.
    async fn deliver_job(
        self: Arc<Self>,
        entry: String,
        job: AttemptJob,
        _in_hand: OwnedSemaphorePermit,
    ) {
        emit_retry_lateness(job.due_ms);
        match self.scheduled_attempt(&job, &entry).await {
            Ok(()) => {}
            Err(error) => {
                tracing::warn!(id = %entry, %error, "webhooks: left pending, to be reclaimed")
            }
        }
    }

    /// Hands attempts to a recorder, which acknowledges `entry` once they
    /// are durable; then counts them and schedules the retries they call for.
    async fn record(
        &self,
        tenant: TenantId,
        event: &OutboxEvent,
        made: Vec<Made>,
        settle: bool,
        entry: String,
    ) -> Result<(), DispatchError> {
        let (done, written) = oneshot::channel();
        let summary = made.clone();
        let request = RecordRequest {
            tenant,
            event: event.clone(),
            made,
            settle,
            entry,
            done,
        };
        self.records
            .send(request)
            .await
            .map_err(|_| DispatchError::Record("the recorders have stopped".into()))?;
        written
            .await
            .map_err(|_| DispatchError::Record("the recorder went away".into()))?
            .map_err(DispatchError::Record)?;
        for made in summary {
            WebhookAttempted {
                event: event.id,
                endpoint: made.endpoint,
                attempt: made.number,
                state: made.state,
                took: made.took,
            }
            .emit();
            if let Some(due) = made.next_attempt_at {
                let job = AttemptJob::new(event.clone(), made.endpoint, made.number + 1, due);
                if let Err(error) = self.schedule(&job).await {
                    // On record with its due time: the sweep schedules it again.
                    tracing::warn!(%error, "webhooks: retry not scheduled in Redis; the sweep will");
                }
            }
        }
        Ok(())
    }

    /// A retry or a redelivery. Skipped when it is stale: the record shows
    /// its attempt already made (a duplicate from a sweep or a republication).
    async fn scheduled_attempt(&self, job: &AttemptJob, entry: &str) -> Result<(), DispatchError> {
        let tenant = TenantId::from_uuid(job.event.tenant_id);
        let mut tx = self.deps.store.tenant(tenant).await?;
        let latest =
            webhook_deliveries::latest_attempt(&mut tx, job.event.id, job.endpoint_id).await?;
        let expected_previous = i64::from(job.attempt) - 1;
        let current = match latest {
            Some((number, outcome)) => {
                i64::from(number) == expected_previous && (job.manual || outcome == "retrying")
            }
            None => job.manual && expected_previous == 0,
        };
        if !current {
            tracing::debug!(event = %job.event.id, attempt = job.attempt, "webhooks: stale attempt skipped");
            drop(tx);
            self.ack(vec![entry.to_owned()]).await;
            return Ok(());
        }
        let endpoint = match webhook_endpoints::get(&mut tx, job.endpoint_id).await {
            Ok(endpoint) if endpoint.enabled => Ok(endpoint),
            Ok(_) | Err(DbError::NotFound) => {
                Err("the endpoint was disabled or deleted before this attempt")
            }
            Err(other) => return Err(other.into()),
        };
        // The job carries its own copy of the payload: an erased person's is not sent.
        let endpoint = match outbox::erased_among(&mut tx, &[job.event.id]).await? {
            erased if erased.is_empty() => endpoint,
            _ => Err("the event's personal data was erased before this attempt"),
        };
        drop(tx);
        let made = match endpoint {
            Ok(endpoint) => {
                self.try_once(tenant, &job.event, &endpoint, job.attempt, job.manual)
                    .await
            }
            // Disabled, deleted or erased since: the chain ends on record instead of in silence.
            Err(reason) => Made {
                endpoint: job.endpoint_id,
                number: job.attempt,
                outcome: Attempt::Failed {
                    status: None,
                    retry_after: None,
                    error: reason.into(),
                },
                next_attempt_at: None,
                state: DeliveryState::Failed,
                took: Duration::ZERO,
            },
        };
        self.record(tenant, &job.event, vec![made], false, entry.to_owned())
            .await
    }

    /// Attempt number `number` of `event` at `endpoint`, within the caps,
    /// with the time of the next attempt if one follows.
    async fn try_once(
        &self,
        tenant: TenantId,
        event: &OutboxEvent,
        endpoint: &Endpoint,
        number: u32,
        manual: bool,
    ) -> Made {
        // The endpoint's permit first: waiting on a busy endpoint must not
        // hold one of the instance's permits that other endpoints could use.
        let endpoint_limit = self.endpoint_limit(endpoint.id);
        let _endpoint_permit = endpoint_limit.acquire().await.expect("never closed");
        let _instance_permit = self.attempts.acquire().await.expect("never closed");
        let (outcome, took) =
            match webhook_delivery::signing_keys(&self.deps.keyring, tenant, endpoint) {
                Ok(keys) => {
                    webhook_delivery::attempt(
                        &self.deps.client,
                        &endpoint.url,
                        &keys,
                        endpoint.id,
                        event,
                        self.deps.settings.timeout(),
                    )
                    .await
                }
                Err(reason) => (
                    Attempt::Failed {
                        status: None,
                        retry_after: None,
                        error: reason,
                    },
                    Duration::ZERO,
                ),
            };
        let next_attempt_at = match &outcome {
            Attempt::Failed { retry_after, .. } if !manual => {
                let jitter = rand::thread_rng().gen::<f64>();
                self.schedule
                    .delay_after(number, jitter, *retry_after)
                    .and_then(|delay| chrono::Duration::from_std(delay).ok())
                    .map(|delay| Utc::now() + delay)
            }
            _ => None,
        };
        let state = match (&outcome, next_attempt_at) {
            (Attempt::Delivered { .. }, _) => DeliveryState::Success,
            (Attempt::Blocked { .. }, _) => DeliveryState::Blocked,
            (Attempt::Failed { .. }, Some(_)) => DeliveryState::Retrying,
            _ => DeliveryState::Failed,
        };
        Made {
            endpoint: endpoint.id,
            number,
            outcome,
            next_attempt_at,
            state,
            took,
        }
    }
}

/// Reads the stream through the group and hands each entry to a task;
/// at most `max_in_flight` entries in hand, so what this instance cannot
/// start soon stays in the stream for the others.
async fn dispatch(shared: Arc<Shared>, mut shutdown: Shutdown) {
    let reader = match shared.deps.bus.with_own_blocking_connection() {
        Ok(reader) => reader,
        Err(error) => {
            tracing::warn!(%error, "webhooks: no dedicated read connection; sharing the pool");
            shared.deps.bus.clone()
        }
    };
    let bus = &reader;
    let consumer = shared.deps.consumer.clone();
    let in_hand = Arc::new(Semaphore::new(shared.deps.settings.max_in_flight));
    let reclaim_after = shared.deps.settings.reclaim_after();
    let reclaim_every = (reclaim_after / 4).max(Duration::from_millis(250));
    let mut last_reclaim = Instant::now();
    let mut tasks = JoinSet::new();
    let mut group_ready = false;
    while !shutdown.is_stopping() {
        while tasks.try_join_next().is_some() {}
        if !group_ready {
            // Created from the start of the stream: after Redis lost it, every
            // entry the relay republishes is new to the group.
            if let Err(error) = bus.ensure_group(EVENTS, GROUP).await {
                tracing::warn!(%error, "webhooks: stream unavailable");
                shutdown.sleep(BACKOFF).await;
                continue;
            }
            group_ready = true;
        }
        let first = tokio::select! {
            permit = in_hand.clone().acquire_owned() => permit.expect("never closed"),
            _ = shutdown.wait() => break,
        };
        let mut permits = vec![first];
        while permits.len() < READ_BATCH {
            match in_hand.clone().try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        let entries = if last_reclaim.elapsed() >= reclaim_every {
            last_reclaim = Instant::now();
            // Left pending by an instance presumed dead (the deadline exceeds
            // the attempt timeout, so a live one has finished by then).
            bus.reclaim(EVENTS, GROUP, &consumer, reclaim_after, permits.len())
                .await
                .inspect(|taken| {
                    if !taken.is_empty() {
                        tracing::info!(count = taken.len(), "webhooks: reclaimed entries");
                    }
                })
        } else {
            tokio::select! {
                read = bus.read_group(EVENTS, GROUP, &consumer, permits.len(), READ_BLOCK) => read,
                _ = shutdown.wait() => break,
            }
        };
        match entries {
            Ok(entries) if entries.is_empty() => {}
            Ok(entries) => {
                let batch = entries
                    .into_iter()
                    .map(|entry| (entry, permits.pop().expect("no more entries than permits")))
                    .collect();
                tasks.spawn(shared.clone().handle_batch(batch));
            }
            Err(error) => {
                let nogroup = error.to_string().contains("NOGROUP");
                tracing::warn!(%error, nogroup, "webhooks: read failed");
                group_ready = false;
                if !nogroup {
                    shutdown.sleep(BACKOFF).await;
                }
            }
        }
    }
    // Attempts in flight finish (each within the timeout) and are recorded.
    while tasks.join_next().await.is_some() {}
    reader.quit_blocking().await;
}

/// Moves due retries onto the stream, sleeping until the next one is due.
async fn mover(shared: Arc<Shared>, mut shutdown: Shutdown) {
    let bus = &shared.deps.bus;
    while !shutdown.is_stopping() {
        let now_ms = Utc::now().timestamp_millis();
        let wait = match bus.next_due(EVENTS).await {
            Ok(Some(due)) if due <= now_ms => {
                if let Err(error) = bus.move_due(EVENTS, now_ms, MOVE_BATCH).await {
                    tracing::warn!(%error, "webhooks: moving due retries failed");
                    BACKOFF
                } else {
                    continue;
                }
            }
            Ok(Some(due)) => Duration::from_millis((due - now_ms) as u64).min(MOVER_RECHECK),
            Ok(None) => MOVER_RECHECK,
            Err(error) => {
                tracing::debug!(%error, "webhooks: delayed set unavailable");
                BACKOFF
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.retry_scheduled.notified() => {}
            _ = shutdown.wait() => break,
        }
    }
}

/// Publishes committed events, watches the epoch sentinel, and sweeps what
/// was lost on the way.
async fn relay(shared: Arc<Shared>, mut shutdown: Shutdown) {
    let settings = &shared.deps.settings;
    let (store, bus) = (&shared.deps.store, &shared.deps.bus);
    // Stuck for twice the reclaim deadline: no live instance holds it any more.
    let stale_after = settings.reclaim_after() * 2;
    let sweep_every = (settings.reclaim_after() / 2).max(Duration::from_millis(500));
    let mut last_epoch_check: Option<Instant> = None;
    let mut last_sweep = Instant::now();
    while !shutdown.is_stopping() {
        if last_epoch_check.is_none_or(|at| at.elapsed() >= EPOCH_CHECK_EVERY) {
            last_epoch_check = Some(Instant::now());
            match bus.claim_epoch(EVENTS).await {
                Ok(true) => recover_lost_redis(&shared).await,
                Ok(false) => {}
                Err(error) => tracing::debug!(%error, "webhooks: epoch check failed"),
            }
        }
        if last_sweep.elapsed() >= sweep_every {
            last_sweep = Instant::now();
            sweep(&shared, stale_after).await;
        }
        let started = Instant::now();
        let relayed = outbox::relay_once(store, bus, settings.relay_batch).await;
        let outcome = match relayed {
            Ok(0) => "idle",
            Ok(_) => "published",
            Err(_) => "error",
        };
        metrics::counter!("agentry_outbox_relay_runs_total", "outcome" => outcome).increment(1);
        metrics::histogram!("agentry_outbox_relay_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        match relayed {
            Ok(0) => {
                shutdown.sleep(settings.relay_idle_poll()).await;
            }
            Ok(published) => {
                metrics::counter!("agentry_outbox_published_total").increment(published as u64);
            }
            Err(error) => {
                tracing::warn!(%error, "outbox relay: publish failed; events stay in the outbox");
                shutdown.sleep(BACKOFF).await;
            }
        }
    }
}

/// Redis came back without the sentinel: what it held is gone. Unsettled
/// events are published again and recorded retries rescheduled at their due
/// times. Duplicates carry the same webhook-id; attempts already on record
/// are not repeated.
async fn recover_lost_redis(shared: &Shared) {
    let store = &shared.deps.store;
    match outbox::republish_unsettled(store, Utc::now()).await {
        Ok(count) => tracing::info!(
            count,
            "webhooks: Redis epoch is new; unsettled events republished"
        ),
        Err(error) => {
            tracing::error!(%error, "webhooks: republishing unsettled events failed; the sweep will")
        }
    }
    // Every recorded retry, however far off (a century bounds "all" safely).
    reschedule(shared, Utc::now() + chrono::Duration::days(36_500), "epoch").await;
}

/// Republishes events unsettled long after publication, and reschedules
/// retries long overdue: both had their Redis copy lost some other way.
async fn sweep(shared: &Shared, stale_after: Duration) {
    let cutoff = Utc::now() - chrono::Duration::from_std(stale_after).unwrap_or_default();
    match outbox::republish_unsettled(&shared.deps.store, cutoff).await {
        Ok(0) => {}
        Ok(count) => tracing::warn!(count, "webhooks: stale unsettled events republished"),
        Err(error) => tracing::warn!(%error, "webhooks: sweep failed"),
    }
    reschedule(shared, cutoff, "sweep").await;
}

/// Schedules the recorded retries due by `due_before` at their due times
/// (overdue ones move at once).
async fn reschedule(shared: &Shared, due_before: DateTime<Utc>, why: &'static str) {
    const PAGE: usize = 1_000;
    let retries = match outbox::recorded_retries(&shared.deps.store, due_before, PAGE).await {
        Ok(retries) => retries,
        Err(error) => {
            tracing::warn!(%error, why, "webhooks: reading recorded retries failed");
            return;
        }
    };
    let count = retries.len();
    for retry in retries {
        let Ok(attempt) = u32::try_from(retry.attempt + 1) else {
            continue;
        };
        let job = AttemptJob::new(
            retry.event,
            retry.endpoint_id,
            attempt,
            retry.next_attempt_at,
        );
        if let Err(error) = shared.schedule(&job).await {
            tracing::warn!(%error, why, "webhooks: rescheduling failed");
            return;
        }
    }
    if count > 0 {
        tracing::info!(count, why, "webhooks: recorded retries rescheduled");
    }
}

/// The backlog gauges, refreshed every second.
async fn gauges(shared: Arc<Shared>, mut shutdown: Shutdown) {
    let (store, bus) = (&shared.deps.store, &shared.deps.bus);
    loop {
        if let Ok((count, oldest)) = outbox::backlog(store).await {
            metrics::gauge!("agentry_outbox_backlog").set(count as f64);
            let age = oldest.map_or(0.0, |at| age_secs(at.timestamp_millis()));
            metrics::gauge!("agentry_outbox_oldest_age_seconds").set(age);
        }
        if let Ok(length) = bus.len(EVENTS).await {
            metrics::gauge!("agentry_webhook_stream_length").set(length as f64);
        }
        if let Ok((pending, oldest)) = bus.pending_summary(EVENTS, GROUP).await {
            metrics::gauge!("agentry_webhook_pending").set(pending as f64);
            let age = oldest
                .as_deref()
                .and_then(entry_time_ms)
                .map_or(0.0, age_secs);
            metrics::gauge!("agentry_webhook_oldest_pending_age_seconds").set(age);
        }
        if let Ok(delayed) = bus.delayed_len(EVENTS).await {
            metrics::gauge!("agentry_webhook_delayed").set(delayed as f64);
        }
        if !shutdown.sleep(GAUGES_EVERY).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_entries_tell_fresh_events_from_scheduled_attempts() {
        let event = OutboxEvent {
            id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            event_type: "lead.created".into(),
            payload: serde_json::json!({"lead": 1}),
            created_at: Utc::now(),
        };
        let fresh = serde_json::to_string(&event).unwrap();
        assert!(matches!(
            serde_json::from_str::<StreamJob>(&fresh).unwrap(),
            StreamJob::Event(parsed) if parsed == event
        ));
        let job = AttemptJob::new(event.clone(), Uuid::now_v7(), 2, Utc::now());
        let again = AttemptJob::new(event, job.endpoint_id, 2, Utc::now());
        assert_ne!(
            job.payload(),
            again.payload(),
            "delayed-set members are unique"
        );
        assert!(matches!(
            serde_json::from_str::<StreamJob>(&job.payload()).unwrap(),
            StreamJob::Attempt(parsed) if parsed.attempt == 2 && parsed.endpoint_id == job.endpoint_id
        ));
    }

    #[test]
    fn delivery_states_round_trip_their_labels() {
        for state in DeliveryState::ALL {
            assert_eq!(DeliveryState::parse(state.label()), Some(state));
        }
        assert_eq!(DeliveryState::parse("pending"), None);
    }
}
