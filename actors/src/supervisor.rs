//! The supervision tree: a RootSupervisor starts one TenantSupervisor per
//! active tenant on demand; each TenantSupervisor owns its tenant's
//! ChatSessions, RagRetrievers and GuardrailFinalizer.
//!
//! A crashed child is replaced (lazily, on the next message for it) after a
//! backoff that doubles with each consecutive crash, and every replacement is
//! counted in `agentry_actor_restarts_total{actor}`. A crash stays inside its
//! tenant: other tenants' supervisors never hear of it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::oneshot;

use crate::chat_session::{ChatSession, PipelineDeps, SessionArgs, SessionMsg, TurnError, TurnJob};
use crate::guardrail_finalizer::{FinalizerMsg, GuardrailFinalizer};
use crate::ids::{AgentId, ConversationId, TenantId};
use crate::ports::Namespace;
use crate::rag_retriever::{RagArgs, RagMsg, RagRetriever};
use crate::stage_metrics::record_restart;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Backoff before replacing a child that crashed `failures` times in a row.
pub fn restart_backoff(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1));
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

pub enum RootMsg {
    Turn(TurnJob),
    /// How many tenant supervisors are alive (for tests and gauges).
    ActiveTenants(oneshot::Sender<usize>),
}

pub struct RootSupervisor;

