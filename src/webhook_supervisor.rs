//! The webhook path's actors: a `WebhookDispatcher` supervisor per instance
//! and one actor per part under it (outbox relay, stream dispatcher, retry
//! mover, delivery recorders, gauges).
//!
//! Each part is one loop that handles its own errors and retries them, so a
//! part ends only at shutdown, or by panicking on a bug. A panic fails the
//! part's actor and the supervisor starts it again after a backoff (counted
//! in `agentry_actor_restarts_total{actor}`): a bug costs a restart of one
//! part, never webhooks on this instance falling silent until the next
//! deploy. What a crashed part held is not lost: its stream entries stay
//! pending and are reclaimed, its attempts not yet on record are made again.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use agentry_actors::stage_metrics::record_restart;
use agentry_actors::supervisor::restart_backoff;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::task::JoinHandle;

/// A part's loop, started anew on every (re)start.
pub type PartLoop = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// One supervised part: its name (the actor's, and the restart metric's
/// label) and how to run it.
#[derive(Clone)]
pub struct Part {
    pub name: &'static str,
    pub run: PartLoop,
}

impl Part {
    pub fn new<F, Fut>(name: &'static str, run: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self {
            name,
            run: Arc::new(move || Box::pin(run())),
        }
    }
}

/// Starts the supervisor over `parts`; the handle resolves once every part
/// has ended (at shutdown: their loops return when the stop signal turns).
pub async fn supervise(parts: Vec<Part>) -> Result<JoinHandle<()>, ractor::SpawnErr> {
    let (_, handle) = Actor::spawn(None, WebhookDispatcher, parts).await?;
    Ok(tokio::spawn(async move {
        let _ = handle.await;
    }))
}

/// The supervisor of the webhook path on this instance.
pub struct WebhookDispatcher;

pub struct SupervisorState {
    running: HashMap<ActorId, Part>,
    /// Crashes in a row per part, for the backoff.
    failures: HashMap<&'static str, u32>,
}

impl Actor for WebhookDispatcher {
    type Msg = ();
    type State = SupervisorState;
    type Arguments = Vec<Part>;

    async fn pre_start(
        &self,
        myself: ActorRef<()>,
        parts: Vec<Part>,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut state = SupervisorState {
            running: HashMap::new(),
            failures: HashMap::new(),
        };
        for part in parts {
            start_part(&myself, &mut state, part).await?;
        }
        Ok(state)
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some(part) = state.running.remove(&cell.get_id()) {
                    tracing::error!(part = part.name, %error, "webhooks: a part crashed");
                    record_restart(part.name);
                    let failures = state.failures.entry(part.name).or_default();
                    *failures += 1;
                    tokio::time::sleep(restart_backoff(*failures)).await;
                    start_part(&myself, state, part).await?;
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                // Dropping the part lets go of what its loop shares, so the
                // recorders see their queue close once the dispatcher is gone.
                state.running.remove(&cell.get_id());
                if state.running.is_empty() {
                    myself.stop(None);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

async fn start_part(
    supervisor: &ActorRef<()>,
    state: &mut SupervisorState,
    part: Part,
) -> Result<(), ActorProcessingErr> {
    let (actor, _) =
        Actor::spawn_linked(None, PartActor, part.clone(), supervisor.get_cell()).await?;
    state.running.insert(actor.get_id(), part);
    Ok(())
}

/// Runs one part's loop; stops when the loop returns.
struct PartActor;

enum PartMsg {
    Run,
}

impl Actor for PartActor {
    type Msg = PartMsg;
    type State = Option<PartLoop>;
    type Arguments = Part;

    async fn pre_start(
        &self,
        myself: ActorRef<PartMsg>,
        part: Part,
    ) -> Result<Option<PartLoop>, ActorProcessingErr> {
        myself.send_message(PartMsg::Run)?;
        Ok(Some(part.run))
    }

    async fn handle(
        &self,
        myself: ActorRef<PartMsg>,
        PartMsg::Run: PartMsg,
        run: &mut Option<PartLoop>,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(run) = run.take() {
            run().await;
        }
        myself.stop(None);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::sync::watch;

    use super::*;

    #[tokio::test]
    async fn a_crashed_part_is_started_again_and_all_end_at_shutdown() {
        let (stop, stopped) = watch::channel(false);
        let starts = Arc::new(AtomicUsize::new(0));
        let flaky = {
            let (starts, stopped) = (starts.clone(), stopped.clone());
            Part::new("flaky", move || {
                let (starts, mut stopped) = (starts.clone(), stopped.clone());
                async move {
                    if starts.fetch_add(1, Ordering::SeqCst) == 0 {
                        panic!("a bug in the first run");
                    }
                    let _ = stopped.wait_for(|stop| *stop).await;
                }
            })
        };
        let steady = Part::new("steady", move || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }
        });
        let supervisor = supervise(vec![flaky, steady]).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while starts.load(Ordering::SeqCst) < 2 {
            assert!(tokio::time::Instant::now() < deadline, "never restarted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), supervisor)
            .await
            .expect("every part ended at shutdown")
            .unwrap();
        assert_eq!(starts.load(Ordering::SeqCst), 2);
    }
}
