//! The supervision tree: a RootSupervisor starts one TenantSupervisor per
//! active tenant on demand; each TenantSupervisor owns its tenant's
//! ChatSessions, RagRetrievers and GuardrailFinalizer.
//!
//! A crashed child is replaced (lazily, on the next message for it) after a
//! backoff that doubles with each consecutive crash, and every replacement is
//! counted in `agentry_actor_restarts_total{actor}`. A crash stays inside its
//! tenant: other tenants' supervisors never hear of it.
//!
//! Idle actors retire without losing a turn: a stop signal would drop the
//! messages still queued, so sessions and tenant supervisors are sent a
//! `Retire` message that queues behind any turn already forwarded, and turns
//! for a retiring session wait until it is gone. A tenant supervisor retires
//! only through the root, which first stops routing turns to it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::oneshot;

use crate::chat_session::{ChatSession, PipelineDeps, SessionArgs, SessionMsg, TurnError, TurnJob};
use crate::guardrail_finalizer::{FinalizerMsg, GuardrailFinalizer};
use crate::ids::{AgentId, ConversationId, TenantId};
use crate::ports::Namespace;
use crate::rag_retriever::{RagArgs, RagMsg, RagRetriever};
use crate::stage_metrics::record_restart;
use crate::tenant_cache::TenantCaches;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Backoff before replacing a child that crashed `failures` times in a row.
pub fn restart_backoff(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1));
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

/// A child the supervisor could not start; the turn that needed it fails with it.
#[derive(Debug, thiserror::Error)]
#[error("could not start the {actor}: {source}")]
pub struct SpawnError {
    actor: &'static str,
    source: ractor::SpawnErr,
}

fn spawn_error(actor: &'static str) -> impl FnOnce(ractor::SpawnErr) -> SpawnError {
    move |source| SpawnError { actor, source }
}

fn unavailable(job: TurnJob, error: SpawnError) {
    let _ = job
        .reply
        .send(Err(TurnError::Unavailable(error.to_string())));
}

pub enum RootMsg {
    Turn(TurnJob),
    /// A tenant supervisor has been idle; the root retires it if it is still the current one.
    TenantIdle {
        tenant: TenantId,
        supervisor: ActorId,
    },
    /// How many tenant supervisors are serving (for tests and gauges).
    ActiveTenants(oneshot::Sender<usize>),
}

pub struct RootSupervisor;

pub struct RootState {
    deps: Arc<PipelineDeps>,
    tenants: HashMap<TenantId, ActorRef<TenantMsg>>,
}

impl RootSupervisor {
    async fn tenant_supervisor(
        myself: &ActorRef<RootMsg>,
        state: &mut RootState,
        tenant: TenantId,
    ) -> Result<ActorRef<TenantMsg>, SpawnError> {
        if let Some(existing) = state.tenants.get(&tenant) {
            return Ok(existing.clone());
        }
        let args = TenantArgs {
            tenant,
            deps: state.deps.clone(),
            root: myself.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, TenantSupervisor, args, myself.get_cell())
            .await
            .map_err(spawn_error("tenant supervisor"))?;
        state.tenants.insert(tenant, actor.clone());
        Ok(actor)
    }
}

impl Actor for RootSupervisor {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = Arc<PipelineDeps>;