pub struct RootState {
    deps: Arc<PipelineDeps>,
    tenants: HashMap<TenantId, ActorRef<TenantMsg>>,
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
                let supervisor = match state.tenants.get(&tenant) {
                    Some(existing) => existing.clone(),
                    None => {
                        let spawned = Actor::spawn_linked(
                            None,
                            TenantSupervisor,
                            TenantArgs {
                                tenant,
                                deps: state.deps.clone(),
                            },
                            myself.get_cell(),
                        )
                        .await;
                        match spawned {
                            Ok((actor, _)) => {
                                state.tenants.insert(tenant, actor.clone());
                                actor
                            }
                            Err(error) => {
                                let _ = job
                                    .reply
                                    .send(Err(TurnError::Unavailable(error.to_string())));
                                return Ok(());
                            }
                        }
                    }
                };
                if let Err(error) = supervisor.send_message(TenantMsg::Turn(job)) {
                    // It is stopping; forget it so the next turn starts a fresh one.
                    state.tenants.remove(&tenant);
                    if let ractor::MessagingErr::SendErr(TenantMsg::Turn(job)) = error {
                        let _ = myself.send_message(RootMsg::Turn(job));
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
    /// Periodic: stop idle children, and the supervisor itself when all are gone.
    Tick,
}

pub struct TenantArgs {
    pub tenant: TenantId,
    pub deps: Arc<PipelineDeps>,
}

struct Child<M> {
    actor: ActorRef<M>,
    last_used: Instant,
}

struct Failures {
    count: u32,
    last: Instant,
}

pub struct TenantState {
    tenant: TenantId,
    deps: Arc<PipelineDeps>,
    sessions: HashMap<ConversationId, Child<SessionMsg>>,
    retrievers: HashMap<AgentId, Child<RagMsg>>,
    finalizer: Option<ActorRef<FinalizerMsg>>,
    session_failures: HashMap<ConversationId, Failures>,
    last_activity: Instant,
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
            sessions: HashMap::new(),
            retrievers: HashMap::new(),
            finalizer: None,
            session_failures: HashMap::new(),
            last_activity: Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<TenantMsg>,
        message: TenantMsg,
        state: &mut TenantState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TenantMsg::Turn(job) => {
                state.last_activity = Instant::now();
                let conversation = job.request.conversation;
                if let Some(failures) = state.session_failures.get(&conversation) {
                    let wait_until = failures.last + restart_backoff(failures.count);
                    if let Some(remaining) = wait_until.checked_duration_since(Instant::now()) {
                        // Back off without blocking the tenant's other conversations.
                        let me = myself.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(remaining).await;
                            let _ = me.send_message(TenantMsg::Turn(job));
                        });
                        return Ok(());
                    }
                }
                let retriever = match self.retriever(&myself, state, job.request.agent).await {
                    Ok(retriever) => retriever,
                    Err(error) => {
                        let _ = job.reply.send(Err(TurnError::Unavailable(error)));
                        return Ok(());
                    }
                };
                let finalizer = match self.finalizer(&myself, state).await {
                    Ok(finalizer) => finalizer,
                    Err(error) => {
                        let _ = job.reply.send(Err(TurnError::Unavailable(error)));
                        return Ok(());
                    }
                };
                let session = match self.session(&myself, state, conversation).await {
                    Ok(session) => session,
                    Err(error) => {
                        let _ = job.reply.send(Err(TurnError::Unavailable(error)));
                        return Ok(());
                    }
                };
                if let Err(ractor::MessagingErr::SendErr(SessionMsg::Turn { job, .. })) = session
                    .send_message(SessionMsg::Turn {
                        job,
                        retriever,
                        finalizer,
                    })
                {
                    state.sessions.remove(&conversation);
                    let _ = myself.send_message(TenantMsg::Turn(job));
                }
            }
            TenantMsg::Tick => {
                let now = Instant::now();
                let idle = state.deps.settings.session_idle;
                stop_idle(&mut state.sessions, now, idle);
                stop_idle(&mut state.retrievers, now, idle);
                state.session_failures.retain(|_, failures| {
                    now.duration_since(failures.last) < Duration::from_secs(60)
                });
                let tenant_idle = state.deps.settings.tenant_idle;
                if state.sessions.is_empty()
                    && state.retrievers.is_empty()
                    && now.duration_since(state.last_activity) >= tenant_idle
                {
                    tracing::debug!(tenant = %state.tenant, "stopping idle tenant supervisor");
                    myself.stop(Some("idle".into()));
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<TenantMsg>,
        event: SupervisionEvent,
        state: &mut TenantState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                tracing::error!(tenant = %state.tenant, %error, "a child of the tenant supervisor crashed");
                if let Some(conversation) = remove_child(&mut state.sessions, &cell) {
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
                remove_child(&mut state.sessions, &cell);
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
        Ok(())
    }
}

/// Stops and forgets the children unused for `idle`.
fn stop_idle<K, M>(children: &mut HashMap<K, Child<M>>, now: Instant, idle: Duration) {
    children.retain(|_, child| {
        let keep = now.duration_since(child.last_used) < idle;
        if !keep {
            child.actor.stop(Some("idle".into()));
        }
        keep
    });
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
    async fn retriever(
        &self,
        myself: &ActorRef<TenantMsg>,
        state: &mut TenantState,
        agent: AgentId,
    ) -> Result<ActorRef<RagMsg>, String> {
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
            embedder: state.deps.embedder.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, RagRetriever, args, myself.get_cell())
            .await
            .map_err(|e| e.to_string())?;
        state.retrievers.insert(
            agent,
            Child {
                actor: actor.clone(),
                last_used: Instant::now(),
            },
        );
        Ok(actor)
    }

    async fn finalizer(
        &self,
        myself: &ActorRef<TenantMsg>,
        state: &mut TenantState,
    ) -> Result<ActorRef<FinalizerMsg>, String> {
        if let Some(finalizer) = &state.finalizer {
            return Ok(finalizer.clone());
        }
        let (actor, _) = Actor::spawn_linked(None, GuardrailFinalizer, (), myself.get_cell())
            .await
            .map_err(|e| e.to_string())?;
        state.finalizer = Some(actor.clone());
        Ok(actor)
    }

    async fn session(
        &self,
        myself: &ActorRef<TenantMsg>,
        state: &mut TenantState,
        conversation: ConversationId,
    ) -> Result<ActorRef<SessionMsg>, String> {
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
            .map_err(|e| e.to_string())?;
        state.sessions.insert(
            conversation,
            Child {
                actor: actor.clone(),
                last_used: Instant::now(),
            },
        );
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