    async fn pre_start(
        &self,
        _myself: ActorRef<RootMsg>,
        deps: Arc<PipelineDeps>,
    ) -> Result<RootState, ActorProcessingErr> {
        Ok(RootState {
            deps,
            tenants: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<RootMsg>,
        message: RootMsg,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RootMsg::Turn(job) => {
                let tenant = job.request.tenant;
                let supervisor = match Self::tenant_supervisor(&myself, state, tenant).await {
                    Ok(supervisor) => supervisor,
                    Err(error) => {
                        unavailable(job, error);
                        return Ok(());
                    }
                };
                if let Err(ractor::MessagingErr::SendErr(TenantMsg::Turn(job))) =
                    supervisor.send_message(TenantMsg::Turn(job))
                {
                    // It died between our bookkeeping and now: start afresh.
                    state.tenants.remove(&tenant);
                    let _ = myself.send_message(RootMsg::Turn(job));
                }
            }
            RootMsg::TenantIdle { tenant, supervisor } => {
                if state
                    .tenants
                    .get(&tenant)
                    .is_some_and(|s| s.get_id() == supervisor)
                {
                    // From here on its turns go to a new supervisor; Retire queues behind the old ones.
                    if let Some(retiring) = state.tenants.remove(&tenant) {
                        let _ = retiring.send_message(TenantMsg::Retire);
                    }
                }
            }
            RootMsg::ActiveTenants(reply) => {
                let _ = reply.send(state.tenants.len());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<RootMsg>,
        event: SupervisionEvent,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                tracing::error!(%error, "tenant supervisor crashed");
                if remove_by_cell(&mut state.tenants, &cell).is_some() {
                    record_restart("tenant_supervisor");
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                remove_by_cell(&mut state.tenants, &cell);
            }
            _ => {}
        }
        Ok(())
    }
}

fn remove_by_cell<K: Copy + Eq + std::hash::Hash, M>(
    map: &mut HashMap<K, ActorRef<M>>,
    cell: &ActorCell,
) -> Option<K> {
    let key = map
        .iter()
        .find(|(_, actor)| actor.get_id() == cell.get_id())
        .map(|(key, _)| *key)?;
    map.remove(&key);
    Some(key)
}

pub enum TenantMsg {
    Turn(TurnJob),
    /// Periodic: retire idle children, and report the supervisor idle when all are gone.
    Tick,
    /// From the root, which no longer routes turns here: stop once the children are done.
    Retire,
}

pub struct TenantArgs {
    pub tenant: TenantId,
    pub deps: Arc<PipelineDeps>,
    pub root: ActorRef<RootMsg>,
}

struct Child<M> {
    actor: ActorRef<M>,
    last_used: Instant,
    retiring: bool,
}

impl<M> Child<M> {
    fn new(actor: ActorRef<M>) -> Self {
        Self {
            actor,
            last_used: Instant::now(),
            retiring: false,
        }
    }
}

struct Failures {
    count: u32,
    last: Instant,
}

pub struct TenantState {
    tenant: TenantId,
    deps: Arc<PipelineDeps>,
    root: ActorRef<RootMsg>,
    sessions: HashMap<ConversationId, Child<SessionMsg>>,
    /// Turns for a conversation whose session is retiring, in arrival order.
    waiting: HashMap<ConversationId, Vec<TurnJob>>,
    retrievers: HashMap<AgentId, Child<RagMsg>>,
    finalizer: Option<ActorRef<FinalizerMsg>>,
    /// Agent briefs and the LLM provider, shared by the tenant's sessions.
    caches: Arc<TenantCaches>,
    session_failures: HashMap<ConversationId, Failures>,
    last_activity: Instant,
    idle_reported: bool,
    retiring: bool,
}

pub struct TenantSupervisor;

impl TenantSupervisor {
    fn tick_period(deps: &PipelineDeps) -> Duration {
        (deps.settings.session_idle / 2).clamp(Duration::from_millis(50), Duration::from_secs(30))
    }
}

impl Actor for TenantSupervisor {
    type Msg = TenantMsg;
    type State = TenantState;
    type Arguments = TenantArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TenantMsg>,
        args: TenantArgs,
    ) -> Result<TenantState, ActorProcessingErr> {
        myself.send_interval(Self::tick_period(&args.deps), || TenantMsg::Tick);
        Ok(TenantState {
            tenant: args.tenant,
            deps: args.deps,
            root: args.root,
            sessions: HashMap::new(),
            waiting: HashMap::new(),
            retrievers: HashMap::new(),
            finalizer: None,
            caches: Arc::default(),
            session_failures: HashMap::new(),
            last_activity: Instant::now(),
            idle_reported: false,
            retiring: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<TenantMsg>,
        message: TenantMsg,
        state: &mut TenantState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TenantMsg::Turn(job) => self.route_turn(&myself, state, job).await,
            TenantMsg::Tick => {
                if state.retiring {
                    return Ok(());
                }
                let now = Instant::now();
                let idle = state.deps.settings.session_idle;
                for child in state.sessions.values_mut() {
                    if !child.retiring && now.duration_since(child.last_used) >= idle {
                        child.retiring = true;
                        let _ = child.actor.send_message(SessionMsg::Retire);
                    }
                }
                state.retrievers.retain(|_, child| {
                    let keep = now.duration_since(child.last_used) < idle;
                    if !keep {
                        // A retrieval cut short only costs its turn the passages.
                        child.actor.stop(Some("idle".into()));
                    }
                    keep
                });
                state.session_failures.retain(|_, failures| {
                    now.duration_since(failures.last) < Duration::from_secs(60)
                });
                let tenant_idle = state.deps.settings.tenant_idle;
                if !state.idle_reported
                    && state.sessions.is_empty()
                    && state.retrievers.is_empty()
                    && now.duration_since(state.last_activity) >= tenant_idle
                {
                    state.idle_reported = true;
                    let _ = state.root.send_message(RootMsg::TenantIdle {
                        tenant: state.tenant,
                        supervisor: myself.get_id(),
                    });
                }
            }
            TenantMsg::Retire => {
                tracing::debug!(tenant = %state.tenant, "retiring idle tenant supervisor");
                state.retiring = true;
                for child in state.sessions.values_mut().filter(|child| !child.retiring) {
                    child.retiring = true;
                    let _ = child.actor.send_message(SessionMsg::Retire);
                }
                for (_, child) in state.retrievers.drain() {
                    child.actor.stop(Some("idle".into()));
                }
                if let Some(finalizer) = state.finalizer.take() {
                    finalizer.stop(Some("idle".into()));
                }
                if state.sessions.is_empty() {
                    myself.stop(Some("idle".into()));
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<TenantMsg>,
        state: &mut TenantState,
    ) -> Result<(), ActorProcessingErr> {
        // Sessions still listed stop with their supervisor.
        metrics::gauge!("agentry_chat_sessions").decrement(state.sessions.len() as f64);
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<TenantMsg>,
        event: SupervisionEvent,
        state: &mut TenantState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                tracing::error!(tenant = %state.tenant, %error, "a child of the tenant supervisor crashed");
                if let Some(conversation) = remove_child(&mut state.sessions, &cell) {
                    metrics::gauge!("agentry_chat_sessions").decrement(1.0);
                    let failures = state
                        .session_failures
                        .entry(conversation)
                        .or_insert(Failures {
                            count: 0,
                            last: Instant::now(),
                        });
                    failures.count += 1;
                    failures.last = Instant::now();
                    record_restart("chat_session");
                    self.release_waiting(&myself, state, conversation).await;
                } else if remove_child(&mut state.retrievers, &cell).is_some() {
                    record_restart("rag_retriever");
                } else if state
                    .finalizer
                    .as_ref()
                    .is_some_and(|f| f.get_id() == cell.get_id())
                {
                    state.finalizer = None;
                    record_restart("guardrail_finalizer");
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(conversation) = remove_child(&mut state.sessions, &cell) {
                    metrics::gauge!("agentry_chat_sessions").decrement(1.0);
                    self.release_waiting(&myself, state, conversation).await;
                }
                remove_child(&mut state.retrievers, &cell);
                if state
                    .finalizer
                    .as_ref()
                    .is_some_and(|f| f.get_id() == cell.get_id())
                {
                    state.finalizer = None;
                }
            }
            _ => {}
        }
        if state.retiring && state.sessions.is_empty() {
            myself.stop(Some("idle".into()));
        }
        Ok(())
    }
}

fn remove_child<K: Copy + Eq + std::hash::Hash, M>(
    map: &mut HashMap<K, Child<M>>,
    cell: &ActorCell,
) -> Option<K> {
    let key = map
        .iter()
        .find(|(_, child)| child.actor.get_id() == cell.get_id())
        .map(|(key, _)| *key)?;
    map.remove(&key);
    Some(key)
}

impl TenantSupervisor {
    async fn route_turn(
        &self,
        myself: &ActorRef<TenantMsg>,
        state: &mut TenantState,
        job: TurnJob,
    ) {
        if state.retiring {
            // Not routed here any more; a turn that still arrives goes back through the root.
            let _ = state.root.send_message(RootMsg::Turn(job));
            return;
        }
        state.last_activity = Instant::now();
        state.idle_reported = false;
        let conversation = job.request.conversation;
        if state
            .sessions
            .get(&conversation)
            .is_some_and(|child| child.retiring)
        {
            state.waiting.entry(conversation).or_default().push(job);
            return;
        }
        if let Some(failures) = state.session_failures.get(&conversation) {
            let wait_until = failures.last + restart_backoff(failures.count);
            if let Some(remaining) = wait_until.checked_duration_since(Instant::now()) {
                // Back off without blocking the tenant's other conversations.
                let me = myself.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(remaining).await;
                    let _ = me.send_message(TenantMsg::Turn(job));
                });
                return;
            }
        }
        let retriever = match self.retriever(myself, state, job.request.agent).await {
            Ok(retriever) => retriever,
            Err(error) => return unavailable(job, error),
        };
        let finalizer = match self.finalizer(myself, state).await {
            Ok(finalizer) => finalizer,
            Err(error) => return unavailable(job, error),
        };
        let session = match self.session(myself, state, conversation).await {
            Ok(session) => session,
            Err(error) => return unavailable(job, error),
        };
        if let Err(ractor::MessagingErr::SendErr(SessionMsg::Turn { job, .. })) = session
            .send_message(SessionMsg::Turn {
                job: Box::new(job),
                retriever,
                finalizer,
                caches: state.caches.clone(),
            })
        {
            if state.sessions.remove(&conversation).is_some() {
                metrics::gauge!("agentry_chat_sessions").decrement(1.0);
            }
            let _ = myself.send_message(TenantMsg::Turn(*job));
        }
    }

    /// Routes, in order, the turns that waited for a conversation's old session to go.
    async fn release_waiting(
        &self,
        myself: &ActorRef<TenantMsg>,
        state: &mut TenantState,
        conversation: ConversationId,
    ) {
        for job in state.waiting.remove(&conversation).unwrap_or_default() {
            self.route_turn(myself, state, job).await;
        }
    }

    async fn retriever(
        &self,
        myself: &ActorRef<TenantMsg>,
        state: &mut TenantState,
        agent: AgentId,
    ) -> Result<ActorRef<RagMsg>, SpawnError> {
        if let Some(child) = state.retrievers.get_mut(&agent) {
            child.last_used = Instant::now();
            return Ok(child.actor.clone());
        }
        let args = RagArgs {
            namespace: Namespace {
                tenant: state.tenant,
                agent,
            },
            knowledge: state.deps.knowledge.clone(),
            resident: state.deps.resident.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, RagRetriever, args, myself.get_cell())
            .await
            .map_err(spawn_error("retriever"))?;
        state.retrievers.insert(agent, Child::new(actor.clone()));
        Ok(actor)
    }

    async fn finalizer(
        &self,
        myself: &ActorRef<TenantMsg>,
        state: &mut TenantState,
    ) -> Result<ActorRef<FinalizerMsg>, SpawnError> {
        if let Some(finalizer) = &state.finalizer {
            return Ok(finalizer.clone());
        }
        let (actor, _) = Actor::spawn_linked(None, GuardrailFinalizer, (), myself.get_cell())
            .await
            .map_err(spawn_error("guardrail finalizer"))?;
        state.finalizer = Some(actor.clone());
        Ok(actor)
    }

    async fn session(
        &self,
        myself: &ActorRef<TenantMsg>,
        state: &mut TenantState,
        conversation: ConversationId,
    ) -> Result<ActorRef<SessionMsg>, SpawnError> {
        if let Some(child) = state.sessions.get_mut(&conversation) {
            child.last_used = Instant::now();
            return Ok(child.actor.clone());
        }
        let args = SessionArgs {
            deps: state.deps.clone(),
            conversation,
        };
        let (actor, _) = Actor::spawn_linked(None, ChatSession, args, myself.get_cell())
            .await
            .map_err(spawn_error("chat session"))?;
        state
            .sessions
            .insert(conversation, Child::new(actor.clone()));
        metrics::gauge!("agentry_chat_sessions").increment(1.0);
        Ok(actor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(restart_backoff(1), Duration::from_millis(100));
        assert_eq!(restart_backoff(2), Duration::from_millis(200));
        assert_eq!(restart_backoff(4), Duration::from_millis(800));
        assert_eq!(restart_backoff(30), MAX_BACKOFF);
    }
}
